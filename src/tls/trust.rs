//! The outbound trust engine: a `TrustSpec` (config or flags) becomes a `TrustProfile`, one
//! rustls `ClientConfig` built once and reused by every connection to that upstream.
//!
//! Roots: the system store, plus extra CAs (`ca_cert`, a file or a directory) by default, or
//! the extra CAs only (`ca_mode: replace`). When nothing is configured the environment
//! decides: `SSL_VERIFY`, then `SSL_CERT_FILE`, then `SSL_CERT_DIR`, then the OS store. Pins
//! (`pinned_sha256`) trust exactly those leaf certificates (self-signed upstreams); a pinned
//! certificate that changes fails closed. A client certificate is sent whenever the server
//! asks, whatever else is configured. The source of every decision is kept for messages.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

use super::{pem, provider};
use crate::config::{CaMode, ConfigError, TrustSpec};

/// Where the trust decision for a connection came from.
#[derive(Debug, Clone)]
pub enum TrustSource {
    /// Config (or flag) `key` named CAs; `append` means the system store as well.
    Configured {
        key: String,
        path: PathBuf,
        append: bool,
    },
    /// `SSL_VERIFY=<path>`: the system store plus that CA.
    SslVerifyEnv(PathBuf),
    SslCertFile(PathBuf),
    SslCertDir(PathBuf),
    System,
    Pinned {
        key: String,
        count: usize,
    },
    /// Verification off: `why` names the key or variable that turned it off.
    Insecure {
        why: String,
    },
}

impl fmt::Display for TrustSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustSource::Configured {
                key,
                path,
                append: true,
            } => write!(f, "system store + {key} ({})", path.display()),
            TrustSource::Configured {
                key,
                path,
                append: false,
            } => write!(f, "{key} only ({})", path.display()),
            TrustSource::SslVerifyEnv(p) => {
                write!(f, "system store + SSL_VERIFY ({})", p.display())
            }
            TrustSource::SslCertFile(p) => write!(f, "SSL_CERT_FILE ({})", p.display()),
            TrustSource::SslCertDir(p) => write!(f, "SSL_CERT_DIR ({})", p.display()),
            TrustSource::System => write!(f, "system store"),
            TrustSource::Pinned { key, count } => {
                write!(f, "{count} pinned certificate(s) ({key})")
            }
            TrustSource::Insecure { why } => write!(f, "NONE: verification off by {why}"),
        }
    }
}

/// A built trust profile.
pub struct TrustProfile {
    pub config: Arc<ClientConfig>,
    pub source: TrustSource,
    /// The config key prefix, for hints (`mcp_servers.x.tls`, or `--` for flags).
    pub key: String,
    pub server_name: Option<String>,
    pub pins: Vec<[u8; 32]>,
    pub insecure: bool,
    pub has_client_cert: bool,
    pub roots: Arc<RootCertStore>,
    pub provider: Arc<CryptoProvider>,
    client_identity: Option<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
}

impl fmt::Debug for TrustProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustProfile")
            .field("source", &self.source)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The environment's say, read once (a function so tests can pass their own).
pub struct Env<'a>(pub &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    pub fn process() -> Env<'static> {
        Env(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }
}

