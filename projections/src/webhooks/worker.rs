//! Delivers one subscription: follows the global log from the subscription's durable cursor,
//! sends each matching event in log order, retries on the schedule, dead-letters after the
//! last attempt and moves on. The cursor moves only in the transaction that records the
//! attempts before it, so a crash repeats at most the deliveries not yet recorded (at most
//! [`DELIVERED_PER_COMMIT`]): at least once, with the same `webhook-id`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use keyledger_domain::webhook::{DisableReason, WebhookSubscription, WebhookSubscriptionCommand};
use keyledger_store::{
    CommandContext, CommandExecutor, EventLog, EventMetadata, RecordedEvent, SideWrites, StreamId,
};
use rand::Rng;
use tokio::sync::watch;
use uuid::Uuid;

use super::payload;
use super::send::{self, Response};
use super::signature::SigningSecret;
use super::state::{self, DeliveryState, Lease, NewAttempt, NewDeadLetter, Outcome, Trigger};
use super::view::{SubscriptionRow, SubscriptionsView};
use super::{Delivery, STREAM_KIND, secret_kind};
use crate::error::ProjectionError;

/// Events read from the log per step.
const PAGE: u32 = 200;
/// Successful deliveries recorded per commit, at most.
const DELIVERED_PER_COMMIT: usize = 32;
/// How often an idle worker looks again at its subscription (settings, redeliveries).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long a worker waits, when its subscription changed, for the view to show the change.
const VIEW_CATCH_UP: Duration = Duration::from_millis(10);

/// Why a worker stopped.
#[derive(Debug)]
pub enum Stopped {
    Shutdown,
    /// Another node holds the lease, or the subscription is gone or disabled.
    NotOurs,
}

