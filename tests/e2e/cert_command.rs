//! `mcpgate cert`: what it makes is accepted by openssl and by mcpgate's own serve and
//! connect, including an mTLS session with a `cert client` certificate.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

fn cert(data: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(mcpgate_bin())
        .arg("cert")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cert {args:?}: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn certificates_from_the_cert_command_serve_mtls_and_pass_openssl() {
    let dir = TempDir::new("cert");
    let data = dir.path("data");
    let printed = cert(&data, &["ca"]);
    assert!(
        printed.contains("client_ca_file:") && printed.contains("--ca"),
        "{printed}"
    );
    let printed = cert(&data, &["server", "localhost", "127.0.0.1"]);
    assert!(
        printed.contains("cert_file:") && printed.contains("key_file:"),
        "{printed}"
    );
    cert(&data, &["client", "alice"]);
    cert(
        &data,
        &[
            "client",
            "bob",
            "--rsa",
            "--out",
            dir.path("rsa").to_str().unwrap(),
        ],
    );
    for key in ["ca.key", "localhost.key", "client-alice.key"] {
        let mode = std::fs::metadata(data.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key} must be private");
    }
    let verify = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(data.join("ca.crt"))
        .arg(data.join("localhost.crt"))
        .arg(data.join("client-alice.crt"))
        .arg(dir.path("rsa/client-bob.crt"))
        .output()
        .expect("openssl must be installed (scripts/install-deps.sh)");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  client_auth: verify\n{}",
        data.join("localhost.crt").display(),
        data.join("localhost.key").display(),
        data.join("ca.crt").display(),
        demo_upstream("")
    ));
    let url = format!("https://127.0.0.1:{}/mcp", gate.addr.port());
    let ca = data.join("ca.crt");
    let run = connect_once(
        &[
            &url,
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            data.join("client-alice.crt").to_str().unwrap(),
            "--key",
            data.join("client-alice.key").to_str().unwrap(),
        ],
        &[],
        &[],
        1,
    );
    run.ok();
    assert!(
        gate.wait_log("CN=alice", std::time::Duration::from_secs(5)),
        "{}",
        gate.logs()
    );

    let bundle = dir.path("bundle.pem");
    cert(&data, &["bundle", "--out", bundle.to_str().unwrap()]);
    let text = std::fs::read_to_string(&bundle).unwrap();
    let dev_ca = std::fs::read_to_string(data.join("ca.crt")).unwrap();
    assert!(
        text.contains(dev_ca.trim()),
        "the bundle holds the development CA"
    );
    // The bundle works as SSL_CERT_FILE for a client with no other configuration.
    let run = connect_once(
        &[
            &url,
            "--cert",
            data.join("client-alice.crt").to_str().unwrap(),
            "--key",
            data.join("client-alice.key").to_str().unwrap(),
        ],
        &[("SSL_CERT_FILE", bundle.to_str().unwrap())],
        &[],
        1,
    );
    run.ok();
}
