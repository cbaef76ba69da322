//! Streamable HTTP at `/mcp` (MCP 2025-03-26, 2025-06-18, 2025-11-25; the stateless 2026-07-28
//! requests branch off to `modern`).
//!
//! POST carries client messages: notifications and responses get 202; requests get their
//! response as JSON when the upstream's first word on it is the response itself, or as an SSE
//! stream when progress, logging or a server request comes first. GET opens the session's
//! stream for server-initiated messages; DELETE ends the session. `Mcp-Session-Id` is issued
//! with the initialize response and required after it; `MCP-Protocol-Version` must match the
//! negotiated version when sent.

// Handlers return `Err(Response)` to answer early; the response goes straight to hyper, so
// boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::Value;

use super::body::{Body, SseBody};
use super::{App, ConnInfo, reply};
use crate::jsonrpc::{self, Kind};
use crate::router::{Flavor, Router, Session};
use crate::upstream::Sink;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";
/// Revisions whose HTTP transport mcpgate speaks.
pub const KNOWN_VERSIONS: &[&str] = crate::transport::stateless::SESSION_VERSIONS;

pub async fn handle(
    app: &Arc<App>,
    router: &Arc<Router>,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    match *req.method() {
        Method::POST => post(app, router, conn, req).await,
        Method::GET | Method::DELETE if super::modern::header_is_modern(req.headers()) => {
            super::modern::not_allowed()
        }
        Method::GET => get(router, req),
        Method::DELETE => delete(router, req),
        _ => {
            let mut r = reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST, GET or DELETE on /mcp",
            );
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, POST, DELETE"));
            r
        }
    }
}

/// What the client accepts in return.
struct Accepts {
    json: bool,
    sse: bool,
}

fn accepts(headers: &HeaderMap) -> Accepts {
    let text = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let any = text.contains("*/*");
    Accepts {
        json: any || text.contains("application/json") || text.contains("application/*"),
        sse: any || text.contains("text/event-stream") || text.contains("text/*"),
    }
}

/// Reads the body within the size limit and parses it as JSON.
pub(super) async fn read_json(app: &App, req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let (parts, body) = req.into_parts();
    read_json_raw(app, &parts.headers, body)
        .await
        .map(|(v, _)| v)
}

/// `read_json` of a request already split, keeping the body's bytes too (to forward them as
/// they came).
async fn read_json_raw(
    app: &App,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(Value, Bytes), Response<Body>> {
    let limit = app.limits.max_body_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.is_empty() && !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {ct:?} is not application/json"),
        ));
    }
    // A body trickled in slowly must not hold a connection forever.
    let read = http_body_util::Limited::new(body, limit).collect();
    let Ok(collected) = tokio::time::timeout(app.limits.header_read_timeout * 3, read).await else {
        return Err(reply::error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        ));
    };
    let bytes: Bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large(limit));
        }
        Err(e) => {
            return Err(reply::error(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            ));
        }
    };
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        reply::json(
            StatusCode::BAD_REQUEST,
            &jsonrpc::error(
                Value::Null,
                jsonrpc::code::PARSE_ERROR,
                format!("parse error: {e}"),
            ),
        )
    })?;
    Ok((value, bytes))
}

fn too_large(limit: usize) -> Response<Body> {
    reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is over {limit} bytes (server.max_body_bytes)"),
    )
}

/// Splits a body into messages, refusing invalid ones and batches where the version forbids them.
pub(super) fn messages(body: Value, batches_allowed: bool) -> Result<Vec<Value>, Response<Body>> {
    let list = match body {
        Value::Array(items) if !batches_allowed => {
            let _ = items;
            return Err(reply::error(
                StatusCode::BAD_REQUEST,
                "JSON-RPC batches are not allowed in this protocol version (removed in 2025-06-18)",
            ));
        }
        Value::Array(items) if items.is_empty() => {
            return Err(reply::error(
                StatusCode::BAD_REQUEST,
                "an empty JSON-RPC batch is invalid",
            ));
        }
        Value::Array(items) => items,
        single => vec![single],
    };
    for m in &list {
        if jsonrpc::kind(m) == Kind::Invalid {
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            return Err(reply::json(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(
                    id,
                    jsonrpc::code::INVALID_REQUEST,
                    "not a valid JSON-RPC 2.0 message",
                ),
            ));
        }
    }
    Ok(list)
}

