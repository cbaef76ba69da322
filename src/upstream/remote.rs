//! The remote upstream: an MCP client over HTTPS, Streamable HTTP (2025-03-26 onward) or the
//! legacy HTTP+SSE transport, with `auto` trying Streamable HTTP first and falling back to SSE
//! when the server answers the initialize POST with 400, 404 or 405. A server that refuses the
//! session because it speaks only the stateless 2026-07-28 revision (-32022) is reached with
//! stateless requests instead, the session's initialize answered from `server/discover`.
//!
//! Messages are sent in the order they came: each waits until the previous one was accepted
//! (response headers received); bodies stream on in their own tasks, so long calls overlap.
//! A request whose caller waits for its answer (`send_now`) skips the queue when nothing is on
//! it, and its JSON answer is read in the caller's task and handed back as the server wrote it.
//! Redirects are followed only within the same origin; https-to-http is refused with the
//! Location and the URL to use. After `notifications/initialized`, a GET stream carries the
//! server's own messages and reconnects with backoff.

// A `Failure` is the full diagnosis (class, context, hint); it is built only on the error path.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::Sink;
use super::connector::Connector;
use super::health::{Health, State as HealthState};
use crate::config::{RemoteSpec, RemoteTransport};
use crate::jsonrpc::{self, Kind, code};
use crate::tls::diagnose::{self, ErrorClass, Failure};
use crate::transport::{sse, stateless};

pub struct RemoteUpstream {
    name: String,
    spec: RemoteSpec,
    connector: Connector,
    client: Client<Connector, Full<Bytes>>,
    state: Mutex<State>,
    endpoint_ready: Notify,
    queue: mpsc::UnboundedSender<(Arc<dyn Sink>, Value)>,
    /// Frames on the queue the send loop has not handed off yet: a request goes out directly
    /// (`send_now`) only when nothing is ahead of it.
    queued: AtomicUsize,
    health: Option<Arc<Health>>,
    /// Set by `close`: every task of this session (send loop, streams, reconnects) ends.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// How an SSE body ended: an error, and where to resume (last event id, requested delay).
#[derive(Default)]
struct StreamEnd {
    error: Option<String>,
    last_id: Option<String>,
    retry: Option<u64>,
}

/// The pooled HTTP client over a connector (keep-alive, HTTP/2 by ALPN).
pub fn pooled_client(connector: &Connector) -> Client<Connector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector.clone())
}

#[derive(Default)]
struct State {
    url: Option<Uri>,
    mode: Mode,
    session: Option<String>,
    version: Option<String>,
    init_key: Option<String>,
    post_url: Option<Uri>,
    sse_failed: Option<String>,
    get_stream: bool,
    closed: bool,
    last_event_id: Option<String>,
    /// Redirects followed: (status, from, to), for probe's report.
    redirects: Vec<(u16, String, String)>,
    last_failure: Option<Failure>,
    /// Requests sent and not answered yet: id key -> id. Whatever ends without answering one
    /// (a stream closing, a body failing) answers it with an error, so no client waits forever.
    awaiting: std::collections::HashMap<String, Awaited>,
    /// Set once initialize is answered: from then on sends overlap instead of queueing.
    established: bool,
}

/// A request sent and not yet answered: its id, and its method and send time for the metrics.
struct Awaited {
    id: Value,
    method: String,
    sent: std::time::Instant,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    #[default]
    Unknown,
    Streamable,
    Sse,
    /// The server speaks only the stateless 2026-07-28 revision: the session's initialize is
    /// answered from `server/discover`, and each request goes as a stateless POST.
    Stateless,
}

impl RemoteUpstream {
    /// A client of its own (connect, probe).
    pub fn start(name: &str, spec: RemoteSpec, connector: Connector) -> Result<Arc<Self>, String> {
        let client = pooled_client(&connector);
        Self::start_shared(name, spec, connector, client, None)
    }

