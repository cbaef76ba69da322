//! The stdio upstream: one child process speaking newline-delimited JSON-RPC, shared by one
//! session (isolated mode) or many (shared mode).
//!
//! Every request sent to the child gets a fresh numeric id; the pending map turns the child's
//! response back into the client's id and session. When the child exits, every pending
//! request is answered at once with a JSON-RPC error, the child is restarted with backoff, and
//! the session's `initialize` is replayed so the new child is ready for the same client.
//! stderr goes to the log under the server's name. Children are killed and reaped on close.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::Sink;
use super::health::{Health, State as HealthState};
use crate::config::StdioSpec;
use crate::jsonrpc::{self, Kind, code};
use crate::transport::ndjson;

/// The longest line accepted from a child's stdout (a large tool result fits; garbage does not).
const MAX_LINE: usize = 64 << 20;
const QUEUE: usize = 1024;

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
    init: Option<InitCache>,
    closed: bool,
    /// Why the child is down, while it is.
    down_reason: Option<String>,
}

struct Pending {
    sink: Weak<dyn Sink>,
    original_id: Value,
    progress: Option<String>,
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

/// A child with its pipes wired, and the task reading its stdout.
struct Running {
    child: Child,
    reader: tokio::task::JoinHandle<()>,
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
        let child = match hub.spawn_child() {
            Ok(c) => c,
            Err(e) => {
                hub.health.set(HealthState::Failed, Some(e.clone()));
                return Err(e);
            }
        };
        hub.health.set(HealthState::Running, None);
        tokio::spawn(hub.clone().supervise(child));
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

    /// Forgets a session: its pending requests are dropped.
    pub fn detach(&self, sink: &Weak<dyn Sink>) {
        let mut st = self.lock();
        st.sinks
            .retain(|s| !Weak::ptr_eq(s, sink) && s.strong_count() > 0);
        st.pending.retain(|_, p| !Weak::ptr_eq(&p.sink, sink));
    }

    /// Stops the child (stdin closed, then killed after a grace period) and the supervisor.
    pub fn close(&self) {
        self.lock().closed = true;
        let _ = self.stop.send(true);
    }

