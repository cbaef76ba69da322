//! `mcpgate probe URL`: one diagnosis of an MCP endpoint with the same trust engine and error
//! classes as every real connection: the chain the server sent (even when verification
//! fails), notes on what other clients will reject, the verdict with the config lines that
//! fix it, then the HTTP path and the MCP handshake. Text for people, `--json` for scripts
//! (schema `mcpgate.probe/v1`, docs/probe.schema.json); one exit code per failure class.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use hyper::Uri;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::connect::{self, ConnectArgs};
use crate::tls::diagnose::{ErrorClass, Failure};
use crate::tls::inspect::{self, CertInfo};
use crate::tls::trust;
use crate::upstream::connector::{Connector, Stream};
use crate::upstream::remote::RemoteUpstream;
use crate::upstream::{ChannelSink, Sink};

#[derive(Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print the report as JSON (schema mcpgate.probe/v1).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Default)]
struct Report {
    schema: &'static str,
    url: String,
    ok: bool,
    exit_code: i32,
    trust_source: String,
    tls: Option<TlsReport>,
    notes: Vec<String>,
    verdict: Option<Verdict>,
    fix: Vec<String>,
    http: Option<HttpReport>,
}

#[derive(Serialize)]
struct TlsReport {
    peer: Option<String>,
    sni: String,
    version: Option<String>,
    cipher: Option<String>,
    alpn: Option<String>,
    verified: bool,
    chain: Vec<CertInfo>,
}

#[derive(Serialize)]
struct Verdict {
    class: &'static str,
    summary: String,
    cause: Option<String>,
    hint: String,
}

#[derive(Serialize, Default)]
struct HttpReport {
    redirects: Vec<Value>,
    transport: String,
    protocol_version: Option<String>,
    server_name: Option<String>,
    server_version: Option<String>,
    tools: Option<usize>,
}

