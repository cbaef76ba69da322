//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per sealed value and the server's
//! name as associated data (a row copied under another name does not open).
//!
//! The key comes from `MCPGATE_SECRET_KEY` (64 hex digits) or from `<data_dir>/secret.key`,
//! created with mode 0600 on first use. It is read once at start; nothing is derived per
//! request. Its id (the first 8 bytes of its SHA-256, hex) is stored beside each value, so a
//! row sealed under another key says so instead of failing as "corrupt".

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Where the key came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => write!(f, "MCPGATE_SECRET_KEY"),
            KeySource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

pub struct SecretKey {
    key: LessSafeKey,
    pub id: String,
    pub source: KeySource,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A value sealed by `SecretKey::seal`.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl SecretKey {
    /// The key from `MCPGATE_SECRET_KEY`, else from (or newly into) `<data_dir>/secret.key`.
    pub fn load(data_dir: &Path) -> Result<Self, String> {
        match std::env::var("MCPGATE_SECRET_KEY") {
            Ok(v) if !v.trim().is_empty() => {
                let bytes = parse_hex_key(v.trim()).map_err(|why| {
                    format!("MCPGATE_SECRET_KEY {why}; hint: give 64 hex digits, e.g. from `openssl rand -hex 32`")
                })?;
                Self::from_bytes(&bytes, KeySource::Env)
            }
            _ => Self::from_file(&data_dir.join("secret.key")),
        }
    }

    /// Reads the key file, creating it (mode 0600, 32 random bytes as hex) when missing.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        if !path.exists() {
            create_key_file(path)?;
        }
        check_mode(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the secret key file {}: {e}; hint: check its owner and permissions",
                path.display()
            )
        })?;
        let bytes = parse_hex_key(text.trim()).map_err(|why| {
            format!(
                "the secret key file {} {why}; hint: restore the file from your backup (without it the registry's secrets cannot be opened)",
                path.display()
            )
        })?;
        Self::from_bytes(&bytes, KeySource::File(path.to_path_buf()))
    }

    fn from_bytes(bytes: &[u8], source: KeySource) -> Result<Self, String> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| format!("the secret key from {source} is not a 256-bit key"))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let id = hex(&digest.as_ref()[..8]);
        Ok(Self {
            key: LessSafeKey::new(unbound),
            id,
            source,
        })
    }

    /// Seals `plaintext` bound to `context` (the server's name).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Sealed, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "the system random number generator failed".to_string())?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| "encryption failed".to_string())?;
        Ok(Sealed {
            key_id: self.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: buf,
        })
    }

    /// Opens a sealed value; every failure says why in words a person can act on.
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, String> {
        if sealed.key_id != self.id {
            return Err(format!(
                "was encrypted with key {} but this gateway has key {} (from {}); hint: start with the key that wrote it (MCPGATE_SECRET_KEY or the secret.key file), or delete and re-add the server",
                sealed.key_id, self.id, self.source
            ));
        }
        let nonce: [u8; NONCE_LEN] =
            sealed.nonce.as_slice().try_into().map_err(|_| {
                "has a damaged nonce; hint: delete and re-add the server".to_string()
            })?;
        let mut buf = sealed.ciphertext.clone();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| {
                "does not decrypt (the row was altered, or copied from another server); hint: delete and re-add the server".to_string()
            })?;
        Ok(plain.to_vec())
    }
}

fn create_key_file(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the data directory {}: {e}; hint: set data_dir or MCPGATE_DATA_DIR to a writable directory",
                dir.display()
            )
        })?;
    }
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "the system random number generator failed".to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(path).and_then(|mut f| {
        use std::io::Write;
        f.write_all(format!("{}\n", hex(&key)).as_bytes())?;
        f.sync_all()
    });
    match written {
        Ok(()) => {
            tracing::info!(file = %path.display(), "created the registry's secret key (back it up: without it stored secrets cannot be read)");
            Ok(())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "cannot create the secret key file {}: {e}; hint: set data_dir to a writable directory, or give MCPGATE_SECRET_KEY",
            path.display()
        )),
    }
}

/// Refuses a key file that others can read (fail closed, as ssh does).
fn check_mode(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "the secret key file {} has mode {:o}, readable by others; hint: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    Ok(())
}

fn parse_hex_key(text: &str) -> Result<Vec<u8>, String> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "is not 64 hex digits (it has {} characters)",
            text.len()
        ));
    }
    (0..32)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes(&[byte; 32], KeySource::Env).unwrap()
    }

    #[test]
    fn seal_then_open_round_trips_with_fresh_nonces() {
        let k = key(1);
        let a = k.seal("srv", b"canary").unwrap();
        let b = k.seal("srv", b"canary").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert!(!a.ciphertext.windows(6).any(|w| w == b"canary"));
        assert_eq!(k.open("srv", &a).unwrap(), b"canary");
    }

    #[test]
    fn another_name_another_key_or_a_flipped_bit_do_not_open() {
        let k = key(1);
        let mut s = k.seal("srv", b"secret").unwrap();
        assert!(
            k.open("other", &s)
                .unwrap_err()
                .contains("does not decrypt")
        );
        assert!(
            key(2)
                .open("srv", &s)
                .unwrap_err()
                .contains("encrypted with key")
        );
        s.ciphertext[0] ^= 1;
        assert!(k.open("srv", &s).is_err());
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = std::env::temp_dir().join(format!("mcpgate-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("secret.key");
        let a = SecretKey::from_file(&path).unwrap();
        let b = SecretKey::from_file(&path).unwrap();
        assert_eq!(a.id, b.id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(
                SecretKey::from_file(&path)
                    .unwrap_err()
                    .contains("chmod 600")
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_key_text_is_explained() {
        assert!(parse_hex_key("abc").unwrap_err().contains("64 hex digits"));
    }
}
