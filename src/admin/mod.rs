//! The admin API, on its own listener (TLS with the listener's certificate, bearer tokens):
//! register, read, update and remove servers, test a server's connection, see its TLS status,
//! and approve a self-signed certificate's fingerprint. Documented by `/admin/openapi.json`.
//!
//! Every answer is JSON; bad input is a 4xx with `error` (a class) and `message` (one sentence
//! with the fix). Secrets (tokens, header and env values) are never returned.

mod trust;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::registry::{Entry, Registry, RegistryError, State};
use crate::router::Origin;
use crate::server::App;
use crate::tls::reload::LiveServerConfig;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The largest request body the admin API reads.
const MAX_BODY: usize = 1 << 20;

pub struct Admin {
    pub registry: Arc<Registry>,
    pub app: Arc<App>,
    pub tokens: Vec<String>,
}

/// Serves the admin API on `listener` for the process's life.
pub fn spawn(listener: TcpListener, tls: Option<Arc<LiveServerConfig>>, admin: Arc<Admin>) {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let admin = admin.clone();
            let tls = tls.as_ref().map(|t| t.current());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(handle(&admin, req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(config) => {
                        let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(std::time::Duration::from_secs(10), accept).await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn fail(status: StatusCode, error: &str, message: impl Into<String>) -> Reply {
    reply(status, &json!({"error": error, "message": message.into()}))
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/admin/openapi.json" {
        return match serde_json::from_str::<Value>(OPENAPI) {
            Ok(doc) => reply(StatusCode::OK, &doc),
            Err(e) => fail(StatusCode::NOT_FOUND, "no_document", e.to_string()),
        };
    }
    if !authorized(admin, &req) {
        return fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required: send Authorization: Bearer <token> (admin.tokens or MCPGATE_ADMIN_TOKEN)",
        );
    }
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["admin", "servers"]) => list(admin).await,
        (Method::POST, ["admin", "servers"]) => match body(req).await {
            Ok(b) => create(admin, b).await,
            Err(r) => r,
        },
        (Method::GET, ["admin", "servers", name]) => show(admin, name).await,
        (Method::PUT, ["admin", "servers", name]) => {
            let name = name.to_string();
            match body(req).await {
                Ok(b) => update(admin, &name, b).await,
                Err(r) => r,
            }
        }
        (Method::DELETE, ["admin", "servers", name]) => remove(admin, name).await,
        (Method::POST, ["admin", "servers", name, "trust"]) => {
            let name = name.to_string();
            match body(req).await {
                Ok(b) => approve(admin, &name, b).await,
                Err(r) => r,
            }
        }
        (Method::POST, ["admin", "servers", name, "test"]) => test(admin, name).await,
        (Method::GET, ["admin", "servers", name, "tls"]) => tls_status(admin, name).await,
        (_, ["admin", "servers", ..]) => fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not an operation on {path}; see /admin/openapi.json",
                req_method_name(&path)
            ),
        ),
        _ => fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {path:?}; the operations are listed at /admin/openapi.json"),
        ),
    }
}

fn req_method_name(_path: &str) -> &'static str {
    "this method"
}

fn authorized(admin: &Admin, req: &Request<Incoming>) -> bool {
    let Some(given) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    admin.tokens.iter().any(|t| {
        aws_lc_rs::constant_time::verify_slices_are_equal(t.as_bytes(), given.trim().as_bytes())
            .is_ok()
    })
}

/// The request's JSON object body (at most 1 MiB).
async fn body(req: Request<Incoming>) -> Result<serde_json::Map<String, Value>, Reply> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is over 1 MiB or was cut off",
            ));
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(fail(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body must be a JSON object",
        )),
        Err(e) => Err(fail(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )),
    }
}

