//! Failed logins on names that match no user. They cannot go to a user's stream, and dropping
//! them would hide credential stuffing, so each tenant has one stream of this kind that holds
//! only `user.login.failed` events with reason `unknown_user`. It has no aggregate: nothing is
//! decided from it, so the caller appends the event directly.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::aggregate::recorded_identifier;
use super::events::{LoginFailed, LoginFailureReason, UserEvent};

/// The stream kind (aggregate type) of the per-tenant stream of unknown-user login failures.
pub const STREAM_KIND: &str = "unknown_login";

/// The event for one attempt on a name that matches no user. The identifier is recorded as the
/// user aggregate records it: trimmed and bounded in length.
pub fn failed_attempt(
    attempt_id: Uuid,
    identifier: impl AsRef<str>,
    at: DateTime<Utc>,
) -> UserEvent {
    UserEvent::LoginFailed(LoginFailed {
        attempt_id,
        reason: LoginFailureReason::UnknownUser,
        identifier: recorded_identifier(identifier.as_ref()),
        at,
    })
}
