//! Admin user management: `/api/v1/users`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyledger_domain::user::{User, UserCommand};
use keyledger_domain::values::{DisplayName, Email, Username};
use keyledger_projections::views::mfa::MfaRow;
use keyledger_projections::views::users::{UserFilter, UserRow};
use keyledger_projections::{MfaView, UsersView};
use keyledger_store::{ClaimChange, SideWrites};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Written;
use crate::commands::{
    claim, context, context_words, password_secret, propose_password, run_password_command, tenant,
    user_error,
};
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, ApiPath, ApiQuery, ReadAfter, RequestContext};
use crate::state::AppState;
use keyledger_domain::DEFAULT_TENANT_ID;

/// A user as admins see it. Never carries a password or hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// `active`, `suspended`, or `erased` (personal data destroyed: username reads `erased`,
    /// email and display name null).
    pub status: String,
    pub locked: bool,
    /// When a lock ends; null with `locked` true means until an admin unlocks.
    pub locked_until: Option<DateTime<Utc>>,
    /// Consecutive failed logins (wrong passwords, refused second factors) since the last
    /// success or unlock. A lock counts only those within the lockout policy's window.
    pub failed_login_count: u32,
    pub password_externally_managed: bool,
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// "MFA: WebAuthn": how many WebAuthn credentials the user holds.
    pub mfa_webauthn: u32,
    /// "MFA: User Requirement": `required`, `optional`, or null when the user follows the
    /// tenant's requirement.
    pub mfa_user_requirement: Option<String>,
    /// Only in an `as_of` answer: the WebAuthn credentials the user held then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Vec<super::credentials::CredentialBody>>,
    /// Only in an `as_of` answer: whether TOTP was enrolled then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp_enrolled: Option<bool>,
}

impl UserBody {
    pub fn from_row(row: UserRow, now: DateTime<Utc>) -> Self {
        Self {
            locked: row.is_locked_at(now),
            locked_until: row.locked_until.filter(|_| row.is_locked_at(now)),
            id: row.user_id,
            tenant_id: row.tenant_id,
            username: row.username,
            email: row.email,
            display_name: row.display_name,
            status: row.status,
            failed_login_count: row.failed_count,
            password_externally_managed: row.password_externally_managed,
            has_password: row.has_password,
            created_at: row.created_at,
            last_login_at: row.last_login_at,
            mfa_webauthn: 0,
            mfa_user_requirement: None,
            credentials: None,
            totp_enrolled: None,
        }
    }

    /// Adds the MFA columns from the MFA view (a user absent there has no second factor).
    pub fn with_mfa(mut self, mfa: Option<&MfaRow>) -> Self {
        if let Some(mfa) = mfa {
            self.mfa_webauthn = mfa.webauthn_count();
            self.mfa_user_requirement = mfa.requirement.clone();
        }
        self
    }

    pub fn from_user(user: &User, now: DateTime<Utc>) -> Self {
        let locked = user.is_locked_at(now);
        Self {
            id: user.id(),
            tenant_id: user.tenant_id(),
            username: user.username().to_owned(),
            email: user.email().map(str::to_owned),
            display_name: user.display_name().map(str::to_owned),
            status: if user.is_erased() {
                "erased"
            } else if user.is_suspended() {
                "suspended"
            } else {
                "active"
            }
            .into(),
            locked,
            locked_until: user.locked_until().filter(|_| locked),
            failed_login_count: user.failed_count(),
            password_externally_managed: user.password_externally_managed(),
            has_password: user.has_password(),
            created_at: user.created_at().unwrap_or_default(),
            last_login_at: user.last_login_at(),
            mfa_webauthn: u32::try_from(user.webauthn_credentials().count()).unwrap_or(u32::MAX),
            mfa_user_requirement: user.mfa_requirement().map(|r| {
                match r {
                    keyledger_domain::mfa::MfaRequirement::Required => "required",
                    keyledger_domain::mfa::MfaRequirement::Optional => "optional",
                }
                .to_owned()
            }),
            credentials: None,
            totp_enrolled: None,
        }
    }
}

