//! The lease exchange, shared by the browser pages and the partner API: open a flow from a
//! link, check the factor, deliver and check codes, issue the lease.
//!
//! Each step runs on a blocking thread. The pure flow machine (`linklease_lease::Flow::step`)
//! decides; this module carries out its effects in one transaction with the flow's
//! compare-and-set. A code is recorded as sent (the flow's send count, the code's hash, and
//! `otp.sent`) in that transaction, *before* anyone calls the courier, so concurrent requests
//! can never send more codes than the limits allow, however slow the courier. The route then
//! hands the code to the courier ([`deliver`], on the courier's own threads, outside any
//! transaction); a failed delivery records `otp.failed_to_send` and still counts.
//!
//! Per grant, across every flow and instance (the database decides, under the grant's row
//! lock): at most `open_flows_per_grant` flows open at once, and at most
//! `sends_per_grant_per_hour` codes in any hour; beyond either, `too_many_requests`.
//!
//! `step` carries a [`Step`](step) to the database and back; `codes` makes codes and hands them
//! to the courier.

mod codes;
mod step;

use std::net::IpAddr;
use std::sync::Arc;

use linklease_grant::{
    FactorKind, FlowId, Grant, GrantStatus, IpBlock, LinkToken, OtpChannel, Purpose, SecretHash,
    SecretString, TenantId, factor, micros,
};
use linklease_lease::token::{self, LeaseClaims, Scope};
use linklease_lease::{Event, Flow, FlowError, Holder, Transition, lease};
use linklease_store::audit::{Actor, AuditKind};
use linklease_store::flows::{self, StoredFlow};
use linklease_store::grants::{self, GrantRecord};
use linklease_store::leases::LeaseRecord;
use linklease_store::{DbConn, StoreError};
use time::OffsetDateTime;

use crate::AppState;
use crate::error::{ApiError, Code};

use codes::NewCode;
pub use codes::{Delivery, deliver};
use step::{Base, Step, append};

/// Who is acting, from where.
#[derive(Clone, Debug)]
pub struct Visitor {
    /// The browser or the partner client.
    pub holder: Holder,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// Its user agent.
    pub user_agent: Option<String>,
    /// A partner may only open links of its own tenant.
    pub tenant: Option<TenantId>,
}

