//! The stateless 2026-07-28 revision on `/mcp`, beside the 2025 sessions: requests without
//! initialize, the routing headers checked against the body, its error codes and statuses,
//! stream close as cancellation, server requests refused, and the gateway over several
//! upstreams, all bridged to 2025 stdio servers.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const V: &str = "2026-07-28";

fn start(upstreams: &str) -> (Pki, Gate, TlsClient) {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{upstreams}",
        pki.tls_block("")
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    (pki, gate, client)
}

/// A 2026-07-28 request body: `params` plus the per-request `_meta` envelope.
fn request(id: Value, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": V,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// The headers a 2026-07-28 client sends with `body`.
fn headers(body: &Value) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("mcp-protocol-version", V.to_string()),
        ("mcp-method", body["method"].as_str().unwrap().to_string()),
    ];
    let p = &body["params"];
    if let Some(n) = p["name"].as_str().or(p["uri"].as_str()) {
        h.push(("mcp-name", n.to_string()));
    }
    h
}

async fn send(c: &mut Conn, body: &Value, h: &[(&'static str, String)]) -> Reply {
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.request("POST", "/mcp", Some(body), &h)
        .await
        .expect("POST /mcp")
}

async fn call(c: &mut Conn, body: &Value) -> Reply {
    send(c, body, &headers(body)).await
}

#[tokio::test]
async fn stateless_requests_need_no_initialize_and_get_the_revisions_fields() {
    let (_pki, gate, client) = start(&demo_upstream(""));
    let mut c = client.connect(gate.addr).await.unwrap();
    let d = call(&mut c, &request(json!(1), "server/discover", json!({}))).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    let r = d.json()["result"].clone();
    assert_eq!(r["supportedVersions"], json!([V]), "{r}");
    assert!(r["capabilities"]["tools"].is_object(), "{r}");
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcpgate-demo"
    );
    assert_eq!(r["resultType"], "complete");
    assert!(
        d.headers.get("mcp-session-id").is_none(),
        "no session in 2026-07-28"
    );

    let list = call(&mut c, &request(json!(2), "tools/list", json!({}))).await;
    let r = list.json()["result"].clone();
    assert!(
        r["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo"),
        "{r}"
    );
    assert_eq!(
        (r["ttlMs"].clone(), r["cacheScope"].clone()),
        (json!(0), json!("private"))
    );
    assert_eq!(r["resultType"], "complete");

    // Two clients using the same id at once each get their own answer.
    let mut other = client.connect(gate.addr).await.unwrap();
    let a = request(
        json!(7),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "from a"}}),
    );
    let b = request(
        json!(7),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "from b"}}),
    );
    let (ra, rb) = tokio::join!(call(&mut c, &a), call(&mut other, &b));
    assert_eq!(
        (ra.json()["id"].clone(), tool_text(&ra.json())),
        (json!(7), "from a".into())
    );
    assert_eq!(tool_text(&rb.json()), "from b");

    // The 2025 handshake still works on the same endpoint.
    let mut legacy = client.connect(gate.addr).await.unwrap();
    legacy.initialize().await;
    assert_eq!(
        tool_text(
            &legacy
                .call_tool(2, "echo", json!({"text": "old"}))
                .await
                .response()
        ),
        "old"
    );
}

