//! Server-Sent Events encoding (the HTTP side of MCP's streams).

use bytes::Bytes;

/// One SSE event: optional event name and id, data split on newlines as the format requires.
pub fn event(name: Option<&str>, id: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// A JSON-RPC message as an SSE `message` event.
pub fn message(frame: &serde_json::Value) -> Bytes {
    event(Some("message"), None, &frame.to_string())
}

/// A comment line, used as a keep-alive.
pub fn keepalive() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_data_is_split_into_data_lines() {
        let e = event(Some("endpoint"), Some("7"), "a\nb");
        assert_eq!(&e[..], b"id: 7\nevent: endpoint\ndata: a\ndata: b\n\n");
    }
}
