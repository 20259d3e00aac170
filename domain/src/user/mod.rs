//! A user: their profile, password state, login history and lockout, decided from the commands
//! the API sends and the tenant policies it looks up.

mod aggregate;
mod commands;
mod events;
mod second_factor;
pub mod unknown_login;

#[cfg(test)]
mod second_factor_tests;
#[cfg(test)]
mod tests;

pub use aggregate::{LockState, MAX_IDENTIFIER_CODE_POINTS, User, UserError};
pub use commands::{ProposedPassword, SecondFactorProof, UserCommand};
pub use events::{
    AccountLocked, AccountUnlocked, FirstFactorPassed, LockReason, LoginFailed, LoginFailureReason,
    LoginMethod, LoginSucceeded, MfaFailed, MfaFailureReason, MfaMethod, MfaRequirementChanged,
    NewCredential, PasswordChangeBy, PasswordChanged, PasswordManagementChanged, PasswordRehashed,
    PasswordRejected, PasswordReset, PasswordResetRequested, PasswordSet, ProfileUpdated,
    SessionsEnded, TotpAdded, TotpRemoved, TotpUsed, UnlockedBy, UserCreated, UserErased,
    UserEvent, UserReactivated, UserSuspended, WebauthnRegistered, WebauthnRemoved,
    WebauthnRenamed, WebauthnUsed,
};
pub use second_factor::{SecondFactors, TotpState, WebauthnCredential};