/// Builds the profile; every error names the key (or variable) and the fix.
pub fn build(spec: &TrustSpec, env: &Env<'_>) -> Result<TrustProfile, ConfigError> {
    let provider = provider();
    let key = spec.key.clone();
    let mut roots = RootCertStore::empty();
    // Pins are explicit trust and win over "verification off": a pinned profile never
    // accepts a certificate that is not pinned.
    let mut insecure = !spec.verify && spec.pinned_sha256.is_empty();
    let mut source = if insecure {
        TrustSource::Insecure {
            why: format!("{key}.insecure_skip_verify / ssl_verify: false"),
        }
    } else {
        TrustSource::System
    };
    if !spec.pinned_sha256.is_empty() {
        source = TrustSource::Pinned {
            key: format!("{key}.pinned_sha256"),
            count: spec.pinned_sha256.len(),
        };
    } else if !insecure {
        match (&spec.ca_cert, spec.configured) {
            (Some(ca), _) => {
                let append = spec.ca_mode == CaMode::Append;
                if append {
                    add_system(&mut roots);
                }
                add_file_or_dir(&mut roots, &format!("{key}.ca_cert"), ca)?;
                source = TrustSource::Configured {
                    key: format!("{key}.ca_cert"),
                    path: ca.clone(),
                    append,
                };
            }
            (None, true) => add_system(&mut roots),
            (None, false) => source = from_env(env, &mut roots, &mut insecure)?,
        }
        if !insecure && roots.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.ca_cert"),
                format!("no trusted CA certificates were found ({source})"),
            )
            .hint("install the system CA bundle (ca-certificates), or give ca_cert"));
        }
    }
    let roots = Arc::new(roots);
    let check = if insecure {
        Check::Anything
    } else if !spec.pinned_sha256.is_empty() {
        Check::Pinned(spec.pinned_sha256.clone())
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| {
                ConfigError::new(
                    format!("{key}.ca_cert"),
                    format!("cannot use these CAs: {e}"),
                )
            })?;
        Check::WebPki(webpki)
    };
    let verifier = Arc::new(Verifier {
        check,
        provider: provider.clone(),
    });
    let identity = match &spec.client_cert {
        Some((cert, keyf)) => Some((
            pem::certs(&format!("{key}.cert_file"), cert)?,
            pem::private_key(&format!("{key}.key_file"), keyf)?,
        )),
        None => None,
    };
    let config = client_config(&provider, verifier, clone_identity(&identity), &key)?;
    if let Some(name) = &spec.server_name {
        ServerName::try_from(name.as_str()).map_err(|_| {
            ConfigError::new(
                format!("{key}.server_name"),
                format!("{name:?} is not a DNS name or IP address"),
            )
            .hint("give the name the server's certificate covers, e.g. mcp.internal.example")
        })?;
    }
    Ok(TrustProfile {
        config,
        source,
        key,
        server_name: spec.server_name.clone(),
        pins: spec.pinned_sha256.clone(),
        insecure,
        has_client_cert: identity.is_some(),
        roots,
        provider,
        client_identity: identity,
    })
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
    key: &str,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(key, format!("TLS setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some((chain, k)) => builder.with_client_auth_cert(chain, k).map_err(|e| {
            ConfigError::new(
                format!("{key}.key_file"),
                format!("does not fit the client certificate: {e}"),
            )
            .hint("key_file must be the private key of cert_file's first certificate")
        })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl TrustProfile {
    /// The client certificate this profile presents, if any.
    pub fn client_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.client_identity
            .as_ref()
            .and_then(|(chain, _)| chain.first())
    }

    /// The same config, but noting whether the server asked for a client certificate (rustls
    /// consults the resolver only when it does): tells "certificate required" from other
    /// closes when a server refuses without an alert.
    pub fn recording_client_auth(&self) -> (Arc<ClientConfig>, Arc<std::sync::atomic::AtomicBool>) {
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut config = (*self.config).clone();
        config.client_auth_cert_resolver = Arc::new(RecordingResolver {
            inner: config.client_auth_cert_resolver.clone(),
            asked: asked.clone(),
        });
        (Arc::new(config), asked)
    }

    /// A config that accepts any server certificate and records the chain it was shown:
    /// used only to diagnose a failed handshake (and by probe), never to carry traffic.
    pub fn capturing(
        &self,
    ) -> (
        Arc<ClientConfig>,
        Arc<std::sync::Mutex<Vec<CertificateDer<'static>>>>,
    ) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let verifier = Arc::new(Verifier {
            check: Check::Capture(seen.clone()),
            provider: self.provider.clone(),
        });
        let config = client_config(
            &self.provider,
            verifier,
            clone_identity(&self.client_identity),
            &self.key,
        )
        .unwrap_or_else(|_| self.config.clone());
        (config, seen)
    }
}

