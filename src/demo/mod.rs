//! The built-in demo MCP server (`mcpgate demo-server`): stdio, a few tools, no dependencies.
//!
//! Tools: `echo`, `add`, `slow` (sleeps, sending progress; cancellable), `large` (a result of
//! the size asked). With `--test-tools` it adds tools that exercise a gateway: `crash` (exits
//! mid-call), `ask_client` (a server-to-client request, e.g. sampling) and `notify` (logging
//! and list_changed notifications).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot};

use crate::jsonrpc::{self, Kind};

mod conformance;
use crate::transport::{ndjson, stdio};

const VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

struct Demo {
    out: mpsc::UnboundedSender<Value>,
    test_tools: bool,
    /// The conformance suite's reference tools, prompts and resources (conformance.rs).
    conformance: bool,
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    cancelled: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Serves the demo tools over plain-HTTP Streamable HTTP at `/mcp` until killed: JSON answers
/// only, no per-request state (the benchmark fixture: it must never be the bottleneck). With
/// `stateless_only`, it speaks the 2026-07-28 revision alone (see `stateless_answer`).
pub async fn run_http(
    addr: std::net::SocketAddr,
    test_tools: bool,
    conformance: bool,
    stateless_only: bool,
) -> std::io::Result<()> {
    use http_body_util::{BodyExt, Full};
    use hyper::{Method, Response, StatusCode};

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "demo-server listening on http://{}/mcp",
        listener.local_addr()?
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Progress and server requests have nowhere to go over JSON answers: dropped.
    let (out, _) = mpsc::unbounded_channel();
    let demo = Arc::new(Demo {
        out,
        test_tools,
        conformance,
        waiting: Mutex::new(HashMap::new()),
        cancelled: Mutex::new(HashMap::new()),
        next_id: 1.into(),
    });
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let demo = demo.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let demo = demo.clone();
                    async move {
                        let reply = |status: StatusCode, body: Option<Value>, session: bool| {
                            let mut r = Response::new(Full::new(bytes::Bytes::from(
                                body.map(|b| b.to_string()).unwrap_or_default(),
                            )));
                            *r.status_mut() = status;
                            r.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            if session {
                                r.headers_mut().insert(
                                    "mcp-session-id",
                                    hyper::header::HeaderValue::from_static("demo-session"),
                                );
                            }
                            r
                        };
                        if req.uri().path() != "/mcp" {
                            return Ok::<_, std::convert::Infallible>(reply(
                                StatusCode::NOT_FOUND,
                                None,
                                false,
                            ));
                        }
                        match *req.method() {
                            Method::POST => {}
                            Method::DELETE => return Ok(reply(StatusCode::OK, None, false)),
                            _ => return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, None, false)),
                        }
                        let headers = req.headers().clone();
                        let body = match req.into_body().collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, None, false)),
                        };
                        let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
                            return Ok(reply(
                                StatusCode::BAD_REQUEST,
                                Some(jsonrpc::error(
                                    Value::Null,
                                    jsonrpc::code::PARSE_ERROR,
                                    "parse error",
                                )),
                                false,
                            ));
                        };
                        if jsonrpc::kind(&msg) != Kind::Request {
                            demo.notified(&msg);
                            return Ok(reply(StatusCode::ACCEPTED, None, false));
                        }
                        if stateless_only {
                            let (status, answer) = stateless_answer(&demo, &headers, msg).await;
                            return Ok(reply(status, Some(answer), false));
                        }
                        let init = jsonrpc::method(&msg) == Some("initialize");
                        Ok(reply(StatusCode::OK, Some(demo.answer(msg).await), init))
                    }
                });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
        });
    }
}

