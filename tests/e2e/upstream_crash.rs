//! A child that crashes: requests in flight are answered at once with an error, the child is
//! restarted (initialize replayed), `/readyz` tells the truth, and the same session goes on.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_crash_answers_requests_in_flight_and_the_session_recovers() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let mut c = client.connect(gate.addr).await.unwrap();
    c.initialize().await;
    let mut slow = client.connect(gate.addr).await.unwrap();
    slow.session = c.session.clone();
    let in_flight =
        tokio::spawn(async move { slow.call_tool(20, "slow", json!({"seconds": 60})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let crash = c
        .call_tool(21, "crash", json!({"code": 7}))
        .await
        .response();
    assert_eq!(crash["error"]["code"], -32000, "{crash}");
    assert!(
        crash["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exited with status 7"),
        "{crash}"
    );

    let slow_reply = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("a request in flight must not hang when its child dies")
        .unwrap()
        .response();
    assert_eq!(slow_reply["id"], 20);
    assert!(
        slow_reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exited"),
        "{slow_reply}"
    );

    // The child comes back, with initialize replayed, and the session works again.
    let mut recovered = None;
    for _ in 0..50 {
        let r = c
            .call_tool(22, "echo", json!({"text": "back"}))
            .await
            .response();
        if r.get("result").is_some() {
            recovered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        tool_text(&recovered.expect("the session recovers after the restart")),
        "back"
    );
    let ready = c.request("GET", "/readyz", None, &[]).await.unwrap().json();
    assert!(
        ready["upstreams"][0]["restarts"].as_u64().unwrap() >= 1,
        "{ready}"
    );
    assert!(
        gate.logs().contains("exited with status 7"),
        "the crash is logged"
    );
}

#[tokio::test]
async fn child_stderr_is_logged_under_the_server_name() {
    let pki = Pki::new();
    let script = pki.dir.write(
        "noisy.sh",
        "#!/bin/sh\necho 'noisy server says hi' >&2\nexec cat >/dev/null\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  noisy:\n    command: {}\n    session_mode: shared\n",
        pki.tls_block(""),
        script.display()
    ));
    assert!(
        gate.wait_log("noisy server says hi", Duration::from_secs(5)),
        "{}",
        gate.logs()
    );
    let line = gate
        .logs()
        .lines()
        .find(|l| l.contains("noisy server says hi"))
        .unwrap()
        .to_string();
    assert!(line.contains("noisy"), "{line}");
}

#[tokio::test]
async fn closing_sessions_leaves_no_child_behind() {
    let pki = Pki::new();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}{}",
        pki.tls_block(""),
        demo_upstream("")
    ));
    let client = TlsClient::trusting(&pki.server_ca.issued.cert_pem);
    let pid = gate.child.id();
    let open_session = || async {
        let mut c = client.connect(gate.addr).await.unwrap();
        c.initialize().await;
        c.request("DELETE", "/mcp", None, &[]).await.unwrap();
    };
    open_session().await;
    settle(pid).await;
    let baseline = fd_count(pid);
    for _ in 0..5 {
        open_session().await;
    }
    settle(pid).await;
    let after = fd_count(pid);
    assert!(
        after <= baseline + 2,
        "descriptors leaked: {baseline} before, {after} after five sessions"
    );
    // Children of the gateway process: none alive, none zombie, once sessions are closed.
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = children_of(pid);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "child processes left behind");
}

fn children_of(pid: u32) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command (which is in parentheses): state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            n += 1;
        }
    }
    n
}

async fn settle(pid: u32) {
    for _ in 0..50 {
        if children_of(pid) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_child_gets_its_args_env_and_working_directory() {
    let pki = Pki::new();
    let workdir = pki.dir.path("work");
    std::fs::create_dir_all(&workdir).unwrap();
    let script = pki.dir.write(
        "tiny.sh",
        "#!/bin/sh\nread line\nprintf '{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"serverInfo\":{\"name\":\"%s|%s\",\"version\":\"%s\"}}}\\n' \"$MY_VAR\" \"$1\" \"$(pwd)\"\ncat >/dev/null\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let gate = Gate::start(&format!(
        "server:\n  listen: 127.0.0.1:0\n{}mcp_servers:\n  tiny:\n    command: {}\n    args: [first-arg]\n    env:\n      MY_VAR: from-config\n    cwd: {}\n",
        pki.tls_block(""),
        script.display(),
        workdir.display()
    ));
    let mut c = TlsClient::trusting(&pki.server_ca.issued.cert_pem)
        .connect(gate.addr)
        .await
        .unwrap();
    let r = c.post(&initialize_request(1)).await.json();
    assert_eq!(
        r["result"]["serverInfo"]["name"], "from-config|first-arg",
        "{r}"
    );
    assert_eq!(
        r["result"]["serverInfo"]["version"],
        workdir.display().to_string(),
        "{r}"
    );
}
