//! `mcpgate serve`: config (file and flags) -> TLS -> router -> listener, then the banner.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use crate::config::{self, Config, ConfigError, ListenerSecurity, UpstreamKind, raw::RawConfig};
use crate::registry::secrets::SecretKey;
use crate::registry::{Location, Registry};
use crate::router::Gateway;
use crate::server::{self, App};
use crate::tls::{reload, server as tls_server};

#[derive(Args, Default)]
pub struct ServeArgs {
    /// YAML config file.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8443).
    #[arg(long)]
    pub listen: Option<String>,
    /// Certificate chain (PEM) for the listener.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) for the listener.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// CA that signs client certificates (mTLS).
    #[arg(long)]
    pub client_ca: Option<String>,
    /// none | request | require | verify (verify = required AND verified).
    #[arg(long)]
    pub client_auth: Option<String>,
    /// Require a bearer token, read from this environment variable (repeatable).
    #[arg(long = "bearer-env", value_name = "VAR")]
    pub bearer_env: Vec<String>,
    /// One child process for all sessions (ids remapped) instead of one per session.
    #[arg(long)]
    pub shared: bool,
    /// Serve plain HTTP (dangerous off loopback: tokens travel in clear text).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Where the development CA and certificates live.
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Log every TLS handshake: version, cipher, ALPN, SNI, client certificate.
    #[arg(long)]
    pub debug_tls: bool,
    /// Validate the config (and load its certificates) without binding a port.
    #[arg(long)]
    pub check_config: bool,
    /// The stdio MCP server to serve: `-- command [args...]`. Default: the built-in demo server.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = build_config(&args)?;
    crate::logging::init(&config.logging.level, config.logging.json);
    let registry = Arc::new(open_registry(&config).await?);
    let revision = registry.revision().await?;
    let registered = registry_upstreams(&config, &registry).await?;
    if config.upstreams.is_empty() && registered.is_empty() && config.admin.is_none() {
        config.upstreams.push(demo_upstream(args.shared)?);
    }
    let built = match &config.listener {
        ListenerSecurity::Tls(tls) => Some(tls_server::build(tls, &config.data_dir)?),
        ListenerSecurity::Plaintext => None,
    };
    for upstream in &config.upstreams {
        match &upstream.kind {
            UpstreamKind::Stdio(spec) => check_command(&upstream.name, &spec.command)?,
            // Loads the CA and client certificate files now, so --check-config catches them.
            UpstreamKind::Remote(spec) => drop(crate::tls::trust::build(
                &spec.trust,
                &crate::tls::trust::Env::process(),
            )?),
        }
        // `<server>__<tool>` must split back at the first `__`: no `__` in a name, and no `_` at
        // its end (`a_` + `__` + `x` would read as `a` + `___x`).
        let sep = crate::router::fanout::SEPARATOR;
        if config.upstreams.len() > 1
            && (upstream.name.contains(sep) || upstream.name.ends_with('_'))
        {
            return Err(ConfigError::new(
                format!("mcp_servers.{}", upstream.name),
                format!("contains {sep:?} or ends in '_', which breaks the separator between server and tool names"),
            )
            .hint("rename the server without a double underscore or a trailing underscore")
            .into());
        }
    }
    let names: Vec<String> = config
        .upstreams
        .iter()
        .chain(registered.iter().map(|(u, _)| u))
        .map(|u| u.name.clone())
        .collect();
    if args.check_config {
        println!(
            "config OK: listen {}, {}, upstreams {}",
            config.server.listen,
            describe_listener(&config, built.as_ref()),
            names.join(", ")
        );
        return Ok(());
    }
    if let Some(b) = &built
        && b.dev_ca.is_some()
        && !config.server.listen.ip().is_loopback()
    {
        tracing::warn!(
            "serving a development certificate on a non-loopback address; set tls.cert_file and tls.key_file for production"
        );
    }
    let client_certs = matches!(&config.listener, ListenerSecurity::Tls(t) if matches!(t.client_auth, config::ClientAuth::Require | config::ClientAuth::Verify));
    if !config.server.listen.ip().is_loopback()
        && config.auth.bearer_tokens.is_empty()
        && !client_certs
    {
        tracing::warn!(
            "NO AUTHENTICATION: anyone who reaches {} can call the upstream's tools; set auth.bearer.tokens or tls.client_auth: verify",
            config.server.listen
        );
    }
    if matches!(config.listener, ListenerSecurity::Plaintext)
        && !config.server.listen.ip().is_loopback()
    {
        tracing::warn!(
            "INSECURE: serving plain HTTP on {}: tokens and tool data travel in clear text",
            config.server.listen
        );
    }
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.listen); is another process using the port?",
                config.server.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let gateway = Gateway::new(&config.upstreams, &config.server.limits)
        .await
        .map_err(anyhow::Error::msg)?;
    gateway.apply_registry(registered).await;
    let app = App::new(
        gateway,
        &config.server,
        &config.auth,
        config.logging.tls_debug,
    );
    let live = built.as_ref().map(|b| {
        let live = reload::LiveServerConfig::new(b.config.clone());
        if let ListenerSecurity::Tls(tls) = &config.listener {
            reload::spawn(tls.clone(), config.data_dir.clone(), b, live.clone());
        }
        live
    });
    let metrics_addr = match config.metrics_listen {
        Some(a) => Some(serve_metrics(a).await?),
        None => None,
    };
    if let (Some(b), ListenerSecurity::Tls(tls)) = (&built, &config.listener) {
        let mut files = vec![crate::tls::expiry::Watched {
            role: "listener",
            key: "tls.cert_file".into(),
            path: b.cert_file.clone(),
        }];
        if let Some(ca) = &tls.client_ca_file {
            files.push(crate::tls::expiry::Watched {
                role: "client_ca",
                key: "tls.client_ca_file".into(),
                path: ca.clone(),
            });
        }
        crate::tls::expiry::spawn(files);
    }
    spawn_registry_watch(registry.clone(), app.clone(), revision);
    let admin_addr = match &config.admin {
        Some(a) => Some(serve_admin(a, live.clone(), registry.clone(), app.clone()).await?),
        None => None,
    };
    print_banner(&config, addr, built.as_ref());
    if let Some(a) = admin_addr {
        let scheme = if live.is_some() { "https" } else { "http" };
        println!(
            "  admin API:       {scheme}://{a}/admin/servers (OpenAPI at /admin/openapi.json)"
        );
    }
    if let Some(m) = metrics_addr {
        println!("  metrics:         http://{m}/metrics");
    }
    tracing::info!(%addr, upstreams = %names.join(", "), "serving");
    server::serve(listener, live, app, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

fn describe_listener(config: &Config, built: Option<&tls_server::BuiltServerTls>) -> String {
    match (&config.listener, built) {
        (ListenerSecurity::Tls(t), Some(b)) => format!(
            "TLS with {} (client_auth {:?})",
            b.cert_file.display(),
            t.client_auth
        ),
        _ => "plain HTTP".to_string(),
    }
}

/// Merges the config file (or an empty one) with the command line, then resolves it.
fn build_config(args: &ServeArgs) -> Result<Config, ConfigError> {
    let mut raw = match &args.config {
        Some(path) => config::read_raw(path)?,
        None => RawConfig::default(),
    };
    if let Some(mode) = &raw.mode
        && mode != "server"
    {
        return Err(
            ConfigError::new("mode", format!("is {mode:?}, but this is serve"))
                .hint("use mode: server, or run mcpgate connect for a client config"),
        );
    }
    if let Some(l) = &args.listen {
        raw.server.listen = Some(l.clone());
    }
    let tls = raw.tls.get_or_insert_with(Default::default);
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        tls.cert_file = Some(c.clone());
        tls.key_file = Some(k.clone());
    }
    if let Some(ca) = &args.client_ca {
        tls.client_ca_file = Some(ca.clone());
    }
    if let Some(m) = &args.client_auth {
        tls.client_auth = Some(m.clone());
    }
    if args.insecure_plaintext {
        tls.enabled = Some(false);
        raw.server.insecure_allow_plaintext = true;
    }
    for var in &args.bearer_env {
        let token = std::env::var(var).map_err(|_| {
            ConfigError::new(
                "--bearer-env",
                format!("environment variable {var} is not set"),
            )
            .hint(format!("export {var}=<token> before starting mcpgate"))
        })?;
        raw.auth.tokens.get_or_insert_with(Vec::new).push(token);
    }
    if let Some(d) = &args.data_dir {
        raw.data_dir = Some(d.clone());
    }
    if let Some(l) = &args.log_level {
        raw.logging.level = Some(l.clone());
    }
    if let Some(f) = &args.log_format {
        raw.logging.format = Some(f.clone());
    }
    raw.logging.tls_debug |= args.debug_tls;
    let mut config =
        config::resolve(raw, args.config.as_deref()).map_err(|e| e.in_file(args.config.clone()))?;
    if !args.command.is_empty() {
        if !config.upstreams.is_empty() {
            return Err(ConfigError::new(
                "-- <command>",
                "was given, but the config also defines upstreams",
            )
            .hint("give the server either after -- or in the config file, not both"));
        }
        config
            .upstreams
            .extend(config::stdio_from_cli(args.command.clone(), args.shared));
    }
    if args.shared {
        for u in &mut config.upstreams {
            if let UpstreamKind::Stdio(s) = &mut u.kind {
                s.session_mode = config::SessionMode::Shared;
            }
        }
    }
    Ok(config)
}

