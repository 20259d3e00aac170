//! What every handler shares.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use keyledger_domain::tenant::Tenant;
use keyledger_domain::webhook::WebhookSubscription;
use keyledger_projections::ViewProgress;
use keyledger_projections::webhooks::Delivery;
use keyledger_store::sessions::SessionStore;
use keyledger_store::{CeremonyStore, CommandExecutor, Database, EventLog};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::passwords::PasswordHasher;
use crate::tokens::AdminToken;
use crate::user_commands::UserCommands;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// A session ends after this long without a request (NIST AAL2: at most 1 h).
    pub session_idle: chrono::Duration,
    /// A session ends this long after login whatever happens (NIST AAL2: at most 24 h).
    pub session_absolute: chrono::Duration,
    /// How long a read waits for the views to reach a requested position.
    pub read_wait: Duration,
    /// How long a rotated-out webhook secret keeps signing, unless the rotation says.
    pub webhook_secret_grace_seconds: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_idle: chrono::Duration::minutes(30),
            session_absolute: chrono::Duration::hours(12),
            read_wait: Duration::from_secs(5),
            webhook_secret_grace_seconds: 24 * 3600,
        }
    }
}

pub struct Services {
    pub log: EventLog,
    pub users: UserCommands,
    pub tenants: CommandExecutor<Tenant>,
    pub webhooks: CommandExecutor<WebhookSubscription>,
    pub applications: CommandExecutor<keyledger_domain::application::Application>,
    /// Webhook delivery: the ping endpoint sends through it, and its address policy guards
    /// subscription targets.
    pub delivery: Delivery,
    pub sessions: SessionStore,
    /// WebAuthn challenges and MFA tokens in flight.
    pub ceremonies: CeremonyStore,
    /// Mail for the operator's mailer.
    pub outbox: keyledger_store::MailOutbox,
    pub passwords: PasswordHasher,
    pub progress: ViewProgress,
    pub admin_token: AdminToken,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub config: ApiConfig,
    /// Signs checkpoints of the chain head; never logged or answered.
    pub signing_key: ed25519_dalek::SigningKey,
}

impl Services {
    pub fn db(&self) -> &Database {
        self.log.database()
    }
}

#[derive(Clone)]
pub struct AppState(pub Arc<Services>);

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}
