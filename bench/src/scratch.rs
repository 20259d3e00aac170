//! Fresh, throwaway databases: a SQLite file in a new temporary directory, or a new database on
//! the PostgreSQL server. Every measurement starts empty, so one run's data cannot skew the
//! next, and everything is removed afterwards unless asked to keep it.

use keyledger_store::testing::with_database;
use std::path::PathBuf;

use anyhow::Context as _;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};
use uuid::Uuid;

use crate::report::progress;

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// Where scratch databases are made; shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Places {
    /// PostgreSQL server for the `postgres` backend; each measurement creates (and drops) its
    /// own database on it.
    #[arg(
        long,
        global = true,
        env = "KEYLEDGER_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres: String,
    /// Directory for SQLite files (default: the system temp dir). Put it on the disk you
    /// want measured: SQLite's commit cost is that disk's fsync.
    #[arg(long, global = true)]
    pub scratch_dir: Option<PathBuf>,
    /// Keep the scratch databases instead of removing them (their location is printed).
    #[arg(long, global = true)]
    pub keep: bool,
}

/// A database that exists only for one measurement.
pub struct Scratch {
    pub url: String,
    cleanup: Cleanup,
    keep: bool,
}

enum Cleanup {
    Directory(PathBuf),
    Database { server: String, name: String },
}

impl Places {
    /// A new, empty database. For SQLite the file does not exist yet: the store creates it
    /// with its own settings (WAL, synchronous = FULL).
    pub async fn fresh(&self, backend: Backend) -> anyhow::Result<Scratch> {
        let tag = Uuid::now_v7().simple().to_string();
        let cleanup = match backend {
            Backend::Sqlite => {
                let base = self.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
                let dir = base.join(format!("keyledger-bench-{tag}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Cleanup::Directory(dir)
            }
            Backend::Postgres => {
                let name = format!("kl_bench_{tag}");
                let mut conn = PgConnection::connect(&self.postgres)
                    .await
                    .context("cannot connect to the PostgreSQL server (see --postgres)")?;
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .with_context(|| format!("cannot create database {name}"))?;
                conn.close().await.ok();
                Cleanup::Database {
                    server: self.postgres.clone(),
                    name,
                }
            }
        };
        let url = match &cleanup {
            Cleanup::Directory(dir) => format!("sqlite://{}", dir.join("kl.db").display()),
            Cleanup::Database { server, name } => with_database(server, name),
        };
        Ok(Scratch {
            url,
            cleanup,
            keep: self.keep,
        })
    }
}

impl Scratch {
    /// The directory of a SQLite scratch database (for files that belong next to it).
    pub fn dir(&self) -> Option<&std::path::Path> {
        match &self.cleanup {
            Cleanup::Directory(dir) => Some(dir),
            Cleanup::Database { .. } => None,
        }
    }

    /// Removes the database. Pools on it should be closed first; PostgreSQL's
    /// `WITH (FORCE)` ends any connection still open.
    pub async fn remove(self) -> anyhow::Result<()> {
        if self.keep {
            progress(format!("kept scratch database {}", self.url));
            return Ok(());
        }
        match self.cleanup {
            Cleanup::Directory(dir) => std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display())),
            Cleanup::Database { server, name } => {
                let mut conn = PgConnection::connect(&server).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .with_context(|| format!("cannot drop database {name}"))?;
                conn.close().await.ok();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_database_name_of_the_server_url_changes() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}
