//! Resident memory of the real server holding many users in its views, beside the same server
//! on an empty database. The users are appended straight through the store (no HTTP, no
//! hashing), then the server starts, folds them into its views, and serves a few pages.

use std::time::{Duration, Instant};

use chrono::Utc;
use keyledger_store::{Database, EventLog};

use crate::report::{self, Table, progress};
use crate::scratch::{Backend, Places};
use crate::server::{self, ADMIN_TOKEN, Memory, Server, ServerOptions};
use crate::workload;

/// The limit on resident memory, in MiB.
const TARGET_MIB: f64 = 200.0;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Users (`user.created` events) in the log.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    /// Pages of `GET /api/v1/users?limit=200` read after the views caught up.
    #[arg(long, default_value_t = 5)]
    pub pages: u32,
    /// Seconds to wait for the server's views to fold the log.
    #[arg(long, default_value_t = 1800)]
    pub catch_up_timeout: u64,
    /// The server's database.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
    #[command(flatten)]
    pub server: ServerOptions,
}

/// What one server came to.
struct Observed {
    started: Memory,
    caught_up: Memory,
    after_reads: Memory,
    catch_up: Duration,
    folded: u64,
    reads: Reads,
}

/// How long the reads took.
struct Reads {
    /// The mean of the `GET /users?limit=200` pages.
    page: Duration,
    /// `GET /users?q=..`.
    search: Duration,
    /// `GET /audit?type=user.created&limit=200`.
    audit: Duration,
}

pub async fn run(options: &Options, places: &Places) -> anyhow::Result<()> {
    anyhow::ensure!(options.users > 0, "--users must be positive");
    let bin = options.server.binary().await?;
    let busy = report::cpu_busy().await;
    progress("reference: the server on an empty database");
    let empty = observe(options, places, &bin, 0).await?;
    let full = observe(options, places, &bin, options.users).await?;
    print(options, &empty, &full, busy);
    Ok(())
}

async fn observe(
    options: &Options,
    places: &Places,
    bin: &std::path::Path,
    users: u64,
) -> anyhow::Result<Observed> {
    let scratch = places.fresh(options.backend).await?;
    if users > 0 {
        progress(format!("appending {users} user.created events"));
        let db = Database::connect(&scratch.url).await?;
        let log = EventLog::open(db.clone()).await?;
        let now = Utc::now();
        let loaded = workload::load(&log, users, |n| workload::new_user(n, 0, now)).await?;
        progress(format!(
            "appended {} events in {}",
            loaded.events,
            report::seconds(loaded.elapsed)
        ));
        drop(log);
        db.pool().close().await;
    }
    let log_path = scratch
        .dir()
        .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf)
        .join(format!("server-{}-{users}.log", std::process::id()));
    let server = Server::start(bin, &scratch.url, &log_path).await?;
    let result = exercise(options, &server, users).await;
    server.stop().await?;
    scratch.remove().await?;
    if options.backend == Backend::Sqlite {
        let _ = std::fs::remove_file(&log_path);
    }
    result
}

async fn exercise(options: &Options, server: &Server, users: u64) -> anyhow::Result<Observed> {
    let client = server::client()?;
    let started = server.memory()?;
    let mut last_report = Instant::now();
    let catch_up = server
        .wait_for_views(
            &client,
            users,
            Duration::from_secs(options.catch_up_timeout),
            |log, views| {
                if last_report.elapsed() > Duration::from_secs(10) {
                    last_report = Instant::now();
                    progress(format!("views at {views} of {log}"));
                }
            },
        )
        .await?;
    let caught_up = server.memory()?;
    let mut page_times = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..options.pages {
        let mut request = client
            .get(server.url("/api/v1/users"))
            .bearer_auth(ADMIN_TOKEN)
            .query(&[("limit", "200")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor.as_str())]);
        }
        let began = Instant::now();
        let page: serde_json::Value = request.send().await?.error_for_status()?.json().await?;
        page_times.push(began.elapsed());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    // A text search (it scans the whole users view) and an audit page too.
    let mut timed = Vec::new();
    for (path, query) in [
        ("/api/v1/users", [("q", "bench00999"), ("limit", "50")]),
        (
            "/api/v1/audit",
            [("type", "user.created"), ("limit", "200")],
        ),
    ] {
        let began = Instant::now();
        client
            .get(server.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .query(&query)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        timed.push(began.elapsed());
    }
    let reads = Reads {
        page: page_times.iter().sum::<Duration>() / u32::try_from(page_times.len().max(1))?,
        search: timed.first().copied().unwrap_or_default(),
        audit: timed.get(1).copied().unwrap_or_default(),
    };
    let after_reads = server.memory()?;
    Ok(Observed {
        started,
        caught_up,
        after_reads,
        catch_up,
        folded: users,
        reads,
    })
}

/// One memory figure of an observed server, in KiB.
type Figure = fn(&Observed) -> u64;

/// One of the timed reads.
type ReadTime = fn(&Reads) -> Duration;

fn print(options: &Options, empty: &Observed, full: &Observed, busy: Option<f64>) {
    let mut table = Table::new(
        format!(
            "server resident memory with {} users in the views ({})",
            report::number(options.users as f64),
            options.backend
        ),
        &[
            "when",
            &format!("{} users", report::number(options.users as f64)),
            "empty database (reference)",
            "target",
            "verdict",
        ],
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rows: [(&str, Figure, bool); 4] = [
        ("VmRSS after start", |o| o.started.rss_kib, false),
        (
            "VmRSS after the views caught up",
            |o| o.caught_up.rss_kib,
            false,
        ),
        ("VmRSS after reads", |o| o.after_reads.rss_kib, true),
        (
            "VmHWM (peak) over the run",
            |o| o.after_reads.peak_kib,
            true,
        ),
    ];
    for (label, figure, judged) in rows {
        let (target, verdict) = if judged {
            (
                format!("< {TARGET_MIB:.0} MiB"),
                format!("**{}**", report::below(mib(figure(full)), TARGET_MIB)),
            )
        } else {
            (String::new(), String::new())
        };
        table.row(vec![
            label.into(),
            report::mebibytes(figure(full)),
            report::mebibytes(figure(empty)),
            target,
            verdict,
        ]);
    }
    table.row(vec![
        "views catch-up after start".into(),
        format!(
            "{} ({} events/s, both views at once)",
            report::seconds(full.catch_up),
            report::number(report::rate(full.folded, full.catch_up))
        ),
        report::seconds(empty.catch_up),
        String::new(),
        String::new(),
    ]);
    let reads: [(&str, ReadTime); 3] = [
        ("`GET /api/v1/users?limit=200`, mean of the pages", |r| {
            r.page
        }),
        ("`GET /api/v1/users?q=bench00999&limit=50`", |r| r.search),
        ("`GET /api/v1/audit?type=user.created&limit=200`", |r| {
            r.audit
        }),
    ];
    for (label, took) in reads {
        table.row(vec![
            label.into(),
            report::millis(took(&full.reads)),
            report::millis(took(&empty.reads)),
            String::new(),
            String::new(),
        ]);
    }
    table.note(
        "the users were appended through `EventLog::append` before the server started, so \
         the server folds all of them into `users_view` and `audit_view` at startup",
    );
    table.note(report::load_note(busy));
    table.print();
}
