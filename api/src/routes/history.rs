//! A user's past: the state as of a moment (`GET /users/{id}?as_of=`) and the authentication
//! timeline (`GET /users/{id}/timeline`).

use axum::Json;
use axum::extract::State;
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_projections::as_of::{AsOf, AsOfError};
use keyledger_projections::views::audit::{AuditFilter, AuditRow};
use keyledger_projections::{AuditView, UsersView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::AuditEntry;
use super::users::UserBody;
use crate::error::ApiError;
use crate::extract::{Admin, ApiPath, ApiQuery, ReadAfter};
use crate::state::AppState;

/// Folds the user's stream up to `as_of` with the users and MFA views' folds: the answer is
/// what `GET /users/{id}` showed once the log had reached that point, plus the credentials the
/// user held then and whether TOTP was enrolled.
pub async fn user_as_of(state: &AppState, id: Uuid, as_of: &str) -> Result<UserBody, ApiError> {
    let point: AsOf = as_of
        .parse()
        .map_err(|e: String| ApiError::InvalidParameter(format!("as_of: {e}")))?;
    let found = keyledger_projections::as_of::user_as_of(&state.log, id, point)
        .await
        .map_err(|e| match e {
            AsOfError::BeyondHead { .. } => ApiError::InvalidParameter(format!("as_of: {e}")),
            AsOfError::Projection(e) => e.into(),
        })?;
    let row = found
        .row
        .filter(|r| r.tenant_id == DEFAULT_TENANT_ID)
        .ok_or(ApiError::NotFound("user"))?;
    let mut body = UserBody::from_row(row, found.at).with_mfa(found.mfa.as_ref());
    body.credentials = Some(found.user.webauthn_credentials().map(Into::into).collect());
    body.totp_enrolled = Some(found.mfa.as_ref().is_some_and(|m| m.totp));
    Ok(body)
}

/// Whether an event belongs on a user's authentication timeline: login attempts, locks,
/// unlocks, password and factor changes, suspension, sign-outs by an admin, and the erasure that
/// ends it.
pub fn is_authentication_event(event_type: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "user.login.",
        "user.locked",
        "user.unlocked",
        "user.password",
        "user.suspended",
        "user.reactivated",
        "user.sessions.",
        "user.mfa",
        "user.factor",
        "user.totp",
        "user.webauthn",
        "user.security_key",
        "user.passkey",
        "user.credential",
        "user.recovery",
        "user.erased",
    ];
    PREFIXES.iter().any(|p| event_type.starts_with(p))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// The `next_cursor` of the previous page (a log position).
    pub cursor: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub user_id: Uuid,
    /// In log order, each with its actor, IP, user agent and outcome.
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<u64>,
}

/// Rows read per query while filtering the timeline out of the audit view.
const SCAN: u32 = 1000;

#[utoipa::path(get, path = "/api/v1/users/{id}/timeline",
    params(("id" = Uuid, Path, description = "The user id"), TimelineQuery),
    responses((status = 200, body = Timeline), (status = 400), (status = 401), (status = 404)),
    security(("admin" = [])), tag = "users")]
pub async fn timeline(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> Result<Json<Timeline>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidParameter("limit must be 1 to 1000".into()));
    }
    if UsersView::get(state.db(), DEFAULT_TENANT_ID, id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound("user"));
    }
    let mut items: Vec<AuditRow> = Vec::new();
    let mut after = query.cursor.unwrap_or(0);
    let mut more = false;
    loop {
        let filter = AuditFilter {
            user_id: Some(id),
            after,
            limit: SCAN,
            ..AuditFilter::default()
        };
        let rows = AuditView::list(state.db(), DEFAULT_TENANT_ID, &filter).await?;
        let exhausted = rows.len() < SCAN as usize;
        after = rows.last().map_or(after, |r| r.position);
        items.extend(
            rows.into_iter()
                .filter(|r| is_authentication_event(&r.event_type)),
        );
        if items.len() > limit as usize {
            more = true;
            items.truncate(limit as usize);
            break;
        }
        if exhausted {
            break;
        }
    }
    let next_cursor = if more {
        items.last().map(|r| r.position)
    } else {
        None
    };
    Ok(Json(Timeline {
        user_id: id,
        items: items.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
    }))
}
