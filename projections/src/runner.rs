//! Follows the log from each projection's durable checkpoint.
//!
//! Views are replayable and idempotent: they can be rebuilt from zero. Nothing here has side
//! effects outside the database (webhook delivery, which does, follows the log separately and
//! is never run by a replay).

use std::future::Future;
use std::time::Duration;

use keyledger_store::{EventLog, RecordedEvent};
use sqlx::{AnyConnection, Connection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::progress::ViewProgress;
use crate::views::{ApplicationsView, AuditView, MfaView, UsersView};
use crate::webhooks::view::SubscriptionsView;

/// Events folded per transaction.
const BATCH: u32 = 1000;
/// A follower that missed a wake-up (another node's append with no notification) still
/// catches up within this.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

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
    if !checkpoint::advance(&mut tx, projection.name(), from, last).await? {
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

/// Starts one follower task per view. They stop when `shutdown` turns true.
pub fn spawn_all(
    log: EventLog,
    progress: ViewProgress,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(follow(
            UsersView,
            log.clone(),
            progress.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(follow(
            AuditView,
            log.clone(),
            progress.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(follow(
            MfaView,
            log.clone(),
            progress.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(follow(
            SubscriptionsView,
            log.clone(),
            progress.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(follow(ApplicationsView, log, progress, shutdown)),
    ]
}

async fn follow<P: Projection>(
    projection: P,
    log: EventLog,
    progress: ViewProgress,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut appended = log.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match step(&projection, &log).await {
            Ok(Step::Advanced(position)) => {
                progress.set(projection.name(), position);
                continue;
            }
            Ok(Step::Raced) => continue,
            Ok(Step::Idle(position)) => progress.set(projection.name(), position),
            Err(error) => {
                tracing::warn!(projection = projection.name(), %error, "view update failed, retrying");
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
    }
}
