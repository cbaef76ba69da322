//! The facts of a finished server-side handshake, for logs and per-request identity.

use rustls::ServerConnection;

use super::server::suite_name;

/// What a handshake negotiated, and who the client proved to be.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub version: String,
    pub cipher: String,
    pub alpn: Option<String>,
    pub sni: Option<String>,
    /// The verified (or, with `client_auth: require`, presented) client certificate's subject.
    pub client_subject: Option<String>,
    pub client_fingerprint: Option<String>,
}

impl TlsFacts {
    pub fn of(conn: &ServerConnection) -> Self {
        let leaf = conn.peer_certificates().and_then(|c| c.first());
        Self {
            version: conn
                .protocol_version()
                .map(|v| match v {
                    rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                    rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default(),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| suite_name(&s))
                .unwrap_or_default(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            sni: conn.server_name().map(str::to_string),
            client_subject: leaf.and_then(|c| subject(c.as_ref())),
            client_fingerprint: leaf.map(|c| super::fingerprint(c.as_ref())),
        }
    }
}

/// The subject of a DER certificate, RFC 4514 style (`CN=alice,O=Example`).
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}
