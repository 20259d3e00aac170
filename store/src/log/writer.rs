//! The single append writer of a node: group commit.
//!
//! Appends queue up on a channel; the writer takes every request waiting (up to a bound),
//! decides them together under the append lock and commits them in one transaction, so the
//! cost of a commit (an fsync) is shared by everyone who was waiting for it.
//!
//! Other nodes (or processes, on one SQLite file) may append to the same log, so a decision
//! rests on what the log held under the lock. The writer keeps what its last batch left
//! ([`Kept`]) and decides the next batch on it without reading, but commits that batch only if
//! no other writer has committed since; otherwise it reads the log and decides again.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Arc;

use chrono::Utc;
use futures_util::TryStreamExt as _;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection, Either, Executor as _};
use tokio::sync::{mpsc, oneshot, watch};

use super::plan::{self, Lookups, Plan, PreparedRequest, Snapshot};
use super::script::{self, Marks, Statement};
use super::{NOTIFY_CHANNEL, advance, sql};
use crate::codec::micros;
use crate::database::{Backend, Database};
use crate::error::{AppendError, StoreError};
use crate::model::{Appended, ChainHead, StreamId};

/// Bounds on one batch, so a burst cannot grow one transaction without limit. The event
/// bound is checked before taking each further request, so a batch may exceed it by one
/// request's events.
const MAX_BATCH_REQUESTS: usize = 512;
const MAX_BATCH_EVENTS: usize = 4096;
/// Streams whose versions a writer keeps, at most (~100 bytes each); past this it forgets them
/// all and learns them again from its next reads.
const MAX_KEPT_STREAMS: usize = 100_000;

pub(super) type Outcome = Result<Appended, AppendError>;

/// One queued append and where to send its outcome.
pub(super) struct Job {
    pub request: PreparedRequest,
    pub reply: oneshot::Sender<Outcome>,
}

/// What one batch came to.
#[derive(Debug)]
pub(super) struct Decided {
    /// One per request, in request order.
    pub outcomes: Vec<Outcome>,
    /// The highest position known committed after the batch, if the batch got that far.
    pub head: Option<u64>,
    /// Whether any event was written (and other nodes should hear about it).
    pub wrote_events: bool,
}

/// Runs until every `EventLog` handle is dropped and the queue is drained.
/// `announce` (PostgreSQL only) hands the last committed position to the notifier task, so the
/// writer never waits for other nodes to be told before it takes the next batch.
pub(super) async fn run(
    db: Database,
    mut jobs: mpsc::Receiver<Job>,
    head: Arc<watch::Sender<u64>>,
    announce: Option<watch::Sender<u64>>,
) {
    let mut writer = Writer::new(db);
    while let Some(first) = jobs.recv().await {
        let mut events = first.request.events.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_REQUESTS && events < MAX_BATCH_EVENTS {
            let Ok(job) = jobs.try_recv() else { break };
            events += job.request.events.len();
            batch.push(job);
        }
        let (requests, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|j| (j.request, j.reply)).unzip();
        let decided = writer.process(&requests).await;
        // Local followers first, so a caller that has its reply sees its own position in
        // `subscribe()`.
        if let Some(position) = decided.head {
            advance(&head, position);
        }
        for (reply, outcome) in replies.into_iter().zip(decided.outcomes) {
            // A requester that stopped waiting still had its append decided (and perhaps
            // committed); a retry with the same event ids finds it.
            let _ = reply.send(outcome);
        }
        // Other nodes last, and not by this task: the notification is a round trip that
        // neither a reply nor the next batch should wait for. The position is only handed
        // over after commit.
        if let Some(position) = decided.head
            && decided.wrote_events
            && let Some(announce) = &announce
        {
            announce.send_if_modified(|last| {
                let newer = position > *last;
                *last = (*last).max(position);
                newer
            });
        }
        // Let the requesters just answered run, and queue their next appends, before the next
        // batch is gathered: otherwise the next batch holds only the few that were quickest,
        // the rest wait for the one after, and every commit carries half as many events
        // (measured at 64 writers on PostgreSQL: 33 events a commit instead of 63, once the
        // NOTIFY round trip no longer gave them that time).
        tokio::task::yield_now().await;
    }
    tracing::debug!("event log writer stopped");
}

