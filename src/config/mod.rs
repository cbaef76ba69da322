//! Configuration: YAML (or CLI flags) in, a validated `Config` out.
//!
//! Two stages: `raw` mirrors the YAML with unknown keys refused; `resolve` checks every value
//! and produces typed settings. Loading binds no port and spawns nothing, so
//! `serve --check-config` and tests use it freely. TLS material (PEM files, suites, groups) is
//! checked by `tls::server::build`, which `--check-config` also runs.

mod env;
mod error;
pub mod raw;
mod resolve;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use resolve::{
    default_data_dir, name_from_command, parse_duration, parse_fingerprint, parse_listen,
    registry_upstream, resolve, stdio_from_cli,
};

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: Option<PathBuf>,
    pub server: ServerSettings,
    pub listener: ListenerSecurity,
    pub auth: Auth,
    pub upstreams: Vec<UpstreamSpec>,
    pub client: Option<ClientSpec>,
    pub logging: Logging,
    pub data_dir: PathBuf,
    /// Where `/metrics` is served (plain HTTP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// `database.url`: the registry's PostgreSQL (or SQLite) URL; None: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// The admin API, when `admin.listen` is set.
    pub admin: Option<AdminSettings>,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Accepted bearer tokens (plus `MCPGATE_ADMIN_TOKEN`, read by serve).
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Origins allowed besides loopback ones (exact `scheme://host[:port]`, or `*`).
    pub allowed_origins: Vec<String>,
    /// Hosts allowed in the `Host` header; `None` means loopback names on a loopback listener
    /// and any host otherwise.
    pub allowed_hosts: Option<Vec<String>>,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_sessions: usize,
    pub session_idle_timeout: Duration,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
}

/// How the listener protects its traffic.
#[derive(Debug, Clone)]
pub enum ListenerSecurity {
    Tls(ListenerTls),
    /// `tls.enabled: false`: allowed on loopback, or anywhere with `server.insecure_allow_plaintext`.
    Plaintext,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub identity: Identity,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    pub cipher_suites: Vec<String>,
    pub curve_preferences: Vec<String>,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub enum Identity {
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    /// No certificate configured: a development CA and server certificate in the data dir.
    DevCa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// Client certificate policy, with Go's meanings: `verify` is required AND verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Asked for; verified against `client_ca_file` when sent; not required.
    Request,
    /// Required, but not chain-verified (the handshake signature still is).
    Require,
    /// Required and verified against `client_ca_file`.
    Verify,
}

#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub bearer_tokens: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    pub kind: UpstreamKind,
}

#[derive(Debug, Clone)]
pub enum UpstreamKind {
    Stdio(StdioSpec),
    Remote(RemoteSpec),
}

#[derive(Debug, Clone)]
pub struct StdioSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub session_mode: SessionMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// One child process per client session (the default: no state shared between clients).
    Isolated,
    /// One child for all sessions, with JSON-RPC ids remapped.
    Shared,
}

#[derive(Debug, Clone)]
pub struct RemoteSpec {
    pub url: String,
    pub transport: RemoteTransport,
    pub bearer_token: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub trust: TrustSpec,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteTransport {
    StreamableHttp,
    Sse,
    Auto,
}

/// The outbound trust profile as configured (built into a rustls config by `tls::trust`).
#[derive(Debug, Clone, Default)]
pub struct TrustSpec {
    /// The config key prefix the profile came from, for error messages.
    pub key: String,
    pub ca_cert: Option<PathBuf>,
    pub ca_mode: CaMode,
    pub verify: bool,
    /// True when the config said anything about trust; otherwise the environment decides.
    pub configured: bool,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub server_name: Option<String>,
    pub pinned_sha256: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaMode {
    /// Extra CAs added to the system store.
    #[default]
    Append,
    /// Extra CAs only.
    Replace,
}

#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub url: String,
    pub transport: RemoteTransport,
    pub headers: BTreeMap<String, String>,
    pub bearer_token: Option<String>,
    pub trust: TrustSpec,
}

#[derive(Debug, Clone)]
pub struct Logging {
    pub level: String,
    pub json: bool,
    pub tls_debug: bool,
}

/// Reads and parses a YAML file into the raw config, with `${VAR}` expanded.
pub fn read_raw(path: &Path) -> Result<raw::RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new("", format!("cannot read config file: {e}"))
            .in_file(Some(path.to_owned()))
            .hint("check the path given to --config and that the file is readable")
    })?;
    parse_raw(&text).map_err(|e| e.in_file(Some(path.to_owned())))
}

/// Parses YAML text into the raw config.
pub fn parse_raw(text: &str) -> Result<raw::RawConfig, ConfigError> {
    let mut tree: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            ConfigError::new("", format!("not valid YAML: {e}"))
                .hint("fix the YAML syntax at the line shown")
        })?
    };
    if tree.is_null() {
        tree = serde_json::Value::Object(Default::default());
    }
    env::expand_tree(&mut tree, &mut Vec::new())?;
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let inner = e.into_inner().to_string();
        let hint = if inner.starts_with("unknown field") {
            "remove or rename the key; the keys accepted here are listed above"
        } else {
            "correct the value's type (see examples/ for each key)"
        };
        ConfigError::new(key, inner).hint(hint)
    })
}

/// Loads a config file and resolves it.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let raw = read_raw(path)?;
    resolve(raw, Some(path)).map_err(|e| e.in_file(Some(path.to_owned())))
}
