//! Bad config is an error naming the key, the value and the fix; `--check-config` binds
//! nothing; every shipped example loads.

use std::process::Command;

use crate::support::*;

fn check(yaml: &str) -> (bool, String) {
    let dir = TempDir::new("cfg");
    let path = dir.write("c.yaml", yaml);
    let out = Command::new(mcpgate_bin())
        .args(["serve", "--check-config", "--config"])
        .arg(&path)
        .env("MCPGATE_DATA_DIR", dir.path("data"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unknown_keys_name_their_path() {
    let (ok, text) = check("server:\n  listen: 127.0.0.1:0\n  lisen: x\n");
    assert!(!ok);
    assert!(text.contains("server") && text.contains("lisen"), "{text}");
    let (ok, text) =
        check("mcp_servers:\n  a:\n    command: /bin/cat\n    tls:\n      ca_crt: x\n");
    assert!(!ok);
    assert!(
        text.contains("mcp_servers.a.tls") && text.contains("ca_crt"),
        "{text}"
    );
}

#[test]
fn old_tls_versions_are_refused_with_an_explanation() {
    let (ok, text) = check("tls:\n  min_version: \"1.0\"\n");
    assert!(!ok);
    assert!(
        text.contains("tls.min_version") && text.contains("RFC 8996") && text.contains("hint:"),
        "{text}"
    );
}

#[test]
fn an_unknown_cipher_suite_lists_the_valid_ones() {
    let pki = Pki::new();
    let (ok, text) = check(&format!(
        "{}{}",
        pki.tls_block("  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
        demo_upstream("")
    ));
    assert!(!ok);
    assert!(
        text.contains("tls.cipher_suites.0")
            && text.contains("TLS_AES_128_GCM_SHA256")
            && text.contains("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        "{text}"
    );
}

#[test]
fn an_unknown_curve_lists_the_valid_ones() {
    let pki = Pki::new();
    let (ok, text) = check(&format!(
        "{}{}",
        pki.tls_block("  curve_preferences: [brainpool]\n"),
        demo_upstream("")
    ));
    assert!(!ok);
    assert!(
        text.contains("tls.curve_preferences.0")
            && text.contains("X25519MLKEM768")
            && text.contains("P-384"),
        "{text}"
    );
}

#[test]
fn unreadable_files_name_the_key_and_path() {
    let (ok, text) =
        check("tls:\n  cert_file: /nonexistent/server.crt\n  key_file: /nonexistent/server.key\n");
    assert!(!ok);
    assert!(
        text.contains("tls.cert_file") && text.contains("/nonexistent/server.crt"),
        "{text}"
    );
}

#[test]
fn verify_without_a_client_ca_is_an_error() {
    let (ok, text) = check("tls:\n  client_auth: verify\n");
    assert!(!ok);
    assert!(text.contains("tls.client_ca_file"), "{text}");
}

#[test]
fn plaintext_off_loopback_needs_the_insecure_flag() {
    let (ok, text) = check("server:\n  listen: 0.0.0.0:0\ntls:\n  enabled: false\n");
    assert!(!ok);
    assert!(text.contains("insecure_allow_plaintext"), "{text}");
}

#[test]
fn a_missing_environment_variable_is_named() {
    let (ok, text) =
        check("auth:\n  type: bearer\n  bearer:\n    tokens: [\"${MCPGATE_E2E_SURELY_UNSET}\"]\n");
    assert!(!ok);
    assert!(
        text.contains("auth.bearer.tokens.0") && text.contains("MCPGATE_E2E_SURELY_UNSET"),
        "{text}"
    );
}

#[test]
fn a_missing_command_is_named() {
    let (ok, text) = check("mcp_servers:\n  tools:\n    command: surely-not-a-command-xyz\n");
    assert!(!ok);
    assert!(
        text.contains("mcp_servers.tools.command") && text.contains("surely-not-a-command-xyz"),
        "{text}"
    );
}

#[test]
fn check_config_accepts_a_good_config_without_binding() {
    // Port 1 would need privileges to bind: --check-config must not try.
    let (ok, text) = check("server:\n  listen: 127.0.0.1:1\n");
    assert!(ok, "{text}");
    assert!(text.contains("config OK"), "{text}");
}

#[test]
fn every_example_config_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        // SAFETY-free env: examples use ${VAR:-default} so they load without secrets.
        let raw =
            mcpgate::config::parse_raw(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        mcpgate::config::resolve(raw, Some(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    assert!(
        seen >= 3,
        "expected the shipped examples in {}",
        dir.display()
    );
}

#[test]
fn listener_tls_settings_with_tls_disabled_are_refused_not_ignored() {
    let (ok, text) =
        check("tls:\n  enabled: false\n  client_auth: verify\n  client_ca_file: /x.pem\n");
    assert!(!ok);
    assert!(
        text.contains("tls.client_ca_file") || text.contains("tls.client_auth"),
        "{text}"
    );
    assert!(text.contains("tls.enabled is false"), "{text}");
}

#[test]
fn a_relative_sqlite_registry_path_is_relative_to_the_config_file() {
    let at = std::path::Path::new("/etc/mcpgate/gateway.yaml");
    let resolve = |url: &str| {
        let raw = mcpgate::config::parse_raw(&format!("database:\n  url: {url}\n")).unwrap();
        mcpgate::config::resolve(raw, Some(at))
            .unwrap()
            .database_url
    };
    assert_eq!(
        resolve("sqlite:reg.db").as_deref(),
        Some("sqlite:/etc/mcpgate/reg.db")
    );
    assert_eq!(
        resolve("sqlite:///var/lib/reg.db").as_deref(),
        Some("sqlite:///var/lib/reg.db")
    );
    let refused = mcpgate::config::resolve(
        mcpgate::config::parse_raw("database:\n  url: mysql://x/y\n").unwrap(),
        Some(at),
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("database.url"), "{refused}");
}
