//! Structured logs, and the handshake log of the TLS debug switch.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_tls_debug_logs_each_handshake() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}logging:\n  format: json\n  tls_debug: true\n",
        pki.tls_block(&format!(
            "  client_ca_file: {}\n  client_auth: request\n",
            pki.file("client-ca.crt")
        )),
        demo_upstream("")
    ));
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .with_identity(&pki.client)
        .connect(gate.addr)
        .await
        .unwrap();
    c.initialize().await;
    assert!(
        gate.wait_log("TLS handshake", Duration::from_secs(5)),
        "{}",
        gate.logs()
    );
    let logs = gate.logs();
    let mut handshake = None;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["message"] == "TLS handshake" {
            handshake = Some(v);
        }
    }
    let h = handshake.expect("a handshake record");
    assert_eq!(h["version"], "TLSv1.3", "{h}");
    assert!(h["cipher"].as_str().unwrap().starts_with("TLS_"), "{h}");
    assert_eq!(h["alpn"], "http/1.1", "{h}");
    assert_eq!(h["sni"], "localhost", "{h}");
    assert!(h["client"].as_str().unwrap().contains("CN=alice"), "{h}");
}
