use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::commands::{ProposedPassword, UserCommand};
use super::events::{
    AccountLocked, AccountUnlocked, FirstFactorPassed, LockReason, LoginFailed, LoginFailureReason,
    LoginMethod, LoginSucceeded, MfaFailed, MfaRequirementChanged, PasswordChangeBy,
    PasswordChanged, PasswordManagementChanged, PasswordRehashed, PasswordRejected, PasswordReset,
    PasswordResetRequested, PasswordSet, ProfileUpdated, SessionsEnded, UnlockedBy, UserCreated,
    UserErased, UserEvent, UserReactivated, UserSuspended,
};
use super::second_factor::{SecondFactors, WebauthnCredential};
use crate::lockout::{LockoutPolicy, MAX_FAILURES_LIMIT};
use crate::mfa::MfaRequirement;
use crate::password::{HashParams, PasswordPolicy, PasswordRejection};

/// Login identifiers are recorded as typed, so a client could otherwise write megabytes into the
/// log with one request. 256 leaves room for the longest email (254).
pub const MAX_IDENTIFIER_CODE_POINTS: usize = 256;

/// Why a user command was refused. Refusals worth auditing (bad logins, refused password
/// changes) are events instead; these are the requests that have no stream to go to or make no
/// sense. Each variant has a stable code, see [`UserError::code`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("user already exists")]
    AlreadyExists,
    /// Only for the initial password at creation; later refusals are `user.password.rejected`.
    #[error("password refused")]
    PasswordRefused(#[source] PasswordRejection),
    #[error("the user has no such credential")]
    CredentialNotFound,
    #[error("this credential is already registered for the user")]
    CredentialAlreadyRegistered,
    #[error("legacy (U2F) credentials can only be imported, and imports are legacy")]
    LegacyRegistrationRefused,
    #[error("an admin registered this key: only an admin can rename it")]
    CredentialRegisteredByAdmin,
    #[error(
        "this is the user's last second factor and MFA is required: removing it locks them out of MFA; confirm to remove anyway"
    )]
    LastFactorRemovalUnconfirmed,
    #[error("TOTP is already enrolled")]
    TotpAlreadyEnrolled,
    #[error("TOTP is not enrolled")]
    TotpNotEnrolled,
    #[error("the user holds a second factor: prove it to reset the password")]
    SecondFactorRequired,
    #[error("the user was erased")]
    Erased,
}

impl UserError {
    /// A stable snake_case code for API answers; never changes once shipped.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "user_not_found",
            Self::AlreadyExists => "user_already_exists",
            Self::PasswordRefused(_) => "password_refused",
            Self::CredentialNotFound => "credential_not_found",
            Self::CredentialAlreadyRegistered => "credential_already_registered",
            Self::LegacyRegistrationRefused => "legacy_registration_refused",
            Self::CredentialRegisteredByAdmin => "credential_registered_by_admin",
            Self::LastFactorRemovalUnconfirmed => "last_factor_removal_unconfirmed",
            Self::TotpAlreadyEnrolled => "totp_already_enrolled",
            Self::TotpNotEnrolled => "totp_not_enrolled",
            Self::SecondFactorRequired => "second_factor_required",
            Self::Erased => "user_erased",
        }
    }
}

/// An account lock as recorded by `user.locked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub reason: LockReason,
    pub since: DateTime<Utc>,
    /// `None`: until an admin unlocks.
    pub until: Option<DateTime<Utc>>,
    pub policy_version: u64,
}

impl LockState {
    /// A timed lock ends at `until` exactly.
    pub fn is_active_at(&self, at: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| at < until)
    }
}

/// A `bad_password` failure that may still count towards a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CountedFailure {
    attempt_id: Uuid,
    at: DateTime<Utc>,
}

