//! Login sessions.
//!
//! A session is short-lived state, not history: it lives in a table, not in the log (the log
//! records the login itself). A login's session is started, and the sessions that a
//! suspension, a lock, a password change or reset, an erasure or an admin's sign-out end are
//! revoked, by the log's writer in the transaction of the events that cause it
//! ([`crate::AppendRequest::sessions`]). Tokens are never stored, only their SHA-256, so a copy
//! of the table cannot be replayed as cookies.
//!
//! A session is valid while it is not revoked and `now` is before both its idle expiry and
//! its absolute expiry. Each successful authentication slides the idle expiry to
//! `min(now + idle, absolute expiry)`; the idle duration is stored per session because
//! sessions of different assurance levels have different timeouts.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::codec::{get_time, get_uuid, micros};
use crate::database::Database;
use crate::error::StoreError;
use crate::log::script::{Marks, Statement};
use crate::model::{NewSession, SessionChange};

/// A valid session, as authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

/// The statement that writes a new session's row, for the log's writer to run in the
/// transaction of the login's events.
pub(crate) fn insert(marks: Marks, session: &NewSession) -> Statement<'_> {
    let now = micros(session.created_at);
    let idle = session.idle.num_microseconds().unwrap_or(i64::MAX);
    let absolute_expires_at =
        now.saturating_add(session.absolute.num_microseconds().unwrap_or(i64::MAX));
    let idle_expires_at = now.saturating_add(idle).min(absolute_expires_at);
    let mut sql = String::from(
        "INSERT INTO sessions (token_hash, user_id, tenant_id, created_at, last_seen_at, \
         idle_micros, idle_expires_at, absolute_expires_at) VALUES (",
    );
    for n in 1..=8 {
        if n > 1 {
            sql.push_str(", ");
        }
        marks.push(&mut sql, n);
    }
    sql.push(')');
    Statement::new(sql)
        .bytes(&session.token_hash)
        .owned_text(session.user_id.to_string())
        .owned_text(session.tenant_id.to_string())
        .int(now)
        .int(now)
        .int(idle)
        .int(idle_expires_at)
        .int(absolute_expires_at)
}

/// The statement that ends every unrevoked session of a user, but the one whose token hashes
/// to `kept`.
fn revoke_all<'a>(
    marks: Marks,
    user_id: Uuid,
    kept: Option<&'a [u8; 32]>,
    at: DateTime<Utc>,
) -> Statement<'a> {
    let mut sql = String::from("UPDATE sessions SET revoked_at = ");
    marks.push(&mut sql, 1);
    sql.push_str(" WHERE user_id = ");
    marks.push(&mut sql, 2);
    sql.push_str(" AND revoked_at IS NULL");
    if kept.is_some() {
        sql.push_str(" AND token_hash <> ");
        marks.push(&mut sql, 3);
    }
    let statement = Statement::new(sql)
        .int(micros(at))
        .owned_text(user_id.to_string());
    match kept {
        Some(kept) => statement.bytes(kept),
        None => statement,
    }
}

/// The statement that makes one change, for the log's writer to run in the transaction of the
/// events that cause it.
pub(crate) fn write(marks: Marks, change: &SessionChange) -> Statement<'_> {
    match change {
        SessionChange::Start(session) => insert(marks, session),
        SessionChange::EndAll { user_id, at } => revoke_all(marks, *user_id, None, *at),
        SessionChange::EndOthers { user_id, kept, at } => {
            revoke_all(marks, *user_id, Some(kept), *at)
        }
    }
}

#[derive(Clone)]
pub struct SessionStore {
    db: Database,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore").finish_non_exhaustive()
    }
}

impl SessionStore {
    /// The `sessions` table is created by [`Database::migrate`].
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Starts a session that expires after `idle` without use, and after `absolute` in any
    /// case. A token hash that already exists is a database error (tokens are random).
    /// The API never calls this: its sessions start with the events of their login
    /// ([`SessionChange::Start`]), so that none exists without its recorded login.
    pub async fn create(
        &self,
        token_hash: [u8; 32],
        user_id: Uuid,
        tenant_id: Uuid,
        now: DateTime<Utc>,
        idle: Duration,
        absolute: Duration,
    ) -> Result<(), StoreError> {
        let session = NewSession {
            token_hash,
            user_id,
            tenant_id,
            created_at: now,
            idle,
            absolute,
        };
        let statement = insert(Marks::of(self.db.backend()), &session);
        crate::log::script::query(&statement)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// The session if it is valid at `now`, after sliding its idle expiry. Checking and
    /// sliding are one statement, so a concurrent revoke cannot slip between them.
    pub async fn authenticate(
        &self,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "UPDATE sessions SET last_seen_at = $1, \
             idle_expires_at = CASE WHEN $1 + idle_micros < absolute_expires_at \
                 THEN $1 + idle_micros ELSE absolute_expires_at END \
             WHERE token_hash = $2 AND revoked_at IS NULL \
               AND idle_expires_at > $1 AND absolute_expires_at > $1 \
             RETURNING user_id, tenant_id, created_at, absolute_expires_at",
        )
        .bind(micros(now))
        .bind(token_hash.to_vec())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| {
            Ok(Session {
                user_id: get_uuid(&row, "user_id")?,
                tenant_id: get_uuid(&row, "tenant_id")?,
                created_at: get_time(&row, "created_at")?,
                absolute_expires_at: get_time(&row, "absolute_expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends one session (logout). `true` if it was not already revoked.
    pub async fn revoke(
        &self,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(micros(now))
        .bind(token_hash.to_vec())
        .execute(self.db.pool())
        .await?
        .rows_affected();
        Ok(revoked > 0)
    }

    /// Deletes sessions that can no longer authenticate (revoked or expired before `now`), so
    /// the table does not grow forever. Returns how many were deleted.
    pub async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM sessions WHERE revoked_at IS NOT NULL \
             OR idle_expires_at <= $1 OR absolute_expires_at <= $1",
        )
        .bind(micros(now))
        .execute(self.db.pool())
        .await?
        .rows_affected())
    }
}
