//! `mcpgate servers add|list|show|remove|trust`: the registry, through the admin API.
//!
//! The admin URL, token and CA come from flags or `MCPGATE_ADMIN_URL`, `MCPGATE_ADMIN_TOKEN`
//! and `MCPGATE_ADMIN_CA` (default: the development CA in the data directory). Client-side
//! paths (`--ca-cert`, `--cert`, `--key`) are sent as given: they are read by the gateway.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};

use crate::config::{CaMode, TrustSpec};
use crate::tls::trust;
use crate::upstream::connector::Connector;

#[derive(Args)]
pub struct ServersArgs {
    /// The admin API's base URL (default $MCPGATE_ADMIN_URL, else https://127.0.0.1:8444).
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// The environment variable holding the admin token.
    #[arg(
        long,
        global = true,
        value_name = "VAR",
        default_value = "MCPGATE_ADMIN_TOKEN"
    )]
    pub token_env: String,
    /// CA that signs the admin listener's certificate (default $MCPGATE_ADMIN_CA, else the
    /// development CA in the data directory).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Print the API's JSON answers as they are.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ServersCommand,
}

#[derive(Subcommand)]
pub enum ServersCommand {
    /// Register a server (a remote URL, or a stdio command after --).
    Add(AddArgs),
    /// List every server: from the config file and the registry, with health.
    List,
    /// One server's definition (secrets redacted), state and health.
    Show { name: String },
    /// Remove a registered server.
    Remove { name: String },
    /// Approve (or re-pin after a rotation) the certificate a server presents.
    Trust {
        name: String,
        /// The SHA-256 fingerprint shown by `add` (check it out of band first).
        #[arg(long)]
        fingerprint: String,
    },
    /// Connect to a server now with its trust profile: TLS, then the MCP handshake.
    Test { name: String },
    /// The chain a server presents, its expiry and the trust source.
    Tls { name: String },
}

