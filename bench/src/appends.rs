//! Appends per second through `EventLog::append` (group commit) at several numbers of
//! concurrent writers, each appending single-event requests to its own stream, beside what
//! the same database does without our log: postgres-es's `PostgresEventRepository` persisting
//! the same events, a plain batched INSERT (the raw ceiling), single-row commits (the fsync
//! floor), and batches of our commits' size into the log's own table (the ceiling of a writer
//! that commits one batch at a time into this schema).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use cqrs_es::persist::{PersistedEventRepository as _, SerializedEvent};
use keyledger_domain::user::UserEvent;
use keyledger_store::{AppendRequest, Database, EventLog, ExpectedVersion, NewEvent};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyArguments;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{Arguments as _, Connection as _};
use uuid::Uuid;

use crate::report::{self, Table, per_second, progress};
use crate::scratch::{Backend, Places};
use crate::workload;

/// Targets from the issue, in events per second.
const POSTGRES_TARGET: f64 = 50_000.0;
const SQLITE_TARGET: f64 = 20_000.0;
/// The writer count the PostgreSQL target is stated for.
const TARGET_WRITERS: usize = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds each round of a configuration is measured, after a warm-up of a fifth of that
    /// (at most one second).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rounds of every configuration, each on a fresh database; the median round is shown
    /// (the machine's fsync latency varies from second to second).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Numbers of concurrent writers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub writers: Vec<usize>,
    /// Backends to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<Backend>,
    /// Rows per statement (and per transaction) of the raw INSERT reference.
    #[arg(long, default_value_t = 1000)]
    pub raw_batch: usize,
    /// Connections in postgres-es's pool (its own `default_postgress_pool` uses 10, as does
    /// our store).
    #[arg(long, default_value_t = 10)]
    pub postgres_es_connections: u32,
}