fn registry_error(e: RegistryError) -> Reply {
    let status = match &e {
        RegistryError::Exists(_) => StatusCode::CONFLICT,
        RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
        RegistryError::Undecryptable { .. } => StatusCode::CONFLICT,
        // The database is someone else's service: say so, with its error.
        RegistryError::Database { .. } | RegistryError::Key(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let class = match &e {
        RegistryError::Exists(_) => "exists",
        RegistryError::NotFound(_) => "not_found",
        RegistryError::Undecryptable { .. } => "undecryptable",
        RegistryError::Database { .. } => "database_unavailable",
        RegistryError::Key(_) => "secret_key",
    };
    fail(status, class, e.to_string())
}

/// A definition with every secret value replaced: tokens, header and env values.
fn redact(spec: &Value) -> Value {
    let mut out = spec.clone();
    if out.get("authentication_token").is_some() {
        out["authentication_token"] = json!("<redacted>");
    }
    for key in ["headers", "env"] {
        if let Some(map) = out.get_mut(key).and_then(Value::as_object_mut) {
            for v in map.values_mut() {
                *v = json!("<redacted>");
            }
        }
    }
    if let Some(o) = out.as_object_mut() {
        o.remove(trust::PINNED_CERT);
    }
    out
}

fn view(entry: &Entry, health: Option<Value>) -> Value {
    json!({
        "name": entry.name,
        "source": "registry",
        "state": entry.state.as_str(),
        "version": entry.version,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
        "definition": redact(&entry.spec),
        "health": health.unwrap_or(Value::Null),
    })
}

fn health_of(admin: &Admin, name: &str) -> Option<Value> {
    admin.app.gateway.server(name).map(|r| r.report())
}

async fn list(admin: &Admin) -> Reply {
    let mut servers = Vec::new();
    for (name, origin) in admin.app.gateway.origins() {
        if origin == Origin::Config {
            servers.push(json!({"name": name, "source": "config", "state": "active", "health": health_of(admin, &name)}));
        }
    }
    let rows = match admin.registry.list().await {
        Ok(r) => r,
        Err(e) => return registry_error(e),
    };
    for row in rows {
        match row {
            Ok(e) => servers.push(view(&e, health_of(admin, &e.name))),
            Err(e) => servers.push(json!({"error": "undecryptable", "message": e.to_string()})),
        }
    }
    reply(StatusCode::OK, &json!({"servers": servers}))
}

async fn show(admin: &Admin, name: &str) -> Reply {
    if is_config_server(admin, name) {
        return reply(
            StatusCode::OK,
            &json!({"name": name, "source": "config", "state": "active", "health": health_of(admin, name)}),
        );
    }
    match admin.registry.get(name).await {
        Ok(e) => reply(StatusCode::OK, &view(&e, health_of(admin, name))),
        Err(e) => registry_error(e),
    }
}

fn is_config_server(admin: &Admin, name: &str) -> bool {
    admin
        .app
        .gateway
        .origins()
        .iter()
        .any(|(n, o)| n == name && *o == Origin::Config)
}

/// Checks a name and definition; returns the definition (without API-only keys), the resolved
/// upstream and the fingerprint the caller approved, if any.
fn validate(
    name: &str,
    mut body: serde_json::Map<String, Value>,
) -> Result<(Value, crate::config::UpstreamSpec, Option<String>), Box<Reply>> {
    let sep = crate::router::fanout::SEPARATOR;
    if name.is_empty() || name.contains(sep) || name.ends_with('_') {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!(
                "{name:?} is not a usable server name: it must be non-empty, without {sep:?} and not end in '_' (they break <server>__<tool>)"
            ),
        )));
    }
    body.remove("name");
    let approved = match body.remove("trust_fingerprint") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) => {
            if let Err(e) = crate::config::parse_fingerprint(&f) {
                return Err(Box::new(fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_fingerprint",
                    format!(
                        "trust_fingerprint: {e}; give the SHA-256 shown when the server was registered"
                    ),
                )));
            }
            Some(f)
        }
        Some(_) => {
            return Err(Box::new(fail(
                StatusCode::BAD_REQUEST,
                "invalid_fingerprint",
                "trust_fingerprint must be a string",
            )));
        }
    };
    body.remove(trust::PINNED_CERT);
    let spec = Value::Object(body);
    let upstream = crate::config::registry_upstream(name, &spec).map_err(|e| {
        Box::new(fail(
            StatusCode::BAD_REQUEST,
            "invalid_definition",
            e.to_string(),
        ))
    })?;
    Ok((spec, upstream, approved))
}

