use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lockout::LockoutPolicy;
use crate::mfa::WebauthnSettings;
use crate::password::PasswordPolicy;

/// Everything that happens to a tenant. Type names are stable: never rename one once shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum TenantEvent {
    #[serde(rename = "tenant.created")]
    Created(TenantCreated),
    #[serde(rename = "tenant.lockout_policy.changed")]
    LockoutPolicyChanged(LockoutPolicyChanged),
    #[serde(rename = "tenant.password_policy.changed")]
    PasswordPolicyChanged(PasswordPolicyChanged),
    #[serde(rename = "tenant.webauthn_settings.changed")]
    WebauthnSettingsChanged(WebauthnSettingsChanged),
}

/// The whole new settings, so a reader never has to fold earlier changes to know them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebauthnSettingsChanged {
    pub settings: WebauthnSettings,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TenantCreated {
    pub tenant_id: Uuid,
    pub name: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LockoutPolicyChanged {
    pub policy: LockoutPolicy,
    /// Starts at 1 with the first change; lock events name the version that decided them.
    pub version: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordPolicyChanged {
    pub policy: PasswordPolicy,
    pub at: DateTime<Utc>,
}

impl cqrs_es::DomainEvent for TenantEvent {
    /// The serde type name; stored with each event and never changed once shipped.
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "tenant.created",
            Self::LockoutPolicyChanged(_) => "tenant.lockout_policy.changed",
            Self::PasswordPolicyChanged(_) => "tenant.password_policy.changed",
            Self::WebauthnSettingsChanged(_) => "tenant.webauthn_settings.changed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_SCHEMA_VERSION.to_owned()
    }
}
