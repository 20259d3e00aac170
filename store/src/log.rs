//! The event log: one global, gap-free sequence of hash-chained events.
//!
//! Layout: `plan` decides a batch of appends in memory (versions, idempotency, claims,
//! positions, hashes); `writer` is the group-commit task that reads what a batch needs under
//! the append lock, plans and commits it; `sql` holds the queries, and `script` runs several
//! statements in one call where the backend allows it; `listen` hears about
//! appends by other nodes on PostgreSQL.
//!
//! **Invariant:** a position becomes visible only after every smaller position is visible.
//! Every append transaction takes the same lock as its first statement and holds it until
//! commit, so commits happen in position order on every node, and a follower that has read up
//! to position P can never later find an event below P (see
//! `docs/adr/0001-gap-free-global-position.md`).

mod listen;
mod plan;
pub(crate) mod script;
mod sql;
mod subjects;
mod writer;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::database::{Backend, Database};
use crate::error::{AppendError, StoreError};
use crate::model::{
    AppendRequest, Appended, ChainHead, ClaimKey, EventFilter, RecordedEvent, StreamId,
};
use crate::personal::{self, KeyState};
use plan::PreparedRequest;
use writer::Job;

/// The PostgreSQL channel on which a node announces the last position it committed.
const NOTIFY_CHANNEL: &str = "keyledger_log";

/// Appends waiting for the writer before `append` itself waits (backpressure).
const QUEUE: usize = 1024;

