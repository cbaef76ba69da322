//! Limits answer with clear HTTP errors: body size, header size, session count, idle time.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn limits_have_clear_errors() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n  max_body_bytes: 2048\n  max_header_bytes: 8192\n  max_sessions: 2\n  session_idle_timeout: 1s\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let mut c = client.connect(gate.addr).await.unwrap();

    let big = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"x".repeat(4096)}});
    let r = c.post(&big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("max_body_bytes"));

    let mut h = client.connect(gate.addr).await.unwrap();
    let long = "y".repeat(20_000);
    let r = h
        .request("GET", "/healthz", None, &[("x-long", long.as_str())])
        .await;
    assert!(
        matches!(&r, Ok(reply) if reply.status == 431) || r.is_err(),
        "oversized headers: {r:?}"
    );

    let mut a = client.connect(gate.addr).await.unwrap();
    let mut b = client.connect(gate.addr).await.unwrap();
    a.initialize().await;
    b.initialize().await;
    let third = c.post(&initialize_request(1)).await;
    assert_eq!(third.status, 503, "{}", third.body);
    assert!(third.body.contains("max_sessions"));

    // Idle sessions are closed, which frees room for new ones.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = a
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"ping"}))
        .await;
    assert_eq!(r.status, 404, "an idle session expires: {}", r.body);
    let again = c.post(&initialize_request(1)).await;
    assert_eq!(again.status, 200, "{}", again.body);
}
