//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types.
//!
//! Every operation has a unique `operationId`, declares its path and query parameters, and
//! describes every answer; every problem answer is `application/problem+json` with the
//! [`Problem`] schema. The problem answers several routes share are the reusable responses
//! below (`#/components/responses/…`). `tests/http/openapi_client.rs` checks the document with
//! `openapi-spec-validator` and drives a client that `openapi-python-client` generates from it.

use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::error::Problem;
use crate::routes::{audit, exchange, grants, lease, ops, submissions};

#[derive(OpenApi)]
#[openapi(
    info(title = "linklease", description = "Link-and-lease session broker with immutable grants."),
    paths(
        grants::create, grants::batch, grants::get, grants::list, grants::revoke,
        submissions::for_grant, submissions::feed,
        exchange::start, exchange::otp, exchange::resend,
        lease::get, lease::submit, lease::complete, lease::refresh, lease::end,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        audit::history, audit::events, audit::export, audit::public_key,
    ),
    components(
        schemas(Problem),
        responses(BadRequest, Unauthenticated, LeaseInvalid, Forbidden, NotFound,
            PayloadTooLarge, TooManyRequests, Unavailable, OtherProblem),
    ),
    modifiers(&Security),
    tags((name = "grants", description = "Originators create and manage grants"),
        (name = "submissions", description = "Originators read what came back"),
        (name = "exchange", description = "Partner web apps exchange a link for a lease"),
        (name = "lease", description = "Lease holders read and write one payload"),
        (name = "audit", description = "Auditors review every grant's and lease's history and export signed bundles"),
        (name = "ops", description = "Operations")),
)]
struct ApiDoc;

/// `400 invalid_request`.
#[derive(ToResponse)]
#[response(
    description = "`invalid_request`: the body, a query parameter or the path is malformed; \
                   `errors` names each field's problem",
    content_type = "application/problem+json"
)]
pub struct BadRequest(pub Problem);

/// `401 unauthenticated` on the originator's and the partner's routes.
#[derive(ToResponse)]
#[response(
    description = "`unauthenticated`: the credentials are missing or wrong",
    content_type = "application/problem+json"
)]
pub struct Unauthenticated(pub Problem);

/// `401 lease_invalid` on the lease holder's routes.
#[derive(ToResponse)]
#[response(
    description = "`lease_invalid`: no lease token, or one that is forged, expired or ended, \
                   or whose grant is no longer active",
    content_type = "application/problem+json"
)]
pub struct LeaseInvalid(pub Problem);

/// `403 forbidden`.
#[derive(ToResponse)]
#[response(
    description = "`forbidden`: authenticated, but not allowed (a scope the key or lease lacks, \
                   an address outside the client's blocks, a missing CSRF header)",
    content_type = "application/problem+json"
)]
pub struct Forbidden(pub Problem);

/// `404 not_found`.
#[derive(ToResponse)]
#[response(
    description = "`not_found`: no such object for these credentials",
    content_type = "application/problem+json"
)]
pub struct NotFound(pub Problem);

/// `413 payload_too_large`.
#[derive(ToResponse)]
#[response(
    description = "`payload_too_large`: the body is over the route's limit",
    content_type = "application/problem+json"
)]
pub struct PayloadTooLarge(pub Problem);

/// `429 too_many_requests`.
#[derive(ToResponse)]
#[response(
    description = "`too_many_requests`: too many requests from this address; retry after \
                   `Retry-After` seconds",
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
)]
pub struct TooManyRequests(pub Problem);

/// `503 unavailable`.
#[derive(ToResponse)]
#[response(
    description = "`unavailable`: the database cannot be reached now; retry after \
                   `Retry-After` seconds",
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
)]
pub struct Unavailable(pub Problem);

/// Any other `4XX` problem of spec §4 (its `code` says which).
#[derive(ToResponse)]
#[response(
    description = "Another problem of the contract's stable codes; `code` says which",
    content_type = "application/problem+json"
)]
pub struct OtherProblem(pub Problem);

/// The security schemes: the originator's API key, the partner's client credentials, and a
/// lease as a Bearer token or as the browser's cookie plus its CSRF header.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            let mut bearer = Http::new(HttpAuthScheme::Bearer);
            bearer.bearer_format = Some("llk_ API key".into());
            bearer.description = Some("An originator's API key (`linklease apikey create`)".into());
            components.add_security_scheme("api_key", SecurityScheme::Http(bearer));
            let mut basic = Http::new(HttpAuthScheme::Basic);
            basic.description =
                Some("A partner client's id and secret (`linklease client create`)".into());
            components.add_security_scheme("client", SecurityScheme::Http(basic));
            let mut lease = Http::new(HttpAuthScheme::Bearer);
            lease.bearer_format = Some("JWT (EdDSA) lease token".into());
            lease.description =
                Some("The `lease_token` of `POST /v1/exchange/{flow_id}/otp`".into());
            components.add_security_scheme("lease", SecurityScheme::Http(lease));
            components.add_security_scheme(
                "lease_cookie",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    linklease_lease::cookie::LEASE_COOKIE,
                    "The browser's lease cookie; needs `csrf` too",
                ))),
            );
            components.add_security_scheme(
                "csrf",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "X-CSRF-Token",
                    "The lease's CSRF token, with `lease_cookie`",
                ))),
            );
        }
    }
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()));

/// The document as JSON (built once).
pub fn document() -> &'static str {
    &DOCUMENT
}
