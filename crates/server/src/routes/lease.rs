//! The lease holder's routes (spec §3): read the payload, submit, complete, refresh, end.
//! The lease comes as a Bearer token, or as the browser cookie plus `X-CSRF-Token`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use linklease_grant::{GrantId, GrantStatus, Permissions, SubmissionId};
use linklease_lease::cookie;
use linklease_lease::submission::SubmissionRequest;
use linklease_lease::token::Scope;
use linklease_store::audit::NewEvent;

use crate::body::JsonBody;
use crate::client_ip::{client_ip, user_agent};
use crate::error::{ApiError, Code, Problem};
use crate::lease_auth::{
    LeaseHolder, Lookup, Presented, authorize, authorize_with, fetch, group_read_facts,
};
use crate::lease_ops;
use crate::routes::exchange::LeaseToken;
use crate::routes::resource;
use crate::{AppState, rfc3339, run};

/// Body cap of a submission: 64 KiB of canonical JSON plus room for whitespace and escapes.
pub const SUBMISSION_BODY_LIMIT: usize = 128 * 1024;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/lease")
            .route(web::get().to(get))
            .route(web::delete().to(end)),
    )
    .service(resource("/v1/lease/submissions").route(web::post().to(submit)))
    .service(resource("/v1/lease/complete").route(web::post().to(complete)))
    .service(resource("/v1/lease/refresh").route(web::post().to(refresh)));
}

/// `GET /v1/lease`.
#[derive(Serialize, ToSchema)]
pub struct LeaseView<'a> {
    /// The grant.
    pub grant_id: GrantId,
    /// RFC 3339.
    pub expires_at: String,
    /// What the lease may do.
    pub scopes: Vec<Scope>,
    /// What may be written.
    pub permissions: Permissions,
    /// The payload (absent when the grant does not allow reading).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<&'a RawValue>,
}

/// The answer to an accepted submission.
#[derive(Serialize, ToSchema)]
pub struct SubmissionAccepted {
    /// The submission.
    pub id: SubmissionId,
    /// The grant's status after it (`used` after the last use).
    pub grant_status: GrantStatus,
    /// RFC 3339.
    pub received_at: String,
}

/// The answer to `POST /v1/lease/complete`.
#[derive(Serialize, ToSchema)]
pub struct Completed {
    /// The grant's status after the use.
    pub grant_status: GrantStatus,
}

/// Reads the payload (records `payload.read`).
#[utoipa::path(get, path = "/v1/lease", tag = "lease", operation_id = "get_lease",
    security(("lease" = []), ("lease_cookie" = [], "csrf" = [])),
    responses((status = 200, description = "The lease, its permissions and the payload", body = LeaseView),
        (status = 401, response = crate::openapi::LeaseInvalid),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn get(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let presented = Presented::of(&req)
        .ok_or_else(|| ApiError::new(Code::LeaseInvalid, "a valid lease is required"))?;
    let ip = client_ip(&req, &state.config.trust_proxy);
    let user_agent = user_agent(&req);
    // The hot path: with everything in memory (a single SQLite server, warm; or every
    // instance, warm, once the group read brought the lease's facts), the check and the answer
    // are made right here; otherwise in one trip to the blocking pool.
    let facts = group_read_facts(&state, &presented).await?;
    let in_memory = match authorize_with(
        &state,
        &presented,
        ip,
        user_agent.clone(),
        Lookup::InMemory,
        facts,
    )? {
        Some(holder) => lease_view(&state, &holder, Lookup::InMemory)?,
        None => None,
    };
    let (body, read) = match in_memory {
        Some(answer) => answer,
        None => {
            run(&state, move |state| {
                let holder = authorize(state, &presented, ip, user_agent)?;
                lease_view(state, &holder, Lookup::Anywhere)?
                    .ok_or_else(|| ApiError::internal("the payload was not loaded"))
            })
            .await?
        }
    };
    // The payload goes out only once its read is committed (group commit, awaited here
    // without holding a thread).
    if let Some(read) = read {
        state.audit_writer.call_async(read).await?;
    }
    Ok(HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(body))
}

/// The body of `GET /v1/lease`, and the `payload.read` event to commit before sending it.
type ViewAnswer = (Vec<u8>, Option<NewEvent>);

/// The answer to `GET /v1/lease`; `None` if the payload is not in memory and `lookup` forbids
/// loading it.
fn lease_view(
    state: &AppState,
    holder: &LeaseHolder,
    lookup: Lookup,
) -> Result<Option<ViewAnswer>, ApiError> {
    let payload = if holder.claims.allows(Scope::Read) {
        let cached = state.payloads.get(holder.grant.grant.id);
        let Some(payload) = fetch(cached, lookup, || lease_ops::payload_of(state, holder))? else {
            return Ok(None);
        };
        Some(payload)
    } else {
        None
    };
    let view = LeaseView {
        grant_id: holder.grant.grant.id,
        expires_at: rfc3339(holder.lease.expires_at),
        scopes: holder.claims.scopes.clone(),
        permissions: holder.grant.grant.permissions.clone(),
        payload: payload.as_deref(),
    };
    let body = serde_json::to_vec(&view).map_err(ApiError::internal)?;
    let read = payload.map(|_| lease_ops::read_event(state, holder));
    Ok(Some((body, read)))
}

/// Stores a submission: one use of the grant.
#[utoipa::path(post, path = "/v1/lease/submissions", tag = "lease", operation_id = "submit",
    security(("lease" = []), ("lease_cookie" = [], "csrf" = [])),
    request_body = SubmissionRequest,
    responses((status = 201, description = "The submission was stored (or, for a repeated `idempotency_key` with the same body, the first answer)", body = SubmissionAccepted),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::LeaseInvalid),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, description = "`idempotency_conflict`: the key was used with another body", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`grant_used`: the last use was taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 422, description = "`field_not_writable`, `invalid_field` or `create_limit_exceeded`; `errors` names the fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn submit(
    state: web::Data<AppState>,
    holder: Result<LeaseHolder, ApiError>,
    req: HttpRequest,
    body: Result<JsonBody<SubmissionRequest, SUBMISSION_BODY_LIMIT>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    // The lease is judged before the body (see `DECISIONS.md`, order of checks).
    let accepted = match (holder, body) {
        (Ok(holder), body) => {
            let JsonBody(body) = body?;
            run(&state, move |state| {
                lease_ops::submit(state, &holder, &body)
            })
            .await?
        }
        // The grant was used up (or the lease ended with it): a retry of the submission that
        // did it still gets its first answer.
        (Err(e), Ok(JsonBody(body)))
            if matches!(e.code, Code::GrantUsed | Code::LeaseInvalid)
                && body.idempotency_key.is_some() =>
        {
            let Some(presented) = Presented::of(&req) else {
                return Err(e);
            };
            let replayed = run(&state, move |state| {
                Ok(lease_ops::replay_after_end(state, &presented, &body))
            })
            .await?;
            replayed.ok_or(e)??
        }
        (Err(e), _) => return Err(e),
    };
    Ok(HttpResponse::Created().json(SubmissionAccepted {
        id: accepted.submission.id,
        grant_status: accepted.grant_status,
        received_at: rfc3339(accepted.submission.received_at),
    }))
}

