//! The downstream HTTPS edge: accept loop (TLS via tokio-rustls, then HTTP/1.1 or HTTP/2 by
//! ALPN through hyper-util), request routing, and graceful shutdown.
//!
//! Each connection's TLS facts (version, cipher, ALPN, SNI, client certificate) travel with
//! its requests, so a session can log who opened it.

mod body;
mod guard;
mod legacy;
mod modern;
mod reply;
mod streamable;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use body::Body;

/// Fuzzing: what the MCP endpoint makes of a POST body (parse, then split and check).
#[cfg(fuzzing)]
pub fn fuzz_post_body(bytes: &[u8], batches_allowed: bool) -> Result<usize, u16> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| 400u16)?;
    streamable::messages(value, batches_allowed)
        .map(|m| m.len())
        .map_err(|r| r.status().as_u16())
}

use crate::config::{Auth, Limits, ServerSettings};
use crate::router::Gateway;
use crate::tls::info::TlsFacts;
use crate::tls::reload::LiveServerConfig;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub gateway: Gateway,
    guard: guard::Guard,
    pub limits: Limits,
    pub tls_debug: bool,
}

impl App {
    pub fn new(
        gateway: Gateway,
        server: &ServerSettings,
        auth: &Auth,
        tls_debug: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            guard: guard::Guard::new(server, &auth.bearer_tokens),
            limits: server.limits.clone(),
            tls_debug,
        })
    }
}

/// The connection a request came on.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: Option<TlsFacts>,
}

/// Serves `listener` until `shutdown` resolves, then closes sessions and drains connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<LiveServerConfig>>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    let nodelay_inherited = nodelay_on_listener(&listener);
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if !nodelay_inherited {
            let _ = tcp.set_nodelay(true);
        }
        let app = app.clone();
        let tls = tls.as_ref().map(|t| t.current());
        conns.spawn(async move {
            match tls {
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    // Boxed, so the handshake's state is freed once it is done rather than
                    // sized into the task of a connection that may idle for hours.
                    let handshake = Box::pin(tokio::time::timeout(
                        app.limits.header_read_timeout,
                        acceptor.accept(tcp),
                    ))
                    .await;
                    let stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            let class = crate::tls::diagnose::classify_listener(&e);
                            crate::metrics::handshake_failure("listener", class.as_str());
                            log_handshake_failure(&app, peer, &format!("{e} [{}]", class.as_str()));
                            return;
                        }
                        Err(_) => {
                            crate::metrics::handshake_failure("listener", "timed_out");
                            log_handshake_failure(&app, peer, "timed out");
                            return;
                        }
                    };
                    let facts = TlsFacts::of(stream.get_ref().1);
                    log_handshake(&app, peer, &facts);
                    // HTTP/2 over TLS is chosen by ALPN (RFC 9113 §3.2); a client that named
                    // no protocol may still send the HTTP/2 preface, so it is sniffed.
                    let http = match facts.alpn.as_deref() {
                        Some("h2") => Http::Two,
                        Some(_) => Http::One,
                        None => Http::Sniff,
                    };
                    let info = ConnInfo {
                        peer,
                        tls: Some(facts),
                    };
                    connection(app, TokioIo::new(stream), info, http).await;
                }
                None => {
                    let info = ConnInfo { peer, tls: None };
                    connection(app, TokioIo::new(tcp), info, Http::Sniff).await
                }
            }
        });
    }
    app.gateway.close_all();
    // Streams end once their sessions close; give in-flight requests a moment.
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}

/// Sets TCP_NODELAY on the listening socket where accepted sockets inherit it (Linux copies it
/// to each), so one call replaces a syscall per connection. Returns whether it is inherited;
/// where not, each accepted connection must set it.
fn nodelay_on_listener(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
}

fn log_handshake(app: &App, peer: SocketAddr, f: &TlsFacts) {
    let (alpn, sni, client) = (
        f.alpn.as_deref().unwrap_or("none"),
        f.sni.as_deref().unwrap_or("none"),
        f.client_subject.as_deref().unwrap_or("none"),
    );
    if app.tls_debug {
        tracing::info!(%peer, version = %f.version, cipher = %f.cipher, alpn, sni, client, "TLS handshake");
    } else {
        tracing::debug!(%peer, version = %f.version, cipher = %f.cipher, alpn, sni, client, "TLS handshake");
    }
}

fn log_handshake_failure(app: &App, peer: SocketAddr, error: &str) {
    if app.tls_debug {
        tracing::info!(%peer, "TLS handshake failed: {error}");
    } else {
        tracing::debug!(%peer, "TLS handshake failed: {error}");
    }
}

/// The HTTP version a connection speaks, when it is known before the first byte.
enum Http {
    One,
    Two,
    /// Plain TCP, or TLS without ALPN: read the first bytes to tell.
    Sniff,
}

/// Serves HTTP on a connection until it ends. The connection's state is one allocation of
/// its own exact size (an HTTP/1.1 one is far smaller than the HTTP/2-or-sniffing kind), and
/// the task holding it only a pointer: idle connections are mostly this state.
fn connection<I>(app: Arc<App>, io: I, info: ConnInfo, http: Http) -> Served
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (header_timeout, header_bytes) =
        (app.limits.header_read_timeout, app.limits.max_header_bytes);
    // hyper's HTTP/1.1 buffer cannot be under 8 KiB.
    let h1_buffer = header_bytes.max(8192);
    let info = Arc::new(info);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(route(app, info, req).await) }
    });
    if let Http::One = http {
        let conn = Box::pin(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(h1_buffer)
                .serve_connection(io, service),
        );
        return Box::pin(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    Box::pin(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(h1_buffer);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        if let Http::Two = http {
            builder = builder.http2_only();
        }
        if let Err(e) = builder.serve_connection(io, service).await {
            tracing::debug!("connection ended: {e}");
        }
    })
}

type Served = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Routes one request.
async fn route(app: Arc<App>, conn: Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => return reply::json(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            let report = app.gateway.report();
            let status = if app.gateway.main.ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return reply::json(status, &report);
        }
        _ => {}
    }
    // `/servers/<name>/...` reaches one upstream alone; the rest goes to `/mcp`'s router.
    let (router, base, rest) = match path.strip_prefix("/servers/") {
        Some(tail) => {
            let (name, rest) = tail.split_once('/').unwrap_or((tail, ""));
            match app.gateway.server(name) {
                Some(r) => (r, format!("/servers/{name}"), format!("/{rest}")),
                None => {
                    return reply::error(
                        StatusCode::NOT_FOUND,
                        format!("no server {name:?} here; see /readyz for the list"),
                    );
                }
            }
        }
        None => (app.gateway.main.clone(), String::new(), path.clone()),
    };
    match rest.as_str() {
        "/mcp" | "/mcp/" | "/sse" | "/message" | "/messages" | "/messages/" => {
            if let Err(refusal) = app.guard.check(req.uri(), req.headers()) {
                return reply::refused(refusal);
            }
            match rest.as_str() {
                "/mcp" | "/mcp/" => streamable::handle(&app, &router, &conn, req).await,
                "/sse" => legacy::open(&router, &base, &conn, req).await,
                _ => legacy::post(&app, &router, req).await,
            }
        }
        _ => reply::error(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint {path:?}; MCP is served at /mcp (Streamable HTTP), /sse (legacy SSE) and /servers/<name>/mcp"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inherited = nodelay_on_listener(&listener);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (tcp, _) = accepted.unwrap();
        if inherited {
            assert!(
                tcp.nodelay().unwrap(),
                "the accepted socket did not inherit TCP_NODELAY"
            );
        }
    }
}
