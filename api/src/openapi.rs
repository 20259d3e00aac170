//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{audit, auth, settings, system, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "keyledger", description = "An event-sourced identity backend."),
    paths(
        users::create_user, users::list_users, users::get_user, users::update_user,
        users::suspend_user, users::reactivate_user, users::unlock_user, users::set_password,
        users::set_password_management,
        auth::login, auth::logout, auth::me, auth::change_password,
        settings::get_lockout, settings::put_lockout,
        audit::list_audit,
        system::healthz, system::metrics,
    ),
    components(schemas(crate::routes::Written)),
    modifiers(&BearerSchemes)
)]
pub struct ApiDoc;

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
