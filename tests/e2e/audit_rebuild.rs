//! `keyledger replay rebuild`: fresh tables swapped in while the API serves, and `--compare`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, StatusCode};

use crate::audit_integrity::tamper;
use crate::{Backend, app, on_both_backends};

on_both_backends!(
    a_rebuild_swaps_in_fresh_tables_while_the_api_keeps_serving_every_row,
    compare_reports_every_difference_and_swaps_nothing_in,
);

async fn a_rebuild_swaps_in_fresh_tables_while_the_api_keeps_serving_every_row(backend: Backend) {
    let app = Arc::new(app(backend).await);
    const USERS: usize = 150;
    for i in 0..USERS {
        let created = app.create_user(&format!("user{i:03}"), None).await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    let head = app.head().await;
    let before = app.admin_read("/api/v1/users?limit=200", head).await.text();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (app, done) = (Arc::clone(&app), Arc::clone(&done));
        tokio::spawn(async move {
            let mut reads = 0;
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) || reads == 0 {
                let page = app
                    .admin(Method::GET, "/api/v1/users?limit=200", None)
                    .await;
                assert_eq!(page.status, StatusCode::OK, "{}", page.text());
                seen.push(page.json()["items"].as_array().unwrap().len());
                let audit = app
                    .admin(
                        Method::GET,
                        "/api/v1/audit?type=user.created&limit=1000",
                        None,
                    )
                    .await;
                seen.push(audit.json()["items"].as_array().unwrap().len());
                reads += 1;
            }
            seen
        })
    };
    let rebuilt = app.replay(&["rebuild"]).await;
    done.store(true, Ordering::SeqCst);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let seen = reader.await.unwrap();
    // Every read during the rebuild saw every user: never an empty or half-built view.
    assert!(seen.iter().all(|n| *n == USERS), "{seen:?}");
    let after = app.admin_read("/api/v1/users?limit=200", head).await.text();
    assert_eq!(before, after);
    // The server keeps folding new events on top of the swapped-in tables.
    let created = app.create_user("after-rebuild", None).await;
    let found = app
        .admin_read("/api/v1/users?q=after-rebuild", created.position())
        .await
        .json();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
}

async fn compare_reports_every_difference_and_swaps_nothing_in(backend: Backend) {
    let app = app(backend).await;
    let ada = app.create_user("ada", None).await;
    let id = ada.json()["user"]["id"].as_str().unwrap().to_owned();
    app.create_user("grace", None).await;
    app.login("nobody", "wrong-password-guess").await;
    let head = app.head().await;
    app.admin_read("/api/v1/users", head).await;

    let same = app.replay(&["rebuild", "--compare"]).await;
    let out = String::from_utf8_lossy(&same.stdout).into_owned();
    assert!(same.status.success(), "{out}");
    assert!(out.contains("users: 0 difference(s)"), "{out}");
    assert!(out.contains("audit: 0 difference(s)"), "{out}");

    tamper(
        &app,
        &[
            format!("UPDATE users_view SET display_name = 'tampered' WHERE user_id = '{id}'"),
            format!("DELETE FROM audit_view WHERE position = {head}"),
        ],
    )
    .await;
    let differ = app.replay(&["rebuild", "--compare"]).await;
    let out = String::from_utf8_lossy(&differ.stdout).into_owned();
    assert_eq!(differ.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "users_view {id}: display_name is tampered in the live view, NULL rebuilt"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("audit_view {head}: only in the rebuilt view")),
        "{out}"
    );
    // Nothing was swapped in.
    let user = app
        .admin(Method::GET, &format!("/api/v1/users/{id}"), None)
        .await
        .json();
    assert_eq!(user["display_name"], "tampered");

    let rebuilt = app.replay(&["rebuild"]).await;
    assert!(rebuilt.status.success());
    let user = app
        .admin(Method::GET, &format!("/api/v1/users/{id}"), None)
        .await
        .json();
    assert_eq!(user["display_name"], serde_json::Value::Null);
    let again = app.replay(&["rebuild", "--compare"]).await;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}