pub async fn run(options: &Options, places: &Places) -> anyhow::Result<()> {
    anyhow::ensure!(options.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(options.raw_batch > 0, "--raw-batch must be positive");
    anyhow::ensure!(options.rounds > 0, "--rounds must be positive");
    let window = Window::new(Duration::from_secs_f64(options.seconds));
    for backend in &options.backends {
        let table = measure_backend(*backend, options, window, places).await?;
        table.print();
    }
    Ok(())
}

async fn measure_backend(
    backend: Backend,
    options: &Options,
    window: Window,
    places: &Places,
) -> anyhow::Result<Table> {
    let busy = report::cpu_busy().await;
    let rounds = options.rounds;
    // Commit latency first: the raw batched INSERTs below write hundreds of megabytes, and
    // the disk flushing them afterwards would stall the commits measured next to it.
    progress(format!("{backend}: raw single-row commits"));
    let single = median(rounds, || raw_single_row_commits(backend, window, places))
        .await?
        .0;
    let mut measured = Vec::new();
    for &writers in &options.writers {
        progress(format!("{backend}: EventLog::append, {writers} writers"));
        let (ours, low, high) = median(rounds, || {
            keyledger_appends(backend, writers, window, places)
        })
        .await?;
        let theirs = match backend {
            Backend::Postgres => {
                progress(format!("{backend}: postgres-es persist, {writers} writers"));
                let (theirs, _, _) = median(rounds, || {
                    postgres_es_persists(writers, options.postgres_es_connections, window, places)
                })
                .await?;
                Some(theirs)
            }
            Backend::Sqlite => None,
        };
        // What the database does with the log's own table and indexes, one transaction per
        // batch of as many events as our commits carried, spread over as many streams: the
        // ceiling of any writer of this schema at this concurrency.
        let per_commit = (ours.events_per_commit.round() as usize).max(1);
        progress(format!(
            "{backend}: raw INSERTs into the log's table, {per_commit} rows over {writers} streams"
        ));
        let schema = median(rounds, || {
            raw_log_table_commits(backend, per_commit, writers, window, places)
        })
        .await?
        .0;
        measured.push((writers, ours, low, high, theirs, schema));
    }
    progress(format!("{backend}: raw batched INSERTs"));
    let raw_style = match backend {
        Backend::Sqlite => Placeholders::Anonymous,
        Backend::Postgres => Placeholders::Numbered,
    };
    let raw = median(rounds, || {
        raw_batched_insert(backend, options.raw_batch, raw_style, window, places)
    })
    .await?
    .0;
    // The store writes `$N` placeholders on both backends. SQLite looks each `$N` up by name
    // while parsing, so a statement with n of them costs O(n²); this shows what that costs.
    let raw_numbered = match backend {
        Backend::Sqlite => Some(
            median(rounds, || {
                raw_batched_insert(
                    backend,
                    options.raw_batch,
                    Placeholders::Numbered,
                    window,
                    places,
                )
            })
            .await?
            .0,
        ),
        Backend::Postgres => None,
    };

    let mut table = Table::new(
        format!("appends/s, {backend} (single-event requests, each writer its own stream)"),
        &[
            "writers",
            "keyledger `EventLog::append`",
            "events/commit",
            "append p50 / p99",
            "postgres-es `persist`",
            "raw batched INSERT (reference)",
            "keyledger / raw",
            "raw 1-row commits, 1 conn",
            "raw INSERT into the log's table, same events/commit",
            "keyledger / that",
        ],
    );
    for (writers, ours, low, high, theirs, schema) in &measured {
        let mut latencies = ours.counted.latencies.clone();
        latencies.sort_unstable();
        table.row(vec![
            writers.to_string(),
            if rounds > 1 {
                format!(
                    "{} ({}–{})",
                    per_second(ours.counted.rate()),
                    report::number(*low),
                    report::number(*high)
                )
            } else {
                per_second(ours.counted.rate())
            },
            format!("{:.1}", ours.events_per_commit),
            format!(
                "{} / {}",
                report::millis(report::percentile(&latencies, 50.0)),
                report::millis(report::percentile(&latencies, 99.0))
            ),
            theirs.as_ref().map_or_else(
                || "n/a (PostgreSQL only)".to_owned(),
                |theirs| per_second(theirs.rate()),
            ),
            per_second(raw.rate()),
            format!("{:.1} %", 100.0 * ours.counted.rate() / raw.rate().max(1.0)),
            per_second(single.rate()),
            per_second(schema.rate()),
            format!(
                "{:.0} %",
                100.0 * ours.counted.rate() / schema.rate().max(1.0)
            ),
        ]);
    }
    // Judged at 64 writers, the concurrency the issue states; when that was not measured, at
    // the most writers that were.
    let judged = measured
        .iter()
        .find(|m| m.0 == TARGET_WRITERS)
        .or_else(|| measured.iter().max_by_key(|m| m.0));
    let target = match backend {
        Backend::Postgres => POSTGRES_TARGET,
        Backend::Sqlite => SQLITE_TARGET,
    };
    if let Some((writers, ours, ..)) = judged {
        table.note(format!(
            "target ≥ {} events/s at {TARGET_WRITERS} writers: **{}** ({} at {writers} writers)",
            report::number(target),
            report::at_least(ours.rate(), target),
            per_second(ours.rate()),
        ));
    }
    table.note(format!(
        "each figure: the median of {rounds} rounds (keyledger: lowest–highest in brackets), \
         each counting operations started in a {:.1} s window after a {:.1} s warm-up on a \
         fresh database, after a `sync` (and on PostgreSQL a `CHECKPOINT`) so that no earlier \
         round's writes are still being flushed; raw batched INSERT = {} rows per INSERT, one \
         transaction per statement, 1 connection, same rows as the events",
        window.measure.as_secs_f64(),
        window.warmup.as_secs_f64(),
        options.raw_batch
    ));
    table.note(
        "raw INSERT into the log's table: the store's own `events` table and indexes (the \
         stream index puts each stream's newest entry on a page of its own), one connection, \
         one transaction per batch of the events per commit our log reached, spread round-robin \
         over as many streams as writers, positions and UUIDv7 ids in order, hashes of the positions, \
         nothing else: the ceiling of any writer of this schema at that batch size"
            .to_owned(),
    );
    if let Some(numbered) = raw_numbered {
        table.note(format!(
            "the raw batched INSERT binds anonymous `?` placeholders; the same statement with \
             `$1..${}` placeholders, as the store writes them, does {} (SQLite resolves \
             each `$N` by name: O(n²) per statement)",
            options.raw_batch * RAW_COLUMNS,
            per_second(numbered.rate())
        ));
    }
    table.note(report::load_note(busy));
    Ok(table)
}

/// Flushes what earlier measurements left for the disk to write, so that it does not stall
/// the commits of the next one: `sync(1)`, and on PostgreSQL a `CHECKPOINT` (which also
/// spares the measurement a checkpoint forced by the WAL the previous one wrote).
async fn settle(backend: Backend, places: &Places) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sync").status().await?;
    anyhow::ensure!(status.success(), "sync failed ({status})");
    if backend == Backend::Postgres {
        let mut conn = PgConnection::connect(&places.postgres).await?;
        sqlx::query("CHECKPOINT").execute(&mut conn).await?;
        conn.close().await?;
    }
    Ok(())
}

