//! The second step of a login (`/api/v1/login/mfa/...`), enrollment during login
//! (`/api/v1/login/enroll/...`) and the user's TOTP (`/api/v1/me/totp`).
//!
//! A right password for a user who owes a second factor yields an MFA token (5 minutes),
//! never a session; the token is kept only as a hash, in the ceremonies table.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use keyledger_domain::mfa::{
    Attachment, CredentialActor, CredentialId, CredentialKind, UserVerification, Workflow,
};
use keyledger_domain::tenant::Tenant;
use keyledger_domain::user::{
    LoginMethod, MfaFailureReason, MfaMethod, SecondFactorProof, User, UserCommand,
};
use keyledger_store::{Actor, ActorKind, Ceremony, CommandContext, SecretWrite, SideWrites};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RequestChallengeResponse};
use webauthn_rs_core::proto::AuthenticationState;

use super::Written;
use super::applications::effective_settings;
use super::auth::{LoginResponse, PendingSession, login_succeeded};
use crate::commands::{context, tenant, user_error, user_stream};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, RequestContext, UserSession};
use crate::metrics::Metrics;
use crate::relying_party::{CEREMONY_SECONDS, RelyingParty, passkey_secret_kind, relying_party};
use crate::second_factors::{
    NewKind, RegisterBeginBody, RegisterFinish, TOTP_SECRET, begin_registration,
    finish_registration, load_user, token_key, totp, totp_step, user_passkeys,
};
use crate::state::AppState;
use crate::tokens;

const MFA_TOKEN: &str = "mfa_token";
const ENROLLMENT_TOKEN: &str = "enrollment_token";
const ASSERTION: &str = "webauthn_assertion";
const TOTP_PENDING: &str = "totp_pending";
/// How long the second step of a login may take.
const MFA_TOKEN_MINUTES: i64 = 5;

