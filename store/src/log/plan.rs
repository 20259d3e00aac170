//! Decides a batch of appends in memory, from what the database held when the batch took the
//! append lock. No I/O: the writer reads a [`Snapshot`], calls [`plan`], and writes the
//! [`Plan`].
//!
//! Requests are decided in arrival order, and each sees the effects of the requests accepted
//! before it in the same batch (stream versions, event ids, claims). A refused request changes
//! nothing, so one request's refusal never fails another.
//!
//! Idempotency (same event id again):
//! - every event id of the request is already in the log (or earlier in the batch), each with
//!   the same stream, event type and payload (compared as JSON values): nothing is written,
//!   claims and secrets are not applied again, and the original positions are returned, with
//!   `stream_version` being the stream's version right after the original events. The expected
//!   version is not checked: the stream has moved on since the original append;
//! - any of those ids stored with a different stream, type or payload:
//!   [`AppendError::IdempotencyConflict`];
//! - only some of the ids stored (partial overlap): [`AppendError::IdempotencyConflict`] naming
//!   the first stored id. An append is all or nothing, so a retry finds all of its ids or none;
//!   a partial overlap means the ids were reused for a different request;
//! - the same id twice within one request: [`AppendError::IdempotencyConflict`].
//!
//! Decided on: each stream the request names in `decided_on` must still be at the version
//! the decision read (counting requests accepted earlier in the batch), or the request is
//! refused with [`AppendError::DecidedOnStaleState`]. An idempotent retry is not checked:
//! its original append was.
//!
//! Claims: `Reserve` of a key held by another stream refuses the request with
//! [`AppendError::ClaimTaken`]; `Reserve` by the holder is a no-op; `Release` frees the key
//! only when the request's stream holds it, and is otherwise ignored (it can never free
//! another stream's key).
//!
//! A request without events is allowed: it writes its claims and secrets after the same
//! checks, and reports the head position at which it was decided as both `first_position`
//! and `last_position`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::chain::{GENESIS_HASH, event_hash};
use crate::codec::truncate_to_micros;
use crate::error::{AppendError, StoreError};
use crate::model::{
    AppendRequest, Appended, ChainHead, ClaimChange, ClaimKey, DecidedOn, ExpectedVersion,
    NewEvent, RecordedEvent, SecretWrite, SessionChange, StreamId,
};

/// An event with its JSON already turned into the exact text that is stored and hashed.
#[derive(Debug, Clone)]
pub(crate) struct PreparedEvent {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// Truncated to microseconds, the precision stored, so the hash written is the hash of
    /// what is read back.
    pub recorded_at: DateTime<Utc>,
    pub payload: String,
    /// For comparing with a stored payload on an idempotent retry.
    pub payload_value: serde_json::Value,
    pub metadata: String,
}

impl PreparedEvent {
    fn prepare(event: NewEvent) -> Result<Self, StoreError> {
        let not_json = |e: serde_json::Error| {
            StoreError::Corrupt(format!(
                "event {} cannot be serialised: {e}",
                event.event_id
            ))
        };
        Ok(Self {
            event_id: event.event_id,
            tenant_id: event.tenant_id,
            payload: serde_json::to_string(&event.payload).map_err(not_json)?,
            metadata: serde_json::to_string(&event.metadata).map_err(not_json)?,
            recorded_at: truncate_to_micros(event.recorded_at)?,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload_value: event.payload,
        })
    }
}

/// An [`AppendRequest`] ready for the writer.
#[derive(Debug, Clone)]
pub(crate) struct PreparedRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<PreparedEvent>,
    pub claims: Vec<ClaimChange>,
    pub secrets: Vec<SecretWrite>,
    pub sessions: Vec<SessionChange>,
    pub decided_on: Vec<DecidedOn>,
}

impl PreparedRequest {
    /// Serialises on the caller's task, so the single writer spends its time on the database.
    pub(crate) fn prepare(request: AppendRequest) -> Result<Self, StoreError> {
        Ok(Self {
            stream: request.stream,
            expected: request.expected,
            events: request
                .events
                .into_iter()
                .map(PreparedEvent::prepare)
                .collect::<Result<_, _>>()?,
            claims: request.claims,
            secrets: request.secrets,
            sessions: request.sessions,
            decided_on: request.decided_on,
        })
    }
}

