//! Health, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// Position of the newest event in the log.
    pub log_position: u64,
    /// Position every view has folded.
    pub views_position: u64,
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)), tag = "system")]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let head = state.log.head().await?;
    Ok(Json(Health {
        status: "ok",
        log_position: head.map(|h| h.position).unwrap_or(0),
        views_position: state.progress.reached(),
    }))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain")),
    tag = "system")]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let head = state.log.head().await?.map(|h| h.position).unwrap_or(0);
    let mut body = state
        .metrics
        .render(&state.passwords, head, state.progress.reached());
    body.push_str(&state.delivery.metrics.render());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

pub async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