/// A user as their events left them. Before `user.created` the user does not exist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// `Some` once created.
    id: Option<Uuid>,
    tenant_id: Uuid,
    username: String,
    email: Option<String>,
    display_name: Option<String>,
    created_at: Option<DateTime<Utc>>,
    suspended: bool,
    /// How the current hash was made; `None` while no password is set.
    password: Option<HashParams>,
    password_externally_managed: bool,
    lock: Option<LockState>,
    /// `bad_password` failures since the last success or unlock.
    failed_count: u32,
    /// The latest of those failures, oldest first. No valid policy counts more than
    /// [`MAX_FAILURES_LIMIT`] of them, so older ones are dropped: a slow, endless guesser must
    /// not grow the aggregate without bound.
    recent_failures: VecDeque<CountedFailure>,
    last_login_at: Option<DateTime<Utc>>,
    pub(super) second_factors: SecondFactors,
    /// When the user was erased; nothing happens to them after.
    erased_at: Option<DateTime<Utc>>,
}

impl User {
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// The nil id before creation.
    pub fn id(&self) -> Uuid {
        self.id.unwrap_or_default()
    }

    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// The recorded lock, if any. A timed lock whose `until` has passed stays recorded until the
    /// next attempt or an admin unlock: use [`User::is_locked_at`] to ask whether it still holds.
    pub fn lock(&self) -> Option<&LockState> {
        self.lock.as_ref()
    }

    /// The end of the recorded timed lock. `None` both when there is no lock and when the lock
    /// lasts until an admin unlocks: ask [`User::is_locked_at`] whether the account is locked.
    pub fn locked_until(&self) -> Option<DateTime<Utc>> {
        self.lock.as_ref().and_then(|lock| lock.until)
    }

    pub fn is_locked_at(&self, at: DateTime<Utc>) -> bool {
        self.lock.as_ref().is_some_and(|lock| lock.is_active_at(at))
    }

    /// Consecutive `bad_password` failures since the last success or unlock.
    pub fn failed_count(&self) -> u32 {
        self.failed_count
    }

    pub fn password_externally_managed(&self) -> bool {
        self.password_externally_managed
    }

    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    pub fn password_hash_params(&self) -> Option<&HashParams> {
        self.password.as_ref()
    }

    pub fn last_login_at(&self) -> Option<DateTime<Utc>> {
        self.last_login_at
    }

    /// A WebAuthn credential or TOTP; it lowers the minimum password length.
    pub fn has_second_factor(&self) -> bool {
        self.second_factors.any()
    }

    /// By credential id.
    pub fn webauthn_credentials(&self) -> impl Iterator<Item = &WebauthnCredential> {
        self.second_factors.credentials.values()
    }

    pub fn has_totp(&self) -> bool {
        self.second_factors.totp.is_some()
    }

    /// The user's own requirement; `None` follows the tenant's.
    pub fn mfa_requirement(&self) -> Option<MfaRequirement> {
        self.second_factors.requirement
    }

    /// Whether a login must present a second factor (or enroll one).
    pub fn mfa_owed(&self, tenant: MfaRequirement) -> bool {
        self.has_second_factor()
            || self.second_factors.effective_requirement(tenant) == MfaRequirement::Required
    }

    pub fn last_mfa_at(&self) -> Option<DateTime<Utc>> {
        self.second_factors.last_used_at
    }

    fn require_exists(&self) -> Result<(), UserError> {
        if self.is_erased() {
            Err(UserError::Erased)
        } else if self.exists() {
            Ok(())
        } else {
            Err(UserError::NotFound)
        }
    }

    pub fn is_erased(&self) -> bool {
        self.erased_at.is_some()
    }

    fn judge_password(
        &self,
        by: PasswordChangeBy,
        current_password_ok: bool,
        proposal: &ProposedPassword,
        policy: &PasswordPolicy,
    ) -> Result<(), PasswordRejection> {
        // Refuse for management first: an externally managed password is refused whatever
        // the candidate, and saying "wrong current password" would invite guessing it.
        if self.password_externally_managed {
            return Err(PasswordRejection::ExternallyManaged);
        }
        if by == PasswordChangeBy::User && !current_password_ok {
            return Err(PasswordRejection::CurrentPasswordWrong);
        }
        policy.judge(&proposal.facts, self.has_second_factor())
    }

