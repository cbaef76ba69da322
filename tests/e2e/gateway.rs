//! The gateway: several upstreams behind one endpoint, namespaced as `<server>__<tool>`;
//! each also alone at `/servers/<name>/mcp`; one going down leaves the others working and
//! shows in /readyz.

use std::time::Duration;

use mcpgate::tls::devca::{Authority, Spec};
use serde_json::{Value, json};

use crate::support::*;

fn names(list: &Value) -> Vec<String> {
    list.pointer("/result/tools")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn many_upstreams_behind_one_endpoint() {
    // A remote upstream: another mcpgate over mTLS under its own CA.
    let dir = TempDir::new("gw");
    let back_ca = Authority::new_root(&Spec::new("Back CA", 30)).unwrap();
    let back_leaf = back_ca
        .server(&Spec::new("back", 20).names(["127.0.0.1"]))
        .unwrap();
    let gw_client = back_ca.client(&Spec::new("gateway", 20)).unwrap();
    let w = |n: &str, t: &str| dir.write(n, t).display().to_string();
    let (ca, crt, key) = (
        w("ca.crt", &back_ca.issued.cert_pem),
        w("b.crt", &back_leaf.cert_pem),
        w("b.key", &back_leaf.key_pem),
    );
    let (ccrt, ckey) = (
        w("c.crt", &gw_client.cert_pem),
        w("c.key", &gw_client.key_pem),
    );
    let back = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {crt}\n  key_file: {key}\n  client_ca_file: {ca}\n  client_auth: verify\n{}",
        demo_upstream("")
    ));

    let pki = Pki::new();
    let bin = mcpgate_bin();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  local:\n    command: {bin}\n    args: [demo-server, --test-tools]\n  shared:\n    command: {bin}\n    args: [demo-server]\n    session_mode: shared\n  remote:\n    url: https://127.0.0.1:{}/mcp\n    tls:\n      ca_cert: {ca}\n      cert_file: {ccrt}\n      key_file: {ckey}\n",
        pki.tls_block(""),
        back.addr.port()
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let mut c = client.connect(gate.addr).await.unwrap();
    let init = c.initialize().await.json();
    assert_eq!(init["result"]["serverInfo"]["name"], "mcpgate", "{init}");
    assert_eq!(init["result"]["capabilities"]["tools"]["listChanged"], true);

    let tools = names(
        &c.post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
            .await
            .response(),
    );
    for want in [
        "local__echo",
        "local__ask_client",
        "shared__add",
        "remote__slow",
    ] {
        assert!(
            tools.contains(&want.to_string()),
            "{want} missing from {tools:?}"
        );
    }
    assert_eq!(
        tool_text(
            &c.call_tool(3, "local__add", json!({"a": 1, "b": 2}))
                .await
                .response()
        ),
        "3"
    );
    assert_eq!(
        tool_text(
            &c.call_tool(4, "shared__echo", json!({"text": "via shared"}))
                .await
                .response()
        ),
        "via shared"
    );
    assert_eq!(
        tool_text(
            &c.call_tool(5, "remote__echo", json!({"text": "via mTLS"}))
                .await
                .response()
        ),
        "via mTLS"
    );
    let unknown = c.call_tool(6, "nobody__echo", json!({})).await.response();
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    // Progress from a remote upstream reaches the right request stream, with the client's token.
    let slow = c
        .post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"remote__slow","arguments":{"seconds":0.2},"_meta":{"progressToken":"gw"}}}))
        .await;
    let msgs = slow.messages();
    let progress: Vec<&Value> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 4, "{msgs:?}");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "gw")
    );
    assert_eq!(msgs.last().unwrap()["id"], 7);

    // A server's own request gets an id unique across servers; the answer goes back to it.
    let mut side = client.connect(gate.addr).await.unwrap();
    side.session = c.session.clone();
    let mut asker = client.connect(gate.addr).await.unwrap();
    asker.session = c.session.clone();
    let call = tokio::spawn(async move {
        asker
            .call_tool(8, "local__ask_client", json!({"method": "roots/list"}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = side
        .post(&json!({"jsonrpc":"2.0","id":"local/demo-1","result":{"roots":[]}}))
        .await;
    assert_eq!(r.status, 202);
    let reply = call.await.unwrap();
    assert!(
        reply
            .messages()
            .iter()
            .any(|m| m["id"] == "local/demo-1" && m["method"] == "roots/list"),
        "{}",
        reply.body
    );
    assert!(
        tool_text(&reply.response()).contains("roots"),
        "{}",
        reply.body
    );

    // The same from the remote member: its request arrives on the call's response stream and
    // must still get a gateway-wide id, and the answer must reach it.
    let mut asker = client.connect(gate.addr).await.unwrap();
    asker.session = c.session.clone();
    let call = tokio::spawn(async move {
        asker
            .call_tool(9, "remote__ask_client", json!({"method": "roots/list"}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = side.post(&json!({"jsonrpc":"2.0","id":"remote/demo-1","result":{"roots":[{"uri":"file:///remote"}]}})).await;
    assert_eq!(r.status, 202);
    let reply = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the remote's request is answered, not left hanging")
        .unwrap();
    assert!(
        reply.messages().iter().any(|m| m["id"] == "remote/demo-1"),
        "{}",
        reply.body
    );
    assert!(
        tool_text(&reply.response()).contains("file:///remote"),
        "{}",
        reply.body
    );

    // Each upstream alone, unprefixed.
    let mut alone = client.connect(gate.addr).await.unwrap();
    let r = alone
        .request(
            "POST",
            "/servers/local/mcp",
            Some(&initialize_request(1)),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.json()["result"]["serverInfo"]["name"], "mcpgate-demo");
    alone.session = r
        .headers
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let listed = alone
        .request(
            "POST",
            "/servers/local/mcp",
            Some(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"})),
            &[],
        )
        .await
        .unwrap();
    assert!(names(&listed.response()).contains(&"echo".to_string()));
    let missing = alone
        .request(
            "POST",
            "/servers/nope/mcp",
            Some(&initialize_request(1)),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(missing.status, 404);

    // The remote goes down: a new session still works with the others, and /readyz names it.
    drop(back);
    let mut fresh = client.connect(gate.addr).await.unwrap();
    fresh.initialize().await;
    let tools = names(
        &fresh
            .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
            .await
            .response(),
    );
    assert!(
        tools.iter().all(|t| !t.starts_with("remote__")),
        "the remote's tools are gone: {tools:?}"
    );
    assert!(tools.contains(&"local__echo".to_string()));
    let down = fresh
        .call_tool(3, "remote__echo", json!({"text": "x"}))
        .await
        .response();
    assert!(
        down["error"]["message"]
            .as_str()
            .unwrap()
            .contains("remote"),
        "{down}"
    );
    let ready = fresh.request("GET", "/readyz", None, &[]).await.unwrap();
    assert_eq!(
        ready.status, 200,
        "the gateway stays ready while others are: {}",
        ready.body
    );
    let report = ready.json();
    let remote = report["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "remote")
        .unwrap()
        .clone();
    assert_eq!(remote["ready"], false, "{report}");
    assert!(
        remote["last_error"]
            .as_str()
            .unwrap()
            .contains("connection_refused"),
        "{report}"
    );
}

#[tokio::test]
async fn readyz_knows_broken_remotes_before_any_client_comes() {
    let dir = TempDir::new("gw-health");
    let ss = mcpgate::tls::devca::self_signed_server(&Spec::new("box", 30).names(["127.0.0.1"]))
        .unwrap();
    let (c, k) = (
        dir.write("ss.crt", &ss.cert_pem),
        dir.write("ss.key", &ss.key_pem),
    );
    let selfsigned = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\ntls:\n  cert_file: {}\n  key_file: {}\n{}",
        c.display(),
        k.display(),
        demo_upstream("")
    ));
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  local:\n    command: {}\n    args: [demo-server]\n  gone:\n    url: https://127.0.0.1:{closed_port}/mcp\n  untrusted:\n    url: https://127.0.0.1:{}/mcp\n",
        pki.tls_block(""),
        mcpgate_bin(),
        selfsigned.addr.port()
    ));
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    let mut report = Value::Null;
    for _ in 0..50 {
        let r = c.request("GET", "/readyz", None, &[]).await.unwrap();
        report = r.json();
        let errors: Vec<String> = report["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["last_error"].as_str().map(str::to_string))
            .collect();
        if errors.len() == 2 {
            assert_eq!(r.status, 200, "the stdio upstream keeps the gateway ready");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let find = |name: &str| {
        report["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(
        find("gone")["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("connection_refused"),
        "{report}"
    );
    assert!(
        find("untrusted")["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("self_signed_not_pinned"),
        "{report}"
    );
    assert_eq!(find("local")["ready"], true, "{report}");
}
