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

/// One parsed SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    /// The reconnection delay the server asked for, in milliseconds.
    pub retry: Option<u64>,
}

/// An incremental SSE parser: feed it bytes as they arrive, get whole events out.
#[derive(Default)]
pub struct Parser {
    line: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Parser {
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, out);
            } else if self.line.len() < (64 << 20) {
                self.line.push(b);
            }
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            // An event with only an id or retry (a priming event) still counts: it moves the
            // resume point.
            if self.has_data
                || self.current.event.is_some()
                || self.current.id.is_some()
                || self.current.retry.is_some()
            {
                out.push(std::mem::take(&mut self.current));
            }
            self.current = Event::default();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
            None => (text.to_string(), String::new()),
        };
        match field.as_str() {
            "event" => self.current.event = Some(value),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value),
            "retry" => self.current.retry = value.trim().parse().ok(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod parser_tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = Parser::default();
        let mut out = Vec::new();
        p.feed(b"event: endpoint\r\ndata: /mess", &mut out);
        assert!(out.is_empty());
        p.feed(
            b"age?x=1\r\n\r\n: comment\n\nid: 7\ndata: a\ndata: b\n\n",
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].event.as_deref(), Some("endpoint"));
        assert_eq!(out[0].data, "/message?x=1");
        assert_eq!(out[1].data, "a\nb");
        assert_eq!(out[1].id.as_deref(), Some("7"));
        // A priming event: an id and a retry, no data, still moves the resume point.
        p.feed(b"id: 8\nretry: 500\n\n", &mut out);
        assert_eq!((out[2].id.as_deref(), out[2].retry), (Some("8"), Some(500)));
    }
}
