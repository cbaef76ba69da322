//! The registry: SQLite in the data directory and a real PostgreSQL on loopback (started by
//! scripts/pg-env.sh); registrations survive reopening, secrets never reach the database in
//! clear, a row that does not decrypt names its server, and `serve` merges registered
//! servers with the config file's (a name in both is an error naming both places).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mcpgate::registry::secrets::SecretKey;
use mcpgate::registry::{Location, Registry, RegistryError, State};
use serde_json::{Value, json};

use crate::support::*;

/// A definition carrying canary secrets in every secret-bearing key.
fn canary_spec(tag: &str) -> Value {
    json!({
        "url": "https://127.0.0.1:9/mcp",
        "auth_type": "bearer_token",
        "authentication_token": format!("CANARY-TOKEN-{tag}"),
        "headers": {"X-Api-Key": format!("CANARY-HEADER-{tag}")},
        "tls": {"server_name": "localhost"}
    })
}

/// The PostgreSQL URL from scripts/pg-env.sh, which installs and starts the server if needed.
pub fn postgres_url() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-env.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/pg-env.sh failed, so the PostgreSQL registry cannot be tested:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(url.starts_with("postgres://"), "pg-env.sh printed {url:?}");
    url
}

/// Create, read, update, list, remove, and reopen: the same on both backends.
async fn exercise(location: Location, key_file: &Path, tag: &str) {
    let name = format!("canary_{tag}");
    let reg = Registry::open(location.clone(), SecretKey::from_file(key_file).unwrap())
        .await
        .unwrap();
    let _ = reg.remove(&name).await;
    let before = reg.revision().await.unwrap();
    let created = reg
        .create(&name, &canary_spec(tag), State::Active)
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    assert!(matches!(
        reg.create(&name, &canary_spec(tag), State::Active).await,
        Err(RegistryError::Exists(n)) if n == name
    ));
    let mut spec = canary_spec(tag);
    spec["timeout"] = json!("5s");
    reg.update(&name, &spec, State::PendingTrust).await.unwrap();
    assert!(reg.revision().await.unwrap() >= before + 2);
    drop(reg);

    // A new process's view: everything committed is there.
    let reg = Registry::open(location.clone(), SecretKey::from_file(key_file).unwrap())
        .await
        .unwrap();
    let got = reg.get(&name).await.unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.state, State::PendingTrust);
    assert_eq!(got.spec["timeout"], "5s");
    assert_eq!(
        got.spec["authentication_token"],
        format!("CANARY-TOKEN-{tag}")
    );
    let listed: Vec<String> = reg
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.name)
        .collect();
    assert!(listed.contains(&name), "{listed:?}");

    // Another key cannot open it, and says which server and why.
    let other_dir = TempDir::new("other-key");
    let wrong = Registry::open(
        location.clone(),
        SecretKey::from_file(&other_dir.path("secret.key")).unwrap(),
    )
    .await
    .unwrap();
    let err = wrong.get(&name).await.unwrap_err().to_string();
    assert!(
        err.contains(&name) && err.contains("encrypted with key"),
        "{err}"
    );
    assert!(wrong.list().await.unwrap().iter().any(|r| r.is_err()));

    reg.remove(&name).await.unwrap();
    assert!(matches!(
        reg.get(&name).await,
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        reg.remove(&name).await,
        Err(RegistryError::NotFound(_))
    ));
    // Leave one row in place for the canary search of the files and the dump.
    reg.create(&name, &canary_spec(tag), State::Active)
        .await
        .unwrap();
}

fn assert_no_canary(bytes: &[u8], what: &str) {
    for needle in ["CANARY-TOKEN", "CANARY-HEADER", "127.0.0.1:9"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{what} holds {needle:?} in clear"
        );
    }
}

#[tokio::test]
async fn sqlite_registry_persists_and_seals_secrets() {
    let dir = TempDir::new("reg-sqlite");
    let db = dir.path("registry.db");
    exercise(
        Location::Sqlite(db.clone()),
        &dir.path("secret.key"),
        "sqlite",
    )
    .await;
    for file in ["registry.db", "registry.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path(file)) {
            assert!(file != "registry.db" || !bytes.is_empty());
            assert_no_canary(&bytes, file);
        }
    }
}

