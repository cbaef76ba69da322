//! Framing, both directions: newline-delimited JSON for stdio, Server-Sent Events for HTTP, and
//! the stateless 2026-07-28 revision's envelope and headers.

pub mod ndjson;
pub mod sse;
pub mod stateless;
pub mod stdio;