pub async fn run(
    delivery: Delivery,
    subscription_id: Uuid,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Stopped, ProjectionError> {
    let lease = Lease {
        subscription_id,
        owner: delivery.config.node_id.clone(),
    };
    let mut appended = delivery.log.subscribe();
    // Renewed when a third of the lease is left: often enough that it never lapses while this
    // node lives, rarely enough that an idle subscription costs no write per poll.
    let mut renew_at = Utc::now();
    loop {
        if *shutdown.borrow() {
            state::release(delivery.db(), &lease).await?;
            return Ok(Stopped::Shutdown);
        }
        let now = Utc::now();
        if now >= renew_at {
            let span = delivery.lease_span();
            if !state::acquire(delivery.db(), &lease, now, now + span).await? {
                return Ok(Stopped::NotOurs);
            }
            renew_at = now + span * 2 / 3;
        }
        let Some((subscription, folded_through)) =
            SubscriptionsView::get_folded(delivery.db(), subscription_id).await?
        else {
            state::release(delivery.db(), &lease).await?;
            return Ok(Stopped::NotOurs);
        };
        if !subscription.enabled {
            state::release(delivery.db(), &lease).await?;
            return Ok(Stopped::NotOurs);
        }
        let Some(mut progress) = state::read(delivery.db(), &lease).await? else {
            return Ok(Stopped::NotOurs);
        };
        let (wait, until_appended) = match step(
            &delivery,
            &lease,
            &subscription,
            folded_through,
            &mut progress,
        )
        .await?
        {
            Next::Continue => continue,
            Next::Stop => return Ok(Stopped::NotOurs),
            // A retry waits for its time, whatever is appended meanwhile; the lease is renewed
            // on the way.
            Next::WaitUntil(at) => (
                (at.min(renew_at) - Utc::now()).to_std().unwrap_or_default(),
                false,
            ),
            Next::Idle => (IDLE_POLL, true),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = appended.changed(), if until_appended => {}
            _ = shutdown.changed() => {}
        }
    }
}

enum Next {
    /// More to do now.
    Continue,
    /// Nothing new in the log.
    Idle,
    /// A retry is due then.
    WaitUntil(DateTime<Utc>),
    /// The lease was lost, or the subscription was disabled.
    Stop,
}

/// `folded_through`: the log position the subscription's row was read at.
async fn step(
    delivery: &Delivery,
    lease: &Lease,
    subscription: &SubscriptionRow,
    folded_through: u64,
    progress: &mut DeliveryState,
) -> Result<Next, ProjectionError> {
    if subscription.resync_generation > progress.resync_generation {
        progress.delivered_through = subscription.resync_after;
        progress.resync_generation = subscription.resync_generation;
        progress.attempt = 0;
        progress.next_attempt_at = DateTime::<Utc>::UNIX_EPOCH;
        tracing::info!(subscription = %subscription.id, after = subscription.resync_after, "webhook resync");
        return saved(delivery, lease, progress).await;
    }
    if redeliver(delivery, subscription, progress).await? {
        return saved(delivery, lease, progress).await;
    }
    if progress.next_attempt_at > Utc::now() {
        return Ok(Next::WaitUntil(progress.next_attempt_at));
    }
    let events = delivery
        .log
        .read_all_revealed(progress.delivered_through, PAGE)
        .await?;
    if events.is_empty() {
        return Ok(Next::Idle);
    }
    let own_stream = StreamId::new(STREAM_KIND, subscription.id.to_string());
    let cursor_before = progress.delivered_through;
    // Set when the subscription itself changed (a rotated secret, another URL or filter, a
    // disable) at a position its row does not show yet.
    let mut row_behind = false;
    let mut secrets: Option<Vec<SigningSecret>> = None;
    // Successful deliveries are recorded together, with the cursor, once per batch: one commit
    // instead of one per event. A crash before that commit sends the batch again (at least once,
    // same ids), so the batch is kept small.
    let mut delivered: Vec<Delivered<'_>> = Vec::new();
    for event in &events {
        if event.position > folded_through && event.stream == own_stream {
            // Nothing after the change goes out under the settings it replaced: stop before
            // it until the view has folded it (the view follows the log within ~50 ms).
            row_behind = true;
            break;
        }
        if !subscription.wants(event) {
            progress.delivered_through = event.position;
            continue;
        }
        let secrets = match &mut secrets {
            Some(loaded) => loaded,
            empty => empty.insert(delivery.secrets(subscription).await?),
        };
        progress.attempt += 1;
        let now = Utc::now();
        let response = deliver(delivery, subscription, secrets, event, now).await?;
        if response.delivered() {
            delivery.metrics.record(Outcome::Delivered);
            delivered.push(Delivered {
                attempt: progress.attempt,
                at: now,
                event,
                response,
            });
            progress.delivered_through = event.position;
            progress.attempt = 0;
            progress.consecutive_dead_letters = 0;
            if delivered.len() >= DELIVERED_PER_COMMIT
                && !commit_delivered(delivery, lease, progress, &mut delivered).await?
            {
                return Ok(Next::Stop);
            }
            continue;
        }
        let outcome = if response.gone() {
            Outcome::Gone
        } else if let Some(delay) = delivery
            .config
            .schedule
            .delay_after(progress.attempt, rand::thread_rng().gen_range(-1.0..=1.0))
        {
            let delay = delay.max(response.retry_after.unwrap_or_default());
            progress.next_attempt_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            Outcome::Failed
        } else {
            tracing::warn!(subscription = %subscription.id, position = event.position, "webhook dead-lettered");
            progress.delivered_through = event.position;
            progress.consecutive_dead_letters += 1;
            Outcome::DeadLettered
        };
        delivery.metrics.record(outcome);
        let failed = attempt_of(
            subscription.id,
            event,
            progress.attempt,
            Trigger::Log,
            now,
            &response,
            outcome,
        );
        let why = response.error.as_deref().unwrap_or("failed");
        let dead_letter = (outcome == Outcome::DeadLettered).then(|| NewDeadLetter {
            position: event.position,
            event_id: event.event_id,
            event_type: &event.event_type,
            at: now,
            last_error: why,
        });
        if outcome == Outcome::DeadLettered {
            progress.attempt = 0;
        }
        let mut attempts: Vec<NewAttempt<'_>> = delivered
            .iter()
            .map(|d| d.attempt(subscription.id))
            .collect();
        attempts.push(failed);
        if !state::commit(
            delivery.db(),
            lease,
            progress,
            &attempts,
            dead_letter.as_ref(),
        )
        .await?
        {
            return Ok(Next::Stop);
        }
        drop(attempts);
        delivered.clear();
        match outcome {
            // Order holds: nothing after this event goes out before it.
            Outcome::Failed => return Ok(Next::WaitUntil(progress.next_attempt_at)),
            Outcome::Gone => {
                disable(
                    delivery,
                    subscription.id,
                    DisableReason::Gone,
                    "the receiver answered 410 Gone",
                )
                .await?;
                return Ok(Next::Stop);
            }
            Outcome::DeadLettered
                if progress.consecutive_dead_letters
                    >= delivery.config.disable_after_dead_letters =>
            {
                let detail = format!(
                    "{} deliveries in a row were dead-lettered",
                    progress.consecutive_dead_letters
                );
                disable(delivery, subscription.id, DisableReason::Failing, &detail).await?;
                return Ok(Next::Stop);
            }
            Outcome::Delivered | Outcome::DeadLettered => {}
        }
    }
    let wait_for_view =
        Next::WaitUntil(Utc::now() + chrono::Duration::from_std(VIEW_CATCH_UP).unwrap_or_default());
    if row_behind && delivered.is_empty() && progress.delivered_through == cursor_before {
        return Ok(wait_for_view);
    }
    let next = if delivered.is_empty() {
        saved(delivery, lease, progress).await?
    } else if commit_delivered(delivery, lease, progress, &mut delivered).await? {
        Next::Continue
    } else {
        Next::Stop
    };
    Ok(match next {
        Next::Continue if row_behind => wait_for_view,
        next => next,
    })
}

/// A successful delivery not yet recorded.
struct Delivered<'a> {
    attempt: u32,
    at: DateTime<Utc>,
    event: &'a RecordedEvent,
    response: Response,
}

