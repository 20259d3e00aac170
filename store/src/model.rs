//! The shapes that cross the store's boundary: what is appended, what is read back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A stream is one aggregate instance: its type (`user`, `tenant`, `unknown_login`) and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    pub kind: String,
    pub id: String,
}

impl StreamId {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.kind, self.id)
    }
}

/// What the writer believes the stream's version is. A stream's version is the number of
/// events in it; its first event has stream version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: used for streams that only collect facts (unknown-user login attempts).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (0 means empty, same as `NoStream`).
    Exact(u64),
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Admin,
    /// The user acting on their own account.
    #[serde(rename = "self")]
    User,
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: Option<String>,
}

/// Request facts recorded beside every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub actor: Actor,
    pub request_ip: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: Option<String>,
}

impl EventMetadata {
    pub fn system() -> Self {
        Self {
            actor: Actor {
                kind: ActorKind::System,
                id: None,
            },
            request_ip: None,
            user_agent: None,
            correlation_id: None,
        }
    }
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// UUIDv7. Appending the same id twice stores one event (idempotent append).
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    /// Stable dotted name, e.g. `user.login.failed`. Never changes once shipped.
    pub event_type: String,
    pub schema_version: u32,
    pub recorded_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub metadata: EventMetadata,
}

/// A uniqueness claim (username, email) held by a stream, written in the same transaction as
/// the events so that two racing creates cannot both win.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimKey {
    /// Usually the tenant id.
    pub scope: String,
    /// `username` or `email`.
    pub kind: String,
    /// Already normalised by the caller (lower-cased).
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimChange {
    /// Take the key for the request's stream; refused if another stream holds it.
    Reserve(ClaimKey),
    /// Give the key up (only if the request's stream holds it).
    Release(ClaimKey),
}

/// A secret kept beside the log, never in it (a password hash), written atomically with the
/// events that announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretWrite {
    pub kind: String,
    /// `None` deletes the secret.
    pub value: Option<String>,
}

/// A change to login sessions that commits with the events that cause it, or not at all.
#[derive(Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// A login's session: no session exists without its recorded login.
    Start(NewSession),
    /// Every unrevoked session of the user ends at `at`: a suspension, a lock, a password
    /// reset, an erasure, an admin's sign-out. In the events' transaction, no crash between
    /// the event and the revocation can leave a session alive, to outlive a later
    /// reactivation or unlock.
    EndAll { user_id: Uuid, at: DateTime<Utc> },
    /// Every unrevoked session of the user but the one whose token hashes to `kept` ends at
    /// `at`: a password change by a user who asked to sign out everywhere else.
    EndOthers {
        user_id: Uuid,
        kept: [u8; 32],
        at: DateTime<Utc>,
    },
}

impl std::fmt::Debug for SessionChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Token hashes stay out of logs, like every other hash.
        match self {
            Self::Start(session) => f.debug_tuple("Start").field(session).finish(),
            Self::EndAll { user_id, at } => f
                .debug_struct("EndAll")
                .field("user_id", user_id)
                .field("at", at)
                .finish(),
            Self::EndOthers { user_id, at, .. } => f
                .debug_struct("EndOthers")
                .field("user_id", user_id)
                .field("at", at)
                .finish_non_exhaustive(),
        }
    }
}

/// A login session to start in the same transaction as the events that record the login (see
/// [`crate::sessions`]).
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    /// SHA-256 of the bearer token; the token itself is never stored.
    pub token_hash: [u8; 32],
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The session ends after this long without use...
    pub idle: chrono::Duration,
    /// ...and after this long in any case.
    pub absolute: chrono::Duration,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token hash stays out of logs, like every other hash.
        f.debug_struct("NewSession")
            .field("user_id", &self.user_id)
            .field("tenant_id", &self.tenant_id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub claims: Vec<ClaimChange>,
    /// Secrets owned by `stream`.
    pub secrets: Vec<SecretWrite>,
    /// Sessions started or ended if, and only if, the events are written, in this order.
    pub sessions: Vec<SessionChange>,
    /// Other streams whose state the decision read: the append stands only if each is still
    /// at the version read.
    pub decided_on: Vec<DecidedOn>,
}

impl AppendRequest {
    /// Events alone: no claims, secrets, sessions or other streams decided on.
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream,
            expected,
            events,
            claims: Vec::new(),
            secrets: Vec::new(),
            sessions: Vec::new(),
            decided_on: Vec::new(),
        }
    }
}

/// A stream's version that a decision read. A decision on another aggregate's state (a
/// login decided under the tenant's lockout policy) is written only while that state is
/// current, so a policy changed between the read and the append is never missed, on this
/// node or another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedOn {
    pub stream: StreamId,
    pub version: u64,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Global position of the first event of this request.
    pub first_position: u64,
    /// Global position of the last event of this request; a read that waits for views to
    /// reach it sees its own write.
    pub last_position: u64,
    /// The stream's version after the append.
    pub stream_version: u64,
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global, gap-free, starting at 1.
    pub position: u64,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub stream: StreamId,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub recorded_at: DateTime<Utc>,
    /// The payload JSON text exactly as hashed.
    pub payload: String,
    /// The metadata JSON text exactly as hashed.
    pub metadata: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl RecordedEvent {
    pub fn payload_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }

    pub fn metadata(&self) -> Result<EventMetadata, serde_json::Error> {
        serde_json::from_str(&self.metadata)
    }
}

/// A class of events a reader folds: those of one stream kind whose type starts with one of
/// `type_prefixes`, or any type when there are none. A view names the classes it folds, so
/// that a rebuild of that view alone reads and reveals only those events, not the whole log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventClass {
    pub stream_kind: &'static str,
    pub type_prefixes: &'static [&'static str],
}

impl EventClass {
    pub fn contains(&self, event: &RecordedEvent) -> bool {
        event.stream.kind == self.stream_kind
            && (self.type_prefixes.is_empty()
                || self
                    .type_prefixes
                    .iter()
                    .any(|prefix| event.event_type.starts_with(prefix)))
    }
}

/// The events a reader folds: every one, or only those of some [`EventClass`]es.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(Vec<EventClass>),
}

impl EventFilter {
    pub fn contains(&self, event: &RecordedEvent) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Only(classes) => classes.iter().any(|class| class.contains(event)),
        }
    }

    /// What either filter selects: what several readers sharing one read need.
    pub fn union(self, other: EventFilter) -> EventFilter {
        match (self, other) {
            (EventFilter::Only(mut classes), EventFilter::Only(more)) => {
                for class in more {
                    if !classes.contains(&class) {
                        classes.push(class);
                    }
                }
                EventFilter::Only(classes)
            }
            _ => EventFilter::All,
        }
    }
}

/// The newest event's position and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub position: u64,
    pub hash: [u8; 32],
}
