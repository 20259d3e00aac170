//! The connection to SQLite or PostgreSQL.
//!
//! Both backends go through `sqlx::AnyPool`, so one set of SQL (with `$1, $2, ..`
//! placeholders, first used in ascending order) serves both; only the DDL differs
//! (`schema`). Statements whose size grows with a batch write `?` on SQLite instead, which
//! binds in linear time (see `log::sql`).

mod schema;

use std::sync::Arc;

use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use crate::error::StoreError;

/// Which database a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool and the backend behind it. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    url: Arc<str>,
}

/// The url may carry a password, so it is left out.
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Enough connections for the writer, the followers and the request handlers of one node;
/// a PostgreSQL server shared by several nodes must still have room for all of them, and for
/// each node's view follower, whose connection is its own, outside the pool
/// ([`Database::derived_state_connection`]).
const MAX_CONNECTIONS: u32 = 10;

impl Database {
    /// Connects to `sqlite://path/to/file.db` (the directory and file are created if missing)
    /// or `postgres://..` / `postgresql://..`.
    pub async fn connect(url: &str) -> Result<Database, StoreError> {
        sqlx::any::install_default_drivers();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            Self::connect_sqlite(url, rest).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .connect(url)
                .await?;
            Ok(Database {
                pool,
                backend: Backend::Postgres,
                url: url.into(),
            })
        } else {
            // Only the scheme: the rest of a url may hold a password, and errors get logged.
            let scheme = url.split(':').next().unwrap_or_default();
            Err(StoreError::UnsupportedUrl(format!("{scheme}:")))
        }
    }

    async fn connect_sqlite(url: &str, rest: &str) -> Result<Database, StoreError> {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, params) = match rest.split_once('?') {
            Some((path, params)) => (path, Some(params)),
            None => (rest, None),
        };
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            // A one-off at startup; not worth a blocking-pool hop.
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Database(e.into()))?;
        }
        // sqlx opens an existing file unless told to create it.
        let has_mode = params.is_some_and(|p| p.split('&').any(|kv| kv.starts_with("mode=")));
        let url = match (has_mode, params) {
            (true, _) => url.to_owned(),
            (false, Some(_)) => format!("{url}&mode=rwc"),
            (false, None) => format!("{url}?mode=rwc"),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // The health check guards against a server that hung up; an embedded database
            // cannot, and on SQLite each check is one more hand-off to the connection's
            // thread and back for every statement taken from the pool (a login takes three).
            .test_before_acquire(false)
            .after_connect(|conn, _meta| Box::pin(configure_sqlite(conn)))
            .connect(&url)
            .await?;
        Ok(Database {
            pool,
            backend: Backend::Sqlite,
            url: url.into(),
        })
    }

    /// Refuses a PostgreSQL server that can lose commits it acknowledged: `fsync` or
    /// `full_page_writes` off (corruption after a crash), or `synchronous_commit` off (the
    /// latest acknowledged appends vanish after a crash). SQLite is always opened with
    /// `synchronous = FULL`, so it needs no check.
    pub async fn refuse_unsafe_durability(&self) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        for setting in ["fsync", "full_page_writes", "synchronous_commit"] {
            let (value,): (String,) = sqlx::query_as(&format!("SHOW {setting}"))
                .fetch_one(&self.pool)
                .await?;
            if value.eq_ignore_ascii_case("off") {
                return Err(StoreError::UnsafeDurability {
                    setting: setting.into(),
                    value,
                });
            }
        }
        Ok(())
    }

    /// Creates every table of this crate if missing. Idempotent, and safe to run from several
    /// processes at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        schema::migrate(self).await
    }

    /// Other crates keep their own tables (views) in the same database through this pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection of its own, outside the pool, whose commits do not wait for the disk:
    /// SQLite `synchronous = NORMAL`, PostgreSQL `synchronous_commit = off`. Only for state
    /// that can be derived again from the log and that commits its own progress in the same
    /// transaction, such as views and their checkpoints: a crash can only take back the last
    /// few such commits, whole, and the follower folds them again. Such a commit never
    /// outlives a log commit it read, because both backends write one sequential journal and
    /// make a log commit visible only once it is on disk. Never for the log, sessions or
    /// anything else that is not derived: those need every acknowledged commit to survive.
    pub async fn derived_state_connection(&self) -> Result<AnyConnection, StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        let relax = match self.backend {
            Backend::Sqlite => "PRAGMA synchronous = NORMAL",
            Backend::Postgres => "SET synchronous_commit = off",
        };
        conn.execute(relax).await?;
        Ok(conn)
    }

    /// The url connected to (for SQLite, with `mode=rwc` added when it had no mode). It may
    /// hold a password: do not log it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Run on every new SQLite connection: the settings are per connection, not per file.