#[tokio::test]
async fn postgres_registry_persists_and_seals_secrets() {
    let url = postgres_url();
    let dir = TempDir::new("reg-pg");
    exercise(
        Location::Postgres(url.clone()),
        &dir.path("secret.key"),
        "pg",
    )
    .await;
    let dump = Command::new("pg_dump")
        .arg(&url)
        .output()
        .expect("pg_dump (PostgreSQL's client tools) must be installed");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains("mcpgate_servers"),
        "the dump has no registry table"
    );
    assert!(
        text.contains("canary_pg"),
        "the dump lacks the registered row"
    );
    assert_no_canary(&dump.stdout, "pg_dump");
}

#[tokio::test]
async fn serve_merges_registered_servers_and_refuses_a_name_in_both() {
    let dir = TempDir::new("reg-serve");
    let data = dir.path("data");
    let bin = mcpgate_bin();
    {
        let reg = Registry::open(
            Location::Sqlite(data.join("registry.db")),
            SecretKey::from_file(&data.join("secret.key")).unwrap(),
        )
        .await
        .unwrap();
        let stdio = json!({"command": bin, "args": ["demo-server"]});
        reg.create("registered", &stdio, State::Active)
            .await
            .unwrap();
        reg.create("waiting", &stdio, State::PendingTrust)
            .await
            .unwrap();
    }
    let data_env = data.display().to_string();
    let pki = Pki::new();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  local:\n    command: {bin}\n    args: [demo-server]\n",
        pki.tls_block("")
    );
    let gate = Gate::start_with_env(&yaml, &[("MCPGATE_DATA_DIR", &data_env)]);
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    c.initialize().await;
    let list = c
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .await
        .response();
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"registered__echo"), "{names:?}");
    assert!(names.contains(&"local__echo"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("waiting__")),
        "{names:?}"
    );
    let answer = c
        .call_tool(3, "registered__echo", json!({"text": "from the registry"}))
        .await
        .response();
    assert!(tool_text(&answer).contains("from the registry"), "{answer}");
    drop(c);
    drop(gate);

    // The same name in the config file and the registry: refused, naming both places.
    let clash = format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  registered:\n    command: {bin}\n    args: [demo-server]\n",
        pki.tls_block("")
    );
    let conf = dir.write("clash.yaml", &clash);
    let out = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&conf)
        .env("MCPGATE_DATA_DIR", &data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mcp_servers.registered"), "{err}");
    assert!(
        err.contains("clash.yaml") && err.contains("registry.db"),
        "{err}"
    );
    assert!(err.contains("mcpgate servers remove registered"), "{err}");
}

#[tokio::test]
async fn a_row_that_does_not_decrypt_is_named_and_the_rest_are_served() {
    let dir = TempDir::new("reg-badkey");
    let data = dir.path("data");
    let bin = mcpgate_bin();
    {
        // Written under one key...
        let reg = Registry::open(
            Location::Sqlite(data.join("registry.db")),
            SecretKey::from_file(&dir.path("old.key")).unwrap(),
        )
        .await
        .unwrap();
        reg.create(
            "sealed_away",
            &json!({"command": bin, "args": ["demo-server"]}),
            State::Active,
        )
        .await
        .unwrap();
    }
    // ...served under another (the data dir's own key file).
    let pki = Pki::new();
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  local:\n    command: {bin}\n    args: [demo-server]\n",
        pki.tls_block("")
    );
    let gate = Gate::start_with_env(&yaml, &[("MCPGATE_DATA_DIR", &data.display().to_string())]);
    assert!(
        gate.wait_log("\"sealed_away\"", Duration::from_secs(5)),
        "{}",
        gate.logs()
    );
    assert!(
        gate.logs().contains("encrypted with key"),
        "{}",
        gate.logs()
    );
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    c.initialize().await;
    let list = c
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .await
        .response();
    assert!(list.to_string().contains("\"echo\""), "{list}");
}