/// A 2026-07-28-only server's answer: a session's initialize refused (-32022, 400), the
/// routing headers checked (-32020, 400), `server/discover` answered, the rest as usual with
/// `resultType`; the status to send it with.
async fn stateless_answer(
    demo: &Demo,
    headers: &hyper::HeaderMap,
    msg: Value,
) -> (hyper::StatusCode, Value) {
    use crate::transport::stateless::{self, META_SERVER_INFO, META_VERSION, VERSIONS};
    use hyper::StatusCode;
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let method = jsonrpc::method(&msg).unwrap_or_default().to_string();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let version = msg
        .pointer("/params/_meta")
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str)
        .unwrap_or("");
    let refuse = |code: i64, message: &str, data: Value| {
        let mut e = jsonrpc::error(id.clone(), code, message);
        e["error"]["data"] = data;
        (StatusCode::BAD_REQUEST, e)
    };
    if method == "initialize" || !VERSIONS.contains(&version) {
        return refuse(
            jsonrpc::code::UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            json!({"supported": VERSIONS, "requested": version}),
        );
    }
    let name =
        stateless::name_of(&method, msg.get("params").unwrap_or(&Value::Null)).map(|(_, n)| n);
    if header("mcp-protocol-version") != version
        || header(stateless::METHOD_HEADER) != method
        || name.is_some_and(|n| {
            stateless::decode_name(header(stateless::NAME_HEADER)).as_deref() != Some(n)
        })
    {
        return refuse(
            jsonrpc::code::HEADER_MISMATCH,
            "Header mismatch",
            Value::Null,
        );
    }
    let info = json!({"name": "mcpgate-demo-stateless", "version": env!("CARGO_PKG_VERSION")});
    let mut answer = if method == "server/discover" {
        let init = demo.initialize(&json!({}));
        json!({"jsonrpc": "2.0", "id": id, "result": {"supportedVersions": VERSIONS,
            "capabilities": {"tools": {}}, "instructions": init["instructions"],
            "ttlMs": 0, "cacheScope": "private"}})
    } else {
        demo.answer(msg).await
    };
    if let Some(r) = answer.get_mut("result").and_then(Value::as_object_mut) {
        r.insert("resultType".into(), json!("complete"));
        r.insert("_meta".into(), json!({META_SERVER_INFO: info}));
    }
    let status = match answer.pointer("/error/code").and_then(Value::as_i64) {
        Some(jsonrpc::code::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    (status, answer)
}

/// Runs the demo server on stdin/stdout until stdin closes.
pub async fn run(test_tools: bool, conformance: bool) -> std::io::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(ndjson::write_lines(stdio::stdout(), rx));
    let demo = Arc::new(Demo {
        out: tx,
        test_tools,
        conformance,
        waiting: Mutex::new(HashMap::new()),
        cancelled: Mutex::new(HashMap::new()),
        next_id: 1.into(),
    });
    let mut reader = BufReader::new(stdio::stdin());
    let mut buf = Vec::new();
    loop {
        match ndjson::read_line(&mut reader, &mut buf, 64 << 20).await? {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => continue,
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&buf) else {
            let _ = demo.out.send(jsonrpc::error(
                Value::Null,
                jsonrpc::code::PARSE_ERROR,
                "parse error",
            ));
            continue;
        };
        let d = demo.clone();
        match jsonrpc::kind(&msg) {
            Kind::Request => {
                tokio::spawn(async move { d.request(msg).await });
            }
            Kind::Response => d.answered(msg),
            Kind::Notification => d.notified(&msg),
            Kind::Invalid => {}
        }
    }
    drop(demo);
    let _ = writer.await;
    Ok(())
}

impl Demo {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn answered(&self, msg: Value) {
        let key = msg.get("id").map(jsonrpc::id_key).unwrap_or_default();
        if let Some(tx) = Self::lock(&self.waiting).remove(&key) {
            let _ = tx.send(msg);
        }
    }

    fn notified(&self, msg: &Value) {
        if jsonrpc::method(msg) == Some("notifications/cancelled") {
            let key = msg
                .pointer("/params/requestId")
                .map(jsonrpc::id_key)
                .unwrap_or_default();
            eprintln!("demo: notifications/cancelled for request {key}");
            if let Some(n) = Self::lock(&self.cancelled).get(&key) {
                n.notify_one();
            }
        }
    }

    async fn request(&self, msg: Value) {
        let reply = self.answer(msg).await;
        let _ = self.out.send(reply);
    }

    /// The response to one request.
    async fn answer(&self, msg: Value) -> Value {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let params = msg.get("params").cloned().unwrap_or(json!({}));
        let method = jsonrpc::method(&msg).unwrap_or("");
        if self.conformance
            && let Some(r) = conformance::method(method, &params)
        {
            return match r {
                Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
                Err((code, m)) => jsonrpc::error(id, code, m),
            };
        }
        let result = match method {
            "initialize" => Ok(self.initialize(&params)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": self.tools()})),
            "tools/call" => self.call(&id, &params).await,
            "prompts/list" => Ok(json!({"prompts": []})),
            "resources/list" => Ok(json!({"resources": []})),
            other => Err((-32601, format!("method not found: {other}"))),
        };
        match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err((code, m)) => jsonrpc::error(id, code, m),
        }
    }

    fn initialize(&self, params: &Value) -> Value {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = if VERSIONS.contains(&asked) {
            asked
        } else {
            VERSIONS[VERSIONS.len() - 1]
        };
        json!({
            "protocolVersion": version,
            "capabilities": if self.conformance { conformance::capabilities() } else { json!({"tools": {"listChanged": true}, "logging": {}}) },
            "serverInfo": {"name": "mcpgate-demo", "version": env!("CARGO_PKG_VERSION")},
            "instructions": "A demo server built into mcpgate."
        })
    }

