//! Certificate making: a CA, server and client certificates, on rcgen with explicit choices.
//!
//! rcgen's defaults (validity 1975-4096, no Authority Key Identifier) make certificates that
//! Python 3.13+ rejects, so every field that matters is set here: validity, AKI on everything
//! issued, SKI on leaves, key usages and EKUs. Used by `serve` (a development CA when no
//! certificate is configured), by `mcpgate cert`, and by tests.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// The key algorithm of a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    #[default]
    EcdsaP256,
    Rsa2048,
    Ed25519,
}

impl KeyKind {
    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyKind::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }
}

/// A generated certificate and its private key, PEM encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// A certificate authority that can issue certificates.
pub struct Authority {
    pub issued: Issued,
    issuer: Issuer<'static, KeyPair>,
}

/// What to put in a certificate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub common_name: String,
    /// DNS names and IP addresses (parsed as IPs when they are).
    pub names: Vec<String>,
    pub key: KeyKind,
    /// Offsets from now; a negative `not_after` makes an expired certificate.
    pub not_before: time::Duration,
    pub not_after: time::Duration,
    /// Put an Authority Key Identifier in (default true; false to reproduce broken corporate CAs).
    pub authority_key_id: bool,
    /// An AIA caIssuers URL (where the issuer's certificate is published), as public CAs add.
    pub ca_issuers_url: Option<String>,
}

impl Spec {
    pub fn new(common_name: &str, days: i64) -> Self {
        Self {
            common_name: common_name.to_string(),
            names: Vec::new(),
            key: KeyKind::default(),
            not_before: time::Duration::hours(-1),
            not_after: time::Duration::days(days),
            authority_key_id: true,
            ca_issuers_url: None,
        }
    }

    pub fn names<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.names = names.into_iter().map(Into::into).collect();
        self
    }

    pub fn key(mut self, key: KeyKind) -> Self {
        self.key = key;
        self
    }

    fn params(&self) -> Result<CertificateParams, rcgen::Error> {
        let mut params = CertificateParams::new(self.names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        let now = OffsetDateTime::now_utc();
        params.not_before = now + self.not_before;
        params.not_after = now + self.not_after;
        params.use_authority_key_identifier_extension = self.authority_key_id;
        let mut serial = [0u8; 16];
        fill_random(&mut serial);
        // A leading byte in 0x40..=0x7f keeps the DER INTEGER positive and its length fixed.
        serial[0] = (serial[0] & 0x3f) | 0x40;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        if let Some(url) = &self.ca_issuers_url {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                    aia_ca_issuers(url),
                ));
        }
        Ok(params)
    }
}

/// A leaf's basicConstraints and Subject Key Identifier, DER-correct.
///
/// rcgen's `IsCa::ExplicitNoCa` writes `cA: FALSE` explicitly, which DER forbids (a DEFAULT
/// value must be left out): strict parsers such as Python's `cryptography` then refuse the
/// certificate. So leaves get an empty basicConstraints (not a CA) and an SKI of our own.
fn leaf_extensions(params: &mut CertificateParams, key: &KeyPair) {
    params.is_ca = IsCa::NoCa;
    let ski = params.key_identifier(key);
    let mut octets = vec![0x04, ski.len() as u8];
    octets.extend_from_slice(&ski);
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 14],
            octets,
        ));
    let mut bc = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    bc.set_criticality(true);
    params.custom_extensions.push(bc);
}

/// DER of AuthorityInfoAccessSyntax with one caIssuers URI.
fn aia_ca_issuers(url: &str) -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = body.len();
        if n < 128 {
            out.push(n as u8);
        } else {
            out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(body);
        out
    }
    let oid_ca_issuers = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    let mut desc = oid_ca_issuers.to_vec();
    desc.extend(tlv(0x86, url.as_bytes()));
    tlv(0x30, &tlv(0x30, &desc))
}

fn fill_random(buf: &mut [u8]) {
    use aws_lc_rs::rand::SecureRandom;
    // The system RNG failing is unrecoverable for certificate making; a zero serial is still valid DER.
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(buf);
}

