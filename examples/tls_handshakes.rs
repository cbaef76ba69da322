//! The benchmark's TLS handshake generator: new TLS 1.3 connections per second against a
//! listener, full or resumed, with one key-exchange group (X25519) offered and nothing else.
//!
//! Each of `--connections` loops connects, completes the handshake, sends close_notify and reads
//! until the server closes (so the server finishes its side and its session tickets are read),
//! then starts again. Prints one JSON line: handshakes, errors, handshakes/s, how many were
//! resumed, and the cipher suite the server chose. With `--resume`, tickets from earlier
//! handshakes are offered; without it, every handshake is a full one.
//!
//! The client checks that the server presents the certificate in `--cert` (byte for byte) but
//! does not verify the handshake signature: verifying is costlier than signing for ECDSA, and on
//! two cores the generator's own crypto must not cap the server's rate. Benchmark use only.
//!
//! With `--sign-speed KEY`, it connects nowhere: it times the one private-key operation a full
//! handshake cannot skip, a TLS 1.3 CertificateVerify signature with KEY (RSA-PSS-SHA256 for an
//! RSA key, ECDSA-P256-SHA256 for a P-256 one), through the same rustls provider (aws-lc-rs)
//! that mcpgate signs with, and the server's side of an X25519 exchange (a key pair and the
//! shared secret), and prints the microseconds each takes.
//!
//! ```text
//! cargo run --release --example tls_handshakes -- --addr 127.0.0.1:8443 --cert server.crt \
//!     --connections 16 --seconds 5 [--resume]
//! cargo run --release --example tls_handshakes -- --sign-speed server.key --seconds 2
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, HandshakeKind, SignatureScheme};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Options {
    addr: String,
    cert: String,
    connections: usize,
    seconds: f64,
    warmup: f64,
    resume: bool,
    sign_speed: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        addr: String::new(),
        cert: String::new(),
        connections: 16,
        seconds: 5.0,
        warmup: 1.0,
        resume: false,
        sign_speed: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--addr" => o.addr = value()?,
            "--cert" => o.cert = value()?,
            "--connections" => o.connections = number(value()?)? as usize,
            "--seconds" => o.seconds = number(value()?)?,
            "--warmup" => o.warmup = number(value()?)?,
            "--resume" => o.resume = true,
            "--sign-speed" => o.sign_speed = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.sign_speed.is_none() && (o.addr.is_empty() || o.cert.is_empty()) {
        return Err("give --addr HOST:PORT and --cert FILE (the server's certificate)".into());
    }
    if !(1..=1000).contains(&o.connections) || !(0.1..=120.0).contains(&o.seconds) {
        return Err("--connections takes 1 to 1000 and --seconds 0.1 to 120".into());
    }
    Ok(o)
}

/// Accepts exactly the expected leaf certificate; see the module comment on signatures.
#[derive(Debug)]
struct ExpectedLeaf {
    leaf: CertificateDer<'static>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for ExpectedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server presented another certificate than --cert".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not benchmarked".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

fn connector(o: &Options) -> Result<tokio_rustls::TlsConnector, String> {
    let pem = std::fs::read(&o.cert).map_err(|e| format!("--cert {}: {e}", o.cert))?;
    let leaf = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
        .next()
        .ok_or(format!("--cert {}: no certificate in the file", o.cert))?
        .map_err(|e| format!("--cert {}: {e}", o.cert))?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .kx_groups
        .retain(|g| g.name() == rustls::NamedGroup::X25519);
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectedLeaf { leaf, schemes }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !o.resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[derive(Default)]
struct Tally {
    full: AtomicU64,
    resumed: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    /// The cipher suite the server chose, from the first handshake.
    suite: std::sync::OnceLock<String>,
}

/// What one handshake agreed: full or resumed, and the cipher suite.
struct Agreed {
    kind: Option<HandshakeKind>,
    suite: Option<rustls::CipherSuite>,
}

/// One handshake, then close_notify, then reading until the server closes.
async fn handshake(addr: &str, tls: &tokio_rustls::TlsConnector) -> Result<Agreed, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    let agreed = Agreed {
        kind: stream.get_ref().1.handshake_kind(),
        suite: stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite()),
    };
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(agreed)
}

