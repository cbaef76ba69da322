//! The outbound trust engine through `mcpgate connect`, against real TLS servers on loopback
//! (mcpgate serve, or a tiny server where a misbehaving one is needed). Each case asserts the
//! error class and the hint; where a hint gives a fix, following it is checked to work.

use std::net::SocketAddr;
use std::sync::Arc;

use mcpgate::tls::devca::{Authority, Issued, Spec, self_signed_server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A server presenting `chain_pem` (leaf first) with `key_pem`, fronting the demo server.
fn serve_chain(dir: &TempDir, chain_pem: &str, key_pem: &str, tls_extra: &str) -> Gate {
    let cert = dir.write("up.crt", chain_pem);
    let key = dir.write("up.key", key_pem);
    Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {}\n  key_file: {}\n{tls_extra}{}",
        cert.display(),
        key.display(),
        demo_upstream("")
    ))
}

fn url(gate: &Gate, host: &str) -> String {
    format!("https://{host}:{}/mcp", gate.addr.port())
}

fn ca_file(dir: &TempDir, name: &str, ca: &Authority) -> String {
    dir.write(name, &ca.issued.cert_pem).display().to_string()
}

fn leaf(ca: &Authority, names: &[&str]) -> Issued {
    ca.server(&Spec::new("upstream", 30).names(names.iter().copied()))
        .unwrap()
}

