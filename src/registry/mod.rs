//! The upstream registry: servers registered at run time, persisted in SQLite (a file in the
//! data directory, the default) or PostgreSQL (`database.url`, for several replicas).
//!
//! Each row holds a server's whole definition (the same keys as a `mcp_servers` entry in the
//! config file) sealed with the registry key (see `secrets`): tokens, headers, client keys and
//! pinned certificates never reach the database in clear, and neither does anything else about
//! the server but its name and state. Every write bumps one revision counter in the same
//! transaction, so a gateway can tell cheaply whether anything changed.

pub mod schema;
pub mod secrets;

use std::path::{Path, PathBuf};

use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use secrets::{Sealed, SecretKey};

/// A registry failure, in one sentence with the fix.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry database {place}: {message}")]
    Database { place: String, message: String },
    #[error("server {0:?} is already registered; hint: update it, or remove it first")]
    Exists(String),
    #[error(
        "server {0:?} is not registered; hint: `mcpgate servers list` shows the registered servers"
    )]
    NotFound(String),
    #[error("registry server {name:?}: its stored definition {why}")]
    Undecryptable { name: String, why: String },
    #[error("registry secret key: {0}")]
    Key(String),
}

/// Where the registry lives.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// `database.url` when given, else `<data_dir>/registry.db`.
    pub fn from_config(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        match url {
            None => Ok(Self::Sqlite(data_dir.join("registry.db"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Self::Postgres(u.to_string()))
            }
            Some(u) if u.starts_with("sqlite:") => {
                let path = u
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            Some(u) => Err(format!(
                "{:?} is neither a postgres:// nor a sqlite: URL",
                redact(u)
            )),
        }
    }

    /// For messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(p) => p.display().to_string(),
            Self::Postgres(u) => redact(u),
        }
    }
}

/// A URL with its password replaced by `***`.
fn redact(url: &str) -> String {
    crate::tls::diagnose::redact_url(url)
}

/// Whether a registered server is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    /// Registered, but its self-signed certificate waits for the fingerprint's approval.
    PendingTrust,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::PendingTrust => "pending_trust",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "active" => State::Active,
            _ => State::PendingTrust,
        }
    }
}

/// One registered server, opened.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub state: State,
    /// Bumped on every update of this server.
    pub version: i64,
    /// The definition: the keys of a `mcp_servers` entry (secrets included; never shown).
    pub spec: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

pub struct Registry {
    pool: AnyPool,
    key: SecretKey,
    location: Location,
}

