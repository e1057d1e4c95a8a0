//! HTTP routes, one module per area of the product contract.

pub mod audit;
pub mod browser;
pub mod exchange;
pub mod grants;
pub mod lease;
pub mod ops;
pub mod submissions;

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{ApiError, Code};

/// Every route of the application.
pub fn configure(cfg: &mut web::ServiceConfig) {
    extractor_errors(cfg);
    grants::configure(cfg);
    submissions::configure(cfg);
    exchange::configure(cfg);
    lease::configure(cfg);
    browser::configure(cfg);
    ops::configure(cfg);
    audit::configure(cfg);
}

/// actix's own extractors answer in plain text when they fail; make it problem+json. (The
/// routes read bodies with `JsonBody` and queries by hand, so these are a safety net; browser
/// forms get their HTML page from `browser::configure`.)
fn extractor_errors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into()))
        .app_data(web::QueryConfig::default().error_handler(|_, _| {
            ApiError::new(Code::InvalidRequest, "the query string is malformed").into()
        }))
        .app_data(web::JsonConfig::default().error_handler(|e, _| {
            use actix_web::error::JsonPayloadError as J;
            match e {
                J::OverflowKnownLength { .. } | J::Overflow { .. } => {
                    ApiError::new(Code::PayloadTooLarge, "the request body is too large")
                }
                J::ContentType => ApiError::new(
                    Code::InvalidRequest,
                    "Content-Type must be application/json",
                ),
                _ => ApiError::new(Code::InvalidRequest, "the body is not valid JSON"),
            }
            .into()
        }));
}

/// The answer for a path that exists with another method.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        Code::MethodNotAllowed,
        "this route does not accept that method",
    ))
}

/// The answer for a path that does not exist.
pub async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(Code::NotFound, "no such route"))
}

/// A resource whose unsupported methods answer with a problem document, not an empty 405.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// An opaque page cursor for the id of the last item of a page.
pub fn encode_cursor(id: impl std::fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(id.to_string())
}

/// The id inside a cursor made by [`encode_cursor`].
pub fn decode_cursor<T: std::str::FromStr>(cursor: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}