/// The built-in demo server, served when nothing else is configured or registered.
fn demo_upstream(shared: bool) -> Result<config::UpstreamSpec, ConfigError> {
    let exe = std::env::current_exe().map_err(|e| {
        ConfigError::new(
            "",
            format!("cannot find mcpgate's own executable for the demo server: {e}"),
        )
    })?;
    let mut demo = config::stdio_from_cli(
        vec![exe.display().to_string(), "demo-server".into()],
        shared,
    )
    .ok_or_else(|| ConfigError::new("", "no upstream"))?;
    demo.name = "demo".into();
    Ok(demo)
}

/// The registry of `database.url`, or the SQLite file in the data directory.
async fn open_registry(config: &Config) -> anyhow::Result<Registry> {
    let location = Location::from_config(config.database_url.as_deref(), &config.data_dir)
        .map_err(|e| ConfigError::new("database.url", e))?;
    let key = SecretKey::load(&config.data_dir).map_err(anyhow::Error::msg)?;
    Ok(Registry::open(location, key).await?)
}

/// The registry's active servers, with their row versions. A name also in the config is an
/// error that says where each is defined; a row that cannot be opened or used is logged with
/// its server's name and left out, and the other servers are served.
async fn registry_upstreams(
    config: &Config,
    registry: &Registry,
) -> anyhow::Result<Vec<(config::UpstreamSpec, i64)>> {
    let file = config
        .file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "the command line".into());
    let mut out = Vec::new();
    for entry in registry.list().await? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("{e}; that server is not served");
                continue;
            }
        };
        if config.upstreams.iter().any(|u| u.name == entry.name) {
            return Err(ConfigError::new(
                format!("mcp_servers.{}", entry.name),
                format!(
                    "is defined both in {file} and in the registry ({})",
                    registry.location().describe()
                ),
            )
            .hint(format!(
                "keep one: remove it from the config file, or run `mcpgate servers remove {}`",
                entry.name
            ))
            .into());
        }
        if let Some(spec) = servable(registry, &entry) {
            out.push((spec, entry.version));
        }
    }
    Ok(out)
}

