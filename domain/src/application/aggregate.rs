use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::commands::ApplicationCommand;
use super::events::{
    ApplicationCreated, ApplicationEvent, WorkflowOverrides, WorkflowOverridesChanged,
};
use crate::values::DisplayName;

/// Why an application command was refused; see [`ApplicationError::code`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplicationError {
    #[error("application not found")]
    NotFound,
    #[error("application already exists")]
    AlreadyExists,
    #[error("the name must be 1 to 200 characters without control characters")]
    InvalidName,
}

impl ApplicationError {
    /// A stable snake_case code for API answers; never changes once shipped.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "application_not_found",
            Self::AlreadyExists => "application_exists",
            Self::InvalidName => "invalid_application_name",
        }
    }
}

/// An application as its events left it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Application {
    id: Option<Uuid>,
    tenant_id: Uuid,
    name: String,
    overrides: WorkflowOverrides,
}

impl Application {
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn overrides(&self) -> WorkflowOverrides {
        self.overrides
    }
}

impl Aggregate for Application {
    const TYPE: &'static str = "application";
    type Command = ApplicationCommand;
    type Event = ApplicationEvent;
    type Error = ApplicationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ApplicationCommand::Create {
                application_id,
                tenant_id,
                name,
                overrides,
                at,
            } => {
                if self.exists() {
                    return Err(ApplicationError::AlreadyExists);
                }
                let name = DisplayName::parse(&name).map_err(|_| ApplicationError::InvalidName)?;
                let created = ApplicationCreated {
                    application_id,
                    tenant_id,
                    name: name.into(),
                    at,
                };
                sink.write(ApplicationEvent::Created(created), self).await;
                if overrides != WorkflowOverrides::default() {
                    let changed = WorkflowOverridesChanged { overrides, at };
                    sink.write(ApplicationEvent::WorkflowOverridesChanged(changed), self)
                        .await;
                }
            }
            ApplicationCommand::ChangeWorkflowOverrides { overrides, at } => {
                if !self.exists() {
                    return Err(ApplicationError::NotFound);
                }
                if overrides != self.overrides {
                    let changed = WorkflowOverridesChanged { overrides, at };
                    sink.write(ApplicationEvent::WorkflowOverridesChanged(changed), self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ApplicationEvent::Created(e) => {
                self.id = Some(e.application_id);
                self.tenant_id = e.tenant_id;
                self.name = e.name;
            }
            ApplicationEvent::WorkflowOverridesChanged(e) => self.overrides = e.overrides,
        }
    }
}
