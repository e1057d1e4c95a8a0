//! The auditor API (spec §1, §3; issue 5): one grant's history, the tenant's event log paged by
//! an opaque cursor, a signed export bundle and the public keys that verify it. Scope
//! `audit:read`; every answer is the caller's tenant only, and another tenant's grant is
//! `not_found`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use linklease_grant::{GrantId, micros};
use linklease_store::api_keys::Scope;
use linklease_store::audit::{self, Event};
use linklease_store::{audit_keys, grants};

use crate::auth::Originator;
use crate::error::{ApiError, Code};
use crate::routes::{decode_cursor, encode_cursor, resource};
use crate::{AppState, blocking, rfc3339};
use linklease_grant::hex;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 500;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/grants/{id}/history").route(web::get().to(history)))
        .service(resource("/v1/audit/events").route(web::get().to(events)))
        .service(resource("/v1/audit/export").route(web::get().to(export)))
        .service(resource("/v1/audit/public-key").route(web::get().to(public_key)));
}

/// Who did it.
#[derive(Serialize, ToSchema)]
pub struct AuditActor {
    /// `operator`, `apikey`, `client`, `visitor`, `lease` or `system`.
    pub kind: String,
    /// The API key, client or lease id, where there is one.
    pub id: Option<String>,
    /// The client address, where the act came over the network.
    pub ip: Option<String>,
    /// The client's user agent, where it sent one.
    pub user_agent: Option<String>,
}

/// One audit event as an auditor reads it.
#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// Position in the whole log.
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    /// What happened (`grant.created`, `link.visited`, …).
    pub kind: String,
    /// Who did it.
    pub actor: AuditActor,
    /// The grant, where the event is about one.
    pub grant_id: Option<String>,
    /// The lease, where the event is about one.
    pub lease_id: Option<String>,
    /// Facts worth keeping; never a secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Position in the tenant's hash chain, from 1 (absent for events older than the chain).
    pub chain_seq: Option<i64>,
    /// The previous event's hash in the chain, hex.
    pub prev_hash: Option<String>,
    /// This event's hash, hex.
    pub hash: Option<String>,
}

impl EventView {
    fn new(e: Event) -> Self {
        // A detail that is not JSON (only possible if the row was mangled) is shown as stored,
        // so the evidence is not hidden.
        let detail = serde_json::from_str(&e.detail)
            .unwrap_or_else(|_| serde_json::Value::String(e.detail.clone()));
        Self {
            seq: e.seq,
            at: rfc3339(micros::from_micros(e.at)),
            kind: e.kind,
            actor: AuditActor {
                kind: e.actor_kind,
                id: e.actor_id,
                ip: e.actor_ip,
                user_agent: e.actor_user_agent,
            },
            grant_id: e.grant_id,
            lease_id: e.lease_id,
            detail,
            chain_seq: e.chain_seq,
            prev_hash: e.prev_hash.as_deref().map(hex::encode),
            hash: e.hash.as_deref().map(hex::encode),
        }
    }
}

/// Every event of one grant and of its leases.
#[derive(Serialize, ToSchema)]
pub struct GrantHistory {
    /// Oldest first.
    pub events: Vec<EventView>,
}

/// A page of the tenant's events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A public audit key: all an auditor needs to verify bundles offline.
#[derive(Serialize, ToSchema)]
pub struct AuditPublicKey {
    /// The key id (the `kid` of a bundle's signature line).
    pub kid: String,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The raw 32-byte key, base64.
    pub public_key: String,
}

/// Every audit key ever used: the active one first; retired ones still verify old bundles.
#[derive(Serialize, ToSchema)]
pub struct AuditPublicKeys {
    /// Active first.
    pub keys: Vec<AuditPublicKey>,
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, detail)
}

/// The query's pairs, percent-decoded; `allowed` names are each accepted once, nothing else.
fn query_pairs<'a>(query: &str, allowed: &[&'a str]) -> Result<Vec<(&'a str, String)>, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|_| bad("the query string is malformed"))?
        .into_inner();
    let mut out: Vec<(&'a str, String)> = Vec::new();
    for (name, value) in pairs {
        let Some(known) = allowed.iter().copied().find(|a| *a == name) else {
            let shown: String = name.chars().take(64).collect();
            return Err(bad(if allowed.is_empty() {
                format!("unknown query parameter {shown:?}; this route takes none")
            } else {
                format!(
                    "unknown query parameter {shown:?}; expected {}",
                    allowed.join(", ")
                )
            }));
        };
        if out.iter().any(|(n, _)| *n == known) {
            return Err(bad(format!("query parameter {known} given twice")));
        }
        out.push((known, value));
    }
    Ok(out)
}

fn page(query: &str) -> Result<(i64, i64), ApiError> {
    let mut after = i64::MIN;
    let mut limit = DEFAULT_PAGE;
    for (name, value) in query_pairs(query, &["cursor", "limit"])? {
        match name {
            "cursor" => after = decode_cursor(&value).ok_or_else(|| bad("cursor is not valid"))?,
            _ => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("limit must be 1 to {MAX_PAGE}")))?;
            }
        }
    }
    Ok((after, limit))
}

/// An export window bound: microseconds and its canonical RFC 3339 form (UTC).
type Bound = (i64, String);

