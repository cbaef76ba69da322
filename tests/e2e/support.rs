//! Test support: a PKI generated per test, the real `mcpgate` binary started on loopback with
//! a config file, and an HTTPS client whose TLS settings each test controls.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use mcpgate::tls::devca::{Authority, Issued, Spec};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcpgate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server CA with a localhost certificate, a client CA with a client certificate, and an
/// unrelated CA with a client certificate of its own.
pub struct Pki {
    pub dir: TempDir,
    pub server_ca: Authority,
    pub client_ca: Authority,
    pub server: Issued,
    pub client: Issued,
    pub other_client: Issued,
}

impl Pki {
    pub fn new() -> Self {
        let dir = TempDir::new("pki");
        let server_ca = Authority::new_root(&Spec::new("Test Server CA", 30)).unwrap();
        let client_ca = Authority::new_root(&Spec::new("Test Client CA", 30)).unwrap();
        let other_ca = Authority::new_root(&Spec::new("Other CA", 30)).unwrap();
        let server = server_ca
            .server(&Spec::new("localhost", 30).names(["localhost", "127.0.0.1", "::1"]))
            .unwrap();
        let client = client_ca.client(&Spec::new("alice", 30)).unwrap();
        let other_client = other_ca.client(&Spec::new("mallory", 30)).unwrap();
        let pki = Self {
            dir,
            server_ca,
            client_ca,
            server,
            client,
            other_client,
        };
        pki.dir
            .write("server-ca.crt", &pki.server_ca.issued.cert_pem);
        pki.dir
            .write("client-ca.crt", &pki.client_ca.issued.cert_pem);
        pki.dir.write("server.crt", &pki.server.cert_pem);
        pki.dir.write("server.key", &pki.server.key_pem);
        pki
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.path(name).display().to_string()
    }

    /// The `tls:` block for the generated server certificate, plus `extra` lines.
    pub fn tls_block(&self, extra: &str) -> String {
        format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n{extra}",
            self.file("server.crt"),
            self.file("server.key")
        )
    }
}

/// A running `mcpgate` process; killed on drop.
pub struct Gate {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub stderr: Logs,
    /// Every line the banner printed on stdout.
    pub banner: Arc<std::sync::Mutex<Vec<String>>>,
    _dir: TempDir,
}

pub fn mcpgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcpgate")
}

/// The demo server as a stdio upstream, with its test tools.
pub fn demo_upstream(extra: &str) -> String {
    format!(
        "mcp_servers:\n  demo:\n    command: {}\n    args: [demo-server, --test-tools]\n{extra}",
        mcpgate_bin()
    )
}

/// A child's stderr, collected line by line as it comes.
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<String>>);

