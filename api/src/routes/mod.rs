//! One module per resource.

pub mod applications;
pub mod audit;
pub mod auth;
pub mod checkpoints;
pub mod credentials;
pub mod erasure;
pub mod events;
pub mod history;
pub mod mfa;
pub mod password_reset;
pub mod portal;
pub mod settings;
pub mod step_up;
pub mod system;
pub mod users;
pub mod webauthn_settings;
pub mod webhooks;

use serde::Serialize;
use utoipa::ToSchema;

/// The answer to a command that changed nothing visible but its position.
#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    /// The log position written, or null when the command changed nothing. Pass it as
    /// `X-Keyledger-Min-Position` to a later read to see this write.
    pub position: Option<u64>,
}
