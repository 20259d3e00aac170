//! Step-up: a fresh second factor before a sensitive action (`/api/v1/me/step-up/...`). A
//! verified factor yields a step-up token (5 minutes, single use) that the action presents;
//! changing one's password needs one when the user holds a factor.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use keyledger_domain::user::{SecondFactorProof, UserCommand, UserEvent};
use keyledger_store::{Ceremony, CommandContext, SecretWrite, SideWrites};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::PublicKeyCredential;

use super::mfa::{AssertionBeginBody, begin_assertion, verified_assertion};
use crate::commands::{context, tenant, user_error, user_stream};
use crate::error::ApiError;
use crate::extract::{ApiJson, RequestContext, UserSession};
use crate::second_factors::{TOTP_SECRET, load_user, token_key, totp, totp_step};
use crate::state::AppState;
use crate::tokens;

const STEP_UP_ASSERTION: &str = "step_up_assertion";
const STEP_UP_TOKEN: &str = "step_up_token";

#[derive(Debug, Serialize, ToSchema)]
pub struct StepUpBody {
    /// Present it with the sensitive request; it answers once, within 5 minutes.
    pub step_up_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpBegin {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpFinish {
    pub ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get`, as `toJSON()` gives it.
    #[schema(value_type = Object)]
    pub credential: PublicKeyCredential,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpTotp {
    pub code: String,
}

#[utoipa::path(post, path = "/api/v1/me/step-up/webauthn/begin", request_body = StepUpBegin,
    responses((status = 200, body = AssertionBeginBody), (status = 401), (status = 409)),
    security(("session" = [])), tag = "sessions")]
pub async fn webauthn_begin(
    session: UserSession,
    State(state): State<AppState>,
    ApiJson(_body): ApiJson<StepUpBegin>,
) -> Result<Json<AssertionBeginBody>, ApiError> {
    let tenant = tenant(&state, session.tenant_id).await?;
    Ok(Json(
        begin_assertion(
            &state,
            &tenant,
            session.user_id,
            STEP_UP_ASSERTION,
            tenant.webauthn_settings().reauthentication,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/me/step-up/webauthn/finish", request_body = StepUpFinish,
    responses((status = 200, body = StepUpBody), (status = 401)),
    security(("session" = [])), tag = "sessions")]
pub async fn webauthn_finish(
    session: UserSession,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StepUpFinish>,
) -> Result<Json<StepUpBody>, ApiError> {
    let tenant = tenant(&state, session.tenant_id).await?;
    let ctx = context(&state, session.tenant_id, &request, session.actor());
    let (proof, secret) = verified_assertion(
        &state,
        &tenant,
        session.user_id,
        STEP_UP_ASSERTION,
        &body.ceremony_id,
        &body.credential,
        Uuid::now_v7(),
        &ctx,
    )
    .await?;
    stepped_up(&state, session.user_id, proof, vec![secret], &ctx).await
}

#[utoipa::path(post, path = "/api/v1/me/step-up/totp", request_body = StepUpTotp,
    responses((status = 200, body = StepUpBody), (status = 401)),
    security(("session" = [])), tag = "sessions")]
pub async fn totp_step_up(
    session: UserSession,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StepUpTotp>,
) -> Result<Json<StepUpBody>, ApiError> {
    let tenant = tenant(&state, session.tenant_id).await?;
    let user = load_user(&state, session.user_id).await?;
    let ctx = context(&state, session.tenant_id, &request, session.actor());
    let secret = state
        .log
        .secret(&user_stream(session.user_id), TOTP_SECRET)
        .await?
        .and_then(|hex_secret| hex::decode(hex_secret).ok())
        .ok_or(ApiError::MfaFailed)?;
    let generator = totp(secret, user.username(), tenant.relying_party_name())?;
    let step = totp_step(&generator, &body.code, ctx.now).ok_or(ApiError::MfaFailed)?;
    stepped_up(
        &state,
        session.user_id,
        SecondFactorProof::Totp { step },
        Vec::new(),
        &ctx,
    )
    .await
}

async fn stepped_up(
    state: &AppState,
    user_id: Uuid,
    proof: SecondFactorProof,
    secrets: Vec<SecretWrite>,
    ctx: &CommandContext,
) -> Result<Json<StepUpBody>, ApiError> {
    let command = UserCommand::UseSecondFactor {
        proof,
        login: None,
        at: ctx.now,
    };
    let accepted = |events: &[UserEvent]| {
        events
            .iter()
            .any(|e| matches!(e, UserEvent::WebauthnUsed(_) | UserEvent::TotpUsed(_)))
    };
    let executed = state
        .users
        .execute(&user_id.to_string(), command, &(), ctx, |_, _, events| {
            SideWrites {
                claims: Vec::new(),
                secrets: if accepted(events) {
                    secrets.clone()
                } else {
                    Vec::new()
                },
                sessions: Vec::new(),
            }
        })
        .await
        .map_err(user_error)?;
    if !accepted(&executed.events) {
        return Err(ApiError::MfaFailed);
    }
    let token = tokens::generate();
    let expires_at = ctx.now + Duration::minutes(5);
    state
        .ceremonies
        .put(
            &token_key(&token),
            &Ceremony {
                purpose: STEP_UP_TOKEN.into(),
                tenant_id: ctx.tenant_id,
                user_id: Some(user_id),
                state: String::new(),
            },
            expires_at,
        )
        .await?;
    Ok(Json(StepUpBody {
        step_up_token: token,
        expires_at,
    }))
}

/// Spends a step-up token of `user_id`; refuses with `step_up_required` when there is none.
pub async fn require_step_up(
    state: &AppState,
    user_id: Uuid,
    token: Option<&str>,
) -> Result<(), ApiError> {
    let required = || ApiError::Forbidden {
        code: "step_up_required",
        detail: "this needs a fresh second factor: POST /api/v1/me/step-up/... first".into(),
    };
    let token = token.ok_or_else(required)?;
    state
        .ceremonies
        .take(&token_key(token), STEP_UP_TOKEN, state.clock.now())
        .await?
        .filter(|c| c.user_id == Some(user_id))
        .map(|_| ())
        .ok_or_else(required)
}
