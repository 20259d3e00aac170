//! Password reset: `/api/v1/password-reset`. A request makes a single-use token that expires
//! after 5 minutes, kept only as a hash, and queues a mail with it in the outbox; completing
//! the reset needs the token and, when the user holds one, their second factor.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Duration;
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::user::{SecondFactorProof, UserCommand, UserEvent};
use keyledger_domain::values::{Email, Username};
use keyledger_store::{Actor, ActorKind, Ceremony, CommandContext, Mail, SecretWrite, SideWrites};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::PublicKeyCredential;

use super::Written;
use super::mfa::{AssertionBeginBody, begin_assertion, verified_assertion};
use crate::commands::{
    claim, context, context_words, propose_password, run_password_command, tenant, user_error,
    user_stream,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, RequestContext};
use crate::second_factors::{TOTP_SECRET, load_user, token_key, totp, totp_step};
use crate::state::AppState;
use crate::tokens;

const RESET_TOKEN: &str = "password_reset";
const RESET_ASSERTION: &str = "password_reset_assertion";
const RESET_MINUTES: i64 = 5;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Either `username` or `email`.
    pub username: Option<String>,
    pub email: Option<String>,
}

/// The same answer whether or not the account exists.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetAccepted {
    /// `accepted`: if the account exists and has an email, a reset link is on its way.
    pub status: &'static str,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetTokenBody {
    pub reset_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetComplete {
    pub reset_token: String,
    pub new_password: String,
    /// A TOTP code, when the user proves their second factor with TOTP.
    pub totp_code: Option<String>,
    /// From `/password-reset/webauthn/begin`, with `credential`.
    pub ceremony_id: Option<String>,
    /// The `PublicKeyCredential` from `navigator.credentials.get`, as `toJSON()` gives it.
    #[schema(value_type = Option<Object>)]
    pub credential: Option<PublicKeyCredential>,
}

fn system() -> Actor {
    Actor {
        kind: ActorKind::System,
        id: None,
    }
}

#[utoipa::path(post, path = "/api/v1/password-reset", request_body = ResetRequest,
    responses((status = 202, body = ResetAccepted), (status = 400)), tag = "sessions")]
pub async fn request_reset(
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<(StatusCode, Json<ResetAccepted>), ApiError> {
    let tenant_id = DEFAULT_TENANT_ID;
    let key = match (&body.username, &body.email) {
        (Some(u), None) => Username::parse(u)
            .ok()
            .map(|u| claim(tenant_id, "username", &u.normalized())),
        (None, Some(e)) => Email::parse(e)
            .ok()
            .map(|e| claim(tenant_id, "email", &e.normalized())),
        _ => {
            return Err(ApiError::InvalidBody(
                "give exactly one of username and email".into(),
            ));
        }
    };
    let accepted = (
        StatusCode::ACCEPTED,
        Json(ResetAccepted { status: "accepted" }),
    );
    let owner = match key {
        Some(key) => state.log.claim_owner(&key).await?,
        None => None,
    };
    let Some(user_id) = owner
        .filter(|s| s.kind == "user")
        .and_then(|s| Uuid::parse_str(&s.id).ok())
    else {
        tracing::info!("password reset requested for an unknown account");
        return Ok(accepted);
    };
    let user = load_user(&state, user_id).await?;
    let Some(email) = user.email().map(str::to_owned) else {
        tracing::info!(user_id = %user_id, "password reset requested for an account without email");
        return Ok(accepted);
    };
    let ctx = context(&state, tenant_id, &request, system());
    let token = tokens::generate();
    let expires_at = ctx.now + Duration::minutes(RESET_MINUTES);
    state
        .users
        .execute(
            &user_id.to_string(),
            UserCommand::RequestPasswordReset {
                expires_at,
                at: ctx.now,
            },
            &(),
            &ctx,
            |_, _, _| SideWrites::default(),
        )
        .await
        .map_err(user_error)?;
    state
        .ceremonies
        .put(
            &token_key(&token),
            &Ceremony {
                purpose: RESET_TOKEN.into(),
                tenant_id,
                user_id: Some(user_id),
                state: String::new(),
            },
            expires_at,
        )
        .await?;
    state
        .outbox
        .enqueue(
            &Mail {
                tenant_id,
                user_id,
                recipient: email,
                subject: "Reset your password".into(),
                body: format!(
                    "Someone asked to reset the password of {}. If it was you, use this code \
                     within {RESET_MINUTES} minutes:\n\n{token}\n\nIf not, ignore this message.",
                    user.username()
                ),
            },
            ctx.now,
        )
        .await?;
    Ok(accepted)
}

async fn reset_owner(state: &AppState, token: &str) -> Result<Uuid, ApiError> {
    state
        .ceremonies
        .peek(&token_key(token), RESET_TOKEN, state.clock.now())
        .await?
        .and_then(|c| c.user_id)
        .ok_or(ApiError::Unauthorized)
}

#[utoipa::path(post, path = "/api/v1/password-reset/webauthn/begin", request_body = ResetTokenBody,
    responses((status = 200, body = AssertionBeginBody), (status = 401), (status = 409)),
    tag = "sessions")]
