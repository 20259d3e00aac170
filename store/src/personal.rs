//! Personal data in the log, sealed per subject so that it can be erased (crypto-shredding).
//!
//! A user's personal fields are stored in their events only as ciphertext under a data key
//! kept beside the log (in `secrets`, kind [`DATA_KEY_SECRET`]). The chain hashes the
//! ciphertext; erasing the user replaces the key with a tombstone, after which no copy of the
//! log, export or rebuilt view can reveal those fields again, and the chain still verifies.
//! `docs/log-format.md` describes the format for auditors.
//!
//! Which fields are personal is part of the log format, so it is fixed here: the log's shape
//! is this crate's to define, and the domain's field names never change once shipped.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroize;

use crate::error::StoreError;
use crate::model::{EventMetadata, NewEvent, RecordedEvent, StreamId};

/// Streams of this kind belong to one data subject, the user whose id is the stream id.
pub const SUBJECT_STREAM_KIND: &str = "user";

/// Top-level payload fields that hold personal data, in any event of a subject's stream.
pub const PAYLOAD_FIELDS: &[&str] = &["username", "email", "display_name", "identifier"];

/// Metadata fields that hold personal data.
pub const METADATA_FIELDS: &[&str] = &["request_ip", "user_agent"];

/// The secret kind under which a subject's data key is kept.
pub const DATA_KEY_SECRET: &str = "data_key";

/// What replaces the data key when the subject is erased, so that "erased" and "created before
/// sealing existed" (no key at all) stay apart.
pub const ERASED_TOMBSTONE: &str = "erased";

/// What a required text field reads as once its subject is erased; optional fields read as
/// `null`.
pub const ERASED_TEXT: &str = "erased";

/// Fields that an erased subject's events still need as text (they are required in the
/// events' schemas).
const REQUIRED_TEXT_FIELDS: &[&str] = &["username", "identifier"];

const PREFIX: &str = "kl1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A subject's 256-bit data key. Never logged, never serialised except into `secrets`.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// The text kept in `secrets`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    fn decode(text: &str) -> Result<Self, StoreError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| StoreError::Corrupt("a data key is not 32 bytes of base64url".into()))?;
        Ok(Self(bytes))
    }

    /// A nonce that depends only on the key, the event and the field, so that appending the
    /// same event twice seals it to the same text (appends are idempotent by comparing it).
    /// It never repeats across (event, field), which is all XChaCha20-Poly1305 needs.
    fn nonce(&self, event_id: Uuid, field: &str) -> XNonce {
        // A keyed hash: without the key, nonces reveal nothing, not even equal plaintexts.
        let digest = Sha256::new()
            .chain_update(b"keyledger kl1 nonce\0")
            .chain_update(self.0)
            .chain_update(event_id.as_bytes())
            .chain_update(field.as_bytes())
            .finalize();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&digest[..NONCE_LEN]);
        XNonce::from(nonce)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    fn seal(&self, at: &FieldAt<'_>, plaintext: &str) -> Result<String, StoreError> {
        let nonce = self.nonce(at.event_id, at.field);
        let aad = at.associated_data();
        let sealed = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Corrupt("sealing a personal field failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    fn open(&self, at: &FieldAt<'_>, text: &str) -> Result<String, StoreError> {
        let corrupt = || {
            StoreError::Corrupt(format!(
                "event {}: sealed field {} does not open with its subject's key",
                at.event_id, at.field
            ))
        };
        let bytes = text
            .strip_prefix(PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .filter(|b| b.len() >= NONCE_LEN + TAG_LEN)
            .ok_or_else(corrupt)?;
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| corrupt())?;
        let aad = at.associated_data();
        let plain = self
            .cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }
}

/// Where a sealed value lives; bound into the ciphertext so that it cannot be moved to another
/// subject, event or field.
struct FieldAt<'a> {
    stream: &'a StreamId,
    event_id: Uuid,
    /// `payload.username`, `metadata.request_ip`, ...
    field: &'a str,
}

impl FieldAt<'_> {
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(
            self.stream.kind.len() + self.stream.id.len() + 36 + self.field.len() + 3,
        );
        aad.extend_from_slice(self.stream.kind.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.stream.id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.event_id.hyphenated().to_string().as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.field.as_bytes());
        aad
    }
}

/// The state of a subject's data key.
#[derive(Debug, Clone)]
pub enum KeyState {
    Live(DataKey),
    Erased,
}

impl KeyState {
    /// Reads the text kept in `secrets`.
    pub fn decode(text: &str) -> Result<Self, StoreError> {
        if text == ERASED_TOMBSTONE {
            Ok(Self::Erased)
        } else {
            DataKey::decode(text).map(Self::Live)
        }
    }
}

/// Whether a stream's events are sealed per subject.
pub fn is_subject_stream(stream: &StreamId) -> bool {
    stream.kind == SUBJECT_STREAM_KIND
}

