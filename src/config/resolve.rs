//! From `RawConfig` to `Config`: every value checked, defaults filled, errors with key paths.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawConfig, RawServer, RawTls, RawUpstream, SslVerify};
use super::*;

const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// Validates a raw config. `file` anchors relative paths (they are relative to the config file).
pub fn resolve(raw: RawConfig, file: Option<&Path>) -> Result<Config, ConfigError> {
    let base = file.and_then(Path::parent).map(Path::to_path_buf);
    let paths = Paths { base };
    if let Some(mode) = &raw.mode
        && mode != "server"
        && mode != "client"
    {
        return Err(ConfigError::new("mode", format!("{mode:?} is not a mode"))
            .hint("use mode: server (for serve) or mode: client (for connect)"));
    }
    let server = resolve_server(&raw.server)?;
    let client_mode = raw.mode.as_deref() == Some("client") || raw.client.is_some();
    let listener = if client_mode {
        ListenerSecurity::Plaintext
    } else {
        resolve_listener(raw.tls.as_ref(), &server, &raw.server, &paths)?
    };
    let auth = resolve_auth(&raw.auth)?;
    let mut upstreams = Vec::new();
    if let Some(mcp) = &raw.mcp {
        let spec = StdioSpec {
            command: nonempty("mcp.command", &mcp.command)?,
            args: mcp.args.clone(),
            env: mcp.env.clone(),
            cwd: mcp.cwd.as_deref().map(|c| paths.resolve(c)),
            session_mode: session_mode("mcp.session_mode", mcp.session_mode.as_deref())?,
        };
        upstreams.push(UpstreamSpec {
            name: name_from_command(&spec.command),
            kind: UpstreamKind::Stdio(spec),
        });
    }
    for (name, up) in &raw.mcp_servers {
        check_name(name)?;
        if upstreams.iter().any(|u: &UpstreamSpec| &u.name == name) {
            return Err(ConfigError::new(
                format!("mcp_servers.{name}"),
                format!("the name {name:?} is also the name derived from mcp.command"),
            )
            .hint("rename the mcp_servers entry"));
        }
        upstreams.push(resolve_upstream(name, up, &paths)?);
    }
    let client = match &raw.client {
        Some(c) => Some(ClientSpec {
            url: check_url("client.url", &c.url)?,
            transport: remote_transport("client.transport", c.transport.as_deref())?,
            headers: c.headers.clone(),
            bearer_token: c.bearer_token.clone(),
            trust: resolve_trust("tls", raw.tls.as_ref(), None, &paths)?,
        }),
        None => None,
    };
    let logging = Logging {
        level: log_level(raw.logging.level.as_deref())?,
        json: match raw.logging.format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "logging.format",
                    format!("{other:?} is not a log format"),
                )
                .hint("use text or json"));
            }
        },
        tls_debug: raw.logging.tls_debug,
    };
    let data_dir = match &raw.data_dir {
        Some(d) => paths.resolve(d),
        None => default_data_dir(),
    };
    let metrics_listen = match &raw.metrics {
        Some(m) => Some(parse_listen(&m.listen).map_err(|e| {
            ConfigError::new("metrics.listen", e.problem).hint("write it as 127.0.0.1:9464")
        })?),
        None => None,
    };
    let database_url = match &raw.database {
        Some(d) => {
            crate::registry::Location::from_config(Some(&d.url), &data_dir).map_err(|e| {
                ConfigError::new("database.url", e).hint(
                    "write postgres://user:password@host:5432/db, or sqlite:/path/registry.db",
                )
            })?;
            // A relative SQLite path is relative to the config file, like every other path.
            match d
                .url
                .strip_prefix("sqlite:")
                .map(|r| r.trim_start_matches("//"))
            {
                Some(rest) if !rest.starts_with('/') => {
                    Some(format!("sqlite:{}", paths.resolve(rest).display()))
                }
                _ => Some(d.url.clone()),
            }
        }
        None => None,
    };
    let admin = match &raw.admin {
        Some(a) => Some(AdminSettings {
            listen: parse_listen(&a.listen).map_err(|e| {
                ConfigError::new("admin.listen", e.problem).hint("write it as 127.0.0.1:8444")
            })?,
            tokens: a.tokens.iter().filter(|t| !t.is_empty()).cloned().collect(),
        }),
        None => None,
    };
    Ok(Config {
        admin,
        database_url,
        metrics_listen,
        file: file.map(Path::to_path_buf),
        server,
        listener,
        auth,
        upstreams,
        client,
        logging,
        data_dir,
    })
}

