//! Running domain commands from handlers: the context they run under, how their errors map to
//! problem answers, and the side effects that follow some events.

use keyledger_domain::password::{HashParams, PasswordFacts, normalize};
use keyledger_domain::tenant::{Tenant, TenantError};
use keyledger_domain::user::{ProposedPassword, User, UserCommand, UserError, UserEvent};
use keyledger_store::{
    Actor, AppendError, ClaimKey, CommandContext, DecidedOn, ExecuteError, SecretWrite,
    SessionChange, SideWrites, StreamId,
};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::RequestContext;
use crate::routes::Written;
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
        decided_on: Vec::new(),
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

/// The claim that keeps a WebAuthn credential id unique across all users and tenants.
pub const CREDENTIAL_CLAIM: &str = "webauthn_credential";
pub const CREDENTIAL_CLAIM_SCOPE: &str = "*";

pub fn user_error(e: ExecuteError<UserError>) -> ApiError {
    match e {
        ExecuteError::Domain(UserError::NotFound) => ApiError::NotFound("user"),
        ExecuteError::Domain(UserError::Erased) => ApiError::user_erased(),
        ExecuteError::Domain(UserError::CredentialNotFound) => ApiError::NotFound("credential"),
        ExecuteError::Domain(e @ UserError::CredentialRegisteredByAdmin) => ApiError::Forbidden {
            code: e.code(),
            detail: e.to_string(),
        },
        ExecuteError::Domain(e @ UserError::LegacyRegistrationRefused) => ApiError::InvalidValue {
            code: e.code(),
            detail: e.to_string(),
        },
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
            code: match key.kind.as_str() {
                "email" => "email_taken",
                CREDENTIAL_CLAIM => "credential_already_registered",
                _ => "username_taken",
            },
            detail: format!("that {} is already taken", key.kind.replace('_', " ")),
        },
        ExecuteError::Append(
            AppendError::WrongExpectedVersion { .. } | AppendError::DecidedOnStaleState { .. },
        ) => ApiError::Conflict {
            code: "concurrent_update",
            detail: "the resource changed concurrently; retry".into(),
        },
        ExecuteError::Append(AppendError::IdempotencyConflict { .. }) => ApiError::Conflict {
            code: "idempotency_conflict",
            detail: "an event with this id exists with another body".into(),
        },
        ExecuteError::Append(AppendError::SubjectErased { .. }) => ApiError::user_erased(),
        ExecuteError::Append(AppendError::Store(e)) => ApiError::internal(e),
        ExecuteError::Decode { .. } | ExecuteError::Domain(_) => ApiError::internal(e),
    }
}

/// The tenant, which must exist (the default tenant is created at start-up).
pub async fn tenant(state: &AppState, tenant_id: Uuid) -> Result<Tenant, ApiError> {
    loaded_tenant(state, tenant_id)
        .await
        .map(|(tenant, _)| tenant)
}

/// The tenant read from the log, and its stream version.
pub async fn loaded_tenant(state: &AppState, tenant_id: Uuid) -> Result<(Tenant, u64), ApiError> {
    existing(state.tenants.load(&tenant_id.to_string()).await)
}

/// The tenant as this node last folded it, and its stream version, without reading the log
/// (unless the node has not folded it yet). It may be stale, so a command decided on it must
/// name it in its context's `decided_on` ([`decided_on_tenant`]): the append then refuses a
/// decision made on a policy that has changed since, on this node or another.
pub async fn kept_tenant(state: &AppState, tenant_id: Uuid) -> Result<(Tenant, u64), ApiError> {
    existing(state.tenants.kept_or_load(&tenant_id.to_string()).await)
}

fn existing(
    folded: Result<(Tenant, u64), ExecuteError<TenantError>>,
) -> Result<(Tenant, u64), ApiError> {
    let (tenant, version) = folded.map_err(ApiError::internal)?;
    if tenant.exists() {
        Ok((tenant, version))
    } else {
        Err(ApiError::NotFound("tenant"))
    }
}

/// The condition that a decision's tenant is still at `version` when it is appended.
pub fn decided_on_tenant(tenant_id: Uuid, version: u64) -> DecidedOn {
    DecidedOn {
        stream: keyledger_store::CommandExecutor::<Tenant>::stream(&tenant_id.to_string()),
        version,
    }
}

/// A candidate password measured and, when the policy accepts it, hashed. The plaintext goes
/// no further than this.
pub struct Proposal {
    pub facts: PasswordFacts,
    pub phc: Option<String>,
}

impl Proposal {
    /// What the aggregate judges: the facts, and how the hash was (or would be) made.
    pub fn proposed(&self, hash: HashParams) -> ProposedPassword {
        ProposedPassword {
            facts: self.facts.clone(),
            hash,
        }
    }
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

/// Whether `events` set, changed or rehashed the password.
fn sets_password(events: &[UserEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            UserEvent::PasswordSet(_)
                | UserEvent::PasswordChanged(_)
                | UserEvent::PasswordReset(_)
                | UserEvent::PasswordRehashed(_)
        )
    })
}

/// The hash to keep beside the log when `events` set or changed the password.
pub fn password_secret(events: &[UserEvent], phc: Option<&String>) -> Vec<SecretWrite> {
    match phc {
        Some(phc) if sets_password(events) => vec![SecretWrite {
            kind: PASSWORD_SECRET.into(),
            value: Some(phc.clone()),
        }],
        _ => Vec::new(),
    }
}

/// Words a password may not equal: the username and the email (the domain adds the email's
/// local part and the service name).
pub fn context_words(user: &User) -> Vec<&str> {
    [Some(user.username()), user.email()]
        .into_iter()
        .flatten()
        .collect()
}

/// Runs a password command (set by an admin, changed by the user, reset) with its hash kept
/// beside the log, and answers with the position written; a recorded refusal is still a
/// refusal for the caller. `sessions` commit with a new password, not with a refusal.
pub async fn run_password_command(
    state: &AppState,
    user_id: Uuid,
    command: UserCommand,
    ctx: &CommandContext,
    phc: Option<&String>,
    sessions: Vec<SessionChange>,
) -> Result<Written, ApiError> {
    let executed = state
        .users
        .execute(&user_id.to_string(), command, &(), ctx, |_, _, events| {
            SideWrites {
                claims: Vec::new(),
                secrets: password_secret(events, phc),
                sessions: if sets_password(events) {
                    sessions.clone()
                } else {
                    Vec::new()
                },
            }
        })
        .await
        .map_err(user_error)?;
    if let Some(reason) = executed.events.iter().find_map(|e| match e {
        UserEvent::PasswordRejected(r) => Some(r.reason.clone()),
        _ => None,
    }) {
        return Err(ApiError::PasswordRejected(reason));
    }
    Ok(Written {
        position: executed.appended.map(|a| a.last_position),
    })
}
