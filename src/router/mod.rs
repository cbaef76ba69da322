//! The router: downstream sessions over one upstream, their limits and lifetimes.
//!
//! Isolated mode starts a child per session; shared mode starts one child at startup and
//! attaches every session to it (ids remapped by the hub). Sessions idle longer than the
//! limit, with no stream open, are closed and their children stopped.

pub mod bridge;
pub mod fanout;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub use session::{Flavor, Link, Session};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;

use crate::config::{Limits, RemoteSpec, SessionMode, StdioSpec, UpstreamKind, UpstreamSpec};
use crate::tls::trust;
use crate::upstream::connector::Connector;
use crate::upstream::health::Health;
use crate::upstream::remote::{RemoteUpstream, pooled_client};
use crate::upstream::stdio::StdioHub;

pub struct Router {
    upstream_name: String,
    source: Source,
    pub health: Arc<Health>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    limits: Limits,
    /// The upstream session 2026-07-28 (stateless) requests go through, once one came.
    bridge: tokio::sync::Mutex<Option<Arc<bridge::Bridge>>>,
}

/// Where sessions' upstreams come from.
enum Source {
    /// A command: a child per session, or the one shared child.
    Stdio {
        spec: StdioSpec,
        shared: Option<Arc<StdioHub>>,
    },
    /// A remote server: a remote session per session, over one pooled client and trust profile.
    Remote(Box<RemoteSource>),
    /// Every upstream at once, namespaced (the gateway's `/mcp`); one member alone is served
    /// unprefixed. The list changes live (registry); each session keeps the members it
    /// started with.
    Aggregate(std::sync::RwLock<Vec<Arc<Router>>>),
}

struct RemoteSource {
    spec: RemoteSpec,
    connector: Connector,
    client: Client<Connector, Full<Bytes>>,
}

/// Why a session could not be created.
#[derive(Debug)]
pub enum CreateError {
    TooManySessions(usize),
    Upstream(String),
}

