//! Hostile input on loopback, bounded in count and time: each case checks that mcpgate answers
//! with the right error, keeps serving a control client, and keeps its memory bounded.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A control request's round trip on its own connection and session.
async fn control(client: &TlsClient, gate: &Gate) -> Duration {
    let mut c = client.connect(gate.addr).await.unwrap();
    let t = Instant::now();
    let r = c.post(&initialize_request(1)).await;
    assert_eq!(
        r.status, 200,
        "the control client must be served: {}",
        r.body
    );
    let took = t.elapsed();
    let _ = c
        .request(
            "DELETE",
            "/mcp",
            None,
            &[(
                "mcp-session-id",
                r.headers["mcp-session-id"].to_str().unwrap(),
            )],
        )
        .await;
    took
}

fn start(extra_server: &str, upstream: &str) -> (Pki, Gate, TlsClient) {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{extra_server}{}{upstream}",
        pki.tls_block("")
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    (pki, gate, client)
}

#[tokio::test]
async fn slow_headers_and_bodies_are_cut_off_while_others_are_served() {
    let (_pki, gate, client) = start("  header_read_timeout: 1s\n", &demo_upstream(""));
    // 50 connections that send half a request and stall.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client.config())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        tls.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n")
            .await
            .unwrap();
        stalled.push(tls);
    }
    let took = control(&client, &gate).await;
    assert!(took < Duration::from_secs(5), "control took {took:?}");
    // After the header timeout, the stalled connections are closed by the server.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut closed = 0;
    for mut s in stalled {
        let mut b = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => closed += 1, // an error response, then close
            Err(_) => {}
        }
    }
    assert_eq!(closed, 50, "every stalled connection was cut off");

    // A body that trickles: headers complete, body never does.
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client.config())
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\"").await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), tls.read_to_string(&mut answer)).await;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body times out: {answer:?}"
    );
}

#[tokio::test]
async fn malformed_json_rpc_gets_the_right_errors() {
    let (_pki, gate, client) = start("", &demo_upstream(""));
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let raw = |body: &'static [u8]| body;
    let cases: Vec<(&[u8], u16, i64)> = vec![
        (raw(b"{not json"), 400, -32700),
        (raw(b"\xff\xfe\x00garbage"), 400, -32700),
        (
            raw(br#"{"jsonrpc":"2.0","id":1e999,"method":"ping"}"#),
            400,
            -32700,
        ),
        (
            raw(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#),
            400,
            -32600,
        ),
        (raw(br#"{"jsonrpc":"2.0","id":1,"method":42}"#), 400, -32600),
        (
            raw(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            400,
            -32600,
        ),
        (
            raw(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},7]"#),
            400,
            -32600,
        ),
        (raw(b"[]"), 400, -32600),
        (raw(b"null"), 400, -32600),
    ];
    for (body, status, code) in cases {
        let r = c.request_raw("POST", "/mcp", body.to_vec()).await.unwrap();
        assert_eq!(
            r.status.as_u16(),
            status,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            r.body
        );
        assert_eq!(
            r.json()["error"]["code"],
            code,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            r.body
        );
    }
    // A huge integer id that still fits is returned as it came.
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":18446744073709551615u64,"method":"ping"}))
        .await;
    assert_eq!(r.json()["id"], 18446744073709551615u64, "{}", r.body);
    control(&client, &gate).await;
}

#[tokio::test]
async fn a_child_writing_garbage_and_flooding_stderr_does_not_stop_the_service() {
    let pki = Pki::new();
    // Answers initialize and pings, interleaved with garbage lines, an over-long line, and a
    // stderr flood; bounded to a few seconds of output.
    let script = pki.dir.write(
        "noisy.py",
        r#"import sys, json, threading, time
def flood():
    end = time.time() + 3
    while time.time() < end:
        sys.stderr.write("x" * 1000 + "\n")
threading.Thread(target=flood, daemon=True).start()
for line in sys.stdin:
    msg = json.loads(line)
    sys.stdout.write("this is not json\n")
    sys.stdout.write("{\"half\": \n")
    sys.stdout.write("\x00\x01\x02 binary junk\n")
    if "id" in msg:
        result = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "noisy", "version": "1"}} if msg.get("method") == "initialize" else {}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#,
    );
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  noisy:\n    command: python3\n    args: [{}]\n",
        pki.tls_block(""),
        script.display()
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let before = rss_kib(gate.child.id());
    let mut c = client.connect(gate.addr).await.unwrap();
    let init = c.initialize().await;
    assert_eq!(init.json()["result"]["serverInfo"]["name"], "noisy");
    for i in 0..50 {
        let r = c
            .post(&json!({"jsonrpc":"2.0","id":100 + i,"method":"ping"}))
            .await;
        assert_eq!(r.response()["id"], 100 + i);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(gate.child.id());
    assert!(
        after < before + 64 * 1024,
        "memory stays bounded: {before} KiB -> {after} KiB"
    );
    assert!(
        gate.logs().contains("non-JSON"),
        "garbage is logged, not forwarded"
    );
}

#[tokio::test]
async fn thousands_of_abandoned_sessions_hit_the_limit_and_expire() {
    let (_pki, gate, client) = start(
        "  max_sessions: 200\n  session_idle_timeout: 2s\n",
        &format!(
            "mcp_servers:\n  demo:\n    command: {}\n    args: [demo-server]\n    session_mode: shared\n",
            mcpgate_bin()
        ),
    );
    let mut c = client.connect(gate.addr).await.unwrap();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..1000 {
        let r = c.post(&initialize_request(i)).await;
        match r.status.as_u16() {
            200 => ok += 1,
            503 => refused += 1,
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!((ok, refused), (200, 800));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = c.post(&initialize_request(1)).await;
    assert_eq!(
        r.status, 200,
        "expired sessions free their places: {}",
        r.body
    );
}

#[tokio::test]
async fn http2_rapid_reset_does_not_starve_others() {
    let (_pki, gate, client) = start("", &demo_upstream(""));
    let mut h2 = client.clone();
    h2.alpn = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(h2.config())
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    // 2,000 requests, each reset right after it is sent.
    for _ in 0..2000 {
        let mut s = send.clone();
        if s.ready().await.is_err() {
            break; // the server may close an abusive connection: that is a fine answer
        }
        let req = hyper::Request::builder()
            .method("POST")
            .uri(format!("https://localhost:{}/mcp", gate.addr.port()))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                initialize_request(1).to_string(),
            )))
            .unwrap();
        let fut = s.send_request(req);
        drop(tokio::time::timeout(Duration::from_micros(10), fut).await);
    }
    driver.abort();
    let took = control(&client, &gate).await;
    assert!(took < Duration::from_secs(5), "control took {took:?}");
}
