//! The registry's schema and its migrations, one list per backend (SQLite's BLOB is
//! PostgreSQL's BYTEA). Each migration runs once, in a transaction, recorded in
//! `mcpgate_schema`; on PostgreSQL an advisory lock keeps replicas that start together
//! from running the same migration twice.

use sqlx::{AnyPool, Executor};

/// `(version, statements)` in order; append only, never edit a released migration.
const SQLITE: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE IF NOT EXISTS mcpgate_servers (
            name TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            version BIGINT NOT NULL,
            key_id TEXT NOT NULL,
            nonce BLOB NOT NULL,
            sealed BLOB NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS mcpgate_revision (id INTEGER PRIMARY KEY, revision BIGINT NOT NULL)",
        "INSERT INTO mcpgate_revision (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    ],
)];

const POSTGRES: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE IF NOT EXISTS mcpgate_servers (
            name TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            version BIGINT NOT NULL,
            key_id TEXT NOT NULL,
            nonce BYTEA NOT NULL,
            sealed BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS mcpgate_revision (id INTEGER PRIMARY KEY, revision BIGINT NOT NULL)",
        "INSERT INTO mcpgate_revision (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    ],
)];

/// An arbitrary constant: the advisory lock that serialises migrations across replicas.
const MIGRATION_LOCK: i64 = 0x6d63_7067_6174;

/// Brings the schema up to date; returns the version it is at.
pub async fn migrate(pool: &AnyPool, postgres: bool) -> Result<i64, sqlx::Error> {
    let steps = if postgres { POSTGRES } else { SQLITE };
    let mut tx = pool.begin().await?;
    if postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
    }
    tx.execute("CREATE TABLE IF NOT EXISTS mcpgate_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM mcpgate_schema")
        .fetch_one(&mut *tx)
        .await?;
    let current = current.unwrap_or(0);
    let mut at = current;
    for (version, statements) in steps.iter().filter(|(v, _)| *v > current) {
        for s in *statements {
            tx.execute(*s).await?;
        }
        sqlx::query("INSERT INTO mcpgate_schema (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(super::now())
            .execute(&mut *tx)
            .await?;
        at = *version;
    }
    tx.commit().await?;
    if at != current {
        tracing::info!(from = current, to = at, "registry schema migrated");
    }
    Ok(at)
}

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    SQLITE.last().map(|(v, _)| *v).unwrap_or(0)
}