pub async fn webauthn_begin(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetTokenBody>,
) -> Result<Json<AssertionBeginBody>, ApiError> {
    let user_id = reset_owner(&state, &body.reset_token).await?;
    let tenant = tenant(&state, DEFAULT_TENANT_ID).await?;
    Ok(Json(
        begin_assertion(
            &state,
            &tenant,
            user_id,
            RESET_ASSERTION,
            tenant.webauthn_settings().reauthentication,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/password-reset/complete", request_body = ResetComplete,
    responses((status = 200, body = Written), (status = 400), (status = 401), (status = 403),
        (status = 409)),
    tag = "sessions")]
pub async fn complete_reset(
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetComplete>,
) -> Result<Json<Written>, ApiError> {
    let user_id = reset_owner(&state, &body.reset_token).await?;
    let user = load_user(&state, user_id).await?;
    let tenant = tenant(&state, user.tenant_id()).await?;
    let ctx = context(
        &state,
        user.tenant_id(),
        &request,
        Actor {
            kind: ActorKind::User,
            id: Some(user_id.to_string()),
        },
    );
    let second_factor_ok = if user.has_second_factor() {
        prove_second_factor(&state, &tenant, &user, &body, &ctx).await?
    } else {
        false
    };
    // The token answers once, and only after the second factor held.
    state
        .ceremonies
        .take(&token_key(&body.reset_token), RESET_TOKEN, ctx.now)
        .await?
        .filter(|c| c.user_id == Some(user_id))
        .ok_or(ApiError::Unauthorized)?;
    let proposal = propose_password(
        &state,
        &tenant,
        &body.new_password,
        &context_words(&user),
        user.has_second_factor(),
    )
    .await?;
    let command = UserCommand::ResetPassword {
        proposal: proposal.proposed(state.passwords.params()),
        policy: tenant.password_policy().clone(),
        second_factor_ok,
        at: ctx.now,
    };
    // The reset's event ends every session of the user in its own transaction.
    let written = run_password_command(
        &state,
        user_id,
        command,
        &ctx,
        proposal.phc.as_ref(),
        Vec::new(),
    )
    .await?;
    tracing::info!(user_id = %user_id, "password reset; sessions ended");
    Ok(Json(written))
}

/// Verifies the factor the request carries and records its use; `true` when it held.
async fn prove_second_factor(
    state: &AppState,
    tenant: &keyledger_domain::tenant::Tenant,
    user: &keyledger_domain::user::User,
    body: &ResetComplete,
    ctx: &CommandContext,
) -> Result<bool, ApiError> {
    let required = || ApiError::Forbidden {
        code: "second_factor_required",
        detail: "the user holds a second factor: give a TOTP code or a WebAuthn assertion".into(),
    };
    let (proof, secrets) = match (&body.totp_code, &body.ceremony_id, &body.credential) {
        (_, Some(ceremony_id), Some(credential)) => {
            let (proof, secret) = verified_assertion(
                state,
                tenant,
                user.id(),
                RESET_ASSERTION,
                ceremony_id,
                credential,
                Uuid::now_v7(),
                ctx,
            )
            .await?;
            (proof, vec![secret])
        }
        (Some(code), _, _) => {
            let secret = state
                .log
                .secret(&user_stream(user.id()), TOTP_SECRET)
                .await?
                .and_then(|hex_secret| hex::decode(hex_secret).ok())
                .ok_or(ApiError::MfaFailed)?;
            let generator = totp(secret, user.username(), tenant.relying_party_name())?;
            let step = totp_step(&generator, code, ctx.now).ok_or(ApiError::MfaFailed)?;
            (SecondFactorProof::Totp { step }, Vec::new())
        }
        _ => return Err(required()),
    };
    let accepted = |events: &[UserEvent]| {
        events
            .iter()
            .any(|e| matches!(e, UserEvent::WebauthnUsed(_) | UserEvent::TotpUsed(_)))
    };
    let executed = state
        .users
        .execute(
            &user.id().to_string(),
            UserCommand::UseSecondFactor {
                proof,
                login: None,
                at: ctx.now,
            },
            &(),
            ctx,
            |_, _, events| SideWrites {
                claims: Vec::new(),
                secrets: if accepted(events) {
                    secrets.clone()
                } else {
                    Vec::<SecretWrite>::new()
                },
                sessions: Vec::new(),
            },
        )
        .await
        .map_err(user_error)?;
    if accepted(&executed.events) {
        Ok(true)
    } else {
        Err(ApiError::MfaFailed)
    }
}
