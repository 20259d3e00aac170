//! The user portal in headless Chromium with CDP virtual authenticators (a platform
//! authenticator with user verification and a USB security key), through real
//! `navigator.credentials` calls.

use keyledger_tests::authenticators::totp_code;
use keyledger_tests::browser::{self, Browser};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{Backend, GOOD_PASSWORD, app};

/// The portal at `http://localhost:<port>`: `localhost` is a secure context, a valid relying
/// party id, and the same server as `127.0.0.1`.
fn localhost(base: &str) -> String {
    base.replace("127.0.0.1", "localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_manages_keys_in_the_portal_and_logs_in_with_one() {
    assert!(
        browser::available(),
        "chromium and chromium-driver are needed (.ci/run installs them)"
    );
    let app = app(Backend::Sqlite).await;
    let origin = localhost(&app.base);
    let settings = json!({
        "enabled": true, "relying_party_id": "localhost", "relying_party_name": "Portal test",
        "allowed_origins": [origin], "debug": true,
        "bootstrap": {"enabled": true, "attachment": "any", "user_verification": "required"},
        "reauthentication": {"enabled": true, "attachment": "any", "user_verification": "required"},
        "self_registration": true, "mfa_requirement": "optional",
    });
    let put = app
        .admin(Method::PUT, "/api/v1/settings/webauthn", Some(settings))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let created = app.create_user("ada", Some(GOOD_PASSWORD)).await;
    let user_id = created.json()["user"]["id"].as_str().unwrap().to_owned();

    let browser = Browser::start().await;
    let platform = browser.add_authenticator("internal").await;
    browser.goto(&format!("{origin}/portal/")).await;
    browser
        .wait_for("document.body.dataset.page === 'login-page'")
        .await;
    let sign_in = "document.querySelector('#username').value = arguments[0];
         document.querySelector('#password').value = arguments[1];
         document.querySelector('#login').click();";
    browser.run(sign_in, json!(["ada", GOOD_PASSWORD])).await;
    browser
        .wait_for("document.body.dataset.page === 'security-page'")
        .await;
    browser
        .wait_for("document.querySelector('#key-status').textContent === 'No security keys'")
        .await;

    // A platform authenticator (this device), with user verification.
    let add = "document.querySelector('#new-label').value = arguments[0];
         document.querySelector('#new-kind').value = arguments[1];
         document.querySelector('#add-key').click();";
    browser
        .run(add, json!(["Laptop", "device_authenticator"]))
        .await;
    browser
        .wait_for("document.querySelectorAll('#keys tr').length === 1")
        .await;
    browser
        .wait_for("document.querySelector('#key-status').textContent === 'Active keys'")
        .await;
    assert_eq!(browser.credentials(&platform).await.len(), 1);

    // A USB security key.
    browser.remove_authenticator(&platform).await;
    let usb = browser.add_authenticator("usb").await;
    browser.run(add, json!(["YubiKey", "security_key"])).await;
    browser
        .wait_for("document.querySelectorAll('#keys tr').length === 2")
        .await;

    // Rename the USB key, delete the laptop, both through the page.
    let keys = app
        .admin(
            Method::GET,
            &format!("/api/v1/users/{user_id}/credentials"),
            None,
        )
        .await
        .json();
    let by_label = |label: &str| {
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["label"] == label)
            .unwrap_or_else(|| panic!("no {label} in {keys}"))
            .clone()
    };
    let laptop = by_label("Laptop");
    let yubikey = by_label("YubiKey");
    assert_eq!(laptop["kind"], "device_authenticator");
    assert_eq!(yubikey["kind"], "security_key");
    assert_eq!(yubikey["user_verified"], true);
    let row = |id: &serde_json::Value| {
        format!(
            "document.querySelector('tr[data-credential-id=\"{}\"]')",
            id.as_str().unwrap()
        )
    };
    browser
        .run(
            &format!(
                "{0}.querySelector('input.label').value = 'Blue key'; {0}.querySelector('button.rename').click();",
                row(&yubikey["credential_id"])
            ),
            json!([]),
        )
        .await;
    browser
        .wait_for("[...document.querySelectorAll('#keys input.label')].some(i => i.value === 'Blue key') && document.querySelector('#message').textContent === 'Renamed.'")
        .await;
    browser
        .run(
            &format!(
                "{}.querySelector('button.delete').click();",
                row(&laptop["credential_id"])
            ),
            json!([]),
        )
        .await;
    browser
        .wait_for("document.querySelectorAll('#keys tr').length === 1")
        .await;

    // Sign out, sign in again: the password, then the USB key.
    browser
        .run("document.querySelector('#logout').click();", json!([]))
        .await;
    browser
        .wait_for("document.body.dataset.page === 'login-page'")
        .await;
    let counter_before = browser.credentials(&usb).await[0]["signCount"]
        .as_u64()
        .unwrap();
    browser.run(sign_in, json!(["ada", GOOD_PASSWORD])).await;
    browser
        .wait_for("document.body.dataset.page === 'security-page'")
        .await;
    let counter_after = browser.credentials(&usb).await[0]["signCount"]
        .as_u64()
        .unwrap();
    assert!(counter_after > counter_before, "the key signed the login");

    // Passwordless: the key names the user by itself (a discoverable credential).
    browser
        .run("document.querySelector('#logout').click();", json!([]))
        .await;
    browser
        .wait_for("document.body.dataset.page === 'login-page'")
        .await;
    assert_eq!(
        browser.credentials(&usb).await[0]["isResidentCredential"],
        true
    );
    browser
        .run(
            "document.querySelector('#passkey-login').click();",
            json!([]),
        )
        .await;
    browser
        .wait_for("document.body.dataset.page === 'security-page'")
        .await;
    browser.quit().await;

    let keys = app
        .admin(
            Method::GET,
            &format!("/api/v1/users/{user_id}/credentials"),
            None,
        )
        .await
        .json();
    let labels: Vec<&str> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Blue key"]);
    let mfa = app
        .admin(Method::GET, &format!("/api/v1/users/{user_id}/mfa"), None)
        .await
        .json();
    assert!(mfa["last_mfa_at"].is_string(), "{mfa}");
    let logins = app
        .admin_read("/api/v1/audit?type=user.login.succeeded", app.head().await)
        .await;
    let methods: Vec<String> = logins.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(methods.len(), 3, "{}", logins.text());
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sets_up_an_authenticator_app_in_the_portal_and_logs_in_with_its_code() {
    assert!(
        browser::available(),
        "chromium and chromium-driver are needed (.ci/run installs them)"
    );
    let app = app(Backend::Sqlite).await;
    let origin = localhost(&app.base);
    let created = app.create_user("ada", Some(GOOD_PASSWORD)).await;
    let user_id = created.json()["user"]["id"].as_str().unwrap().to_owned();

    let browser = Browser::start().await;
    browser.goto(&format!("{origin}/portal/")).await;
    browser
        .wait_for("document.body.dataset.page === 'login-page'")
        .await;
    let sign_in = "document.querySelector('#username').value = arguments[0];
         document.querySelector('#password').value = arguments[1];
         document.querySelector('#login').click();";
    browser.run(sign_in, json!(["ada", GOOD_PASSWORD])).await;
    browser
        .wait_for("document.querySelector('#totp-status').textContent === 'Off'")
        .await;

    // Enroll: the secret and the otpauth URI are shown once; a first code turns TOTP on.
    browser
        .run("document.querySelector('#totp-setup').click();", json!([]))
        .await;
    browser
        .wait_for("document.querySelector('#totp-secret').textContent.length >= 32")
        .await;
    let secret = browser
        .run(
            "return document.querySelector('#totp-secret').textContent;",
            json!([]),
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let uri = browser
        .run(
            "return document.querySelector('#totp-uri').getAttribute('href');",
            json!([]),
        )
        .await;
    assert!(
        uri.as_str().unwrap().starts_with("otpauth://totp/"),
        "{uri}"
    );
    assert!(uri.as_str().unwrap().contains(&secret));
    // A wrong code leaves it off.
    let confirm = "document.querySelector('#totp-confirm-code').value = arguments[0];
         document.querySelector('#totp-confirm').click();";
    let right = totp_code(&secret, unix_now() - 30);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    browser.run(confirm, json!([wrong])).await;
    browser
        .wait_for("document.querySelector('#message').textContent.startsWith('The code was not accepted')")
        .await;
    browser.run(confirm, json!([right])).await;
    browser
        .wait_for("document.querySelector('#totp-status').textContent === 'On'")
        .await;
    assert_eq!(
        browser
            .run(
                "return document.querySelector('#totp-secret').textContent;",
                json!([])
            )
            .await,
        "",
        "the secret leaves the page once TOTP is on"
    );

    // Sign out and in again: the password, then a code from the app.
    browser
        .run("document.querySelector('#logout').click();", json!([]))
        .await;
    browser
        .wait_for("document.body.dataset.page === 'login-page'")
        .await;
    browser.run(sign_in, json!(["ada", GOOD_PASSWORD])).await;
    browser
        .wait_for("document.body.dataset.page === 'totp-page'")
        .await;
    assert_eq!(
        browser
            .run(
                "return document.querySelector('#use-key').hidden;",
                json!([])
            )
            .await,
        true,
        "no key to offer"
    );
    let enter = "document.querySelector('#totp-code').value = arguments[0];
         document.querySelector('#totp-login').click();";
    browser.run(enter, json!([wrong])).await;
    browser
        .wait_for("document.querySelector('#message').textContent === 'The code was not accepted.'")
        .await;
    browser
        .run(enter, json!([totp_code(&secret, unix_now())]))
        .await;
    browser
        .wait_for("document.body.dataset.page === 'security-page'")
        .await;

    // Remove it from the Security page.
    browser
        .wait_for("document.querySelector('#totp-status').textContent === 'On'")
        .await;
    browser
        .run("document.querySelector('#totp-remove').click();", json!([]))
        .await;
    browser
        .wait_for("document.querySelector('#totp-status').textContent === 'Off'")
        .await;
    browser.quit().await;

    let mfa = app
        .admin(Method::GET, &format!("/api/v1/users/{user_id}/mfa"), None)
        .await
        .json();
    assert_eq!(mfa["totp_enrolled"], false, "{mfa}");
    let logins = app
        .admin_read("/api/v1/audit?type=user.login.succeeded", app.head().await)
        .await;
    assert_eq!(
        logins.json()["items"].as_array().unwrap().len(),
        2,
        "{}",
        logins.text()
    );
    let removed = app
        .admin_read("/api/v1/audit?type=user.totp.removed", app.head().await)
        .await;
    assert_eq!(removed.json()["items"].as_array().unwrap().len(), 1);
}
