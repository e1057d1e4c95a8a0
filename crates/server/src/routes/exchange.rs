//! The partner exchange (spec §3): a partner web app turns a link, the factor and the code into
//! a lease token, server-side, with its client credentials.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use linklease_grant::{FlowId, SecretString};
use linklease_lease::Holder;
use linklease_lease::token::Scope;
use linklease_store::StoreError;
use linklease_store::flows::{self, StoredFlow};

use crate::body::{JsonBody, SMALL_BODY_LIMIT};
use crate::error::{ApiError, Problem};
use crate::exchange::{self, IssuedLease, Next};
use crate::partner::Partner;
use crate::routes::resource;
use crate::{AppState, rfc3339, run};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/exchange").route(web::post().to(start)))
        .service(resource("/v1/exchange/{flow_id}/otp").route(web::post().to(otp)))
        .service(resource("/v1/exchange/{flow_id}/resend").route(web::post().to(resend)));
}

/// `POST /v1/exchange`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The link token (the last part of the link).
    pub token: String,
    /// The second factor (date of birth `YYYY-MM-DD` or PIN); omit for grants without one.
    #[serde(default)]
    pub factor: Option<String>,
}

/// `POST /v1/exchange/{flow_id}/otp`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtpRequest {
    /// The six-digit code.
    pub code: String,
}

/// A lease token for the partner.
#[derive(Serialize, ToSchema)]
pub struct LeaseToken {
    /// The JWT to send as `Authorization: Bearer …`.
    pub lease_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// RFC 3339.
    pub expires_at: String,
    /// What the lease may do.
    pub scopes: Vec<Scope>,
}

impl LeaseToken {
    /// The answer for an issued lease.
    pub fn new(issued: &IssuedLease) -> Self {
        Self {
            lease_token: issued.token.expose().to_owned(),
            token_type: "Bearer",
            expires_at: rfc3339(issued.lease.expires_at),
            scopes: issued.scopes.clone(),
        }
    }
}

/// The answer to `POST /v1/exchange`.
#[derive(Serialize, ToSchema)]
pub struct ExchangeStarted {
    /// The flow, for the next calls.
    pub flow_id: FlowId,
    /// `otp` (a code was sent) or `lease` (issued at once: the grant sends no code).
    pub next: &'static str,
    /// Where the code went, masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_sent_to: Option<String>,
    /// The lease, when `next` is `lease`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseToken>,
}

fn answer(flow_id: FlowId, next: Next) -> ExchangeStarted {
    match next {
        Next::Otp { sent_to, .. } => ExchangeStarted {
            flow_id,
            next: "otp",
            otp_sent_to: Some(sent_to),
            lease: None,
        },
        Next::Lease(issued) => ExchangeStarted {
            flow_id,
            next: "lease",
            otp_sent_to: None,
            lease: Some(LeaseToken::new(&issued)),
        },
    }
}

/// Opens a flow with the link token and checks the factor in one call.
#[utoipa::path(post, path = "/v1/exchange", tag = "exchange", operation_id = "start_exchange", request_body = ExchangeRequest,
    security(("client" = [])),
    responses((status = 201, description = "The flow: a code was sent (`next` is `otp`), or the lease at once (`lease`)", body = ExchangeStarted),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, description = "`unauthenticated` (client credentials), or `factor_mismatch` with `attempts_left`", body = Problem, content_type = "application/problem+json"),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, description = "`link_invalid`: no such link", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`grant_expired`, `grant_used` or `grant_revoked`: the grant is no longer active", body = Problem, content_type = "application/problem+json"),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 423, description = "`grant_locked`: too many wrong factors", body = Problem, content_type = "application/problem+json"),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn start(
    state: web::Data<AppState>,
    partner: Partner,
    body: Result<JsonBody<ExchangeRequest, SMALL_BODY_LIMIT>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The partner is authenticated (its extractor ran) before the body's errors are told.
    let JsonBody(body) = body?;
    let visitor = partner.visitor();
    let (flow_id, next) = run(&state, move |state| {
        let factor = body.factor.map(SecretString::new);
        exchange::open_with_factor(state, &body.token, factor, &visitor)
    })
    .await?;
    let next = exchange::deliver(&state, next).await?;
    Ok(HttpResponse::Created().json(answer(flow_id, next)))
}

/// Checks the code and issues the lease.
#[utoipa::path(post, path = "/v1/exchange/{flow_id}/otp", tag = "exchange", operation_id = "check_otp", request_body = OtpRequest,
    params(("flow_id" = FlowId, Path, description = "The flow's id (`flow_id` of `POST /v1/exchange`)")),
    security(("client" = [])),
    responses((status = 201, description = "The lease token", body = LeaseToken),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, description = "`unauthenticated` (client credentials), or `otp_mismatch` with `attempts_left`", body = Problem, content_type = "application/problem+json"),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, description = "`not_found`: no such flow of this client", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`otp_expired`, `flow_expired`, or the grant is no longer active", body = Problem, content_type = "application/problem+json"),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 423, description = "`grant_locked`", body = Problem, content_type = "application/problem+json"),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn otp(
    state: web::Data<AppState>,
    partner: Partner,
    path: web::Path<String>,
    body: Result<JsonBody<OtpRequest, SMALL_BODY_LIMIT>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let JsonBody(body) = body?;
    let visitor = partner.visitor();
    let flow_id = path.into_inner();
    let issued = run(&state, move |state| {
        let stored = partner_flow(state, &flow_id, &visitor.holder)?;
        exchange::check_otp(state, stored, &SecretString::new(body.code), &visitor)
    })
    .await?;
    Ok(HttpResponse::Created().json(LeaseToken::new(&issued)))
}

/// Sends another code.
#[utoipa::path(post, path = "/v1/exchange/{flow_id}/resend", tag = "exchange", operation_id = "resend_otp",
    params(("flow_id" = FlowId, Path, description = "The flow's id (`flow_id` of `POST /v1/exchange`)")),
    security(("client" = [])),
    responses((status = 200, description = "Another code was sent", body = ExchangeStarted),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, description = "`not_found`: no such flow of this client", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`flow_expired`, or the grant is no longer active", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_requests`: too soon after the last code, too many codes, or too many requests; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn resend(
    state: web::Data<AppState>,
    partner: Partner,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let visitor = partner.visitor();
    let flow_id = path.into_inner();
    let (id, next) = run(&state, move |state| {
        let stored = partner_flow(state, &flow_id, &visitor.holder)?;
        let id = stored.flow.id;
        Ok((id, exchange::resend(state, stored, &visitor)?))
    })
    .await?;
    let next = exchange::deliver(&state, next).await?;
    Ok(HttpResponse::Ok().json(answer(id, next)))
}

/// The flow `id`, if this partner opened it; any other flow is `not_found`.
fn partner_flow(state: &AppState, id: &str, holder: &Holder) -> Result<StoredFlow, ApiError> {
    let id: FlowId = id.parse().map_err(|_| ApiError::not_found())?;
    let stored = state
        .store
        .read(|c| flows::get(c, id))
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(),
            other => other.into(),
        })?;
    if stored.flow.holder == *holder {
        Ok(stored)
    } else {
        Err(ApiError::not_found())
    }
}
