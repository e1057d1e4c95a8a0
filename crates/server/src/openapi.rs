//! The OpenAPI 3 document, generated from the handlers' annotations and the wire types.

use std::sync::LazyLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::routes::{exchange, grants, lease, ops, submissions};

#[derive(OpenApi)]
#[openapi(
    info(title = "linklease", description = "Link-and-lease session broker with immutable grants."),
    paths(
        grants::create, grants::batch, grants::get, grants::list, grants::revoke,
        submissions::for_grant, submissions::feed,
        exchange::start, exchange::otp, exchange::resend,
        lease::get, lease::submit, lease::complete, lease::refresh, lease::end,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        crate::routes::audit::history, crate::routes::audit::events, crate::routes::audit::export, crate::routes::audit::public_key,
    ),
    components(schemas(Problem)),
    modifiers(&Security),
    tags((name = "grants", description = "Originators create and manage grants"),
        (name = "submissions", description = "Originators read what came back"),
        (name = "exchange", description = "Partner web apps exchange a link for a lease"),
        (name = "lease", description = "Lease holders read and write one payload"),
        (name = "audit", description = "Auditors review every grant's and lease's history and export signed bundles"),
        (name = "ops", description = "Operations")),
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            let mut bearer = Http::new(HttpAuthScheme::Bearer);
            bearer.bearer_format = Some("llk_ API key".into());
            components.add_security_scheme("api_key", SecurityScheme::Http(bearer));
            components.add_security_scheme(
                "client",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
            );
            let mut lease = Http::new(HttpAuthScheme::Bearer);
            lease.bearer_format = Some("JWT (EdDSA) lease token".into());
            components.add_security_scheme("lease", SecurityScheme::Http(lease));
        }
    }
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()));

/// The document as JSON (built once).
pub fn document() -> &'static str {
    &DOCUMENT
}
