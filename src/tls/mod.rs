//! TLS: the listener's server config (versions, suites, groups, client auth, reload), the
//! development PKI, and the facts of a finished handshake. Knows nothing of MCP.

pub mod any_client_cert;
pub mod devca;
pub mod diagnose;
pub mod expiry;
pub mod info;
pub mod inspect;
pub mod pem;
pub mod reload;
pub mod server;
pub mod trust;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The one crypto provider mcpgate uses everywhere (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Lower-case hex of a SHA-256 digest, colon separated (the form `pinned_sha256` accepts).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
