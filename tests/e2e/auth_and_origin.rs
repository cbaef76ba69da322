//! Bearer tokens (accepted, missing, wrong) and Origin/Host checks against DNS rebinding.

use serde_json::json;

use crate::support::*;

async fn gate_and_client(extra: &str, env: &[(&str, &str)]) -> (Pki, Gate, Conn) {
    let pki = Pki::new();
    let gate = Gate::start_with_env(
        &format!(
            "server:\n  listen: 127.0.0.1:0\n{}{extra}{}",
            pki.tls_block(""),
            demo_upstream("")
        ),
        env,
    );
    let conn = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    (pki, gate, conn)
}

#[tokio::test]
async fn bearer_tokens_from_the_environment_are_accepted_and_others_refused() {
    let (_pki, _gate, mut conn) = gate_and_client(
        "auth:\n  type: bearer\n  bearer:\n    tokens: [\"${E2E_TOKEN_A}\", \"${E2E_TOKEN_B}\"]\n",
        &[
            ("E2E_TOKEN_A", "alpha-secret-token"),
            ("E2E_TOKEN_B", "beta-secret-token"),
        ],
    )
    .await;
    let init = initialize_request(1);

    let missing = conn
        .request("POST", "/mcp", Some(&init), &[])
        .await
        .unwrap();
    assert_eq!(missing.status, 401);
    let challenge = missing
        .headers
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(!challenge.contains("invalid_token"));

    let wrong = conn
        .request(
            "POST",
            "/mcp",
            Some(&init),
            &[("authorization", "Bearer alpha-secret-tokem")],
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .headers
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    for token in ["alpha-secret-token", "beta-secret-token"] {
        let header = format!("Bearer {token}");
        let ok = conn
            .request(
                "POST",
                "/mcp",
                Some(&init),
                &[("authorization", header.as_str())],
            )
            .await
            .unwrap();
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(ok.json()["result"]["serverInfo"]["name"], "mcpgate-demo");
    }
}

#[tokio::test]
async fn health_endpoints_need_no_token() {
    let (_pki, _gate, mut conn) = gate_and_client(
        "auth:\n  type: bearer\n  bearer:\n    tokens: [\"t0k3n-for-health\"]\n",
        &[],
    )
    .await;
    assert_eq!(
        conn.request("GET", "/healthz", None, &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        conn.request("GET", "/readyz", None, &[])
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_loopback_or_listed_origins_pass() {
    let (_pki, _gate, mut conn) = gate_and_client("", &[]).await;
    let init = initialize_request(1);
    let evil = conn
        .request(
            "POST",
            "/mcp",
            Some(&init),
            &[("origin", "http://evil.example")],
        )
        .await
        .unwrap();
    assert_eq!(evil.status, 403);
    assert!(evil.body.contains("allowed_origins"), "{}", evil.body);
    let local = conn
        .request(
            "POST",
            "/mcp",
            Some(&init),
            &[("origin", "http://localhost:3000")],
        )
        .await
        .unwrap();
    assert_eq!(local.status, 200);

    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n  allowed_origins: [\"https://app.example\"]\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let mut listed = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    let ok = listed
        .request(
            "POST",
            "/mcp",
            Some(&init),
            &[("origin", "https://app.example")],
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_on_a_loopback_listener() {
    let (_pki, _gate, mut conn) = gate_and_client("", &[]).await;
    let r = conn
        .request(
            "POST",
            "/mcp",
            Some(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            &[("host", "attacker.example:8443")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
}
