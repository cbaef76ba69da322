//! PEM loading with errors that name the config key, the file and the fix.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// Loads every certificate of a PEM file (a leaf followed by its chain, or a CA bundle).
pub fn certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    certs_from_bytes(key, path, &read(key, path)?)
}

/// The certificates of PEM text read from `path` (named in errors).
pub fn certs_from_bytes(
    key: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            ConfigError::new(key, format!("{}: not valid PEM: {e}", path.display()))
                .hint("the file must hold PEM blocks \"-----BEGIN CERTIFICATE-----\"")
        })?;
    if certs.is_empty() {
        return Err(
            ConfigError::new(key, format!("{}: holds no certificate", path.display()))
                .hint("give a PEM file with at least one \"-----BEGIN CERTIFICATE-----\" block"),
        );
    }
    Ok(certs)
}

/// Loads every certificate from a PEM file, or from every `.pem`/`.crt`/`.cer` file of a directory.
pub fn certs_file_or_dir(
    key: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    if !path.is_dir() {
        return certs(key, path);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        ConfigError::new(
            key,
            format!("cannot read directory {}: {e}", path.display()),
        )
        .hint("check the path and its permissions")
    })?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "pem" | "crt" | "cer"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in &files {
        out.extend(certs(key, f)?);
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            key,
            format!(
                "directory {} holds no .pem/.crt/.cer certificate",
                path.display()
            ),
        )
        .hint("put the CA certificates there as PEM files"));
    }
    Ok(out)
}

/// Loads a private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), PEM encoded.
pub fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    private_key_from_bytes(key, path, &read(key, path)?)
}

/// The private key of PEM text read from `path` (named in errors).
pub fn private_key_from_bytes(
    key: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        ConfigError::new(key, format!("{}: no usable private key: {e}", path.display()))
            .hint("give an unencrypted PEM key: \"BEGIN PRIVATE KEY\" (PKCS#8), \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\"")
    })
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError::new(
            key,
            format!("cannot read {:?}: {e}", path.display().to_string()),
        )
        .hint("check the path (relative paths are relative to the config file) and its permissions")
    })
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` for any other character.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = input.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= digit(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Some(out)
}

/// A DER certificate as a PEM block.
pub fn cert_pem(der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_what_it_encodes() {
        for text in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "caf\u{e9} \u{1f600}",
        ] {
            assert_eq!(
                base64_decode(&base64(text.as_bytes())).as_deref(),
                Some(text.as_bytes())
            );
        }
        assert_eq!(base64_decode("Zm9v!"), None);
        assert_eq!(base64_decode("Z"), None);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
