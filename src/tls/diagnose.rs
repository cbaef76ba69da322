//! Failure classification in one place: a TLS or connection error, plus what is known of the
//! connection (upstream, URL, peer, SNI, trust source, the chain the server sent), becomes one
//! of the error classes of PRODUCT.md with a one-line hint. `serve`, `connect`, `probe` and
//! the gateway all report through here, so they never disagree.

use std::fmt;
use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;
use rustls::{AlertDescription, CertificateError};

use super::trust::{PinMismatch, TrustProfile, hex_fingerprint, sha256};

/// The error classes, with stable names (used in JSON output and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    UnknownIssuer,
    IncompleteChain,
    SelfSignedNotPinned,
    PinChanged,
    Expired,
    NotYetValid,
    NameMismatch,
    ClientCertRequired,
    ClientCertRejected,
    NoCommonProtocol,
    PlaintextOnTlsPort,
    TlsOnPlaintextPort,
    HttpsToHttpRedirect,
    CrossOriginRedirect,
    ConnectionRefused,
    TimedOut,
    Dns,
    Proxy,
    Http,
    Other,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::UnknownIssuer => "unknown_issuer",
            ErrorClass::IncompleteChain => "incomplete_chain",
            ErrorClass::SelfSignedNotPinned => "self_signed_not_pinned",
            ErrorClass::PinChanged => "pinned_certificate_changed",
            ErrorClass::Expired => "expired",
            ErrorClass::NotYetValid => "not_yet_valid",
            ErrorClass::NameMismatch => "name_mismatch",
            ErrorClass::ClientCertRequired => "client_certificate_required",
            ErrorClass::ClientCertRejected => "client_certificate_rejected",
            ErrorClass::NoCommonProtocol => "no_common_tls_version_or_cipher",
            ErrorClass::PlaintextOnTlsPort => "plaintext_on_tls_port",
            ErrorClass::TlsOnPlaintextPort => "tls_on_plaintext_port",
            ErrorClass::HttpsToHttpRedirect => "https_to_http_redirect",
            ErrorClass::CrossOriginRedirect => "cross_origin_redirect",
            ErrorClass::ConnectionRefused => "connection_refused",
            ErrorClass::TimedOut => "timed_out",
            ErrorClass::Dns => "dns",
            ErrorClass::Proxy => "proxy",
            ErrorClass::Http => "http",
            ErrorClass::Other => "other",
        }
    }
}

/// Where a failure happened.
#[derive(Debug, Clone, Default)]
pub struct Where {
    pub upstream: String,
    pub url: String,
    pub peer: Option<SocketAddr>,
    pub sni: String,
    pub trust: String,
}

/// A classified failure: what, where, why, and the fix.
#[derive(Debug, Clone)]
pub struct Failure {
    pub class: ErrorClass,
    pub summary: String,
    pub cause: Option<String>,
    pub hint: String,
    pub at: Where,
    /// Fingerprint of the leaf the server presented, when known.
    pub presented_sha256: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upstream {:?} ({}): {}",
            self.at.upstream, self.at.url, self.summary
        )?;
        let mut ctx = Vec::new();
        if let Some(p) = self.at.peer {
            ctx.push(format!("peer {p}"));
        }
        if !self.at.sni.is_empty() {
            ctx.push(format!("SNI {}", self.at.sni));
        }
        if !self.at.trust.is_empty() {
            ctx.push(format!("trust: {}", self.at.trust));
        }
        if !ctx.is_empty() {
            write!(f, " ({})", ctx.join(", "))?;
        }
        if let Some(c) = &self.cause {
            write!(f, "\n  caused by: {c}")?;
        }
        write!(f, "\nhint: {}", self.hint)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    pub fn new(
        class: ErrorClass,
        at: Where,
        summary: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            class,
            summary: summary.into(),
            cause: None,
            hint: hint.into(),
            at,
            presented_sha256: None,
        }
    }

    pub fn cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// One line, for JSON-RPC error messages.
    pub fn one_line(&self) -> String {
        let mut s = format!("{} [{}]", self.summary, self.class.as_str());
        if let Some(c) = &self.cause {
            s.push_str(": ");
            s.push_str(c);
        }
        s.push_str(" | hint: ");
        s.push_str(&self.hint);
        s
    }
}