#[tokio::test]
async fn headers_that_disagree_with_the_body_and_unknown_versions_and_methods_are_refused() {
    let (_pki, gate, client) = start(&demo_upstream(""));
    let mut c = client.connect(gate.addr).await.unwrap();
    let echo = request(
        json!(3),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "x"}}),
    );
    let expect = |r: &Reply, status: StatusCode, code: i64| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], code, "{}", r.body);
    };

    let mut h = headers(&echo);
    h[2].1 = "add".into();
    let r = send(&mut c, &echo, &h).await;
    expect(&r, StatusCode::BAD_REQUEST, -32020);
    assert!(r.body.contains("Mcp-Name"), "{}", r.body);
    assert_eq!(r.json()["id"], 3);
    let r = send(&mut c, &echo, &headers(&echo)[..1]).await;
    expect(&r, StatusCode::BAD_REQUEST, -32020);
    assert!(r.body.contains("Mcp-Method"), "{}", r.body);
    let mut h = headers(&echo);
    h[0].1 = "2027-01-01".into();
    expect(
        &send(&mut c, &echo, &h).await,
        StatusCode::BAD_REQUEST,
        -32020,
    );
    // The name in base64, as clients send names that are not plain ASCII.
    let mut h = headers(&echo);
    h[2].1 = format!("=?base64?{}?=", mcpgate::tls::pem::base64(b"echo"));
    assert_eq!(tool_text(&send(&mut c, &echo, &h).await.json()), "x");

    let mut future = echo.clone();
    future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2027-01-01");
    let mut h = headers(&future);
    h[0].1 = "2027-01-01".into();
    let r = send(&mut c, &future, &h).await;
    expect(&r, StatusCode::BAD_REQUEST, -32022);
    assert_eq!(
        r.json()["error"]["data"],
        json!({"supported": [V], "requested": "2027-01-01"})
    );

    let r = call(&mut c, &request(json!(4), "ping", json!({}))).await;
    expect(&r, StatusCode::NOT_FOUND, -32601);
    let r = call(
        &mut c,
        &request(json!(5), "logging/setLevel", json!({"level": "debug"})),
    )
    .await;
    expect(&r, StatusCode::NOT_FOUND, -32601);
    // An unknown tool is the upstream's own error, carried as it said it.
    let r = call(
        &mut c,
        &request(json!(6), "tools/call", json!({"name": "nope"})),
    )
    .await;
    assert!(
        r.json()["error"].is_object() || r.json()["result"]["isError"] == true,
        "{}",
        r.body
    );

    let mut bare = echo.clone();
    bare["params"]["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": V});
    expect(
        &send(&mut c, &bare, &headers(&bare)).await,
        StatusCode::BAD_REQUEST,
        -32602,
    );
    let batch = json!([echo.clone()]);
    expect(
        &send(&mut c, &batch, &headers(&echo)).await,
        StatusCode::BAD_REQUEST,
        -32600,
    );

    let note =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
    let h = [
        ("mcp-protocol-version", V.to_string()),
        ("mcp-method", "notifications/cancelled".into()),
    ];
    assert_eq!(send(&mut c, &note, &h).await.status, StatusCode::ACCEPTED);
    for method in ["GET", "DELETE"] {
        let r = c
            .request(method, "/mcp", None, &[("mcp-protocol-version", V)])
            .await
            .unwrap();
        assert_eq!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}: {}",
            r.body
        );
        assert_eq!(r.headers["allow"], "POST");
    }
}

#[tokio::test]
async fn closing_the_exchange_cancels_the_request_upstream() {
    let (_pki, gate, client) = start(&demo_upstream(""));
    let slow = request(
        json!(9),
        "tools/call",
        json!({"name": "slow", "arguments": {"seconds": 30}}),
    );
    // A raw TLS stream, so closing it really closes the connection mid-request.
    let head: Vec<(String, String)> = headers(&slow)
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    post_then_hang_up(
        &client,
        gate.addr,
        &slow.to_string(),
        &head,
        Duration::from_millis(500),
    )
    .await;
    assert!(
        gate.wait_log("cancelled by the client", Duration::from_secs(10)),
        "the upstream never saw the cancellation:\n{}",
        gate.logs()
    );
    // The bridge keeps serving.
    let mut c = client.connect(gate.addr).await.unwrap();
    let echo = request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "after"}}),
    );
    assert_eq!(tool_text(&call(&mut c, &echo).await.json()), "after");
}

#[tokio::test]
async fn a_server_request_to_a_stateless_client_is_refused_with_the_reason() {
    let (_pki, gate, client) = start(&demo_upstream(""));
    let mut c = client.connect(gate.addr).await.unwrap();
    let ask = request(
        json!(1),
        "tools/call",
        json!({"name": "ask_client", "arguments": {"method": "elicitation/create", "params": {"message": "?"}}}),
    );
    let r = tokio::time::timeout(Duration::from_secs(10), call(&mut c, &ask))
        .await
        .expect("the tool call must end, not wait for an answer that cannot come");
    let text = r.body;
    assert!(
        text.contains("2026-07-28") && text.contains("elicitation/create"),
        "{text}"
    );
}

