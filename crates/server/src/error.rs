//! The error policy, in one place.
//!
//! Every failure becomes `application/problem+json` with a stable `code` from the product
//! contract (spec §4). What goes to the client is the code, a title and a detail written for
//! it; the underlying cause (a database message, say) is logged with the request id and never
//! sent. Nothing a client sends can produce a 500: those are reserved for bugs and corrupt data.
//! Details never contain secrets: request parsing errors are rewritten so that offending values
//! are not echoed.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

use linklease_grant::{FieldProblem, GrantStatus, Problems};
use linklease_lease::FlowError;
use linklease_store::StoreError;

/// The stable problem codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // Each is documented by the spec and by `status`/`title`.
pub enum Code {
    InvalidRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    LinkInvalid,
    GrantExpired,
    GrantUsed,
    GrantRevoked,
    GrantLocked,
    FactorMismatch,
    OtpMismatch,
    OtpExpired,
    FlowExpired,
    LeaseInvalid,
    FieldNotWritable,
    InvalidField,
    CreateLimitExceeded,
    PayloadTooLarge,
    IdempotencyConflict,
    Conflict,
    MethodNotAllowed,
    TooManyRequests,
    Unavailable,
    Internal,
}

impl Code {
    /// Every code.
    pub const ALL: [Code; 24] = {
        use Code::*;
        [
            InvalidRequest,
            Unauthenticated,
            Forbidden,
            NotFound,
            LinkInvalid,
            GrantExpired,
            GrantUsed,
            GrantRevoked,
            GrantLocked,
            FactorMismatch,
            OtpMismatch,
            OtpExpired,
            FlowExpired,
            LeaseInvalid,
            FieldNotWritable,
            InvalidField,
            CreateLimitExceeded,
            PayloadTooLarge,
            IdempotencyConflict,
            Conflict,
            MethodNotAllowed,
            TooManyRequests,
            Unavailable,
            Internal,
        ]
    };

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        use Code::*;
        match self {
            InvalidRequest => StatusCode::BAD_REQUEST,
            Unauthenticated | FactorMismatch | OtpMismatch | LeaseInvalid => {
                StatusCode::UNAUTHORIZED
            }
            Forbidden => StatusCode::FORBIDDEN,
            NotFound | LinkInvalid => StatusCode::NOT_FOUND,
            GrantExpired | GrantUsed | GrantRevoked | OtpExpired | FlowExpired => StatusCode::GONE,
            GrantLocked => StatusCode::LOCKED,
            FieldNotWritable | InvalidField | CreateLimitExceeded => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IdempotencyConflict | Conflict => StatusCode::CONFLICT,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short human title.
    pub fn title(self) -> &'static str {
        use Code::*;
        match self {
            InvalidRequest => "The request is not valid",
            Unauthenticated => "Authentication is required",
            Forbidden => "Not allowed",
            NotFound => "Not found",
            LinkInvalid => "This link is not valid",
            GrantExpired => "This link has expired",
            GrantUsed => "This link has been used",
            GrantRevoked => "This link has been withdrawn",
            GrantLocked => "This link is locked",
            FactorMismatch => "That does not match",
            OtpMismatch => "That code is not right",
            OtpExpired => "That code has expired",
            FlowExpired => "This attempt has expired",
            LeaseInvalid => "The session is not valid",
            FieldNotWritable => "A field may not be written",
            InvalidField => "A field value is not valid",
            CreateLimitExceeded => "Too many records",
            PayloadTooLarge => "The request body is too large",
            IdempotencyConflict => "The idempotency key was used for another request",
            Conflict => "Conflicts with existing data",
            MethodNotAllowed => "Method not allowed",
            TooManyRequests => "Too many requests",
            Unavailable => "Temporarily unavailable",
            Internal => "Internal error",
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        // Kept in step with serde's rename by the test `codes_serialize_as_their_names`.
        use Code::*;
        match self {
            InvalidRequest => "invalid_request",
            Unauthenticated => "unauthenticated",
            Forbidden => "forbidden",
            NotFound => "not_found",
            LinkInvalid => "link_invalid",
            GrantExpired => "grant_expired",
            GrantUsed => "grant_used",
            GrantRevoked => "grant_revoked",
            GrantLocked => "grant_locked",
            FactorMismatch => "factor_mismatch",
            OtpMismatch => "otp_mismatch",
            OtpExpired => "otp_expired",
            FlowExpired => "flow_expired",
            LeaseInvalid => "lease_invalid",
            FieldNotWritable => "field_not_writable",
            InvalidField => "invalid_field",
            CreateLimitExceeded => "create_limit_exceeded",
            PayloadTooLarge => "payload_too_large",
            IdempotencyConflict => "idempotency_conflict",
            Conflict => "conflict",
            MethodNotAllowed => "method_not_allowed",
            TooManyRequests => "too_many_requests",
            Unavailable => "unavailable",
            Internal => "internal",
        }
    }
}

/// An error answer: a code, a detail for the client, and (for logs only) a cause.
#[derive(Debug)]
pub struct ApiError {
    /// The stable code.
    pub code: Code,
    /// What the client is told.
    pub detail: String,
    /// Per-field problems, for validation errors.
    pub errors: Vec<FieldProblem>,
    /// Seconds to wait, for 429 and 503.
    pub retry_after: Option<u32>,
    /// For `factor_mismatch` and `otp_mismatch`: tries left before a lock or a dead flow.
    pub attempts_left: Option<u32>,
    /// For `unauthenticated`: the `WWW-Authenticate` challenge (default `Bearer`).
    pub challenge: Option<&'static str>,
    /// Logged, never sent.
    cause: Option<String>,
}

impl ApiError {
    /// An error with a client-facing detail.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            attempts_left: None,
            challenge: None,
            cause: None,
        }
    }

    /// `invalid_request` listing every field problem.
    pub fn invalid(problems: Problems) -> Self {
        Self {
            errors: problems.0,
            ..Self::new(
                Code::InvalidRequest,
                "one or more fields are invalid; see errors",
            )
        }
    }

    /// `not_found`, the same answer for missing and for another tenant's objects.
    pub fn not_found() -> Self {
        Self::new(Code::NotFound, "no such object")
    }

    /// The answer for a grant that is not active.
    pub fn grant_inactive(status: GrantStatus) -> Self {
        match status {
            GrantStatus::Used => Self::new(Code::GrantUsed, "the grant has reached its uses"),
            GrantStatus::Expired => Self::new(Code::GrantExpired, "the grant has expired"),
            GrantStatus::Revoked => Self::new(Code::GrantRevoked, "the grant was revoked"),
            GrantStatus::Locked => Self::new(
                Code::GrantLocked,
                "the grant is locked after too many failed attempts",
            ),
            GrantStatus::Active => Self::new(Code::Conflict, "the grant is active"),
        }
    }

    /// `unavailable` with a retry hint; the cause is logged.
    pub fn unavailable(cause: impl fmt::Display) -> Self {
        Self {
            retry_after: Some(1),
            cause: Some(cause.to_string()),
            ..Self::new(Code::Unavailable, "the service is busy; try again shortly")
        }
    }

    /// `internal`; the cause is logged, the client learns nothing of it.
    pub fn internal(cause: impl fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(Code::Internal, "an internal error occurred")
        }
    }

    /// The answer for a refused flow step.
    pub fn flow(e: FlowError) -> Self {
        let detail = e.to_string();
        match e {
            FlowError::Expired | FlowError::Dead | FlowError::Finished => {
                Self::new(Code::FlowExpired, detail)
            }
            FlowError::WrongStep => Self::new(Code::InvalidRequest, detail),
            FlowError::FactorMismatch => Self::new(Code::FactorMismatch, detail),
            FlowError::OtpMismatch { tries_left } => Self {
                attempts_left: Some(tries_left),
                ..Self::new(Code::OtpMismatch, detail)
            },
            FlowError::OtpExpired => Self::new(Code::OtpExpired, detail),
            FlowError::ResendTooSoon { retry_after } => Self {
                retry_after: Some(
                    u32::try_from(retry_after.whole_seconds().max(0) + 1).unwrap_or(u32::MAX),
                ),
                ..Self::new(Code::TooManyRequests, detail)
            },
            FlowError::SendsExhausted => Self::new(Code::TooManyRequests, detail),
        }
    }

    /// `too_many_requests` with a retry hint in seconds.
    pub fn too_many(retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(Code::TooManyRequests, "too many requests; slow down")
        }
    }

    /// `too_many_requests` saying `detail`, with `Retry-After` the seconds until `wait` has
    /// passed (its whole seconds and one more, at least one).
    pub fn too_many_for(wait: time::Duration, detail: &str) -> Self {
        let seconds = wait.whole_seconds().saturating_add(1);
        Self {
            detail: detail.to_owned(),
            ..Self::too_many(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX))
        }
    }

    /// The logged cause, if any.
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)?;
        if let Some(cause) = &self.cause {
            write!(f, " (cause: {cause})")?;
        }
        Ok(())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::GrantNotActive(status) => ApiError::grant_inactive(status),
            StoreError::Conflict(cause) => ApiError {
                cause: Some(cause),
                ..ApiError::new(Code::Conflict, "the change conflicts with existing data")
            },
            StoreError::Unavailable(cause) => ApiError::unavailable(cause),
            e @ (StoreError::Corrupt(_) | StoreError::Internal(_)) => ApiError::internal(e),
        }
    }
}

