//! Lease holders: `Authorization: Bearer <lease token>`, or the `__Host-ll_lease` cookie plus
//! an `X-CSRF-Token` header bound to the lease. Every request checks the lease's facts: the
//! lease must not have ended and its grant must be active, so a revocation, a last use or a
//! lock stops every lease at once. On PostgreSQL (several instances) the facts come from the
//! database on every request; a single SQLite server keeps an exact in-process copy (see
//! `linklease_store::live`). Verified tokens, the key set and immutable rows are cached.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::LocalBoxFuture;
use std::net::IpAddr;

use linklease_grant::{GrantStatus, LeaseId, Purpose, SecretHash, micros};
use linklease_lease::cookie::LEASE_COOKIE;
use linklease_lease::token::{self, LeaseClaims, Scope, TokenError};
use linklease_store::audit::Actor;
use linklease_store::grants::GrantRecord;
use linklease_store::leases::{self, LeaseFacts, LeaseRecord};
use linklease_store::{StoreError, clients};

use crate::auth::bearer;
use crate::client_ip::{client_ip, user_agent};
use crate::error::{ApiError, Code};
use crate::exchange::ip_allowed;
use crate::{AppState, blocking};

/// The header carrying the CSRF token when the lease comes as a cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// An authenticated lease and its grant, checked against the database for this request.
#[derive(Clone, Debug)]
pub struct LeaseHolder {
    /// The verified claims.
    pub claims: LeaseClaims,
    /// The lease as stored.
    pub lease: LeaseRecord,
    /// Its grant (active at the time of the check).
    pub grant: GrantRecord,
    /// Where the request came from.
    pub ip: Option<IpAddr>,
    /// Its user agent.
    pub user_agent: Option<String>,
    /// Whether it came as the browser cookie.
    pub from_cookie: bool,
}

impl LeaseHolder {
    /// Fails with `forbidden` unless the lease carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.claims.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                "this lease does not allow that",
            ))
        }
    }

    /// The audit actor.
    pub fn actor(&self) -> Actor {
        Actor {
            kind: "lease",
            id: Some(self.lease.id.to_string()),
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// What a CSRF token is bound to: a flow (its forms) or a lease (its forms and API calls).
#[derive(Clone, Copy, Debug)]
pub enum CsrfScope {
    /// A browser flow.
    Flow,
    /// A lease.
    Lease,
}

impl CsrfScope {
    fn tag(self) -> &'static [u8] {
        match self {
            CsrfScope::Flow => b"flow",
            CsrfScope::Lease => b"lease",
        }
    }
}

/// A CSRF token: a keyed hash of the scope and id, so no state is kept for it.
pub fn csrf_for(state: &AppState, scope: CsrfScope, id: uuid::Uuid) -> String {
    URL_SAFE_NO_PAD.encode(
        state
            .keys
            .hash(Purpose::Csrf, &[scope.tag(), id.as_bytes()])
            .0,
    )
}

/// Whether `presented` is the CSRF token of `scope` and `id`, in constant time.
pub fn csrf_valid(state: &AppState, scope: CsrfScope, id: uuid::Uuid, presented: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(presented)
        .ok()
        .and_then(|bytes| SecretHash::from_slice(&bytes))
        .is_some_and(|hash| {
            state
                .keys
                .verify(Purpose::Csrf, &[scope.tag(), id.as_bytes()], &hash)
        })
}

/// The CSRF token of a lease.
pub fn csrf_token(state: &AppState, lease: LeaseId) -> String {
    csrf_for(state, CsrfScope::Lease, lease.0)
}

/// Whether `presented` (surrounding spaces ignored) is the lease's CSRF token.
pub fn csrf_matches(state: &AppState, lease: LeaseId, presented: &str) -> bool {
    csrf_valid(state, CsrfScope::Lease, lease.0, presented.trim())
}

/// The value of cookie `name` in the request's `Cookie` header(s).
pub fn request_cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

fn lease_invalid() -> ApiError {
    ApiError::new(Code::LeaseInvalid, "a valid lease is required")
}

/// A lease token as a request presents it.
#[derive(Clone, Debug)]
pub struct Presented {
    /// The JWT.
    pub token: String,
    /// Whether it came as the browser cookie (then the CSRF header is required).
    pub from_cookie: bool,
    csrf: Option<String>,
    /// For the HTML pages: a GET needs no token, and each form carries its own (checked by
    /// the page), so the header is not asked for.
    page: bool,
}

impl Presented {
    /// The Bearer token (preferred) or the lease cookie of `req`, if any of sane length.
    pub fn of(req: &HttpRequest) -> Option<Self> {
        let csrf = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (token, from_cookie) = match bearer(req).filter(|t| !t.starts_with("llk_")) {
            Some(token) => (token.to_owned(), false),
            None => (request_cookie(req, LEASE_COOKIE)?, true),
        };
        (token.len() <= 4096).then_some(Self {
            token,
            from_cookie,
            csrf,
            page: false,
        })
    }

    /// The same lease, for an HTML page that checks its forms' CSRF field itself.
    pub fn for_page(self) -> Self {
        Self { page: true, ..self }
    }

    /// A cookie needs the lease's CSRF token in `X-CSRF-Token`.
    pub fn check_csrf(&self, state: &AppState, lease: LeaseId) -> Result<(), ApiError> {
        if !self.from_cookie
            || self.page
            || self
                .csrf
                .as_deref()
                .is_some_and(|c| csrf_matches(state, lease, c))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                "a lease cookie needs the X-CSRF-Token header",
            ))
        }
    }
}

