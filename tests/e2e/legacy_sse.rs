//! The legacy HTTP+SSE transport: endpoint event, 202 on POST, answers on the stream, and
//! the session (and its child) gone when the stream closes.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn endpoint_event_then_answers_on_the_stream() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(client.config())
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    stream
        .write_all(b"GET /sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    let read_until = |needle: &'static str| needle;
    let _ = read_until;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: endpoint")
        || !seen.contains("sessionId=")
        || !seen.contains("\n\n")
    {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let endpoint = seen
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .filter(|d| d.starts_with("/message?sessionId="))
        .expect("endpoint data")
        .to_string();

    let mut post = client.connect(gate.addr).await.unwrap();
    let r = post
        .request("POST", &endpoint, Some(&initialize_request(1)), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let r = post
        .request("POST", &endpoint, Some(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":40,"b":2}}})), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    // The server may answer the two requests in either order: wait for both.
    while !(seen.contains("\"id\":1") && seen.contains("\"id\":2")) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let msgs = sse_messages(&seen.replace("\r\n", "\n"));
    let answer = msgs.iter().find(|m| m["id"] == 2).unwrap();
    assert_eq!(tool_text(answer), "42");
    assert!(
        msgs.iter()
            .any(|m| m["id"] == 1 && m["result"]["serverInfo"]["name"] == "mcpgate-demo")
    );

    // Closing the stream ends the session.
    drop(stream);
    let mut gone = false;
    for _ in 0..50 {
        let r = post
            .request(
                "POST",
                &endpoint,
                Some(&json!({"jsonrpc":"2.0","id":3,"method":"ping"})),
                &[],
            )
            .await
            .unwrap();
        if r.status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the session should end with its stream");
}

#[tokio::test]
async fn an_unknown_session_is_404() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    let r = c
        .request(
            "POST",
            "/message?sessionId=nope",
            Some(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}
