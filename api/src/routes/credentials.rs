//! WebAuthn credentials and MFA status, for the user themselves (`/api/v1/me/credentials`)
//! and for admins (`/api/v1/users/{id}/credentials`, `/users/{id}/mfa`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::mfa::{CredentialActor, CredentialId, CredentialKind, CredentialLabel};
use keyledger_domain::tenant::Tenant;
use keyledger_domain::user::NewCredential;
use keyledger_domain::user::{User, UserCommand, WebauthnCredential};
use keyledger_store::{Actor, ClaimChange, SecretWrite, SideWrites};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Written;
use super::webauthn_settings::RequirementBody;
use crate::commands::{context, tenant, user_error};
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, ApiPath, ApiQuery, RequestContext, UserSession};
use crate::relying_party::{U2fImportError, credential_id_of, passkey_secret_kind, u2f_key_record};
use crate::second_factors::{
    RegisterBegin, RegisterBeginBody, RegisterFinish, begin_registration, credential_claim,
    finish_registration, load_user, removal_writes,
};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialBody {
    /// Base64url, as the browser shows it; never editable.
    pub credential_id: String,
    pub label: String,
    /// `security_key`, `device_authenticator` or `legacy`.
    pub kind: String,
    pub aaguid: Uuid,
    pub authenticator_name: Option<String>,
    pub transports: Vec<String>,
    /// Whether the authenticator verified the user (PIN, biometrics) at registration.
    pub user_verified: bool,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub sign_count: u32,
    /// `self` or `admin`.
    pub registered_by: String,
    pub registered_by_id: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<&WebauthnCredential> for CredentialBody {
    fn from(c: &WebauthnCredential) -> Self {
        let (by, by_id) = match &c.registered_by {
            CredentialActor::User => ("self", None),
            CredentialActor::Admin { id } => ("admin", Some(id.clone())),
        };
        Self {
            credential_id: c.credential_id.as_str().to_owned(),
            label: c.label.clone(),
            kind: c.kind.as_str().to_owned(),
            aaguid: c.aaguid,
            authenticator_name: c.authenticator_name.clone(),
            transports: c.transports.clone(),
            user_verified: c.user_verified,
            backup_eligible: c.backup_eligible,
            backed_up: c.backed_up,
            sign_count: c.sign_count,
            registered_by: by.to_owned(),
            registered_by_id: by_id,
            registered_at: c.registered_at,
            last_used_at: c.last_used_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialList {
    /// `active_keys` when the user holds at least one, `no_security_keys` otherwise.
    pub status: String,
    pub items: Vec<CredentialBody>,
}

fn list_of(user: &User) -> CredentialList {
    let items: Vec<CredentialBody> = user.webauthn_credentials().map(Into::into).collect();
    CredentialList {
        status: if items.is_empty() {
            "no_security_keys"
        } else {
            "active_keys"
        }
        .into(),
        items,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MfaStatus {
    pub security_keys: u32,
    pub device_authenticators: u32,
    pub legacy_keys: u32,
    pub totp_enrolled: bool,
    /// The user's own requirement; null follows the tenant's.
    pub user_requirement: Option<RequirementBody>,
    /// What applies: the user's requirement, else the tenant's.
    pub effective_requirement: RequirementBody,
    pub last_mfa_at: Option<DateTime<Utc>>,
}

pub fn mfa_status(user: &User, tenant: &Tenant) -> MfaStatus {
    let count = |kind| {
        let n = user
            .webauthn_credentials()
            .filter(|c| c.kind == kind)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    };
    let tenant_requirement = tenant.webauthn_settings().mfa_requirement;
    MfaStatus {
        security_keys: count(CredentialKind::SecurityKey),
        device_authenticators: count(CredentialKind::DeviceAuthenticator),
        legacy_keys: count(CredentialKind::Legacy),
        totp_enrolled: user.has_totp(),
        user_requirement: user.mfa_requirement().map(Into::into),
        effective_requirement: user.mfa_requirement().unwrap_or(tenant_requirement).into(),
        last_mfa_at: user.last_mfa_at(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialWritten {
    pub credential: CredentialBody,
    pub position: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameCredential {
    /// 1 to 64 characters.
    pub label: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Confirms removing the last factor of a user who must use MFA (recorded as an
    /// overridden warning).
    pub confirm_lockout: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequirementRequest {
    /// Null: follow the tenant's requirement.
    pub requirement: Option<RequirementBody>,
}

fn parse_id(raw: &str) -> Result<CredentialId, ApiError> {
    CredentialId::parse(raw).map_err(|e| ApiError::InvalidValue {
        code: e.code(),
        detail: e.to_string(),
    })
}

fn admin_actor(actor: &Actor) -> CredentialActor {
    CredentialActor::Admin {
        id: actor.id.clone().unwrap_or_else(|| "unknown".into()),
    }
}

async fn registered_answer(
    executed: keyledger_store::Executed<User>,
) -> Result<(StatusCode, Json<CredentialWritten>), ApiError> {
    let credential = executed
        .events
        .iter()
        .find_map(|e| match e {
            keyledger_domain::user::UserEvent::WebauthnRegistered(r) => {
                Some(r.credential.credential_id.clone())
            }
            _ => None,
        })
        .and_then(|id| {
            executed
                .aggregate
                .webauthn_credentials()
                .find(|c| c.credential_id == id)
                .map(CredentialBody::from)
        })
        .ok_or_else(|| ApiError::internal("registered credential missing"))?;
    Ok((
        StatusCode::CREATED,
        Json(CredentialWritten {
            credential,
            position: executed.appended.map(|a| a.last_position),
        }),
    ))
}

fn self_registration_allowed(tenant: &Tenant) -> Result<(), ApiError> {
    if tenant.webauthn_settings().self_registration {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            code: "self_registration_disabled",
            detail: "only an admin can register keys in this tenant".into(),
        })
    }
}

// --- the user's own -----------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/me/credentials",
    responses((status = 200, body = CredentialList), (status = 401)),
    security(("session" = [])), tag = "credentials")]
pub async fn my_credentials(
    session: UserSession,
    State(state): State<AppState>,
) -> Result<Json<CredentialList>, ApiError> {
    Ok(Json(list_of(&load_user(&state, session.user_id).await?)))
}

#[utoipa::path(get, path = "/api/v1/me/mfa",
    responses((status = 200, body = MfaStatus), (status = 401)),
    security(("session" = [])), tag = "credentials")]
pub async fn my_mfa(
    session: UserSession,
    State(state): State<AppState>,
) -> Result<Json<MfaStatus>, ApiError> {
    let user = load_user(&state, session.user_id).await?;
    let tenant = tenant(&state, session.tenant_id).await?;
    Ok(Json(mfa_status(&user, &tenant)))
}

#[utoipa::path(post, path = "/api/v1/me/credentials/register/begin", request_body = RegisterBegin,
    responses((status = 200, body = RegisterBeginBody), (status = 401), (status = 403),
        (status = 409)),
    security(("session" = [])), tag = "credentials")]
pub async fn my_register_begin(
    session: UserSession,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterBegin>,
) -> Result<Json<RegisterBeginBody>, ApiError> {
    let tenant = tenant(&state, session.tenant_id).await?;
    crate::relying_party::relying_party(&tenant)?;
    self_registration_allowed(&tenant)?;
    let user = load_user(&state, session.user_id).await?;
    Ok(Json(
        begin_registration(&state, &tenant, &user, body.kind, CredentialActor::User).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/me/credentials/register/finish", request_body = RegisterFinish,
    responses((status = 201, body = CredentialWritten), (status = 400), (status = 401),
        (status = 403), (status = 409)),
    security(("session" = [])), tag = "credentials")]
pub async fn my_register_finish(
    session: UserSession,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterFinish>,
) -> Result<(StatusCode, Json<CredentialWritten>), ApiError> {
    let tenant = tenant(&state, session.tenant_id).await?;
    self_registration_allowed(&tenant)?;
    let ctx = context(&state, session.tenant_id, &request, session.actor());
    let executed = finish_registration(&state, &tenant, session.user_id, body, &ctx).await?;
    registered_answer(executed).await
}

#[utoipa::path(patch, path = "/api/v1/me/credentials/{credential_id}",
    params(("credential_id" = String, Path, description = "Base64url credential id")),
    request_body = RenameCredential,
    responses((status = 200, body = Written), (status = 400), (status = 401), (status = 403),
        (status = 404)),
    security(("session" = [])), tag = "credentials")]
pub async fn my_rename(
    session: UserSession,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(credential_id): ApiPath<String>,
    ApiJson(body): ApiJson<RenameCredential>,
) -> Result<Json<Written>, ApiError> {
    let ctx = context(&state, session.tenant_id, &request, session.actor());
    rename(
        &state,
        session.user_id,
        &credential_id,
        &body.label,
        CredentialActor::User,
        &ctx,
    )
    .await
}

#[utoipa::path(delete, path = "/api/v1/me/credentials/{credential_id}",
    params(("credential_id" = String, Path, description = "Base64url credential id"), RemoveQuery),
    responses((status = 200, body = Written), (status = 400), (status = 401), (status = 404),
        (status = 409)),
    security(("session" = [])), tag = "credentials")]
pub async fn my_remove(
    session: UserSession,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(credential_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<Json<Written>, ApiError> {
    let ctx = context(&state, session.tenant_id, &request, session.actor());
    remove(
        &state,
        session.user_id,
        &credential_id,
        query,
        CredentialActor::User,
        &ctx,
    )
    .await
}

// --- admins ---------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/users/{id}/credentials",
    params(("id" = Uuid, Path, description = "The user id")),
    responses((status = 200, body = CredentialList), (status = 404)),
    security(("admin" = [])), tag = "credentials")]
pub async fn user_credentials(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<CredentialList>, ApiError> {
    Ok(Json(list_of(&load_user(&state, id).await?)))
}

#[utoipa::path(get, path = "/api/v1/users/{id}/mfa",
    params(("id" = Uuid, Path, description = "The user id")),
    responses((status = 200, body = MfaStatus), (status = 404)),
    security(("admin" = [])), tag = "credentials")]
