//! What a server needs before it answers: its services, the default tenant, the admin token.

use std::sync::Arc;

use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::tenant::{TenantCommand, TenantError};
use keyledger_projections::ViewProgress;
use keyledger_projections::webhooks::{ClientError, Delivery, DeliveryConfig};
use keyledger_store::sessions::SessionStore;
use keyledger_store::{
    AppendError, AppendRequest, CommandContext, CommandExecutor, EventLog, EventMetadata,
    ExecuteError, ExpectedVersion, NewEvent, SecretWrite, SideWrites, StoreError, StreamId,
};
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::metrics::Metrics;
use crate::passwords::{Argon2Config, HashingError, PasswordHasher};
use crate::state::{ApiConfig, AppState, Services};
use crate::tokens::{self, AdminToken};
use crate::user_commands::UserCommands;

#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub argon2: Argon2Config,
    /// How many password hashes may run at once (default: the number of cores).
    pub hash_concurrency: Option<usize>,
    pub api: ApiConfig,
    /// `KEYLEDGER_ADMIN_TOKEN`; when absent, a token is generated on first start.
    pub admin_token: Option<String>,
    pub delivery: DeliveryConfig,
    /// The checkpoint signing key (`crate::signing::load_or_create`); when absent, a key that
    /// lives only as long as the process (benchmarks, tests of other things).
    pub signing_key: Option<ed25519_dalek::SigningKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("cannot create the default tenant: {0}")]
    Tenant(String),
    #[error(transparent)]
    Hashing(#[from] HashingError),
    #[error("the stored admin token hash is malformed")]
    MalformedAdminToken,
    #[error(transparent)]
    Delivery(#[from] ClientError),
    #[error("cannot announce the signing key")]
    SigningKey(#[source] AppendError),
}

const ADMIN_STREAM: (&str, &str) = ("system", "admin");
const ADMIN_TOKEN_SECRET: &str = "admin_token_sha256";

/// Builds the state the API serves from. Returns the admin token when it was generated now:
/// the caller prints it once; it is never shown again.
pub async fn start(
    log: EventLog,
    progress: ViewProgress,
    options: ServerOptions,
) -> Result<(AppState, Option<String>), StartupError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tenants = CommandExecutor::new(log.clone());
    ensure_default_tenant(&tenants, clock.now()).await?;
    let (admin_token, generated) = admin_token(&log, options.admin_token, clock.now()).await?;
    let concurrency = options.hash_concurrency.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
    });
    let passwords = PasswordHasher::new(options.argon2, concurrency)?;
    let delivery = Delivery::new(log.clone(), options.delivery)?;
    let signing_key = options.signing_key.unwrap_or_else(crate::signing::generate);
    crate::signing::announce_key(&log, &signing_key, clock.now())
        .await
        .map_err(StartupError::SigningKey)?;
    let state = AppState(Arc::new(Services {
        users: UserCommands::new(log.clone()),
        tenants,
        webhooks: CommandExecutor::new(log.clone()),
        applications: CommandExecutor::new(log.clone()),
        delivery,
        sessions: SessionStore::new(log.database().clone()),
        ceremonies: keyledger_store::CeremonyStore::new(log.database().clone()),
        outbox: keyledger_store::MailOutbox::new(log.database().clone()),
        log,
        passwords,
        progress,
        admin_token,
        clock,
        metrics: Metrics::default(),
        config: options.api,
        signing_key,
    }));
    Ok((state, generated))
}

async fn ensure_default_tenant(
    tenants: &CommandExecutor<keyledger_domain::tenant::Tenant>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StartupError> {
    let id = DEFAULT_TENANT_ID.to_string();
    let (tenant, _) = tenants
        .load(&id)
        .await
        .map_err(|e| StartupError::Tenant(e.to_string()))?;
    if tenant.exists() {
        return Ok(());
    }
    let ctx = CommandContext {
        tenant_id: DEFAULT_TENANT_ID,
        now,
        metadata: EventMetadata::system(),
        decided_on: Vec::new(),
    };
    let command = TenantCommand::Create {
        tenant_id: DEFAULT_TENANT_ID,
        name: "default".into(),
        at: now,
    };
    match tenants
        .execute(&id, command, &(), &ctx, |_, _, _| SideWrites::default())
        .await
    {
        // Another node created it first.
        Ok(_) | Err(ExecuteError::Domain(TenantError::AlreadyExists)) => Ok(()),
        Err(e) => Err(StartupError::Tenant(e.to_string())),
    }
}

async fn admin_token(
    log: &EventLog,
    configured: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(AdminToken, Option<String>), StartupError> {
    if let Some(token) = configured.filter(|t| !t.is_empty()) {
        return Ok((AdminToken::from_hash(tokens::hash(&token)), None));
    }
    let stream = StreamId::new(ADMIN_STREAM.0, ADMIN_STREAM.1);
    if let Some(stored) = log.secret(&stream, ADMIN_TOKEN_SECRET).await? {
        return Ok((parse_hash(&stored)?, None));
    }
    let token = tokens::generate();
    let hash = tokens::hash(&token);
    let event = NewEvent {
        event_id: Uuid::now_v7(),
        tenant_id: DEFAULT_TENANT_ID,
        event_type: "system.admin_token.generated".into(),
        schema_version: 1,
        recorded_at: now,
        payload: serde_json::json!({ "at": now }),
        metadata: EventMetadata::system(),
    };
    let appended = log
        .append(AppendRequest {
            stream: stream.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![event],
            claims: Vec::new(),
            secrets: vec![SecretWrite {
                kind: ADMIN_TOKEN_SECRET.into(),
                value: Some(hex::encode(hash)),
            }],
            sessions: Vec::new(),
            decided_on: Vec::new(),
        })
        .await;
    match appended {
        Ok(_) => Ok((AdminToken::from_hash(hash), Some(token))),
        // Another node generated one at the same moment: use theirs.
        Err(AppendError::WrongExpectedVersion { .. }) => {
            let stored = log
                .secret(&stream, ADMIN_TOKEN_SECRET)
                .await?
                .ok_or(StartupError::MalformedAdminToken)?;
            Ok((parse_hash(&stored)?, None))
        }
        Err(e) => Err(e.into()),
    }
}

fn parse_hash(stored: &str) -> Result<AdminToken, StartupError> {
    let bytes = hex::decode(stored).map_err(|_| StartupError::MalformedAdminToken)?;
    let hash: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StartupError::MalformedAdminToken)?;
    Ok(AdminToken::from_hash(hash))
}
