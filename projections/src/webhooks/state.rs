//! Delivery progress beside the log: each subscription's cursor, retry state and lease, the
//! record of every attempt, and the dead letters. Unlike a view this is not rebuilt from the
//! log (a rebuild must never make a receiver get everything again), and every write that moves
//! a cursor is fenced by the lease, so a node that lost its lease cannot move it.

use chrono::{DateTime, Utc};
use keyledger_store::Database;
use sqlx::{AnyConnection, Row, any::AnyRow};
use uuid::Uuid;

use crate::checkpoint::{to_i64, to_u64};
use crate::error::ProjectionError;
use crate::views::{from_micros, micros};

pub async fn migrate(conn: &mut AnyConnection) -> Result<(), ProjectionError> {
    for ddl in [
        "CREATE TABLE IF NOT EXISTS webhook_delivery_state (\
            subscription_id TEXT PRIMARY KEY, delivered_through BIGINT NOT NULL, \
            resync_generation BIGINT NOT NULL, redelivered_through BIGINT NOT NULL, \
            attempt BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL, \
            consecutive_dead_letters BIGINT NOT NULL, lease_owner TEXT, \
            lease_until BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS webhook_attempts (\
            id TEXT PRIMARY KEY, subscription_id TEXT NOT NULL, event_id TEXT NOT NULL, \
            position BIGINT NOT NULL, attempt BIGINT NOT NULL, cause TEXT NOT NULL, \
            at BIGINT NOT NULL, status_code BIGINT, latency_ms BIGINT NOT NULL, \
            error TEXT, response_body TEXT, outcome TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS webhook_attempts_subscription \
            ON webhook_attempts (subscription_id, at, id)",
        "CREATE INDEX IF NOT EXISTS webhook_attempts_event ON webhook_attempts (event_id, at)",
        "CREATE TABLE IF NOT EXISTS webhook_dead_letters (\
            subscription_id TEXT NOT NULL, position BIGINT NOT NULL, event_id TEXT NOT NULL, \
            event_type TEXT NOT NULL, at BIGINT NOT NULL, last_error TEXT, \
            PRIMARY KEY (subscription_id, position))",
    ] {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Where one subscription's delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    /// Every matching event up to here was delivered or dead-lettered.
    pub delivered_through: u64,
    pub resync_generation: u64,
    pub redelivered_through: u64,
    /// Failed attempts so far at the event after the cursor.
    pub attempt: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub consecutive_dead_letters: u32,
}

/// A node's claim on delivering one subscription.
#[derive(Debug, Clone)]
pub struct Lease {
    pub subscription_id: Uuid,
    pub owner: String,
}

/// Creates the subscription's state at its creation position, if missing.
pub async fn ensure(
    db: &Database,
    subscription_id: Uuid,
    cursor: u64,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO webhook_delivery_state (subscription_id, delivered_through, resync_generation, \
         redelivered_through, attempt, next_attempt_at, consecutive_dead_letters, lease_owner, \
         lease_until) VALUES ($1, $2, 0, 0, 0, 0, 0, NULL, 0) \
         ON CONFLICT (subscription_id) DO NOTHING",
    )
    .bind(subscription_id.to_string())
    .bind(to_i64(cursor))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Takes or renews the lease until `until`. Succeeds when the lease is free, expired, or
/// already ours.
pub async fn acquire(
    db: &Database,
    lease: &Lease,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, ProjectionError> {
    let done = sqlx::query(
        "UPDATE webhook_delivery_state SET lease_owner = $1, lease_until = $2 \
         WHERE subscription_id = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
    )
    .bind(&lease.owner)
    .bind(micros(until))
    .bind(lease.subscription_id.to_string())
    .bind(micros(now))
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn release(db: &Database, lease: &Lease) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE webhook_delivery_state SET lease_owner = NULL, lease_until = 0 \
         WHERE subscription_id = $1 AND lease_owner = $2",
    )
    .bind(lease.subscription_id.to_string())
    .bind(&lease.owner)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The state, if `lease` still holds it.
pub async fn read(db: &Database, lease: &Lease) -> Result<Option<DeliveryState>, ProjectionError> {
    let row = sqlx::query(
        "SELECT delivered_through, resync_generation, redelivered_through, attempt, next_attempt_at, \
         consecutive_dead_letters FROM webhook_delivery_state \
         WHERE subscription_id = $1 AND lease_owner = $2",
    )
    .bind(lease.subscription_id.to_string())
    .bind(&lease.owner)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(state).transpose()
}

fn state(row: &AnyRow) -> Result<DeliveryState, ProjectionError> {
    Ok(DeliveryState {
        delivered_through: to_u64(row.try_get("delivered_through")?),
        resync_generation: to_u64(row.try_get("resync_generation")?),
        redelivered_through: to_u64(row.try_get("redelivered_through")?),
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(u32::MAX),
        next_attempt_at: from_micros(row.try_get("next_attempt_at")?),
        consecutive_dead_letters: u32::try_from(row.try_get::<i64, _>("consecutive_dead_letters")?)
            .unwrap_or(u32::MAX),
    })
}

/// Writes the whole state back, only while `lease` holds it. Returns false when the lease was
/// lost: the caller must stop delivering.
pub async fn save(
    conn: &mut AnyConnection,
    lease: &Lease,
    state: &DeliveryState,
) -> Result<bool, ProjectionError> {
    let done = sqlx::query(
        "UPDATE webhook_delivery_state SET delivered_through = $1, resync_generation = $2, \
         redelivered_through = $3, attempt = $4, next_attempt_at = $5, \
         consecutive_dead_letters = $6 WHERE subscription_id = $7 AND lease_owner = $8",
    )
    .bind(to_i64(state.delivered_through))
    .bind(to_i64(state.resync_generation))
    .bind(to_i64(state.redelivered_through))
    .bind(i64::from(state.attempt))
    .bind(micros(state.next_attempt_at))
    .bind(i64::from(state.consecutive_dead_letters))
    .bind(lease.subscription_id.to_string())
    .bind(&lease.owner)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Following the log.
    Log,
    /// An admin asked for it again.
    Redelivery,
    /// The test ping.
    Ping,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Redelivery => "redelivery",
            Self::Ping => "ping",
        }
    }
}

