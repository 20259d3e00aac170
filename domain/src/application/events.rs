use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::mfa::{WebauthnSettings, Workflow};

/// Everything that happens to an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum ApplicationEvent {
    #[serde(rename = "application.created")]
    Created(ApplicationCreated),
    #[serde(rename = "application.workflow_overrides.changed")]
    WorkflowOverridesChanged(WorkflowOverridesChanged),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApplicationCreated {
    pub application_id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkflowOverridesChanged {
    pub overrides: WorkflowOverrides,
    pub at: DateTime<Utc>,
}

/// Whether an application follows the tenant for one workflow, or turns it on or off.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowOverride {
    #[default]
    Inherit,
    On,
    Off,
}

impl WorkflowOverride {
    fn apply(self, workflow: Workflow) -> Workflow {
        Workflow {
            enabled: match self {
                Self::Inherit => workflow.enabled,
                Self::On => true,
                Self::Off => false,
            },
            ..workflow
        }
    }
}

/// Which WebAuthn workflows an application turns on or off. Attachment and user
/// verification stay the tenant's: an application changes only whether a workflow is offered.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct WorkflowOverrides {
    pub bootstrap: WorkflowOverride,
    pub reauthentication: WorkflowOverride,
}

impl WorkflowOverrides {
    /// The tenant's settings as seen by this application. WebAuthn itself stays the tenant's
    /// switch: an application cannot turn on what the tenant has not configured.
    pub fn apply(&self, tenant: &WebauthnSettings) -> WebauthnSettings {
        WebauthnSettings {
            bootstrap: self.bootstrap.apply(tenant.bootstrap),
            reauthentication: self.reauthentication.apply(tenant.reauthentication),
            ..tenant.clone()
        }
    }
}

impl cqrs_es::DomainEvent for ApplicationEvent {
    /// The serde type name; stored with each event and never changed once shipped.
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "application.created",
            Self::WorkflowOverridesChanged(_) => "application.workflow_overrides.changed",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_SCHEMA_VERSION.to_owned()
    }
}
