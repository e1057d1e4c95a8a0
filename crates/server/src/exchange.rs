//! The lease exchange, shared by the browser pages and the partner API: open a flow from a
//! link, check the factor, deliver and check codes, issue the lease.
//!
//! Each step runs on a blocking thread. The pure flow machine (`linklease_lease::Flow::step`)
//! decides; this module carries out its effects in one transaction with the flow's
//! compare-and-set, and delivers codes through the courier *outside* any transaction (a slow
//! mail server must not hold a database lock). A failed delivery leaves the flow where it was:
//! the visitor gets `unavailable` and may ask again; nothing is lost.

use std::net::IpAddr;
use std::sync::Arc;

use linklease_courier::OtpMessage;
use linklease_grant::contact::mask;
use linklease_grant::{
    FactorKind, FlowId, Grant, GrantState, GrantStatus, IpBlock, LeaseId, LinkToken, OtpChannel,
    Purpose, SecretHash, SecretString, TenantId, factor, micros,
};
use linklease_lease::token::{self, LeaseClaims, Scope};
use linklease_lease::{Effect, Event, Flow, FlowError, Holder, Transition, lease, otp};
use linklease_store::audit::{self, Actor, AuditKind, NewEvent};
use linklease_store::flows::{self, StoredFlow};
use linklease_store::grants::{self, Failure, GrantRecord};
use linklease_store::leases::{self, LeaseRecord};
use linklease_store::{DbConn, StoreError};
use time::OffsetDateTime;

