//! The mail outbox: messages the server wants sent, for an operator's mailer to read and
//! deliver (and tests to read). keyledger itself sends no mail.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::codec::micros;
use crate::database::Database;
use crate::error::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

#[derive(Clone)]
pub struct MailOutbox {
    db: Database,
}

impl std::fmt::Debug for MailOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailOutbox").finish_non_exhaustive()
    }
}

impl MailOutbox {
    /// The `mail_outbox` table is created by [`Database::migrate`].
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn enqueue(&self, mail: &Mail, now: DateTime<Utc>) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO mail_outbox (id, tenant_id, user_id, recipient, subject, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(mail.tenant_id.to_string())
        .bind(mail.user_id.to_string())
        .bind(&mail.recipient)
        .bind(&mail.subject)
        .bind(&mail.body)
        .bind(micros(now))
        .execute(self.db.pool())
        .await?;
        Ok(id)
    }
}
