//! Certificate chain inspection for `probe`: the facts of each certificate the server sent,
//! and notes on what other clients will reject even though mcpgate accepts it.

use serde::Serialize;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::public_key::PublicKey;

use super::trust::{hex_fingerprint, sha256};

/// One certificate of a presented chain.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub days_left: i64,
    pub key_type: String,
    pub key_bits: usize,
    pub signature_algorithm: String,
    pub is_ca: bool,
    pub self_signed: bool,
    pub has_authority_key_id: bool,
    pub has_subject_key_id: bool,
    pub sha256: String,
}

/// Parses a DER certificate into its facts; `None` if it is not a certificate.
pub fn describe(der: &[u8]) -> Option<CertInfo> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut sans = Vec::new();
    let mut aki = false;
    let mut ski = false;
    for ext in c.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => sans.push(d.to_string()),
                        GeneralName::IPAddress(ip) => sans.push(ip_text(ip)),
                        other => sans.push(other.to_string()),
                    }
                }
            }
            ParsedExtension::AuthorityKeyIdentifier(_) => aki = true,
            ParsedExtension::SubjectKeyIdentifier(_) => ski = true,
            _ => {}
        }
    }
    let spki = c.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    let (key_type, key_bits) = match (alg.as_str(), spki.parsed()) {
        (_, Ok(PublicKey::RSA(rsa))) => ("RSA".to_string(), rsa.key_size()),
        ("1.2.840.10045.2.1", Ok(PublicKey::EC(ec))) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| match o.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => "P-256".to_string(),
                    "1.3.132.0.34" => "P-384".to_string(),
                    "1.3.132.0.35" => "P-521".to_string(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (format!("ECDSA {curve}"), ec.key_size())
        }
        ("1.3.101.112", _) => ("Ed25519".to_string(), 256),
        (other, _) => (other.to_string(), 0),
    };
    let oid = c.signature_algorithm.algorithm.to_id_string();
    let sig = match oid.as_str() {
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassa-pss",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "ed25519",
        other => other,
    };
    Some(finish(
        &c,
        der,
        sans,
        aki,
        ski,
        key_type,
        key_bits,
        sig.to_string(),
    ))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    c: &x509_parser::certificate::X509Certificate<'_>,
    der: &[u8],
    sans: Vec<String>,
    aki: bool,
    ski: bool,
    key_type: String,
    key_bits: usize,
    signature_algorithm: String,
) -> CertInfo {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let not_after = c.validity().not_after.timestamp();
    let is_ca = c
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    let self_signed =
        c.subject().as_raw() == c.issuer().as_raw() && c.verify_signature(None).is_ok();
    CertInfo {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        sans,
        not_before: c.validity().not_before.to_string(),
        not_after: c.validity().not_after.to_string(),
        days_left: (not_after - now).div_euclid(86_400),
        key_type,
        key_bits,
        signature_algorithm,
        is_ca,
        self_signed,
        has_authority_key_id: aki,
        has_subject_key_id: ski,
        sha256: hex_fingerprint(&sha256(der)),
    }
}

/// An IP address SAN (4 or 16 bytes) as text.
pub(crate) fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{bytes:?}"),
    }
}

/// What will break other clients (or soon), though mcpgate accepts it.
pub fn notes(chain: &[CertInfo], raw_issuer_links: &[bool]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in chain.iter().enumerate() {
        let who = if i == 0 {
            "the server's certificate".to_string()
        } else {
            format!("chain certificate #{i} ({})", c.subject)
        };
        if !c.self_signed && !c.has_authority_key_id {
            out.push(format!("{who} has no Authority Key Identifier: Python 3.13+ clients (VERIFY_X509_STRICT) reject it"));
        }
        if c.is_ca && !c.has_subject_key_id {
            out.push(format!(
                "{who} is a CA without a Subject Key Identifier: strict verifiers may reject it"
            ));
        }
        if c.key_type == "RSA" && c.key_bits < 2048 {
            out.push(format!(
                "{who} has an RSA key of {} bits: under 2048 bits is refused by modern clients",
                c.key_bits
            ));
        }
        if c.days_left < 0 {
            out.push(format!("{who} expired {} days ago", -c.days_left));
        } else if c.days_left < 30 {
            out.push(format!(
                "{who} expires in {} days ({})",
                c.days_left, c.not_after
            ));
        }
    }
    if let Some(leaf) = chain.first()
        && leaf.sans.is_empty()
    {
        out.push("the server's certificate has no Subject Alternative Names: clients ignore the common name and will reject it".into());
    }
    if raw_issuer_links.iter().any(|linked| !linked) {
        out.push(
            "the chain is out of order: each certificate should be followed by its issuer".into(),
        );
    }
    if chain.len() > 1 && chain.iter().skip(1).any(|c| c.self_signed) {
        out.push(
            "the chain includes its root CA: harmless, but wasted bytes in every handshake".into(),
        );
    }
    out
}

/// Whether each certificate after the first is the issuer of the one before it.
pub fn issuer_links(ders: &[Vec<u8>]) -> Vec<bool> {
    let names: Vec<(Vec<u8>, Vec<u8>)> = ders
        .iter()
        .filter_map(|d| {
            let (_, c) = x509_parser::parse_x509_certificate(d).ok()?;
            Some((c.subject().as_raw().to_vec(), c.issuer().as_raw().to_vec()))
        })
        .collect();
    names.windows(2).map(|w| w[0].1 == w[1].0).collect()
}
