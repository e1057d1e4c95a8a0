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
        Next::Otp { sent_to } => ExchangeStarted {
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
#[utoipa::path(post, path = "/v1/exchange", tag = "exchange", request_body = ExchangeRequest,
    security(("client" = [])),
    responses((status = 201, body = ExchangeStarted),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn start(
    state: web::Data<AppState>,
    partner: Partner,
    body: Result<JsonBody<ExchangeRequest, SMALL_BODY_LIMIT>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The partner is authenticated (its extractor ran) before the body's errors are told.
    let JsonBody(body) = body?;
    let visitor = partner.visitor();
    let started = run(&state, move |state| {
        let factor = body.factor.map(SecretString::new);
        let (flow_id, next) = exchange::open_with_factor(state, &body.token, factor, &visitor)?;
        Ok(answer(flow_id, next))
    })
    .await?;
    Ok(HttpResponse::Created().json(started))
}

/// Checks the code and issues the lease.
#[utoipa::path(post, path = "/v1/exchange/{flow_id}/otp", tag = "exchange", request_body = OtpRequest,
    security(("client" = [])),
    responses((status = 201, body = LeaseToken),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
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
#[utoipa::path(post, path = "/v1/exchange/{flow_id}/resend", tag = "exchange",
    security(("client" = [])),
    responses((status = 200, body = ExchangeStarted),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn resend(
    state: web::Data<AppState>,
    partner: Partner,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let visitor = partner.visitor();
    let flow_id = path.into_inner();
    let answered = run(&state, move |state| {
        let stored = partner_flow(state, &flow_id, &visitor.holder)?;
        let id = stored.flow.id;
        Ok(answer(id, exchange::resend(state, stored, &visitor)?))
    })
    .await?;
    Ok(HttpResponse::Ok().json(answered))
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
