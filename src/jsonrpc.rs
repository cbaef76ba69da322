//! Raw JSON-RPC frames: classification, id keys and error responses.
//!
//! Frames stay `serde_json::Value`: mcpgate reads `jsonrpc`, `id`, `method` and a few routing
//! fields, rewrites ids where it must, and passes everything else through untouched.

use serde_json::{Map, Value, json};

/// JSON-RPC and MCP error codes mcpgate emits.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// 2026-07-28: an `Mcp-*` header disagrees with the body (HeaderMismatch).
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: the request's protocol version is not one the server speaks.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// The upstream failed (exited, restarting, timed out, unreachable).
    pub const UPSTREAM_UNAVAILABLE: i64 = -32000;
    pub const UPSTREAM_TIMEOUT: i64 = -32001;
    /// The client cancelled the request (the code LSP uses; MCP defines none).
    pub const REQUEST_CANCELLED: i64 = -32800;
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
    Invalid,
}

/// Classifies a JSON value as a JSON-RPC 2.0 message.
pub fn kind(v: &Value) -> Kind {
    let Some(obj) = v.as_object() else {
        return Kind::Invalid;
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Kind::Invalid;
    }
    let has_id = obj.get("id").is_some_and(valid_id);
    match obj.get("method") {
        Some(Value::String(_)) if has_id => Kind::Request,
        Some(Value::String(_)) if !obj.contains_key("id") => Kind::Notification,
        Some(_) => Kind::Invalid,
        None if has_id && (obj.contains_key("result") || obj.contains_key("error")) => {
            Kind::Response
        }
        // An error response to a message whose id could not be read carries "id": null.
        None if obj.get("id") == Some(&Value::Null) && obj.contains_key("error") => Kind::Response,
        None => Kind::Invalid,
    }
}

fn valid_id(id: &Value) -> bool {
    matches!(id, Value::String(_)) || id.as_i64().is_some() || id.as_u64().is_some()
}

/// A hashable key for an id: its JSON text, so `1` and `"1"` stay distinct.
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

/// Whether `body` is exactly one JSON-RPC response to the request whose id key is `key`,
/// read without building it: `Some(true)` for a result, `Some(false)` for an error, `None` for
/// anything else (a batch, a request, another id, not JSON).
pub fn single_response(body: &[u8], key: &str) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct Peek<'a> {
        jsonrpc: Option<&'a str>,
        #[serde(borrow)]
        id: Option<&'a serde_json::value::RawValue>,
        method: Option<serde::de::IgnoredAny>,
        result: Option<serde::de::IgnoredAny>,
        error: Option<serde::de::IgnoredAny>,
    }
    let p: Peek = serde_json::from_slice(body).ok()?;
    let id: Value = serde_json::from_str(p.id?.get()).ok()?;
    let one_outcome = p.result.is_some() != p.error.is_some();
    (p.jsonrpc == Some("2.0")
        && p.method.is_none()
        && one_outcome
        && valid_id(&id)
        && id_key(&id) == key)
        .then_some(p.result.is_some())
}

pub fn method(v: &Value) -> Option<&str> {
    v.get("method").and_then(Value::as_str)
}

/// The progress token a request asks progress notifications under, as a key.
pub fn progress_token(v: &Value) -> Option<String> {
    v.get("params")?
        .get("_meta")?
        .get("progressToken")
        .map(id_key)
}

/// A JSON-RPC error response.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// A JSON-RPC notification.
pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// Replaces the `id` of an object frame, returning the old one.
pub fn replace_id(frame: &mut Value, id: Value) -> Option<Value> {
    frame
        .as_object_mut()
        .and_then(|o: &mut Map<String, Value>| o.insert("id".into(), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":1,"method":"x"})),
            Kind::Request
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","method":"x"})),
            Kind::Notification
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Kind::Response
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":null,"error":{}})),
            Kind::Response
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"1.0","id":1,"method":"x"})),
            Kind::Invalid
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":1.5,"method":"x"})),
            Kind::Invalid
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":{},"method":"x"})),
            Kind::Invalid
        );
        assert_eq!(kind(&json!([1])), Kind::Invalid);
    }

    #[test]
    fn a_single_response_is_told_apart_without_building_it() {
        let one = |body: &str, key: &str| single_response(body.as_bytes(), key);
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":7,"result":{"a":[1]}}"#, "7"),
            Some(true)
        );
        assert_eq!(
            one(
                r#" {"id" : 7, "error":{"code":1,"message":"m"},"jsonrpc":"2.0"} "#,
                "7"
            ),
            Some(false)
        );
        assert_eq!(one(r#"{"jsonrpc":"2.0","id":"7","result":{}}"#, "7"), None);
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":"7","result":{}}"#, r#""7""#),
            Some(true)
        );
        assert_eq!(one(r#"{"jsonrpc":"2.0","id":8,"result":{}}"#, "7"), None);
        assert_eq!(one(r#"[{"jsonrpc":"2.0","id":7,"result":{}}]"#, "7"), None);
        assert_eq!(one(r#"{"jsonrpc":"2.0","id":7,"method":"x"}"#, "7"), None);
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":7,"result":{},"error":{}}"#, "7"),
            None
        );
        assert_eq!(one(r#"{"jsonrpc":"2.0","id":7}"#, "7"), None);
        assert_eq!(one(r#"{"jsonrpc":"1.0","id":7,"result":{}}"#, "7"), None);
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":7,"id":7,"result":{}}"#, "7"),
            None
        );
        assert_eq!(one(r#"{"jsonrpc":"2.0","id":7,"result":{}"#, "7"), None);
    }

    #[test]
    fn id_keys_keep_types_apart() {
        assert_ne!(id_key(&json!(1)), id_key(&json!("1")));
    }
}
