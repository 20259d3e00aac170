//! WebAuthn and TOTP end to end, with webauthn-authenticator-rs's software passkey standing in
//! for the browser and the key: settings, registration by the user and by an admin, login with
//! a second factor, replays, clones, removal and enrollment.

use keyledger_tests::authenticators::{SoftKey, totp_code};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    a_user_registers_a_key_and_logs_in_with_password_and_key,
    a_registration_challenge_answers_once,
    an_assertion_from_another_origin_is_refused_and_recorded_in_debug_mode,
    a_sign_count_that_goes_backwards_is_refused_as_a_possible_clone,
    an_admin_registers_a_key_the_user_cannot_rename,
    self_registration_off_refuses_users_but_not_admins,
    a_workflow_limited_to_platform_authenticators_refuses_security_keys,
    wrong_totp_codes_after_the_password_lock_the_account,
    removing_the_last_key_when_mfa_is_required_needs_confirmation,
    totp_enrolls_with_a_first_code_logs_in_and_never_accepts_a_code_twice,
    a_user_who_must_enroll_gets_an_enrollment_token_or_a_clear_refusal,
    invalid_relying_party_settings_are_refused_with_the_reason,
    the_users_list_shows_and_filters_the_mfa_columns,
    passwordless_login_is_refused_when_the_bootstrap_workflow_is_off,
    changing_the_password_needs_a_fresh_factor_when_the_user_has_one,
);

pub(crate) const ORIGIN: &str = "https://auth.example.com";

pub async fn enable_webauthn(app: &TestApp, extra: Value) {
    let mut settings = json!({
        "enabled": true,
        "relying_party_id": "example.com",
        "relying_party_name": null,
        "allowed_origins": [ORIGIN],
        "debug": false,
        "bootstrap": {"enabled": false, "attachment": "any", "user_verification": "required"},
        "reauthentication": {"enabled": true, "attachment": "any", "user_verification": "required"},
        "self_registration": true,
        "mfa_requirement": "optional",
    });
    for (k, v) in extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    let put = app
        .admin(Method::PUT, "/api/v1/settings/webauthn", Some(settings))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
}

