//! Webhooks through the real binary to a real receiver that verifies every signature with the
//! `standardwebhooks` package from PyPI: order, completeness, retries, dead letters, 410,
//! rotation, resync, redelivery, crashes, leases and the address guard.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use keyledger_tests::receiver::{Received, Receiver, accepted_positions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{BIN, Backend, GOOD_PASSWORD, TestApp, on_both_backends};

/// Tests deliver to the receiver on loopback over plain http; retries come fast.
const ENV: &[(&str, &str)] = &[
    ("KEYLEDGER_WEBHOOK_ALLOW", "loopback,http"),
    (
        "KEYLEDGER_WEBHOOK_RETRY_SCHEDULE",
        "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
    ),
    ("KEYLEDGER_WEBHOOK_LEASE_SECONDS", "2"),
];

async fn app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let mut env: Vec<(&str, &str)> = ENV
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .copied()
        .collect();
    env.extend_from_slice(extra);
    TestApp::spawn_with(BIN, backend, &env).await
}

/// Creates a subscription; returns its id and its secret.
async fn subscribe(app: &TestApp, url: &str, types: &[&str]) -> (String, String) {
    let answer = app
        .admin(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({ "url": url, "event_types": types, "description": "test receiver" })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    let body = answer.json();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn users(app: &TestApp, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let created = app.create_user(&format!("{prefix}{n}"), None).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
        ids.push(created.json()["user"]["id"].as_str().unwrap().to_owned());
    }
    ids
}

fn created_users(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .filter(|r| (200..300).contains(&r.status) && r.payload["type"] == "user.created")
        .map(|r| r.payload["data"]["user_id"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_increasing(positions: &[u64]) {
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "deliveries out of log order: {positions:?}"
    );
}

async fn subscription(app: &TestApp, id: &str) -> Value {
    let head = app.head().await;
    app.admin_read(&format!("/api/v1/webhooks/{id}"), head)
        .await
        .json()
}

async fn attempts(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    // Read after the subscription's creation: the views fold it a moment after the answer,
    // and one more view following the log (applications) made that moment long enough to see.
    let head = app.head().await;
    let answer = app
        .admin_read(&format!("/api/v1/webhooks/{id}/attempts{query}"), head)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.json()["attempts"].as_array().unwrap().clone()
}

/// Polls `check` for up to 60 s.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

on_both_backends!(
    every_event_arrives_signed_in_log_order,
    a_receiver_that_is_down_gets_everything_in_order_once_up,
    a_kill_during_delivery_loses_nothing,
);

async fn every_event_arrives_signed_in_log_order(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(
        &app,
        &receiver.url("/hook"),
        &["user.created", "user.login.*"],
    )
    .await;
    receiver.trust(&[&secret]).await;
    let ids = users(&app, "order", 5).await;
    app.admin(
        Method::PUT,
        &format!("/api/v1/users/{}/password", ids[0]),
        Some(json!({ "password": GOOD_PASSWORD })),
    )
    .await;
    app.login("order0", GOOD_PASSWORD).await;
    app.login("order0", "wrong-password-entirely").await;
    app.login("nobody-at-all", "wrong-password-entirely").await;

    let received = receiver
        .wait_until("5 creations and 3 login attempts", |r| r.len() >= 8)
        .await;
    assert_eq!(received.len(), 8, "only the subscribed types arrive");
    for delivery in &received {
        assert_eq!(
            delivery.verified_with,
            vec![0],
            "standardwebhooks verified it"
        );
        assert_eq!(
            delivery.schema_errors, None,
            "the body matches its published schema"
        );
        assert_eq!(
            delivery.webhook_id,
            delivery.payload["id"].as_str().unwrap()
        );
        assert!(delivery.signature.starts_with("v1,"));
        let payload = &delivery.payload;
        assert_eq!(payload["hash"].as_str().unwrap().len(), 64);
        assert_eq!(payload["prev_hash"].as_str().unwrap().len(), 64);
        assert!(payload["tenant_id"].is_string() && payload["time"].is_string());
        assert!(!delivery.raw.contains(GOOD_PASSWORD) && !delivery.raw.contains(&secret));
    }
    assert_eq!(created_users(&received), ids);
    assert_increasing(&accepted_positions(&received));
    let types: Vec<&str> = received[5..]
        .iter()
        .map(|r| r.payload["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "user.login.succeeded",
            "user.login.failed",
            "user.login.failed"
        ]
    );
    // The attempts are on record, per subscription and per event. The worker records an
    // attempt once the receiver has answered, so the last one may lag its arrival a moment.
    let first = &received[0];
    eventually("8 attempts on record", || async {
        attempts(&app, &id, "").await.len() == 8
    })
    .await;
    let per_subscription = attempts(&app, &id, "").await;
    assert_eq!(per_subscription.len(), 8);
    assert!(
        per_subscription.iter().all(|a| a["outcome"] == "delivered"
            && a["status_code"] == 200
            && a["trigger"] == "log")
    );
    let per_event = app
        .admin(
            Method::GET,
            &format!("/api/v1/webhooks/attempts?event_id={}", first.webhook_id),
            None,
        )
        .await
        .json();
    assert_eq!(per_event["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        per_event["attempts"][0]["response_body"],
        "{\"status\": 200}"
    );
}

async fn a_receiver_that_is_down_gets_everything_in_order_once_up(backend: Backend) {
    let app = app_with(backend, &[]).await;
    // Take a free port and let it go: deliveries to it are refused until the receiver binds it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (id, secret) = subscribe(&app, &url, &["user.created"]).await;
    let ids = users(&app, "down", 6).await;
    eventually("failed attempts while the receiver is down", || async {
        attempts(&app, &id, "").await.len() >= 3
    })
    .await;
    let failed = attempts(&app, &id, "").await;
    assert!(failed.iter().all(|a| a["outcome"] == "failed"
        && a["status_code"].is_null()
        && a["error"].as_str().unwrap().contains("connection")));
    assert!(
        failed
            .iter()
            .all(|a| a["position"] == failed[0]["position"]),
        "nothing after the first undelivered event goes out before it"
    );

    let receiver = Receiver::start_on(port, &[&secret]).await;
    let received = receiver
        .wait_until("all 6 creations", |r| r.len() >= 6)
        .await;
    assert_eq!(created_users(&received), ids);
    assert!(received.iter().all(|r| r.verified_with == vec![0]));
}

async fn a_kill_during_delivery_loses_nothing(backend: Backend) {
    let mut app = app_with(backend, &[]).await;
    let receiver = Receiver::start().await;
    let (_, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver
        .configure(json!({ "secrets": [secret], "delay_ms": 150 }))
        .await;
    let ids = users(&app, "crash", 20).await;
    receiver
        .wait_until("a few deliveries", |r| r.len() >= 3)
        .await;
    app.kill().await;
    app.start().await;
    let received = receiver
        .wait_until("every creation after the restart", |r| {
            created_users(r).into_iter().collect::<HashSet<_>>().len() >= 20
        })
        .await;
    // At least once: every event arrived; a duplicate is the same message, byte for byte.
    let mut bodies: HashMap<&str, &str> = HashMap::new();
    for delivery in &received {
        assert_eq!(delivery.verified_with, vec![0]);
        if let Some(earlier) = bodies.insert(&delivery.webhook_id, &delivery.raw) {
            assert_eq!(earlier, delivery.raw, "a redelivery carries the same body");
        }
    }
    let mut first_seen = Vec::new();
    for id in created_users(&received) {
        if !first_seen.contains(&id) {
            first_seen.push(id);
        }
    }
    assert_eq!(first_seen, ids, "first arrivals follow the log order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_with_the_same_id_until_a_2xx() {
    let app = app_with(Backend::Sqlite, &[]).await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver
        .configure(json!({ "secrets": [secret], "statuses": [500, 503, 500] }))
        .await;
    users(&app, "retry", 2).await;
    let received = receiver
        .wait_until("two accepted deliveries", |r| {
            accepted_positions(r).len() >= 2
        })
        .await;
    assert_eq!(received.len(), 5, "three failures, then both events");
    let first_id = &received[0].webhook_id;
    assert!(received[..4].iter().all(|r| &r.webhook_id == first_id));
    assert!(
        received[..4]
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );
    assert!(
        received.iter().all(|r| r.verified_with == vec![0]),
        "each signature is valid for its own timestamp"
    );
    // The receiver has the last delivery a moment before the server records the attempt
    // and counts it.
    let query = format!("?event_id={first_id}");
    eventually("the fourth attempt on record", || async {
        attempts(&app, &id, &query).await.len() >= 4
    })
    .await;
    let recorded = attempts(&app, &id, &query).await;
    let outcomes: Vec<(&str, u64, u64)> = recorded
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap(),
                a["status_code"].as_u64().unwrap(),
                a["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("failed", 500, 1),
            ("failed", 503, 2),
            ("failed", 500, 3),
            ("delivered", 200, 4)
        ]
    );
    let counted = |outcome: &'static str| {
        let app = &app;
        async move {
            app.metric(&format!(
                "keyledger_webhook_attempts_total{{outcome=\"{outcome}\"}}"
            ))
            .await
        }
    };
    eventually("both deliveries counted", || async {
        counted("delivered").await >= 2
    })
    .await;
    assert_eq!(counted("failed").await, 3);
    assert_eq!(counted("delivered").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_last_attempt_the_event_is_dead_lettered_and_a_failing_subscription_disabled() {
    let app = app_with(
        Backend::Sqlite,
        &[
            ("KEYLEDGER_WEBHOOK_RETRY_SCHEDULE", "100ms,100ms"),
            ("KEYLEDGER_WEBHOOK_DISABLE_AFTER", "2"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver
        .configure(json!({ "secrets": [secret], "status": 500 }))
        .await;
    users(&app, "dead", 3).await;
    eventually("the subscription to be disabled as failing", || async {
        subscription(&app, &id).await["disabled_reason"] == "failing"
    })
    .await;
    let body = subscription(&app, &id).await;
    assert_eq!(body["enabled"], false);
    // 3 attempts per event (the first and two retries), two events, then it stopped.
    let received = receiver.received().await;
    assert_eq!(received.len(), 6);
    let dead = app
        .admin(
            Method::GET,
            &format!("/api/v1/webhooks/{id}/dead-letters"),
            None,
        )
        .await
        .json();
    let dead = dead["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["type"], "user.created");
    let outcomes: Vec<String> = attempts(&app, &id, "")
        .await
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        [
            "failed",
            "failed",
            "dead_lettered",
            "failed",
            "failed",
            "dead_lettered"
        ]
    );
    // The disabling is an event of the log, by the system.
    let audit = app
        .admin(
            Method::GET,
            "/api/v1/audit?type=webhook.subscription.disabled",
            None,
        )
        .await
        .json();
    assert_eq!(audit["items"][0]["actor"], "system");

    // A dead letter can be sent again by hand once the receiver is fixed: same webhook-id.
    receiver.configure(json!({ "status": 200 })).await;
    let enabled = app
        .admin(Method::POST, &format!("/api/v1/webhooks/{id}/enable"), None)
        .await;
    assert_eq!(enabled.status, StatusCode::OK);
    let redelivered = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/redeliver"),
            Some(json!({ "position": dead[0]["position"] })),
        )
        .await;
    assert_eq!(
        redelivered.status,
        StatusCode::ACCEPTED,
        "{}",
        redelivered.text()
    );
    let received = receiver
        .wait_until("the redelivery", |r| accepted_positions(r).len() >= 2)
        .await;
    let redelivery = received
        .iter()
        .find(|r| r.status == 200 && r.payload["position"] == dead[0]["position"])
        .expect("the dead letter was redelivered");
    assert_eq!(redelivery.webhook_id, dead[0]["event_id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_subscription_and_stops_delivery() {
    let app = app_with(Backend::Sqlite, &[]).await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver
        .configure(json!({ "secrets": [secret], "status": 410 }))
        .await;
    users(&app, "gone", 1).await;
    eventually("the subscription to be disabled as gone", || async {
        subscription(&app, &id).await["disabled_reason"] == "gone"
    })
    .await;
    users(&app, "after", 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().await.len(),
        1,
        "no attempt after the 410"
    );
    let recorded = attempts(&app, &id, "").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["outcome"], "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_hold_up_other_subscriptions() {
    let app = app_with(
        Backend::Sqlite,
        &[("KEYLEDGER_WEBHOOK_TIMEOUT_SECONDS", "30")],
    )
    .await;
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    let (_, slow_secret) = subscribe(&app, &slow.url("/slow"), &["user.created"]).await;
    let (_, fast_secret) = subscribe(&app, &fast.url("/fast"), &["user.created"]).await;
    slow.configure(json!({ "secrets": [slow_secret], "delay_ms": 5000 }))
        .await;
    fast.trust(&[&fast_secret]).await;
    let ids = users(&app, "slow", 10).await;
    let received = fast
        .wait_until("all 10 at the fast receiver", |r| r.len() >= 10)
        .await;
    assert_eq!(created_users(&received), ids);
    assert!(
        slow.received().await.len() < 10,
        "the slow receiver is still working through its queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_counts_as_a_failed_attempt() {
    let app = app_with(
        Backend::Sqlite,
        &[("KEYLEDGER_WEBHOOK_TIMEOUT_SECONDS", "1")],
    )
    .await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver
        .configure(json!({ "secrets": [secret], "delay_ms": 3000 }))
        .await;
    users(&app, "timeout", 1).await;
    eventually("a timed-out attempt", || async {
        attempts(&app, &id, "")
            .await
            .iter()
            .any(|a| a["error"] == "timed out" && a["outcome"] == "failed")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_for_the_grace_period() {
    let app = app_with(Backend::Sqlite, &[]).await;
    let receiver = Receiver::start().await;
    let (id, old) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    let rotated = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            Some(json!({ "grace_seconds": 3600 })),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let new = rotated.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(rotated.json()["secret_version"], 2);
    assert_ne!(new, old);
    receiver.trust(&[&old, &new]).await;
    // Deliveries sign with what the subscriptions view holds: wait until it has the rotation.
    assert_eq!(subscription(&app, &id).await["secret_version"], 2);
    users(&app, "during", 1).await;
    let received = receiver.wait_until("one delivery", |r| !r.is_empty()).await;
    assert_eq!(
        received[0].verified_with,
        vec![0, 1],
        "both secrets verify during the grace period"
    );
    assert_eq!(received[0].signature.split(' ').count(), 2);

    // A rotation without grace: only the newest secret signs.
    let rotated = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            Some(json!({ "grace_seconds": 0 })),
        )
        .await;
    let newest = rotated.json()["secret"].as_str().unwrap().to_owned();
    receiver.trust(&[&new, &newest]).await;
    assert_eq!(subscription(&app, &id).await["secret_version"], 3);
    users(&app, "after", 1).await;
    let received = receiver
        .wait_until("a second delivery", |r| r.len() >= 2)
        .await;
    assert_eq!(
        received[1].verified_with,
        vec![1],
        "the rotated-out secret no longer verifies"
    );
    // The secret is shown only at creation and rotation: never read back, never in the log.
    let body = subscription(&app, &id).await;
    assert!(!body.to_string().contains("whsec_"));
    let events = app.replay(&["verify"]).await;
    assert!(events.status.success());
    assert!(!app.server_log().contains(&newest) && !app.server_log().contains(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_delivers_again_from_the_position_given() {
    let app = app_with(Backend::Sqlite, &[]).await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver.trust(&[&secret]).await;
    let ids = users(&app, "resync", 4).await;
    receiver.wait_until("4 deliveries", |r| r.len() >= 4).await;
    let resynced = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/resync"),
            Some(json!({ "after_position": 0 })),
        )
        .await;
    assert_eq!(resynced.status, StatusCode::OK, "{}", resynced.text());
    let received = receiver.wait_until("all 4 again", |r| r.len() >= 8).await;
    assert_eq!(created_users(&received[4..]), ids);
    assert_eq!(received[4].webhook_id, received[0].webhook_id);
    let beyond = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/resync"),
            Some(json!({ "after_position": 1_000_000 })),
        )
        .await;
    assert_eq!(beyond.status, StatusCode::BAD_REQUEST);
    assert_eq!(beyond.json()["code"], "invalid_position");
    app.assert_rebuilt_views_match().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_sends_a_signed_sample() {
    let app = app_with(Backend::Sqlite, &[]).await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver.trust(&[&secret]).await;
    let head = app.head().await;
    let ping = app
        .request(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/ping"),
            Some(&app.admin_token),
            None,
            &[("x-keyledger-min-position", &head.to_string())],
        )
        .await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text());
    assert_eq!(ping.json()["outcome"], "delivered");
    assert_eq!(ping.json()["trigger"], "ping");
    let received = receiver.wait_until("the ping", |r| !r.is_empty()).await;
    assert_eq!(received[0].payload["type"], "webhook.ping");
    assert_eq!(received[0].verified_with, vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_inside_our_network_are_refused_unless_allowed() {
    // The operator allows plain http here but no internal address.
    let app = app_with(Backend::Sqlite, &[("KEYLEDGER_WEBHOOK_ALLOW", "http")]).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://10.0.0.1/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00::1]/hook",
        "http://localhost:9/hook",
    ] {
        let answer = app
            .admin(
                Method::POST,
                "/api/v1/webhooks",
                Some(json!({ "url": url, "event_types": ["*"] })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(
            answer.json()["code"],
            "webhook_address_not_allowed",
            "{url}"
        );
    }
    let strict = app_with(Backend::Sqlite, &[("KEYLEDGER_WEBHOOK_ALLOW", "")]).await;
    let before = strict.head().await;
    let answer = strict
        .admin(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({ "url": "http://93.184.216.34/hook", "event_types": ["*"] })),
        )
        .await;
    assert_eq!(answer.json()["code"], "webhook_url_not_https");
    assert_eq!(
        strict.head().await,
        before,
        "a refused target writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_guard_is_checked_again_at_every_connection() {
    let mut app = app_with(Backend::Sqlite, &[]).await;
    let receiver = Receiver::start().await;
    // Registered while loopback was allowed, e.g. before the operator tightened the policy.
    let (id, secret) = subscribe(
        &app,
        &format!("http://localhost:{}/hook", receiver.port),
        &["user.created"],
    )
    .await;
    receiver.trust(&[&secret]).await;
    app.kill().await;
    app.set_env("KEYLEDGER_WEBHOOK_ALLOW", "http");
    app.start().await;
    users(&app, "guarded", 1).await;
    eventually("a refused attempt", || async {
        !attempts(&app, &id, "").await.is_empty()
    })
    .await;
    let recorded = attempts(&app, &id, "").await;
    assert_eq!(recorded[0]["outcome"], "failed");
    assert!(recorded[0]["status_code"].is_null());
    assert!(
        receiver.received().await.is_empty(),
        "no connection reached the receiver"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_managed_through_events_and_bad_input_is_refused() {
    let app = app_with(Backend::Sqlite, &[]).await;
    let (id, secret) = subscribe(&app, "http://127.0.0.1:9/hook", &["user.login.*"]).await;
    assert!(secret.starts_with("whsec_"));
    let updated = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(json!({ "event_types": ["user.created", "user.locked"], "description": "", "enabled": false })),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    let body = subscription(&app, &id).await;
    assert_eq!(body["event_types"], json!(["user.created", "user.locked"]));
    assert_eq!(body["description"], Value::Null);
    assert_eq!(body["enabled"], false);
    assert_eq!(body["disabled_reason"], "admin");
    let list = app
        .admin(Method::GET, "/api/v1/webhooks", None)
        .await
        .json();
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);

    for (body, code) in [
        (
            json!({ "url": "ftp://example.com", "event_types": ["*"] }),
            "invalid_webhook_url",
        ),
        (
            json!({ "url": "http://u:p@127.0.0.1/", "event_types": ["*"] }),
            "invalid_webhook_url",
        ),
        (
            json!({ "url": "http://127.0.0.1/", "event_types": [] }),
            "invalid_event_types",
        ),
        (
            json!({ "url": "http://127.0.0.1/", "event_types": ["User.Created"] }),
            "invalid_event_types",
        ),
        (
            json!({ "url": "http://127.0.0.1/", "event_types": ["*"], "description": "a\u{0}b" }),
            "invalid_description",
        ),
        (
            json!({ "url": "http://127.0.0.1/", "event_types": ["*"], "secret": "mine" }),
            "invalid_body",
        ),
    ] {
        let before = app.head().await;
        let answer = app
            .admin(Method::POST, "/api/v1/webhooks", Some(body.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.json()["code"], code, "{body}");
        assert_eq!(app.head().await, before, "a refused request writes nothing");
    }
    let grace = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            Some(json!({ "grace_seconds": 9_999_999 })),
        )
        .await;
    assert_eq!(grace.json()["code"], "invalid_grace_period");
    let redeliver = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/redeliver"),
            Some(json!({ "position": 0 })),
        )
        .await;
    assert_eq!(redeliver.json()["code"], "invalid_position");
    let unknown = "01890000-0000-7000-8000-000000000000";
    for (method, path) in [
        (Method::GET, format!("/api/v1/webhooks/{unknown}")),
        (Method::DELETE, format!("/api/v1/webhooks/{unknown}")),
        (Method::POST, format!("/api/v1/webhooks/{unknown}/ping")),
        (Method::GET, format!("/api/v1/webhooks/{unknown}/attempts")),
    ] {
        let answer = app.admin(method, &path, None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    let no_token = app
        .request(Method::GET, "/api/v1/webhooks", None, None, &[])
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);

    let deleted = app
        .admin(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let head = app.head().await;
    let gone = app
        .admin_read(&format!("/api/v1/webhooks/{id}"), head)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let types: Vec<String> = app
        .admin(Method::GET, "/api/v1/audit?type=webhook.*", None)
        .await
        .json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "webhook.subscription.created",
            "webhook.subscription.updated",
            "webhook.subscription.disabled",
            "webhook.subscription.deleted",
        ]
    );
    app.assert_rebuilt_views_match().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_hands_its_subscriptions_over_without_losing_or_reordering() {
    let mut first = app_with(Backend::Postgres, &[]).await;
    let receiver = Receiver::start().await;
    let (_, secret) = subscribe(&first, &receiver.url("/hook"), &["user.created"]).await;
    receiver.trust(&[&secret]).await;
    let mut ids = users(&first, "before", 3).await;
    receiver
        .wait_until("the first node's deliveries", |r| r.len() >= 3)
        .await;
    let env: Vec<(&str, &str)> = ENV.to_vec();
    let second = TestApp::spawn_on_with(BIN, &first.database_url, &first.admin_token, &env).await;
    first.kill().await;
    ids.extend(users(&second, "after", 5).await);
    let received = receiver
        .wait_until("every creation through the second node", |r| {
            created_users(r).into_iter().collect::<HashSet<_>>().len() >= 8
        })
        .await;
    let mut first_seen = Vec::new();
    for id in created_users(&received) {
        if !first_seen.contains(&id) {
            first_seen.push(id);
        }
    }
    assert_eq!(first_seen, ids);
    assert!(received.iter().all(|r| r.verified_with == vec![0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_retried_no_sooner() {
    let app = app_with(Backend::Sqlite, &[]).await;
    let receiver = Receiver::start().await;
    let (id, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver
        .configure(
            json!({ "secrets": [secret], "statuses": [429], "headers": { "retry-after": "2" } }),
        )
        .await;
    users(&app, "throttled", 1).await;
    let received = receiver.wait_until("the retry", |r| r.len() >= 2).await;
    assert_eq!(received[0].status, 429);
    assert_eq!(received[1].status, 200);
    // The schedule says 200 ms; the receiver asked for 2 s.
    assert!(
        received[1].timestamp - received[0].timestamp >= 2,
        "retried after {} s",
        received[1].timestamp - received[0].timestamp
    );
    let recorded = attempts(&app, &id, "").await;
    assert_eq!(recorded[0]["status_code"], 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let app = app_with(Backend::Sqlite, &[]).await;
    let receiver = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    let (id, secret) = subscribe(&app, &receiver.url("/hook"), &["user.created"]).await;
    receiver
        .configure(json!({
            "secrets": [secret],
            "statuses": [302],
            "headers": { "location": elsewhere.url("/stolen") },
        }))
        .await;
    users(&app, "redirected", 1).await;
    let received = receiver
        .wait_until("the retry after the redirect", |r| r.len() >= 2)
        .await;
    assert_eq!(received[0].status, 302);
    assert_eq!(received[1].status, 200);
    assert!(
        elsewhere.received().await.is_empty(),
        "the redirect was not followed"
    );
    let recorded = attempts(&app, &id, "").await;
    assert_eq!(recorded[0]["outcome"], "failed");
    assert_eq!(recorded[0]["status_code"], 302);
}