#[test]
fn an_extra_ca_is_trusted_on_top_of_the_system_store() {
    let dir = TempDir::new("trust");
    let ca = Authority::new_root(&Spec::new("Corp Root", 30)).unwrap();
    let l = leaf(&ca, &["127.0.0.1", "localhost"]);
    let gate = serve_chain(&dir, &l.cert_pem, &l.key_pem, "");
    let run = connect_once(
        &[
            &url(&gate, "127.0.0.1"),
            "--ca",
            &ca_file(&dir, "ca.pem", &ca),
        ],
        &[],
        &[],
        1,
    );
    assert_eq!(run.ok()["result"]["serverInfo"]["name"], "mcpgate-demo");
    assert!(
        run.stderr.contains("system store + tls.ca_cert"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unknown_ca_is_named_with_the_fix() {
    let dir = TempDir::new("trust");
    let root = Authority::new_root(&Spec::new("Unknown Root", 30)).unwrap();
    let inter = root
        .intermediate(&Spec::new("Unknown Issuing CA", 30))
        .unwrap();
    let l = leaf(&inter, &["127.0.0.1"]);
    let gate = serve_chain(
        &dir,
        &format!("{}{}", l.cert_pem, inter.issued.cert_pem),
        &l.key_pem,
        "",
    );
    let other = Authority::new_root(&Spec::new("Some Other Root", 30)).unwrap();
    let run = connect_once(
        &[
            &url(&gate, "127.0.0.1"),
            "--ca",
            &ca_file(&dir, "other.pem", &other),
        ],
        &[],
        &[],
        1,
    );
    let e = run.error();
    assert!(
        e.contains("[unknown_issuer]") && e.contains("Unknown Root") && e.contains("ca_cert"),
        "{e}"
    );
    // The stderr report names the peer, the SNI and the trust source.
    assert!(
        run.stderr.contains("peer 127.0.0.1:")
            && run.stderr.contains("SNI 127.0.0.1")
            && run.stderr.contains("trust: system store + tls.ca_cert"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\nhint: "), "{}", run.stderr);
}

#[test]
fn an_incomplete_chain_is_told_apart_from_an_unknown_ca() {
    let dir = TempDir::new("trust");
    let root = Authority::new_root(&Spec::new("Public Root", 30)).unwrap();
    let inter = root
        .intermediate(&Spec::new("Public Issuing CA", 30))
        .unwrap();
    let mut spec = Spec::new("upstream", 30).names(["127.0.0.1"]);
    spec.ca_issuers_url = Some("http://pki.example/issuing.crt".into());
    let l = inter.server(&spec).unwrap();
    // The server sends only its leaf: the intermediate is missing, the root is trusted.
    let gate = serve_chain(&dir, &l.cert_pem, &l.key_pem, "");
    let root_file = ca_file(&dir, "root.pem", &root);
    let run = connect_once(&[&url(&gate, "127.0.0.1"), "--ca", &root_file], &[], &[], 1);
    let e = run.error();
    assert!(
        e.contains("[incomplete_chain]")
            && e.contains("Public Issuing CA")
            && e.contains("full chain"),
        "{e}"
    );
    // Following the hint (send the full chain) fixes it.
    drop(gate);
    let fixed = serve_chain(
        &dir,
        &format!("{}{}", l.cert_pem, inter.issued.cert_pem),
        &l.key_pem,
        "",
    );
    connect_once(
        &[&url(&fixed, "127.0.0.1"), "--ca", &root_file],
        &[],
        &[],
        1,
    )
    .ok();
}

#[test]
fn expired_and_not_yet_valid_certificates_give_their_dates() {
    let dir = TempDir::new("trust");
    let ca = Authority::new_root(&Spec::new("Root", 30)).unwrap();
    let ca_path = ca_file(&dir, "ca.pem", &ca);
    let mut old = Spec::new("upstream", 0).names(["127.0.0.1"]);
    old.not_before = time::Duration::days(-10);
    old.not_after = time::Duration::days(-1);
    let l = ca.server(&old).unwrap();
    let gate = serve_chain(&dir, &l.cert_pem, &l.key_pem, "");
    let e = connect_once(&[&url(&gate, "127.0.0.1"), "--ca", &ca_path], &[], &[], 1).error();
    assert!(e.contains("[expired]") && e.contains("expired on"), "{e}");
    drop(gate);
    let mut future = Spec::new("upstream", 30).names(["127.0.0.1"]);
    future.not_before = time::Duration::days(2);
    let l = ca.server(&future).unwrap();
    let gate = serve_chain(&dir, &l.cert_pem, &l.key_pem, "");
    let e = connect_once(&[&url(&gate, "127.0.0.1"), "--ca", &ca_path], &[], &[], 1).error();
    assert!(e.contains("[not_yet_valid]") && e.contains("until"), "{e}");
}

#[test]
fn a_wrong_name_lists_the_covered_names_and_server_name_fixes_it() {
    let dir = TempDir::new("trust");
    let ca = Authority::new_root(&Spec::new("Root", 30)).unwrap();
    let ca_path = ca_file(&dir, "ca.pem", &ca);
    let l = leaf(&ca, &["mcp.internal.example"]);
    let gate = serve_chain(&dir, &l.cert_pem, &l.key_pem, "");
    let e = connect_once(&[&url(&gate, "127.0.0.1"), "--ca", &ca_path], &[], &[], 1).error();
    assert!(
        e.contains("[name_mismatch]")
            && e.contains("mcp.internal.example")
            && e.contains("server_name: mcp.internal.example"),
        "{e}"
    );
    let run = connect_once(
        &[
            &url(&gate, "127.0.0.1"),
            "--ca",
            &ca_path,
            "--server-name",
            "mcp.internal.example",
        ],
        &[],
        &[],
        1,
    );
    run.ok();
}

#[test]
fn a_self_signed_certificate_is_refused_then_accepted_once_pinned_and_a_changed_one_fails_closed() {
    let dir = TempDir::new("trust");
    let ss = self_signed_server(&Spec::new("internal box", 30).names(["127.0.0.1"])).unwrap();
    let gate = serve_chain(&dir, &ss.cert_pem, &ss.key_pem, "");
    let e = connect_once(&[&url(&gate, "127.0.0.1")], &[], &[], 1).error();
    assert!(
        e.contains("[self_signed_not_pinned]") && e.contains("pinned_sha256"),
        "{e}"
    );
    // The hint carries the fingerprint to pin: follow it.
    let fp = e
        .split("--pin ")
        .nth(1)
        .and_then(|s| s.split([';', ')', ' ']).next())
        .expect("the hint names --pin <fingerprint>")
        .to_string();
    assert_eq!(fp, mcpgate::tls::fingerprint(&ss.der));
    connect_once(&[&url(&gate, "127.0.0.1"), "--pin", &fp], &[], &[], 1).ok();

    // The server's certificate changes: the old pin fails closed, showing both fingerprints.
    drop(gate);
    let rotated = self_signed_server(&Spec::new("internal box", 30).names(["127.0.0.1"])).unwrap();
    let gate = serve_chain(&dir, &rotated.cert_pem, &rotated.key_pem, "");
    let e = connect_once(&[&url(&gate, "127.0.0.1"), "--pin", &fp], &[], &[], 1).error();
    let new_fp = mcpgate::tls::fingerprint(&rotated.der);
    assert!(
        e.contains("[pinned_certificate_changed]") && e.contains(&fp) && e.contains(&new_fp),
        "{e}"
    );
}

#[test]
fn a_required_client_certificate_not_given_is_named() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(&format!(
            "  client_ca_file: {}\n  client_auth: verify\n",
            pki.file("client-ca.crt")
        )),
        demo_upstream("")
    ));
    let run = connect_once(
        &[&url(&gate, "127.0.0.1"), "--ca", &pki.file("server-ca.crt")],
        &[],
        &[],
        1,
    );
    let e = run.error();
    assert!(
        e.contains("[client_certificate_required]") && e.contains("cert_file"),
        "{e}"
    );
    // A client certificate from another CA is rejected, and said so.
    let other_cert = pki.dir.write("o.crt", &pki.other_client.cert_pem);
    let other_key = pki.dir.write("o.key", &pki.other_client.key_pem);
    let e = connect_once(
        &[
            &url(&gate, "127.0.0.1"),
            "--ca",
            &pki.file("server-ca.crt"),
            "--cert",
            other_cert.to_str().unwrap(),
            "--key",
            other_key.to_str().unwrap(),
        ],
        &[],
        &[],
        1,
    )
    .error();
    assert!(e.contains("[client_certificate_rejected]"), "{e}");
}

#[test]
fn a_client_certificate_is_sent_even_with_no_ca_configured() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(&format!(
            "  client_ca_file: {}\n  client_auth: verify\n",
            pki.file("client-ca.crt")
        )),
        demo_upstream("")
    ));
    let cert = pki.dir.write("alice.crt", &pki.client.cert_pem);
    let key = pki.dir.write("alice.key", &pki.client.key_pem);
    // No --ca: the server's CA comes from the environment (SSL_CERT_FILE).
    let run = connect_once(
        &[
            &url(&gate, "127.0.0.1"),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[("SSL_CERT_FILE", &pki.file("server-ca.crt"))],
        &[],
        1,
    );
    run.ok();
    assert!(
        run.stderr.contains("trust=SSL_CERT_FILE"),
        "the trust source is recorded: {}",
        run.stderr
    );
}

