//! The listener's TLS surface: version bounds, a cipher suite and a curve restriction seen in
//! the negotiated handshake, key formats, and certificate reload under an open session.

use std::time::Duration;

use rustls::crypto::aws_lc_rs::{cipher_suite, kx_group};
use serde_json::json;

use crate::support::*;

fn gate_with(pki: &Pki, tls_extra: &str) -> Gate {
    Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(tls_extra),
        demo_upstream("")
    ))
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let pki = Pki::new();
    let gate = gate_with(&pki, "  min_version: \"1.3\"\n");
    let mut only12 = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    only12.versions = vec![&rustls::version::TLS12];
    let err = only12
        .connect(gate.addr)
        .await
        .err()
        .expect("a TLS 1.2-only client must be refused");
    assert!(
        err.to_lowercase().contains("protocol version") || err.contains("alert"),
        "{err}"
    );
    let ok = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    assert_eq!(ok.info.version, Some(rustls::ProtocolVersion::TLSv1_3));
}

#[tokio::test]
async fn max_version_1_2_refuses_a_tls_1_3_client() {
    let pki = Pki::new();
    let gate = gate_with(&pki, "  max_version: \"1.2\"\n");
    let mut only13 = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    only13.versions = vec![&rustls::version::TLS13];
    assert!(
        only13.connect(gate.addr).await.is_err(),
        "a TLS 1.3-only client must be refused"
    );
    let ok = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    assert_eq!(ok.info.version, Some(rustls::ProtocolVersion::TLSv1_2));
}

#[tokio::test]
async fn default_bounds_accept_tls_1_2_and_1_3() {
    let pki = Pki::new();
    let gate = gate_with(&pki, "");
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
        c.versions = vec![v];
        let conn = c.connect(gate.addr).await.unwrap();
        assert_eq!(conn.info.version, Some(v.version));
    }
}

