//! The stateless bridge: 2026-07-28 requests (no session, no initialize) carried to an
//! upstream that speaks a 2025 revision.
//!
//! Each router keeps one upstream session for them, opened on the first such request: mcpgate
//! initializes it itself (as 2025-11-25, with no client capabilities, since a 2026-07-28 client
//! takes no server requests) and remembers the upstream's answer for `server/discover`. Every
//! request then goes through it under an id of mcpgate's own, so requests from many clients
//! never collide. A request whose HTTP exchange ends before its answer (the client closed the
//! stream) is cancelled upstream with `notifications/cancelled`, as the revision asks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::session::{Flavor, Session, stream_channel};
use super::{CreateError, Router};
use crate::jsonrpc::{self, Kind, code};

/// The revision the bridge speaks to the upstream.
pub const UPSTREAM_VERSION: &str = crate::transport::stateless::LATEST_SESSION_VERSION;

pub struct Bridge {
    session: Arc<Session>,
    /// The upstream's `initialize` result: capabilities, serverInfo, instructions.
    pub init: Value,
    next_id: AtomicU64,
}

impl Router {
    /// The bridge session, opened and initialized on first use.
    pub async fn bridge(&self, timeout: Duration) -> Result<Arc<Bridge>, CreateError> {
        let mut slot = self.bridge.lock().await;
        if let Some(b) = slot.as_ref() {
            return Ok(b.clone());
        }
        let link = self.link().await?;
        let session = Session::new("stateless-bridge".into(), Flavor::Streamable, None, link);
        let bridge = Bridge {
            session,
            init: Value::Null,
            next_id: AtomicU64::new(1),
        };
        let params = json!({
            "protocolVersion": UPSTREAM_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")},
        });
        let answer = bridge.call("initialize", params, timeout, None).await;
        let Some(result) = answer.get("result").filter(|r| r.is_object()).cloned() else {
            bridge.session.close();
            let why = answer
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no result");
            return Err(CreateError::Upstream(format!(
                "upstream {:?} refused mcpgate's initialize for 2026-07-28 clients: {why}",
                self.upstream_name
            )));
        };
        bridge.session.send(jsonrpc::notification(
            "notifications/initialized",
            json!({}),
        ));
        let bridge = Arc::new(Bridge {
            init: result,
            ..bridge
        });
        *slot = Some(bridge.clone());
        Ok(bridge)
    }

    /// Forgets a bridge whose upstream failed, so the next request opens a new one.
    pub async fn drop_bridge(&self, failed: &Arc<Bridge>) {
        let mut slot = self.bridge.lock().await;
        if slot.as_ref().is_some_and(|b| Arc::ptr_eq(b, failed)) {
            tracing::info!(upstream = %self.upstream_name, "the 2026-07-28 bridge session failed; the next request opens a new one");
            *slot = None;
            failed.session.close();
        }
    }

    /// Closes the bridge session (shutdown, or the router retired).
    pub(super) fn close_bridge(&self) {
        if let Ok(mut slot) = self.bridge.try_lock()
            && let Some(b) = slot.take()
        {
            b.session.close();
        }
    }
}

impl Bridge {
    /// Sends one request upstream and waits for its response frame (with mcpgate's id; the
    /// caller puts its client's back). Notifications tied to the request (progress, log
    /// messages) go to `notes` when given. A server-to-client request arriving meanwhile is
    /// refused: the 2026-07-28 revision has no way to deliver it.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
        notes: Option<&mpsc::Sender<Value>>,
    ) -> Value {
        let id = Value::String(format!(
            "mcpgate-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        ));
        let key = jsonrpc::id_key(&id);
        let (tx, mut rx) = stream_channel();
        if self
            .session
            .add_waiters(std::iter::once(&key), &tx)
            .is_err()
        {
            return jsonrpc::error(id, code::INTERNAL_ERROR, "mcpgate reused a bridge id");
        }
        drop(tx);
        let mut pending = Pending {
            session: &self.session,
            id: id.clone(),
            key,
            done: false,
        };
        self.session
            .send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(f)) => match jsonrpc::kind(&f) {
                    Kind::Response => {
                        pending.done = true;
                        return f;
                    }
                    Kind::Request => self.refuse_server_request(&f),
                    Kind::Notification => {
                        if let Some(n) = notes {
                            let _ = n.send(f).await;
                        }
                    }
                    Kind::Invalid => {}
                },
                Ok(None) => {
                    pending.done = true;
                    return jsonrpc::error(
                        id,
                        code::UPSTREAM_UNAVAILABLE,
                        "the upstream session closed before it answered",
                    );
                }
                Err(_) => {
                    return jsonrpc::error(
                        id,
                        code::UPSTREAM_TIMEOUT,
                        format!(
                            "upstream did not answer within {}s (server.request_timeout)",
                            timeout.as_secs_f64()
                        ),
                    );
                }
            }
        }
    }

    fn refuse_server_request(&self, request: &Value) {
        let method = jsonrpc::method(request).unwrap_or("");
        tracing::warn!(
            "the upstream sent {method:?} to a 2026-07-28 client, which cannot take server requests; refused"
        );
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        self.session.send(jsonrpc::error(
            id,
            code::METHOD_NOT_FOUND,
            format!("mcpgate: the client speaks MCP 2026-07-28, which has no server-to-client requests ({method})"),
        ));
    }
}

/// A request in flight on the bridge: dropped unanswered (timeout, or the client's HTTP
/// exchange ended), it is cancelled upstream and its waiter removed.
struct Pending<'a> {
    session: &'a Session,
    id: Value,
    key: String,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.session.remove_waiter(&self.key);
        if !self.done {
            self.session.send(jsonrpc::notification(
                "notifications/cancelled",
                json!({"requestId": self.id, "reason": "mcpgate: the client closed the request"}),
            ));
        }
    }
}
