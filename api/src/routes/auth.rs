//! Password login, sessions and the user's own password: `/api/v1/login`, `/logout`, `/me`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::password::{PasswordFacts, normalize};
use keyledger_domain::user::{UserCommand, UserEvent, unknown_login};
use keyledger_domain::values::{Email, Username};
use keyledger_store::executor::encode_event;
use keyledger_store::{
    Actor, ActorKind, AppendError, AppendRequest, ExecuteError, ExpectedVersion, NewSession,
    SessionChange, SideWrites, StreamId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Written;
use super::mfa::{EnrollmentChallenge, MfaChallenge, second_step};
use super::users::UserBody;
use crate::commands::{
    PASSWORD_SECRET, Proposal, claim, context, context_words, decided_on_tenant, kept_tenant,
    loaded_tenant, password_secret, propose_password, run_password_command, tenant, user_error,
    user_stream,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, RequestContext, UserSession};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::tokens;

/// A tenant's policies change rarely; a login that finds them changed this many times in a
/// row answers 409 rather than spin.
const MAX_TENANT_REREADS: u32 = 8;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Either `username` or `email`.
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: String,
    /// The application the user logs in to: its workflow overrides apply to the second step.
    pub application_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// `authenticated`.
    pub status: &'static str,
    /// Opaque bearer token; the server keeps only its hash.
    pub token: String,
    pub token_type: &'static str,
    pub user_id: Uuid,
    /// The session ends at the latest then, or earlier after idling.
    pub expires_at: DateTime<Utc>,
    pub position: Option<u64>,
}

/// A session for a login that has not been decided yet. It starts with the events of a
/// successful login ([`PendingSession::start`]), in their transaction or not at all, so no
/// session exists without its recorded login, and none outlives a suspension or lock that
/// follows the login.
pub(crate) struct PendingSession {
    token: String,
    session: NewSession,
}

impl PendingSession {
    pub(crate) fn new(
        state: &AppState,
        user_id: Uuid,
        tenant_id: Uuid,
        now: DateTime<Utc>,
    ) -> Self {
        let token = tokens::generate();
        let session = NewSession {
            token_hash: tokens::hash(&token),
            user_id,
            tenant_id,
            created_at: now,
            idle: state.config.session_idle,
            absolute: state.config.session_absolute,
        };
        Self { token, session }
    }

    /// The side write that starts the session, for an append that records a successful login.
    pub(crate) fn start(&self) -> SessionChange {
        SessionChange::Start(self.session.clone())
    }

    pub(crate) fn token_hash(&self) -> [u8; 32] {
        self.session.token_hash
    }

    /// The answer that hands the started session's token over.
    pub(crate) fn answer(self, position: Option<u64>) -> LoginResponse {
        LoginResponse {
            status: "authenticated",
            token: self.token,
            token_type: "Bearer",
            user_id: self.session.user_id,
            expires_at: self.session.created_at + self.session.absolute,
            position,
        }
    }
}

/// A session, or the second step the login owes (`status` says which).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    Authenticated(LoginResponse),
    MfaRequired(MfaChallenge),
    MfaEnrollmentRequired(EnrollmentChallenge),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
    /// Required when the user holds a second factor: from `/me/step-up/...`.
    pub step_up_token: Option<String>,
    /// `true` ends every other session of the user with the change (ASVS 5.0 7.4.3); the
    /// session that asks stays. Nothing is ended when the change is refused.
    #[serde(default)]
    pub end_other_sessions: bool,
}

/// The actor of a login attempt: the claimed user when known, the system otherwise.
fn attempt_actor(user_id: Option<Uuid>) -> Actor {
    match user_id {
        Some(id) => Actor {
            kind: ActorKind::User,
            id: Some(id.to_string()),
        },
        None => Actor {
            kind: ActorKind::System,
            id: None,
        },
    }
}

/// Whether `events` record a completed login.
pub(crate) fn login_succeeded(events: &[UserEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, UserEvent::LoginSucceeded(_)))
}

#[utoipa::path(post, path = "/api/v1/login", request_body = LoginRequest,
    responses((status = 200, body = LoginAnswer), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "The tenant's policies kept changing during the login")),
    tag = "sessions")]