impl Logs {
    pub fn collect(pipe: impl std::io::Read + Send + 'static) -> Self {
        let logs = Self::default();
        let sink = logs.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        logs
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// `mcpgate demo-server --http 127.0.0.1:0 [extra]`: the plain-HTTP fixture, its URL read from
/// its banner; killed on drop.
pub struct HttpFixture {
    child: std::process::Child,
    pub url: String,
    pub logs: Logs,
}

impl HttpFixture {
    pub fn start(extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(mcpgate_bin())
            .args(["demo-server", "--http", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Logs::collect(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("demo-server listening on ")
            .expect("fixture banner")
            .to_string();
        Self { child, url, logs }
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gate {
    /// Starts `mcpgate serve --config <yaml>` and waits for its banner.
    pub fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("gate");
        let config = dir.write("mcpgate.yaml", yaml);
        let mut cmd = Command::new(mcpgate_bin());
        cmd.args(["serve", "--config"])
            .arg(&config)
            .env("MCPGATE_DATA_DIR", dir.path("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start mcpgate");
        let stderr = Logs::collect(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let banner = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = banner.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Some(url) = line.strip_prefix("mcpgate listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("mcpgate did not start; stderr:\n{}", stderr.text());
            }
        };
        let addr = base
            .split("://")
            .nth(1)
            .unwrap()
            .parse()
            .expect("banner address");
        Self {
            child,
            addr,
            stderr,
            banner,
            _dir: dir,
        }
    }

    pub fn logs(&self) -> String {
        self.stderr.text()
    }

    /// Waits for a banner line starting (after indentation) with `prefix`; returns the rest.
    pub fn banner_value(&self, prefix: &str, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            let found = self
                .banner
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()));
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        self.stderr.wait_for(needle, within)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `body` to `/mcp` over a raw TLS stream with `headers`, waits `wait`, then closes the
/// stream mid-request (close_notify, then the socket): what a client going away looks like.
pub async fn post_then_hang_up(
    client: &TlsClient,
    addr: std::net::SocketAddr,
    body: &str,
    headers: &[(String, String)],
    wait: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client.config())
        .connect(name, tcp)
        .await
        .unwrap();
    let head: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\naccept: application/json, text/event-stream\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{head}\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(wait).await;
    tls.shutdown().await.unwrap();
}

/// The TLS side of a test client.
#[derive(Clone)]
pub struct TlsClient {
    pub roots: Vec<String>,
    pub identity: Option<(String, String)>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub suites: Option<Vec<rustls::SupportedCipherSuite>>,
    pub groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
    pub alpn: Vec<Vec<u8>>,
}

impl TlsClient {
    pub fn trusting(ca_pem: &str) -> Self {
        Self {
            roots: vec![ca_pem.to_string()],
            identity: None,
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            suites: None,
            groups: None,
            alpn: vec![b"http/1.1".to_vec()],
        }
    }

    pub fn with_identity(mut self, issued: &Issued) -> Self {
        self.identity = Some((issued.cert_pem.clone(), issued.key_pem.clone()));
        self
    }

    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if let Some(s) = &self.suites {
            provider.cipher_suites = s.clone();
        }
        if let Some(g) = &self.groups {
            provider.kx_groups = g.clone();
        }
        let mut roots = rustls::RootCertStore::empty();
        for pem in &self.roots {
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&self.versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect();
                builder
                    .with_client_auth_cert(
                        chain,
                        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                    )
                    .unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        Arc::new(config)
    }

    /// Connects and completes the handshake; the error is the handshake's (or first read's).
    pub async fn connect(&self, addr: std::net::SocketAddr) -> Result<Conn, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(self.config());
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let info = Negotiated {
            version: conn.protocol_version(),
            suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            group: conn.negotiated_key_exchange_group().map(|g| g.name()),
            peer_leaf: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec()),
        };
        let (send, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            send,
            info,
            session: None,
            headers: HashMap::new(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Negotiated {
    pub version: Option<rustls::ProtocolVersion>,
    pub suite: Option<rustls::CipherSuite>,
    pub group: Option<rustls::NamedGroup>,
    pub peer_leaf: Option<Vec<u8>>,
}

/// One HTTP/1.1 connection over TLS, with an MCP session when initialized.
pub struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    pub info: Negotiated,
    pub session: Option<String>,
    pub headers: HashMap<String, String>,
}

/// A response, with its body read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Whether the answer is an SSE stream (its Content-Type says so).
    pub fn is_sse(&self) -> bool {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"))
    }

    /// The JSON-RPC messages of an SSE body (or the one JSON body).
    pub fn messages(&self) -> Vec<Value> {
        if self.is_sse() {
            sse_messages(&self.body)
        } else {
            vec![self.json()]
        }
    }

    /// The one response among the messages.
    pub fn response(&self) -> Value {
        self.messages()
            .into_iter()
            .find(|m| m.get("method").is_none())
            .unwrap_or_else(|| panic!("no response in {}", self.body))
    }
}

pub fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .filter_map(|d| serde_json::from_str(&d).ok())
        .collect()
}

impl Conn {
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut b = Request::builder().method(method).uri(path);
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            b = b.header("host", "localhost");
        }
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            b = b.header("accept", "application/json, text/event-stream");
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(
                body.map(|v| v.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        self.exchange(req).await
    }

    /// Sends a request and reads its whole answer.
    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        self.send.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// A POST of raw bytes (for malformed bodies), with the session header when there is one.
    pub async fn request_raw(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        let req = b.body(Full::new(Bytes::from(body))).unwrap();
        self.exchange(req).await
    }

    pub async fn post(&mut self, body: &Value) -> Reply {
        self.request("POST", "/mcp", Some(body), &[])
            .await
            .expect("POST /mcp")
    }

    /// initialize + notifications/initialized; keeps the session id.
    pub async fn initialize(&mut self) -> Reply {
        let r = self.try_initialize().await;
        assert_eq!(r.status, StatusCode::OK, "initialize failed: {}", r.body);
        assert!(
            self.session.is_some(),
            "no Mcp-Session-Id in {:?}",
            r.headers
        );
        let n = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(n.status, StatusCode::ACCEPTED);
        r
    }

    /// initialize alone, keeping the session id when it succeeds; the reply either way.
    pub async fn try_initialize(&mut self) -> Reply {
        let r = self.post(&initialize_request(1)).await;
        if r.status != StatusCode::OK {
            return r;
        }
        self.session = r
            .headers
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_string());
        r
    }

    pub async fn call_tool(&mut self, id: u64, name: &str, args: Value) -> Reply {
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}))
            .await
    }
}

pub fn initialize_request(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}})
}

/// The text of a tools/call result.
pub fn tool_text(response: &Value) -> String {
    response
        .pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no text result in {response}"))
        .to_string()
}

/// What one run of `mcpgate connect` printed.
pub struct ConnectRun {
    /// Messages with an id (responses), in arrival order.
    pub stdout: Vec<Value>,
    /// Notifications and requests from the server.
    pub notifications: Vec<Value>,
    pub stderr: String,
}

impl ConnectRun {
    /// The first message on stdout (the answer to initialize).
    pub fn first(&self) -> &Value {
        self.stdout.first().unwrap_or_else(|| {
            panic!(
                "connect printed nothing on stdout; stderr:\n{}",
                self.stderr
            )
        })
    }

    /// The error message of the first answer (panics if it succeeded).
    pub fn error(&self) -> String {
        self.first()["error"]["message"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "expected an error, got {}; stderr:\n{}",
                    self.first(),
                    self.stderr
                )
            })
            .to_string()
    }

    pub fn ok(&self) -> &Value {
        let f = self.first();
        assert!(
            f.get("result").is_some(),
            "expected success, got {f}; stderr:\n{}",
            self.stderr
        );
        f
    }
}

/// Runs `mcpgate connect <args>` with a clean trust environment plus `env`, sends
/// `initialize`, reads answers until `want` arrived (or 20 s), then closes stdin.
pub fn connect_once(
    args: &[&str],
    env: &[(&str, &str)],
    extra: &[Value],
    want: usize,
) -> ConnectRun {
    use std::io::Write;
    let mut cmd = Command::new(mcpgate_bin());
    cmd.arg("connect").args(args).arg("--timeout").arg("10s");
    for k in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "SSL_VERIFY",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", initialize_request(1)).unwrap();
    for m in extra {
        writeln!(stdin, "{m}").unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut out = Vec::new();
    let mut notifications = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    let mut grace: Option<Instant> = None;
    loop {
        if out.len() >= want && grace.is_none() {
            grace = Some(Instant::now() + Duration::from_millis(500));
        }
        let until = grace.unwrap_or(end).min(end);
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(v) if v.get("method").is_some() => notifications.push(v),
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    ConnectRun {
        stdout: out,
        notifications,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