/// The state a definition may be stored in, after looking at the server's certificate.
/// A self-signed certificate without the matching approval is stored as pending_trust and
/// the caller gets a 409 naming the fingerprint and the command that approves it.
async fn decide(
    name: &str,
    spec: &mut Value,
    upstream: &crate::config::UpstreamSpec,
    approved: Option<&str>,
) -> Result<(State, Value), (State, Reply)> {
    let pinned_already = matches!(&upstream.kind, crate::config::UpstreamKind::Remote(r) if !r.trust.pinned_sha256.is_empty() || !r.trust.verify);
    let seen = match trust::look(upstream).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok((State::Active, Value::Null)),
        Err(e) => {
            return Err((
                State::Active,
                fail(StatusCode::BAD_REQUEST, "invalid_definition", e),
            ));
        }
    };
    let check = json!({"trust_source": seen.trust_source, "failure": seen.failure_json()});
    if pinned_already {
        return Ok((State::Active, check));
    }
    let Some(fp) = seen.self_signed_leaf().filter(|_| seen.failure.is_some()) else {
        return Ok((State::Active, check));
    };
    match approved {
        Some(a) if trust::same_fingerprint(a, &fp) => {
            if let Some(leaf) = seen.chain.first() {
                trust::pin(spec, &fp, leaf);
            }
            Ok((State::Active, json!({"pinned_sha256": fp})))
        }
        Some(a) => Err((
            State::PendingTrust,
            reply(
                StatusCode::CONFLICT,
                &json!({"error": "fingerprint_mismatch", "fingerprint": fp,
                    "message": format!("the server presents a self-signed certificate with SHA-256 {fp}, not the approved {a}; nothing was pinned (check the server out of band)")}),
            ),
        )),
        None => Err((
            State::PendingTrust,
            reply(
                StatusCode::CONFLICT,
                &json!({"error": "self_signed_not_pinned", "fingerprint": fp, "state": "pending_trust",
                    "chain": seen.chain_json(),
                    "message": format!("server {name:?} presents a self-signed certificate (SHA-256 {fp}); it is registered but not served until you approve that fingerprint: mcpgate servers trust {name} --fingerprint {fp}")}),
            ),
        )),
    }
}

async fn create(admin: &Admin, body: serde_json::Map<String, Value>) -> Reply {
    let name = match body.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid_name",
                "the body needs \"name\": the server's name, e.g. {\"name\": \"tools\", \"url\": \"https://...\"}",
            );
        }
    };
    if is_config_server(admin, &name) {
        return fail(
            StatusCode::CONFLICT,
            "defined_in_config",
            format!(
                "server {name:?} is defined in the config file; rename this one, or remove it there"
            ),
        );
    }
    let (mut spec, upstream, approved) = match validate(&name, body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match admin.registry.get(&name).await {
        Ok(_) => return registry_error(RegistryError::Exists(name)),
        Err(RegistryError::NotFound(_)) => {}
        Err(e) => return registry_error(e),
    }
    let (state, check, refusal) =
        match decide(&name, &mut spec, &upstream, approved.as_deref()).await {
            Ok((s, c)) => (s, c, None),
            Err((s, r)) => (s, Value::Null, Some(r)),
        };
    if refusal
        .as_ref()
        .is_some_and(|r| r.status() == StatusCode::BAD_REQUEST)
    {
        return refusal.unwrap_or_else(|| fail(StatusCode::BAD_REQUEST, "invalid", ""));
    }
    match admin.registry.create(&name, &spec, state).await {
        Ok(entry) => match refusal {
            Some(r) => r,
            None => {
                let mut v = view(&entry, None);
                v["check"] = check;
                reply(StatusCode::CREATED, &v)
            }
        },
        Err(e) => registry_error(e),
    }
}

