//! The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json`.
//!
//! Each handler carries its own `#[utoipa::path]` annotation next to its code, so the
//! description changes in the same diff as the behaviour; [`ApiDoc`] only lists them.
//! Adding a route is two one-line changes: its entry in `routes()` (lib.rs) and its handler
//! in `paths(...)` below. A test (`crates/http/tests/openapi.rs`) fails if a registered
//! route is missing here or a documented one is not served.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Name of the IM token security scheme. Handlers must spell it as a literal in
/// `security(("bearer" = []))` (the macro takes no paths); a test checks every reference
/// names a defined scheme.
pub const BEARER: &str = "bearer";
/// Name of the registered-app (HTTP Basic) security scheme.
pub const APP_BASIC: &str = "app_basic";

/// The API description; `ApiDoc::openapi()` builds it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Confab HTTP API",
        description = "Operator endpoints (health, metrics) and the client API under /api/v1. \
                       Errors are JSON `{\"error\": code, \"message\": text}` with stable codes.",
    ),
    paths(
        crate::healthz,
        crate::metrics,
        crate::api::history,
        crate::introspect::introspect,
        crate::api::views::conversations,
        crate::api::views::sync,
        crate::api::send::send_message,
        crate::api::send::mark_read,
        crate::api::groups::create,
        crate::api::groups::list,
        crate::api::groups::show,
        crate::api::groups::update,
        crate::api::groups::add_members,
        crate::api::groups::remove_member,
        crate::api::groups::read_by,
    ),
    components(schemas(crate::ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operations", description = "Health and metrics for operators and load balancers"),
        (name = "client", description = "The client API, authenticated by an IM token"),
        (name = "apps", description = "For registered apps, authenticated by client id and secret"),
    )
)]
pub struct ApiDoc;

/// Adds the security schemes; the derive has no attribute syntax for them.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        // The IM token is opaque (not a JWT); RFC 6750 §2.1 header form only.
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Registered apps authenticate as OAuth clients (RFC 6749 §2.3.1).
        components.add_security_scheme(
            APP_BASIC,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The description serialised once: it is fixed at compile time, so there is no reason to
/// rebuild it per request.
fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            // Serialising plain structs of strings and maps cannot fail; an empty object
            // keeps the endpoint answering JSON if that ever changes.
            .unwrap_or_else(|_| "{}".into())
    })
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}