    async fn decide_password(
        &mut self,
        by: PasswordChangeBy,
        current_password_ok: bool,
        proposal: ProposedPassword,
        policy: PasswordPolicy,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let event = match self.judge_password(by, current_password_ok, &proposal, &policy) {
            Err(reason) => UserEvent::PasswordRejected(PasswordRejected { by, reason, at }),
            Ok(()) => match by {
                PasswordChangeBy::Admin => UserEvent::PasswordSet(PasswordSet {
                    hash: proposal.hash,
                    at,
                }),
                PasswordChangeBy::User => UserEvent::PasswordChanged(PasswordChanged {
                    hash: proposal.hash,
                    at,
                }),
                PasswordChangeBy::Reset => UserEvent::PasswordReset(PasswordReset {
                    hash: proposal.hash,
                    second_factor_verified: self.has_second_factor(),
                    at,
                }),
            },
        };
        sink.write(event, self).await;
    }

    /// After a `bad_password` failure has been applied: locks when enough failures fall in the
    /// window that ends at this attempt.
    async fn lock_if_too_many_failures(
        &mut self,
        lockout: &LockoutPolicy,
        lockout_version: u64,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        if !lockout.enabled {
            return;
        }
        // The tenant validated its policy; clamping keeps an unvalidated one from locking on
        // zero failures or asking for more failures than the aggregate remembers.
        let max_failures = lockout.max_failures.clamp(1, MAX_FAILURES_LIMIT);
        let window_start = seconds(lockout.window_seconds)
            .and_then(|window| at.checked_sub_signed(window))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let counted: Vec<Uuid> = self
            .recent_failures
            .iter()
            .filter(|failure| failure.at >= window_start)
            .map(|failure| failure.attempt_id)
            .collect();
        if counted.len() < max_failures as usize {
            return;
        }
        // A lock end beyond chrono's range is no end: locked until an admin unlocks.
        let until = lockout.lock_seconds.and_then(|lock_seconds| {
            seconds(lock_seconds).and_then(|duration| at.checked_add_signed(duration))
        });
        let locked = AccountLocked {
            reason: LockReason::TooManyFailedAttempts,
            until,
            failed_attempts: counted,
            policy_version: lockout_version,
            at,
        };
        sink.write(UserEvent::Locked(locked), self).await;
    }
}

fn seconds(seconds: u64) -> Option<TimeDelta> {
    i64::try_from(seconds).ok().and_then(TimeDelta::try_seconds)
}

