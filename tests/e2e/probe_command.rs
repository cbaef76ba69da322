//! `mcpgate probe`: each error class gives its exit code, verdict, trust source and fix; the
//! printed fix makes a second probe pass; notes flag what other clients will reject.

use std::process::Command;

use mcpgate::tls::devca::{Authority, Spec, self_signed_server};
use serde_json::Value;

use crate::support::*;

fn probe(args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut cmd = Command::new(mcpgate_bin());
    cmd.arg("probe")
        .args(args)
        .args(["--json", "--timeout", "10s"]);
    for k in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "SSL_VERIFY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "probe --json is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn serve(dir: &TempDir, chain: &str, key: &str, extra: &str) -> Gate {
    let c = dir.write("p.crt", chain);
    let k = dir.write("p.key", key);
    Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {}\n  key_file: {}\n{extra}{}",
        c.display(),
        k.display(),
        demo_upstream("")
    ))
}

fn url(g: &Gate) -> String {
    format!("https://127.0.0.1:{}/mcp", g.addr.port())
}

#[test]
fn a_healthy_endpoint_reports_chain_transport_server_and_tools() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let (code, r) = probe(&[&url(&gate), "--ca", &pki.file("server-ca.crt")], &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["tls"]["verified"], true);
    assert_eq!(r["tls"]["chain"][0]["subject"], "CN=localhost");
    assert_eq!(r["tls"]["chain"][0]["key_type"], "ECDSA P-256");
    assert_eq!(r["http"]["transport"], "streamable_http");
    assert_eq!(r["http"]["server_name"], "mcpgate-demo");
    assert_eq!(r["http"]["tools"], 7);
    assert!(r["trust_source"].as_str().unwrap().contains("tls.ca_cert"));
    // The text form says the same to a person.
    let out = Command::new(mcpgate_bin())
        .args(["probe", &url(&gate), "--ca", &pki.file("server-ca.crt")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("verdict: OK") && text.contains("mcpgate-demo") && text.contains("sha256:"),
        "{text}"
    );
}

#[test]
fn each_fixable_failure_prints_a_fix_that_makes_the_next_probe_pass() {
    let dir = TempDir::new("probe");
    // Unknown issuer: fixed by adding the CA.
    let ca = Authority::new_root(&Spec::new("Probe Root", 30)).unwrap();
    let ca_path = dir.write("ca.pem", &ca.issued.cert_pem);
    let leaf = ca
        .server(&Spec::new("upstream", 30).names(["127.0.0.1", "mcp.internal.example"]))
        .unwrap();
    let gate = serve(&dir, &leaf.cert_pem, &leaf.key_pem, "");
    let (code, r) = probe(&[&url(&gate)], &[]);
    assert_eq!(
        (code, r["verdict"]["class"].as_str().unwrap()),
        (10, "unknown_issuer"),
        "{r:#}"
    );
    assert!(r["fix"][0].as_str().unwrap().contains("ca_cert"), "{r:#}");
    assert_eq!(
        r["tls"]["chain"][0]["issuer"], "CN=Probe Root",
        "the chain is shown although verification failed"
    );
    assert_eq!(
        probe(&[&url(&gate), "--ca", ca_path.to_str().unwrap()], &[]).0,
        0
    );

    // Name mismatch: fixed by the server_name the fix names.
    let named = ca
        .server(&Spec::new("upstream", 30).names(["mcp.internal.example"]))
        .unwrap();
    drop(gate);
    let gate = serve(&dir, &named.cert_pem, &named.key_pem, "");
    let (code, r) = probe(&[&url(&gate), "--ca", ca_path.to_str().unwrap()], &[]);
    assert_eq!(code, 16, "{r:#}");
    let line = r["fix"][0].as_str().unwrap();
    let name = line.split("server_name: ").nth(1).unwrap();
    assert_eq!(name, "mcp.internal.example");
    assert_eq!(
        probe(
            &[
                &url(&gate),
                "--ca",
                ca_path.to_str().unwrap(),
                "--server-name",
                name
            ],
            &[]
        )
        .0,
        0
    );

    // Self-signed: fixed by pinning the printed fingerprint.
    let ss = self_signed_server(&Spec::new("box", 30).names(["127.0.0.1"])).unwrap();
    drop(gate);
    let gate = serve(&dir, &ss.cert_pem, &ss.key_pem, "");
    let (code, r) = probe(&[&url(&gate)], &[]);
    assert_eq!(code, 12, "{r:#}");
    let pin_line = r["fix"][0].as_str().unwrap();
    let fp = pin_line.split('"').nth(1).unwrap().to_string();
    assert_eq!(probe(&[&url(&gate), "--pin", &fp], &[]).0, 0);
    // ...and the pin changing is its own class.
    let other = self_signed_server(&Spec::new("box", 30).names(["127.0.0.1"])).unwrap();
    drop(gate);
    let gate = serve(&dir, &other.cert_pem, &other.key_pem, "");
    assert_eq!(probe(&[&url(&gate), "--pin", &fp], &[]).0, 13);

    // Client certificate required: fixed by cert_file/key_file.
    let pki = Pki::new();
    drop(gate);
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(&format!(
            "  client_ca_file: {}\n  client_auth: verify\n",
            pki.file("client-ca.crt")
        )),
        demo_upstream("")
    ));
    let (code, r) = probe(&[&url(&gate), "--ca", &pki.file("server-ca.crt")], &[]);
    assert_eq!(code, 17, "{r:#}");
    assert!(r["fix"].to_string().contains("cert_file"), "{r:#}");
    let c = pki.dir.write("alice.crt", &pki.client.cert_pem);
    let k = pki.dir.write("alice.key", &pki.client.key_pem);
    assert_eq!(
        probe(
            &[
                &url(&gate),
                "--ca",
                &pki.file("server-ca.crt"),
                "--cert",
                c.to_str().unwrap(),
                "--key",
                k.to_str().unwrap()
            ],
            &[]
        )
        .0,
        0
    );
}

