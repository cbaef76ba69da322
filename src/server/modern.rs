//! Streamable HTTP as the 2026-07-28 revision has it, beside the 2025 sessions on `/mcp`.
//!
//! A 2026-07-28 request stands alone: no initialize, no `Mcp-Session-Id`; its protocol version
//! and client capabilities ride in `params._meta`, and the `MCP-Protocol-Version`, `Mcp-Method`
//! and `Mcp-Name` headers repeat the body so infrastructure can route on them. mcpgate checks
//! that they agree (HeaderMismatch, -32020), that the version is one it speaks
//! (UnsupportedProtocolVersion, -32022) and that the method exists in the revision (-32601,
//! HTTP 404); answers `server/discover` itself; and carries the rest to the upstream through
//! the router's bridge session (2025-11-25 on the upstream side), shaping each result as the
//! revision asks (`resultType`, `serverInfo`, cache hints). An answer is JSON, or an SSE stream
//! scoped to the request when notifications (progress) come before it; closing the exchange
//! early cancels the request upstream.

use std::collections::HashMap;
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::body::{Body, SseBody};
use super::reply;
use super::streamable::{KNOWN_VERSIONS, VERSION_HEADER};
use crate::jsonrpc::{self, Kind, code};
use crate::router::session::stream_channel;
use crate::router::{CreateError, Router};

use crate::transport::stateless::{
    self, CARRIED as BRIDGED, META_CAPABILITIES, META_PREFIX, META_SERVER_INFO, META_VERSION,
    VERSIONS as MODERN_VERSIONS,
};

/// Results that must carry cache hints (`ttlMs`, `cacheScope`).
const CACHEABLE: &[&str] = &[
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// True when the `MCP-Protocol-Version` header names a revision after the 2025 ones.
pub fn header_is_modern(headers: &HeaderMap) -> bool {
    headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches([' ', '\t']))
        .is_some_and(|v| {
            let date = v.len() == 10 && v.bytes().all(|b| b.is_ascii_digit() || b == b'-');
            date && !KNOWN_VERSIONS.contains(&v) && v >= MODERN_VERSIONS[0]
        })
}

/// True when a POST belongs to the stateless revision: its body claims a version in `_meta`,
/// or its version header is a 2026 one.
pub fn claims(headers: &HeaderMap, body: &Value) -> bool {
    header_is_modern(headers)
        || body
            .pointer("/params/_meta")
            .is_some_and(|m| m.get(META_VERSION).is_some())
}

/// GET and DELETE have no meaning in the revision (no session, no standalone stream).
pub fn not_allowed() -> Response<Body> {
    let mut r = reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MCP 2026-07-28 has no GET stream and no session to DELETE; send each request as a POST",
    );
    r.headers_mut()
        .insert("allow", HeaderValue::from_static("POST"));
    r
}

fn failure(
    status: StatusCode,
    id: Value,
    code: i64,
    message: String,
    data: Option<Value>,
) -> Response<Body> {
    let mut error = json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    reply::json(status, &json!({"jsonrpc": "2.0", "id": id, "error": error}))
}

