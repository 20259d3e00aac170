//! Follows the log from each projection's durable checkpoint.
//!
//! Views are replayable and idempotent: they can be rebuilt from zero. Nothing here has side
//! effects outside the database (webhook delivery, which does, follows the log separately and
//! is never run by a replay).

use std::future::Future;
use std::time::Duration;

use keyledger_store::{EventFilter, EventLog, RecordedEvent};
use sqlx::{AnyConnection, Connection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::progress::ViewProgress;
use crate::view::View;
use crate::views::{ApplicationsView, AuditView, MfaView, UsersView};
use crate::webhooks::view::SubscriptionsView;

/// Events folded per transaction.
const BATCH: u32 = 1000;
/// A follower that missed a wake-up (another node's append with no notification) still
/// catches up within this.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a woken follower lets further appends gather before it folds, when no reader is
/// waiting for the views: the most a view lags behind the log on a busy server.
const GATHER: Duration = Duration::from_millis(50);

/// A view: its tables and how an event changes them.
pub trait Projection: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Creates the view's tables and indexes if missing.
    fn migrate(
        &self,
        conn: &mut AnyConnection,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
    /// Deletes every row of the view (for a rebuild).
    fn clear(
        &self,
        conn: &mut AnyConnection,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
    /// The view's tables, which a rebuild writes fresh and swaps in together. A projection
    /// that lists none is rebuilt in place (emptied, then folded again).
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
    /// The events the view folds. `apply` must ignore every other event: a rebuild of the
    /// view alone reads only these (and a shared read may still pass it the others).
    fn folds(&self) -> EventFilter {
        EventFilter::All
    }
    /// Folds a batch of events, in log order, into the view inside the runner's transaction.
    /// A batch (rather than one event at a time) lets a view write each row once.
    fn apply(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// What one step of a runner did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Folded events up to this position.
    Advanced(u64),
    /// Nothing new after this position.
    Idle(u64),
    /// Another runner moved the checkpoint first; nothing was written.
    Raced,
}

/// Creates the checkpoint table and every view's tables.
pub async fn migrate_all(log: &EventLog) -> Result<(), ProjectionError> {
    let mut conn = log.database().pool().acquire().await?;
    checkpoint::migrate(&mut conn).await?;
    migrate_one(&UsersView, &mut conn).await?;
    migrate_one(&AuditView, &mut conn).await?;
    migrate_one(&MfaView, &mut conn).await?;
    migrate_one(&SubscriptionsView, &mut conn).await?;
    migrate_one(&ApplicationsView, &mut conn).await?;
    crate::webhooks::state::migrate(&mut conn).await
}

async fn migrate_one<P: Projection>(
    projection: &P,
    conn: &mut AnyConnection,
) -> Result<(), ProjectionError> {
    projection.migrate(conn).await?;
    checkpoint::ensure(conn, projection.name()).await
}

/// Folds the next batch of events into `projection`: the view rows and the checkpoint commit
/// together or not at all.
pub async fn step<P: Projection>(projection: &P, log: &EventLog) -> Result<Step, ProjectionError> {
    let mut conn = log.database().pool().acquire().await?;
    let from = checkpoint::read(&mut conn, projection.name()).await?;
    let events = log.read_all_revealed(from, BATCH).await?;
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(Step::Idle(from));
    };
    let mut tx = conn.begin().await?;
    // The checkpoint write comes first: on SQLite it takes the write lock before any read.
    if !checkpoint::advance(&mut tx, &[(projection.name(), from)], last).await? {
        tx.rollback().await?;
        return Ok(Step::Raced);
    }
    projection.apply(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(Step::Advanced(last))
}

/// Folds everything up to the log's current head.
pub async fn catch_up<P: Projection>(
    projection: &P,
    log: &EventLog,
    mut progress: impl FnMut(u64),
) -> Result<u64, ProjectionError> {
    loop {
        match step(projection, log).await? {
            Step::Advanced(position) => progress(position),
            Step::Idle(position) => return Ok(position),
            Step::Raced => {}
        }
    }
}

/// What one step of the shared follower did, view by view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedStep {
    /// Every view's position after the step (folded, or already there); `more` when the
    /// batch was full, so more events may be waiting.
    Reached {
        positions: Vec<(&'static str, u64)>,
        more: bool,
    },
    /// Nothing new: every view's position.
    Idle(Vec<(&'static str, u64)>),
    /// Another runner moved a checkpoint first; nothing was written.
    Raced,
}

/// Folds the next batch of events into every view in `views` in one transaction: the log is
/// read (and personal fields revealed) once, and one commit covers every view and checkpoint.
/// Views whose checkpoints differ (one rebuilt since) each fold only what is after their own.
///
/// `known` are the positions the previous step left, if the caller kept them; they save
/// reading the checkpoints, and a stale one only makes the step report [`SharedStep::Raced`].
/// `conn` is the follower's own; views may use [`Database::derived_state_connection`].
///
/// [`Database::derived_state_connection`]: keyledger_store::Database::derived_state_connection
pub async fn step_together(
    views: &[View],
    log: &EventLog,
    conn: &mut AnyConnection,
    known: Option<&[(&'static str, u64)]>,
) -> Result<SharedStep, ProjectionError> {
    let positions: Vec<(&'static str, u64)> = match known {
        Some(known) => known.to_vec(),
        None => {
            let checkpoints = checkpoint::read_all(&mut *conn).await?;
            views
                .iter()
                .map(|v| (v.name(), checkpoints.get(v.name()).copied().unwrap_or(0)))
                .collect()
        }
    };
    let from = positions.iter().map(|(_, p)| *p).min().unwrap_or(0);
    let events = log.read_all_revealed(from, BATCH).await?;
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(SharedStep::Idle(positions));
    };
    let mut tx = conn.begin().await?;
    // Every checkpoint write comes before any fold: on SQLite the first takes the write lock
    // before any read. Views at the same position (the usual case) move in one statement.
    let behind: Vec<(&'static str, u64)> = positions
        .iter()
        .copied()
        .filter(|(_, at)| *at < last)
        .collect();
    if !checkpoint::advance(&mut tx, &behind, last).await? {
        tx.rollback().await?;
        return Ok(SharedStep::Raced);
    }
    for (view, (_, at)) in views.iter().zip(&positions) {
        if *at < last {
            let first = events.partition_point(|e| e.position <= *at);
            view.apply(&mut tx, &events[first..]).await?;
        }
    }
    tx.commit().await?;
    Ok(SharedStep::Reached {
        positions: positions
            .iter()
            .map(|(name, at)| (*name, (*at).max(last)))
            .collect(),
        more: events.len() >= BATCH as usize,
    })
}

/// Starts the follower that keeps every view up to date. It stops when `shutdown` turns true.
pub fn spawn_all(
    log: EventLog,
    progress: ViewProgress,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    vec![tokio::spawn(follow(View::all(), log, progress, shutdown))]
}

/// One follower for all views: a batch is read once and committed once for all of them, which
/// on a busy server is one log read and one commit per batch instead of one per view. When the
/// shared step fails (a view cannot fold an event), each view steps on its own, so one broken
/// view does not hold the others back.
///
/// The follower commits on a connection of its own that does not wait for the disk
/// ([`Database::derived_state_connection`]): views are rebuilt from the log, and each commit
/// carries its checkpoint, so a crash costs only a refold of the last few batches. An fsync
/// for every fold was ~2.5 % of the server's CPU at full login load.
///
/// [`Database::derived_state_connection`]: keyledger_store::Database::derived_state_connection
async fn follow(
    views: Vec<View>,
    log: EventLog,
    progress: ViewProgress,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut appended = log.subscribe();
    let mut known: Option<Vec<(&'static str, u64)>> = None;
    let mut own: Option<AnyConnection> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let shared = match own.as_mut() {
            Some(conn) => step_together(&views, &log, conn, known.as_deref()).await,
            None => match log.database().derived_state_connection().await {
                Ok(conn) => step_together(&views, &log, own.insert(conn), known.as_deref()).await,
                Err(error) => Err(error.into()),
            },
        };
        match shared {
            Ok(SharedStep::Reached { positions, more }) => {
                report(&progress, &positions);
                known = Some(positions);
                // After a short batch the log had nothing more when it was read; an append
                // since then has already marked `appended` changed, so waiting misses nothing.
                if more {
                    continue;
                }
            }
            Ok(SharedStep::Raced) => {
                known = None;
                continue;
            }
            Ok(SharedStep::Idle(positions)) => {
                report(&progress, &positions);
                known = Some(positions);
            }
            Err(error) => {
                known = None;
                // It may be broken or mid-transaction; the next step opens another.
                own = None;
                tracing::warn!(%error, "shared view update failed, updating the views one by one");
                step_each(&views, &log, &progress).await;
            }
        }
        tokio::select! {
            changed = appended.changed() => {
                if changed.is_err() {
                    // The log is closing; fall back to polling until shutdown arrives.
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
        // Let the appends of the next few milliseconds join this batch, unless a reader is
        // waiting for it: on a busy server that is one fold and one commit for many commands.
        tokio::select! {
            _ = tokio::time::sleep(GATHER) => {}
            _ = progress.wanted() => {}
            _ = shutdown.changed() => {}
        }
    }
}

fn report(progress: &ViewProgress, positions: &[(&'static str, u64)]) {
    for (name, position) in positions {
        progress.set(name, *position);
    }
}

/// Steps every view on its own until each is idle or fails.
async fn step_each(views: &[View], log: &EventLog, progress: &ViewProgress) {
    for view in views {
        loop {
            match step(view, log).await {
                Ok(Step::Advanced(position)) => progress.set(view.name(), position),
                Ok(Step::Raced) => {}
                Ok(Step::Idle(position)) => {
                    progress.set(view.name(), position);
                    break;
                }
                Err(error) => {
                    tracing::warn!(projection = view.name(), %error, "view update failed, retrying");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a panic is the failure report.
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;
    use keyledger_store::testing::fresh_sqlite_url;
    use keyledger_store::{
        AppendRequest, Database, EventMetadata, ExpectedVersion, NewEvent, StreamId,
    };
    use sqlx::Row;
    use uuid::Uuid;

    use super::*;

    async fn log_with_views() -> EventLog {
        let db = Database::connect(&fresh_sqlite_url()).await.unwrap();
        let log = EventLog::open(db).await.unwrap();
        migrate_all(&log).await.unwrap();
        log
    }

    async fn append(log: &EventLog, count: usize) {
        let events = (0..count)
            .map(|n| NewEvent {
                event_id: Uuid::now_v7(),
                tenant_id: Uuid::now_v7(),
                event_type: "thing.happened".into(),
                schema_version: 1,
                recorded_at: Utc::now(),
                payload: serde_json::json!({ "n": n }),
                metadata: EventMetadata::system(),
            })
            .collect();
        log.append(AppendRequest {
            stream: StreamId::new("thing", Uuid::now_v7().to_string()),
            expected: ExpectedVersion::Any,
            events,
            claims: Vec::new(),
            secrets: Vec::new(),
            sessions: Vec::new(),
            decided_on: Vec::new(),
        })
        .await
        .unwrap();
    }

    async fn audit_rows(log: &EventLog) -> i64 {
        sqlx::query("SELECT COUNT(*) FROM audit_view")
            .fetch_one(log.database().pool())
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn views_at_different_positions_each_fold_only_what_is_after_their_own() {
        let log = log_with_views().await;
        append(&log, 3).await;
        // The audit view alone folds the first three events (as after its own rebuild).
        assert_eq!(step(&AuditView, &log).await.unwrap(), Step::Advanced(3));
        append(&log, 2).await;
        let views = View::all();
        let mut own = log.database().derived_state_connection().await.unwrap();
        let SharedStep::Reached { positions, more } =
            step_together(&views, &log, &mut own, None).await.unwrap()
        else {
            panic!("the shared step folded nothing");
        };
        assert!(!more);
        assert!(positions.iter().all(|(_, at)| *at == 5), "{positions:?}");
        assert_eq!(audit_rows(&log).await, 5, "no event is folded twice");
        let mut conn = log.database().pool().acquire().await.unwrap();
        let checkpoints = checkpoint::read_all(&mut conn).await.unwrap();
        assert!(
            crate::PROJECTIONS
                .iter()
                .all(|name| checkpoints.get(*name) == Some(&5)),
            "{checkpoints:?}"
        );
        assert_eq!(
            step_together(&views, &log, &mut own, Some(&positions))
                .await
                .unwrap(),
            SharedStep::Idle(positions)
        );
    }

    #[tokio::test]
    async fn positions_kept_from_an_earlier_step_that_went_stale_fold_nothing() {
        let log = log_with_views().await;
        append(&log, 2).await;
        let views = View::all();
        let mut own = log.database().derived_state_connection().await.unwrap();
        let stale: Vec<_> = views.iter().map(|v| (v.name(), 0)).collect();
        step_together(&views, &log, &mut own, None).await.unwrap();
        append(&log, 1).await;
        assert_eq!(
            step_together(&views, &log, &mut own, Some(&stale))
                .await
                .unwrap(),
            SharedStep::Raced
        );
        assert_eq!(audit_rows(&log).await, 2);
        assert!(matches!(
            step_together(&views, &log, &mut own, None).await.unwrap(),
            SharedStep::Reached { .. }
        ));
        assert_eq!(audit_rows(&log).await, 3);
    }
}