/// Tells other nodes (PostgreSQL `NOTIFY`) about committed positions. Positions committed
/// while a notification is on its way are coalesced into the next one: a follower only needs
/// the newest head. Stops after announcing the last position once the writer has stopped.
pub(super) async fn announce(db: Database, mut positions: watch::Receiver<u64>) {
    while positions.changed().await.is_ok() {
        let position = *positions.borrow_and_update();
        if let Err(e) = sql::notify(db.pool(), NOTIFY_CHANNEL, position).await {
            // Followers on other nodes catch up at their next wake-up or reconnect.
            tracing::warn!(error = %error_chain(&e), "could not notify other nodes");
        }
    }
}

/// The writer's own connection, kept from batch to batch: taking one from the pool for every
/// batch costs a health check (a round trip) each time, and a kept connection keeps its
/// prepared statements. After an error it is closed, and the next batch opens another.
pub(super) struct Writer {
    db: Database,
    conn: Option<PoolConnection<Any>>,
    kept: Option<Kept>,
    /// Batches committed on kept state, without a read.
    kept_commits: u64,
}

/// What the log held when this writer's last batch ended, so that the next batch can be
/// decided without reading it again: that read is about a third of a batch's time on
/// PostgreSQL and a thread hand-off on SQLite.
///
/// It is exact while no other writer has committed, and every commit counts itself in
/// `log_writer.batches` with the statement that takes the append lock. A batch decided on kept
/// state takes the lock with a statement that fails unless the count is still the one kept
/// ([`sql::kept_state_lock`]), before it writes anything; its event ids are assumed new, which
/// the log's unique index on event ids checks. If either fails, the batch is read for and
/// decided again, as every batch is when nothing is kept.
struct Kept {
    /// `log_writer.batches` as this writer's last batch left it.
    batches: i64,
    head: Option<ChainHead>,
    /// Versions of the streams recent batches looked up; 0 for a stream with no events.
    versions: HashMap<StreamId, u64>,
}

impl Kept {
    /// The snapshot to decide a batch on, if every stream it looks up is kept and it changes
    /// no claims (whose holders are not kept).
    fn snapshot(&self, lookups: &Lookups) -> Option<Snapshot> {
        if !lookups.claim_keys.is_empty() {
            return None;
        }
        let versions = lookups
            .streams
            .iter()
            .map(|stream| Some((stream.clone(), *self.versions.get(stream)?)))
            .collect::<Option<HashMap<_, _>>>()?;
        Some(Snapshot {
            head: self.head,
            versions,
            ..Snapshot::default()
        })
    }

    /// Takes in what a batch read, decided and left.
    fn learn(&mut self, lookups: &Lookups, plan: &Plan, batches: i64) {
        self.batches = batches;
        self.head = plan.head;
        if self.versions.len() + lookups.streams.len() > MAX_KEPT_STREAMS {
            self.versions.clear();
        }
        for stream in &lookups.streams {
            let version = plan.versions.get(stream).copied().unwrap_or(0);
            match self.versions.get_mut(stream) {
                Some(kept) => *kept = version,
                None => {
                    self.versions.insert(stream.clone(), version);
                }
            }
        }
    }
}

impl Writer {
    pub(super) fn new(db: Database) -> Self {
        Self {
            db,
            conn: None,
            kept: None,
            kept_commits: 0,
        }
    }

