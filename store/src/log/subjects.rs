//! The queries behind sealing and erasure: data keys, the claims a subject holds, and the
//! short-lived state kept for a user outside the log.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use sqlx::{AnyPool, Row};

use crate::error::{AppendError, StoreError};
use crate::model::{AppendRequest, ClaimKey, ExpectedVersion, SecretWrite, StreamId};
use crate::personal::{self, DATA_KEY_SECRET, DataKey, KeyState, SUBJECT_STREAM_KIND};

/// Live keys remembered for sealing, so that an append to a known subject costs no read.
/// Past this many the memory is simply dropped and refilled.
const REMEMBERED_KEYS: usize = 65_536;

/// Seals appends to subject streams. It remembers live keys for the write path only: an
/// append sealed with a key erased meanwhile (on another node) cannot commit, because the
/// erasure moved the stream's version past what the appender expected, and an erasure on this
/// node forgets the key at once. Reads never use this memory: they must see an erasure at once.
#[derive(Default)]
pub(super) struct Sealer {
    keys: Mutex<HashMap<String, DataKey>>,
}

/// What sealing a request did, for [`Sealer::settle`] once the append is decided.
pub(super) enum Sealed {
    Nothing,
    /// The request was sealed with this subject's key (new if the request creates it).
    With {
        subject: String,
        key: DataKey,
    },
    /// The request erases its subject.
    Erasing {
        subject: String,
    },
}

impl Sealer {
    pub(super) async fn seal(
        &self,
        pool: &AnyPool,
        request: &mut AppendRequest,
    ) -> Result<Sealed, AppendError> {
        let subject = &request.stream.id;
        let erasing = request.secrets.iter().any(|s| {
            s.kind == DATA_KEY_SECRET && s.value.as_deref() == Some(personal::ERASED_TOMBSTONE)
        });
        // Claims and secrets alone carry no personal data into the log: an erasure's own
        // clean-up is such a request.
        if !personal::is_subject_stream(&request.stream) || request.events.is_empty() {
            return Ok(if erasing {
                Sealed::Erasing {
                    subject: subject.clone(),
                }
            } else {
                Sealed::Nothing
            });
        }
        let remembered = self.remembered(subject);
        let key = match remembered {
            Some(key) => key,
            None => {
                let ids = std::iter::once(subject.as_str()).collect();
                match data_keys(pool, &ids).await?.remove(subject) {
                    Some(KeyState::Live(key)) => key,
                    Some(KeyState::Erased) => {
                        return Err(AppendError::SubjectErased {
                            stream: request.stream.clone(),
                        });
                    }
                    // A new subject gets its key in the same transaction as its first event.
                    None if request.expected == ExpectedVersion::NoStream => {
                        let key = DataKey::generate();
                        request.secrets.retain(|s| s.kind != DATA_KEY_SECRET);
                        request.secrets.push(SecretWrite {
                            kind: DATA_KEY_SECRET.into(),
                            value: Some(key.encode()),
                        });
                        key
                    }
                    // A subject from before sealing existed: their events stay as written.
                    None => return Ok(Sealed::Nothing),
                }
            }
        };
        for event in &mut request.events {
            personal::seal_event(&key, &request.stream, event)?;
        }
        let subject = subject.clone();
        Ok(if erasing {
            Sealed::Erasing { subject }
        } else {
            Sealed::With { subject, key }
        })
    }

    /// Remembers a key only once an append that used it committed (a new key that lost a race
    /// was never stored), and forgets an erased subject's key.
    pub(super) fn settle(&self, sealed: Sealed, committed: bool) {
        let Ok(mut keys) = self.keys.lock() else {
            return;
        };
        match sealed {
            Sealed::Nothing => {}
            Sealed::With { subject, key } if committed => {
                if keys.len() >= REMEMBERED_KEYS {
                    keys.clear();
                }
                keys.insert(subject, key);
            }
            Sealed::With { .. } => {}
            Sealed::Erasing { subject } => {
                keys.remove(&subject);
            }
        }
    }

    fn remembered(&self, subject: &str) -> Option<DataKey> {
        self.keys.lock().ok()?.get(subject).cloned()
    }
}

/// Ids per `IN (...)` list: far below both backends' bound-parameter limits.
const IDS_PER_QUERY: usize = 500;

/// The data keys of the given subjects; subjects without a key are absent.
pub(super) async fn data_keys(
    pool: &AnyPool,
    subject_ids: &BTreeSet<&str>,
) -> Result<HashMap<String, KeyState>, StoreError> {
    let ids: Vec<&str> = subject_ids.iter().copied().collect();
    let mut keys = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let list = (3..3 + chunk.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT owner_id, value FROM secrets \
             WHERE owner_kind = $1 AND kind = $2 AND owner_id IN ({list})"
        );
        let mut query = sqlx::query(&sql)
            .bind(SUBJECT_STREAM_KIND)
            .bind(DATA_KEY_SECRET);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(pool).await? {
            let id: String = row.try_get("owner_id")?;
            let value: String = row.try_get("value")?;
            keys.insert(id, KeyState::decode(&value)?);
        }
    }
    Ok(keys)
}

/// Every uniqueness claim held by `owner`.
pub(super) async fn claims_held_by(
    pool: &AnyPool,
    owner: &StreamId,
) -> Result<Vec<ClaimKey>, StoreError> {
    let rows = sqlx::query(
        "SELECT scope, kind, value FROM claims WHERE owner_kind = $1 AND owner_id = $2 \
         ORDER BY scope, kind, value",
    )
    .bind(&owner.kind)
    .bind(&owner.id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ClaimKey {
                scope: row.try_get("scope")?,
                kind: row.try_get("kind")?,
                value: row.try_get("value")?,
            })
        })
        .collect()
}

/// Deletes a user's sessions, pending ceremonies and unsent or sent mail: state beside the log
/// that may hold their personal data and has no reason to outlive an erasure.
pub(super) async fn forget_user_state(pool: &AnyPool, user_id: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for table in ["sessions", "ceremonies", "mail_outbox"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
