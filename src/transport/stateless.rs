//! The wire vocabulary of the stateless 2026-07-28 revision, for both edges: the `_meta` keys
//! a request carries instead of a session, its routing headers, and how `Mcp-Name` travels.

use serde_json::{Map, Value, json};

/// The stateless revisions mcpgate speaks.
pub const VERSIONS: &[&str] = &["2026-07-28"];
/// The revisions with sessions (initialize, `Mcp-Session-Id`) mcpgate speaks, oldest first.
pub const SESSION_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The session revision mcpgate speaks as a client when it bridges the two.
pub const LATEST_SESSION_VERSION: &str = "2025-11-25";

pub const META_PREFIX: &str = "io.modelcontextprotocol/";
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";

/// The revision's request methods mcpgate carries between the revisions (`server/discover`
/// aside, which each edge answers or asks itself).
pub const CARRIED: &[&str] = &[
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "completion/complete",
];

/// What `Mcp-Name` repeats for `method`: `params.name` or `params.uri`, and the field's name.
pub fn name_of<'v>(method: &str, params: &'v Value) -> Option<(&'static str, &'v str)> {
    let (field, value) = match method {
        "tools/call" | "prompts/get" => ("params.name", params.get("name")),
        "resources/read" => ("params.uri", params.get("uri")),
        _ => return None,
    };
    value.and_then(Value::as_str).map(|v| (field, v))
}

/// A header value for `text`: verbatim when it is visible ASCII without edge whitespace,
/// else `=?base64?...?=` around its UTF-8.
pub fn encode_name(text: &str) -> String {
    let plain = text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && text.trim() == text
        && !(text.starts_with("=?base64?") && text.ends_with("?="));
    if plain {
        text.to_string()
    } else {
        format!("=?base64?{}?=", crate::tls::pem::base64(text.as_bytes()))
    }
}

/// The inverse of `encode_name`; `None` for a sentinel that is not canonical base64 of UTF-8.
pub fn decode_name(value: &str) -> Option<String> {
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Some(value.to_string());
    };
    crate::tls::pem::base64_decode(payload)
        .filter(|bytes| crate::tls::pem::base64(bytes) == payload)
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// `params` with the per-request envelope mcpgate sends as a 2026-07-28 client.
pub fn with_envelope(params: Option<&Value>) -> Value {
    let mut params = match params {
        Some(Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(META_VERSION.into(), json!(VERSIONS[0]));
        meta.insert(META_CAPABILITIES.into(), json!({}));
        meta.insert(
            META_CLIENT_INFO.into(),
            json!({"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    Value::Object(params)
}

/// True when an error answer to `initialize` says the server speaks only stateless revisions:
/// UnsupportedProtocolVersion (-32022) whose supported list has no 2025 revision in it.
pub fn refuses_sessions(answer: &Value) -> bool {
    let Some(error) = answer.get("error") else {
        return false;
    };
    let supported = error.pointer("/data/supported").and_then(Value::as_array);
    error.get("code").and_then(Value::as_i64)
        == Some(crate::jsonrpc::code::UNSUPPORTED_PROTOCOL_VERSION)
        && supported.is_some_and(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .any(|v| VERSIONS.contains(&v))
                && !list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|v| v < VERSIONS[0])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_odd_ones_are_wrapped() {
        for name in [
            "echo",
            "caf\u{e9}",
            " padded ",
            "=?base64?x?=",
            "line\nbreak",
        ] {
            assert_eq!(decode_name(&encode_name(name)).as_deref(), Some(name));
        }
        assert_eq!(encode_name("echo"), "echo");
        assert!(encode_name("caf\u{e9}").starts_with("=?base64?"));
        assert_eq!(decode_name("=?base64?Zm9=?="), None);
        assert_eq!(decode_name("=?base64?!!?="), None);
    }

    #[test]
    fn a_stateless_only_refusal_is_told_apart() {
        let only = json!({"error": {"code": -32022, "message": "Unsupported protocol version", "data": {"supported": ["2026-07-28"]}}});
        let both =
            json!({"error": {"code": -32022, "data": {"supported": ["2025-11-25", "2026-07-28"]}}});
        assert!(refuses_sessions(&only));
        assert!(!refuses_sessions(&both));
        assert!(!refuses_sessions(&json!({"result": {}})));
    }

    #[test]
    fn the_envelope_keeps_what_was_there() {
        let p = with_envelope(Some(&json!({"name": "x", "_meta": {"progressToken": 3}})));
        assert_eq!(p["name"], "x");
        assert_eq!(p["_meta"]["progressToken"], 3);
        assert_eq!(p["_meta"][META_VERSION], "2026-07-28");
        assert!(with_envelope(None)["_meta"][META_CAPABILITIES].is_object());
    }
}
