//! The HTTP API.
//!
//! Layout: [`app`] builds the router; [`start`] wires the services a server needs and
//! bootstraps the default tenant and the admin token; [`run`] serves until shutdown.
//! [`routes`] holds one module per resource, [`extract`] our extractors (JSON, request
//! metadata, admin and session authentication, read-your-writes), [`error`] the problem
//! answers and their stable codes, [`commands`] what handlers share to run domain commands.
//!
//! Only this crate knows HTTP and JSON shapes.

pub mod clock;
pub mod commands;
pub mod error;
pub mod extract;
pub mod housekeeping;
pub mod metrics;
pub mod openapi;
pub mod passwords;
pub mod relying_party;
pub mod routes;
pub mod second_factors;
pub mod signing;
pub mod startup;
pub mod state;
pub mod tokens;
pub mod user_commands;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post, put};
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::routes::{
    applications, audit, auth, checkpoints, credentials, erasure, events, history, mfa,
    password_reset, portal, settings, step_up, system, users, webauthn_settings, webhooks,
};
pub use crate::startup::{ServerOptions, StartupError, start};
pub use crate::state::{ApiConfig, AppState};

/// Bodies larger than this are refused before they are read, and before any hashing.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/users", post(users::create_user).get(users::list_users))
        .route(
            "/users/{id}",
            get(users::get_user).patch(users::update_user),
        )
        .route("/users/{id}/suspend", post(users::suspend_user))
        .route("/users/{id}/erase", post(erasure::erase_user))
        .route("/users/{id}/reactivate", post(users::reactivate_user))
        .route("/users/{id}/unlock", post(users::unlock_user))
        .route("/users/{id}/logout", post(users::logout_user))
        .route("/users/{id}/password", put(users::set_password))
        .route(
            "/users/{id}/password-management",
            put(users::set_password_management),
        )
        .route(
            "/settings/lockout",
            get(settings::get_lockout).put(settings::put_lockout),
        )
        .route(
            "/settings/password",
            get(settings::get_password).put(settings::put_password),
        )
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/me", get(auth::me))
        .route("/me/password", post(auth::change_password))
        .route("/audit", get(audit::list_audit))
        .route(
            "/webhooks",
            post(webhooks::create_subscription).get(webhooks::list_subscriptions),
        )
        .route("/webhooks/attempts", get(webhooks::list_event_attempts))
        .route(
            "/webhooks/{id}",
            get(webhooks::get_subscription)
                .patch(webhooks::update_subscription)
                .delete(webhooks::delete_subscription),
        )
        .route("/webhooks/{id}/enable", post(webhooks::enable_subscription))
        .route(
            "/webhooks/{id}/disable",
            post(webhooks::disable_subscription),
        )
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/resync", post(webhooks::resync_subscription))
        .route("/webhooks/{id}/redeliver", post(webhooks::redeliver))
        .route("/webhooks/{id}/ping", post(webhooks::ping))
        .route("/webhooks/{id}/attempts", get(webhooks::list_attempts))
        .route(
            "/webhooks/{id}/dead-letters",
            get(webhooks::list_dead_letters),
        )
        .route(
            "/checkpoints",
            get(checkpoints::list_checkpoints).post(checkpoints::sign_checkpoint),
        )
        .route("/checkpoints/latest", get(checkpoints::latest_checkpoint))
        .route("/events", get(events::list_events))
        .route("/events/stream", get(events::stream_events))
        .route("/users/{id}/timeline", get(history::timeline))
        .route(
            "/applications",
            post(applications::create_application).get(applications::list_applications),
        )
        .route("/applications/{id}", get(applications::get_application))
        .route(
            "/applications/{id}/workflows",
            put(applications::put_workflows),
        )
        .merge(second_factor_routes());
    Router::new()
        .nest("/api/v1", v1)
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .route("/portal/", get(portal::index))
        .route("/portal/app.js", get(portal::script))
        .route("/portal/portal.css", get(portal::style))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// WebAuthn, TOTP and MFA (issue 3).
fn second_factor_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/settings/webauthn",
            get(webauthn_settings::get_webauthn).put(webauthn_settings::put_webauthn),
        )
        .route("/login/mfa/webauthn/begin", post(mfa::webauthn_begin))
        .route("/login/mfa/webauthn/finish", post(mfa::webauthn_finish))
        .route("/login/mfa/totp", post(mfa::totp_finish))
        .route("/password-reset", post(password_reset::request_reset))
        .route(
            "/password-reset/webauthn/begin",
            post(password_reset::webauthn_begin),
        )
        .route(
            "/password-reset/complete",
            post(password_reset::complete_reset),
        )
        .route("/login/passkey/begin", post(mfa::passkey_begin))
        .route("/login/passkey/finish", post(mfa::passkey_finish))
        .route("/login/enroll/begin", post(mfa::enroll_begin))
        .route("/login/enroll/finish", post(mfa::enroll_finish))
        .route("/me/credentials", get(credentials::my_credentials))
        .route("/me/mfa", get(credentials::my_mfa))
        .route(
            "/me/credentials/register/begin",
            post(credentials::my_register_begin),
        )
        .route(
            "/me/credentials/register/finish",
            post(credentials::my_register_finish),
        )
        .route(
            "/me/credentials/{credential_id}",
            patch(credentials::my_rename).delete(credentials::my_remove),
        )
        .route("/me/totp", post(mfa::totp_enroll).delete(mfa::totp_remove))
        .route("/me/totp/confirm", post(mfa::totp_confirm))
        .route("/me/step-up/webauthn/begin", post(step_up::webauthn_begin))
        .route(
            "/me/step-up/webauthn/finish",
            post(step_up::webauthn_finish),
        )
        .route("/me/step-up/totp", post(step_up::totp_step_up))
        .route(
            "/users/{id}/credentials",
            get(credentials::user_credentials),
        )
        .route("/users/{id}/mfa", get(credentials::user_mfa))
        .route(
            "/users/{id}/mfa-requirement",
            put(credentials::set_user_requirement),
        )
        .route(
            "/users/{id}/credentials/register/begin",
            post(credentials::user_register_begin),
        )
        .route(
            "/users/{id}/credentials/register/finish",
            post(credentials::user_register_finish),
        )
        .route(
            "/users/{id}/credentials/import-u2f",
            post(credentials::import_u2f),
        )
        .route(
            "/users/{id}/credentials/{credential_id}",
            patch(credentials::user_rename).delete(credentials::user_remove),
        )
}

async fn count_responses(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.metrics.record_status(response.status().as_u16());
    response
}

/// Serves until `shutdown` resolves, then lets requests in flight finish for a bounded time.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = drained_tx.send(());
    });
    tokio::select! {
        result = serve => result,
        () = async {
            let _ = drained_rx.await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        } => {
            tracing::warn!("requests still running 10 s after shutdown; stopping anyway");
            Ok(())
        }
    }
}
