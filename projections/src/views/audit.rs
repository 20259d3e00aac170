//! The audit view: one row per event, with who did it, from where, and the outcome. It copies
//! reason codes, never payloads, so no secret can reach it.

use chrono::{DateTime, Utc};
use keyledger_store::{Database, EventMetadata, RecordedEvent};
use sqlx::{AnyConnection, Row, any::AnyRow};
use uuid::Uuid;

use super::select::{Param, Select};
use super::{from_micros, micros, placeholders};
use crate::checkpoint::{to_i64, to_u64};
use crate::error::ProjectionError;
use crate::runner::Projection;

pub const NAME: &str = "audit";

pub struct AuditView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub stream_kind: String,
    pub stream_id: String,
    pub user_id: Option<Uuid>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub request_ip: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: Option<String>,
    /// `success` or `failure` for login attempts and password changes.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// The username or email typed at a login attempt.
    pub identifier: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<Uuid>,
    /// An exact type, or a prefix ending in `.` or `.*` (`user.login.*`).
    pub event_type: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Cursor: rows after this position.
    pub after: u64,
    pub limit: u32,
}

impl AuditView {
    pub async fn list(
        db: &Database,
        tenant_id: Uuid,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRow>, ProjectionError> {
        let (exact, prefix) = match filter.event_type.as_deref() {
            Some(t) if t.ends_with(".*") => (None, Some(t[..t.len() - 1].to_owned())),
            Some(t) if t.ends_with('.') => (None, Some(t.to_owned())),
            Some(t) => (Some(t.to_owned()), None),
            None => (None, None),
        };
        let mut select = Select::new(
            db,
            "SELECT position, recorded_at, tenant_id, event_type, stream_kind, stream_id, \
             user_id, actor_kind, actor_id, request_ip, user_agent, correlation_id, outcome, \
             reason, identifier FROM audit_view",
        );
        select.and("tenant_id = ?", [Param::Text(tenant_id.to_string())]);
        select.and("position > ?", [Param::Int(to_i64(filter.after))]);
        if let Some(user_id) = filter.user_id {
            select.and("user_id = ?", [Param::Text(user_id.to_string())]);
        }
        if let Some(exact) = exact {
            select.and("event_type = ?", [Param::Text(exact)]);
        }
        if let Some(prefix) = prefix {
            // Not `LIKE`: `_` and `%` would be wildcards, and SQLite's `LIKE` ignores case.
            let length = prefix.chars().count();
            select.and(
                &format!("substr(event_type, 1, {length}) = ?"),
                [Param::Text(prefix)],
            );
        }
        if let Some(from) = filter.from {
            select.and("recorded_at >= ?", [Param::Int(micros(from))]);
        }
        if let Some(to) = filter.to {
            select.and("recorded_at < ?", [Param::Int(micros(to))]);
        }
        select.then(
            "ORDER BY position LIMIT ?",
            [Param::Int(i64::from(filter.limit))],
        );
        let rows = select.fetch_all(db).await?;
        rows.iter().map(read_row).collect()
    }
}

fn read_row(row: &AnyRow) -> Result<AuditRow, ProjectionError> {
    let parse = |text: String| {
        Uuid::parse_str(&text).map_err(|e| ProjectionError::Malformed {
            position: 0,
            reason: e.to_string(),
        })
    };
    Ok(AuditRow {
        position: to_u64(row.try_get("position")?),
        recorded_at: from_micros(row.try_get("recorded_at")?),
        tenant_id: parse(row.try_get("tenant_id")?)?,
        event_type: row.try_get("event_type")?,
        stream_kind: row.try_get("stream_kind")?,
        stream_id: row.try_get("stream_id")?,
        user_id: row
            .try_get::<Option<String>, _>("user_id")?
            .map(parse)
            .transpose()?,
        actor_kind: row.try_get("actor_kind")?,
        actor_id: row.try_get("actor_id")?,
        request_ip: row.try_get("request_ip")?,
        user_agent: row.try_get("user_agent")?,
        correlation_id: row.try_get("correlation_id")?,
        outcome: row.try_get("outcome")?,
        reason: row.try_get("reason")?,
        identifier: row.try_get("identifier")?,
    })
}

/// Outcome, reason and typed identifier of the events that have them.
fn outcome_of(event: &RecordedEvent) -> (Option<&'static str>, Option<String>, Option<String>) {
    let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    match event.event_type.as_str() {
        "user.login.succeeded" => (Some("success"), None, None),
        "user.login.failed" => (
            Some("failure"),
            text(&payload["reason"]),
            text(&payload["identifier"]),
        ),
        "user.password.rejected" => (Some("failure"), text(&payload["reason"]["code"]), None),
        "user.password.set" | "user.password.changed" | "user.password.reset" => {
            (Some("success"), None, None)
        }
        "user.locked" => (None, text(&payload["reason"]), None),
        "user.unlocked" => (None, text(&payload["by"]), None),
        _ => (None, None, None),
    }
}

impl Projection for AuditView {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_view"]
    }