#[derive(Args)]
pub struct AddArgs {
    pub name: String,
    /// The remote server's MCP URL.
    #[arg(long)]
    pub url: Option<String>,
    /// http (Streamable HTTP), sse, or auto.
    #[arg(long)]
    pub transport: Option<String>,
    /// The environment variable holding the upstream's bearer token (sent to the gateway, stored encrypted).
    #[arg(long, value_name = "VAR")]
    pub bearer_env: Option<String>,
    /// Extra CA for the upstream (a path on the gateway's host).
    #[arg(long)]
    pub ca_cert: Option<String>,
    /// Client certificate and key for the upstream (paths on the gateway's host).
    #[arg(long, requires = "key")]
    pub cert: Option<String>,
    #[arg(long, requires = "cert")]
    pub key: Option<String>,
    /// Approve this self-signed certificate fingerprint at once.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// The stdio server: `-- command [args...]`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

struct AdminClient {
    base: String,
    token: String,
    client: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl AdminClient {
    fn new(args: &ServersArgs) -> anyhow::Result<Self> {
        let base = args
            .admin
            .clone()
            .or_else(|| std::env::var("MCPGATE_ADMIN_URL").ok())
            .unwrap_or_else(|| "https://127.0.0.1:8444".into())
            .trim_end_matches('/')
            .to_string();
        let token = std::env::var(&args.token_env).map_err(|_| {
            anyhow::anyhow!(
                "{} is not set; hint: export {}=<the gateway's admin token>",
                args.token_env,
                args.token_env
            )
        })?;
        let ca = args
            .ca
            .clone()
            .or_else(|| std::env::var_os("MCPGATE_ADMIN_CA").map(PathBuf::from))
            .unwrap_or_else(|| crate::config::default_data_dir().join("ca.crt"));
        let spec = TrustSpec {
            key: "--ca".into(),
            ca_cert: ca.exists().then_some(ca),
            ca_mode: CaMode::Append,
            verify: true,
            configured: true,
            ..TrustSpec::default()
        };
        let profile = Arc::new(trust::build(&spec, &trust::Env::process())?);
        let connector = Connector::new("admin", profile, Duration::from_secs(30));
        Ok(Self {
            base,
            token,
            client: crate::upstream::remote::pooled_client(&connector),
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let req = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .context("cannot build the request")?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| {
                let detail = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
                anyhow::anyhow!("cannot reach the admin API at {}: {detail}; hint: is `mcpgate serve` running with admin.listen, and is --admin right?", self.base)
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&bytes)}));
        Ok((status, value))
    }
}

pub async fn run(args: ServersArgs) -> anyhow::Result<i32> {
    let client = AdminClient::new(&args)?;
    let (status, answer) = match &args.command {
        ServersCommand::List => client.call("GET", "/admin/servers", None).await?,
        ServersCommand::Show { name } => {
            client
                .call("GET", &format!("/admin/servers/{name}"), None)
                .await?
        }
        ServersCommand::Remove { name } => {
            client
                .call("DELETE", &format!("/admin/servers/{name}"), None)
                .await?
        }
        ServersCommand::Trust { name, fingerprint } => {
            client
                .call(
                    "POST",
                    &format!("/admin/servers/{name}/trust"),
                    Some(json!({"fingerprint": fingerprint})),
                )
                .await?
        }
        ServersCommand::Test { name } => {
            client
                .call("POST", &format!("/admin/servers/{name}/test"), None)
                .await?
        }
        ServersCommand::Tls { name } => {
            client
                .call("GET", &format!("/admin/servers/{name}/tls"), None)
                .await?
        }
        ServersCommand::Add(add) => {
            client
                .call("POST", "/admin/servers", Some(definition(add)?))
                .await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_text(&args.command, status, &answer);
    }
    Ok(if (200..300).contains(&status) { 0 } else { 1 })
}

fn definition(add: &AddArgs) -> anyhow::Result<Value> {
    let mut d = Map::new();
    d.insert("name".into(), json!(add.name));
    match (&add.url, add.command.as_slice()) {
        (Some(_), [_, ..]) => anyhow::bail!("give either --url or a command after --, not both"),
        (None, []) => anyhow::bail!(
            "give --url URL for a remote server, or -- COMMAND [ARGS] for a stdio one"
        ),
        (Some(url), []) => {
            d.insert("url".into(), json!(url));
        }
        (None, [cmd, rest @ ..]) => {
            d.insert("command".into(), json!(cmd));
            d.insert("args".into(), json!(rest));
        }
    }
    if let Some(t) = &add.transport {
        d.insert("transport".into(), json!(t));
    }
    if let Some(var) = &add.bearer_env {
        let token = std::env::var(var).map_err(|_| {
            anyhow::anyhow!("{var} is not set; hint: export {var}=<the upstream's token>")
        })?;
        d.insert("auth_type".into(), json!("bearer_token"));
        d.insert("authentication_token".into(), json!(token));
    }
    let mut tls = Map::new();
    if let Some(ca) = &add.ca_cert {
        tls.insert("ca_cert".into(), json!(ca));
    }
    if let (Some(c), Some(k)) = (&add.cert, &add.key) {
        tls.insert("cert_file".into(), json!(c));
        tls.insert("key_file".into(), json!(k));
    }
    if !tls.is_empty() {
        d.insert("tls".into(), Value::Object(tls));
    }
    if let Some(fp) = &add.fingerprint {
        d.insert("trust_fingerprint".into(), json!(fp));
    }
    Ok(Value::Object(d))
}

fn print_text(command: &ServersCommand, status: u16, answer: &Value) {
    if !(200..300).contains(&status) {
        let msg = answer["message"]
            .as_str()
            .unwrap_or("the admin API refused");
        eprintln!(
            "error: {msg} ({status} {})",
            answer["error"].as_str().unwrap_or("")
        );
        if let Some(fp) = answer["fingerprint"].as_str() {
            eprintln!("  presented SHA-256: {fp}");
        }
        return;
    }
    match command {
        ServersCommand::List => {
            let empty = Vec::new();
            let servers = answer["servers"].as_array().unwrap_or(&empty);
            if servers.is_empty() {
                println!("no servers");
            }
            for s in servers {
                let state = s["health"]["state"].as_str().unwrap_or("-");
                println!(
                    "{:<24} {:<9} {:<14} {}",
                    s["name"].as_str().unwrap_or("?"),
                    s["source"].as_str().unwrap_or("?"),
                    s["state"].as_str().unwrap_or("?"),
                    s["health"]["error"]
                        .as_str()
                        .map(|e| format!("{state}: {e}"))
                        .unwrap_or_else(|| state.to_string())
                );
            }
        }
        ServersCommand::Remove { name } => println!("removed {name}"),
        ServersCommand::Trust { name, .. } => println!(
            "pinned {name}: SHA-256 {}",
            answer["pinned_sha256"].as_str().unwrap_or("?")
        ),
        ServersCommand::Add(a) => println!(
            "registered {} ({})",
            a.name,
            answer["state"].as_str().unwrap_or("?")
        ),
        _ => println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        ),
    }
}
