//! Streamable HTTP semantics: sessions, protocol version header, JSON and SSE answers,
//! progress, server-to-client requests, cancellation, DELETE, and a shared child with ids
//! remapped.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

async fn setup(extra: &str) -> (Pki, Gate, TlsClient) {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream(extra)
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    (pki, gate, client)
}

#[tokio::test]
async fn initialize_list_and_call() {
    let (_pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    let init = c.initialize().await;
    assert_eq!(init.json()["result"]["protocolVersion"], "2025-06-18");
    let list = c
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .await;
    let names: Vec<String> = list.response()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    for want in ["echo", "add", "slow", "large"] {
        assert!(names.contains(&want.to_string()), "{names:?}");
    }
    let r = c.call_tool(3, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(tool_text(&r.response()), "5");
}

#[tokio::test]
async fn unknown_fields_pass_through_untouched() {
    let (_pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    // The demo server echoes ask_client answers verbatim; here we check a request's extra
    // params field reaches the server by having echo return the argument it was given.
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":"str-id","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"},"futureField":{"a":[1,2]}}}))
        .await;
    let resp = r.response();
    assert_eq!(
        resp["id"], "str-id",
        "the client's own id (a string) comes back"
    );
    assert_eq!(tool_text(&resp), "x");
}

#[tokio::test]
async fn session_and_version_errors_have_the_spec_statuses() {
    let (_pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    let ping = json!({"jsonrpc":"2.0","id":9,"method":"ping"});
    let r = c.post(&ping).await;
    assert_eq!(r.status, 400, "no session id: {}", r.body);
    c.session = Some("not-a-session".into());
    let r = c.post(&ping).await;
    assert_eq!(r.status, 404, "unknown session: {}", r.body);
    c.session = None;
    c.initialize().await;
    let r = c
        .request(
            "POST",
            "/mcp",
            Some(&ping),
            &[("mcp-protocol-version", "1999-01-01")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let r = c
        .request(
            "POST",
            "/mcp",
            Some(&ping),
            &[("mcp-protocol-version", "2025-03-26")],
        )
        .await
        .unwrap();
    assert_eq!(
        r.status, 200,
        "another known revision is accepted: {}",
        r.body
    );
    let r = c
        .request(
            "POST",
            "/mcp",
            Some(&ping),
            &[("mcp-protocol-version", "2025-06-18")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let batch = json!([ping.clone(), ping.clone()]);
    let r = c.post(&batch).await;
    assert_eq!(
        r.status, 400,
        "batches were removed in 2025-06-18: {}",
        r.body
    );
    let r = c
        .request("POST", "/mcp", Some(&json!({"jsonrpc":"2.0","id":1})), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = c
        .request(
            "POST",
            "/mcp",
            None,
            &[("content-type", "application/json")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "empty body is a parse error");
    assert_eq!(r.json()["error"]["code"], -32700);
}

#[tokio::test]
async fn progress_streams_as_sse_before_the_response() {
    let (_pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"slow","arguments":{"seconds":0.2},"_meta":{"progressToken":"tok"}}}))
        .await;
    assert!(r.is_sse(), "{:?}", r.headers);
    let msgs = r.messages();
    let progress: Vec<&Value> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 4, "{msgs:?}");
    assert_eq!(progress[0]["params"]["progressToken"], "tok");
    assert_eq!(msgs.last().unwrap()["id"], 5, "the response comes last");
}

#[tokio::test]
async fn a_server_request_reaches_the_client_and_its_answer_goes_back() {
    let (_pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let mut side = client.connect(gate.addr).await.unwrap();
    side.session = c.session.clone();
    let call = tokio::spawn(async move {
        c.call_tool(
            6,
            "ask_client",
            json!({"method": "sampling/createMessage", "params": {"messages": [], "maxTokens": 5}}),
        )
        .await
    });
    // The sampling request arrives on the call's SSE stream; we answer it on another connection.
    // To see it, open the GET stream instead would also work; here we poll the call's stream by
    // answering the id we know the demo uses.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = json!({"jsonrpc":"2.0","id":"demo-1","result":{"role":"assistant","content":{"type":"text","text":"sampled!"},"model":"m"}});
    let r = side.post(&answer).await;
    assert_eq!(r.status, 202);
    let reply = call.await.unwrap();
    let msgs = reply.messages();
    let asked = msgs
        .iter()
        .find(|m| m["method"] == "sampling/createMessage")
        .expect("the server request came down the call's stream");
    assert_eq!(asked["id"], "demo-1");
    assert!(
        tool_text(&reply.response()).contains("sampled!"),
        "{msgs:?}"
    );
}

#[tokio::test]
async fn client_cancellation_reaches_the_server() {
    let (_pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let mut side = client.connect(gate.addr).await.unwrap();
    side.session = c.session.clone();
    let call = tokio::spawn(async move { c.call_tool(11, "slow", json!({"seconds": 30})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = side.post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":11,"reason":"test"}})).await;
    assert_eq!(r.status, 202);
    let reply = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("cancelled call must end")
        .unwrap();
    let resp = reply.response();
    assert_eq!(resp["id"], 11);
    assert_eq!(resp["error"]["code"], -32800, "{resp}");
    // The server itself stopped the work: the demo server says so on its stderr.
    assert!(
        gate.wait_log("cancelled by the client", Duration::from_secs(5)),
        "{}",
        gate.logs()
    );
}

#[tokio::test]
async fn notifications_reach_the_get_stream() {
    let (pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    // Open the GET stream on a raw connection and read it incrementally.
    let tcp = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(
        TlsClient::trusting(&pki.server_ca.issued.cert_pem).config(),
    )
    .connect(
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        tcp,
    )
    .await
    .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nMcp-Session-Id: {}\r\n\r\n",
        c.session.clone().unwrap()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let r = c
        .call_tool(12, "notify", json!({"message": "hello stream"}))
        .await;
    assert_eq!(tool_text(&r.response()), "notified");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(seen.contains("hello stream") && seen.contains("list_changed")) {
        let n = tokio::time::timeout_at(deadline, tls.read(&mut buf))
            .await
            .expect("stream got the notifications")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // A second GET stream on the same session is refused.
    let dup = c
        .request("GET", "/mcp", None, &[("accept", "text/event-stream")])
        .await
        .unwrap();
    assert_eq!(dup.status, 409);
}

#[tokio::test]
async fn delete_ends_the_session() {
    let (_pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let r = c.request("DELETE", "/mcp", None, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"ping"}))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_shared_child_serves_sessions_with_colliding_ids() {
    let (_pki, gate, client) = setup("    session_mode: shared\n").await;
    let mut a = client.connect(gate.addr).await.unwrap();
    let mut b = client.connect(gate.addr).await.unwrap();
    a.initialize().await;
    b.initialize().await;
    // Both sessions use id 42 at the same time; each gets its own answer.
    let (ra, rb) = tokio::join!(
        a.call_tool(42, "echo", json!({"text": "from a"})),
        b.call_tool(42, "echo", json!({"text": "from b"}))
    );
    assert_eq!(tool_text(&ra.response()), "from a");
    assert_eq!(tool_text(&rb.response()), "from b");
    assert_eq!(ra.response()["id"], 42);
    let ready = a.request("GET", "/readyz", None, &[]).await.unwrap().json();
    assert_eq!(ready["upstreams"][0]["state"], "running");
}

#[tokio::test]
async fn shared_sessions_never_see_each_others_progress_or_server_requests() {
    let (_pki, gate, client) = setup("    session_mode: shared\n").await;
    let mut a = client.connect(gate.addr).await.unwrap();
    let mut b = client.connect(gate.addr).await.unwrap();
    a.initialize().await;
    b.initialize().await;
    // Both use progress token 1 at once (SDKs often use the request id as the token).
    let slow = |id: u64| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"slow","arguments":{"seconds":0.3},"_meta":{"progressToken":1}}});
    let (call_a, call_b) = (slow(1), slow(1));
    let (ra, rb) = tokio::join!(a.post(&call_a), b.post(&call_b));
    for (who, r) in [("a", ra), ("b", rb)] {
        let progress = r
            .messages()
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .count();
        assert_eq!(
            progress, 4,
            "session {who} gets exactly its own progress: {}",
            r.body
        );
        assert!(
            r.messages()
                .iter()
                .all(|m| m["method"] != "notifications/progress"
                    || m["params"]["progressToken"] == 1)
        );
    }

    // A server request made during a's call can be answered by a only.
    let mut a_side = client.connect(gate.addr).await.unwrap();
    a_side.session = a.session.clone();
    let call = tokio::spawn(async move {
        a.call_tool(2, "ask_client", json!({"method": "roots/list"}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let forged =
        json!({"jsonrpc":"2.0","id":"demo-1","result":{"roots":[{"uri":"file:///from-b"}]}});
    b.post(&forged).await;
    let honest =
        json!({"jsonrpc":"2.0","id":"demo-1","result":{"roots":[{"uri":"file:///from-a"}]}});
    a_side.post(&honest).await;
    let text = tool_text(&call.await.unwrap().response());
    assert!(
        text.contains("from-a") && !text.contains("from-b"),
        "{text}"
    );
}

#[tokio::test]
async fn a_json_only_client_gets_its_response_not_a_notification() {
    let (_pki, gate, client) = setup("").await;
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"notify","arguments":{"message":"side"}}});
    let r = c
        .request(
            "POST",
            "/mcp",
            Some(&call),
            &[("accept", "application/json")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v = r.json();
    assert_eq!(v["id"], 3, "{v}");
    assert_eq!(tool_text(&v), "notified");
}

#[tokio::test]
async fn a_server_cancelling_its_own_request_reaches_only_the_session_it_asked() {
    let (_pki, gate, client) = setup("    session_mode: shared\n").await;
    let mut a = client.connect(gate.addr).await.unwrap();
    let mut b = client.connect(gate.addr).await.unwrap();
    a.initialize().await;
    b.initialize().await;
    // b listens on its GET stream for anything that is not its own.
    let (pki_ca, addr, sid_b) = (
        _pki.server_ca.issued.cert_pem.clone(),
        gate.addr,
        b.session.clone().unwrap(),
    );
    let listener = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(TlsClient::trusting(&pki_ca).config())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let req = format!(
            "GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid_b}\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let end = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(n)) = tokio::time::timeout_at(end, tls.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = a.call_tool(5, "ask_client", json!({"method": "elicitation/create", "params": {"message": "?"}, "cancel_after_ms": 300})).await;
    let msgs = r.messages();
    let asked = msgs
        .iter()
        .find(|m| m["method"] == "elicitation/create")
        .expect("a sees the server's request");
    let cancelled = msgs
        .iter()
        .find(|m| m["method"] == "notifications/cancelled")
        .expect("a sees the server cancel it");
    assert_eq!(cancelled["params"]["requestId"], asked["id"]);
    assert_eq!(tool_text(&r.response()), "gave up waiting for the client");
    let b_saw = listener.await.unwrap();
    assert!(
        b_saw.starts_with("HTTP/1.1 200"),
        "b's GET stream was open: {b_saw}"
    );
    assert!(
        !b_saw.contains("elicitation/create") && !b_saw.contains("notifications/cancelled"),
        "b must see none of it: {b_saw}"
    );
}

#[tokio::test]
async fn an_id_already_in_flight_is_refused_and_the_first_request_still_answered() {
    let (_pki, gate, client) = setup("").await;
    let mut first = client.connect(gate.addr).await.unwrap();
    first.initialize().await;
    let mut second = client.connect(gate.addr).await.unwrap();
    second.session = first.session.clone();
    let slow = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow","arguments":{"seconds":0.5}}});
    let pending = tokio::spawn(async move { first.post(&slow).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let clash = second
        .post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"again"}}}))
        .await;
    assert_eq!(clash.status, 400, "{}", clash.body);
    let error = clash.json();
    assert_eq!(error["id"], 7);
    assert_eq!(error["error"]["code"], -32600);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already in flight"),
        "{error}"
    );
    let answer = pending.await.unwrap().response();
    assert!(answer.get("result").is_some(), "{answer}");
    // The session keeps serving.
    let again = second
        .call_tool(8, "echo", json!({"text": "after"}))
        .await
        .response();
    assert_eq!(tool_text(&again), "after");
}
