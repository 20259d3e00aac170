//! One conformance suite for the event store, run against both backends.
//!
//! Each case is an `async fn case(db_url: String)`; the `conformance!` macro at the bottom
//! generates `sqlite::<case>` and `postgres::<case>` tests, each on a fresh database.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use keyledger_store::chain::{
    BreakKind, ChainBreak, GENESIS_HASH, canonical_bytes, event_hash, verify_chain,
};
use keyledger_store::testing::{fresh_postgres_url, fresh_sqlite_url};
use keyledger_store::{
    Actor, ActorKind, AppendError, AppendRequest, Appended, Backend, ChainHead, ClaimChange,
    ClaimKey, Database, EventClass, EventFilter, EventLog, EventMetadata, ExpectedVersion,
    NewEvent, NewSession, RecordedEvent, SecretWrite, SessionChange, SessionStore, StreamId,
};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Helpers

async fn open(db_url: &str) -> EventLog {
    EventLog::open(Database::connect(db_url).await.unwrap())
        .await
        .unwrap()
}

fn stream(kind: &str, id: &str) -> StreamId {
    StreamId::new(kind, id)
}

fn new_event(payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        tenant_id: Uuid::from_u128(0xfeed),
        event_type: "test.happened".into(),
        schema_version: 1,
        recorded_at: Utc::now(),
        payload,
        metadata: EventMetadata::system(),
    }
}

fn append_request(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expected,
        events,
        claims: vec![],
        secrets: vec![],
        sessions: vec![],
        decided_on: Vec::new(),
    }
}

fn one(stream: &StreamId, expected: ExpectedVersion) -> AppendRequest {
    append_request(stream, expected, vec![new_event(json!({}))])
}

fn key(value: &str) -> ClaimKey {
    ClaimKey {
        scope: "tenant-1".into(),
        kind: "username".into(),
        value: value.into(),
    }
}