/// A measurement that comes to a rate.
trait Rated {
    fn rate(&self) -> f64;
}

/// Runs a measurement `rounds` times; returns the median round (by rate) and the lowest and
/// highest rates seen.
async fn median<T: Rated, Fut: Future<Output = anyhow::Result<T>>>(
    rounds: usize,
    mut measure: impl FnMut() -> Fut,
) -> anyhow::Result<(T, f64, f64)> {
    let mut results = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        results.push(measure().await?);
    }
    results.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let low = results.first().map_or(0.0, Rated::rate);
    let high = results.last().map_or(0.0, Rated::rate);
    let middle = results.len() / 2;
    Ok((results.swap_remove(middle), low, high))
}

/// A warm-up, then the measured part.
#[derive(Debug, Clone, Copy)]
struct Window {
    warmup: Duration,
    measure: Duration,
}

impl Window {
    fn new(measure: Duration) -> Self {
        Self {
            warmup: (measure / 5).min(Duration::from_secs(1)),
            measure,
        }
    }
}

/// Operations (each worth `items`) that started inside the measured window.
#[derive(Debug, Default, Clone)]
struct Counted {
    items: u64,
    measured: Duration,
    latencies: Vec<Duration>,
}

impl Rated for Counted {
    fn rate(&self) -> f64 {
        report::rate(self.items, self.measured)
    }
}

/// Runs `workers` loops of `operation` (each call returns how many items it wrote) through
/// the warm-up and the window, and counts what started inside the window. Counting by start
/// time keeps the figure unbiased: an operation still running at the end is counted, one
/// started before the window is not.
async fn drive<Op, Fut>(
    workers: usize,
    window: Window,
    mut make: impl FnMut(usize) -> Op,
) -> anyhow::Result<Counted>
where
    Op: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send,
{
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.measure;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let mut operation = make(worker);
        tasks.spawn(async move {
            let mut counted = Counted::default();
            loop {
                let began = Instant::now();
                if began >= until {
                    return Ok::<_, anyhow::Error>(counted);
                }
                let items = operation().await?;
                if began >= from {
                    counted.items += items;
                    counted.latencies.push(began.elapsed());
                }
            }
        });
    }
    let mut total = Counted {
        measured: window.measure,
        ..Counted::default()
    };
    while let Some(done) = tasks.join_next().await {
        let counted = done.context("a writer panicked")??;
        total.items += counted.items;
        total.latencies.extend(counted.latencies);
    }
    Ok(total)
}

struct Ours {
    counted: Counted,
    events_per_commit: f64,
}

impl Rated for Ours {
    fn rate(&self) -> f64 {
        self.counted.rate()
    }
}

async fn keyledger_appends(
    backend: Backend,
    writers: usize,
    window: Window,
    places: &Places,
) -> anyhow::Result<Ours> {
    let scratch = places.fresh(backend).await?;
    let log = EventLog::open(Database::connect(&scratch.url).await?).await?;
    settle(backend, places).await?;
    let probe = tokio::spawn(commits_in_window(log.clone(), window));
    let counted = drive(writers, window, |writer| {
        let log = log.clone();
        let user = writer as u64;
        let user_id = Uuid::now_v7();
        let mut version = 0;
        move || {
            let request = user_append(user, user_id, version);
            version += 1;
            let log = log.clone();
            async move {
                let request = request?;
                let appended = log.append(request).await?;
                Ok(appended.last_position - appended.first_position + 1)
            }
        }
    })
    .await?;
    let (events, commits) = probe.await.context("the commit probe panicked")??;
    drop(log);
    scratch.remove().await?;
    Ok(Ours {
        counted,
        events_per_commit: events as f64 / commits.max(1) as f64,
    })
}

