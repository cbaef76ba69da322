//! serve in front of a remote HTTPS MCP server: a client talks to a front mcpgate, which
//! reaches a back mcpgate over mTLS with its own CA; the front's metrics show the upstream's
//! certificate and its own client certificate expiring.

use std::time::Duration;

use mcpgate::tls::devca::{Authority, Spec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn serve_fronts_a_remote_server_over_mtls() {
    let dir = TempDir::new("remote");
    let back_ca = Authority::new_root(&Spec::new("Back CA", 30)).unwrap();
    let back_leaf = back_ca
        .server(&Spec::new("back", 20).names(["localhost", "127.0.0.1"]))
        .unwrap();
    let front_client = back_ca.client(&Spec::new("front-gateway", 15)).unwrap();
    let w = |n: &str, t: &str| dir.write(n, t).display().to_string();
    let (back_ca_f, back_crt, back_key) = (
        w("back-ca.crt", &back_ca.issued.cert_pem),
        w("back.crt", &back_leaf.cert_pem),
        w("back.key", &back_leaf.key_pem),
    );
    let (fc_crt, fc_key) = (
        w("front-client.crt", &front_client.cert_pem),
        w("front-client.key", &front_client.key_pem),
    );
    let back = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {back_crt}\n  key_file: {back_key}\n  client_ca_file: {back_ca_f}\n  client_auth: verify\n{}",
        demo_upstream("")
    ));

    let pki = Pki::new();
    let front = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\nmetrics:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  back:\n    url: https://127.0.0.1:{}/mcp\n    transport: http\n    tls:\n      ca_cert: {back_ca_f}\n      cert_file: {fc_crt}\n      key_file: {fc_key}\n",
        pki.tls_block(""),
        back.addr.port()
    ));
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(front.addr)
        .await
        .unwrap();
    let init = c.initialize().await;
    assert_eq!(init.json()["result"]["serverInfo"]["name"], "mcpgate-demo");
    let r = c.call_tool(2, "add", json!({"a": 40, "b": 2})).await;
    assert_eq!(tool_text(&r.response()), "42");
    // Progress from the remote server reaches this client on its request's stream.
    let slow = c
        .post(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"slow","arguments":{"seconds":0.2},"_meta":{"progressToken":"p"}}}))
        .await;
    let msgs = slow.messages();
    assert_eq!(
        msgs.iter()
            .filter(|m| m["method"] == "notifications/progress")
            .count(),
        4,
        "{msgs:?}"
    );
    assert!(
        back.wait_log("CN=front-gateway", Duration::from_secs(5)),
        "the back sees the front's client certificate"
    );

    let metrics = front
        .banner_value("metrics:", Duration::from_secs(5))
        .unwrap();
    let addr = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    let value = |prefix: &str| -> i64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let upstream_left = value(
        "mcpgate_certificate_expiry_seconds{role=\"upstream\",name=\"back\",subject=\"CN=back\"}",
    );
    assert!(
        (20 * 86_400 - 300..=20 * 86_400).contains(&upstream_left),
        "{upstream_left}"
    );
    let client_left = value(
        "mcpgate_certificate_expiry_seconds{role=\"client\",name=\"back\",subject=\"CN=front-gateway\"}",
    );
    assert!(
        (15 * 86_400 - 300..=15 * 86_400).contains(&client_left),
        "{client_left}"
    );

    // The back going away is answered, and /readyz says so.
    drop(back);
    let r = c
        .call_tool(4, "echo", json!({"text": "anyone?"}))
        .await
        .response();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connection_refused"),
        "{r}"
    );
    let ready = c.request("GET", "/readyz", None, &[]).await.unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
}

#[tokio::test]
async fn serve_fronts_the_plain_http_fixture_and_probe_reads_it() {
    let fixture = HttpFixture::start(&[]);
    let url = fixture.url.clone();

    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  plain:\n    url: {url}\n",
        pki.tls_block("")
    ));
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    c.initialize().await;
    for i in 0..20 {
        let r = c.call_tool(10 + i, "add", json!({"a": i, "b": 1})).await;
        assert_eq!(tool_text(&r.response()), (i + 1).to_string());
    }
    let big = c.call_tool(99, "large", json!({"bytes": 1_000_000})).await;
    assert_eq!(tool_text(&big.response()).len(), 1_000_000);

    let out = std::process::Command::new(mcpgate_bin())
        .args(["probe", &url, "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["tls"], serde_json::Value::Null);
    assert_eq!(report["http"]["server_name"], "mcpgate-demo");
    drop(fixture);
}

/// A call to a remote upstream goes out in the request's own task; a client that goes away
/// before the answer gets the call cancelled upstream (the HTTP exchange ends, and a
/// `notifications/cancelled` says so), and the session keeps serving.
#[tokio::test]
async fn a_client_gone_mid_call_cancels_it_at_the_remote_server() {
    let fixture = HttpFixture::start(&[]);
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  plain:\n    url: {}\n",
        pki.tls_block(""),
        fixture.url
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let warm = c.call_tool(1, "echo", json!({"text": "warm"})).await;
    assert_eq!(tool_text(&warm.response()), "warm");

    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"seconds": 30}}})
    .to_string();
    let mut headers = vec![(
        "mcp-session-id".to_string(),
        c.session.clone().expect("a session"),
    )];
    headers.extend(c.headers.clone());
    post_then_hang_up(
        &client,
        gate.addr,
        &body,
        &headers,
        Duration::from_millis(500),
    )
    .await;
    assert!(
        fixture.logs.wait_for(
            "notifications/cancelled for request 7",
            Duration::from_secs(10)
        ),
        "the remote server never saw the cancellation; its log:\n{}\nmcpgate's:\n{}",
        fixture.logs.text(),
        gate.logs()
    );
    let after = c.call_tool(8, "echo", json!({"text": "after"})).await;
    assert_eq!(tool_text(&after.response()), "after");
}

/// A client that takes only SSE gets a remote upstream's JSON answer as an event: the answer
/// passed on as it came (for JSON clients) must not skip it.
#[tokio::test]
async fn an_sse_only_client_gets_the_remote_answer_as_an_event() {
    let fixture = HttpFixture::start(&[]);
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n  request_timeout: 10s\n{}mcp_servers:\n  plain:\n    url: {}\n",
        pki.tls_block(""),
        fixture.url
    ));
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    c.initialize().await;
    let json_first = c.call_tool(1, "echo", json!({"text": "as json"})).await;
    assert_eq!(tool_text(&json_first.response()), "as json");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "as an event"}}});
    let started = std::time::Instant::now();
    let r = c
        .request(
            "POST",
            "/mcp",
            Some(&call),
            &[("accept", "text/event-stream")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.is_sse(), "{:?}", r.headers);
    assert_eq!(tool_text(&r.response()), "as an event");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the answer waited for the timeout"
    );
}