pub async fn login(
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginAnswer>, ApiError> {
    let tenant_id = DEFAULT_TENANT_ID;
    // An unknown application is refused before any password work: it says nothing about
    // the account.
    if let Some(id) = body.application_id {
        super::applications::load_application(&state, tenant_id, id).await?;
    }
    let (identifier, kind, normalized) = match (&body.username, &body.email) {
        (Some(u), None) => (
            u.trim().to_owned(),
            "username",
            Username::parse(u).ok().map(|u| u.normalized()),
        ),
        (None, Some(e)) => (
            e.trim().to_owned(),
            "email",
            Email::parse(e).ok().map(|e| e.normalized()),
        ),
        _ => {
            return Err(ApiError::InvalidBody(
                "give exactly one of username and email".into(),
            ));
        }
    };
    let owner = match normalized {
        Some(value) => {
            state
                .log
                .claim_owner_with_secret(&claim(tenant_id, kind, &value), PASSWORD_SECRET)
                .await?
        }
        None => None,
    };
    let (user_id, stored) = match owner {
        Some((stream, stored)) if stream.kind == "user" => {
            (Uuid::parse_str(&stream.id).ok(), stored)
        }
        _ => (None, None),
    };
    let attempt_id = Uuid::now_v7();
    let password = normalize(&body.password);

    let Some(user_id) = user_id else {
        // Same work as for a known user: a verification against the dummy hash.
        state
            .passwords
            .verify(password, None)
            .await
            .map_err(ApiError::internal)?;
        let ctx = context(&state, tenant_id, &request, attempt_actor(None));
        let event = unknown_login::failed_attempt(attempt_id, identifier, ctx.now);
        let event = encode_event(&event, &ctx).map_err(ApiError::internal)?;
        state
            .log
            .append(AppendRequest {
                stream: StreamId::new(unknown_login::STREAM_KIND, tenant_id.to_string()),
                expected: ExpectedVersion::Any,
                events: vec![event],
                claims: Vec::new(),
                secrets: Vec::new(),
                sessions: Vec::new(),
                decided_on: Vec::new(),
            })
            .await
            .map_err(ApiError::internal)?;
        Metrics::inc(&state.metrics.logins_failed);
        return Err(ApiError::LoginFailed);
    };

    let verified = state
        .passwords
        .verify(password.clone(), stored)
        .await
        .map_err(ApiError::internal)?;
    // An outdated hash is replaced by one with today's parameters, now that we know the
    // password; the new hash commits with the success or not at all.
    let rehash = if verified.matches && verified.outdated {
        Some(
            state
                .passwords
                .hash(password)
                .await
                .map_err(ApiError::internal)?,
        )
    } else {
        None
    };
    let mut ctx = context(&state, tenant_id, &request, attempt_actor(Some(user_id)));
    let session = PendingSession::new(&state, user_id, tenant_id, ctx.now);
    // The lockout decision is made under the tenant's policy as this node last saw it, with
    // no read; the append checks that the tenant has not moved on since, and if it has, the
    // attempt is decided again under the policy read from the log. A login always appends
    // (a failure is recorded too), so no decision escapes that check.
    let (mut tenant, mut tenant_version) = kept_tenant(&state, tenant_id).await?;
    let mut attempts = 0;
    let executed = loop {
        attempts += 1;
        ctx.decided_on = vec![decided_on_tenant(tenant_id, tenant_version)];
        let command = UserCommand::RecordLoginAttempt {
            attempt_id,
            identifier: identifier.clone(),
            password_ok: verified.matches,
            rehash: rehash.as_ref().map(|_| state.passwords.params()),
            lockout: tenant.lockout_policy().clone(),
            lockout_version: tenant.lockout_policy_version(),
            tenant_mfa: tenant.webauthn_settings().mfa_requirement,
            at: ctx.now,
        };
        let outcome = state
            .users
            .execute(&user_id.to_string(), command, &(), &ctx, |_, _, events| {
                SideWrites {
                    claims: Vec::new(),
                    secrets: password_secret(events, rehash.as_ref()),
                    sessions: if login_succeeded(events) {
                        vec![session.start()]
                    } else {
                        Vec::new()
                    },
                }
            })
            .await;
        match outcome {
            Err(ExecuteError::Append(AppendError::DecidedOnStaleState { .. }))
                if attempts < MAX_TENANT_REREADS =>
            {
                (tenant, tenant_version) = loaded_tenant(&state, tenant_id).await?;
            }
            outcome => break outcome.map_err(user_error)?,
        }
    };
    if executed
        .events
        .iter()
        .any(|e| matches!(e, UserEvent::FirstFactorPassed(_)))
    {
        let next = second_step(
            &state,
            &tenant,
            &executed.aggregate,
            attempt_id,
            body.application_id,
            ctx.now,
        )
        .await?;
        return Ok(Json(match next {
            Ok(challenge) => LoginAnswer::MfaRequired(challenge),
            Err(enrollment) => LoginAnswer::MfaEnrollmentRequired(enrollment),
        }));
    }
    if !login_succeeded(&executed.events) {
        Metrics::inc(&state.metrics.logins_failed);
        return Err(ApiError::LoginFailed);
    }
    Metrics::inc(&state.metrics.logins_succeeded);
    Ok(Json(LoginAnswer::Authenticated(
        session.answer(executed.appended.map(|a| a.last_position)),
    )))
}

#[utoipa::path(post, path = "/api/v1/logout",
    responses((status = 204), (status = 401)), security(("session" = [])), tag = "sessions")]
