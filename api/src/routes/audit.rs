//! The audit trail: `/api/v1/audit`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_projections::AuditView;
use keyledger_projections::views::audit::{AuditFilter, AuditRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Admin, ApiQuery, ReadAfter};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub user_id: Option<Uuid>,
    /// An exact event type, or a prefix such as `user.login.*`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Events recorded at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Events recorded before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page (a log position).
    pub cursor: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub event_type: String,
    pub stream: String,
    pub user_id: Option<Uuid>,
    /// `admin`, `self` or `system`.
    pub actor: String,
    pub actor_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: Option<String>,
    /// `success` or `failure` for login attempts and password changes.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// The username or email typed at a login attempt.
    pub identifier: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            position: r.position,
            recorded_at: r.recorded_at,
            event_type: r.event_type,
            stream: format!("{}-{}", r.stream_kind, r.stream_id),
            user_id: r.user_id,
            actor: r.actor_kind,
            actor_id: r.actor_id,
            ip: r.request_ip,
            user_agent: r.user_agent,
            correlation_id: r.correlation_id,
            outcome: r.outcome,
            reason: r.reason,
            identifier: r.identifier,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400), (status = 401)),
    security(("admin" = [])), tag = "audit")]
pub async fn list_audit(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidParameter("limit must be 1 to 1000".into()));
    }
    let filter = AuditFilter {
        user_id: query.user_id,
        event_type: query.event_type,
        from: query.from,
        to: query.to,
        after: query.cursor.unwrap_or(0),
        limit: limit + 1,
    };
    let mut rows = AuditView::list(state.db(), DEFAULT_TENANT_ID, &filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.position)
    } else {
        None
    };
    Ok(Json(AuditPage {
        items: rows.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
    }))
}
