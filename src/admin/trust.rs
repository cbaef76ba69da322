//! Registration-time trust: what certificate a remote upstream presents, and whether it is
//! self-signed (issuer equals subject and the signature verifies with its own key). A
//! self-signed upstream is registered only with the fingerprint the caller was shown; then
//! the certificate is pinned and stored (sealed, with the rest of the definition).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde_json::{Value, json};

use crate::config::{UpstreamKind, UpstreamSpec};
use crate::tls::diagnose::ErrorClass;
use crate::tls::inspect;
use crate::tls::trust;
use crate::upstream::connector::{Connector, Stream};

/// What a TLS connection to the upstream showed.
pub struct Seen {
    /// The chain the server sent, leaf first (captured even when verification failed).
    pub chain: Vec<Vec<u8>>,
    /// None when the handshake verified with the server's trust profile.
    pub failure: Option<crate::tls::diagnose::Failure>,
    pub trust_source: String,
}

impl Seen {
    /// The leaf's SHA-256 fingerprint when the leaf is self-signed.
    pub fn self_signed_leaf(&self) -> Option<String> {
        let leaf = self.chain.first()?;
        let info = inspect::describe(leaf)?;
        info.self_signed.then_some(info.sha256)
    }

    /// The chain, described (subject, issuer, validity, fingerprint, self-signed).
    pub fn chain_json(&self) -> Value {
        Value::Array(
            self.chain
                .iter()
                .filter_map(|d| inspect::describe(d))
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                .collect(),
        )
    }

    pub fn failure_json(&self) -> Value {
        match &self.failure {
            None => Value::Null,
            Some(f) => {
                json!({"class": f.class.as_str(), "summary": f.summary, "cause": f.cause, "hint": f.hint})
            }
        }
    }
}

/// Connects to a remote https upstream with its own trust profile and records what it saw;
/// None for stdio and plain-http upstreams (nothing to trust).
pub async fn look(spec: &UpstreamSpec) -> Result<Option<Seen>, String> {
    let UpstreamKind::Remote(remote) = &spec.kind else {
        return Ok(None);
    };
    let uri: hyper::Uri = remote
        .url
        .parse()
        .map_err(|e| format!("{:?} is not a URL: {e}", remote.url))?;
    if uri.scheme_str() != Some("https") {
        return Ok(None);
    }
    let profile =
        Arc::new(trust::build(&remote.trust, &trust::Env::process()).map_err(|e| e.to_string())?);
    let connector = Connector::new(&spec.name, profile.clone(), remote.timeout);
    let place = connector.place(&uri);
    let (mut chain, failure) = match connector.connect(uri.clone()).await {
        Ok(Stream::Tls(tls, _)) => (
            tls.get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.to_vec()).collect())
                .unwrap_or_default(),
            None,
        ),
        Ok(_) => (Vec::new(), None),
        Err(f) => (Vec::new(), Some(f)),
    };
    let tls_failure = failure.as_ref().is_some_and(|f| {
        !matches!(
            f.class,
            ErrorClass::ConnectionRefused | ErrorClass::TimedOut | ErrorClass::Dns
        )
    });
    if chain.is_empty()
        && tls_failure
        && let Ok(name) = ServerName::try_from(place.sni.clone())
    {
        let port = uri.port_u16().unwrap_or(443);
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        chain = connector
            .capture_chain(name, &host, port, &place)
            .await
            .iter()
            .map(|d| d.to_vec())
            .collect();
    }
    Ok(Some(Seen {
        chain,
        failure,
        trust_source: profile.source.to_string(),
    }))
}

/// Normalises a fingerprint as the CLI and API accept it (any case, with or without colons).
pub fn same_fingerprint(a: &str, b: &str) -> bool {
    match (
        crate::config::parse_fingerprint(a),
        crate::config::parse_fingerprint(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Pins `fingerprint` in a definition (replacing earlier pins) and stores the certificate.
pub fn pin(spec: &mut Value, fingerprint: &str, leaf: &[u8]) {
    if !spec.get("tls").is_some_and(Value::is_object) {
        spec["tls"] = json!({});
    }
    spec["tls"]["pinned_sha256"] = json!([fingerprint]);
    spec[PINNED_CERT] = json!(crate::tls::pem::cert_pem(leaf));
}

/// The key under which a pinned certificate is stored beside the definition.
pub const PINNED_CERT: &str = "pinned_cert_pem";
