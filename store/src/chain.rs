//! The hash chain that makes the log tamper-evident.
//!
//! Every event's hash is `SHA-256(prev_hash || canonical_bytes(event))`, where `prev_hash` is
//! the previous event's hash (all zeroes before the first event). Changing, deleting,
//! inserting or reordering any stored event breaks the chain at that event. The chain alone
//! cannot reveal a truncated tail or a complete rewrite by someone who holds the write path;
//! that needs checkpoints published outside the database (see `docs/log-format.md`).
//!
//! The byte layout is a contract with auditors' tools: changing it means a new layout
//! version byte, never an edit of version 1.

use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::log::EventLog;
use crate::model::{ChainHead, RecordedEvent};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The first byte of the canonical bytes, so a future layout can be told apart.
const LAYOUT_VERSION: u8 = 0x01;

/// How many events `verify_chain` reads per query: large enough that the round trips do not
/// dominate, small enough that a page of large payloads stays a few megabytes.
const VERIFY_PAGE: u32 = 10_000;

/// The bytes of an event that its hash covers, in layout version 1:
///
/// | field | encoding |
/// |---|---|
/// | layout version | 1 byte, `0x01` |
/// | position | u64 big-endian |
/// | event_id | 16 bytes (RFC 4122 byte order) |
/// | tenant_id | 16 bytes |
/// | stream kind | string |
/// | stream id | string |
/// | stream_version | u64 big-endian |
/// | event_type | string |
/// | schema_version | u32 big-endian |
/// | recorded_at | i64 big-endian, microseconds since the Unix epoch |
/// | payload | string (the stored JSON text) |
/// | metadata | string (the stored JSON text) |
///
/// A string is its UTF-8 length as u64 big-endian followed by its bytes; the length prefix
/// keeps `("ab", "c")` and `("a", "bc")` apart. `recorded_at` is truncated to microseconds,
/// the precision the log stores, so an event read back hashes exactly as it was written.
pub fn canonical_bytes(event: &RecordedEvent) -> Vec<u8> {
    let strings_len = event.stream.kind.len()
        + event.stream.id.len()
        + event.event_type.len()
        + event.payload.len()
        + event.metadata.len();
    let mut out = Vec::with_capacity(1 + 8 + 16 + 16 + 8 + 4 + 8 + 5 * 8 + strings_len);
    out.push(LAYOUT_VERSION);
    out.extend_from_slice(&event.position.to_be_bytes());
    out.extend_from_slice(event.event_id.as_bytes());
    out.extend_from_slice(event.tenant_id.as_bytes());
    push_str(&mut out, &event.stream.kind);
    push_str(&mut out, &event.stream.id);
    out.extend_from_slice(&event.stream_version.to_be_bytes());
    push_str(&mut out, &event.event_type);
    out.extend_from_slice(&event.schema_version.to_be_bytes());
    out.extend_from_slice(&event.recorded_at.timestamp_micros().to_be_bytes());
    push_str(&mut out, &event.payload);
    push_str(&mut out, &event.metadata);
    out
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // usize is at most 64 bits on every target Rust supports, so the length never truncates.
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `SHA-256(prev || canonical_bytes(event))`. The event's own `prev_hash` and `hash` fields
/// are not read: the caller says which predecessor it chains from.
pub fn event_hash(prev: &[u8; 32], event: &RecordedEvent) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(canonical_bytes(event));
    hasher.finalize().into()
}

/// Where and how the chain first breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainBreak {
    /// The stored position of the first event that does not verify.
    pub position: u64,
    pub kind: BreakKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// The stored hash is not the hash of the stored event: the event was modified.
    HashMismatch,
    /// The event does not chain from the event before it: an event was deleted, inserted or
    /// moved.
    PrevHashMismatch,
    /// Positions are not contiguous: the event at `expected` is missing.
    PositionGap { expected: u64 },
}

