//! The benchmark's load generator: MCP `tools/call` over HTTP/1.1 keep-alive, every answer
//! checked. A generic HTTP load tool cannot vary the body, so it would reuse one JSON-RPC id
//! for requests in flight together (which MCP forbids) and count JSON-RPC errors as successes.
//!
//! Each connection opens its own MCP session (initialize, then notifications/initialized) and
//! sends requests one at a time with fresh ids; a request counts when its answer is HTTP 200
//! with a JSON-RPC `result`. Prints one JSON line: requests, errors, req/s, p50/p99/max in ms.
//!
//! ```text
//! cargo run --release --example mcp_load -- --url https://127.0.0.1:8443/mcp --ca ca.crt \
//!     --connections 16 --seconds 5 [--warmup 1] [--rate 2000] [--tool echo]
//! ```
//! `--stdio "COMMAND ARGS"` instead of `--url` talks to a child of its own per connection (the
//! direct limit for a stdio bridge).
//! `--idle tls|sse` holds `--connections` idle connections (or legacy SSE streams) open for
//! `--seconds`, printing `{"idle": N}` once they are all open, for memory per connection.
//! `--rate N` paces the whole run to N requests per second (spread over the connections), for
//! latency below saturation (`late` counts requests sent over an interval behind schedule);
//! without it each connection sends as fast as answers come.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

struct Options {
    url: hyper::Uri,
    /// Instead of a URL: a stdio server command (split on spaces), one child per connection.
    stdio: Option<String>,
    ca: Option<String>,
    connections: usize,
    seconds: f64,
    warmup: f64,
    rate: Option<f64>,
    tool: String,
    /// Instead of load: hold this many idle connections ("tls": one GET /healthz each, then
    /// nothing; "sse": a legacy SSE stream each), print a line when all are open, and keep
    /// them for --seconds.
    idle: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut url, mut ca, mut connections, mut seconds, mut warmup, mut rate, mut tool) =
        (None, None, 1, 5.0, 1.0, None, "echo".to_string());
    let mut stdio = None;
    let mut idle = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--url" => url = Some(value()?.parse().map_err(|e| format!("--url: {e}"))?),
            "--stdio" => stdio = Some(value()?),
            "--idle" => {
                idle = Some(value()?)
                    .filter(|m| m == "tls" || m == "sse")
                    .map_or(Err("--idle takes tls or sse".to_string()), |m| Ok(Some(m)))?
            }
            "--ca" => ca = Some(value()?),
            "--connections" => connections = number(value()?)? as usize,
            "--seconds" => seconds = number(value()?)?,
            "--warmup" => warmup = number(value()?)?,
            "--rate" => rate = Some(number(value()?)?),
            "--tool" => tool = value()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let url: hyper::Uri = match (url, &stdio) {
        (Some(u), None) => u,
        (None, Some(_)) => hyper::Uri::from_static("stdio:"),
        _ => return Err("give --url URL or --stdio COMMAND (one of them)".into()),
    };
    if !(1..=10_000).contains(&connections) || !(0.1..=120.0).contains(&seconds) {
        return Err("--connections must be 1-10000 and --seconds 0.1-120".into());
    }
    Ok(Options {
        url,
        stdio,
        ca,
        connections,
        seconds,
        warmup,
        rate,
        tool,
        idle,
    })
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(o: &Options, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Sender, String> {
    let host = o
        .url
        .host()
        .ok_or("the URL has no host")?
        .trim_matches(['[', ']']);
    let port = o
        .url
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("server name {host}: {e}"))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let (send, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(send)
        }
        None => {
            let (send, conn) = http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(send)
        }
    }
}

/// One POST; the status, the session header and the body's first JSON-RPC message.
async fn post(
    send: &mut Sender,
    o: &Options,
    session: Option<&str>,
    body: &Value,
) -> Result<(u16, Option<String>, Value), String> {
    // Origin-form (the path), as HTTP/1.1 clients send to servers.
    let path = o.url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = hyper::Request::post(path)
        .header(
            "host",
            o.url.authority().map(|a| a.as_str()).unwrap_or("localhost"),
        )
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    send.ready().await.map_err(|e| e.to_string())?;
    let res = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let sid = res
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).map_err(|_| "the body is not UTF-8".to_string())?;
    // A JSON body, or SSE whose first data line carries the message.
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or(text)
        .trim();
    let value = if json.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(json).map_err(|e| format!("bad JSON ({e}): {text}"))?
    };
    Ok((status, sid, value))
}