/// Uses the grant once without a submission.
#[utoipa::path(post, path = "/v1/lease/complete", tag = "lease", operation_id = "complete_lease",
    security(("lease" = []), ("lease_cookie" = [], "csrf" = [])),
    responses((status = 200, description = "The use was taken", body = Completed),
        (status = 401, response = crate::openapi::LeaseInvalid),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn complete(
    state: web::Data<AppState>,
    holder: LeaseHolder,
) -> Result<HttpResponse, ApiError> {
    let grant_status = run(&state, move |state| lease_ops::complete(state, &holder)).await?;
    Ok(HttpResponse::Ok().json(Completed { grant_status }))
}

/// A new token for the same lease (sliding, never past one hour after issue).
#[utoipa::path(post, path = "/v1/lease/refresh", tag = "lease", operation_id = "refresh_lease",
    security(("lease" = []), ("lease_cookie" = [], "csrf" = [])),
    responses((status = 200, description = "A new lease token (sliding, never past one hour after issue)", body = LeaseToken),
        (status = 401, response = crate::openapi::LeaseInvalid),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn refresh(
    state: web::Data<AppState>,
    holder: LeaseHolder,
) -> Result<HttpResponse, ApiError> {
    let from_cookie = holder.from_cookie;
    let now = state.clock.now();
    let issued = run(&state, move |state| lease_ops::refresh(state, &holder)).await?;
    let mut response = HttpResponse::Ok();
    if from_cookie {
        let cookie = cookie::lease(issued.token.expose(), issued.lease.expires_at - now);
        response.insert_header((header::SET_COOKIE, cookie.to_string()));
    }
    Ok(response.json(LeaseToken::new(&issued)))
}

/// Ends the lease.
#[utoipa::path(delete, path = "/v1/lease", tag = "lease", operation_id = "end_lease",
    security(("lease" = []), ("lease_cookie" = [], "csrf" = [])),
    responses((status = 204, description = "The lease has ended"),
        (status = 401, response = crate::openapi::LeaseInvalid),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn end(
    state: web::Data<AppState>,
    holder: LeaseHolder,
) -> Result<HttpResponse, ApiError> {
    let from_cookie = holder.from_cookie;
    run(&state, move |state| lease_ops::end(state, &holder)).await?;
    let mut response = HttpResponse::NoContent();
    if from_cookie {
        response.insert_header((
            header::SET_COOKIE,
            cookie::removal(cookie::LEASE_COOKIE).to_string(),
        ));
    }
    Ok(response.finish())
}