impl Registry {
    /// Opens (creating a SQLite file if needed) and migrates the registry; loads the key.
    pub async fn open(location: Location, key: SecretKey) -> Result<Self, RegistryError> {
        sqlx::any::install_default_drivers();
        let place = location.describe();
        let db_err = |e: sqlx::Error| RegistryError::Database {
            place: place.clone(),
            message: explain(&e),
        };
        let (url, postgres) = match &location {
            Location::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| RegistryError::Database {
                        place: place.clone(),
                        message: format!(
                            "cannot create {}: {e}; hint: set data_dir to a writable directory",
                            dir.display()
                        ),
                    })?;
                }
                (format!("sqlite://{}?mode=rwc", path.display()), false)
            }
            Location::Postgres(u) => (u.clone(), true),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(db_err)?;
        if !postgres {
            // WAL with full sync: a commit is on disk before it is acknowledged.
            for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"] {
                sqlx::query(pragma).execute(&pool).await.map_err(db_err)?;
            }
        }
        schema::migrate(&pool, postgres).await.map_err(db_err)?;
        Ok(Self {
            pool,
            key,
            location,
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn db(&self, e: sqlx::Error) -> RegistryError {
        RegistryError::Database {
            place: self.location.describe(),
            message: explain(&e),
        }
    }

    fn seal(&self, name: &str, spec: &Value) -> Result<Sealed, RegistryError> {
        let plain = serde_json::to_vec(spec).map_err(|e| RegistryError::Key(e.to_string()))?;
        self.key.seal(name, &plain).map_err(RegistryError::Key)
    }

    /// Registers a new server; `Exists` when the name is taken.
    pub async fn create(
        &self,
        name: &str,
        spec: &Value,
        state: State,
    ) -> Result<Entry, RegistryError> {
        let sealed = self.seal(name, spec)?;
        let now = now();
        let mut tx = self.pool.begin().await.map_err(|e| self.db(e))?;
        let inserted = sqlx::query(
            "INSERT INTO mcpgate_servers (name, state, version, key_id, nonce, sealed, created_at, updated_at)
             VALUES ($1, $2, 1, $3, $4, $5, $6, $6) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(state.as_str())
        .bind(&sealed.key_id)
        .bind(sealed.nonce)
        .bind(sealed.ciphertext)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::Exists(name.to_string()));
        }
        bump(&mut tx).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(Entry {
            name: name.to_string(),
            state,
            version: 1,
            spec: spec.clone(),
            created_at: now,
            updated_at: now,
        })
    }

    /// Replaces a server's definition and state; `NotFound` when it is not registered.
    pub async fn update(
        &self,
        name: &str,
        spec: &Value,
        state: State,
    ) -> Result<(), RegistryError> {
        let sealed = self.seal(name, spec)?;
        let mut tx = self.pool.begin().await.map_err(|e| self.db(e))?;
        let done = sqlx::query(
            "UPDATE mcpgate_servers SET state = $2, version = version + 1, key_id = $3, nonce = $4, sealed = $5, updated_at = $6
             WHERE name = $1",
        )
        .bind(name)
        .bind(state.as_str())
        .bind(&sealed.key_id)
        .bind(sealed.nonce)
        .bind(sealed.ciphertext)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        bump(&mut tx).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    /// Removes a server; `NotFound` when it is not registered.
    pub async fn remove(&self, name: &str) -> Result<(), RegistryError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.db(e))?;
        let done = sqlx::query("DELETE FROM mcpgate_servers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        bump(&mut tx).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    /// One server, opened.
    pub async fn get(&self, name: &str) -> Result<Entry, RegistryError> {
        let row = sqlx::query(
            "SELECT name, state, version, key_id, nonce, sealed, created_at, updated_at FROM mcpgate_servers WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.db(e))?;
        match row {
            Some(r) => self.entry(&r),
            None => Err(RegistryError::NotFound(name.to_string())),
        }
    }

    /// Every server by name; a row that does not open is its own error, the rest still load.
    pub async fn list(&self) -> Result<Vec<Result<Entry, RegistryError>>, RegistryError> {
        let rows = sqlx::query(
            "SELECT name, state, version, key_id, nonce, sealed, created_at, updated_at FROM mcpgate_servers ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(e))?;
        Ok(rows.iter().map(|r| self.entry(r)).collect())
    }

    /// The counter every write bumps: unchanged means nothing to reload.
    pub async fn revision(&self) -> Result<i64, RegistryError> {
        sqlx::query_scalar("SELECT revision FROM mcpgate_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.db(e))
    }

    fn entry(&self, r: &sqlx::any::AnyRow) -> Result<Entry, RegistryError> {
        let get = |e: sqlx::Error| self.db(e);
        let name: String = r.try_get("name").map_err(get)?;
        let sealed = Sealed {
            key_id: r.try_get("key_id").map_err(get)?,
            nonce: r.try_get("nonce").map_err(get)?,
            ciphertext: r.try_get("sealed").map_err(get)?,
        };
        let plain = self
            .key
            .open(&name, &sealed)
            .map_err(|why| RegistryError::Undecryptable {
                name: name.clone(),
                why,
            })?;
        let spec = serde_json::from_slice(&plain).map_err(|e| RegistryError::Undecryptable {
            name: name.clone(),
            why: format!("decrypted but is not JSON ({e}); hint: delete and re-add the server"),
        })?;
        Ok(Entry {
            state: State::parse(&r.try_get::<String, _>("state").map_err(get)?),
            version: r.try_get("version").map_err(get)?,
            created_at: r.try_get("created_at").map_err(get)?,
            updated_at: r.try_get("updated_at").map_err(get)?,
            name,
            spec,
        })
    }
}

async fn bump(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE mcpgate_revision SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// A database error with the likely fix.
fn explain(e: &sqlx::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("Connection refused") || text.contains("connection refused") {
        "hint: is PostgreSQL running and listening at that address? (database.url)"
    } else if text.contains("password authentication failed") || text.contains("authentication") {
        "hint: check the user and password in database.url"
    } else if text.contains("does not exist") {
        "hint: create the database first (createdb), or fix its name in database.url"
    } else if text.contains("unable to open database file") || text.contains("readonly") {
        "hint: set data_dir (or database.url) to a writable place"
    } else {
        "hint: check database.url and that the database is reachable"
    };
    format!("{text}; {hint}")
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
