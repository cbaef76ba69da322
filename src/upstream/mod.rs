//! Upstream edges: how mcpgate reaches MCP servers. Today a stdio child process; the remote
//! (Streamable HTTP, SSE) edges plug in beside it.
//!
//! An upstream delivers what the server sends to a `Sink` (a downstream session), already
//! sorted: responses with the client's own id restored, messages related to an in-flight
//! request (progress), and the rest.

pub mod connector;
pub mod health;
pub mod remote;
pub mod stdio;

use serde_json::Value;

/// Where an upstream delivers messages for one downstream session.
pub trait Sink: Send + Sync + 'static {
    /// The response to a request this session sent (its id is the session's own again).
    fn response(&self, frame: Value);
    /// A message tied to the in-flight request whose id key is `request_key` (progress).
    fn related(&self, request_key: &str, frame: Value);
    /// Anything else: notifications, server-to-client requests.
    fn unsolicited(&self, frame: Value);
}

/// A sink that hands every message, whatever its kind, to a channel (connect's stdout, probe).
pub struct ChannelSink(pub tokio::sync::mpsc::UnboundedSender<Value>);

impl Sink for ChannelSink {
    fn response(&self, frame: Value) {
        let _ = self.0.send(frame);
    }
    fn related(&self, _: &str, frame: Value) {
        let _ = self.0.send(frame);
    }
    fn unsolicited(&self, frame: Value) {
        let _ = self.0.send(frame);
    }
}
