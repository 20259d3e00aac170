//! Rebuilding the views from position zero over a large log, beside the raw rate at which
//! `EventLog::read_all` reads the same events (the ceiling of any fold), and the rate at which
//! `verify_chain` checks them.

use std::time::{Duration, Instant};

use chrono::Utc;
use keyledger_store::{Database, EventLog};

use crate::report::{self, Table, per_second, progress};
use crate::scratch::{Backend, Places};
use crate::workload;

/// The target for rebuilding, in log events per second.
const TARGET: f64 = 200_000.0;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events per user: one `user.created`, the rest wrong-password logins.
    #[arg(long, default_value_t = 4)]
    pub events_per_user: u64,
    /// Events per `read_all` page of the reference (the projections runner reads 1000).
    #[arg(long, default_value_t = 1000)]
    pub page: u32,
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
}

pub async fn run(options: &Options, places: &Places) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.events > 0 && options.events_per_user > 0 && options.page > 0,
        "--events, --events-per-user and --page must be positive"
    );
    let busy = report::cpu_busy().await;
    let scratch = places.fresh(options.backend).await?;
    let db = Database::connect(&scratch.url).await?;
    let log = EventLog::open(db.clone()).await?;
    let users = options.events.div_ceil(options.events_per_user);
    let failures = usize::try_from(options.events_per_user - 1)?;
    progress(format!(
        "appending {} events ({users} users × {})",
        users * options.events_per_user,
        options.events_per_user
    ));
    let now = Utc::now();
    let loaded = workload::load(&log, users, |n| workload::new_user(n, failures, now)).await?;

    progress("reference: read_all over the whole log");
    let read = read_everything(&log, options.page).await?;
    anyhow::ensure!(
        read.0 == loaded.events,
        "read {} events, appended {}",
        read.0,
        loaded.events
    );

    progress("verify_chain over the whole log");
    let verify_started = Instant::now();
    let verification = keyledger_store::chain::verify_chain(&log, |_| {}).await?;
    let verified = verify_started.elapsed();
    anyhow::ensure!(
        verification.first_break.is_none() && verification.checked == loaded.events,
        "the chain did not verify: {verification:?}"
    );

    progress("rebuilding every view");
    let started = Instant::now();
    // All views are folded together from one read of the log, so the time of each alone is
    // measured by rebuilding it alone afterwards (as `replay rebuild --projection` does).
    keyledger_projections::rebuild::rebuild(&log, None, |name, position| {
        // Folded in batches of 5000, so this lands on every 200,000th.
        if position.is_multiple_of(200_000) {
            progress(format!("{name}: {position}"));
        }
    })
    .await?;
    let rebuilt = started.elapsed();
    // Again, now that the live views hold every row: what `replay rebuild` does on a database
    // whose server had been following the log.
    progress("rebuilding every view again, over live views that are up to date");
    let started = Instant::now();
    keyledger_projections::rebuild::rebuild(&log, None, |_, _| {}).await?;
    let rebuilt_again = started.elapsed();
    let mut per_view = Vec::new();
    for name in keyledger_projections::PROJECTIONS {
        progress(format!("rebuilding view {name} alone"));
        let started = Instant::now();
        keyledger_projections::rebuild::rebuild(&log, Some(name), |_, _| {}).await?;
        per_view.push((name.to_string(), started.elapsed()));
    }

    drop(log);
    db.pool().close().await;
    scratch.remove().await?;

    let events = loaded.events;
    let read_rate = report::rate(events, read.1);
    let mut table = Table::new(
        format!(
            "rebuild and verify over {} events ({})",
            report::number(events as f64),
            options.backend
        ),
        &[
            "figure",
            "events/s",
            "time",
            "reference: `read_all` raw read",
            "share of reference",
            "target",
            "verdict",
        ],
    );
    let rebuild_rate = report::rate(events, rebuilt);
    table.row(vec![
        "`rebuild(&log, None, ..)`, all views, the live views empty".into(),
        per_second(rebuild_rate),
        report::seconds(rebuilt),
        per_second(read_rate),
        format!("{:.1} %", 100.0 * rebuild_rate / read_rate.max(1.0)),
        format!("≥ {}/s", report::number(TARGET)),
        format!("**{}**", report::at_least(rebuild_rate, TARGET)),
    ]);
    let again_rate = report::rate(events, rebuilt_again);
    table.row(vec![
        "… again, the live views up to date".into(),
        per_second(again_rate),
        report::seconds(rebuilt_again),
        per_second(read_rate),
        format!("{:.1} %", 100.0 * again_rate / read_rate.max(1.0)),
        format!("≥ {}/s", report::number(TARGET)),
        format!("**{}**", report::at_least(again_rate, TARGET)),
    ]);
    for (name, took) in &per_view {
        let rate = report::rate(events, *took);
        table.row(vec![
            format!("view `{name}` rebuilt alone, the live views up to date"),
            per_second(rate),
            report::seconds(*took),
            per_second(read_rate),
            format!("{:.1} %", 100.0 * rate / read_rate.max(1.0)),
            String::new(),
            String::new(),
        ]);
    }
    let verify_rate = report::rate(events, verified);
    table.row(vec![
        "`verify_chain`".into(),
        per_second(verify_rate),
        report::seconds(verified),
        per_second(read_rate),
        format!("{:.1} %", 100.0 * verify_rate / read_rate.max(1.0)),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        "`read_all` (the reference itself)".into(),
        per_second(read_rate),
        report::seconds(read.1),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        "loading: `append`, 1 request per user, many in flight".into(),
        per_second(report::rate(loaded.events, loaded.elapsed)),
        report::seconds(loaded.elapsed),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.note(format!(
        "{users} users, each `user.created` + {failures} × `user.login.failed` (bad password); \
         `read_all` pages of {} events, as the projections runner reads them",
        options.page
    ));
    table.note(report::load_note(busy));
    table.print();
    Ok(())
}

/// Reads the whole log page by page without doing anything with it: (events, time).
async fn read_everything(log: &EventLog, page: u32) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut after = 0;
    let mut count = 0;
    loop {
        let events = log.read_all(after, page).await?;
        let Some(last) = events.last() else {
            return Ok((count, started.elapsed()));
        };
        after = last.position;
        count += events.len() as u64;
    }
}