impl Delivered<'_> {
    fn attempt(&self, subscription_id: Uuid) -> NewAttempt<'_> {
        attempt_of(
            subscription_id,
            self.event,
            self.attempt,
            Trigger::Log,
            self.at,
            &self.response,
            Outcome::Delivered,
        )
    }
}

/// Records the batch of successful deliveries with the state, and empties it.
async fn commit_delivered(
    delivery: &Delivery,
    lease: &Lease,
    progress: &DeliveryState,
    delivered: &mut Vec<Delivered<'_>>,
) -> Result<bool, ProjectionError> {
    let attempts: Vec<NewAttempt<'_>> = delivered
        .iter()
        .map(|d| d.attempt(lease.subscription_id))
        .collect();
    let kept = state::commit(delivery.db(), lease, progress, &attempts, None).await?;
    drop(attempts);
    delivered.clear();
    Ok(kept)
}

async fn saved(
    delivery: &Delivery,
    lease: &Lease,
    progress: &DeliveryState,
) -> Result<Next, ProjectionError> {
    let mut conn = delivery.db().pool().acquire().await?;
    Ok(if state::save(&mut conn, lease, progress).await? {
        Next::Continue
    } else {
        Next::Stop
    })
}

/// Serves the oldest pending redelivery request, if any. Returns whether it served one.
async fn redeliver(
    delivery: &Delivery,
    subscription: &SubscriptionRow,
    progress: &mut DeliveryState,
) -> Result<bool, ProjectionError> {
    let pending = SubscriptionsView::redeliveries(
        delivery.db(),
        subscription.id,
        progress.redelivered_through,
        1,
    )
    .await?;
    let Some(request) = pending.first() else {
        return Ok(false);
    };
    let event = delivery
        .log
        .read_all_revealed(request.event_position.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|e| e.position == request.event_position);
    if let Some(event) = event {
        let secrets = delivery.secrets(subscription).await?;
        let now = Utc::now();
        let response = deliver(delivery, subscription, &secrets, &event, now).await?;
        let outcome = if response.delivered() {
            Outcome::Delivered
        } else {
            Outcome::Failed
        };
        delivery.metrics.record(outcome);
        let attempt = attempt_of(
            subscription.id,
            &event,
            1,
            Trigger::Redelivery,
            now,
            &response,
            outcome,
        );
        let mut conn = delivery.db().pool().acquire().await?;
        state::record_attempt(&mut conn, Uuid::now_v7(), &attempt).await?;
    }
    progress.redelivered_through = request.request_position;
    Ok(true)
}

async fn deliver(
    delivery: &Delivery,
    subscription: &SubscriptionRow,
    secrets: &[SigningSecret],
    event: &RecordedEvent,
    now: DateTime<Utc>,
) -> Result<Response, ProjectionError> {
    let body = payload::body(event).map_err(|e| ProjectionError::Malformed {
        position: e.position,
        reason: e.reason,
    })?;
    Ok(send::post(
        &delivery.client,
        &delivery.config.addresses,
        &subscription.url,
        secrets,
        &event.event_id.to_string(),
        now,
        body,
    )
    .await)
}