/// Seals the personal fields of an event about to be appended to `stream`.
pub fn seal_event(
    key: &DataKey,
    stream: &StreamId,
    event: &mut NewEvent,
) -> Result<(), StoreError> {
    if let Value::Object(payload) = &mut event.payload {
        for name in PAYLOAD_FIELDS {
            if let Some(Value::String(text)) = payload.get_mut(*name) {
                let field = format!("payload.{name}");
                let at = FieldAt {
                    stream,
                    event_id: event.event_id,
                    field: &field,
                };
                *text = key.seal(&at, text)?;
            }
        }
    }
    let EventMetadata {
        request_ip,
        user_agent,
        ..
    } = &mut event.metadata;
    for (name, value) in [("request_ip", request_ip), ("user_agent", user_agent)] {
        if let Some(text) = value {
            let field = format!("metadata.{name}");
            let at = FieldAt {
                stream,
                event_id: event.event_id,
                field: &field,
            };
            *text = key.seal(&at, text)?;
        }
    }
    Ok(())
}

/// Whether a stored event may hold sealed fields (a cheap test before parsing).
pub fn may_be_sealed(event: &RecordedEvent) -> bool {
    is_subject_stream(&event.stream)
        && (event.payload.contains(PREFIX) || event.metadata.contains(PREFIX))
}

