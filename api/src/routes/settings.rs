//! Tenant settings: `/api/v1/settings/lockout` and `/api/v1/settings/password`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::lockout::LockoutPolicy;
use keyledger_domain::password::PasswordPolicy;
use keyledger_domain::tenant::{Tenant, TenantCommand, TenantError};
use keyledger_store::{ExecuteError, Executed, SideWrites};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::commands::{append_error, context, tenant};
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, RequestContext};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockoutSettings {
    pub enabled: bool,
    /// Consecutive failed logins that lock the account (1 to 100).
    pub max_failures: u32,
    /// Failures older than this many seconds do not count.
    pub window_seconds: u64,
    /// How long a lock lasts; null: until an admin unlocks.
    pub lock_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LockoutSettingsBody {
    pub enabled: bool,
    pub max_failures: u32,
    pub window_seconds: u64,
    pub lock_seconds: Option<u64>,
    /// Increments with every change; lock events name the version that decided them.
    pub version: u64,
    /// The log position written by a change (null on reads and on a change to the same policy).
    pub position: Option<u64>,
}

fn body(policy: &LockoutPolicy, version: u64, position: Option<u64>) -> LockoutSettingsBody {
    LockoutSettingsBody {
        enabled: policy.enabled,
        max_failures: policy.max_failures,
        window_seconds: policy.window_seconds,
        lock_seconds: policy.lock_seconds,
        version,
        position,
    }
}

#[utoipa::path(get, path = "/api/v1/settings/lockout",
    responses((status = 200, body = LockoutSettingsBody)), security(("admin" = [])),
    tag = "settings")]
pub async fn get_lockout(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<LockoutSettingsBody>, ApiError> {
    let tenant = tenant(&state, DEFAULT_TENANT_ID).await?;
    Ok(Json(body(
        tenant.lockout_policy(),
        tenant.lockout_policy_version(),
        None,
    )))
}

#[utoipa::path(put, path = "/api/v1/settings/lockout", request_body = LockoutSettings,
    responses((status = 200, body = LockoutSettingsBody), (status = 400)),
    security(("admin" = [])), tag = "settings")]
pub async fn put_lockout(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(settings): ApiJson<LockoutSettings>,
) -> Result<Json<LockoutSettingsBody>, ApiError> {
    let policy = LockoutPolicy {
        enabled: settings.enabled,
        max_failures: settings.max_failures,
        window_seconds: settings.window_seconds,
        lock_seconds: settings.lock_seconds,
    };
    let executed = change_policy(&state, admin, &request, |at| {
        TenantCommand::ChangeLockoutPolicy { policy, at }
    })
    .await?;
    let tenant = executed.aggregate;
    Ok(Json(body(
        tenant.lockout_policy(),
        tenant.lockout_policy_version(),
        executed.appended.map(|a| a.last_position),
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    /// Minimum length, in code points, when the password is the only factor (at least 15).
    pub min_length_single_factor: u32,
    /// Minimum length once the user has a second factor (at least 8).
    pub min_length_with_second_factor: u32,
    /// Maximum length (64 to 1024).
    pub max_length: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordSettingsBody {
    pub min_length_single_factor: u32,
    pub min_length_with_second_factor: u32,
    pub max_length: u32,
    /// The log position written by a change (null on reads and on a change to the same policy).
    pub position: Option<u64>,
}

fn password_body(policy: &PasswordPolicy, position: Option<u64>) -> PasswordSettingsBody {
    PasswordSettingsBody {
        min_length_single_factor: policy.min_length_single_factor,
        min_length_with_second_factor: policy.min_length_with_second_factor,
        max_length: policy.max_length,
        position,
    }
}

#[utoipa::path(get, path = "/api/v1/settings/password",
    responses((status = 200, body = PasswordSettingsBody)), security(("admin" = [])),
    tag = "settings")]
pub async fn get_password(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<PasswordSettingsBody>, ApiError> {
    let tenant = tenant(&state, DEFAULT_TENANT_ID).await?;
    Ok(Json(password_body(tenant.password_policy(), None)))
}

#[utoipa::path(put, path = "/api/v1/settings/password", request_body = PasswordSettings,
    responses((status = 200, body = PasswordSettingsBody), (status = 400)),
    security(("admin" = [])), tag = "settings")]
pub async fn put_password(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(settings): ApiJson<PasswordSettings>,
) -> Result<Json<PasswordSettingsBody>, ApiError> {
    let policy = PasswordPolicy {
        min_length_single_factor: settings.min_length_single_factor,
        min_length_with_second_factor: settings.min_length_with_second_factor,
        max_length: settings.max_length,
    };
    let executed = change_policy(&state, admin, &request, |at| {
        TenantCommand::ChangePasswordPolicy { policy, at }
    })
    .await?;
    Ok(Json(password_body(
        executed.aggregate.password_policy(),
        executed.appended.map(|a| a.last_position),
    )))
}

/// Runs a policy change on the tenant; changing to the current policy writes nothing.
pub(crate) async fn change_policy(
    state: &AppState,
    admin: Admin,
    request: &RequestContext,
    command: impl FnOnce(DateTime<Utc>) -> TenantCommand,
) -> Result<Executed<Tenant>, ApiError> {
    let ctx = context(state, DEFAULT_TENANT_ID, request, admin.actor);
    state
        .tenants
        .execute(
            &DEFAULT_TENANT_ID.to_string(),
            command(ctx.now),
            &(),
            &ctx,
            |_, _, _| SideWrites::default(),
        )
        .await
        .map_err(settings_error)
}

pub(crate) fn settings_error(e: ExecuteError<TenantError>) -> ApiError {
    match e {
        ExecuteError::Domain(TenantError::NotFound) => ApiError::NotFound("tenant"),
        ExecuteError::Domain(TenantError::InvalidLockoutPolicy(why)) => ApiError::InvalidSettings {
            code: "invalid_lockout_policy",
            detail: why.to_string(),
        },
        ExecuteError::Domain(TenantError::InvalidPasswordPolicy(why)) => {
            ApiError::InvalidSettings {
                code: "invalid_password_policy",
                detail: why.to_string(),
            }
        }
        ExecuteError::Domain(other) => ApiError::InvalidSettings {
            code: other.code(),
            detail: other.to_string(),
        },
        other => append_error(other),
    }
}
