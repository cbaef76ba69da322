//! The outbound connector: TCP (directly, or through an `HTTPS_PROXY` CONNECT tunnel), then
//! TLS with the upstream's trust profile. Plugged into hyper-util's pooled client, so
//! connections are reused (keep-alive, HTTP/2 by ALPN) and TLS sessions resumed through the
//! profile's shared `ClientConfig`.
//!
//! Every failure comes back as a classified `Failure` (see `tls::diagnose`) naming the
//! upstream, URL, peer address, SNI and trust source. An unknown-issuer failure triggers a
//! second, capture-only handshake to see the chain the server sent.

// A `Failure` is the full diagnosis (class, context, hint); it is built only on the error path.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::diagnose::{self, ErrorClass, Failure, Where};
use crate::tls::trust::TrustProfile;

#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: String,
    profile: Arc<TrustProfile>,
    proxy: Option<Proxy>,
    timeout: Duration,
}

impl Connector {
    pub fn new(upstream: &str, profile: Arc<TrustProfile>, timeout: Duration) -> Self {
        if let Some(leaf) = profile.client_certificate() {
            record_expiry("client", upstream, leaf.as_ref());
        }
        Self {
            inner: Arc::new(Inner {
                upstream: upstream.to_string(),
                profile,
                proxy: Proxy::from_env(),
                timeout,
            }),
        }
    }

    pub fn profile(&self) -> &Arc<TrustProfile> {
        &self.inner.profile
    }

    /// Where a connection to `uri` goes, for messages.
    pub fn place(&self, uri: &Uri) -> Where {
        let host = host_of(uri);
        Where {
            upstream: self.inner.upstream.clone(),
            url: diagnose::redact_url(&uri.to_string()),
            peer: None,
            sni: self.inner.profile.server_name.clone().unwrap_or(host),
            trust: self.inner.profile.source.to_string(),
        }
    }
}

fn host_of(uri: &Uri) -> String {
    uri.host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = Failure;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Failure>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.connect(uri).await.map(TokioIo::new) })
    }
}

impl Connector {
    pub async fn connect(&self, uri: Uri) -> Result<Stream, Failure> {
        self.connect_using(uri, self.inner.profile.config.clone())
            .await
    }

