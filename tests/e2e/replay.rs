//! `keyledger replay verify` and `replay rebuild` against a real database.

use reqwest::{Method, StatusCode};

use crate::{Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    verify_passes_on_an_untouched_log_and_names_the_first_modified_event,
    a_rebuild_reaches_the_same_views,
);

async fn some_history(app: &TestApp) {
    for name in ["ada", "grace", "hedy"] {
        assert_eq!(
            app.create_user(name, Some(GOOD_PASSWORD)).await.status,
            StatusCode::CREATED
        );
        app.login(name, GOOD_PASSWORD).await;
        app.login(name, "wrong-password-guess").await;
    }
    app.login("nobody", "wrong-password-guess").await;
}

async fn views(app: &TestApp) -> (String, String) {
    let head = app.head().await;
    let users = app.admin_read("/api/v1/users?limit=200", head).await.text();
    let audit = app
        .admin_read("/api/v1/audit?limit=1000", head)
        .await
        .text();
    (users, audit)
}

async fn verify_passes_on_an_untouched_log_and_names_the_first_modified_event(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let head = app.head().await;
    let ok = app.replay(&["verify"]).await;
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains(&format!("{head} events verified")), "{out}");

    // Tamper with one event's payload directly in the database.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let changed = sqlx::query(
        "UPDATE events SET payload = replace(payload, 'bad_password', 'unknown_user') \
         WHERE position = (SELECT MIN(position) FROM events WHERE event_type = 'user.login.failed')",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    let tampered: i64 = sqlx::Row::get(
        &sqlx::query("SELECT MIN(position) FROM events WHERE event_type = 'user.login.failed'")
            .fetch_one(&pool)
            .await
            .unwrap(),
        0,
    );
    pool.close().await;
    let bad = app.replay(&["verify"]).await;
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "{out}");
    assert!(
        out.contains(&format!("chain broken at position {tampered}:")),
        "{out}"
    );
}

async fn a_rebuild_reaches_the_same_views(backend: Backend) {
    let app = app(backend).await;
    some_history(&app).await;
    let (users, audit) = views(&app).await;
    let rebuilt = app.replay(&["rebuild"]).await;
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let (users_after, audit_after) = views(&app).await;
    assert_eq!(users, users_after);
    assert_eq!(audit, audit_after);
    let unknown = app.replay(&["rebuild", "--projection", "nope"]).await;
    assert!(!unknown.status.success());
    // The server keeps serving through a rebuild.
    let health = app.request(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(health.status, StatusCode::OK);
}