/// A registry entry as an upstream, if it is active and usable (else why not, logged).
fn servable(registry: &Registry, entry: &crate::registry::Entry) -> Option<config::UpstreamSpec> {
    if entry.state != crate::registry::State::Active {
        tracing::warn!(server = %entry.name, "registered but waiting for its certificate's approval (mcpgate servers trust); not served");
        return None;
    }
    match config::registry_upstream(&entry.name, &entry.spec) {
        Ok(spec) => Some(spec),
        Err(e) => {
            tracing::error!(
                "registry server {:?} ({}): {e}; that server is not served",
                entry.name,
                registry.location().describe()
            );
            None
        }
    }
}

/// How often the registry's revision is read: changes reach every replica within a second.
const REGISTRY_POLL: std::time::Duration = std::time::Duration::from_millis(400);

/// Applies registry changes (from this process's admin API or another replica's) live.
fn spawn_registry_watch(registry: Arc<Registry>, app: Arc<App>, mut seen: i64) {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(REGISTRY_POLL).await;
            let revision = match registry.revision().await {
                Ok(r) => r,
                Err(e) => {
                    if !failing {
                        tracing::warn!("registry unreachable; serving what was loaded: {e}");
                    }
                    failing = true;
                    continue;
                }
            };
            if failing {
                tracing::info!("registry reachable again");
                failing = false;
            }
            if revision == seen {
                continue;
            }
            let Ok(entries) = registry.list().await else {
                continue;
            };
            let config_names: Vec<String> = app
                .gateway
                .origins()
                .into_iter()
                .filter(|(_, o)| *o == crate::router::Origin::Config)
                .map(|(n, _)| n)
                .collect();
            let mut wanted = Vec::new();
            for entry in entries {
                match entry {
                    Ok(e) if !config_names.contains(&e.name) => {
                        if let Some(spec) = servable(&registry, &e) {
                            wanted.push((spec, e.version));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("{e}; that server is not served"),
                }
            }
            app.gateway.apply_registry(wanted).await;
            seen = revision;
        }
    });
}