/// The exit code of each failure class (documented in docs/probe.md).
pub fn exit_code(class: ErrorClass) -> i32 {
    match class {
        ErrorClass::UnknownIssuer => 10,
        ErrorClass::IncompleteChain => 11,
        ErrorClass::SelfSignedNotPinned => 12,
        ErrorClass::PinChanged => 13,
        ErrorClass::Expired => 14,
        ErrorClass::NotYetValid => 15,
        ErrorClass::NameMismatch => 16,
        ErrorClass::ClientCertRequired => 17,
        ErrorClass::ClientCertRejected => 18,
        ErrorClass::NoCommonProtocol => 19,
        ErrorClass::PlaintextOnTlsPort => 20,
        ErrorClass::TlsOnPlaintextPort => 21,
        ErrorClass::HttpsToHttpRedirect => 22,
        ErrorClass::CrossOriginRedirect => 23,
        ErrorClass::ConnectionRefused => 24,
        ErrorClass::TimedOut => 25,
        ErrorClass::Dns => 26,
        ErrorClass::Proxy => 27,
        ErrorClass::Http => 28,
        ErrorClass::Other => 29,
    }
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<i32> {
    let (spec, level, json_logs) = connect::build(&args.connect)?;
    // Probe reports on stdout; its stderr stays quiet unless --log-level asks.
    let level = if args.connect.log_level.is_some() {
        level
    } else {
        "off".to_string()
    };
    crate::logging::init(&level, json_logs);
    let profile = Arc::new(trust::build(&spec.trust, &trust::Env::process())?);
    let uri: Uri = spec
        .url
        .parse()
        .map_err(|e| anyhow::anyhow!("{:?} is not a URL: {e}", spec.url))?;
    let connector = Connector::new("probe", profile.clone(), spec.timeout);
    let report = examine(&spec, &profile, &uri, connector, spec.url.clone()).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(report.exit_code)
}

/// The probe of one configured upstream with its own trust profile (the admin API's test):
/// TLS (for https), then the MCP handshake and tools/list. Stdio servers are checked for a
/// runnable command; they start per session.
pub async fn check_upstream(upstream: &crate::config::UpstreamSpec) -> Value {
    let spec = match &upstream.kind {
        crate::config::UpstreamKind::Stdio(s) => {
            let found = std::path::Path::new(&s.command).is_file()
                || std::env::var_os("PATH").is_some_and(|p| {
                    std::env::split_paths(&p).any(|d| d.join(&s.command).is_file())
                });
            return json!({"name": upstream.name, "ok": found, "transport": "stdio",
                "message": if found { "the command exists; it starts with each session" } else { "the command is not found; give its full path" }});
        }
        crate::config::UpstreamKind::Remote(r) => r,
    };
    let profile = match trust::build(&spec.trust, &trust::Env::process()) {
        Ok(p) => Arc::new(p),
        Err(e) => return json!({"name": upstream.name, "ok": false, "message": e.to_string()}),
    };
    let Ok(uri) = spec.url.parse::<Uri>() else {
        return json!({"name": upstream.name, "ok": false, "message": "the URL does not parse"});
    };
    let connector = Connector::new(&upstream.name, profile.clone(), spec.timeout);
    let url = crate::tls::diagnose::redact_url(&spec.url);
    let report = examine(spec, &profile, &uri, connector, url).await;
    serde_json::to_value(&report).unwrap_or(Value::Null)
}

/// TLS (for https), then the MCP handshake and tools/list: the report with its verdict.
async fn examine(
    spec: &crate::config::RemoteSpec,
    profile: &trust::TrustProfile,
    uri: &Uri,
    connector: Connector,
    url: String,
) -> Report {
    let mut report = Report {
        schema: "mcpgate.probe/v1",
        url,
        trust_source: profile.source.to_string(),
        ..Report::default()
    };
    let mut failure = None;
    if uri.scheme_str() == Some("https") {
        let (tls, f) = probe_tls(&connector, uri).await;
        report.notes = inspect::notes(&tls.chain, &tls_links(&tls));
        report.tls = Some(tls);
        failure = f;
    }
    if failure.is_none() {
        let (http, f) = probe_mcp(spec, connector).await;
        report.http = Some(http);
        failure = f;
    }
    if let Some(f) = &failure {
        report.fix = fix_lines(f, &profile.key, report.tls.as_ref());
        report.verdict = Some(Verdict {
            class: f.class.as_str(),
            summary: f.summary.clone(),
            cause: f.cause.clone(),
            hint: f.hint.clone(),
        });
        report.exit_code = exit_code(f.class);
    }
    report.ok = failure.is_none();
    report
}

fn tls_links(tls: &TlsReport) -> Vec<bool> {
    tls.chain
        .windows(2)
        .map(|w| w[0].issuer == w[1].subject)
        .collect()
}

async fn probe_tls(connector: &Connector, uri: &Uri) -> (TlsReport, Option<Failure>) {
    let place = connector.place(uri);
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut report = TlsReport {
        peer: None,
        sni: place.sni.clone(),
        version: None,
        cipher: None,
        alpn: None,
        verified: false,
        chain: Vec::new(),
    };
    let (stream, failure) = match connector.connect(uri.clone()).await {
        Ok(s) => (Some(s), None),
        Err(f) => (None, Some(f)),
    };
    let mut ders: Vec<Vec<u8>> = Vec::new();
    if let Some(Stream::Tls(tls, _)) = &stream {
        let (tcp, conn) = tls.get_ref();
        report.peer = tcp.peer_addr().ok().map(|a| a.to_string());
        report.version = conn
            .protocol_version()
            .map(|v| format!("{v:?}").replace("TLSv1_", "TLSv1."));
        report.cipher = conn
            .negotiated_cipher_suite()
            .map(|s| crate::tls::server::suite_name(&s));
        report.alpn = conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        report.verified = !connector.profile().insecure;
        ders = conn
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.to_vec()).collect())
            .unwrap_or_default();
    }
    if let Some(f) = &failure {
        report.peer = f.at.peer.map(|p| p.to_string());
        if let Ok(name) = ServerName::try_from(place.sni.clone()) {
            ders = connector
                .capture_chain(name, &host, port, &place)
                .await
                .iter()
                .map(|d| d.to_vec())
                .collect();
        }
    }
    report.chain = ders.iter().filter_map(|d| inspect::describe(d)).collect();
    (report, failure)
}

