//! The gateway's fan-out: one downstream session over several upstreams, namespaced.
//!
//! Tools and prompts are listed as `<server>__<name>` (the separator is `__`, which server
//! names may not contain) and routed by that prefix; resources keep their URIs and are routed
//! by the server that listed them. `initialize` and the list methods are *gathered*: sent to
//! every member (following pagination), merged, and answered once. Everything else is
//! *forwarded* to one member under an id of the fan-out's own, mapped back on the way out.
//! A server's own requests get ids unique across members (`<server>/<id>`), so the client's
//! answer finds its way back. A member that cannot start or initialize is left out of the
//! lists, and its calls are answered with the reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde_json::{Map, Value, json};

use super::session::Link;
use crate::jsonrpc::{self, Kind, code};
use crate::upstream::Sink;

/// Joins a server's name and a tool or prompt name.
pub const SEPARATOR: &str = "__";

pub struct Fanout {
    members: Vec<Member>,
    downstream: Mutex<Weak<dyn Sink>>,
    state: Mutex<State>,
    next: AtomicU64,
    me: Weak<Fanout>,
}

/// How long a gathered method (initialize, lists) waits for a slow member before answering
/// with the others: one stuck server must not hold every client's `initialize`.
const GATHER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

struct Member {
    name: String,
    link: Option<Link>,
    sink: Arc<dyn Sink>,
}

#[derive(Default)]
struct State {
    ops: HashMap<u64, Op>,
    gathers: HashMap<u64, Gather>,
    /// Whether each member initialized (None: not yet, or never started).
    up: HashMap<usize, Result<(), String>>,
    /// Progress token key -> (the member asked, the downstream request it reports on).
    progress: HashMap<String, (usize, String)>,
    uri_owner: HashMap<String, usize>,
    /// Visible id key of a server request -> (member, the id it used).
    server_requests: HashMap<String, (usize, Value)>,
}

enum Op {
    Forward { member: usize, original: Value },
    Part { gather: u64, member: usize },
}

struct Gather {
    method: String,
    original: Value,
    params: Value,
    waiting: usize,
    items: HashMap<usize, Vec<Value>>,
    results: HashMap<usize, Result<Value, String>>,
    /// Pages fetched per member: a server that never stops paging is cut off.
    pages: HashMap<usize, u32>,
    /// The cursor last asked of each member.
    cursors: HashMap<usize, Value>,
}

/// The most pages of one list taken from one server.
const MAX_PAGES: u32 = 100;

/// Adapts one member's messages to the fan-out.
struct MemberSink {
    fanout: Weak<Fanout>,
    index: usize,
}

impl Sink for MemberSink {
    fn response(&self, frame: Value) {
        if let Some(f) = self.fanout.upgrade() {
            f.on_member_response(self.index, frame);
        }
    }
    fn related(&self, request_key: &str, frame: Value) {
        if let Some(f) = self.fanout.upgrade() {
            f.on_member_related(self.index, request_key, frame);
        }
    }
    fn unsolicited(&self, frame: Value) {
        if let Some(f) = self.fanout.upgrade() {
            f.on_member_unsolicited(self.index, frame);
        }
    }
}

