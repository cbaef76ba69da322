//! `/metrics`: expiry gauges with the right values for certificates of known lifetimes,
//! request counts and latency per upstream and method, handshake failures by class, and the
//! expiry warning in the log.

use std::time::Duration;

use mcpgate::tls::devca::{Authority, Spec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn scrape(addr: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn gauge(text: &str, prefix: &str) -> i64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn metrics_show_expiry_requests_and_handshake_failures() {
    let dir = TempDir::new("metrics");
    let server_ca = Authority::new_root(&Spec::new("Metrics Server CA", 60)).unwrap();
    let client_ca = Authority::new_root(&Spec::new("Metrics Client CA", 30)).unwrap();
    let other_ca = Authority::new_root(&Spec::new("Metrics Other CA", 30)).unwrap();
    let leaf = server_ca
        .server(&Spec::new("localhost", 10).names(["localhost", "127.0.0.1"]))
        .unwrap();
    let cert = dir.write("s.crt", &leaf.cert_pem);
    let key = dir.write("s.key", &leaf.key_pem);
    let cca = dir.write("cca.crt", &client_ca.issued.cert_pem);
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\nmetrics:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  client_auth: request\n{}",
        cert.display(),
        key.display(),
        cca.display(),
        demo_upstream("")
    ));
    let metrics_addr = gate
        .banner_value("metrics:", Duration::from_secs(5))
        .expect("the banner names the metrics address")
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();

    let client = TlsClient::trusting(&server_ca.issued.cert_pem);
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let r = c.call_tool(2, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(tool_text(&r.response()), "3");
    // A client certificate from an unknown CA is refused in the handshake.
    let stranger = other_ca.client(&Spec::new("stranger", 5)).unwrap();
    let refused = client.clone().with_identity(&stranger);
    if let Ok(mut conn) = refused.connect(gate.addr).await {
        let _ = conn.request("GET", "/healthz", None, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = scrape(&metrics_addr).await;
    let listener = gauge(
        &text,
        "mcpgate_certificate_expiry_seconds{role=\"listener\",name=\"tls.cert_file\",subject=\"CN=localhost\"}",
    );
    assert!(
        (10 * 86_400 - 300..=10 * 86_400).contains(&listener),
        "listener certificate: {listener}s left"
    );
    let client_ca_left = gauge(
        &text,
        "mcpgate_certificate_expiry_seconds{role=\"client_ca\",name=\"tls.client_ca_file\",subject=\"CN=Metrics Client CA\"}",
    );
    assert!(
        (30 * 86_400 - 300..=30 * 86_400).contains(&client_ca_left),
        "client CA: {client_ca_left}s left"
    );
    assert!(
        gauge(
            &text,
            "mcpgate_requests_total{upstream=\"demo\",method=\"tools/call\",outcome=\"ok\"}"
        ) >= 1,
        "{text}"
    );
    assert!(
        gauge(
            &text,
            "mcpgate_request_duration_seconds_count{upstream=\"demo\",method=\"tools/call\"}"
        ) >= 1,
        "{text}"
    );
    assert!(text.contains("mcpgate_request_duration_seconds_bucket{upstream=\"demo\",method=\"initialize\",le=\"+Inf\"}"), "{text}");
    assert!(
        gauge(
            &text,
            "mcpgate_tls_handshake_failures_total{side=\"listener\",class=\"client_certificate_rejected\"}"
        ) >= 1,
        "{text}"
    );
    assert!(
        gate.logs().contains("under 30 days"),
        "a certificate with 10 days left is warned about: {}",
        gate.logs()
    );
}
