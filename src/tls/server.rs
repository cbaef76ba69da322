//! Builds the listener's rustls `ServerConfig` from `ListenerTls`: identity, versions, cipher
//! suites, key-exchange groups, client-certificate policy and ALPN (h2, http/1.1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

use super::{any_client_cert::AnyClientCert, devca, pem, provider};
use crate::config::{ClientAuth, ConfigError, Identity, ListenerTls, TlsVersion};

/// A built listener config and what it was built from.
pub struct BuiltServerTls {
    pub config: Arc<ServerConfig>,
    /// Files whose change triggers a reload.
    pub watched: Vec<PathBuf>,
    /// The certificate file in use (for logs and expiry metrics).
    pub cert_file: PathBuf,
    /// Set when a development CA made the certificate.
    pub dev_ca: Option<PathBuf>,
}

/// Builds the server config; every error names its key and the fix.
pub fn build(tls: &ListenerTls, data_dir: &Path) -> Result<BuiltServerTls, ConfigError> {
    let (cert_file, key_file, dev_ca) = match &tls.identity {
        Identity::Files {
            cert_file,
            key_file,
        } => (cert_file.clone(), key_file.clone(), None),
        Identity::DevCa => {
            let dev = devca::ensure_dev_server(data_dir).map_err(|e| {
                ConfigError::new("tls.cert_file", format!("none configured, and the development certificate could not be made in {}: {e}", data_dir.display()))
                    .hint("set tls.cert_file and tls.key_file, or make data_dir writable")
            })?;
            (dev.cert_file, dev.key_file, Some(dev.ca_file))
        }
    };
    let chain = pem::certs("tls.cert_file", &cert_file)?;
    let key = pem::private_key("tls.key_file", &key_file)?;

    let provider = restricted_provider(tls)?;
    let versions = versions(tls);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            ConfigError::new(
                "tls.cipher_suites",
                format!("leaves no usable suite for the versions allowed: {e}"),
            )
            .hint("allow at least one cipher suite of each TLS version in use")
        })?;
    let mut watched = vec![cert_file.clone(), key_file.clone()];
    let verifier = client_verifier(tls, &provider, &mut watched)?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        ConfigError::new("tls.key_file", format!("does not fit tls.cert_file: {e}"))
            .hint("tls.key_file must be the private key of the first certificate in tls.cert_file (RSA, ECDSA or Ed25519)")
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The suite order is the listener's (the configured one, or AES-128-GCM first): the client's
    // own order would leave `tls.cipher_suites`' order meaningless.
    config.ignore_client_order = true;
    // Stateless session tickets (encrypted under a key rustls rotates): resumption works for any
    // number of clients without a per-session cache on the server.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| {
        ConfigError::new(
            "tls",
            format!("the session ticket key could not be made: {e}"),
        )
        .hint("this is an error of the system's random source; check /dev/urandom")
    })?;
    Ok(BuiltServerTls {
        config: Arc::new(config),
        watched,
        cert_file,
        dev_ca,
    })
}

fn versions(tls: &ListenerTls) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if tls.min_version <= TlsVersion::V1_3 && tls.max_version >= TlsVersion::V1_3 {
        v.push(&rustls::version::TLS13);
    }
    if tls.min_version <= TlsVersion::V1_2 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// The default provider narrowed to the configured suites and groups, in the configured order.
