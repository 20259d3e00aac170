//! Admin user management through the real binary.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{Backend, GOOD_PASSWORD, app, on_both_backends};

on_both_backends!(
    an_admin_creates_reads_updates_and_lists_users,
    usernames_and_emails_are_unique_case_insensitively,
    two_racing_creates_of_one_username_yield_one_user,
    admin_endpoints_refuse_a_missing_or_wrong_token,
);

async fn an_admin_creates_reads_updates_and_lists_users(backend: Backend) {
    let app = app(backend).await;
    let created = app.create_user("Ada", Some(GOOD_PASSWORD)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let body = created.json();
    let id = body["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["user"]["username"], "Ada");
    assert_eq!(body["user"]["has_password"], true);
    assert!(created.position() > 0);

    let read = app
        .admin_read(&format!("/api/v1/users/{id}"), created.position())
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json()["email"], "Ada@example.com");
    assert_eq!(read.json()["status"], "active");

    let patched = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(json!({ "display_name": "Ada Lovelace" })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text());
    let other = app.create_user("grace", None).await;
    let suspended = app
        .admin(
            Method::POST,
            &format!(
                "/api/v1/users/{}/suspend",
                other.json()["user"]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(suspended.status, StatusCode::OK);

    let all = app.admin_read("/api/v1/users", suspended.position()).await;
    assert_eq!(all.json()["items"].as_array().unwrap().len(), 2);
    let found = app
        .admin_read("/api/v1/users?q=lovelace", suspended.position())
        .await;
    let items = found.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["display_name"], "Ada Lovelace");
    let only_suspended = app
        .admin_read("/api/v1/users?status=suspended", suspended.position())
        .await;
    let items = only_suspended.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["username"], "grace");

    let page = app
        .admin_read("/api/v1/users?limit=1", suspended.position())
        .await;
    let cursor = page.json()["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .admin_read(&format!("/api/v1/users?limit=1&cursor={cursor}"), 0)
        .await;
    assert_eq!(next.json()["items"].as_array().unwrap().len(), 1);
    assert!(next.json()["next_cursor"].is_null());
}

async fn usernames_and_emails_are_unique_case_insensitively(backend: Backend) {
    let app = app(backend).await;
    assert_eq!(
        app.create_user("linus", None).await.status,
        StatusCode::CREATED
    );
    let again = app.create_user("LINUS", None).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["code"], "username_taken");
    let same_email = app
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({ "username": "torvalds", "email": "Linus@Example.com" })),
        )
        .await;
    assert_eq!(same_email.status, StatusCode::CONFLICT);
    assert_eq!(same_email.json()["code"], "email_taken");

    // A renamed user frees the old name.
    let id = app.create_user("margaret", None).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let renamed = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(json!({ "username": "hamilton" })),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text());
    // Its email stays taken; the freed name can be used again with another email.
    let reuse = |username: &str| {
        app.admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({ "username": username })),
        )
    };
    assert_eq!(reuse("margaret").await.status, StatusCode::CREATED);
    assert_eq!(reuse("Hamilton").await.status, StatusCode::CONFLICT);
}

async fn two_racing_creates_of_one_username_yield_one_user(backend: Backend) {
    let app = app(backend).await;
    let mut statuses = Vec::new();
    for round in 0..5 {
        let name = format!("racer{round}");
        let (a, b) = tokio::join!(app.create_user(&name, None), app.create_user(&name, None));
        statuses.push((a.status, b.status));
        let mut pair = [a.status, b.status];
        pair.sort();
        assert_eq!(
            pair,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}"
        );
    }
    let head = app.request(Method::GET, "/healthz", None, None, &[]).await;
    let users = app
        .admin_read(
            "/api/v1/users",
            head.json()["log_position"].as_u64().unwrap(),
        )
        .await;
    let all = users.json()["items"].as_array().unwrap().len();
    assert_eq!(all, 5, "{statuses:?}");
}

