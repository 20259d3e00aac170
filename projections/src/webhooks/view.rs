//! The subscriptions view: each subscription's current settings, and the redeliveries asked
//! for. It is a pure fold of the log like every view, so a rebuild reaches the same rows; the
//! delivery progress, which must survive a rebuild, lives in [`super::state`].

use chrono::{DateTime, Utc};
use keyledger_domain::webhook::{DisableReason, EventTypePatterns, WebhookSubscriptionEvent};
use keyledger_store::{Database, EventClass, EventFilter, RecordedEvent};
use sqlx::{AnyConnection, Row, any::AnyRow};
use uuid::Uuid;

use crate::checkpoint::{to_i64, to_u64};
use crate::error::ProjectionError;
use crate::runner::Projection;
use crate::views::{decode, from_micros, micros};

pub const NAME: &str = "webhook_subscriptions";

const FOLDS: EventClass = EventClass {
    stream_kind: "webhook_subscription",
    type_prefixes: &[],
};

pub struct SubscriptionsView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    /// `event_types` parsed; `None` only if the row was written by a future version.
    patterns: Option<EventTypePatterns>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret_version: u32,
    /// The secret that stays valid, with its end, after a rotation.
    pub previous_secret: Option<(u32, DateTime<Utc>)>,
    /// Delivery starts after this position (the subscription's own creation).
    pub created_position: u64,
    /// Counts resyncs; the delivery worker applies each once.
    pub resync_generation: u64,
    pub resync_after: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeliveryRequest {
    /// The position of the `webhook.redelivery.requested` event: requests are served in order.
    pub request_position: u64,
    pub event_position: u64,
}

const COLUMNS: &str = "id, tenant_id, url, event_types, description, enabled, disabled_reason, \
    secret_version, previous_secret_version, previous_valid_until, created_position, \
    resync_generation, resync_after, created_at, updated_at";

impl SubscriptionsView {
    pub async fn get(db: &Database, id: Uuid) -> Result<Option<SubscriptionRow>, ProjectionError> {
        Ok(Self::get_folded(db, id).await?.map(|(row, _)| row))
    }

    /// The subscription's row and the log position this view had folded when it was read, in
    /// one statement, so the row shows every event of the subscription up to that position and
    /// none after it.
    pub async fn get_folded(
        db: &Database,
        id: Uuid,
    ) -> Result<Option<(SubscriptionRow, u64)>, ProjectionError> {
        let sql = format!(
            "SELECT {COLUMNS}, (SELECT position FROM projection_checkpoints WHERE name = $2) \
             AS folded_through FROM webhook_subscriptions_view WHERE id = $1"
        );
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .bind(NAME)
            .fetch_optional(db.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let folded: Option<i64> = row.try_get("folded_through")?;
        Ok(Some((subscription(&row)?, folded.map_or(0, to_u64))))
    }

    pub async fn list(
        db: &Database,
        tenant_id: Uuid,
    ) -> Result<Vec<SubscriptionRow>, ProjectionError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_subscriptions_view WHERE tenant_id = $1 ORDER BY id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant_id.to_string())
            .fetch_all(db.pool())
            .await?;
        rows.iter().map(subscription).collect()
    }

    /// Every enabled subscription of every tenant: what the dispatcher delivers.
    pub async fn enabled(db: &Database) -> Result<Vec<SubscriptionRow>, ProjectionError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_subscriptions_view WHERE enabled = 1 ORDER BY id"
        );
        let rows = sqlx::query(&sql).fetch_all(db.pool()).await?;
        rows.iter().map(subscription).collect()
    }

    /// Redeliveries asked for a subscription after `after` (a request position), oldest first.
    pub async fn redeliveries(
        db: &Database,
        subscription_id: Uuid,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RedeliveryRequest>, ProjectionError> {
        let rows = sqlx::query(
            "SELECT request_position, event_position FROM webhook_redeliveries_view \
             WHERE subscription_id = $1 AND request_position > $2 \
             ORDER BY request_position LIMIT $3",
        )
        .bind(subscription_id.to_string())
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RedeliveryRequest {
                    request_position: to_u64(row.try_get("request_position")?),
                    event_position: to_u64(row.try_get("event_position")?),
                })
            })
            .collect()
    }
}

impl SubscriptionRow {
    /// Whether this subscription receives `event`: its own tenant's, of a type it asked for.
    pub fn wants(&self, event: &RecordedEvent) -> bool {
        event.tenant_id == self.tenant_id
            && self
                .patterns
                .as_ref()
                .is_some_and(|patterns| patterns.matches(&event.event_type))
    }
}