fn attempt_of<'a>(
    subscription_id: Uuid,
    event: &RecordedEvent,
    attempt: u32,
    trigger: Trigger,
    at: DateTime<Utc>,
    response: &'a Response,
    outcome: Outcome,
) -> NewAttempt<'a> {
    NewAttempt {
        subscription_id,
        event_id: event.event_id,
        position: event.position,
        attempt,
        trigger,
        at,
        status_code: response.status,
        latency_ms: response.latency_ms(),
        error: response.error.as_deref(),
        response_body: response.body.as_deref(),
        outcome,
    }
}

/// The receiver's answers decided it: recorded as the subscription's own event, by the system.
async fn disable(
    delivery: &Delivery,
    subscription_id: Uuid,
    reason: DisableReason,
    detail: &str,
) -> Result<(), ProjectionError> {
    let executor = CommandExecutor::<WebhookSubscription>::new(delivery.log.clone());
    let (subscription, _) = executor
        .load(&subscription_id.to_string())
        .await
        .map_err(|e| ProjectionError::Command(e.to_string()))?;
    let ctx = CommandContext {
        tenant_id: subscription.tenant_id(),
        now: Utc::now(),
        metadata: EventMetadata::system(),
        decided_on: Vec::new(),
    };
    let command = WebhookSubscriptionCommand::Disable {
        reason,
        detail: Some(detail.to_owned()),
        at: ctx.now,
    };
    executor
        .execute(
            &subscription_id.to_string(),
            command,
            &(),
            &ctx,
            |_, _, _| SideWrites::default(),
        )
        .await
        .map_err(|e| ProjectionError::Command(e.to_string()))?;
    tracing::warn!(subscription = %subscription_id, ?reason, detail, "webhook subscription disabled");
    // Until the view shows it disabled, the dispatcher would see it enabled and start delivering
    // again; this worker keeps the subscription (and its lease) until then.
    for _ in 0..100 {
        match SubscriptionsView::get(delivery.db(), subscription_id).await? {
            Some(row) if row.enabled => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => break,
        }
    }
    Ok(())
}

