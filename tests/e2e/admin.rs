//! The admin API and `mcpgate servers`: four kinds of upstream registered at run time and
//! served live (stdio, HTTPS under an extra CA, self-signed pinned through registration,
//! mTLS-required), one stopping without hurting the others, every operation with bad input,
//! a rotated pinned certificate failing closed until re-pinned, two replicas sharing
//! PostgreSQL, and a `kill -9` during registrations losing none.

use std::process::Command;
use std::time::{Duration, Instant};

use mcpgate::tls::devca::{Authority, Spec, self_signed_server};
use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "admin-test-token-0123456789";

/// A gateway with the admin API on, over `data` (a data dir) and extra YAML.
fn admin_gate(
    pki: &Pki,
    data: &std::path::Path,
    extra: &str,
    env: &[(&str, &str)],
) -> (Gate, String) {
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n{}admin:\n  listen: 127.0.0.1:0\n  tokens: [{TOKEN}]\n{extra}",
        pki.tls_block("")
    );
    let data = data.display().to_string();
    let mut all = vec![("MCPGATE_DATA_DIR", data.as_str())];
    all.extend_from_slice(env);
    let gate = Gate::start_with_env(&yaml, &all);
    let line = gate
        .banner_value("admin API:", Duration::from_secs(5))
        .expect("admin banner line");
    let base = line
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches("/admin/servers")
        .to_string();
    (gate, base)
}

fn port_of(base: &str) -> std::net::SocketAddr {
    base.trim_start_matches("https://").parse().unwrap()
}

/// One admin API call; returns the status and the JSON body.
async fn api(
    pki: &Pki,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(port_of(base))
        .await
        .unwrap();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let r = c
        .request(method, path, body.as_ref(), &headers)
        .await
        .unwrap();
    let v = serde_json::from_str(&r.body).unwrap_or_else(|_| json!({"raw": r.body}));
    (r.status.as_u16(), v)
}