/// What a half-finished login remembers.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    attempt_id: Uuid,
    /// The application the login is for; its overrides decide which factors it offers.
    #[serde(default)]
    application_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MfaChallenge {
    /// `mfa_required`.
    pub status: &'static str,
    /// Present it to `/login/mfa/...`; it expires in 5 minutes and yields one session.
    pub mfa_token: String,
    /// `webauthn` and/or `totp`.
    pub factors: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentChallenge {
    /// `mfa_enrollment_required`.
    pub status: &'static str,
    /// Restricted: it can only register a first key (`/login/enroll/...`).
    pub enrollment_token: String,
    pub expires_at: DateTime<Utc>,
}

/// What the password step of a login owes next, after `user.login.first_factor_passed`.
pub async fn second_step(
    state: &AppState,
    tenant: &Tenant,
    user: &User,
    attempt_id: Uuid,
    application_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Result<MfaChallenge, EnrollmentChallenge>, ApiError> {
    let expires_at = now + Duration::minutes(MFA_TOKEN_MINUTES);
    let token = tokens::generate();
    let pending = serde_json::to_string(&PendingLogin {
        attempt_id,
        application_id,
    })
    .map_err(ApiError::internal)?;
    let settings = effective_settings(state, tenant, application_id).await?;
    let ceremony = |purpose: &str| Ceremony {
        purpose: purpose.into(),
        tenant_id: tenant.id(),
        user_id: Some(user.id()),
        state: pending.clone(),
    };
    if user.has_second_factor() {
        let mut factors = Vec::new();
        // WebAuthn is offered when the (application's) reauthentication workflow is on and
        // the user holds a key of the attachment it allows.
        let workflow = settings.reauthentication;
        if settings.enabled
            && workflow.enabled
            && user
                .webauthn_credentials()
                .any(|c| workflow.attachment.allows(c.kind))
        {
            factors.push("webauthn".to_owned());
        }
        if user.has_totp() {
            factors.push("totp".to_owned());
        }
        if factors.is_empty() {
            tracing::info!(user_id = %user.id(), "login refused: no second factor usable under these settings");
            return Err(ApiError::Forbidden {
                code: "no_usable_second_factor",
                detail: "none of the user's second factors may be used here (the WebAuthn workflow is off or allows other authenticators)".into(),
            });
        }
        state
            .ceremonies
            .put(&token_key(&token), &ceremony(MFA_TOKEN), expires_at)
            .await?;
        return Ok(Ok(MfaChallenge {
            status: "mfa_required",
            mfa_token: token,
            factors,
            expires_at,
        }));
    }
    if !(settings.enabled && settings.self_registration) {
        tracing::info!(user_id = %user.id(), "login refused: MFA required, none enrolled, self-registration off");
        return Err(ApiError::Forbidden {
            code: "mfa_enrollment_unavailable",
            detail:
                "a second factor is required and none is enrolled; ask an admin to register a key"
                    .into(),
        });
    }
    state
        .ceremonies
        .put(&token_key(&token), &ceremony(ENROLLMENT_TOKEN), expires_at)
        .await?;
    Ok(Err(EnrollmentChallenge {
        status: "mfa_enrollment_required",
        enrollment_token: token,
        expires_at,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaTokenRequest {
    pub mfa_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssertionBeginBody {
    pub ceremony_id: String,
    /// Pass `options.publicKey` to `navigator.credentials.get` (after
    /// `PublicKeyCredential.parseRequestOptionsFromJSON`).
    #[schema(value_type = Object)]
    pub options: RequestChallengeResponse,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssertionFinish {
    pub mfa_token: String,
    pub ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get`, as `toJSON()` gives it.
    #[schema(value_type = Object)]
    pub credential: PublicKeyCredential,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpLogin {
    pub mfa_token: String,
    /// Six digits.
    pub code: String,
}

fn user_actor(user_id: Uuid) -> Actor {
    Actor {
        kind: ActorKind::User,
        id: Some(user_id.to_string()),
    }
}

/// The pending login of a valid MFA token (left in place until a factor succeeds).
async fn pending_login(
    state: &AppState,
    mfa_token: &str,
    purpose: &str,
) -> Result<(Ceremony, Uuid, PendingLogin), ApiError> {
    let ceremony = state
        .ceremonies
        .peek(&token_key(mfa_token), purpose, state.clock.now())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let user_id = ceremony.user_id.ok_or(ApiError::Unauthorized)?;
    let pending: PendingLogin =
        serde_json::from_str(&ceremony.state).map_err(ApiError::internal)?;
    Ok((ceremony, user_id, pending))
}

#[utoipa::path(post, path = "/api/v1/login/mfa/webauthn/begin", request_body = MfaTokenRequest,
    responses((status = 200, body = AssertionBeginBody), (status = 401), (status = 409)),
    tag = "sessions")]
pub async fn webauthn_begin(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MfaTokenRequest>,
) -> Result<Json<AssertionBeginBody>, ApiError> {
    let (pending, user_id, login) = pending_login(&state, &body.mfa_token, MFA_TOKEN).await?;
    let tenant = tenant(&state, pending.tenant_id).await?;
    let settings = effective_settings(&state, &tenant, login.application_id).await?;
    if !settings.reauthentication.enabled {
        return Err(ApiError::Conflict {
            code: "reauthentication_disabled",
            detail: "WebAuthn as a second factor (the reauthentication workflow) is off here"
                .into(),
        });
    }
    Ok(Json(
        begin_assertion(
            &state,
            &tenant,
            user_id,
            ASSERTION,
            settings.reauthentication,
        )
        .await?,
    ))
}

/// Records a refused factor (it counts towards the lockout). The detailed reason is recorded
/// when the tenant's debug mode asks for it, or always for a possible cloned authenticator;
/// otherwise the event says `refused`.
async fn record_failure(
    state: &AppState,
    tenant: &Tenant,
    user_id: Uuid,
    attempt_id: Uuid,
    method: MfaMethod,
    reason: MfaFailureReason,
    ctx: &CommandContext,
) -> Result<(), ApiError> {
    tracing::info!(user_id = %user_id, ?method, ?reason, "second factor refused");
    let detailed =
        tenant.webauthn_settings().debug || reason == MfaFailureReason::SignCountRegressed;
    let command = UserCommand::RecordMfaFailure {
        attempt_id: Some(attempt_id),
        method,
        reason: if detailed {
            reason
        } else {
            MfaFailureReason::Refused
        },
        credential_id: None,
        lockout: tenant.lockout_policy().clone(),
        lockout_version: tenant.lockout_policy_version(),
        at: ctx.now,
    };
    state
        .users
        .execute(&user_id.to_string(), command, &(), ctx, |_, _, _| {
            SideWrites::default()
        })
        .await
        .map_err(user_error)?;
    Ok(())
}

/// What an assertion ceremony remembers between begin and finish: the library's state and
/// what the workflow asked, so that finish checks what begin promised.
#[derive(Serialize, Deserialize)]
pub(crate) struct AssertionState {
    authentication: AuthenticationState,
    user_verification: UserVerification,
    attachment: Attachment,
    /// For an assertion of a known user: the kind of each of their keys at begin, so that
    /// finish needs no second load of the account. A key not here was not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kinds: Option<BTreeMap<CredentialId, CredentialKind>>,
}

impl AssertionState {
    fn new(
        authentication: AuthenticationState,
        workflow: Workflow,
        kinds: Option<BTreeMap<CredentialId, CredentialKind>>,
    ) -> Self {
        Self {
            authentication,
            user_verification: workflow.user_verification,
            attachment: workflow.attachment,
            kinds,
        }
    }
}

/// Takes the assertion ceremony (once), verifies the browser's answer against the user's keys
/// and answers what the aggregate must judge (the proof) and the updated key record to keep.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn verified_assertion(
    state: &AppState,
    tenant: &Tenant,
    user_id: Uuid,
    purpose: &str,
    ceremony_id: &str,
    credential: &PublicKeyCredential,
    attempt_id: Uuid,
    ctx: &CommandContext,
) -> Result<(SecondFactorProof, SecretWrite), ApiError> {
    let fail = |reason| {
        record_failure(
            state,
            tenant,
            user_id,
            attempt_id,
            MfaMethod::Webauthn,
            reason,
            ctx,
        )
    };
    // A state that does not parse was begun by an older version: as good as expired.
    let Some(ceremony) = state
        .ceremonies
        .take(ceremony_id, purpose, ctx.now)
        .await?
        .filter(|c| c.user_id == Some(user_id))
        .and_then(|c| serde_json::from_str::<AssertionState>(&c.state).ok())
    else {
        fail(MfaFailureReason::ChallengeExpiredOrUsed).await?;
        return Err(ApiError::MfaFailed);
    };
    let rp = relying_party(tenant)?;
    let kinds = ceremony.kinds.clone().unwrap_or_default();
    match check_assertion(state, &rp, user_id, &kinds, credential, &ceremony).await? {
        Ok(verified) => Ok(verified),
        Err(reason) => {
            fail(reason).await?;
            Err(ApiError::MfaFailed)
        }
    }
}

/// Finds the presented key among `user`'s, checks its kind against the workflow's
/// attachment, verifies the assertion under the workflow's user verification. The inner
/// `Err` is the refusal's reason for the log.
async fn check_assertion(
    state: &AppState,
    rp: &RelyingParty,
    user_id: Uuid,
    kinds: &BTreeMap<CredentialId, CredentialKind>,
    credential: &PublicKeyCredential,
    ceremony: &AssertionState,
) -> Result<Result<(SecondFactorProof, SecretWrite), MfaFailureReason>, ApiError> {
    let presented = credential.get_credential_id();
    let Some((credential_id, mut key)) =
        user_passkeys(state, user_id)
            .await?
            .into_iter()
            .find(|(_, key)| {
                let id: &[u8] = key.cred_id().as_ref();
                id == presented
            })
    else {
        return Ok(Err(MfaFailureReason::UnknownCredential));
    };
    match kinds.get(&credential_id).copied() {
        None => return Ok(Err(MfaFailureReason::UnknownCredential)),
        Some(kind) if !ceremony.attachment.allows(kind) => {
            return Ok(Err(MfaFailureReason::AuthenticatorAttachmentNotAllowed));
        }
        Some(_) => {}
    }
    let result = match rp.finish_assertion(
        credential,
        &ceremony.authentication,
        &key,
        ceremony.user_verification,
    ) {
        Ok(result) => result,
        Err(reason) => return Ok(Err(reason)),
    };
    key.update(&result);
    let record = serde_json::to_string(&key).map_err(ApiError::internal)?;
    let proof = SecondFactorProof::Webauthn {
        credential_id: credential_id.clone(),
        sign_count: result.counter(),
        user_verified: result.user_verified(),
        backed_up: result.backup_state(),
    };
    let secret = SecretWrite {
        kind: passkey_secret_kind(&credential_id),
        value: Some(record),
    };
    Ok(Ok((proof, secret)))
}

/// Starts an assertion under `purpose` against those of `user_id`'s keys that `workflow`'s
/// attachment allows, asking its user verification.
pub(crate) async fn begin_assertion(
    state: &AppState,
    tenant: &Tenant,
    user_id: Uuid,
    purpose: &str,
    workflow: Workflow,
) -> Result<AssertionBeginBody, ApiError> {
    let rp = relying_party(tenant)?;
    let user = load_user(state, user_id).await?;
    let kinds = kinds_of(&user);
    let allowed: Vec<_> = user
        .webauthn_credentials()
        .filter(|c| workflow.attachment.allows(c.kind))
        .map(|c| c.credential_id.clone())
        .collect();
    let records: Vec<_> = user_passkeys(state, user_id)
        .await?
        .into_iter()
        .filter(|(id, _)| allowed.contains(id))
        .map(|(_, key)| key)
        .collect();
    // Legacy keys registered under a U2F AppID sign for it; the browser does so when the
    // `appid` extension names it. One AppID per request: an installation's U2F keys shared one.
    let appid = records.iter().find_map(|key| key.appid.clone());
    let keys: Vec<_> = records.into_iter().map(|key| key.cred).collect();
    if keys.is_empty() {
        return Err(ApiError::Conflict {
            code: "no_webauthn_credentials",
            detail: "the user has no WebAuthn credential this workflow allows; use another factor"
                .into(),
        });
    }
    let (options, authentication) = rp.start_assertion(keys, workflow, appid)?;
    put_assertion(
        state,
        tenant,
        Some(user_id),
        purpose,
        AssertionState::new(authentication, workflow, Some(kinds)),
        options,
    )
    .await
}

/// The kind of each of `user`'s keys.
fn kinds_of(user: &User) -> BTreeMap<CredentialId, CredentialKind> {
    user.webauthn_credentials()
        .map(|c| (c.credential_id.clone(), c.kind))
        .collect()
}

/// Keeps an assertion's state for its finish (60 seconds, answered once).
async fn put_assertion(
    state: &AppState,
    tenant: &Tenant,
    user_id: Option<Uuid>,
    purpose: &str,
    kept: AssertionState,
    options: RequestChallengeResponse,
) -> Result<AssertionBeginBody, ApiError> {
    let ceremony_id = tokens::generate();
    let expires_at = state.clock.now() + Duration::seconds(CEREMONY_SECONDS);
    state
        .ceremonies
        .put(
            &ceremony_id,
            &Ceremony {
                purpose: purpose.into(),
                tenant_id: tenant.id(),
                user_id,
                state: serde_json::to_string(&kept).map_err(ApiError::internal)?,
            },
            expires_at,
        )
        .await?;
    Ok(AssertionBeginBody {
        ceremony_id,
        options,
        expires_at,
    })
}

#[utoipa::path(post, path = "/api/v1/login/mfa/webauthn/finish", request_body = AssertionFinish,
    responses((status = 200, body = LoginResponse), (status = 401)), tag = "sessions")]
pub async fn webauthn_finish(
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AssertionFinish>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (pending, user_id, login) = pending_login(&state, &body.mfa_token, MFA_TOKEN).await?;
    let tenant = tenant(&state, pending.tenant_id).await?;
    let ctx = context(&state, tenant.id(), &request, user_actor(user_id));
    let (proof, secret) = verified_assertion(
        &state,
        &tenant,
        user_id,
        ASSERTION,
        &body.ceremony_id,
        &body.credential,
        login.attempt_id,
        &ctx,
    )
    .await?;
    complete_login(
        &state,
        &body.mfa_token,
        user_id,
        login.attempt_id,
        proof,
        LoginMethod::PasswordWebauthn,
        vec![secret],
        &ctx,
    )
    .await
}

#[utoipa::path(post, path = "/api/v1/login/mfa/totp", request_body = TotpLogin,
    responses((status = 200, body = LoginResponse), (status = 401)), tag = "sessions")]
pub async fn totp_finish(
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TotpLogin>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (pending, user_id, login) = pending_login(&state, &body.mfa_token, MFA_TOKEN).await?;
    let tenant = tenant(&state, pending.tenant_id).await?;
    let ctx = context(&state, tenant.id(), &request, user_actor(user_id));
    let user = load_user(&state, user_id).await?;
    let secret = state
        .log
        .secret(&user_stream(user_id), TOTP_SECRET)
        .await?
        .and_then(|hex_secret| hex::decode(hex_secret).ok());
    let step = match secret {
        Some(secret) => {
            let generator = totp(secret, user.username(), tenant.relying_party_name())?;
            totp_step(&generator, &body.code, ctx.now)
        }
        None => None,
    };
    let Some(step) = step else {
        record_failure(
            &state,
            &tenant,
            user_id,
            login.attempt_id,
            MfaMethod::Totp,
            MfaFailureReason::TotpCodeWrong,
            &ctx,
        )
        .await?;
        return Err(ApiError::MfaFailed);
    };
    complete_login(
        &state,
        &body.mfa_token,
        user_id,
        login.attempt_id,
        SecondFactorProof::Totp { step },
        LoginMethod::PasswordTotp,
        Vec::new(),
        &ctx,
    )
    .await
}

/// Records the verified factor under the user's concurrency control; when the aggregate
/// accepts it (sign count grew, TOTP step new, account usable), the MFA token is spent and
/// the session starts.
#[allow(clippy::too_many_arguments)]
async fn complete_login(
    state: &AppState,
    mfa_token: &str,
    user_id: Uuid,
    attempt_id: Uuid,
    proof: SecondFactorProof,
    method: LoginMethod,
    secrets: Vec<SecretWrite>,
    ctx: &CommandContext,
) -> Result<Json<LoginResponse>, ApiError> {
    let command = UserCommand::UseSecondFactor {
        proof,
        login: Some((attempt_id, method)),
        at: ctx.now,
    };
    let session = PendingSession::new(state, user_id, ctx.tenant_id, ctx.now);
    let executed = state
        .users
        .execute(&user_id.to_string(), command, &(), ctx, |_, _, events| {
            if login_succeeded(events) {
                SideWrites {
                    claims: Vec::new(),
                    secrets: secrets.clone(),
                    sessions: vec![session.start()],
                }
            } else {
                SideWrites::default()
            }
        })
        .await
        .map_err(user_error)?;
    if !login_succeeded(&executed.events) {
        tracing::info!(user_id = %user_id, "second factor refused by the account's state");
        Metrics::inc(&state.metrics.logins_failed);
        return Err(ApiError::MfaFailed);
    }
    // The token answers once: a second factor racing this one finds it gone, and the session
    // its login started is ended unused. A refused factor leaves the token for another try
    // within its 5 minutes.
    if state
        .ceremonies
        .take(&token_key(mfa_token), MFA_TOKEN, ctx.now)
        .await?
        .is_none()
    {
        state.sessions.revoke(session.token_hash(), ctx.now).await?;
        tracing::info!(user_id = %user_id, "second factor raced by another; its session ended");
        Metrics::inc(&state.metrics.logins_failed);
        return Err(ApiError::MfaFailed);
    }
    Metrics::inc(&state.metrics.logins_succeeded);
    Ok(Json(
        session.answer(executed.appended.map(|a| a.last_position)),
    ))
}

// --- passwordless login (the bootstrap workflow) ----------------------------------------------

const DISCOVERABLE: &str = "webauthn_discoverable";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyBegin {
    /// The application the user logs in to: its overrides may turn this workflow on or off.
    pub application_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyFinish {
    pub ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get`, as `toJSON()` gives it.
    #[schema(value_type = Object)]
    pub credential: PublicKeyCredential,
}

#[utoipa::path(post, path = "/api/v1/login/passkey/begin", request_body = PasskeyBegin,
    responses((status = 200, body = AssertionBeginBody), (status = 404), (status = 409)),
    tag = "sessions")]
pub async fn passkey_begin(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PasskeyBegin>,
) -> Result<Json<AssertionBeginBody>, ApiError> {
    let tenant = tenant(&state, keyledger_domain::DEFAULT_TENANT_ID).await?;
    let rp = relying_party(&tenant)?;
    let settings = effective_settings(&state, &tenant, body.application_id).await?;
    if !settings.bootstrap.enabled {
        return Err(ApiError::Conflict {
            code: "passwordless_disabled",
            detail: "passwordless login (the bootstrap workflow) is not enabled".into(),
        });
    }
    let (options, authentication) = rp.start_assertion(Vec::new(), settings.bootstrap, None)?;
    Ok(Json(
        put_assertion(
            &state,
            &tenant,
            None,
            DISCOVERABLE,
            // The key names the user only at finish.
            AssertionState::new(authentication, settings.bootstrap, None),
            options,
        )
        .await?,
    ))
}

/// The key names the user (its user handle is the user id); the assertion is checked against
/// that user's key under what the bootstrap workflow asked at begin, and the login is
/// recorded with method `passkey`.
#[utoipa::path(post, path = "/api/v1/login/passkey/finish", request_body = PasskeyFinish,
    responses((status = 200, body = LoginResponse), (status = 401)), tag = "sessions")]
pub async fn passkey_finish(
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PasskeyFinish>,
) -> Result<Json<LoginResponse>, ApiError> {
    let tenant = tenant(&state, keyledger_domain::DEFAULT_TENANT_ID).await?;
    let rp = relying_party(&tenant)?;
    let now = state.clock.now();
    let ceremony = state
        .ceremonies
        .take(&body.ceremony_id, DISCOVERABLE, now)
        .await?
        .and_then(|c| serde_json::from_str::<AssertionState>(&c.state).ok())
        .ok_or_else(|| {
            tracing::info!("passkey login refused: challenge expired, used or unknown");
            ApiError::MfaFailed
        })?;
    let Some(user_id) = body
        .credential
        .get_user_unique_id()
        .and_then(|handle| Uuid::from_slice(handle).ok())
    else {
        tracing::info!("passkey login refused: no user handle");
        return Err(ApiError::MfaFailed);
    };
    let (user, _) = state
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if !user.exists() || user.tenant_id() != tenant.id() {
        tracing::info!(user_id = %user_id, "passkey login refused: unknown user handle");
        return Err(ApiError::MfaFailed);
    }
    let ctx = context(&state, tenant.id(), &request, user_actor(user_id));
    let attempt_id = Uuid::now_v7();
    let (proof, secret) = match check_assertion(
        &state,
        &rp,
        user_id,
        &kinds_of(&user),
        &body.credential,
        &ceremony,
    )
    .await?
    {
        Ok(verified) => verified,
        Err(reason) => {
            record_failure(
                &state,
                &tenant,
                user_id,
                attempt_id,
                MfaMethod::Webauthn,
                reason,
                &ctx,
            )
            .await?;
            return Err(ApiError::MfaFailed);
        }
    };
    let command = UserCommand::UseSecondFactor {
        proof,
        login: Some((attempt_id, LoginMethod::Passkey)),
        at: ctx.now,
    };
    let session = PendingSession::new(&state, user_id, ctx.tenant_id, ctx.now);
    let executed = state
        .users
        .execute(&user_id.to_string(), command, &(), &ctx, |_, _, events| {
            if login_succeeded(events) {
                SideWrites {
                    claims: Vec::new(),
                    secrets: vec![secret.clone()],
                    sessions: vec![session.start()],
                }
            } else {
                SideWrites::default()
            }
        })
        .await
        .map_err(user_error)?;
    if !login_succeeded(&executed.events) {
        Metrics::inc(&state.metrics.logins_failed);
        return Err(ApiError::MfaFailed);
    }
    Metrics::inc(&state.metrics.logins_succeeded);
    Ok(Json(
        session.answer(executed.appended.map(|a| a.last_position)),
    ))
}

// --- enrollment during login ------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBegin {
    pub enrollment_token: String,
    pub kind: NewKind,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollFinish {
    pub enrollment_token: String,
    pub ceremony_id: String,
    /// 1 to 64 characters.
    pub label: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create`, as `toJSON()` gives it.
    #[schema(value_type = Object)]
    pub credential: webauthn_rs::prelude::RegisterPublicKeyCredential,
}

#[utoipa::path(post, path = "/api/v1/login/enroll/begin", request_body = EnrollBegin,
    responses((status = 200, body = RegisterBeginBody), (status = 401), (status = 409)),
    tag = "sessions")]
pub async fn enroll_begin(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnrollBegin>,
) -> Result<Json<RegisterBeginBody>, ApiError> {
    let (pending, user_id, _) =
        pending_login(&state, &body.enrollment_token, ENROLLMENT_TOKEN).await?;
    let tenant = tenant(&state, pending.tenant_id).await?;
    let user = load_user(&state, user_id).await?;
    Ok(Json(
        begin_registration(&state, &tenant, &user, body.kind, CredentialActor::User).await?,
    ))
}

/// Registers the first key; the login then continues with that key as its second factor.
#[utoipa::path(post, path = "/api/v1/login/enroll/finish", request_body = EnrollFinish,
    responses((status = 200, body = MfaChallenge), (status = 400), (status = 401),
        (status = 409)),
    tag = "sessions")]
pub async fn enroll_finish(
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnrollFinish>,
) -> Result<Json<MfaChallenge>, ApiError> {
    let (pending, user_id, login) =
        pending_login(&state, &body.enrollment_token, ENROLLMENT_TOKEN).await?;
    let tenant = tenant(&state, pending.tenant_id).await?;
    let ctx = context(&state, tenant.id(), &request, user_actor(user_id));
    let registration = RegisterFinish {
        ceremony_id: body.ceremony_id,
        label: body.label,
        credential: body.credential,
    };
    let executed = finish_registration(&state, &tenant, user_id, registration, &ctx).await?;
    state
        .ceremonies
        .take(
            &token_key(&body.enrollment_token),
            ENROLLMENT_TOKEN,
            ctx.now,
        )
        .await?;
    match second_step(
        &state,
        &tenant,
        &executed.aggregate,
        login.attempt_id,
        login.application_id,
        ctx.now,
    )
    .await?
    {
        Ok(challenge) => Ok(Json(challenge)),
        Err(_) => Err(ApiError::internal(
            "a registered key did not count as a factor",
        )),
    }
}

// --- the user's TOTP ----------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollment {
    /// Base32; shown once. TOTP is active only after `/me/totp/confirm` with a valid code.
    pub secret: String,
    pub otpauth_uri: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    pub code: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TotpRemoveQuery {
    /// Confirms removing the last factor of a user who must use MFA.
    pub confirm_lockout: Option<bool>,
}

#[utoipa::path(post, path = "/api/v1/me/totp",
    responses((status = 200, body = TotpEnrollment), (status = 401), (status = 409)),
    security(("session" = [])), tag = "credentials")]
pub async fn totp_enroll(
    session: UserSession,
    State(state): State<AppState>,
) -> Result<Json<TotpEnrollment>, ApiError> {
    let user = load_user(&state, session.user_id).await?;
    if user.has_totp() {
        return Err(ApiError::Conflict {
            code: "totp_already_enrolled",
            detail: "TOTP is already enrolled; remove it first".into(),
        });
    }
    let tenant = tenant(&state, session.tenant_id).await?;
    let mut secret = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let generator = totp(secret.clone(), user.username(), tenant.relying_party_name())?;
    let now = state.clock.now();
    let expires_at = now + Duration::minutes(10);
    let key = format!("totp:{}", session.user_id);
    // A new enrollment replaces one left unconfirmed.
    state.ceremonies.take(&key, TOTP_PENDING, now).await?;
    state.ceremonies.delete_expired(now).await?;
    state
        .ceremonies
        .put(
            &key,
            &Ceremony {
                purpose: TOTP_PENDING.into(),
                tenant_id: session.tenant_id,
                user_id: Some(session.user_id),
                state: hex::encode(&secret),
            },
            expires_at,
        )
        .await?;
    Ok(Json(TotpEnrollment {
        secret: generator.secret().to_base32(),
        otpauth_uri: generator.to_url().map_err(ApiError::internal)?,
        expires_at,
    }))
}

#[utoipa::path(post, path = "/api/v1/me/totp/confirm", request_body = TotpCode,
    responses((status = 200, body = Written), (status = 400), (status = 401), (status = 409)),
    security(("session" = [])), tag = "credentials")]
pub async fn totp_confirm(
    session: UserSession,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TotpCode>,
) -> Result<Json<Written>, ApiError> {
    let now = state.clock.now();
    let key = format!("totp:{}", session.user_id);
    let pending = state
        .ceremonies
        .peek(&key, TOTP_PENDING, now)
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: "totp_not_pending",
            detail: "no TOTP enrollment is waiting for confirmation".into(),
        })?;
    let secret = hex::decode(&pending.state).map_err(ApiError::internal)?;
    let user = load_user(&state, session.user_id).await?;
    let tenant = tenant(&state, session.tenant_id).await?;
    let generator = totp(secret.clone(), user.username(), tenant.relying_party_name())?;
    let step = totp_step(&generator, &body.code, now).ok_or(ApiError::InvalidValue {
        code: "totp_code_wrong",
        detail: "the code does not match".into(),
    })?;
    let ctx = context(&state, session.tenant_id, &request, session.actor());
    let secret_hex = hex::encode(&secret);
    let executed = state
        .users
        .execute(
            &session.user_id.to_string(),
            UserCommand::AddTotp { step, at: ctx.now },
            &(),
            &ctx,
            |_, _, _| SideWrites {
                claims: Vec::new(),
                secrets: vec![SecretWrite {
                    kind: TOTP_SECRET.into(),
                    value: Some(secret_hex.clone()),
                }],
                sessions: Vec::new(),
            },
        )
        .await
        .map_err(user_error)?;
    state.ceremonies.take(&key, TOTP_PENDING, now).await?;
    Ok(Json(Written {
        position: executed.appended.map(|a| a.last_position),
    }))
}

#[utoipa::path(delete, path = "/api/v1/me/totp", params(TotpRemoveQuery),
    responses((status = 200, body = Written), (status = 401), (status = 409)),
    security(("session" = [])), tag = "credentials")]
pub async fn totp_remove(
    session: UserSession,
    request: RequestContext,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TotpRemoveQuery>,
) -> Result<Json<Written>, ApiError> {
    let tenant = tenant(&state, session.tenant_id).await?;
    let ctx = context(&state, session.tenant_id, &request, session.actor());
    let command = UserCommand::RemoveTotp {
        by: CredentialActor::User,
        confirm_lockout: query.confirm_lockout.unwrap_or(false),
        tenant_mfa: tenant.webauthn_settings().mfa_requirement,
        at: ctx.now,
    };
    let executed = state
        .users
        .execute(
            &session.user_id.to_string(),
            command,
            &(),
            &ctx,
            |_, _, _| SideWrites {
                claims: Vec::new(),
                secrets: vec![SecretWrite {
                    kind: TOTP_SECRET.into(),
                    value: None,
                }],
                sessions: Vec::new(),
            },
        )
        .await
        .map_err(user_error)?;
    Ok(Json(Written {
        position: executed.appended.map(|a| a.last_position),
    }))
}