/// A write that answers with the user after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserWritten {
    pub user: UserBody,
    pub position: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// Optional initial password, judged by the tenant's password policy.
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub username: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordBody {
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordManagementBody {
    pub externally_managed: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `active` or `suspended`.
    pub status: Option<String>,
    pub locked: Option<bool>,
    /// Case-insensitive text in username, email or display name.
    pub q: Option<String>,
    /// "MFA: WebAuthn": users with (true) or without (false) a WebAuthn credential.
    pub mfa_webauthn: Option<bool>,
    /// "MFA: User Requirement": `required`, `optional`, or `default` (follows the tenant).
    pub mfa_requirement: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserBody>,
    pub next_cursor: Option<Uuid>,
}

fn parse<T, E: std::fmt::Display>(
    value: Option<&str>,
    parse: impl Fn(&str) -> Result<T, E>,
    code: &'static str,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            parse(v).map_err(|e| ApiError::InvalidValue {
                code,
                detail: e.to_string(),
            })
        })
        .transpose()
}

fn value_error(e: keyledger_domain::values::ValueError) -> ApiError {
    ApiError::InvalidValue {
        code: e.code(),
        detail: e.to_string(),
    }
}

#[utoipa::path(post, path = "/api/v1/users", request_body = CreateUser,
    responses((status = 201, body = UserWritten), (status = 400), (status = 401), (status = 409)),
    security(("admin" = [])), tag = "users")]