async fn admin_endpoints_refuse_a_missing_or_wrong_token(backend: Backend) {
    let app = app(backend).await;
    let none = app
        .request(Method::GET, "/api/v1/users", None, None, &[])
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.content_type(), "application/problem+json");
    assert_eq!(none.json()["code"], "unauthorized");
    let wrong = app
        .request(
            Method::GET,
            "/api/v1/users",
            Some("not-the-token"),
            None,
            &[],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // A user's session token is not an admin token.
    app.create_user("eve", Some(GOOD_PASSWORD)).await;
    let session = app.login("eve", GOOD_PASSWORD).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_user = app
        .request(Method::GET, "/api/v1/users", Some(&session), None, &[])
        .await;
    assert_eq!(as_user.status, StatusCode::UNAUTHORIZED);
}

on_both_backends!(the_audit_trail_filters_by_time_and_pages_by_position);

async fn the_audit_trail_filters_by_time_and_pages_by_position(backend: Backend) {
    let app = app(backend).await;
    for name in ["ada", "grace", "hedy", "linus"] {
        app.create_user(name, None).await;
    }
    let head = app.head().await;
    let all = app
        .admin_read("/api/v1/audit?type=user.created", head)
        .await
        .json()["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 4);
    let third_at = all[2]["recorded_at"].as_str().unwrap().to_owned();
    let encoded = third_at.replace('+', "%2B").replace(':', "%3A");
    let from = app
        .admin_read(
            &format!("/api/v1/audit?type=user.created&from={encoded}"),
            head,
        )
        .await
        .json();
    let positions: Vec<u64> = from["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        positions,
        [
            all[2]["position"].as_u64().unwrap(),
            all[3]["position"].as_u64().unwrap()
        ]
    );
    let to = app
        .admin_read(
            &format!("/api/v1/audit?type=user.created&to={encoded}"),
            head,
        )
        .await
        .json();
    assert_eq!(to["items"].as_array().unwrap().len(), 2);

    let first_page = app
        .admin_read("/api/v1/audit?type=user.created&limit=3", head)
        .await
        .json();
    assert_eq!(first_page["items"].as_array().unwrap().len(), 3);
    let cursor = first_page["next_cursor"].as_u64().unwrap();
    let second_page = app
        .admin_read(
            &format!("/api/v1/audit?type=user.created&limit=3&cursor={cursor}"),
            head,
        )
        .await
        .json();
    assert_eq!(second_page["items"].as_array().unwrap().len(), 1);
    assert_eq!(second_page["items"][0]["position"], all[3]["position"]);
    assert!(second_page["next_cursor"].is_null());
}

on_both_backends!(a_first_start_without_an_admin_token_prints_one_once);

async fn a_first_start_without_an_admin_token_prints_one_once(backend: Backend) {
    let mut app = keyledger_tests::TestApp::spawn_without_admin_token(crate::BIN, backend).await;
    let printed: Vec<&str> = app
        .startup_output
        .iter()
        .filter_map(|l| l.strip_prefix("admin token (shown once, keep it): "))
        .collect();
    assert_eq!(printed.len(), 1, "{:?}", app.startup_output);
    let token = printed[0].to_owned();
    assert!(token.len() >= 43);
    let users = app
        .request(Method::GET, "/api/v1/users", Some(&token), None, &[])
        .await;
    assert_eq!(users.status, StatusCode::OK);

    app.restart_after_kill().await;
    assert!(
        app.startup_output
            .iter()
            .all(|l| !l.contains("admin token")),
        "printed again: {:?}",
        app.startup_output
    );
    let again = app
        .request(Method::GET, "/api/v1/users", Some(&token), None, &[])
        .await;
    assert_eq!(again.status, StatusCode::OK, "the token survives a restart");
    let wrong = app
        .request(Method::GET, "/api/v1/users", Some("guess"), None, &[])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Only its hash is kept: the token itself is nowhere in the server's log.
    assert!(!app.server_log().contains(&token));
}