pub async fn user_mfa(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<MfaStatus>, ApiError> {
    let user = load_user(&state, id).await?;
    let tenant = tenant(&state, user.tenant_id()).await?;
    Ok(Json(mfa_status(&user, &tenant)))
}

#[utoipa::path(put, path = "/api/v1/users/{id}/mfa-requirement",
    params(("id" = Uuid, Path, description = "The user id")), request_body = RequirementRequest,
    responses((status = 200, body = Written), (status = 404)),
    security(("admin" = [])), tag = "credentials")]
pub async fn set_user_requirement(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RequirementRequest>,
) -> Result<Json<Written>, ApiError> {
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    let command = UserCommand::SetMfaRequirement {
        requirement: body.requirement.map(Into::into),
        at: ctx.now,
    };
    let executed = state
        .users
        .execute(&id.to_string(), command, &(), &ctx, |_, _, _| {
            SideWrites::default()
        })
        .await
        .map_err(user_error)?;
    Ok(Json(Written {
        position: executed.appended.map(|a| a.last_position),
    }))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/credentials/register/begin",
    params(("id" = Uuid, Path, description = "The user id")), request_body = RegisterBegin,
    responses((status = 200, body = RegisterBeginBody), (status = 404), (status = 409)),
    security(("admin" = [])), tag = "credentials")]
