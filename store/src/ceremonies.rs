//! Short-lived ceremony state: WebAuthn challenges in flight, and the MFA and enrollment
//! tokens a half-finished login holds.
//!
//! Like sessions, this is state, not history: only a ceremony's outcome is an event. It lives
//! in the database, not in memory, so any node can finish what another began. Taking a
//! ceremony deletes it in the same statement that reads it, so a challenge answers once even
//! when two finishes race (the ceremony library alone would accept the same state twice).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::codec::micros;
use crate::database::Database;
use crate::error::StoreError;

/// A ceremony as it was put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceremony {
    pub purpose: String,
    pub tenant_id: Uuid,
    pub user_id: Option<Uuid>,
    /// Opaque to the store (the ceremony library's serialised state, or the token's facts).
    pub state: String,
}

#[derive(Clone)]
pub struct CeremonyStore {
    db: Database,
}

impl std::fmt::Debug for CeremonyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeremonyStore").finish_non_exhaustive()
    }
}

impl CeremonyStore {
    /// The `ceremonies` table is created by [`Database::migrate`].
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Keeps `ceremony` under `id` until `expires_at`. Ids are random; a clash is an error.
    pub async fn put(
        &self,
        id: &str,
        ceremony: &Ceremony,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ceremonies (id, purpose, tenant_id, user_id, state, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(&ceremony.purpose)
        .bind(ceremony.tenant_id.to_string())
        .bind(ceremony.user_id.map(|u| u.to_string()))
        .bind(&ceremony.state)
        .bind(micros(expires_at))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Removes and returns the ceremony if it exists with this purpose and has not expired at
    /// `now`. One statement, so two concurrent takes cannot both get it.
    pub async fn take(
        &self,
        id: &str,
        purpose: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Ceremony>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM ceremonies WHERE id = $1 AND purpose = $2 AND expires_at > $3 \
             RETURNING purpose, tenant_id, user_id, state",
        )
        .bind(id)
        .bind(purpose)
        .bind(micros(now))
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| read(&row)).transpose()
    }

    /// The ceremony if it exists with this purpose and has not expired, left in place.
    pub async fn peek(
        &self,
        id: &str,
        purpose: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Ceremony>, StoreError> {
        let row = sqlx::query(
            "SELECT purpose, tenant_id, user_id, state FROM ceremonies \
             WHERE id = $1 AND purpose = $2 AND expires_at > $3",
        )
        .bind(id)
        .bind(purpose)
        .bind(micros(now))
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| read(&row)).transpose()
    }

    /// Deletes ceremonies that expired before `now`. Returns how many.
    pub async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM ceremonies WHERE expires_at <= $1")
            .bind(micros(now))
            .execute(self.db.pool())
            .await?
            .rows_affected())
    }
}

fn read(row: &sqlx::any::AnyRow) -> Result<Ceremony, StoreError> {
    use sqlx::Row;
    let parse = |text: String| {
        Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("ceremony uuid: {e}")))
    };
    Ok(Ceremony {
        purpose: row.try_get("purpose")?,
        tenant_id: parse(row.try_get("tenant_id")?)?,
        user_id: row
            .try_get::<Option<String>, _>("user_id")?
            .map(parse)
            .transpose()?,
        state: row.try_get("state")?,
    })
}
