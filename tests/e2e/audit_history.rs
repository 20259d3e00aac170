//! A user's past: the state as of a position or a time, and the authentication timeline.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    as_of_answers_what_the_view_showed_at_that_position_or_time,
    as_of_shows_the_credentials_and_factors_the_user_held_then,
    the_timeline_lists_attempts_locks_unlocks_and_password_changes_with_actor_and_ip,
);

struct Story {
    id: String,
    /// (log position, what `GET /users/{id}` answered once the views had reached it).
    snapshots: Vec<(u64, Value)>,
    created_view: Value,
    created_at_position: u64,
    locked_view: Value,
    locked_at_position: u64,
}

/// Created, locked by three wrong passwords, unlocked by an admin, renamed, password reset,
/// logged in: each view answer kept as it was then.
async fn story(app: &TestApp) -> Story {
    let policy =
        json!({"enabled": true, "max_failures": 3, "window_seconds": 900, "lock_seconds": null});
    assert_eq!(app.set_lockout(policy).await.status, StatusCode::OK);
    let created = app.create_user("ada", Some(GOOD_PASSWORD)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["user"]["id"].as_str().unwrap().to_owned();
    let created_at_position = created.position();
    let path = format!("/api/v1/users/{id}");
    let created_view = app.admin_read(&path, created_at_position).await.json();
    let mut snapshots = vec![(created_at_position, created_view.clone())];
    for _ in 0..3 {
        app.login("ada", "wrong-password-guess").await;
        let head = app.head().await;
        snapshots.push((head, app.admin_read(&path, head).await.json()));
    }
    let locked_at_position = app.head().await;
    let locked_view = app.admin_read(&path, locked_at_position).await.json();
    assert_eq!(locked_view["locked"], true, "{locked_view}");
    let unlocked = app
        .admin(Method::POST, &format!("{path}/unlock"), None)
        .await;
    assert_eq!(unlocked.status, StatusCode::OK, "{}", unlocked.text());
    let position = unlocked.position();
    snapshots.push((position, app.admin_read(&path, position).await.json()));
    let renamed = app
        .admin(Method::PATCH, &path, Some(json!({"username": "ada2"})))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text());
    let position = renamed.position();
    snapshots.push((position, app.admin_read(&path, position).await.json()));
    let reset = app
        .admin(
            Method::PUT,
            &format!("{path}/password"),
            Some(json!({"password": "another-long-passphrase-77"})),
        )
        .await;
    assert!(reset.status.is_success(), "{}", reset.text());
    let position = reset.position();
    snapshots.push((position, app.admin_read(&path, position).await.json()));
    assert_eq!(
        app.login("ada2", "another-long-passphrase-77").await.status,
        StatusCode::OK
    );
    let head = app.head().await;
    snapshots.push((head, app.admin_read(&path, head).await.json()));
    Story {
        id,
        snapshots,
        created_view,
        created_at_position,
        locked_view,
        locked_at_position,
    }
}

/// An `as_of` answer without what only `as_of` adds (the credentials and TOTP state then):
/// the rest is what `GET /users/{id}` showed.
fn view_part(mut answer: Value) -> Value {
    if let Some(fields) = answer.as_object_mut() {
        fields.remove("credentials");
        fields.remove("totp_enrolled");
    }
    answer
}