struct Paths {
    base: Option<PathBuf>,
}

impl Paths {
    fn resolve(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        match &self.base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        }
    }
}

fn resolve_server(raw: &RawServer) -> Result<ServerSettings, ConfigError> {
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = parse_listen(listen_text)?;
    let limits = Limits {
        max_body_bytes: size("server.max_body_bytes", raw.max_body_bytes, 4 << 20)?,
        max_header_bytes: size("server.max_header_bytes", raw.max_header_bytes, 64 << 10)?,
        max_sessions: size("server.max_sessions", raw.max_sessions, 1024)?,
        session_idle_timeout: duration_or(
            "server.session_idle_timeout",
            raw.session_idle_timeout.as_deref(),
            Duration::from_secs(30 * 60),
        )?,
        header_read_timeout: duration_or(
            "server.header_read_timeout",
            raw.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        request_timeout: duration_or(
            "server.request_timeout",
            raw.request_timeout.as_deref(),
            Duration::from_secs(300),
        )?,
    };
    Ok(ServerSettings {
        listen,
        allowed_origins: raw.allowed_origins.clone().unwrap_or_default(),
        allowed_hosts: raw.allowed_hosts.clone(),
        limits,
    })
}

/// Accepts `host:port`, `[v6]:port`, `:port` (loopback, never all interfaces) and `localhost:port`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    let normalized = if let Some(port) = text.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = text.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        text.to_string()
    };
    normalized.parse().map_err(|_| {
        ConfigError::new(
            "server.listen",
            format!("{text:?} is not an address and port"),
        )
        .hint("write it as 127.0.0.1:8443, [::1]:8443 or 0.0.0.0:8443")
    })
}