pub async fn user_register_begin(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RegisterBegin>,
) -> Result<Json<RegisterBeginBody>, ApiError> {
    let user = load_user(&state, id).await?;
    let tenant = tenant(&state, user.tenant_id()).await?;
    let by = admin_actor(&admin.actor);
    Ok(Json(
        begin_registration(&state, &tenant, &user, body.kind, by).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/credentials/register/finish",
    params(("id" = Uuid, Path, description = "The user id")), request_body = RegisterFinish,
    responses((status = 201, body = CredentialWritten), (status = 400), (status = 404),
        (status = 409)),
    security(("admin" = [])), tag = "credentials")]
pub async fn user_register_finish(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RegisterFinish>,
) -> Result<(StatusCode, Json<CredentialWritten>), ApiError> {
    let user = load_user(&state, id).await?;
    let tenant = tenant(&state, user.tenant_id()).await?;
    let ctx = context(&state, user.tenant_id(), &request, admin.actor);
    let executed = finish_registration(&state, &tenant, id, body, &ctx).await?;
    registered_answer(executed).await
}

#[utoipa::path(patch, path = "/api/v1/users/{id}/credentials/{credential_id}",
    params(("id" = Uuid, Path, description = "The user id"),
        ("credential_id" = String, Path, description = "Base64url credential id")),
    request_body = RenameCredential,
    responses((status = 200, body = Written), (status = 400), (status = 404)),
    security(("admin" = [])), tag = "credentials")]
pub async fn user_rename(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath((id, credential_id)): ApiPath<(Uuid, String)>,
    ApiJson(body): ApiJson<RenameCredential>,
) -> Result<Json<Written>, ApiError> {
    let by = admin_actor(&admin.actor);
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    rename(&state, id, &credential_id, &body.label, by, &ctx).await
}

#[utoipa::path(delete, path = "/api/v1/users/{id}/credentials/{credential_id}",
    params(("id" = Uuid, Path, description = "The user id"),
        ("credential_id" = String, Path, description = "Base64url credential id"), RemoveQuery),
    responses((status = 200, body = Written), (status = 400), (status = 404), (status = 409)),
    security(("admin" = [])), tag = "credentials")]