/// Replaces the sealed fields of a stored event with their plain text, or, for an erased
/// subject, with [`ERASED_TEXT`] (required fields) or `null`. The event's `payload` and
/// `metadata` are then no longer the text its hash covers. `key` is `None` for a subject that
/// never had a key (events written before sealing existed): nothing of theirs is sealed.
pub fn reveal_event(key: Option<&KeyState>, event: &mut RecordedEvent) -> Result<(), StoreError> {
    let Some(key) = key else { return Ok(()) };
    if !may_be_sealed(event) {
        return Ok(());
    }
    let malformed = |e: serde_json::Error| {
        StoreError::Corrupt(format!("event at position {}: {e}", event.position))
    };
    let stream = event.stream.clone();
    let event_id = event.event_id;
    let reveal_fields = |text: &str, prefix: &str, names: &[&str]| -> Result<String, StoreError> {
        // Borrowed keys and raw values: only the sealed fields are parsed and written anew,
        // every other value's text is copied as it is (a rebuild reveals every event).
        let object: BTreeMap<Cow<'_, str>, &RawValue> =
            serde_json::from_str(text).map_err(malformed)?;
        let mut revealed = Vec::with_capacity(text.len());
        revealed.push(b'{');
        for (n, (name, raw)) in object.iter().enumerate() {
            if n > 0 {
                revealed.push(b',');
            }
            serde_json::to_writer(&mut revealed, name).map_err(malformed)?;
            revealed.push(b':');
            let sealed = match names.iter().find(|field| **field == name.as_ref()) {
                Some(field) if raw.get().starts_with('"') => {
                    let value: Cow<'_, str> = serde_json::from_str(raw.get()).map_err(malformed)?;
                    value.starts_with(PREFIX).then_some((*field, value))
                }
                _ => None,
            };
            let Some((field_name, sealed)) = sealed else {
                revealed.extend_from_slice(raw.get().as_bytes());
                continue;
            };
            let field = format!("{prefix}.{field_name}");
            let at = FieldAt {
                stream: &stream,
                event_id,
                field: &field,
            };
            let value = match key {
                KeyState::Live(key) => Value::String(key.open(&at, &sealed)?),
                KeyState::Erased if REQUIRED_TEXT_FIELDS.contains(&field_name) => {
                    Value::String(ERASED_TEXT.into())
                }
                KeyState::Erased => Value::Null,
            };
            serde_json::to_writer(&mut revealed, &value).map_err(malformed)?;
        }
        revealed.push(b'}');
        String::from_utf8(revealed)
            .map_err(|e| StoreError::Corrupt(format!("event at position {}: {e}", event.position)))
    };
    if event.payload.contains(PREFIX) {
        event.payload = reveal_fields(&event.payload, "payload", PAYLOAD_FIELDS)?;
    }
    if event.metadata.contains(PREFIX) {
        event.metadata = reveal_fields(&event.metadata, "metadata", METADATA_FIELDS)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::model::{Actor, ActorKind};

    fn stream() -> StreamId {
        StreamId::new("user", "0190a0b4-0000-7000-8000-000000000001")
    }

    fn new_event() -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::nil(),
            event_type: "user.created".into(),
            schema_version: 1,
            recorded_at: Utc::now(),
            payload: json!({
                "user_id": "0190a0b4-0000-7000-8000-000000000001",
                "username": "ada",
                "email": "ada@example.com",
                "display_name": null,
                "at": "2026-11-22T00:00:00Z",
            }),
            metadata: EventMetadata {
                actor: Actor {
                    kind: ActorKind::Admin,
                    id: Some("root".into()),
                },
                request_ip: Some("192.0.2.7".into()),
                user_agent: Some("curl/8".into()),
                correlation_id: Some("c1".into()),
            },
        }
    }

    fn stored(event: &NewEvent, stream: StreamId) -> RecordedEvent {
        RecordedEvent {
            position: 1,
            event_id: event.event_id,
            tenant_id: event.tenant_id,
            stream,
            stream_version: 1,
            event_type: event.event_type.clone(),
            schema_version: 1,
            recorded_at: event.recorded_at,
            payload: serde_json::to_string(&event.payload).unwrap(),
            metadata: serde_json::to_string(&event.metadata).unwrap(),
            prev_hash: [0; 32],
            hash: [0; 32],
        }
    }

    #[test]
    fn sealed_fields_carry_no_plain_text_and_reveal_to_the_original() {
        let key = DataKey::generate();
        let plain = new_event();
        let mut event = plain.clone();
        seal_event(&key, &stream(), &mut event).unwrap();
        let mut recorded = stored(&event, stream());
        for secret in ["ada", "example.com", "192.0.2.7", "curl/8"] {
            assert!(!recorded.payload.contains(secret) && !recorded.metadata.contains(secret));
        }
        // What is not personal stays readable.
        assert!(
            recorded
                .payload
                .contains("0190a0b4-0000-7000-8000-000000000001")
        );
        assert!(recorded.metadata.contains("root"));
        assert!(recorded.payload.contains("\"display_name\":null"));

        reveal_event(Some(&KeyState::Live(key)), &mut recorded).unwrap();
        assert_eq!(recorded.payload_json().unwrap(), plain.payload);
        assert_eq!(recorded.metadata().unwrap(), plain.metadata);
    }

    /// Revealing copies every value that is not sealed as it was stored: numbers, nested
    /// values, escapes, and a personal field that is not sealed text.
    #[test]
    fn revealing_keeps_every_other_value_as_stored() {
        let key = DataKey::generate();
        let mut plain = new_event();
        plain.payload = json!({
            "username": "ada \"the first\" \u{e9}",
            "identifier": 42,
            "count": 1.5e3,
            "nested": { "a": [1, "x\"y", null], "b": { "c": true } },
            "note": "line\nbreak \u{1F600}",
        });
        let mut event = plain.clone();
        seal_event(&key, &stream(), &mut event).unwrap();
        let mut recorded = stored(&event, stream());
        assert!(!recorded.payload.contains("the first"));
        reveal_event(Some(&KeyState::Live(key)), &mut recorded).unwrap();
        assert_eq!(recorded.payload_json().unwrap(), plain.payload);
    }

    #[test]
    fn sealing_is_deterministic_per_event_so_appends_stay_idempotent() {
        let key = DataKey::generate();
        let plain = new_event();
        let (mut a, mut b) = (plain.clone(), plain.clone());
        seal_event(&key, &stream(), &mut a).unwrap();
        seal_event(&key, &stream(), &mut b).unwrap();
        assert_eq!(a, b);
        // Another event with the same values seals to different text: no linkability.
        let mut other = plain;
        other.event_id = Uuid::now_v7();
        seal_event(&key, &stream(), &mut other).unwrap();
        assert_ne!(a.payload["username"], other.payload["username"]);
    }

    #[test]
    fn an_erased_subject_reveals_placeholders_and_nulls() {
        let key = DataKey::generate();
        let mut event = new_event();
        seal_event(&key, &stream(), &mut event).unwrap();
        let mut recorded = stored(&event, stream());
        reveal_event(Some(&KeyState::Erased), &mut recorded).unwrap();
        let payload = recorded.payload_json().unwrap();
        assert_eq!(payload["username"], "erased");
        assert_eq!(payload["email"], Value::Null);
        let metadata = recorded.metadata().unwrap();
        assert_eq!(metadata.request_ip, None);
        assert_eq!(metadata.user_agent, None);
        assert_eq!(metadata.actor.id.as_deref(), Some("root"));
    }

    #[test]
    fn a_sealed_value_moved_to_another_subject_or_field_does_not_open() {
        let key = DataKey::generate();
        let mut event = new_event();
        seal_event(&key, &stream(), &mut event).unwrap();
        let sealed_username = event.payload["username"].clone();

        // Another subject with the same key material (as if keys were mixed up).
        let other = StreamId::new("user", "0190a0b4-0000-7000-8000-000000000002");
        let mut moved = stored(&event, other);
        assert!(reveal_event(Some(&KeyState::Live(key.clone())), &mut moved).is_err());

        // The username's ciphertext put in the email field.
        let mut swapped = event.clone();
        swapped.payload["email"] = sealed_username;
        let mut swapped = stored(&swapped, stream());
        assert!(reveal_event(Some(&KeyState::Live(key)), &mut swapped).is_err());
    }

    #[test]
    fn a_subject_without_a_key_is_read_as_stored() {
        let event = new_event();
        let mut recorded = stored(&event, stream());
        let before = recorded.clone();
        reveal_event(None, &mut recorded).unwrap();
        assert_eq!(recorded, before);
    }

    #[test]
    fn key_state_reads_the_tombstone_and_refuses_garbage() {
        assert!(matches!(
            KeyState::decode(ERASED_TOMBSTONE),
            Ok(KeyState::Erased)
        ));
        let key = DataKey::generate();
        assert!(matches!(
            KeyState::decode(&key.encode()),
            Ok(KeyState::Live(_))
        ));
        assert!(KeyState::decode("short").is_err());
    }
}
