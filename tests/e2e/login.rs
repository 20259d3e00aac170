//! Password login, sessions, and the user's own password.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    a_user_logs_in_uses_the_session_and_logs_out,
    unknown_users_and_wrong_passwords_get_byte_identical_answers,
    suspending_a_user_ends_their_sessions_and_refuses_login,
    a_user_changes_their_password_with_the_current_one,
    password_rules_are_enforced_and_refusals_recorded,
    an_externally_managed_password_cannot_be_set_or_used,
);

async fn user_id(app: &TestApp, username: &str, password: Option<&str>) -> String {
    let created = app.create_user(username, password).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    created.json()["user"]["id"].as_str().unwrap().to_owned()
}

async fn a_user_logs_in_uses_the_session_and_logs_out(backend: Backend) {
    let app = app(backend).await;
    user_id(&app, "ada", Some(GOOD_PASSWORD)).await;
    let login = app.login("ada", GOOD_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let token = login.json()["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 43, "at least 256 bits of base64url");
    let by_email = app
        .request(
            Method::POST,
            "/api/v1/login",
            None,
            Some(&json!({ "email": "ADA@example.com", "password": GOOD_PASSWORD })),
            &[],
        )
        .await;
    assert_eq!(by_email.status, StatusCode::OK);

    let me = app
        .request(Method::GET, "/api/v1/me", Some(&token), None, &[])
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["username"], "ada");
    let out = app
        .request(Method::POST, "/api/v1/logout", Some(&token), None, &[])
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let after = app
        .request(Method::GET, "/api/v1/me", Some(&token), None, &[])
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    let audit = app
        .admin_read(
            "/api/v1/audit?type=user.login.succeeded",
            by_email.position(),
        )
        .await;
    let items = audit.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["outcome"], "success");
    assert_eq!(items[0]["ip"], "127.0.0.1");
}

async fn unknown_users_and_wrong_passwords_get_byte_identical_answers(backend: Backend) {
    let app = app(backend).await;
    user_id(&app, "grace", Some(GOOD_PASSWORD)).await;
    let wrong = app.login("grace", "not-her-password-at-all").await;
    let unknown = app.login("nobody-here", "not-her-password-at-all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.bytes, unknown.bytes);
    assert_eq!(wrong.content_type(), unknown.content_type());
    assert_eq!(wrong.json()["code"], "login_failed");

    // Both attempts are events; the unknown one names what was typed, in a stream of its own.
    let head = app
        .request(Method::GET, "/healthz", None, None, &[])
        .await
        .json()["log_position"]
        .as_u64()
        .unwrap();
    let audit = app
        .admin_read("/api/v1/audit?type=user.login.failed", head)
        .await;
    let items = audit.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["reason"], "bad_password");
    assert_eq!(items[1]["reason"], "unknown_user");
    assert_eq!(items[1]["identifier"], "nobody-here");
    assert!(
        items[1]["stream"]
            .as_str()
            .unwrap()
            .starts_with("unknown_login-")
    );
    assert!(items[1]["user_id"].is_null());
}

async fn suspending_a_user_ends_their_sessions_and_refuses_login(backend: Backend) {
    let app = app(backend).await;
    let id = user_id(&app, "linus", Some(GOOD_PASSWORD)).await;
    let token = app.login("linus", GOOD_PASSWORD).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let suspended = app
        .admin(Method::POST, &format!("/api/v1/users/{id}/suspend"), None)
        .await;
    assert_eq!(suspended.json()["user"]["status"], "suspended");
    let me = app
        .request(Method::GET, "/api/v1/me", Some(&token), None, &[])
        .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    let login = app.login("linus", GOOD_PASSWORD).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    let reactivated = app
        .admin(
            Method::POST,
            &format!("/api/v1/users/{id}/reactivate"),
            None,
        )
        .await;
    assert_eq!(reactivated.json()["user"]["status"], "active");
    // The old session stays ended; a new login works.
    let me = app
        .request(Method::GET, "/api/v1/me", Some(&token), None, &[])
        .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login("linus", GOOD_PASSWORD).await.status,
        StatusCode::OK
    );
    let audit = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&type=user.login.failed"),
            reactivated.position(),
        )
        .await;
    assert_eq!(audit.json()["items"][0]["reason"], "suspended");
}

