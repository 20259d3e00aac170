use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::lockout::LockoutPolicy;
use crate::mfa::WebauthnSettings;
use crate::password::PasswordPolicy;

/// What can be asked of a tenant. `at` is the time the request arrived: the domain reads no clock.
#[derive(Debug, Clone)]
pub enum TenantCommand {
    /// `name` is checked like a display name (trimmed, 1 to 200 code points, no control
    /// characters).
    Create {
        tenant_id: Uuid,
        name: String,
        at: DateTime<Utc>,
    },
    ChangeLockoutPolicy {
        policy: LockoutPolicy,
        at: DateTime<Utc>,
    },
    ChangePasswordPolicy {
        policy: PasswordPolicy,
        at: DateTime<Utc>,
    },
    /// Replaces the WebAuthn and MFA settings as a whole; validated before recording.
    ChangeWebauthnSettings {
        settings: WebauthnSettings,
        at: DateTime<Utc>,
    },
}
