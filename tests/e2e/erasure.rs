//! Erasure: a user's personal data leaves the log, every view and every export, while the
//! chain still verifies and the timeline still shows what happened.

use std::net::{IpAddr, Ipv4Addr};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::audit_integrity::verify;
use crate::secrets::dump_database;
use crate::{Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(
    an_erased_user_leaves_no_personal_data_anywhere,
    an_erased_user_takes_no_further_command,
    a_user_from_before_sealing_cannot_be_erased,
);

/// The erased user's requests come from an address and agent of their own, so that finding
/// either anywhere after the erasure is a leak, not another user's row.
const ERIN_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);

struct Erin {
    id: String,
    username: String,
    email: String,
    display_names: [String; 2],
    user_agent: String,
    client: reqwest::Client,
}

impl Erin {
    fn markers(&self) -> Vec<String> {
        let mut markers = vec![
            self.username.clone(),
            self.email.clone(),
            self.user_agent.clone(),
            ERIN_IP.to_string(),
        ];
        markers.extend(self.display_names.iter().cloned());
        markers
    }

    async fn send(
        &self,
        app: &TestApp,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", app.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Creates Erin with a history: created with a display name, a good and a bad login, a
/// profile change, all from her own address and agent.
async fn erin_with_history(app: &TestApp) -> Erin {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let tag = &tag[tag.len() - 10..];
    let user_agent = format!("ErasureAgent/{tag}");
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(ERIN_IP))
        .user_agent(user_agent.clone())
        .build()
        .unwrap();
    let mut erin = Erin {
        id: String::new(),
        username: format!("erin{tag}"),
        email: format!("erin{tag}@erasure.example"),
        display_names: [format!("Erin Before{tag}"), format!("Erin After{tag}")],
        user_agent,
        client,
    };
    let admin = app.admin_token.clone();
    let (status, created) = erin
        .send(
            app,
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({
                "username": erin.username,
                "email": erin.email,
                "display_name": erin.display_names[0],
                "password": GOOD_PASSWORD,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    erin.id = created["user"]["id"].as_str().unwrap().to_owned();
    let login = |password: &'static str| json!({ "username": erin.username, "password": password });
    let (status, _) = erin
        .send(
            app,
            Method::POST,
            "/api/v1/login",
            None,
            Some(login(GOOD_PASSWORD)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = erin
        .send(
            app,
            Method::POST,
            "/api/v1/login",
            None,
            Some(login("not-her-password")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = erin
        .send(
            app,
            Method::PATCH,
            &format!("/api/v1/users/{}", erin.id),
            Some(&admin),
            Some(json!({ "display_name": erin.display_names[1] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    erin
}

fn leaks<'a>(dump: &str, markers: &'a [String]) -> Vec<&'a String> {
    markers
        .iter()
        .filter(|m| dump.contains(m.as_str()))
        .collect()
}

async fn an_erased_user_leaves_no_personal_data_anywhere(backend: Backend) {
    let app = app(backend).await;
    assert_eq!(
        app.create_user("kept", Some(GOOD_PASSWORD)).await.status,
        StatusCode::CREATED
    );
    let erin = erin_with_history(&app).await;
    let markers = erin.markers();

    // Sealed from the start: the log itself never held her personal data in the clear...
    let events = dump_table(&app, "events").await;
    assert_eq!(leaks(&events, &markers), Vec::<&String>::new());
    // ...yet every view shows it while she exists.
    let head = app.head().await;
    let shown = app
        .admin_read(&format!("/api/v1/users/{}", erin.id), head)
        .await;
    assert_eq!(shown.json()["username"], erin.username.as_str());
    assert_eq!(shown.json()["display_name"], erin.display_names[1].as_str());
    let timeline = app
        .admin_read(&format!("/api/v1/users/{}/timeline", erin.id), head)
        .await
        .json();
    assert!(
        timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["ip"] == ERIN_IP.to_string()),
        "{timeline}"
    );
    let before_erasure = head;

    let erased = app
        .admin(
            Method::POST,
            &format!("/api/v1/users/{}/erase", erin.id),
            None,
        )
        .await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.text());
    assert_eq!(erased.json()["user"]["username"], "erased");
    assert_eq!(erased.json()["user"]["status"], "erased");
    assert_eq!(erased.json()["user"]["email"], Value::Null);
    let position = erased.position();

    // Nothing of her personal data anywhere in the database, secrets included.
    let shown = app
        .admin_read(&format!("/api/v1/users/{}", erin.id), position)
        .await;
    assert_eq!(shown.json()["username"], "erased");
    assert_eq!(shown.json()["status"], "erased");
    assert_eq!(shown.json()["display_name"], Value::Null);
    let everything = dump_database(&app, backend, false).await;
    assert_eq!(leaks(&everything, &markers), Vec::<&String>::new());
    // The other user is untouched.
    assert!(everything.contains("kept@example.com"));

    // The timeline still shows what happened, without where from.
    let timeline = app
        .admin_read(&format!("/api/v1/users/{}/timeline", erin.id), position)
        .await
        .json();
    let items = timeline["items"].as_array().unwrap();
    let types: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    for expected in [
        "user.password.set",
        "user.login.succeeded",
        "user.login.failed",
        "user.erased",
    ] {
        assert!(types.contains(&expected), "{types:?}");
    }
    assert!(
        items
            .iter()
            .all(|i| i["ip"].is_null() && i["user_agent"].is_null()),
        "{timeline}"
    );
    assert!(
        items
            .iter()
            .any(|i| i["type"] == "user.login.failed" && i["reason"] == "bad_password"),
        "{timeline}"
    );

    // As of a moment before the erasure: her state then, without her personal data.
    let then = app
        .admin_read(
            &format!("/api/v1/users/{}?as_of={before_erasure}", erin.id),
            position,
        )
        .await;
    assert_eq!(then.status, StatusCode::OK, "{}", then.text());
    assert_eq!(then.json()["status"], "active");
    assert_eq!(then.json()["username"], "erased");
    assert_eq!(then.json()["email"], Value::Null);

    // The chain still verifies, and the export carries ciphertext only.
    let (ok, out) = verify(&app, &[]).await;
    assert!(ok, "{out}");
    let export = app.replay(&["export", "--format", "jsonl"]).await;
    assert!(export.status.success());
    let export = String::from_utf8_lossy(&export.stdout);
    assert!(export.contains("user.erased"));
    assert_eq!(leaks(&export, &markers), Vec::<&String>::new());

    // A rebuild from the log reaches the same rows, still without her.
    let rebuilt = app.replay(&["rebuild"]).await;
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let everything = dump_database(&app, backend, false).await;
    assert_eq!(leaks(&everything, &markers), Vec::<&String>::new());
    let compare = app.replay(&["rebuild", "--compare"]).await;
    let out = String::from_utf8_lossy(&compare.stdout).into_owned();
    assert!(compare.status.success(), "{out}");
    assert!(out.contains("users: 0 difference(s)"), "{out}");
    assert!(out.contains("audit: 0 difference(s)"), "{out}");
    let shown = app
        .admin_read(&format!("/api/v1/users/{}", erin.id), position)
        .await;
    assert_eq!(shown.json()["status"], "erased");
}

async fn an_erased_user_takes_no_further_command(backend: Backend) {
    let app = app(backend).await;
    let erin = erin_with_history(&app).await;
    let path = format!("/api/v1/users/{}", erin.id);
    let erased = app
        .admin(Method::POST, &format!("{path}/erase"), None)
        .await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.text());
    let head = app.head().await;

    for (method, suffix, body) in [
        (Method::POST, "/erase", None),
        (Method::POST, "/suspend", None),
        (Method::POST, "/unlock", None),
        (
            Method::PATCH,
            "",
            Some(json!({ "display_name": "Back Again" })),
        ),
        (
            Method::PUT,
            "/password-management",
            Some(json!({ "externally_managed": true })),
        ),
    ] {
        let answer = app.admin(method, &format!("{path}{suffix}"), body).await;
        assert_eq!(
            answer.status,
            StatusCode::GONE,
            "{suffix}: {}",
            answer.text()
        );
        assert_eq!(answer.json()["code"], "user_erased", "{suffix}");
    }
    // Her old username and email are free again, and logging in with them finds nobody.
    let login = app.login(&erin.username, GOOD_PASSWORD).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    let again = app.create_user(&erin.username, Some(GOOD_PASSWORD)).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    assert_ne!(again.json()["user"]["id"], erin.id.as_str());
    // Nothing was recorded about Erin after her erasure.
    let timeline = app
        .admin_read(&format!("{path}/timeline"), app.head().await)
        .await
        .json();
    let last = timeline["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(last["position"].as_u64().unwrap() <= head, "{timeline}");

    let unknown = app
        .admin(
            Method::POST,
            &format!("/api/v1/users/{}/erase", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let no_token = app
        .request(Method::POST, &format!("{path}/erase"), None, None, &[])
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
}

async fn a_user_from_before_sealing_cannot_be_erased(backend: Backend) {
    let app = app(backend).await;
    let created = app.create_user("olden", Some(GOOD_PASSWORD)).await;
    let id = created.json()["user"]["id"].as_str().unwrap().to_owned();
    // A user written before sealing existed has no data key.
    crate::audit_integrity::tamper(
        &app,
        &[format!(
            "DELETE FROM secrets WHERE owner_kind = 'user' AND owner_id = '{id}' \
             AND kind = 'data_key'"
        )],
    )
    .await;
    let head = app.head().await;
    let refused = app
        .admin(Method::POST, &format!("/api/v1/users/{id}/erase"), None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    assert_eq!(refused.json()["code"], "erasure_unsupported_legacy");
    assert_eq!(app.head().await, head, "a refused erasure writes nothing");
    // Such a user goes on working as before.
    assert_eq!(
        app.login("olden", GOOD_PASSWORD).await.status,
        StatusCode::OK
    );
}

async fn dump_table(app: &TestApp, table: &str) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database_url).await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as(&format!("SELECT payload, metadata FROM {table}"))
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter().map(|(p, m)| p + &m).collect()
}