pub async fn user(app: &TestApp, name: &str) -> String {
    let created = app.create_user(name, Some(GOOD_PASSWORD)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    created.json()["user"]["id"].as_str().unwrap().to_owned()
}

pub async fn session(app: &TestApp, name: &str) -> String {
    let login = app.login(name, GOOD_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert_eq!(login.json()["status"], "authenticated", "{}", login.text());
    login.json()["token"].as_str().unwrap().to_owned()
}

pub(crate) async fn post(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> keyledger_tests::Answer {
    app.request(Method::POST, path, token, Some(&body), &[])
        .await
}

/// Registers a key for the session's user; answers the finish call.
pub async fn register_own_key(
    app: &TestApp,
    token: &str,
    key: &mut SoftKey,
    label: &str,
) -> keyledger_tests::Answer {
    let begin = post(
        app,
        "/api/v1/me/credentials/register/begin",
        Some(token),
        json!({"kind": "security_key"}),
    )
    .await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    let begin = begin.json();
    let credential = key.register(ORIGIN, &begin["options"]);
    post(
        app,
        "/api/v1/me/credentials/register/finish",
        Some(token),
        json!({"ceremony_id": begin["ceremony_id"], "label": label, "credential": credential}),
    )
    .await
}

/// Password, then `mfa_required`; answers the MFA token.
pub(crate) async fn mfa_token(app: &TestApp, name: &str) -> String {
    let login = app.login(name, GOOD_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let body = login.json();
    assert_eq!(body["status"], "mfa_required", "{body}");
    assert!(
        body.get("token").is_none(),
        "no session before the second factor"
    );
    body["mfa_token"].as_str().unwrap().to_owned()
}

pub(crate) async fn assertion_begin(app: &TestApp, mfa: &str) -> Value {
    let begin = post(
        app,
        "/api/v1/login/mfa/webauthn/begin",
        None,
        json!({"mfa_token": mfa}),
    )
    .await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    begin.json()
}

pub(crate) async fn assertion_finish(
    app: &TestApp,
    mfa: &str,
    begin: &Value,
    credential: Value,
) -> keyledger_tests::Answer {
    post(
        app,
        "/api/v1/login/mfa/webauthn/finish",
        None,
        json!({"mfa_token": mfa, "ceremony_id": begin["ceremony_id"], "credential": credential}),
    )
    .await
}

/// The payloads of every event of `event_type`, oldest first.
pub(crate) async fn events(app: &TestApp, event_type: &str) -> Vec<Value> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let rows = sqlx::query("SELECT payload FROM events WHERE event_type = $1 ORDER BY position")
        .bind(event_type)
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| serde_json::from_str(&sqlx::Row::get::<String, _>(r, "payload")).unwrap())
        .collect()
}

async fn a_user_registers_a_key_and_logs_in_with_password_and_key(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    let id = user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = SoftKey::new();
    let finish = register_own_key(&app, &token, &mut key, "Blue key").await;
    assert_eq!(finish.status, StatusCode::CREATED, "{}", finish.text());
    let credential = &finish.json()["credential"];
    assert_eq!(credential["label"], "Blue key");
    assert_eq!(credential["kind"], "security_key");
    assert_eq!(credential["registered_by"], "self");
    let credential_id = credential["credential_id"].as_str().unwrap().to_owned();

    let list = app
        .request(
            Method::GET,
            "/api/v1/me/credentials",
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(list.json()["status"], "active_keys");
    assert_eq!(
        list.json()["items"][0]["credential_id"],
        credential_id.as_str()
    );
    let admin_list = app
        .admin(
            Method::GET,
            &format!("/api/v1/users/{id}/credentials"),
            None,
        )
        .await;
    assert_eq!(admin_list.json()["items"].as_array().unwrap().len(), 1);
    let registered = events(&app, "user.webauthn.registered").await;
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0]["credential_id"], credential_id.as_str());
    assert!(!registered[0].to_string().contains("public_key"));

    // The password alone no longer opens a session.
    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    let assertion = key.assert(ORIGIN, &begin["options"]);
    let done = assertion_finish(&app, &mfa, &begin, assertion.clone()).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let session_token = done.json()["token"].as_str().unwrap().to_owned();
    let me = app
        .request(Method::GET, "/api/v1/me", Some(&session_token), None, &[])
        .await;
    assert_eq!(me.status, StatusCode::OK);
    let logins = events(&app, "user.login.succeeded").await;
    assert_eq!(logins.last().unwrap()["method"], "password_webauthn");
    assert_eq!(events(&app, "user.webauthn.used").await.len(), 1);

    // The MFA token and the challenge each answer once.
    let again = assertion_finish(&app, &mfa, &begin, assertion).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.text());

    let status = app
        .admin(Method::GET, &format!("/api/v1/users/{id}/mfa"), None)
        .await
        .json();
    assert_eq!(status["security_keys"], 1);
    assert_eq!(status["totp_enrolled"], false);
    assert!(status["last_mfa_at"].is_string());
}