    fn tools(&self) -> Vec<Value> {
        let mut tools = vec![
            tool(
                "echo",
                "Returns the text it is given.",
                json!({"text": {"type": "string"}}),
                &["text"],
            ),
            tool(
                "add",
                "Adds two numbers.",
                json!({"a": {"type": "number"}, "b": {"type": "number"}}),
                &["a", "b"],
            ),
            tool(
                "slow",
                "Waits the given seconds, reporting progress; cancellable.",
                json!({"seconds": {"type": "number"}}),
                &[],
            ),
            tool(
                "large",
                "Returns a text of the given size in bytes.",
                json!({"bytes": {"type": "integer"}}),
                &["bytes"],
            ),
        ];
        if self.conformance {
            tools.extend(conformance::tools());
        }
        if self.test_tools {
            tools.push(tool(
                "crash",
                "Exits the server process mid-call.",
                json!({"code": {"type": "integer"}}),
                &[],
            ));
            tools.push(tool(
                "ask_client",
                "Sends a request to the client and returns its answer.",
                json!({"method": {"type": "string"}, "params": {"type": "object"}}),
                &["method"],
            ));
            tools.push(tool(
                "notify",
                "Sends a log message and tools/list_changed.",
                json!({"message": {"type": "string"}}),
                &[],
            ));
        }
        tools
    }

    /// Sends a notification to the client.
    fn notify(&self, method: &str, params: Value) {
        let _ = self.out.send(jsonrpc::notification(method, params));
    }

    /// Sends a request to the client and waits for its answer; on no answer in time, the
    /// request's id (so the caller can cancel it).
    async fn ask(&self, method: &str, params: Value, wait: Duration) -> Result<Value, Value> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rid = json!(format!("demo-{n}"));
        let (tx, rx) = oneshot::channel();
        Self::lock(&self.waiting).insert(jsonrpc::id_key(&rid), tx);
        let _ = self
            .out
            .send(json!({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}));
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => {
                Self::lock(&self.waiting).remove(&jsonrpc::id_key(&rid));
                Err(rid)
            }
        }
    }

    async fn call(&self, id: &Value, params: &Value) -> Result<Value, (i64, String)> {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        if self.conformance
            && let Some(r) = conformance::call(self, name, params).await
        {
            return r;
        }
        let args = params.get("arguments").cloned().unwrap_or(json!({}));
        let text =
            |t: String| Ok(json!({"content": [{"type": "text", "text": t}], "isError": false}));
        match name {
            "echo" => text(
                args.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
            "add" => {
                let a = args.get("a").and_then(Value::as_f64).unwrap_or(0.0);
                let b = args.get("b").and_then(Value::as_f64).unwrap_or(0.0);
                let sum = a + b;
                text(if sum.fract() == 0.0 && sum.abs() < 1e15 {
                    format!("{}", sum as i64)
                } else {
                    sum.to_string()
                })
            }
            "slow" => {
                let secs = args
                    .get("seconds")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0)
                    .clamp(0.0, 600.0);
                let token = params.pointer("/_meta/progressToken").cloned();
                let cancel = Arc::new(tokio::sync::Notify::new());
                let key = jsonrpc::id_key(id);
                Self::lock(&self.cancelled).insert(key.clone(), cancel.clone());
                let steps = 4u32;
                let mut outcome = text(format!("waited {secs}s"));
                for step in 1..=steps {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs_f64(secs / f64::from(steps))) => {}
                        _ = cancel.notified() => {
                            eprintln!("demo: slow call {key} cancelled by the client");
                            outcome = Err((-32800, "cancelled".into()));
                            break;
                        }
                    }
                    if let Some(t) = &token {
                        let _ = self.out.send(jsonrpc::notification(
                            "notifications/progress",
                            json!({"progressToken": t, "progress": step, "total": steps}),
                        ));
                    }
                }
                Self::lock(&self.cancelled).remove(&key);
                outcome
            }
            "large" => {
                let n = args
                    .get("bytes")
                    .and_then(Value::as_u64)
                    .unwrap_or(1024)
                    .min(32 << 20) as usize;
                text("x".repeat(n))
            }
            "crash" if self.test_tools => {
                let code = args.get("code").and_then(Value::as_i64).unwrap_or(3) as i32;
                std::process::exit(code);
            }
            "ask_client" if self.test_tools => {
                let method = args
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or("ping")
                    .to_string();
                let p = args.get("params").cloned().unwrap_or(json!({}));
                // With cancel_after_ms, the server gives up on its own request and says so.
                let wait = args
                    .get("cancel_after_ms")
                    .and_then(Value::as_u64)
                    .map(Duration::from_millis)
                    .unwrap_or(Duration::from_secs(30));
                match self.ask(&method, p, wait).await {
                    Ok(answer) => text(answer.to_string()),
                    Err(rid) => {
                        self.notify(
                            "notifications/cancelled",
                            json!({"requestId": rid, "reason": "timed out"}),
                        );
                        text("gave up waiting for the client".into())
                    }
                }
            }
            "notify" if self.test_tools => {
                let m = args
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("hello")
                    .to_string();
                let _ = self.out.send(jsonrpc::notification(
                    "notifications/message",
                    json!({"level": "info", "data": m}),
                ));
                let _ = self.out.send(jsonrpc::notification(
                    "notifications/tools/list_changed",
                    json!({}),
                ));
                text("notified".into())
            }
            other => Err((-32602, format!("unknown tool: {other}"))),
        }
    }
}

fn tool(name: &str, description: &str, props: Value, required: &[&str]) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": props, "required": required}
    })
}
