//! Legacy U2F keys brought over by an admin import: refused when malformed or already known,
//! usable at login (also under a U2F AppID), renamable and deletable.

use keyledger_tests::authenticators::U2fKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::webauthn_mfa::{
    ORIGIN, assertion_begin, assertion_finish, enable_webauthn, events, mfa_token, user,
};
use crate::{Backend, TestApp, app, on_both_backends};

on_both_backends!(
    an_imported_u2f_key_logs_in_and_can_be_renamed_and_removed,
    a_u2f_key_registered_under_an_appid_logs_in_through_the_appid_extension,
    malformed_or_duplicate_u2f_imports_are_refused_and_write_nothing,
);

fn import_body(key: &U2fKey, counter: u32, app_id: Option<&str>) -> Value {
    json!({"key_handle": key.key_handle(), "public_key": key.public_key(), "counter": counter,
        "label": "Old YubiKey", "app_id": app_id})
}

async fn import(app: &TestApp, user_id: &str, body: Value) -> keyledger_tests::Answer {
    app.admin(
        Method::POST,
        &format!("/api/v1/users/{user_id}/credentials/import-u2f"),
        Some(body),
    )
    .await
}

/// U2F keys verify no user: the workflow must not require it.
async fn enable_for_u2f(app: &TestApp) {
    enable_webauthn(
        app,
        json!({"debug": true, "reauthentication": {"enabled": true, "attachment": "cross_platform",
            "user_verification": "discouraged"}}),
    )
    .await;
}

async fn an_imported_u2f_key_logs_in_and_can_be_renamed_and_removed(backend: Backend) {
    let app = app(backend).await;
    enable_for_u2f(&app).await;
    let id = user(&app, "ada").await;
    let mut key = U2fKey::new(7, 41);
    let imported = import(&app, &id, import_body(&key, 41, None)).await;
    assert_eq!(imported.status, StatusCode::CREATED, "{}", imported.text());
    let credential = &imported.json()["credential"];
    assert_eq!(credential["kind"], "legacy");
    assert_eq!(credential["credential_id"], key.key_handle().as_str());
    assert_eq!(credential["label"], "Old YubiKey");
    assert_eq!(credential["sign_count"], 41);
    assert_eq!(credential["registered_by"], "admin");
    let registered = events(&app, "user.webauthn.registered").await;
    assert_eq!(registered[0]["kind"], "legacy");
    assert!(!registered[0].to_string().contains(&key.public_key()));

    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    assert_eq!(
        begin["options"]["publicKey"]["allowCredentials"][0]["id"],
        key.key_handle().as_str()
    );
    assert!(begin["options"]["publicKey"]["extensions"]["appid"].is_null());
    let assertion = key.assert(ORIGIN, &begin["options"], None);
    let done = assertion_finish(&app, &mfa, &begin, assertion).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let used = events(&app, "user.webauthn.used").await;
    assert_eq!(used[0]["sign_count"], 42);

    // The counter the U2F server saw still counts: a key that goes back is a clone.
    key.set_counter(30);
    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    let cloned = assertion_finish(
        &app,
        &mfa,
        &begin,
        key.assert(ORIGIN, &begin["options"], None),
    )
    .await;
    assert_eq!(cloned.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        events(&app, "user.mfa.failed").await.last().unwrap()["reason"],
        "sign_count_regressed"
    );

    // Renamable and deletable like any key; no new legacy key can be registered.
    let path = format!("/api/v1/users/{id}/credentials/{}", key.key_handle());
    let renamed = app
        .admin(Method::PATCH, &path, Some(json!({"label": "Drawer key"})))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text());
    let register_legacy = app
        .admin(
            Method::POST,
            &format!("/api/v1/users/{id}/credentials/register/begin"),
            Some(json!({"kind": "legacy"})),
        )
        .await;
    assert_eq!(register_legacy.status, StatusCode::BAD_REQUEST);
    let removed = app
        .admin(
            Method::DELETE,
            &format!("{path}?confirm_lockout=true"),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());
    assert_eq!(
        events(&app, "user.webauthn.removed").await[0]["kind"],
        "legacy"
    );
    // Once removed, the same key may be imported again.
    let again = import(&app, &id, import_body(&key, 50, None)).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
}