    /// Commits a batch. If the transaction fails, each request is tried again alone, so a
    /// request the database refuses (say, a NUL byte in a PostgreSQL text) fails only itself.
    /// Retrying is safe even when the failed commit's outcome is unknown: a request that did
    /// commit is found by its event ids and answered with its original positions.
    pub(super) async fn process(&mut self, requests: &[PreparedRequest]) -> Decided {
        let error = match self.commit(requests).await {
            Ok(decided) => return decided,
            Err(error) => error,
        };
        if requests.len() == 1 {
            tracing::warn!(error = %error_chain(&error), "append failed");
            return Decided {
                outcomes: vec![Err(error.into())],
                head: None,
                wrote_events: false,
            };
        }
        tracing::warn!(
            error = %error_chain(&error),
            requests = requests.len(),
            "batch failed; committing its requests one at a time"
        );
        let mut all = Decided {
            outcomes: Vec::with_capacity(requests.len()),
            head: None,
            wrote_events: false,
        };
        for request in requests {
            match self.commit(std::slice::from_ref(request)).await {
                Ok(one) => {
                    all.outcomes.extend(one.outcomes);
                    all.head = all.head.max(one.head);
                    all.wrote_events |= one.wrote_events;
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "append failed");
                    all.outcomes.push(Err(error.into()));
                }
            }
        }
        all
    }

    async fn commit(&mut self, requests: &[PreparedRequest]) -> Result<Decided, StoreError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.db.pool().acquire().await?,
        };
        let mut conn = Closing(Some(conn));
        let backend = self.db.backend();
        let lookups = plan::lookups(requests);
        if let Some((plan, batches)) = self.plan_on_kept(requests, &lookups) {
            let held = conn.held()?;
            match commit_kept(held, backend, &plan, batches).await {
                Ok(()) => {
                    if let Some(kept) = &mut self.kept {
                        kept.learn(&lookups, &plan, batches + 1);
                    }
                    self.kept_commits += 1;
                    self.conn = conn.0.take();
                    return Ok(decided(requests, plan));
                }
                Err(error) => {
                    tracing::debug!(
                        error = %error_chain(&error),
                        "batch decided on kept state not committed; reading the log"
                    );
                    self.kept = None;
                    if !abandon(held, backend).await {
                        conn = Closing(Some(self.db.pool().acquire().await?));
                    }
                }
            }
        }
        let held = conn.held()?;
        let read = match backend {
            Backend::Sqlite => commit_sqlite(held, requests, &lookups).await,
            Backend::Postgres => commit_postgres(held, requests, &lookups).await,
        };
        let (plan, batches_read) = match read {
            Ok(read) => read,
            Err(error) => {
                self.kept = None;
                return Err(error);
            }
        };
        // What was kept stays exact only if no other writer committed since this writer's
        // last batch: then the count read is that batch's plus this one's lock.
        let mut kept = match self.kept.take() {
            Some(kept) if kept.batches == batches_read - 1 => kept,
            _ => Kept {
                batches: 0,
                head: None,
                versions: HashMap::new(),
            },
        };
        // A batch that wrote nothing was rolled back, its lock's count with it.
        let left = if plan.writes_nothing() {
            batches_read - 1
        } else {
            batches_read
        };
        kept.learn(&lookups, &plan, left);
        self.kept = Some(kept);
        self.conn = conn.0.take();
        Ok(decided(requests, plan))
    }

    /// The batch decided on kept state, and the count kept, if there is kept state to decide
    /// it on and it accepts every request. A refusal is read for and decided again: the
    /// request may be a retry whose events kept state does not know, which is answered with
    /// its original positions, not refused for the stream having moved on.
    fn plan_on_kept(&self, requests: &[PreparedRequest], lookups: &Lookups) -> Option<(Plan, i64)> {
        let kept = self.kept.as_ref()?;
        let plan = plan::plan(requests, kept.snapshot(lookups)?);
        let accepted = plan.outcomes.iter().all(Result::is_ok) && !plan.writes_nothing();
        accepted.then_some((plan, kept.batches))
    }
}

