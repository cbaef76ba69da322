//! The raw config: types that mirror the YAML exactly, with unknown keys refused.
//!
//! Nothing here is validated beyond its shape; `config::resolve` turns a `RawConfig` into a
//! `Config` whose existence proves it is usable. Key names follow the vocabulary users already
//! know (MCP Bridge style for `server`/`tls`/`auth`/`mcp`, LiteLLM style for `mcp_servers`).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `server` (serve) or `client` (connect); optional, checked against the command.
    pub mode: Option<String>,
    #[serde(default)]
    pub server: RawServer,
    /// The listener's TLS in server mode; the outbound trust profile in client mode.
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub auth: RawAuth,
    /// Bridge-style shorthand for one stdio upstream.
    pub mcp: Option<RawStdio>,
    #[serde(default)]
    pub mcp_servers: BTreeMap<String, RawUpstream>,
    pub client: Option<RawClient>,
    #[serde(default)]
    pub logging: RawLogging,
    pub data_dir: Option<String>,
    pub metrics: Option<RawMetrics>,
    pub database: Option<RawDatabase>,
    pub admin: Option<RawAdmin>,
}

/// The admin API's own listener (TLS with the listener's certificate, bearer tokens).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// Where the upstream registry lives: `sqlite:PATH` or `postgres://...` (default: a SQLite
/// file in the data directory).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub url: String,
}

/// Prometheus metrics on a listener of their own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    /// Serve plain HTTP on a non-loopback address. Dangerous; named so.
    #[serde(default)]
    pub insecure_allow_plaintext: bool,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub max_body_bytes: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_sessions: Option<u64>,
    pub session_idle_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub enabled: Option<bool>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub cipher_suites: Option<Vec<String>>,
    pub curve_preferences: Option<Vec<String>>,
    pub client_ca_file: Option<String>,
    pub client_auth: Option<String>,
    pub reload_interval: Option<String>,
    // Outbound (client-side) keys: valid under `mcp_servers.*.tls` and in client mode.
    pub ca_cert: Option<String>,
    pub ca_mode: Option<String>,
    pub server_name: Option<String>,
    pub pinned_sha256: Option<Vec<String>>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub bearer: Option<RawBearer>,
    /// Shorthand for `bearer.tokens`.
    pub tokens: Option<Vec<String>>,
    /// Shorthand for a single bearer token.
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBearer {
    pub tokens: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStdio {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(alias = "working_dir")]
    pub cwd: Option<String>,
    /// `isolated` (one child per client session, the default) or `shared`.
    pub session_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub transport: Option<String>,
    // stdio
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(alias = "working_dir")]
    pub cwd: Option<String>,
    pub session_mode: Option<String>,
    // remote
    pub url: Option<String>,
    pub auth_type: Option<String>,
    pub authentication_token: Option<String>,
    pub ssl_verify: Option<SslVerify>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub tls: Option<RawTls>,
    pub timeout: Option<String>,
}

/// LiteLLM's `ssl_verify`: a boolean, or a CA bundle path.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SslVerify {
    Flag(bool),
    CaPath(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub url: String,
    pub transport: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub bearer_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub level: Option<String>,
    pub format: Option<String>,
    #[serde(default)]
    pub tls_debug: bool,
}
