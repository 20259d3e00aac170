//! Each workflow's user verification and authenticator attachment, applied to what the
//! browser is asked and checked at finish; and applications, whose overrides turn workflows
//! on or off for their own logins.

use keyledger_tests::authenticators::{SoftKey, b64};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::webauthn_mfa::{
    ORIGIN, assertion_begin, assertion_finish, enable_webauthn, events, mfa_token, post, session,
    user,
};
use crate::{Backend, TestApp, app, on_both_backends};

on_both_backends!(
    the_second_factor_asks_and_checks_the_reauthentication_workflows_verification,
    a_login_offers_and_accepts_only_keys_of_the_workflows_attachment,
    passwordless_login_asks_and_checks_the_bootstrap_workflows_verification_and_attachment,
    an_admin_creates_applications_and_sets_their_workflow_overrides,
    an_application_turns_workflows_on_or_off_for_its_own_logins,
);

fn workflow(enabled: bool, attachment: &str, user_verification: &str) -> Value {
    json!({"enabled": enabled, "attachment": attachment, "user_verification": user_verification})
}

/// Registers `key` for the session's user as `kind`. The software key answers any
/// attachment, so the kind is what the user said it is, as in a browser.
async fn register(
    app: &TestApp,
    token: &str,
    key: &mut SoftKey,
    kind: &str,
) -> keyledger_tests::Answer {
    let begin = post(
        app,
        "/api/v1/me/credentials/register/begin",
        Some(token),
        json!({"kind": kind}),
    )
    .await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    let begin = begin.json();
    let mut options = begin["options"].clone();
    options["publicKey"]["authenticatorSelection"]
        .as_object_mut()
        .unwrap()
        .remove("authenticatorAttachment");
    let credential = key.register(ORIGIN, &options);
    post(
        app,
        "/api/v1/me/credentials/register/finish",
        Some(token),
        json!({"ceremony_id": begin["ceremony_id"], "label": kind, "credential": credential}),
    )
    .await
}

/// The options as a client that ignores the server's user verification request would pass
/// them on: the server's check at finish is what stands.
fn asking_no_verification(options: &Value) -> Value {
    let mut options = options.clone();
    options["publicKey"]["userVerification"] = json!("discouraged");
    options
}