/// Fails early, with the name of the server, when its command cannot be found.
fn check_command(name: &str, command: &str) -> Result<(), ConfigError> {
    let key = format!("mcp_servers.{name}.command");
    if command.contains('/') {
        let p = std::path::Path::new(command);
        if !p.exists() {
            return Err(ConfigError::new(key, format!("{command:?} does not exist"))
                .hint("give the full path of the MCP server's executable"));
        }
        return Ok(());
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(command).is_file()))
        .unwrap_or(false);
    if !found {
        return Err(
            ConfigError::new(key, format!("{command:?} is not found in PATH"))
                .hint("install it, or give its full path"),
        );
    }
    Ok(())
}

fn print_banner(
    config: &Config,
    addr: std::net::SocketAddr,
    built: Option<&tls_server::BuiltServerTls>,
) {
    let scheme = if built.is_some() { "https" } else { "http" };
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let base = format!("{scheme}://{host}:{}", addr.port());
    println!("mcpgate listening on {base}");
    println!("  Streamable HTTP: {base}/mcp");
    println!("  legacy SSE:      {base}/sse");
    if let Some(ca) = built.and_then(|b| b.dev_ca.as_ref()) {
        println!("  development CA:  {}", ca.display());
        println!(
            "  connect:         mcpgate connect {base}/mcp --ca {}",
            ca.display()
        );
        println!(
            "  try it:          curl --cacert {} -H 'Accept: application/json, text/event-stream' -H 'Content-Type: application/json' \\",
            ca.display()
        );
        println!(
            "                     -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"curl\",\"version\":\"1\"}}}}}}' {base}/mcp"
        );
    }
    if !config.auth.bearer_tokens.is_empty() {
        println!("  auth:            bearer token required (Authorization: Bearer <token>)");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Starts the admin API on its own listener, with the listener's TLS; refuses to start it
/// without a token (it can add upstreams that run commands).
async fn serve_admin(
    settings: &config::AdminSettings,
    tls: Option<Arc<reload::LiveServerConfig>>,
    registry: Arc<Registry>,
    app: Arc<App>,
) -> anyhow::Result<std::net::SocketAddr> {
    let mut tokens = settings.tokens.clone();
    if let Ok(t) = std::env::var("MCPGATE_ADMIN_TOKEN")
        && !t.is_empty()
    {
        tokens.push(t);
    }
    if tokens.is_empty() {
        return Err(ConfigError::new(
            "admin.tokens",
            "is empty: the admin API would be open to anyone who reaches it",
        )
        .hint("set admin.tokens: [\"${MCPGATE_ADMIN_TOKEN}\"] or export MCPGATE_ADMIN_TOKEN")
        .into());
    }
    if tls.is_none() {
        tracing::warn!(
            "INSECURE: the admin API is served over plain HTTP (the listener has TLS off); its token travels in clear text"
        );
    }
    let listener = TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (admin.listen); is another process using the port?",
            settings.listen
        )
    })?;
    let bound = listener.local_addr()?;
    crate::admin::spawn(
        listener,
        tls,
        Arc::new(crate::admin::Admin {
            registry,
            app,
            tokens,
        }),
    );
    Ok(bound)
}

/// Serves `/metrics` (Prometheus text format) on its own listener.
async fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(
            "metrics are served without authentication on {bound}; keep that port private"
        );
    }
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of descriptors and the like: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let (status, body) = if req.uri().path() == "/metrics" {
                            (200, crate::metrics::render())
                        } else {
                            (404, "metrics are at /metrics\n".to_string())
                        };
                        let mut resp = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                        resp.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// For tests: a resolved config from YAML text.
pub fn config_from_yaml(text: &str) -> Result<Config, ConfigError> {
    config::resolve(config::parse_raw(text)?, None)
}

pub type SharedApp = Arc<App>;