#[test]
fn the_environment_decides_when_nothing_is_configured() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let certs_dir = pki.dir.path("certs");
    std::fs::create_dir_all(&certs_dir).unwrap();
    std::fs::write(certs_dir.join("corp.pem"), &pki.server_ca.issued.cert_pem).unwrap();
    let run = connect_once(
        &[&url(&gate, "127.0.0.1")],
        &[("SSL_CERT_DIR", certs_dir.to_str().unwrap())],
        &[],
        1,
    );
    run.ok();
    assert!(run.stderr.contains("trust=SSL_CERT_DIR"), "{}", run.stderr);
    let run = connect_once(
        &[&url(&gate, "127.0.0.1")],
        &[("SSL_VERIFY", &pki.file("server-ca.crt"))],
        &[],
        1,
    );
    run.ok();
    assert!(
        run.stderr.contains("trust=system store + SSL_VERIFY"),
        "{}",
        run.stderr
    );
    let run = connect_once(
        &[&url(&gate, "127.0.0.1")],
        &[("SSL_VERIFY", "false")],
        &[],
        1,
    );
    run.ok();
    assert!(
        run.stderr.contains("INSECURE"),
        "verification off is loud: {}",
        run.stderr
    );
}

#[test]
fn a_ca_without_authority_key_identifiers_verifies() {
    let dir = TempDir::new("trust");
    let mut s = Spec::new("Old Corp Root", 30);
    s.authority_key_id = false;
    let root = Authority::new_root(&s).unwrap();
    let mut si = Spec::new("Old Corp Issuing", 30);
    si.authority_key_id = false;
    let inter = root.intermediate(&si).unwrap();
    let mut sl = Spec::new("upstream", 30).names(["127.0.0.1"]);
    sl.authority_key_id = false;
    let l = inter.server(&sl).unwrap();
    let parsed = mcpgate::tls::diagnose::Cert::parse(&l.der).unwrap();
    assert!(!parsed.subject.is_empty());
    let gate = serve_chain(
        &dir,
        &format!("{}{}", l.cert_pem, inter.issued.cert_pem),
        &l.key_pem,
        "",
    );
    connect_once(
        &[
            &url(&gate, "127.0.0.1"),
            "--ca",
            &ca_file(&dir, "root.pem", &root),
        ],
        &[],
        &[],
        1,
    )
    .ok();
}

#[test]
fn plaintext_on_an_https_url_is_named() {
    let dir = TempDir::new("trust");
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  enabled: false\n{}",
        demo_upstream("")
    ));
    let e = connect_once(&[&url(&gate, "127.0.0.1")], &[], &[], 1).error();
    assert!(
        e.contains("[plaintext_on_tls_port]") && e.contains("http://"),
        "{e}"
    );
    drop(dir);
}

