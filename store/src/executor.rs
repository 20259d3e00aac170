//! Runs one command of a cqrs-es aggregate against the log.
//!
//! cqrs-es's own `CqrsFramework` persists without handing back the position written and cannot
//! put a uniqueness claim or a secret in the same transaction, so this thin executor loads the
//! stream, lets the aggregate decide, and appends at the version it loaded. A concurrent write
//! to the same stream makes the append fail; the executor then reloads and decides again, so a
//! decision is always made on the latest state (this is what keeps parallel wrong passwords
//! from slipping past the lockout count).
//!
//! A command on an aggregate the executor keeps in its cache is first decided on the kept
//! state without reading the log: the append's expected version proves that state current,
//! or fails and the executor reads and decides again. A refusal, or a decision that nothing
//! happens, appends nothing and so proves nothing: it stands only once a read of the log
//! finds nothing after the kept version.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use uuid::Uuid;

use crate::aggregate_cache::{self, AggregateCache};
use crate::error::{AppendError, StoreError};
use crate::log::EventLog;
use crate::model::{
    AppendRequest, Appended, ClaimChange, DecidedOn, EventMetadata, ExpectedVersion, NewEvent,
    SecretWrite, SessionChange, StreamId,
};

/// The facts a command runs under: whose tenant, when, and who asked.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub tenant_id: Uuid,
    pub now: DateTime<Utc>,
    pub metadata: EventMetadata,
    /// Other aggregates' states the command was decided on (the tenant's policies): its
    /// events are appended only while each is current. A refusal appends nothing, so a
    /// command that can be refused on such a state must read it from the log first.
    pub decided_on: Vec<DecidedOn>,
}

/// Writes that must commit with the events or not at all.
#[derive(Debug, Clone, Default)]
pub struct SideWrites {
    pub claims: Vec<ClaimChange>,
    pub secrets: Vec<SecretWrite>,
    pub sessions: Vec<SessionChange>,
}

/// The outcome of a command that the aggregate accepted.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    pub events: Vec<A::Event>,
    /// `None` when the command decided that nothing happened.
    pub appended: Option<Appended>,
    /// The aggregate with the new events applied.
    pub aggregate: A,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(E),
    /// The log refused the append (a claim taken, an idempotency conflict, or a stream still
    /// contended after every retry).
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("event in stream {stream} cannot be decoded: {reason}")]
    Decode { stream: StreamId, reason: String },
}

impl<E: std::error::Error + 'static> From<StoreError> for ExecuteError<E> {
    fn from(e: StoreError) -> Self {
        Self::Append(AppendError::Store(e))
    }
}