impl Router {
    /// The gateway's router over several upstreams (each with its own router).
    pub fn aggregate(members: Vec<Arc<Router>>, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            upstream_name: "gateway".into(),
            source: Source::Aggregate(std::sync::RwLock::new(members)),
            health: Arc::new(Health::new("gateway")),
            sessions: Mutex::new(HashMap::new()),
            limits,
            bridge: tokio::sync::Mutex::new(None),
        })
    }

    /// Builds the router; in shared mode the child starts now.
    pub async fn new(upstream: &UpstreamSpec, limits: Limits) -> Result<Arc<Self>, String> {
        let health = Arc::new(Health::new(&upstream.name));
        let source = match &upstream.kind {
            UpstreamKind::Stdio(spec) => {
                let shared = match spec.session_mode {
                    SessionMode::Shared => {
                        Some(StdioHub::start(&upstream.name, spec.clone(), health.clone()).await?)
                    }
                    SessionMode::Isolated => None,
                };
                Source::Stdio {
                    spec: spec.clone(),
                    shared,
                }
            }
            UpstreamKind::Remote(spec) => {
                let profile =
                    trust::build(&spec.trust, &trust::Env::process()).map_err(|e| e.to_string())?;
                tracing::info!(upstream = %upstream.name, url = %crate::tls::diagnose::redact_url(&spec.url), trust = %profile.source, "remote upstream");
                let connector = Connector::new(&upstream.name, Arc::new(profile), spec.timeout);
                let client = pooled_client(&connector);
                spawn_health_check(&upstream.name, &spec.url, connector.clone(), health.clone());
                Source::Remote(Box::new(RemoteSource {
                    spec: spec.clone(),
                    connector,
                    client,
                }))
            }
        };
        Ok(Arc::new(Self {
            upstream_name: upstream.name.clone(),
            source,
            health,
            sessions: Mutex::new(HashMap::new()),
            limits,
            bridge: tokio::sync::Mutex::new(None),
        }))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn create_session(
        &self,
        flavor: Flavor,
        identity: Option<String>,
    ) -> Result<Arc<Session>, CreateError> {
        if self.map().len() >= self.limits.max_sessions {
            return Err(CreateError::TooManySessions(self.limits.max_sessions));
        }
        // Without randomness a session id would be guessable: refuse the session.
        let Some(id) = new_session_id() else {
            return Err(CreateError::Upstream(
                "the system random number generator failed".into(),
            ));
        };
        let link = self.link().await?;
        let session = Session::new(id.clone(), flavor, identity.clone(), link);
        let mut map = self.map();
        if map.len() >= self.limits.max_sessions {
            drop(map);
            session.close();
            return Err(CreateError::TooManySessions(self.limits.max_sessions));
        }
        map.insert(id.clone(), session.clone());
        drop(map);
        match &identity {
            Some(who) => tracing::info!(session = %id, client = %who, "session opened"),
            None => tracing::info!(session = %id, "session opened"),
        }
        Ok(session)
    }

    /// What one new session talks to: its own child, the shared child, its own remote
    /// session, or a fan-out over every member router's link.
    pub async fn link(&self) -> Result<Link, CreateError> {
        Ok(match &self.source {
            Source::Stdio {
                shared: Some(hub), ..
            } => Link::Stdio {
                hub: hub.clone(),
                owns: false,
            },
            Source::Stdio { spec, shared: None } => Link::Stdio {
                hub: StdioHub::start(&self.upstream_name, spec.clone(), self.health.clone())
                    .await
                    .map_err(CreateError::Upstream)?,
                owns: true,
            },
            Source::Remote(remote) => Link::Remote(
                RemoteUpstream::start_shared(
                    &self.upstream_name,
                    remote.spec.clone(),
                    remote.connector.clone(),
                    remote.client.clone(),
                    Some(self.health.clone()),
                )
                .map_err(CreateError::Upstream)?,
            ),
            Source::Aggregate(members) => {
                let members = read(members).clone();
                if let [one] = members.as_slice() {
                    return Box::pin(one.link()).await;
                }
                if members.is_empty() {
                    return Err(CreateError::Upstream(
                        "no upstream server is configured or registered yet".into(),
                    ));
                }
                let mut links = Vec::with_capacity(members.len());
                for m in &members {
                    let link = Box::pin(m.link()).await.map_err(|e| match e {
                        CreateError::Upstream(why) => why,
                        CreateError::TooManySessions(n) => format!("too many sessions ({n})"),
                    });
                    links.push((m.upstream_name.clone(), link));
                }
                Link::Fanout(fanout::Fanout::new(links))
            }
        })
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> bool {
        let removed = self.map().remove(id);
        match removed {
            Some(s) => {
                s.close();
                tracing::info!(session = %id, "session closed");
                true
            }
            None => false,
        }
    }

    pub fn session_count(&self) -> usize {
        self.map().len()
    }

    /// Closes sessions idle past the limit, every few seconds, while the router lives.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let idle = self.limits.session_idle_timeout;
        let period = (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(router) = weak.upgrade() else { return };
                let stale: Vec<String> = router
                    .map()
                    .values()
                    .filter(|s| !s.has_stream() && s.idle_for() > idle)
                    .map(|s| s.id.clone())
                    .collect();
                for id in stale {
                    tracing::info!(session = %id, "closing idle session");
                    router.remove(&id);
                }
            }
        });
    }

    /// Closes every session (shutdown).
    pub fn close_all(&self) {
        let all: Vec<Arc<Session>> = self.map().drain().map(|(_, s)| s).collect();
        for s in all {
            s.close();
        }
        self.close_bridge();
        if let Source::Stdio {
            shared: Some(h), ..
        } = &self.source
        {
            h.close();
        }
    }

    /// Ready if its upstream is; the aggregate is ready while any member is (the others'
    /// tools are left out, and /readyz lists each).
    pub fn ready(&self) -> bool {
        match &self.source {
            Source::Aggregate(members) => read(members).iter().any(|m| m.ready()),
            _ => self.health.ready(),
        }
    }

    pub fn report(&self) -> Value {
        let mut r = self.health.report();
        r["sessions"] = self.session_count().into();
        r
    }
}

/// How often a remote upstream is checked when no session is telling us about it.
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// Checks a remote upstream now and every `HEALTH_INTERVAL`: a TCP and TLS connection through
/// the same connector and trust profile as the calls, so a TLS failure shows in /readyz even
/// before any client hits it. Ends when the health record is no longer shared (router gone).
fn spawn_health_check(name: &str, url: &str, connector: Connector, health: Arc<Health>) {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return;
    };
    let name = name.to_string();
    let weak = Arc::downgrade(&health);
    drop(health);
    tokio::spawn(async move {
        loop {
            // recheck reads after the handshake, so a TLS 1.3 refusal of our client certificate
            // (which arrives only then) counts as the failure it is.
            let outcome = connector.recheck(&uri).await;
            let Some(health) = weak.upgrade() else { return };
            match outcome {
                None => {
                    if health.state() == crate::upstream::health::State::Failed {
                        tracing::info!(upstream = %name, "reachable again");
                    }
                    health.set(crate::upstream::health::State::Running, None);
                }
                Some(f) => {
                    if health.state() != crate::upstream::health::State::Failed {
                        tracing::warn!("health check: {f}");
                    }
                    health.set(crate::upstream::health::State::Failed, Some(f.one_line()));
                }
            }
            drop(health);
            tokio::time::sleep(HEALTH_INTERVAL).await;
        }
    });
}

