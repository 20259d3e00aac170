//! A user: their profile, password state, login history and lockout, decided from the commands
//! the API sends and the tenant policies it looks up.

mod aggregate;
mod commands;
mod events;
pub mod unknown_login;

#[cfg(test)]
mod tests;

pub use aggregate::{LockState, MAX_IDENTIFIER_CODE_POINTS, User, UserError};
pub use commands::{ProposedPassword, UserCommand};
pub use events::{
    AccountLocked, AccountUnlocked, LockReason, LoginFailed, LoginFailureReason, LoginMethod,
    LoginSucceeded, PasswordChangeBy, PasswordChanged, PasswordManagementChanged, PasswordRehashed,
    PasswordRejected, PasswordSet, ProfileUpdated, UnlockedBy, UserCreated, UserEvent,
    UserReactivated, UserSuspended,
};