/// Verifies a token with the cached key set, reloading it once for a key it does not know.
/// Blocks.
pub fn verify_token(state: &AppState, token: &str) -> Result<LeaseClaims, ApiError> {
    let now = state.clock.now();
    if let Some(claims) = state.tokens.get(token, now) {
        return Ok(claims);
    }
    let claims = verify_signature(state, token, now)?;
    state.tokens.put(token, &claims);
    Ok(claims)
}

fn verify_signature(
    state: &AppState,
    token: &str,
    now: time::OffsetDateTime,
) -> Result<LeaseClaims, ApiError> {
    let keys = state.keyring.current(state)?;
    match token::verify(token, &keys, now, &state.limits) {
        Err(TokenError::UnknownKey) => {
            let keys = state.keyring.reloaded(state)?;
            token::verify(token, &keys, now, &state.limits)
        }
        other => other,
    }
    .map_err(|e| {
        log::debug!(target: "linklease::lease", "lease token refused: {e}");
        lease_invalid()
    })
}

/// Where a lease check may look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Only what is already in memory (a verified token, the single-node copy of the facts,
    /// the immutable rows): no I/O and no signature check, so it may run on an async worker.
    /// Anything missing makes the check answer "not decided here".
    InMemory,
    /// The database and the signature too, as needed. Blocks.
    Anywhere,
}

/// `cached`, or with [`Lookup::Anywhere`] what `load` finds; `None` when the value is not in
/// memory and may not be loaded.
pub(crate) fn fetch<T>(
    cached: Option<T>,
    lookup: Lookup,
    load: impl FnOnce() -> Result<T, ApiError>,
) -> Result<Option<T>, ApiError> {
    match (cached, lookup) {
        (Some(value), _) => Ok(Some(value)),
        (None, Lookup::Anywhere) => load().map(Some),
        (None, Lookup::InMemory) => Ok(None),
    }
}

/// The facts of the lease `presented` names, read from the database by the group read (one
/// query shared with the requests waiting at that moment), when its token is verified already
/// and the single-node copy lacks them: with them, the check can decide without blocking a
/// thread ([`authorize_with`]). `None` where they would not help: the check then reads what it
/// needs itself.
pub async fn group_read_facts(
    state: &AppState,
    presented: &Presented,
) -> Result<Option<LeaseFacts>, ApiError> {
    let Some(claims) = state.tokens.get(&presented.token, state.clock.now()) else {
        return Ok(None);
    };
    if state.store.cached_lease_facts(claims.jti).is_some() {
        return Ok(None);
    }
    match state.lease_facts.call_async(claims.jti).await {
        Ok(facts) => Ok(Some(facts)),
        Err(StoreError::NotFound) => Err(lease_invalid()),
        Err(e) => Err(e.into()),
    }
}

