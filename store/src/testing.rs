//! Fresh databases for tests, in this crate and in the crates that build on it.
//!
//! Each call gives a new, empty database, so tests run in parallel without seeing each
//! other. Leftovers of earlier runs (more than an hour old, judged by the time in their
//! UUIDv7 names) are removed on the first call of a process.

// Test support: a failure to set up a database should stop the test with a message, so this
// module panics instead of returning errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor, Row};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Overrides the PostgreSQL server used by tests, e.g. `postgres://postgres@db:5432/postgres`.
pub const DATABASE_URL_ENV: &str = "KEYLEDGER_TEST_DATABASE_URL";

const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const TEST_DB_PREFIX: &str = "kl_test_";
const TEST_DIR_PREFIX: &str = "keyledger-test-";
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// A new, empty PostgreSQL database on the test server, as a url.
///
/// The server is `$KEYLEDGER_TEST_DATABASE_URL` if set, else the local server on port 5432 if
/// it accepts a connection, else a throwaway server started once per process (and stopped
/// when the process exits).
pub async fn fresh_postgres_url() -> String {
    static SERVER: OnceCell<String> = OnceCell::const_new();
    let server = SERVER
        .get_or_init(|| async {
            let server = find_server().await;
            drop_leftover_databases(&server).await;
            server
        })
        .await;
    let name = format!("{TEST_DB_PREFIX}{}", Uuid::now_v7().simple());
    let mut conn = PgConnection::connect(server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    conn.close().await.ok();
    with_database(server, &name)
}

/// A url for a new SQLite file in a new directory under the system temp dir. The file does
/// not exist yet; [`crate::Database::connect`] creates it.
pub fn fresh_sqlite_url() -> String {
    static CLEANED: std::sync::Once = std::sync::Once::new();
    CLEANED.call_once(remove_leftover_dirs);
    let dir = std::env::temp_dir().join(format!("{TEST_DIR_PREFIX}{}", Uuid::now_v7().simple()));
    format!("sqlite://{}", dir.join("log.db").display())
}

async fn find_server() -> String {
    if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
        return url;
    }
    if PgConnection::connect(LOCAL_SERVER).await.is_ok() {
        return LOCAL_SERVER.to_owned();
    }
    tokio::task::spawn_blocking(start_throwaway_server)
        .await
        .expect("starting a throwaway PostgreSQL server panicked")
}

/// `base` with its database name replaced by `name`, keeping user, host and parameters.
pub fn with_database(base: &str, name: &str) -> String {
    let (url, params) = match base.split_once('?') {
        Some((url, params)) => (url, Some(params)),
        None => (base, None),
    };
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let server = match url[authority_start..].find('/') {
        Some(slash) => &url[..authority_start + slash],
        None => url,
    };
    match params {
        Some(params) => format!("{server}/{name}?{params}"),
        None => format!("{server}/{name}"),
    }
}

/// Whether a leftover name (ending in a UUIDv7 in simple form) is older than an hour.
fn is_leftover(name: &str, prefix: &str, now: SystemTime) -> bool {
    let Some(uuid) = name
        .strip_prefix(prefix)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return false;
    };
    let Some(timestamp) = uuid.get_timestamp() else {
        return false;
    };
    let (secs, nanos) = timestamp.to_unix();
    let created = UNIX_EPOCH + Duration::new(secs, nanos);
    now.duration_since(created)
        .is_ok_and(|age| age > LEFTOVER_AGE)
}

async fn drop_leftover_databases(server: &str) {
    let Ok(mut conn) = PgConnection::connect(server).await else {
        return;
    };
    let names: Vec<String> = match sqlx::query("SELECT datname FROM pg_database")
        .fetch_all(&mut conn)
        .await
    {
        Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
        Err(_) => return,
    };
    let now = SystemTime::now();
    for name in names.iter().filter(|n| is_leftover(n, TEST_DB_PREFIX, now)) {
        // WITH (FORCE) needs PostgreSQL 13; on failure the database just stays.
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
    }
    conn.close().await.ok();
}

fn remove_leftover_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| is_leftover(n, TEST_DIR_PREFIX, now))
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn find_pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    // Newest version first ("9.6" < "16" compares wrong as text, so compare as numbers).
    versions.sort_by_key(|p| {
        let version = p
            .parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
            .unwrap_or(0);
        std::cmp::Reverse(version)
    });
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    versions
        .into_iter()
        .chain(from_path)
        .find(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on \
                 PATH), no server answers at {LOCAL_SERVER}, and ${DATABASE_URL_ENV} is not set"
            )
        })
}

/// Runs a PostgreSQL program as the current user, or as `postgres` when we are root
/// (PostgreSQL refuses to run as root).
fn pg_command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Starts a private server on a free port with trust authentication, and a watchdog that
/// stops it and removes its directory when this process exits.
pub(crate) fn start_throwaway_server() -> String {
    let bin = find_pg_bin();
    let as_postgres = is_root();
    let dir = std::env::temp_dir().join(format!("keyledger-pg-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("cannot create the PostgreSQL directory");
    if as_postgres {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:").arg(&dir);
                c
            },
            "chown of the PostgreSQL directory",
        );
    }
    let data = dir.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot find a free port")
        .port();
    let mut initdb = pg_command(&bin.join("initdb"), as_postgres);
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
    run(initdb, "initdb");
    let mut start = pg_command(&bin.join("pg_ctl"), as_postgres);
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("server.log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            dir.display()
        ))
        .args(["-w", "start"]);
    run(start, "pg_ctl start");
    // The watchdog outlives us: once our pid is gone it stops the server and cleans up. It
    // is not waited for, and cannot become our zombie, since it exits only after we do.
    let pg_ctl = bin.join("pg_ctl");
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {runas}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        runas = if as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        },
        pg_ctl = pg_ctl.display(),
        data = data.display(),
        dir = dir.display(),
    );
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cannot start the PostgreSQL watchdog");
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn only_names_older_than_an_hour_are_leftovers() {
        let now = SystemTime::now();
        let fresh = format!("{TEST_DB_PREFIX}{}", Uuid::now_v7().simple());
        assert!(!is_leftover(&fresh, TEST_DB_PREFIX, now));
        assert!(is_leftover(
            &fresh,
            TEST_DB_PREFIX,
            now + Duration::from_secs(7200)
        ));
        assert!(!is_leftover("kl_test_notauuid", TEST_DB_PREFIX, now));
        assert!(!is_leftover("postgres", TEST_DB_PREFIX, now));
    }
}