async fn update(admin: &Admin, name: &str, body: serde_json::Map<String, Value>) -> Reply {
    if is_config_server(admin, name) {
        return fail(
            StatusCode::CONFLICT,
            "defined_in_config",
            format!("server {name:?} is defined in the config file; change it there"),
        );
    }
    let (mut spec, upstream, approved) = match validate(name, body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if let Err(e) = admin.registry.get(name).await {
        return registry_error(e);
    }
    let (state, refusal) = match decide(name, &mut spec, &upstream, approved.as_deref()).await {
        Ok((s, _)) => (s, None),
        Err((s, r)) => (s, Some(r)),
    };
    if refusal
        .as_ref()
        .is_some_and(|r| r.status() == StatusCode::BAD_REQUEST)
    {
        return refusal.unwrap_or_else(|| fail(StatusCode::BAD_REQUEST, "invalid", ""));
    }
    if let Err(e) = admin.registry.update(name, &spec, state).await {
        return registry_error(e);
    }
    match refusal {
        Some(r) => r,
        None => match admin.registry.get(name).await {
            Ok(e) => reply(StatusCode::OK, &view(&e, None)),
            Err(e) => registry_error(e),
        },
    }
}

async fn remove(admin: &Admin, name: &str) -> Reply {
    if is_config_server(admin, name) {
        return fail(
            StatusCode::CONFLICT,
            "defined_in_config",
            format!("server {name:?} is defined in the config file; remove it there"),
        );
    }
    match admin.registry.remove(name).await {
        Ok(()) => reply(StatusCode::OK, &json!({"removed": name})),
        Err(e) => registry_error(e),
    }
}

/// Approves (or re-pins, after a rotation) the certificate a registered server presents.
async fn approve(admin: &Admin, name: &str, body: serde_json::Map<String, Value>) -> Reply {
    let Some(Value::String(fp)) = body.get("fingerprint") else {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_fingerprint",
            "the body needs \"fingerprint\": the SHA-256 shown at registration",
        );
    };
    if let Err(e) = crate::config::parse_fingerprint(fp) {
        return fail(StatusCode::BAD_REQUEST, "invalid_fingerprint", e);
    }
    let entry = match admin.registry.get(name).await {
        Ok(e) => e,
        Err(e) => return registry_error(e),
    };
    // Look with no pins, so a rotated certificate is seen as the server presents it.
    let mut probe_spec = entry.spec.clone();
    if let Some(tls) = probe_spec.get_mut("tls").and_then(Value::as_object_mut) {
        tls.remove("pinned_sha256");
    }
    let upstream = match crate::config::registry_upstream(name, &probe_spec) {
        Ok(u) => u,
        Err(e) => return fail(StatusCode::CONFLICT, "invalid_definition", e.to_string()),
    };
    let seen = match trust::look(&upstream).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return fail(
                StatusCode::CONFLICT,
                "not_tls",
                format!(
                    "server {name:?} is not an https upstream; there is no certificate to trust"
                ),
            );
        }
        Err(e) => return fail(StatusCode::CONFLICT, "invalid_definition", e),
    };
    let Some(leaf) = seen.chain.first() else {
        return fail(
            StatusCode::CONFLICT,
            "unreachable",
            format!(
                "cannot see server {name:?}'s certificate: {}",
                seen.failure.map(|f| f.one_line()).unwrap_or_default()
            ),
        );
    };
    let presented = crate::tls::inspect::describe(leaf)
        .map(|c| c.sha256)
        .unwrap_or_default();
    if !trust::same_fingerprint(fp, &presented) {
        return reply(
            StatusCode::CONFLICT,
            &json!({"error": "fingerprint_mismatch", "fingerprint": presented,
                "message": format!("server {name:?} presents SHA-256 {presented}, not {fp}; nothing was pinned")}),
        );
    }
    let mut spec = entry.spec.clone();
    trust::pin(&mut spec, &presented, leaf);
    match admin.registry.update(name, &spec, State::Active).await {
        Ok(()) => reply(
            StatusCode::OK,
            &json!({"name": name, "state": "active", "pinned_sha256": presented}),
        ),
        Err(e) => registry_error(e),
    }
}

/// A registered server's upstream as it is defined now.
async fn upstream_of(admin: &Admin, name: &str) -> Result<crate::config::UpstreamSpec, Reply> {
    let entry = admin.registry.get(name).await.map_err(registry_error)?;
    crate::config::registry_upstream(name, &entry.spec)
        .map_err(|e| fail(StatusCode::CONFLICT, "invalid_definition", e.to_string()))
}

/// Connects now with the server's own trust profile: TLS, then the MCP handshake.
async fn test(admin: &Admin, name: &str) -> Reply {
    let upstream = match upstream_of(admin, name).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let report = crate::cli::probe::check_upstream(&upstream).await;
    reply(StatusCode::OK, &report)
}

/// The chain the server presents, its expiry, and where its trust comes from.
async fn tls_status(admin: &Admin, name: &str) -> Reply {
    let upstream = match upstream_of(admin, name).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    match trust::look(&upstream).await {
        Ok(Some(seen)) => reply(
            StatusCode::OK,
            &json!({"name": name, "trust_source": seen.trust_source, "verified": seen.failure.is_none(),
                "chain": seen.chain_json(), "failure": seen.failure_json()}),
        ),
        Ok(None) => reply(
            StatusCode::OK,
            &json!({"name": name, "tls": false, "message": "not an https upstream"}),
        ),
        Err(e) => fail(StatusCode::CONFLICT, "invalid_definition", e),
    }
}
