//! The legacy HTTP+SSE transport (MCP 2024-11-05) for older clients.
//!
//! `GET /sse` opens a session and its one stream; the first event, `endpoint`, tells the
//! client where to POST (`/message?sessionId=...`). Every message from the upstream,
//! responses included, goes down that stream. Closing the stream ends the session.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::body::{Body, SseBody};
use super::streamable::{messages, read_json, sse_response};
use super::{App, ConnInfo, reply};
use crate::router::{Flavor, Router};
use crate::transport::sse;

/// Opens a legacy session; `base` is the path prefix (`` or `/servers/<name>`).
pub async fn open(
    router: &Arc<Router>,
    base: &str,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() != Method::GET {
        return reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /sse opens the legacy SSE stream",
        );
    }
    let identity = conn.tls.as_ref().and_then(|t| t.client_subject.clone());
    let session = match router.create_session(Flavor::Legacy, identity).await {
        Ok(s) => s,
        Err(e) => return reply::session_refused(e),
    };
    let Some(rx) = session.attach_stream() else {
        return reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "new session already had a stream",
        );
    };
    let endpoint: Bytes = sse::event(
        Some("endpoint"),
        None,
        &format!("{base}/message?sessionId={}", session.id),
    );
    let router = router.clone();
    let id = session.id.clone();
    sse_response(SseBody::open(rx, Some(endpoint)).on_drop(move || {
        router.remove(&id);
    }))
}

pub async fn post(app: &Arc<App>, router: &Arc<Router>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST messages to the endpoint the SSE stream announced",
        );
    }
    let id = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix("sessionId=")
                .or_else(|| kv.strip_prefix("session_id="))
        })
        .map(str::to_string);
    let Some(id) = id else {
        return reply::error(StatusCode::BAD_REQUEST, "missing sessionId query parameter");
    };
    let session = match router.get(&id) {
        Some(s) if s.flavor == Flavor::Legacy => s,
        _ => {
            return reply::error(
                StatusCode::NOT_FOUND,
                "session not found (its SSE stream closed); open /sse again",
            );
        }
    };
    let body = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let list = match messages(body, true) {
        Ok(l) => l,
        Err(r) => return r,
    };
    for m in list {
        session.send(m);
    }
    let mut r = Response::new(Body::bytes(Bytes::from_static(b"Accepted")));
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}