/// A tiny HTTPS server answering each request with `respond(path)` (raw HTTP/1.1 response).
pub(crate) async fn tiny_https(pki: &Pki, respond: fn(&str, u16) -> String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let chain = vec![rustls::pki_types::CertificateDer::from(
        pki.server.der.clone(),
    )];
    let key =
        rustls::pki_types::pem::PemObject::from_pem_slice(pki.server.key_pem.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 65536];
                let mut have = 0;
                loop {
                    let Ok(n) = tls.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    let text = String::from_utf8_lossy(&buf[..have]).to_string();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if have < head_end + 4 + len {
                        continue;
                    }
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let _ = tls.write_all(respond(&path, addr.port()).as_bytes()).await;
                    have = 0;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_https_to_http_redirect_is_refused_with_the_url_to_use() {
    let pki = Pki::new();
    let addr = tiny_https(&pki, |_, port| {
        format!("HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:{port}/mcp/\r\nContent-Length: 0\r\n\r\n")
    })
    .await;
    let ca = pki.file("server-ca.crt");
    let target = format!("https://127.0.0.1:{}/mcp", addr.port());
    let run =
        tokio::task::spawn_blocking(move || connect_once(&[&target, "--ca", &ca], &[], &[], 1))
            .await
            .unwrap();
    let e = run.error();
    let fixed = format!("https://127.0.0.1:{}/mcp/", addr.port());
    assert!(
        e.contains("[https_to_http_redirect]")
            && e.contains(&format!("http://127.0.0.1:{}/mcp/", addr.port()))
            && e.contains(&fixed)
            && e.contains("trailing-slash"),
        "{e}"
    );
}

#[tokio::test]
async fn a_same_origin_redirect_is_followed_and_a_404_is_called_a_404() {
    let pki = Pki::new();
    let addr = tiny_https(&pki, |path, _| match path {
        "/mcp" => "HTTP/1.1 308 Permanent Redirect\r\nLocation: /mcp/\r\nContent-Length: 0\r\n\r\n".to_string(),
        "/mcp/" => {
            let body = json!({"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"behind-redirect","version":"1"}}}).to_string();
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: s1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_string(),
    })
    .await;
    let ca = pki.file("server-ca.crt");
    let port = addr.port();
    let (c1, c2) = (ca.clone(), ca);
    let run = tokio::task::spawn_blocking(move || {
        connect_once(
            &[
                &format!("https://127.0.0.1:{port}/mcp"),
                "--ca",
                &c1,
                "--transport",
                "http",
            ],
            &[],
            &[],
            1,
        )
    })
    .await
    .unwrap();
    assert_eq!(run.ok()["result"]["serverInfo"]["name"], "behind-redirect");
    let run = tokio::task::spawn_blocking(move || {
        connect_once(
            &[
                &format!("https://127.0.0.1:{port}/wrong"),
                "--ca",
                &c2,
                "--transport",
                "http",
            ],
            &[],
            &[],
            1,
        )
    })
    .await
    .unwrap();
    let e = run.error();
    assert!(
        e.contains("404 Not Found") && !e.to_lowercase().contains("session terminated"),
        "{e}"
    );
}

/// A CONNECT proxy on loopback that counts the tunnels it opened.
async fn connect_proxy() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn https_proxy_tunnels_and_no_proxy_bypasses() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let (proxy, count) = connect_proxy().await;
    let target = url(&gate, "localhost");
    let ca = pki.file("server-ca.crt");
    let proxy_url = format!("http://{proxy}");
    let (t1, c1, p1) = (target.clone(), ca.clone(), proxy_url.clone());
    let run = tokio::task::spawn_blocking(move || {
        connect_once(&[&t1, "--ca", &c1], &[("HTTPS_PROXY", &p1)], &[], 1)
    })
    .await
    .unwrap();
    run.ok();
    assert!(
        count.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the connection went through the proxy"
    );
    let before = count.load(std::sync::atomic::Ordering::SeqCst);
    let run = tokio::task::spawn_blocking(move || {
        connect_once(
            &[&target, "--ca", &ca],
            &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "localhost")],
            &[],
            1,
        )
    })
    .await
    .unwrap();
    run.ok();
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "NO_PROXY bypasses the proxy"
    );
}

#[test]
fn connect_speaks_legacy_sse_and_auto_falls_back_to_it() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let ca = pki.file("server-ca.crt");
    let sse = format!("https://127.0.0.1:{}/sse", gate.addr.port());
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":20,"b":22}}});
    let init_done = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    for transport in ["sse", "auto"] {
        let run = connect_once(
            &[&sse, "--ca", &ca, "--transport", transport],
            &[],
            &[init_done.clone(), call.clone()],
            2,
        );
        run.ok();
        let answer = run.stdout.iter().find(|m| m["id"] == 2).unwrap_or_else(|| {
            panic!(
                "{transport}: no answer to the call; stderr:\n{}",
                run.stderr
            )
        });
        assert_eq!(tool_text(answer), "42", "{transport}");
    }
    // Streamable HTTP, with the session going on after initialize.
    let run = connect_once(
        &[&url(&gate, "127.0.0.1"), "--ca", &ca],
        &[],
        &[init_done, call],
        2,
    );
    assert_eq!(
        tool_text(run.stdout.iter().find(|m| m["id"] == 2).unwrap()),
        "42"
    );
}

