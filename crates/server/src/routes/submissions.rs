//! Originators read what came back (spec §3): one grant's submissions, or the tenant's feed.
//! Oldest first, paged by an opaque cursor; scope `submissions:read`; another tenant's grant is
//! `not_found`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use linklease_grant::{GrantId, LeaseId, SubmissionId};
use linklease_store::api_keys::Scope;
use linklease_store::grants;
use linklease_store::submissions::{self, SubmissionRecord};

use crate::auth::Originator;
use crate::error::{ApiError, Code};
use crate::routes::{decode_cursor, encode_cursor, resource};
use crate::{AppState, blocking, rfc3339};
use linklease_grant::hex;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/grants/{id}/submissions").route(web::get().to(for_grant)))
        .service(resource("/v1/submissions").route(web::get().to(feed)));
}

/// A submission as its originator reads it.
#[derive(Serialize, ToSchema)]
pub struct SubmissionView {
    /// Its id.
    pub id: SubmissionId,
    /// The grant.
    pub grant_id: GrantId,
    /// The lease it came through.
    pub lease_id: LeaseId,
    /// RFC 3339.
    pub received_at: String,
    /// Written fields.
    #[schema(value_type = Object)]
    pub fields: serde_json::Value,
    /// Created child records.
    #[schema(value_type = Vec<Object>)]
    pub creates: serde_json::Value,
    /// The holder's idempotency key.
    pub idempotency_key: Option<String>,
    /// Hex SHA-256 of the canonical body.
    pub body_sha256: String,
    /// Hex `HMAC-SHA256(grant's commitment_salt, canonical body)`, as the audit log shows it
    /// (null for a grant made before salts: its events show `body_sha256`).
    pub body_commitment: Option<String>,
}

impl SubmissionView {
    fn new(s: &SubmissionRecord) -> Self {
        let body: serde_json::Value = serde_json::from_str(&s.body).unwrap_or_default();
        Self {
            id: s.id,
            grant_id: s.grant,
            lease_id: s.lease,
            received_at: rfc3339(s.received_at),
            fields: body.get("fields").cloned().unwrap_or_default(),
            creates: body.get("creates").cloned().unwrap_or_default(),
            idempotency_key: s.idempotency_key.clone(),
            body_sha256: hex::encode(&s.body_sha256),
            body_commitment: s.body_commitment.map(|c| hex::encode(&c)),
        }
    }
}

/// A page of submissions.
#[derive(Serialize, ToSchema)]
pub struct SubmissionList {
    /// Oldest first.
    pub submissions: Vec<SubmissionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn page(query: &str) -> Result<(Option<SubmissionId>, i64), ApiError> {
    let bad = |detail: &str| ApiError::new(Code::InvalidRequest, detail.to_owned());
    let mut cursor = None;
    let mut limit = DEFAULT_PAGE;
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.contains(&key) {
            return Err(bad("cursor and limit may each be given once"));
        }
        seen.push(key);
        match key {
            "cursor" => {
                cursor = Some(decode_cursor(value).ok_or_else(|| bad("cursor is not valid"))?)
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad("limit must be 1 to 200"))?;
            }
            _ => return Err(bad("unknown query parameter; expected cursor and limit")),
        }
    }
    Ok((cursor, limit))
}

async fn list(
    state: &web::Data<AppState>,
    who: &Originator,
    grant: Option<GrantId>,
    query: &str,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::SubmissionsRead)?;
    let (after, limit) = page(query)?;
    let tenant = who.tenant();
    let rows = blocking(state, move |store| {
        store.read(|c| {
            if let Some(grant) = grant {
                grants::get(c, tenant, grant)?;
            }
            submissions::list(c, tenant, grant, after, limit)
        })
    })
    .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|s| encode_cursor(s.id)))
        .flatten();
    Ok(HttpResponse::Ok().json(SubmissionList {
        submissions: rows.iter().map(SubmissionView::new).collect(),
        next_cursor,
    }))
}

/// One grant's submissions.
#[utoipa::path(get, path = "/v1/grants/{id}/submissions", tag = "submissions", operation_id = "list_grant_submissions",
    params(("id" = GrantId, Path, description = "The grant's id"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<u32>, Query, description = "1-200, default 50")),
    security(("api_key" = ["submissions:read"])),
    responses((status = 200, description = "A page of the grant's submissions, oldest first", body = SubmissionList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn for_grant(
    state: web::Data<AppState>,
    who: Originator,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let grant: GrantId = path.parse().map_err(|_| ApiError::not_found())?;
    list(&state, &who, Some(grant), req.query_string()).await
}

/// The tenant's feed of submissions.
#[utoipa::path(get, path = "/v1/submissions", tag = "submissions", operation_id = "list_submissions",
    params(("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<u32>, Query, description = "1-200, default 50")),
    security(("api_key" = ["submissions:read"])),
    responses((status = 200, description = "A page of the tenant's submissions, oldest first", body = SubmissionList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn feed(
    state: web::Data<AppState>,
    who: Originator,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    list(&state, &who, None, req.query_string()).await
}