/// Answers one 2026-07-28 POST.
pub async fn post(
    router: &Arc<Router>,
    headers: &HeaderMap,
    body: Value,
    timeout: std::time::Duration,
    sse: bool,
) -> Response<Body> {
    let invalid = |why: &str| {
        failure(
            StatusCode::BAD_REQUEST,
            Value::Null,
            code::INVALID_REQUEST,
            why.to_string(),
            None,
        )
    };
    if body.is_array() {
        return invalid(
            "JSON-RPC batches are not part of MCP 2026-07-28: send one message per POST",
        );
    }
    match jsonrpc::kind(&body) {
        Kind::Invalid => return invalid("not a valid JSON-RPC 2.0 message"),
        Kind::Response => {
            return invalid(
                "a 2026-07-28 client has no server requests to answer: responses are not accepted",
            );
        }
        Kind::Notification => {
            // The revision defines no client notifications over HTTP; an unknown version is
            // still refused, the rest accepted and dropped.
            if let Some(v) = header_version(headers)
                && !MODERN_VERSIONS.contains(&v)
            {
                return unsupported(Value::Null, v);
            }
            return reply::empty(StatusCode::ACCEPTED);
        }
        Kind::Request => {}
    }
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let method = jsonrpc::method(&body).unwrap_or_default().to_string();
    let empty = Value::Object(Map::new());
    let params = body.get("params").unwrap_or(&empty);
    let meta = params.get("_meta");
    let version = meta
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let capabilities = meta
        .and_then(|m| m.get(META_CAPABILITIES))
        .filter(|c| c.is_object());
    let Some(version) = version.filter(|_| capabilities.is_some()) else {
        let mut missing = Vec::new();
        if version.is_none() {
            missing.push(META_VERSION);
        }
        if capabilities.is_none() {
            missing.push(META_CAPABILITIES);
        }
        return failure(
            StatusCode::BAD_REQUEST,
            id,
            code::INVALID_PARAMS,
            format!(
                "the request is missing params._meta {} (MCP 2026-07-28 carries them on every request)",
                missing.join(" and ")
            ),
            None,
        );
    };
    if let Err(mismatch) = check_headers(headers, version, &method, params) {
        return failure(
            StatusCode::BAD_REQUEST,
            id,
            code::HEADER_MISMATCH,
            mismatch,
            None,
        );
    }
    if !MODERN_VERSIONS.contains(&version) {
        return unsupported(id, version);
    }
    if method == "server/discover" {
        return match router.bridge(timeout).await {
            Ok(bridge) => reply::json(
                StatusCode::OK,
                &json!({"jsonrpc": "2.0", "id": id, "result": discover(&bridge.init)}),
            ),
            Err(e) => unavailable(id, e),
        };
    }
    if !BRIDGED.contains(&method.as_str()) {
        let message = if method == "subscriptions/listen" {
            "Method not found: mcpgate does not carry subscriptions/listen to 2025 upstreams"
                .to_string()
        } else {
            "Method not found".to_string()
        };
        return failure(
            StatusCode::NOT_FOUND,
            id,
            code::METHOD_NOT_FOUND,
            message,
            Some(json!(method)),
        );
    }
    let bridge = match router.bridge(timeout).await {
        Ok(b) => b,
        Err(e) => return unavailable(id, e),
    };
    // The call runs in a task of its own, so its answer can stream: notifications first (on
    // SSE, for a client that takes it), then the response. Dropping the HTTP exchange aborts
    // the task, which cancels the request upstream.
    let (tx, mut rx) = stream_channel();
    let call = {
        let (router, id, method) = (router.clone(), id.clone(), method.clone());
        let params = upstream_params(params);
        let uri = params.get("uri").cloned();
        tokio::spawn(async move {
            let notes = sse.then_some(&tx);
            let mut answer = bridge.call(&method, params, timeout, notes).await;
            let code = answer.pointer("/error/code").and_then(Value::as_i64);
            if code == Some(code::UPSTREAM_UNAVAILABLE) {
                router.drop_bridge(&bridge).await;
            }
            jsonrpc::replace_id(&mut answer, id);
            if method == "resources/read" {
                resource_not_found(&mut answer, uri);
            }
            if let Some(result) = answer.get_mut("result").and_then(Value::as_object_mut) {
                shape_result(result, &method, &bridge.init);
            }
            let _ = tx.send(answer).await;
        })
    };
    let guard = AbortOnDrop(call.abort_handle());
    let Some(first) = rx.recv().await else {
        return failure(
            StatusCode::BAD_GATEWAY,
            id,
            code::INTERNAL_ERROR,
            "the request ended without an answer".into(),
            None,
        );
    };
    if jsonrpc::kind(&first) == Kind::Response {
        let status = match first.pointer("/error/code").and_then(Value::as_i64) {
            Some(code::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        };
        return reply::json(status, &first);
    }
    let prelude = crate::transport::sse::message(&first);
    let awaiting = HashMap::from([(jsonrpc::id_key(&id), id)]);
    super::streamable::sse_response(
        SseBody::until_answered(rx, Some(prelude), awaiting, timeout).on_drop(move || drop(guard)),
    )
}

/// A 2025 server's "resource not found" (-32002) as the 2026-07-28 revision words it: invalid
/// params (-32602), with the URI in `data`.
fn resource_not_found(answer: &mut Value, uri: Option<Value>) {
    let Some(error) = answer.get_mut("error").and_then(Value::as_object_mut) else {
        return;
    };
    if error.get("code").and_then(Value::as_i64) != Some(-32002) {
        return;
    }
    error.insert("code".into(), json!(code::INVALID_PARAMS));
    let data = error.entry("data").or_insert_with(|| json!({}));
    if let (Some(d), Some(uri)) = (data.as_object_mut(), uri) {
        d.entry("uri").or_insert(uri);
    }
}

/// Aborts the bridged call when the exchange that waits for it is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn header_version(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches([' ', '\t']))
}

