//! Bad input gets a clear 4xx problem answer with a stable code, never a 5xx, and writes
//! nothing.

use reqwest::{Method, StatusCode};

use crate::{Backend, GOOD_PASSWORD, TestApp, app, on_both_backends};

on_both_backends!(bad_input_is_refused_with_a_problem_and_writes_nothing);

/// Method, path, content type, body, as admin, expected status, expected code.
type Case<'a> = (
    Method,
    String,
    Option<&'a str>,
    Vec<u8>,
    bool,
    StatusCode,
    &'a str,
);

async fn head(app: &TestApp) -> u64 {
    app.request(Method::GET, "/healthz", None, None, &[])
        .await
        .json()["log_position"]
        .as_u64()
        .unwrap()
}

/// Bodies just over the 64 KiB limit: they fit in the socket buffers, so the client always
/// finishes sending and reads the 413 (a much larger body races the server's early answer).
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    admin: bool,
) -> (StatusCode, serde_json::Value, String) {
    let mut builder = app.client.request(method, format!("{}{}", app.base, path));
    if admin {
        builder = builder.bearer_auth(&app.admin_token);
    }
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let response = builder.body(body).send().await.expect(path);
    let status = response.status();
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json, ct)
}

async fn bad_input_is_refused_with_a_problem_and_writes_nothing(backend: Backend) {
    let app = app(backend).await;
    let id = app.create_user("ada", Some(GOOD_PASSWORD)).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = head(&app).await;
    let json = Some("application/json");
    let user_path = format!("/api/v1/users/{id}");
    let cases: Vec<Case> = vec![
        (Method::POST, "/api/v1/users".into(), json, b"{\"username\": \"a\",".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_json"),
        (Method::POST, "/api/v1/users".into(), Some("text/plain"), b"{\"username\":\"bob\"}".to_vec(), true, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (Method::POST, "/api/v1/users".into(), json, b"{\"username\": 12345678}".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_body"),
        (Method::POST, "/api/v1/users".into(), json, b"{\"username\": \"bob\", \"is_admin\": true}".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_body"),
        (Method::POST, "/api/v1/users".into(), json, b"{\"username\": \"bob\", \"username\": \"eve\"}".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_body"),
        (Method::POST, "/api/v1/users".into(), json, b"{\"username\": \"   \"}".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_username"),
        (Method::POST, "/api/v1/users".into(), json, b"{\"username\": \"admin\"}".to_vec(), true, StatusCode::BAD_REQUEST, "reserved_username"),
        (Method::POST, "/api/v1/users".into(), json, b"{\"username\": \"bob\", \"email\": \"not-an-email\"}".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_email"),
        (Method::POST, "/api/v1/users".into(), json, b"{\"username\": \"b\xffob\"}".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_json"),
        (Method::POST, "/api/v1/users".into(), json, format!("{{\"username\": \"{}\"}}", "x".repeat(70 * 1024)).into_bytes(), true, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (Method::POST, "/api/v1/login".into(), json, format!("{{\"username\": \"ada\", \"password\": \"{}\"}}", "p".repeat(70 * 1024)).into_bytes(), false, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (Method::POST, "/api/v1/login".into(), json, b"{\"password\": \"x\"}".to_vec(), false, StatusCode::BAD_REQUEST, "invalid_body"),
        (Method::POST, "/api/v1/login".into(), json, b"{\"username\": \"ada\", \"password\": [\"x\"]}".to_vec(), false, StatusCode::BAD_REQUEST, "invalid_body"),
        (Method::POST, "/api/v1/login".into(), json, b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec(), false, StatusCode::BAD_REQUEST, "invalid_body"),
        (Method::GET, "/api/v1/users/not-a-uuid".into(), None, Vec::new(), true, StatusCode::BAD_REQUEST, "invalid_parameter"),
        (Method::GET, format!("/api/v1/users/{}", uuid::Uuid::now_v7()), None, Vec::new(), true, StatusCode::NOT_FOUND, "not_found"),
        (Method::POST, format!("/api/v1/users/{}/suspend", uuid::Uuid::now_v7()), None, Vec::new(), true, StatusCode::NOT_FOUND, "not_found"),
        (Method::PATCH, user_path.clone(), json, b"{\"email\": \"nope\"}".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_email"),
        (Method::GET, "/api/v1/users?limit=0".into(), None, Vec::new(), true, StatusCode::BAD_REQUEST, "invalid_parameter"),
        (Method::GET, "/api/v1/users?locked=maybe".into(), None, Vec::new(), true, StatusCode::BAD_REQUEST, "invalid_parameter"),
        (Method::GET, "/api/v1/audit?from=yesterday".into(), None, Vec::new(), true, StatusCode::BAD_REQUEST, "invalid_parameter"),
        (Method::GET, "/api/v1/nothing-here".into(), None, Vec::new(), true, StatusCode::NOT_FOUND, "route_not_found"),
        (Method::DELETE, "/api/v1/login".into(), None, Vec::new(), false, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (Method::PUT, "/api/v1/settings/lockout".into(), json, b"{\"enabled\": true}".to_vec(), true, StatusCode::BAD_REQUEST, "invalid_body"),
    ];
    for (method, path, content_type, body, admin, status, code) in cases {
        let label = format!("{method} {path}");
        let (got, problem, ct) = raw(&app, method, &path, content_type, body, admin).await;
        assert_eq!(got, status, "{label}: {problem}");
        assert_eq!(problem["code"], code, "{label}: {problem}");
        assert_eq!(ct, "application/problem+json", "{label}");
    }
    // Two Authorization headers are refused, not guessed between.
    let doubled = app
        .client
        .get(format!("{}/api/v1/users", app.base))
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(doubled.status(), StatusCode::BAD_REQUEST);
    // Nothing was written by any of it, and no refused login body reached a password hash.
    assert_eq!(head(&app).await, before);
    assert_eq!(
        app.metric("keyledger_password_verifications_total").await,
        0
    );
}