/// The outcome of verifying a whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerification {
    /// Events that verified.
    pub checked: u64,
    /// The last event that verified.
    pub head: Option<ChainHead>,
    pub first_break: Option<ChainBreak>,
}

/// Checks events one at a time, in position order from position 1, so the same fold serves the
/// database, an export file or a stream.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_position: u64,
    prev_hash: [u8; 32],
    checked: u64,
    head: Option<ChainHead>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self {
            next_position: 1,
            prev_hash: GENESIS_HASH,
            checked: 0,
            head: None,
        }
    }

    /// Checks the next event. After a break the verifier's state is unchanged, so the caller
    /// should stop: everything after the break is unverifiable.
    pub fn check(&mut self, event: &RecordedEvent) -> Result<(), ChainBreak> {
        let broken = |kind| ChainBreak {
            position: event.position,
            kind,
        };
        if event.position != self.next_position {
            return Err(broken(BreakKind::PositionGap {
                expected: self.next_position,
            }));
        }
        if event.prev_hash != self.prev_hash {
            return Err(broken(BreakKind::PrevHashMismatch));
        }
        if event_hash(&self.prev_hash, event) != event.hash {
            return Err(broken(BreakKind::HashMismatch));
        }
        self.prev_hash = event.hash;
        self.next_position += 1;
        self.checked += 1;
        self.head = Some(ChainHead {
            position: event.position,
            hash: event.hash,
        });
        Ok(())
    }

    /// A verifier that trusts `hash` at `position` (a signed checkpoint, or the first event of
    /// an exported range) and checks the events after it.
    pub fn after(position: u64, hash: [u8; 32]) -> Self {
        Self {
            next_position: position + 1,
            prev_hash: hash,
            checked: 0,
            head: (position > 0).then_some(ChainHead { position, hash }),
        }
    }

    /// The hash the next event must link to.
    pub fn prev_hash(&self) -> [u8; 32] {
        self.prev_hash
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    pub fn head(&self) -> Option<ChainHead> {
        self.head
    }

    fn finish(self, first_break: Option<ChainBreak>) -> ChainVerification {
        ChainVerification {
            checked: self.checked,
            head: self.head,
            first_break,
        }
    }
}