fn unsupported(id: Value, requested: &str) -> Response<Body> {
    failure(
        StatusCode::BAD_REQUEST,
        id,
        code::UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version".into(),
        Some(json!({"supported": MODERN_VERSIONS, "requested": requested})),
    )
}

fn unavailable(id: Value, e: CreateError) -> Response<Body> {
    let (status, message) = match e {
        CreateError::TooManySessions(n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many sessions (server.max_sessions is {n})"),
        ),
        CreateError::Upstream(why) => (StatusCode::BAD_GATEWAY, why),
    };
    failure(status, id, code::UPSTREAM_UNAVAILABLE, message, None)
}

/// One header's value, trimmed of surrounding whitespace; sent twice is an error.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(format!("Header mismatch: {name} is sent more than once"));
    }
    let value = first.to_str().map_err(|_| {
        format!("Header mismatch: {name} is not visible ASCII (wrap other text as =?base64?...?=)")
    })?;
    Ok(Some(value.trim_matches([' ', '\t'])))
}

/// The revision's routing headers must repeat the body exactly (values are case-sensitive).
fn check_headers(
    headers: &HeaderMap,
    version: &str,
    method: &str,
    params: &Value,
) -> Result<(), String> {
    let agree = |header: &str, value: Option<&str>, body: &str, field: &str| match value {
        None => Err(format!(
            "Header mismatch: the {header} header is missing; it must repeat the body's {field} ({body:?})"
        )),
        Some(h) if h != body => Err(format!(
            "Header mismatch: {header} header value {h:?} does not match body value {body:?}"
        )),
        Some(_) => Ok(()),
    };
    agree(
        "MCP-Protocol-Version",
        single(headers, VERSION_HEADER)?,
        version,
        "_meta protocolVersion",
    )?;
    agree(
        "Mcp-Method",
        single(headers, stateless::METHOD_HEADER)?,
        method,
        "method",
    )?;
    let header = single(headers, stateless::NAME_HEADER)?;
    match (stateless::name_of(method, params), header) {
        (Some((field, body)), h) => {
            let decoded = h.map(decode_name).transpose()?;
            agree("Mcp-Name", decoded.as_deref(), body, field)
        }
        (None, Some(h)) => Err(format!(
            "Header mismatch: Mcp-Name header value {h:?} but {method} has no name in its body"
        )),
        (None, None) => Ok(()),
    }
}

/// `Mcp-Name` as sent: verbatim, or `=?base64?...?=` around UTF-8 in canonical base64.
fn decode_name(value: &str) -> Result<String, String> {
    stateless::decode_name(value).ok_or_else(|| {
        format!("Header mismatch: Mcp-Name {value:?} is not canonical base64 of UTF-8 text")
    })
}

/// The request's params as a 2025 upstream takes them: the revision's own `_meta` keys off.
fn upstream_params(params: &Value) -> Value {
    let mut params = params.clone();
    if let Some(obj) = params.as_object_mut()
        && let Some(Value::Object(meta)) = obj.get_mut("_meta")
    {
        meta.retain(|k, _| !k.starts_with(META_PREFIX));
        if meta.is_empty() {
            obj.remove("_meta");
        }
    }
    params
}

/// What the revision asks of every result: `resultType`, the server's identity, cache hints.
fn shape_result(result: &mut Map<String, Value>, method: &str, init: &Value) {
    result
        .entry("resultType")
        .or_insert_with(|| json!("complete"));
    if CACHEABLE.contains(&method) {
        result.entry("ttlMs").or_insert_with(|| json!(0));
        result
            .entry("cacheScope")
            .or_insert_with(|| json!("private"));
    }
    if let Some(info) = init.get("serverInfo") {
        let meta = result
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry(META_SERVER_INFO).or_insert_with(|| info.clone());
        }
    }
}

