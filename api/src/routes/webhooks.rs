//! Webhook subscriptions for downstream systems: `/api/v1/webhooks`. Every change is an event
//! of the subscription's own stream; delivery follows the log (see
//! `keyledger_projections::webhooks`). The signing secret is shown once, at creation and at
//! rotation, and otherwise lives only beside the log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::webhook::{
    DisableReason, TargetUrl, WebhookSubscription, WebhookSubscriptionCommand,
    WebhookSubscriptionError, WebhookSubscriptionEvent,
};
use keyledger_projections::webhooks::secret_kind;
use keyledger_projections::webhooks::signature::SigningSecret;
use keyledger_projections::webhooks::state::{self, AttemptFilter, AttemptRecord, DeadLetter};
use keyledger_projections::webhooks::view::{SubscriptionRow, SubscriptionsView};
use keyledger_store::{CommandContext, ExecuteError, Executed, SecretWrite, SideWrites};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Written;
use crate::commands::{append_error, context};
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, ApiPath, ApiQuery, ReadAfter, RequestContext};
use crate::state::AppState;

/// The longest a rotated-out secret may stay valid.
const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// Where deliveries are POSTed: an https URL (http and internal addresses only when the
    /// operator allows them).
    pub url: String,
    /// Exact event types (`user.created`), prefixes (`user.login.*`), or `*` for all.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionBody {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// `admin`, `gone` (the receiver answered 410) or `failing` (deliveries kept being
    /// dead-lettered); null while enabled.
    pub disabled_reason: Option<String>,
    /// The version of the current signing secret.
    pub secret_version: u32,
    /// Until when the previous secret's signature is sent too, after a rotation.
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<SubscriptionRow> for SubscriptionBody {
    fn from(row: SubscriptionRow) -> Self {
        Self {
            id: row.id,
            tenant_id: row.tenant_id,
            url: row.url,
            event_types: row.event_types,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            secret_version: row.secret_version,
            previous_secret_valid_until: row.previous_secret.map(|(_, until)| until),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionCreated {
    pub id: Uuid,
    /// `whsec_...`: shown this once. Verify deliveries with it (Standard Webhooks).
    pub secret: String,
    pub secret_version: u32,
    /// The log position written; pass it as `X-Keyledger-Min-Position` to read the
    /// subscription back.
    pub position: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// An empty string clears it.
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the previous secret keeps signing too (0 to 604800 seconds; default: the
    /// server's `KEYLEDGER_WEBHOOK_SECRET_GRACE_SECONDS`).
    pub grace_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretRotatedBody {
    /// The new `whsec_...` secret: shown this once.
    pub secret: String,
    pub secret_version: u32,
    pub previous_secret_valid_until: DateTime<Utc>,
    pub position: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resync {
    /// Deliver again every matching event after this log position (0: from the start).
    pub after_position: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    /// The log position of the event to send again (it keeps its `webhook-id`).
    pub position: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptBody {
    pub id: Uuid,
    pub subscription_id: Uuid,
    /// The delivered event's id, which is the `webhook-id` header.
    pub event_id: Uuid,
    /// The event's log position (0 for a ping).
    pub position: u64,
    /// 1 for an event's first try.
    pub attempt: u32,
    /// `log` (following the log), `redelivery` or `ping`.
    pub trigger: String,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The first kilobyte of the receiver's answer.
    pub response_body: Option<String>,
    /// `delivered`, `failed`, `dead_lettered` or `gone`.
    pub outcome: String,
}

impl From<AttemptRecord> for AttemptBody {
    fn from(r: AttemptRecord) -> Self {
        Self {
            id: r.id,
            subscription_id: r.subscription_id,
            event_id: r.event_id,
            position: r.position,
            attempt: r.attempt,
            trigger: r.trigger,
            at: r.at,
            status_code: r.status_code,
            latency_ms: r.latency_ms,
            error: r.error,
            response_body: r.response_body,
            outcome: r.outcome,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptBody>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    /// Only attempts at the event at this log position.
    pub position: Option<u64>,
    /// Only attempts at this event (the `webhook-id`).
    pub event_id: Option<Uuid>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventAttemptQuery {
    /// The event (the `webhook-id`) whose attempts, across subscriptions, are wanted.
    pub event_id: Uuid,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterBody {
    pub position: u64,
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterBody>,
}

impl From<DeadLetter> for DeadLetterBody {
    fn from(d: DeadLetter) -> Self {
        Self {
            position: d.position,
            event_id: d.event_id,
            event_type: d.event_type,
            at: d.at,
            last_error: d.last_error,
        }
    }
}

fn subscription_error(e: ExecuteError<WebhookSubscriptionError>) -> ApiError {
    match e {
        ExecuteError::Domain(WebhookSubscriptionError::NotFound) => {
            ApiError::NotFound("webhook subscription")
        }
        ExecuteError::Domain(refused) if refused.is_bad_input() => ApiError::InvalidValue {
            code: refused.code(),
            detail: refused.to_string(),
        },
        ExecuteError::Domain(refused) => ApiError::Conflict {
            code: refused.code(),
            detail: refused.to_string(),
        },
        other => append_error(other),
    }
}

/// Refuses targets the delivery worker would refuse to connect to, before anything is written.
/// The shape is checked first, so a malformed URL is named as such and never resolved.
async fn check_target(state: &AppState, raw: &str) -> Result<(), ApiError> {
    let invalid = |code: &'static str, detail: String| ApiError::InvalidValue { code, detail };
    let target = TargetUrl::parse(raw).map_err(|e| {
        let refused = WebhookSubscriptionError::InvalidUrl(e);
        invalid(refused.code(), refused.to_string())
    })?;
    let url = url::Url::parse(target.as_str())
        .map_err(|e| invalid("invalid_webhook_url", e.to_string()))?;
    state
        .delivery
        .config()
        .addresses
        .check_url(&url)
        .await
        .map_err(|refused| invalid(refused.code(), refused.to_string()))
}

async fn execute(
    state: &AppState,
    id: Uuid,
    command: WebhookSubscriptionCommand,
    ctx: &CommandContext,
    secret: Option<&SigningSecret>,
) -> Result<Executed<WebhookSubscription>, ApiError> {
    state
        .webhooks
        .execute(&id.to_string(), command, &(), ctx, |_, after, events| {
            let announces_secret = events.iter().any(|e| {
                matches!(
                    e,
                    WebhookSubscriptionEvent::Created(_)
                        | WebhookSubscriptionEvent::SecretRotated(_)
                )
            });
            SideWrites {
                claims: Vec::new(),
                secrets: secret
                    .filter(|_| announces_secret)
                    .map(|s| SecretWrite {
                        kind: secret_kind(after.secret_version()),
                        value: Some(s.reveal()),
                    })
                    .into_iter()
                    .collect(),
                sessions: Vec::new(),
            }
        })
        .await
        .map_err(subscription_error)
}

/// Runs a command that needs nothing but the time, as the admin, and answers its position.
async fn run_admin(
    state: &AppState,
    admin: Admin,
    request: &RequestContext,
    id: Uuid,
    command: impl FnOnce(DateTime<Utc>) -> WebhookSubscriptionCommand,
) -> Result<Json<Written>, ApiError> {
    let ctx = context(state, DEFAULT_TENANT_ID, request, admin.actor);
    let executed = execute(state, id, command(ctx.now), &ctx, None).await?;
    Ok(written(&executed))
}

fn written(executed: &Executed<WebhookSubscription>) -> Json<Written> {
    Json(Written {
        position: executed.appended.map(|a| a.last_position),
    })
}

/// Subscriptions of other tenants answer as missing.
async fn visible(state: &AppState, id: Uuid) -> Result<SubscriptionRow, ApiError> {
    SubscriptionsView::get(state.db(), id)
        .await?
        .filter(|row| row.tenant_id == DEFAULT_TENANT_ID)
        .ok_or(ApiError::NotFound("webhook subscription"))
}

fn limit(raw: Option<u32>) -> Result<u32, ApiError> {
    match raw.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        _ => Err(ApiError::InvalidParameter("limit must be 1 to 1000".into())),
    }
}

#[utoipa::path(post, path = "/api/v1/webhooks", request_body = CreateSubscription,
    responses((status = 201, body = SubscriptionCreated), (status = 400)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn create_subscription(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> Result<(StatusCode, Json<SubscriptionCreated>), ApiError> {
    check_target(&state, &body.url).await?;
    let id = Uuid::now_v7();
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    let secret = SigningSecret::generate();
    let command = WebhookSubscriptionCommand::Create {
        subscription_id: id,
        tenant_id: DEFAULT_TENANT_ID,
        url: body.url,
        event_types: body.event_types,
        description: body.description,
        enabled: body.enabled.unwrap_or(true),
        at: ctx.now,
    };
    let executed = execute(&state, id, command, &ctx, Some(&secret)).await?;
    let position = executed
        .appended
        .map(|a| a.last_position)
        .ok_or_else(|| ApiError::internal("creation wrote nothing"))?;
    tracing::info!(subscription = %id, "webhook subscription created");
    Ok((
        StatusCode::CREATED,
        Json(SubscriptionCreated {
            id,
            secret: secret.reveal(),
            secret_version: executed.aggregate.secret_version(),
            position,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks",
    responses((status = 200, body = SubscriptionList)), security(("admin" = [])), tag = "webhooks")]
pub async fn list_subscriptions(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let rows = SubscriptionsView::list(state.db(), DEFAULT_TENANT_ID).await?;
    Ok(Json(SubscriptionList {
        subscriptions: rows.into_iter().map(SubscriptionBody::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}",
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = SubscriptionBody), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn get_subscription(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<SubscriptionBody>, ApiError> {
    Ok(Json(visible(&state, id).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", request_body = UpdateSubscription,
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = Written), (status = 400), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn update_subscription(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateSubscription>,
) -> Result<Json<Written>, ApiError> {
    if let Some(url) = &body.url {
        check_target(&state, url).await?;
    }
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    let update = WebhookSubscriptionCommand::Update {
        url: body.url,
        event_types: body.event_types,
        description: body
            .description
            .map(|d| Some(d).filter(|d| !d.trim().is_empty())),
        at: ctx.now,
    };
    let mut last = execute(&state, id, update, &ctx, None).await?;
    let toggle = match body.enabled {
        Some(true) => Some(WebhookSubscriptionCommand::Enable { at: ctx.now }),
        Some(false) => Some(WebhookSubscriptionCommand::Disable {
            reason: DisableReason::Admin,
            detail: None,
            at: ctx.now,
        }),
        None => None,
    };
    if let Some(toggle) = toggle {
        let toggled = execute(&state, id, toggle, &ctx, None).await?;
        if toggled.appended.is_some() {
            last = toggled;
        }
    }
    Ok(written(&last))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}",
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = Written), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn delete_subscription(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Written>, ApiError> {
    run_admin(&state, admin, &request, id, |at| {
        WebhookSubscriptionCommand::Delete { at }
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/disable",
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = Written), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn disable_subscription(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Written>, ApiError> {
    run_admin(&state, admin, &request, id, |at| {
        WebhookSubscriptionCommand::Disable {
            reason: DisableReason::Admin,
            detail: None,
            at,
        }
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/enable",
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = Written), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn enable_subscription(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Written>, ApiError> {
    run_admin(&state, admin, &request, id, |at| {
        WebhookSubscriptionCommand::Enable { at }
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", request_body = RotateSecret,
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = SecretRotatedBody), (status = 400), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn rotate_secret(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RotateSecret>,
) -> Result<Json<SecretRotatedBody>, ApiError> {
    let grace = body
        .grace_seconds
        .unwrap_or(state.config.webhook_secret_grace_seconds);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::InvalidValue {
            code: "invalid_grace_period",
            detail: format!("grace_seconds must be 0 to {MAX_GRACE_SECONDS}"),
        });
    }
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    let previous_valid_until =
        ctx.now + chrono::Duration::seconds(i64::try_from(grace).unwrap_or(0));
    let secret = SigningSecret::generate();
    let command = WebhookSubscriptionCommand::RotateSecret {
        previous_valid_until,
        at: ctx.now,
    };
    let executed = execute(&state, id, command, &ctx, Some(&secret)).await?;
    let position = executed
        .appended
        .map(|a| a.last_position)
        .ok_or_else(|| ApiError::internal("rotation wrote nothing"))?;
    tracing::info!(subscription = %id, version = executed.aggregate.secret_version(), "webhook secret rotated");
    Ok(Json(SecretRotatedBody {
        secret: secret.reveal(),
        secret_version: executed.aggregate.secret_version(),
        previous_secret_valid_until: previous_valid_until,
        position,
    }))
}

async fn head(state: &AppState) -> Result<u64, ApiError> {
    Ok(state.log.head().await?.map_or(0, |h| h.position))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/resync", request_body = Resync,
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = Written), (status = 400), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn resync_subscription(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Resync>,
) -> Result<Json<Written>, ApiError> {
    let head = head(&state).await?;
    run_admin(&state, admin, &request, id, |at| {
        WebhookSubscriptionCommand::Resync {
            after_position: body.after_position,
            head,
            at,
        }
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/redeliver", request_body = Redeliver,
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 202, body = Written), (status = 400), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn redeliver(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Redeliver>,
) -> Result<(StatusCode, Json<Written>), ApiError> {
    let head = head(&state).await?;
    let written = run_admin(&state, admin, &request, id, |at| {
        WebhookSubscriptionCommand::RequestRedelivery {
            event_position: body.position,
            head,
            at,
        }
    })
    .await?;
    Ok((StatusCode::ACCEPTED, written))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/ping",
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = AttemptBody), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn ping(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AttemptBody>, ApiError> {
    let subscription = visible(&state, id).await?;
    let attempt = state.delivery.ping(&subscription).await?;
    Ok(Json(attempt.into()))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}/attempts",
    params(("id" = Uuid, Path, description = "The subscription id"), AttemptQuery),
    responses((status = 200, body = AttemptList), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn list_attempts(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<AttemptQuery>,
) -> Result<Json<AttemptList>, ApiError> {
    visible(&state, id).await?;
    let filter = AttemptFilter {
        subscription_id: Some(id),
        event_id: query.event_id,
        position: query.position,
        limit: limit(query.limit)?,
    };
    let attempts = state::attempts(state.db(), &filter).await?;
    Ok(Json(AttemptList {
        attempts: attempts.into_iter().map(AttemptBody::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/webhooks/attempts", params(EventAttemptQuery),
    responses((status = 200, body = AttemptList)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn list_event_attempts(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventAttemptQuery>,
) -> Result<Json<AttemptList>, ApiError> {
    let filter = AttemptFilter {
        subscription_id: None,
        event_id: Some(query.event_id),
        position: None,
        limit: limit(query.limit)?,
    };
    let visible_ids: Vec<Uuid> = SubscriptionsView::list(state.db(), DEFAULT_TENANT_ID)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let attempts = state::attempts(state.db(), &filter).await?;
    Ok(Json(AttemptList {
        attempts: attempts
            .into_iter()
            .filter(|a| visible_ids.contains(&a.subscription_id))
            .map(AttemptBody::from)
            .collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}/dead-letters",
    params(("id" = Uuid, Path, description = "The subscription id")),
    responses((status = 200, body = DeadLetterList), (status = 404)),
    security(("admin" = [])), tag = "webhooks")]
pub async fn list_dead_letters(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<DeadLetterList>, ApiError> {
    visible(&state, id).await?;
    let dead = state::dead_letters(state.db(), id, 1000).await?;
    Ok(Json(DeadLetterList {
        dead_letters: dead.into_iter().map(DeadLetterBody::from).collect(),
    }))
}