/// Finds the session of a request, answering 400 or 404 when there is none.
fn session_of(router: &Router, headers: &HeaderMap) -> Result<Arc<Session>, Response<Body>> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(reply::error(
            StatusCode::BAD_REQUEST,
            "missing Mcp-Session-Id header; send initialize first to get one",
        ));
    };
    match router.get(id) {
        Some(s) if s.flavor == Flavor::Streamable => Ok(s),
        _ => Err(reply::error(
            StatusCode::NOT_FOUND,
            "session not found (it ended or expired); initialize a new one",
        )),
    }
}

/// `MCP-Protocol-Version`, when sent, must be a revision mcpgate speaks (or the one the
/// upstream agreed to); otherwise 400, as the spec says. A known revision other than the
/// negotiated one is accepted: the spec asks only for invalid or unsupported values to be
/// refused, and clients (the conformance suite among them) send older known ones.
fn check_version(session: &Session, headers: &HeaderMap) -> Result<(), Response<Body>> {
    let Some(v) = headers.get(VERSION_HEADER) else {
        return Ok(());
    };
    let v = v.to_str().unwrap_or("");
    if KNOWN_VERSIONS.contains(&v) || session.protocol_version().as_deref() == Some(v) {
        return Ok(());
    }
    Err(reply::error(
        StatusCode::BAD_REQUEST,
        format!(
            "unsupported MCP-Protocol-Version {v:?}; supported: {}",
            KNOWN_VERSIONS.join(", ")
        ),
    ))
}