/// What came of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Failed; another attempt is scheduled.
    Failed,
    /// Failed for the last time: the event is dead-lettered for this subscription.
    DeadLettered,
    /// 410 Gone: the subscription is disabled.
    Gone,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
            Self::Gone => "gone",
        }
    }
}

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub event_id: Uuid,
    pub position: u64,
    /// 1 for the first try of an event.
    pub attempt: u32,
    pub trigger: String,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The first kilobyte of the receiver's answer.
    pub response_body: Option<String>,
    pub outcome: String,
}

pub struct NewAttempt<'a> {
    pub subscription_id: Uuid,
    pub event_id: Uuid,
    pub position: u64,
    pub attempt: u32,
    pub trigger: Trigger,
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<&'a str>,
    pub response_body: Option<&'a str>,
    pub outcome: Outcome,
}

pub async fn record_attempt(
    conn: &mut AnyConnection,
    id: Uuid,
    attempt: &NewAttempt<'_>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO webhook_attempts (id, subscription_id, event_id, position, attempt, \
         cause, at, status_code, latency_ms, error, response_body, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id.to_string())
    .bind(attempt.subscription_id.to_string())
    .bind(attempt.event_id.to_string())
    .bind(to_i64(attempt.position))
    .bind(i64::from(attempt.attempt))
    .bind(attempt.trigger.as_str())
    .bind(micros(attempt.at))
    .bind(attempt.status_code.map(i64::from))
    .bind(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX))
    .bind(attempt.error)
    .bind(attempt.response_body)
    .bind(attempt.outcome.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An event that failed every attempt, for one subscription.
pub struct NewDeadLetter<'a> {
    pub position: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub at: DateTime<Utc>,
    pub last_error: &'a str,
}

