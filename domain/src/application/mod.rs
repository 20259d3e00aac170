//! An application: a relying app of a tenant (a web app, a mobile app) that logins and
//! ceremonies may name. It inherits the tenant's WebAuthn settings, except that it may turn
//! each workflow on or off for itself ([`WorkflowOverrides`]).

mod aggregate;
mod commands;
mod events;

#[cfg(test)]
mod tests;

pub use aggregate::{Application, ApplicationError};
pub use commands::ApplicationCommand;
pub use events::{
    ApplicationCreated, ApplicationEvent, WorkflowOverride, WorkflowOverrides,
    WorkflowOverridesChanged,
};