    /// Sends a client frame to the child, remapping request ids.
    pub fn send(&self, from: &Arc<dyn Sink>, mut frame: Value) -> Result<(), SendError> {
        let weak = Arc::downgrade(from);
        let mut st = self.lock();
        match jsonrpc::kind(&frame) {
            Kind::Request => {
                let is_init = jsonrpc::method(&frame) == Some("initialize");
                if is_init {
                    if let Some(result) = st.init.as_ref().and_then(|i| i.result.clone()) {
                        // Shared child already initialized: answer from the cache.
                        drop(st);
                        let id = frame.get("id").cloned().unwrap_or(Value::Null);
                        from.response(json!({"jsonrpc": "2.0", "id": id, "result": result}));
                        return Ok(());
                    }
                }
                let stdin = st.stdin.clone().ok_or_else(|| self.down_error(&st))?;
                let upstream_id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let progress = jsonrpc::progress_token(&frame);
                let original_id =
                    jsonrpc::replace_id(&mut frame, json!(upstream_id)).unwrap_or(Value::Null);
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
                    upstream_id,
                    Pending {
                        sink: weak,
                        original_id,
                        progress,
                        purpose,
                    },
                );
                if let Err(e) = write(&stdin, &frame) {
                    st.pending.remove(&upstream_id);
                    return Err(e);
                }
                Ok(())
            }
            Kind::Notification => {
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
                        let found = st.pending.iter().find(|(_, p)| {
                            Weak::ptr_eq(&p.sink, &weak)
                                && Some(jsonrpc::id_key(&p.original_id)) == wanted
                        });
                        match found {
                            Some((uid, _)) => frame["params"]["requestId"] = json!(*uid),
                            None => return Ok(()), // already answered: nothing to cancel
                        }
                    }
                    _ => {}
                }
                let stdin = st.stdin.clone().ok_or_else(|| self.down_error(&st))?;
                write(&stdin, &frame)
            }
            // Answers to the server's own requests (sampling, elicitation, roots) keep their ids.
            Kind::Response => {
                let stdin = st.stdin.clone().ok_or_else(|| self.down_error(&st))?;
                write(&stdin, &frame)
            }
            Kind::Invalid => Err(SendError("not a JSON-RPC 2.0 message".into())),
        }
    }

    fn down_error(&self, st: &State) -> SendError {
        let why = st.down_reason.as_deref().unwrap_or("is not running");
        SendError(format!(
            "upstream {:?} {why}; it is being restarted, retry shortly",
            self.name
        ))
    }

    /// Starts a child and wires its pipes, so messages can be sent the moment this returns.
    fn spawn_child(self: &Arc<Self>) -> Result<Running, String> {
        let mut child = self.command_child()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the child was started without pipes".into());
        };
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
        tokio::spawn(write_loop(stdin, rx));
        tokio::spawn(stderr_loop(self.name.clone(), stderr));
        let reader = tokio::spawn(self.clone().read_loop(stdout));
        let replay = {
            let mut st = self.lock();
            st.stdin = Some(tx);
            st.down_reason = None;
            st.init
                .as_ref()
                .map(|i| (i.request.clone(), i.initialized_sent))
        };
        if let Some((request, initialized)) = replay {
            self.replay_initialize(request, initialized);
        }
        Ok(Running { child, reader })
    }

    fn command_child(&self) -> Result<Child, String> {
        let mut cmd = Command::new(&self.spec.command);
        cmd.args(&self.spec.args)
            .envs(&self.spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &self.spec.cwd {
            cmd.current_dir(cwd);
        }
        cmd.spawn().map_err(|e| {
            format!(
                "cannot start {:?} for upstream {:?}: {e}",
                self.spec.command, self.name
            )
        })
    }

    /// Runs one child after another until closed.
    async fn supervise(self: Arc<Self>, first: Running) {
        let mut child = first;
        let mut backoff = Duration::from_millis(100);
        let mut stop = self.stop.subscribe();
        loop {
            let started = Instant::now();
            let reason = self.run(&mut child, &mut stop).await;
            let Some(reason) = reason else { return };
            self.fail_pending(&reason);
            if self.lock().closed {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tracing::warn!(server = %self.name, "upstream {reason}; restarting in {backoff:?}");
            self.health.set(HealthState::Restarting, Some(reason));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                match self.spawn_child() {
                    Ok(c) => {
                        child = c;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(server = %self.name, "{e}; next try in {backoff:?}");
                        self.lock().down_reason = Some(format!("could not be restarted: {e}"));
                        self.health.set(HealthState::Failed, Some(e));
                    }
                }
            }
            self.health.set(HealthState::Running, None);
        }
    }

    /// Wires up one child and waits for it to exit. `None` means closed on purpose.
    async fn run(
        self: &Arc<Self>,
        running: &mut Running,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<String> {
        let Running { child, reader } = running;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = stop.changed() => {
                self.lock().stdin = None; // closes stdin: the polite way to ask a stdio server to exit
                if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                reader.abort();
                return None;
            }
        };
        self.lock().stdin = None;
        // Let the reader deliver what the child wrote before exiting.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut *reader).await;
        reader.abort();
        let reason = match status {
            Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "exited".to_string(),
            },
            Err(e) => format!("could not be waited for: {e}"),
        };
        self.lock().down_reason = Some(reason.clone());
        Some(reason)
    }

    fn replay_initialize(&self, mut request: Value, initialized: bool) {
        let uid = self.next_id.fetch_add(1, Ordering::Relaxed);
        request["id"] = json!(uid);
        let mut st = self.lock();
        let Some(stdin) = st.stdin.clone() else {
            return;
        };
        let nobody: Weak<dyn Sink> = Weak::<Nobody>::new();
        st.pending.insert(
            uid,
            Pending {
                sink: nobody,
                original_id: Value::Null,
                progress: None,
                purpose: Purpose::Replay,
            },
        );
        let _ = write(&stdin, &request);
        if initialized {
            let _ = write(
                &stdin,
                &jsonrpc::notification("notifications/initialized", json!({})),
            );
        }
        tracing::info!(server = %self.name, "replayed initialize to the restarted child");
    }

    fn fail_pending(&self, reason: &str) {
        let pending: Vec<Pending> = self.lock().pending.drain().map(|(_, p)| p).collect();
        for p in pending {
            if p.purpose == Purpose::Replay {
                continue;
            }
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

    async fn read_loop(self: Arc<Self>, stdout: tokio::process::ChildStdout) {
        let mut reader = BufReader::with_capacity(64 << 10, stdout);
        let mut buf = Vec::with_capacity(4096);
        loop {
            match ndjson::read_line(&mut reader, &mut buf, MAX_LINE).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) | Err(_) => return,
                Ok(Err(ndjson::TooLong)) => {
                    tracing::warn!(server = %self.name, "upstream wrote a line over {MAX_LINE} bytes to stdout; skipped");
                    continue;
                }
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Value>(&buf) {
                Ok(frame) => self.dispatch(frame),
                Err(e) => {
                    let shown: String = String::from_utf8_lossy(&buf).chars().take(200).collect();
                    tracing::warn!(server = %self.name, "upstream wrote non-JSON to stdout ({e}): {shown}");
                }
            }
        }
    }

    fn dispatch(&self, mut frame: Value) {
        match jsonrpc::kind(&frame) {
            Kind::Response => {
                let uid = frame.get("id").and_then(Value::as_u64);
                let entry = uid.and_then(|u| {
                    let mut st = self.lock();
                    let p = st.pending.remove(&u)?;
                    if p.purpose == Purpose::Initialize {
                        if let (Some(init), Some(result)) = (st.init.as_mut(), frame.get("result"))
                        {
                            init.result = Some(result.clone());
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
                jsonrpc::replace_id(&mut frame, p.original_id);
                if let Some(sink) = p.sink.upgrade() {
                    sink.response(frame);
                }
            }
            Kind::Notification if jsonrpc::method(&frame) == Some("notifications/progress") => {
                let token = frame.pointer("/params/progressToken").map(jsonrpc::id_key);
                let target = {
                    let st = self.lock();
                    st.pending
                        .values()
                        .find(|p| p.progress.is_some() && p.progress == token)
                        .map(|p| (p.sink.clone(), jsonrpc::id_key(&p.original_id)))
                };
                match target.and_then(|(s, k)| s.upgrade().map(|s| (s, k))) {
                    Some((sink, key)) => sink.related(&key, frame),
                    None => self.broadcast(frame),
                }
            }
            Kind::Notification => self.broadcast(frame),
            Kind::Request => {
                // A server-to-client request goes to the session most recently waiting on the
                // child (the one whose call it belongs to), or the only session there is.
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
                if let Some(sink) = target.and_then(|s| s.upgrade()) {
                    sink.unsolicited(frame);
                }
            }
            Kind::Invalid => {
                tracing::warn!(server = %self.name, "upstream sent a message that is not JSON-RPC 2.0; dropped");
            }
        }
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

async fn write_loop(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(line) = rx.recv().await {
        if stdin.write_all(&line).await.is_err() {
            return;
        }
    }
}

async fn stderr_loop(name: String, stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while let Ok(r) = ndjson::read_line(&mut reader, &mut buf, 16 << 10).await {
        match r {
            Ok(true) => {
                let line = String::from_utf8_lossy(&buf);
                tracing::info!(target: "mcpgate::upstream::stderr", server = %name, "{line}");
            }
            Ok(false) => return,
            Err(_) => {
                tracing::info!(target: "mcpgate::upstream::stderr", server = %name, "(a stderr line over 16 KiB, skipped)")
            }
        }
    }
}

/// A sink that is never alive: the owner of mcpgate's own replayed requests.
struct Nobody;

impl Sink for Nobody {
    fn response(&self, _: Value) {}
    fn related(&self, _: &str, _: Value) {}
    fn unsolicited(&self, _: Value) {}
}