async fn a_registration_challenge_answers_once(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = SoftKey::new();
    let platform = post(
        &app,
        "/api/v1/me/credentials/register/begin",
        Some(&token),
        json!({"kind": "device_authenticator"}),
    )
    .await
    .json();
    assert_eq!(
        platform["options"]["publicKey"]["authenticatorSelection"]["authenticatorAttachment"],
        "platform"
    );
    // The software key is a roaming one.
    let begin = post(
        &app,
        "/api/v1/me/credentials/register/begin",
        Some(&token),
        json!({"kind": "security_key"}),
    )
    .await
    .json();
    assert_eq!(
        begin["options"]["publicKey"]["authenticatorSelection"]["authenticatorAttachment"],
        "cross-platform"
    );
    let credential = key.register(ORIGIN, &begin["options"]);
    let body =
        json!({"ceremony_id": begin["ceremony_id"], "label": "laptop", "credential": credential});
    let first = post(
        &app,
        "/api/v1/me/credentials/register/finish",
        Some(&token),
        body.clone(),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert_eq!(first.json()["credential"]["kind"], "security_key");
    let second = post(
        &app,
        "/api/v1/me/credentials/register/finish",
        Some(&token),
        body,
    )
    .await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST);
    assert_eq!(second.json()["code"], "webauthn_ceremony_failed");
    // A response made for a page of another origin (under the same registrable domain, so
    // the authenticator signs) does not verify either.
    let begin = post(
        &app,
        "/api/v1/me/credentials/register/begin",
        Some(&token),
        json!({"kind": "security_key"}),
    )
    .await
    .json();
    let phished = SoftKey::new().register("https://evil.example.com", &begin["options"]);
    let refused = post(
        &app,
        "/api/v1/me/credentials/register/finish",
        Some(&token),
        json!({"ceremony_id": begin["ceremony_id"], "label": "x", "credential": phished}),
    )
    .await;
    assert_eq!(refused.json()["code"], "webauthn_ceremony_failed");
}

async fn an_assertion_from_another_origin_is_refused_and_recorded_in_debug_mode(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({"debug": true})).await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = SoftKey::new();
    register_own_key(&app, &token, &mut key, "k").await;
    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    let phished = key.assert("https://evil.example.com", &begin["options"]);
    let refused = assertion_finish(&app, &mfa, &begin, phished).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json()["code"], "mfa_failed");
    assert!(refused.json().get("detail").is_none(), "a generic answer");
    let failures = events(&app, "user.mfa.failed").await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["reason"], "wrong_origin");
    // A used challenge, answered again, is its own recorded reason.
    let replay = assertion_finish(&app, &mfa, &begin, key.assert(ORIGIN, &begin["options"])).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    let failures = events(&app, "user.mfa.failed").await;
    assert_eq!(failures[1]["reason"], "challenge_expired_or_used");
}

async fn a_sign_count_that_goes_backwards_is_refused_as_a_possible_clone(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = SoftKey::new();
    register_own_key(&app, &token, &mut key, "k").await;
    // Two logins begun; the key signs the first, then the second (higher count), and the
    // server sees them in the opposite order.
    let mfa_a = mfa_token(&app, "ada").await;
    let begin_a = assertion_begin(&app, &mfa_a).await;
    let mfa_b = mfa_token(&app, "ada").await;
    let begin_b = assertion_begin(&app, &mfa_b).await;
    let lower = key.assert(ORIGIN, &begin_a["options"]);
    let higher = key.assert(ORIGIN, &begin_b["options"]);
    let ok = assertion_finish(&app, &mfa_b, &begin_b, higher).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let cloned = assertion_finish(&app, &mfa_a, &begin_a, lower).await;
    assert_eq!(cloned.status, StatusCode::UNAUTHORIZED, "{}", cloned.text());
    let failures = events(&app, "user.mfa.failed").await;
    assert_eq!(failures.len(), 1, "recorded even without debug mode");
    assert_eq!(failures[0]["reason"], "sign_count_regressed");
}