async fn the_second_factor_asks_and_checks_the_reauthentication_workflows_verification(
    backend: Backend,
) {
    let app = app(backend).await;
    enable_webauthn(
        &app,
        json!({"debug": true, "reauthentication": workflow(true, "any", "discouraged")}),
    )
    .await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    // A key without a PIN can be registered where no workflow requires verification.
    let begin = post(
        &app,
        "/api/v1/me/credentials/register/begin",
        Some(&token),
        json!({"kind": "security_key"}),
    )
    .await
    .json();
    assert_eq!(
        begin["options"]["publicKey"]["authenticatorSelection"]["userVerification"],
        "discouraged"
    );
    let mut key = SoftKey::without_user_verification();
    let registered = register(&app, &token, &mut key, "security_key").await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    assert_eq!(registered.json()["credential"]["user_verified"], false);

    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    assert_eq!(
        begin["options"]["publicKey"]["userVerification"],
        "discouraged"
    );
    let done = assertion_finish(&app, &mfa, &begin, key.assert(ORIGIN, &begin["options"])).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());

    // Preferred asks for verification but takes presence alone.
    enable_webauthn(
        &app,
        json!({"debug": true, "reauthentication": workflow(true, "any", "preferred")}),
    )
    .await;
    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    assert_eq!(
        begin["options"]["publicKey"]["userVerification"],
        "preferred"
    );
    let assertion = key.assert(ORIGIN, &asking_no_verification(&begin["options"]));
    let done = assertion_finish(&app, &mfa, &begin, assertion).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());

    // Required refuses the same key, with a generic answer and the reason in the log.
    enable_webauthn(
        &app,
        json!({"debug": true, "reauthentication": workflow(true, "any", "required")}),
    )
    .await;
    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    assert_eq!(
        begin["options"]["publicKey"]["userVerification"],
        "required"
    );
    let assertion = key.assert(ORIGIN, &asking_no_verification(&begin["options"]));
    let refused = assertion_finish(&app, &mfa, &begin, assertion).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    assert_eq!(refused.json()["code"], "mfa_failed");
    assert!(refused.json().get("detail").is_none(), "a generic answer");
    let failures = events(&app, "user.mfa.failed").await;
    assert_eq!(
        failures.last().unwrap()["reason"],
        "user_verification_missing"
    );
    assert!(app.server_log().contains("UserVerificationMissing"));

    // A new key must verify the user once a workflow requires it.
    let begin = post(
        &app,
        "/api/v1/me/credentials/register/begin",
        Some(&token),
        json!({"kind": "security_key"}),
    )
    .await
    .json();
    assert_eq!(
        begin["options"]["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    let mut options = asking_no_verification(&begin["options"]);
    options["publicKey"]["authenticatorSelection"]["userVerification"] = json!("discouraged");
    let credential = SoftKey::without_user_verification().register(ORIGIN, &options);
    let refused = post(
        &app,
        "/api/v1/me/credentials/register/finish",
        Some(&token),
        json!({"ceremony_id": begin["ceremony_id"], "label": "no PIN", "credential": credential}),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    assert_eq!(refused.json()["code"], "webauthn_ceremony_failed");
    // The first session (before the key) and the two accepted second factors.
    assert_eq!(events(&app, "user.login.succeeded").await.len(), 3);
}

async fn a_login_offers_and_accepts_only_keys_of_the_workflows_attachment(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({"debug": true})).await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut roaming = SoftKey::new();
    let mut device = SoftKey::new();
    let roaming_id = register(&app, &token, &mut roaming, "security_key")
        .await
        .json()["credential"]["credential_id"]
        .clone();
    let device_id = register(&app, &token, &mut device, "device_authenticator")
        .await
        .json()["credential"]["credential_id"]
        .clone();

    enable_webauthn(
        &app,
        json!({"debug": true, "reauthentication": workflow(true, "platform", "required")}),
    )
    .await;
    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    let allowed: Vec<Value> = begin["options"]["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(
        allowed,
        vec![device_id.clone()],
        "only the device authenticator is offered"
    );
    assert_eq!(
        begin["options"]["publicKey"]["hints"],
        json!(["client-device"])
    );
    // A client that offers the security key anyway is refused at finish.
    let mut tampered = begin["options"].clone();
    tampered["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": roaming_id}]);
    let refused = assertion_finish(&app, &mfa, &begin, roaming.assert(ORIGIN, &tampered)).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    assert!(refused.json().get("detail").is_none());
    let failures = events(&app, "user.mfa.failed").await;
    assert_eq!(
        failures.last().unwrap()["reason"],
        "authenticator_attachment_not_allowed"
    );
    assert!(
        app.server_log()
            .contains("AuthenticatorAttachmentNotAllowed")
    );
    let begin = assertion_begin(&app, &mfa).await;
    let done = assertion_finish(&app, &mfa, &begin, device.assert(ORIGIN, &begin["options"])).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());

    // Cross-platform: the other way round.
    enable_webauthn(
        &app,
        json!({"debug": true, "reauthentication": workflow(true, "cross_platform", "required")}),
    )
    .await;
    let mfa = mfa_token(&app, "ada").await;
    let begin = assertion_begin(&app, &mfa).await;
    assert_eq!(
        begin["options"]["publicKey"]["allowCredentials"][0]["id"],
        roaming_id
    );
    assert_eq!(
        begin["options"]["publicKey"]["allowCredentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut tampered = begin["options"].clone();
    tampered["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": device_id}]);
    let refused = assertion_finish(&app, &mfa, &begin, device.assert(ORIGIN, &tampered)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        events(&app, "user.mfa.failed").await.last().unwrap()["reason"],
        "authenticator_attachment_not_allowed"
    );
}

