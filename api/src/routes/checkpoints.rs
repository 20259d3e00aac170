//! Signed checkpoints of the chain head: `/api/v1/checkpoints`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyledger_store::RecordedEvent;
use keyledger_store::checkpoint::{Checkpoint, checkpoint_stream};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::{Admin, ApiQuery, RequestContext};
use crate::state::AppState;

/// A checkpoint as signed: save the answer to a file and give it to
/// `keyledger replay verify --checkpoint FILE --public-key KEY`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointBody {
    /// The signed head position (0 for an empty log).
    pub position: u64,
    /// The signed head hash, hex.
    pub hash: String,
    pub signed_at: DateTime<Utc>,
    /// The Ed25519 public key, hex.
    pub public_key: String,
    /// The Ed25519 signature over the bytes in `docs/log-format.md`, hex.
    pub signature: String,
    /// Where the checkpoint itself is in the log.
    pub event_position: u64,
    /// The checkpoint's number in its stream (the cursor of the list).
    pub sequence: u64,
}

impl CheckpointBody {
    fn new(checkpoint: &Checkpoint, event_position: u64, sequence: u64) -> Self {
        let json = checkpoint.to_json();
        Self {
            position: json.position,
            hash: json.hash,
            signed_at: json.signed_at,
            public_key: json.public_key,
            signature: json.signature,
            event_position,
            sequence,
        }
    }

    fn from_event(event: &RecordedEvent) -> Result<Self, ApiError> {
        let checkpoint = Checkpoint::from_event(event).map_err(ApiError::internal)?;
        Ok(Self::new(&checkpoint, event.position, event.stream_version))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointPage {
    pub items: Vec<CheckpointBody>,
    pub next_cursor: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/checkpoints", params(CheckpointQuery),
    responses((status = 200, body = CheckpointPage), (status = 400), (status = 401)),
    security(("admin" = [])), tag = "checkpoints")]
pub async fn list_checkpoints(
    _admin: Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<CheckpointQuery>,
) -> Result<Json<CheckpointPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidParameter("limit must be 1 to 1000".into()));
    }
    let mut events = state
        .log
        .read_stream_page(&checkpoint_stream(), query.cursor.unwrap_or(0), limit + 1)
        .await?;
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next_cursor = if more {
        events.last().map(|e| e.stream_version)
    } else {
        None
    };
    Ok(Json(CheckpointPage {
        items: events
            .iter()
            .map(CheckpointBody::from_event)
            .collect::<Result<_, _>>()?,
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/checkpoints/latest",
    responses((status = 200, body = CheckpointBody), (status = 401), (status = 404)),
    security(("admin" = [])), tag = "checkpoints")]
pub async fn latest_checkpoint(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<CheckpointBody>, ApiError> {
    let event = state
        .log
        .last_in_stream(&checkpoint_stream())
        .await?
        .ok_or(ApiError::NotFound("checkpoint"))?;
    Ok(Json(CheckpointBody::from_event(&event)?))
}

/// Signs the chain head now.
#[utoipa::path(post, path = "/api/v1/checkpoints",
    responses((status = 201, body = CheckpointBody), (status = 401)),
    security(("admin" = [])), tag = "checkpoints")]
pub async fn sign_checkpoint(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<CheckpointBody>), ApiError> {
    let (checkpoint, appended) = crate::signing::sign_checkpoint(
        &state.log,
        &state.signing_key,
        request.metadata(admin.actor),
        state.clock.now(),
    )
    .await
    .map_err(ApiError::internal)?;
    tracing::info!(
        position = checkpoint.position,
        at = appended.last_position,
        "checkpoint signed on demand"
    );
    Ok((
        StatusCode::CREATED,
        Json(CheckpointBody::new(
            &checkpoint,
            appended.last_position,
            appended.stream_version,
        )),
    ))
}
