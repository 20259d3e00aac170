//! Password reset through the mail outbox: a single-use token, and the user's second factor
//! when they hold one.

use keyledger_tests::authenticators::SoftKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    a_reset_token_from_the_outbox_sets_a_new_password_once,
    a_reset_needs_the_key_of_a_user_who_holds_one,
);

const ORIGIN: &str = "https://auth.example.com";
const NEW_PASSWORD: &str = "violet-anchor-meadow-quartz-7";

async fn post(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> keyledger_tests::Answer {
    app.request(Method::POST, path, token, Some(&body), &[])
        .await
}

/// The reset code in the newest mail to `recipient`.
async fn mailed_token(app: &TestApp, recipient: &str) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let row = sqlx::query(
        "SELECT body FROM mail_outbox WHERE recipient = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(recipient)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    let body: String = sqlx::Row::get(&row, "body");
    body.lines()
        .map(str::trim)
        .find(|l| l.len() >= 43 && !l.contains(' '))
        .unwrap_or_else(|| panic!("no code in {body}"))
        .to_owned()
}

async fn mails(app: &TestApp) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let count: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM mail_outbox")
            .fetch_one(&pool)
            .await
            .unwrap(),
        "n",
    );
    pool.close().await;
    count
}

async fn a_reset_token_from_the_outbox_sets_a_new_password_once(backend: Backend) {
    let app = app(backend).await;
    app.create_user("ada", Some(GOOD_PASSWORD)).await;
    let session = app.login("ada", GOOD_PASSWORD).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = post(
        &app,
        "/api/v1/password-reset",
        None,
        json!({"username": "nobody"}),
    )
    .await;
    let known = post(
        &app,
        "/api/v1/password-reset",
        None,
        json!({"email": "ada@example.com"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::ACCEPTED);
    assert_eq!(known.status, StatusCode::ACCEPTED);
    assert_eq!(unknown.bytes, known.bytes, "no account enumeration");
    assert_eq!(mails(&app).await, 1);
    let token = mailed_token(&app, "ada@example.com").await;

    let wrong = post(
        &app,
        "/api/v1/password-reset/complete",
        None,
        json!({"reset_token": "not-the-token", "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let done = post(
        &app,
        "/api/v1/password-reset/complete",
        None,
        json!({"reset_token": token, "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let again = post(
        &app,
        "/api/v1/password-reset/complete",
        None,
        json!({"reset_token": token, "new_password": "another-long-passphrase-9"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "single use");

    assert_eq!(
        app.login("ada", GOOD_PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.login("ada", NEW_PASSWORD).await.status, StatusCode::OK);
    let me = app
        .request(Method::GET, "/api/v1/me", Some(&session), None, &[])
        .await;
    assert_eq!(
        me.status,
        StatusCode::UNAUTHORIZED,
        "a reset ends the old sessions"
    );
    // The token is in no event.
    let head = app.head().await;
    let audit = app
        .admin_read("/api/v1/audit?type=user.password.*", head)
        .await;
    assert!(
        audit.text().contains("user.password.reset"),
        "{}",
        audit.text()
    );
    assert!(!audit.text().contains(&token));
}

async fn a_reset_needs_the_key_of_a_user_who_holds_one(backend: Backend) {
    let app = app(backend).await;
    let put = app.admin(Method::PUT, "/api/v1/settings/webauthn", Some(json!({
        "enabled": true, "relying_party_id": "example.com", "relying_party_name": null,
        "allowed_origins": [ORIGIN], "debug": false, "self_registration": true,
        "mfa_requirement": "optional",
        "bootstrap": {"enabled": false, "attachment": "any", "user_verification": "required"},
        "reauthentication": {"enabled": true, "attachment": "any", "user_verification": "required"},
    }))).await;
    assert_eq!(put.status, StatusCode::OK);
    app.create_user("ada", Some(GOOD_PASSWORD)).await;
    let session = app.login("ada", GOOD_PASSWORD).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut key = SoftKey::new();
    let begin = post(
        &app,
        "/api/v1/me/credentials/register/begin",
        Some(&session),
        json!({"kind": "security_key"}),
    )
    .await
    .json();
    let credential = key.register(ORIGIN, &begin["options"]);
    let registered = post(
        &app,
        "/api/v1/me/credentials/register/finish",
        Some(&session),
        json!({"ceremony_id": begin["ceremony_id"], "label": "k", "credential": credential}),
    )
    .await;
    assert_eq!(registered.status, StatusCode::CREATED);

    post(
        &app,
        "/api/v1/password-reset",
        None,
        json!({"username": "ada"}),
    )
    .await;
    let token = mailed_token(&app, "ada@example.com").await;
    let refused = post(
        &app,
        "/api/v1/password-reset/complete",
        None,
        json!({"reset_token": token, "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["code"], "second_factor_required");
    let begin = post(
        &app,
        "/api/v1/password-reset/webauthn/begin",
        None,
        json!({"reset_token": token}),
    )
    .await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    let begin = begin.json();
    let assertion = key.assert(ORIGIN, &begin["options"]);
    let done = post(
        &app,
        "/api/v1/password-reset/complete",
        None,
        json!({
            "reset_token": token, "new_password": NEW_PASSWORD,
            "ceremony_id": begin["ceremony_id"], "credential": assertion,
        }),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let login = app.login("ada", NEW_PASSWORD).await;
    assert_eq!(login.json()["status"], "mfa_required");
}