async fn a_user_changes_their_password_with_the_current_one(backend: Backend) {
    let app = app(backend).await;
    user_id(&app, "margaret", Some(GOOD_PASSWORD)).await;
    let token = app.login("margaret", GOOD_PASSWORD).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_password = "apollo-guidance-computer-1969";
    let wrong_current = app
        .request(
            Method::POST,
            "/api/v1/me/password",
            Some(&token),
            Some(&json!({ "current_password": "wrong-wrong-wrong-wrong", "new_password": new_password })),
            &[],
        )
        .await;
    assert_eq!(wrong_current.status, StatusCode::FORBIDDEN);
    assert_eq!(wrong_current.json()["code"], "current_password_wrong");
    let changed = app
        .request(
            Method::POST,
            "/api/v1/me/password",
            Some(&token),
            Some(&json!({ "current_password": GOOD_PASSWORD, "new_password": new_password })),
            &[],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(
        app.login("margaret", GOOD_PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("margaret", new_password).await.status,
        StatusCode::OK
    );
    let audit = app
        .admin_read("/api/v1/audit?type=user.password.", changed.position())
        .await;
    let types: Vec<String> = audit.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["type"].as_str().unwrap(),
                i["actor"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            "user.password.set:admin",
            "user.password.rejected:self",
            "user.password.changed:self"
        ]
    );
}

async fn password_rules_are_enforced_and_refusals_recorded(backend: Backend) {
    let app = app(backend).await;
    let id = user_id(&app, "hedy", None).await;
    let set = |password: String| {
        let app = &app;
        let id = id.clone();
        async move {
            app.admin(
                Method::PUT,
                &format!("/api/v1/users/{id}/password"),
                Some(json!({ "password": password })),
            )
            .await
        }
    };
    let short = set("abcdefghijklmn".into()).await; // 14 code points
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(short.json()["code"], "password_rejected");
    assert_eq!(short.json()["reason"]["code"], "too_short");
    assert_eq!(short.json()["reason"]["min_length"], 15);
    assert_eq!(set("abcdefghijklmnö".into()).await.status, StatusCode::OK); // 15
    assert_eq!(set("🔐".repeat(15)).await.status, StatusCode::OK); // emoji count once each
    assert_eq!(set("x".repeat(64)).await.status, StatusCode::OK);
    let long = set("y".repeat(129)).await;
    assert_eq!(long.json()["reason"]["code"], "too_long");
    let common = set("1q2w3e4r5t6y7u8i9o0p".into()).await;
    assert_eq!(common.status, StatusCode::BAD_REQUEST, "{}", common.text());
    assert_eq!(common.json()["reason"]["code"], "blocklisted");
    let username = set("hedy@example.com".into()).await;
    assert_eq!(username.json()["reason"]["code"], "blocklisted");
    let spaces = set("correct horse battery staple".into()).await;
    assert_eq!(spaces.status, StatusCode::OK, "no composition rules");

    let head = app
        .request(Method::GET, "/healthz", None, None, &[])
        .await
        .json()["log_position"]
        .as_u64()
        .unwrap();
    let audit = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&type=user.password.rejected"),
            head,
        )
        .await;
    let reasons: Vec<String> = audit.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        ["too_short", "too_long", "blocklisted", "blocklisted"]
    );
}

async fn an_externally_managed_password_cannot_be_set_or_used(backend: Backend) {
    let app = app(backend).await;
    let id = user_id(&app, "barbara", Some(GOOD_PASSWORD)).await;
    let managed = app
        .admin(
            Method::PUT,
            &format!("/api/v1/users/{id}/password-management"),
            Some(json!({ "externally_managed": true })),
        )
        .await;
    assert_eq!(managed.status, StatusCode::OK);
    assert_eq!(managed.json()["user"]["password_externally_managed"], true);
    let set = app
        .admin(
            Method::PUT,
            &format!("/api/v1/users/{id}/password"),
            Some(json!({ "password": "a-brand-new-long-password" })),
        )
        .await;
    assert_eq!(set.status, StatusCode::CONFLICT);
    assert_eq!(set.json()["code"], "password_externally_managed");
    assert_eq!(
        app.login("barbara", GOOD_PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let head = app
        .request(Method::GET, "/healthz", None, None, &[])
        .await
        .json()["log_position"]
        .as_u64()
        .unwrap();
    let audit = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&cursor={}", managed.position()),
            head,
        )
        .await;
    let rows: Vec<String> = audit.json()["items"]
        .as_array()
        .unwrap()
        .iter()
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
            "user.password.rejected:externally_managed",
            "user.login.failed:externally_managed"
        ]
    );
}