/// Executes commands for aggregate `A`.
pub struct CommandExecutor<A: Aggregate> {
    log: EventLog,
    max_attempts: u32,
    /// Shared by clones, so every request handler reuses what another one folded.
    cache: AggregateCache<A>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for CommandExecutor<A> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            max_attempts: self.max_attempts,
            cache: self.cache.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A> CommandExecutor<A>
where
    A: Aggregate + Clone,
    A::Command: Clone,
    A::Error: 'static,
{
    /// Every login attempt must be recorded even when 50 race on one account, so the default
    /// allows as many retries as writers we expect to race.
    pub fn new(log: EventLog) -> Self {
        Self {
            log,
            max_attempts: 128,
            cache: AggregateCache::new(aggregate_cache::CAPACITY),
            _aggregate: PhantomData,
        }
    }

    pub fn stream(id: &str) -> StreamId {
        StreamId::new(A::TYPE, id)
    }

    /// The aggregate folded from its whole stream, and the stream's version. Only the events
    /// after the version this executor last folded are read.
    pub async fn load(&self, id: &str) -> Result<(A, u64), ExecuteError<A::Error>> {
        let stream = Self::stream(id);
        let (mut aggregate, mut version) = self.cache.get(id).unwrap_or_default();
        let recorded = self
            .log
            .reveal(self.log.read_stream_after(&stream, version).await?)
            .await?;
        if recorded.is_empty() {
            return Ok((aggregate, version));
        }
        for event in recorded {
            let decoded =
                decode_event::<A>(&event.event_type, &event.payload).map_err(|reason| {
                    ExecuteError::Decode {
                        stream: stream.clone(),
                        reason,
                    }
                })?;
            aggregate.apply(decoded);
            version = event.stream_version;
        }
        self.cache.put(id, aggregate.clone(), version);
        Ok((aggregate, version))
    }

    /// The state this executor last folded, without reading the log; read from the log only
    /// when it keeps none. It may be stale: a decision on it is safe only when its append
    /// checks the version ([`CommandContext::decided_on`]).
    pub async fn kept_or_load(&self, id: &str) -> Result<(A, u64), ExecuteError<A::Error>> {
        match self.cache.get(id) {
            Some(kept) => Ok(kept),
            None => self.load(id).await,
        }
    }

    /// Lets the aggregate decide and appends what it decided, retrying on a concurrent write.
    /// `side_writes` sees the aggregate before and after the new events, and the events.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        services: &A::Services,
        ctx: &CommandContext,
        side_writes: impl Fn(&A, &A, &[A::Event]) -> SideWrites,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let stream = Self::stream(id);
        let mut attempt = 0;
        // The state to decide on next, and whether it is the cached one, unconfirmed by a read.
        let mut start = self.cache.get(id).map(|kept| (kept, true));
        loop {
            attempt += 1;
            let ((mut aggregate, version), unconfirmed) = match start.take() {
                Some(start) => start,
                None => (self.load(id).await?, false),
            };
            let before = aggregate.clone();
            let sink = EventSink::default();
            let decided = aggregate.handle(command.clone(), services, &sink).await;
            let events = sink.collect().await;
            if decided.is_err() || events.is_empty() {
                if unconfirmed {
                    let latest = self.load(id).await?;
                    if latest.1 != version {
                        start = Some((latest, false));
                        continue;
                    }
                }
                decided.map_err(ExecuteError::Domain)?;
                return Ok(Executed {
                    events,
                    appended: None,
                    aggregate,
                    version,
                });
            }
            let side = side_writes(&before, &aggregate, &events);
            let new_events = events
                .iter()
                .map(|e| encode_event(e, ctx))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| ExecuteError::Decode {
                    stream: stream.clone(),
                    reason,
                })?;
            let request = AppendRequest {
                stream: stream.clone(),
                expected: if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                },
                events: new_events,
                claims: side.claims,
                secrets: side.secrets,
                sessions: side.sessions,
                decided_on: ctx.decided_on.clone(),
            };
            match self.log.append(request).await {
                Ok(appended) => {
                    self.cache
                        .put(id, aggregate.clone(), appended.stream_version);
                    return Ok(Executed {
                        version: appended.stream_version,
                        events,
                        appended: Some(appended),
                        aggregate,
                    });
                }
                Err(AppendError::WrongExpectedVersion { .. }) if attempt < self.max_attempts => {
                    tracing::debug!(%stream, attempt, "concurrent write, deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Domain events serialise adjacently tagged (`{"type": .., "data": ..}`); the log keeps the
/// type in its own column and the data as the payload.
pub fn encode_event<E: DomainEvent>(event: &E, ctx: &CommandContext) -> Result<NewEvent, String> {
    let mut value = serde_json::to_value(event).map_err(|e| e.to_string())?;
    let payload = value
        .get_mut("data")
        .map(serde_json::Value::take)
        .ok_or_else(|| format!("event {} is not adjacently tagged", event.event_type()))?;
    let schema_version = event
        .event_version()
        .parse()
        .map_err(|_| format!("event version {:?} is not a number", event.event_version()))?;
    Ok(NewEvent {
        event_id: Uuid::now_v7(),
        tenant_id: ctx.tenant_id,
        event_type: event.event_type(),
        schema_version,
        recorded_at: ctx.now,
        payload,
        metadata: ctx.metadata.clone(),
    })
}

pub fn decode_event<A: Aggregate>(event_type: &str, payload: &str) -> Result<A::Event, String> {
    let data: serde_json::Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    serde_json::from_value(serde_json::json!({ "type": event_type, "data": data }))
        .map_err(|e| format!("{event_type}: {e}"))
}