pub async fn logout(
    session: UserSession,
    State(state): State<AppState>,
) -> Result<StatusCode, ApiError> {
    state
        .sessions
        .revoke(session.token_hash, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/me",
    responses((status = 200, body = UserBody), (status = 401)), security(("session" = [])),
    tag = "sessions")]
pub async fn me(
    session: UserSession,
    State(state): State<AppState>,
) -> Result<Json<UserBody>, ApiError> {
    let (user, _) = state
        .users
        .load(&session.user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(UserBody::from_user(&user, state.clock.now())))
}

#[utoipa::path(post, path = "/api/v1/me/password", request_body = ChangePasswordRequest,
    responses((status = 200, body = Written), (status = 400), (status = 401), (status = 403),
        (status = 409)),
    security(("session" = [])), tag = "sessions")]
pub async fn change_password(
    session: UserSession,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<Json<Written>, ApiError> {
    let id = session.user_id.to_string();
    let (user, _) = state.users.load(&id).await.map_err(ApiError::internal)?;
    if user.has_second_factor() {
        super::step_up::require_step_up(&state, session.user_id, body.step_up_token.as_deref())
            .await?;
    }
    let tenant = tenant(&state, session.tenant_id).await?;
    let stored = state
        .log
        .secret(&user_stream(session.user_id), PASSWORD_SECRET)
        .await?;
    let current = state
        .passwords
        .verify(normalize(&body.current_password), stored)
        .await
        .map_err(ApiError::internal)?;
    let words = context_words(&user);
    // A wrong current password is refused before any hashing of the new one.
    let proposal = if current.matches {
        propose_password(
            &state,
            &tenant,
            &body.new_password,
            &words,
            user.has_second_factor(),
        )
        .await?
    } else {
        Proposal {
            facts: PasswordFacts::measure(&body.new_password, &words),
            phc: None,
        }
    };
    let ctx = context(&state, session.tenant_id, &request, session.actor());
    let command = UserCommand::ChangePassword {
        current_password_ok: current.matches,
        proposal: proposal.proposed(state.passwords.params()),
        policy: tenant.password_policy().clone(),
        at: ctx.now,
    };
    let others = if body.end_other_sessions {
        vec![SessionChange::EndOthers {
            user_id: session.user_id,
            kept: session.token_hash,
            at: ctx.now,
        }]
    } else {
        Vec::new()
    };
    let written = run_password_command(
        &state,
        session.user_id,
        command,
        &ctx,
        proposal.phc.as_ref(),
        others,
    )
    .await?;
    Ok(Json(written))
}
