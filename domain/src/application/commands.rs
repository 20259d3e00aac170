use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::events::WorkflowOverrides;

/// What can be asked of an application. `at` is when the request arrived.
#[derive(Debug, Clone)]
pub enum ApplicationCommand {
    Create {
        application_id: Uuid,
        tenant_id: Uuid,
        name: String,
        /// Recorded in the same append as the creation when not all `inherit`.
        overrides: WorkflowOverrides,
        at: DateTime<Utc>,
    },
    /// Replaces the overrides; nothing is recorded when they are what they were.
    ChangeWorkflowOverrides {
        overrides: WorkflowOverrides,
        at: DateTime<Utc>,
    },
}