/// The problem document (RFC 9457).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:linklease:problem:{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the code.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for this request.
    pub detail: String,
    /// The stable code.
    #[schema(value_type = String)]
    pub code: Code,
    /// Per-field problems (validation errors).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// Tries left (`factor_mismatch`, `otp_mismatch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.code == Code::Unauthenticated {
            let challenge = self.challenge.unwrap_or("Bearer");
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            ));
        }
        response.json(Problem {
            kind: format!("urn:linklease:problem:{}", self.code.as_str()),
            title: self.code.title(),
            status: status.as_u16(),
            detail: self.detail.clone(),
            code: self.code,
            errors: self.errors.clone(),
            attempts_left: self.attempts_left,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in Code::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn spec_statuses() {
        let want = [
            ("invalid_request", 400),
            ("unauthenticated", 401),
            ("forbidden", 403),
            ("not_found", 404),
            ("link_invalid", 404),
            ("grant_expired", 410),
            ("grant_used", 410),
            ("grant_revoked", 410),
            ("grant_locked", 423),
            ("factor_mismatch", 401),
            ("otp_mismatch", 401),
            ("otp_expired", 410),
            ("flow_expired", 410),
            ("lease_invalid", 401),
            ("field_not_writable", 422),
            ("invalid_field", 422),
            ("create_limit_exceeded", 422),
            ("payload_too_large", 413),
            ("idempotency_conflict", 409),
            ("too_many_requests", 429),
            ("unavailable", 503),
        ];
        for (name, status) in want {
            let code = Code::ALL.into_iter().find(|c| c.as_str() == name).unwrap();
            assert_eq!(code.status().as_u16(), status, "{name}");
        }
    }
}