/// A handle to the log. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    jobs: mpsc::Sender<Job>,
    head: Arc<watch::Sender<u64>>,
    listener: Option<AbortHandle>,
    sealer: subjects::Sealer,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl EventLog {
    /// Migrates the schema and starts the writer (and, on PostgreSQL, the listener for other
    /// nodes' appends). Must be called inside a Tokio runtime.
    pub async fn open(db: Database) -> Result<EventLog, StoreError> {
        db.refuse_unsafe_durability().await?;
        db.migrate().await?;
        let listener = match db.backend() {
            Backend::Postgres => Some(listen::listen(&db).await?),
            Backend::Sqlite => None,
        };
        let start = sql::head(db.pool()).await?.map_or(0, |h| h.position);
        let head = Arc::new(watch::Sender::new(start));
        let (jobs, queue) = mpsc::channel(QUEUE);
        let announce = match db.backend() {
            Backend::Postgres => {
                let (announce, positions) = watch::channel(start);
                tokio::spawn(writer::announce(db.clone(), positions));
                Some(announce)
            }
            Backend::Sqlite => None,
        };
        tokio::spawn(writer::run(db.clone(), queue, Arc::clone(&head), announce));
        let listener = listener.map(|listener| {
            tokio::spawn(listen::follow(db.clone(), listener, Arc::clone(&head))).abort_handle()
        });
        Ok(EventLog {
            inner: Arc::new(Inner {
                db,
                jobs,
                head,
                listener,
                sealer: subjects::Sealer::default(),
            }),
        })
    }

    /// Brings PostgreSQL's planner statistics for the secrets beside the log up to date; does
    /// nothing on SQLite. A reader about to go through the whole log (a rebuild) calls it:
    /// right after a bulk load the table has none, and without them the planner looks up the
    /// subjects' data keys of each page by reading every subject's row (219 ms a page at
    /// 250,000 users, against 6 ms once analysed).
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        if self.inner.db.backend() == Backend::Postgres {
            sqlx::query("ANALYZE secrets")
                .execute(self.inner.db.pool())
                .await?;
        }
        Ok(())
    }

    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// Appends atomically: all of the request's events, claims and secrets, or none.
    ///
    /// Requests from concurrent callers are committed together (group commit), each decided on
    /// its own. If this future is dropped after the request was queued, the append may still
    /// commit; retrying with the same event ids is safe (idempotent).
    ///
    /// A data subject's personal fields are sealed here with their data key (made with the
    /// subject's first event); an erased subject's stream takes no further events.
    pub async fn append(&self, mut request: AppendRequest) -> Result<Appended, AppendError> {
        let sealed = self
            .inner
            .sealer
            .seal(self.inner.db.pool(), &mut request)
            .await?;
        let request = PreparedRequest::prepare(request)?;
        let (reply, outcome) = oneshot::channel();
        self.inner
            .jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        let appended = outcome.await.map_err(|_| StoreError::WriterStopped)?;
        self.inner.sealer.settle(sealed, appended.is_ok());
        appended
    }

    /// The stream's events in stream order.
    pub async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent>, StoreError> {
        sql::read_stream(self.inner.db.pool(), stream).await
    }

    /// The stream's events after stream version `after_version`, in stream order.
    pub async fn read_stream_after(
        &self,
        stream: &StreamId,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        sql::read_stream_page(self.inner.db.pool(), stream, after_version, u32::MAX, false).await
    }

    /// Up to `limit` events of a stream after stream version `after_version`, oldest first.
    pub async fn read_stream_page(
        &self,
        stream: &StreamId,
        after_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        sql::read_stream_page(self.inner.db.pool(), stream, after_version, limit, false).await
    }

    /// The stream's newest event, if any.
    pub async fn last_in_stream(
        &self,
        stream: &StreamId,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        Ok(
            sql::read_stream_page(self.inner.db.pool(), stream, 0, 1, true)
                .await?
                .pop(),
        )
    }

    /// Up to `limit` events with a position above `after`, in position order.
    pub async fn read_all(&self, after: u64, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        sql::read_all(self.inner.db.pool(), after, limit).await
    }

    /// [`read_all`](Self::read_all), then [`reveal`](Self::reveal): what folds read.
    pub async fn read_all_revealed(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.read_all(after, limit).await?;
        self.reveal(events).await
    }

    /// Up to `limit` events after `after` and up to `to` that `filter` selects, oldest first,
    /// revealed: what a rebuild of some views reads, skipping the events none of them folds.
    pub async fn read_selected_revealed(
        &self,
        after: u64,
        to: u64,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = match filter {
            EventFilter::All => {
                let limit = u32::try_from(to.saturating_sub(after))
                    .unwrap_or(limit)
                    .min(limit);
                if limit == 0 {
                    return Ok(Vec::new());
                }
                self.read_all(after, limit).await?
            }
            EventFilter::Only(classes) => {
                sql::read_selected(self.inner.db.pool(), after, to, limit, classes).await?
            }
        };
        self.reveal(events).await
    }

    /// The newest event's position and hash; `None` for an empty log.
    pub async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        sql::head(self.inner.db.pool()).await
    }

    /// The highest position known to be committed, updated by this node's appends and (on
    /// PostgreSQL) by other nodes' notifications. Followers wait on it instead of polling.
    /// On SQLite, appends by another process on the same file are not announced.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    /// The stream holding a uniqueness claim, if any.
    pub async fn claim_owner(&self, key: &ClaimKey) -> Result<Option<StreamId>, StoreError> {
        sql::claim_owner(self.inner.db.pool(), key).await
    }

    /// The stream holding a uniqueness claim, with its secret of kind `secret_kind`: what a
    /// login looks up, in one statement.
    pub async fn claim_owner_with_secret(
        &self,
        key: &ClaimKey,
        secret_kind: &str,
    ) -> Result<Option<(StreamId, Option<String>)>, StoreError> {
        sql::claim_owner_with_secret(self.inner.db.pool(), key, secret_kind).await
    }

    /// A secret kept beside the log for `owner`.
    pub async fn secret(&self, owner: &StreamId, kind: &str) -> Result<Option<String>, StoreError> {
        sql::secret(self.inner.db.pool(), owner, kind).await
    }

    /// Every secret of `owner` whose kind starts with `prefix`, as `(kind, value)` ordered by
    /// kind. The prefix must not contain `%` or `_`.
    pub async fn secrets_with_prefix(
        &self,
        owner: &StreamId,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        debug_assert!(!prefix.contains(['%', '_']));
        sql::secrets_with_prefix(self.inner.db.pool(), owner, prefix).await
    }
}

impl EventLog {
    /// The state of a data subject's key: `None` if they never had one.
    pub async fn data_key(&self, subject_id: &str) -> Result<Option<KeyState>, StoreError> {
        let ids = std::iter::once(subject_id).collect();
        Ok(subjects::data_keys(self.inner.db.pool(), &ids)
            .await?
            .remove(subject_id))
    }

