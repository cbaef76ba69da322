//! Building HTTP responses: JSON bodies, JSON-RPC errors with a status, refusals.

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::body::Body;
use super::guard::Refusal;
use crate::jsonrpc::code;
use crate::router::CreateError;

pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    json_bytes(status, Bytes::from(value.to_string()))
}

/// A JSON body already serialized (an upstream's answer passed on as it came).
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::bytes(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An HTTP error carrying a JSON-RPC error body (what MCP SDKs expect to read).
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let c = match status {
        StatusCode::BAD_REQUEST => code::INVALID_REQUEST,
        _ => code::UPSTREAM_UNAVAILABLE,
    };
    json(
        status,
        &json!({"jsonrpc": "2.0", "id": null, "error": {"code": c, "message": message.into()}}),
    )
}

pub fn refused(refusal: Refusal) -> Response<Body> {
    match refusal {
        Refusal::Forbidden(why) => error(StatusCode::FORBIDDEN, why),
        Refusal::Unauthorized { token_given } => {
            let (msg, challenge) = if token_given {
                (
                    "the bearer token is not valid",
                    "Bearer realm=\"mcpgate\", error=\"invalid_token\"",
                )
            } else {
                (
                    "a bearer token is required: send Authorization: Bearer <token>",
                    "Bearer realm=\"mcpgate\"",
                )
            };
            let mut r = error(StatusCode::UNAUTHORIZED, msg);
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            r
        }
    }
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// The HTTP answer to a session that could not be created.
pub fn session_refused(e: CreateError) -> Response<Body> {
    match e {
        CreateError::TooManySessions(n) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many sessions (server.max_sessions is {n}); close idle sessions or raise the limit"
            ),
        ),
        CreateError::Upstream(why) => error(StatusCode::BAD_GATEWAY, why),
    }
}