async fn run_loop(
    o: Arc<Options>,
    tls: tokio_rustls::TlsConnector,
    tally: Arc<Tally>,
    start: Instant,
) {
    let warm = Duration::from_secs_f64(o.warmup);
    let end = warm + Duration::from_secs_f64(o.seconds);
    loop {
        let before = start.elapsed();
        if before >= end {
            return;
        }
        let result = handshake(&o.addr, &tls).await;
        if before < warm {
            continue;
        }
        if let Ok(Agreed { suite: Some(s), .. }) = &result {
            let _ = tally.suite.set(format!("{s:?}"));
        }
        match result.map(|a| a.kind) {
            Ok(Some(HandshakeKind::Resumed)) => tally.resumed.fetch_add(1, Ordering::Relaxed),
            Ok(_) => tally.full.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                let mut first = tally.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert(e);
                tally.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Times CertificateVerify signatures with the key in `path` for `seconds`: microseconds each.
fn sign_speed(path: &str, seconds: f64) -> Result<f64, String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{path}: {e}"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{path}: {e}"))?;
    let signer = key
        .choose_scheme(&[
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ])
        .ok_or(format!("{path}: neither an RSA nor a P-256 key"))?;
    // What TLS 1.3 signs: 64 spaces, a context string, a zero byte, a SHA-256 transcript hash.
    let mut message = vec![b' '; 64];
    message.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    message.extend_from_slice(&[7u8; 32]);
    let (start, mut count) = (Instant::now(), 0u32);
    while start.elapsed().as_secs_f64() < seconds {
        signer.sign(&message).map_err(|e| format!("signing: {e}"))?;
        count += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(count))
}

/// Times the server's side of an X25519 exchange (a key pair, then the shared secret with the
/// client's share) for `seconds`: microseconds each.
fn x25519_speed(seconds: f64) -> f64 {
    use rustls::crypto::aws_lc_rs::kx_group::X25519;
    let Ok(client) = X25519.start() else {
        return f64::NAN;
    };
    let share = client.pub_key().to_vec();
    let (start, mut count) = (Instant::now(), 0u32);
    while start.elapsed().as_secs_f64() < seconds {
        if let Ok(server) = X25519.start() {
            let _ = server.complete(&share);
        }
        count += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(count)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = match options() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("tls_handshakes: {e}");
            std::process::exit(2);
        }
    };
    if let Some(key) = &o.sign_speed {
        match sign_speed(key, o.seconds) {
            Ok(us) => println!(
                "{}",
                json!({ "key": key, "sign_us": us, "x25519_us": x25519_speed(o.seconds) })
            ),
            Err(e) => {
                eprintln!("tls_handshakes: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let tls = match connector(&o) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tls_handshakes: {e}");
            std::process::exit(2);
        }
    };
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let loops: Vec<_> = (0..o.connections)
        .map(|_| tokio::spawn(run_loop(o.clone(), tls.clone(), tally.clone(), start)))
        .collect();
    for l in loops {
        let _ = l.await;
    }
    let full = tally.full.load(Ordering::Relaxed);
    let resumed = tally.resumed.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let first_error = tally
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    println!(
        "{}",
        json!({
            "connections": o.connections,
            "seconds": o.seconds,
            "resume": o.resume,
            "handshakes": full + resumed,
            "full": full,
            "resumed": resumed,
            "errors": errors,
            "first_error": first_error,
            "hps": (full + resumed) as f64 / o.seconds,
            "suite": tally.suite.get(),
        })
    );
    if full + resumed == 0 || errors * 100 > (full + resumed) {
        eprintln!("tls_handshakes: too many failed handshakes ({errors})");
        std::process::exit(1);
    }
}