struct Tally {
    latencies_us: Vec<u32>,
    /// Paced requests sent more than one interval after they were due.
    late: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One MCP client: an HTTP connection with its session, or a stdio child of its own.
enum Peer {
    Http {
        send: Sender,
        session: Option<String>,
    },
    Stdio {
        stdin: tokio::process::ChildStdin,
        lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
        _child: Box<tokio::process::Child>,
    },
}

impl Peer {
    /// Connects (or spawns) and runs initialize + notifications/initialized.
    async fn open(o: &Options, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Self, String> {
        let mut peer = match &o.stdio {
            Some(command) => {
                let mut words = command.split_whitespace();
                let program = words.next().ok_or("--stdio needs a command")?;
                let mut child = tokio::process::Command::new(program)
                    .args(words)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot run {program}: {e}"))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    return Err("the child has no stdin/stdout".into());
                };
                use tokio::io::AsyncBufReadExt;
                Peer::Stdio {
                    stdin,
                    lines: tokio::io::BufReader::new(stdout).lines(),
                    _child: Box::new(child),
                }
            }
            None => Peer::Http {
                send: connect(o, tls).await?,
                session: None,
            },
        };
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp_load","version":"1"}}});
        let answer = peer.request(o, &init).await?;
        if answer.get("result").is_none() {
            return Err(format!("initialize answered {answer}"));
        }
        peer.notify(
            o,
            &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        )
        .await?;
        Ok(peer)
    }

    /// Sends a request; its response (an HTTP status other than 200 is an error).
    async fn request(&mut self, o: &Options, body: &Value) -> Result<Value, String> {
        match self {
            Peer::Http { send, session } => {
                let (status, sid, value) = post(send, o, session.as_deref(), body).await?;
                if session.is_none() {
                    *session = sid;
                }
                if status != 200 {
                    return Err(format!("HTTP {status}: {value}"));
                }
                Ok(value)
            }
            Peer::Stdio { stdin, lines, .. } => {
                write_line(stdin, body).await?;
                loop {
                    let line = lines
                        .next_line()
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("the child closed its stdout")?;
                    let message: Value = serde_json::from_str(&line)
                        .map_err(|e| format!("bad JSON from the child ({e}): {line}"))?;
                    if message.get("id") == body.get("id") && message.get("method").is_none() {
                        return Ok(message);
                    }
                }
            }
        }
    }

    async fn notify(&mut self, o: &Options, body: &Value) -> Result<(), String> {
        match self {
            Peer::Http { send, session } => {
                post(send, o, session.as_deref(), body).await?;
                Ok(())
            }
            Peer::Stdio { stdin, .. } => write_line(stdin, body).await,
        }
    }
}

async fn write_line(stdin: &mut tokio::process::ChildStdin, body: &Value) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut line = body.to_string();
    line.push('\n');
    stdin
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("writing to the child: {e}"))
}

async fn run_connection(
    o: Arc<Options>,
    tls: Option<tokio_rustls::TlsConnector>,
    start: Instant,
    index: usize,
) -> Result<Tally, String> {
    let mut peer = Peer::open(&o, tls.as_ref()).await?;
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let end = measure_from + Duration::from_secs_f64(o.seconds);
    let interval = o
        .rate
        .map(|r| Duration::from_secs_f64(o.connections as f64 / r));
    // Paced connections start spread over one interval, so the rate is even.
    let mut next = start
        + interval
            .map(|i| i.mul_f64(index as f64 / o.connections as f64))
            .unwrap_or_default();
    let mut tally = Tally {
        latencies_us: Vec::with_capacity(1 << 16),
        late: 0,
        errors: 0,
        first_error: None,
    };
    let mut id: u64 = 1;
    loop {
        // Latency counts from when the request goes out: tokio's timer wakes up to a
        // millisecond late, which would swamp sub-millisecond figures. A request that is late
        // because the previous answer was slow is counted as such (`late`).
        if let Some(i) = interval {
            tokio::time::sleep_until(next.into()).await;
            if next >= measure_from && Instant::now() > next + i {
                tally.late += 1;
            }
            next += i;
        }
        let sent = Instant::now();
        if sent >= end {
            return Ok(tally);
        }
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":o.tool,"arguments":{"text":"hello"}}});
        id += 1;
        let outcome = peer.request(&o, &call).await;
        let took = sent.elapsed();
        if sent < measure_from {
            continue;
        }
        match outcome {
            Ok(v) if v.get("result").is_some() => tally
                .latencies_us
                .push(took.as_micros().min(u32::MAX as u128) as u32),
            Ok(v) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(v.to_string());
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
                if let Peer::Http { send, .. } = &mut peer {
                    *send = connect(&o, tls.as_ref()).await?;
                }
            }
        }
    }
}