    async fn connect_using(
        &self,
        uri: Uri,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Stream, Failure> {
        let inner = &self.inner;
        let mut at = self.place(&uri);
        let https = uri.scheme_str() == Some("https");
        let host = host_of(&uri);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = match &inner.proxy {
            Some(p) if https && !p.bypass(&host) => {
                p.tunnel(&host, port, inner.timeout, &at).await?
            }
            _ => tcp_connect(&host, port, inner.timeout, &at).await?,
        };
        at.peer = tcp.peer_addr().ok();
        if !https {
            return Ok(Stream::Plain(tcp));
        }
        let profile = &inner.profile;
        if profile.insecure {
            tracing::warn!(upstream = %inner.upstream, peer = ?at.peer, "INSECURE: TLS verification is off ({}); this connection is not authenticated", profile.source);
        }
        let name = ServerName::try_from(at.sni.clone()).map_err(|_| {
            Failure::new(
                ErrorClass::Other,
                at.clone(),
                format!("{:?} is not a valid TLS server name", at.sni),
                format!(
                    "set {}.server_name to the name the certificate covers",
                    profile.key
                ),
            )
        })?;
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name.clone(), tcp);
        match tokio::time::timeout(inner.timeout, handshake).await {
            Ok(Ok(tls)) => {
                let conn = tls.get_ref().1;
                let h2 = conn.alpn_protocol() == Some(b"h2");
                if let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) {
                    record_expiry("upstream", &inner.upstream, leaf.as_ref());
                }
                Ok(Stream::Tls(Box::new(tls), h2))
            }
            Ok(Err(e)) => {
                let f = self.diagnose(&e, at, name, &host, port).await;
                crate::metrics::handshake_failure("upstream", f.class.as_str());
                Err(f)
            }
            Err(_) => Err(Failure::new(
                ErrorClass::TimedOut,
                at,
                "the TLS handshake timed out",
                "the port may not speak TLS, or a middlebox is holding the connection; try mcpgate probe",
            )),
        }
    }

    async fn diagnose(
        &self,
        e: &io::Error,
        at: Where,
        name: ServerName<'static>,
        host: &str,
        port: u16,
    ) -> Failure {
        let profile = &self.inner.profile;
        let Some(tls_err) = diagnose::find_rustls_error(e) else {
            if e.kind() == io::ErrorKind::UnexpectedEof
                || e.kind() == io::ErrorKind::ConnectionReset
            {
                return Failure::new(
                    ErrorClass::PlaintextOnTlsPort,
                    at,
                    "the server closed the connection during the TLS handshake",
                    "the port may not speak TLS (use http://), or it refuses every TLS version and cipher mcpgate offers",
                );
            }
            return diagnose::classify_io(e, at);
        };
        let chain = if matches!(tls_err, rustls::Error::InvalidCertificate(_)) {
            self.capture_chain(name, host, port, &at).await
        } else {
            Vec::new()
        };
        diagnose::classify_tls(tls_err, at, profile, &chain)
    }

    /// Connects again and reads first: a server that refuses the client (certificate required
    /// or rejected, TLS 1.3) says so in an alert right after the handshake.
    pub async fn recheck(&self, uri: &Uri) -> Option<Failure> {
        let profile = &self.inner.profile;
        let (config, asked) = profile.recording_client_auth();
        let stream = match self.connect_using(uri.clone(), config).await {
            Ok(s) => s,
            Err(f) => return Some(f),
        };
        let Stream::Tls(mut tls, _) = stream else {
            return None;
        };
        let mut at = self.place(uri);
        at.peer = tls.get_ref().0.peer_addr().ok();
        let mut byte = [0u8; 1];
        let closed = match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut byte)).await {
            Ok(Err(e)) => {
                if let Some(r) = diagnose::find_rustls_error(&e) {
                    return Some(diagnose::classify_tls(r, at, profile, &[]));
                }
                true
            }
            Ok(Ok(0)) => true,
            _ => false,
        };
        // Some servers (Python's ssl, for one) refuse a client certificate by closing, no alert.
        if closed && asked.load(std::sync::atomic::Ordering::SeqCst) {
            let (class, summary, hint) = if profile.has_client_cert {
                (
                    ErrorClass::ClientCertRejected,
                    "the server asked for a client certificate and closed the connection after getting ours (rejected)",
                    "use a client certificate issued by a CA the server trusts, and not expired"
                        .to_string(),
                )
            } else {
                (
                    ErrorClass::ClientCertRequired,
                    "the server asked for a client certificate and closed the connection when none was sent (required)",
                    format!(
                        "set {0}.cert_file and {0}.key_file (or --cert/--key) to a client certificate the server trusts",
                        profile.key
                    ),
                )
            };
            return Some(Failure::new(class, at, summary, hint));
        }
        None
    }

    /// A second handshake that accepts anything, only to see the chain the server sends.
    pub async fn capture_chain(
        &self,
        name: ServerName<'static>,
        host: &str,
        port: u16,
        at: &Where,
    ) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        let (config, seen) = self.inner.profile.capturing();
        let tcp = match &self.inner.proxy {
            Some(p) if !p.bypass(host) => p.tunnel(host, port, self.inner.timeout, at).await,
            _ => tcp_connect(host, port, self.inner.timeout, at).await,
        };
        if let Ok(tcp) = tcp {
            let _ = tokio::time::timeout(
                self.inner.timeout,
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await;
        }
        seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Records a certificate's expiry for the metrics (the upstream's, or our client certificate).
