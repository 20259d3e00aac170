//! The auditor's tools over a large log: `replay verify` (chain and checkpoints) beside the raw
//! rate of `read_all` and the raw rate of SHA-256 over the same canonical bytes, measured in
//! the same run; and the latency of a user's state as of a position, for a user with many
//! events, beside the raw read of that user's stream.

use std::time::{Duration, Instant};

use chrono::Utc;
use keyledger_projections::as_of::{AsOf, user_as_of};
use keyledger_replay::{AuditOptions, verify_log};
use keyledger_store::chain::canonical_bytes;
use keyledger_store::{Database, EventLog, StreamId};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::report::{self, Table, per_second, progress};
use crate::scratch::{Backend, Places};
use crate::workload;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Events in the log (besides the one large user's).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events of the user whose state is folded as of a position.
    #[arg(long, default_value_t = 10_000)]
    pub user_events: u64,
    /// As-of queries measured.
    #[arg(long, default_value_t = 100)]
    pub queries: usize,
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
}

/// Events per `read_all` page of the reference: the verifier's page.
const PAGE: u32 = 10_000;

pub async fn run(options: &Options, places: &Places) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.events > 0 && options.user_events > 1 && options.queries > 0,
        "--events, --user-events and --queries must be positive"
    );
    let busy = report::cpu_busy().await;
    let scratch = places.fresh(options.backend).await?;
    let db = Database::connect(&scratch.url).await?;
    let log = EventLog::open(db.clone()).await?;
    let now = Utc::now();
    progress(format!("appending {} events (4 per user)", options.events));
    let loaded = workload::load(&log, options.events.div_ceil(4), |n| {
        workload::new_user(n, 3, now)
    })
    .await?;
    progress(format!(
        "appending one user with {} events",
        options.user_events
    ));
    let failures = usize::try_from(options.user_events - 1)?;
    let big = workload::new_user(u64::MAX / 2, failures, now)?;
    let user_id = Uuid::parse_str(&big.stream.id)?;
    log.append(big).await?;
    let total = log.head().await?.map_or(0, |h| h.position);

    // The first pass also warms the caches, so the timed passes after it read alike.
    progress("reference: SHA-256 of prev hash + canonical bytes, in memory (hashing timed only)");
    let mut hashed = Duration::ZERO;
    let mut bytes = 0usize;
    let mut prev = [0u8; 32];
    let mut after = 0;
    let mut last_hash = [0u8; 32];
    loop {
        let page = log.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        last_hash = last.hash;
        let started = Instant::now();
        for event in &page {
            let canonical = canonical_bytes(event);
            bytes += canonical.len();
            let mut hasher = Sha256::new();
            hasher.update(prev);
            hasher.update(&canonical);
            prev = hasher.finalize().into();
        }
        hashed += started.elapsed();
    }
    anyhow::ensure!(prev == last_hash, "the in-memory chain differs");

    progress("reference: read_all over the whole log");
    let started = Instant::now();
    let mut after = 0;
    let mut count = 0u64;
    loop {
        let page = log.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        count += page.len() as u64;
    }
    let read = started.elapsed();
    anyhow::ensure!(count == total, "read {count} of {total}");

    progress("replay verify (chain, checkpoints, naming of breaks)");
    let started = Instant::now();
    let report = verify_log(&log, AuditOptions::default(), None, |_| {}).await?;
    let verified = started.elapsed();
    anyhow::ensure!(
        report.finding.is_none() && report.checked == total,
        "the log did not verify: {report:?}"
    );

    progress("as-of queries and raw stream reads");
    let stream = StreamId::new("user", user_id.to_string());
    let mut as_of = Vec::with_capacity(options.queries);
    let mut raw = Vec::with_capacity(options.queries);
    for i in 0..options.queries {
        // Positions spread over the user's history.
        let position = total - options.user_events
            + 1
            + (i as u64 * options.user_events) / options.queries as u64;
        let started = Instant::now();
        let found = user_as_of(&log, user_id, AsOf::Position(position)).await?;
        as_of.push(started.elapsed());
        anyhow::ensure!(found.row.is_some(), "the user is missing at {position}");
        let started = Instant::now();
        let read = log.read_stream(&stream).await?;
        raw.push(started.elapsed());
        anyhow::ensure!(read.len() as u64 == options.user_events);
    }
    as_of.sort();
    raw.sort();

    drop(log);
    db.pool().close().await;
    scratch.remove().await?;

    let read_rate = report::rate(total, read);
    let hash_rate = report::rate(total, hashed);
    let verify_rate = report::rate(total, verified);
    let mut table = Table::new(
        format!(
            "replay verify over {} events ({})",
            report::number(total as f64),
            options.backend
        ),
        &[
            "figure",
            "events/s",
            "time",
            "share of `read_all`",
            "share of SHA-256",
        ],
    );
    let share = |rate: f64, of: f64| format!("{:.1} %", 100.0 * rate / of.max(1.0));
    table.row(vec![
        "`replay verify` (`verify_log`: read, hash, link, checkpoints)".into(),
        per_second(verify_rate),
        report::seconds(verified),
        share(verify_rate, read_rate),
        share(verify_rate, hash_rate),
    ]);
    table.row(vec![
        "reference: `read_all`, pages of 10,000".into(),
        per_second(read_rate),
        report::seconds(read),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "reference: SHA-256 of the same bytes, in memory ({} MB)",
            bytes / 1_000_000
        ),
        per_second(hash_rate),
        report::seconds(hashed),
        String::new(),
        String::new(),
    ]);
    table.note(format!(
        "loading: {} events appended in {}",
        loaded.events,
        report::seconds(loaded.elapsed)
    ));
    table.note(report::load_note(busy));
    table.print();

    let mut latency = Table::new(
        format!(
            "as-of latency for a user with {} events ({})",
            report::number(options.user_events as f64),
            options.backend
        ),
        &["figure", "p50", "p99", "max"],
    );
    let row = |name: &str, sorted: &[Duration]| {
        vec![
            name.to_owned(),
            report::millis(report::percentile(sorted, 0.50)),
            report::millis(report::percentile(sorted, 0.99)),
            report::millis(sorted[sorted.len() - 1]),
        ]
    };
    latency.row(row("`user_as_of(.., AsOf::Position(p))`", &as_of));
    latency.row(row("reference: `read_stream` of the same user", &raw));
    latency.note(format!(
        "{} queries at positions spread over the user's history, in a log of {} events",
        options.queries, total
    ));
    latency.print();
    Ok(())
}