/// The secrets a delivery is signed with now: the current one, and the previous one while its
/// grace period lasts.
pub(super) async fn load_secrets(
    log: &EventLog,
    subscription: &SubscriptionRow,
    now: DateTime<Utc>,
) -> Result<Vec<SigningSecret>, ProjectionError> {
    let owner = StreamId::new(STREAM_KIND, subscription.id.to_string());
    let mut versions = vec![subscription.secret_version];
    if let Some((previous, until)) = subscription.previous_secret
        && until > now
    {
        versions.push(previous);
    }
    let mut secrets = Vec::new();
    for version in versions {
        if let Some(shown) = log.secret(&owner, &secret_kind(version)).await? {
            let secret = SigningSecret::parse(&shown).map_err(|e| ProjectionError::Malformed {
                position: 0,
                reason: e.to_string(),
            })?;
            secrets.push(secret);
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a panic is the failure report.
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use axum::http::HeaderMap;
    use keyledger_store::testing::fresh_sqlite_url;
    use keyledger_store::{
        AppendRequest, Database, ExpectedVersion, NewEvent, SecretWrite, StreamId,
    };

    use super::*;
    use crate::runner::{catch_up, migrate_all};
    use crate::webhooks::DeliveryConfig;
    use crate::webhooks::guard::AddressPolicy;

    /// One request the receiver answered.
    #[derive(Debug, Clone)]
    struct Received {
        position: u64,
        id: String,
        timestamp: i64,
        body: Vec<u8>,
        signatures: String,
    }

    impl Received {
        fn signed_by(&self, secret: &SigningSecret) -> bool {
            let expected = secret.sign(&self.id, self.timestamp, &self.body);
            self.signatures.split(' ').any(|s| s == expected)
        }
    }

    /// A receiver on a free loopback port that accepts everything and keeps what it got.
    async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    kept.lock().unwrap().push(Received {
                        position: payload["position"].as_u64().unwrap(),
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp").parse().unwrap(),
                        body: body.to_vec(),
                        signatures: header("webhook-signature"),
                    });
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, received)
    }

    async fn subscription_command(
        log: &EventLog,
        id: Uuid,
        tenant_id: Uuid,
        command: WebhookSubscriptionCommand,
        secret: &SigningSecret,
    ) -> u64 {
        let ctx = CommandContext {
            tenant_id,
            now: Utc::now(),
            metadata: EventMetadata::system(),
            decided_on: Vec::new(),
        };
        let executed = CommandExecutor::<WebhookSubscription>::new(log.clone())
            .execute(&id.to_string(), command, &(), &ctx, |_, after, _| {
                SideWrites {
                    claims: Vec::new(),
                    secrets: vec![SecretWrite {
                        kind: secret_kind(after.secret_version()),
                        value: Some(secret.reveal()),
                    }],
                    sessions: Vec::new(),
                }
            })
            .await
            .unwrap();
        executed.appended.unwrap().last_position
    }

    async fn user_event(log: &EventLog, tenant_id: Uuid) -> u64 {
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            tenant_id,
            event_type: "user.profile_updated".into(),
            schema_version: 1,
            recorded_at: Utc::now(),
            payload: serde_json::json!({}),
            metadata: EventMetadata::system(),
        };
        let user = StreamId::new("user", Uuid::now_v7().to_string());
        log.append(AppendRequest::new(user, ExpectedVersion::Any, vec![event]))
            .await
            .unwrap()
            .last_position
    }

    /// One pass of the worker, with the subscription's row as the view shows it now.
    async fn one_step(delivery: &Delivery, lease: &Lease) -> Next {
        let (row, folded_through) =
            SubscriptionsView::get_folded(delivery.db(), lease.subscription_id)
                .await
                .unwrap()
                .unwrap();
        let mut progress = state::read(delivery.db(), lease).await.unwrap().unwrap();
        step(delivery, lease, &row, folded_through, &mut progress)
            .await
            .unwrap()
    }

    fn positions(received: &Mutex<Vec<Received>>) -> Vec<u64> {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.position)
            .collect()
    }

    /// The race a CI run once caught, made deterministic by holding the subscriptions view
    /// back: an event appended after a rotation with no grace period must be signed with the
    /// new secret alone, however far behind the view is when the worker reads the log.
    #[tokio::test]
    async fn nothing_after_a_rotation_goes_out_before_the_view_shows_the_rotation() {
        let log = EventLog::open(Database::connect(&fresh_sqlite_url()).await.unwrap())
            .await
            .unwrap();
        migrate_all(&log).await.unwrap();
        let (url, received) = receiver().await;
        let delivery = Delivery::new(
            log.clone(),
            DeliveryConfig {
                addresses: AddressPolicy::permissive(),
                ..DeliveryConfig::default()
            },
        )
        .unwrap();
        let (id, tenant) = (Uuid::now_v7(), Uuid::now_v7());
        let first_secret = SigningSecret::generate();
        let created = subscription_command(
            &log,
            id,
            tenant,
            WebhookSubscriptionCommand::Create {
                subscription_id: id,
                tenant_id: tenant,
                url,
                event_types: vec!["user.*".into()],
                description: None,
                enabled: true,
                at: Utc::now(),
            },
            &first_secret,
        )
        .await;
        catch_up(&SubscriptionsView, &log, |_| {}).await.unwrap();
        state::ensure(delivery.db(), id, created).await.unwrap();
        let lease = Lease {
            subscription_id: id,
            owner: "this node".into(),
        };
        let now = Utc::now();
        assert!(
            state::acquire(
                delivery.db(),
                &lease,
                now,
                now + chrono::Duration::minutes(1)
            )
            .await
            .unwrap()
        );

        let before = user_event(&log, tenant).await;
        let rotated_secret = SigningSecret::generate();
        let rotated_at = Utc::now();
        subscription_command(
            &log,
            id,
            tenant,
            WebhookSubscriptionCommand::RotateSecret {
                previous_valid_until: rotated_at,
                at: rotated_at,
            },
            &rotated_secret,
        )
        .await;
        let after = user_event(&log, tenant).await;

        // The view still shows the subscription as created: the worker sends what came before
        // the rotation and stops there, however often it looks.
        for _ in 0..3 {
            let next = one_step(&delivery, &lease).await;
            assert_eq!(
                positions(&received),
                vec![before],
                "sent before the view showed the rotation"
            );
            assert!(matches!(next, Next::WaitUntil(_)));
        }
        assert!(received.lock().unwrap()[0].signed_by(&first_secret));

        catch_up(&SubscriptionsView, &log, |_| {}).await.unwrap();
        one_step(&delivery, &lease).await;
        assert_eq!(positions(&received), vec![before, after]);
        let sent_after = received.lock().unwrap()[1].clone();
        assert!(sent_after.signed_by(&rotated_secret));
        assert!(
            !sent_after.signed_by(&first_secret),
            "the rotated-out secret had no grace period"
        );
        assert_eq!(
            state::read(delivery.db(), &lease)
                .await
                .unwrap()
                .unwrap()
                .delivered_through,
            after
        );
    }
}