/// An event already in the log that carries one of the batch's event ids.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredEvent {
    pub stream: StreamId,
    pub event_type: String,
    pub payload: String,
    pub position: u64,
    pub stream_version: u64,
}

impl StoredEvent {
    fn same_as(&self, stream: &StreamId, event: &PreparedEvent) -> bool {
        self.stream == *stream
            && self.event_type == event.event_type
            && (self.payload == event.payload
                || serde_json::from_str::<serde_json::Value>(&self.payload)
                    .is_ok_and(|stored| stored == event.payload_value))
    }
}

/// The keys a batch must look up before it can be decided.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Lookups {
    pub streams: Vec<StreamId>,
    pub event_ids: Vec<Uuid>,
    pub claim_keys: Vec<ClaimKey>,
}

pub(crate) fn lookups(batch: &[PreparedRequest]) -> Lookups {
    let mut streams = BTreeSet::new();
    let mut event_ids = BTreeSet::new();
    let mut claim_keys = BTreeSet::new();
    for request in batch {
        streams.insert(&request.stream);
        streams.extend(request.decided_on.iter().map(|d| &d.stream));
        event_ids.extend(request.events.iter().map(|e| e.event_id));
        claim_keys.extend(request.claims.iter().map(|c| match c {
            ClaimChange::Reserve(key) | ClaimChange::Release(key) => key,
        }));
    }
    Lookups {
        streams: streams.into_iter().cloned().collect(),
        event_ids: event_ids.into_iter().collect(),
        claim_keys: claim_keys.into_iter().cloned().collect(),
    }
}

/// What the database held for the batch's [`Lookups`], read under the append lock.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub head: Option<ChainHead>,
    /// Streams with no events are absent (version 0).
    pub versions: HashMap<StreamId, u64>,
    pub stored: HashMap<Uuid, StoredEvent>,
    /// Held claims; free keys are absent.
    pub claims: HashMap<ClaimKey, StreamId>,
}

/// A secret's state after the batch: `None` deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretState {
    pub owner: StreamId,
    pub kind: String,
    pub value: Option<String>,
}

/// What to write, and what to answer each request.
#[derive(Debug)]
pub(crate) struct Plan {
    /// One per request, in request order.
    pub outcomes: Vec<Result<Appended, AppendError>>,
    /// New events in position order, hashes computed.
    pub events: Vec<RecordedEvent>,
    /// Claims whose holder changed: `None` frees the key.
    pub claims: Vec<(ClaimKey, Option<StreamId>)>,
    pub secrets: Vec<SecretState>,
    /// Session changes of the requests whose events are written (not of replayed ones), in
    /// request order.
    pub sessions: Vec<SessionChange>,
    /// The head after the batch.
    pub head: Option<ChainHead>,
    /// The version of every stream the batch looked up, after the batch; streams with no
    /// events are absent.
    pub versions: HashMap<StreamId, u64>,
}

impl Plan {
    pub(crate) fn writes_only_events(&self) -> bool {
        self.claims.is_empty() && self.secrets.is_empty() && self.sessions.is_empty()
    }

    pub(crate) fn writes_nothing(&self) -> bool {
        self.events.is_empty()
            && self.claims.is_empty()
            && self.secrets.is_empty()
            && self.sessions.is_empty()
    }
}

pub(crate) fn plan(batch: &[PreparedRequest], snapshot: Snapshot) -> Plan {
    let mut state = BatchState {
        head: snapshot.head,
        versions: snapshot.versions,
        known: snapshot.stored,
        claims_before: snapshot.claims,
        claims: BTreeMap::new(),
        secrets: BTreeMap::new(),
        sessions: Vec::new(),
        events: Vec::new(),
    };
    let outcomes = batch.iter().map(|r| state.decide(r)).collect();
    state.finish(outcomes)
}