async fn count_events(log: &EventLog) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM events")
        .fetch_one(log.database().pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Cases

async fn appended_events_read_back_exactly_and_chain_from_genesis(db_url: String) {
    let log = open(&db_url).await;
    // Not a data subject's stream: those are sealed (see the sealing cases below).
    let user = stream("account", "u-1");
    let recorded_at = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
    let metadata = EventMetadata {
        actor: Actor {
            kind: ActorKind::Admin,
            id: Some("admin-7".into()),
        },
        request_ip: Some("192.0.2.1".into()),
        user_agent: Some("curl/8".into()),
        correlation_id: Some("c-1".into()),
    };
    let first = NewEvent {
        event_id: Uuid::now_v7(),
        tenant_id: Uuid::now_v7(),
        event_type: "user.created".into(),
        schema_version: 3,
        recorded_at,
        payload: json!({"username": "ada", "nested": {"b": [1, 2], "a": null}}),
        metadata: metadata.clone(),
    };
    let second = NewEvent {
        event_type: "user.renamed".into(),
        event_id: Uuid::now_v7(),
        payload: json!({"username": "ada2"}),
        ..first.clone()
    };
    let appended = log
        .append(append_request(
            &user,
            ExpectedVersion::NoStream,
            vec![first.clone(), second.clone()],
        ))
        .await
        .unwrap();
    assert_eq!(
        appended,
        Appended {
            first_position: 1,
            last_position: 2,
            stream_version: 2
        }
    );
    assert_eq!(
        *log.subscribe().borrow(),
        2,
        "a caller sees its own append in subscribe() once it has the reply"
    );
    let other = log
        .append(one(&stream("user", "u-2"), ExpectedVersion::Any))
        .await
        .unwrap();
    assert_eq!(
        other,
        Appended {
            first_position: 3,
            last_position: 3,
            stream_version: 1
        }
    );

    let events = log.read_stream(&user).await.unwrap();
    assert_eq!(events.len(), 2);
    let micros_only = Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap();
    for (i, (stored, sent)) in events.iter().zip([&first, &second]).enumerate() {
        assert_eq!(stored.position, i as u64 + 1);
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.tenant_id, sent.tenant_id);
        assert_eq!(stored.stream, user);
        assert_eq!(stored.stream_version, i as u64 + 1);
        assert_eq!(stored.event_type, sent.event_type);
        assert_eq!(stored.schema_version, 3);
        assert_eq!(stored.recorded_at, micros_only);
        assert_eq!(
            stored.payload,
            serde_json::to_string(&sent.payload).unwrap()
        );
        assert_eq!(stored.payload_json().unwrap(), sent.payload);
        assert_eq!(stored.metadata().unwrap(), metadata);
    }
    assert_eq!(events[0].prev_hash, GENESIS_HASH);
    assert_eq!(events[0].hash, event_hash(&GENESIS_HASH, &events[0]));
    assert_eq!(events[1].prev_hash, events[0].hash);
    assert_eq!(events[1].hash, event_hash(&events[0].hash, &events[1]));

    let all = log.read_all(0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(all[..2], events[..]);
    assert_eq!(all[2].prev_hash, all[1].hash);
    let page = log.read_all(1, 1).await.unwrap();
    assert_eq!(page, [events[1].clone()]);
    assert!(log.read_all(3, 10).await.unwrap().is_empty());
    assert_eq!(
        log.head().await.unwrap(),
        Some(ChainHead {
            position: 3,
            hash: all[2].hash
        })
    );
    assert_eq!(*log.subscribe().borrow(), 3);
    assert!(
        log.read_stream(&stream("user", "nobody"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn expected_version_conflicts_report_the_actual_version(db_url: String) {
    let log = open(&db_url).await;
    let s = stream("user", "u-1");
    log.append(append_request(
        &s,
        ExpectedVersion::NoStream,
        vec![new_event(json!(1)), new_event(json!(2))],
    ))
    .await
    .unwrap();
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
    ] {
        match log.append(one(&s, expected)).await {
            Err(AppendError::WrongExpectedVersion {
                stream: refused,
                expected: echoed,
                actual,
            }) => {
                assert_eq!(refused, s);
                assert_eq!(echoed, expected);
                assert_eq!(actual, 2);
            }
            other => panic!("{expected:?}: expected WrongExpectedVersion, got {other:?}"),
        }
    }
    let exact = log
        .append(one(&s, ExpectedVersion::Exact(2)))
        .await
        .unwrap();
    assert_eq!(exact.stream_version, 3);
    let any = log.append(one(&s, ExpectedVersion::Any)).await.unwrap();
    assert_eq!(any.stream_version, 4);
    let fresh = log
        .append(one(&stream("user", "u-2"), ExpectedVersion::Exact(0)))
        .await
        .unwrap();
    assert_eq!(fresh.stream_version, 1);
    let versions: Vec<_> = log
        .read_stream(&s)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(count_events(&log).await, 5);
}

/// T-ES-01 with N = 2, 8 and 64.
async fn racing_writers_at_one_version_let_exactly_one_win(db_url: String) {
    let log = open(&db_url).await;
    for writers in [2usize, 8, 64] {
        let s = stream("account", &format!("race-{writers}"));
        log.append(one(&s, ExpectedVersion::NoStream))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let log = log.clone();
                let s = s.clone();
                tokio::spawn(async move { log.append(one(&s, ExpectedVersion::Exact(1))).await })
            })
            .collect();
        let mut wins = 0;
        let mut conflicts = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(appended) => {
                    wins += 1;
                    assert_eq!(appended.stream_version, 2);
                }
                Err(AppendError::WrongExpectedVersion { actual: 2, .. }) => conflicts += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            (wins, conflicts),
            (1, writers - 1),
            "with {writers} writers"
        );
        let versions: Vec<_> = log
            .read_stream(&s)
            .await
            .unwrap()
            .iter()
            .map(|e| e.stream_version)
            .collect();
        assert_eq!(versions, [1, 2]);
    }
}

/// Group commit: appends from many requests at once share commits, so throughput is not one
/// commit per request. `log_writer.batches` counts the writer's commits.
async fn concurrent_appends_share_commits(db_url: String) {
    let log = open(&db_url).await;
    let batches = |log: EventLog| async move {
        let mut conn = log.database().pool().acquire().await.unwrap();
        sqlx::query("SELECT batches FROM log_writer WHERE id = 1")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    let before = batches(log.clone()).await;
    const REQUESTS: usize = 64;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(REQUESTS));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|n| {
            let (log, start) = (log.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let s = stream("account", &format!("grouped-{n}"));
                log.append(one(&s, ExpectedVersion::NoStream)).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(count_events(&log).await, REQUESTS as i64);
    let commits = batches(log.clone()).await - before;
    // One commit per request would be 64; arriving together, they wait for at most the
    // commit in flight and go in the next one or two.
    assert!(commits <= 16, "{REQUESTS} requests took {commits} commits");
}

/// T-ES-03, sequentially and concurrently.
async fn an_event_id_is_appended_once_and_a_different_body_conflicts(db_url: String) {
    let log = open(&db_url).await;
    let s = stream("user", "u-1");
    let request = append_request(
        &s,
        ExpectedVersion::NoStream,
        vec![new_event(json!({"n": 1})), new_event(json!({"n": 2}))],
    );
    let first = log.append(request.clone()).await.unwrap();
    let again = log.append(request.clone()).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(log.read_stream(&s).await.unwrap().len(), 2);

    let concurrent = one(&stream("user", "u-2"), ExpectedVersion::NoStream);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            let request = concurrent.clone();
            tokio::spawn(async move { log.append(request).await })
        })
        .collect();
    let mut outcomes = HashSet::new();
    for task in tasks {
        outcomes.insert(task.await.unwrap().unwrap().first_position);
    }
    assert_eq!(outcomes.len(), 1, "every caller got the same position");
    assert_eq!(
        log.read_stream(&stream("user", "u-2")).await.unwrap().len(),
        1
    );

    let mut other_body = request.clone();
    other_body.events[0].payload = json!({"n": 99});
    match log.append(other_body).await {
        Err(AppendError::IdempotencyConflict { event_id }) => {
            assert_eq!(event_id, request.events[0].event_id);
        }
        other => panic!("expected IdempotencyConflict, got {other:?}"),
    }
    let mut other_stream = request.clone();
    other_stream.stream = stream("user", "u-3");
    assert!(matches!(
        log.append(other_stream).await,
        Err(AppendError::IdempotencyConflict { .. })
    ));
    let mut partial = request.clone();
    partial.events.push(new_event(json!({"n": 3})));
    partial.expected = ExpectedVersion::Any;
    assert!(matches!(
        log.append(partial).await,
        Err(AppendError::IdempotencyConflict { .. })
    ));
    assert_eq!(count_events(&log).await, 3);
}

/// T-ES-04: racing creates of one username.
async fn racing_reservations_of_one_key_let_exactly_one_stream_win(db_url: String) {
    let log = open(&db_url).await;
    let racers = 16;
    let tasks: Vec<_> = (0..racers)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let s = stream("user", &format!("racer-{i}"));
                let mut request = one(&s, ExpectedVersion::NoStream);
                request.claims = vec![ClaimChange::Reserve(key("ada"))];
                (s, log.append(request).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (s, Ok(_)) => winners.push(s),
            (s, Err(AppendError::ClaimTaken { key: taken })) => {
                assert_eq!(taken, key("ada"));
                losers.push(s);
            }
            (_, Err(other)) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(losers.len(), racers - 1);
    assert_eq!(
        log.claim_owner(&key("ada")).await.unwrap(),
        Some(winners[0].clone())
    );
    for loser in &losers {
        assert!(log.read_stream(loser).await.unwrap().is_empty());
    }
    assert_eq!(count_events(&log).await, 1);
}

async fn a_released_key_can_be_reserved_by_another_stream(db_url: String) {
    let log = open(&db_url).await;
    let a = stream("user", "a");
    let b = stream("user", "b");
    let with_claim = |s: &StreamId, change: ClaimChange| {
        let mut request = one(s, ExpectedVersion::Any);
        request.claims = vec![change];
        request
    };
    log.append(with_claim(&a, ClaimChange::Reserve(key("ada"))))
        .await
        .unwrap();
    // Reserving a key one already holds is a no-op.
    log.append(with_claim(&a, ClaimChange::Reserve(key("ada"))))
        .await
        .unwrap();
    assert!(matches!(
        log.append(with_claim(&b, ClaimChange::Reserve(key("ada"))))
            .await,
        Err(AppendError::ClaimTaken { .. })
    ));
    // Only the holder can release.
    log.append(with_claim(&b, ClaimChange::Release(key("ada"))))
        .await
        .unwrap();
    assert_eq!(log.claim_owner(&key("ada")).await.unwrap(), Some(a.clone()));

    log.append(with_claim(&a, ClaimChange::Release(key("ada"))))
        .await
        .unwrap();
    assert_eq!(log.claim_owner(&key("ada")).await.unwrap(), None);
    log.append(with_claim(&b, ClaimChange::Reserve(key("ada"))))
        .await
        .unwrap();
    assert_eq!(log.claim_owner(&key("ada")).await.unwrap(), Some(b));
    assert!(matches!(
        log.append(with_claim(&a, ClaimChange::Reserve(key("ada"))))
            .await,
        Err(AppendError::ClaimTaken { .. })
    ));
    assert_eq!(log.claim_owner(&key("other")).await.unwrap(), None);
}

async fn secrets_are_written_with_the_append_and_not_when_it_is_refused(db_url: String) {
    let log = open(&db_url).await;
    let a = stream("user", "a");
    let with_secret = |expected, value: Option<&str>| {
        let mut request = one(&a, expected);
        request.secrets = vec![SecretWrite {
            kind: "password".into(),
            value: value.map(str::to_owned),
        }];
        request
    };
    log.append(with_secret(ExpectedVersion::NoStream, Some("hash-1")))
        .await
        .unwrap();
    assert_eq!(
        log.secret(&a, "password").await.unwrap().as_deref(),
        Some("hash-1")
    );
    assert!(matches!(
        log.append(with_secret(ExpectedVersion::NoStream, Some("hash-2")))
            .await,
        Err(AppendError::WrongExpectedVersion { .. })
    ));
    assert_eq!(
        log.secret(&a, "password").await.unwrap().as_deref(),
        Some("hash-1")
    );

    // Refused for a claim: neither the events nor the secret are written.
    let b = stream("user", "b");
    let mut hold = one(&b, ExpectedVersion::NoStream);
    hold.claims = vec![ClaimChange::Reserve(key("taken"))];
    log.append(hold).await.unwrap();
    let mut refused = with_secret(ExpectedVersion::Exact(1), Some("hash-3"));
    refused.claims = vec![ClaimChange::Reserve(key("taken"))];
    assert!(matches!(
        log.append(refused).await,
        Err(AppendError::ClaimTaken { .. })
    ));
    assert_eq!(
        log.secret(&a, "password").await.unwrap().as_deref(),
        Some("hash-1")
    );
    assert_eq!(log.read_stream(&a).await.unwrap().len(), 1);

    log.append(with_secret(ExpectedVersion::Exact(1), Some("hash-4")))
        .await
        .unwrap();
    assert_eq!(
        log.secret(&a, "password").await.unwrap().as_deref(),
        Some("hash-4")
    );
    assert_eq!(log.secret(&b, "password").await.unwrap(), None);
    log.append(with_secret(ExpectedVersion::Exact(2), None))
        .await
        .unwrap();
    assert_eq!(log.secret(&a, "password").await.unwrap(), None);
}

/// A login's session commits with the login's events, and a suspension's or lock's end of a
/// user's sessions with its events: written when they are, not when the append is refused, and
/// not again when the same events are appended a second time.
async fn sessions_change_with_the_append_and_not_when_it_is_refused(db_url: String) {
    let log = open(&db_url).await;
    let sessions = SessionStore::new(log.database().clone());
    let a = stream("user", "a");
    let now = Utc::now();
    let (user, other_user) = (Uuid::now_v7(), Uuid::now_v7());
    let session = |hash: u8, user_id: Uuid| {
        SessionChange::Start(NewSession {
            token_hash: [hash; 32],
            user_id,
            tenant_id: Uuid::now_v7(),
            created_at: now,
            idle: chrono::Duration::minutes(30),
            absolute: chrono::Duration::hours(12),
        })
    };
    let mut first = one(&a, ExpectedVersion::NoStream);
    first.sessions = vec![session(1, user)];
    log.append(first.clone()).await.unwrap();
    assert!(sessions.authenticate([1; 32], now).await.unwrap().is_some());

    let mut refused = one(&a, ExpectedVersion::NoStream);
    refused.sessions = vec![session(2, user)];
    assert!(matches!(
        log.append(refused).await,
        Err(AppendError::WrongExpectedVersion { .. })
    ));
    assert_eq!(sessions.authenticate([2; 32], now).await.unwrap(), None);

    // The same events again: the append answers as before and starts no second session.
    let mut replayed = first;
    replayed.sessions = vec![session(3, user)];
    log.append(replayed).await.unwrap();
    assert_eq!(sessions.authenticate([3; 32], now).await.unwrap(), None);
    assert_eq!(log.read_stream(&a).await.unwrap().len(), 1);

    // A second session of the user, and one of another user.
    let mut second = one(&a, ExpectedVersion::Exact(1));
    second.sessions = vec![session(4, user), session(5, other_user)];
    log.append(second).await.unwrap();
    let end_all = SessionChange::EndAll {
        user_id: user,
        at: now,
    };

    let mut refused = one(&a, ExpectedVersion::Exact(1));
    refused.sessions = vec![end_all.clone()];
    assert!(matches!(
        log.append(refused).await,
        Err(AppendError::WrongExpectedVersion { .. })
    ));
    for token in [[1; 32], [4; 32], [5; 32]] {
        assert!(sessions.authenticate(token, now).await.unwrap().is_some());
    }

    // Ended in the append's order: a session the same append starts after the end lives.
    let mut lock = one(&a, ExpectedVersion::Exact(2));
    lock.sessions = vec![end_all, session(6, user)];
    log.append(lock).await.unwrap();
    for token in [[1; 32], [4; 32]] {
        assert_eq!(sessions.authenticate(token, now).await.unwrap(), None);
    }
    for token in [[5; 32], [6; 32]] {
        assert!(sessions.authenticate(token, now).await.unwrap().is_some());
    }

    // Ending the others keeps the one named, and other users' sessions.
    let mut third = one(&a, ExpectedVersion::Exact(3));
    third.sessions = vec![session(7, user)];
    log.append(third).await.unwrap();
    let mut change = one(&a, ExpectedVersion::Exact(4));
    change.sessions = vec![SessionChange::EndOthers {
        user_id: user,
        kept: [7; 32],
        at: now,
    }];
    log.append(change).await.unwrap();
    assert_eq!(sessions.authenticate([6; 32], now).await.unwrap(), None);
    for token in [[5; 32], [7; 32]] {
        assert!(sessions.authenticate(token, now).await.unwrap().is_some());
    }
}

/// T-ES-09 and T-ES-14 of the requirements: 16 writers on two nodes (two `EventLog`s on one
/// database), batches of mixed sizes, and a follower that must see every event exactly once,
/// in order, while they write.
async fn a_follower_sees_every_event_exactly_once_while_sixteen_writers_append(db_url: String) {
    const TOTAL: u64 = 100_000;
    const WRITERS: u64 = 16;
    const STREAMS_PER_WRITER: usize = 4;
    const BATCH_SIZES: [u64; 8] = [1, 7, 50, 3, 25, 100, 12, 2];
    let started = Instant::now();
    let node_a = open(&db_url).await;
    let node_b = open(&db_url).await;

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = if w % 2 == 0 {
                node_a.clone()
            } else {
                node_b.clone()
            };
            tokio::spawn(async move {
                let mut versions = [0u64; STREAMS_PER_WRITER];
                let mut remaining = TOTAL / WRITERS;
                let mut i = 0;
                while remaining > 0 {
                    let n = BATCH_SIZES[i % BATCH_SIZES.len()].min(remaining);
                    let s = i % STREAMS_PER_WRITER;
                    let events = (0..n).map(|k| new_event(json!({"w": w, "i": i, "k": k})));
                    let appended = log
                        .append(append_request(
                            &stream("load", &format!("w{w}-s{s}")),
                            ExpectedVersion::Exact(versions[s]),
                            events.collect(),
                        ))
                        .await
                        .unwrap();
                    versions[s] += n;
                    assert_eq!(appended.stream_version, versions[s]);
                    assert_eq!(appended.last_position - appended.first_position + 1, n);
                    remaining -= n;
                    i += 1;
                }
            })
        })
        .collect();

    // On SQLite a node hears only its own appends, so the follower listens to both.
    let follower = node_a.clone();
    let mut woken_a = node_a.subscribe();
    let mut woken_b = node_b.subscribe();
    let follow = async {
        let mut after = 0u64;
        let mut ids = HashSet::new();
        let mut pages = 0;
        while after < TOTAL {
            woken_a.borrow_and_update();
            woken_b.borrow_and_update();
            let page = follower.read_all(after, 1000).await.unwrap();
            if page.is_empty() {
                tokio::select! {
                    changed = woken_a.changed() => changed.unwrap(),
                    changed = woken_b.changed() => changed.unwrap(),
                }
                continue;
            }
            pages += 1;
            for event in page {
                assert_eq!(
                    event.position,
                    after + 1,
                    "the follower skipped or repeated"
                );
                assert!(ids.insert(event.event_id), "an event was seen twice");
                after = event.position;
            }
        }
        (after, ids.len(), pages)
    };
    // Joined, so that a failing writer fails the test at once instead of leaving the
    // follower waiting for events that will never come.
    let all_written = async {
        for writer in writers {
            writer.await.unwrap();
        }
    };
    let (followed, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(240), follow),
        all_written
    );
    let (last, distinct, pages) = followed.expect("the follower did not see every event in time");
    let appended_in = started.elapsed();
    assert_eq!(last, TOTAL);
    assert_eq!(distinct as u64, TOTAL);
    assert!(follower.read_all(TOTAL, 10).await.unwrap().is_empty());
    assert!(pages > 1, "the follower read while the writers wrote");

    // Every stream's versions are 1..=n (the unique index rules out duplicates).
    let rows = sqlx::query(
        "SELECT stream_id, COUNT(*) AS n, MIN(stream_version) AS lo, \
         MAX(stream_version) AS hi FROM events GROUP BY stream_id",
    )
    .fetch_all(node_a.database().pool())
    .await
    .unwrap();
    assert_eq!(rows.len() as u64, WRITERS * STREAMS_PER_WRITER as u64);
    for row in rows {
        let (n, lo, hi): (i64, i64, i64) = (
            row.try_get("n").unwrap(),
            row.try_get("lo").unwrap(),
            row.try_get("hi").unwrap(),
        );
        assert_eq!((lo, hi), (1, n));
    }

    // And the chain verifies over everything written.
    let mut progress_calls = 0;
    let verification = verify_chain(&node_b, |_| progress_calls += 1)
        .await
        .unwrap();
    assert_eq!(verification.first_break, None);
    assert_eq!(verification.checked, TOTAL);
    assert_eq!(verification.head, node_a.head().await.unwrap());
    assert_eq!(progress_calls, 10);
    eprintln!(
        "{TOTAL} events by {WRITERS} writers on 2 nodes: appended and followed in {appended_in:?}, \
         verified in {:?} ({})",
        started.elapsed() - appended_in,
        node_a
            .database()
            .url()
            .split(':')
            .next()
            .unwrap_or_default(),
    );
}

