//! The originator's grant routes (spec §3): create, batch, read, list, revoke. Every query is
//! scoped to the API key's tenant; another tenant's grant is `not_found`, never `forbidden`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use linklease_grant::{
    ApiKeyId, FactorKind, GrantId, GrantRequest, GrantRequestError, GrantStatus, Issued,
    OtpChannel, Permissions, Problems, contact, limits,
};
use linklease_store::StoreError;
use linklease_store::api_keys::Scope;
use linklease_store::grants::{self, GrantRecord, ListFilter};

use crate::auth::Originator;
use crate::body::{BATCH_BODY_LIMIT, GRANT_BODY_LIMIT, JsonBody, SMALL_BODY_LIMIT};
use crate::error::{ApiError, Code, Problem};
use crate::routes::{decode_cursor, encode_cursor, resource};
use crate::{AppState, blocking, rfc3339};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/grants")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(resource("/v1/grants/batch").route(web::post().to(batch)))
    .service(resource("/v1/grants/{id}").route(web::get().to(get)))
    .service(resource("/v1/grants/{id}/revoke").route(web::post().to(revoke)));
}

/// The answer to a creation: the link and its token, shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedGrant {
    /// The grant id.
    pub id: GrantId,
    /// `{public_url}/l/{token}`.
    pub link: String,
    /// The link token (43 characters). Not retrievable later.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Always `active`.
    pub status: GrantStatus,
    /// Hex of the grant's 32-byte commitment salt: the HMAC-SHA256 key of `payload_commitment`
    /// and of each submission's `body_commitment` (docs/AUDIT.md). Give it to an auditor to let
    /// them check those; the audit log never holds it.
    pub commitment_salt: String,
    /// Hex `HMAC-SHA256(commitment_salt, stored payload bytes)`, as the audit log shows it.
    pub payload_commitment: String,
}

/// A grant's state as its originator sees it: never the token or the factor value.
#[derive(Serialize, ToSchema)]
pub struct GrantView {
    /// The grant id.
    pub id: GrantId,
    /// Derived status at the time of the request.
    pub status: GrantStatus,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// The API key that created it.
    pub api_key_id: ApiKeyId,
    /// Uses allowed.
    pub max_uses: u32,
    /// Uses so far.
    pub uses: u32,
    /// Lease lifetime in seconds.
    pub lease_ttl_seconds: u32,
    /// Hex SHA-256 of the stored payload.
    pub payload_sha256: String,
    /// Hex `HMAC-SHA256(commitment_salt, stored payload bytes)`, as the audit log shows it
    /// (null for a grant made before salts: its events show `payload_sha256`).
    pub payload_commitment: Option<String>,
    /// Hex of the grant's commitment salt (null for a grant made before salts).
    pub commitment_salt: Option<String>,
    /// What a lease may do.
    pub permissions: Permissions,
    /// The factor's kind (never its value).
    pub factor: FactorView,
    /// The OTP channel and a masked destination.
    pub otp: OtpView,
    /// CIDR blocks the consumer must come from.
    pub allowed_ip_blocks: Vec<String>,
    /// The originator's labels.
    pub labels: BTreeMap<String, String>,
    /// The grant this one replaced.
    pub supersedes: Option<GrantId>,
    /// The grant that replaced this one.
    pub superseded_by: Option<GrantId>,
    /// Failed factor attempts, all flows together.
    pub factor_failures: u32,
    /// Failed OTP attempts, all flows together.
    pub otp_failures: u32,
    /// RFC 3339, when locked.
    pub locked_at: Option<String>,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
}

/// The factor part of a [`GrantView`].
#[derive(Serialize, ToSchema)]
pub struct FactorView {
    /// `none`, `dob` or `pin`.
    pub kind: FactorKind,
}

/// The OTP part of a [`GrantView`].
#[derive(Serialize, ToSchema)]
pub struct OtpView {
    /// `none`, `email` or `sms`.
    pub channel: OtpChannel,
    /// The destination, masked (`p***@example.org`).
    pub to: Option<String>,
}