type Identity = (
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

fn clone_identity(id: &Option<Identity>) -> Option<Identity> {
    id.as_ref()
        .map(|(chain, key)| (chain.clone(), key.clone_key()))
}

fn add_system(roots: &mut RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("system trust store: {e}");
    }
    roots.add_parsable_certificates(found.certs);
}

fn add_file_or_dir(roots: &mut RootCertStore, key: &str, path: &Path) -> Result<(), ConfigError> {
    for cert in pem::certs_file_or_dir(key, path)? {
        roots.add(cert).map_err(|e| {
            ConfigError::new(key, format!("{}: a certificate is not usable as a CA: {e}", path.display()))
                .hint("give CA certificates in PEM; a self-signed server certificate is trusted with pinned_sha256 instead")
        })?;
    }
    Ok(())
}

fn from_env(
    env: &Env<'_>,
    roots: &mut RootCertStore,
    insecure: &mut bool,
) -> Result<TrustSource, ConfigError> {
    if let Some(v) = (env.0)("SSL_VERIFY") {
        match v.to_ascii_lowercase().as_str() {
            "false" | "0" | "no" | "off" => {
                *insecure = true;
                return Ok(TrustSource::Insecure {
                    why: format!("SSL_VERIFY={v}"),
                });
            }
            "true" | "1" | "yes" | "on" => {}
            _ => {
                add_system(roots);
                add_file_or_dir(roots, "SSL_VERIFY", Path::new(&v))?;
                return Ok(TrustSource::SslVerifyEnv(PathBuf::from(v)));
            }
        }
    }
    if let Some(f) = (env.0)("SSL_CERT_FILE") {
        add_file_or_dir(roots, "SSL_CERT_FILE", Path::new(&f))?;
        return Ok(TrustSource::SslCertFile(PathBuf::from(f)));
    }
    if let Some(d) = (env.0)("SSL_CERT_DIR") {
        // SSL_CERT_DIR may list several directories, like OpenSSL's.
        for dir in d.split(':').filter(|s| !s.is_empty()) {
            add_file_or_dir(roots, "SSL_CERT_DIR", Path::new(dir))?;
        }
        return Ok(TrustSource::SslCertDir(PathBuf::from(d)));
    }
    add_system(roots);
    Ok(TrustSource::System)
}

/// The presented leaf did not match any pin.
#[derive(Debug)]
pub struct PinMismatch {
    pub presented: [u8; 32],
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the certificate presented does not match the pinned fingerprint(s)"
        )
    }
}

impl std::error::Error for PinMismatch {}

pub fn sha256(der: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How a server certificate is judged.
#[derive(Debug)]
enum Check {
    /// The CAs of the profile (rustls-webpki: chain, name, validity).
    WebPki(Arc<WebPkiServerVerifier>),
    /// Exactly these leaf fingerprints; anything else fails closed.
    Pinned(Vec<[u8; 32]>),
    /// Verification off (named insecure, and warned about on every connection).
    Anything,
    /// Accept anything, but record the chain: diagnosis only, never for traffic.
    Capture(Arc<std::sync::Mutex<Vec<CertificateDer<'static>>>>),
}

/// The one server certificate verifier; handshake signatures are always checked.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            Check::WebPki(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            Check::Pinned(pins) => {
                let fp = sha256(end_entity.as_ref());
                if pins.contains(&fp) {
                    return Ok(ServerCertVerified::assertion());
                }
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatch { presented: fp })),
                )))
            }
            Check::Anything => Ok(ServerCertVerified::assertion()),
            Check::Capture(seen) => {
                let mut chain = vec![end_entity.clone().into_owned()];
                chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = chain;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Delegates client certificate selection, noting that the server asked for one.
#[derive(Debug)]
struct RecordingResolver {
    inner: Arc<dyn rustls::client::ResolvesClientCert>,
    asked: Arc<std::sync::atomic::AtomicBool>,
}

impl rustls::client::ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.asked.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.resolve(root_hint_subjects, sigschemes)
    }

    fn has_certs(&self) -> bool {
        // Claim certificates so rustls always consults `resolve`; with none, it sends none.
        true
    }
}
