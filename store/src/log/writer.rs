//! The single append writer of a node: group commit.
//!
//! Appends queue up on a channel; the writer takes every request waiting (up to a bound),
//! decides them together under the append lock and commits them in one transaction, so the
//! cost of a commit (an fsync) is shared by everyone who was waiting for it. It caches
//! nothing between batches: other nodes may append to the same PostgreSQL database, so
//! everything a decision needs is re-read under the lock.

use std::error::Error as _;
use std::sync::Arc;

use chrono::Utc;
use futures_util::TryStreamExt as _;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection, Either, Executor as _};
use tokio::sync::{mpsc, oneshot, watch};

use super::plan::{self, Plan, PreparedRequest, Snapshot};
use super::script::{self, Marks, Statement};
use super::{NOTIFY_CHANNEL, advance, sql};
use crate::codec::micros;
use crate::database::{Backend, Database};
use crate::error::{AppendError, StoreError};
use crate::model::Appended;

/// Bounds on one batch, so a burst cannot grow one transaction without limit. The event
/// bound is checked before taking each further request, so a batch may exceed it by one
/// request's events.
const MAX_BATCH_REQUESTS: usize = 512;
const MAX_BATCH_EVENTS: usize = 4096;

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
}

impl Writer {
    pub(super) fn new(db: Database) -> Self {
        Self { db, conn: None }
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
        let Some(held) = conn.0.as_mut() else {
            return Err(StoreError::Corrupt("the writer lost its connection".into()));
        };
        let decided = match self.db.backend() {
            Backend::Sqlite => commit_sqlite(held, requests).await?,
            Backend::Postgres => commit_postgres(held, requests).await?,
        };
        self.conn = conn.0.take();
        Ok(decided)
    }
}

/// The writer's connection while a batch is in flight. Unless the batch finished, it is closed
/// instead of going back to the pool: after an error, or when the writer's future is dropped
/// mid-batch, it may be broken or hold an open transaction (on SQLite the transaction is not
/// sqlx's, which would roll back on drop).
struct Closing(Option<PoolConnection<Any>>);

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
async fn commit_sqlite(
    conn: &mut AnyConnection,
    requests: &[PreparedRequest],
) -> Result<Decided, StoreError> {
    let lookups = plan::lookups(requests);
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
    let (head, versions, stored) = read.decode(&rows)?.complete(conn).await?;
    let snapshot = Snapshot {
        head,
        versions,
        stored,
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
    Ok(decided(requests, plan))
}

async fn commit_postgres(
    conn: &mut AnyConnection,
    requests: &[PreparedRequest],
) -> Result<Decided, StoreError> {
    // The design needs READ COMMITTED whatever the server's default: after waiting for the
    // append lock, each statement must see what the previous holder committed.
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await?;
    sql::take_append_lock(&mut tx).await?;
    let lookups = plan::lookups(requests);
    let (head, versions, stored) =
        sql::snapshot(&mut tx, &lookups.streams, &lookups.event_ids).await?;
    let snapshot = Snapshot {
        head,
        versions,
        stored,
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
    Ok(decided(requests, plan))
}

/// Everything a plan writes: events, claims, secrets and sessions.
fn writes(marks: Marks, plan: &Plan) -> Result<Vec<Statement<'_>>, StoreError> {
    let mut statements = sql::insert_events(marks, &plan.events)?;
    statements.extend(sql::write_claims(marks, &plan.claims));
    statements.extend(sql::write_secrets(marks, &plan.secrets, micros(Utc::now())));
    statements.extend(
        plan.sessions
            .iter()
            .map(|session| crate::sessions::insert(marks, session)),
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
    );
}
