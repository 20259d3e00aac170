use crate::model::{ClaimKey, ExpectedVersion, StreamId};
use uuid::Uuid;

/// A failure of the database or of the data read from it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    #[error("the event log writer has stopped")]
    WriterStopped,
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    /// The database would acknowledge commits it can lose; the log refuses to run on it.
    #[error(
        "refusing to run: PostgreSQL has {setting} = {value}, which can lose acknowledged events"
    )]
    UnsafeDurability { setting: String, value: String },
}

/// Why an append was refused. Every variant but `Store` is the caller's to handle.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream} is at version {actual}, expected {expected:?}")]
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    /// A stream the decision read has moved on: decide again on its new state.
    #[error("the decision read stream {stream} at version {read}; it is now at {actual}")]
    DecidedOnStaleState {
        stream: StreamId,
        read: u64,
        actual: u64,
    },
    #[error("event {event_id} was already appended with a different body")]
    IdempotencyConflict { event_id: Uuid },
    #[error("{} {:?} is already taken", key.kind, key.value)]
    ClaimTaken { key: ClaimKey },
    /// The stream's data subject was erased: nothing more is recorded about them.
    #[error("the subject of stream {stream} was erased")]
    SubjectErased { stream: StreamId },
    #[error(transparent)]
    Store(#[from] StoreError),
}
