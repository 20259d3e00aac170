//! The users view: one row per user, the columns admins filter and sort on.

use chrono::{DateTime, Utc};
use keyledger_domain::user::{LoginFailureReason, UserEvent};
use keyledger_store::{Database, RecordedEvent};
use sqlx::{AnyConnection, Row, any::AnyRow};
use uuid::Uuid;

use super::{decode, from_micros, micros};
use crate::error::ProjectionError;
use crate::runner::Projection;

pub const NAME: &str = "users";

pub struct UsersView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub status: String,
    pub locked: bool,
    /// `None` with `locked`: locked until an admin unlocks.
    pub locked_until: Option<DateTime<Utc>>,
    pub failed_count: u32,
    pub password_externally_managed: bool,
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub position: u64,
}

impl UserRow {
    /// A lock whose `until` has passed no longer holds, even before the expiry is recorded.
    pub fn is_locked_at(&self, now: DateTime<Utc>) -> bool {
        self.locked && self.locked_until.is_none_or(|until| until > now)
    }
}

/// Filters of `GET /users`.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub status: Option<String>,
    pub locked: Option<bool>,
    /// Case-insensitive substring of username, email or display name.
    pub text: Option<String>,
    /// Cursor: users after this id (ids are UUIDv7, so this is creation order).
    pub after: Option<Uuid>,
    pub limit: u32,
}

const COLUMNS: &str = "user_id, tenant_id, username, email, display_name, status, locked, \
    locked_until, failed_count, password_externally_managed, has_password, created_at, \
    last_login_at, position";

impl UsersView {
    pub async fn get(
        db: &Database,
        tenant_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<UserRow>, ProjectionError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM users_view WHERE tenant_id = $1 AND user_id = $2"
        ))
        .bind(tenant_id.to_string())
        .bind(user_id.to_string())
        .fetch_optional(db.pool())
        .await?;
        row.map(|r| read_row(&r)).transpose()
    }

    pub async fn list(
        db: &Database,
        tenant_id: Uuid,
        filter: &UserFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<UserRow>, ProjectionError> {
        // Placeholders must first appear in ascending order (SQLite numbers them by
        // appearance), so every optional filter is always present and switched off by NULL.
        let sql = format!(
            "SELECT {COLUMNS} FROM users_view WHERE tenant_id = $1 \
             AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR (CASE WHEN locked = 1 AND (locked_until IS NULL OR locked_until > $4) THEN 1 ELSE 0 END) = $3) \
             AND ($5 IS NULL OR username_lower LIKE $5 OR email_lower LIKE $5 OR display_name_lower LIKE $5) \
             AND ($6 IS NULL OR user_id > $6) \
             ORDER BY user_id LIMIT $7"
        );
        let text = filter
            .text
            .as_ref()
            .map(|t| format!("%{}%", escape_like(&t.to_lowercase())));
        let rows = sqlx::query(&sql)
            .bind(tenant_id.to_string())
            .bind(filter.status.clone())
            .bind(filter.locked.map(i64::from))
            .bind(micros(now))
            .bind(text)
            .bind(filter.after.map(|a| a.to_string()))
            .bind(i64::from(filter.limit))
            .fetch_all(db.pool())
            .await?;
        rows.iter().map(read_row).collect()
    }
}

/// LIKE has no portable ESCAPE default; wildcards typed by the user are dropped instead.
fn escape_like(text: &str) -> String {
    text.chars().filter(|c| *c != '%' && *c != '_').collect()
}