#[tokio::test]
async fn a_cipher_suite_restriction_is_what_the_handshake_negotiates() {
    let pki = Pki::new();
    let gate = gate_with(
        &pki,
        "  max_version: \"1.2\"\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]\n",
    );
    let conn = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    assert_eq!(
        conn.info.suite,
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
    // A client that offers only another suite finds no common cipher.
    let mut other = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    other.suites = Some(vec![cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]);
    other.versions = vec![&rustls::version::TLS12];
    assert!(other.connect(gate.addr).await.is_err());
}

/// The listener's order decides, not the client's: AES-128-GCM first by default, and the
/// order `tls.cipher_suites` lists when set.
#[tokio::test]
async fn the_listener_orders_the_cipher_suites() {
    use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    let pki = Pki::new();
    let offer = |first: rustls::SupportedCipherSuite, then: rustls::SupportedCipherSuite| {
        let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
        c.suites = Some(vec![first, then]);
        c.versions = vec![&rustls::version::TLS13];
        c
    };
    let (aes256, aes128) = (
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
    );
    let default = gate_with(&pki, "");
    let conn = offer(aes256, aes128).connect(default.addr).await.unwrap();
    assert_eq!(conn.info.suite, Some(TLS13_AES_128_GCM_SHA256));

    let listed = gate_with(
        &pki,
        "  cipher_suites: [TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]\n",
    );
    let conn = offer(aes128, aes256).connect(listed.addr).await.unwrap();
    assert_eq!(conn.info.suite, Some(TLS13_AES_256_GCM_SHA384));
}

#[tokio::test]
async fn a_curve_restriction_is_what_the_handshake_negotiates() {
    let pki = Pki::new();
    let gate = gate_with(&pki, "  curve_preferences: [P-384]\n");
    let conn = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    assert_eq!(conn.info.group, Some(rustls::NamedGroup::secp384r1));
    let mut x25519_only = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    x25519_only.groups = Some(vec![kx_group::X25519]);
    assert!(
        x25519_only.connect(gate.addr).await.is_err(),
        "no common group must fail"
    );
}

#[tokio::test]
async fn rsa_pkcs1_and_ec_sec1_and_ed25519_keys_all_serve() {
    use mcpgate::tls::devca::{KeyKind, Spec};
    let pki = Pki::new();
    for (kind, tag) in [
        (KeyKind::Rsa2048, "RSA PRIVATE KEY"),
        (KeyKind::EcdsaP256, "EC PRIVATE KEY"),
        (KeyKind::Ed25519, "PRIVATE KEY"),
    ] {
        let leaf = pki
            .server_ca
            .server(
                &Spec::new("localhost", 30)
                    .names(["localhost", "127.0.0.1"])
                    .key(kind),
            )
            .unwrap();
        let key_path = pki.dir.write("k.pem", &leaf.key_pem);
        if tag != "PRIVATE KEY" {
            // openssl writes the traditional (PKCS#1 / SEC1) encodings.
            let out = std::process::Command::new("openssl")
                .args(["pkey", "-traditional", "-in"])
                .arg(&key_path)
                .output()
                .expect(
                    "openssl must be installed to convert key formats (scripts/test installs it)",
                );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(
                text.contains(&format!("BEGIN {tag}")),
                "openssl gave {text}"
            );
            std::fs::write(&key_path, text).unwrap();
        }
        let cert = pki.dir.write("c.pem", &leaf.cert_pem);
        let gate = Gate::start(&format!(
            "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {}\n  key_file: {}\n{}",
            cert.display(),
            key_path.display(),
            demo_upstream("")
        ));
        let mut conn = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
            .connect(gate.addr)
            .await
            .unwrap();
        assert_eq!(
            conn.request("GET", "/healthz", None, &[])
                .await
                .unwrap()
                .status,
            200,
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn certificate_reload_keeps_open_sessions_and_serves_the_new_certificate() {
    use mcpgate::tls::devca::Spec;
    let pki = Pki::new();
    let gate = gate_with(&pki, "  reload_interval: 100ms\n");
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let mut old = client.connect(gate.addr).await.unwrap();
    old.initialize().await;
    let first_leaf = old.info.peer_leaf.clone().unwrap();

    let renewed = pki
        .server_ca
        .server(&Spec::new("localhost", 60).names(["localhost", "127.0.0.1"]))
        .unwrap();
    // Replace by rename, as Kubernetes and editors do.
    std::fs::write(pki.dir.path("server.key.new"), &renewed.key_pem).unwrap();
    std::fs::write(pki.dir.path("server.crt.new"), &renewed.cert_pem).unwrap();
    std::fs::rename(pki.dir.path("server.key.new"), pki.dir.path("server.key")).unwrap();
    std::fs::rename(pki.dir.path("server.crt.new"), pki.dir.path("server.crt")).unwrap();
    assert!(
        gate.wait_log("TLS certificate reloaded", Duration::from_secs(10)),
        "no reload; logs:\n{}",
        gate.logs()
    );

    let fresh = client.connect(gate.addr).await.unwrap();
    assert_eq!(
        fresh.info.peer_leaf.as_deref(),
        Some(renewed.der.as_slice()),
        "new connections get the new certificate"
    );
    assert_ne!(first_leaf, renewed.der);
    // The connection opened before the reload still works, in the same session.
    let r = old
        .call_tool(7, "echo", json!({"text": "still here"}))
        .await;
    assert_eq!(tool_text(&r.response()), "still here");
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    http2_initializes(&[b"h2", b"http/1.1"], Some(b"h2")).await;
}

/// A client that names no protocol may still speak HTTP/2 (prior knowledge): the listener
/// reads the preface to tell, and HTTP/1.1 without ALPN still works.
#[tokio::test]
async fn http2_without_alpn_is_recognised_by_its_preface() {
    http2_initializes(&[], None).await;
    let pki = Pki::new();
    let gate = gate_with(&pki, "");
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    c.alpn = vec![];
    let mut one = c.connect(gate.addr).await.unwrap();
    let r = one.initialize().await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Initializes over HTTP/2 with the given ALPN offer, checking what was agreed.
async fn http2_initializes(offer: &[&[u8]], agreed: Option<&[u8]>) {
    let pki = Pki::new();
    let gate = gate_with(&pki, "");
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    c.alpn = offer.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(c.config())
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), agreed);
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("https://localhost:{}/mcp", gate.addr.port()))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            initialize_request(1).to_string(),
        )))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert!(resp.headers().contains_key("mcp-session-id"));
}
