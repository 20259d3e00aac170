//! The shape of an event as it leaves keyledger for auditors and pull consumers: a line of a
//! JSONL export and an item of `/api/v1/events`. It carries every field the hash covers, byte
//! for byte (payload and metadata as the stored, sealed JSON text; the time as integer
//! microseconds), so a saved range verifies offline against a signed checkpoint.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{RecordedEvent, StreamId};

/// One event as stored, with what its hash covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportedEvent {
    pub position: u64,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub stream_kind: String,
    pub stream_id: String,
    pub stream_version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// For people; `recorded_at_us` is what the hash covers.
    pub recorded_at: DateTime<Utc>,
    pub recorded_at_us: i64,
    /// The stored JSON text, exactly as hashed.
    pub payload: String,
    /// The stored JSON text, exactly as hashed.
    pub metadata: String,
    /// Hex.
    pub prev_hash: String,
    /// Hex.
    pub hash: String,
}

impl From<&RecordedEvent> for ExportedEvent {
    fn from(e: &RecordedEvent) -> Self {
        Self {
            position: e.position,
            event_id: e.event_id,
            tenant_id: e.tenant_id,
            stream_kind: e.stream.kind.clone(),
            stream_id: e.stream.id.clone(),
            stream_version: e.stream_version,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            recorded_at: e.recorded_at,
            recorded_at_us: e.recorded_at.timestamp_micros(),
            payload: e.payload.clone(),
            metadata: e.metadata.clone(),
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        }
    }
}

impl ExportedEvent {
    /// The event back, for verifying a saved range.
    pub fn into_recorded(self) -> Result<RecordedEvent, String> {
        let hash = |text: &str, what: &str| -> Result<[u8; 32], String> {
            hex::decode(text)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| format!("{what} is not 32 bytes of hex"))
        };
        Ok(RecordedEvent {
            position: self.position,
            event_id: self.event_id,
            tenant_id: self.tenant_id,
            stream: StreamId::new(self.stream_kind, self.stream_id),
            stream_version: self.stream_version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            recorded_at: DateTime::from_timestamp_micros(self.recorded_at_us)
                .ok_or("recorded_at_us is out of range")?,
            payload: self.payload,
            metadata: self.metadata,
            prev_hash: hash(&self.prev_hash, "prev_hash")?,
            hash: hash(&self.hash, "hash")?,
        })
    }
}
