//! Webhook delivery. Subscriptions are a view folded from the log like any other
//! ([`view`]); delivery follows the same log from a durable cursor per subscription
//! ([`state`]), one worker per subscription ([`worker`]) on whichever node holds its lease.
//! Nothing a replay or a rebuild does sends a webhook: only [`Delivery::spawn`] does.

pub mod catalog;
pub mod guard;
pub mod payload;
pub mod schedule;
pub mod send;
pub mod signature;
pub mod state;
pub mod view;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use keyledger_store::{Database, EventLog};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::ProjectionError;
use guard::AddressPolicy;
use schedule::RetrySchedule;
use signature::SigningSecret;
use state::{AttemptRecord, Lease, NewAttempt, Outcome, Trigger};
use view::{SubscriptionRow, SubscriptionsView};

/// The aggregate type of subscriptions, which owns their signing secrets beside the log.
pub const STREAM_KIND: &str = "webhook_subscription";

/// Under which kind a subscription's signing secret of `version` is kept beside the log.
pub fn secret_kind(version: u32) -> String {
    format!("signing_secret_v{version}")
}

/// How often the dispatcher looks for subscriptions no node is delivering.
const DISPATCH_POLL: Duration = Duration::from_secs(1);
/// The dispatcher looks for new subscriptions at most this often.
const DISPATCH_MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// An attempt that has no answer after this long failed.
    pub timeout: Duration,
    pub schedule: RetrySchedule,
    pub addresses: AddressPolicy,
    /// A subscription whose deliveries were dead-lettered this many times in a row is disabled.
    pub disable_after_dead_letters: u32,
    /// A node that stops renewing its lease for this long hands the subscription over.
    pub lease: Duration,
    /// This node's name in leases; unique per process.
    pub node_id: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            schedule: RetrySchedule::default(),
            addresses: AddressPolicy::default(),
            disable_after_dead_letters: 5,
            lease: Duration::from_secs(15),
            node_id: Uuid::now_v7().to_string(),
        }
    }
}

/// Counts of attempt outcomes since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub gone: AtomicU64,
}

impl DeliveryMetrics {
    /// The Prometheus text of these counters.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP keyledger_webhook_attempts_total Webhook delivery attempts by outcome.\n\
             # TYPE keyledger_webhook_attempts_total counter\n",
        );
        for (outcome, counter) in [
            ("delivered", &self.delivered),
            ("failed", &self.failed),
            ("dead_lettered", &self.dead_lettered),
            ("gone", &self.gone),
        ] {
            out.push_str(&format!(
                "keyledger_webhook_attempts_total{{outcome=\"{outcome}\"}} {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
        out
    }

    pub(crate) fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Failed => &self.failed,
            Outcome::DeadLettered => &self.dead_lettered,
            Outcome::Gone => &self.gone,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything delivery needs; cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    log: EventLog,
    client: reqwest::Client,
    config: Arc<DeliveryConfig>,
    pub metrics: Arc<DeliveryMetrics>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl Delivery {
    pub fn new(log: EventLog, config: DeliveryConfig) -> Result<Self, ClientError> {
        let client = send::client(config.timeout, config.addresses)?;
        Ok(Self {
            log,
            client,
            config: Arc::new(config),
            metrics: Arc::default(),
        })
    }

    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    fn db(&self) -> &Database {
        self.log.database()
    }

    fn lease_span(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(15))
    }

    async fn secrets(
        &self,
        subscription: &SubscriptionRow,
    ) -> Result<Vec<SigningSecret>, ProjectionError> {
        worker::load_secrets(&self.log, subscription, Utc::now()).await
    }

    /// Creates the delivery tables.
    pub async fn migrate(log: &EventLog) -> Result<(), ProjectionError> {
        let mut conn = log.database().pool().acquire().await?;
        state::migrate(&mut conn).await
    }

    /// Starts the dispatcher: it takes the lease of every enabled subscription no live node
    /// holds and runs a worker for it, until `shutdown` turns true.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(dispatch(self, shutdown))
    }

    /// Sends a signed sample (`webhook.ping`) now and records the attempt.
    pub async fn ping(
        &self,
        subscription: &SubscriptionRow,
    ) -> Result<AttemptRecord, ProjectionError> {
        let now = Utc::now();
        let message_id = Uuid::now_v7();
        let body = serde_json::json!({
            "payload_version": payload::PAYLOAD_VERSION,
            "id": message_id,
            "type": "webhook.ping",
            "time": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "tenant_id": subscription.tenant_id,
            "data": { "subscription_id": subscription.id },
        });
        let secrets = self.secrets(subscription).await?;
        let response = send::post(
            &self.client,
            &self.config.addresses,
            &subscription.url,
            &secrets,
            &message_id.to_string(),
            now,
            body.to_string().into_bytes(),
        )
        .await;
        let outcome = if response.delivered() {
            Outcome::Delivered
        } else {
            Outcome::Failed
        };
        let id = Uuid::now_v7();
        let mut conn = self.db().pool().acquire().await?;
        state::record_attempt(
            &mut conn,
            id,
            &NewAttempt {
                subscription_id: subscription.id,
                event_id: message_id,
                position: 0,
                attempt: 1,
                trigger: Trigger::Ping,
                at: now,
                status_code: response.status,
                latency_ms: response.latency_ms(),
                error: response.error.as_deref(),
                response_body: response.body.as_deref(),
                outcome,
            },
        )
        .await?;
        Ok(AttemptRecord {
            id,
            subscription_id: subscription.id,
            event_id: message_id,
            position: 0,
            attempt: 1,
            trigger: "ping".into(),
            at: now,
            status_code: response.status,
            latency_ms: response.latency_ms(),
            error: response.error,
            response_body: response.body,
            outcome: outcome.as_str().into(),
        })
    }
}