on_both_backends!(a_hash_with_older_parameters_is_upgraded_at_the_next_login);

async fn a_hash_with_older_parameters_is_upgraded_at_the_next_login(backend: Backend) {
    let mut app =
        TestApp::spawn_with(crate::BIN, backend, &[("KEYLEDGER_ARGON2_M_COST", "8192")]).await;
    let id = user_id(&app, "ada", Some(GOOD_PASSWORD)).await;
    app.kill().await;
    // The operator raises the cost: the old hash still verifies, and is replaced.
    app.set_env("KEYLEDGER_ARGON2_M_COST", "19456");
    app.start().await;
    let login = app.login("ada", GOOD_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    let audit = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&type=user.password.rehashed"),
            login.position(),
        )
        .await;
    assert_eq!(
        audit.json()["items"].as_array().unwrap().len(),
        1,
        "{}",
        audit.text()
    );
    // The next login verifies against the new hash and needs no upgrade.
    let again = app.login("ada", GOOD_PASSWORD).await;
    assert_eq!(again.status, StatusCode::OK);
    let audit = app
        .admin_read(
            &format!("/api/v1/audit?user_id={id}&type=user.password.rehashed"),
            again.position(),
        )
        .await;
    assert_eq!(audit.json()["items"].as_array().unwrap().len(), 1);
}

on_both_backends!(the_tenant_password_policy_is_configurable_within_nist_bounds);

async fn the_tenant_password_policy_is_configurable_within_nist_bounds(backend: Backend) {
    let app = app(backend).await;
    let defaults = app
        .admin(Method::GET, "/api/v1/settings/password", None)
        .await;
    assert_eq!(
        defaults.json(),
        json!({ "min_length_single_factor": 15, "min_length_with_second_factor": 8, "max_length": 128, "position": null })
    );
    let below_nist = app
        .admin(
            Method::PUT,
            "/api/v1/settings/password",
            Some(json!({ "min_length_single_factor": 12, "min_length_with_second_factor": 8, "max_length": 128 })),
        )
        .await;
    assert_eq!(below_nist.status, StatusCode::BAD_REQUEST);
    assert_eq!(below_nist.json()["code"], "invalid_password_policy");
    let stricter = app
        .admin(
            Method::PUT,
            "/api/v1/settings/password",
            Some(json!({ "min_length_single_factor": 20, "min_length_with_second_factor": 8, "max_length": 256 })),
        )
        .await;
    assert_eq!(stricter.status, StatusCode::OK, "{}", stricter.text());
    assert!(stricter.json()["position"].as_u64().is_some());
    let id = user_id(&app, "ada", None).await;
    let nineteen = app
        .admin(
            Method::PUT,
            &format!("/api/v1/users/{id}/password"),
            Some(json!({ "password": "abcdefghijklmnopqrs" })),
        )
        .await;
    assert_eq!(nineteen.json()["reason"]["min_length"], 20);
    let long = app
        .admin(
            Method::PUT,
            &format!("/api/v1/users/{id}/password"),
            Some(json!({ "password": "z".repeat(200) })),
        )
        .await;
    assert_eq!(long.status, StatusCode::OK, "{}", long.text());
}

on_both_backends!(the_whole_password_is_verified_without_truncation_or_case_folding);

async fn the_whole_password_is_verified_without_truncation_or_case_folding(backend: Backend) {
    let app = app(backend).await;
    let long: String = "Correct-Horse-Battery-Staple-"
        .chars()
        .cycle()
        .take(100)
        .collect();
    user_id(&app, "ada", Some(&long)).await;
    let mut last_changed = long.clone();
    last_changed.pop();
    last_changed.push('!');
    let first_72: String = long.chars().take(72).collect();
    for wrong in [
        last_changed,
        first_72,
        long.to_lowercase(),
        long.to_uppercase(),
    ] {
        assert_eq!(
            app.login("ada", &wrong).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(app.login("ada", &long).await.status, StatusCode::OK);
    // NFKC: the same password typed in another Unicode normal form is the same password.
    let nfc = "caf\u{e9}-au-lait-sans-sucre-2025";
    let nfd = "cafe\u{301}-au-lait-sans-sucre-2025";
    user_id(&app, "grace", Some(nfc)).await;
    assert_eq!(app.login("grace", nfd).await.status, StatusCode::OK);
}