/// A URL fit for logs and messages: no userinfo, and the query (where hosted MCP servers
/// often put API keys) replaced by `?…`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = authority
        .rsplit_once('@')
        .map(|(_, host)| host)
        .unwrap_or(authority);
    let path = match path.split_once('?') {
        Some((p, _)) => format!("{p}?…"),
        None => path.to_string(),
    };
    if scheme.is_empty() {
        format!("{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}")
    }
}

/// Finds the rustls error inside an I/O or HTTP error chain, if there is one.
pub fn find_rustls_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// Classifies a failed TLS handshake (or a TLS error on the first bytes after it).
///
/// `chain` is what the server presented, when it could be captured: it is what tells an
/// incomplete chain from an unknown CA, and a self-signed certificate from both.
pub fn classify_tls(
    err: &rustls::Error,
    at: Where,
    profile: &TrustProfile,
    chain: &[CertificateDer<'_>],
) -> Failure {
    let key = &profile.key;
    let leaf = chain.first().and_then(|c| Cert::parse(c.as_ref()));
    let presented = chain.first().map(|c| hex_fingerprint(&sha256(c.as_ref())));
    let mut f = match err {
        rustls::Error::InvalidCertificate(ce) => {
            classify_certificate(ce, at, profile, chain, leaf.as_ref())
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => Failure::new(
            ErrorClass::ClientCertRequired,
            at,
            "the server requires a client certificate",
            if profile.has_client_cert {
                "the server asked again: check that cert_file holds the client certificate it expects".to_string()
            } else {
                format!(
                    "set {key}.cert_file and {key}.key_file (or --cert/--key) to a client certificate the server trusts"
                )
            },
        ),
        rustls::Error::AlertReceived(
            a @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied),
        ) if profile.has_client_cert => Failure::new(
            ErrorClass::ClientCertRejected,
            at,
            format!("the server rejected the client certificate (alert: {a:?})"),
            "use a client certificate issued by a CA the server trusts (its client_ca_file), and not expired",
        ),
        rustls::Error::AlertReceived(
            a @ (AlertDescription::HandshakeFailure
            | AlertDescription::ProtocolVersion
            | AlertDescription::InsufficientSecurity
            | AlertDescription::IllegalParameter),
        ) => Failure::new(
            ErrorClass::NoCommonProtocol,
            at,
            format!("no common TLS version, cipher suite or key exchange group (alert: {a:?})"),
            "mcpgate speaks TLS 1.2 and 1.3 with modern AEAD suites; the server must allow one of them",
        ),
        rustls::Error::PeerIncompatible(p) => Failure::new(
            ErrorClass::NoCommonProtocol,
            at,
            format!("the server's TLS is incompatible: {p:?}"),
            "the server must allow TLS 1.2 or 1.3 with an ECDHE AEAD suite",
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            Failure::new(
                ErrorClass::PlaintextOnTlsPort,
                at,
                "the server did not answer in TLS (plain HTTP on this port?)",
                "if the server speaks plain HTTP here, use an http:// URL; otherwise use its TLS port",
            )
        }
        other => Failure::new(
            ErrorClass::Other,
            at,
            format!("TLS failed: {other}"),
            "run mcpgate probe on the URL for a full diagnosis",
        ),
    };
    if f.presented_sha256.is_none() {
        f.presented_sha256 = presented;
    }
    f
}

fn classify_certificate(
    ce: &CertificateError,
    at: Where,
    profile: &TrustProfile,
    chain: &[CertificateDer<'_>],
    leaf: Option<&Cert>,
) -> Failure {
    let key = &profile.key;
    match ce {
        CertificateError::UnknownIssuer => unknown_issuer(at, profile, chain, leaf),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            let when = leaf
                .map(|l| format!(" on {}", l.not_after))
                .unwrap_or_default();
            Failure::new(
                ErrorClass::Expired,
                at,
                format!("the server's certificate expired{when}"),
                "renew the server's certificate (mcpgate cannot fix an expired certificate on the client side)",
            )
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            let when = leaf
                .map(|l| format!(" until {}", l.not_before))
                .unwrap_or_default();
            Failure::new(
                ErrorClass::NotYetValid,
                at,
                format!("the server's certificate is not valid yet{when}"),
                "check the clocks of both machines, or wait until the certificate's start date",
            )
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let names = leaf
                .map(|l| l.names.join(", "))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "no names".into());
            let sni = at.sni.clone();
            let first = leaf
                .and_then(|l| l.names.first().cloned())
                .unwrap_or_else(|| "<name>".into());
            Failure::new(
                ErrorClass::NameMismatch,
                at,
                format!("the certificate is not valid for {sni:?}; it covers {names}"),
                format!(
                    "connect with one of those names, or set {key}.server_name: {first} (--server-name {first})"
                ),
            )
        }
        CertificateError::Other(other) => {
            if let Some(pin) = other.0.downcast_ref::<PinMismatch>() {
                let presented = hex_fingerprint(&pin.presented);
                let pinned: Vec<String> = profile.pins.iter().map(hex_fingerprint).collect();
                let mut f = Failure::new(
                    ErrorClass::PinChanged,
                    at,
                    "the pinned certificate changed".to_string(),
                    format!("if the server's new certificate is expected, pin it: set {key}.pinned_sha256: [\"{presented}\"] (for a registered server: mcpgate servers trust {} --fingerprint {presented})", server_of_key(key)),
                )
                .cause(format!("pinned {}, presented {presented}", pinned.join(" / ")));
                f.presented_sha256 = Some(presented);
                return f;
            }
            Failure::new(
                ErrorClass::Other,
                at,
                format!("certificate rejected: {other}"),
                "run mcpgate probe on the URL for a full diagnosis",
            )
        }
        other => Failure::new(
            ErrorClass::Other,
            at,
            format!("certificate rejected: {other:?}"),
            "run mcpgate probe on the URL for a full diagnosis",
        ),
    }
}

