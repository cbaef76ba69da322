//! The stdio upstream: one child process speaking newline-delimited JSON-RPC, shared by one
//! session (isolated mode) or many (shared mode).
//!
//! Every request sent to the child gets a fresh numeric id, and its progress token is replaced
//! by that id too, so sessions sharing a child never see each other's answers or progress.
//! The pending map turns the child's messages back into the client's ids and tokens. A
//! server-to-client request goes to one session, and only that session may answer it.
//!
//! When the child exits, every pending request is answered at once with a JSON-RPC error, the
//! child is restarted with backoff (see `child.rs`), and the session's `initialize` is replayed
//! before anything else reaches the new child.

mod child;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::Sink;
use super::health::{Health, State as HealthState};
use crate::config::StdioSpec;
use crate::jsonrpc::{self, Kind, code};

pub struct StdioHub {
    name: String,
    spec: StdioSpec,
    health: Arc<Health>,
    state: Mutex<State>,
    next_id: AtomicU64,
    stop: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    stdin: Option<mpsc::Sender<Bytes>>,
    pending: HashMap<u64, Pending>,
    sinks: Vec<Weak<dyn Sink>>,
    /// Server-to-client requests in flight: id key -> the one session allowed to answer.
    server_requests: HashMap<String, Weak<dyn Sink>>,
    init: Option<InitCache>,
    closed: bool,
    /// Why the child is down, while it is.
    down_reason: Option<String>,
}

struct Pending {
    /// The method and when it was sent, for the request metrics.
    method: String,
    sent: std::time::Instant,
    sink: Weak<dyn Sink>,
    original_id: Value,
    /// The client's own progress token; the child sees the upstream id in its place.
    progress: Option<Value>,
    purpose: Purpose,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Client,
    /// The first client `initialize`: its result is cached for replays and shared sessions.
    Initialize,
    /// mcpgate's own replay of `initialize` to a restarted child; the answer is swallowed.
    Replay,
}

struct InitCache {
    request: Value,
    result: Option<Value>,
    initialized_sent: bool,
}

/// Why a message could not be sent to the child.
#[derive(Debug)]
pub struct SendError(pub String);

