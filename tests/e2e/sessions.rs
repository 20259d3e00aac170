//! Session lifetimes, what ends a session, and what a login records about its origin.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{BIN, Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    locking_an_account_ends_its_sessions,
    a_password_change_ends_the_other_sessions_when_asked,
    an_admin_signs_a_user_out_everywhere,
    a_session_ends_after_idling_and_at_its_absolute_limit,
    the_recorded_ip_is_the_socket_peer_not_a_forwarded_header,
    an_unknown_user_costs_one_password_verification_like_a_known_one,
);

async fn token(app: &TestApp, username: &str) -> String {
    let login = app.login(username, GOOD_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    login.json()["token"].as_str().unwrap().to_owned()
}

async fn me(app: &TestApp, token: &str) -> StatusCode {
    app.request(Method::GET, "/api/v1/me", Some(token), None, &[])
        .await
        .status
}

async fn locking_an_account_ends_its_sessions(backend: Backend) {
    let app = app(backend).await;
    app.set_lockout(
        json!({ "enabled": true, "max_failures": 2, "window_seconds": 600, "lock_seconds": 3600 }),
    )
    .await;
    let created = app.create_user("ada", Some(GOOD_PASSWORD)).await;
    let id = created.json()["user"]["id"].as_str().unwrap().to_owned();
    let session = token(&app, "ada").await;
    assert_eq!(me(&app, &session).await, StatusCode::OK);
    app.login("ada", "wrong-password-guess").await;
    app.login("ada", "wrong-password-guess").await;
    assert_eq!(me(&app, &session).await, StatusCode::UNAUTHORIZED);
    // Ended, not only refused while locked: an unlock does not bring it back.
    let unlocked = app
        .admin(Method::POST, &format!("/api/v1/users/{id}/unlock"), None)
        .await;
    assert_eq!(unlocked.status, StatusCode::OK, "{}", unlocked.text());
    let user = app
        .admin_read(&format!("/api/v1/users/{id}"), unlocked.position())
        .await;
    assert_eq!(user.json()["locked_until"], Value::Null, "{}", user.text());
    assert_eq!(me(&app, &session).await, StatusCode::UNAUTHORIZED);
    let fresh = token(&app, "ada").await;
    assert_eq!(me(&app, &fresh).await, StatusCode::OK);
}

async fn change(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
    end_others: Option<bool>,
) -> keyledger_tests::Answer {
    let mut body = json!({ "current_password": current, "new_password": new });
    if let Some(end_others) = end_others {
        body["end_other_sessions"] = json!(end_others);
    }
    app.request(
        Method::POST,
        "/api/v1/me/password",
        Some(token),
        Some(&body),
        &[],
    )
    .await
}

/// ASVS 5.0 7.4.3: a user who changes their password may end every other session with it;
/// the session that asks stays, and a refused change ends nothing.
async fn a_password_change_ends_the_other_sessions_when_asked(backend: Backend) {
    let app = app(backend).await;
    app.create_user("grace", Some(GOOD_PASSWORD)).await;
    let asking = token(&app, "grace").await;
    let laptop = token(&app, "grace").await;
    let refused = change(
        &app,
        &asking,
        "not-the-password-at-all",
        "cobol-compiler-a-0-1952",
        Some(true),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(me(&app, &laptop).await, StatusCode::OK);

    let kept = change(
        &app,
        &asking,
        GOOD_PASSWORD,
        "cobol-compiler-a-0-1952",
        None,
    )
    .await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.text());
    assert_eq!(
        me(&app, &laptop).await,
        StatusCode::OK,
        "by default others stay"
    );

    let phone = app.login("grace", "cobol-compiler-a-0-1952").await;
    let phone = phone.json()["token"].as_str().unwrap().to_owned();
    let ended = change(
        &app,
        &asking,
        "cobol-compiler-a-0-1952",
        "flow-matic-univac-1955",
        Some(true),
    )
    .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text());
    assert_eq!(me(&app, &asking).await, StatusCode::OK);
    assert_eq!(me(&app, &laptop).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &phone).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login("grace", "flow-matic-univac-1955").await.status,
        StatusCode::OK
    );
}