async fn dispatch(delivery: Delivery, mut shutdown: watch::Receiver<bool>) {
    let mut running: HashMap<Uuid, JoinHandle<()>> = HashMap::new();
    let mut appended = delivery.log.subscribe();
    loop {
        if *shutdown.borrow() {
            for (_, worker) in running {
                let _ = worker.await;
            }
            return;
        }
        running.retain(|_, worker| !worker.is_finished());
        if let Err(error) = claim_new(&delivery, &mut running, &shutdown).await {
            tracing::warn!(%error, "webhook dispatch failed, retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(DISPATCH_POLL) => {}
            _ = appended.changed() => {
                // New subscriptions are rare and their workers start from the position they
                // were created at, so a busy log is looked at a few times a second, not at
                // every append.
                tokio::select! {
                    _ = tokio::time::sleep(DISPATCH_MIN_INTERVAL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            _ = shutdown.changed() => {}
        }
    }
}

async fn claim_new(
    delivery: &Delivery,
    running: &mut HashMap<Uuid, JoinHandle<()>>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), ProjectionError> {
    for subscription in SubscriptionsView::enabled(delivery.db()).await? {
        if running.contains_key(&subscription.id) {
            continue;
        }
        state::ensure(
            delivery.db(),
            subscription.id,
            subscription.created_position,
        )
        .await?;
        let lease = Lease {
            subscription_id: subscription.id,
            owner: delivery.config.node_id.clone(),
        };
        let now = Utc::now();
        if !state::acquire(delivery.db(), &lease, now, now + delivery.lease_span()).await? {
            continue;
        }
        tracing::info!(subscription = %subscription.id, node = %lease.owner, "delivering webhooks");
        let worker = worker::run(delivery.clone(), subscription.id, shutdown.clone());
        let id = subscription.id;
        running.insert(
            id,
            tokio::spawn(async move {
                match worker.await {
                    Ok(stopped) => {
                        tracing::info!(subscription = %id, ?stopped, "webhook worker stopped")
                    }
                    Err(error) => {
                        tracing::warn!(subscription = %id, %error, "webhook worker failed")
                    }
                }
            }),
        );
    }
    Ok(())
}