struct BatchState {
    head: Option<ChainHead>,
    versions: HashMap<StreamId, u64>,
    /// Stored events and events accepted earlier in this batch, by id.
    known: HashMap<Uuid, StoredEvent>,
    claims_before: HashMap<ClaimKey, StreamId>,
    /// Claims touched by accepted requests, as they stand now.
    claims: BTreeMap<ClaimKey, Option<StreamId>>,
    secrets: BTreeMap<(StreamId, String), Option<String>>,
    sessions: Vec<SessionChange>,
    events: Vec<RecordedEvent>,
}

impl BatchState {
    fn decide(&mut self, request: &PreparedRequest) -> Result<Appended, AppendError> {
        if let Some(original) = self.replay(request)? {
            return Ok(original);
        }
        let actual = self.versions.get(&request.stream).copied().unwrap_or(0);
        let expected_holds = match request.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        };
        if !expected_holds {
            return Err(AppendError::WrongExpectedVersion {
                stream: request.stream.clone(),
                expected: request.expected,
                actual,
            });
        }
        for read in &request.decided_on {
            let now = self.versions.get(&read.stream).copied().unwrap_or(0);
            if now != read.version {
                return Err(AppendError::DecidedOnStaleState {
                    stream: read.stream.clone(),
                    read: read.version,
                    actual: now,
                });
            }
        }
        let claim_changes = self.claim_changes(request)?;
        self.claims.extend(claim_changes);
        for secret in &request.secrets {
            self.secrets.insert(
                (request.stream.clone(), secret.kind.clone()),
                secret.value.clone(),
            );
        }
        self.sessions.extend(request.sessions.iter().cloned());
        Ok(self.accept_events(request, actual))
    }

    /// `Some` when every event of the request is already known with the same body.
    fn replay(&self, request: &PreparedRequest) -> Result<Option<Appended>, AppendError> {
        let mut ids = HashSet::with_capacity(request.events.len());
        let mut originals = Vec::new();
        let mut first_known = None;
        for event in &request.events {
            let event_id = event.event_id;
            if !ids.insert(event_id) {
                return Err(AppendError::IdempotencyConflict { event_id });
            }
            if let Some(stored) = self.known.get(&event_id) {
                if !stored.same_as(&request.stream, event) {
                    return Err(AppendError::IdempotencyConflict { event_id });
                }
                first_known.get_or_insert(event_id);
                originals.push(stored);
            }
        }
        match first_known {
            None => Ok(None),
            Some(event_id) if originals.len() < request.events.len() => {
                Err(AppendError::IdempotencyConflict { event_id })
            }
            Some(_) => Ok(Some(Appended {
                first_position: originals.iter().map(|e| e.position).min().unwrap_or(0),
                last_position: originals.iter().map(|e| e.position).max().unwrap_or(0),
                stream_version: originals
                    .iter()
                    .map(|e| e.stream_version)
                    .max()
                    .unwrap_or(0),
            })),
        }
    }

    fn claim_holder(&self, key: &ClaimKey) -> Option<StreamId> {
        match self.claims.get(key) {
            Some(holder) => holder.clone(),
            None => self.claims_before.get(key).cloned(),
        }
    }

    /// The request's claim changes, applied in order on top of the batch's state.
    fn claim_changes(
        &self,
        request: &PreparedRequest,
    ) -> Result<BTreeMap<ClaimKey, Option<StreamId>>, AppendError> {
        let mut changes: BTreeMap<ClaimKey, Option<StreamId>> = BTreeMap::new();
        for change in &request.claims {
            let (key, reserve) = match change {
                ClaimChange::Reserve(key) => (key, true),
                ClaimChange::Release(key) => (key, false),
            };
            let holder = match changes.get(key) {
                Some(holder) => holder.clone(),
                None => self.claim_holder(key),
            };
            match (reserve, holder) {
                (true, None) => {
                    changes.insert(key.clone(), Some(request.stream.clone()));
                }
                (true, Some(holder)) if holder != request.stream => {
                    return Err(AppendError::ClaimTaken { key: key.clone() });
                }
                (false, Some(holder)) if holder == request.stream => {
                    changes.insert(key.clone(), None);
                }
                (false, Some(holder)) => {
                    // The value may be an email address: log the kind only.
                    tracing::warn!(
                        stream = %request.stream,
                        %holder,
                        kind = %key.kind,
                        "ignored the release of a claim held by another stream"
                    );
                }
                // Reserving a key already held, or releasing a free one: nothing to do.
                (true, Some(_)) | (false, None) => {}
            }
        }
        Ok(changes)
    }

    fn accept_events(&mut self, request: &PreparedRequest, version_before: u64) -> Appended {
        let head_position = self.head.map_or(0, |h| h.position);
        let mut prev_hash = self.head.map_or(GENESIS_HASH, |h| h.hash);
        let mut position = head_position;
        let mut version = version_before;
        for event in &request.events {
            position += 1;
            version += 1;
            let mut recorded = RecordedEvent {
                position,
                event_id: event.event_id,
                tenant_id: event.tenant_id,
                stream: request.stream.clone(),
                stream_version: version,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                recorded_at: event.recorded_at,
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
                prev_hash,
                hash: GENESIS_HASH,
            };
            recorded.hash = event_hash(&prev_hash, &recorded);
            prev_hash = recorded.hash;
            self.known.insert(
                event.event_id,
                StoredEvent {
                    stream: request.stream.clone(),
                    event_type: event.event_type.clone(),
                    payload: event.payload.clone(),
                    position,
                    stream_version: version,
                },
            );
            self.events.push(recorded);
        }
        if request.events.is_empty() {
            return Appended {
                first_position: head_position,
                last_position: head_position,
                stream_version: version_before,
            };
        }
        self.versions.insert(request.stream.clone(), version);
        self.head = Some(ChainHead {
            position,
            hash: prev_hash,
        });
        Appended {
            first_position: head_position + 1,
            last_position: position,
            stream_version: version,
        }
    }

    fn finish(self, outcomes: Vec<Result<Appended, AppendError>>) -> Plan {
        let claims_before = self.claims_before;
        let claims = self
            .claims
            .into_iter()
            .filter(|(key, holder)| holder.as_ref() != claims_before.get(key))
            .collect();
        let secrets = self
            .secrets
            .into_iter()
            .map(|((owner, kind), value)| SecretState { owner, kind, value })
            .collect();
        Plan {
            outcomes,
            events: self.events,
            claims,
            secrets,
            sessions: self.sessions,
            head: self.head,
            versions: self.versions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventMetadata;
    use serde_json::json;

    fn stream(id: &str) -> StreamId {
        StreamId::new("user", id)
    }

    fn new_event(id: u128, payload: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::from_u128(id),
            tenant_id: Uuid::from_u128(7),
            event_type: "user.thing".into(),
            schema_version: 1,
            recorded_at: DateTime::from_timestamp(1_700_000_000, 999_999_999).unwrap(),
            payload,
            metadata: EventMetadata::system(),
        }
    }

    fn request(
        s: &str,
        expected: ExpectedVersion,
        ids: &[u128],
        claims: Vec<ClaimChange>,
    ) -> PreparedRequest {
        PreparedRequest::prepare(AppendRequest {
            stream: stream(s),
            expected,
            events: ids
                .iter()
                .map(|&id| new_event(id, json!({"n": id})))
                .collect(),
            claims,
            secrets: vec![],
            sessions: Vec::new(),
            decided_on: Vec::new(),
        })
        .unwrap()
    }

    fn key(value: &str) -> ClaimKey {
        ClaimKey {
            scope: "t".into(),
            kind: "username".into(),
            value: value.into(),
        }
    }

    fn ok(outcome: &Result<Appended, AppendError>) -> Appended {
        match outcome {
            Ok(a) => *a,
            Err(e) => panic!("expected success, got {e:?}"),
        }
    }

    #[test]
    fn preparing_truncates_the_time_to_microseconds() {
        let r = request("a", ExpectedVersion::Any, &[1], vec![]);
        assert_eq!(
            r.events[0].recorded_at.timestamp_subsec_nanos(),
            999_999_000
        );
        assert_eq!(r.events[0].payload, r#"{"n":1}"#);
    }

    #[test]
    fn positions_continue_from_the_head_and_hashes_chain_from_it() {
        let head = ChainHead {
            position: 10,
            hash: [5; 32],
        };
        let batch = [
            request("a", ExpectedVersion::NoStream, &[1, 2], vec![]),
            request("b", ExpectedVersion::Any, &[3], vec![]),
        ];
        let plan = plan(
            &batch,
            Snapshot {
                head: Some(head),
                versions: HashMap::from([(stream("b"), 4)]),
                ..Snapshot::default()
            },
        );
        assert_eq!(
            ok(&plan.outcomes[0]),
            Appended {
                first_position: 11,
                last_position: 12,
                stream_version: 2
            }
        );
        assert_eq!(
            ok(&plan.outcomes[1]),
            Appended {
                first_position: 13,
                last_position: 13,
                stream_version: 5
            }
        );
        let positions: Vec<_> = plan.events.iter().map(|e| e.position).collect();
        assert_eq!(positions, [11, 12, 13]);
        assert_eq!(plan.events[0].prev_hash, [5; 32]);
        assert_eq!(plan.events[0].hash, event_hash(&[5; 32], &plan.events[0]));
        assert_eq!(plan.events[1].prev_hash, plan.events[0].hash);
        assert_eq!(plan.events[2].prev_hash, plan.events[1].hash);
        assert_eq!(plan.events[2].stream_version, 5);
        assert_eq!(
            plan.head,
            Some(ChainHead {
                position: 13,
                hash: plan.events[2].hash
            })
        );
    }

    #[test]
    fn the_first_event_chains_from_genesis() {
        let plan = plan(
            &[request("a", ExpectedVersion::Any, &[1], vec![])],
            Snapshot::default(),
        );
        assert_eq!(plan.events[0].position, 1);
        assert_eq!(plan.events[0].prev_hash, GENESIS_HASH);
    }

    #[test]
    fn a_later_request_sees_the_versions_of_earlier_ones_in_the_batch() {
        let batch = [
            request("a", ExpectedVersion::Exact(0), &[1], vec![]),
            request("a", ExpectedVersion::Exact(0), &[2], vec![]),
            request("a", ExpectedVersion::Exact(1), &[3], vec![]),
            request("a", ExpectedVersion::NoStream, &[4], vec![]),
        ];
        let plan = plan(&batch, Snapshot::default());
        assert_eq!(ok(&plan.outcomes[0]).stream_version, 1);
        assert!(matches!(
            plan.outcomes[1],
            Err(AppendError::WrongExpectedVersion {
                actual: 1,
                expected: ExpectedVersion::Exact(0),
                ..
            })
        ));
        assert_eq!(
            ok(&plan.outcomes[2]),
            Appended {
                first_position: 2,
                last_position: 2,
                stream_version: 2
            }
        );
        assert!(matches!(
            plan.outcomes[3],
            Err(AppendError::WrongExpectedVersion { actual: 2, .. })
        ));
        assert_eq!(plan.events.len(), 2);
    }

    fn decided_on(mut r: PreparedRequest, s: &str, version: u64) -> PreparedRequest {
        r.decided_on.push(DecidedOn {
            stream: StreamId::new("tenant", s),
            version,
        });
        r
    }

    #[test]
    fn a_decision_stands_only_while_the_state_it_read_is_current() {
        let snapshot = || Snapshot {
            versions: HashMap::from([(StreamId::new("tenant", "t"), 4)]),
            ..Snapshot::default()
        };
        let current = decided_on(request("a", ExpectedVersion::Any, &[1], vec![]), "t", 4);
        let stale = decided_on(request("b", ExpectedVersion::Any, &[2], vec![]), "t", 3);
        let never_written = decided_on(request("c", ExpectedVersion::Any, &[3], vec![]), "u", 0);
        let plan = plan(&[current, stale, never_written], snapshot());
        assert_eq!(ok(&plan.outcomes[0]).stream_version, 1);
        assert!(matches!(
            &plan.outcomes[1],
            Err(AppendError::DecidedOnStaleState { stream, read: 3, actual: 4 })
                if *stream == StreamId::new("tenant", "t")
        ));
        assert_eq!(ok(&plan.outcomes[2]).stream_version, 1);
        let written: Vec<_> = plan.events.iter().map(|e| e.stream.id.as_str()).collect();
        assert_eq!(
            written,
            ["a", "c"],
            "nothing of the stale decision is written"
        );
        assert_eq!(
            lookups(&[decided_on(
                request("a", ExpectedVersion::Any, &[1], vec![]),
                "t",
                4
            )])
            .streams,
            [StreamId::new("tenant", "t"), stream("a")],
            "the writer reads the version of every stream a decision read"
        );
    }

    #[test]
    fn a_decision_read_before_an_earlier_request_of_the_batch_moved_its_stream_is_stale() {
        let mut policy_change = request("t", ExpectedVersion::Exact(4), &[1], vec![]);
        policy_change.stream = StreamId::new("tenant", "t");
        let login = decided_on(request("a", ExpectedVersion::Any, &[2], vec![]), "t", 4);
        let plan = plan(
            &[policy_change, login],
            Snapshot {
                versions: HashMap::from([(StreamId::new("tenant", "t"), 4)]),
                ..Snapshot::default()
            },
        );
        assert_eq!(ok(&plan.outcomes[0]).stream_version, 5);
        assert!(matches!(
            plan.outcomes[1],
            Err(AppendError::DecidedOnStaleState {
                read: 4,
                actual: 5,
                ..
            })
        ));
        assert_eq!(plan.events.len(), 1);
    }

    #[test]
    fn a_retry_of_an_append_already_made_is_not_checked_again() {
        let snapshot = Snapshot {
            versions: HashMap::from([(StreamId::new("tenant", "t"), 9), (stream("a"), 1)]),
            stored: HashMap::from([stored("a", 1, 5, 1)]),
            ..Snapshot::default()
        };
        let retry = decided_on(request("a", ExpectedVersion::Any, &[1], vec![]), "t", 4);
        let plan = plan(&[retry], snapshot);
        assert_eq!(
            ok(&plan.outcomes[0]),
            Appended {
                first_position: 5,
                last_position: 5,
                stream_version: 1
            }
        );
        assert!(plan.writes_nothing());
    }

    #[test]
    fn the_stored_version_decides_exact_and_no_stream() {
        let snapshot = || Snapshot {
            versions: HashMap::from([(stream("a"), 3)]),
            ..Snapshot::default()
        };
        let refused = plan(
            &[request("a", ExpectedVersion::NoStream, &[1], vec![])],
            snapshot(),
        );
        assert!(matches!(
            refused.outcomes[0],
            Err(AppendError::WrongExpectedVersion { actual: 3, .. })
        ));
        assert!(refused.writes_nothing());
        let accepted = plan(
            &[request("a", ExpectedVersion::Exact(3), &[1], vec![])],
            snapshot(),
        );
        assert_eq!(ok(&accepted.outcomes[0]).stream_version, 4);
    }

    fn stored(s: &str, id: u128, position: u64, version: u64) -> (Uuid, StoredEvent) {
        (
            Uuid::from_u128(id),
            StoredEvent {
                stream: stream(s),
                event_type: "user.thing".into(),
                payload: format!(r#"{{"n": {id}}}"#),
                position,
                stream_version: version,
            },
        )
    }

    #[test]
    fn a_retry_with_the_same_ids_and_bodies_returns_the_original_positions() {
        let snapshot = Snapshot {
            head: Some(ChainHead {
                position: 9,
                hash: [1; 32],
            }),
            versions: HashMap::from([(stream("a"), 5)]),
            stored: HashMap::from([stored("a", 1, 6, 4), stored("a", 2, 7, 5)]),
            ..Snapshot::default()
        };
        // NoStream would fail the version check: a replay is not checked again.
        let plan = plan(
            &[request("a", ExpectedVersion::NoStream, &[1, 2], vec![])],
            snapshot,
        );
        assert_eq!(
            ok(&plan.outcomes[0]),
            Appended {
                first_position: 6,
                last_position: 7,
                stream_version: 5
            }
        );
        assert!(plan.writes_nothing());
    }

    #[test]
    fn the_same_request_twice_in_one_batch_is_written_once() {
        let r = request("a", ExpectedVersion::NoStream, &[1, 2], vec![]);
        let plan = plan(&[r.clone(), r], Snapshot::default());
        assert_eq!(ok(&plan.outcomes[0]), ok(&plan.outcomes[1]));
        assert_eq!(plan.events.len(), 2);
    }

    #[test]
    fn an_id_reused_with_another_body_stream_or_type_conflicts() {
        let snapshot = || Snapshot {
            stored: HashMap::from([stored("a", 1, 1, 1)]),
            versions: HashMap::from([(stream("a"), 1)]),
            ..Snapshot::default()
        };
        let mut other_body = request("a", ExpectedVersion::Any, &[1], vec![]);
        other_body.events[0].payload = r#"{"n":2}"#.into();
        other_body.events[0].payload_value = json!({"n": 2});
        let mut other_type = request("a", ExpectedVersion::Any, &[1], vec![]);
        other_type.events[0].event_type = "user.other".into();
        let other_stream = request("b", ExpectedVersion::Any, &[1], vec![]);
        for r in [other_body, other_type, other_stream] {
            let plan = plan(&[r], snapshot());
            assert!(
                matches!(plan.outcomes[0], Err(AppendError::IdempotencyConflict { event_id }) if event_id == Uuid::from_u128(1))
            );
            assert!(plan.writes_nothing());
        }
    }

    #[test]
    fn partial_overlap_and_duplicate_ids_conflict() {
        let snapshot = || Snapshot {
            stored: HashMap::from([stored("a", 2, 1, 1)]),
            versions: HashMap::from([(stream("a"), 1)]),
            ..Snapshot::default()
        };
        let partial = plan(
            &[request("a", ExpectedVersion::Any, &[1, 2], vec![])],
            snapshot(),
        );
        assert!(
            matches!(partial.outcomes[0], Err(AppendError::IdempotencyConflict { event_id }) if event_id == Uuid::from_u128(2))
        );
        let twice = plan(
            &[request("a", ExpectedVersion::Any, &[3, 3], vec![])],
            snapshot(),
        );
        assert!(
            matches!(twice.outcomes[0], Err(AppendError::IdempotencyConflict { event_id }) if event_id == Uuid::from_u128(3))
        );
        assert!(twice.writes_nothing());
    }

    #[test]
    fn payloads_are_compared_as_json_not_as_text() {
        let mut snapshot = Snapshot::default();
        let (id, mut event) = stored("a", 1, 1, 1);
        event.payload = r#"{ "n" : 1 }"#.into();
        snapshot.stored.insert(id, event);
        let plan = plan(
            &[request("a", ExpectedVersion::Any, &[1], vec![])],
            snapshot,
        );
        assert_eq!(ok(&plan.outcomes[0]).first_position, 1);
    }

    #[test]
    fn a_key_held_by_another_stream_refuses_the_whole_request() {
        let plan = plan(
            &[request(
                "b",
                ExpectedVersion::NoStream,
                &[1],
                vec![ClaimChange::Reserve(key("alice"))],
            )],
            Snapshot {
                claims: HashMap::from([(key("alice"), stream("a"))]),
                ..Snapshot::default()
            },
        );
        assert!(
            matches!(&plan.outcomes[0], Err(AppendError::ClaimTaken { key: k }) if *k == key("alice"))
        );
        assert!(plan.writes_nothing());
    }

    #[test]
    fn racing_reserves_in_one_batch_let_the_first_win() {
        let batch = [
            request(
                "a",
                ExpectedVersion::NoStream,
                &[1],
                vec![ClaimChange::Reserve(key("x"))],
            ),
            request(
                "b",
                ExpectedVersion::NoStream,
                &[2],
                vec![ClaimChange::Reserve(key("x"))],
            ),
        ];
        let plan = plan(&batch, Snapshot::default());
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(
            plan.outcomes[1],
            Err(AppendError::ClaimTaken { .. })
        ));
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.claims, [(key("x"), Some(stream("a")))]);
    }

    #[test]
    fn reserving_an_own_key_is_a_no_op_and_release_frees_it_for_the_next_request() {
        let batch = [
            request(
                "a",
                ExpectedVersion::Any,
                &[1],
                vec![ClaimChange::Reserve(key("x"))],
            ),
            request(
                "a",
                ExpectedVersion::Any,
                &[2],
                vec![ClaimChange::Release(key("x"))],
            ),
            request(
                "b",
                ExpectedVersion::Any,
                &[3],
                vec![ClaimChange::Reserve(key("x"))],
            ),
        ];
        let plan = plan(
            &batch,
            Snapshot {
                claims: HashMap::from([(key("x"), stream("a"))]),
                ..Snapshot::default()
            },
        );
        assert!(plan.outcomes.iter().all(Result::is_ok));
        assert_eq!(plan.claims, [(key("x"), Some(stream("b")))]);
    }

    #[test]
    fn only_the_holder_can_release() {
        let plan = plan(
            &[request(
                "b",
                ExpectedVersion::Any,
                &[1],
                vec![ClaimChange::Release(key("x"))],
            )],
            Snapshot {
                claims: HashMap::from([(key("x"), stream("a"))]),
                ..Snapshot::default()
            },
        );
        assert!(plan.outcomes[0].is_ok());
        assert!(plan.claims.is_empty());
    }

    #[test]
    fn a_claim_freed_and_taken_back_in_one_batch_writes_nothing() {
        let batch = [request(
            "a",
            ExpectedVersion::Any,
            &[1],
            vec![
                ClaimChange::Release(key("x")),
                ClaimChange::Reserve(key("x")),
            ],
        )];
        let plan = plan(
            &batch,
            Snapshot {
                claims: HashMap::from([(key("x"), stream("a"))]),
                ..Snapshot::default()
            },
        );
        assert!(plan.outcomes[0].is_ok());
        assert!(plan.claims.is_empty());
    }

    #[test]
    fn secrets_of_refused_requests_are_not_written_and_the_last_write_wins() {
        let mut first = request("a", ExpectedVersion::Any, &[1], vec![]);
        first.secrets = vec![SecretWrite {
            kind: "password".into(),
            value: Some("h1".into()),
        }];
        let mut refused = request("a", ExpectedVersion::NoStream, &[2], vec![]);
        refused.secrets = vec![SecretWrite {
            kind: "password".into(),
            value: Some("h2".into()),
        }];
        let mut second = request("a", ExpectedVersion::Any, &[3], vec![]);
        second.secrets = vec![SecretWrite {
            kind: "password".into(),
            value: None,
        }];
        let plan = plan(&[first, refused, second], Snapshot::default());
        assert!(plan.outcomes[1].is_err());
        assert_eq!(
            plan.secrets,
            [SecretState {
                owner: stream("a"),
                kind: "password".into(),
                value: None
            }]
        );
    }

    #[test]
    fn a_request_without_events_reports_the_head_and_writes_its_side_effects() {
        let mut r = request(
            "a",
            ExpectedVersion::Exact(2),
            &[],
            vec![ClaimChange::Reserve(key("x"))],
        );
        r.secrets = vec![SecretWrite {
            kind: "k".into(),
            value: Some("v".into()),
        }];
        let plan = plan(
            &[r],
            Snapshot {
                head: Some(ChainHead {
                    position: 4,
                    hash: [0; 32],
                }),
                versions: HashMap::from([(stream("a"), 2)]),
                ..Snapshot::default()
            },
        );
        assert_eq!(
            ok(&plan.outcomes[0]),
            Appended {
                first_position: 4,
                last_position: 4,
                stream_version: 2
            }
        );
        assert!(plan.events.is_empty());
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.secrets.len(), 1);
    }

    #[test]
    fn lookups_are_deduplicated() {
        let batch = [
            request(
                "a",
                ExpectedVersion::Any,
                &[1],
                vec![ClaimChange::Reserve(key("x"))],
            ),
            request(
                "a",
                ExpectedVersion::Any,
                &[2],
                vec![ClaimChange::Release(key("x"))],
            ),
        ];
        let l = lookups(&batch);
        assert_eq!(l.streams, [stream("a")]);
        assert_eq!(l.event_ids, [Uuid::from_u128(1), Uuid::from_u128(2)]);
        assert_eq!(l.claim_keys, [key("x")]);
    }
}
