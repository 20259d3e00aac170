//! The tables of this crate. Every statement is idempotent (`IF NOT EXISTS`), so migrating is
//! safe at every start; a change to an existing table needs a real migration step.
//!
//! Types: integers, flags and times (microseconds since the Unix epoch) are 64-bit integers;
//! uuids and JSON are TEXT; hashes are bytes. Payload and metadata stay TEXT on PostgreSQL
//! too (never JSONB): the hash covers the exact text, and JSONB would rewrite it.

use sqlx::Executor;

use super::{Backend, Database};
use crate::error::StoreError;

/// `INTEGER PRIMARY KEY` makes `position` SQLite's rowid, so reading by position is a b-tree
/// walk with no separate index.
const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        stream_kind TEXT NOT NULL,
        stream_id TEXT NOT NULL,
        stream_version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL,
        UNIQUE (stream_kind, stream_id, stream_version)
    )",
    "CREATE TABLE IF NOT EXISTS log_writer (
        id INTEGER PRIMARY KEY NOT NULL,
        batches INTEGER NOT NULL
    )",
    "INSERT INTO log_writer (id, batches) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS claims (
        scope TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        owner_kind TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        PRIMARY KEY (scope, kind, value)
    )",
    "CREATE TABLE IF NOT EXISTS secrets (
        owner_kind TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (owner_kind, owner_id, kind)
    )",
    "CREATE TABLE IF NOT EXISTS sessions (
        token_hash BLOB PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        idle_micros INTEGER NOT NULL,
        idle_expires_at INTEGER NOT NULL,
        absolute_expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id)",
    CEREMONIES,
    MAIL_OUTBOX,
];

const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS events (
        position BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        stream_kind TEXT NOT NULL,
        stream_id TEXT NOT NULL,
        stream_version BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        recorded_at BIGINT NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        prev_hash BYTEA NOT NULL,
        hash BYTEA NOT NULL,
        UNIQUE (stream_kind, stream_id, stream_version)
    )",
    "CREATE TABLE IF NOT EXISTS log_writer (
        id BIGINT PRIMARY KEY,
        batches BIGINT NOT NULL
    )",
    "INSERT INTO log_writer (id, batches) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS claims (
        scope TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        owner_kind TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        PRIMARY KEY (scope, kind, value)
    )",
    "CREATE TABLE IF NOT EXISTS secrets (
        owner_kind TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (owner_kind, owner_id, kind)
    )",
    "CREATE TABLE IF NOT EXISTS sessions (
        token_hash BYTEA PRIMARY KEY,
        user_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL,
        idle_micros BIGINT NOT NULL,
        idle_expires_at BIGINT NOT NULL,
        absolute_expires_at BIGINT NOT NULL,
        revoked_at BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id)",
    CEREMONIES,
    MAIL_OUTBOX,
];

/// Short-lived ceremony state (WebAuthn challenges, MFA and enrollment tokens): the same on
/// both backends.
const CEREMONIES: &str = "CREATE TABLE IF NOT EXISTS ceremonies (
        id TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        user_id TEXT,
        state TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    )";

/// Mail for an operator's mailer (password reset links).
const MAIL_OUTBOX: &str = "CREATE TABLE IF NOT EXISTS mail_outbox (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        sent_at BIGINT
    )";

/// Serialises concurrent migrations from several nodes: PostgreSQL's `IF NOT EXISTS` is not
/// safe against a concurrent `CREATE` of the same table. The number is arbitrary but fixed.
const PG_MIGRATION_LOCK: i64 = 0x6b65_796c_6564_6772; // "keyledgr"

pub(super) async fn migrate(db: &Database) -> Result<(), StoreError> {
    let (begin, statements) = match db.backend() {
        // IMMEDIATE takes the write lock now, so two processes migrating one file queue up.
        Backend::Sqlite => ("BEGIN IMMEDIATE", SQLITE),
        Backend::Postgres => ("BEGIN", POSTGRES),
    };
    let mut tx = db.pool().begin_with(begin).await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
    }
    for statement in statements {
        tx.execute(*statement).await?;
    }
    tx.commit().await?;
    Ok(())
}