/// The next event of a writer's user, at the version its writer knows: first the user's
/// creation, as `POST /users` appends it (which gives the user a data key), then one
/// wrong-password attempt after another, sealed with that key as the server's are. Appending
/// attempts to a stream that was never created would measure another path: a stream from
/// before sealing, whose key the store looks up (and does not find) on every append.
fn user_append(user: u64, user_id: Uuid, version: u64) -> anyhow::Result<AppendRequest> {
    let (expected, event) = if version == 0 {
        (
            ExpectedVersion::NoStream,
            workload::user_created(user, user_id, Utc::now())?,
        )
    } else {
        (
            ExpectedVersion::Exact(version),
            workload::login_failed(user, user_id, Utc::now())?,
        )
    };
    Ok(AppendRequest {
        stream: workload::user_stream(user_id),
        expected,
        events: vec![event],
        claims: Vec::new(),
        secrets: Vec::new(),
        sessions: Vec::new(),
        decided_on: Vec::new(),
    })
}

/// Events and commits during the measured window, from the log's head and the writer's batch
/// counter. This reads a table of the store (`log_writer`), which nothing outside the store
/// should; it is a read-only diagnostic that shows how well group commit fills each commit.
async fn commits_in_window(log: EventLog, window: Window) -> anyhow::Result<(u64, u64)> {
    async fn sample(log: &EventLog) -> anyhow::Result<(u64, u64)> {
        let head = log.head().await?.map_or(0, |h| h.position);
        let (batches,): (i64,) = sqlx::query_as("SELECT batches FROM log_writer WHERE id = 1")
            .fetch_one(log.database().pool())
            .await?;
        Ok((head, u64::try_from(batches).unwrap_or(0)))
    }
    tokio::time::sleep(window.warmup).await;
    let (head0, batches0) = sample(&log).await?;
    tokio::time::sleep(window.measure).await;
    let (head1, batches1) = sample(&log).await?;
    Ok((head1 - head0, batches1 - batches0))
}

/// The smallest cqrs-es aggregate that lets postgres-es store `UserEvent`s as `user` streams;
/// the repository only reads its type name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct BenchUser;

impl cqrs_es::Aggregate for BenchUser {
    const TYPE: &'static str = "user";
    type Command = ();
    type Event = UserEvent;
    type Error = std::convert::Infallible;
    type Services = ();

    async fn handle(
        &mut self,
        _command: (),
        _services: &(),
        _sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn apply(&mut self, _event: UserEvent) {}
}

/// postgres-es's tables, from its `db/init.sql`.
const POSTGRES_ES_SCHEMA: &[&str] = &[
    "CREATE TABLE events (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        sequence bigint CHECK (sequence >= 0) NOT NULL,
        event_type text NOT NULL,
        event_version text NOT NULL,
        payload json NOT NULL,
        metadata json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence)
    )",
    "CREATE TABLE snapshots (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
        current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
        payload json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
    )",
];

async fn postgres_es_persists(
    writers: usize,
    connections: u32,
    window: Window,
    places: &Places,
) -> anyhow::Result<Counted> {
    let scratch = places.fresh(Backend::Postgres).await?;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&scratch.url)
        .await?;
    for ddl in POSTGRES_ES_SCHEMA {
        sqlx::query(ddl).execute(&pool).await?;
    }
    let repo = Arc::new(PostgresEventRepository::new(pool.clone()));
    settle(Backend::Postgres, places).await?;
    let counted = drive(writers, window, |_| {
        let repo = Arc::clone(&repo);
        let user_id = Uuid::now_v7();
        let mut sequence = 0;
        move || {
            sequence += 1;
            let event = workload::login_failed(sequence, user_id, Utc::now())
                .and_then(|e| serialized(user_id, sequence, e));
            let repo = Arc::clone(&repo);
            async move {
                repo.persist::<BenchUser>(&[event?], None)
                    .await
                    .map_err(|e| anyhow::anyhow!("postgres-es persist failed: {e}"))?;
                Ok(1)
            }
        }
    })
    .await?;
    pool.close().await;
    scratch.remove().await?;
    Ok(counted)
}

