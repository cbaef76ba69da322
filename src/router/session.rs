//! One downstream session: what a client's messages go to, and which stream each message
//! from the upstream comes back on.
//!
//! A Streamable HTTP POST registers a *waiter* per request id; the response, and anything
//! related to that request (progress), go to it. Everything else goes to the session's
//! *stream* (the GET stream, or the legacy SSE stream); with no stream open it goes to the
//! newest waiter (so a sampling request during a tool call reaches the client on that call's
//! stream), else into a small backlog flushed when a stream opens.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::jsonrpc::{self, Kind, code};
use crate::upstream::Sink;
use crate::upstream::remote::RemoteUpstream;
use crate::upstream::stdio::StdioHub;

const BACKLOG: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Streamable HTTP (`/mcp`).
    Streamable,
    /// Legacy HTTP+SSE (`/sse` + `/message`): everything goes to the one SSE stream.
    Legacy,
}

pub type Outbound = mpsc::Sender<Value>;

/// How many messages a stream may hold for a client that is not reading. A GET or legacy
/// stream that fills up is closed (the client is gone or stuck); a request's stream drops the
/// overflow, and the request's own deadline ends it.
pub const STREAM_QUEUE: usize = 1024;

/// A bounded queue for one stream.
pub fn stream_channel() -> (Outbound, mpsc::Receiver<Value>) {
    mpsc::channel(STREAM_QUEUE)
}

pub struct Session {
    pub id: String,
    pub flavor: Flavor,
    /// The verified client certificate subject, when the client sent one.
    pub identity: Option<String>,
    link: Link,
    me: Weak<Session>,
    out: Mutex<Outbox>,
    last_active: Mutex<Instant>,
    protocol_version: Mutex<Option<String>>,
}

#[derive(Default)]
struct Outbox {
    waiters: HashMap<String, Outbound>,
    /// Waiter keys, oldest first.
    order: Vec<String>,
    stream: Option<Outbound>,
    backlog: VecDeque<Value>,
    init_key: Option<String>,
}

/// What a session's messages go to.
pub enum Link {
    /// A stdio child: the session's own (`owns`), or one shared by every session.
    Stdio { hub: Arc<StdioHub>, owns: bool },
    /// A remote MCP server: the session has its own remote session.
    Remote(Arc<RemoteUpstream>),
    /// Several upstreams behind one session, namespaced (the gateway).
    Fanout(Arc<super::fanout::Fanout>),
}

impl Link {
    /// Registers `sink` for the upstream's own messages (a shared child broadcasts to all).
    pub fn attach(&self, sink: Weak<dyn Sink>) {
        match self {
            Link::Stdio { hub, .. } => hub.attach(sink),
            Link::Fanout(f) => f.set_downstream(sink),
            Link::Remote(_) => {}
        }
    }

    /// Sends a frame on behalf of `sink`. An error means it was not sent; requests sent to a
    /// remote or a fan-out are answered through the sink even when they fail.
    pub fn send_as(&self, sink: &Arc<dyn Sink>, frame: Value) -> Result<(), String> {
        match self {
            Link::Stdio { hub, .. } => hub.send(sink, frame).map_err(|e| e.0),
            Link::Remote(remote) => {
                remote.send(sink, frame);
                Ok(())
            }
            Link::Fanout(f) => {
                f.send(frame);
                Ok(())
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            Link::Stdio { hub, .. } => hub.name().to_string(),
            Link::Remote(r) => r.name().to_string(),
            Link::Fanout(_) => "gateway".to_string(),
        }
    }

    /// Ends what this link owns: a session's own child, a remote session, a fan-out's members.
    pub fn close(&self, sink: &Weak<dyn Sink>) {
        match self {
            Link::Stdio { hub, owns } => {
                hub.detach(sink);
                if *owns {
                    hub.close();
                }
            }
            Link::Remote(remote) => {
                let remote = remote.clone();
                tokio::spawn(async move { remote.close().await });
            }
            Link::Fanout(f) => f.close(),
        }
    }
}

impl Session {
    pub fn new(id: String, flavor: Flavor, identity: Option<String>, link: Link) -> Arc<Self> {
        let session = Arc::new_cyclic(|me| Self {
            id,
            flavor,
            identity,
            link,
            me: me.clone(),
            out: Mutex::new(Outbox::default()),
            last_active: Mutex::new(Instant::now()),
            protocol_version: Mutex::new(None),
        });
        let weak: Weak<dyn Sink> = session.me.clone();
        session.link.attach(weak);
        session
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a client frame upstream. A request that cannot be sent is answered with a
    /// JSON-RPC error on its own waiter, so nothing hangs.
    pub fn send(&self, frame: Value) {
        self.touch();
        let Some(me) = self.me.upgrade() else { return };
        let kind = jsonrpc::kind(&frame);
        if kind == Kind::Request && jsonrpc::method(&frame) == Some("initialize") {
            self.outbox().init_key = frame.get("id").map(jsonrpc::id_key);
        }
        let id = frame.get("id").cloned();
        let sink: Arc<dyn Sink> = me;
        if let Err(e) = self.link.send_as(&sink, frame) {
            match (kind, id) {
                (Kind::Request, Some(id)) => {
                    self.response(jsonrpc::error(id, code::UPSTREAM_UNAVAILABLE, e))
                }
                _ => {
                    tracing::warn!(session = %self.id, "message to upstream {:?} dropped: {e}", self.link.name())
                }
            }
        }
    }

    /// `send` for a request whose caller waits for the answer: to a remote upstream it goes
    /// out in the caller's task when nothing is queued ahead of it (as `raw`, the client's own
    /// bytes, when given). The answer comes back here, as the server wrote it, when it is one
    /// JSON response to this request; otherwise it reaches the request's waiter as usual.
    /// Other links send as `send` does.
    pub async fn send_now(&self, frame: Value, raw: Option<bytes::Bytes>) -> Option<bytes::Bytes> {
        let Link::Remote(remote) = &self.link else {
            self.send(frame);
            return None;
        };
        if jsonrpc::method(&frame) == Some("initialize") {
            self.send(frame);
            return None;
        }
        self.touch();
        let me = self.me.upgrade()?;
        let sink: Arc<dyn Sink> = me;
        remote.send_now(&sink, frame, raw).await
    }

    /// Routes the responses to requests `keys` (and related messages) to `tx`. Refuses, adding
    /// none, when a key is already waiting: its request would lose its answer to the new one.
    pub fn add_waiters<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k String> + Clone,
        tx: &Outbound,
    ) -> Result<(), &'k String> {
        let mut out = self.outbox();
        if let Some(taken) = keys
            .clone()
            .into_iter()
            .find(|k| out.waiters.contains_key(*k))
        {
            return Err(taken);
        }
        for key in keys {
            out.order.push(key.clone());
            out.waiters.insert(key.clone(), tx.clone());
        }
        Ok(())
    }