async fn configure_sqlite(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    // First, so that switching the journal mode waits for other connections instead of
    // failing at once.
    conn.execute("PRAGMA busy_timeout = 10000").await?;
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode = WAL")
        .fetch_one(&mut *conn)
        .await?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Still durable with FULL below, only slower and with readers blocking the writer.
        tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode");
    }
    // Never NORMAL: in WAL mode a commit acknowledged under NORMAL can be lost on power
    // failure, and an acknowledged append must survive it.
    conn.execute("PRAGMA synchronous = FULL").await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_scheme_is_refused_without_echoing_the_url() {
        let err = Database::connect("mysql://root:hunter2@localhost/db")
            .await
            .err();
        match err {
            Some(StoreError::UnsupportedUrl(shown)) => assert_eq!(shown, "mysql:"),
            other => panic!("expected UnsupportedUrl, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_sqlite_file_and_its_directory_are_created_with_durable_settings() {
        let url = crate::testing::fresh_sqlite_url();
        let db = Database::connect(&url).await.unwrap();
        assert_eq!(db.backend(), Backend::Sqlite);
        let path = url.trim_start_matches("sqlite://");
        assert!(std::path::Path::new(path).is_file());
        let mut conn = db.pool().acquire().await.unwrap();
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        // 2 is FULL.
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(sync, 2);
        let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(busy, 10_000);
    }

    #[tokio::test]
    async fn migrating_twice_is_harmless() {
        let db = Database::connect(&crate::testing::fresh_sqlite_url())
            .await
            .unwrap();
        db.migrate().await.unwrap();
        db.migrate().await.unwrap();
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM log_writer")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }

    /// The derived-state connection waits for no disk, but it is never pooled: every pooled
    /// connection, which the log and sessions use, keeps waiting for the disk.
    async fn only_the_derived_state_connection_commits_without_waiting_for_the_disk(url: String) {
        let db = Database::connect(&url).await.unwrap();
        let show = match db.backend() {
            Backend::Sqlite => "PRAGMA synchronous",
            Backend::Postgres => "SHOW synchronous_commit",
        };
        let setting = |row: sqlx::any::AnyRow| -> String {
            use sqlx::Row as _;
            row.try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                .unwrap()
        };
        let mut derived = db.derived_state_connection().await.unwrap();
        let relaxed = setting(sqlx::query(show).fetch_one(&mut derived).await.unwrap());
        // SQLite: 1 is NORMAL, 2 FULL.
        assert!(relaxed == "1" || relaxed == "off", "{relaxed}");
        // Every connection the pool holds or opens, even with the derived one gone.
        drop(derived);
        let mut pooled = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            pooled.push(db.pool().acquire().await.unwrap());
        }
        for conn in &mut pooled {
            let durable = setting(sqlx::query(show).fetch_one(&mut **conn).await.unwrap());
            assert!(durable == "2" || durable == "on", "{durable}");
        }
    }

    #[tokio::test]
    async fn only_the_derived_state_connection_commits_without_waiting_for_the_disk_sqlite() {
        only_the_derived_state_connection_commits_without_waiting_for_the_disk(
            crate::testing::fresh_sqlite_url(),
        )
        .await;
    }

    #[tokio::test]
    async fn only_the_derived_state_connection_commits_without_waiting_for_the_disk_postgres() {
        only_the_derived_state_connection_commits_without_waiting_for_the_disk(
            crate::testing::fresh_postgres_url().await,
        )
        .await;
    }
}