/// ASVS 5.0 7.4.5: an admin ends every session of one user, and the log says who did it; the
/// account stays usable and other users keep their sessions.
async fn an_admin_signs_a_user_out_everywhere(backend: Backend) {
    let app = app(backend).await;
    let created = app.create_user("ada", Some(GOOD_PASSWORD)).await;
    let id = created.json()["user"]["id"].as_str().unwrap().to_owned();
    app.create_user("linus", Some(GOOD_PASSWORD)).await;
    let (laptop, phone) = (token(&app, "ada").await, token(&app, "ada").await);
    let other = token(&app, "linus").await;

    let ended = app
        .admin(Method::POST, &format!("/api/v1/users/{id}/logout"), None)
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text());
    assert_eq!(ended.json()["user"]["status"], "active");
    assert_eq!(me(&app, &laptop).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &phone).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &other).await, StatusCode::OK);
    let again = token(&app, "ada").await;
    assert_eq!(me(&app, &again).await, StatusCode::OK);

    let timeline = app
        .admin_read(&format!("/api/v1/users/{id}/timeline"), ended.position())
        .await;
    let items = timeline.json();
    let signed_out: Vec<&Value> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "user.sessions.ended")
        .collect();
    assert_eq!(signed_out.len(), 1, "{}", timeline.text());
    assert_eq!(signed_out[0]["actor"], "admin");

    let missing = app
        .admin(
            Method::POST,
            &format!("/api/v1/users/{}/logout", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let anonymous = app
        .request(
            Method::POST,
            &format!("/api/v1/users/{id}/logout"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &again).await, StatusCode::OK);
    app.assert_rebuilt_views_match().await;
}

async fn a_session_ends_after_idling_and_at_its_absolute_limit(backend: Backend) {
    // Real time passes here: the limits are whole seconds, and the margins (over a second)
    // are wide enough for a loaded machine's request latency.
    let idle = TestApp::spawn_with(
        BIN,
        backend,
        &[
            ("KEYLEDGER_SESSION_IDLE_SECONDS", "2"),
            ("KEYLEDGER_SESSION_ABSOLUTE_SECONDS", "60"),
        ],
    )
    .await;
    idle.create_user("ada", Some(GOOD_PASSWORD)).await;
    let session = token(&idle, "ada").await;
    // Activity within the idle limit keeps the session alive past it.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(me(&idle, &session).await, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(me(&idle, &session).await, StatusCode::UNAUTHORIZED);

    let absolute = TestApp::spawn_with(
        BIN,
        backend,
        &[
            ("KEYLEDGER_SESSION_IDLE_SECONDS", "60"),
            ("KEYLEDGER_SESSION_ABSOLUTE_SECONDS", "3"),
        ],
    )
    .await;
    absolute.create_user("ada", Some(GOOD_PASSWORD)).await;
    let session = token(&absolute, "ada").await;
    let logged_in = std::time::Instant::now();
    assert_eq!(me(&absolute, &session).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(me(&absolute, &session).await, StatusCode::OK);
    // However busy it was, the session ends three seconds after login.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(logged_in.elapsed())).await;
    assert_eq!(me(&absolute, &session).await, StatusCode::UNAUTHORIZED);
}

async fn the_recorded_ip_is_the_socket_peer_not_a_forwarded_header(backend: Backend) {
    let app = app(backend).await;
    app.create_user("ada", Some(GOOD_PASSWORD)).await;
    let body = json!({ "username": "ada", "password": "wrong-password-guess" });
    let failed = app
        .request(
            Method::POST,
            "/api/v1/login",
            None,
            Some(&body),
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("user-agent", "probe/1.0"),
                ("x-correlation-id", "trace-123"),
            ],
        )
        .await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    let audit = app
        .admin_read("/api/v1/audit?type=user.login.failed", app.head().await)
        .await
        .json();
    let row = &audit["items"][0];
    assert_eq!(row["ip"], "127.0.0.1");
    assert_eq!(row["user_agent"], "probe/1.0");
    assert_eq!(row["correlation_id"], "trace-123");
}

async fn an_unknown_user_costs_one_password_verification_like_a_known_one(backend: Backend) {
    let app = app(backend).await;
    app.create_user("ada", Some(GOOD_PASSWORD)).await;
    let before = app.metric("keyledger_password_verifications_total").await;
    app.login("ada", "wrong-password-guess").await;
    let after_known = app.metric("keyledger_password_verifications_total").await;
    app.login("nobody", "wrong-password-guess").await;
    let after_unknown = app.metric("keyledger_password_verifications_total").await;
    assert_eq!(after_known - before, 1);
    assert_eq!(after_unknown - after_known, 1, "a dummy hash is verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgresql_see_each_others_writes() {
    let first = app(Backend::Postgres).await;
    let second = TestApp::spawn_on(BIN, &first.database_url, &first.admin_token).await;
    let created = first.create_user("ada", Some(GOOD_PASSWORD)).await;
    let id = created.json()["user"]["id"].as_str().unwrap().to_owned();
    // The second node's views follow the first node's append (LISTEN/NOTIFY or polling).
    let read = second
        .admin_read(&format!("/api/v1/users/{id}"), created.position())
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    // Logins on either node count toward one lockout, through the shared log.
    assert_eq!(
        second.login("ada", GOOD_PASSWORD).await.status,
        StatusCode::OK
    );
    assert_eq!(
        first.login("ada", GOOD_PASSWORD).await.status,
        StatusCode::OK
    );
}

/// Two servers on one SQLite file: no notification crosses between processes there, so the
/// second node's views follow the first node's appends by polling alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_sqlite_file_follow_each_other_by_polling() {
    let first = app(Backend::Sqlite).await;
    let second = TestApp::spawn_on(BIN, &first.database_url, &first.admin_token).await;
    for (writer, reader, name) in [(&first, &second, "ada"), (&second, &first, "grace")] {
        let created = writer.create_user(name, Some(GOOD_PASSWORD)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
        let id = created.json()["user"]["id"].as_str().unwrap().to_owned();
        let read = reader
            .admin_read(&format!("/api/v1/users/{id}"), created.position())
            .await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_the_openapi_document_are_served() {
    let app = app(Backend::Sqlite).await;
    let health = app.request(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let metrics = app.request(Method::GET, "/metrics", None, None, &[]).await;
    assert!(metrics.content_type().starts_with("text/plain"));
    assert!(metrics.text().contains("keyledger_log_head_position "));
    let openapi = app
        .request(Method::GET, "/openapi.json", None, None, &[])
        .await
        .json();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/users/{id}/unlock",
        "/api/v1/login",
        "/api/v1/settings/lockout",
        "/api/v1/audit",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} is documented");
    }
}
