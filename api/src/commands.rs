//! Running domain commands from handlers: the context they run under, how their errors map to
//! problem answers, and the side effects that follow some events.

use keyledger_domain::password::{PasswordFacts, normalize};
use keyledger_domain::tenant::Tenant;
use keyledger_domain::user::{User, UserError, UserEvent};
use keyledger_store::{
    Actor, AppendError, ClaimKey, CommandContext, ExecuteError, SecretWrite, StreamId,
};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::RequestContext;
use crate::metrics::Metrics;
use crate::state::AppState;

/// The secret kind under which a user's password hash is kept beside the log.
pub const PASSWORD_SECRET: &str = "password";

pub fn context(
    state: &AppState,
    tenant_id: Uuid,
    request: &RequestContext,
    actor: Actor,
) -> CommandContext {
    CommandContext {
        tenant_id,
        now: state.clock.now(),
        metadata: request.metadata(actor),
    }
}

pub fn user_stream(user_id: Uuid) -> StreamId {
    keyledger_store::CommandExecutor::<User>::stream(&user_id.to_string())
}

pub fn claim(tenant_id: Uuid, kind: &str, normalized: &str) -> ClaimKey {
    ClaimKey {
        scope: tenant_id.to_string(),
        kind: kind.into(),
        value: normalized.into(),
    }
}

pub fn user_error(e: ExecuteError<UserError>) -> ApiError {
    match e {
        ExecuteError::Domain(UserError::NotFound) => ApiError::NotFound("user"),
        ExecuteError::Domain(UserError::PasswordRefused(reason)) => {
            ApiError::PasswordRejected(reason)
        }
        ExecuteError::Domain(other) => ApiError::Conflict {
            code: other.code(),
            detail: other.to_string(),
        },
        other => append_error(other),
    }
}

pub fn append_error<E: std::error::Error>(e: ExecuteError<E>) -> ApiError {
    match e {
        ExecuteError::Append(AppendError::ClaimTaken { key }) => ApiError::Conflict {
            code: if key.kind == "email" {
                "email_taken"
            } else {
                "username_taken"
            },
            detail: format!("that {} is already taken", key.kind),
        },
        ExecuteError::Append(AppendError::WrongExpectedVersion { .. }) => ApiError::Conflict {
            code: "concurrent_update",
            detail: "the resource changed concurrently; retry".into(),
        },
        ExecuteError::Append(AppendError::IdempotencyConflict { .. }) => ApiError::Conflict {
            code: "idempotency_conflict",
            detail: "an event with this id exists with another body".into(),
        },
        ExecuteError::Append(AppendError::Store(e)) => ApiError::internal(e),
        ExecuteError::Decode { .. } | ExecuteError::Domain(_) => ApiError::internal(e),
    }
}

/// The tenant, which must exist (the default tenant is created at start-up).
pub async fn tenant(state: &AppState, tenant_id: Uuid) -> Result<Tenant, ApiError> {
    let (tenant, _) = state
        .tenants
        .load(&tenant_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if tenant.exists() {
        Ok(tenant)
    } else {
        Err(ApiError::NotFound("tenant"))
    }
}

/// A candidate password measured and, when the policy accepts it, hashed. The plaintext goes
/// no further than this.
pub struct Proposal {
    pub facts: PasswordFacts,
    pub phc: Option<String>,
}

pub async fn propose_password(
    state: &AppState,
    tenant: &Tenant,
    plaintext: &str,
    context_words: &[&str],
    has_second_factor: bool,
) -> Result<Proposal, ApiError> {
    let facts = PasswordFacts::measure(plaintext, context_words);
    let phc = if tenant
        .password_policy()
        .judge(&facts, has_second_factor)
        .is_ok()
    {
        Metrics::inc(&state.metrics.password_hashes);
        Some(
            state
                .passwords
                .hash(normalize(plaintext))
                .await
                .map_err(ApiError::internal)?,
        )
    } else {
        None
    };
    Ok(Proposal { facts, phc })
}

/// The hash to keep beside the log when `events` set or changed the password.
pub fn password_secret(events: &[UserEvent], phc: Option<&String>) -> Vec<SecretWrite> {
    let sets_password = events.iter().any(|e| {
        matches!(
            e,
            UserEvent::PasswordSet(_)
                | UserEvent::PasswordChanged(_)
                | UserEvent::PasswordRehashed(_)
        )
    });
    match phc {
        Some(phc) if sets_password => vec![SecretWrite {
            kind: PASSWORD_SECRET.into(),
            value: Some(phc.clone()),
        }],
        _ => Vec::new(),
    }
}

/// Suspension and locks end the user's sessions.
pub async fn end_sessions_if_needed(
    state: &AppState,
    user_id: Uuid,
    events: &[UserEvent],
) -> Result<(), ApiError> {
    if events
        .iter()
        .any(|e| matches!(e, UserEvent::Suspended(_) | UserEvent::Locked(_)))
    {
        let ended = state
            .sessions
            .revoke_all_for_user(user_id, state.clock.now())
            .await?;
        tracing::info!(user_id = %user_id, ended, "sessions ended");
    }
    Ok(())
}

/// Words a password may not equal: the username, the email and its local part.
pub fn context_words(user: &User) -> Vec<String> {
    let mut words = vec![user.username().to_owned()];
    if let Some(email) = user.email() {
        words.push(email.to_owned());
        if let Some((local, _)) = email.split_once('@') {
            words.push(local.to_owned());
        }
    }
    words
}