impl StdioHub {
    /// Spawns the child and its supervisor. Fails at once if the command cannot be started.
    pub async fn start(
        name: &str,
        spec: StdioSpec,
        health: Arc<Health>,
    ) -> Result<Arc<Self>, String> {
        let (stop, _) = watch::channel(false);
        let hub = Arc::new(Self {
            name: name.to_string(),
            spec,
            health,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            stop,
        });
        let running = match hub.spawn_child() {
            Ok(c) => c,
            Err(e) => {
                hub.health.set(HealthState::Failed, Some(e.clone()));
                return Err(e);
            }
        };
        hub.health.set(HealthState::Running, None);
        tokio::spawn(hub.clone().supervise(running));
        Ok(hub)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session to receive this child's notifications and requests.
    pub fn attach(&self, sink: Weak<dyn Sink>) {
        self.lock().sinks.push(sink);
    }

    /// Forgets a session: its pending requests and server requests are dropped.
    pub fn detach(&self, sink: &Weak<dyn Sink>) {
        let mut st = self.lock();
        st.sinks
            .retain(|s| !Weak::ptr_eq(s, sink) && s.strong_count() > 0);
        st.pending.retain(|_, p| !Weak::ptr_eq(&p.sink, sink));
        st.server_requests.retain(|_, s| !Weak::ptr_eq(s, sink));
    }

    /// Stops the child (stdin closed, then killed after a grace period) and the supervisor.
    pub fn close(&self) {
        self.lock().closed = true;
        // send_replace stores the value even with no receiver yet (supervise may not have run).
        self.stop.send_replace(true);
    }

    /// Sends a client frame to the child, remapping request ids and progress tokens.
    pub fn send(&self, from: &Arc<dyn Sink>, frame: Value) -> Result<(), SendError> {
        let weak = Arc::downgrade(from);
        match jsonrpc::kind(&frame) {
            Kind::Request => self.send_request(from, weak, frame),
            Kind::Notification => self.send_notification(&weak, frame),
            Kind::Response => self.send_response(&weak, &frame),
            Kind::Invalid => Err(SendError("not a JSON-RPC 2.0 message".into())),
        }
    }

    fn send_request(
        &self,
        from: &Arc<dyn Sink>,
        weak: Weak<dyn Sink>,
        mut frame: Value,
    ) -> Result<(), SendError> {
        let mut st = self.lock();
        let is_init = jsonrpc::method(&frame) == Some("initialize");
        if is_init && let Some(result) = st.init.as_ref().and_then(|i| i.result.clone()) {
            // Shared child already initialized: answer from the cache.
            drop(st);
            let id = frame.get("id").cloned().unwrap_or(Value::Null);
            from.response(json!({"jsonrpc": "2.0", "id": id, "result": result}));
            return Ok(());
        }
        let stdin = st.stdin.clone().ok_or_else(|| self.down_error(&st))?;
        let uid = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Progress tokens are the client's choice and collide across sessions: the child sees
        // the unique upstream id instead, mapped back on the way out.
        let progress = frame
            .pointer_mut("/params/_meta/progressToken")
            .map(|t| std::mem::replace(t, json!(uid)));
        let original_id = jsonrpc::replace_id(&mut frame, json!(uid)).unwrap_or(Value::Null);
        let purpose = if is_init && st.init.is_none() {
            let mut request = frame.clone();
            if let Some(o) = request.as_object_mut() {
                o.remove("id");
            }
            st.init = Some(InitCache {
                request,
                result: None,
                initialized_sent: false,
            });
            Purpose::Initialize
        } else {
            Purpose::Client
        };
        st.pending.insert(
            uid,
            Pending {
                method: jsonrpc::method(&frame).unwrap_or("").to_string(),
                sent: std::time::Instant::now(),
                sink: weak,
                original_id,
                progress,
                purpose,
            },
        );
        if let Err(e) = write(&stdin, &frame) {
            st.pending.remove(&uid);
            return Err(e);
        }
        Ok(())
    }

    fn send_notification(&self, weak: &Weak<dyn Sink>, mut frame: Value) -> Result<(), SendError> {
        let mut st = self.lock();
        match jsonrpc::method(&frame) {
            Some("notifications/initialized") => {
                if let Some(init) = st.init.as_mut() {
                    if init.initialized_sent {
                        return Ok(()); // a shared child hears it once
                    }
                    init.initialized_sent = true;
                }
            }
            Some("notifications/cancelled") => {
                let wanted = frame.pointer("/params/requestId").map(jsonrpc::id_key);
                let found = st
                    .pending
                    .iter()
                    .find(|(_, p)| {
                        Weak::ptr_eq(&p.sink, weak)
                            && Some(jsonrpc::id_key(&p.original_id)) == wanted
                    })
                    .map(|(uid, _)| *uid);
                let Some(uid) = found else {
                    return Ok(()); // already answered: nothing to cancel
                };
                // The server need not answer a cancelled request, and the client ignores any
                // answer: forget it now, and end the client's wait for it here.
                let cancelled = st.pending.remove(&uid);
                frame["params"]["requestId"] = json!(uid);
                let stdin = st.stdin.clone().ok_or_else(|| self.down_error(&st))?;
                drop(st);
                let sent = write(&stdin, &frame);
                if let (Some(p), Some(sink)) = (cancelled, weak.upgrade()) {
                    sink.response(jsonrpc::error(
                        p.original_id,
                        code::REQUEST_CANCELLED,
                        "request cancelled by the client",
                    ));
                }
                return sent;
            }
            _ => {}
        }
        let stdin = st.stdin.clone().ok_or_else(|| self.down_error(&st))?;
        write(&stdin, &frame)
    }

    /// Answers to the server's own requests (sampling, elicitation, roots) keep their ids, and
    /// are taken only from the session the request went to.
    fn send_response(&self, weak: &Weak<dyn Sink>, frame: &Value) -> Result<(), SendError> {
        let mut st = self.lock();
        let key = frame.get("id").map(jsonrpc::id_key).unwrap_or_default();
        match st.server_requests.get(&key) {
            Some(owner) if Weak::ptr_eq(owner, weak) => {
                st.server_requests.remove(&key);
            }
            _ => {
                return Err(SendError(
                    "this response answers no request the server sent to this session".into(),
                ));
            }
        }
        let stdin = st.stdin.clone().ok_or_else(|| self.down_error(&st))?;
        write(&stdin, frame)
    }

    fn down_error(&self, st: &State) -> SendError {
        let why = st.down_reason.as_deref().unwrap_or("is not running");
        SendError(format!(
            "upstream {:?} {why}; it is being restarted, retry shortly",
            self.name
        ))
    }

    /// Queues mcpgate's own `initialize` (and `initialized`) for a restarted child.
    fn replay_initialize(&self, st: &mut State, stdin: &mpsc::Sender<Bytes>) {
        let Some((mut request, initialized)) = st
            .init
            .as_ref()
            .map(|i| (i.request.clone(), i.initialized_sent))
        else {
            return;
        };
        let uid = self.next_id.fetch_add(1, Ordering::Relaxed);
        request["id"] = json!(uid);
        let nobody: Weak<dyn Sink> = Weak::<Nobody>::new();
        st.pending.insert(
            uid,
            Pending {
                method: "initialize".into(),
                sent: std::time::Instant::now(),
                sink: nobody,
                original_id: Value::Null,
                progress: None,
                purpose: Purpose::Replay,
            },
        );
        let _ = write(stdin, &request);
        if initialized {
            let _ = write(
                stdin,
                &jsonrpc::notification("notifications/initialized", json!({})),
            );
        }
        tracing::info!(server = %self.name, "replayed initialize to the restarted child");
    }

    fn fail_pending(&self, reason: &str) {
        let pending: Vec<Pending> = {
            let mut st = self.lock();
            st.server_requests.clear();
            st.pending.drain().map(|(_, p)| p).collect()
        };
        for p in pending {
            if p.purpose == Purpose::Replay {
                continue;
            }
            crate::metrics::request(&self.name, &p.method, false, p.sent.elapsed());
            if let Some(sink) = p.sink.upgrade() {
                let msg = format!(
                    "upstream {:?} {reason} before answering; it is being restarted",
                    self.name
                );
                sink.response(jsonrpc::error(
                    p.original_id,
                    code::UPSTREAM_UNAVAILABLE,
                    msg,
                ));
            }
        }
    }

    /// Routes one message the child wrote.
    fn dispatch(&self, mut frame: Value) {
        match jsonrpc::kind(&frame) {
            Kind::Response => self.dispatch_response(frame),
            Kind::Notification if jsonrpc::method(&frame) == Some("notifications/progress") => {
                let uid = frame
                    .pointer("/params/progressToken")
                    .and_then(Value::as_u64);
                let target = uid.and_then(|u| {
                    let st = self.lock();
                    let p = st.pending.get(&u)?;
                    Some((
                        p.sink.clone(),
                        jsonrpc::id_key(&p.original_id),
                        p.progress.clone()?,
                    ))
                });
                // Progress for a request that is gone, or under a token mcpgate did not issue,
                // belongs to no session.
                if let Some((sink, key, token)) =
                    target.and_then(|(s, k, t)| s.upgrade().map(|s| (s, k, t)))
                {
                    frame["params"]["progressToken"] = token;
                    sink.related(&key, frame);
                }
            }
            // The server cancelling its own request concerns the one session it asked.
            Kind::Notification if jsonrpc::method(&frame) == Some("notifications/cancelled") => {
                let key = frame
                    .pointer("/params/requestId")
                    .map(jsonrpc::id_key)
                    .unwrap_or_default();
                let owner = self.lock().server_requests.remove(&key);
                match owner.and_then(|o| o.upgrade()) {
                    Some(sink) => sink.unsolicited(frame),
                    None => self.broadcast(frame),
                }
            }
            Kind::Notification => self.broadcast(frame),
            Kind::Request => self.dispatch_server_request(frame),
            Kind::Invalid => {
                tracing::warn!(server = %self.name, "upstream sent a message that is not JSON-RPC 2.0; dropped");
            }
        }
    }

    fn dispatch_response(&self, mut frame: Value) {
        let uid = frame.get("id").and_then(Value::as_u64);
        let entry = uid.and_then(|u| {
            let mut st = self.lock();
            let p = st.pending.remove(&u)?;
            if matches!(p.purpose, Purpose::Initialize | Purpose::Replay) {
                match frame.get("result") {
                    Some(result) => {
                        if let Some(init) = st.init.as_mut() {
                            init.result.get_or_insert_with(|| result.clone());
                        }
                    }
                    // A failed first initialize must not be the one replayed or cached.
                    None if p.purpose == Purpose::Initialize => st.init = None,
                    None => {}
                }
            }
            Some(p)
        });
        let Some(p) = entry else {
            tracing::debug!(server = %self.name, "response to an unknown or abandoned request; dropped");
            return;
        };
        if p.purpose == Purpose::Replay {
            return;
        }
        crate::metrics::request(
            &self.name,
            &p.method,
            frame.get("error").is_none(),
            p.sent.elapsed(),
        );
        jsonrpc::replace_id(&mut frame, p.original_id);
        if let Some(sink) = p.sink.upgrade() {
            sink.response(frame);
        }
    }

    /// A server-to-client request goes to the session most recently waiting on the child (the
    /// one whose call it belongs to), or the only session there is; only it may answer.
    fn dispatch_server_request(&self, frame: Value) {
        let target = {
            let st = self.lock();
            let newest = st
                .pending
                .iter()
                .filter(|(_, p)| p.purpose != Purpose::Replay)
                .max_by_key(|(u, _)| **u);
            newest.map(|(_, p)| p.sink.clone()).or_else(|| {
                st.sinks
                    .iter()
                    .rev()
                    .find(|s| s.strong_count() > 0)
                    .cloned()
            })
        };
        let Some(sink) = target.and_then(|s| s.upgrade()) else {
            tracing::warn!(server = %self.name, "the server sent a request while no session is attached; dropped");
            return;
        };
        if let Some(id) = frame.get("id") {
            self.lock()
                .server_requests
                .insert(jsonrpc::id_key(id), Arc::downgrade(&sink));
        }
        sink.unsolicited(frame);
    }

    fn broadcast(&self, frame: Value) {
        let sinks: Vec<Arc<dyn Sink>> =
            self.lock().sinks.iter().filter_map(Weak::upgrade).collect();
        for s in sinks {
            s.unsolicited(frame.clone());
        }
    }
}

fn write(stdin: &mpsc::Sender<Bytes>, frame: &Value) -> Result<(), SendError> {
    let mut line = serde_json::to_vec(frame).map_err(|e| SendError(e.to_string()))?;
    line.push(b'\n');
    stdin.try_send(Bytes::from(line)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => {
            SendError("upstream is not reading its input fast enough (queue full)".into())
        }
        mpsc::error::TrySendError::Closed(_) => SendError("upstream's input is closed".into()),
    })
}

/// A sink that is never alive: the owner of mcpgate's own replayed requests.
struct Nobody;

impl Sink for Nobody {
    fn response(&self, _: Value) {}
    fn related(&self, _: &str, _: Value) {}
    fn unsolicited(&self, _: Value) {}
}
