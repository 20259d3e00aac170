//! The body a receiver gets: the event's envelope (id, type, time, tenant, position, stream,
//! chain hashes) and its data. Events never carry secrets, so the data goes out as the log
//! reveals it: personal fields opened, or blanked once their user is erased.

use keyledger_store::RecordedEvent;
use serde::Serialize;
use serde_json::value::RawValue;

/// Version of this envelope; the `data` inside is versioned by `schema_version`.
pub const PAYLOAD_VERSION: u32 = 1;

#[derive(Serialize)]
struct Payload<'a> {
    payload_version: u32,
    id: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u32,
    time: String,
    tenant_id: String,
    position: u64,
    stream: Stream<'a>,
    /// This event's chain hash and the one before it: a receiver that keeps the last hash it
    /// saw detects a gap or a reordering without asking us.
    hash: String,
    prev_hash: String,
    metadata: &'a RawValue,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct Stream<'a> {
    kind: &'a str,
    id: &'a str,
    version: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("event {position} is not valid JSON: {reason}")]
pub struct PayloadError {
    pub position: u64,
    pub reason: String,
}

/// The exact bytes sent (and signed) for `event`.
pub fn body(event: &RecordedEvent) -> Result<Vec<u8>, PayloadError> {
    let invalid = |e: serde_json::Error| PayloadError {
        position: event.position,
        reason: e.to_string(),
    };
    let data: &RawValue = serde_json::from_str(&event.payload).map_err(invalid)?;
    let metadata: &RawValue = serde_json::from_str(&event.metadata).map_err(invalid)?;
    let payload = Payload {
        payload_version: PAYLOAD_VERSION,
        id: event.event_id.to_string(),
        event_type: &event.event_type,
        schema_version: event.schema_version,
        time: event
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        tenant_id: event.tenant_id.to_string(),
        position: event.position,
        stream: Stream {
            kind: &event.stream.kind,
            id: &event.stream.id,
            version: event.stream_version,
        },
        hash: hex::encode(event.hash),
        prev_hash: hex::encode(event.prev_hash),
        metadata,
        data,
    };
    serde_json::to_vec(&payload).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use keyledger_store::StreamId;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn the_body_carries_the_envelope_and_the_data_as_stored() {
        let event = RecordedEvent {
            position: 42,
            event_id: Uuid::from_u128(7),
            tenant_id: Uuid::from_u128(1),
            stream: StreamId::new("user", "u1"),
            stream_version: 3,
            event_type: "user.login.failed".into(),
            schema_version: 1,
            recorded_at: Utc.timestamp_opt(1_760_000_000, 0).unwrap(),
            payload: r#"{"reason":"wrong_password","identifier":"alice"}"#.into(),
            metadata: r#"{"actor":{"kind":"system","id":null}}"#.into(),
            prev_hash: [1; 32],
            hash: [2; 32],
        };
        let body: serde_json::Value = serde_json::from_slice(&body(&event).unwrap()).unwrap();
        assert_eq!(body["id"], "00000000-0000-0000-0000-000000000007");
        assert_eq!(body["type"], "user.login.failed");
        assert_eq!(body["time"], "2025-10-09T08:53:20.000000Z");
        assert_eq!(body["position"], 42);
        assert_eq!(body["stream"]["version"], 3);
        assert_eq!(body["hash"], "02".repeat(32));
        assert_eq!(body["prev_hash"], "01".repeat(32));
        assert_eq!(body["data"]["reason"], "wrong_password");
        assert_eq!(body["metadata"]["actor"]["kind"], "system");
    }
}