fn unknown_issuer(
    at: Where,
    profile: &TrustProfile,
    chain: &[CertificateDer<'_>],
    leaf: Option<&Cert>,
) -> Failure {
    let key = &profile.key;
    let Some(leaf) = leaf else {
        return Failure::new(
            ErrorClass::UnknownIssuer,
            at,
            "the server's certificate was issued by a CA that is not trusted",
            format!("add that CA: {key}.ca_cert: /path/to/ca.pem (--ca)"),
        );
    };
    if leaf.self_signed {
        let fp = hex_fingerprint(&sha256(chain[0].as_ref()));
        return Failure::new(
            ErrorClass::SelfSignedNotPinned,
            at,
            format!(
                "the server presented a self-signed certificate ({}) that is not pinned",
                leaf.subject
            ),
            format!(
                "if you trust it, pin it: {key}.pinned_sha256: [\"{fp}\"] (--pin {fp}); check the fingerprint out of band first"
            ),
        );
    }
    let parsed: Vec<Cert> = chain
        .iter()
        .skip(1)
        .filter_map(|c| Cert::parse(c.as_ref()))
        .collect();
    let issuer_sent = parsed.iter().any(|c| c.subject_raw == leaf.issuer_raw);
    // A leaf alone whose issuer is nowhere: if the leaf says where its issuer lives (AIA
    // caIssuers, as every leaf from a public or corporate issuing CA does), the server left
    // its intermediate out. Otherwise it is more likely a private CA that signs leaves itself.
    if !issuer_sent {
        if let Some(url) = &leaf.ca_issuers {
            return Failure::new(
                ErrorClass::IncompleteChain,
                at,
                format!("the server sent its certificate without the intermediate CA {:?} that issued it (incomplete chain; the certificate names its issuer at {url})", leaf.issuer),
                "fix the server's certificate file to hold the full chain: the leaf, then the intermediate CA certificate(s)".to_string(),
            );
        }
        return Failure::new(
            ErrorClass::UnknownIssuer,
            at,
            format!(
                "the server's certificate was issued by {:?}, a CA that is not trusted",
                leaf.issuer
            ),
            format!(
                "add that CA's certificate: {key}.ca_cert: /path/to/ca.pem (--ca), added to the system store; if {:?} is an intermediate, the server should also send it in its chain",
                leaf.issuer
            ),
        );
    }
    let top = parsed
        .last()
        .map(|c| c.issuer.clone())
        .unwrap_or_else(|| leaf.issuer.clone());
    Failure::new(
        ErrorClass::UnknownIssuer,
        at,
        format!("the server's chain ends at {top:?}, a CA that is not trusted"),
        format!(
            "add that CA's certificate: {key}.ca_cert: /path/to/ca.pem (--ca), added to the system store"
        ),
    )
}

/// The few facts of a certificate the diagnosis needs.
pub struct Cert {
    pub subject: String,
    pub issuer: String,
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub names: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub self_signed: bool,
    /// The AIA caIssuers URL, where the issuer's certificate can be fetched.
    pub ca_issuers: Option<String>,
}

impl Cert {
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => {
                        names.push(super::inspect::ip_text(ip))
                    }
                    _ => {}
                }
            }
        }
        let mut ca_issuers = None;
        for ext in c.extensions() {
            if let x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) =
                ext.parsed_extension()
            {
                for d in &aia.accessdescs {
                    if d.access_method
                        == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_CA_ISSUERS
                        && let x509_parser::extensions::GeneralName::URI(u) = &d.access_location
                    {
                        ca_issuers = Some(u.to_string());
                    }
                }
            }
        }
        let same_name = c.subject().as_raw() == c.issuer().as_raw();
        let self_signed = same_name && c.verify_signature(None).is_ok();
        Some(Self {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            subject_raw: c.subject().as_raw().to_vec(),
            issuer_raw: c.issuer().as_raw().to_vec(),
            names,
            not_before: c.validity().not_before.to_string(),
            not_after: c.validity().not_after.to_string(),
            self_signed,
            ca_issuers,
        })
    }
}

