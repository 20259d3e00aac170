//! The tenant's WebAuthn and MFA settings: `/api/v1/settings/webauthn`.

use axum::Json;
use axum::extract::State;
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::mfa::{
    Attachment, MfaRequirement, Origin, RelyingPartyId, SettingsError, UserVerification,
    WebauthnSettings, Workflow,
};
use keyledger_domain::tenant::{Tenant, TenantCommand};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::settings::change_policy;
use crate::commands::tenant;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, RequestContext};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentBody {
    Any,
    Platform,
    CrossPlatform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserVerificationBody {
    Required,
    Preferred,
    Discouraged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequirementBody {
    Required,
    Optional,
}

impl From<RequirementBody> for MfaRequirement {
    fn from(value: RequirementBody) -> Self {
        match value {
            RequirementBody::Required => Self::Required,
            RequirementBody::Optional => Self::Optional,
        }
    }
}

impl From<MfaRequirement> for RequirementBody {
    fn from(value: MfaRequirement) -> Self {
        match value {
            MfaRequirement::Required => Self::Required,
            MfaRequirement::Optional => Self::Optional,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowBody {
    pub enabled: bool,
    pub attachment: AttachmentBody,
    pub user_verification: UserVerificationBody,
}

impl From<WorkflowBody> for Workflow {
    fn from(w: WorkflowBody) -> Self {
        Workflow {
            enabled: w.enabled,
            attachment: match w.attachment {
                AttachmentBody::Any => Attachment::Any,
                AttachmentBody::Platform => Attachment::Platform,
                AttachmentBody::CrossPlatform => Attachment::CrossPlatform,
            },
            user_verification: match w.user_verification {
                UserVerificationBody::Required => UserVerification::Required,
                UserVerificationBody::Preferred => UserVerification::Preferred,
                UserVerificationBody::Discouraged => UserVerification::Discouraged,
            },
        }
    }
}

impl From<Workflow> for WorkflowBody {
    fn from(w: Workflow) -> Self {
        WorkflowBody {
            enabled: w.enabled,
            attachment: match w.attachment {
                Attachment::Any => AttachmentBody::Any,
                Attachment::Platform => AttachmentBody::Platform,
                Attachment::CrossPlatform => AttachmentBody::CrossPlatform,
            },
            user_verification: match w.user_verification {
                UserVerification::Required => UserVerificationBody::Required,
                UserVerification::Preferred => UserVerificationBody::Preferred,
                UserVerification::Discouraged => UserVerificationBody::Discouraged,
            },
        }
    }
}

/// The settings as sent and as answered.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebauthnSettingsRequest {
    pub enabled: bool,
    /// The origin's effective domain or a registrable suffix of it (never a public suffix).
    pub relying_party_id: Option<String>,
    /// Shown by authenticators; null: the tenant's name.
    pub relying_party_name: Option<String>,
    /// `https://host[:port]` (or `http://localhost[:port]`), at most 32.
    pub allowed_origins: Vec<String>,
    /// Refused ceremonies record their detailed reason as `user.mfa.failed`.
    pub debug: bool,
    /// Passwordless first-factor login with a passkey.
    pub bootstrap: WorkflowBody,
    /// A second factor after the password, and step-up.
    pub reauthentication: WorkflowBody,
    /// When off, only admins register keys for users.
    pub self_registration: bool,
    pub mfa_requirement: RequirementBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebauthnSettingsBody {
    pub enabled: bool,
    pub relying_party_id: Option<String>,
    /// The effective name (the tenant's when none is configured).
    pub relying_party_name: String,
    pub allowed_origins: Vec<String>,
    pub debug: bool,
    pub bootstrap: WorkflowBody,
    pub reauthentication: WorkflowBody,
    pub self_registration: bool,
    pub mfa_requirement: RequirementBody,
    /// The log position written by a change (null on reads and on an unchanged PUT).
    pub position: Option<u64>,
}

fn body(tenant: &Tenant, position: Option<u64>) -> WebauthnSettingsBody {
    let s = tenant.webauthn_settings();
    WebauthnSettingsBody {
        enabled: s.enabled,
        relying_party_id: s.relying_party_id.as_ref().map(|id| id.as_str().to_owned()),
        relying_party_name: tenant.relying_party_name().to_owned(),
        allowed_origins: s
            .allowed_origins
            .iter()
            .map(|o| o.as_str().to_owned())
            .collect(),
        debug: s.debug,
        bootstrap: s.bootstrap.into(),
        reauthentication: s.reauthentication.into(),
        self_registration: s.self_registration,
        mfa_requirement: s.mfa_requirement.into(),
        position,
    }
}

fn invalid(e: SettingsError) -> ApiError {
    ApiError::InvalidSettings {
        code: e.code(),
        detail: e.to_string(),
    }
}

#[utoipa::path(get, path = "/api/v1/settings/webauthn",
    responses((status = 200, body = WebauthnSettingsBody)), security(("admin" = [])),
    tag = "settings")]
pub async fn get_webauthn(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<WebauthnSettingsBody>, ApiError> {
    let tenant = tenant(&state, DEFAULT_TENANT_ID).await?;
    Ok(Json(body(&tenant, None)))
}

#[utoipa::path(put, path = "/api/v1/settings/webauthn", request_body = WebauthnSettingsRequest,
    responses((status = 200, body = WebauthnSettingsBody), (status = 400)),
    security(("admin" = [])), tag = "settings")]
pub async fn put_webauthn(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiJson(sent): ApiJson<WebauthnSettingsRequest>,
) -> Result<Json<WebauthnSettingsBody>, ApiError> {
    let settings = WebauthnSettings {
        enabled: sent.enabled,
        relying_party_id: sent
            .relying_party_id
            .as_deref()
            .map(RelyingPartyId::parse)
            .transpose()
            .map_err(invalid)?,
        relying_party_name: sent.relying_party_name,
        allowed_origins: sent
            .allowed_origins
            .iter()
            .map(|o| Origin::parse(o))
            .collect::<Result<_, _>>()
            .map_err(invalid)?,
        debug: sent.debug,
        bootstrap: sent.bootstrap.into(),
        reauthentication: sent.reauthentication.into(),
        self_registration: sent.self_registration,
        mfa_requirement: sent.mfa_requirement.into(),
    };
    let executed = change_policy(&state, admin, &request, |at| {
        TenantCommand::ChangeWebauthnSettings { settings, at }
    })
    .await?;
    Ok(Json(body(
        &executed.aggregate,
        executed.appended.map(|a| a.last_position),
    )))
}