impl GrantView {
    fn new(record: &GrantRecord, now: time::OffsetDateTime) -> Self {
        let g = &record.grant;
        Self {
            id: g.id,
            status: record.status(now),
            created_at: rfc3339(g.created_at),
            expires_at: rfc3339(g.expires_at),
            api_key_id: g.api_key,
            max_uses: g.max_uses,
            uses: record.state.uses,
            lease_ttl_seconds: g.lease_ttl_seconds,
            payload_sha256: linklease_grant::hex::encode(&g.payload_sha256),
            payload_commitment: g
                .commitments
                .map(|c| linklease_grant::hex::encode(&c.payload)),
            commitment_salt: g.commitments.map(|c| linklease_grant::hex::encode(&c.salt)),
            permissions: g.permissions.clone(),
            factor: FactorView {
                kind: g.factor_kind,
            },
            otp: OtpView {
                channel: g.otp_channel,
                to: g
                    .otp_to
                    .as_deref()
                    .map(|to| contact::mask(g.otp_channel, to)),
            },
            allowed_ip_blocks: g
                .allowed_ip_blocks
                .iter()
                .map(ToString::to_string)
                .collect(),
            labels: g.labels.clone(),
            supersedes: g.supersedes,
            superseded_by: record.superseded_by,
            factor_failures: record.state.factor_failures,
            otp_failures: record.state.otp_failures,
            locked_at: record.state.locked_at.map(rfc3339),
            revoked_at: record.state.revoked_at.map(rfc3339),
            revoke_reason: record.state.revoke_reason.clone(),
        }
    }
}

