//! `mcpgate connect URL`: local stdio to a remote HTTPS MCP server, for desktop clients that
//! only launch commands. stdin (newline-delimited JSON-RPC) goes to the server in order; the
//! server's messages go to stdout; logs go to stderr only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use tokio::io::BufReader;
use tokio::sync::mpsc;

use crate::config::{self, ConfigError, RemoteSpec, raw::RawConfig};
use crate::jsonrpc;
use crate::tls::trust;
use crate::transport::{ndjson, stdio};
use crate::upstream::connector::Connector;
use crate::upstream::remote::RemoteUpstream;
use crate::upstream::{ChannelSink, Sink};

#[derive(Args, Default)]
pub struct ConnectArgs {
    /// The server's MCP URL (e.g. https://mcp.internal.example/mcp).
    pub url: Option<String>,
    /// A config file with `mode: client` and `client.url`.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Extra CA certificate(s) to trust (file or directory), added to the system store.
    #[arg(long)]
    pub ca: Option<String>,
    /// Trust only --ca, not the system store.
    #[arg(long)]
    pub ca_only: bool,
    /// Client certificate (PEM), sent whenever the server asks.
    #[arg(long, requires = "key")]
    pub cert: Option<String>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "cert")]
    pub key: Option<String>,
    /// The TLS server name (SNI and the name verified), when the URL's host is an address or alias.
    #[arg(long)]
    pub server_name: Option<String>,
    /// Trust exactly this certificate (SHA-256 fingerprint of the leaf); repeatable.
    #[arg(long = "pin", value_name = "SHA256")]
    pub pins: Vec<String>,
    /// DANGEROUS: do not verify the server's certificate at all.
    #[arg(long)]
    pub insecure: bool,
    /// auto (Streamable HTTP, then SSE), http, or sse.
    #[arg(long)]
    pub transport: Option<String>,
    /// An extra request header, `Name: value`; repeatable.
    #[arg(long = "header", value_name = "K:V")]
    pub headers: Vec<String>,
    /// Send `Authorization: Bearer <token>` with the token from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub bearer_env: Option<String>,
    /// How long to wait for connections and answers to start.
    #[arg(long, default_value = "60s")]
    pub timeout: String,
    /// Log level (logs go to stderr).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let (spec, level, json) = build(&args)?;
    crate::logging::init(&level, json);
    let profile = trust::build(&spec.trust, &trust::Env::process())?;
    if profile.insecure {
        tracing::warn!(
            "INSECURE: server certificates are not verified ({}); anyone on the path can read and change this traffic",
            profile.source
        );
    }
    tracing::info!(url = %crate::tls::diagnose::redact_url(&spec.url), trust = %profile.source, "connecting");
    let connector = Connector::new("connect", Arc::new(profile), spec.timeout);
    let upstream = RemoteUpstream::start("connect", spec, connector).map_err(anyhow::Error::msg)?;

    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(ndjson::write_lines(stdio::stdout(), rx));
    let sink: Arc<dyn Sink> = Arc::new(ChannelSink(tx.clone()));
    let mut reader = BufReader::new(stdio::stdin());
    let mut buf = Vec::new();
    loop {
        match ndjson::read_line(&mut reader, &mut buf, 64 << 20).await? {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                let _ = tx.send(jsonrpc::error(
                    Value::Null,
                    jsonrpc::code::INVALID_REQUEST,
                    "message over 64 MiB",
                ));
                continue;
            }
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(&buf) {
            Ok(frame) => upstream.send(&sink, frame),
            Err(e) => {
                let _ = tx.send(jsonrpc::error(
                    Value::Null,
                    jsonrpc::code::PARSE_ERROR,
                    format!("parse error: {e}"),
                ));
            }
        }
    }
    // stdin closed: give queued messages a moment, end the session, flush.
    tokio::time::sleep(Duration::from_millis(100)).await;
    upstream.close().await;
    drop(sink);
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    Ok(())
}

/// Merges the config file (if any) with the flags into a remote spec.
pub(crate) fn build(args: &ConnectArgs) -> Result<(RemoteSpec, String, bool), ConfigError> {
    let mut raw = match &args.config {
        Some(p) => config::read_raw(p)?,
        None => RawConfig::default(),
    };
    if raw.mode.as_deref().is_some_and(|m| m != "client") {
        return Err(ConfigError::new(
            "mode",
            format!(
                "is {:?}, but this is connect",
                raw.mode.clone().unwrap_or_default()
            ),
        )
        .hint("use mode: client, or run mcpgate serve for a server config"));
    }
    raw.mode = Some("client".into());
    let client = raw.client.get_or_insert_with(Default::default);
    if let Some(u) = &args.url {
        client.url = u.clone();
    }
    if client.url.is_empty() {
        return Err(ConfigError::new("client.url", "is missing")
            .hint("give the URL: mcpgate connect https://host/mcp"));
    }
    if let Some(t) = &args.transport {
        client.transport = Some(t.clone());
    }
    for h in &args.headers {
        let (k, v) = h.split_once(':').ok_or_else(|| {
            ConfigError::new("--header", format!("{h:?} is not Name: value"))
                .hint("write --header 'X-Api-Key: abc'")
        })?;
        client
            .headers
            .insert(k.trim().to_string(), v.trim().to_string());
    }
    if let Some(var) = &args.bearer_env {
        let token = std::env::var(var).map_err(|_| {
            ConfigError::new(
                "--bearer-env",
                format!("environment variable {var} is not set"),
            )
            .hint(format!("export {var}=<token>"))
        })?;
        client.bearer_token = Some(token);
    }
    let tls = raw.tls.get_or_insert_with(Default::default);
    if let Some(ca) = &args.ca {
        tls.ca_cert = Some(ca.clone());
    }
    if args.ca_only {
        tls.ca_mode = Some("replace".into());
    }
    if let (Some(c), Some(k)) = (&args.cert, &args.key) {
        tls.cert_file = Some(c.clone());
        tls.key_file = Some(k.clone());
    }
    if let Some(n) = &args.server_name {
        tls.server_name = Some(n.clone());
    }
    if !args.pins.is_empty() {
        tls.pinned_sha256 = Some(args.pins.clone());
    }
    tls.insecure_skip_verify |= args.insecure;
    if let Some(l) = &args.log_level {
        raw.logging.level = Some(l.clone());
    }
    if let Some(f) = &args.log_format {
        raw.logging.format = Some(f.clone());
    }
    let timeout = config::parse_duration(&args.timeout).ok_or_else(|| {
        ConfigError::new("--timeout", format!("{:?} is not a duration", args.timeout))
            .hint("write 30s, 2m, ...")
    })?;
    let resolved =
        config::resolve(raw, args.config.as_deref()).map_err(|e| e.in_file(args.config.clone()))?;
    let client = resolved
        .client
        .ok_or_else(|| ConfigError::new("client", "is missing"))?;
    let spec = RemoteSpec {
        url: client.url,
        transport: client.transport,
        bearer_token: client.bearer_token,
        headers: client.headers,
        trust: client.trust,
        timeout,
    };
    Ok((spec, resolved.logging.level, resolved.logging.json))
}