    /// One MCP session over a client shared with other sessions (serve): connections and TLS
    /// sessions to the upstream are reused across them. `health` tells `/readyz` the truth.
    pub fn start_shared(
        name: &str,
        spec: RemoteSpec,
        connector: Connector,
        client: Client<Connector, Full<Bytes>>,
        health: Option<Arc<Health>>,
    ) -> Result<Arc<Self>, String> {
        let url: Uri = spec
            .url
            .parse()
            .map_err(|e| format!("{:?} is not a valid URL: {e}", spec.url))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mode = match spec.transport {
            RemoteTransport::Sse => Mode::Sse,
            RemoteTransport::StreamableHttp => Mode::Streamable,
            RemoteTransport::Auto => Mode::Unknown,
        };
        let me = Arc::new(Self {
            name: name.to_string(),
            spec,
            connector,
            client,
            state: Mutex::new(State {
                url: Some(url),
                mode,
                ..State::default()
            }),
            endpoint_ready: Notify::new(),
            queue: tx,
            queued: AtomicUsize::new(0),
            health,
            shutdown: tokio::sync::watch::channel(false).0,
        });
        tokio::spawn(me.clone().send_loop(rx));
        Ok(me)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a client frame; it is sent after every frame queued before it.
    pub fn send(&self, from: &Arc<dyn Sink>, frame: Value) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.send((from.clone(), frame)).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sends a request in the caller's task, when the session is established over Streamable
    /// HTTP and nothing is queued ahead of it: no queue, no task of its own, and a JSON answer
    /// is with the sink when this returns (an SSE answer streams on in a task). Anything else
    /// takes the queue. Dropped before the answer (the client went away), it tells the server
    /// the request is cancelled.
    pub async fn send_now(
        self: &Arc<Self>,
        from: &Arc<dyn Sink>,
        frame: Value,
        raw: Option<Bytes>,
    ) -> Option<Bytes> {
        let direct =
            jsonrpc::kind(&frame) == Kind::Request && self.queued.load(Ordering::Acquire) == 0 && {
                let st = self.lock();
                st.established && st.mode == Mode::Streamable
            };
        if !direct {
            self.send(from, frame);
            return None;
        }
        let mut pending = Unanswered {
            remote: self,
            sink: from,
            id: frame.get("id").cloned(),
        };
        let mut inline = Inline { raw, answer: None };
        self.clone()
            .send_and_report(from.clone(), frame, Some(&mut inline))
            .await;
        pending.id = None;
        inline.answer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The failure behind the last message that could not be sent, if any.
    pub fn take_failure(&self) -> Option<Failure> {
        self.lock().last_failure.take()
    }

    /// Redirects followed so far: (status, from, to).
    pub fn redirects(&self) -> Vec<(u16, String, String)> {
        self.lock().redirects.clone()
    }

    /// The transport in use: `streamable_http`, `sse`, `stateless_http` (2026-07-28 only), or
    /// `unknown` before the first answer.
    pub fn transport_in_use(&self) -> &'static str {
        match self.lock().mode {
            Mode::Streamable => "streamable_http",
            Mode::Stateless => "stateless_http",
            Mode::Sse => "sse",
            Mode::Unknown => "unknown",
        }
    }

    /// Ends the session (DELETE) and stops reconnecting.
    pub async fn close(&self) {
        let (url, session) = {
            let mut st = self.lock();
            st.closed = true;
            self.shutdown.send_replace(true);
            (st.url.clone(), st.session.clone())
        };
        if let (Some(url), Some(_)) = (url, session) {
            let req = self.request(Method::DELETE, &url, None, "application/json", &[]);
            if let Ok(req) = req {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), self.client.request(req)).await;
            }
        }
    }

    async fn send_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<(Arc<dyn Sink>, Value)>) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let next = tokio::select! {
                m = rx.recv() => m,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some((sink, frame)) = next else { return };
            if !self.lock().established {
                self.clone().send_and_report(sink, frame, None).await;
            } else {
                // After initialize, a slow call must not hold back the next message (a cancel,
                // an answer to the server's own request): each send runs on its own, and the
                // loop only gives it a moment to go out first, which keeps order in the common
                // case.
                let task = tokio::spawn(self.clone().send_and_report(sink, frame, None));
                let _ = tokio::time::timeout(Duration::from_millis(50), task).await;
            }
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sends one frame and answers its request with an error if it could not go; `inline`
    /// reads a JSON answer in this task rather than one of its own.
    async fn send_and_report(
        self: Arc<Self>,
        sink: Arc<dyn Sink>,
        frame: Value,
        mut inline: Option<&mut Inline>,
    ) {
        let id = (jsonrpc::kind(&frame) == Kind::Request)
            .then(|| frame.get("id").cloned())
            .flatten();
        if let Some(id) = &id {
            let method = jsonrpc::method(&frame).unwrap_or("").to_string();
            self.lock().awaiting.insert(
                jsonrpc::id_key(id),
                Awaited {
                    id: id.clone(),
                    method,
                    sent: std::time::Instant::now(),
                },
            );
        }
        let mut outcome = self.send_one(&sink, &frame, inline.as_deref_mut()).await;
        // A response or notification has no one to report a failure to (an answer to the
        // server's own request lost here leaves the server waiting): one more try, which also
        // covers a pooled connection the server had just closed.
        if outcome.is_err() && id.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            outcome = self.send_one(&sink, &frame, inline).await;
        }
        match outcome {
            Ok(()) => {
                if let Some(h) = &self.health {
                    h.set(HealthState::Running, None);
                }
            }
            Err(f) => {
                tracing::error!("{f}");
                self.lock().last_failure = Some(f.clone());
                // Only a failure to reach the upstream makes it unready; an HTTP answer to one
                // client's message (400, 401, 404) says nothing about the others.
                if let (Some(h), false) = (&self.health, f.class == ErrorClass::Http) {
                    h.set(HealthState::Failed, Some(f.one_line()));
                }
                if let Some(id) = id {
                    let a = self.lock().awaiting.remove(&jsonrpc::id_key(&id));
                    if let Some(a) = a {
                        crate::metrics::request(&self.name, &a.method, false, a.sent.elapsed());
                    }
                    sink.response(jsonrpc::error(
                        id.clone(),
                        code::UPSTREAM_UNAVAILABLE,
                        f.one_line(),
                    ));
                }
            }
        }
    }

    /// SEP-1699: a server may close a request's stream before answering, having sent event ids
    /// (and a `retry`); the client waits that long and resumes with a GET carrying
    /// `Last-Event-ID`. Tried a few times while the request is unanswered.
    async fn resume(&self, sink: &Arc<dyn Sink>, key: &str, mut end: StreamEnd) {
        for _ in 0..5 {
            if !self.lock().awaiting.contains_key(key) {
                return;
            }
            let Some(last) = end.last_id.clone() else {
                return;
            };
            let wait = Duration::from_millis(end.retry.unwrap_or(1000).min(30_000));
            let mut stop = self.shutdown.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let url = self.current_url();
            let Ok(mut req) = self.request(Method::GET, &url, None, "text/event-stream", &[])
            else {
                return;
            };
            let Ok(id) = HeaderValue::from_str(&last) else {
                return;
            };
            req.headers_mut().insert("last-event-id", id);
            let resp = match tokio::time::timeout(self.spec.timeout, self.client.request(req)).await
            {
                Ok(Ok(r)) if r.status().is_success() => r,
                _ => return,
            };
            let next = self
                .read_events(resp.into_body(), sink, false, false, Some(key))
                .await;
            end = StreamEnd {
                last_id: next.last_id.or(Some(last)),
                retry: next.retry.or(end.retry),
                error: next.error,
            };
        }
    }

    /// Answers a request that will get no answer from the server, if it is still waiting.
    fn abandon(&self, sink: &Arc<dyn Sink>, key: &str, why: &str) {
        let awaited = self.lock().awaiting.remove(key);
        if let Some(a) = awaited {
            tracing::warn!(upstream = %self.name, "a request got no answer: {why}");
            crate::metrics::request(&self.name, &a.method, false, a.sent.elapsed());
            sink.response(jsonrpc::error(
                a.id,
                code::UPSTREAM_UNAVAILABLE,
                format!("upstream {:?}: {why}", self.name),
            ));
        }
    }

    async fn send_one(
        self: &Arc<Self>,
        sink: &Arc<dyn Sink>,
        frame: &Value,
        inline: Option<&mut Inline>,
    ) -> Result<(), Failure> {
        if jsonrpc::method(frame) == Some("initialize") {
            self.lock().init_key = frame.get("id").map(jsonrpc::id_key);
        }
        let mode = self.lock().mode;
        match mode {
            Mode::Sse => self.send_sse(sink, frame).await,
            Mode::Stateless => self.send_stateless(sink, frame).await,
            Mode::Streamable | Mode::Unknown => {
                let body = inline
                    .as_ref()
                    .and_then(|i| i.raw.clone())
                    .unwrap_or_else(|| Bytes::from(frame.to_string()));
                let url = self.current_url();
                let request = jsonrpc::kind(frame) == Kind::Request;
                let resp = self.post(&url, body, request, &[]).await?;
                let status = resp.status();
                let initialize = jsonrpc::method(frame) == Some("initialize");
                if mode == Mode::Unknown && initialize && status == StatusCode::BAD_REQUEST {
                    // A server that speaks only 2026-07-28 refuses a session with -32022.
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    let answer = body
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        .unwrap_or(Value::Null);
                    if stateless::refuses_sessions(&answer) {
                        tracing::info!(upstream = %self.name, "the server speaks only MCP 2026-07-28: its session is bridged to stateless requests");
                        self.lock().mode = Mode::Stateless;
                        return self.send_stateless(sink, frame).await;
                    }
                    tracing::info!(upstream = %self.name, "{} answered {status} to a Streamable HTTP POST; trying the legacy SSE transport", diagnose::redact_url(&url.to_string()));
                    self.lock().mode = Mode::Sse;
                    return self.send_sse(sink, frame).await;
                }
                if mode == Mode::Unknown
                    && matches!(
                        status,
                        StatusCode::BAD_REQUEST
                            | StatusCode::NOT_FOUND
                            | StatusCode::METHOD_NOT_ALLOWED
                    )
                {
                    tracing::info!(upstream = %self.name, "{} answered {status} to a Streamable HTTP POST; trying the legacy SSE transport", diagnose::redact_url(&url.to_string()));
                    self.lock().mode = Mode::Sse;
                    return self.send_sse(sink, frame).await;
                }
                self.lock().mode = Mode::Streamable;
                self.streamable_answer(sink, frame, resp, &url, inline)
                    .await
            }
        }
    }

    /// A 2025 session's message to a server that speaks only 2026-07-28: initialize answered
    /// from `server/discover`, ping locally, the revision's requests sent stateless with the
    /// envelope and routing headers; what the revision lacks is refused with the reason.
    async fn send_stateless(
        self: &Arc<Self>,
        sink: &Arc<dyn Sink>,
        frame: &Value,
    ) -> Result<(), Failure> {
        // Notifications (initialized, cancelled) and answers have no place in the revision.
        if jsonrpc::kind(frame) != Kind::Request {
            return Ok(());
        }
        let id = frame.get("id").cloned().unwrap_or(Value::Null);
        let method = jsonrpc::method(frame).unwrap_or_default();
        let answer = |result: Value| serde_json::json!({"jsonrpc": "2.0", "id": id.clone(), "result": result});
        match method {
            "initialize" => {
                let discover = serde_json::json!({"jsonrpc": "2.0", "id": "mcpgate-discover",
                    "method": "server/discover", "params": stateless::with_envelope(None)});
                let url = self.current_url();
                let resp = self.post_stateless(&url, &discover).await?;
                if !resp.status().is_success() {
                    return Err(self.status_failure(resp.status(), &url, resp).await);
                }
                let found = read_answer(resp).await;
                let Some(d) = found.as_ref().and_then(|a| a.get("result")) else {
                    let why = found
                        .as_ref()
                        .and_then(|a| a.pointer("/error/message"))
                        .and_then(Value::as_str)
                        .unwrap_or("no result");
                    let why = format!(
                        "upstream {:?} speaks only MCP 2026-07-28 and its server/discover failed: {why}",
                        self.name
                    );
                    self.deliver(
                        sink,
                        jsonrpc::error(id.clone(), code::UPSTREAM_UNAVAILABLE, why),
                        None,
                    );
                    return Ok(());
                };
                let asked = frame
                    .pointer("/params/protocolVersion")
                    .and_then(Value::as_str);
                let version = asked
                    .filter(|v| stateless::SESSION_VERSIONS.contains(v))
                    .unwrap_or(stateless::LATEST_SESSION_VERSION);
                let mut init = serde_json::json!({
                    "protocolVersion": version,
                    "capabilities": d.get("capabilities").cloned().unwrap_or_else(|| serde_json::json!({})),
                    "serverInfo": d.pointer(&format!("/_meta/{}", stateless::META_SERVER_INFO.replace('/', "~1")))
                        .cloned()
                        .unwrap_or_else(|| serde_json::json!({"name": self.name, "version": ""})),
                });
                if let Some(i) = d.get("instructions") {
                    init["instructions"] = i.clone();
                }
                self.deliver(sink, answer(init), None);
                Ok(())
            }
            "ping" => {
                self.deliver(sink, answer(serde_json::json!({})), None);
                Ok(())
            }
            m if stateless::CARRIED.contains(&m) => {
                let mut wrapped = frame.clone();
                wrapped["params"] = stateless::with_envelope(frame.get("params"));
                let url = self.current_url();
                let resp = self.post_stateless(&url, &wrapped).await?;
                if resp.status().is_client_error() {
                    // The revision's errors (400, 404) carry a JSON-RPC error: the client gets it.
                    match read_answer(resp).await {
                        Some(a) if a.get("error").is_some() => self.deliver(sink, a, None),
                        _ => self.abandon(
                            sink,
                            &jsonrpc::id_key(&id),
                            "the server refused the request",
                        ),
                    }
                    return Ok(());
                }
                self.streamable_answer(sink, frame, resp, &url, None).await
            }
            m => {
                self.deliver(
                    sink,
                    jsonrpc::error(
                        id.clone(),
                        code::METHOD_NOT_FOUND,
                        format!("upstream {:?} speaks only MCP 2026-07-28, which has no {m}: mcpgate cannot carry it", self.name),
                    ),
                    None,
                );
                Ok(())
            }
        }
    }

    /// POSTs one stateless request with the revision's routing headers.
    async fn post_stateless(
        &self,
        url: &Uri,
        frame: &Value,
    ) -> Result<Response<Incoming>, Failure> {
        let method = jsonrpc::method(frame).unwrap_or_default();
        let mut extra = vec![(stateless::METHOD_HEADER, method.to_string())];
        if let Some((_, name)) =
            stateless::name_of(method, frame.get("params").unwrap_or(&Value::Null))
        {
            extra.push((stateless::NAME_HEADER, stateless::encode_name(name)));
        }
        let request = jsonrpc::kind(frame) == Kind::Request;
        self.post(url, Bytes::from(frame.to_string()), request, &extra)
            .await
    }

    async fn streamable_answer(
        self: &Arc<Self>,
        sink: &Arc<dyn Sink>,
        frame: &Value,
        resp: Response<Incoming>,
        url: &Uri,
        inline: Option<&mut Inline>,
    ) -> Result<(), Failure> {
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_failure(status, url, resp).await);
        }
        if let Some(sid) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.lock().session = Some(sid.to_string());
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let me = self.clone();
        let sink = sink.clone();
        if jsonrpc::kind(frame) != Kind::Request {
            if jsonrpc::method(frame) == Some("notifications/initialized") {
                self.start_get_stream(sink);
            }
            return Ok(());
        }
        let key = frame.get("id").map(jsonrpc::id_key).unwrap_or_default();
        if status == StatusCode::ACCEPTED {
            self.abandon(
                &sink,
                &key,
                "the server accepted a request (202) without answering it",
            );
            return Ok(());
        }
        if is_sse {
            tokio::spawn(async move {
                let end = me
                    .read_events(resp.into_body(), &sink, false, false, Some(&key))
                    .await;
                me.resume(&sink, &key, end).await;
                me.abandon(
                    &sink,
                    &key,
                    "the server closed the response stream before answering",
                );
            });
            return Ok(());
        }
        match inline {
            Some(inline) => inline.answer = me.json_answer(sink, key, resp, true).await,
            None => {
                tokio::spawn(async move { me.json_answer(sink, key, resp, false).await });
            }
        }
        Ok(())
    }

    /// Reads a JSON answer and hands its messages to the sink, or, `verbatim`, returns it as
    /// it came when it is one response to the request `key` (nothing to look into or change).
    async fn json_answer(
        self: Arc<Self>,
        sink: Arc<dyn Sink>,
        key: String,
        resp: Response<Incoming>,
        verbatim: bool,
    ) -> Option<Bytes> {
        let body = tokio::time::timeout(self.spec.timeout, resp.into_body().collect()).await;
        let Ok(body) = body else {
            self.abandon(&sink, &key, "the server's answer did not arrive in time");
            return None;
        };
        match body.map(|b| b.to_bytes()) {
            Ok(b) => {
                if verbatim && let Some(ok) = jsonrpc::single_response(&b, &key) {
                    self.answered(&key, ok);
                    return Some(b);
                }
                match serde_json::from_slice::<Value>(&b) {
                    Ok(Value::Array(items)) => items
                        .into_iter()
                        .for_each(|m| self.deliver(&sink, m, Some(&key))),
                    Ok(m) => self.deliver(&sink, m, Some(&key)),
                    Err(e) => {
                        tracing::warn!(upstream = %self.name, "the server's answer is not JSON: {e}")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %self.name, "reading the server's answer failed: {e}")
            }
        }
        self.abandon(&sink, &key, "the server's answer did not hold the response");
        None
    }

    /// Notes the answer to the request `key`: no longer awaited, and counted.
    fn answered(&self, key: &str, ok: bool) {
        let a = self.lock().awaiting.remove(key);
        if let Some(a) = a {
            crate::metrics::request(&self.name, &a.method, ok, a.sent.elapsed());
        }
    }

    /// Hands a server message to the sink, noting the negotiated protocol version.
    /// `related` is the request whose response stream carried the message, if any.
    fn deliver(&self, sink: &Arc<dyn Sink>, m: Value, related: Option<&str>) {
        match jsonrpc::kind(&m) {
            Kind::Response => {
                let key = m.get("id").map(jsonrpc::id_key);
                if let Some(k) = &key {
                    self.answered(k, m.get("error").is_none());
                }
                {
                    let mut st = self.lock();
                    if key.is_some() && st.init_key == key {
                        st.init_key = None;
                        st.established = m.get("result").is_some();
                        if let (true, Some(h)) = (st.established, &self.health) {
                            h.set(HealthState::Running, None);
                        }
                        st.version = m
                            .pointer("/result/protocolVersion")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                    }
                }
                sink.response(m);
            }
            Kind::Request | Kind::Notification => match related {
                Some(key) => sink.related(key, m),
                None => sink.unsolicited(m),
            },
            Kind::Invalid => {
                tracing::warn!(upstream = %self.name, "the server sent a message that is not JSON-RPC 2.0; dropped")
            }
        }
    }

    /// Reads SSE events from a body; `legacy` streams also carry the `endpoint` event.
    async fn read_events(
        &self,
        mut body: Incoming,
        sink: &Arc<dyn Sink>,
        legacy: bool,
        resumable: bool,
        related: Option<&str>,
    ) -> StreamEnd {
        let mut parser = sse::Parser::default();
        let mut events = Vec::new();
        let mut end = StreamEnd::default();
        loop {
            let mut stop = self.shutdown.subscribe();
            let next = tokio::select! {
                f = body.frame() => f,
                _ = stop.wait_for(|s| *s) => return end,
            };
            let frame = match next {
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    end.error = Some(e.to_string());
                    return end;
                }
                None => return end,
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            parser.feed(data, &mut events);
            for ev in events.drain(..) {
                if let Some(id) = &ev.id {
                    end.last_id = Some(id.clone());
                    // The standalone GET stream keeps its resume point across reconnects.
                    if resumable {
                        self.lock().last_event_id = Some(id.clone());
                    }
                }
                if ev.retry.is_some() {
                    end.retry = ev.retry;
                }
                match ev.event.as_deref() {
                    Some("endpoint") if legacy => self.set_endpoint(&ev.data),
                    None | Some("message") => {
                        if ev.data.trim().is_empty() {
                            continue; // priming event
                        }
                        match serde_json::from_str::<Value>(&ev.data) {
                            Ok(m) => self.deliver(sink, m, related),
                            Err(e) => {
                                tracing::warn!(upstream = %self.name, "an SSE message is not JSON: {e}")
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }

    fn set_endpoint(&self, data: &str) {
        let base = self.current_url();
        match resolve(&base, data.trim()) {
            Some(u) if same_origin(&u, &base) => {
                self.lock().post_url = Some(u);
                self.endpoint_ready.notify_waiters();
            }
            _ => {
                self.lock().sse_failed = Some(format!(
                    "the server announced an endpoint on another origin ({data}); refused"
                ));
                self.endpoint_ready.notify_waiters();
            }
        }
    }

    async fn send_sse(
        self: &Arc<Self>,
        sink: &Arc<dyn Sink>,
        frame: &Value,
    ) -> Result<(), Failure> {
        let post = self.sse_endpoint(sink).await?;
        let request = jsonrpc::kind(frame) == Kind::Request;
        let resp = self
            .post(&post, Bytes::from(frame.to_string()), request, &[])
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_failure(resp.status(), &post, resp).await);
        }
        Ok(())
    }

    /// Opens the legacy SSE stream if needed and waits for its `endpoint` event.
    async fn sse_endpoint(self: &Arc<Self>, sink: &Arc<dyn Sink>) -> Result<Uri, Failure> {
        let url = self.current_url();
        let place = self.connector.place(&url);
        {
            let st = self.lock();
            if let Some(p) = &st.post_url {
                return Ok(p.clone());
            }
            if let Some(why) = &st.sse_failed {
                return Err(Failure::new(
                    ErrorClass::Http,
                    place,
                    why.clone(),
                    "restart the client to open a new SSE session",
                ));
            }
        }
        let resp = self
            .exchange(Method::GET, &url, None, "text/event-stream")
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_failure(resp.status(), &url, resp).await);
        }
        let ready = self.endpoint_ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let me = self.clone();
        let sink = sink.clone();
        tokio::spawn(async move {
            let why = me
                .read_events(resp.into_body(), &sink, true, false, None)
                .await
                .error;
            let reason = format!(
                "the SSE stream closed{}",
                why.map(|w| format!(": {w}")).unwrap_or_default()
            );
            let waiting: Vec<String> = {
                let mut st = me.lock();
                st.post_url = None;
                st.sse_failed = Some(reason.clone());
                st.awaiting.keys().cloned().collect()
            };
            me.endpoint_ready.notify_waiters();
            // On the legacy transport every answer comes down that stream: none will come now.
            for key in waiting {
                me.abandon(&sink, &key, &reason);
            }
        });
        if tokio::time::timeout(self.spec.timeout, ready)
            .await
            .is_err()
        {
            return Err(Failure::new(
                ErrorClass::Http,
                place,
                "the SSE stream sent no endpoint event",
                "check that the URL is the server's SSE endpoint (often /sse)",
            ));
        }
        let st = self.lock();
        match (&st.post_url, &st.sse_failed) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(why)) => Err(Failure::new(
                ErrorClass::Http,
                place,
                why.clone(),
                "check the server's logs",
            )),
            (None, None) => Err(Failure::new(
                ErrorClass::Http,
                place,
                "no SSE endpoint",
                "check the URL",
            )),
        }
    }

    fn start_get_stream(self: &Arc<Self>, sink: Arc<dyn Sink>) {
        {
            let mut st = self.lock();
            if st.get_stream || st.mode != Mode::Streamable {
                return;
            }
            st.get_stream = true;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                if me.lock().closed {
                    return;
                }
                let url = me.current_url();
                match me
                    .exchange(Method::GET, &url, None, "text/event-stream")
                    .await
                {
                    Ok(resp) if resp.status() == StatusCode::METHOD_NOT_ALLOWED => return,
                    Ok(resp) if resp.status() == StatusCode::NOT_FOUND => return,
                    Ok(resp) if resp.status().is_success() => {
                        backoff = Duration::from_millis(500);
                        me.read_events(resp.into_body(), &sink, false, true, None)
                            .await;
                    }
                    Ok(resp) => {
                        tracing::debug!(upstream = %me.name, "GET stream answered {}", resp.status())
                    }
                    Err(f) => tracing::debug!(upstream = %me.name, "GET stream: {f}"),
                }
                let mut stop = me.shutdown.subscribe();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
    }

    fn current_url(&self) -> Uri {
        self.lock().url.clone().unwrap_or_default()
    }

    fn request(
        &self,
        method: Method,
        url: &Uri,
        body: Option<Bytes>,
        accept: &'static str,
        extra: &[(&'static str, String)],
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let st = self.lock();
        let mut b = Request::builder()
            .method(method)
            .uri(url.clone())
            .header(ACCEPT, HeaderValue::from_static(accept));
        if body.is_some() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        if let Some(s) = &st.session {
            b = b.header("mcp-session-id", s.as_str());
        }
        if st.mode == Mode::Stateless {
            b = b.header("mcp-protocol-version", stateless::VERSIONS[0]);
        } else if let Some(v) = &st.version {
            b = b.header("mcp-protocol-version", v.as_str());
        }
        for (k, v) in extra {
            b = b.header(*k, v.as_str());
        }
        if let Some(id) = st
            .last_event_id
            .as_ref()
            .filter(|_| accept == "text/event-stream")
        {
            b = b.header("last-event-id", id.as_str());
        }
        drop(st);
        if let Some(t) = &self.spec.bearer_token {
            b = b.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in &self.spec.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) else {
                continue;
            };
            b = b.header(name, value);
        }
        b.body(Full::new(body.unwrap_or_default())).map_err(|e| {
            Failure::new(
                ErrorClass::Other,
                self.connector.place(url),
                format!("cannot build the request: {e}"),
                "check the custom headers",
            )
        })
    }

    /// Sends a request, following same-origin redirects and refusing the rest.
    async fn exchange(
        &self,
        method: Method,
        url: &Uri,
        body: Option<Bytes>,
        accept: &'static str,
    ) -> Result<Response<Incoming>, Failure> {
        self.exchange_with(method, url, body, accept, &[], false)
            .await
    }

    /// POSTs a message; `request` says it waits for an answer, which may take as long as the
    /// work does.
    async fn post(
        &self,
        url: &Uri,
        body: Bytes,
        request: bool,
        extra: &[(&'static str, String)],
    ) -> Result<Response<Incoming>, Failure> {
        let accept = "application/json, text/event-stream";
        self.exchange_with(Method::POST, url, Some(body), accept, extra, request)
            .await
    }

    /// `exchange` with headers of its own for this one request; a `patient` one (a request's
    /// POST) has no deadline for the answer's headers.
    async fn exchange_with(
        &self,
        method: Method,
        url: &Uri,
        body: Option<Bytes>,
        accept: &'static str,
        extra: &[(&'static str, String)],
        patient: bool,
    ) -> Result<Response<Incoming>, Failure> {
        let mut url = url.clone();
        for _ in 0..5 {
            let req = self.request(method.clone(), &url, body.clone(), accept, extra)?;
            // A server answering a request as JSON sends its headers only when the work is
            // done: a request's POST waits as long as it takes (connecting is still bounded
            // by the connector). Everything else must answer promptly.
            let sent = self.client.request(req);
            let answered = if patient {
                Ok(sent.await)
            } else {
                tokio::time::timeout(self.spec.timeout, sent).await
            };
            let resp = match answered {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(self.transport_failure(&e, &url).await),
                Err(_) => {
                    return Err(Failure::new(
                        ErrorClass::TimedOut,
                        self.connector.place(&url),
                        format!("no answer within {:?}", self.spec.timeout),
                        "raise the upstream's timeout, or check the server",
                    ));
                }
            };
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let Some(next) = resolve(&url, &location) else {
                return Err(Failure::new(
                    ErrorClass::Http,
                    self.connector.place(&url),
                    format!(
                        "{} redirect without a usable Location ({location:?})",
                        resp.status()
                    ),
                    "use the server's final URL",
                ));
            };
            if url.scheme_str() == Some("https") && next.scheme_str() == Some("http") {
                let fixed = format!(
                    "https://{}{}",
                    next.authority().map(|a| a.as_str()).unwrap_or(""),
                    next.path_and_query().map(|p| p.as_str()).unwrap_or("/")
                );
                return Err(Failure::new(
                    ErrorClass::HttpsToHttpRedirect,
                    self.connector.place(&url),
                    format!("the server redirected from https to http (Location: {}); refused", diagnose::redact_url(&location)),
                    format!("this is usually a proxy's trailing-slash redirect that lost the scheme: use {} as the URL", diagnose::redact_url(&fixed)),
                )
                .cause(format!("{} {}", resp.status().as_u16(), resp.status().canonical_reason().unwrap_or(""))));
            }
            if !same_origin(&next, &url) {
                return Err(Failure::new(
                    ErrorClass::CrossOriginRedirect,
                    self.connector.place(&url),
                    format!(
                        "the server redirected to another origin (Location: {}); refused",
                        diagnose::redact_url(&location)
                    ),
                    format!(
                        "if {} is the right server, use it as the URL",
                        diagnose::redact_url(&next.to_string())
                    ),
                ));
            }
            tracing::info!(upstream = %self.name, "following redirect {} -> {}; use the new URL to skip it", diagnose::redact_url(&url.to_string()), diagnose::redact_url(&next.to_string()));
            {
                let mut st = self.lock();
                st.redirects.push((
                    resp.status().as_u16(),
                    diagnose::redact_url(&url.to_string()),
                    diagnose::redact_url(&next.to_string()),
                ));
                st.url = Some(next.clone());
            }
            url = next;
        }
        Err(Failure::new(
            ErrorClass::Http,
            self.connector.place(&url),
            "too many redirects",
            "use the server's final URL",
        ))
    }

    async fn transport_failure(&self, e: &hyper_util::client::legacy::Error, url: &Uri) -> Failure {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(err) = cur {
            if let Some(f) = err.downcast_ref::<Failure>() {
                let mut f = f.clone();
                f.at.url = diagnose::redact_url(&url.to_string());
                return f;
            }
            cur = err.source();
        }
        let place = self.connector.place(url);
        if let Some(tls) = diagnose::find_rustls_error(e) {
            return diagnose::classify_tls(tls, place, self.connector.profile(), &[]);
        }
        // TLS 1.3 servers judge a client certificate after the handshake: the alert is often
        // lost behind a broken pipe. A fresh handshake that reads first surfaces it.
        if url.scheme_str() == Some("https")
            && let Some(f) = self.connector.recheck(url).await
        {
            return f;
        }
        if url.scheme_str() == Some("http") && e.to_string().contains("parse") {
            return Failure::new(
                ErrorClass::TlsOnPlaintextPort,
                place,
                "the server's answer is not HTTP (TLS on this port?)",
                "use an https:// URL",
            );
        }
        Failure::new(
            ErrorClass::Other,
            place,
            format!("the request failed: {e}"),
            "run mcpgate probe on the URL for a full diagnosis",
        )
    }

    async fn status_failure(
        &self,
        status: StatusCode,
        url: &Uri,
        resp: Response<Incoming>,
    ) -> Failure {
        let body = tokio::time::timeout(Duration::from_secs(2), resp.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| {
                String::from_utf8_lossy(&b.to_bytes())
                    .chars()
                    .take(300)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let shown = diagnose::redact_url(&url.to_string());
        let place = self.connector.place(url);
        let has_session = self.lock().session.is_some();
        let (summary, hint) = match status {
            StatusCode::NOT_FOUND if has_session => ("the server ended the MCP session (404 for its session id)".to_string(), "restart the client so it initializes a new session".to_string()),
            StatusCode::NOT_FOUND => (format!("404 Not Found: no MCP endpoint at {shown}"), "check the URL's path (often /mcp for Streamable HTTP or /sse for SSE)".to_string()),
            StatusCode::UNAUTHORIZED => ("401 Unauthorized: the server wants credentials".to_string(), "send a token: --bearer-env VAR, or --header 'Authorization: Bearer ...'".to_string()),
            StatusCode::FORBIDDEN => ("403 Forbidden".to_string(), "the server refused this client (token scope, Origin or Host checks); see the server's message".to_string()),
            StatusCode::BAD_REQUEST if self.lock().mode == Mode::Sse && self.lock().post_url.is_none() => (
                format!("400 Bad Request opening an SSE stream at {shown}"),
                "this may be a Streamable HTTP endpoint: try --transport http (or the server's /sse URL)".to_string(),
            ),
            StatusCode::METHOD_NOT_ALLOWED => (format!("405 Method Not Allowed at {shown}"), "the URL may be the other transport's endpoint: try --transport sse or --transport http".to_string()),
            s => (format!("HTTP {s}"), "see the server's message".to_string()),
        };
        let mut f = Failure::new(ErrorClass::Http, place, summary, hint);
        if !body.trim().is_empty() {
            f = f.cause(format!("server said: {}", body.trim()));
        }
        f
    }
}

/// Whether a serialized frame is a request (has both `method` and `id`).
/// The one JSON-RPC message of a JSON answer, or of an SSE answer's last event.
/// A request sent in its caller's task: the client's bytes to send, and the answer to hand
/// back as it came.
struct Inline {
    raw: Option<Bytes>,
    answer: Option<Bytes>,
}

/// A request `send_now` is sending; dropped before the answer came, it forgets the request
/// and tells the server it is cancelled.
struct Unanswered<'a> {
    remote: &'a Arc<RemoteUpstream>,
    sink: &'a Arc<dyn Sink>,
    /// Cleared once the send is done (the answer, or the error standing for it, was delivered).
    id: Option<Value>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        if self
            .remote
            .lock()
            .awaiting
            .remove(&jsonrpc::id_key(&id))
            .is_some()
        {
            let reason = "mcpgate: the client went away before the answer";
            self.remote.send(
                self.sink,
                jsonrpc::notification(
                    "notifications/cancelled",
                    serde_json::json!({"requestId": id, "reason": reason}),
                ),
            );
        }
    }
}

async fn read_answer(resp: Response<Incoming>) -> Option<Value> {
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    if !is_sse {
        return serde_json::from_slice(&body).ok();
    }
    let text = String::from_utf8_lossy(&body);
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(str::trim_start))
                .collect();
            serde_json::from_str::<Value>(&data.join("\n")).ok()
        })
        .filter(|m| jsonrpc::kind(m) == Kind::Response)
        .last()
}

/// Resolves a Location or endpoint reference against a base URL.
fn resolve(base: &Uri, reference: &str) -> Option<Uri> {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return reference.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let path = if reference.starts_with('/') {
        reference.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{dir}/{reference}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

fn same_origin(a: &Uri, b: &Uri) -> bool {
    let port = |u: &Uri| {
        u.port_u16().unwrap_or(if u.scheme_str() == Some("https") {
            443
        } else {
            80
        })
    };
    a.scheme_str() == b.scheme_str()
        && a.host().map(str::to_ascii_lowercase) == b.host().map(str::to_ascii_lowercase)
        && port(a) == port(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_against_the_base() {
        let base: Uri = "https://h:8443/a/sse".parse().unwrap();
        assert_eq!(
            resolve(&base, "/message?x=1").unwrap().to_string(),
            "https://h:8443/message?x=1"
        );
        assert_eq!(
            resolve(&base, "messages/?s=1").unwrap().to_string(),
            "https://h:8443/a/messages/?s=1"
        );
        assert!(same_origin(
            &"https://h:443/x".parse().unwrap(),
            &"https://H/y".parse().unwrap()
        ));
        assert!(!same_origin(
            &"https://h/x".parse().unwrap(),
            &"http://h/x".parse().unwrap()
        ));
    }
}