fn record_expiry(role: &str, name: &str, der: &[u8]) {
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(der) {
        crate::metrics::forget_certificates(role, name);
        crate::metrics::certificate_not_after(
            role,
            name,
            &c.subject().to_string(),
            c.validity().not_after.timestamp(),
        );
    }
}

async fn tcp_connect(
    host: &str,
    port: u16,
    timeout: Duration,
    at: &Where,
) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) if e.to_string().contains("lookup") || e.to_string().contains("resolve") => {
            Err(Failure::new(
                ErrorClass::Dns,
                at.clone(),
                format!("cannot resolve {host:?}: {e}"),
                "check the host name in the URL (or the DNS of this machine)",
            ))
        }
        Ok(Err(e)) => Err(diagnose::classify_io(&e, at.clone())),
        Err(_) => Err(diagnose::classify_io(
            &io::Error::from(io::ErrorKind::TimedOut),
            at.clone(),
        )),
    }
}

/// `HTTPS_PROXY` / `NO_PROXY` from the environment (either case).
struct Proxy {
    host: String,
    port: u16,
    auth: Option<String>,
    no_proxy: Vec<String>,
}

impl Proxy {
    fn from_env() -> Option<Self> {
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .or_else(|| std::env::var(k.to_ascii_lowercase()).ok())
                .filter(|v| !v.is_empty())
        };
        let raw = var("HTTPS_PROXY")?;
        let uri: Uri = if raw.contains("://") {
            raw.parse().ok()?
        } else {
            format!("http://{raw}").parse().ok()?
        };
        let authority = uri.authority()?;
        let (auth, _) = match authority.as_str().rsplit_once('@') {
            Some((userinfo, hostport)) => {
                (Some(crate::tls::pem::base64(userinfo.as_bytes())), hostport)
            }
            None => (None, authority.as_str()),
        };
        let no_proxy = var("NO_PROXY")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            host: uri.host()?.to_string(),
            port: uri.port_u16().unwrap_or(80),
            auth,
            no_proxy,
        })
    }

    fn bypass(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.no_proxy.iter().any(|n| {
            n == "*" || *n == host || {
                let suffix = n.trim_start_matches('*').trim_start_matches('.');
                host.ends_with(&format!(".{suffix}"))
            }
        })
    }

    async fn tunnel(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
        at: &Where,
    ) -> Result<TcpStream, Failure> {
        let mut tcp = tcp_connect(&self.host, self.port, timeout, at)
            .await
            .map_err(|mut f| {
                f.summary = format!(
                    "cannot reach the proxy {}:{} (HTTPS_PROXY): {}",
                    self.host, self.port, f.summary
                );
                f.class = ErrorClass::Proxy;
                f
            })?;
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(a) = &self.auth {
            req.push_str(&format!("Proxy-Authorization: Basic {a}\r\n"));
        }
        req.push_str("\r\n");
        let exchange = async {
            tcp.write_all(req.as_bytes()).await?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                if tcp.read(&mut byte).await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                head.push(byte[0]);
            }
            Ok::<_, io::Error>(String::from_utf8_lossy(&head).into_owned())
        };
        let head = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(h)) => h,
            _ => {
                return Err(Failure::new(
                    ErrorClass::Proxy,
                    at.clone(),
                    format!(
                        "the proxy {}:{} did not answer CONNECT",
                        self.host, self.port
                    ),
                    "check HTTPS_PROXY, or add the host to NO_PROXY",
                ));
            }
        };
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            let line = head.lines().next().unwrap_or("").to_string();
            return Err(Failure::new(
                ErrorClass::Proxy,
                at.clone(),
                format!("the proxy refused CONNECT {target}: {line}"),
                "check the proxy's credentials in HTTPS_PROXY (user:pass@host:port), or add the host to NO_PROXY",
            ));
        }
        Ok(tcp)
    }
}

/// A connection to an upstream: plain TCP (http://) or TLS (with whether h2 was negotiated).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>, bool),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Tls(_, true) => Connected::new().negotiated_h2(),
            _ => Connected::new(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