/// The class of a failed handshake on the listener (the client's side of it, seen by the server).
pub fn classify_listener(err: &std::io::Error) -> ErrorClass {
    match find_rustls_error(err) {
        Some(rustls::Error::NoCertificatesPresented) => ErrorClass::ClientCertRequired,
        Some(rustls::Error::InvalidCertificate(_)) => ErrorClass::ClientCertRejected,
        Some(rustls::Error::PeerIncompatible(_)) => ErrorClass::NoCommonProtocol,
        Some(rustls::Error::AlertReceived(
            AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure,
        )) => ErrorClass::NoCommonProtocol,
        Some(rustls::Error::InvalidMessage(_)) => ErrorClass::PlaintextOnTlsPort,
        Some(rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown,
        )) => ErrorClass::UnknownIssuer,
        _ if err.kind() == std::io::ErrorKind::TimedOut => ErrorClass::TimedOut,
        _ => ErrorClass::Other,
    }
}

/// Classifies a TCP-level failure.
pub fn classify_io(err: &std::io::Error, at: Where) -> Failure {
    use std::io::ErrorKind::*;
    let target = at
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| at.url.clone());
    match err.kind() {
        ConnectionRefused => Failure::new(
            ErrorClass::ConnectionRefused,
            at,
            format!("connection refused by {target}"),
            "check the host and port, and that the server is running",
        ),
        TimedOut => Failure::new(
            ErrorClass::TimedOut,
            at,
            format!("connecting to {target} timed out"),
            "check the host and port, firewalls, and whether a proxy (HTTPS_PROXY) is needed",
        ),
        _ => Failure::new(
            ErrorClass::Other,
            at,
            format!("connection failed: {err}"),
            "check the URL and the network path to the server",
        ),
    }
}

/// The server name in a `mcp_servers.<name>.tls` key, for hints that give a command.
fn server_of_key(key: &str) -> &str {
    key.strip_prefix("mcp_servers.")
        .and_then(|k| k.strip_suffix(".tls"))
        .unwrap_or("<name>")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            redact_url("https://user:pw@h:8443/mcp?api_key=s3cret"),
            "https://h:8443/mcp?…"
        );
        assert_eq!(redact_url("https://h/mcp"), "https://h/mcp");
    }
}