/// Without `tls.cipher_suites`, AES-128-GCM suites come first (Mozilla's order): as strong in
/// practice, and their SHA-256 key schedule is hardware-accelerated on more CPUs than SHA-384's
/// (aws-lc has no fast SHA-512 on AMD: full handshakes there are about 9% faster with it).
fn restricted_provider(tls: &ListenerTls) -> Result<Arc<CryptoProvider>, ConfigError> {
    let base = provider();
    let mut p = (*base).clone();
    p.cipher_suites
        .sort_by_key(|s| !suite_name(s).contains("_AES_128_GCM_"));
    if !tls.cipher_suites.is_empty() {
        let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
        for (i, name) in tls.cipher_suites.iter().enumerate() {
            let suite = find_suite(&base, name).ok_or_else(|| {
                ConfigError::new(
                    format!("tls.cipher_suites.{i}"),
                    format!("{name:?} is not a supported cipher suite"),
                )
                .hint(format!(
                    "use IANA names; supported: {}",
                    suite_names(&base).join(", ")
                ))
            })?;
            chosen.push(suite);
        }
        // Naming only TLS 1.2 suites restricts TLS 1.2 and leaves TLS 1.3's defaults, as Go does.
        if !chosen
            .iter()
            .any(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        {
            chosen.extend(
                base.cipher_suites
                    .iter()
                    .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
                    .copied(),
            );
        }
        if tls.min_version <= TlsVersion::V1_2
            && tls.max_version == TlsVersion::V1_2
            && !chosen
                .iter()
                .any(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
        {
            return Err(ConfigError::new(
                "tls.cipher_suites",
                "names no TLS 1.2 suite, but max_version is 1.2",
            )
            .hint("add a TLS_ECDHE_* suite, or allow TLS 1.3"));
        }
        p.cipher_suites = chosen;
    }
    if !tls.curve_preferences.is_empty() {
        let mut chosen: Vec<&'static dyn SupportedKxGroup> = Vec::new();
        for (i, name) in tls.curve_preferences.iter().enumerate() {
            let group = find_group(&base, name).ok_or_else(|| {
                ConfigError::new(
                    format!("tls.curve_preferences.{i}"),
                    format!("{name:?} is not a supported group"),
                )
                .hint(format!("use one of: {}", group_names(&base).join(", ")))
            })?;
            chosen.push(group);
        }
        p.kx_groups = chosen;
    }
    Ok(Arc::new(p))
}

/// The IANA name of a suite (`TLS_AES_128_GCM_SHA256`, `TLS_ECDHE_..._WITH_...`).
pub fn suite_name(suite: &SupportedCipherSuite) -> String {
    let raw = suite
        .suite()
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", suite.suite()));
    match raw.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => raw,
    }
}

fn suite_names(p: &CryptoProvider) -> Vec<String> {
    p.cipher_suites.iter().map(suite_name).collect()
}

fn find_suite(p: &CryptoProvider, name: &str) -> Option<SupportedCipherSuite> {
    let wanted = name.trim().to_ascii_uppercase().replace("TLS13_", "TLS_");
    p.cipher_suites
        .iter()
        .copied()
        .find(|s| suite_name(s) == wanted)
}

/// The user-facing name of a key-exchange group.
pub fn group_name(g: &dyn SupportedKxGroup) -> String {
    match format!("{:?}", g.name()).as_str() {
        "secp256r1" => "P-256".into(),
        "secp384r1" => "P-384".into(),
        "secp521r1" => "P-521".into(),
        other => other.to_string(),
    }
}

fn group_names(p: &CryptoProvider) -> Vec<String> {
    p.kx_groups.iter().map(|g| group_name(*g)).collect()
}

fn find_group(p: &CryptoProvider, name: &str) -> Option<&'static dyn SupportedKxGroup> {
    let wanted = match name
        .trim()
        .to_ascii_uppercase()
        .replace(['_', ' '], "-")
        .as_str()
    {
        "P256" | "P-256" | "SECP256R1" | "CURVEP256" | "PRIME256V1" => "P-256".to_string(),
        "P384" | "P-384" | "SECP384R1" | "CURVEP384" => "P-384".to_string(),
        "P521" | "P-521" | "SECP521R1" | "CURVEP521" => "P-521".to_string(),
        "X25519" => "X25519".to_string(),
        "X25519MLKEM768" | "X25519-MLKEM768" => "X25519MLKEM768".to_string(),
        other => other.to_string(),
    };
    p.kx_groups
        .iter()
        .copied()
        .find(|g| group_name(*g).eq_ignore_ascii_case(&wanted))
}

fn client_verifier(
    tls: &ListenerTls,
    provider: &Arc<CryptoProvider>,
    watched: &mut Vec<PathBuf>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, ConfigError> {
    let roots = || -> Result<Arc<RootCertStore>, ConfigError> {
        let path = tls.client_ca_file.as_ref().ok_or_else(|| {
            ConfigError::new("tls.client_ca_file", "is required by this client_auth mode")
                .hint("give the CA that signs client certificates")
        })?;
        let mut store = RootCertStore::empty();
        for cert in pem::certs_file_or_dir("tls.client_ca_file", path)? {
            store.add(cert).map_err(|e| {
                ConfigError::new(
                    "tls.client_ca_file",
                    format!("{}: not a usable CA certificate: {e}", path.display()),
                )
                .hint("give the PEM certificate of the CA that signs client certificates")
            })?;
        }
        Ok(Arc::new(store))
    };
    let build_err = |e: rustls::server::VerifierBuilderError| {
        ConfigError::new(
            "tls.client_ca_file",
            format!("cannot build a client verifier: {e}"),
        )
        .hint("give at least one valid CA certificate")
    };
    let verifier: Arc<dyn ClientCertVerifier> = match tls.client_auth {
        ClientAuth::None => return Ok(None),
        ClientAuth::Require => Arc::new(AnyClientCert::new(provider.clone())),
        ClientAuth::Request => {
            WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(build_err)?
        }
        ClientAuth::Verify => {
            WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                .build()
                .map_err(build_err)?
        }
    };
    if let Some(ca) = &tls.client_ca_file {
        watched.push(ca.clone());
    }
    Ok(Some(verifier))
}