fn resolve_listener(
    tls: Option<&RawTls>,
    server: &ServerSettings,
    raw_server: &RawServer,
    paths: &Paths,
) -> Result<ListenerSecurity, ConfigError> {
    let default = RawTls::default();
    let tls = tls.unwrap_or(&default);
    for (key, set) in [
        ("tls.ca_cert", tls.ca_cert.is_some()),
        ("tls.ca_mode", tls.ca_mode.is_some()),
        ("tls.server_name", tls.server_name.is_some()),
        ("tls.pinned_sha256", tls.pinned_sha256.is_some()),
        ("tls.insecure_skip_verify", tls.insecure_skip_verify),
    ] {
        if set {
            return Err(ConfigError::new(
                key,
                "is an outbound (client) setting, not a listener one",
            )
            .hint("put it under mcp_servers.<name>.tls, or use mode: client for connect"));
        }
    }
    if tls.enabled == Some(false) {
        for (key, set) in [
            ("tls.cert_file", tls.cert_file.is_some()),
            ("tls.key_file", tls.key_file.is_some()),
            ("tls.client_ca_file", tls.client_ca_file.is_some()),
            ("tls.client_auth", tls.client_auth.is_some()),
            ("tls.min_version", tls.min_version.is_some()),
            ("tls.max_version", tls.max_version.is_some()),
            ("tls.cipher_suites", tls.cipher_suites.is_some()),
            ("tls.curve_preferences", tls.curve_preferences.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    key,
                    "is set, but tls.enabled is false, so it would be ignored",
                )
                .hint("remove tls.enabled: false to serve TLS, or remove the TLS settings"));
            }
        }
        if !server.listen.ip().is_loopback() && !raw_server.insecure_allow_plaintext {
            return Err(ConfigError::new(
                "tls.enabled",
                format!("false, but server.listen is {} (not loopback)", server.listen),
            )
            .hint("enable TLS, listen on 127.0.0.1, or set server.insecure_allow_plaintext: true (dangerous: tokens travel in clear text)"));
        }
        return Ok(ListenerSecurity::Plaintext);
    }
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => Identity::Files {
            cert_file: paths.resolve(c),
            key_file: paths.resolve(k),
        },
        (None, None) => Identity::DevCa,
        (Some(_), None) => {
            return Err(
                ConfigError::new("tls.key_file", "is missing while tls.cert_file is set")
                    .hint("give the private key of the certificate in tls.key_file"),
            );
        }
        (None, Some(_)) => {
            return Err(
                ConfigError::new("tls.cert_file", "is missing while tls.key_file is set")
                    .hint("give the certificate chain (PEM) in tls.cert_file"),
            );
        }
    };
    let min_version = tls_version(
        "tls.min_version",
        tls.min_version.as_deref(),
        TlsVersion::V1_2,
    )?;
    let max_version = tls_version(
        "tls.max_version",
        tls.max_version.as_deref(),
        TlsVersion::V1_3,
    )?;
    if min_version > max_version {
        return Err(ConfigError::new(
            "tls.min_version",
            "is above tls.max_version, so no version is left",
        )
        .hint("set min_version to 1.2 or max_version to 1.3"));
    }
    let client_ca_file = tls.client_ca_file.as_deref().map(|p| paths.resolve(p));
    let client_auth = match tls.client_auth.as_deref() {
        None if client_ca_file.is_some() => ClientAuth::Verify,
        None | Some("none") | Some("NoClientCert") => ClientAuth::None,
        Some("request") | Some("VerifyClientCertIfGiven") => ClientAuth::Request,
        Some("require") | Some("RequireAnyClientCert") => ClientAuth::Require,
        Some("verify") | Some("RequireAndVerifyClientCert") => ClientAuth::Verify,
        Some(other) => {
            return Err(ConfigError::new(
                "tls.client_auth",
                format!("{other:?} is not a client_auth mode"),
            )
            .hint("use none, request (verified if sent), require (any certificate) or verify (required and verified)"));
        }
    };
    if matches!(client_auth, ClientAuth::Request | ClientAuth::Verify) && client_ca_file.is_none() {
        return Err(ConfigError::new(
            "tls.client_ca_file",
            format!(
                "is missing, but client_auth is {:?}",
                tls.client_auth.as_deref().unwrap_or("")
            ),
        )
        .hint("give the CA that signs client certificates in tls.client_ca_file"));
    }
    Ok(ListenerSecurity::Tls(ListenerTls {
        identity,
        min_version,
        max_version,
        cipher_suites: tls.cipher_suites.clone().unwrap_or_default(),
        curve_preferences: tls.curve_preferences.clone().unwrap_or_default(),
        client_ca_file,
        client_auth,
        reload_interval: duration_or(
            "tls.reload_interval",
            tls.reload_interval.as_deref(),
            Duration::from_secs(2),
        )?,
    }))
}

fn tls_version(
    key: &str,
    value: Option<&str>,
    default: TlsVersion,
) -> Result<TlsVersion, ConfigError> {
    match value {
        None => Ok(default),
        Some("1.2") | Some("TLS1.2") | Some("TLSv1.2") => Ok(TlsVersion::V1_2),
        Some("1.3") | Some("TLS1.3") | Some("TLSv1.3") => Ok(TlsVersion::V1_3),
        Some(v @ ("1.0" | "1.1" | "TLS1.0" | "TLS1.1" | "TLSv1" | "TLSv1.0" | "TLSv1.1")) => Err(
            ConfigError::new(key, format!("{v:?} is refused: TLS 1.0 and 1.1 are deprecated (RFC 8996) and not implemented"))
                .hint("use \"1.2\" (the lowest version mcpgate speaks) or \"1.3\""),
        ),
        Some(v) => Err(ConfigError::new(key, format!("{v:?} is not a TLS version"))
            .hint("use \"1.2\" or \"1.3\" (quoted, so YAML keeps it a string)")),
    }
}

