//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    applications, audit, auth, checkpoints, credentials, erasure, events, history, mfa,
    password_reset, settings, step_up, system, users, webauthn_settings, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "keyledger", description = "An event-sourced identity backend."),
    paths(
        users::create_user, users::list_users, users::get_user, users::update_user,
        users::suspend_user, users::reactivate_user, users::unlock_user, users::logout_user,
        users::set_password,
        users::set_password_management, erasure::erase_user,
        auth::login, auth::logout, auth::me, auth::change_password,
        settings::get_lockout, settings::put_lockout, settings::get_password,
        settings::put_password,
        audit::list_audit,
        webhooks::create_subscription, webhooks::list_subscriptions,
        webhooks::get_subscription, webhooks::update_subscription,
        webhooks::delete_subscription, webhooks::enable_subscription,
        webhooks::disable_subscription, webhooks::rotate_secret, webhooks::resync_subscription,
        webhooks::redeliver, webhooks::ping, webhooks::list_attempts,
        webhooks::list_event_attempts, webhooks::list_dead_letters,
        checkpoints::list_checkpoints, checkpoints::latest_checkpoint,
        checkpoints::sign_checkpoint,
        events::list_events, events::stream_events,
        history::timeline,
        system::healthz, system::metrics,
        webauthn_settings::get_webauthn, webauthn_settings::put_webauthn,
        mfa::webauthn_begin, mfa::webauthn_finish, mfa::totp_finish, mfa::passkey_begin,
        mfa::passkey_finish, mfa::enroll_begin,
        mfa::enroll_finish, mfa::totp_enroll, mfa::totp_confirm, mfa::totp_remove,
        credentials::my_credentials, credentials::my_mfa, credentials::my_register_begin,
        credentials::my_register_finish, credentials::my_rename, credentials::my_remove,
        credentials::user_credentials, credentials::user_mfa, credentials::set_user_requirement,
        credentials::user_register_begin, credentials::user_register_finish,
        credentials::user_rename, credentials::user_remove, credentials::import_u2f,
        step_up::webauthn_begin, step_up::webauthn_finish, step_up::totp_step_up,
        password_reset::request_reset, password_reset::webauthn_begin,
        password_reset::complete_reset,
        applications::create_application, applications::list_applications,
        applications::get_application, applications::put_workflows,
    ),
    components(schemas(crate::routes::Written, crate::error::Problem)),
    modifiers(&BearerSchemes, &ProblemResponses)
)]
pub struct ApiDoc;

/// Any operation can answer these, from the extractors and the router, whatever its own
/// annotation says; each is a problem document.
struct ProblemResponses;

const SHARED_PROBLEMS: &[(&str, &str)] = &[
    ("400", "Invalid JSON, body, parameter or value"),
    ("401", "Missing or invalid credentials, or a failed login"),
    ("404", "Unknown resource"),
    ("405", "Method not allowed"),
    ("409", "Conflict"),
    ("413", "Body over 64 KiB"),
    ("415", "Body is not application/json"),
    ("500", "Internal error"),
    ("503", "Views have not reached the requested position"),
];

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (status, description) in SHARED_PROBLEMS {
                    let problem = ResponseBuilder::new()
                        .description(*description)
                        .content(
                            "application/problem+json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        )
                        .build();
                    // A documented answer of the operation's own keeps its description.
                    let entry = operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| problem.clone().into());
                    if let utoipa::openapi::RefOr::T(response) = entry
                        && response.content.is_empty()
                    {
                        response.content = problem.content.clone();
                    }
                }
            }
        }
    }
}

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
