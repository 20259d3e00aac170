//! The users view: one row per user, the columns admins filter and sort on.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use keyledger_domain::user::{LoginFailureReason, UserEvent};
use keyledger_store::{Database, EventClass, EventFilter, RecordedEvent};
use sqlx::{AnyConnection, Row, any::AnyRow};
use uuid::Uuid;

use super::select::{Param, Select};
use super::{decode, from_micros, micros, placeholders};
use crate::error::ProjectionError;
use crate::runner::Projection;

pub const NAME: &str = "users";

/// Every event of a user's stream; no other stream changes a user's row.
const FOLDS: EventClass = EventClass {
    stream_kind: "user",
    type_prefixes: &[],
};

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
    /// "MFA: WebAuthn": whether the user holds at least one WebAuthn credential.
    pub mfa_webauthn: Option<bool>,
    /// "MFA: User Requirement": `required`, `optional`, or `default` (follows the tenant).
    pub mfa_requirement: Option<String>,
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
        let mut select = Select::new(db, &format!("SELECT {COLUMNS} FROM users_view"));
        select.and("tenant_id = ?", [Param::Text(tenant_id.to_string())]);
        if let Some(status) = &filter.status {
            select.and("status = ?", [Param::Text(status.clone())]);
        }
        match filter.locked {
            Some(true) => select.and(
                "locked = 1 AND (locked_until IS NULL OR locked_until > ?)",
                [Param::Int(micros(now))],
            ),
            Some(false) => select.and(
                "(locked = 0 OR locked_until <= ?)",
                [Param::Int(micros(now))],
            ),
            None => {}
        }
        if let Some(text) = &filter.text {
            let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
            select.and(
                "(username_lower LIKE ? OR email_lower LIKE ? OR display_name_lower LIKE ?)",
                std::iter::repeat_n(pattern, 3).map(Param::Text),
            );
        }
        for (condition, params) in
            super::MfaView::filter(filter.mfa_webauthn, filter.mfa_requirement.as_deref())
        {
            select.and(&condition, params.into_iter().map(Param::Text));
        }
        if let Some(after) = filter.after {
            select.and("user_id > ?", [Param::Text(after.to_string())]);
        }
        select.then(
            "ORDER BY user_id LIMIT ?",
            [Param::Int(i64::from(filter.limit))],
        );
        let rows = select.fetch_all(db).await?;
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

/// Folds one user event into the user's row: `None` before `user.created`. Pure, so a batch
/// is folded in memory and written once per user.
pub fn fold(row: &mut Option<UserRow>, event: &UserEvent, position: u64) {
    if let UserEvent::Created(e) = event {
        *row = Some(UserRow {
            user_id: e.user_id,
            tenant_id: e.tenant_id,
            username: e.username.clone(),
            email: e.email.clone(),
            display_name: e.display_name.clone(),
            status: "active".into(),
            locked: false,
            locked_until: None,
            failed_count: 0,
            password_externally_managed: false,
            has_password: false,
            created_at: e.at,
            last_login_at: None,
            position,
        });
        return;
    }
    // Events of a user the view has never seen cannot happen in a valid log; skip them.
    let Some(row) = row.as_mut() else { return };
    row.position = position;
    match event {
        UserEvent::Created(_) => {}
        UserEvent::ProfileUpdated(e) => {
            if let Some(username) = &e.username {
                row.username = username.clone();
            }
            if let Some(email) = &e.email {
                row.email = Some(email.clone());
            }
            if let Some(display_name) = &e.display_name {
                row.display_name = Some(display_name.clone());
            }
        }
        UserEvent::Erased(_) => {
            row.username = keyledger_store::personal::ERASED_TEXT.into();
            row.email = None;
            row.display_name = None;
            row.status = "erased".into();
        }
        UserEvent::Suspended(_) => row.status = "suspended".into(),
        UserEvent::Reactivated(_) => row.status = "active".into(),
        UserEvent::PasswordSet(_) | UserEvent::PasswordChanged(_) | UserEvent::PasswordReset(_) => {
            row.has_password = true;
        }
        UserEvent::PasswordManagementChanged(e) => {
            row.password_externally_managed = e.externally_managed;
        }
        UserEvent::LoginSucceeded(e) => {
            row.failed_count = 0;
            row.last_login_at = Some(e.at);
        }
        UserEvent::LoginFailed(e) if e.reason == LoginFailureReason::BadPassword => {
            row.failed_count = row.failed_count.saturating_add(1);
        }
        UserEvent::Locked(e) => {
            row.locked = true;
            row.locked_until = e.until;
        }
        UserEvent::Unlocked(_) => {
            row.locked = false;
            row.locked_until = None;
            row.failed_count = 0;
        }
        UserEvent::MfaFailed(e) if e.attempt_id.is_some() => {
            row.failed_count = row.failed_count.saturating_add(1);
        }
        // Second factors have their own view (`mfa`); a login they complete is
        // `user.login.succeeded` above.
        UserEvent::LoginFailed(_)
        | UserEvent::FirstFactorPassed(_)
        | UserEvent::PasswordRejected(_)
        | UserEvent::PasswordRehashed(_)
        | UserEvent::WebauthnRegistered(_)
        | UserEvent::WebauthnRenamed(_)
        | UserEvent::WebauthnRemoved(_)
        | UserEvent::WebauthnUsed(_)
        | UserEvent::TotpAdded(_)
        | UserEvent::TotpRemoved(_)
        | UserEvent::TotpUsed(_)
        | UserEvent::MfaRequirementChanged(_)
        | UserEvent::MfaFailed(_)
        | UserEvent::PasswordResetRequested(_)
        | UserEvent::SessionsEnded(_) => {}
    }
}