fn read_row(row: &AnyRow) -> Result<UserRow, ProjectionError> {
    let uuid = |col: &str| -> Result<Uuid, ProjectionError> {
        let text: String = row.try_get(col)?;
        Uuid::parse_str(&text).map_err(|e| ProjectionError::Malformed {
            position: 0,
            reason: e.to_string(),
        })
    };
    Ok(UserRow {
        user_id: uuid("user_id")?,
        tenant_id: uuid("tenant_id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        status: row.try_get("status")?,
        locked: row.try_get::<i64, _>("locked")? != 0,
        locked_until: row
            .try_get::<Option<i64>, _>("locked_until")?
            .map(from_micros),
        failed_count: u32::try_from(row.try_get::<i64, _>("failed_count")?).unwrap_or(u32::MAX),
        password_externally_managed: row.try_get::<i64, _>("password_externally_managed")? != 0,
        has_password: row.try_get::<i64, _>("has_password")? != 0,
        created_at: from_micros(row.try_get("created_at")?),
        last_login_at: row
            .try_get::<Option<i64>, _>("last_login_at")?
            .map(from_micros),
        position: u64::try_from(row.try_get::<i64, _>("position")?).unwrap_or(0),
    })
}

impl Projection for UsersView {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn migrate(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS users_view (\
                user_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, \
                username TEXT NOT NULL, username_lower TEXT NOT NULL, \
                email TEXT, email_lower TEXT, display_name TEXT, display_name_lower TEXT, \
                status TEXT NOT NULL, locked BIGINT NOT NULL, locked_until BIGINT, \
                failed_count BIGINT NOT NULL, password_externally_managed BIGINT NOT NULL, \
                has_password BIGINT NOT NULL, created_at BIGINT NOT NULL, last_login_at BIGINT, \
                position BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS users_view_tenant_user ON users_view (tenant_id, user_id)",
            "CREATE INDEX IF NOT EXISTS users_view_username ON users_view (tenant_id, username_lower)",
            "CREATE INDEX IF NOT EXISTS users_view_email ON users_view (tenant_id, email_lower)",
            "CREATE INDEX IF NOT EXISTS users_view_status ON users_view (tenant_id, status, user_id)",
            "CREATE INDEX IF NOT EXISTS users_view_locked ON users_view (tenant_id, locked, user_id)",
        ] {
            sqlx::query(ddl).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn clear(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM users_view")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream.kind != "user" {
            return Ok(());
        }
        let id = event.stream.id.as_str();
        let position = i64::try_from(event.position).unwrap_or(i64::MAX);
        match decode::<UserEvent>(event)? {
            UserEvent::Created(e) => {
                sqlx::query(
                    "INSERT INTO users_view (user_id, tenant_id, username, username_lower, \
                     email, email_lower, display_name, display_name_lower, status, locked, \
                     locked_until, failed_count, password_externally_managed, has_password, \
                     created_at, last_login_at, position) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', 0, NULL, 0, 0, 0, $9, NULL, $10)",
                )
                .bind(id)
                .bind(e.tenant_id.to_string())
                .bind(e.username.clone())
                .bind(e.username.to_lowercase())
                .bind(e.email.clone())
                .bind(e.email.as_ref().map(|m| m.to_lowercase()))
                .bind(e.display_name.clone())
                .bind(e.display_name.as_ref().map(|d| d.to_lowercase()))
                .bind(micros(e.at))
                .bind(position)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::ProfileUpdated(e) => {
                sqlx::query(
                    "UPDATE users_view SET \
                     username = COALESCE($1, username), username_lower = COALESCE($2, username_lower), \
                     email = COALESCE($3, email), email_lower = COALESCE($4, email_lower), \
                     display_name = COALESCE($5, display_name), \
                     display_name_lower = COALESCE($6, display_name_lower), \
                     position = $7 WHERE user_id = $8",
                )
                .bind(e.username.clone())
                .bind(e.username.as_ref().map(|u| u.to_lowercase()))
                .bind(e.email.clone())
                .bind(e.email.as_ref().map(|m| m.to_lowercase()))
                .bind(e.display_name.clone())
                .bind(e.display_name.as_ref().map(|d| d.to_lowercase()))
                .bind(position)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::Suspended(_) => set(conn, "status = 'suspended'", position, id).await?,
            UserEvent::Reactivated(_) => set(conn, "status = 'active'", position, id).await?,
            UserEvent::PasswordSet(_) | UserEvent::PasswordChanged(_) => {
                set(conn, "has_password = 1", position, id).await?
            }
            UserEvent::PasswordManagementChanged(e) => {
                let sql = if e.externally_managed {
                    "password_externally_managed = 1"
                } else {
                    "password_externally_managed = 0"
                };
                set(conn, sql, position, id).await?
            }
            UserEvent::LoginSucceeded(e) => {
                sqlx::query(
                    "UPDATE users_view SET failed_count = 0, last_login_at = $1, position = $2 \
                     WHERE user_id = $3",
                )
                .bind(micros(e.at))
                .bind(position)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::LoginFailed(e) if e.reason == LoginFailureReason::BadPassword => {
                set(conn, "failed_count = failed_count + 1", position, id).await?
            }
            UserEvent::Locked(e) => {
                sqlx::query(
                    "UPDATE users_view SET locked = 1, locked_until = $1, position = $2 \
                     WHERE user_id = $3",
                )
                .bind(e.until.map(micros))
                .bind(position)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::Unlocked(_) => {
                set(
                    conn,
                    "locked = 0, locked_until = NULL, failed_count = 0",
                    position,
                    id,
                )
                .await?
            }
            UserEvent::LoginFailed(_)
            | UserEvent::PasswordRejected(_)
            | UserEvent::PasswordRehashed(_) => {}
        }
        Ok(())
    }
}

/// `set` is one of the fixed assignments above, never user input.
async fn set(
    conn: &mut AnyConnection,
    set: &str,
    position: i64,
    id: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "UPDATE users_view SET {set}, position = $1 WHERE user_id = $2"
    ))
    .bind(position)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
