//! Applications of the tenant and their WebAuthn workflow overrides: `/api/v1/applications`.
//! A login or ceremony that names an `application_id` runs under the tenant's settings with
//! that application's overrides applied ([`effective_settings`]).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::application::{
    Application, ApplicationCommand, ApplicationError, WorkflowOverride, WorkflowOverrides,
};
use keyledger_domain::mfa::WebauthnSettings;
use keyledger_domain::tenant::Tenant;
use keyledger_projections::views::applications::{ApplicationRow, ApplicationsView};
use keyledger_store::{ExecuteError, Executed, SideWrites};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::commands::{append_error, context};
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, ApiPath, ReadAfter, RequestContext};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverrideBody {
    /// Follow the tenant's setting.
    Inherit,
    On,
    Off,
}

impl From<OverrideBody> for WorkflowOverride {
    fn from(value: OverrideBody) -> Self {
        match value {
            OverrideBody::Inherit => Self::Inherit,
            OverrideBody::On => Self::On,
            OverrideBody::Off => Self::Off,
        }
    }
}

impl From<WorkflowOverride> for OverrideBody {
    fn from(value: WorkflowOverride) -> Self {
        match value {
            WorkflowOverride::Inherit => Self::Inherit,
            WorkflowOverride::On => Self::On,
            WorkflowOverride::Off => Self::Off,
        }
    }
}

/// Which WebAuthn workflows the application turns on or off.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowOverridesBody {
    /// Passwordless login with a passkey.
    pub bootstrap: OverrideBody,
    /// A second factor after the password.
    pub reauthentication: OverrideBody,
}

impl From<WorkflowOverridesBody> for WorkflowOverrides {
    fn from(value: WorkflowOverridesBody) -> Self {
        Self {
            bootstrap: value.bootstrap.into(),
            reauthentication: value.reauthentication.into(),
        }
    }
}

impl From<WorkflowOverrides> for WorkflowOverridesBody {
    fn from(value: WorkflowOverrides) -> Self {
        Self {
            bootstrap: value.bootstrap.into(),
            reauthentication: value.reauthentication.into(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApplication {
    /// 1 to 200 characters.
    pub name: String,
    /// Default: inherit both.
    pub workflows: Option<WorkflowOverridesBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationBody {
    pub id: Uuid,
    pub name: String,
    pub workflows: WorkflowOverridesBody,
    /// The log position written (on creation and changes).
    pub position: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationListItem {
    pub id: Uuid,
    pub name: String,
    /// `inherit`, `on` or `off`.
    pub bootstrap: String,
    pub reauthentication: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ApplicationRow> for ApplicationListItem {
    fn from(row: ApplicationRow) -> Self {
        Self {
            id: row.application_id,
            name: row.name,
            bootstrap: row.bootstrap,
            reauthentication: row.reauthentication,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationList {
    pub applications: Vec<ApplicationListItem>,
}

fn application_error(e: ExecuteError<ApplicationError>) -> ApiError {
    match e {
        ExecuteError::Domain(ApplicationError::NotFound) => ApiError::NotFound("application"),
        ExecuteError::Domain(refused @ ApplicationError::InvalidName) => ApiError::InvalidValue {
            code: refused.code(),
            detail: refused.to_string(),
        },
        ExecuteError::Domain(refused @ ApplicationError::AlreadyExists) => ApiError::Conflict {
            code: refused.code(),
            detail: refused.to_string(),
        },
        other => append_error(other),
    }
}

fn body(id: Uuid, executed: &Executed<Application>) -> ApplicationBody {
    ApplicationBody {
        id,
        name: executed.aggregate.name().to_owned(),
        workflows: executed.aggregate.overrides().into(),
        position: executed.appended.map(|a| a.last_position),
    }
}

/// The application of the tenant named `id`; another tenant's answers as missing.
pub async fn load_application(
    state: &AppState,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Application, ApiError> {
    let (application, _) = state
        .applications
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if application.exists() && application.tenant_id() == tenant_id {
        Ok(application)
    } else {
        Err(ApiError::NotFound("application"))
    }
}

/// The tenant's WebAuthn settings as the named application sees them (the tenant's own when
/// none is named). An unknown application is refused: a typo must not silently fall back.
pub async fn effective_settings(
    state: &AppState,
    tenant: &Tenant,
    application_id: Option<Uuid>,
) -> Result<WebauthnSettings, ApiError> {
    let settings = tenant.webauthn_settings();
    match application_id {
        None => Ok(settings.clone()),
        Some(id) => Ok(load_application(state, tenant.id(), id)
            .await?
            .overrides()
            .apply(settings)),
    }
}

#[utoipa::path(post, path = "/api/v1/applications", request_body = CreateApplication,
    responses((status = 201, body = ApplicationBody), (status = 400)),
    security(("admin" = [])), tag = "applications")]
pub async fn create_application(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(sent): ApiJson<CreateApplication>,
) -> Result<(StatusCode, Json<ApplicationBody>), ApiError> {
    let id = Uuid::now_v7();
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    let command = ApplicationCommand::Create {
        application_id: id,
        tenant_id: DEFAULT_TENANT_ID,
        name: sent.name,
        overrides: sent.workflows.map(Into::into).unwrap_or_default(),
        at: ctx.now,
    };
    let executed = state
        .applications
        .execute(&id.to_string(), command, &(), &ctx, |_, _, _| {
            SideWrites::default()
        })
        .await
        .map_err(application_error)?;
    tracing::info!(application = %id, "application created");
    Ok((StatusCode::CREATED, Json(body(id, &executed))))
}

#[utoipa::path(get, path = "/api/v1/applications",
    responses((status = 200, body = ApplicationList)), security(("admin" = [])),
    tag = "applications")]
pub async fn list_applications(
    _admin: Admin,
    _read: ReadAfter,
    State(state): State<AppState>,
) -> Result<Json<ApplicationList>, ApiError> {
    let rows = ApplicationsView::list(state.db(), DEFAULT_TENANT_ID).await?;
    Ok(Json(ApplicationList {
        applications: rows.into_iter().map(ApplicationListItem::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/applications/{id}",
    params(("id" = Uuid, Path, description = "The application id")),
    responses((status = 200, body = ApplicationBody), (status = 404)),
    security(("admin" = [])), tag = "applications")]
pub async fn get_application(
    _admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ApplicationBody>, ApiError> {
    let application = load_application(&state, DEFAULT_TENANT_ID, id).await?;
    Ok(Json(ApplicationBody {
        id,
        name: application.name().to_owned(),
        workflows: application.overrides().into(),
        position: None,
    }))
}

#[utoipa::path(put, path = "/api/v1/applications/{id}/workflows",
    request_body = WorkflowOverridesBody,
    params(("id" = Uuid, Path, description = "The application id")),
    responses((status = 200, body = ApplicationBody), (status = 400), (status = 404)),
    security(("admin" = [])), tag = "applications")]
pub async fn put_workflows(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(sent): ApiJson<WorkflowOverridesBody>,
) -> Result<Json<ApplicationBody>, ApiError> {
    load_application(&state, DEFAULT_TENANT_ID, id).await?;
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    let command = ApplicationCommand::ChangeWorkflowOverrides {
        overrides: sent.into(),
        at: ctx.now,
    };
    let executed = state
        .applications
        .execute(&id.to_string(), command, &(), &ctx, |_, _, _| {
            SideWrites::default()
        })
        .await
        .map_err(application_error)?;
    Ok(Json(body(id, &executed)))
}
