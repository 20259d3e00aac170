use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::lockout::LockoutPolicy;
use crate::password::{HashParams, PasswordFacts, PasswordPolicy};
use crate::values::{DisplayName, Email, Username};

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
    Suspend {
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
        at: DateTime<Utc>,
    },
    /// An admin lifts a lock, timed or not.
    Unlock {
        at: DateTime<Utc>,
    },
}
