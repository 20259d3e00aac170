//! No password, hash or token in an event, a view, an API answer or a log line (ASVS 16.2.5).

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;

use crate::{BIN, Backend, TestApp, on_both_backends};

on_both_backends!(canary_secrets_appear_nowhere_but_where_they_must);

/// Every row of every table as text, except the secrets table (which holds hashes by design)
/// when `skip_secrets`.
pub async fn dump_database(app: &TestApp, backend: Backend, skip_secrets: bool) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let tables_sql = match backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        Backend::Postgres => "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
    };
    let tables: Vec<String> = sqlx::query(tables_sql)
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    let mut dump = String::new();
    for table in tables {
        if skip_secrets && table == "secrets" {
            continue;
        }
        let sql = match backend {
            Backend::Sqlite => format!("SELECT * FROM \"{table}\""),
            Backend::Postgres => format!("SELECT row_to_json(t)::text FROM \"{table}\" t"),
        };
        for row in sqlx::query(&sql).fetch_all(&pool).await.unwrap() {
            for i in 0..sqlx::Row::len(&row) {
                if let Ok(text) = row.try_get::<String, _>(i) {
                    dump.push_str(&text);
                } else if let Ok(bytes) = row.try_get::<Vec<u8>, _>(i) {
                    dump.push_str(&String::from_utf8_lossy(&bytes));
                }
                dump.push('\t');
            }
            dump.push('\n');
        }
    }
    pool.close().await;
    dump
}

async fn canary_secrets_appear_nowhere_but_where_they_must(backend: Backend) {
    let app = TestApp::spawn_with(
        BIN,
        backend,
        &[("KEYLEDGER_WEBHOOK_ALLOW", "loopback,http")],
    )
    .await;
    let canary = format!("CANARY-{}", uuid::Uuid::now_v7().simple());
    let first = format!("{canary}-first-password");
    let wrong = format!("{canary}-wrong-password");
    let second = format!("{canary}-second-password");
    let by_admin = format!("{canary}-admin-password");
    let mut answers = Vec::new();

    let created = app.create_user("ada", Some(&first)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let id = created.json()["user"]["id"].as_str().unwrap().to_owned();
    answers.push(created.text());
    answers.push(app.login("ada", &wrong).await.text());
    let login = app.login("ada", &first).await;
    let token = login.json()["token"].as_str().unwrap().to_owned();
    let changed = app
        .request(
            Method::POST,
            "/api/v1/me/password",
            Some(&token),
            Some(&json!({ "current_password": first, "new_password": second })),
            &[],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    answers.push(changed.text());
    let set = app
        .admin(
            Method::PUT,
            &format!("/api/v1/users/{id}/password"),
            Some(json!({ "password": by_admin })),
        )
        .await;
    answers.push(set.text());
    // A webhook subscription: its signing secret is shown once, in this answer only.
    let subscribed = app
        .admin(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({ "url": "http://127.0.0.1:9/in", "event_types": ["*"] })),
        )
        .await;
    let webhook_secret = subscribed.json()["secret"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    let subscription = subscribed.json()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let rotated = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{subscription}/rotate-secret"),
            Some(json!({})),
        )
        .await;
    let rotated_secret = rotated.json()["secret"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    let head = app.head().await;
    answers.push(app.admin_read("/api/v1/webhooks", head).await.text());
    answers.push(
        app.admin_read(&format!("/api/v1/webhooks/{subscription}"), head)
            .await
            .text(),
    );
    answers.push(
        app.admin_read("/api/v1/audit?limit=1000", head)
            .await
            .text(),
    );
    answers.push(
        app.admin_read(&format!("/api/v1/users/{id}"), head)
            .await
            .text(),
    );
    answers.push(app.admin_read("/api/v1/users", head).await.text());
    answers.push(
        app.request(Method::GET, "/metrics", None, None, &[])
            .await
            .text(),
    );

    assert!(webhook_secret.starts_with("whsec_") && rotated_secret.starts_with("whsec_"));
    for answer in &answers {
        assert!(
            !answer.contains("whsec_"),
            "an API answer repeats a webhook secret: {answer}"
        );
        assert!(
            !answer.contains(&canary),
            "an API answer carries a password: {answer}"
        );
        assert!(
            !answer.contains("$argon2"),
            "an API answer carries a hash: {answer}"
        );
        assert!(!answer.contains(&token), "an API answer repeats the token");
    }
    let log = app.server_log();
    assert!(!log.is_empty(), "the server log was captured");
    assert!(!log.contains(&canary), "the server log carries a password");
    assert!(
        !log.contains(&token),
        "the server log carries a session token"
    );
    assert!(!log.contains("$argon2"), "the server log carries a hash");
    assert!(
        !log.contains("whsec_"),
        "the server log carries a webhook secret"
    );

    let everything = dump_database(&app, backend, false).await;
    assert!(
        everything.contains("$argon2id$v=19$m=19456,t=2,p=1$"),
        "hashes are kept"
    );
    assert!(
        !everything.contains(&canary),
        "the database holds a password in the clear"
    );
    assert!(
        !everything.contains(&token),
        "the database holds a session token in the clear"
    );
    let outside_secrets = dump_database(&app, backend, true).await;
    assert!(
        !outside_secrets.contains("$argon2"),
        "a hash is outside the secrets table"
    );
    assert!(
        everything.contains(&webhook_secret) && everything.contains(&rotated_secret),
        "webhook secrets are kept"
    );
    assert!(
        !outside_secrets.contains("whsec_"),
        "a webhook secret is outside the secrets table"
    );
}