fn instant(name: &str, value: &str) -> Result<Bound, ApiError> {
    let parsed = OffsetDateTime::parse(value, &Rfc3339).or_else(|e| {
        // An unencoded `+01:00` offset arrives as a space (form decoding): accept it.
        if value.contains(' ') {
            OffsetDateTime::parse(&value.replace(' ', "+"), &Rfc3339)
        } else {
            Err(e)
        }
    });
    let t = parsed.map_err(|_| {
        bad(format!(
            "{name} must be an RFC 3339 date-time such as 2026-11-23T12:00:00Z"
        ))
    })?;
    let m = micros::to_micros(t);
    Ok((m, rfc3339(micros::from_micros(m))))
}

fn window(query: &str) -> Result<(Option<Bound>, Option<Bound>), ApiError> {
    let (mut from, mut to) = (None, None);
    for (name, value) in query_pairs(query, &["from", "to"])? {
        let bound = Some(instant(name, &value)?);
        match name {
            "from" => from = bound,
            _ => to = bound,
        }
    }
    if let (Some((f, _)), Some((t, _))) = (&from, &to)
        && t <= f
    {
        return Err(bad("to must be after from"));
    }
    Ok((from, to))
}

/// One grant's history: every event of the grant and of its leases, oldest first.
#[utoipa::path(get, path = "/v1/grants/{id}/history", tag = "audit", operation_id = "grant_history",
    params(("id" = GrantId, Path, description = "The grant's id")),
    security(("api_key" = ["audit:read"])),
    responses((status = 200, description = "The grant's audit events, oldest first", body = GrantHistory),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn history(
    state: web::Data<AppState>,
    who: Originator,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::AuditRead)?;
    let grant: GrantId = path.parse().map_err(|_| ApiError::not_found())?;
    query_pairs(req.query_string(), &[])?;
    let tenant = who.tenant();
    let rows = blocking(&state, move |store| {
        store.read(|c| {
            grants::get(c, tenant, grant)?;
            audit::for_grant(c, grant)
        })
    })
    .await?;
    let tenant = tenant.to_string();
    Ok(HttpResponse::Ok().json(GrantHistory {
        events: rows
            .into_iter()
            .filter(|e| e.tenant_id.as_deref() == Some(tenant.as_str()))
            .map(EventView::new)
            .collect(),
    }))
}

/// The tenant's audit events, oldest first.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", operation_id = "audit_events",
    params(("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<u32>, Query, description = "1-500, default 100")),
    security(("api_key" = ["audit:read"])),
    responses((status = 200, description = "A page of the tenant's audit events, in chain order", body = EventPage),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn events(
    state: web::Data<AppState>,
    who: Originator,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::AuditRead)?;
    let (after, limit) = page(req.query_string())?;
    let tenant = who.tenant();
    // One more than asked: whether it comes back says whether there is a next page.
    let mut rows = blocking(&state, move |store| {
        store.read(|c| audit::page(c, Some(tenant), after, limit + 1))
    })
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|e| encode_cursor(e.seq)))
        .flatten();
    Ok(HttpResponse::Ok().json(EventPage {
        events: rows.into_iter().map(EventView::new).collect(),
        next_cursor,
    }))
}

/// A signed bundle of the tenant's events with `from <= at < to`: NDJSON, a header line, one
/// event per line, and an Ed25519 signature line by the broker's audit key. Making it also signs
/// checkpoints of the current chain heads.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", operation_id = "audit_export",
    params(("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; after from")),
    security(("api_key" = ["audit:read"])),
    responses((status = 200, body = String, content_type = "application/x-ndjson", description = "The signed bundle (NDJSON: one event per line, then the signed checkpoint)"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn export(
    state: web::Data<AppState>,
    who: Originator,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::AuditRead)?;
    let (from, to) = window(req.query_string())?;
    let (tenant, now) = (who.tenant(), state.clock.now());
    let (secrets, rng) = (state.keys.clone(), state.rng.clone());
    let bundle = blocking(&state, move |store| {
        store.write(|c| audit_keys::export_bundle(c, &secrets, Some(tenant), from, to, now, &rng))
    })
    .await?;
    let stamp = now
        .to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/x-ndjson"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"linklease-audit-{tenant}-{stamp}.ndjson\""),
        ))
        .body(bundle))
}

/// Every audit public key, the active one first (made on first use).
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit", operation_id = "audit_public_keys",
    security(("api_key" = ["audit:read"])),
    responses((status = 200, description = "The keys that sign audit checkpoints and bundles", body = AuditPublicKeys),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 503, response = crate::openapi::Unavailable),
        (status = "4XX", response = crate::openapi::OtherProblem)))]
pub async fn public_key(
    state: web::Data<AppState>,
    who: Originator,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    who.require(Scope::AuditRead)?;
    query_pairs(req.query_string(), &[])?;
    let now = state.clock.now();
    let (secrets, rng) = (state.keys.clone(), state.rng.clone());
    let keys = blocking(&state, move |store| {
        let keys = store.read(|c| audit_keys::trusted_public_keys(c, &secrets))?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        store.write(|c| {
            audit_keys::ensure(c, &secrets, now, &rng)?;
            audit_keys::trusted_public_keys(c, &secrets)
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(AuditPublicKeys {
        keys: keys
            .into_iter()
            .map(|k| AuditPublicKey {
                kid: k.kid,
                algorithm: k.algorithm,
                public_key: k.public_key,
            })
            .collect(),
    }))
}
