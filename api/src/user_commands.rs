//! The user aggregate's commands, run so that an event that ends a user's sessions ends them
//! with it.

use keyledger_domain::user::{User, UserCommand, UserError, UserEvent};
use keyledger_store::{
    CommandContext, CommandExecutor, EventLog, ExecuteError, Executed, SessionChange, SideWrites,
};
use uuid::Uuid;

/// Runs user commands against the log. Whatever side writes a handler asks for, a command
/// whose events suspend, lock, reset the password of, erase or sign out the user also ends
/// every session of the user, in the transaction of those events: no handler can record such
/// an event and leave a session alive, and no crash between the two can either. That is what
/// lets a session be authenticated without reading the account's state.
#[derive(Clone)]
pub struct UserCommands(CommandExecutor<User>);

impl UserCommands {
    pub fn new(log: EventLog) -> Self {
        Self(CommandExecutor::new(log))
    }

    /// The user as the log has it, and its stream version.
    pub async fn load(&self, id: &str) -> Result<(User, u64), ExecuteError<UserError>> {
        self.0.load(id).await
    }

    /// [`CommandExecutor::execute`], with the user's sessions ended after the handler's own
    /// session changes when the events call for it.
    pub async fn execute(
        &self,
        id: &str,
        command: UserCommand,
        services: &(),
        ctx: &CommandContext,
        side_writes: impl Fn(&User, &User, &[UserEvent]) -> SideWrites,
    ) -> Result<Executed<User>, ExecuteError<UserError>> {
        self.0
            .execute(id, command, services, ctx, |before, after, events| {
                let mut side = side_writes(before, after, events);
                side.sessions.extend(ended_sessions(after.id(), events));
                side
            })
            .await
    }
}

/// The sessions that `events` end: a suspension, a lock, a password reset, an erasure and an
/// admin's sign-out end every session of the user.
fn ended_sessions(user_id: Uuid, events: &[UserEvent]) -> Option<SessionChange> {
    events
        .iter()
        .find_map(|e| match e {
            UserEvent::Suspended(e) => Some(e.at),
            UserEvent::Locked(e) => Some(e.at),
            UserEvent::PasswordReset(e) => Some(e.at),
            UserEvent::Erased(e) => Some(e.at),
            UserEvent::SessionsEnded(e) => Some(e.at),
            _ => None,
        })
        .map(|at| SessionChange::EndAll { user_id, at })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use keyledger_domain::password::HashParams;
    use keyledger_domain::user::{
        AccountLocked, AccountUnlocked, LockReason, PasswordChanged, PasswordReset, SessionsEnded,
        UnlockedBy, UserErased, UserReactivated, UserSuspended,
    };

    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn hash() -> HashParams {
        HashParams {
            algorithm: "argon2id".into(),
            m_cost_kib: 19_456,
            t_cost: 2,
            p_cost: 1,
        }
    }

    #[test]
    fn a_suspension_a_lock_a_reset_an_erasure_and_a_sign_out_end_every_session() {
        let user_id = Uuid::from_u128(7);
        let ending = [
            UserEvent::Suspended(UserSuspended { at: at() }),
            UserEvent::Locked(AccountLocked {
                reason: LockReason::TooManyFailedAttempts,
                until: None,
                failed_attempts: Vec::new(),
                policy_version: 1,
                at: at(),
            }),
            UserEvent::PasswordReset(PasswordReset {
                hash: hash(),
                second_factor_verified: false,
                at: at(),
            }),
            UserEvent::Erased(UserErased { at: at() }),
            UserEvent::SessionsEnded(SessionsEnded { at: at() }),
        ];
        for event in ending {
            assert_eq!(
                ended_sessions(user_id, std::slice::from_ref(&event)),
                Some(SessionChange::EndAll { user_id, at: at() }),
                "{event:?}"
            );
        }
    }

    #[test]
    fn lifting_a_suspension_or_lock_and_changing_the_password_end_none() {
        let events = [
            UserEvent::Reactivated(UserReactivated { at: at() }),
            UserEvent::Unlocked(AccountUnlocked {
                by: UnlockedBy::Admin,
                at: at(),
            }),
            UserEvent::PasswordChanged(PasswordChanged {
                hash: hash(),
                at: at(),
            }),
        ];
        assert_eq!(ended_sessions(Uuid::from_u128(7), &events), None);
    }
}
