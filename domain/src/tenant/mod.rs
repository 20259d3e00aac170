//! A tenant: an isolated set of users with its own password and lockout policies.

mod aggregate;
mod commands;
mod events;

pub use aggregate::{Tenant, TenantError};
pub use commands::TenantCommand;
pub use events::{
    LockoutPolicyChanged, PasswordPolicyChanged, TenantCreated, TenantEvent,
    WebauthnSettingsChanged,
};