impl Fanout {
    /// Builds a fan-out over members; a member whose link failed is down with its reason.
    pub fn new(members: Vec<(String, Result<Link, String>)>) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Fanout>| {
            let mut state = State::default();
            let members = members
                .into_iter()
                .enumerate()
                .map(|(index, (name, link))| {
                    let sink: Arc<dyn Sink> = Arc::new(MemberSink {
                        fanout: me.clone(),
                        index,
                    });
                    let link = match link {
                        Ok(l) => {
                            l.attach(Arc::downgrade(&sink));
                            Some(l)
                        }
                        Err(why) => {
                            tracing::warn!(upstream = %name, "left out of this session: {why}");
                            state.up.insert(index, Err(why));
                            None
                        }
                    };
                    Member { name, link, sink }
                })
                .collect();
            Self {
                members,
                downstream: Mutex::new(Weak::<Nobody>::new()),
                state: Mutex::new(state),
                next: AtomicU64::new(1),
                me: me.clone(),
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session the fan-out answers.
    pub fn set_downstream(&self, sink: Weak<dyn Sink>) {
        *self.downstream.lock().unwrap_or_else(|p| p.into_inner()) = sink;
    }

    fn downstream(&self) -> Option<Arc<dyn Sink>> {
        self.downstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
    }

    fn answer(&self, frame: Value) {
        if let Some(d) = self.downstream() {
            d.response(frame);
        }
    }

    fn fail(&self, id: Value, code: i64, message: impl Into<String>) {
        self.answer(jsonrpc::error(id, code, message));
    }

    pub fn close(&self) {
        for m in &self.members {
            if let Some(l) = &m.link {
                l.close(&Arc::downgrade(&m.sink));
            }
        }
    }

    /// Members that initialized (or all started ones, before initialize).
    fn live(&self) -> Vec<usize> {
        let st = self.lock();
        (0..self.members.len())
            .filter(|i| self.members[*i].link.is_some() && !matches!(st.up.get(i), Some(Err(_))))
            .collect()
    }

    fn member_by_name(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// A client frame.
    pub fn send(&self, frame: Value) {
        match jsonrpc::kind(&frame) {
            Kind::Request => self.request(frame),
            Kind::Notification => self.notification(frame),
            Kind::Response => self.answer_server_request(frame),
            Kind::Invalid => {}
        }
    }

    fn request(&self, mut frame: Value) {
        let id = frame.get("id").cloned().unwrap_or(Value::Null);
        let method = jsonrpc::method(&frame).unwrap_or("").to_string();
        let params = frame.get("params").cloned().unwrap_or(json!({}));
        match method.as_str() {
            "ping" => self.answer(json!({"jsonrpc": "2.0", "id": id, "result": {}})),
            "initialize" => {
                let all: Vec<usize> = (0..self.members.len())
                    .filter(|i| self.members[*i].link.is_some())
                    .collect();
                self.gather(&method, id, params, all);
            }
            "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "logging/setLevel" => {
                let mut p = params;
                if let Some(o) = p.as_object_mut() {
                    o.remove("cursor"); // everything comes back in one page
                }
                self.gather(&method, id, p, self.live());
            }
            "tools/call" | "prompts/get" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let Some((server, inner)) = name.split_once(SEPARATOR) else {
                    return self.fail(
                        id,
                        -32602,
                        format!("unknown name {name:?}: names here are <server>{SEPARATOR}<name>"),
                    );
                };
                let Some(m) = self.member_by_name(server) else {
                    return self.fail(
                        id,
                        -32602,
                        format!("no server {server:?} behind this gateway (from {name:?})"),
                    );
                };
                frame["params"]["name"] = json!(inner);
                self.forward(m, frame);
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
                let owner = self.lock().uri_owner.get(uri).copied();
                match owner.or_else(|| only(&self.live())) {
                    Some(m) => self.forward(m, frame),
                    None => self.fail(
                        id,
                        -32602,
                        format!("no server here listed the resource {uri:?}; list resources first"),
                    ),
                }
            }
            "completion/complete" => {
                let prompt = params
                    .pointer("/ref/name")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let uri = params
                    .pointer("/ref/uri")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let target = match (prompt, uri) {
                    (Some(n), _) => n.split_once(SEPARATOR).and_then(|(s, inner)| {
                        let m = self.member_by_name(s)?;
                        frame["params"]["ref"]["name"] = json!(inner);
                        Some(m)
                    }),
                    (None, Some(u)) => self.lock().uri_owner.get(&u).copied(),
                    _ => None,
                };
                match target {
                    Some(m) => self.forward(m, frame),
                    None => self.fail(
                        id,
                        -32602,
                        "cannot tell which server this completion is for",
                    ),
                }
            }
            other => match only(&self.live()) {
                Some(m) => self.forward(m, frame),
                None => self.fail(
                    id,
                    -32601,
                    format!("method {other:?} cannot be routed across several servers"),
                ),
            },
        }
    }

    /// Sends one request to one member under a fresh id.
    fn forward(&self, member: usize, mut frame: Value) {
        let original = frame.get("id").cloned().unwrap_or(Value::Null);
        if let Some(why) = self.down_reason(member) {
            return self.fail(original, code::UPSTREAM_UNAVAILABLE, why);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        frame["id"] = json!(n);
        {
            let mut st = self.lock();
            if let Some(token) = frame.pointer("/params/_meta/progressToken") {
                st.progress
                    .insert(jsonrpc::id_key(token), (member, jsonrpc::id_key(&original)));
            }
            st.ops.insert(
                n,
                Op::Forward {
                    member,
                    original: original.clone(),
                },
            );
        }
        if let Err(e) = self.send_to(member, frame) {
            self.lock().ops.remove(&n);
            self.fail(original, code::UPSTREAM_UNAVAILABLE, e);
        }
    }

    fn down_reason(&self, member: usize) -> Option<String> {
        let name = &self.members[member].name;
        if self.members[member].link.is_none() {
            let st = self.lock();
            let why = st
                .up
                .get(&member)
                .and_then(|r| r.as_ref().err())
                .cloned()
                .unwrap_or_default();
            return Some(format!("upstream {name:?} is down: {why}"));
        }
        match self.lock().up.get(&member) {
            Some(Err(why)) => Some(format!("upstream {name:?} is down: {why}")),
            _ => None,
        }
    }

    fn send_to(&self, member: usize, frame: Value) -> Result<(), String> {
        let m = &self.members[member];
        match &m.link {
            Some(l) => l.send_as(&m.sink, frame),
            None => Err(format!("upstream {:?} is not running", m.name)),
        }
    }

    /// Sends a request to several members and answers once they all have.
    fn gather(&self, method: &str, original: Value, params: Value, members: Vec<usize>) {
        if members.is_empty() {
            return self.fail(
                original,
                code::UPSTREAM_UNAVAILABLE,
                "no upstream server is available",
            );
        }
        let g = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().gathers.insert(
            g,
            Gather {
                method: method.to_string(),
                original,
                params: params.clone(),
                waiting: members.len(),
                items: HashMap::new(),
                results: HashMap::new(),
                pages: HashMap::new(),
                cursors: HashMap::new(),
            },
        );
        for m in members {
            self.send_part(g, m, method, params.clone());
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(GATHER_DEADLINE).await;
            if let Some(f) = me.upgrade() {
                f.expire_gather(g);
            }
        });
    }

    /// Answers a gather with what came, counting members still silent as failed.
    fn expire_gather(&self, gather: u64) {
        let silent: Vec<usize> = {
            let mut st = self.lock();
            let Some(g) = st.gathers.get(&gather) else {
                return;
            };
            let answered: Vec<usize> = g.results.keys().copied().collect();
            let mut silent = Vec::new();
            st.ops.retain(|_, op| match op {
                Op::Part { gather: og, member } if *og == gather && !answered.contains(member) => {
                    silent.push(*member);
                    false
                }
                _ => true,
            });
            silent.sort_unstable();
            silent.dedup();
            silent
        };
        for m in silent {
            let why = format!("did not answer within {}s", GATHER_DEADLINE.as_secs());
            self.part_done(gather, m, Err(why));
        }
    }

    fn send_part(&self, gather: u64, member: usize, method: &str, params: Value) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().ops.insert(n, Op::Part { gather, member });
        let frame = json!({"jsonrpc": "2.0", "id": n, "method": method, "params": params});
        if let Err(e) = self.send_to(member, frame) {
            self.lock().ops.remove(&n);
            self.part_done(gather, member, Err(e));
        }
    }

