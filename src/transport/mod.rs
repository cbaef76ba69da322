//! Framing, both directions: newline-delimited JSON for stdio, Server-Sent Events for HTTP.

pub mod ndjson;
pub mod sse;