fn resolve_auth(raw: &super::raw::RawAuth) -> Result<Auth, ConfigError> {
    let mut tokens: Vec<(String, String)> = Vec::new();
    if let Some(b) = &raw.bearer {
        for (i, t) in b.tokens.iter().enumerate() {
            tokens.push((format!("auth.bearer.tokens.{i}"), t.clone()));
        }
    }
    for (i, t) in raw.tokens.iter().flatten().enumerate() {
        tokens.push((format!("auth.tokens.{i}"), t.clone()));
    }
    if let Some(t) = &raw.token {
        tokens.push(("auth.token".into(), t.clone()));
    }
    match raw.kind.as_deref() {
        None | Some("bearer") => {}
        Some("none") if tokens.is_empty() => return Ok(Auth::default()),
        Some("none") => {
            return Err(
                ConfigError::new("auth.type", "is none, but tokens are configured")
                    .hint("set auth.type: bearer, or remove the tokens"),
            );
        }
        Some(other) => {
            return Err(
                ConfigError::new("auth.type", format!("{other:?} is not supported"))
                    .hint("use bearer (with auth.bearer.tokens) or none"),
            );
        }
    }
    if raw.kind.as_deref() == Some("bearer") && tokens.is_empty() {
        return Err(
            ConfigError::new("auth.bearer.tokens", "is empty, but auth.type is bearer")
                .hint("list at least one token, e.g. tokens: [\"${MCP_AUTH_TOKEN}\"]"),
        );
    }
    for (key, token) in &tokens {
        if token.trim().is_empty() {
            return Err(ConfigError::new(key.as_str(), "is empty")
                .hint("an empty token would let anyone in; set the variable it comes from"));
        }
    }
    Ok(Auth {
        bearer_tokens: tokens.into_iter().map(|(_, t)| t).collect(),
    })
}

/// A registry server's definition (the keys of a `mcp_servers` entry, as JSON) resolved
/// like one from the config file; relative paths are relative to the working directory.
pub fn registry_upstream(
    name: &str,
    spec: &serde_json::Value,
) -> Result<UpstreamSpec, ConfigError> {
    check_name(name)?;
    // The pinned certificate stored beside the definition is for display, not a config key.
    let mut spec = spec.clone();
    if let Some(o) = spec.as_object_mut() {
        o.remove("pinned_cert_pem");
    }
    let raw: RawUpstream = serde_path_to_error::deserialize(&spec).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            format!("mcp_servers.{name}")
        } else {
            format!("mcp_servers.{name}.{path}")
        };
        ConfigError::new(key, e.into_inner().to_string())
            .hint("use the keys of a mcp_servers entry (see examples/)")
    })?;
    resolve_upstream(name, &raw, &Paths { base: None })
}

