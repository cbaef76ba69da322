//! The child process of a stdio hub: spawning with pipes wired, the supervisor that restarts
//! it with backoff, and the loops that move lines through its stdin, stdout and stderr.
//! stderr goes to the log under the server's name. Children are killed and reaped on close.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::StdioHub;
use crate::transport::ndjson;
use crate::upstream::health::State as HealthState;

/// The longest line accepted from a child's stdout (a large tool result fits; garbage does not).
const MAX_LINE: usize = 64 << 20;
const QUEUE: usize = 1024;

/// A child with its pipes wired, and the task reading its stdout.
pub(super) struct Running {
    child: Child,
    reader: tokio::task::JoinHandle<()>,
}

impl StdioHub {
    /// Starts a child and wires its pipes, so messages can be sent the moment this returns.
    pub(super) fn spawn_child(self: &Arc<Self>) -> Result<Running, String> {
        let mut child = self.command_child()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the child was started without pipes".into());
        };
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
        tokio::spawn(write_loop(stdin, rx));
        tokio::spawn(stderr_loop(self.name.clone(), stderr));
        let reader = tokio::spawn(self.clone().read_loop(stdout));
        let mut st = self.lock();
        // The replayed initialize is queued before stdin is published, so nothing overtakes it.
        self.replay_initialize(&mut st, &tx);
        st.stdin = Some(tx);
        st.down_reason = None;
        drop(st);
        Ok(Running { child, reader })
    }

    fn command_child(&self) -> Result<Child, String> {
        let mut cmd = Command::new(&self.spec.command);
        cmd.args(&self.spec.args)
            .envs(&self.spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &self.spec.cwd {
            cmd.current_dir(cwd);
        }
        cmd.spawn().map_err(|e| {
            format!(
                "cannot start {:?} for upstream {:?}: {e}",
                self.spec.command, self.name
            )
        })
    }

    /// Runs one child after another until closed.
    pub(super) async fn supervise(self: Arc<Self>, first: Running) {
        let mut child = first;
        let mut backoff = Duration::from_millis(100);
        let mut stop = self.stop.subscribe();
        loop {
            let started = Instant::now();
            let Some(reason) = self.run(&mut child, &mut stop).await else {
                return self.closed_health();
            };
            self.fail_pending(&reason);
            if self.lock().closed {
                return self.closed_health();
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tracing::warn!(server = %self.name, "upstream {reason}; restarting in {backoff:?}");
            self.health.set(HealthState::Restarting, Some(reason));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return self.closed_health(),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                match self.spawn_child() {
                    Ok(c) => {
                        child = c;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(server = %self.name, "{e}; next try in {backoff:?}");
                        self.lock().down_reason = Some(format!("could not be restarted: {e}"));
                        self.health.set(HealthState::Failed, Some(e));
                    }
                }
            }
            self.health.set(HealthState::Running, None);
        }
    }

    /// A hub closed while its child was down must not leave the upstream marked down: in
    /// isolated mode the crash belonged to a session that is gone.
    fn closed_health(&self) {
        if matches!(self.health.state(), HealthState::Restarting) {
            self.health.set(HealthState::Idle, None);
        }
    }

    /// Waits for one child to exit. `None` means it was stopped on purpose.
    async fn run(
        self: &Arc<Self>,
        running: &mut Running,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<String> {
        let Running { child, reader } = running;
        let status = if *stop.borrow_and_update() {
            None
        } else {
            tokio::select! {
                s = child.wait() => Some(s),
                _ = stop.changed() => None,
            }
        };
        let Some(status) = status else {
            self.lock().stdin = None; // closes stdin: the polite way to ask a stdio server to exit
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            reader.abort();
            return None;
        };
        self.lock().stdin = None;
        // Let the reader deliver what the child wrote before exiting.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut *reader).await;
        reader.abort();
        let reason = match status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "exited".to_string(),
            },
            Err(e) => format!("could not be waited for: {e}"),
        };
        self.lock().down_reason = Some(reason.clone());
        Some(reason)
    }

    async fn read_loop(self: Arc<Self>, stdout: tokio::process::ChildStdout) {
        let mut reader = BufReader::with_capacity(64 << 10, stdout);
        let mut buf = Vec::with_capacity(4096);
        loop {
            match ndjson::read_line(&mut reader, &mut buf, MAX_LINE).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) | Err(_) => return,
                Ok(Err(ndjson::TooLong)) => {
                    tracing::warn!(server = %self.name, "upstream wrote a line over {MAX_LINE} bytes to stdout; skipped");
                    continue;
                }
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Value>(&buf) {
                Ok(frame) => self.dispatch(frame),
                Err(e) => {
                    let shown: String = String::from_utf8_lossy(&buf).chars().take(200).collect();
                    tracing::warn!(server = %self.name, "upstream wrote non-JSON to stdout ({e}): {shown}");
                }
            }
        }
    }
}

async fn write_loop(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(line) = rx.recv().await {
        if stdin.write_all(&line).await.is_err() {
            return;
        }
    }
}

async fn stderr_loop(name: String, stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Ok(r) = ndjson::read_line(&mut reader, &mut buf, 16 << 10).await {
        match r {
            Ok(true) => {
                let line = String::from_utf8_lossy(&buf);
                tracing::info!(target: "mcpgate::upstream::stderr", server = %name, "{line}");
            }
            Ok(false) => return,
            Err(_) => {
                tracing::info!(target: "mcpgate::upstream::stderr", server = %name, "(a stderr line over 16 KiB, skipped)")
            }
        }
    }
}
