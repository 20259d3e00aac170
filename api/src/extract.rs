//! Our own extractors: their rejections speak the problem format, and they turn request facts
//! into event metadata and authorisation handles.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use keyledger_store::{Actor, ActorKind, EventMetadata};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens;

/// JSON body whose every rejection is a problem answer.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
                JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
                JsonRejection::JsonDataError(e) => ApiError::InvalidBody(e.body_text()),
                JsonRejection::BytesRejection(e) => {
                    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::InvalidBody(e.body_text())
                    }
                }
                other => ApiError::InvalidBody(other.body_text()),
            }),
        }
    }
}

/// Path parameters; a malformed id is a 400, not a 500.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|e: PathRejection| ApiError::InvalidParameter(e.body_text()))
    }
}

pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e: QueryRejection| ApiError::InvalidParameter(e.body_text()))
    }
}

/// Where a request came from: recorded with every event it causes.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The socket peer. `X-Forwarded-For` is not trusted: any client can set it.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: String,
}

impl RequestContext {
    pub fn metadata(&self, actor: Actor) -> EventMetadata {
        EventMetadata {
            actor,
            request_ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            correlation_id: Some(self.correlation_id.clone()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let user_agent = header_text(&parts.headers, header::USER_AGENT.as_str())
            .map(|ua| ua.chars().take(512).collect());
        let correlation_id = header_text(&parts.headers, "x-correlation-id")
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 64
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        Ok(Self {
            ip,
            user_agent,
            correlation_id,
        })
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(ApiError::Unauthorized)?;
    if values.next().is_some() {
        return Err(ApiError::InvalidParameter(
            "more than one Authorization header".into(),
        ));
    }
    let text = value.to_str().map_err(|_| ApiError::Unauthorized)?;
    let token = text
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 512)
        .ok_or(ApiError::Unauthorized)?;
    Ok(token)
}

/// Proof that the request carries the admin token. Admin handlers take it as an argument, so
/// a privileged handler cannot be written without the check.
#[derive(Debug, Clone)]
pub struct Admin {
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if state.admin_token.matches(token) {
            Ok(Self {
                actor: Actor {
                    kind: ActorKind::Admin,
                    id: Some("bootstrap".into()),
                },
            })
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// A user's live session.
#[derive(Debug, Clone)]
pub struct UserSession {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub token_hash: [u8; 32],
}

impl UserSession {
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorKind::User,
            id: Some(self.user_id.to_string()),
        }
    }
}

impl FromRequestParts<AppState> for UserSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token_hash = tokens::hash(bearer(parts)?);
        let now = state.clock.now();
        let session = state
            .sessions
            .authenticate(token_hash, now)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        // No view is read here: a suspension, a lock, a password reset or an erasure ends the
        // user's sessions in the transaction of its event (`UserCommands`), and a session
        // starts only with the events of a login the user's aggregate accepted, so a valid
        // session is a usable account's.
        Ok(Self {
            user_id: session.user_id,
            tenant_id: session.tenant_id,
            token_hash,
        })
    }
}

/// `X-Keyledger-Min-Position: N` asks a read to wait until every view has folded position N
/// (the position a command answered with), so a client reads its own writes.
pub struct ReadAfter;

pub const MIN_POSITION_HEADER: &str = "x-keyledger-min-position";
pub const POSITION_HEADER: &str = "x-keyledger-position";

impl FromRequestParts<AppState> for ReadAfter {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(MIN_POSITION_HEADER) else {
            return Ok(Self);
        };
        let position: u64 = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!("{MIN_POSITION_HEADER} must be a position"))
            })?;
        if state
            .progress
            .wait_for(position, state.config.read_wait)
            .await
        {
            Ok(Self)
        } else {
            Err(ApiError::ViewsBehind)
        }
    }
}