fn subscription(row: &AnyRow) -> Result<SubscriptionRow, ProjectionError> {
    let malformed = |reason: String| ProjectionError::Malformed {
        position: 0,
        reason,
    };
    let id: String = row.try_get("id")?;
    let tenant: String = row.try_get("tenant_id")?;
    let types: String = row.try_get("event_types")?;
    let previous_version: Option<i64> = row.try_get("previous_secret_version")?;
    let previous_until: Option<i64> = row.try_get("previous_valid_until")?;
    let event_types: Vec<String> =
        serde_json::from_str(&types).map_err(|e| malformed(e.to_string()))?;
    Ok(SubscriptionRow {
        patterns: EventTypePatterns::parse(&event_types).ok(),
        event_types,
        id: id
            .parse()
            .map_err(|e: uuid::Error| malformed(e.to_string()))?,
        tenant_id: tenant
            .parse()
            .map_err(|e: uuid::Error| malformed(e.to_string()))?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        enabled: row.try_get::<i64, _>("enabled")? == 1,
        disabled_reason: row.try_get("disabled_reason")?,
        secret_version: u32::try_from(row.try_get::<i64, _>("secret_version")?).unwrap_or(1),
        previous_secret: previous_version
            .zip(previous_until)
            .map(|(v, until)| (u32::try_from(v).unwrap_or(0), from_micros(until))),
        created_position: to_u64(row.try_get("created_position")?),
        resync_generation: to_u64(row.try_get("resync_generation")?),
        resync_after: to_u64(row.try_get("resync_after")?),
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}

fn reason_text(reason: DisableReason) -> &'static str {
    match reason {
        DisableReason::Admin => "admin",
        DisableReason::Gone => "gone",
        DisableReason::Failing => "failing",
    }
}

impl Projection for SubscriptionsView {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["webhook_subscriptions_view", "webhook_redeliveries_view"]
    }

    fn folds(&self) -> EventFilter {
        EventFilter::Only(vec![FOLDS])
    }

    async fn migrate(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS webhook_subscriptions_view (\
                id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, url TEXT NOT NULL, \
                event_types TEXT NOT NULL, description TEXT, enabled BIGINT NOT NULL, \
                disabled_reason TEXT, secret_version BIGINT NOT NULL, \
                previous_secret_version BIGINT, previous_valid_until BIGINT, \
                created_position BIGINT NOT NULL, resync_generation BIGINT NOT NULL, \
                resync_after BIGINT NOT NULL, created_at BIGINT NOT NULL, \
                updated_at BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS webhook_subscriptions_view_tenant \
                ON webhook_subscriptions_view (tenant_id, id)",
            "CREATE TABLE IF NOT EXISTS webhook_redeliveries_view (\
                request_position BIGINT PRIMARY KEY, subscription_id TEXT NOT NULL, \
                event_position BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS webhook_redeliveries_view_subscription \
                ON webhook_redeliveries_view (subscription_id, request_position)",
        ] {
            sqlx::query(ddl).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn clear(&self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        for table in ["webhook_subscriptions_view", "webhook_redeliveries_view"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        // Subscription changes are rare next to logins: one statement per event is plenty.
        for event in events.iter().filter(|e| FOLDS.contains(e)) {
            fold(conn, event, decode(event)?).await?;
        }
        Ok(())
    }
}

async fn fold(
    conn: &mut AnyConnection,
    event: &RecordedEvent,
    change: WebhookSubscriptionEvent,
) -> Result<(), ProjectionError> {
    use WebhookSubscriptionEvent as E;
    let id = event.stream.id.as_str();
    let at = micros(event.recorded_at);
    let update = |set: &str| {
        format!("UPDATE webhook_subscriptions_view SET {set}, updated_at = $1 WHERE id = $2")
    };
    match change {
        E::Created(e) => {
            let types = serde_json::to_string(&e.event_types.as_strings()).map_err(|err| {
                ProjectionError::Malformed {
                    position: event.position,
                    reason: err.to_string(),
                }
            })?;
            sqlx::query(
                "INSERT INTO webhook_subscriptions_view (id, tenant_id, url, event_types, \
                 description, enabled, disabled_reason, secret_version, created_position, \
                 resync_generation, resync_after, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $10)",
            )
            .bind(id)
            .bind(e.tenant_id.to_string())
            .bind(e.url.as_str())
            .bind(types)
            .bind(e.description)
            .bind(i64::from(e.enabled))
            .bind((!e.enabled).then_some(reason_text(DisableReason::Admin)))
            .bind(i64::from(e.secret_version))
            .bind(to_i64(event.position))
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        E::Updated(e) => {
            if let Some(url) = e.url {
                sqlx::query(&update("url = $3"))
                    .bind(at)
                    .bind(id)
                    .bind(url.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some(types) = e.event_types {
                let types = serde_json::to_string(&types.as_strings()).unwrap_or_default();
                sqlx::query(&update("event_types = $3"))
                    .bind(at)
                    .bind(id)
                    .bind(types)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some(description) = e.description {
                sqlx::query(&update("description = $3"))
                    .bind(at)
                    .bind(id)
                    .bind(description)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        E::Enabled(_) => {
            sqlx::query(&update("enabled = 1, disabled_reason = NULL"))
                .bind(at)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        E::Disabled(e) => {
            sqlx::query(&update("enabled = 0, disabled_reason = $3"))
                .bind(at)
                .bind(id)
                .bind(reason_text(e.reason))
                .execute(&mut *conn)
                .await?;
        }
        E::Deleted(_) => {
            for sql in [
                "DELETE FROM webhook_subscriptions_view WHERE id = $1",
                "DELETE FROM webhook_redeliveries_view WHERE subscription_id = $1",
            ] {
                sqlx::query(sql).bind(id).execute(&mut *conn).await?;
            }
        }
        E::SecretRotated(e) => {
            sqlx::query(&update(
                "secret_version = $3, previous_secret_version = $4, previous_valid_until = $5",
            ))
            .bind(at)
            .bind(id)
            .bind(i64::from(e.secret_version))
            .bind(i64::from(e.previous_secret_version))
            .bind(micros(e.previous_valid_until))
            .execute(&mut *conn)
            .await?;
        }
        E::Resynced(e) => {
            sqlx::query(&update(
                "resync_generation = resync_generation + 1, resync_after = $3",
            ))
            .bind(at)
            .bind(id)
            .bind(to_i64(e.after_position))
            .execute(&mut *conn)
            .await?;
        }
        E::RedeliveryRequested(e) => {
            sqlx::query(
                "INSERT INTO webhook_redeliveries_view (request_position, subscription_id, \
                 event_position) VALUES ($1, $2, $3)",
            )
            .bind(to_i64(event.position))
            .bind(id)
            .bind(to_i64(e.event_position))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}