use crate::AppState;
use crate::error::{ApiError, Code};

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
    /// A code was sent to this (masked) destination.
    Otp {
        /// The masked destination.
        sent_to: String,
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

    /// In the caller's transaction: finds the link's grant and checks that it may be opened,
    /// locking its state when `lock` (see `grants::by_token`). `Ok(Err(_))` refuses
    /// the visit.
    fn find(
        &self,
        c: &mut DbConn,
        visitor: &Visitor,
        lock: bool,
    ) -> Result<Result<GrantRecord, ApiError>, StoreError> {
        let record = match grants::by_token(c, &self.hash, lock) {
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
/// issues a lease, never consumes a use: opening a link twice is harmless.
pub fn open(state: &AppState, token: &str, visitor: &Visitor) -> Result<Opened, ApiError> {
    let opening = Opening::new(state, token, visitor)?;
    let (flow, grant) = state.store.write(|c| {
        let record = match opening.find(c, visitor, false)? {
            Ok(record) => record,
            Err(refused) => return Ok(Err(refused)),
        };
        let flow = opening.flow(state, &record, visitor);
        opening.record(c, &record, &flow, 0, visitor)?;
        Ok(Ok((flow, record)))
    })??;
    state
        .grants
        .insert(grant.grant.id, Arc::new(grant.grant.clone()));
    Ok(Opened {
        flow,
        grant,
        cookie_secret: opening.cookie_secret,
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
        let record = match opening.find(c, visitor, true)? {
            Ok(record) => record,
            Err(refused) => return Ok(Err(refused)),
        };
        let flow = opening.flow(state, &record, visitor);
        let step = match factor_transition(state, &flow, &record.grant, presented, now)
            .and_then(|transition| Step::new(state, transition, now))
        {
            Ok(step) => step,
            Err(refused) => {
                // The visit stays recorded, as when the factor comes in a request of its own.
                opening.record(c, &record, &flow, 0, visitor)?;
                return Ok(Err(refused));
            }
        };
        // Stored with its first step applied: as opened at version 0, then saved.
        opening.record(c, &record, &step.flow, 1, visitor)?;
        let stored = step.store(
            c,
            state,
            &record.grant,
            Base::Opened(record.state.clone()),
            visitor,
            now,
        )?;
        Ok(Ok((record, step, stored)))
    })??;
    state
        .grants
        .insert(record.grant.id, Arc::new(record.grant.clone()));
    let flow_id = step.flow.id;
    Ok((
        flow_id,
        step.finish(state, &record.grant, 0, stored, visitor, now)?,
    ))
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
    let transition = factor_transition(state, &stored.flow, &grant, presented, now)?;
    carry_out(state, &grant, stored.version, transition, visitor, now)
}

/// The flow's step on the factor presented.
fn factor_transition(
    state: &AppState,
    flow: &Flow,
    grant: &Grant,
    presented: Option<SecretString>,
    now: OffsetDateTime,
) -> Result<Transition, ApiError> {
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
    let event = Event::Factor {
        matched,
        otp_required: grant.otp_channel != OtpChannel::None,
    };
    flow.step(event, now, &state.limits).map_err(ApiError::flow)
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
    match carry_out(state, &grant, stored.version, transition, visitor, now)? {
        Next::Lease(lease) => Ok(*lease),
        Next::Otp { .. } => Err(ApiError::internal("a code check asked for another code")),
    }
}

/// Sends another code (at most 3 per flow, 30 s apart).
pub fn resend(state: &AppState, stored: StoredFlow, visitor: &Visitor) -> Result<Next, ApiError> {
    let now = micros::truncate(state.clock.now());
    let grant = grant_of(state, &stored)?;
    let transition = stored
        .flow
        .step(Event::Resend, now, &state.limits)
        .map_err(|e| {
            let mut err = ApiError::flow(e);
            if e == FlowError::SendsExhausted {
                let left = (stored.flow.expires_at - now).whole_seconds().max(1);
                err.retry_after = Some(u32::try_from(left).unwrap_or(u32::MAX));
            }
            err
        })?;
    carry_out(state, &grant, stored.version, transition, visitor, now)
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
    grant: &Grant,
    version: i32,
    transition: Transition,
    visitor: &Visitor,
    now: OffsetDateTime,
) -> Result<Next, ApiError> {
    let step = Step::new(state, transition, now)?;
    let stored = state
        .store
        .write(|c| step.store(c, state, grant, Base::Stored(version), visitor, now))?;
    step.finish(state, grant, version, stored, visitor, now)
}

/// Where a step's flow and its grant's state stand when the step is stored.
enum Base {
    /// The flow is stored at this version; the grant's state is yet to be locked.
    Stored(i32),
    /// The flow was just stored with the step applied, and this is the grant's state, read
    /// under its row lock in the same transaction.
    Opened(GrantState),
}

/// A flow's transition on its way to the database.
struct Step {
    flow: Flow,
    effects: Vec<Effect>,
    refusal: Option<FlowError>,
    /// The id of the lease it issues, if it does.
    lease_id: Option<LeaseId>,
}

/// What storing a [`Step`] left to do after the commit.
struct StoredStep {
    grant_state: linklease_grant::GrantState,
    lease: Option<LeaseRecord>,
    /// The code to generate and deliver, by number.
    send: Option<u32>,
}

impl Step {
    fn new(
        state: &AppState,
        transition: Transition,
        now: OffsetDateTime,
    ) -> Result<Self, ApiError> {
        let Transition {
            flow,
            effects,
            refusal,
        } = transition;
        let lease_id = if effects.contains(&Effect::IssueLease) {
            Some(LeaseId::new(now, &state.rng).map_err(ApiError::internal)?)
        } else {
            None
        };
        Ok(Self {
            flow,
            effects,
            refusal,
            lease_id,
        })
    }

    /// In the caller's transaction: the flow's compare-and-set from `base` and the effects.
    fn store(
        &self,
        c: &mut DbConn,
        state: &AppState,
        grant: &Grant,
        base: Base,
        visitor: &Visitor,
        now: OffsetDateTime,
    ) -> Result<StoredStep, StoreError> {
        let Self {
            flow,
            effects,
            lease_id,
            ..
        } = self;
        let lease_id = *lease_id;
        let mut send = None;
        // Decide on the grant's state as of now, under its row lock: concurrent guesses queue
        // here, and once one of them locks the grant every later one is refused, right or
        // wrong, before anything is applied.
        let mut grant_state = match base {
            Base::Stored(_) => grants::lock_state(c, grant.id)?,
            Base::Opened(ref locked) => locked.clone(),
        };
        match grant_state.status(grant.expires_at, grant.max_uses, now) {
            GrantStatus::Active => {}
            status => return Err(StoreError::GrantNotActive(status)),
        }
        if let Base::Stored(version) = base {
            flows::save(c, flow, version)?;
        }
        let mut lease = None;
        for effect in effects {
            let (kind, detail) = match *effect {
                Effect::FactorPassed => (AuditKind::FactorPassed, serde_json::json!({})),
                Effect::FactorFailed => {
                    grant_state =
                        grants::count_failure(c, grant, Failure::Factor, &state.limits, now)?;
                    (
                        AuditKind::FactorFailed,
                        serde_json::json!({
                            "factor_failures": grant_state.factor_failures,
                        }),
                    )
                }
                Effect::OtpSent => (
                    AuditKind::OtpSent,
                    serde_json::json!({
                        "send": flow.sends,
                        "channel": grant.otp_channel.as_str(),
                    }),
                ),
                Effect::OtpPassed => (AuditKind::OtpPassed, serde_json::json!({})),
                Effect::OtpFailed => {
                    grant_state =
                        grants::count_failure(c, grant, Failure::Otp, &state.limits, now)?;
                    (
                        AuditKind::OtpFailed,
                        serde_json::json!({
                            "otp_failures": grant_state.otp_failures,
                        }),
                    )
                }
                Effect::SendOtp { send: n } => {
                    send = Some(n);
                    continue;
                }
                Effect::IssueLease => {
                    let Some(id) = lease_id else { continue };
                    let issued = LeaseRecord {
                        id,
                        tenant: grant.tenant,
                        grant: grant.id,
                        flow: flow.id,
                        client: match visitor.holder {
                            Holder::Browser => None,
                            Holder::Partner(client) => Some(client),
                        },
                        issued_at: now,
                        expires_at: lease::first_expiry(
                            now,
                            grant.lease_ttl_seconds,
                            &state.limits,
                        ),
                        ended_at: None,
                        end_reason: None,
                        ip: visitor.ip.map(|ip| ip.to_string()),
                        user_agent: visitor.user_agent.clone(),
                    };
                    leases::insert(c, &issued)?;
                    let detail = serde_json::json!({
                        "flow": flow.id,
                        "expires_at": crate::rfc3339(issued.expires_at),
                    });
                    lease = Some(issued);
                    (AuditKind::LeaseIssued, detail)
                }
            };
            let lease_ref = if kind == AuditKind::LeaseIssued {
                lease_id
            } else {
                None
            };
            append(
                c,
                grant,
                lease_ref,
                kind,
                visitor,
                with_flow(detail, flow.id),
                now,
            )?;
        }
        Ok(StoredStep {
            grant_state,
            lease,
            send,
        })
    }

    /// After the commit: the refusal, the signed lease, or the code's delivery.
    fn finish(
        self,
        state: &AppState,
        grant: &Grant,
        version: i32,
        stored: StoredStep,
        visitor: &Visitor,
        now: OffsetDateTime,
    ) -> Result<Next, ApiError> {
        let StoredStep {
            grant_state,
            lease,
            send,
        } = stored;
        let flow = self.flow;

        if let Some(refusal) = self.refusal {
            let mut err = ApiError::flow(refusal);
            if grant_state.locked_at.is_some() {
                return Err(ApiError::grant_inactive(GrantStatus::Locked));
            }
            if refusal == FlowError::FactorMismatch {
                err.attempts_left =
                    Some(state.limits.factor_attempts_left(
                        grant_state.factor_failures,
                        grant_state.otp_failures,
                    ));
            }
            return Err(err);
        }
        if let Some(lease) = lease {
            // The issue facts never change: the lease's first request needs no query for them.
            state.leases.insert(lease.id, Arc::new(lease.clone()));
            return sign(state, lease, &grant.permissions).map(|l| Next::Lease(Box::new(l)));
        }
        if let Some(n) = send {
            return deliver(state, grant, flow, version + 1, n, visitor, now);
        }
        // A delivery was recorded: the next step is the code.
        Ok(Next::Otp {
            sent_to: sent_to(grant),
        })
    }
}

/// Generates code number `n`, delivers it, then records the delivery (`otp.sent`).
fn deliver(
    state: &AppState,
    grant: &Grant,
    flow: Flow,
    version: i32,
    n: u32,
    visitor: &Visitor,
    now: OffsetDateTime,
) -> Result<Next, ApiError> {
    let to = grant
        .otp_to
        .clone()
        .ok_or_else(|| ApiError::internal("grant with an OTP channel but no destination"))?;
    let code = otp::generate(&state.rng).map_err(ApiError::internal)?;
    let hash = otp::hash(&state.keys, flow.id.0, n, &code);
    let minutes = u32::try_from(state.limits.otp_ttl.whole_minutes()).unwrap_or(10);
    let message = OtpMessage::new(now, grant.otp_channel, to, grant.id, code, minutes);
    if let Err(e) = state.courier.deliver(&message) {
        log::warn!(target: "linklease::courier", "flow {}: delivery failed: {e}", flow.id);
        let mut err = ApiError::new(
            Code::Unavailable,
            "the code could not be sent; ask for a new one in a moment",
        );
        err.retry_after = Some(5);
        return Err(err);
    }
    let transition = flow
        .step(Event::OtpDelivered { hash }, now, &state.limits)
        .map_err(ApiError::flow)?;
    carry_out(state, grant, version, transition, visitor, now)
}

/// Where the grant's codes go, masked.
fn sent_to(grant: &linklease_grant::Grant) -> String {
    grant
        .otp_to
        .as_deref()
        .map(|to| mask(grant.otp_channel, to))
        .unwrap_or_default()
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

fn with_flow(mut detail: serde_json::Value, flow: FlowId) -> serde_json::Value {
    if let Some(map) = detail.as_object_mut() {
        map.entry("flow").or_insert_with(|| serde_json::json!(flow));
    }
    detail
}

fn append(
    c: &mut DbConn,
    grant: &Grant,
    lease: Option<LeaseId>,
    kind: AuditKind,
    visitor: &Visitor,
    detail: serde_json::Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    audit::append(
        c,
        &NewEvent {
            at: now,
            tenant: Some(grant.tenant),
            grant: Some(grant.id),
            lease,
            kind,
            actor: visitor.actor(),
            detail,
        },
    )
}

/// What the factor is called, for messages.
pub fn factor_name(kind: FactorKind) -> &'static str {
    match kind {
        FactorKind::None => "nothing",
        FactorKind::Dob => "date of birth",
        FactorKind::Pin => "PIN",
    }
}