    /// The events with their sealed personal fields opened, or blanked for an erased subject
    /// (see [`personal::reveal_event`]). What projections, aggregates and webhooks read; the
    /// revealed text is no longer what the chain hashes, so verification and exports read the
    /// stored events instead.
    pub async fn reveal(
        &self,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let subjects: std::collections::BTreeSet<&str> = events
            .iter()
            .filter(|e| personal::may_be_sealed(e))
            .map(|e| e.stream.id.as_str())
            .collect();
        if subjects.is_empty() {
            return Ok(events);
        }
        let keys = subjects::data_keys(self.inner.db.pool(), &subjects).await?;
        if events.len() < REVEAL_IN_PARALLEL_FROM {
            reveal_all(&keys, &mut events)?;
            return Ok(events);
        }
        // A page of a catch-up or a rebuild: opening ~10 µs of sealed fields an event is most
        // of its time, so the second half opens on another core meanwhile.
        let keys = Arc::new(keys);
        let mut second = events.split_off(events.len() / 2);
        let other_keys = keys.clone();
        let other = tokio::task::spawn_blocking(move || {
            reveal_all(&other_keys, &mut second).map(|()| second)
        });
        reveal_all(&keys, &mut events)?;
        let second = other
            .await
            .map_err(|e| StoreError::Corrupt(format!("revealing events failed: {e}")))??;
        events.extend(second);
        Ok(events)
    }

    /// Every uniqueness claim `owner` holds (an erasure gives them all up).
    pub async fn claims_held_by(&self, owner: &StreamId) -> Result<Vec<ClaimKey>, StoreError> {
        subjects::claims_held_by(self.inner.db.pool(), owner).await
    }

    /// Deletes a user's sessions, ceremonies and mail after their erasure.
    pub async fn forget_user_state(&self, user_id: &str) -> Result<(), StoreError> {
        subjects::forget_user_state(self.inner.db.pool(), user_id).await
    }
}

/// Pages at least this long are revealed on two threads.
const REVEAL_IN_PARALLEL_FROM: usize = 256;

fn reveal_all(
    keys: &std::collections::HashMap<String, KeyState>,
    events: &mut [RecordedEvent],
) -> Result<(), StoreError> {
    for event in events {
        personal::reveal_event(keys.get(&event.stream.id), event)?;
    }
    Ok(())
}

/// Raises the known head; never lowers it (a stale notification may arrive late).
fn advance(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|known| {
        if position > *known {
            *known = position;
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::model::{EventMetadata, ExpectedVersion, NewEvent};
    use crate::testing::fresh_sqlite_url;

    /// A page long enough to be opened on two threads comes back whole, in log order, every
    /// sealed field open.
    #[tokio::test]
    async fn a_long_page_is_revealed_whole_and_in_order() {
        let log = EventLog::open(Database::connect(&fresh_sqlite_url()).await.unwrap())
            .await
            .unwrap();
        let count = REVEAL_IN_PARALLEL_FROM * 2 + 1;
        for n in 0..count {
            log.append(AppendRequest::new(
                StreamId::new(personal::SUBJECT_STREAM_KIND, Uuid::now_v7().to_string()),
                ExpectedVersion::NoStream,
                vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    tenant_id: Uuid::now_v7(),
                    event_type: "user.created".into(),
                    schema_version: 1,
                    recorded_at: Utc::now(),
                    payload: serde_json::json!({ "username": format!("user-{n}") }),
                    metadata: EventMetadata::system(),
                }],
            ))
            .await
            .unwrap();
        }
        let stored = log.read_all(0, 10_000).await.unwrap();
        assert!(
            !stored[0].payload.contains("user-0"),
            "the fields are sealed"
        );
        let revealed = log.read_all_revealed(0, 10_000).await.unwrap();
        assert_eq!(revealed.len(), count);
        for (n, event) in revealed.iter().enumerate() {
            assert_eq!(event.position, n as u64 + 1);
            assert_eq!(
                event.payload_json().unwrap()["username"],
                format!("user-{n}")
            );
        }
    }
}