    pub fn remove_waiter(&self, key: &str) {
        let mut out = self.outbox();
        out.waiters.remove(key);
        out.order.retain(|k| k != key);
    }

    /// Opens the session's stream; `None` if one is already open.
    pub fn attach_stream(&self) -> Option<mpsc::Receiver<Value>> {
        let mut out = self.outbox();
        if out.stream.as_ref().is_some_and(|s| !s.is_closed()) {
            return None;
        }
        let (tx, rx) = stream_channel();
        for frame in out.backlog.drain(..) {
            let _ = tx.try_send(frame);
        }
        out.stream = Some(tx);
        Some(rx)
    }

    pub fn has_stream(&self) -> bool {
        self.outbox()
            .stream
            .as_ref()
            .is_some_and(|s| !s.is_closed())
    }

    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        self.last_active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The protocol version the upstream agreed to in `initialize`.
    pub fn protocol_version(&self) -> Option<String> {
        self.protocol_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Detaches from the upstream and stops a child this session owns.
    pub fn close(&self) {
        let weak: Weak<dyn Sink> = self.me.clone();
        self.link.close(&weak);
        let mut out = self.outbox();
        out.waiters.clear();
        out.stream = None;
    }
}

impl Sink for Session {
    fn response(&self, frame: Value) {
        let key = frame.get("id").map(jsonrpc::id_key).unwrap_or_default();
        let mut out = self.outbox();
        if out.init_key.as_deref() == Some(key.as_str()) {
            out.init_key = None;
            if let Some(v) = frame
                .pointer("/result/protocolVersion")
                .and_then(Value::as_str)
            {
                *self
                    .protocol_version
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(v.to_string());
            }
        }
        if let Some(tx) = out.waiters.remove(&key) {
            out.order.retain(|k| *k != key);
            if tx.try_send(frame).is_err() {
                tracing::warn!(session = %self.id, "a response was dropped: its client is not reading the request's stream");
            }
            return;
        }
        match (self.flavor, &out.stream) {
            (Flavor::Legacy, Some(tx)) => {
                if tx.try_send(frame).is_err() {
                    tracing::warn!(session = %self.id, "legacy SSE stream full or closed; closing it");
                    out.stream = None;
                }
            }
            // Streamable HTTP: a response whose POST is gone has nowhere to go (the spec keeps
            // responses off the GET stream).
            _ => {
                tracing::debug!(session = %self.id, "response for a closed request stream dropped")
            }
        }
    }

    fn related(&self, request_key: &str, frame: Value) {
        let tx = self.outbox().waiters.get(request_key).cloned();
        match tx {
            Some(tx) => {
                let _ = tx.try_send(frame);
            }
            None => self.unsolicited(frame),
        }
    }

    fn unsolicited(&self, frame: Value) {
        let mut out = self.outbox();
        if let Some(tx) = &out.stream {
            match tx.try_send(frame.clone()) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(session = %self.id, "the client stopped reading its stream ({STREAM_QUEUE} messages queued); closing it");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
            out.stream = None;
        }
        if let Some(key) = out.order.last()
            && let Some(tx) = out.waiters.get(key)
            && tx.try_send(frame.clone()).is_ok()
        {
            return;
        }
        if out.backlog.len() >= BACKLOG {
            out.backlog.pop_front();
        }
        out.backlog.push_back(frame);
    }
}