/// `server/discover`, from the upstream's initialize answer. Capabilities that need a session
/// (list-changed notifications, resource subscriptions, logging/setLevel) are left out: the
/// bridge cannot deliver them to a stateless client.
fn discover(init: &Value) -> Value {
    let mut capabilities = init
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(caps) = capabilities.as_object_mut() {
        caps.remove("logging");
        for c in caps.values_mut() {
            if let Some(c) = c.as_object_mut() {
                c.remove("listChanged");
                c.remove("subscribe");
            }
        }
    }
    let mut result = Map::new();
    result.insert("supportedVersions".into(), json!(MODERN_VERSIONS));
    result.insert("capabilities".into(), capabilities);
    if let Some(i) = init.get("instructions") {
        result.insert("instructions".into(), i.clone());
    }
    shape_result(&mut result, "server/discover", init);
    result.insert("ttlMs".into(), json!(0));
    result.insert("cacheScope".into(), json!("private"));
    Value::Object(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn headers_must_repeat_the_body() {
        let params = json!({"name": "echo"});
        let ok = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", " echo "),
        ]);
        assert_eq!(
            check_headers(&ok, "2026-07-28", "tools/call", &params),
            Ok(())
        );
        let wrong_case = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "Tools/Call"),
            ("mcp-name", "echo"),
        ]);
        assert!(check_headers(&wrong_case, "2026-07-28", "tools/call", &params).is_err());
        let no_name = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
        ]);
        assert!(check_headers(&no_name, "2026-07-28", "tools/call", &params).is_err());
        let twice = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ]);
        assert!(check_headers(&twice, "2026-07-28", "tools/call", &params).is_err());
        let list = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ]);
        assert_eq!(
            check_headers(&list, "2026-07-28", "tools/list", &json!({})),
            Ok(())
        );
    }

    #[test]
    fn names_in_base64_are_decoded_and_must_be_canonical() {
        let encoded = format!(
            "=?base64?{}?=",
            crate::tls::pem::base64("caf\u{e9}".as_bytes())
        );
        assert_eq!(decode_name(&encoded).as_deref(), Ok("caf\u{e9}"));
        assert_eq!(decode_name("plain").as_deref(), Ok("plain"));
        assert!(decode_name("=?base64?Zm9=?=").is_err());
        assert!(decode_name("=?base64?!!?=").is_err());
    }

    #[test]
    fn results_get_the_revisions_fields_and_params_lose_its_meta() {
        let init = json!({"serverInfo": {"name": "up", "version": "1"}, "capabilities": {"tools": {"listChanged": true}, "logging": {}}});
        let mut result = Map::new();
        shape_result(&mut result, "tools/list", &init);
        assert_eq!(result["resultType"], "complete");
        assert_eq!(result["ttlMs"], 0);
        assert_eq!(result["_meta"][META_SERVER_INFO]["name"], "up");
        let d = discover(&init);
        assert_eq!(d["supportedVersions"], json!(["2026-07-28"]));
        assert_eq!(d["capabilities"], json!({"tools": {}}));
        let p = upstream_params(
            &json!({"name": "x", "_meta": {META_VERSION: "2026-07-28", "progressToken": 1}}),
        );
        assert_eq!(p, json!({"name": "x", "_meta": {"progressToken": 1}}));
        let p = upstream_params(&json!({"_meta": {META_VERSION: "2026-07-28"}}));
        assert_eq!(p, json!({}));
    }

    #[test]
    fn only_2026_headers_or_claims_are_modern() {
        assert!(!claims(
            &headers(&[("mcp-protocol-version", "2025-06-18")]),
            &json!({})
        ));
        assert!(!claims(
            &headers(&[("mcp-protocol-version", "junk")]),
            &json!({})
        ));
        assert!(claims(
            &headers(&[("mcp-protocol-version", "2026-07-28")]),
            &json!({})
        ));
        assert!(claims(
            &HeaderMap::new(),
            &json!({"params": {"_meta": {META_VERSION: "x"}}})
        ));
    }
}