impl Visitor {
    /// The audit actor.
    pub fn actor(&self) -> Actor {
        let (kind, id) = match self.holder {
            Holder::Browser => ("visitor", None),
            Holder::Partner(client) => ("client", Some(client.to_string())),
        };
        Actor {
            kind,
            id,
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// A flow just opened from a link.
#[derive(Debug)]
pub struct Opened {
    /// The flow.
    pub flow: Flow,
    /// The grant as the flow was opened (its state may move on; its factor kind is what to
    /// ask for).
    pub grant: GrantRecord,
    /// For a browser: the cookie secret (only its keyed hash is stored).
    pub cookie_secret: Option<SecretString>,
}

/// What comes after a step that succeeded.
#[derive(Debug)]
pub enum Next {
    /// A code was recorded for this (masked) destination.
    Otp {
        /// The masked destination.
        sent_to: String,
        /// The code still to hand to the courier ([`deliver`]); `None` once it was.
        pending: Option<Box<Delivery>>,
    },
    /// The lease was issued.
    Lease(Box<IssuedLease>),
}

/// A lease and its signed token.
#[derive(Debug)]
pub struct IssuedLease {
    /// The stored lease.
    pub lease: LeaseRecord,
    /// The JWT.
    pub token: SecretString,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// The keyed hash under which a browser flow's cookie secret is stored.
pub fn cookie_hash(state: &AppState, secret: &str) -> SecretHash {
    state.keys.hash(Purpose::FlowCookie, &[secret.as_bytes()])
}

fn active(record: &GrantRecord, now: OffsetDateTime) -> Result<(), ApiError> {
    match record.status(now) {
        GrantStatus::Active => Ok(()),
        status => Err(ApiError::grant_inactive(status)),
    }
}

/// Both the client's blocks and the grant's must allow the address; an unknown address is
/// allowed only where no block is set.
pub fn ip_allowed(blocks: &[IpBlock], ip: Option<IpAddr>) -> bool {
    blocks.is_empty() || ip.is_some_and(|ip| IpBlock::allows(blocks, ip))
}

fn forbidden_ip() -> ApiError {
    ApiError::new(Code::Forbidden, "this address may not use this link")
}

/// What opening a flow needs before its transaction.
struct Opening {
    hash: SecretHash,
    now: OffsetDateTime,
    flow_id: FlowId,
    cookie_secret: Option<SecretString>,
    cookie: Option<SecretHash>,
}

impl Opening {
    fn new(state: &AppState, token: &str, visitor: &Visitor) -> Result<Self, ApiError> {
        let token = LinkToken::parse(token).ok_or_else(link_invalid)?;
        let now = micros::truncate(state.clock.now());
        let cookie_secret = match visitor.holder {
            Holder::Browser => Some(
                linklease_grant::secret::random_token("", &state.rng)
                    .map_err(ApiError::internal)?,
            ),
            Holder::Partner(_) => None,
        };
        let cookie = cookie_secret
            .as_ref()
            .map(|s| cookie_hash(state, s.expose()));
        Ok(Self {
            hash: token.hash(&state.keys),
            now,
            flow_id: FlowId::new(now, &state.rng).map_err(ApiError::internal)?,
            cookie_secret,
            cookie,
        })
    }

    /// In the caller's transaction: finds the link's grant, locking its state (see
    /// `grants::by_token`), and checks that it may be opened: active and from an allowed
    /// address. `Ok(Err(_))` refuses the visit.
    fn find(
        &self,
        c: &mut DbConn,
        visitor: &Visitor,
    ) -> Result<Result<GrantRecord, ApiError>, StoreError> {
        // Locked so that concurrent visits, on any instance, count each other's flows.
        let record = match grants::by_token(c, &self.hash, true) {
            Err(StoreError::NotFound) => return Ok(Err(link_invalid())),
            other => other?,
        };
        if visitor.tenant.is_some_and(|t| t != record.grant.tenant) {
            return Ok(Err(link_invalid()));
        }
        if let Err(e) = active(&record, self.now) {
            return Ok(Err(e));
        }
        if !ip_allowed(&record.grant.allowed_ip_blocks, visitor.ip) {
            return Ok(Err(forbidden_ip()));
        }
        Ok(Ok(record))
    }

    /// Under the grant's row lock taken by [`Opening::find`]: whether the grant has room for
    /// one more open flow (fewer than `open_flows_per_grant`). `Ok(Err(_))` refuses the visit.
    fn room(
        &self,
        c: &mut DbConn,
        state: &AppState,
        record: &GrantRecord,
    ) -> Result<Result<(), ApiError>, StoreError> {
        let (open, first_ends) = flows::open_of_grant(c, record.grant.id, self.now)?;
        if open < state.limits.open_flows_per_grant {
            return Ok(Ok(()));
        }
        let wait = first_ends.map_or(time::Duration::ZERO, |at| at - self.now);
        Ok(Err(ApiError::too_many_for(
            wait,
            "too many sessions are open for this link; try again later",
        )))
    }

    /// The flow the browser already holds for this grant (by its cookie's keyed hash), if it is
    /// still open: opening the link again (a second tab, the back button, a second click in
    /// the mail) goes on with it instead of starting another.
    fn held(
        &self,
        c: &mut DbConn,
        held: Option<&SecretHash>,
        record: &GrantRecord,
    ) -> Result<Option<Flow>, StoreError> {
        let Some(hash) = held else { return Ok(None) };
        let stored = match flows::by_cookie(c, hash) {
            Err(StoreError::NotFound) => return Ok(None),
            other => other?,
        };
        let flow = stored.flow;
        Ok((flow.grant == record.grant.id && flow.is_open(self.now)).then_some(flow))
    }

    /// The flow this visit opens.
    fn flow(&self, state: &AppState, record: &GrantRecord, visitor: &Visitor) -> Flow {
        Flow::open(
            self.flow_id,
            record.grant.id,
            visitor.holder,
            self.now,
            &state.limits,
        )
    }

    /// In the caller's transaction: stores `flow` at `version` (0 as opened, 1 with a first step
    /// applied) and records `link.visited`.
    fn record(
        &self,
        c: &mut DbConn,
        record: &GrantRecord,
        flow: &Flow,
        version: i32,
        visitor: &Visitor,
    ) -> Result<(), StoreError> {
        flows::insert_at(c, flow, self.cookie.as_ref(), version)?;
        append(
            c,
            &record.grant,
            None,
            AuditKind::LinkVisited,
            visitor,
            serde_json::json!({
                "flow": flow.id,
            }),
            self.now,
        )
    }
}

fn link_invalid() -> ApiError {
    ApiError::new(Code::LinkInvalid, "this link is not valid")
}

/// Opens a flow from a link token and records `link.visited`. Never sends a code, never
/// issues a lease, never consumes a use: opening a link twice is harmless. A browser that
/// already holds an open flow of this grant (`held`, its flow cookie's secret) goes on with
/// that flow, and gets no new cookie ([`Opened::cookie_secret`] is `None`).
pub fn open(
    state: &AppState,
    token: &str,
    visitor: &Visitor,
    held: Option<&str>,
) -> Result<Opened, ApiError> {
    let opening = Opening::new(state, token, visitor)?;
    let held = held.map(|secret| cookie_hash(state, secret));
    let (flow, grant, fresh) = state.store.write(|c| {
        let record = match opening.find(c, visitor)? {
            Ok(record) => record,
            Err(refused) => return Ok(Err(refused)),
        };
        if let Some(flow) = opening.held(c, held.as_ref(), &record)? {
            let detail = serde_json::json!({"flow": flow.id, "again": true});
            let kind = AuditKind::LinkVisited;
            append(c, &record.grant, None, kind, visitor, detail, opening.now)?;
            return Ok(Ok((flow, record, false)));
        }
        if let Err(refused) = opening.room(c, state, &record)? {
            return Ok(Err(refused));
        }
        let flow = opening.flow(state, &record, visitor);
        opening.record(c, &record, &flow, 0, visitor)?;
        Ok(Ok((flow, record, true)))
    })??;
    state
        .grants
        .insert(grant.grant.id, Arc::new(grant.grant.clone()));
    Ok(Opened {
        flow,
        grant,
        cookie_secret: opening.cookie_secret.filter(|_| fresh),
    })
}

/// A partner's exchange: opens a flow from a link and checks the factor (`None` when the grant
/// has none) in one transaction, then sends the code or issues the lease. The same records as
/// [`open`] then [`factor`], one commit fewer. Returns the flow's id and what comes next.
pub fn open_with_factor(
    state: &AppState,
    token: &str,
    presented: Option<SecretString>,
    visitor: &Visitor,
) -> Result<(FlowId, Next), ApiError> {
    let opening = Opening::new(state, token, visitor)?;
    let now = opening.now;
    let (record, step, stored) = state.store.write(|c| {
        // The grant's state is locked as it is read: the step below decides on it.
        let record = match opening.find(c, visitor)? {
            Ok(record) => record,
            Err(refused) => return Ok(Err(refused)),
        };
        if let Err(refused) = opening.room(c, state, &record)? {
            return Ok(Err(refused));
        }
        let flow = opening.flow(state, &record, visitor);
        let step = match factor_transition(state, &flow, &record.grant, presented, now)
            .and_then(|(transition, code)| Step::new(state, transition, code, now))
        {
            Ok(step) => step,
            Err(refused) => {
                // The visit stays recorded, as when the factor comes in a request of its own.
                opening.record(c, &record, &flow, 0, visitor)?;
                return Ok(Err(refused));
            }
        };
        if let Err(refused) = step.sends_allowed(c, state, record.grant.id, now)? {
            opening.record(c, &record, &flow, 0, visitor)?;
            return Ok(Err(refused));
        }
        // Stored with its first step applied: as opened at version 0, then saved.
        opening.record(c, &record, &step.flow, 1, visitor)?;
        let stored = match step.store(
            c,
            state,
            &record.grant,
            Base::Opened(record.state.clone()),
            visitor,
            now,
        )? {
            Ok(stored) => stored,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(Ok((record, step, stored)))
    })??;
    let grant = Arc::new(record.grant);
    state.grants.insert(grant.id, grant.clone());
    let flow_id = step.flow.id;
    Ok((flow_id, step.finish(state, &grant, stored, visitor, now)?))
}

/// Checks the factor (`None` for the Continue button of a grant without one); on success sends
/// the code or issues the lease.
pub fn factor(
    state: &AppState,
    stored: StoredFlow,
    presented: Option<SecretString>,
    visitor: &Visitor,
) -> Result<Next, ApiError> {
    let grant = grant_of(state, &stored)?;
    let now = micros::truncate(state.clock.now());
    let (transition, code) = factor_transition(state, &stored.flow, &grant, presented, now)?;
    carry_out(
        state,
        &grant,
        stored.version,
        transition,
        code,
        visitor,
        now,
    )
}

/// The flow's step on the factor presented, with the first code for a grant that sends one.
fn factor_transition(
    state: &AppState,
    flow: &Flow,
    grant: &Grant,
    presented: Option<SecretString>,
    now: OffsetDateTime,
) -> Result<(Transition, Option<NewCode>), ApiError> {
    let matched = match (grant.factor_kind, &grant.factor_verifier, &presented) {
        (FactorKind::None, _, _) => true,
        (_, Some(verifier), Some(value)) => factor::matches(
            &state.keys,
            grant.id,
            grant.factor_kind,
            verifier,
            value,
            now,
        ),
        (_, _, None) => {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("this link needs the {}", factor_name(grant.factor_kind)),
            ));
        }
        (_, None, Some(_)) => return Err(ApiError::internal("grant without factor verifier")),
    };
    let code = if grant.otp_channel == OtpChannel::None {
        None
    } else {
        Some(NewCode::for_flow(state, flow)?)
    };
    let event = Event::Factor {
        matched,
        code: code.as_ref().map(|c| c.hash),
    };
    let transition = flow
        .step(event, now, &state.limits)
        .map_err(ApiError::flow)?;
    Ok((transition, code))
}

/// Checks a code; on success issues the lease.
pub fn check_otp(
    state: &AppState,
    stored: StoredFlow,
    presented: &SecretString,
    visitor: &Visitor,
) -> Result<IssuedLease, ApiError> {
    let now = micros::truncate(state.clock.now());
    let grant = grant_of(state, &stored)?;
    let matched = stored.flow.otp_matches(&state.keys, presented);
    let transition = stored
        .flow
        .step(Event::Otp { matched }, now, &state.limits)
        .map_err(ApiError::flow)?;
    match carry_out(
        state,
        &grant,
        stored.version,
        transition,
        None,
        visitor,
        now,
    )? {
        Next::Lease(lease) => Ok(*lease),
        Next::Otp { .. } => Err(ApiError::internal("a code check asked for another code")),
    }
}

/// Sends another code (at most 3 per flow, 30 s apart).
pub fn resend(state: &AppState, stored: StoredFlow, visitor: &Visitor) -> Result<Next, ApiError> {
    let now = micros::truncate(state.clock.now());
    let grant = grant_of(state, &stored)?;
    let code = NewCode::for_flow(state, &stored.flow)?;
    let event = Event::Resend { code: code.hash };
    let transition = stored.flow.step(event, now, &state.limits).map_err(|e| {
        let mut err = ApiError::flow(e);
        if e == FlowError::SendsExhausted {
            let left = (stored.flow.expires_at - now).whole_seconds().max(1);
            err.retry_after = Some(u32::try_from(left).unwrap_or(u32::MAX));
        }
        err
    })?;
    carry_out(
        state,
        &grant,
        stored.version,
        transition,
        Some(code),
        visitor,
        now,
    )
}

/// The flow's grant (it never changes: cached). Its state is not read here: every step
/// decides on it under the row lock in its own transaction (`Step::store`), and a step refused
/// by the flow itself changes nothing.
fn grant_of(state: &AppState, stored: &StoredFlow) -> Result<Arc<Grant>, ApiError> {
    Ok(state.grant(stored.flow.grant)?)
}

/// Stores the transition and its effects in one transaction, then delivers a code if one is
/// due, then answers.
fn carry_out(
    state: &AppState,
    grant: &Arc<Grant>,
    version: i32,
    transition: Transition,
    code: Option<NewCode>,
    visitor: &Visitor,
    now: OffsetDateTime,
) -> Result<Next, ApiError> {
    let step = Step::new(state, transition, code, now)?;
    let stored = state
        .store
        .write(|c| step.store(c, state, grant, Base::Stored(version), visitor, now))??;
    step.finish(state, grant, stored, visitor, now)
}

/// Signs the token of a stored lease.
pub fn sign(
    state: &AppState,
    lease: LeaseRecord,
    permissions: &linklease_grant::Permissions,
) -> Result<IssuedLease, ApiError> {
    let keys = state.keyring.current(state)?;
    let scopes = lease::scopes(permissions);
    let claims = LeaseClaims::new(
        lease.grant,
        lease.id,
        lease.issued_at,
        lease.expires_at,
        scopes.clone(),
    );
    let token = token::sign(&claims, keys.signer()).map_err(ApiError::internal)?;
    Ok(IssuedLease {
        lease,
        token,
        scopes,
    })
}

/// What the factor is called, for messages.
pub fn factor_name(kind: FactorKind) -> &'static str {
    match kind {
        FactorKind::None => "nothing",
        FactorKind::Dob => "date of birth",
        FactorKind::Pin => "PIN",
    }
}
