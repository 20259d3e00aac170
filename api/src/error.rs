//! Every failure the API answers, as `application/problem+json` with a stable machine code.
//!
//! Three kinds of failure, three answers: the caller's mistake is a 4xx with a code; a
//! concurrency conflict a 409 (or 503 with `Retry-After`); our own fault is logged once and
//! answered with an opaque 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyledger_domain::password::PasswordRejection;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body does not have the expected shape: {0}")]
    InvalidBody(String),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("the body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    InvalidParameter(String),
    /// A value the domain refused to parse (username, email, display name).
    #[error("{detail}")]
    InvalidValue { code: &'static str, detail: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// The one answer to every failed login, whatever the reason (the reason is in the log).
    #[error("login failed")]
    LoginFailed,
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("{detail}")]
    Forbidden { code: &'static str, detail: String },
    /// The resource existed and is gone for good (an erased user).
    #[error("{detail}")]
    Gone { code: &'static str, detail: String },
    /// A registration ceremony that did not verify, whatever the reason (logged).
    #[error("the WebAuthn ceremony failed")]
    CeremonyFailed,
    /// A second factor that did not verify, whatever the reason (logged, and recorded in
    /// debug mode).
    #[error("second factor refused")]
    MfaFailed,
    #[error("password rejected")]
    PasswordRejected(PasswordRejection),
    #[error("{detail}")]
    InvalidSettings { code: &'static str, detail: String },
    #[error("the views have not reached the requested position yet")]
    ViewsBehind,
    #[error("internal error")]
    Internal(String),
}

/// `application/problem+json` (RFC 9457) with a stable machine `code`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Why a password was refused (`code`, and `min_length` or `max_length` when relevant).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    reason: Option<&'a PasswordRejection>,
}

impl ApiError {
    /// Status, stable code and title. Exhaustive on purpose: a new variant forces a decision.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json", "Invalid JSON"),
            Self::InvalidBody(_) => (S::BAD_REQUEST, "invalid_body", "Invalid request body"),
            Self::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            Self::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large", "Body too large"),
            Self::InvalidParameter(_) => (S::BAD_REQUEST, "invalid_parameter", "Invalid parameter"),
            Self::InvalidValue { code, .. } => (S::BAD_REQUEST, code, "Invalid value"),
            Self::NotFound(_) => (S::NOT_FOUND, "not_found", "Not found"),
            Self::RouteNotFound => (S::NOT_FOUND, "route_not_found", "No such route"),
            Self::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            Self::Unauthorized => (S::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::LoginFailed => (S::UNAUTHORIZED, "login_failed", "Login failed"),
            Self::Conflict { code, .. } => (S::CONFLICT, code, "Conflict"),
            Self::Forbidden { code, .. } => (S::FORBIDDEN, code, "Forbidden"),
            Self::Gone { code, .. } => (S::GONE, code, "Gone"),
            Self::CeremonyFailed => (
                S::BAD_REQUEST,
                "webauthn_ceremony_failed",
                "WebAuthn ceremony failed",
            ),
            Self::MfaFailed => (S::UNAUTHORIZED, "mfa_failed", "Second factor refused"),
            Self::PasswordRejected(reason) => match reason {
                PasswordRejection::ExternallyManaged => (
                    S::CONFLICT,
                    "password_externally_managed",
                    "Password is managed externally",
                ),
                PasswordRejection::CurrentPasswordWrong => (
                    S::FORBIDDEN,
                    "current_password_wrong",
                    "Current password is wrong",
                ),
                PasswordRejection::TooShort { .. }
                | PasswordRejection::TooLong { .. }
                | PasswordRejection::Blocklisted
                | PasswordRejection::ControlCharacter
                | PasswordRejection::InvalidPolicy { .. } => {
                    (S::BAD_REQUEST, "password_rejected", "Password rejected")
                }
            },
            Self::InvalidSettings { code, .. } => (S::BAD_REQUEST, code, "Invalid settings"),
            Self::ViewsBehind => (
                S::SERVICE_UNAVAILABLE,
                "views_behind",
                "Views are catching up",
            ),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error", "Internal error"),
        }
    }

    /// Every command on an erased user answers this.
    pub fn user_erased() -> Self {
        Self::Gone {
            code: "user_erased",
            detail: "the user was erased".into(),
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let detail = match &self {
            // Our fault: logged once here, never described to the caller.
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                None
            }
            // Byte-identical for every failed login: nothing varies.
            Self::LoginFailed
            | Self::Unauthorized
            | Self::PasswordRejected(_)
            | Self::CeremonyFailed
            | Self::MfaFailed => None,
            other => Some(other.to_string()),
        };
        let reason = match &self {
            Self::PasswordRejected(reason) => Some(reason),
            _ => None,
        };
        let body = serde_json::to_vec(&Problem {
            kind: format!("urn:keyledger:problem:{code}"),
            title,
            status: status.as_u16(),
            code,
            detail,
            reason,
        })
        .unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::ViewsBehind => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<keyledger_projections::ProjectionError> for ApiError {
    fn from(e: keyledger_projections::ProjectionError) -> Self {
        Self::internal(e)
    }
}

impl From<keyledger_store::StoreError> for ApiError {
    fn from(e: keyledger_store::StoreError) -> Self {
        Self::internal(e)
    }
}