async fn an_admin_creates_applications_and_sets_their_workflow_overrides(backend: Backend) {
    let app = app(backend).await;
    let created = app
        .admin(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "  Mobile app ", "workflows": {"bootstrap": "on", "reauthentication": "inherit"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let body = created.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["name"], "Mobile app");
    assert_eq!(body["workflows"]["bootstrap"], "on");
    let position = body["position"].as_u64().unwrap();
    let list = app.admin_read("/api/v1/applications", position).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    let items = list.json()["applications"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["bootstrap"], "on");
    assert_eq!(items[0]["reauthentication"], "inherit");

    let path = format!("/api/v1/applications/{id}/workflows");
    let changed = app
        .admin(
            Method::PUT,
            &path,
            Some(json!({"bootstrap": "inherit", "reauthentication": "off"})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let position = changed.json()["position"].as_u64().unwrap();
    let list = app
        .admin_read("/api/v1/applications", position)
        .await
        .json();
    assert_eq!(list["applications"][0]["reauthentication"], "off");
    assert_eq!(list["applications"][0]["bootstrap"], "inherit");
    // The same overrides again change nothing and write nothing.
    let same = app
        .admin(
            Method::PUT,
            &path,
            Some(json!({"bootstrap": "inherit", "reauthentication": "off"})),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert!(same.json()["position"].is_null());
    let got = app
        .admin(Method::GET, &format!("/api/v1/applications/{id}"), None)
        .await;
    assert_eq!(got.json()["workflows"]["reauthentication"], "off");
    assert_eq!(events(&app, "application.created").await.len(), 1);
    let changes = events(&app, "application.workflow_overrides.changed").await;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1]["overrides"]["reauthentication"], "off");

    // Refusals: a blank name, an unknown value, an unknown application, no admin token.
    let blank = app
        .admin(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": " "})),
        )
        .await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert_eq!(blank.json()["code"], "invalid_application_name");
    let bad = app
        .admin(
            Method::PUT,
            &path,
            Some(json!({"bootstrap": "maybe", "reauthentication": "off"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let missing = app
        .admin(
            Method::PUT,
            "/api/v1/applications/0199c7f0-7c00-7d4e-a2b3-c4d5e6f70901/workflows",
            Some(json!({"bootstrap": "on", "reauthentication": "on"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let anonymous = app
        .request(Method::GET, "/api/v1/applications", None, None, &[])
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(events(&app, "application.created").await.len(), 1);
    app.assert_rebuilt_views_match().await;
}

async fn an_application_turns_workflows_on_or_off_for_its_own_logins(backend: Backend) {
    let app = app(backend).await;
    enable_webauthn(&app, json!({})).await;
    user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = SoftKey::new();
    let registered = register(&app, &token, &mut key, "security_key").await;
    assert_eq!(registered.status, StatusCode::CREATED);
    let kiosk = app
        .admin(
            Method::POST,
            "/api/v1/applications",
            Some(json!({"name": "Kiosk", "workflows": {"bootstrap": "on", "reauthentication": "off"}})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The tenant keeps passwordless login off; the kiosk turns it on for itself.
    let tenant_wide = post(&app, "/api/v1/login/passkey/begin", None, json!({})).await;
    assert_eq!(tenant_wide.json()["code"], "passwordless_disabled");
    let in_kiosk = post(
        &app,
        "/api/v1/login/passkey/begin",
        None,
        json!({"application_id": kiosk}),
    )
    .await;
    assert_eq!(in_kiosk.status, StatusCode::OK, "{}", in_kiosk.text());

    // The kiosk turns the key off as a second factor: with no other factor the login is
    // refused with the reason, while the tenant's own login still offers the key.
    let login = |application: Option<&str>| {
        let mut body = json!({"username": "ada", "password": crate::GOOD_PASSWORD});
        if let Some(id) = application {
            body["application_id"] = json!(id);
        }
        body
    };
    let refused = post(&app, "/api/v1/login", None, login(Some(&kiosk))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(refused.json()["code"], "no_usable_second_factor");
    let tenant_login = post(&app, "/api/v1/login", None, login(None)).await.json();
    assert_eq!(tenant_login["factors"], json!(["webauthn"]));

    // With TOTP too, the kiosk offers only TOTP and refuses to start a WebAuthn assertion.
    let secret = post(&app, "/api/v1/me/totp", Some(&token), json!({}))
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let confirmed = post(
        &app,
        "/api/v1/me/totp/confirm",
        Some(&token),
        json!({"code": keyledger_tests::authenticators::totp_code(&secret, now - 30)}),
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text());
    let in_kiosk = post(&app, "/api/v1/login", None, login(Some(&kiosk)))
        .await
        .json();
    assert_eq!(in_kiosk["factors"], json!(["totp"]), "{in_kiosk}");
    let begin = post(
        &app,
        "/api/v1/login/mfa/webauthn/begin",
        None,
        json!({"mfa_token": in_kiosk["mfa_token"]}),
    )
    .await;
    assert_eq!(begin.status, StatusCode::CONFLICT);
    assert_eq!(begin.json()["code"], "reauthentication_disabled");

    // An application that does not exist is refused, not ignored.
    let unknown = post(
        &app,
        "/api/v1/login",
        None,
        login(Some("0199c7f0-7c00-7d4e-a2b3-c4d5e6f70901")),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], "not_found");
    let unknown = post(
        &app,
        "/api/v1/login/passkey/begin",
        None,
        json!({"application_id": "0199c7f0-7c00-7d4e-a2b3-c4d5e6f70901"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

/// A passwordless login with `key`. The software key keeps no discoverable credentials, so it
/// is pointed at its credential and its answer carries the user handle a discoverable one
/// would (the handle is not signed: the server maps it to the account whose key must verify).
async fn passkey(
    app: &TestApp,
    key: &mut SoftKey,
    credential_id: &Value,
    user_id: &str,
    tamper: impl Fn(&mut Value),
) -> keyledger_tests::Answer {
    let begin = post(app, "/api/v1/login/passkey/begin", None, json!({})).await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.text());
    let begin = begin.json();
    assert_eq!(begin["options"]["publicKey"]["allowCredentials"], json!([]));
    let mut options = begin["options"].clone();
    options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": credential_id}]);
    tamper(&mut options);
    let mut credential = key.assert(ORIGIN, &options);
    let handle = uuid::Uuid::parse_str(user_id).unwrap();
    credential["response"]["userHandle"] = json!(b64(handle.as_bytes()));
    post(
        app,
        "/api/v1/login/passkey/finish",
        None,
        json!({"ceremony_id": begin["ceremony_id"], "credential": credential}),
    )
    .await
}

async fn passwordless_login_asks_and_checks_the_bootstrap_workflows_verification_and_attachment(
    backend: Backend,
) {
    let app = app(backend).await;
    let settings = |enabled: bool, uv: &str, attachment: &str| {
        json!({"debug": true, "bootstrap": workflow(enabled, attachment, uv),
            "reauthentication": workflow(true, "any", "discouraged")})
    };
    enable_webauthn(&app, settings(false, "discouraged", "any")).await;
    let id = user(&app, "ada").await;
    let token = session(&app, "ada").await;
    let mut key = SoftKey::without_user_verification();
    let registered = register(&app, &token, &mut key, "security_key").await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let credential_id = registered.json()["credential"]["credential_id"].clone();

    enable_webauthn(&app, settings(true, "discouraged", "any")).await;
    let begin = post(&app, "/api/v1/login/passkey/begin", None, json!({}))
        .await
        .json();
    assert_eq!(
        begin["options"]["publicKey"]["userVerification"],
        "discouraged"
    );
    let done = passkey(&app, &mut key, &credential_id, &id, |_| {}).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(
        events(&app, "user.login.succeeded").await.last().unwrap()["method"],
        "passkey"
    );

    // Required: asked in the options, and a key that did not verify the user is refused.
    enable_webauthn(&app, settings(true, "required", "any")).await;
    let begin = post(&app, "/api/v1/login/passkey/begin", None, json!({}))
        .await
        .json();
    assert_eq!(
        begin["options"]["publicKey"]["userVerification"],
        "required"
    );
    let refused = passkey(&app, &mut key, &credential_id, &id, |o| {
        o["publicKey"]["userVerification"] = json!("discouraged");
    })
    .await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    assert!(refused.json().get("detail").is_none());
    assert_eq!(
        events(&app, "user.mfa.failed").await.last().unwrap()["reason"],
        "user_verification_missing"
    );

    // Platform only: the browser is hinted at device authenticators, and this security key
    // is refused at finish; cross-platform takes it.
    enable_webauthn(&app, settings(true, "discouraged", "platform")).await;
    let begin = post(&app, "/api/v1/login/passkey/begin", None, json!({}))
        .await
        .json();
    assert_eq!(
        begin["options"]["publicKey"]["hints"],
        json!(["client-device"])
    );
    let refused = passkey(&app, &mut key, &credential_id, &id, |_| {}).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    assert_eq!(
        events(&app, "user.mfa.failed").await.last().unwrap()["reason"],
        "authenticator_attachment_not_allowed"
    );
    enable_webauthn(&app, settings(true, "discouraged", "cross_platform")).await;
    let done = passkey(&app, &mut key, &credential_id, &id, |_| {}).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
}
