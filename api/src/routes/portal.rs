//! The user portal: a static page and its script, built into the binary (`/portal/`).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Scripts only from this origin, no inline code, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub async fn index() -> Response {
    asset(
        include_str!("../portal/index.html"),
        "text/html; charset=utf-8",
    )
}

pub async fn script() -> Response {
    asset(
        include_str!("../portal/app.js"),
        "text/javascript; charset=utf-8",
    )
}

pub async fn style() -> Response {
    asset(
        include_str!("../portal/portal.css"),
        "text/css; charset=utf-8",
    )
}