/// T-ES-11 (the cases a hash chain can catch): a modified, a deleted and two swapped events
/// are each reported at their position; an untouched log has no break.
async fn verify_chain_finds_a_modified_a_deleted_and_two_swapped_events(db_url: String) {
    let log = open(&db_url).await;
    let s = stream("user", "u-1");
    for i in 0..10 {
        log.append(append_request(
            &s,
            ExpectedVersion::Exact(i),
            vec![new_event(json!({"i": i}))],
        ))
        .await
        .unwrap();
    }
    let pool = log.database().pool();
    let verified = verify_chain(&log, |_| {}).await.unwrap();
    assert_eq!(verified.first_break, None);
    assert_eq!(verified.checked, 10);

    let original: String = sqlx::query("SELECT payload FROM events WHERE position = 4")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get("payload")
        .unwrap();
    sqlx::query("UPDATE events SET payload = $1 WHERE position = $2")
        .bind(r#"{"i":33}"#)
        .bind(4i64)
        .execute(pool)
        .await
        .unwrap();
    let modified = verify_chain(&log, |_| {}).await.unwrap();
    assert_eq!(
        modified.first_break,
        Some(ChainBreak {
            position: 4,
            kind: BreakKind::HashMismatch
        })
    );
    assert_eq!(modified.checked, 3);
    assert_eq!(modified.head.map(|h| h.position), Some(3));
    sqlx::query("UPDATE events SET payload = $1 WHERE position = $2")
        .bind(&original)
        .bind(4i64)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(verify_chain(&log, |_| {}).await.unwrap().first_break, None);

    for (from, to) in [(7i64, -1i64), (8, 7), (-1, 8)] {
        sqlx::query("UPDATE events SET position = $1 WHERE position = $2")
            .bind(to)
            .bind(from)
            .execute(pool)
            .await
            .unwrap();
    }
    assert_eq!(
        verify_chain(&log, |_| {}).await.unwrap().first_break,
        Some(ChainBreak {
            position: 7,
            kind: BreakKind::PrevHashMismatch
        })
    );
    for (from, to) in [(7i64, -1i64), (8, 7), (-1, 8)] {
        sqlx::query("UPDATE events SET position = $1 WHERE position = $2")
            .bind(to)
            .bind(from)
            .execute(pool)
            .await
            .unwrap();
    }
    assert_eq!(verify_chain(&log, |_| {}).await.unwrap().first_break, None);

    sqlx::query("DELETE FROM events WHERE position = $1")
        .bind(6i64)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        verify_chain(&log, |_| {}).await.unwrap().first_break,
        Some(ChainBreak {
            position: 7,
            kind: BreakKind::PositionGap { expected: 6 }
        })
    );
}

