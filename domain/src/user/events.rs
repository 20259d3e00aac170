use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::mfa::{CredentialActor, CredentialId, CredentialKind, MfaRequirement};
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
    /// An admin ended every session of the user; the account stays usable.
    #[serde(rename = "user.sessions.ended")]
    SessionsEnded(SessionsEnded),
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
    /// The password was right and a second factor is owed: the login is not complete.
    #[serde(rename = "user.login.first_factor_passed")]
    FirstFactorPassed(FirstFactorPassed),
    #[serde(rename = "user.webauthn.registered")]
    WebauthnRegistered(WebauthnRegistered),
    #[serde(rename = "user.webauthn.renamed")]
    WebauthnRenamed(WebauthnRenamed),
    #[serde(rename = "user.webauthn.removed")]
    WebauthnRemoved(WebauthnRemoved),
    #[serde(rename = "user.webauthn.used")]
    WebauthnUsed(WebauthnUsed),
    #[serde(rename = "user.totp.added")]
    TotpAdded(TotpAdded),
    #[serde(rename = "user.totp.removed")]
    TotpRemoved(TotpRemoved),
    #[serde(rename = "user.totp.used")]
    TotpUsed(TotpUsed),
    #[serde(rename = "user.mfa_requirement.changed")]
    MfaRequirementChanged(MfaRequirementChanged),
    #[serde(rename = "user.mfa.failed")]
    MfaFailed(MfaFailed),
    /// A reset token was sent (through the mail outbox); the token itself is never here.
    #[serde(rename = "user.password_reset.requested")]
    PasswordResetRequested(PasswordResetRequested),
    #[serde(rename = "user.password.reset")]
    PasswordReset(PasswordReset),
    /// The user's personal data was erased: their data key is destroyed, so their events keep
    /// their shape but no longer their personal fields. Nothing is recorded about them after.
    #[serde(rename = "user.erased")]
    Erased(UserErased),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserErased {
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordResetRequested {
    /// When the token stops working (5 minutes after the request).
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordReset {
    pub hash: HashParams,
    /// Whether the user proved a second factor (required when they hold one).
    pub second_factor_verified: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FirstFactorPassed {
    pub attempt_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A credential as a verified registration ceremony produced it. The public key is not here:
/// it stays beside the log with the ceremony library's own record of the credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NewCredential {
    pub credential_id: CredentialId,
    pub label: String,
    pub kind: CredentialKind,
    /// The authenticator model (all zeros when the authenticator does not say).
    pub aaguid: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_name: Option<String>,
    /// As the browser reported them (`usb`, `nfc`, `ble`, `internal`, `hybrid`).
    pub transports: Vec<String>,
    pub user_verified: bool,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub sign_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebauthnRegistered {
    #[serde(flatten)]
    pub credential: NewCredential,
    pub registered_by: CredentialActor,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebauthnRenamed {
    pub credential_id: CredentialId,
    pub old_label: String,
    pub new_label: String,
    pub by: CredentialActor,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebauthnRemoved {
    pub credential_id: CredentialId,
    pub label: String,
    pub kind: CredentialKind,
    pub by: CredentialActor,
    /// The user must use MFA and this was their last factor: the remover confirmed anyway.
    pub lockout_warning_overridden: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebauthnUsed {
    pub credential_id: CredentialId,
    pub sign_count: u32,
    pub user_verified: bool,
    pub backed_up: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TotpAdded {
    /// The time step of the first code, which activated it (never accepted again).
    pub step: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TotpRemoved {
    pub by: CredentialActor,
    pub lockout_warning_overridden: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TotpUsed {
    pub step: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MfaRequirementChanged {
    /// `None`: the user follows the tenant's requirement again.
    pub requirement: Option<MfaRequirement>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MfaMethod {
    Webauthn,
    Totp,
}

/// Why a second factor was refused. The client always gets the same answer; this is for
/// the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MfaFailureReason {
    /// The sign count did not grow: possibly a cloned authenticator.
    SignCountRegressed,
    UnknownCredential,
    ChallengeExpiredOrUsed,
    WrongOrigin,
    WrongRelyingParty,
    UserVerificationMissing,
    /// The credential's kind is not one the workflow's authenticator attachment allows
    /// (a security key where only device authenticators may log in, or the reverse).
    AuthenticatorAttachmentNotAllowed,
    InvalidSignature,
    /// Anything else the ceremony library refused.
    CeremonyRefused,
    TotpCodeWrong,
    TotpCodeReused,
    /// The reason is withheld: the tenant's debug mode is off.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MfaFailed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<Uuid>,
    pub method: MfaMethod,
    pub reason: MfaFailureReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<CredentialId>,
    pub at: DateTime<Utc>,
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
pub struct SessionsEnded {
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
    /// The user, through a password reset token (and their second factor, if they have one).
    Reset,
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
    /// Password, then a WebAuthn assertion.
    PasswordWebauthn,
    /// Password, then a TOTP code.
    PasswordTotp,
    /// A discoverable credential alone (the bootstrap workflow).
    Passkey,
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
            Self::SessionsEnded(_) => "user.sessions.ended",
            Self::PasswordSet(_) => "user.password.set",
            Self::PasswordChanged(_) => "user.password.changed",
            Self::PasswordRejected(_) => "user.password.rejected",
            Self::PasswordRehashed(_) => "user.password.rehashed",
            Self::PasswordManagementChanged(_) => "user.password_management.changed",
            Self::LoginSucceeded(_) => "user.login.succeeded",
            Self::LoginFailed(_) => "user.login.failed",
            Self::Locked(_) => "user.locked",
            Self::Unlocked(_) => "user.unlocked",
            Self::FirstFactorPassed(_) => "user.login.first_factor_passed",
            Self::WebauthnRegistered(_) => "user.webauthn.registered",
            Self::WebauthnRenamed(_) => "user.webauthn.renamed",
            Self::WebauthnRemoved(_) => "user.webauthn.removed",
            Self::WebauthnUsed(_) => "user.webauthn.used",
            Self::TotpAdded(_) => "user.totp.added",
            Self::TotpRemoved(_) => "user.totp.removed",
            Self::TotpUsed(_) => "user.totp.used",
            Self::MfaRequirementChanged(_) => "user.mfa_requirement.changed",
            Self::MfaFailed(_) => "user.mfa.failed",
            Self::PasswordResetRequested(_) => "user.password_reset.requested",
            Self::PasswordReset(_) => "user.password.reset",
            Self::Erased(_) => "user.erased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::EVENT_SCHEMA_VERSION.to_owned()
    }
}
