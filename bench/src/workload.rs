//! The events the benchmarks write: real `UserEvent`s, encoded as the API encodes them (same
//! payloads, same metadata shape), and a loader that appends many of them quickly through
//! `EventLog::append`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::user::{LoginFailed, LoginFailureReason, UserCreated, UserEvent};
use keyledger_store::executor::encode_event;
use keyledger_store::{
    Actor, ActorKind, AppendRequest, CommandContext, EventLog, EventMetadata, ExpectedVersion,
    NewEvent, StreamId,
};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::report::progress;

/// Appends kept in flight by the loader. The log's writer takes up to 512 waiting requests
/// per commit, so twice that keeps every commit full while the previous one is answered.
const LOADER_IN_FLIGHT: usize = 1024;

/// What a request through the API would record beside the event: an actor, the client's
/// address and agent, and a correlation id.
pub fn context(actor: Actor, now: DateTime<Utc>) -> CommandContext {
    CommandContext {
        tenant_id: DEFAULT_TENANT_ID,
        now,
        metadata: EventMetadata {
            actor,
            request_ip: Some("127.0.0.1".into()),
            user_agent: Some("keyledger-bench/0.1 (like a browser, but faster)".into()),
            correlation_id: Some(Uuid::now_v7().to_string()),
        },
        decided_on: Vec::new(),
    }
}

pub fn admin() -> Actor {
    Actor {
        kind: ActorKind::Admin,
        id: Some("admin".into()),
    }
}

pub fn user_actor(user_id: Uuid) -> Actor {
    Actor {
        kind: ActorKind::User,
        id: Some(user_id.to_string()),
    }
}

pub fn user_stream(user_id: Uuid) -> StreamId {
    StreamId::new("user", user_id.to_string())
}

/// `user.created` for the `n`-th user, as an admin's `POST /users` records it.
pub fn user_created(n: u64, user_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<NewEvent> {
    let event = UserEvent::Created(UserCreated {
        user_id,
        tenant_id: DEFAULT_TENANT_ID,
        username: username(n),
        email: Some(format!("{}@example.com", username(n))),
        display_name: Some(format!("Bench User {n}")),
        at: now,
    });
    encode_event(&event, &context(admin(), now)).map_err(anyhow::Error::msg)
}

/// `user.login.failed` with a wrong password, as `POST /login` records it.
pub fn login_failed(n: u64, user_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<NewEvent> {
    let event = UserEvent::LoginFailed(LoginFailed {
        attempt_id: Uuid::now_v7(),
        reason: LoginFailureReason::BadPassword,
        identifier: username(n),
        at: now,
    });
    encode_event(&event, &context(user_actor(user_id), now)).map_err(anyhow::Error::msg)
}

pub fn username(n: u64) -> String {
    format!("bench{n:07}")
}

/// A new user's stream: `user.created` followed by `failures` wrong-password attempts, in one
/// request (a realistic mix: most events in an identity log are login attempts).
pub fn new_user(n: u64, failures: usize, now: DateTime<Utc>) -> anyhow::Result<AppendRequest> {
    let user_id = Uuid::now_v7();
    let mut events = Vec::with_capacity(1 + failures);
    events.push(user_created(n, user_id, now)?);
    for _ in 0..failures {
        events.push(login_failed(n, user_id, now)?);
    }
    Ok(AppendRequest {
        stream: user_stream(user_id),
        expected: ExpectedVersion::NoStream,
        events,
        claims: Vec::new(),
        secrets: Vec::new(),
        sessions: Vec::new(),
        decided_on: Vec::new(),
    })
}

/// What a bulk load came to.
pub struct Loaded {
    pub events: u64,
    pub elapsed: Duration,
}

/// Appends `requests` requests made by `make(n)`, many in flight at once so the log's group
/// commit fills every transaction.
pub async fn load(
    log: &EventLog,
    requests: u64,
    make: impl Fn(u64) -> anyhow::Result<AppendRequest>,
) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let mut in_flight = JoinSet::new();
    let mut next = 0;
    let mut events = 0;
    let mut reported = 0;
    while next < requests || !in_flight.is_empty() {
        while next < requests && in_flight.len() < LOADER_IN_FLIGHT {
            let request = make(next)?;
            let log = log.clone();
            in_flight.spawn(async move { log.append(request).await });
            next += 1;
        }
        if let Some(done) = in_flight.join_next().await {
            let appended = done
                .context("an append task panicked")?
                .context("an append failed")?;
            events += appended.last_position - appended.first_position + 1;
            if events - reported >= 100_000 {
                reported = events;
                progress(format!(
                    "loaded {events} events ({:.0}/s)",
                    crate::report::rate(events, started.elapsed())
                ));
            }
        }
    }
    Ok(Loaded {
        events,
        elapsed: started.elapsed(),
    })
}
