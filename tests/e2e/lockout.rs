//! Lockout through the real binary: policy, lock, refusal, unlock, and racing guesses.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{BIN, Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    failed_logins_lock_the_account_until_an_admin_unlocks_it,
    fifty_parallel_wrong_passwords_lock_once_and_record_fifty_failures,
    a_lock_expires_by_itself,
    the_lockout_policy_refuses_values_beyond_nist_bounds,
);

async fn failed_logins_lock_the_account_until_an_admin_unlocks_it(backend: Backend) {
    let app = app(backend).await;
    let policy = app
        .set_lockout(json!({ "enabled": true, "max_failures": 3, "window_seconds": 600, "lock_seconds": null }))
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.text());
    assert_eq!(policy.json()["version"], 1);
    let id = app.create_user("ada", Some(GOOD_PASSWORD)).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        assert_eq!(
            app.login("ada", "wrong-password-guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked: the right password is refused with the same answer as any failure.
    let refused = app.login("ada", GOOD_PASSWORD).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json()["code"], "login_failed");
    let head = app
        .request(Method::GET, "/healthz", None, None, &[])
        .await
        .json()["log_position"]
        .as_u64()
        .unwrap();
    let user = app
        .admin_read(&format!("/api/v1/users/{id}"), head)
        .await
        .json();
    assert_eq!(user["locked"], true);
    assert!(user["locked_until"].is_null(), "until an admin unlocks");
    let locked_only = app
        .admin_read("/api/v1/users?locked=true", head)
        .await
        .json();
    assert_eq!(locked_only["items"].as_array().unwrap().len(), 1);

    // A prefix is matched as written: no wildcards, no case folding (SQLite's `LIKE` had both).
    for other in ["USER.", "user_login.*", "u%25."] {
        let none = app
            .admin_read(&format!("/api/v1/audit?user_id={id}&type={other}"), head)
            .await;
        assert_eq!(none.status, StatusCode::OK, "{}", none.text());
        assert_eq!(none.json()["items"], serde_json::json!([]), "{other}");
    }
    let audit = app
        .admin_read(&format!("/api/v1/audit?user_id={id}&type=user."), head)
        .await
        .json();
    let rows: Vec<String> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] != "user.created" && i["type"] != "user.password.set")
        .map(|i| {
            format!(
                "{}:{}",
                i["type"].as_str().unwrap(),
                i["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "user.login.failed:bad_password",
            "user.login.failed:bad_password",
            "user.login.failed:bad_password",
            "user.locked:too_many_failed_attempts",
            "user.login.failed:locked",
        ]
    );

    let unlocked = app
        .admin(Method::POST, &format!("/api/v1/users/{id}/unlock"), None)
        .await;
    assert_eq!(unlocked.status, StatusCode::OK);
    assert_eq!(unlocked.json()["user"]["locked"], false);
    let login = app.login("ada", GOOD_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    let audit = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&type=user.unlocked"),
            login.position(),
        )
        .await
        .json();
    assert_eq!(audit["items"][0]["actor"], "admin");
    assert_eq!(audit["items"][0]["reason"], "admin");
}

async fn fifty_parallel_wrong_passwords_lock_once_and_record_fifty_failures(backend: Backend) {
    let app = app(backend).await;
    let id = app.create_user("grace", Some(GOOD_PASSWORD)).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let attempts = (0..50).map(|i| {
        let app = &app;
        async move { app.login("grace", &format!("wrong-guess-number-{i}")).await }
    });
    let answers = futures::future::join_all(attempts).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::UNAUTHORIZED));
    let head = app
        .request(Method::GET, "/healthz", None, None, &[])
        .await
        .json()["log_position"]
        .as_u64()
        .unwrap();
    let failures = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&type=user.login.failed&limit=1000"),
            head,
        )
        .await
        .json();
    assert_eq!(failures["items"].as_array().unwrap().len(), 50);
    let locks = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&type=user.locked"),
            head,
        )
        .await
        .json();
    assert_eq!(
        locks["items"].as_array().unwrap().len(),
        1,
        "locked exactly once"
    );
    // At the policy's tenth wrong password (the default), not later: the other 40 found the
    // account locked.
    let locked_at = locks["items"][0]["position"].as_u64().unwrap();
    let failures = failures["items"].as_array().unwrap();
    let wrong: Vec<u64> = failures
        .iter()
        .filter(|f| f["reason"] == "bad_password")
        .map(|f| f["position"].as_u64().unwrap())
        .collect();
    assert_eq!(wrong.len(), 10, "{failures:?}");
    assert!(
        wrong.iter().all(|p| *p < locked_at),
        "{wrong:?} {locked_at}"
    );
    let refused_while_locked = failures.iter().filter(|f| f["reason"] == "locked");
    assert_eq!(refused_while_locked.count(), 40, "{failures:?}");
    let user = app
        .admin_read(&format!("/api/v1/users/{id}"), head)
        .await
        .json();
    assert_eq!(user["locked"], true);
}