async fn sessions_expire_when_idle_or_old_and_can_be_revoked(db_url: String) {
    let db = Database::connect(&db_url).await.unwrap();
    db.migrate().await.unwrap();
    let sessions = SessionStore::new(db);
    let t0: DateTime<Utc> = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let min = chrono::Duration::minutes;
    let (user, tenant) = (Uuid::now_v7(), Uuid::now_v7());

    // Idle expiry slides with use.
    let idle = [1u8; 32];
    sessions
        .create(idle, user, tenant, t0, min(30), min(120))
        .await
        .unwrap();
    let session = sessions.authenticate(idle, t0 + min(10)).await.unwrap();
    assert_eq!(
        session,
        Some(keyledger_store::Session {
            user_id: user,
            tenant_id: tenant,
            created_at: t0,
            absolute_expires_at: t0 + min(120),
        })
    );
    // 39 minutes is past the first idle expiry (30) but within the slid one (40).
    assert!(
        sessions
            .authenticate(idle, t0 + min(39))
            .await
            .unwrap()
            .is_some()
    );
    // Slid to 69: exactly at the expiry is too late.
    assert!(
        sessions
            .authenticate(idle, t0 + min(69))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sessions
            .authenticate(idle, t0 + min(68))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        sessions
            .authenticate(idle, t0 + min(98) + chrono::Duration::seconds(1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(sessions.authenticate([9; 32], t0).await.unwrap().is_none());

    // Absolute expiry caps the sliding.
    let old = [2u8; 32];
    sessions
        .create(old, user, tenant, t0, min(30), min(60))
        .await
        .unwrap();
    for at in [25, 50] {
        assert!(
            sessions
                .authenticate(old, t0 + min(at))
                .await
                .unwrap()
                .is_some()
        );
    }
    assert!(
        sessions
            .authenticate(old, t0 + min(60) - chrono::Duration::microseconds(1))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        sessions
            .authenticate(old, t0 + min(60))
            .await
            .unwrap()
            .is_none()
    );

    // Logout.
    let logout = [3u8; 32];
    sessions
        .create(logout, user, tenant, t0, min(30), min(60))
        .await
        .unwrap();
    assert!(sessions.revoke(logout, t0 + min(1)).await.unwrap());
    assert!(
        sessions
            .authenticate(logout, t0 + min(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(!sessions.revoke(logout, t0 + min(3)).await.unwrap());
    assert!(!sessions.revoke([8; 32], t0).await.unwrap());

    // Revoking every session of one user (an append's `SessionChange::EndAll`, in
    // `sessions_change_with_the_append_and_not_when_it_is_refused`).
    for token in [[4u8; 32], [5u8; 32]] {
        sessions
            .create(token, user, tenant, t0, min(30), min(60))
            .await
            .unwrap();
        assert!(sessions.revoke(token, t0 + min(1)).await.unwrap());
    }
    sessions
        .create([6; 32], Uuid::now_v7(), tenant, t0, min(30), min(60))
        .await
        .unwrap();

    // Clean-up removes the revoked (3, 4, 5) and the expired, nothing valid.
    assert_eq!(sessions.delete_expired(t0 + min(2)).await.unwrap(), 3);
    assert!(
        sessions
            .authenticate([6; 32], t0 + min(3))
            .await
            .unwrap()
            .is_some()
    );
}

/// Durability across close: everything committed is there after reopening, and the chain
/// continues from it.
async fn reopening_the_database_keeps_everything(db_url: String) {
    let log = open(&db_url).await;
    let a = stream("user", "a");
    let mut request = append_request(
        &a,
        ExpectedVersion::NoStream,
        vec![new_event(json!({"n": 1})), new_event(json!({"n": 2}))],
    );
    request.claims = vec![ClaimChange::Reserve(key("ada"))];
    request.secrets = vec![SecretWrite {
        kind: "password".into(),
        value: Some("hash".into()),
    }];
    log.append(request).await.unwrap();
    log.append(one(&stream("user", "b"), ExpectedVersion::NoStream))
        .await
        .unwrap();
    let before = log.read_all(0, 100).await.unwrap();
    let db = log.database().clone();
    drop(log);
    db.pool().close().await;
    drop(db);

    let log = open(&db_url).await;
    assert_eq!(log.read_all(0, 100).await.unwrap(), before);
    assert_eq!(*log.subscribe().borrow(), 3);
    assert_eq!(log.claim_owner(&key("ada")).await.unwrap(), Some(a.clone()));
    assert_eq!(
        log.secret(&a, "password").await.unwrap().as_deref(),
        Some("hash")
    );
    let next = log
        .append(one(&a, ExpectedVersion::Exact(2)))
        .await
        .unwrap();
    assert_eq!(
        next,
        Appended {
            first_position: 4,
            last_position: 4,
            stream_version: 3
        }
    );
    let all = log.read_all(0, 100).await.unwrap();
    assert_eq!(all[3].prev_hash, before[2].hash);
    let verified = verify_chain(&log, |_| {}).await.unwrap();
    assert_eq!((verified.checked, verified.first_break), (4, None));
}

/// T-ES-02 scaled down: clients racing through the `CommandExecutor` retry on conflicts until
/// every command is recorded once.
async fn racing_commands_through_the_executor_are_all_recorded(db_url: String) {
    use counter::Counter;
    use keyledger_store::{CommandContext, CommandExecutor, SideWrites};
    const CLIENTS: u64 = 8;
    const COMMANDS: u64 = 25;
    let log = open(&db_url).await;
    let executor = CommandExecutor::<Counter>::new(log.clone());
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let executor = executor.clone();
            tokio::spawn(async move {
                let ctx = CommandContext {
                    tenant_id: Uuid::now_v7(),
                    now: Utc::now(),
                    metadata: EventMetadata::system(),
                    decided_on: Vec::new(),
                };
                for _ in 0..COMMANDS {
                    executor
                        .execute("c-1", 1, &(), &ctx, |_, _, _| SideWrites::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (counter, version) = executor.load("c-1").await.unwrap();
    assert_eq!(u64::try_from(counter.count).unwrap(), CLIENTS * COMMANDS);
    assert_eq!(version, CLIENTS * COMMANDS);
    let versions: Vec<_> = log
        .read_stream(&stream("counter", "c-1"))
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, (1..=CLIENTS * COMMANDS).collect::<Vec<_>>());
}

/// The executor keeps the aggregates it folded, but never decides on a stale one: events
/// another node appended since are read before the next decision, and an append on a state
/// that moved meanwhile is decided again.
async fn an_executor_sees_what_another_node_appended_since_it_last_loaded(db_url: String) {
    use counter::Counter;
    use keyledger_store::{CommandContext, CommandExecutor, SideWrites};
    let ctx = CommandContext {
        tenant_id: Uuid::now_v7(),
        now: Utc::now(),
        metadata: EventMetadata::system(),
        decided_on: Vec::new(),
    };
    let here = CommandExecutor::<Counter>::new(open(&db_url).await);
    let there = CommandExecutor::<Counter>::new(open(&db_url).await);
    here.execute("c-1", 1, &(), &ctx, |_, _, _| SideWrites::default())
        .await
        .unwrap();
    assert_eq!(here.load("c-1").await.unwrap().0.count, 1);
    for by in [10, 100] {
        there
            .execute("c-1", by, &(), &ctx, |_, _, _| SideWrites::default())
            .await
            .unwrap();
    }
    let (counter, version) = here.load("c-1").await.unwrap();
    assert_eq!((counter.count, version), (111, 3));
    there
        .execute("c-1", 1000, &(), &ctx, |_, _, _| SideWrites::default())
        .await
        .unwrap();
    let executed = here
        .execute("c-1", 10_000, &(), &ctx, |_, _, _| SideWrites::default())
        .await
        .unwrap();
    assert_eq!((executed.aggregate.count, executed.version), (11_111, 5));
}

/// The executor decides first on the state it kept, and an append proves that state current.
/// A refusal proves nothing, so a refusal on a kept state is checked against the log: here a
/// decrement refused on the kept count of 0 is decided again on the 5 another node made it.
async fn a_refusal_on_a_kept_state_is_decided_again_on_the_log(db_url: String) {
    use keyledger_store::{CommandContext, CommandExecutor, ExecuteError, SideWrites};
    let ctx = CommandContext {
        tenant_id: Uuid::now_v7(),
        now: Utc::now(),
        metadata: EventMetadata::system(),
        decided_on: Vec::new(),
    };
    let here = CommandExecutor::<counter::Counter>::new(open(&db_url).await);
    let there = CommandExecutor::<counter::Counter>::new(open(&db_url).await);
    let none = |_: &_, _: &_, _: &[_]| SideWrites::default();
    here.execute("c-1", 1, &(), &ctx, none).await.unwrap();
    here.execute("c-1", -1, &(), &ctx, none).await.unwrap();
    there.execute("c-1", 5, &(), &ctx, none).await.unwrap();
    let executed = here.execute("c-1", -3, &(), &ctx, none).await.unwrap();
    assert_eq!((executed.aggregate.count, executed.version), (2, 4));
    // Where the log agrees with the kept state, the refusal stands.
    assert!(matches!(
        here.execute("c-1", -3, &(), &ctx, none).await,
        Err(ExecuteError::Domain(counter::BelowZero))
    ));
}

async fn a_decision_on_a_state_that_moved_on_is_refused_whole(db_url: String) {
    use keyledger_store::{
        CommandContext, CommandExecutor, DecidedOn, ExecuteError, SecretWrite, SideWrites,
    };
    let policy = stream("tenant", "t-1");
    let here = CommandExecutor::<counter::Counter>::new(open(&db_url).await);
    let there = open(&db_url).await;
    there
        .append(one(&policy, ExpectedVersion::NoStream))
        .await
        .unwrap();
    let ctx = |read: u64| CommandContext {
        tenant_id: Uuid::now_v7(),
        now: Utc::now(),
        metadata: EventMetadata::system(),
        decided_on: vec![DecidedOn {
            stream: policy.clone(),
            version: read,
        }],
    };
    let with_secret = |value: &'static str| {
        move |_: &_, _: &_, _: &[_]| SideWrites {
            secrets: vec![SecretWrite {
                kind: "password".into(),
                value: Some(value.into()),
            }],
            ..SideWrites::default()
        }
    };
    here.execute("c-1", 1, &(), &ctx(1), with_secret("hash-1"))
        .await
        .unwrap();
    // Another node changes the state the next decision reads.
    there
        .append(one(&policy, ExpectedVersion::Exact(1)))
        .await
        .unwrap();
    match here
        .execute("c-1", 1, &(), &ctx(1), with_secret("hash-2"))
        .await
    {
        Err(ExecuteError::Append(AppendError::DecidedOnStaleState {
            stream,
            read: 1,
            actual: 2,
        })) => assert_eq!(stream, policy),
        other => panic!("expected DecidedOnStaleState, got {other:?}"),
    }
    let counter = stream("counter", "c-1");
    assert_eq!(there.read_stream(&counter).await.unwrap().len(), 1);
    assert_eq!(
        there.secret(&counter, "password").await.unwrap().as_deref(),
        Some("hash-1"),
        "nothing of the refused decision is written"
    );
    let executed = here
        .execute("c-1", 1, &(), &ctx(2), with_secret("hash-3"))
        .await
        .unwrap();
    assert_eq!((executed.aggregate.count, executed.version), (2, 2));
}

mod counter {
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};

    /// Counts up and down, never below zero.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Counter {
        pub count: i64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    pub enum CounterEvent {
        #[serde(rename = "counter.incremented")]
        Incremented { by: i64 },
    }

    impl DomainEvent for CounterEvent {
        fn event_type(&self) -> String {
            "counter.incremented".into()
        }
        fn event_version(&self) -> String {
            "1".into()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("a counter never goes below zero")]
    pub struct BelowZero;

    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        type Command = i64;
        type Event = CounterEvent;
        type Error = BelowZero;
        type Services = ();

        async fn handle(
            &mut self,
            by: i64,
            _: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), BelowZero> {
            if self.count + by < 0 {
                return Err(BelowZero);
            }
            sink.write(CounterEvent::Incremented { by }, self).await;
            Ok(())
        }

        fn apply(&mut self, event: CounterEvent) {
            match event {
                CounterEvent::Incremented { by } => self.count += by,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL only

/// Two nodes on one database: an append on one wakes followers on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_an_append_on_another_node_wakes_local_followers() {
    let url = fresh_postgres_url().await;
    let here = open(&url).await;
    let there = open(&url).await;
    assert_eq!(here.database().backend(), Backend::Postgres);
    let mut woken = here.subscribe();
    let appended = there
        .append(one(&stream("user", "a"), ExpectedVersion::NoStream))
        .await
        .unwrap();
    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        woken.wait_for(|p| *p >= appended.last_position),
    )
    .await
    .expect("no notification from the other node")
    .map(|p| *p)
    .unwrap();
    assert_eq!(seen, 1);
}

/// Notifications sent while the listening connection is down are lost; the listener must
/// reconnect and catch up from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_followers_catch_up_after_the_listening_connection_drops() {
    let url = fresh_postgres_url().await;
    let here = open(&url).await;
    let there = open(&url).await;
    let killed = sqlx::query(
        "SELECT COUNT(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%') AS t",
    )
    .fetch_one(here.database().pool())
    .await
    .unwrap();
    assert_eq!(
        killed.try_get::<i64, _>("n").unwrap(),
        2,
        "both nodes listen"
    );
    let mut woken = here.subscribe();
    let appended = there
        .append(one(&stream("user", "a"), ExpectedVersion::NoStream))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(15),
        woken.wait_for(|p| *p >= appended.last_position),
    )
    .await
    .expect("the follower never caught up after the connection dropped")
    .unwrap();
}

/// Canonical bytes are stable: this is what the auditor's script in docs/log-format.md
/// recomputes.
#[test]
fn canonical_bytes_start_with_the_layout_version_and_position() {
    let event = keyledger_store::RecordedEvent {
        position: 258,
        event_id: Uuid::nil(),
        tenant_id: Uuid::nil(),
        stream: stream("k", "i"),
        stream_version: 1,
        event_type: "t".into(),
        schema_version: 1,
        recorded_at: Utc.timestamp_opt(0, 0).unwrap(),
        payload: "{}".into(),
        metadata: "{}".into(),
        prev_hash: GENESIS_HASH,
        hash: GENESIS_HASH,
    };
    let bytes = canonical_bytes(&event);
    assert_eq!(bytes[..9], [1, 0, 0, 0, 0, 0, 0, 1, 2]);
    assert_eq!(
        bytes.len(),
        1 + 8 + 16 + 16 + 9 + 9 + 8 + 9 + 4 + 8 + 10 + 10
    );
}

// ---------------------------------------------------------------------------------------

async fn a_ceremony_is_taken_once_and_not_after_it_expires(db_url: String) {
    let log = open(&db_url).await;
    let ceremonies = keyledger_store::CeremonyStore::new(log.database().clone());
    let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let ceremony = keyledger_store::Ceremony {
        purpose: "webauthn_assertion".into(),
        tenant_id: Uuid::from_u128(1),
        user_id: Some(Uuid::from_u128(2)),
        state: "{}".into(),
    };
    let expires = now + chrono::Duration::seconds(60);
    ceremonies.put("a", &ceremony, expires).await.unwrap();
    ceremonies.put("b", &ceremony, expires).await.unwrap();
    ceremonies.put("c", &ceremony, expires).await.unwrap();
    // Another purpose does not see it; a peek leaves it in place.
    assert_eq!(ceremonies.take("a", "other", now).await.unwrap(), None);
    assert!(
        ceremonies
            .peek("a", "webauthn_assertion", now)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        ceremonies
            .take("a", "webauthn_assertion", now)
            .await
            .unwrap(),
        Some(ceremony.clone())
    );
    assert_eq!(
        ceremonies
            .take("a", "webauthn_assertion", now)
            .await
            .unwrap(),
        None
    );
    // Expired at exactly 60 seconds.
    assert_eq!(
        ceremonies
            .take("b", "webauthn_assertion", expires)
            .await
            .unwrap(),
        None
    );
    // Sixteen racing takes: exactly one wins.
    let mut racers = Vec::new();
    for _ in 0..16 {
        let ceremonies = ceremonies.clone();
        racers.push(tokio::spawn(async move {
            ceremonies
                .take("c", "webauthn_assertion", now)
                .await
                .unwrap()
                .is_some()
        }));
    }
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(
        ceremonies.delete_expired(expires).await.unwrap(),
        1,
        "b is swept"
    );
}

fn personal_event(payload: serde_json::Value) -> NewEvent {
    NewEvent {
        metadata: EventMetadata {
            actor: Actor {
                kind: ActorKind::Admin,
                id: Some("admin-7".into()),
            },
            request_ip: Some("192.0.2.44".into()),
            user_agent: Some("AgentOfAda/1".into()),
            correlation_id: None,
        },
        ..new_event(payload)
    }
}

async fn a_subjects_personal_fields_are_sealed_in_the_log_and_revealed_to_readers(db_url: String) {
    let log = open(&db_url).await;
    let ada = stream("user", "0190a0b4-0000-7000-8000-00000000ada0");
    let created = personal_event(
        json!({"username": "AdaL", "email": "ada@example.com", "display_name": null, "n": 1}),
    );
    let request = append_request(&ada, ExpectedVersion::NoStream, vec![created.clone()]);
    let first = log.append(request.clone()).await.unwrap();
    // An idempotent retry seals to the same text, so it finds the original.
    assert_eq!(log.append(request).await.unwrap(), first);
    assert_eq!(count_events(&log).await, 1);

    let stored = log.read_stream(&ada).await.unwrap();
    let text = format!("{}{}", stored[0].payload, stored[0].metadata);
    for personal in ["AdaL", "ada@example.com", "192.0.2.44", "AgentOfAda"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }
    assert!(text.contains("kl1:"), "{text}");
    assert!(
        text.contains("admin-7"),
        "the actor is not personal data: {text}"
    );
    let key = log.secret(&ada, "data_key").await.unwrap();
    assert!(
        key.is_some(),
        "the key is written with the subject's first event"
    );

    let revealed = log.reveal(stored.clone()).await.unwrap();
    assert_eq!(revealed[0].payload_json().unwrap(), created.payload);
    assert_eq!(revealed[0].metadata().unwrap(), created.metadata);
    // The chain covers the sealed text.
    assert_eq!(stored[0].hash, event_hash(&GENESIS_HASH, &stored[0]));
    assert_eq!(verify_chain(&log, |_| {}).await.unwrap().first_break, None);

    // Later events of the subject are sealed with the same key.
    log.append(append_request(
        &ada,
        ExpectedVersion::Exact(1),
        vec![personal_event(json!({"email": "ada@elsewhere.example"}))],
    ))
    .await
    .unwrap();
    let all = log.read_all_revealed(0, 10).await.unwrap();
    assert_eq!(
        all[1].payload_json().unwrap()["email"],
        "ada@elsewhere.example"
    );
    let raw = log.read_all(0, 10).await.unwrap();
    assert!(!raw[1].payload.contains("elsewhere"));

    // A subject from before sealing (no key, stream not new) is stored as written.
    let olden = stream("user", "0190a0b4-0000-7000-8000-0000000001d0");
    log.append(append_request(
        &olden,
        ExpectedVersion::Any,
        vec![personal_event(json!({"username": "olden"}))],
    ))
    .await
    .unwrap();
    let olden_events = log.read_stream(&olden).await.unwrap();
    assert!(olden_events[0].payload.contains("olden"));
    assert_eq!(log.secret(&olden, "data_key").await.unwrap(), None);
}

async fn an_erased_subject_reveals_nothing_and_takes_no_more_events(db_url: String) {
    let log = open(&db_url).await;
    let ada = stream("user", "0190a0b4-0000-7000-8000-00000000ada1");
    log.append(append_request(
        &ada,
        ExpectedVersion::NoStream,
        vec![personal_event(
            json!({"username": "AdaL", "email": "ada@example.com"}),
        )],
    ))
    .await
    .unwrap();
    let mut erasure = append_request(
        &ada,
        ExpectedVersion::Exact(1),
        vec![personal_event(json!({"at": "2026-11-22T00:00:00Z"}))],
    );
    erasure.secrets.push(SecretWrite {
        kind: "data_key".into(),
        value: Some("erased".into()),
    });
    log.append(erasure).await.unwrap();

    let revealed = log
        .reveal(log.read_stream(&ada).await.unwrap())
        .await
        .unwrap();
    let payload = revealed[0].payload_json().unwrap();
    assert_eq!(payload["username"], "erased");
    assert_eq!(payload["email"], serde_json::Value::Null);
    let metadata = revealed[1].metadata().unwrap();
    assert_eq!((metadata.request_ip, metadata.user_agent), (None, None));
    assert_eq!(verify_chain(&log, |_| {}).await.unwrap().first_break, None);

    let refused = log.append(one(&ada, ExpectedVersion::Exact(2))).await;
    assert!(
        matches!(refused, Err(AppendError::SubjectErased { .. })),
        "{refused:?}"
    );
    assert_eq!(
        count_events(&log).await,
        2,
        "a refused append writes nothing"
    );
    // Claims and secrets alone may still change (an erasure's clean-up).
    let mut cleanup = append_request(&ada, ExpectedVersion::Any, vec![]);
    cleanup.secrets.push(SecretWrite {
        kind: "password_hash".into(),
        value: None,
    });
    log.append(cleanup).await.unwrap();
}

async fn a_selected_read_returns_the_events_of_its_classes_in_log_order(db_url: String) {
    let log = open(&db_url).await;
    let ada = stream("user", "0190a0b4-0000-7000-8000-00000000ada2");
    let app = stream("application", "0190a0b4-0000-7000-8000-0000000000a1");
    let other = stream("other", "1");
    let typed = |event_type: &str, payload: serde_json::Value| NewEvent {
        event_type: event_type.into(),
        ..personal_event(payload)
    };
    let appends = [
        (&ada, typed("user.created", json!({"username": "AdaL"}))),
        (&app, typed("application.created", json!({"n": 1}))),
        (&other, typed("other.thing", json!({"n": 2}))),
        (&ada, typed("user.totp.added", json!({"n": 3}))),
        // `_` in a prefix is a character, not a wildcard.
        (&ada, typed("user.mfaXrequirement.changed", json!({"n": 4}))),
        (&ada, typed("user.mfa_requirement.changed", json!({"n": 5}))),
        (&app, typed("application.renamed", json!({"n": 6}))),
        (
            &ada,
            typed("user.email.changed", json!({"email": "ada@example.com"})),
        ),
    ];
    for (stream, event) in appends {
        log.append(append_request(stream, ExpectedVersion::Any, vec![event]))
            .await
            .unwrap();
    }
    let filter = EventFilter::Only(vec![
        EventClass {
            stream_kind: "user",
            type_prefixes: &["user.totp.", "user.mfa_requirement.", "user.email."],
        },
        EventClass {
            stream_kind: "application",
            type_prefixes: &[],
        },
    ]);
    let positions =
        |events: &[RecordedEvent]| events.iter().map(|e| e.position).collect::<Vec<_>>();

    let selected = log
        .read_selected_revealed(0, 8, 100, &filter)
        .await
        .unwrap();
    assert_eq!(positions(&selected), [2, 4, 6, 7, 8]);
    // The filter's own test of an event agrees with the database's.
    let everything = log.read_all_revealed(0, 100).await.unwrap();
    let kept: Vec<_> = everything
        .iter()
        .filter(|e| filter.contains(e))
        .cloned()
        .collect();
    assert_eq!(selected, kept);
    assert_eq!(
        selected[4].payload_json().unwrap()["email"],
        "ada@example.com"
    );

    // Bounded by `after`, `to` and `limit`.
    let page = log
        .read_selected_revealed(2, 7, 100, &filter)
        .await
        .unwrap();
    assert_eq!(positions(&page), [4, 6, 7]);
    let page = log.read_selected_revealed(0, 8, 2, &filter).await.unwrap();
    assert_eq!(positions(&page), [2, 4]);
    assert!(
        log.read_selected_revealed(8, 8, 100, &filter)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        log.read_selected_revealed(0, 8, 100, &EventFilter::Only(vec![]))
            .await
            .unwrap()
            .is_empty()
    );
    let all = log
        .read_selected_revealed(1, 5, 100, &EventFilter::All)
        .await
        .unwrap();
    assert_eq!(positions(&all), [2, 3, 4, 5]);
    assert_eq!(all, everything[1..5]);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::fresh_sqlite_url()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::fresh_postgres_url().await).await;
                }
            )*
        }
    };
}

conformance!(
    appended_events_read_back_exactly_and_chain_from_genesis,
    expected_version_conflicts_report_the_actual_version,
    racing_writers_at_one_version_let_exactly_one_win,
    concurrent_appends_share_commits,
    an_event_id_is_appended_once_and_a_different_body_conflicts,
    racing_reservations_of_one_key_let_exactly_one_stream_win,
    a_released_key_can_be_reserved_by_another_stream,
    secrets_are_written_with_the_append_and_not_when_it_is_refused,
    a_follower_sees_every_event_exactly_once_while_sixteen_writers_append,
    verify_chain_finds_a_modified_a_deleted_and_two_swapped_events,
    sessions_expire_when_idle_or_old_and_can_be_revoked,
    reopening_the_database_keeps_everything,
    racing_commands_through_the_executor_are_all_recorded,
    an_executor_sees_what_another_node_appended_since_it_last_loaded,
    a_refusal_on_a_kept_state_is_decided_again_on_the_log,
    a_decision_on_a_state_that_moved_on_is_refused_whole,
    sessions_change_with_the_append_and_not_when_it_is_refused,
    a_ceremony_is_taken_once_and_not_after_it_expires,
    a_subjects_personal_fields_are_sealed_in_the_log_and_revealed_to_readers,
    an_erased_subject_reveals_nothing_and_takes_no_more_events,
    a_selected_read_returns_the_events_of_its_classes_in_log_order,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_database_that_can_lose_acknowledged_commits_is_refused() {
    let url = fresh_postgres_url().await;
    let name = url.rsplit('/').next().expect("a database name").to_owned();
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&url).await.expect("connect");
    sqlx::query(&format!(
        "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
    ))
    .execute(&admin)
    .await
    .expect("alter database");
    admin.close().await;
    let db = Database::connect(&url).await.expect("connect");
    match EventLog::open(db).await {
        Err(keyledger_store::StoreError::UnsafeDurability { setting, value }) => {
            assert_eq!(
                (setting.as_str(), value.as_str()),
                ("synchronous_commit", "off")
            );
        }
        Ok(_) => panic!("a log that can lose acknowledged events was opened"),
        Err(other) => panic!("unexpected error: {other}"),
    }
}
