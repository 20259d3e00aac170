use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::password::{HashParams, PasswordRejection};

/// Everything that happens to a user. Type names are stable: never rename one once shipped.
/// No event carries a password, a hash or a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    #[serde(rename = "user.created")]
    Created(UserCreated),
    #[serde(rename = "user.profile.updated")]
    ProfileUpdated(ProfileUpdated),
    #[serde(rename = "user.suspended")]
    Suspended(UserSuspended),
    #[serde(rename = "user.reactivated")]
    Reactivated(UserReactivated),
    /// Set by an admin (also the initial password given at creation).
    #[serde(rename = "user.password.set")]
    PasswordSet(PasswordSet),
    /// Changed by the user themselves.
    #[serde(rename = "user.password.changed")]
    PasswordChanged(PasswordChanged),
    #[serde(rename = "user.password.rejected")]
    PasswordRejected(PasswordRejected),
    /// A hash made with older parameters was replaced at a successful login.
    #[serde(rename = "user.password.rehashed")]
    PasswordRehashed(PasswordRehashed),
    #[serde(rename = "user.password_management.changed")]
    PasswordManagementChanged(PasswordManagementChanged),
    #[serde(rename = "user.login.succeeded")]
    LoginSucceeded(LoginSucceeded),
    #[serde(rename = "user.login.failed")]
    LoginFailed(LoginFailed),
    #[serde(rename = "user.locked")]
    Locked(AccountLocked),
    #[serde(rename = "user.unlocked")]
    Unlocked(AccountUnlocked),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserCreated {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub at: DateTime<Utc>,
}

/// Only the fields that changed are present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProfileUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserSuspended {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserReactivated {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordSet {
    /// How the hash kept beside the log was made; the hash itself never enters the log.
    pub hash: HashParams,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordChanged {
    pub hash: HashParams,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PasswordChangeBy {
    Admin,
    #[serde(rename = "self")]
    User,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordRejected {
    pub by: PasswordChangeBy,
    pub reason: PasswordRejection,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordRehashed {
    pub from: HashParams,
    pub to: HashParams,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordManagementChanged {
    pub externally_managed: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginMethod {
    Password,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginSucceeded {
    /// Made by the caller per attempt; lock events name failed attempts by it.
    pub attempt_id: Uuid,
    pub method: LoginMethod,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginFailureReason {
    BadPassword,
    /// Recorded in the tenant's `unknown_login` stream, never in a user's.
    UnknownUser,
    Suspended,
    Locked,
    ExternallyManaged,
    /// The account has no password set.
    NoPassword,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoginFailed {
    pub attempt_id: Uuid,
    pub reason: LoginFailureReason,
    /// The username or email as the client typed it (after trimming), so that auditors can
    /// see credential stuffing against names that do not exist.
    pub identifier: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LockReason {
    TooManyFailedAttempts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccountLocked {
    pub reason: LockReason,
    /// `None`: locked until an admin unlocks.
    pub until: Option<DateTime<Utc>>,
    /// The `attempt_id`s of the failures that caused the lock, oldest first.
    pub failed_attempts: Vec<Uuid>,
    /// The tenant's lockout policy version that decided the lock (0: the built-in default).
    pub policy_version: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnlockedBy {
    Admin,
    /// The lock's `until` passed; recorded at the first attempt after it, dated `until`.
    Expiry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccountUnlocked {
    pub by: UnlockedBy,
    pub at: DateTime<Utc>,
}

impl cqrs_es::DomainEvent for UserEvent {
    /// The serde type name; stored with each event and never changed once shipped.
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "user.created",
            Self::ProfileUpdated(_) => "user.profile.updated",
            Self::Suspended(_) => "user.suspended",
            Self::Reactivated(_) => "user.reactivated",
            Self::PasswordSet(_) => "user.password.set",
            Self::PasswordChanged(_) => "user.password.changed",
            Self::PasswordRejected(_) => "user.password.rejected",
            Self::PasswordRehashed(_) => "user.password.rehashed",
            Self::PasswordManagementChanged(_) => "user.password_management.changed",
            Self::LoginSucceeded(_) => "user.login.succeeded",
            Self::LoginFailed(_) => "user.login.failed",
            Self::Locked(_) => "user.locked",
            Self::Unlocked(_) => "user.unlocked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_SCHEMA_VERSION.to_owned()
    }
}