/// A node decides logins under the tenant policy it keeps in memory; a policy another node
/// changed must still govern the next login there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_policy_changed_on_another_node_governs_the_next_login() {
    let first = app(Backend::Postgres).await;
    let second = TestApp::spawn_on(BIN, &first.database_url, &first.admin_token).await;
    let id = first.create_user("ada", Some(GOOD_PASSWORD)).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The first node decides one failure under the default policy (10 failures), and keeps
    // that policy.
    assert_eq!(
        first.login("ada", "wrong-password-guess").await.status,
        StatusCode::UNAUTHORIZED
    );
    let policy = second
        .set_lockout(json!({ "enabled": true, "max_failures": 2, "window_seconds": 600, "lock_seconds": null }))
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.text());
    let version = policy.json()["version"].as_u64().unwrap();
    assert_eq!(
        first.login("ada", "wrong-password-guess").await.status,
        StatusCode::UNAUTHORIZED
    );
    let refused = first.login("ada", GOOD_PASSWORD).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "locked by the new policy"
    );
    let head = first.head().await;
    let user = first
        .admin_read(&format!("/api/v1/users/{id}"), head)
        .await
        .json();
    assert_eq!(user["locked"], true);
    let events = first
        .admin(Method::GET, "/api/v1/events?limit=1000", None)
        .await;
    let locks: Vec<Value> = events.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "user.locked")
        .map(|e| serde_json::from_str(e["payload"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(locks.len(), 1, "{}", events.text());
    assert_eq!(
        locks[0]["policy_version"].as_u64(),
        Some(version),
        "the lock names the policy that decided it"
    );
}

async fn a_lock_expires_by_itself(backend: Backend) {
    let app = app(backend).await;
    app.set_lockout(
        json!({ "enabled": true, "max_failures": 2, "window_seconds": 600, "lock_seconds": 1 }),
    )
    .await;
    let id = app.create_user("hedy", Some(GOOD_PASSWORD)).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.login("hedy", "wrong-password-guess").await;
    app.login("hedy", "wrong-password-guess").await;
    assert_eq!(
        app.login("hedy", GOOD_PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The lock lasts one second; the event's own timestamps decide, not this sleep's precision.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let ok = app.login("hedy", GOOD_PASSWORD).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let unlocks = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&type=user.unlocked"),
            ok.position(),
        )
        .await
        .json();
    assert_eq!(unlocks["items"][0]["reason"], "expiry");
    assert_eq!(unlocks["items"][0]["actor"], "self");
}

async fn the_lockout_policy_refuses_values_beyond_nist_bounds(backend: Backend) {
    let app = app(backend).await;
    let too_many = app
        .set_lockout(json!({ "enabled": true, "max_failures": 101, "window_seconds": 600, "lock_seconds": 60 }))
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many.json()["code"], "invalid_lockout_policy");
    let current = app
        .admin(Method::GET, "/api/v1/settings/lockout", None)
        .await
        .json();
    assert_eq!(current["max_failures"], 10);
    assert_eq!(current["version"], 0);
}