impl Authority {
    /// A new self-signed root CA.
    pub fn new_root(spec: &Spec) -> Result<Self, rcgen::Error> {
        let key = spec.key.generate()?;
        let mut params = spec.params()?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        };
        Ok(Self {
            issued,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, KeyPair::from_pem(key_pem)?)?;
        Ok(Self {
            issued: Issued {
                cert_pem: cert_pem.to_string(),
                key_pem: key.serialize_pem(),
                der,
            },
            issuer,
        })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, spec: &Spec) -> Result<Authority, rcgen::Error> {
        let key = spec.key.generate()?;
        let mut params = spec.params()?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        };
        Ok(Authority {
            issued,
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate (serverAuth) for `spec.names`.
    pub fn server(&self, spec: &Spec) -> Result<Issued, rcgen::Error> {
        self.leaf(spec, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (clientAuth) for mTLS.
    pub fn client(&self, spec: &Spec) -> Result<Issued, rcgen::Error> {
        self.leaf(spec, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, spec: &Spec, eku: ExtendedKeyUsagePurpose) -> Result<Issued, rcgen::Error> {
        let key = spec.key.generate()?;
        let mut params = spec.params()?;
        leaf_extensions(&mut params, &key);
        params.key_usages = match spec.key {
            KeyKind::Rsa2048 => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            _ => vec![KeyUsagePurpose::DigitalSignature],
        };
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }
}

/// A self-signed leaf certificate (no CA), as internal servers often present.
pub fn self_signed_server(spec: &Spec) -> Result<Issued, rcgen::Error> {
    let key = spec.key.generate()?;
    let mut params = spec.params()?;
    leaf_extensions(&mut params, &key);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    })
}

/// The files of the development PKI in the data directory.
pub struct DevServer {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Makes (or reuses) the development CA and a localhost server certificate under `data_dir`.
///
/// The CA lives 10 years, the server certificate 90 days and is re-issued when under 7 days.
pub fn ensure_dev_server(data_dir: &Path) -> Result<DevServer, String> {
    let ca = ensure_dev_ca(data_dir)?;
    let cert_file = data_dir.join("server.crt");
    let key_file = data_dir.join("server.key");
    let fresh = fs::read(&cert_file)
        .ok()
        .and_then(|pem| seconds_left_pem(&pem))
        .is_some_and(|left| left > 7 * 86_400)
        && key_file.exists();
    if !fresh {
        let spec = Spec::new("localhost", 90).names(["localhost", "127.0.0.1", "::1"]);
        let leaf = ca.server(&spec).map_err(|e| e.to_string())?;
        write_private(&key_file, leaf.key_pem.as_bytes())?;
        write_public(&cert_file, leaf.cert_pem.as_bytes())?;
    }
    Ok(DevServer {
        ca_file: data_dir.join("ca.crt"),
        cert_file,
        key_file,
    })
}

/// Loads the development CA from `data_dir`, making it first if it is not there.
pub fn ensure_dev_ca(data_dir: &Path) -> Result<Authority, String> {
    fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let ca_file = data_dir.join("ca.crt");
    let ca_key = data_dir.join("ca.key");
    if let (Ok(cert), Ok(key)) = (fs::read_to_string(&ca_file), fs::read_to_string(&ca_key)) {
        return Authority::from_pem(&cert, &key).map_err(|e| {
            format!(
                "{} or {} is not a usable CA: {e}",
                ca_file.display(),
                ca_key.display()
            )
        });
    }
    let ca = Authority::new_root(&Spec::new("mcpgate development CA", 3650))
        .map_err(|e| e.to_string())?;
    write_private(&ca_key, ca.issued.key_pem.as_bytes())?;
    write_public(&ca_file, ca.issued.cert_pem.as_bytes())?;
    Ok(ca)
}

/// Seconds until the first certificate of a PEM blob expires (negative when expired).
pub fn seconds_left_pem(pem: &[u8]) -> Option<i64> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    seconds_left(&der)
}

/// Seconds until a DER certificate expires (negative when expired).
pub fn seconds_left(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    Some(cert.validity().not_after.timestamp() - now)
}

/// Writes a private key readable by its owner only (0600), atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_with_mode(path, bytes, 0o600)
}

/// Writes a certificate (0644), atomically.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_with_mode(path, bytes, 0o644)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))
}