/// Verifies the whole log from position 1, calling `progress` with the number of events
/// checked after each page. Stops at the first break. A row that cannot even be decoded (a
/// hash that is not 32 bytes, an id that is not a uuid) is reported as
/// [`StoreError::Corrupt`] rather than as a break.
pub async fn verify_chain(
    log: &EventLog,
    mut progress: impl FnMut(u64),
) -> Result<ChainVerification, StoreError> {
    let mut verifier = ChainVerifier::new();
    let mut after = 0;
    loop {
        let page = log.read_all(after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(verifier.finish(None));
        };
        after = last.position;
        for event in &page {
            if let Err(first_break) = verifier.check(event) {
                tracing::error!(
                    position = first_break.position,
                    kind = ?first_break.kind,
                    checked = verifier.checked(),
                    "the event log's hash chain is broken"
                );
                return Ok(verifier.finish(Some(first_break)));
            }
        }
        progress(verifier.checked());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StreamId;
    use chrono::DateTime;
    use uuid::Uuid;

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            position,
            event_id: Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            tenant_id: Uuid::from_u128(0x1112_1314_1516_1718_191a_1b1c_1d1e_1f20),
            stream: StreamId::new("user", "u1"),
            stream_version: 3,
            event_type: "user.created".into(),
            schema_version: 2,
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default(),
            payload: r#"{"a":1}"#.into(),
            metadata: "{}".into(),
            prev_hash: GENESIS_HASH,
            hash: GENESIS_HASH,
        }
    }

    fn chain(n: u64) -> Vec<RecordedEvent> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|p| {
                let mut e = event(p);
                e.prev_hash = prev;
                e.hash = event_hash(&prev, &e);
                prev = e.hash;
                e
            })
            .collect()
    }

    #[test]
    fn canonical_bytes_follow_the_documented_layout() {
        let mut expected = vec![0x01];
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        expected.extend_from_slice(&[
            17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
        ]);
        expected.extend_from_slice(&4u64.to_be_bytes());
        expected.extend_from_slice(b"user");
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(b"u1");
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&12u64.to_be_bytes());
        expected.extend_from_slice(b"user.created");
        expected.extend_from_slice(&2u32.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_123_456i64.to_be_bytes());
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.extend_from_slice(br#"{"a":1}"#);
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(b"{}");
        assert_eq!(canonical_bytes(&event(7)), expected);
    }

    /// The known-answer vector of `docs/log-format.md`, computed there with Python.
    #[test]
    fn the_documented_test_vector_hashes_as_documented() {
        let mut e = event(1);
        e.stream_version = 1;
        assert_eq!(
            hex::encode(canonical_bytes(&e)),
            "0100000000000000010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
             2000000000000000047573657200000000000000027531000000000000000100000000000000\
             0c757365722e637265617465640000000200060a241820224000000000000000077b2261223a\
             317d00000000000000027b7d"
        );
        assert_eq!(
            hex::encode(event_hash(&GENESIS_HASH, &e)),
            "b0e768d035626ab5e995979cead3f51c97f12fc7c918de9f44b7e0721f867dee"
        );
    }

    #[test]
    fn the_hash_is_sha256_of_prev_and_canonical_bytes() {
        let e = event(1);
        let prev = [9u8; 32];
        let mut input = prev.to_vec();
        input.extend_from_slice(&canonical_bytes(&e));
        let expected: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(event_hash(&prev, &e), expected);
        assert_ne!(event_hash(&GENESIS_HASH, &e), expected);
    }

    #[test]
    fn length_prefixes_keep_adjacent_strings_apart() {
        let mut a = event(1);
        a.stream = StreamId::new("ab", "c");
        let mut b = event(1);
        b.stream = StreamId::new("a", "bc");
        assert_ne!(event_hash(&GENESIS_HASH, &a), event_hash(&GENESIS_HASH, &b));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let events = chain(5);
        let mut verifier = ChainVerifier::new();
        for e in &events {
            assert_eq!(verifier.check(e), Ok(()));
        }
        assert_eq!(verifier.checked(), 5);
        assert_eq!(
            verifier.head(),
            Some(ChainHead {
                position: 5,
                hash: events[4].hash
            })
        );
    }

    fn first_break(events: &[RecordedEvent]) -> Option<ChainBreak> {
        let mut verifier = ChainVerifier::new();
        events.iter().find_map(|e| verifier.check(e).err())
    }

    #[test]
    fn a_modified_event_breaks_with_a_hash_mismatch_at_its_position() {
        let mut events = chain(5);
        events[2].payload = r#"{"a":2}"#.into();
        assert_eq!(
            first_break(&events),
            Some(ChainBreak {
                position: 3,
                kind: BreakKind::HashMismatch
            })
        );
    }

    #[test]
    fn a_deleted_event_breaks_with_a_gap() {
        let mut events = chain(5);
        events.remove(2);
        assert_eq!(
            first_break(&events),
            Some(ChainBreak {
                position: 4,
                kind: BreakKind::PositionGap { expected: 3 }
            })
        );
    }

    #[test]
    fn swapped_events_break_at_the_first_of_them() {
        let mut events = chain(5);
        events.swap(1, 2);
        events[1].position = 2;
        events[2].position = 3;
        assert_eq!(
            first_break(&events),
            Some(ChainBreak {
                position: 2,
                kind: BreakKind::PrevHashMismatch
            })
        );
    }

    #[test]
    fn a_chain_must_start_at_genesis() {
        let mut events = chain(2);
        events[0].prev_hash = [1; 32];
        assert_eq!(
            first_break(&events),
            Some(ChainBreak {
                position: 1,
                kind: BreakKind::PrevHashMismatch
            })
        );
    }
}