/// Checks a presented lease fully: signature, lease facts, grant status, addresses, the
/// partner client, and the CSRF header of a cookie. Blocks.
pub fn authorize(
    state: &AppState,
    presented: &Presented,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
) -> Result<LeaseHolder, ApiError> {
    authorize_with(state, presented, ip, user_agent, Lookup::Anywhere, None)?
        .ok_or_else(|| ApiError::internal("a full lease check left a lookup undone"))
}

/// The same check as [`authorize`], looking only where `lookup` allows: `Ok(None)` means it
/// could not decide without I/O (run it again with [`Lookup::Anywhere`] on a blocking thread).
/// Every decision it does make is the one [`authorize`] would make. `facts_read`: the lease's
/// facts, read from the database for this request already ([`group_read_facts`]).
pub fn authorize_with(
    state: &AppState,
    presented: &Presented,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
    lookup: Lookup,
    facts_read: Option<LeaseFacts>,
) -> Result<Option<LeaseHolder>, ApiError> {
    let token = presented.token.as_str();
    let now = state.clock.now();
    let Some(claims) = fetch(state.tokens.get(token, now), lookup, || {
        verify_token(state, token)
    })?
    else {
        return Ok(None);
    };
    let now = micros::truncate(now);
    let not_found = |e: StoreError| match e {
        StoreError::NotFound => lease_invalid(),
        other => other.into(),
    };
    // What can change: read for this request, or from the single-node copy, else one query.
    let known = facts_read.or_else(|| state.store.cached_lease_facts(claims.jti));
    let Some(facts) = fetch(known, lookup, || {
        state.store.lease_facts(claims.jti).map_err(not_found)
    })?
    else {
        return Ok(None);
    };
    if facts.grant != claims.sub {
        return Err(lease_invalid());
    }
    // What never changes: cached.
    let Some(grant_row) = fetch(state.grants.peek(facts.grant), lookup, || {
        state.grant(facts.grant).map_err(not_found)
    })?
    else {
        return Ok(None);
    };
    let grant = GrantRecord {
        grant: (*grant_row).clone(),
        state: facts.state,
        superseded_by: None,
    };
    // The grant's status first: a holder whose last submission used the grant learns that,
    // not merely that the lease ended with it.
    match grant.status(now) {
        GrantStatus::Active => {}
        status => return Err(ApiError::grant_inactive(status)),
    }
    let Some(issued) = fetch(state.leases.peek(claims.jti), lookup, || {
        state.leases.get_or(claims.jti, || {
            state
                .store
                .read(|c| leases::get(c, claims.jti))
                .map_err(not_found)
        })
    })?
    else {
        return Ok(None);
    };
    let mut lease = (*issued).clone();
    lease.expires_at = facts.expires_at;
    lease.ended_at = facts.ended_at;
    if !lease.is_live(now) {
        return Err(lease_invalid());
    }
    if !ip_allowed(&grant.grant.allowed_ip_blocks, ip) {
        return Err(ApiError::new(
            Code::Forbidden,
            "this address may not use this link",
        ));
    }
    // A partner's lease lives only as long as the partner's credentials, and only where the
    // partner may call from.
    if let Some(client) = lease.client {
        if facts.client_revoked {
            return Err(lease_invalid());
        }
        let Some(blocks) = fetch(state.client_blocks.peek(client), lookup, || {
            state.client_blocks.get_or(client, || {
                state
                    .store
                    .read(|c| clients::get(c, client).map(|c| c.allowed_ip_blocks))
                    .map_err(ApiError::from)
            })
        })?
        else {
            return Ok(None);
        };
        if !ip_allowed(&blocks, ip) {
            return Err(ApiError::new(
                Code::Forbidden,
                "this client may not call from this address",
            ));
        }
    }
    presented.check_csrf(state, lease.id)?;
    Ok(Some(LeaseHolder {
        claims,
        lease,
        grant,
        ip,
        user_agent,
        from_cookie: presented.from_cookie,
    }))
}

impl FromRequest for LeaseHolder {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let presented = Presented::of(req);
        let ip = state
            .as_ref()
            .and_then(|s| client_ip(req, &s.config.trust_proxy));
        let user_agent = user_agent(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let presented = presented.ok_or_else(lease_invalid)?;
            let checked = state.clone();
            blocking(&state, move |_| {
                Ok(authorize(&checked, &presented, ip, user_agent))
            })
            .await
            .map_err(ApiError::from)?
        })
    }
}