/// Rows per multi-row statement: 17 columns each stays far below SQLite's 32,766 and
/// PostgreSQL's 65,535 bound parameters.
const ROWS_PER_STATEMENT: usize = 200;

impl Projection for UsersView {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users_view"]
    }

    fn folds(&self) -> EventFilter {
        EventFilter::Only(vec![FOLDS])
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
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut decoded = Vec::new();
        for event in events.iter().filter(|e| FOLDS.contains(e)) {
            decoded.push((
                event.stream.id.as_str(),
                decode::<UserEvent>(event)?,
                event.position,
            ));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<&str> = decoded.iter().map(|(id, _, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut rows: BTreeMap<String, Option<UserRow>> = load(conn, &ids).await?;
        for (id, event, position) in &decoded {
            fold(rows.entry((*id).to_owned()).or_default(), event, *position);
        }
        let changed: Vec<UserRow> = rows.into_values().flatten().collect();
        for chunk in changed.chunks(ROWS_PER_STATEMENT) {
            upsert(conn, chunk).await?;
        }
        Ok(())
    }
}

/// The rows of `ids` that exist, by id.
async fn load(
    conn: &mut AnyConnection,
    ids: &[&str],
) -> Result<BTreeMap<String, Option<UserRow>>, ProjectionError> {
    let mut rows = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {COLUMNS} FROM users_view WHERE user_id IN ({})",
            placeholders(conn, 0, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let row = read_row(&row)?;
            rows.insert(row.user_id.to_string(), Some(row));
        }
    }
    Ok(rows)
}

const WRITE_COLUMNS: [&str; 17] = [
    "user_id",
    "tenant_id",
    "username",
    "username_lower",
    "email",
    "email_lower",
    "display_name",
    "display_name_lower",
    "status",
    "locked",
    "locked_until",
    "failed_count",
    "password_externally_managed",
    "has_password",
    "created_at",
    "last_login_at",
    "position",
];

async fn upsert(conn: &mut AnyConnection, rows: &[UserRow]) -> Result<(), ProjectionError> {
    let width = WRITE_COLUMNS.len();
    let values = (0..rows.len())
        .map(|r| format!("({})", placeholders(conn, r * width, width)))
        .collect::<Vec<_>>()
        .join(", ");
    let updates = WRITE_COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO users_view ({}) VALUES {values} ON CONFLICT (user_id) DO UPDATE SET {updates}",
        WRITE_COLUMNS.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for row in rows {
        query = query
            .bind(row.user_id.to_string())
            .bind(row.tenant_id.to_string())
            .bind(row.username.clone())
            .bind(row.username.to_lowercase())
            .bind(row.email.clone())
            .bind(row.email.as_ref().map(|m| m.to_lowercase()))
            .bind(row.display_name.clone())
            .bind(row.display_name.as_ref().map(|d| d.to_lowercase()))
            .bind(row.status.clone())
            .bind(i64::from(row.locked))
            .bind(row.locked_until.map(micros))
            .bind(i64::from(row.failed_count))
            .bind(i64::from(row.password_externally_managed))
            .bind(i64::from(row.has_password))
            .bind(micros(row.created_at))
            .bind(row.last_login_at.map(micros))
            .bind(i64::try_from(row.position).unwrap_or(i64::MAX));
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use keyledger_domain::user::{
        AccountLocked, AccountUnlocked, LockReason, LoginFailed, LoginMethod, LoginSucceeded,
        UnlockedBy, UserCreated, UserSuspended,
    };

    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap()
    }

    fn failed(second: i64, reason: LoginFailureReason) -> UserEvent {
        UserEvent::LoginFailed(LoginFailed {
            attempt_id: Uuid::nil(),
            reason,
            identifier: "ada".into(),
            at: at(second),
        })
    }

    fn folded(events: &[UserEvent]) -> Option<UserRow> {
        let mut row = None;
        for (i, event) in events.iter().enumerate() {
            fold(&mut row, event, i as u64 + 1);
        }
        row
    }

    fn created() -> UserEvent {
        UserEvent::Created(UserCreated {
            user_id: Uuid::from_u128(7),
            tenant_id: Uuid::from_u128(1),
            username: "Ada".into(),
            email: Some("ada@example.com".into()),
            display_name: None,
            at: at(0),
        })
    }

    #[test]
    fn bad_passwords_count_until_a_success_and_other_failures_do_not() {
        let row = folded(&[
            created(),
            failed(1, LoginFailureReason::BadPassword),
            failed(2, LoginFailureReason::Suspended),
            failed(3, LoginFailureReason::BadPassword),
        ])
        .unwrap();
        assert_eq!(row.failed_count, 2);
        let mut events = vec![created(), failed(1, LoginFailureReason::BadPassword)];
        events.push(UserEvent::LoginSucceeded(LoginSucceeded {
            attempt_id: Uuid::nil(),
            method: LoginMethod::Password,
            at: at(5),
        }));
        let row = folded(&events).unwrap();
        assert_eq!(row.failed_count, 0);
        assert_eq!(row.last_login_at, Some(at(5)));
        assert_eq!(row.position, 3);
    }

    #[test]
    fn a_lock_and_an_unlock_change_the_lock_columns() {
        let locked = UserEvent::Locked(AccountLocked {
            reason: LockReason::TooManyFailedAttempts,
            until: Some(at(60)),
            failed_attempts: Vec::new(),
            policy_version: 0,
            at: at(2),
        });
        let row = folded(&[
            created(),
            failed(1, LoginFailureReason::BadPassword),
            locked.clone(),
        ])
        .unwrap();
        assert!(row.locked);
        assert_eq!(row.locked_until, Some(at(60)));
        assert!(row.is_locked_at(at(59)));
        assert!(!row.is_locked_at(at(60)), "a lock ends at its until");
        let unlocked = UserEvent::Unlocked(AccountUnlocked {
            by: UnlockedBy::Admin,
            at: at(3),
        });
        let row = folded(&[
            created(),
            failed(1, LoginFailureReason::BadPassword),
            locked,
            unlocked,
        ])
        .unwrap();
        assert!(!row.locked);
        assert_eq!(row.locked_until, None);
        assert_eq!(row.failed_count, 0);
    }

    #[test]
    fn events_before_creation_are_ignored_and_suspension_sets_the_status() {
        assert_eq!(folded(&[failed(1, LoginFailureReason::BadPassword)]), None);
        let row = folded(&[created(), UserEvent::Suspended(UserSuspended { at: at(1) })]).unwrap();
        assert_eq!(row.status, "suspended");
        assert_eq!(row.username, "Ada");
    }
}