/// The identifier as recorded in `user.login.failed`: trimmed, at most
/// [`MAX_IDENTIFIER_CODE_POINTS`] code points.
pub(super) fn recorded_identifier(typed: &str) -> String {
    typed
        .trim()
        .chars()
        .take(MAX_IDENTIFIER_CODE_POINTS)
        .collect()
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if !matches!(command, UserCommand::Create { .. }) {
            self.require_exists()?;
        }
        match command {
            UserCommand::Create {
                user_id,
                tenant_id,
                username,
                email,
                display_name,
                initial_password,
                password_policy,
                at,
            } => {
                if self.exists() {
                    return Err(UserError::AlreadyExists);
                }
                if let Some(proposal) = &initial_password {
                    password_policy
                        .judge(&proposal.facts, self.has_second_factor())
                        .map_err(UserError::PasswordRefused)?;
                }
                let created = UserCreated {
                    user_id,
                    tenant_id,
                    username: username.into(),
                    email: email.map(Into::into),
                    display_name: display_name.map(Into::into),
                    at,
                };
                sink.write(UserEvent::Created(created), self).await;
                if let Some(proposal) = initial_password {
                    let set = PasswordSet {
                        hash: proposal.hash,
                        at,
                    };
                    sink.write(UserEvent::PasswordSet(set), self).await;
                }
            }
            UserCommand::UpdateProfile {
                username,
                email,
                display_name,
                at,
            } => {
                let username = username
                    .filter(|new| new.as_str() != self.username)
                    .map(String::from);
                let email = email
                    .filter(|new| Some(new.as_str()) != self.email.as_deref())
                    .map(String::from);
                let display_name = display_name
                    .filter(|new| Some(new.as_str()) != self.display_name.as_deref())
                    .map(String::from);
                if username.is_some() || email.is_some() || display_name.is_some() {
                    let updated = ProfileUpdated {
                        username,
                        email,
                        display_name,
                        at,
                    };
                    sink.write(UserEvent::ProfileUpdated(updated), self).await;
                }
            }
            UserCommand::Erase { at } => {
                sink.write(UserEvent::Erased(UserErased { at }), self).await;
            }
            UserCommand::Suspend { at } => {
                if !self.suspended {
                    sink.write(UserEvent::Suspended(UserSuspended { at }), self)
                        .await;
                }
            }
            UserCommand::EndSessions { at } => {
                // Recorded even when no session is live: the log cannot know, and the admin's
                // action is what auditors look for.
                sink.write(UserEvent::SessionsEnded(SessionsEnded { at }), self)
                    .await;
            }
            UserCommand::Reactivate { at } => {
                if self.suspended {
                    sink.write(UserEvent::Reactivated(UserReactivated { at }), self)
                        .await;
                }
            }
            UserCommand::SetPassword {
                proposal,
                policy,
                at,
            } => {
                self.decide_password(PasswordChangeBy::Admin, true, proposal, policy, at, sink)
                    .await;
            }
            UserCommand::ChangePassword {
                current_password_ok,
                proposal,
                policy,
                at,
            } => {
                self.decide_password(
                    PasswordChangeBy::User,
                    current_password_ok,
                    proposal,
                    policy,
                    at,
                    sink,
                )
                .await;
            }
            UserCommand::SetPasswordManagement {
                externally_managed,
                at,
            } => {
                if externally_managed != self.password_externally_managed {
                    let changed = PasswordManagementChanged {
                        externally_managed,
                        at,
                    };
                    sink.write(UserEvent::PasswordManagementChanged(changed), self)
                        .await;
                }
            }
            UserCommand::RecordLoginAttempt {
                attempt_id,
                identifier,
                password_ok,
                rehash,
                lockout,
                lockout_version,
                tenant_mfa,
                at,
            } => {
                // A timed lock that has run out ends at its `until`, not at this attempt: the
                // record then says when the account really became usable again.
                if let Some(until) = self.lock.as_ref().and_then(|lock| lock.until)
                    && until <= at
                {
                    let unlocked = AccountUnlocked {
                        by: UnlockedBy::Expiry,
                        at: until,
                    };
                    sink.write(UserEvent::Unlocked(unlocked), self).await;
                }
                let refusal = if self.suspended {
                    Some(LoginFailureReason::Suspended)
                } else if self.lock.is_some() {
                    // Checked before the password, so a locked account tells nobody whether a
                    // guess was right, and the guess does not extend the lock.
                    Some(LoginFailureReason::Locked)
                } else if self.password_externally_managed {
                    Some(LoginFailureReason::ExternallyManaged)
                } else if self.password.is_none() {
                    Some(LoginFailureReason::NoPassword)
                } else if !password_ok {
                    Some(LoginFailureReason::BadPassword)
                } else {
                    None
                };
                match refusal {
                    Some(reason) => {
                        let failed = LoginFailed {
                            attempt_id,
                            reason,
                            identifier: recorded_identifier(&identifier),
                            at,
                        };
                        sink.write(UserEvent::LoginFailed(failed), self).await;
                        if reason == LoginFailureReason::BadPassword {
                            self.lock_if_too_many_failures(&lockout, lockout_version, at, sink)
                                .await;
                        }
                    }
                    None => {
                        let passed = if self.mfa_owed(tenant_mfa) {
                            UserEvent::FirstFactorPassed(FirstFactorPassed { attempt_id, at })
                        } else {
                            UserEvent::LoginSucceeded(LoginSucceeded {
                                attempt_id,
                                method: LoginMethod::Password,
                                at,
                            })
                        };
                        sink.write(passed, self).await;
                        if let Some(to) = rehash
                            && let Some(from) = self.password.clone()
                            && from != to
                        {
                            let rehashed = PasswordRehashed { from, to, at };
                            sink.write(UserEvent::PasswordRehashed(rehashed), self)
                                .await;
                        }
                    }
                }
            }
            UserCommand::RegisterWebauthnCredential { credential, by, at } => {
                self.register_credential(credential, by, false, at, sink)
                    .await?;
            }
            UserCommand::ImportLegacyCredential { credential, by, at } => {
                self.register_credential(credential, by, true, at, sink)
                    .await?;
            }
            UserCommand::RenameWebauthnCredential {
                credential_id,
                label,
                by,
                at,
            } => {
                self.rename_credential(credential_id, label, by, at, sink)
                    .await?;
            }
            UserCommand::RemoveWebauthnCredential {
                credential_id,
                by,
                confirm_lockout,
                tenant_mfa,
                at,
            } => {
                self.remove_credential(credential_id, by, confirm_lockout, tenant_mfa, at, sink)
                    .await?;
            }
            UserCommand::AddTotp { step, at } => self.add_totp(step, at, sink).await?,
            UserCommand::RemoveTotp {
                by,
                confirm_lockout,
                tenant_mfa,
                at,
            } => {
                self.remove_totp(by, confirm_lockout, tenant_mfa, at, sink)
                    .await?;
            }
            UserCommand::SetMfaRequirement { requirement, at } => {
                if requirement != self.second_factors.requirement {
                    let changed = MfaRequirementChanged { requirement, at };
                    sink.write(UserEvent::MfaRequirementChanged(changed), self)
                        .await;
                }
            }
            UserCommand::UseSecondFactor { proof, login, at } => {
                // A login completed by its second factor is refused like a password login
                // when the account was suspended or locked in between.
                let refusal = if self.suspended {
                    Some(LoginFailureReason::Suspended)
                } else if self.is_locked_at(at) {
                    Some(LoginFailureReason::Locked)
                } else {
                    None
                };
                match (login, refusal) {
                    (Some((attempt_id, _)), Some(reason)) => {
                        let failed = LoginFailed {
                            attempt_id,
                            reason,
                            identifier: recorded_identifier(&self.username),
                            at,
                        };
                        sink.write(UserEvent::LoginFailed(failed), self).await;
                    }
                    _ => self.use_second_factor(proof, login, at, sink).await?,
                }
            }
            UserCommand::RequestPasswordReset { expires_at, at } => {
                let requested = PasswordResetRequested { expires_at, at };
                sink.write(UserEvent::PasswordResetRequested(requested), self)
                    .await;
            }
            UserCommand::ResetPassword {
                proposal,
                policy,
                second_factor_ok,
                at,
            } => {
                if self.has_second_factor() && !second_factor_ok {
                    return Err(UserError::SecondFactorRequired);
                }
                self.decide_password(PasswordChangeBy::Reset, true, proposal, policy, at, sink)
                    .await;
            }
            UserCommand::RecordMfaFailure {
                attempt_id,
                method,
                reason,
                credential_id,
                lockout,
                lockout_version,
                at,
            } => {
                let failed = MfaFailed {
                    attempt_id,
                    method,
                    reason,
                    credential_id,
                    at,
                };
                sink.write(UserEvent::MfaFailed(failed), self).await;
                if attempt_id.is_some() && self.lock.is_none() {
                    self.lock_if_too_many_failures(&lockout, lockout_version, at, sink)
                        .await;
                }
            }
            UserCommand::Unlock { at } => {
                // Also lifts a timed lock that has run out but is not yet recorded as ended,
                // so the admin's action is what the log shows.
                if self.lock.is_some() {
                    let unlocked = AccountUnlocked {
                        by: UnlockedBy::Admin,
                        at,
                    };
                    sink.write(UserEvent::Unlocked(unlocked), self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.second_factors.apply(&event);
        match event {
            UserEvent::Created(e) => {
                self.id = Some(e.user_id);
                self.tenant_id = e.tenant_id;
                self.username = e.username;
                self.email = e.email;
                self.display_name = e.display_name;
                self.created_at = Some(e.at);
            }
            UserEvent::ProfileUpdated(e) => {
                if let Some(username) = e.username {
                    self.username = username;
                }
                if let Some(email) = e.email {
                    self.email = Some(email);
                }
                if let Some(display_name) = e.display_name {
                    self.display_name = Some(display_name);
                }
            }
            UserEvent::Erased(e) => {
                // What the log reveals of an erased user from now on.
                self.username = "erased".into();
                self.email = None;
                self.display_name = None;
                self.erased_at = Some(e.at);
            }
            UserEvent::Suspended(_) => self.suspended = true,
            UserEvent::Reactivated(_) => self.suspended = false,
            UserEvent::PasswordSet(PasswordSet { hash, .. })
            | UserEvent::PasswordChanged(PasswordChanged { hash, .. })
            | UserEvent::PasswordReset(PasswordReset { hash, .. }) => {
                self.password = Some(hash);
            }
            UserEvent::PasswordRejected(_) => {}
            UserEvent::PasswordRehashed(e) => self.password = Some(e.to),
            UserEvent::PasswordManagementChanged(e) => {
                self.password_externally_managed = e.externally_managed;
            }
            UserEvent::LoginSucceeded(e) => {
                self.last_login_at = Some(e.at);
                self.failed_count = 0;
                self.recent_failures.clear();
            }
            UserEvent::LoginFailed(e) => {
                if e.reason == LoginFailureReason::BadPassword {
                    self.failed_count = self.failed_count.saturating_add(1);
                    if self.recent_failures.len() >= MAX_FAILURES_LIMIT as usize {
                        self.recent_failures.pop_front();
                    }
                    self.recent_failures.push_back(CountedFailure {
                        attempt_id: e.attempt_id,
                        at: e.at,
                    });
                }
            }
            UserEvent::Locked(e) => {
                self.lock = Some(LockState {
                    reason: e.reason,
                    since: e.at,
                    until: e.until,
                    policy_version: e.policy_version,
                });
            }
            UserEvent::Unlocked(_) => {
                self.lock = None;
                self.failed_count = 0;
                self.recent_failures.clear();
            }
            // The password was right, but nobody has logged in yet: failures keep counting
            // until the second factor completes the login.
            UserEvent::FirstFactorPassed(_) => {}
            // A refused second factor within a login counts like a wrong password.
            UserEvent::MfaFailed(MfaFailed {
                attempt_id: Some(attempt_id),
                at,
                ..
            }) => {
                self.failed_count = self.failed_count.saturating_add(1);
                if self.recent_failures.len() >= MAX_FAILURES_LIMIT as usize {
                    self.recent_failures.pop_front();
                }
                self.recent_failures
                    .push_back(CountedFailure { attempt_id, at });
            }
            // Folded by `SecondFactors::apply`.
            UserEvent::WebauthnRegistered(_)
            | UserEvent::WebauthnRenamed(_)
            | UserEvent::WebauthnRemoved(_)
            | UserEvent::WebauthnUsed(_)
            | UserEvent::TotpAdded(_)
            | UserEvent::TotpRemoved(_)
            | UserEvent::TotpUsed(_)
            | UserEvent::MfaRequirementChanged(_)
            | UserEvent::MfaFailed(_)
            | UserEvent::PasswordResetRequested(_)
            // Sessions are state beside the log, not the aggregate's.
            | UserEvent::SessionsEnded(_) => {}
        }
    }
}