/// The same event as ours, in postgres-es's shape.
fn serialized(user_id: Uuid, sequence: u64, event: NewEvent) -> anyhow::Result<SerializedEvent> {
    Ok(SerializedEvent::new(
        user_id.to_string(),
        usize::try_from(sequence)?,
        "user".into(),
        event.event_type,
        event.schema_version.to_string(),
        event.payload,
        serde_json::to_value(&event.metadata)?,
    ))
}

/// A table with the columns of an event that carry its data, without the log's order, chain
/// or constraints: what the database does when nothing but the rows matters.
const RAW_TABLE: &str = "CREATE TABLE bench_raw (
    id BIGINT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL
)";
const RAW_COLUMNS: usize = 5;
/// Columns of the log's `events` table.
const LOG_COLUMNS: usize = 13;

/// A scratch database with the raw table, through the store's own connection settings (the
/// same driver, and on SQLite the same WAL and synchronous = FULL).
async fn raw_database(
    backend: Backend,
    places: &Places,
) -> anyhow::Result<(crate::scratch::Scratch, Database)> {
    let scratch = places.fresh(backend).await?;
    let db = Database::connect(&scratch.url).await?;
    sqlx::query(RAW_TABLE).execute(db.pool()).await?;
    settle(backend, places).await?;
    Ok((scratch, db))
}

/// Texts of one typical event, so raw rows are as wide as the log's.
fn raw_row() -> anyhow::Result<(String, String, String)> {
    let user_id = Uuid::now_v7();
    let event = workload::login_failed(1, user_id, Utc::now())?;
    Ok((
        user_id.to_string(),
        serde_json::to_string(&event.payload)?,
        serde_json::to_string(&event.metadata)?,
    ))
}

/// How a raw statement names its parameters.
#[derive(Debug, Clone, Copy)]
enum Placeholders {
    /// `?`, numbered by position (SQLite only).
    Anonymous,
    /// `$1, $2, ..` (both backends; what the store writes).
    Numbered,
}

async fn raw_batched_insert(
    backend: Backend,
    batch: usize,
    style: Placeholders,
    window: Window,
    places: &Places,
) -> anyhow::Result<Counted> {
    let (scratch, db) = raw_database(backend, places).await?;
    let (stream_id, payload, metadata) = raw_row()?;
    let sql = format!(
        "INSERT INTO bench_raw (id, stream_id, event_type, payload, metadata) VALUES {}",
        placeholders(batch, RAW_COLUMNS, style)
    );
    let mut next_id: i64 = 0;
    raw_commits(db, scratch, sql, window, move || {
        let mut args = AnyArguments::default();
        for _ in 0..batch {
            next_id += 1;
            add(&mut args, next_id)?;
            add(&mut args, stream_id.clone())?;
            add(&mut args, "user.login.failed")?;
            add(&mut args, payload.clone())?;
            add(&mut args, metadata.clone())?;
        }
        Ok((u64::try_from(batch)?, args))
    })
    .await
}

/// Batches of `batch` events into the store's own `events` table (its indexes included),
/// spread over `streams` streams, one transaction each, from one connection.
async fn raw_log_table_commits(
    backend: Backend,
    batch: usize,
    streams: usize,
    window: Window,
    places: &Places,
) -> anyhow::Result<Counted> {
    let scratch = places.fresh(backend).await?;
    let db = Database::connect(&scratch.url).await?;
    db.migrate().await?;
    settle(backend, places).await?;
    let (_, payload, metadata) = raw_row()?;
    let style = match backend {
        Backend::Sqlite => Placeholders::Anonymous,
        Backend::Postgres => Placeholders::Numbered,
    };
    let sql = format!(
        "INSERT INTO events (position, event_id, tenant_id, stream_kind, stream_id, \
         stream_version, event_type, schema_version, recorded_at, payload, metadata, prev_hash, \
         hash) VALUES {}",
        placeholders(batch, LOG_COLUMNS, style)
    );
    let stream_ids: Vec<String> = (0..streams).map(|_| Uuid::now_v7().to_string()).collect();
    let tenant = Uuid::now_v7().to_string();
    let mut position: i64 = 0;
    let mut versions = vec![0_i64; streams];
    let mut next_stream = 0;
    raw_commits(db, scratch, sql, window, move || {
        let mut args = AnyArguments::default();
        for _ in 0..batch {
            position += 1;
            versions[next_stream] += 1;
            add(&mut args, position)?;
            add(&mut args, Uuid::now_v7().to_string())?;
            add(&mut args, tenant.clone())?;
            add(&mut args, "user")?;
            add(&mut args, stream_ids[next_stream].clone())?;
            add(&mut args, versions[next_stream])?;
            add(&mut args, "user.login.failed")?;
            add(&mut args, 1_i64)?;
            add(&mut args, Utc::now().timestamp_micros())?;
            add(&mut args, payload.clone())?;
            add(&mut args, metadata.clone())?;
            add(&mut args, hash_of(position - 1))?;
            add(&mut args, hash_of(position))?;
            next_stream = (next_stream + 1) % streams;
        }
        Ok((u64::try_from(batch)?, args))
    })
    .await
}