#[tokio::test]
async fn the_gateway_serves_stateless_clients_over_many_upstreams() {
    let bin = mcpgate_bin();
    let (_pki, gate, client) = start(&format!(
        "mcp_servers:\n  a:\n    command: {bin}\n    args: [demo-server]\n  b:\n    command: {bin}\n    args: [demo-server]\n    session_mode: shared\n"
    ));
    let mut c = client.connect(gate.addr).await.unwrap();
    let list = call(&mut c, &request(json!(1), "tools/list", json!({}))).await;
    let tools: Vec<String> = list.json()["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", list.body))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        tools.contains(&"a__echo".to_string()) && tools.contains(&"b__echo".to_string()),
        "{tools:?}"
    );
    let echo = request(
        json!(2),
        "tools/call",
        json!({"name": "b__echo", "arguments": {"text": "via b"}}),
    );
    assert_eq!(tool_text(&call(&mut c, &echo).await.json()), "via b");
    // One upstream alone, at its own path.
    let one = request(json!(3), "tools/list", json!({}));
    let h = headers(&one);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = c
        .request("POST", "/servers/a/mcp", Some(&one), &h)
        .await
        .unwrap();
    assert!(
        r.json()["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn progress_comes_first_on_a_stream_scoped_to_the_request() {
    let (_pki, gate, client) = start(&demo_upstream(""));
    let mut c = client.connect(gate.addr).await.unwrap();
    let mut slow = request(
        json!("p1"),
        "tools/call",
        json!({"name": "slow", "arguments": {"seconds": 0.4}}),
    );
    slow["params"]["_meta"]["progressToken"] = json!("tok");
    let r = call(&mut c, &slow).await;
    assert!(r.is_sse(), "{:?}", r.headers);
    let msgs = r.messages();
    let progress: Vec<&Value> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 4, "{msgs:?}");
    assert_eq!(progress[0]["params"]["progressToken"], "tok");
    let last = msgs.last().unwrap();
    assert_eq!(
        (last["id"].clone(), last["result"]["resultType"].clone()),
        (json!("p1"), json!("complete"))
    );
    // A client that takes JSON only gets the answer alone.
    let h = headers(&slow);
    let mut h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("accept", "application/json"));
    let r = c.request("POST", "/mcp", Some(&slow), &h).await.unwrap();
    assert_eq!(r.json()["id"], "p1", "{}", r.body);
}

#[tokio::test]
async fn a_missing_resource_is_worded_as_the_revision_asks() {
    let (_pki, gate, client) = start(&format!(
        "mcp_servers:\n  demo:\n    command: {}\n    args: [demo-server, --conformance]\n",
        mcpgate_bin()
    ));
    let mut c = client.connect(gate.addr).await.unwrap();
    let read = request(json!(1), "resources/read", json!({"uri": "test://nowhere"}));
    let r = call(&mut c, &read).await;
    let e = &r.json()["error"];
    assert_eq!(
        (e["code"].clone(), e["data"]["uri"].clone()),
        (json!(-32602), json!("test://nowhere")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_upstream_that_speaks_only_2026_07_28_is_reached_by_both_revisions() {
    let fixture = HttpFixture::start(&["--stateless-only"]);
    let (_pki, gate, client) = start(&format!(
        "mcp_servers:\n  only:\n    url: {}\n",
        fixture.url
    ));
    // A 2025 client: its session is bridged to stateless requests.
    let mut old = client.connect(gate.addr).await.unwrap();
    let init = old.initialize().await.json();
    assert_eq!(
        init["result"]["serverInfo"]["name"], "mcpgate-demo-stateless",
        "{init}"
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    let list = old
        .post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await;
    assert!(
        list.response()["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo"),
        "{}",
        list.body
    );
    assert_eq!(
        tool_text(
            &old.call_tool(3, "echo", json!({"text": "via 2025"}))
                .await
                .response()
        ),
        "via 2025"
    );
    let ping = old
        .post(&json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
        .await;
    assert_eq!(ping.response()["result"], json!({}));
    let level = old.post(&json!({"jsonrpc": "2.0", "id": 5, "method": "logging/setLevel", "params": {"level": "info"}})).await;
    let e = level.response()["error"].clone();
    assert_eq!(e["code"], -32601, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("only MCP 2026-07-28"),
        "{e}"
    );
    // A 2026-07-28 client: through the bridge, then stateless again upstream.
    let mut new = client.connect(gate.addr).await.unwrap();
    let echo = request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "via 2026"}}),
    );
    assert_eq!(tool_text(&call(&mut new, &echo).await.json()), "via 2026");
    assert!(
        gate.logs().contains("speaks only MCP 2026-07-28"),
        "{}",
        gate.logs()
    );
}