async fn as_of_shows_the_credentials_and_factors_the_user_held_then(backend: Backend) {
    use crate::webauthn_mfa::{enable_webauthn, register_own_key, session, user};
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    let id = user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = keyledger_tests::authenticators::SoftKey::new();
    let before = app.head().await;
    let registered = register_own_key(&app, &token, &mut key, "Blue key").await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let with_key = registered.position();
    let credential_id = registered.json()["credential"]["credential_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let removed = app
        .request(
            Method::DELETE,
            &format!("/api/v1/me/credentials/{credential_id}"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());
    let without_key = removed.position();
    assert!(before < with_key && with_key < without_key);

    let as_of = |position: u64| {
        let app = &app;
        let path = format!("/api/v1/users/{id}?as_of={position}");
        async move { app.admin_read(&path, without_key).await.json() }
    };
    let then = as_of(with_key).await;
    assert_eq!(then["mfa_webauthn"], 1, "{then}");
    assert_eq!(then["totp_enrolled"], false, "{then}");
    let credentials = then["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 1, "{then}");
    assert_eq!(credentials[0]["credential_id"], credential_id.as_str());
    assert_eq!(credentials[0]["label"], "Blue key");
    assert_eq!(credentials[0]["kind"], "security_key");
    for position in [before, without_key] {
        let then = as_of(position).await;
        assert_eq!(then["mfa_webauthn"], 0, "{then}");
        assert_eq!(then["credentials"], json!([]), "{then}");
    }

    // The command line shows the same.
    let out = app
        .replay(&["as-of", "--user", &id, "--position", &with_key.to_string()])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["credentials"][0]["label"], "Blue key");
    assert_eq!(printed["mfa"]["security_keys"], 1);
}

async fn as_of_answers_what_the_view_showed_at_that_position_or_time(backend: Backend) {
    let app = app(backend).await;
    let s = story(&app).await;
    let path = format!("/api/v1/users/{}", s.id);
    let as_of = |point: String| {
        let path = path.clone();
        let app = &app;
        async move {
            app.admin(Method::GET, &format!("{path}?as_of={point}"), None)
                .await
        }
    };
    // Every moment of the story: the fold agrees with what the view answered then.
    for (position, then) in &s.snapshots {
        let folded = as_of(position.to_string()).await;
        assert_eq!(&view_part(folded.json()), then, "as of position {position}");
    }
    let locked = as_of(s.locked_at_position.to_string()).await;
    assert_eq!(locked.status, StatusCode::OK, "{}", locked.text());
    assert_eq!(view_part(locked.json()), s.locked_view);
    assert_eq!(
        view_part(as_of(s.created_at_position.to_string()).await.json()),
        s.created_view
    );
    // Now: the same as the view.
    let head = app.head().await;
    assert_eq!(
        view_part(as_of(head.to_string()).await.json()),
        app.admin_read(&path, head).await.json()
    );
    // By time: the time the lock was recorded.
    let event = app
        .admin(
            Method::GET,
            &format!("/api/v1/events?after={}&limit=1", s.locked_at_position - 1),
            None,
        )
        .await
        .json();
    let at = event["items"][0]["recorded_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let encoded = at.replace('+', "%2B").replace(':', "%3A");
    assert_eq!(view_part(as_of(encoded).await.json()), s.locked_view);

    // The command line agrees.
    let position = s.locked_at_position.to_string();
    let out = app
        .replay(&["as-of", "--user", &s.id, "--position", &position])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in [
        "username",
        "status",
        "locked",
        "failed_login_count",
        "has_password",
    ] {
        assert_eq!(printed[field], s.locked_view[field], "{field}");
    }
    let out = app.replay(&["as-of", "--user", &s.id, "--at", &at]).await;
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["locked"], true);

    // Before the user existed; beyond the head; not a point.
    assert_eq!(as_of("1".into()).await.status, StatusCode::NOT_FOUND);
    let beyond = as_of((head + 100).to_string()).await;
    assert_eq!(beyond.status, StatusCode::BAD_REQUEST);
    assert_eq!(beyond.json()["code"], "invalid_parameter");
    assert_eq!(
        as_of("yesterday".into()).await.status,
        StatusCode::BAD_REQUEST
    );
    let out = app.replay(&["as-of", "--user", &s.id]).await;
    assert!(!out.status.success());
}

async fn the_timeline_lists_attempts_locks_unlocks_and_password_changes_with_actor_and_ip(
    backend: Backend,
) {
    let app = app(backend).await;
    let s = story(&app).await;
    let head = app.head().await;
    let path = format!("/api/v1/users/{}/timeline", s.id);
    let timeline = app.admin_read(&path, head).await;
    assert_eq!(timeline.status, StatusCode::OK, "{}", timeline.text());
    let items = timeline.json()["items"].as_array().unwrap().clone();
    let types: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "user.password.set",
            "user.login.failed",
            "user.login.failed",
            "user.login.failed",
            "user.locked",
            "user.unlocked",
            "user.password.set",
            "user.login.succeeded",
        ]
    );
    let positions: Vec<u64> = items
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(items[1]["actor"], "self");
    assert_eq!(items[1]["ip"], "127.0.0.1");
    assert_eq!(items[1]["outcome"], "failure");
    assert_eq!(items[5]["actor"], "admin");
    assert_eq!(items[7]["outcome"], "success");

    let first = app
        .admin_read(&format!("{path}?limit=3"), head)
        .await
        .json();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_u64().unwrap();
    let rest = app
        .admin_read(&format!("{path}?limit=100&cursor={cursor}"), head)
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 5);
    assert_eq!(rest["next_cursor"], Value::Null);

    let unknown = app
        .admin(
            Method::GET,
            &format!("/api/v1/users/{}/timeline", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let anonymous = app.request(Method::GET, &path, None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