pub async fn create_user(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserWritten>), ApiError> {
    let tenant_id = DEFAULT_TENANT_ID;
    let username = Username::parse(&body.username).map_err(value_error)?;
    let email = body
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(value_error)?;
    let display_name = body
        .display_name
        .as_deref()
        .map(DisplayName::parse)
        .transpose()
        .map_err(value_error)?;
    let tenant = tenant(&state, tenant_id).await?;
    let proposal = match &body.password {
        Some(password) => {
            let words: Vec<&str> = [Some(username.as_str()), email.as_ref().map(Email::as_str)]
                .into_iter()
                .flatten()
                .collect();
            Some(propose_password(&state, &tenant, password, &words, false).await?)
        }
        None => None,
    };
    let user_id = Uuid::now_v7();
    let ctx = context(&state, tenant_id, &request, admin.actor);
    let command = UserCommand::Create {
        user_id,
        tenant_id,
        username: username.clone(),
        email: email.clone(),
        display_name,
        initial_password: proposal
            .as_ref()
            .map(|p| p.proposed(state.passwords.params())),
        password_policy: tenant.password_policy().clone(),
        at: ctx.now,
    };
    let phc = proposal.as_ref().and_then(|p| p.phc.as_ref());
    let executed = state
        .users
        .execute(&user_id.to_string(), command, &(), &ctx, |_, _, events| {
            let mut claims = vec![ClaimChange::Reserve(claim(
                tenant_id,
                "username",
                &username.normalized(),
            ))];
            if let Some(email) = &email {
                claims.push(ClaimChange::Reserve(claim(
                    tenant_id,
                    "email",
                    &email.normalized(),
                )));
            }
            SideWrites {
                claims,
                secrets: password_secret(events, phc),
                sessions: Vec::new(),
            }
        })
        .await
        .map_err(user_error)?;
    tracing::info!(user_id = %user_id, "user created");
    Ok((
        StatusCode::CREATED,
        Json(UserWritten {
            user: UserBody::from_user(&executed.aggregate, ctx.now),
            position: executed.appended.map(|a| a.last_position),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/users", params(ListQuery),
    responses((status = 200, body = UserPage), (status = 401)),
    security(("admin" = [])), tag = "users")]
pub async fn list_users(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UserPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::InvalidParameter("limit must be 1 to 200".into()));
    }
    if let Some(status) = &query.status
        && status != "active"
        && status != "suspended"
        && status != "erased"
    {
        return Err(ApiError::InvalidParameter(
            "status must be active, suspended or erased".into(),
        ));
    }
    if let Some(requirement) = &query.mfa_requirement
        && !["required", "optional", "default"].contains(&requirement.as_str())
    {
        return Err(ApiError::InvalidParameter(
            "mfa_requirement must be required, optional or default".into(),
        ));
    }
    let now = state.clock.now();
    let filter = UserFilter {
        status: query.status,
        locked: query.locked,
        mfa_webauthn: query.mfa_webauthn,
        mfa_requirement: query.mfa_requirement,
        text: query.q.filter(|q| !q.trim().is_empty()),
        after: query.cursor,
        limit: limit + 1,
    };
    let mut rows = UsersView::list(state.db(), DEFAULT_TENANT_ID, &filter, now).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.user_id)
    } else {
        None
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
    let mfa = MfaView::get_many(state.db(), &ids).await?;
    Ok(Json(UserPage {
        items: rows
            .into_iter()
            .map(|r| {
                let id = r.user_id;
                UserBody::from_row(r, now).with_mfa(mfa.get(&id))
            })
            .collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GetUserQuery {
    /// The user as of a log position (`42`) or an RFC 3339 time, folded from the log.
    pub as_of: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/users/{id}", params(("id" = Uuid, Path, description = "The user id"), GetUserQuery),
    responses((status = 200, body = UserBody), (status = 400), (status = 404)),
    security(("admin" = [])), tag = "users")]
pub async fn get_user(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<GetUserQuery>,
) -> Result<Json<UserBody>, ApiError> {
    if let Some(as_of) = query.as_of {
        return super::history::user_as_of(&state, id, &as_of)
            .await
            .map(Json);
    }
    let row = UsersView::get(state.db(), DEFAULT_TENANT_ID, id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let mfa = MfaView::get_many(state.db(), &[id]).await?;
    Ok(Json(
        UserBody::from_row(row, state.clock.now()).with_mfa(mfa.get(&id)),
    ))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", params(("id" = Uuid, Path, description = "The user id")), request_body = UpdateUser,
    responses((status = 200, body = UserWritten), (status = 404), (status = 409)),
    security(("admin" = [])), tag = "users")]
pub async fn update_user(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<UserWritten>, ApiError> {
    let username = parse(
        body.username.as_deref(),
        Username::parse,
        "invalid_username",
    )?;
    let email = parse(body.email.as_deref(), Email::parse, "invalid_email")?;
    let display_name = parse(
        body.display_name.as_deref(),
        DisplayName::parse,
        "invalid_display_name",
    )?;
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    let command = UserCommand::UpdateProfile {
        username,
        email,
        display_name,
        at: ctx.now,
    };
    let executed = state
        .users
        .execute(&id.to_string(), command, &(), &ctx, |before, after, _| {
            let mut claims = Vec::new();
            let tenant = after.tenant_id();
            if before.username() != after.username() {
                claims.push(ClaimChange::Release(claim(
                    tenant,
                    "username",
                    &before.username().to_lowercase(),
                )));
                claims.push(ClaimChange::Reserve(claim(
                    tenant,
                    "username",
                    &after.username().to_lowercase(),
                )));
            }
            if before.email() != after.email() {
                if let Some(old) = before.email() {
                    claims.push(ClaimChange::Release(claim(
                        tenant,
                        "email",
                        &old.to_lowercase(),
                    )));
                }
                if let Some(new) = after.email() {
                    claims.push(ClaimChange::Reserve(claim(
                        tenant,
                        "email",
                        &new.to_lowercase(),
                    )));
                }
            }
            SideWrites {
                claims,
                secrets: Vec::new(),
                sessions: Vec::new(),
            }
        })
        .await
        .map_err(user_error)?;
    Ok(Json(UserWritten {
        user: UserBody::from_user(&executed.aggregate, ctx.now),
        position: executed.appended.map(|a| a.last_position),
    }))
}

/// Runs an admin command that has no side writes and answers with the user after it.
async fn admin_command(
    state: &AppState,
    admin: Admin,
    request: &RequestContext,
    id: Uuid,
    command: impl FnOnce(DateTime<Utc>) -> UserCommand,
) -> Result<Json<UserWritten>, ApiError> {
    let ctx = context(state, DEFAULT_TENANT_ID, request, admin.actor);
    let executed = state
        .users
        .execute(&id.to_string(), command(ctx.now), &(), &ctx, |_, _, _| {
            SideWrites::default()
        })
        .await
        .map_err(user_error)?;
    Ok(Json(UserWritten {
        user: UserBody::from_user(&executed.aggregate, ctx.now),
        position: executed.appended.map(|a| a.last_position),
    }))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/suspend", params(("id" = Uuid, Path, description = "The user id")),
    responses((status = 200, body = UserWritten), (status = 404)),
    security(("admin" = [])), tag = "users")]
pub async fn suspend_user(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserWritten>, ApiError> {
    admin_command(&state, admin, &request, id, |at| UserCommand::Suspend {
        at,
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", params(("id" = Uuid, Path, description = "The user id")),
    responses((status = 200, body = UserWritten), (status = 404)),
    security(("admin" = [])), tag = "users")]
pub async fn reactivate_user(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserWritten>, ApiError> {
    admin_command(&state, admin, &request, id, |at| UserCommand::Reactivate {
        at,
    })
    .await
}

/// Signs the user out everywhere: every session ends, in the transaction of the
/// `user.sessions.ended` event that records who did it. The account stays usable.
#[utoipa::path(post, path = "/api/v1/users/{id}/logout", params(("id" = Uuid, Path, description = "The user id")),
    responses((status = 200, body = UserWritten), (status = 404), (status = 410)),
    security(("admin" = [])), tag = "users")]
pub async fn logout_user(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserWritten>, ApiError> {
    admin_command(&state, admin, &request, id, |at| UserCommand::EndSessions {
        at,
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/users/{id}/unlock", params(("id" = Uuid, Path, description = "The user id")),
    responses((status = 200, body = UserWritten), (status = 404)),
    security(("admin" = [])), tag = "users")]
pub async fn unlock_user(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserWritten>, ApiError> {
    admin_command(&state, admin, &request, id, |at| UserCommand::Unlock { at }).await
}

#[utoipa::path(put, path = "/api/v1/users/{id}/password-management", params(("id" = Uuid, Path, description = "The user id")),
    request_body = PasswordManagementBody,
    responses((status = 200, body = UserWritten), (status = 404)),
    security(("admin" = [])), tag = "users")]
pub async fn set_password_management(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PasswordManagementBody>,
) -> Result<Json<UserWritten>, ApiError> {
    admin_command(&state, admin, &request, id, |at| {
        UserCommand::SetPasswordManagement {
            externally_managed: body.externally_managed,
            at,
        }
    })
    .await
}

#[utoipa::path(put, path = "/api/v1/users/{id}/password", params(("id" = Uuid, Path, description = "The user id")), request_body = SetPasswordBody,
    responses((status = 200, body = Written), (status = 400), (status = 404), (status = 409)),
    security(("admin" = [])), tag = "users")]
pub async fn set_password(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<SetPasswordBody>,
) -> Result<Json<Written>, ApiError> {
    let (user, _) = state
        .users
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if !user.exists() {
        return Err(ApiError::NotFound("user"));
    }
    let tenant = tenant(&state, user.tenant_id()).await?;
    let proposal = propose_password(
        &state,
        &tenant,
        &body.password,
        &context_words(&user),
        user.has_second_factor(),
    )
    .await?;
    let ctx = context(&state, user.tenant_id(), &request, admin.actor);
    let command = UserCommand::SetPassword {
        proposal: proposal.proposed(state.passwords.params()),
        policy: tenant.password_policy().clone(),
        at: ctx.now,
    };
    let written =
        run_password_command(&state, id, command, &ctx, proposal.phc.as_ref(), Vec::new()).await?;
    Ok(Json(written))
}