pub async fn user_remove(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath((id, credential_id)): ApiPath<(Uuid, String)>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<Json<Written>, ApiError> {
    let by = admin_actor(&admin.actor);
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    remove(&state, id, &credential_id, query, by, &ctx).await
}

// --- shared ---------------------------------------------------------------------------------

async fn rename(
    state: &AppState,
    user_id: Uuid,
    credential_id: &str,
    label: &str,
    by: CredentialActor,
    ctx: &keyledger_store::CommandContext,
) -> Result<Json<Written>, ApiError> {
    let command = UserCommand::RenameWebauthnCredential {
        credential_id: parse_id(credential_id)?,
        label: CredentialLabel::parse(label).map_err(|e| ApiError::InvalidValue {
            code: e.code(),
            detail: e.to_string(),
        })?,
        by,
        at: ctx.now,
    };
    let executed = state
        .users
        .execute(&user_id.to_string(), command, &(), ctx, |_, _, _| {
            SideWrites::default()
        })
        .await
        .map_err(user_error)?;
    Ok(Json(Written {
        position: executed.appended.map(|a| a.last_position),
    }))
}

async fn remove(
    state: &AppState,
    user_id: Uuid,
    credential_id: &str,
    query: RemoveQuery,
    by: CredentialActor,
    ctx: &keyledger_store::CommandContext,
) -> Result<Json<Written>, ApiError> {
    let credential_id = parse_id(credential_id)?;
    let tenant = tenant(state, ctx.tenant_id).await?;
    let command = UserCommand::RemoveWebauthnCredential {
        credential_id: credential_id.clone(),
        by,
        confirm_lockout: query.confirm_lockout.unwrap_or(false),
        tenant_mfa: tenant.webauthn_settings().mfa_requirement,
        at: ctx.now,
    };
    let executed = state
        .users
        .execute(&user_id.to_string(), command, &(), ctx, |_, _, _| {
            removal_writes(&credential_id)
        })
        .await
        .map_err(user_error)?;
    Ok(Json(Written {
        position: executed.appended.map(|a| a.last_position),
    }))
}

/// What a U2F server holds about a key, to bring it over as a `legacy` credential.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportU2fKey {
    /// The U2F key handle, base64url; it becomes the credential id (16 to 1023 bytes).
    pub key_handle: String,
    /// The 65-byte uncompressed P-256 public key (`0x04 || X || Y`), base64url.
    pub public_key: String,
    /// The last counter the U2F server saw; an assertion must show a higher one.
    pub counter: u32,
    /// 1 to 64 characters; default `Legacy U2F key`.
    pub label: Option<String>,
    /// The U2F AppID the key was registered under (e.g. `https://example.com`). Logins then
    /// ask the browser to use it (the WebAuthn `appid` extension). Null: the key was
    /// registered under the relying party id itself.
    pub app_id: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/users/{id}/credentials/import-u2f",
    params(("id" = Uuid, Path, description = "The user id")), request_body = ImportU2fKey,
    responses((status = 201, body = CredentialWritten), (status = 400), (status = 404),
        (status = 409)),
    security(("admin" = [])), tag = "credentials")]
pub async fn import_u2f(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ImportU2fKey>,
) -> Result<(StatusCode, Json<CredentialWritten>), ApiError> {
    let refused = |e: U2fImportError| ApiError::InvalidValue {
        code: e.code(),
        detail: e.to_string(),
    };
    let label =
        CredentialLabel::parse(body.label.as_deref().unwrap_or("Legacy U2F key")).map_err(|e| {
            ApiError::InvalidValue {
                code: e.code(),
                detail: e.to_string(),
            }
        })?;
    let record = u2f_key_record(
        &body.key_handle,
        &body.public_key,
        body.counter,
        body.app_id.as_deref(),
    )
    .map_err(refused)?;
    let credential_id = credential_id_of(&record).map_err(|_| ApiError::InvalidValue {
        code: "invalid_credential_id",
        detail: "the key handle must be 16 to 1023 bytes".into(),
    })?;
    let user = load_user(&state, id).await?;
    let ctx = context(&state, user.tenant_id(), &request, admin.actor.clone());
    let credential = NewCredential {
        credential_id: credential_id.clone(),
        label: label.into(),
        kind: CredentialKind::Legacy,
        aaguid: Uuid::nil(),
        authenticator_name: None,
        transports: Vec::new(),
        user_verified: false,
        backup_eligible: false,
        backed_up: false,
        sign_count: body.counter,
    };
    let value = serde_json::to_string(&record).map_err(ApiError::internal)?;
    let command = UserCommand::ImportLegacyCredential {
        credential,
        by: admin_actor(&admin.actor),
        at: ctx.now,
    };
    let executed = state
        .users
        .execute(&id.to_string(), command, &(), &ctx, |_, _, _| SideWrites {
            claims: vec![ClaimChange::Reserve(credential_claim(&credential_id))],
            secrets: vec![SecretWrite {
                kind: passkey_secret_kind(&credential_id),
                value: Some(value.clone()),
            }],
            sessions: Vec::new(),
        })
        .await
        .map_err(user_error)?;
    tracing::info!(user_id = %id, credential_id = %credential_id, "legacy U2F key imported");
    registered_answer(executed).await
}