/// `mcpgate servers ...` against the admin API.
fn cli(pki: &Pki, base: &str, args: &[&str]) -> (i32, String, String) {
    let ca = pki.file("server-ca.crt");
    let out = Command::new(mcpgate_bin())
        .args(["servers", "--admin", base, "--ca", &ca])
        .args(args)
        .env("MCPGATE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn tool_names(pki: &Pki, gate: &Gate) -> Vec<String> {
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    // A gateway with no server yet refuses initialize: that is an empty list.
    if c.try_initialize().await.status != 200 {
        return Vec::new();
    }
    let list = c
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .await
        .response();
    list["result"]["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) until `/mcp` lists a tool named `name`.
async fn wait_for_tool(pki: &Pki, gate: &Gate, name: &str, within: Duration) -> Vec<String> {
    let end = Instant::now() + within;
    loop {
        let names = tool_names(pki, gate).await;
        if names.iter().any(|n| n == name) || Instant::now() > end {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn call_echo(pki: &Pki, gate: &Gate, tool: &str) -> Value {
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    c.initialize().await;
    c.call_tool(9, tool, json!({"text": format!("hello {tool}")}))
        .await
        .response()
}

#[tokio::test]
async fn four_upstreams_registered_live_and_one_stopping() {
    let dir = TempDir::new("four");
    let w = |n: &str, t: &str| dir.write(n, t).display().to_string();
    // An HTTPS upstream under an extra CA.
    let extra_ca = Authority::new_root(&Spec::new("Extra CA", 30)).unwrap();
    let extra_leaf = extra_ca
        .server(&Spec::new("extra", 20).names(["127.0.0.1"]))
        .unwrap();
    let (eca, ecrt, ekey) = (
        w("eca.crt", &extra_ca.issued.cert_pem),
        w("e.crt", &extra_leaf.cert_pem),
        w("e.key", &extra_leaf.key_pem),
    );
    let extra = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {ecrt}\n  key_file: {ekey}\n{}",
        demo_upstream("")
    ));
    // A self-signed HTTPS upstream.
    let selfie = self_signed_server(&Spec::new("selfie", 20).names(["127.0.0.1"])).unwrap();
    let (scrt, skey) = (w("s.crt", &selfie.cert_pem), w("s.key", &selfie.key_pem));
    let selfsrv = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {scrt}\n  key_file: {skey}\n{}",
        demo_upstream("")
    ));
    // An HTTPS upstream that requires a client certificate.
    let m_ca = Authority::new_root(&Spec::new("mTLS CA", 30)).unwrap();
    let m_leaf = m_ca
        .server(&Spec::new("mtls", 20).names(["127.0.0.1"]))
        .unwrap();
    let m_client = m_ca.client(&Spec::new("gateway", 20)).unwrap();
    let (mca, mcrt, mkey) = (
        w("mca.crt", &m_ca.issued.cert_pem),
        w("m.crt", &m_leaf.cert_pem),
        w("m.key", &m_leaf.key_pem),
    );
    let (ccrt, ckey) = (
        w("c.crt", &m_client.cert_pem),
        w("c.key", &m_client.key_pem),
    );
    let mtls = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {mcrt}\n  key_file: {mkey}\n  client_ca_file: {mca}\n  client_auth: verify\n{}",
        demo_upstream("")
    ));

    let pki = Pki::new();
    let bin = mcpgate_bin();
    let (gate, base) = admin_gate(
        &pki,
        &dir.path("data"),
        &format!("mcp_servers:\n  local:\n    command: {bin}\n    args: [demo-server]\n"),
        &[],
    );

    // The extra-CA server through the CLI.
    let url = |g: &Gate| format!("https://127.0.0.1:{}/mcp", g.addr.port());
    let (code, out, err) = cli(
        &pki,
        &base,
        &["add", "extra", "--url", &url(&extra), "--ca-cert", &eca],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("registered extra (active)"), "{out}");

    // The self-signed one is refused with its fingerprint, and pinned once approved.
    let (status, refusal) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers",
        Some(json!({"name": "selfie", "url": url(&selfsrv)})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 409, "{refusal}");
    assert_eq!(refusal["error"], "self_signed_not_pinned");
    let fp = refusal["fingerprint"].as_str().unwrap().to_string();
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains(&format!("mcpgate servers trust selfie --fingerprint {fp}")),
        "{refusal}"
    );
    let (_, shown) = api(
        &pki,
        &base,
        "GET",
        "/admin/servers/selfie",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(shown["state"], "pending_trust", "{shown}");
    let (code, _, err) = cli(
        &pki,
        &base,
        &[
            "trust",
            "selfie",
            "--fingerprint",
            &"AB:".repeat(31).to_string().add_last("AB"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("not") && err.contains(&fp),
        "a wrong fingerprint is refused and the presented one shown: {err}"
    );
    let (code, out, err) = cli(
        &pki,
        &base,
        &["trust", "selfie", "--fingerprint", &fp.to_lowercase()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&fp), "{out}");

    // The mTLS one through the API, with its client certificate.
    let (status, created) = api(&pki, &base, "POST", "/admin/servers", Some(json!({"name": "mtls", "url": url(&mtls), "tls": {"ca_cert": mca, "cert_file": ccrt, "key_file": ckey}})), Some(TOKEN)).await;
    assert_eq!(status, 201, "{created}");

    // All four, live, without a restart; each called.
    let names = wait_for_tool(&pki, &gate, "mtls__echo", Duration::from_secs(5)).await;
    for t in ["local__echo", "extra__echo", "selfie__echo", "mtls__echo"] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
        let answer = call_echo(&pki, &gate, t).await;
        assert!(
            tool_text(&answer).contains(&format!("hello {t}")),
            "{t}: {answer}"
        );
    }
    let (_, tls) = api(
        &pki,
        &base,
        "GET",
        "/admin/servers/selfie/tls",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(tls["verified"], true, "{tls}");
    assert!(
        tls["trust_source"].as_str().unwrap().contains("pinned"),
        "{tls}"
    );
    assert_eq!(tls["chain"][0]["sha256"], fp.as_str());
    assert_eq!(tls["chain"][0]["self_signed"], true);
    let (_, test) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers/extra/test",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(test["ok"], true, "{test}");

    // Stop one: the others keep working; the stopped one is reported.
    drop(mtls);
    let answer = call_echo(&pki, &gate, "mtls__echo").await;
    assert!(
        answer.get("error").is_some() || answer["result"]["isError"] == true,
        "{answer}"
    );
    for t in ["local__echo", "extra__echo", "selfie__echo"] {
        let answer = call_echo(&pki, &gate, t).await;
        assert!(
            tool_text(&answer).contains(&format!("hello {t}")),
            "{t} after mtls stopped: {answer}"
        );
    }
    let (_, test) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers/mtls/test",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(test["ok"], false, "{test}");
    assert_eq!(test["verdict"]["class"], "connection_refused", "{test}");
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    let ready = c.request("GET", "/readyz", None, &[]).await.unwrap().json();
    let mtls_health = ready["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "mtls")
        .cloned()
        .unwrap_or_default();
    assert_eq!(mtls_health["state"], "failed", "{ready}");
    assert_eq!(
        ready["ready"], true,
        "the others keep the gateway ready: {ready}"
    );
    let (code, out, _) = cli(&pki, &base, &["list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("mtls") && l.contains("failed")),
        "{out}"
    );

    // Removed live: gone from new sessions.
    let (code, _, err) = cli(&pki, &base, &["remove", "extra"]);
    assert_eq!(code, 0, "{err}");
    let end = Instant::now() + Duration::from_secs(5);
    while tool_names(&pki, &gate)
        .await
        .iter()
        .any(|n| n == "extra__echo")
    {
        assert!(Instant::now() < end, "extra still served after removal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(extra);
    drop(selfsrv);
}

trait AddLast {
    fn add_last(self, s: &str) -> String;
}
impl AddLast for String {
    fn add_last(mut self, s: &str) -> String {
        self.push_str(s);
        self
    }
}

#[tokio::test]
async fn every_operation_answers_bad_input_with_a_4xx_and_a_message() {
    let dir = TempDir::new("admin-ops");
    let pki = Pki::new();
    let bin = mcpgate_bin();
    let (gate, base) = admin_gate(
        &pki,
        &dir.path("data"),
        &format!("mcp_servers:\n  local:\n    command: {bin}\n    args: [demo-server]\n"),
        &[],
    );
    let doc: Value = {
        let (s, d) = api(&pki, &base, "GET", "/admin/openapi.json", None, None).await;
        assert_eq!(s, 200);
        d
    };
    assert_eq!(doc["openapi"], "3.1.0");
    let mut exercised = std::collections::BTreeSet::new();
    let mut check = |op: &str| {
        exercised.insert(op.to_string());
    };
    let stdio = json!({"name": "tools", "command": bin, "args": ["demo-server"], "env": {"SECRET_ENV": "CANARY-ENV"}, "headers": {}});

    for (method, path) in [
        ("GET", "/admin/servers"),
        ("POST", "/admin/servers"),
        ("DELETE", "/admin/servers/x"),
    ] {
        let (s, v) = api(&pki, &base, method, path, None, None).await;
        assert_eq!(s, 401, "{method} {path}: {v}");
        let (s, _) = api(&pki, &base, method, path, None, Some("wrong")).await;
        assert_eq!(s, 401);
        assert!(v["message"].as_str().unwrap().contains("Bearer"));
    }
    let bad_bodies = [
        (json!("not an object"), "invalid_body"),
        (json!({"command": bin}), "invalid_name"),
        (json!({"name": "a__b", "command": bin}), "invalid_name"),
        (
            json!({"name": "x", "nope": 1, "command": bin}),
            "invalid_definition",
        ),
        (
            json!({"name": "x", "url": "ftp://h/mcp"}),
            "invalid_definition",
        ),
        (
            json!({"name": "x", "command": bin, "trust_fingerprint": "12"}),
            "invalid_fingerprint",
        ),
    ];
    for (body, class) in bad_bodies {
        let (s, v) = api(
            &pki,
            &base,
            "POST",
            "/admin/servers",
            Some(body.clone()),
            Some(TOKEN),
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str().unwrap_or("")),
            (400, class),
            "{body}: {v}"
        );
        assert!(!v["message"].as_str().unwrap_or("").is_empty());
    }
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(port_of(&base))
        .await
        .unwrap();
    let auth = format!("Bearer {TOKEN}");
    let r = c
        .request_raw("POST", "/admin/servers", b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 401, "no token on request_raw");
    let r = c
        .request(
            "POST",
            "/admin/servers",
            // Just over the 1 MiB limit: the rest fits in the socket buffer, so the client
            // finishes writing before the gateway's 413 closes the connection.
            Some(&json!({"name": "big", "command": "x".repeat((1 << 20) + 64)})),
            &[("authorization", &auth)],
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 413, "{}", r.body);

    let (s, v) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers",
        Some(stdio.clone()),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["definition"]["env"]["SECRET_ENV"], "<redacted>", "{v}");
    check("createServer");
    let (s, v) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers",
        Some(stdio.clone()),
        Some(TOKEN),
    )
    .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (409, "exists"), "{v}");
    let (s, v) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers",
        Some(json!({"name": "local", "command": bin})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (409, "defined_in_config"),
        "{v}"
    );

    let (s, v) = api(&pki, &base, "GET", "/admin/servers", None, Some(TOKEN)).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["local", "tools"], "{v}");
    assert!(
        !v.to_string().contains("CANARY-ENV"),
        "a secret was returned: {v}"
    );
    check("listServers");
    let (s, v) = api(
        &pki,
        &base,
        "GET",
        "/admin/servers/tools",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!((s, v["state"].as_str().unwrap()), (200, "active"), "{v}");
    assert!(!v.to_string().contains("CANARY-ENV"));
    check("getServer");
    let (s, _) = api(
        &pki,
        &base,
        "GET",
        "/admin/servers/nobody",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 404);

    let (s, v) = api(
        &pki,
        &base,
        "PUT",
        "/admin/servers/tools",
        Some(json!({"command": bin, "args": ["demo-server", "--test-tools"]})),
        Some(TOKEN),
    )
    .await;
    assert_eq!((s, v["version"].as_i64().unwrap()), (200, 2), "{v}");
    check("updateServer");
    let (s, _) = api(
        &pki,
        &base,
        "PUT",
        "/admin/servers/nobody",
        Some(json!({"command": bin})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = api(
        &pki,
        &base,
        "PUT",
        "/admin/servers/tools",
        Some(json!({"command": bin, "bad": true})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (400, "invalid_definition"),
        "{v}"
    );
    let (s, _) = api(
        &pki,
        &base,
        "PUT",
        "/admin/servers/local",
        Some(json!({"command": bin})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 409);

    let (s, v) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers/tools/test",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
    check("testServer");
    let (s, _) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers/nobody/test",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = api(
        &pki,
        &base,
        "GET",
        "/admin/servers/tools/tls",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!((s, &v["tls"]), (200, &json!(false)), "{v}");
    check("serverTls");
    let (s, _) = api(
        &pki,
        &base,
        "GET",
        "/admin/servers/nobody/tls",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers/tools/trust",
        Some(json!({})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (400, "invalid_fingerprint"),
        "{v}"
    );
    let (s, v) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers/tools/trust",
        Some(json!({"fingerprint": "AB".repeat(32)})),
        Some(TOKEN),
    )
    .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (409, "not_tls"), "{v}");
    check("trustServer");
    let (s, _) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers/nobody/trust",
        Some(json!({"fingerprint": "AB".repeat(32)})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 404);

    let (s, _) = api(
        &pki,
        &base,
        "PATCH",
        "/admin/servers/tools",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 405);
    let (s, _) = api(&pki, &base, "GET", "/admin/nothing", None, Some(TOKEN)).await;
    assert_eq!(s, 404);
    let (s, v) = api(
        &pki,
        &base,
        "DELETE",
        "/admin/servers/tools",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!((s, v["removed"].as_str().unwrap()), (200, "tools"));
    check("deleteServer");
    let (s, _) = api(
        &pki,
        &base,
        "DELETE",
        "/admin/servers/tools",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = api(
        &pki,
        &base,
        "DELETE",
        "/admin/servers/local",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 409);
    check("openapi");

    // Every operation in the document was exercised above.
    let mut documented = std::collections::BTreeSet::new();
    for (_, item) in doc["paths"].as_object().unwrap() {
        for (_, op) in item.as_object().unwrap() {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                documented.insert(id.to_string());
            }
        }
    }
    assert_eq!(documented, exercised);
    assert!(!gate.logs().contains("panicked"), "{}", gate.logs());

    // Without a token the admin API does not start.
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n{}admin:\n  listen: 127.0.0.1:0\n",
        pki.tls_block("")
    );
    let conf = dir.write("notoken.yaml", &yaml);
    let out = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&conf)
        .env("MCPGATE_DATA_DIR", dir.path("data2"))
        .env_remove("MCPGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin.tokens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn two_replicas_on_one_postgres_see_each_others_registrations() {
    let url = crate::registry::postgres_url();
    let dir = TempDir::new("replicas");
    let pki = Pki::new();
    let key = "5".repeat(64);
    let extra = format!("database:\n  url: {url}\n");
    let env = [("MCPGATE_SECRET_KEY", key.as_str())];
    let (a, base_a) = admin_gate(&pki, &dir.path("a"), &extra, &env);
    let (b, _base_b) = admin_gate(&pki, &dir.path("b"), &extra, &env);
    let name = format!("replica_{}", std::process::id());
    let _ = api(
        &pki,
        &base_a,
        "DELETE",
        &format!("/admin/servers/{name}"),
        None,
        Some(TOKEN),
    )
    .await;
    let (s, v) = api(
        &pki,
        &base_a,
        "POST",
        "/admin/servers",
        Some(json!({"name": name, "command": mcpgate_bin(), "args": ["demo-server"]})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let added = Instant::now();
    // Alone on a replica, a server is served unprefixed (other tests' rows may share the
    // database, so look for either form).
    let seen = |names: &[String]| {
        names
            .iter()
            .any(|n| n == "echo" || n == &format!("{name}__echo"))
    };
    loop {
        let names = tool_names(&pki, &b).await;
        if seen(&names) {
            break;
        }
        // A liveness bound, generous for a loaded 2-core machine; the time it took is printed
        // below (the registry is polled every 400 ms, so about half a second is typical).
        assert!(
            added.elapsed() < Duration::from_secs(10),
            "replica b never served {name}: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "replica b served the new server {:?} after the add",
        added.elapsed()
    );
    let (s, _) = api(
        &pki,
        &base_a,
        "DELETE",
        &format!("/admin/servers/{name}"),
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 200);
    drop(a);
}

#[tokio::test]
async fn kill_9_during_registrations_loses_none_that_were_acknowledged() {
    let dir = TempDir::new("kill9");
    let pki = Pki::new();
    let data = dir.path("data");
    let (mut gate, base) = admin_gate(&pki, &data, "", &[]);
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let acknowledged = acknowledged.clone();
        let ca = pki.file("server-ca.crt");
        let base = base.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                let name = format!("s{i}");
                let out = Command::new(mcpgate_bin())
                    .args([
                        "servers",
                        "--admin",
                        &base,
                        "--ca",
                        &ca,
                        "add",
                        &name,
                        "--",
                        "/bin/true",
                    ])
                    .env("MCPGATE_ADMIN_TOKEN", TOKEN)
                    .output()
                    .unwrap();
                if !out.status.success() {
                    break;
                }
                acknowledged.lock().unwrap().push(name);
            }
        })
    };
    let end = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().unwrap().len() < 15 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    gate.child.kill().unwrap(); // SIGKILL
    let _ = gate.child.wait();
    writer.join().unwrap();
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 15,
        "only {} registrations before the kill",
        acked.len()
    );

    let (_gate2, base2) = admin_gate(&pki, &data, "", &[]);
    let (s, v) = api(&pki, &base2, "GET", "/admin/servers", None, Some(TOKEN)).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for n in &acked {
        assert!(
            names.contains(&n.as_str()),
            "{n} was acknowledged but lost: {names:?}"
        );
    }
}

#[tokio::test]
async fn a_rotated_self_signed_certificate_fails_closed_until_re_pinned() {
    let dir = TempDir::new("rotate");
    let w = |n: &str, t: &str| dir.write(n, t).display().to_string();
    let serve_with = |cert: &mcpgate::tls::devca::Issued, tag: &str, port: u16| {
        let (crt, key) = (
            w(&format!("{tag}.crt"), &cert.cert_pem),
            w(&format!("{tag}.key"), &cert.key_pem),
        );
        Gate::start(&format!(
            "server:\n  listen: 127.0.0.1:{port}\ntls:\n  cert_file: {crt}\n  key_file: {key}\n{}",
            demo_upstream("")
        ))
    };
    let spec = Spec::new("rotating", 20).names(["127.0.0.1"]);
    let old = serve_with(&self_signed_server(&spec).unwrap(), "old", 0);
    let port = old.addr.port();
    let pki = Pki::new();
    let (gate, base) = admin_gate(&pki, &dir.path("data"), "", &[]);
    let url = format!("https://127.0.0.1:{port}/mcp");
    let (status, refusal) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers",
        Some(json!({"name": "rot", "url": url})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 409, "{refusal}");
    let first = refusal["fingerprint"].as_str().unwrap().to_string();
    let (code, out, err) = cli(&pki, &base, &["trust", "rot", "--fingerprint", &first]);
    assert_eq!(code, 0, "{out}{err}");
    echo_within(&pki, &gate, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("the pinned server is not served: {e}"));

    // The server comes back on the same port with a new self-signed certificate.
    drop(old);
    let new = serve_with(&self_signed_server(&spec).unwrap(), "new", port);
    let (status, report) = api(
        &pki,
        &base,
        "POST",
        "/admin/servers/rot/test",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let verdict = &report["verdict"];
    assert_eq!(verdict["class"], "pinned_certificate_changed", "{report}");
    let second = report["tls"]["chain"][0]["sha256"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("the presented chain is reported: {report}"));
    assert_ne!(first, second);
    let cause = verdict["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains(&first) && cause.contains(&second),
        "both fingerprints are named: {report}"
    );
    assert!(
        verdict["hint"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("mcpgate servers trust rot --fingerprint {second}")),
        "the re-pin command is given: {report}"
    );
    // Fail closed: a new session does not reach the rotated server.
    match try_echo(&pki, &gate).await {
        Ok(text) => {
            panic!("a changed certificate must not be used, yet the call answered {text:?}")
        }
        Err(e) => assert!(
            e.contains("pinned_certificate_changed") && e.contains(&second),
            "the caller learns the pin changed: {e}"
        ),
    }

    // Re-pinning restores service, live.
    let (code, out, err) = cli(&pki, &base, &["trust", "rot", "--fingerprint", &second]);
    assert_eq!(code, 0, "{out}{err}");
    echo_within(&pki, &gate, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("the re-pinned server is not served: {e}"));
    drop(new);
}

/// One new session calling `echo` (the only server, unprefixed): its text, or why not.
async fn try_echo(pki: &Pki, gate: &Gate) -> Result<String, String> {
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await?;
    let init = c.try_initialize().await;
    if init.status != 200 {
        return Err(format!("initialize: {} {}", init.status, init.body));
    }
    let answer = c
        .call_tool(3, "echo", json!({"text": "hello echo"}))
        .await
        .response();
    if answer.get("result").is_none() {
        return Err(answer.to_string());
    }
    let text = tool_text(&answer);
    if text.contains("hello echo") {
        Ok(text)
    } else {
        Err(answer.to_string())
    }
}

/// Retries [`try_echo`] until it answers, within a bound.
async fn echo_within(pki: &Pki, gate: &Gate, within: Duration) -> Result<String, String> {
    let end = Instant::now() + within;
    loop {
        match try_echo(pki, gate).await {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() > end => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