/// Opens `o.connections` idle connections (64 handshakes at a time), prints
/// `{"idle": N}` once all are open, and holds them for `o.seconds`.
async fn hold_idle(
    o: Arc<Options>,
    tls: Option<tokio_rustls::TlsConnector>,
    mode: &str,
) -> Result<(), String> {
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let (path, accept) = if mode == "sse" {
        ("/sse", "text/event-stream")
    } else {
        ("/healthz", "*/*")
    };
    let tasks: Vec<_> = (0..o.connections)
        .map(|_| {
            let (o, tls, gate) = (o.clone(), tls.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
                let mut send = connect(&o, tls.as_ref()).await?;
                let req = hyper::Request::get(path)
                    .header(
                        "host",
                        o.url.authority().map(|a| a.as_str()).unwrap_or("localhost"),
                    )
                    .header("accept", accept)
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                let res = send.send_request(req).await.map_err(|e| e.to_string())?;
                if res.status() != 200 {
                    return Err(format!("GET {path} answered {}", res.status()));
                }
                let mut body = res.into_body();
                if path == "/sse" {
                    // The stream's first event (the message endpoint) proves it is open.
                    body.frame()
                        .await
                        .ok_or("the SSE stream ended at once")?
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((send, Some(body)))
                } else {
                    body.collect().await.map_err(|e| e.to_string())?;
                    Ok((send, None))
                }
            })
        })
        .collect();
    let mut held = Vec::with_capacity(tasks.len());
    for t in tasks {
        held.push(t.await.map_err(|e| e.to_string())??);
    }
    println!("{}", json!({"idle": held.len(), "mode": mode}));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
    drop(held);
    Ok(())
}

fn tls_connector(ca: Option<&str>) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|e| format!("--ca {path}: {e}"))?;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer =
                cert.map_err(|e| format!("--ca {path}: {e}"))?;
            roots.add(cert).map_err(|e| format!("--ca {path}: {e}"))?;
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = match options() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("mcp_load: {e}");
            std::process::exit(2);
        }
    };
    let tls = match o.url.scheme_str() {
        Some("https") => match tls_connector(o.ca.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("mcp_load: {e}");
                std::process::exit(2);
            }
        },
        _ => None,
    };
    if let Some(mode) = o.idle.clone() {
        match hold_idle(o.clone(), tls, &mode).await {
            Ok(()) => return,
            Err(e) => {
                eprintln!("mcp_load: {e}");
                std::process::exit(1);
            }
        }
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..o.connections)
        .map(|i| tokio::spawn(run_connection(o.clone(), tls.clone(), start, i)))
        .collect();
    let mut all = Vec::new();
    let (mut errors, mut late, mut first_error) = (0, 0, None);
    for t in tasks {
        match t.await {
            Ok(Ok(tally)) => {
                all.extend(tally.latencies_us);
                errors += tally.errors;
                late += tally.late;
                first_error = first_error.or(tally.first_error);
            }
            Ok(Err(e)) => {
                eprintln!("mcp_load: a connection failed: {e}");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("mcp_load: a connection task failed: {e}");
                std::process::exit(1);
            }
        }
    }
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map(|&us| us as f64 / 1000.0)
    };
    let summary = json!({
        "connections": o.connections,
        "seconds": o.seconds,
        "rate": o.rate,
        "requests": all.len(),
        "errors": errors,
        "late": late,
        "first_error": first_error,
        "rps": all.len() as f64 / o.seconds,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "max_ms": all.last().map(|&us| us as f64 / 1000.0),
    });
    println!("{summary}");
}