async fn post(
    app: &Arc<App>,
    router: &Arc<Router>,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    let acc = accepts(req.headers());
    if !acc.json && !acc.sse {
        return reply::error(
            StatusCode::NOT_ACCEPTABLE,
            "Accept must include application/json and text/event-stream",
        );
    }
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let (body, raw) = match read_json_raw(app, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // A single message may go upstream as the client wrote it.
    let raw = (!body.is_array()).then_some(raw);
    if super::modern::claims(&headers, &body) {
        if !acc.json {
            return reply::error(
                StatusCode::NOT_ACCEPTABLE,
                "Accept must include application/json: mcpgate answers 2026-07-28 requests as JSON",
            );
        }
        return super::modern::post(router, &headers, body, app.limits.request_timeout, acc.sse)
            .await;
    }
    let is_initialize =
        jsonrpc::kind(&body) == Kind::Request && jsonrpc::method(&body) == Some("initialize");
    let (session, created) = if is_initialize {
        if headers.contains_key(SESSION_HEADER) {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "initialize must not carry Mcp-Session-Id: a session is initialized once",
            );
        }
        let identity = conn.tls.as_ref().and_then(|t| t.client_subject.clone());
        match router.create_session(Flavor::Streamable, identity).await {
            Ok(s) => (s, true),
            Err(e) => return reply::session_refused(e),
        }
    } else {
        let s = match session_of(router, &headers) {
            Ok(s) => s,
            Err(r) => return r,
        };
        if let Err(r) = check_version(&s, &headers) {
            return r;
        }
        (s, false)
    };
    let batches = session
        .protocol_version()
        .as_deref()
        .is_none_or(|v| v <= "2025-03-26");
    let list = match messages(body, batches) {
        Ok(l) => l,
        Err(r) => {
            if created {
                router.remove(&session.id);
            }
            return r;
        }
    };
    let mut awaiting: HashMap<String, Value> = HashMap::new();
    for m in &list {
        if jsonrpc::kind(m) == Kind::Request {
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            awaiting.insert(jsonrpc::id_key(&id), id);
        }
    }
    if awaiting.is_empty() {
        for m in list {
            session.send(m);
        }
        return reply::empty(StatusCode::ACCEPTED);
    }
    let (tx, mut rx) = crate::router::session::stream_channel();
    if let Err(taken) = session.add_waiters(awaiting.keys(), &tx) {
        let id = awaiting.get(taken).cloned().unwrap_or(Value::Null);
        let message = format!(
            "request id {id} is already in flight in this session; MCP requires a new id for every request in a session"
        );
        return reply::json(
            StatusCode::BAD_REQUEST,
            &jsonrpc::error(id, jsonrpc::code::INVALID_REQUEST, message),
        );
    }
    drop(tx);
    let single = list.len() == 1;
    let timeout = app.limits.request_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    if single {
        // A JSON answer the upstream sent as one response to this request is passed on as
        // it came; anything else is awaited below, where the timeout answers a late one.
        for m in list {
            let sent = tokio::time::timeout_at(deadline, session.send_now(m, raw.clone())).await;
            match sent {
                Ok(Some(answer)) if acc.json => {
                    awaiting.keys().for_each(|k| session.remove_waiter(k));
                    return reply::json_bytes(StatusCode::OK, answer);
                }
                // A client that takes SSE only gets the answer as an event, the usual way.
                Ok(Some(answer)) => match serde_json::from_slice(&answer) {
                    Ok(v) => Sink::response(&*session, v),
                    Err(e) => {
                        tracing::warn!("an upstream answer checked as JSON did not parse: {e}")
                    }
                },
                _ => {}
            }
        }
    } else {
        for m in list {
            session.send(m);
        }
    }
    let cleanup = {
        let session = session.clone();
        let keys: Vec<String> = awaiting.keys().cloned().collect();
        move || keys.iter().for_each(|k| session.remove_waiter(k))
    };
    let timed_out = |id: Value| {
        session.send(jsonrpc::notification(
            "notifications/cancelled",
            serde_json::json!({"requestId": id.clone(), "reason": "mcpgate: request timed out"}),
        ));
        jsonrpc::error(
            id,
            jsonrpc::code::UPSTREAM_TIMEOUT,
            format!(
                "upstream did not answer within {}s (server.request_timeout)",
                timeout.as_secs_f64()
            ),
        )
    };
    let mut response = if single && acc.json {
        // Fast path: if the upstream's first message for this request is its response, it goes
        // back as JSON. Anything else first opens an SSE stream, or, for a client that takes
        // JSON only, is skipped until the response comes.
        let id = awaiting.values().next().cloned().unwrap_or(Value::Null);
        let first = loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(f)) if acc.sse || jsonrpc::kind(&f) == Kind::Response => break f,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    break jsonrpc::error(
                        id,
                        jsonrpc::code::UPSTREAM_UNAVAILABLE,
                        "the session closed before the upstream answered",
                    );
                }
                Err(_) => {
                    cleanup();
                    break timed_out(id);
                }
            }
        };
        if jsonrpc::kind(&first) == Kind::Response {
            cleanup();
            reply::json(StatusCode::OK, &first)
        } else {
            let prelude = crate::transport::sse::message(&first);
            sse_response(
                SseBody::until_answered(rx, Some(prelude), awaiting, timeout).on_drop(cleanup),
            )
        }
    } else if acc.sse {
        sse_response(SseBody::until_answered(rx, None, awaiting, timeout).on_drop(cleanup))
    } else {
        // A batch from a JSON-only client: collect the responses into one array; a request
        // unanswered by the deadline gets its own timeout error.
        let mut out = Vec::new();
        let mut missing = awaiting.clone();
        while !missing.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(f)) if jsonrpc::kind(&f) == Kind::Response => {
                    if let Some(id) = f.get("id") {
                        missing.remove(&jsonrpc::id_key(id));
                    }
                    out.push(f);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        cleanup();
        out.extend(missing.into_values().map(timed_out));
        reply::json(StatusCode::OK, &Value::Array(out))
    };
    if created && let Ok(v) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

pub(super) fn sse_response(body: SseBody) -> Response<Body> {
    let mut r = Response::new(Body::Sse(Box::new(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

fn get(router: &Arc<Router>, req: Request<Incoming>) -> Response<Body> {
    let text = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !text.contains("text/event-stream") {
        return reply::error(
            StatusCode::NOT_ACCEPTABLE,
            "GET /mcp opens an SSE stream: Accept must include text/event-stream",
        );
    }
    let session = match session_of(router, req.headers()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = check_version(&session, req.headers()) {
        return r;
    }
    match session.attach_stream() {
        Some(rx) => sse_response(SseBody::open(rx, None)),
        None => reply::error(
            StatusCode::CONFLICT,
            "this session already has a GET stream open",
        ),
    }
}

fn delete(router: &Arc<Router>, req: Request<Incoming>) -> Response<Body> {
    let session = match session_of(router, req.headers()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    router.remove(&session.id);
    reply::empty(StatusCode::OK)
}