async fn probe_mcp(
    spec: &crate::config::RemoteSpec,
    connector: Connector,
) -> (HttpReport, Option<Failure>) {
    let mut report = HttpReport::default();
    let upstream = match RemoteUpstream::start("probe", spec.clone(), connector.clone()) {
        Ok(u) => u,
        Err(e) => {
            return (
                report,
                Some(Failure::new(
                    ErrorClass::Other,
                    Default::default(),
                    e,
                    "check the URL",
                )),
            );
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink: Arc<dyn Sink> = Arc::new(ChannelSink(tx));
    let init = json!({"jsonrpc": "2.0", "id": "probe-1", "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "mcpgate-probe", "version": env!("CARGO_PKG_VERSION")}}});
    upstream.send(&sink, init);
    let answer = wait_for(&mut rx, "probe-1", spec.timeout).await;
    report.redirects = upstream
        .redirects()
        .into_iter()
        .map(|(s, from, to)| json!({"status": s, "from": from, "to": to}))
        .collect();
    report.transport = upstream.transport_in_use().to_string();
    let failure = match answer {
        Some(a) if a.get("result").is_some() => {
            report.protocol_version = a
                .pointer("/result/protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            report.server_name = a
                .pointer("/result/serverInfo/name")
                .and_then(Value::as_str)
                .map(str::to_string);
            report.server_version = a
                .pointer("/result/serverInfo/version")
                .and_then(Value::as_str)
                .map(str::to_string);
            upstream.send(
                &sink,
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            );
            upstream.send(
                &sink,
                json!({"jsonrpc": "2.0", "id": "probe-2", "method": "tools/list"}),
            );
            if let Some(list) = wait_for(&mut rx, "probe-2", spec.timeout).await {
                report.tools = list
                    .pointer("/result/tools")
                    .and_then(Value::as_array)
                    .map(Vec::len);
            }
            None
        }
        Some(a) => Some(upstream.take_failure().unwrap_or_else(|| {
            let msg = a
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string();
            Failure::new(
                ErrorClass::Http,
                connector.place(&spec.url.parse().unwrap_or_default()),
                format!("the server answered initialize with an error: {msg}"),
                "see the server's message",
            )
        })),
        None => Some(upstream.take_failure().unwrap_or_else(|| {
            Failure::new(
                ErrorClass::TimedOut,
                connector.place(&spec.url.parse().unwrap_or_default()),
                "no answer to initialize",
                "check that the URL is an MCP endpoint (often /mcp or /sse)",
            )
        })),
    };
    upstream.close().await;
    if failure.is_some() {
        report.transport = "none".into();
    }
    (report, failure)
}

async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Value>,
    id: &str,
    timeout: Duration,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m))
                if m.get("id").and_then(Value::as_str) == Some(id) && m.get("method").is_none() =>
            {
                return Some(m);
            }
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

/// The config lines that fix a failure, where config can fix it.
fn fix_lines(f: &Failure, key: &str, tls: Option<&TlsReport>) -> Vec<String> {
    let leaf = tls.and_then(|t| t.chain.first());
    let fp = f
        .presented_sha256
        .clone()
        .or_else(|| leaf.map(|l| l.sha256.clone()));
    match f.class {
        ErrorClass::UnknownIssuer => {
            let issuer = tls
                .and_then(|t| t.chain.last())
                .map(|c| c.issuer.clone())
                .unwrap_or_default();
            vec![format!(
                "{key}.ca_cert: /path/to/ca.pem    # the certificate of {issuer}"
            )]
        }
        ErrorClass::IncompleteChain => vec![
            "# on the server: its certificate file must hold the leaf, then the intermediate CA"
                .into(),
        ],
        ErrorClass::SelfSignedNotPinned | ErrorClass::PinChanged => fp
            .map(|fp| {
                vec![
                    format!("{key}.pinned_sha256: [\"{fp}\"]"),
                    format!("# or: mcpgate connect URL --pin {fp}"),
                ]
            })
            .unwrap_or_default(),
        ErrorClass::NameMismatch => leaf
            .and_then(|l| l.sans.first())
            .map(|n| vec![format!("{key}.server_name: {n}")])
            .unwrap_or_default(),
        ErrorClass::ClientCertRequired | ErrorClass::ClientCertRejected => {
            vec![
                format!("{key}.cert_file: /path/to/client.crt"),
                format!("{key}.key_file: /path/to/client.key"),
            ]
        }
        ErrorClass::HttpsToHttpRedirect => f
            .hint
            .split("use ")
            .nth(1)
            .map(|u| vec![format!("url: {}", u.split(' ').next().unwrap_or(u))])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn print_text(r: &Report) {
    println!("probe {}", r.url);
    println!("trust: {}", r.trust_source);
    if let Some(t) = &r.tls {
        let peer = t.peer.clone().unwrap_or_else(|| "-".into());
        match (&t.version, &t.cipher) {
            (Some(v), Some(c)) => println!(
                "TLS: {v}, {c}, ALPN {}, peer {peer}, SNI {}",
                t.alpn.as_deref().unwrap_or("none"),
                t.sni
            ),
            _ => println!("TLS: handshake failed (peer {peer}, SNI {})", t.sni),
        }
        println!(
            "chain as sent ({} certificate{}):",
            t.chain.len(),
            if t.chain.len() == 1 { "" } else { "s" }
        );
        for (i, c) in t.chain.iter().enumerate() {
            println!("  [{i}] {}", c.subject);
            println!(
                "      issuer:   {}{}",
                c.issuer,
                if c.self_signed { " (self-signed)" } else { "" }
            );
            if !c.sans.is_empty() {
                println!("      names:    {}", c.sans.join(", "));
            }
            println!(
                "      valid:    {} to {} ({} days left)",
                c.not_before, c.not_after, c.days_left
            );
            println!(
                "      key:      {} ({} bits), signature {}",
                c.key_type, c.key_bits, c.signature_algorithm
            );
            println!(
                "      CA: {}, AKI: {}, SKI: {}",
                yes(c.is_ca),
                yes(c.has_authority_key_id),
                yes(c.has_subject_key_id)
            );
            println!("      sha256:   {}", c.sha256);
        }
    }
    if !r.notes.is_empty() {
        println!("notes (mcpgate accepts this, other clients may not):");
        for n in &r.notes {
            println!("  - {n}");
        }
    }
    if let Some(h) = &r.http {
        for red in &h.redirects {
            println!(
                "redirect: {} {} -> {}",
                red["status"],
                red["from"].as_str().unwrap_or(""),
                red["to"].as_str().unwrap_or("")
            );
        }
        if h.server_name.is_some() {
            println!(
                "MCP: {} , protocol {}, server {} {}, {} tools",
                h.transport,
                h.protocol_version.as_deref().unwrap_or("?"),
                h.server_name.as_deref().unwrap_or("?"),
                h.server_version.as_deref().unwrap_or(""),
                h.tools.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
            );
        }
    }
    match &r.verdict {
        None => println!("verdict: OK"),
        Some(v) => {
            println!("verdict: FAIL [{}] {}", v.class, v.summary);
            if let Some(c) = &v.cause {
                println!("  caused by: {c}");
            }
            println!("hint: {}", v.hint);
            if !r.fix.is_empty() {
                println!("fix (config lines):");
                for l in &r.fix {
                    println!("  {l}");
                }
            }
            println!("exit code {}", r.exit_code);
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
