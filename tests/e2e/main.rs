//! End-to-end tests: the real `mcpgate` binary on loopback, certificates generated per test,
//! real TLS handshakes, real child processes. One file per behaviour.

mod support;

mod abuse;
mod admin;
mod auth_and_origin;
mod cert_command;
mod client_auth_modes;
mod config_errors;
mod gateway;
mod legacy_sse;
mod limits;
mod logging;
mod metrics;
mod probe_command;
mod registry;
mod remote_upstream;
mod revision_2026;
mod streamable_http;
mod tls_surface;
mod trust_engine;
mod upstream_crash;