    fn notification(&self, mut frame: Value) {
        if jsonrpc::method(&frame) == Some("notifications/cancelled") {
            let wanted = frame.pointer("/params/requestId").map(jsonrpc::id_key);
            let found = {
                let mut st = self.lock();
                let hit = st
                    .ops
                    .iter()
                    .find(|(_, op)| matches!(op, Op::Forward { original, .. } if Some(jsonrpc::id_key(original)) == wanted))
                    .map(|(n, _)| *n);
                hit.and_then(|n| st.ops.remove(&n).map(|op| (n, op)))
            };
            if let Some((n, Op::Forward { member, original })) = found {
                let key = jsonrpc::id_key(&original);
                self.lock().progress.retain(|_, (_, k)| *k != key);
                frame["params"]["requestId"] = json!(n);
                let _ = self.send_to(member, frame);
                self.fail(
                    original,
                    code::REQUEST_CANCELLED,
                    "request cancelled by the client",
                );
            }
            return;
        }
        for m in self.live() {
            let _ = self.send_to(m, frame.clone());
        }
    }

    fn answer_server_request(&self, mut frame: Value) {
        let key = frame.get("id").map(jsonrpc::id_key).unwrap_or_default();
        let Some((member, id)) = self.lock().server_requests.remove(&key) else {
            return;
        };
        frame["id"] = id;
        let _ = self.send_to(member, frame);
    }