async fn record_dead_letter(
    conn: &mut AnyConnection,
    subscription_id: Uuid,
    dead: &NewDeadLetter<'_>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO webhook_dead_letters (subscription_id, position, event_id, event_type, at, \
         last_error) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (subscription_id, position) DO UPDATE SET at = $5, last_error = $6",
    )
    .bind(subscription_id.to_string())
    .bind(to_i64(dead.position))
    .bind(dead.event_id.to_string())
    .bind(dead.event_type)
    .bind(micros(dead.at))
    .bind(dead.last_error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records attempts (and the dead letter the last one made, if any) and writes the state back,
/// in one transaction: attempts are on record before the cursor moves past their events. Returns
/// false when the lease was lost (nothing is written then).
pub async fn commit(
    db: &Database,
    lease: &Lease,
    state: &DeliveryState,
    attempts: &[NewAttempt<'_>],
    dead_letter: Option<&NewDeadLetter<'_>>,
) -> Result<bool, ProjectionError> {
    let mut tx = db.pool().begin().await?;
    // The state update comes first: it takes SQLite's write lock before anything else.
    if !save(&mut tx, lease, state).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    for attempt in attempts {
        record_attempt(&mut tx, Uuid::now_v7(), attempt).await?;
    }
    if let Some(dead) = dead_letter {
        record_dead_letter(&mut tx, lease.subscription_id, dead).await?;
    }
    tx.commit().await?;
    Ok(true)
}

#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub subscription_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub position: Option<u64>,
    pub limit: u32,
}

pub async fn attempts(
    db: &Database,
    filter: &AttemptFilter,
) -> Result<Vec<AttemptRecord>, ProjectionError> {
    let mut clauses = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    if let Some(id) = filter.subscription_id {
        binds.push(id.to_string());
        clauses.push(format!("subscription_id = ${}", binds.len()));
    }
    if let Some(id) = filter.event_id {
        binds.push(id.to_string());
        clauses.push(format!("event_id = ${}", binds.len()));
    }
    let position_clause = filter.position.map(|p| format!("position = {}", to_i64(p)));
    clauses.extend(position_clause);
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT id, subscription_id, event_id, position, attempt, cause, at, status_code, \
         latency_ms, error, response_body, outcome FROM webhook_attempts {filter_sql} \
         ORDER BY at, id LIMIT {}",
        filter.limit
    );
    let mut query = sqlx::query(&sql);
    for bind in binds {
        query = query.bind(bind);
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter().map(attempt).collect()
}

fn attempt(row: &AnyRow) -> Result<AttemptRecord, ProjectionError> {
    let uuid = |column: &str| -> Result<Uuid, ProjectionError> {
        let text: String = row.try_get(column)?;
        text.parse()
            .map_err(|e: uuid::Error| ProjectionError::Malformed {
                position: 0,
                reason: e.to_string(),
            })
    };
    Ok(AttemptRecord {
        id: uuid("id")?,
        subscription_id: uuid("subscription_id")?,
        event_id: uuid("event_id")?,
        position: to_u64(row.try_get("position")?),
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(u32::MAX),
        trigger: row.try_get("cause")?,
        at: from_micros(row.try_get("at")?),
        status_code: row
            .try_get::<Option<i64>, _>("status_code")?
            .and_then(|c| u16::try_from(c).ok()),
        latency_ms: to_u64(row.try_get("latency_ms")?),
        error: row.try_get("error")?,
        response_body: row.try_get("response_body")?,
        outcome: row.try_get("outcome")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub position: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub last_error: Option<String>,
}

pub async fn dead_letters(
    db: &Database,
    subscription_id: Uuid,
    limit: u32,
) -> Result<Vec<DeadLetter>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT position, event_id, event_type, at, last_error FROM webhook_dead_letters \
         WHERE subscription_id = $1 ORDER BY position LIMIT $2",
    )
    .bind(subscription_id.to_string())
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let event_id: String = row.try_get("event_id")?;
            Ok(DeadLetter {
                position: to_u64(row.try_get("position")?),
                event_id: event_id.parse().map_err(|e: uuid::Error| {
                    ProjectionError::Malformed {
                        position: 0,
                        reason: e.to_string(),
                    }
                })?,
                event_type: row.try_get("event_type")?,
                at: from_micros(row.try_get("at")?),
                last_error: row.try_get("last_error")?,
            })
        })
        .collect()
}