async fn admin_registers(app: &TestApp, id: &str, key: &mut SoftKey) -> String {
    let begin = app
        .admin(
            Method::POST,
            &format!("/api/v1/users/{id}/credentials/register/begin"),
            Some(json!({"kind": "security_key"})),
        )
        .await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    let begin = begin.json();
    let credential = key.register(ORIGIN, &begin["options"]);
    let finish = app
        .admin(
            Method::POST,
            &format!("/api/v1/users/{id}/credentials/register/finish"),
            Some(json!({"ceremony_id": begin["ceremony_id"], "label": "issued", "credential": credential})),
        )
        .await;
    assert_eq!(finish.status, StatusCode::CREATED, "{}", finish.text());
    assert_eq!(finish.json()["credential"]["registered_by"], "admin");
    finish.json()["credential"]["credential_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn an_admin_registers_a_key_the_user_cannot_rename(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    let id = user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let credential_id = admin_registers(&app, &id, &mut SoftKey::new()).await;
    let path = format!("/api/v1/me/credentials/{credential_id}");
    let refused = app
        .request(
            Method::PATCH,
            &path,
            Some(&token),
            Some(&json!({"label": "mine"})),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["code"], "credential_registered_by_admin");
    let renamed = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/users/{id}/credentials/{credential_id}"),
            Some(json!({"label": "Office key"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text());
    let renames = events(&app, "user.webauthn.renamed").await;
    assert_eq!(renames[0]["old_label"], "issued");
    assert_eq!(renames[0]["new_label"], "Office key");
    let unknown = app
        .request(
            Method::PATCH,
            "/api/v1/me/credentials/AAAAAAAAAAAAAAAAAAAAAA",
            Some(&token),
            Some(&json!({"label": "x"})),
            &[],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let malformed = app
        .request(
            Method::PATCH,
            "/api/v1/me/credentials/not*an*id",
            Some(&token),
            Some(&json!({"label": "x"})),
            &[],
        )
        .await;
    assert_eq!(malformed.json()["code"], "invalid_credential_id");
}

async fn self_registration_off_refuses_users_but_not_admins(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({"self_registration": false})).await;
    let id = user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let refused = post(
        &app,
        "/api/v1/me/credentials/register/begin",
        Some(&token),
        json!({"kind": "security_key"}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["code"], "self_registration_disabled");
    admin_registers(&app, &id, &mut SoftKey::new()).await;
}

async fn removing_the_last_key_when_mfa_is_required_needs_confirmation(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    let id = user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = SoftKey::new();
    let finish = register_own_key(&app, &token, &mut key, "k").await;
    let credential_id = finish.json()["credential"]["credential_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let required = app
        .admin(
            Method::PUT,
            &format!("/api/v1/users/{id}/mfa-requirement"),
            Some(json!({"requirement": "required"})),
        )
        .await;
    assert_eq!(required.status, StatusCode::OK, "{}", required.text());
    let path = format!("/api/v1/me/credentials/{credential_id}");
    let warned = app
        .request(Method::DELETE, &path, Some(&token), None, &[])
        .await;
    assert_eq!(warned.status, StatusCode::CONFLICT);
    assert_eq!(warned.json()["code"], "last_factor_removal_unconfirmed");
    let removed = app
        .request(
            Method::DELETE,
            &format!("{path}?confirm_lockout=true"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());
    let removals = events(&app, "user.webauthn.removed").await;
    assert_eq!(removals[0]["lockout_warning_overridden"], true);
    let list = app
        .request(
            Method::GET,
            "/api/v1/me/credentials",
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(list.json()["status"], "no_security_keys");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn totp_enrolls_with_a_first_code_logs_in_and_never_accepts_a_code_twice(backend: Backend) {
    let app = app(backend).await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let enroll = post(&app, "/api/v1/me/totp", Some(&token), json!({})).await;
    assert_eq!(enroll.status, StatusCode::OK, "{}", enroll.text());
    let secret = enroll.json()["secret"].as_str().unwrap().to_owned();
    assert!(
        enroll.json()["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let wrong = post(
        &app,
        "/api/v1/me/totp/confirm",
        Some(&token),
        json!({"code": "000000"}),
    )
    .await;
    if totp_code(&secret, now()) != "000000" {
        assert_eq!(wrong.json()["code"], "totp_code_wrong");
    }
    // The first code belongs to the previous step, so the current one is still usable.
    let first = totp_code(&secret, now() - 30);
    let confirmed = post(
        &app,
        "/api/v1/me/totp/confirm",
        Some(&token),
        json!({"code": first}),
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text());
    let added = events(&app, "user.totp.added").await;
    assert_eq!(added.len(), 1);
    assert!(
        !added[0].to_string().contains(&secret),
        "the secret stays out of the log"
    );

    let mfa = mfa_token(&app, "ada").await;
    let reused = post(
        &app,
        "/api/v1/login/mfa/totp",
        None,
        json!({"mfa_token": mfa, "code": first}),
    )
    .await;
    assert_eq!(
        reused.status,
        StatusCode::UNAUTHORIZED,
        "the activating code is spent"
    );
    let code = totp_code(&secret, now());
    let done = post(
        &app,
        "/api/v1/login/mfa/totp",
        None,
        json!({"mfa_token": mfa, "code": code}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let mfa = mfa_token(&app, "ada").await;
    let again = post(
        &app,
        "/api/v1/login/mfa/totp",
        None,
        json!({"mfa_token": mfa, "code": code}),
    )
    .await;
    assert_eq!(
        again.status,
        StatusCode::UNAUTHORIZED,
        "a code is accepted once"
    );
    let failures = events(&app, "user.mfa.failed").await;
    assert!(failures.iter().all(|f| f["reason"] == "totp_code_reused"));
    app.assert_rebuilt_views_match().await;
}

async fn a_user_who_must_enroll_gets_an_enrollment_token_or_a_clear_refusal(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(
        &app,
        json!({"mfa_requirement": "required", "self_registration": false}),
    )
    .await;
    user(&app, "ada").await;
    let refused = app.login("ada", GOOD_PASSWORD).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(refused.json()["code"], "mfa_enrollment_unavailable");

    enable_webauthn(&app, json!({"mfa_requirement": "required"})).await;
    let login = app.login("ada", GOOD_PASSWORD).await.json();
    assert_eq!(login["status"], "mfa_enrollment_required", "{login}");
    let enrollment = login["enrollment_token"].as_str().unwrap().to_owned();
    // The enrollment token is no session.
    let me = app
        .request(Method::GET, "/api/v1/me", Some(&enrollment), None, &[])
        .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    let mut key = SoftKey::new();
    let begin = post(
        &app,
        "/api/v1/login/enroll/begin",
        None,
        json!({"enrollment_token": enrollment, "kind": "security_key"}),
    )
    .await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    let begin = begin.json();
    let credential = key.register(ORIGIN, &begin["options"]);
    let enrolled = post(
        &app,
        "/api/v1/login/enroll/finish",
        None,
        json!({"enrollment_token": enrollment, "ceremony_id": begin["ceremony_id"], "label": "first", "credential": credential}),
    )
    .await;
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.text());
    let mfa = enrolled.json()["mfa_token"].as_str().unwrap().to_owned();
    let begin = assertion_begin(&app, &mfa).await;
    let done = assertion_finish(&app, &mfa, &begin, key.assert(ORIGIN, &begin["options"])).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
}

async fn invalid_relying_party_settings_are_refused_with_the_reason(backend: Backend) {
    let app = app(backend).await;
    for (rp_id, origin, code) in [
        (
            "m.auth.example.com",
            "https://auth.example.com",
            "invalid_relying_party_id",
        ),
        (
            "com",
            "https://auth.example.com",
            "invalid_relying_party_id",
        ),
        ("example.com", "http://auth.example.com", "invalid_origin"),
    ] {
        let refused = app
            .admin(
                Method::PUT,
                "/api/v1/settings/webauthn",
                Some(json!({
                    "enabled": true, "relying_party_id": rp_id, "relying_party_name": null,
                    "allowed_origins": [origin], "debug": false,
                    "bootstrap": {"enabled": false, "attachment": "any", "user_verification": "required"},
                    "reauthentication": {"enabled": true, "attachment": "cross_platform", "user_verification": "preferred"},
                    "self_registration": true, "mfa_requirement": "optional",
                })),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{rp_id} {origin}");
        assert_eq!(refused.json()["code"], code, "{}", refused.text());
        assert!(refused.json()["detail"].as_str().unwrap().len() > 10);
    }
    enable_webauthn(&app, json!({"relying_party_id": "auth.example.com"})).await;
    let settings = app
        .admin(Method::GET, "/api/v1/settings/webauthn", None)
        .await
        .json();
    assert_eq!(settings["relying_party_id"], "auth.example.com");
    assert_eq!(settings["relying_party_name"], "default");
    // Without WebAuthn enabled, ceremonies are refused clearly.
    let app2 = crate::app(backend).await;
    app2.create_user("bob", Some(GOOD_PASSWORD)).await;
    let token = session(&app2, "bob").await;
    let begin = post(
        &app2,
        "/api/v1/me/credentials/register/begin",
        Some(&token),
        json!({"kind": "security_key"}),
    )
    .await;
    assert_eq!(begin.status, StatusCode::CONFLICT);
    assert_eq!(begin.json()["code"], "webauthn_disabled");
}

async fn the_users_list_shows_and_filters_the_mfa_columns(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    user(&app, "ada").await;
    let bob = user(&app, "bob").await;
    let token = session(&app, "ada").await;
    register_own_key(&app, &token, &mut SoftKey::new(), "k").await;
    let set = app
        .admin(
            Method::PUT,
            &format!("/api/v1/users/{bob}/mfa-requirement"),
            Some(json!({"requirement": "required"})),
        )
        .await;
    let position = set.position();
    let names = |answer: keyledger_tests::Answer| -> Vec<String> {
        answer.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect()
    };
    let with_keys = app
        .admin_read("/api/v1/users?mfa_webauthn=true", position)
        .await;
    assert_eq!(
        with_keys.json()["items"][0]["mfa_webauthn"],
        1,
        "{}",
        with_keys.text()
    );
    assert_eq!(names(with_keys), ["ada"]);
    let without = app
        .admin_read("/api/v1/users?mfa_webauthn=false", position)
        .await;
    assert_eq!(names(without), ["bob"]);
    let required = app
        .admin_read("/api/v1/users?mfa_requirement=required", position)
        .await;
    assert_eq!(
        required.json()["items"][0]["mfa_user_requirement"],
        "required"
    );
    assert_eq!(names(required), ["bob"]);
    let default = app
        .admin_read("/api/v1/users?mfa_requirement=default", position)
        .await;
    assert_eq!(names(default), ["ada"]);
    let bad = app
        .admin_read("/api/v1/users?mfa_requirement=sometimes", position)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // The views rebuild to the same columns.
    app.assert_rebuilt_views_match().await;
}

async fn passwordless_login_is_refused_when_the_bootstrap_workflow_is_off(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    let refused = post(&app, "/api/v1/login/passkey/begin", None, json!({})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.json()["code"], "passwordless_disabled");
    enable_webauthn(
        &app,
        json!({"bootstrap": {"enabled": true, "attachment": "any", "user_verification": "required"}}),
    )
    .await;
    let begin = post(&app, "/api/v1/login/passkey/begin", None, json!({})).await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    assert!(begin.json()["options"]["publicKey"]["challenge"].is_string());
    // An unknown ceremony gets the generic refusal.
    let finish = post(
        &app,
        "/api/v1/login/passkey/finish",
        None,
        json!({"ceremony_id": "nope", "credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
            "response": {"clientDataJSON": "AAAA", "authenticatorData": "AAAA", "signature": "AAAA", "userHandle": null},
            "extensions": {}}}),
    )
    .await;
    assert_eq!(finish.status, StatusCode::UNAUTHORIZED, "{}", finish.text());
    assert_eq!(finish.json()["code"], "mfa_failed");
}

async fn changing_the_password_needs_a_fresh_factor_when_the_user_has_one(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = SoftKey::new();
    register_own_key(&app, &token, &mut key, "k").await;
    // A second factor lowers the minimum length to 8.
    let change = |step_up: Option<String>| {
        let mut body = json!({"current_password": GOOD_PASSWORD, "new_password": "nine-char"});
        if let Some(step_up) = step_up {
            body["step_up_token"] = json!(step_up);
        }
        body
    };
    let refused = post(&app, "/api/v1/me/password", Some(&token), change(None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(refused.json()["code"], "step_up_required");
    let forged = post(
        &app,
        "/api/v1/me/password",
        Some(&token),
        change(Some("forged".into())),
    )
    .await;
    assert_eq!(forged.json()["code"], "step_up_required");

    let begin = post(
        &app,
        "/api/v1/me/step-up/webauthn/begin",
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    let begin = begin.json();
    let assertion = key.assert(ORIGIN, &begin["options"]);
    let stepped = post(
        &app,
        "/api/v1/me/step-up/webauthn/finish",
        Some(&token),
        json!({"ceremony_id": begin["ceremony_id"], "credential": assertion}),
    )
    .await;
    assert_eq!(stepped.status, StatusCode::OK, "{}", stepped.text());
    let step_up = stepped.json()["step_up_token"].as_str().unwrap().to_owned();
    let changed = post(
        &app,
        "/api/v1/me/password",
        Some(&token),
        change(Some(step_up.clone())),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    // The step-up token answers once.
    let again = post(
        &app,
        "/api/v1/me/password",
        Some(&token),
        change(Some(step_up)),
    )
    .await;
    assert_eq!(again.json()["code"], "step_up_required");
}

async fn a_workflow_limited_to_platform_authenticators_refuses_security_keys(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(
        &app,
        json!({"reauthentication": {"enabled": true, "attachment": "platform", "user_verification": "required"}}),
    )
    .await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let path = "/api/v1/me/credentials/register/begin";
    let refused = post(&app, path, Some(&token), json!({"kind": "security_key"})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(
        refused.json()["code"],
        "authenticator_attachment_not_allowed"
    );
    let allowed = post(
        &app,
        path,
        Some(&token),
        json!({"kind": "device_authenticator"}),
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
}

async fn wrong_totp_codes_after_the_password_lock_the_account(backend: Backend) {
    let app = app(backend).await;
    let lockout = app
        .set_lockout(json!({"enabled": true, "max_failures": 3, "window_seconds": 900, "lock_seconds": null}))
        .await;
    assert_eq!(lockout.status, StatusCode::OK);
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let secret = post(&app, "/api/v1/me/totp", Some(&token), json!({}))
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = totp_code(&secret, now() - 30);
    let confirmed = post(
        &app,
        "/api/v1/me/totp/confirm",
        Some(&token),
        json!({"code": first}),
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK);
    let right = totp_code(&secret, now());
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    let mfa = mfa_token(&app, "ada").await;
    for _ in 0..3 {
        let refused = post(
            &app,
            "/api/v1/login/mfa/totp",
            None,
            json!({"mfa_token": mfa, "code": wrong}),
        )
        .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }
    let failures = events(&app, "user.mfa.failed").await;
    assert_eq!(failures.len(), 3);
    assert_eq!(
        failures[0]["reason"], "refused",
        "no detail outside debug mode"
    );
    assert_eq!(events(&app, "user.locked").await.len(), 1);
    let late = post(
        &app,
        "/api/v1/login/mfa/totp",
        None,
        json!({"mfa_token": mfa, "code": right}),
    )
    .await;
    assert_eq!(
        late.status,
        StatusCode::UNAUTHORIZED,
        "a locked account gets no session"
    );
    let me = app
        .request(Method::GET, "/api/v1/me", Some(&token), None, &[])
        .await;
    assert_eq!(
        me.status,
        StatusCode::UNAUTHORIZED,
        "the lock ended the sessions"
    );
}