/// 32 random bytes, hex: unguessable, visible ASCII as the spec requires.
fn new_session_id() -> Option<String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    // Without randomness a session id would be guessable: refuse the session rather than weaken.
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// Where a served upstream was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The config file or the command line: fixed for the process's life.
    Config,
    /// The registry, at this version of its row: replaced when the row changes.
    Registry { version: i64 },
}

struct Member {
    router: Arc<Router>,
    origin: Origin,
}

/// Every router of a serve process: `/mcp` (`main`: the aggregate over all upstreams, the
/// one upstream unprefixed when it is alone) and `/servers/<name>/mcp` (each alone). The set
/// changes live as the registry does; new sessions see the change.
pub struct Gateway {
    pub main: Arc<Router>,
    servers: std::sync::RwLock<std::collections::BTreeMap<String, Member>>,
    limits: Limits,
}

impl Gateway {
    pub async fn new(upstreams: &[UpstreamSpec], limits: &Limits) -> Result<Self, String> {
        let mut servers = std::collections::BTreeMap::new();
        for u in upstreams {
            let r = Router::new(u, limits.clone()).await?;
            r.spawn_reaper();
            servers.insert(
                u.name.clone(),
                Member {
                    router: r,
                    origin: Origin::Config,
                },
            );
        }
        let main = Router::aggregate(Vec::new(), limits.clone());
        main.spawn_reaper();
        let gateway = Self {
            main,
            servers: std::sync::RwLock::new(servers),
            limits: limits.clone(),
        };
        gateway.publish();
        Ok(gateway)
    }

    /// The router of one upstream, for `/servers/<name>/mcp`.
    pub fn server(&self, name: &str) -> Option<Arc<Router>> {
        read(&self.servers).get(name).map(|m| m.router.clone())
    }

    /// Where each served upstream came from.
    pub fn origins(&self) -> Vec<(String, Origin)> {
        read(&self.servers)
            .iter()
            .map(|(n, m)| (n.clone(), m.origin))
            .collect()
    }

    /// Makes the registry's servers exactly `wanted` (spec, row version): new and changed ones
    /// start, removed ones stop; config servers are left alone (a registry name that clashes
    /// with one is skipped and logged).
    pub async fn apply_registry(&self, wanted: Vec<(UpstreamSpec, i64)>) {
        let current = self.origins();
        let mut changed = false;
        for (name, origin) in &current {
            let keep = match origin {
                Origin::Config => true,
                Origin::Registry { version } => {
                    wanted.iter().any(|(s, v)| &s.name == name && v == version)
                }
            };
            if !keep {
                let gone = self
                    .servers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                if let Some(m) = gone {
                    m.router.close_all();
                    tracing::info!(server = %name, "registry: server removed or changed; stopped");
                    changed = true;
                }
            }
        }
        for (spec, version) in wanted {
            let existing = read(&self.servers).get(&spec.name).map(|m| m.origin);
            match existing {
                Some(Origin::Registry { version: v }) if v == version => continue,
                Some(Origin::Config) => {
                    tracing::error!(server = %spec.name, "registry: the name is also in the config file; the registered one is not served (remove one of them)");
                    continue;
                }
                _ => {}
            }
            match Router::new(&spec, self.limits.clone()).await {
                Ok(r) => {
                    r.spawn_reaper();
                    self.servers
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(
                            spec.name.clone(),
                            Member {
                                router: r,
                                origin: Origin::Registry { version },
                            },
                        );
                    tracing::info!(server = %spec.name, version, "registry: serving");
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(server = %spec.name, "registry: cannot start it: {e}")
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Hands the current member list to `/mcp`'s aggregate.
    fn publish(&self) {
        let members: Vec<Arc<Router>> = read(&self.servers)
            .values()
            .map(|m| m.router.clone())
            .collect();
        if let Source::Aggregate(list) = &self.main.source {
            *list.write().unwrap_or_else(|p| p.into_inner()) = members;
        }
    }

    pub fn close_all(&self) {
        self.main.close_all();
        for m in read(&self.servers).values() {
            m.router.close_all();
        }
    }

    pub fn report(&self) -> Value {
        let ups: Vec<Value> = read(&self.servers)
            .values()
            .map(|m| {
                let mut r = m.router.report();
                r["source"] = match m.origin {
                    Origin::Config => "config".into(),
                    Origin::Registry { .. } => "registry".into(),
                };
                r
            })
            .collect();
        json!({"ready": self.main.ready(), "upstreams": ups})
    }
}