fn resolve_upstream(
    name: &str,
    up: &RawUpstream,
    paths: &Paths,
) -> Result<UpstreamSpec, ConfigError> {
    let key = format!("mcp_servers.{name}");
    let transport = up.transport.as_deref();
    let is_stdio = match (transport, &up.command, &up.url) {
        (_, Some(_), Some(_)) => {
            return Err(ConfigError::new(&key, "has both command and url")
                .hint("a stdio server has command (and args); a remote one has url"));
        }
        (Some("stdio"), _, None) | (None, Some(_), None) => true,
        (Some("stdio"), _, Some(_)) => {
            return Err(
                ConfigError::new(format!("{key}.url"), "is set, but transport is stdio")
                    .hint("remove url, or set transport: http | sse | auto"),
            );
        }
        (_, None, Some(_)) => false,
        (_, None, None) => {
            return Err(ConfigError::new(&key, "has neither command nor url")
                .hint("give command (stdio server) or url (remote server)"));
        }
        (Some(_), Some(_), None) => {
            return Err(ConfigError::new(
                format!("{key}.transport"),
                format!(
                    "{:?} needs a url, but only command is set",
                    transport.unwrap_or("")
                ),
            )
            .hint("use transport: stdio for a command"));
        }
    };
    if is_stdio {
        for (k, set) in [
            ("auth_type", up.auth_type.is_some()),
            ("authentication_token", up.authentication_token.is_some()),
            ("ssl_verify", up.ssl_verify.is_some()),
            ("tls", up.tls.is_some()),
            ("headers", !up.headers.is_empty()),
        ] {
            if set {
                return Err(ConfigError::new(
                    format!("{key}.{k}"),
                    "applies to remote servers only",
                )
                .hint("remove it: a stdio server is reached through its command"));
            }
        }
        let command = nonempty(
            &format!("{key}.command"),
            up.command.as_deref().unwrap_or(""),
        )?;
        return Ok(UpstreamSpec {
            name: name.to_string(),
            kind: UpstreamKind::Stdio(StdioSpec {
                command,
                args: up.args.clone(),
                env: up.env.clone(),
                cwd: up.cwd.as_deref().map(|c| paths.resolve(c)),
                session_mode: session_mode(
                    &format!("{key}.session_mode"),
                    up.session_mode.as_deref(),
                )?,
            }),
        });
    }
    let url = check_url(&format!("{key}.url"), up.url.as_deref().unwrap_or(""))?;
    let bearer_token = match up.auth_type.as_deref() {
        None if up.authentication_token.is_some() => up.authentication_token.clone(),
        None | Some("none") => None,
        Some("bearer_token") | Some("bearer") => Some(
            up.authentication_token
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{key}.authentication_token"),
                        "is missing or empty, but auth_type is bearer_token",
                    )
                    .hint("set authentication_token: \"${TOKEN_VAR}\"")
                })?,
        ),
        Some(other) => {
            return Err(ConfigError::new(
                format!("{key}.auth_type"),
                format!("{other:?} is not supported"),
            )
            .hint("use bearer_token or none"));
        }
    };
    Ok(UpstreamSpec {
        name: name.to_string(),
        kind: UpstreamKind::Remote(RemoteSpec {
            url,
            transport: remote_transport(&format!("{key}.transport"), transport)?,
            bearer_token,
            headers: up.headers.clone(),
            trust: resolve_trust(
                &format!("{key}.tls"),
                up.tls.as_ref(),
                up.ssl_verify.as_ref(),
                paths,
            )?,
            timeout: duration_or(
                &format!("{key}.timeout"),
                up.timeout.as_deref(),
                Duration::from_secs(60),
            )?,
        }),
    })
}