#[test]
fn unfixable_classes_have_their_own_exit_codes() {
    let dir = TempDir::new("probe");
    let ca = Authority::new_root(&Spec::new("Root", 30)).unwrap();
    let ca_path = dir.write("ca.pem", &ca.issued.cert_pem);
    let mut old = Spec::new("upstream", 0).names(["127.0.0.1"]);
    old.not_before = time::Duration::days(-5);
    old.not_after = time::Duration::days(-1);
    let expired = ca.server(&old).unwrap();
    let gate = serve(&dir, &expired.cert_pem, &expired.key_pem, "");
    let (code, r) = probe(&[&url(&gate), "--ca", ca_path.to_str().unwrap()], &[]);
    assert_eq!(code, 14, "{r:#}");
    assert!(r["notes"].to_string().contains("expired"), "{r:#}");

    let plain = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  enabled: false\n{}",
        demo_upstream("")
    ));
    assert_eq!(probe(&[&url(&plain)], &[]).0, 20);
    let port = plain.addr.port();
    drop(plain);
    drop(gate);
    assert_eq!(
        probe(&[&format!("https://127.0.0.1:{port}/mcp")], &[]).0,
        24,
        "connection refused"
    );

    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}auth:\n  tokens: [\"probe-secret-token\"]\n{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let (code, r) = probe(&[&url(&gate), "--ca", &pki.file("server-ca.crt")], &[]);
    assert_eq!(code, 28, "{r:#}");
    assert!(
        r["verdict"]["summary"].as_str().unwrap().contains("401")
            && r["verdict"]["hint"].as_str().unwrap().contains("bearer"),
        "{r:#}"
    );
}

#[test]
fn notes_flag_what_other_clients_reject() {
    let dir = TempDir::new("probe");
    let mut rs = Spec::new("No AKI Root", 30);
    rs.authority_key_id = false;
    let root = Authority::new_root(&rs).unwrap();
    let mut is = Spec::new("No AKI Issuing", 30);
    is.authority_key_id = false;
    let inter = root.intermediate(&is).unwrap();
    // A leaf expiring in 10 days, with no SANs, sent with its root included.
    let mut ls = Spec::new("upstream", 10);
    ls.authority_key_id = false;
    let leaf = inter.server(&ls).unwrap();
    let gate = serve(
        &dir,
        &format!(
            "{}{}{}",
            leaf.cert_pem, inter.issued.cert_pem, root.issued.cert_pem
        ),
        &leaf.key_pem,
        "",
    );
    let ca = dir.write("root.pem", &root.issued.cert_pem);
    let (_, r) = probe(
        &[
            &url(&gate),
            "--ca",
            ca.to_str().unwrap(),
            "--server-name",
            "upstream",
        ],
        &[],
    );
    let notes = r["notes"].to_string();
    for want in [
        "Authority Key Identifier",
        "Python 3.13",
        "Subject Alternative Names",
        "expires in",
        "includes its root",
    ] {
        assert!(notes.contains(want), "missing note {want:?}: {notes}");
    }
    assert_eq!(r["tls"]["chain"].as_array().unwrap().len(), 3);
}

#[test]
fn incomplete_chain_and_not_yet_valid_have_their_verdicts_and_the_trust_source_is_named() {
    let dir = TempDir::new("probe");
    let root = Authority::new_root(&Spec::new("Public Root", 30)).unwrap();
    let inter = root
        .intermediate(&Spec::new("Public Issuing CA", 30))
        .unwrap();
    let mut spec = Spec::new("upstream", 30).names(["127.0.0.1"]);
    spec.ca_issuers_url = Some("http://pki.example/issuing.crt".into());
    let leaf = inter.server(&spec).unwrap();
    let root_file = dir.write("root.pem", &root.issued.cert_pem);
    let gate = serve(&dir, &leaf.cert_pem, &leaf.key_pem, "");
    let (code, r) = probe(
        &[&url(&gate)],
        &[("SSL_CERT_FILE", root_file.to_str().unwrap())],
    );
    assert_eq!(
        (code, r["verdict"]["class"].as_str().unwrap()),
        (11, "incomplete_chain"),
        "{r:#}"
    );
    assert!(
        r["trust_source"]
            .as_str()
            .unwrap()
            .starts_with("SSL_CERT_FILE"),
        "{r:#}"
    );
    // The fix is on the server: send the chain. Then the same probe passes.
    drop(gate);
    let gate = serve(
        &dir,
        &format!("{}{}", leaf.cert_pem, inter.issued.cert_pem),
        &leaf.key_pem,
        "",
    );
    assert_eq!(
        probe(
            &[&url(&gate)],
            &[("SSL_CERT_FILE", root_file.to_str().unwrap())]
        )
        .0,
        0
    );

    let mut future = Spec::new("upstream", 30).names(["127.0.0.1"]);
    future.not_before = time::Duration::days(3);
    let early = root.server(&future).unwrap();
    drop(gate);
    let gate = serve(&dir, &early.cert_pem, &early.key_pem, "");
    let (code, r) = probe(&[&url(&gate), "--ca", root_file.to_str().unwrap()], &[]);
    assert_eq!(
        (code, r["verdict"]["class"].as_str().unwrap()),
        (15, "not_yet_valid"),
        "{r:#}"
    );
    assert!(
        r["trust_source"].as_str().unwrap().contains("tls.ca_cert"),
        "{r:#}"
    );
}