/// One page of grants.
#[derive(Serialize, ToSchema)]
pub struct GrantList {
    /// Newest first.
    pub grants: Vec<GrantView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The body of `POST /v1/grants/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1000 grants, created together or not at all.
    pub grants: Vec<GrantRequest>,
}

/// The answer to a batch: one entry per requested grant, in order.
#[derive(Serialize, ToSchema)]
pub struct BatchCreated {
    /// In request order.
    pub grants: Vec<CreatedGrant>,
}

/// The body of `POST /v1/grants/{id}/revoke`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why (1-200 characters; recorded in the audit log).
    pub reason: String,
}

fn created(state: &AppState, issued: &Issued) -> CreatedGrant {
    // A grant is always made with a salt; only grants stored before salts lack one.
    let (commitment_salt, payload_commitment) = issued
        .grant
        .grant
        .commitments
        .map(|c| {
            use linklease_grant::hex::encode;
            (encode(&c.salt), encode(&c.payload))
        })
        .unwrap_or_default();
    CreatedGrant {
        id: issued.grant.grant.id,
        link: format!("{}/l/{}", state.config.public_url, issued.token.expose()),
        token: issued.token.expose().to_owned(),
        expires_at: rfc3339(issued.grant.grant.expires_at),
        status: GrantStatus::Active,
        commitment_salt,
        payload_commitment,
    }
}

fn request_error(e: GrantRequestError) -> ApiError {
    match e {
        GrantRequestError::PayloadTooLarge { bytes } => ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "payload is {bytes} bytes; at most {} are allowed",
                limits::MAX_PAYLOAD_BYTES
            ),
        ),
        GrantRequestError::Invalid(problems) => ApiError::invalid(problems),
        GrantRequestError::Random(e) => ApiError::internal(e),
    }
}

/// Storage errors of a creation, said in terms of `supersedes` where that is what failed.
fn insert_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => {
            ApiError::new(Code::NotFound, "supersedes names no grant of this tenant")
        }
        StoreError::GrantNotActive(status) => {
            let mut err = ApiError::grant_inactive(status);
            err.detail = format!("the grant named by supersedes is {}", status.as_str());
            err
        }
        other => other.into(),
    }
}

/// Create a grant.
#[utoipa::path(post, path = "/v1/grants", tag = "grants", operation_id = "create_grant", request_body = GrantRequest,
    security(("api_key" = ["grants:write"])),
    responses((status = 201, description = "The grant, with its link and token (shown only now)", body = CreatedGrant),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, description = "`not_found`: `supersedes` names no grant of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`supersedes` names a grant that is no longer active", body = Problem, content_type = "application/problem+json"),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn create(
    state: web::Data<AppState>,
    who: Originator,
    body: Result<JsonBody<GrantRequest, GRANT_BODY_LIMIT>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::GrantsWrite)?;
    // Only then the body: its errors are for callers who may make the call.
    let JsonBody(body) = body?;
    let issued = body
        .issue(
            who.issuer(),
            state.clock.now(),
            &state.keys,
            &SystemRandom::new(),
        )
        .map_err(request_error)?;
    let answer = created(&state, &issued);
    let actor = who.actor();
    blocking(&state, move |store| {
        store.write(|c| grants::insert(c, &issued.grant, &actor))
    })
    .await
    .map_err(insert_error)?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/grants/{}", answer.id)))
        .json(answer))
}

/// Create up to 1000 grants in one transaction: all or none.
#[utoipa::path(post, path = "/v1/grants/batch", tag = "grants", operation_id = "create_grants", request_body = BatchRequest,
    security(("api_key" = ["grants:write"])),
    responses((status = 201, description = "Every grant, in the order asked, each with its link and token", body = BatchCreated),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, description = "`not_found`: a `supersedes` names no grant of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "a `supersedes` names a grant that is no longer active", body = Problem, content_type = "application/problem+json"),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn batch(
    state: web::Data<AppState>,
    who: Originator,
    body: Result<JsonBody<BatchRequest, BATCH_BODY_LIMIT>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::GrantsWrite)?;
    // Only then the body: its errors are for callers who may make the call.
    let JsonBody(body) = body?;
    let count = body.grants.len();
    if !(1..=limits::MAX_BATCH).contains(&count) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "grants: a batch holds 1 to {} grants, not {count}",
                limits::MAX_BATCH
            ),
        ));
    }
    let (issuer, actor, keys) = (who.issuer(), who.actor(), state.keys.clone());
    let now = state.clock.now();
    // Validation hashes each factor and token: done off the async workers, like the insert.
    let issued = blocking(&state, move |_| {
        let rng = SystemRandom::new();
        let mut problems = Problems::default();
        let mut issued = Vec::with_capacity(count);
        for (i, request) in body.grants.into_iter().enumerate() {
            match request.issue(issuer, now, &keys, &rng) {
                Ok(one) => issued.push(one),
                Err(GrantRequestError::Invalid(p)) => {
                    problems.0.extend(p.prefixed(&format!("grants[{i}].")).0)
                }
                Err(GrantRequestError::PayloadTooLarge { bytes }) => {
                    problems.push(
                        format!("grants[{i}].payload"),
                        format_args!(
                            "is {bytes} bytes; at most {} are allowed",
                            limits::MAX_PAYLOAD_BYTES
                        ),
                    );
                }
                Err(GrantRequestError::Random(e)) => {
                    return Err(StoreError::Internal(e.to_string()));
                }
            }
        }
        Ok((issued, problems))
    })
    .await?;
    let (issued, problems) = issued;
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let answer = BatchCreated {
        grants: issued.iter().map(|one| created(&state, one)).collect(),
    };
    blocking(&state, move |store| {
        let news: Vec<_> = issued.into_iter().map(|one| one.grant).collect();
        store.write(|c| grants::insert_all(c, &news, &actor))
    })
    .await
    .map_err(insert_error)?;
    Ok(HttpResponse::Created().json(answer))
}

fn grant_id(raw: &str) -> Result<GrantId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// Read one grant's state.
#[utoipa::path(get, path = "/v1/grants/{id}", tag = "grants", operation_id = "get_grant",
    params(("id" = GrantId, Path, description = "The grant's id")),
    security(("api_key" = ["grants:read"])),
    responses((status = 200, description = "The grant and its status now", body = GrantView),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn get(
    state: web::Data<AppState>,
    who: Originator,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::GrantsRead)?;
    let id = grant_id(&path)?;
    let tenant = who.tenant();
    let record = blocking(&state, move |store| {
        store.read(|c| grants::get(c, tenant, id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(GrantView::new(&record, state.clock.now())))
}

/// The default and largest page sizes of listings.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

fn list_filter(query: &str) -> Result<ListFilter, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|_| ApiError::new(Code::InvalidRequest, "the query string is malformed"))?
        .into_inner();
    let bad = |detail: String| ApiError::new(Code::InvalidRequest, detail);
    let mut filter = ListFilter {
        limit: DEFAULT_PAGE,
        ..Default::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in pairs {
        // Each plain parameter once, each label once, and at most MAX_LABEL_FILTERS labels: a
        // client must not be able to make the query arbitrarily large.
        if seen.contains(&name) {
            let shown: String = name.chars().take(64).collect();
            return Err(bad(format!("query parameter {shown:?} given twice")));
        }
        if name.starts_with("label.") && filter.labels.len() == limits::MAX_LABEL_FILTERS {
            return Err(bad(format!(
                "at most {} label filters",
                limits::MAX_LABEL_FILTERS
            )));
        }
        seen.push(name.clone());
        match name.as_str() {
            "status" => {
                filter.status = Some(GrantStatus::parse(&value).ok_or_else(|| {
                    bad("status must be one of active, used, expired, revoked, locked".into())
                })?);
            }
            "cursor" => {
                filter.before =
                    Some(decode_cursor(&value).ok_or_else(|| bad("cursor is not valid".into()))?)
            }
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("limit must be 1 to {MAX_PAGE}")))?;
            }
            other => match other.strip_prefix("label.") {
                Some(key) if !key.is_empty() => filter.labels.push((key.to_owned(), value)),
                _ => {
                    let shown: String = other.chars().take(64).collect();
                    return Err(bad(format!("unknown query parameter {shown:?}")));
                }
            },
        }
    }
    Ok(filter)
}

/// List the tenant's grants, newest first, filtered by status and labels.
#[utoipa::path(get, path = "/v1/grants", tag = "grants", operation_id = "list_grants",
    params(("status" = Option<String>, Query, description = "active, used, expired, revoked or locked"),
        ("label.K" = Option<String>, Query, description = "only grants whose label K equals the value; repeatable with other keys"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<u32>, Query, description = "1-200, default 50")),
    security(("api_key" = ["grants:read"])),
    responses((status = 200, description = "A page of the tenant's grants, newest first", body = GrantList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn list(
    state: web::Data<AppState>,
    who: Originator,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::GrantsRead)?;
    let filter = list_filter(req.query_string())?;
    let (tenant, now) = (who.tenant(), state.clock.now());
    let limit = filter.limit as usize;
    let records = blocking(&state, move |store| {
        store.read(|c| grants::list(c, tenant, &filter, now))
    })
    .await?;
    let next_cursor = (records.len() == limit)
        .then(|| records.last().map(|r| encode_cursor(r.grant.id)))
        .flatten();
    Ok(HttpResponse::Ok().json(GrantList {
        grants: records.iter().map(|r| GrantView::new(r, now)).collect(),
        next_cursor,
    }))
}

/// Revoke a grant: its leases stop working at once. Revoking twice keeps the first reason.
#[utoipa::path(post, path = "/v1/grants/{id}/revoke", tag = "grants", operation_id = "revoke_grant",
    params(("id" = GrantId, Path, description = "The grant's id")),
    request_body = RevokeRequest, security(("api_key" = ["grants:write"])),
    responses((status = 200, description = "The grant, revoked", body = GrantView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn revoke(
    state: web::Data<AppState>,
    who: Originator,
    path: web::Path<String>,
    body: Result<JsonBody<RevokeRequest, SMALL_BODY_LIMIT>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::GrantsWrite)?;
    // Only then the body: its errors are for callers who may make the call.
    let JsonBody(body) = body?;
    let id = grant_id(&path)?;
    let reason = body.reason.trim().to_owned();
    if reason.is_empty()
        || reason.chars().count() > limits::MAX_REASON_CHARS
        || reason.chars().any(char::is_control)
    {
        let mut problems = Problems::default();
        problems.push(
            "reason",
            format_args!(
                "must be 1 to {} characters, without control characters",
                limits::MAX_REASON_CHARS
            ),
        );
        return Err(ApiError::invalid(problems));
    }
    let (tenant, actor, now) = (who.tenant(), who.actor(), state.clock.now());
    let record = blocking(&state, move |store| {
        store.write(|c| grants::revoke(c, tenant, id, &reason, &actor, now))
    })
    .await?;
    Ok(HttpResponse::Ok().json(GrantView::new(&record, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_parse_strictly() {
        let f = list_filter("status=active&label.case_id=c-77&label.site=north&limit=10").unwrap();
        assert_eq!(f.status, Some(GrantStatus::Active));
        assert_eq!(
            f.labels,
            [
                ("case_id".into(), "c-77".into()),
                ("site".into(), "north".into())
            ]
        );
        assert_eq!(f.limit, 10);
        for bad in [
            "status=gone",
            "limit=0",
            "limit=201",
            "limit=x",
            "cursor=%%%",
            "cursor=bm9wZQ",
            "max_use=1",
            "label.=x",
            "status=active&status=used",
            "limit=1&limit=2",
            "cursor=x&cursor=y",
            "label.a=1&label.a=2",
        ] {
            assert_eq!(
                list_filter(bad).unwrap_err().code,
                Code::InvalidRequest,
                "{bad}"
            );
        }
        let labels = |n: usize| {
            (0..n)
                .map(|i| format!("label.k{i}=v"))
                .collect::<Vec<_>>()
                .join("&")
        };
        assert_eq!(list_filter(&labels(16)).unwrap().labels.len(), 16);
        assert_eq!(
            list_filter(&labels(17)).unwrap_err().detail,
            "at most 16 label filters"
        );
        let id: GrantId = "0193a0b2-0000-7000-8000-000000000000".parse().unwrap();
        assert_eq!(
            list_filter(&format!("cursor={}", encode_cursor(id)))
                .unwrap()
                .before,
            Some(id)
        );
    }
}