/// The outbound trust profile of one upstream (or of `connect`).
fn resolve_trust(
    key: &str,
    tls: Option<&RawTls>,
    ssl_verify: Option<&SslVerify>,
    paths: &Paths,
) -> Result<TrustSpec, ConfigError> {
    let default = RawTls::default();
    let tls = tls.unwrap_or(&default);
    for (k, set) in [
        ("min_version", tls.min_version.is_some()),
        ("max_version", tls.max_version.is_some()),
        ("cipher_suites", tls.cipher_suites.is_some()),
        ("curve_preferences", tls.curve_preferences.is_some()),
        ("client_ca_file", tls.client_ca_file.is_some()),
        ("client_auth", tls.client_auth.is_some()),
    ] {
        if set {
            return Err(ConfigError::new(format!("{key}.{k}"), "is a listener setting, not an outbound one")
                .hint("outbound TLS takes ca_cert, ca_mode, cert_file, key_file, server_name, pinned_sha256, insecure_skip_verify"));
        }
    }
    let mut spec = TrustSpec {
        key: key.to_string(),
        verify: true,
        ..TrustSpec::default()
    };
    match ssl_verify {
        Some(SslVerify::Flag(false)) => spec.verify = false,
        Some(SslVerify::Flag(true)) => {}
        Some(SslVerify::CaPath(p)) => spec.ca_cert = Some(paths.resolve(p)),
        None => {}
    }
    if let Some(ca) = &tls.ca_cert {
        spec.ca_cert = Some(paths.resolve(ca));
    }
    spec.ca_mode = match tls.ca_mode.as_deref() {
        None | Some("append") => CaMode::Append,
        Some("replace") => CaMode::Replace,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{key}.ca_mode"),
                format!("{other:?} is not a ca_mode"),
            )
            .hint(
                "use append (system store plus ca_cert, the default) or replace (ca_cert only)",
            ));
        }
    };
    if spec.ca_mode == CaMode::Replace && spec.ca_cert.is_none() {
        return Err(ConfigError::new(
            format!("{key}.ca_mode"),
            "is replace, but no ca_cert is given",
        )
        .hint("set ca_cert to the CA file or directory to trust"));
    }
    if tls.insecure_skip_verify {
        spec.verify = false;
    }
    spec.client_cert = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => Some((paths.resolve(c), paths.resolve(k))),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                format!("{key}.key_file"),
                "is missing while cert_file is set",
            )
            .hint("give the client certificate's private key"));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                format!("{key}.cert_file"),
                "is missing while key_file is set",
            )
            .hint("give the client certificate (PEM)"));
        }
    };
    spec.server_name = tls.server_name.clone();
    for (i, pin) in tls.pinned_sha256.iter().flatten().enumerate() {
        spec.pinned_sha256.push(parse_fingerprint(pin).map_err(|problem| {
            ConfigError::new(format!("{key}.pinned_sha256.{i}"), problem)
                .hint("give the SHA-256 fingerprint as 64 hex digits, colons allowed (mcpgate probe prints it)")
        })?);
    }
    spec.configured = ssl_verify.is_some()
        || tls.ca_cert.is_some()
        || tls.insecure_skip_verify
        || !spec.pinned_sha256.is_empty();
    Ok(spec)
}

/// Parses `AB:CD:...` or `abcd...` (optionally prefixed `sha256:`) into 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a SHA-256 fingerprint"));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn remote_transport(key: &str, value: Option<&str>) -> Result<RemoteTransport, ConfigError> {
    match value {
        None | Some("auto") => Ok(RemoteTransport::Auto),
        Some("http")
        | Some("streamable_http")
        | Some("streamable-http")
        | Some("streamablehttp") => Ok(RemoteTransport::StreamableHttp),
        Some("sse") => Ok(RemoteTransport::Sse),
        Some(other) => Err(
            ConfigError::new(key, format!("{other:?} is not a transport")).hint(
                "use http (Streamable HTTP), sse (legacy HTTP+SSE), auto, or stdio with a command",
            ),
        ),
    }
}

fn check_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(
            ConfigError::new(key, format!("{url:?} is not an http(s) URL"))
                .hint("write the full URL, e.g. https://mcp.example.com/mcp"),
        );
    }
    Ok(url.to_string())
}

fn session_mode(key: &str, value: Option<&str>) -> Result<SessionMode, ConfigError> {
    match value {
        None | Some("isolated") => Ok(SessionMode::Isolated),
        Some("shared") => Ok(SessionMode::Shared),
        Some(other) => Err(ConfigError::new(key, format!("{other:?} is not a session mode"))
            .hint("use isolated (a child per client session, the default) or shared (one child for all)")),
    }
}

fn nonempty(key: &str, value: &str) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(
            ConfigError::new(key, "is empty").hint("give the command that starts the MCP server")
        );
    }
    Ok(value.to_string())
}

fn check_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(
            ConfigError::new(format!("mcp_servers.{name}"), "is not a valid server name").hint(
                "use 1 to 64 letters, digits, '_' or '-' (the name appears in URLs and tool names)",
            ),
        );
    }
    Ok(())
}

