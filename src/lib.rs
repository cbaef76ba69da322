//! mcpgate: a TLS-first gateway for the Model Context Protocol.
//!
//! The shape (see docs/ARCHITECTURE.md): downstream edges (`server`: Streamable HTTP and legacy
//! SSE over HTTPS) feed raw JSON-RPC frames to the `router`, which sends them through upstream
//! edges (`upstream`: stdio children). `config` turns YAML and flags into typed settings; `tls`
//! owns every rustls detail. Data flows one way: config -> tls -> transport -> upstream ->
//! router -> server -> cli.

// No unsafe code of our own, and no unwrap/expect/panic outside tests: errors on request paths
// are answered, not crashed on.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod jsonrpc;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod router;
pub mod server;
pub mod tls;
pub mod transport;
pub mod upstream;

/// Entry points for the fuzz targets (`fuzz/`), compiled only under cargo-fuzz.
#[cfg(fuzzing)]
pub mod fuzzing {
    pub use crate::server::fuzz_post_body as post_body;
}
