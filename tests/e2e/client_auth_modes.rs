//! Each `client_auth` mode against a client with no certificate, a valid one, and one from
//! another CA: the outcome is decided in the TLS layer, before any MCP.

use crate::support::*;

#[derive(Debug, PartialEq)]
enum Outcome {
    Served,
    Refused,
}

async fn try_client(gate: &Gate, tls: TlsClient) -> Outcome {
    let mut conn = match tls.connect(gate.addr).await {
        Ok(c) => c,
        Err(_) => return Outcome::Refused,
    };
    // With TLS 1.3 the server's verdict on the client certificate arrives after the client
    // finished its handshake: the first request is where a refusal shows.
    match conn.request("GET", "/healthz", None, &[]).await {
        Ok(r) if r.status.is_success() => Outcome::Served,
        _ => Outcome::Refused,
    }
}

async fn check_mode(mode: &str, expect: [Outcome; 3]) {
    let pki = Pki::new();
    let extra = if mode == "none" {
        "  client_auth: none\n".to_string()
    } else {
        format!(
            "  client_ca_file: {}\n  client_auth: {mode}\n",
            pki.file("client-ca.crt")
        )
    };
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(&extra),
        demo_upstream("")
    ));
    let base = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let got = [
        try_client(&gate, base.clone()).await,
        try_client(&gate, base.clone().with_identity(&pki.client)).await,
        try_client(&gate, base.clone().with_identity(&pki.other_client)).await,
    ];
    assert_eq!(
        got, expect,
        "client_auth {mode}: [no cert, valid cert, other CA's cert]"
    );
}

#[tokio::test]
async fn none_serves_everyone() {
    check_mode("none", [Outcome::Served, Outcome::Served, Outcome::Served]).await;
}

#[tokio::test]
async fn request_verifies_a_certificate_only_when_one_is_sent() {
    check_mode(
        "request",
        [Outcome::Served, Outcome::Served, Outcome::Refused],
    )
    .await;
}

#[tokio::test]
async fn require_wants_any_certificate() {
    check_mode(
        "require",
        [Outcome::Refused, Outcome::Served, Outcome::Served],
    )
    .await;
}

#[tokio::test]
async fn verify_wants_a_certificate_from_the_client_ca() {
    check_mode(
        "verify",
        [Outcome::Refused, Outcome::Served, Outcome::Refused],
    )
    .await;
}

#[tokio::test]
async fn a_verified_client_identity_is_logged_with_its_session() {
    let pki = Pki::new();
    let extra = format!(
        "  client_ca_file: {}\n  client_auth: verify\n",
        pki.file("client-ca.crt")
    );
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(&extra),
        demo_upstream("")
    ));
    let mut conn = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .with_identity(&pki.client)
        .connect(gate.addr)
        .await
        .unwrap();
    conn.initialize().await;
    assert!(
        gate.wait_log("CN=alice", std::time::Duration::from_secs(5)),
        "session log should name the client certificate; logs:\n{}",
        gate.logs()
    );
}
