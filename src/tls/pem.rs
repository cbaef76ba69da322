//! PEM loading with errors that name the config key, the file and the fix.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// Loads every certificate of a PEM file (a leaf followed by its chain, or a CA bundle).
pub fn certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(key, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
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
    let bytes = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
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
