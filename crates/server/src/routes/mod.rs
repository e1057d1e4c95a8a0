//! HTTP routes, one module per area of the product contract.

pub mod grants;
pub mod ops;

use actix_web::{HttpResponse, web};

use crate::error::{ApiError, Code};

/// Every route of the application.
pub fn configure(cfg: &mut web::ServiceConfig) {
    grants::configure(cfg);
    ops::configure(cfg);
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