    fn on_member_response(&self, member: usize, mut frame: Value) {
        let Some(n) = frame.get("id").and_then(Value::as_u64) else {
            return;
        };
        // Only the member an op was sent to may answer it: one upstream cannot answer (or
        // forge answers to) another's requests.
        let op = {
            let mut st = self.lock();
            let owned = matches!(st.ops.get(&n), Some(Op::Forward { member: m, .. } | Op::Part { member: m, .. }) if *m == member);
            if owned { st.ops.remove(&n) } else { None }
        };
        match op {
            Some(Op::Forward { original, .. }) => {
                let key = jsonrpc::id_key(&original);
                self.lock().progress.retain(|_, (_, k)| *k != key);
                frame["id"] = original;
                self.answer(frame);
            }
            Some(Op::Part { gather, member: m }) => {
                debug_assert_eq!(m, member);
                let outcome = match (frame.get("result"), frame.get("error")) {
                    (Some(r), _) => Ok(r.clone()),
                    (None, Some(e)) => Err(e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("error")
                        .to_string()),
                    _ => Err("an answer with neither result nor error".into()),
                };
                self.part_done(gather, m, outcome);
            }
            None => {}
        }
    }

    fn part_done(&self, gather: u64, member: usize, outcome: Result<Value, String>) {
        let mut st = self.lock();
        let Some(g) = st.gathers.get_mut(&gather) else {
            return;
        };
        // A list page with a cursor: ask for the next page, keep what came.
        if let Ok(result) = &outcome
            && let Some(list_key) = list_key(&g.method)
        {
            let page = result
                .get(list_key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            g.items.entry(member).or_default().extend(page);
            let pages = g.pages.entry(member).or_default();
            *pages += 1;
            let more = *pages < MAX_PAGES;
            if *pages == MAX_PAGES {
                tracing::warn!(upstream = %self.members[member].name, "{} still paging after {MAX_PAGES} pages; the rest is left out", g.method);
            }
            // A server that hands back the cursor it was given would loop: stop there.
            let repeated = result.get("nextCursor").is_some()
                && result.get("nextCursor") == g.cursors.get(&member);
            if let Some(cursor) = result
                .get("nextCursor")
                .filter(|c| !c.is_null() && more && !repeated)
                .cloned()
            {
                let mut params = g.params.clone();
                g.cursors.insert(member, cursor.clone());
                params["cursor"] = cursor;
                let method = g.method.clone();
                drop(st);
                return self.send_part(gather, member, &method, params);
            }
        }
        g.results.insert(member, outcome);
        g.waiting -= 1;
        if g.waiting > 0 {
            return;
        }
        let Some(g) = st.gathers.remove(&gather) else {
            return;
        };
        if g.method == "initialize" {
            for (m, r) in &g.results {
                st.up
                    .insert(*m, r.as_ref().map(|_| ()).map_err(Clone::clone));
            }
        }
        let answer = self.merge(&mut st, &g);
        drop(st);
        self.answer(answer);
    }

    fn merge(&self, st: &mut State, g: &Gather) -> Value {
        let mut order: Vec<usize> = g.results.keys().copied().collect();
        order.sort_unstable();
        for m in &order {
            if let Some(Err(why)) = g.results.get(m) {
                tracing::warn!(upstream = %self.members[*m].name, "{} failed: {why}; its entries are left out", g.method);
            }
        }
        let ok: Vec<(usize, &Value)> = order
            .iter()
            .filter_map(|m| g.results.get(m)?.as_ref().ok().map(|r| (*m, r)))
            .collect();
        if ok.is_empty() {
            let reasons: Vec<String> = order
                .iter()
                .filter_map(|m| {
                    g.results
                        .get(m)?
                        .as_ref()
                        .err()
                        .map(|e| format!("{}: {e}", self.members[*m].name))
                })
                .collect();
            return jsonrpc::error(
                g.original.clone(),
                code::UPSTREAM_UNAVAILABLE,
                format!("every upstream failed {}: {}", g.method, reasons.join("; ")),
            );
        }
        let result = match g.method.as_str() {
            "initialize" => self.merge_initialize(g, &ok),
            "logging/setLevel" => json!({}),
            method => {
                let key = list_key(method).unwrap_or("items");
                let mut all = Vec::new();
                for (m, _) in &ok {
                    for mut item in g.items.get(m).cloned().unwrap_or_default() {
                        let server = &self.members[*m].name;
                        match method {
                            "tools/list" | "prompts/list" => {
                                if let Some(n) = item.get("name").and_then(Value::as_str) {
                                    item["name"] = json!(format!("{server}{SEPARATOR}{n}"));
                                }
                            }
                            "resources/list" => {
                                if let Some(u) = item.get("uri").and_then(Value::as_str) {
                                    st.uri_owner.insert(u.to_string(), *m);
                                }
                            }
                            _ => {}
                        }
                        all.push(item);
                    }
                }
                json!({ key: all })
            }
        };
        json!({"jsonrpc": "2.0", "id": g.original, "result": result})
    }

    fn merge_initialize(&self, g: &Gather, ok: &[(usize, &Value)]) -> Value {
        let asked = g
            .params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let versions: Vec<&str> = ok
            .iter()
            .filter_map(|(_, r)| r.get("protocolVersion").and_then(Value::as_str))
            .collect();
        // The client's version if every server took it, else the oldest one a server chose.
        let version = if versions.iter().all(|v| *v == asked) {
            asked.to_string()
        } else {
            versions.iter().min().copied().unwrap_or(asked).to_string()
        };
        let mut caps = Map::new();
        let mut instructions = Vec::new();
        for (m, r) in ok {
            if let Some(c) = r.get("capabilities").and_then(Value::as_object) {
                for (k, v) in c {
                    let entry = caps.entry(k.clone()).or_insert_with(|| json!({}));
                    if let (Some(e), Some(v)) = (entry.as_object_mut(), v.as_object()) {
                        for (kk, vv) in v {
                            if vv == &json!(true) || !e.contains_key(kk) {
                                e.insert(kk.clone(), vv.clone());
                            }
                        }
                    }
                }
            }
            if let Some(i) = r.get("instructions").and_then(Value::as_str) {
                instructions.push(format!("[{}] {i}", self.members[*m].name));
            }
        }
        for k in ["tools", "prompts", "resources"] {
            if let Some(o) = caps.get_mut(k).and_then(Value::as_object_mut) {
                o.insert("listChanged".into(), json!(true));
            }
        }
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": caps,
            "serverInfo": {"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")},
        });
        if !instructions.is_empty() {
            result["instructions"] = json!(instructions.join("\n"));
        }
        result
    }

    fn on_member_related(&self, member: usize, request_key: &str, frame: Value) {
        let original =
            request_key
                .parse::<u64>()
                .ok()
                .and_then(|n| match self.lock().ops.get(&n) {
                    Some(Op::Forward {
                        original,
                        member: m,
                    }) if *m == member => Some(jsonrpc::id_key(original)),
                    _ => None,
                });
        let Some(d) = self.downstream() else { return };
        let Some(frame) = self.rewrite_from_member(member, frame) else {
            return;
        };
        match original {
            Some(key) => d.related(&key, frame),
            None => d.unsolicited(frame),
        }
    }

    fn on_member_unsolicited(&self, member: usize, frame: Value) {
        let Some(d) = self.downstream() else { return };
        let progress_key = match jsonrpc::method(&frame) {
            Some("notifications/progress") => {
                let token = frame
                    .pointer("/params/progressToken")
                    .map(jsonrpc::id_key)
                    .unwrap_or_default();
                // Only the member the request went to may report progress on it.
                self.lock()
                    .progress
                    .get(&token)
                    .filter(|(m, _)| *m == member)
                    .map(|(_, k)| k.clone())
            }
            _ => None,
        };
        let Some(frame) = self.rewrite_from_member(member, frame) else {
            return;
        };
        match progress_key {
            Some(k) => d.related(&k, frame),
            None => d.unsolicited(frame),
        }
    }

    /// What a member's own request or cancellation looks like downstream: ids made unique
    /// across members (`<server>/<id>`) and recorded, so the client's answer finds its way
    /// back. Whatever arrives on a request's stream or on its own goes through here.
    fn rewrite_from_member(&self, member: usize, mut frame: Value) -> Option<Value> {
        let server = &self.members[member].name;
        match jsonrpc::kind(&frame) {
            Kind::Request => {
                let id = frame.get("id").cloned().unwrap_or(Value::Null);
                let visible = json!(format!("{server}/{}", id_text(&id)));
                self.lock()
                    .server_requests
                    .insert(jsonrpc::id_key(&visible), (member, id));
                frame["id"] = visible;
                Some(frame)
            }
            Kind::Notification if jsonrpc::method(&frame) == Some("notifications/cancelled") => {
                let id = frame
                    .pointer("/params/requestId")
                    .cloned()
                    .unwrap_or(Value::Null);
                let visible = json!(format!("{server}/{}", id_text(&id)));
                self.lock()
                    .server_requests
                    .remove(&jsonrpc::id_key(&visible));
                frame["params"]["requestId"] = visible;
                Some(frame)
            }
            Kind::Notification => Some(frame),
            _ => None,
        }
    }
}

/// An id as text: a string as it is, a number in decimal.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn only(members: &[usize]) -> Option<usize> {
    match members {
        [one] => Some(*one),
        _ => None,
    }
}

fn list_key(method: &str) -> Option<&'static str> {
    match method {
        "tools/list" => Some("tools"),
        "prompts/list" => Some("prompts"),
        "resources/list" => Some("resources"),
        "resources/templates/list" => Some("resourceTemplates"),
        _ => None,
    }
}

/// A downstream that is never there (before the session is set).
struct Nobody;

impl Sink for Nobody {
    fn response(&self, _: Value) {}
    fn related(&self, _: &str, _: Value) {}
    fn unsolicited(&self, _: Value) {}
}
