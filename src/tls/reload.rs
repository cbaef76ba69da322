//! Certificate reload: the listener's config is swapped when its files change.
//!
//! Each new connection takes the current `Arc<ServerConfig>`; open connections keep the one
//! they started with, so a reload never drops them. Files are polled (size, mtime, inode)
//! rather than watched, which also catches Kubernetes secret mounts replaced by rename.
//! A change that does not build (say the certificate was written before its key) keeps the
//! old config, logs why once, and is tried again on the next tick.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;

use super::server::{self, BuiltServerTls};
use crate::config::ListenerTls;

/// The listener's current TLS config, swappable.
pub struct LiveServerConfig {
    current: RwLock<Arc<ServerConfig>>,
}

impl LiveServerConfig {
    pub fn new(config: Arc<ServerConfig>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(config),
        })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, config: Arc<ServerConfig>) {
        match self.current.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

type Stamp = Vec<Option<(u64, i64, i64, u64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect()
}

/// Polls the files of `built` and swaps `live` when they change, until the task is dropped.
pub fn spawn(
    tls: ListenerTls,
    data_dir: PathBuf,
    built: &BuiltServerTls,
    live: Arc<LiveServerConfig>,
) {
    let mut files = built.watched.clone();
    let interval = tls.reload_interval;
    tokio::spawn(async move {
        let mut seen = stamp(&files);
        let mut last_error: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            let now = stamp(&files);
            if now == seen {
                continue;
            }
            match server::build(&tls, &data_dir) {
                Ok(rebuilt) => {
                    live.replace(rebuilt.config.clone());
                    tracing::info!(cert_file = %rebuilt.cert_file.display(), "TLS certificate reloaded; open connections keep their session");
                    files = rebuilt.watched.clone();
                    seen = stamp(&files);
                    last_error = None;
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::error!(
                            "TLS reload failed, still serving the previous certificate: {text}"
                        );
                        last_error = Some(text);
                    }
                }
            }
        }
    });
}