/// A server name derived from a command: its file name, cleaned to the name alphabet.
pub fn name_from_command(command: &str) -> String {
    let base = Path::new(command)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("mcp");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "mcp".into()
    } else {
        cleaned
    }
}

fn log_level(value: Option<&str>) -> Result<String, ConfigError> {
    match value {
        None => Ok("info".into()),
        Some(v @ ("trace" | "debug" | "info" | "warn" | "error")) => Ok(v.to_string()),
        Some("warning") => Ok("warn".into()),
        Some(other) => Err(ConfigError::new(
            "logging.level",
            format!("{other:?} is not a log level"),
        )
        .hint("use trace, debug, info, warn or error")),
    }
}

fn size(key: &str, value: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::new(key, "is 0").hint("give a positive number")),
        Some(v) => {
            usize::try_from(v).map_err(|_| ConfigError::new(key, format!("{v} is too large")))
        }
    }
}

fn duration_or(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v).ok_or_else(|| {
            ConfigError::new(key, format!("{v:?} is not a duration"))
                .hint("write a number with a unit: 500ms, 10s, 5m, 1h")
        }),
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// `$MCPGATE_DATA_DIR`, else the XDG data dir, else `~/.local/share/mcpgate`, else `./.mcpgate-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MCPGATE_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("mcpgate");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/mcpgate");
    }
    PathBuf::from(".mcpgate-data")
}

/// Builds the stdio upstream of `serve -- <command> [args]`.
pub fn stdio_from_cli(command: Vec<String>, shared: bool) -> Option<UpstreamSpec> {
    let mut parts = command.into_iter();
    let cmd = parts.next()?;
    Some(UpstreamSpec {
        name: name_from_command(&cmd),
        kind: UpstreamKind::Stdio(StdioSpec {
            command: cmd,
            args: parts.collect(),
            env: BTreeMap::new(),
            cwd: None,
            session_mode: if shared {
                SessionMode::Shared
            } else {
                SessionMode::Isolated
            },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_raw;

    fn upstream_trust(yaml: &str) -> TrustSpec {
        let config = resolve(parse_raw(yaml).unwrap(), None).unwrap();
        match &config.upstreams[0].kind {
            UpstreamKind::Remote(r) => r.trust.clone(),
            UpstreamKind::Stdio(_) => panic!("expected a remote upstream"),
        }
    }

    #[test]
    fn ssl_verify_has_its_litellm_meanings() {
        let off =
            upstream_trust("mcp_servers:\n  a:\n    url: https://h/mcp\n    ssl_verify: false\n");
        assert!(!off.verify && off.configured);
        let on =
            upstream_trust("mcp_servers:\n  a:\n    url: https://h/mcp\n    ssl_verify: true\n");
        assert!(on.verify && on.ca_cert.is_none() && on.configured);
        let path = upstream_trust(
            "mcp_servers:\n  a:\n    url: https://h/mcp\n    ssl_verify: /etc/ssl/corp.pem\n",
        );
        assert_eq!(
            path.ca_cert.as_deref(),
            Some(std::path::Path::new("/etc/ssl/corp.pem"))
        );
        assert_eq!(
            path.ca_mode,
            CaMode::Append,
            "a CA path is added to the system store"
        );
        let none = upstream_trust("mcp_servers:\n  a:\n    url: https://h/mcp\n");
        assert!(
            none.verify && !none.configured,
            "nothing configured: the environment decides"
        );
    }

    #[test]
    fn litellm_style_bearer_upstreams_load() {
        let config = resolve(
            parse_raw("mcp_servers:\n  a:\n    url: https://h/mcp\n    transport: sse\n    auth_type: bearer_token\n    authentication_token: abc\n").unwrap(),
            None,
        )
        .unwrap();
        let UpstreamKind::Remote(r) = &config.upstreams[0].kind else {
            panic!()
        };
        assert_eq!(r.bearer_token.as_deref(), Some("abc"));
        assert_eq!(r.transport, RemoteTransport::Sse);
    }
}