#[test]
fn connect_reads_a_client_config_file_and_relays_server_notifications() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let alice_cert = pki.dir.write("alice.crt", &pki.client.cert_pem);
    let alice_key = pki.dir.write("alice.key", &pki.client.key_pem);
    let cfg = pki.dir.write(
        "client.yaml",
        &format!(
            "mode: client\nclient:\n  url: https://127.0.0.1:{}/mcp\n  transport: http\n  headers:\n    X-Team: platform\ntls:\n  ca_cert: {}\n  cert_file: {}\n  key_file: {}\n  server_name: localhost\n",
            gate.addr.port(),
            pki.file("server-ca.crt"),
            alice_cert.display(),
            alice_key.display()
        ),
    );
    let notify = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"notify","arguments":{"message":"hello from upstream"}}});
    let init_done = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    let run = connect_once(
        &["--config", cfg.to_str().unwrap()],
        &[],
        &[init_done, notify],
        2,
    );
    run.ok();
    assert_eq!(
        tool_text(run.stdout.iter().find(|m| m["id"] == 2).unwrap()),
        "notified"
    );
    assert!(
        run.notifications
            .iter()
            .any(|n| n["method"] == "notifications/message"
                && n["params"]["data"] == "hello from upstream"),
        "the server's log notification reaches stdout: {:?}",
        run.notifications
    );
    assert!(
        run.notifications
            .iter()
            .any(|n| n["method"] == "notifications/tools/list_changed"),
        "{:?}",
        run.notifications
    );
    // A wrong mode is refused with the key named.
    let bad = pki
        .dir
        .write("bad.yaml", "mode: server\nclient:\n  url: https://x/mcp\n");
    let out = std::process::Command::new(mcpgate_bin())
        .args(["connect", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mode"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_pin_wins_over_insecure() {
    let dir = TempDir::new("trust");
    let ss = self_signed_server(&Spec::new("box", 30).names(["127.0.0.1"])).unwrap();
    let gate = serve_chain(&dir, &ss.cert_pem, &ss.key_pem, "");
    let other = self_signed_server(&Spec::new("box", 30).names(["127.0.0.1"])).unwrap();
    let wrong_pin = mcpgate::tls::fingerprint(&other.der);
    let e = connect_once(
        &[&url(&gate, "127.0.0.1"), "--pin", &wrong_pin, "--insecure"],
        &[],
        &[],
        1,
    )
    .error();
    assert!(e.contains("[pinned_certificate_changed]"), "{e}");
}

#[tokio::test]
async fn a_response_stream_closing_unanswered_answers_with_an_error() {
    let pki = Pki::new();
    let addr = tiny_https(&pki, |_, _| {
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n"
            .to_string()
    })
    .await;
    let ca = pki.file("server-ca.crt");
    let target = format!("https://127.0.0.1:{}/mcp", addr.port());
    let run = tokio::task::spawn_blocking(move || {
        connect_once(&[&target, "--ca", &ca, "--transport", "http"], &[], &[], 1)
    })
    .await
    .unwrap();
    let e = run.error();
    assert!(
        e.contains("closed the response stream before answering"),
        "{e}"
    );
}

#[test]
fn connect_sends_a_bearer_token_from_the_environment_and_custom_headers() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}auth:\n  tokens: [\"connect-token-123456\"]\n{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let ca = pki.file("server-ca.crt");
    let target = url(&gate, "127.0.0.1");
    let refused = connect_once(&[&target, "--ca", &ca], &[], &[], 1).error();
    assert!(
        refused.contains("401") && refused.contains("--bearer-env"),
        "{refused}"
    );
    connect_once(
        &[&target, "--ca", &ca, "--bearer-env", "E2E_CONNECT_TOKEN"],
        &[("E2E_CONNECT_TOKEN", "connect-token-123456")],
        &[],
        1,
    )
    .ok();
    connect_once(
        &[
            &target,
            "--ca",
            &ca,
            "--header",
            "Authorization: Bearer connect-token-123456",
        ],
        &[],
        &[],
        1,
    )
    .ok();
}