async fn a_u2f_key_registered_under_an_appid_logs_in_through_the_appid_extension(backend: Backend) {
    let app = app(backend).await;
    enable_for_u2f(&app).await;
    let id = user(&app, "ada").await;
    let appid = "https://legacy.example.com";
    let mut key = U2fKey::new(9, 0);
    let imported = import(&app, &id, import_body(&key, 0, Some(appid))).await;
    assert_eq!(imported.status, StatusCode::CREATED, "{}", imported.text());

    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    assert_eq!(begin["options"]["publicKey"]["extensions"]["appid"], appid);
    // Signed for the AppID, the client saying it used the extension: accepted.
    let assertion = key.assert(ORIGIN, &begin["options"], Some(appid));
    let done = assertion_finish(&app, &mfa, &begin, assertion).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());

    // Signed for the AppID while the client claims the relying party id: refused.
    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    let mut assertion = key.assert(ORIGIN, &begin["options"], Some(appid));
    assertion["extensions"] = json!({});
    let refused = assertion_finish(&app, &mfa, &begin, assertion).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        events(&app, "user.mfa.failed").await.last().unwrap()["reason"],
        "wrong_relying_party"
    );
}

async fn malformed_or_duplicate_u2f_imports_are_refused_and_write_nothing(backend: Backend) {
    let app = app(backend).await;
    enable_for_u2f(&app).await;
    let ada = user(&app, "ada").await;
    let bob = user(&app, "bob").await;
    let key = U2fKey::new(3, 0);
    assert_eq!(
        import(&app, &ada, import_body(&key, 0, None)).await.status,
        StatusCode::CREATED
    );
    let head = app.head().await;

    // The same key handle, for the same user or another: 409.
    for owner in [&ada, &bob] {
        let duplicate = import(&app, owner, import_body(&key, 0, None)).await;
        assert_eq!(
            duplicate.status,
            StatusCode::CONFLICT,
            "{}",
            duplicate.text()
        );
        assert_eq!(duplicate.json()["code"], "credential_already_registered");
    }
    let other = U2fKey::new(4, 0);
    let cases = [
        (
            json!({"key_handle": "not base64!", "public_key": other.public_key(), "counter": 0}),
            "invalid_key_handle",
        ),
        (
            json!({"key_handle": "AAAAAAAA", "public_key": other.public_key(), "counter": 0}),
            "invalid_credential_id",
        ),
        (
            json!({"key_handle": other.key_handle(), "public_key": "BAAA", "counter": 0}),
            "invalid_u2f_public_key",
        ),
        // 65 bytes, uncompressed form, but not a point on P-256.
        (
            json!({"key_handle": other.key_handle(), "public_key": format!("BA{}", "A".repeat(85)),
            "counter": 0}),
            "invalid_u2f_public_key",
        ),
        (
            json!({"key_handle": other.key_handle(), "public_key": other.public_key(), "counter": 0,
            "app_id": "ftp://legacy.example.com"}),
            "invalid_app_id",
        ),
        (
            json!({"key_handle": other.key_handle(), "public_key": other.public_key(), "counter": 0,
            "label": ""}),
            "invalid_credential_label",
        ),
    ];
    for (body, code) in cases {
        let refused = import(&app, &bob, body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            refused.text()
        );
        assert_eq!(refused.json()["code"], code, "{body}");
    }
    let negative = import(
        &app,
        &bob,
        json!({"key_handle": other.key_handle(), "public_key": other.public_key(), "counter": -1}),
    )
    .await;
    assert_eq!(negative.status, StatusCode::BAD_REQUEST);
    let unknown_user = import(
        &app,
        "0199c7f0-7c00-7d4e-a2b3-c4d5e6f70901",
        import_body(&other, 0, None),
    )
    .await;
    assert_eq!(unknown_user.status, StatusCode::NOT_FOUND);
    let anonymous = app
        .request(
            Method::POST,
            &format!("/api/v1/users/{bob}/credentials/import-u2f"),
            None,
            Some(&import_body(&other, 0, None)),
            &[],
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.head().await, head, "a refused import writes nothing");
}