    async fn migrate(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS audit_view (\
                position BIGINT PRIMARY KEY, recorded_at BIGINT NOT NULL, tenant_id TEXT NOT NULL, \
                event_type TEXT NOT NULL, stream_kind TEXT NOT NULL, stream_id TEXT NOT NULL, \
                user_id TEXT, actor_kind TEXT NOT NULL, actor_id TEXT, request_ip TEXT, \
                user_agent TEXT, correlation_id TEXT, outcome TEXT, reason TEXT, identifier TEXT)",
            "CREATE INDEX IF NOT EXISTS audit_view_tenant ON audit_view (tenant_id, position)",
            "CREATE INDEX IF NOT EXISTS audit_view_user ON audit_view (tenant_id, user_id, position)",
            "CREATE INDEX IF NOT EXISTS audit_view_type ON audit_view (tenant_id, event_type, position)",
            "CREATE INDEX IF NOT EXISTS audit_view_time ON audit_view (tenant_id, recorded_at)",
        ] {
            sqlx::query(ddl).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn clear(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM audit_view")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            insert(conn, chunk).await?;
        }
        for erased in events.iter().filter(|e| e.event_type == ERASED) {
            forget(conn, erased).await?;
        }
        Ok(())
    }
}

/// The event after which a user's rows keep no personal data.
const ERASED: &str = "user.erased";

/// Blanks what an erased user's rows hold of their personal data. Rows folded from the log
/// after the erasure hold none already (the log reveals them blanked), so a rebuild reaches the
/// same rows.
async fn forget(conn: &mut AnyConnection, erased: &RecordedEvent) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE audit_view SET request_ip = NULL, user_agent = NULL, identifier = NULL \
         WHERE tenant_id = $1 AND user_id = $2 AND position < $3",
    )
    .bind(erased.tenant_id.to_string())
    .bind(erased.stream.id.clone())
    .bind(to_i64(erased.position))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rows per multi-row INSERT: 15 columns each stays far below SQLite's 32,766 and
/// PostgreSQL's 65,535 bound parameters.
const ROWS_PER_STATEMENT: usize = 200;
const WIDTH: usize = 15;

async fn insert(conn: &mut AnyConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let values = (0..events.len())
        .map(|r| format!("({})", placeholders(conn, r * WIDTH, WIDTH)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO audit_view (position, recorded_at, tenant_id, event_type, stream_kind, \
         stream_id, user_id, actor_kind, actor_id, request_ip, user_agent, correlation_id, \
         outcome, reason, identifier) VALUES {values}"
    );
    let mut query = sqlx::query(&sql);
    for event in events {
        let metadata: EventMetadata = event.metadata().map_err(|e| ProjectionError::Malformed {
            position: event.position,
            reason: e.to_string(),
        })?;
        let actor_kind = serde_json::to_value(&metadata.actor.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let user_id = (event.stream.kind == "user").then(|| event.stream.id.clone());
        let (outcome, reason, identifier) = outcome_of(event);
        query = query
            .bind(to_i64(event.position))
            .bind(micros(event.recorded_at))
            .bind(event.tenant_id.to_string())
            .bind(event.event_type.clone())
            .bind(event.stream.kind.clone())
            .bind(event.stream.id.clone())
            .bind(user_id)
            .bind(actor_kind)
            .bind(metadata.actor.id)
            .bind(metadata.request_ip)
            .bind(metadata.user_agent)
            .bind(metadata.correlation_id)
            .bind(outcome)
            .bind(reason)
            .bind(identifier);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