/// 32 bytes that look like a chain hash (they do not compress), here of the position.
fn hash_of(position: i64) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(position.to_be_bytes()).to_vec()
}

/// One row per transaction from one connection: how many commits per second the disk's
/// flush allows, the ceiling of any writer that waits for each commit alone.
async fn raw_single_row_commits(
    backend: Backend,
    window: Window,
    places: &Places,
) -> anyhow::Result<Counted> {
    let (scratch, db) = raw_database(backend, places).await?;
    let (stream_id, payload, metadata) = raw_row()?;
    let sql = "INSERT INTO bench_raw (id, stream_id, event_type, payload, metadata) \
               VALUES ($1, $2, $3, $4, $5)"
        .to_owned();
    let mut next_id: i64 = 0;
    raw_commits(db, scratch, sql, window, move || {
        next_id += 1;
        let mut args = AnyArguments::default();
        add(&mut args, next_id)?;
        add(&mut args, stream_id.clone())?;
        add(&mut args, "user.login.failed")?;
        add(&mut args, payload.clone())?;
        add(&mut args, metadata.clone())?;
        Ok((1, args))
    })
    .await
}

/// Runs `sql` from one connection, one transaction per statement, with the arguments `next`
/// makes for each (and the count of rows they are), until the window ends; then closes the
/// database and removes its scratch files.
async fn raw_commits(
    db: Database,
    scratch: crate::scratch::Scratch,
    sql: String,
    window: Window,
    next: impl FnMut() -> anyhow::Result<(u64, AnyArguments<'static>)> + Send + 'static,
) -> anyhow::Result<Counted> {
    // `drive` makes one operation per worker, and there is one worker here.
    let mut next = Some(next);
    let counted = drive(1, window, |_| {
        let (db, sql) = (db.clone(), sql.clone());
        let mut next = next.take();
        move || {
            let made = next
                .as_mut()
                .map(|next| next())
                .unwrap_or_else(|| Err(anyhow::anyhow!("a raw reference runs one worker")));
            let (db, sql) = (db.clone(), sql.clone());
            async move {
                let (rows, args) = made?;
                let mut tx = db.pool().begin().await?;
                sqlx::query_with(&sql, args).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(rows)
            }
        }
    })
    .await?;
    db.pool().close().await;
    scratch.remove().await?;
    Ok(counted)
}

/// Adds one argument; encoding an owned value cannot fail, but the API says it may.
fn add<T>(args: &mut AnyArguments<'static>, value: T) -> anyhow::Result<()>
where
    T: 'static + Send + sqlx::Encode<'static, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    args.add(value)
        .map_err(|e| anyhow::anyhow!("cannot bind an argument: {e}"))
}

/// `($1, $2), ($3, $4)` (or `(?, ?), (?, ?)`): `rows` tuples of `columns` placeholders.
fn placeholders(rows: usize, columns: usize, style: Placeholders) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (1..=columns)
                .map(|c| match style {
                    Placeholders::Anonymous => "?".to_owned(),
                    Placeholders::Numbered => format!("${}", row * columns + c),
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(
            placeholders(2, 2, Placeholders::Numbered),
            "($1, $2), ($3, $4)"
        );
        assert_eq!(
            placeholders(2, 2, Placeholders::Anonymous),
            "(?, ?), (?, ?)"
        );
    }

    #[test]
    fn the_warm_up_is_a_fifth_of_the_window_and_at_most_a_second() {
        assert_eq!(
            Window::new(Duration::from_secs(2)).warmup,
            Duration::from_millis(400)
        );
        assert_eq!(
            Window::new(Duration::from_secs(20)).warmup,
            Duration::from_secs(1)
        );
    }
}
