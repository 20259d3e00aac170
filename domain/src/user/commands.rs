use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::lockout::LockoutPolicy;
use crate::mfa::{CredentialActor, CredentialId, CredentialLabel, MfaRequirement};
use crate::password::{HashParams, PasswordFacts, PasswordPolicy};
use crate::values::{DisplayName, Email, Username};

use super::events::{LoginMethod, MfaFailureReason, MfaMethod, NewCredential};

/// A new password as the aggregate sees it: the caller measured the plaintext
/// ([`PasswordFacts::measure`]) and hashed it, keeping the hash beside the log. The aggregate
/// judges the facts itself, because only it knows the account's state (for instance whether it
/// has a second factor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedPassword {
    pub facts: PasswordFacts,
    /// How the caller hashed it; recorded so older hashes can be found and upgraded.
    pub hash: HashParams,
}

/// What can be asked of a user. `at` is the time the request arrived and the tenant's policies
/// come in the command: the domain reads no clock and looks nothing up.
#[derive(Debug, Clone)]
pub enum UserCommand {
    /// A refused initial password is an error, not an event: there is no stream yet to record
    /// it in.
    Create {
        user_id: Uuid,
        tenant_id: Uuid,
        username: Username,
        email: Option<Email>,
        display_name: Option<DisplayName>,
        initial_password: Option<ProposedPassword>,
        password_policy: PasswordPolicy,
        at: DateTime<Utc>,
    },
    /// `None` leaves a field as it is; only fields that differ are recorded.
    UpdateProfile {
        username: Option<Username>,
        email: Option<Email>,
        display_name: Option<DisplayName>,
        at: DateTime<Utc>,
    },
    /// Erases the user's personal data (the right to erasure). Final: every later command is
    /// refused.
    Erase {
        at: DateTime<Utc>,
    },
    Suspend {
        at: DateTime<Utc>,
    },
    /// An admin signs the user out everywhere: every session of the user ends.
    EndSessions {
        at: DateTime<Utc>,
    },
    Reactivate {
        at: DateTime<Utc>,
    },
    /// An admin sets the password. A refusal is recorded as `user.password.rejected`.
    SetPassword {
        proposal: ProposedPassword,
        policy: PasswordPolicy,
        at: DateTime<Utc>,
    },
    /// The user changes their own password, proving the current one. A refusal is recorded as
    /// `user.password.rejected`.
    ChangePassword {
        /// Whether the caller verified the current password against the stored hash.
        current_password_ok: bool,
        proposal: ProposedPassword,
        policy: PasswordPolicy,
        at: DateTime<Utc>,
    },
    /// Hands the password to (or takes it back from) an external identity provider.
    SetPasswordManagement {
        externally_managed: bool,
        at: DateTime<Utc>,
    },
    /// One login attempt by password. Every outcome is an event, never an error, so that
    /// failures are always on record.
    RecordLoginAttempt {
        /// Made by the caller per attempt; a lock names the failed attempts that caused it.
        attempt_id: Uuid,
        /// The username or email as typed; recorded trimmed and cut to
        /// [`MAX_IDENTIFIER_CODE_POINTS`](super::MAX_IDENTIFIER_CODE_POINTS).
        identifier: String,
        /// Whether the caller verified the password against the stored hash.
        password_ok: bool,
        /// The parameters of a fresh hash of the same password, when the stored one was made
        /// with older ones; recorded only if the login succeeds and the parameters differ.
        rehash: Option<HashParams>,
        /// The tenant's lockout policy and its version, which a lock event names.
        lockout: LockoutPolicy,
        lockout_version: u64,
        /// The tenant's MFA requirement; the user's own overrides it. A right password then
        /// passes only the first factor when a second one is owed.
        tenant_mfa: MfaRequirement,
        at: DateTime<Utc>,
    },
    /// An admin lifts a lock, timed or not.
    Unlock {
        at: DateTime<Utc>,
    },
    /// A WebAuthn credential whose registration ceremony the caller verified. Legacy (U2F)
    /// credentials cannot be registered, only imported.
    RegisterWebauthnCredential {
        credential: NewCredential,
        by: CredentialActor,
        at: DateTime<Utc>,
    },
    /// A U2F key brought over from another system, registered as kind `legacy`.
    ImportLegacyCredential {
        credential: NewCredential,
        by: CredentialActor,
        at: DateTime<Utc>,
    },
    RenameWebauthnCredential {
        credential_id: CredentialId,
        label: CredentialLabel,
        by: CredentialActor,
        at: DateTime<Utc>,
    },
    /// Removing the last factor of a user who must use MFA is refused unless confirmed.
    RemoveWebauthnCredential {
        credential_id: CredentialId,
        by: CredentialActor,
        confirm_lockout: bool,
        tenant_mfa: MfaRequirement,
        at: DateTime<Utc>,
    },
    /// TOTP becomes active with its first valid code (`step`), which can then never be used
    /// again. The secret stays beside the log.
    AddTotp {
        step: u64,
        at: DateTime<Utc>,
    },
    RemoveTotp {
        by: CredentialActor,
        confirm_lockout: bool,
        tenant_mfa: MfaRequirement,
        at: DateTime<Utc>,
    },
    /// `None` follows the tenant's requirement.
    SetMfaRequirement {
        requirement: Option<MfaRequirement>,
        at: DateTime<Utc>,
    },
    /// A second factor the caller verified cryptographically (assertion signature, TOTP code);
    /// the aggregate still refuses a sign count that went backwards or a TOTP step used
    /// before. `login` names the login it completes, if it completes one.
    UseSecondFactor {
        proof: SecondFactorProof,
        login: Option<(Uuid, LoginMethod)>,
        at: DateTime<Utc>,
    },
    /// A reset token was made and queued for the user's email; it expires at `expires_at`.
    RequestPasswordReset {
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Completes a reset whose token the caller took (single use). A user who holds a second
    /// factor must have proved it (`second_factor_ok`); a refusal of the password itself is
    /// recorded as `user.password.rejected` with `by: reset`.
    ResetPassword {
        proposal: ProposedPassword,
        policy: PasswordPolicy,
        second_factor_ok: bool,
        at: DateTime<Utc>,
    },
    /// A refused ceremony whose reason is worth keeping (debug mode, or always for a possible
    /// cloned authenticator).
    ///
    /// A failure within a login (`attempt_id`) counts towards the lockout like a wrong
    /// password, so that a stolen password cannot buy unlimited guesses at the second factor.
    RecordMfaFailure {
        attempt_id: Option<Uuid>,
        method: MfaMethod,
        reason: MfaFailureReason,
        credential_id: Option<CredentialId>,
        lockout: LockoutPolicy,
        lockout_version: u64,
        at: DateTime<Utc>,
    },
}

/// What a verified second factor showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondFactorProof {
    Webauthn {
        credential_id: CredentialId,
        sign_count: u32,
        user_verified: bool,
        backed_up: bool,
    },
    /// The 30-second time step the accepted code belongs to.
    Totp { step: u64 },
}