/// Commits a batch decided on kept state, if no other writer has committed since: otherwise
/// the lock statement fails, before anything is written.
async fn commit_kept(
    conn: &mut AnyConnection,
    backend: Backend,
    plan: &Plan,
    batches: i64,
) -> Result<(), StoreError> {
    let marks = Marks::of(backend);
    let lock = sql::kept_state_lock(marks, batches);
    match backend {
        Backend::Sqlite => {
            let mut statements = vec![Statement::new("BEGIN IMMEDIATE"), lock];
            statements.extend(writes(marks, plan)?);
            statements.push(Statement::new("COMMIT"));
            let script = script::joined(&statements);
            let mut results = conn.fetch_many(script::query(&script));
            let mut finished = 0;
            while let Some(result) = results.try_next().await? {
                if let Either::Left(done) = result {
                    // The second statement is the lock's UPDATE.
                    if finished == 1 {
                        sql::check_append_lock(done.rows_affected())?;
                    }
                    finished += 1;
                }
            }
        }
        Backend::Postgres => {
            if plan.writes_only_events()
                && let Some(locked) = sql::insert_events_locked(&plan.events, batches)?
            {
                let inserted = script::kept_query(&locked)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if inserted != plan.events.len() as u64 {
                    // No lock row to join: nothing was inserted.
                    return Err(StoreError::Corrupt("the log_writer row is missing".into()));
                }
                return Ok(());
            }
            let mut tx = conn
                .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                .await?;
            let updated = script::kept_query(&lock)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sql::check_append_lock(updated)?;
            script::run(&mut tx, Backend::Postgres, &writes(marks, plan)?).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Ends what a batch that failed on kept state left open. `false` if the connection cannot be
/// trusted any more: it is then closed and another taken.
async fn abandon(conn: &mut AnyConnection, backend: Backend) -> bool {
    match backend {
        // The failed script left its transaction open, unless it failed at `BEGIN`.
        Backend::Sqlite => sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok(),
        // The transaction rolled back when it was dropped.
        Backend::Postgres => true,
    }
}

/// The writer's connection while a batch is in flight. Unless the batch finished, it is closed
/// instead of going back to the pool: after an error, or when the writer's future is dropped
/// mid-batch, it may be broken or hold an open transaction (on SQLite the transaction is not
/// sqlx's, which would roll back on drop).
struct Closing(Option<PoolConnection<Any>>);

impl Closing {
    fn held(&mut self) -> Result<&mut AnyConnection, StoreError> {
        match self.0.as_mut() {
            Some(conn) => Ok(&mut **conn),
            None => Err(StoreError::Corrupt("the writer lost its connection".into())),
        }
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            conn.close_on_drop();
        }
    }
}

/// On SQLite a batch is two scripts, each one hand-off to the connection's thread: the first
/// opens the transaction, takes the lock and reads the snapshot; the second writes and
/// commits (or rolls back). Only claims, and batches beyond one statement's chunk of streams
/// or event ids, read with statements of their own. A failure anywhere leaves the transaction
/// open, and [`Closing`] closes the connection, which rolls it back.
/// Returns the plan and the batch count read.
async fn commit_sqlite(
    conn: &mut AnyConnection,
    requests: &[PreparedRequest],
    lookups: &Lookups,
) -> Result<(Plan, i64), StoreError> {
    let read = sql::SnapshotRead::new(Marks::Anonymous, &lookups.streams, &lookups.event_ids);
    let opening = script::joined(&[
        // IMMEDIATE takes the write lock at BEGIN, waiting up to busy_timeout for another
        // process; a deferred transaction would fail with SQLITE_BUSY on its first write.
        Statement::new("BEGIN IMMEDIATE"),
        Statement::new(sql::APPEND_LOCK),
        read.statement.clone(),
    ]);
    let mut rows = Vec::new();
    {
        let mut results = conn.fetch_many(script::query(&opening));
        let mut finished = 0;
        while let Some(result) = results.try_next().await? {
            match result {
                Either::Left(done) => {
                    // The second statement is the lock's UPDATE.
                    if finished == 1 {
                        sql::check_append_lock(done.rows_affected())?;
                    }
                    finished += 1;
                }
                Either::Right(row) => rows.push(row),
            }
        }
        if finished != 3 {
            return Err(StoreError::Corrupt(format!(
                "the opening script ran {finished} statements of 3"
            )));
        }
    }
    let found = read.decode(&rows)?.complete(conn).await?;
    let batches = found.batches;
    let snapshot = Snapshot {
        head: found.head,
        versions: found.versions,
        stored: found.stored,
        claims: sql::claims(conn, &lookups.claim_keys).await?,
    };
    let plan = plan::plan(requests, snapshot);
    let closing = if plan.writes_nothing() {
        // Every request was refused or replayed: nothing to make durable.
        vec![Statement::new("ROLLBACK")]
    } else {
        let mut statements = writes(Marks::Anonymous, &plan)?;
        statements.push(Statement::new("COMMIT"));
        statements
    };
    script::run(conn, Backend::Sqlite, &closing).await?;
    Ok((plan, batches))
}

/// Returns the plan and the batch count read.
async fn commit_postgres(
    conn: &mut AnyConnection,
    requests: &[PreparedRequest],
    lookups: &Lookups,
) -> Result<(Plan, i64), StoreError> {
    // The design needs READ COMMITTED whatever the server's default: after waiting for the
    // append lock, each statement must see what the previous holder committed.
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await?;
    sql::take_append_lock(&mut tx).await?;
    let found = sql::snapshot(&mut tx, &lookups.streams, &lookups.event_ids).await?;
    let batches = found.batches;
    let snapshot = Snapshot {
        head: found.head,
        versions: found.versions,
        stored: found.stored,
        claims: sql::claims(&mut tx, &lookups.claim_keys).await?,
    };
    let plan = plan::plan(requests, snapshot);
    if plan.writes_nothing() {
        // Every request was refused or replayed: nothing to make durable.
        tx.rollback().await?;
    } else {
        script::run(&mut tx, Backend::Postgres, &writes(Marks::Numbered, &plan)?).await?;
        tx.commit().await?;
    }
    Ok((plan, batches))
}

/// Everything a plan writes: events, claims, secrets and sessions.
fn writes(marks: Marks, plan: &Plan) -> Result<Vec<Statement<'_>>, StoreError> {
    let mut statements = sql::insert_events(marks, &plan.events)?;
    statements.extend(sql::write_claims(marks, &plan.claims));
    statements.extend(sql::write_secrets(marks, &plan.secrets, micros(Utc::now())));
    statements.extend(
        plan.sessions
            .iter()
            .map(|change| crate::sessions::write(marks, change)),
    );
    Ok(statements)
}

fn decided(requests: &[PreparedRequest], plan: Plan) -> Decided {
    tracing::debug!(
        requests = requests.len(),
        events = plan.events.len(),
        head = plan.head.map(|h| h.position),
        "append batch decided"
    );
    Decided {
        head: Some(plan.head.map_or(0, |h| h.position)),
        wrote_events: !plan.events.is_empty(),
        outcomes: plan.outcomes,
    }
}

/// `Display` of an error and its sources, since our errors show only their own level.
pub(super) fn error_chain(error: &StoreError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppendRequest, EventMetadata, ExpectedVersion, NewEvent, StreamId};
    use crate::testing::{fresh_postgres_url, fresh_sqlite_url};
    use serde_json::json;
    use uuid::Uuid;

    fn request(
        stream: &str,
        expected: ExpectedVersion,
        payload: serde_json::Value,
    ) -> PreparedRequest {
        PreparedRequest::prepare(AppendRequest {
            stream: StreamId::new("test", stream),
            expected,
            events: vec![NewEvent {
                event_id: Uuid::now_v7(),
                tenant_id: Uuid::now_v7(),
                event_type: "test.happened".into(),
                schema_version: 1,
                recorded_at: Utc::now(),
                payload,
                metadata: EventMetadata::system(),
            }],
            claims: vec![],
            secrets: vec![],
            sessions: Vec::new(),
            decided_on: Vec::new(),
        })
        .unwrap()
    }

    async fn one_batch_decides_each_request_on_its_own(url: String) {
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let duplicate = request("b", ExpectedVersion::NoStream, json!({"b": 1}));
        let batch = [
            request("a", ExpectedVersion::NoStream, json!({"a": 1})),
            request("a", ExpectedVersion::NoStream, json!({"a": 2})),
            duplicate.clone(),
            duplicate,
            request("c", ExpectedVersion::Exact(3), json!({})),
        ];
        let decided = Writer::new(db.clone()).process(&batch).await;
        assert_eq!(decided.head, Some(2));
        assert!(decided.wrote_events);
        let o = &decided.outcomes;
        assert_eq!(o[0].as_ref().unwrap().first_position, 1);
        assert!(matches!(
            o[1],
            Err(AppendError::WrongExpectedVersion { actual: 1, .. })
        ));
        assert_eq!(o[2].as_ref().unwrap().first_position, 2);
        assert_eq!(o[3].as_ref().unwrap().first_position, 2);
        assert!(matches!(
            o[4],
            Err(AppendError::WrongExpectedVersion { actual: 0, .. })
        ));
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(count, 2);
    }

    /// PostgreSQL refuses a NUL byte in text; SQLite stores it. Either way the other requests
    /// of the batch must not share the poisoned request's fate.
    async fn a_request_the_database_refuses_fails_alone(url: String) {
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let batch = [
            request("a", ExpectedVersion::NoStream, json!({})),
            request("nul\0byte", ExpectedVersion::NoStream, json!({})),
            request("c", ExpectedVersion::NoStream, json!({})),
        ];
        let decided = Writer::new(db.clone()).process(&batch).await;
        let o = &decided.outcomes;
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].as_ref().unwrap().first_position, 1);
        match db.backend() {
            Backend::Postgres => {
                assert!(matches!(
                    o[1],
                    Err(AppendError::Store(StoreError::Database(_)))
                ));
                assert_eq!(o[2].as_ref().unwrap().first_position, 2);
                assert_eq!(decided.head, Some(2));
            }
            Backend::Sqlite => {
                assert_eq!(o[1].as_ref().unwrap().first_position, 2);
                assert_eq!(o[2].as_ref().unwrap().first_position, 3);
                assert_eq!(decided.head, Some(3));
            }
        }
    }

    async fn a_batch_of_refusals_commits_nothing(url: String) {
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let decided = Writer::new(db.clone())
            .process(&[request("a", ExpectedVersion::Exact(5), json!({}))])
            .await;
        assert!(!decided.wrote_events);
        assert_eq!(decided.head, Some(0));
        let (batches,): (i64,) = sqlx::query_as("SELECT batches FROM log_writer WHERE id = 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(batches, 0, "the rolled-back batch left no trace");
    }

    /// On SQLite the batch's writes run as one script inside a transaction that is not sqlx's:
    /// a statement that fails halfway must leave nothing of the batch behind, and must not
    /// leave the transaction open on a connection someone else gets next.
    #[tokio::test]
    async fn a_sqlite_batch_that_fails_halfway_through_its_writes_leaves_nothing() {
        let db = Database::connect(&fresh_sqlite_url()).await.unwrap();
        db.migrate().await.unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.stream_id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(db.pool())
        .await
        .unwrap();
        let mut writer = Writer::new(db.clone());
        let batch = [
            request("a", ExpectedVersion::NoStream, json!({})),
            request("poison", ExpectedVersion::NoStream, json!({})),
            request("c", ExpectedVersion::NoStream, json!({})),
        ];
        let decided = writer.process(&batch).await;
        let o = &decided.outcomes;
        assert_eq!(o[0].as_ref().unwrap().first_position, 1);
        assert!(matches!(
            o[1],
            Err(AppendError::Store(StoreError::Database(_)))
        ));
        assert_eq!(o[2].as_ref().unwrap().first_position, 2);
        let (count, batches): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT batches FROM log_writer WHERE id = 1)",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        // Two events, from the two single-request batches that committed after the failed
        // batch and the failed single request were rolled back.
        assert_eq!((count, batches), (2, 2));
        // Every pooled connection can start a write transaction: none holds one open.
        let mut conns = Vec::new();
        for _ in 0..3 {
            let mut conn = db.pool().acquire().await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
            conns.push(conn);
        }
        let next = writer
            .process(&[request("d", ExpectedVersion::NoStream, json!({}))])
            .await;
        assert_eq!(next.outcomes[0].as_ref().unwrap().first_position, 3);
    }

    /// The events' chain links, checked: each event's `prev_hash` is the hash before it.
    async fn chain_links(db: &Database) -> usize {
        let rows: Vec<(i64, Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT position, prev_hash, hash FROM events ORDER BY position")
                .fetch_all(db.pool())
                .await
                .unwrap();
        for pair in rows.windows(2) {
            assert_eq!(pair[1].1, pair[0].2, "event {} does not link", pair[1].0);
        }
        rows.len()
    }

    async fn a_batch_is_decided_on_kept_state_once_the_writer_has_read(url: String) {
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let mut writer = Writer::new(db.clone());
        writer
            .process(&[request("a", ExpectedVersion::NoStream, json!({}))])
            .await;
        assert_eq!(
            writer.kept_commits, 0,
            "nothing was kept before the first read"
        );
        let second = writer
            .process(&[request("a", ExpectedVersion::Exact(1), json!({}))])
            .await;
        assert_eq!(writer.kept_commits, 1);
        assert_eq!(second.outcomes[0].as_ref().unwrap().first_position, 2);
        // A stream written by no batch of this writer yet must be read for.
        writer
            .process(&[request("b", ExpectedVersion::NoStream, json!({}))])
            .await;
        assert_eq!(writer.kept_commits, 1);
        let third = writer
            .process(&[
                request("a", ExpectedVersion::Exact(2), json!({})),
                request("b", ExpectedVersion::Exact(1), json!({})),
            ])
            .await;
        assert_eq!(writer.kept_commits, 2);
        assert_eq!(third.outcomes[1].as_ref().unwrap().first_position, 5);
        // A refusal is never decided on kept state alone.
        let refused = writer
            .process(&[request("a", ExpectedVersion::Exact(1), json!({}))])
            .await;
        assert!(matches!(
            refused.outcomes[0],
            Err(AppendError::WrongExpectedVersion { actual: 3, .. })
        ));
        assert_eq!(writer.kept_commits, 2);
        assert_eq!(chain_links(&db).await, 5);
        let (batches,): (i64,) = sqlx::query_as("SELECT batches FROM log_writer WHERE id = 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            batches, 4,
            "a batch on kept state is counted like any other"
        );
    }

    /// Two writers on one log, as two nodes on one database: what one commits, the other
    /// decides on at its next batch, even a batch that writes no event (whose positions
    /// could not collide with the other's).
    async fn another_writers_commit_is_seen_before_the_next_decision(url: String) {
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let mut this = Writer::new(db.clone());
        let mut other = Writer::new(db.clone());
        this.process(&[request("a", ExpectedVersion::NoStream, json!({}))])
            .await;
        this.process(&[request("a", ExpectedVersion::Exact(1), json!({}))])
            .await;
        assert_eq!(this.kept_commits, 1);
        let theirs = other
            .process(&[request("a", ExpectedVersion::Exact(2), json!({}))])
            .await;
        assert_eq!(theirs.outcomes[0].as_ref().unwrap().first_position, 3);

        let mut secret_only = request("a", ExpectedVersion::Exact(2), json!({}));
        secret_only.events.clear();
        secret_only.secrets.push(crate::model::SecretWrite {
            kind: "password".into(),
            value: Some("hash".into()),
        });
        let stale = this.process(&[secret_only]).await;
        assert!(
            matches!(
                stale.outcomes[0],
                Err(AppendError::WrongExpectedVersion { actual: 3, .. })
            ),
            "{:?}",
            stale.outcomes[0]
        );
        let (secrets,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM secrets")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(secrets, 0, "the refused request wrote its secret");

        let next = this
            .process(&[request("a", ExpectedVersion::Exact(3), json!({}))])
            .await;
        assert_eq!(next.outcomes[0].as_ref().unwrap().first_position, 4);
        assert_eq!(chain_links(&db).await, 4);

        // A commit without events moves no position a batch could collide on; the count
        // alone shows it.
        let mut their_secret = request("b", ExpectedVersion::Any, json!({}));
        their_secret.events.clear();
        their_secret.secrets.push(crate::model::SecretWrite {
            kind: "password".into(),
            value: Some("hash".into()),
        });
        other.process(&[their_secret]).await;
        let kept_before = this.kept_commits;
        let after = this
            .process(&[request("a", ExpectedVersion::Exact(4), json!({}))])
            .await;
        assert_eq!(after.outcomes[0].as_ref().unwrap().first_position, 5);
        assert_eq!(
            this.kept_commits, kept_before,
            "committed on kept state after another writer's commit"
        );
    }

    /// A retry's event ids are already in the log, which kept state does not know. A retry
    /// whose version check passes on kept state is stopped by the unique index on event ids;
    /// one whose check fails is a refusal, read for. Either is answered as a retry.
    async fn a_retry_on_kept_state_gets_its_original_positions(url: String) {
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let mut writer = Writer::new(db.clone());
        let any_version = request("a", ExpectedVersion::Any, json!({"n": 1}));
        let no_stream = request("b", ExpectedVersion::NoStream, json!({"n": 2}));
        writer
            .process(&[any_version.clone(), no_stream.clone()])
            .await;
        writer
            .process(&[request("a", ExpectedVersion::Exact(1), json!({}))])
            .await;
        assert_eq!(writer.kept_commits, 1);
        for retry in [no_stream, any_version] {
            let retried = writer
                .process(&[retry, request("a", ExpectedVersion::Any, json!({}))])
                .await;
            assert_eq!(
                writer.kept_commits, 1,
                "a batch on kept state committed a retry"
            );
            let o = &retried.outcomes;
            assert!(o[0].as_ref().unwrap().first_position <= 2, "{:?}", o[0]);
            assert!(o[1].is_ok());
        }
        assert_eq!(chain_links(&db).await, 5);
        let after = writer
            .process(&[request("a", ExpectedVersion::Exact(4), json!({}))])
            .await;
        assert_eq!(after.outcomes[0].as_ref().unwrap().first_position, 6);
        assert_eq!(writer.kept_commits, 2, "state is kept again");
    }

    macro_rules! on_both_backends {
        ($($case:ident),* $(,)?) => {
            mod sqlite {
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::$case(super::fresh_sqlite_url()).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test]
                    async fn $case() {
                        super::$case(super::fresh_postgres_url().await).await;
                    }
                )*
            }
        };
    }

    on_both_backends!(
        one_batch_decides_each_request_on_its_own,
        a_request_the_database_refuses_fails_alone,
        a_batch_of_refusals_commits_nothing,
        a_batch_is_decided_on_kept_state_once_the_writer_has_read,
        another_writers_commit_is_seen_before_the_next_decision,
        a_retry_on_kept_state_gets_its_original_positions,
    );
}
