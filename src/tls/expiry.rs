//! Certificate expiry: the certificates `serve` presents and trusts are re-read every minute
//! (so reloads are seen) into the `mcpgate_certificate_expiry_seconds` gauge, and the log
//! warns once at 30, 7 and 1 days before each expires.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::pem;

/// Days before expiry at which to warn; 0 is "expired".
const THRESHOLDS_DAYS: [i64; 4] = [0, 1, 7, 30];

/// A certificate file to watch: its role (`listener`, `client_ca`, `client`, `upstream`), the
/// config key it came from, and the path.
#[derive(Clone, Debug)]
pub struct Watched {
    pub role: &'static str,
    pub key: String,
    pub path: PathBuf,
}

/// Records the files now, then every minute, warning as thresholds pass.
pub fn spawn(files: Vec<Watched>) {
    let mut warned: HashSet<(String, i64)> = HashSet::new();
    check(&files, &mut warned);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            check(&files, &mut warned);
        }
    });
}

fn check(files: &[Watched], warned: &mut HashSet<(String, i64)>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for w in files {
        let Ok(certs) = pem::certs(&w.key, &w.path) else {
            continue;
        };
        crate::metrics::forget_certificates(w.role, &w.key);
        for der in certs {
            let Ok((_, c)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
                continue;
            };
            let subject = c.subject().to_string();
            let not_after = c.validity().not_after.timestamp();
            crate::metrics::certificate_not_after(w.role, &w.key, &subject, not_after);
            let days_left = (not_after - now).div_euclid(86_400);
            // Only the tightest threshold passed is said, once.
            if let Some(t) = THRESHOLDS_DAYS.iter().find(|t| days_left < **t) {
                // Keyed by the certificate itself, so a renewed one is warned about afresh.
                if warned.insert((format!("{}|{subject}|{not_after}", w.path.display()), *t)) {
                    if days_left < 0 {
                        tracing::warn!(role = w.role, key = %w.key, %subject, "certificate EXPIRED {} days ago ({})", -days_left, w.path.display());
                    } else {
                        tracing::warn!(role = w.role, key = %w.key, %subject, "certificate expires in {days_left} days, under {t} days ({}); renew it", w.path.display());
                    }
                }
            }
        }
    }
}
