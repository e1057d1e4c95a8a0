//! A flow's transition on its way to the database: the compare-and-set, its effects and their
//! audit events in one transaction, then the answer.

use std::sync::Arc;

use linklease_courier::OtpMessage;
use linklease_grant::{FlowId, Grant, GrantState, GrantStatus, LeaseId};
use linklease_lease::limits::SEND_WINDOW;
use linklease_lease::{Effect, Flow, FlowError, Holder, Transition, lease};
use linklease_store::audit::{self, AuditKind, NewEvent};
use linklease_store::flows;
use linklease_store::grants::{self, Failure};
use linklease_store::leases::{self, LeaseRecord};
use linklease_store::{DbConn, StoreError};
use time::OffsetDateTime;

use crate::AppState;
use crate::error::ApiError;

use super::codes::{Delivery, NewCode, sent_to};
use super::{Next, Visitor, sign};

/// Where a step's flow and its grant's state stand when the step is stored.
pub(super) enum Base {
    /// The flow is stored at this version; the grant's state is yet to be locked.
    Stored(i32),
    /// The flow was just stored with the step applied, and this is the grant's state, read
    /// under its row lock in the same transaction.
    Opened(GrantState),
}

/// A flow's transition on its way to the database.
pub(super) struct Step {
    pub(super) flow: Flow,
    effects: Vec<Effect>,
    refusal: Option<FlowError>,
    /// The id of the lease it issues, if it does.
    lease_id: Option<LeaseId>,
    /// The code it sends, if it does.
    code: Option<NewCode>,
}

/// What storing a [`Step`] left to do after the commit.
pub(super) struct StoredStep {
    grant_state: linklease_grant::GrantState,
    lease: Option<LeaseRecord>,
}

impl Step {
    pub(super) fn new(
        state: &AppState,
        transition: Transition,
        code: Option<NewCode>,
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
        // A code is kept only if the transition sends it.
        let sends = effects.iter().any(|e| matches!(e, Effect::SendOtp { .. }));
        Ok(Self {
            flow,
            effects,
            refusal,
            lease_id,
            code: code.filter(|_| sends),
        })
    }

    /// In the caller's transaction, under the grant's row lock: whether the code this step
    /// sends keeps the grant within `sends_per_grant_per_hour`, counting every flow that could
    /// have sent one in the last hour. `Ok(Err(_))` refuses the step.
    pub(super) fn sends_allowed(
        &self,
        c: &mut DbConn,
        state: &AppState,
        grant: linklease_grant::GrantId,
        now: OffsetDateTime,
    ) -> Result<Result<(), ApiError>, StoreError> {
        if self.code.is_none() {
            return Ok(Ok(()));
        }
        let (others, first_ends) =
            flows::sends_of_grant_since(c, grant, now - SEND_WINDOW, self.flow.id)?;
        if others.saturating_add(self.flow.sends) <= state.limits.sends_per_grant_per_hour {
            return Ok(Ok(()));
        }
        let wait = first_ends.map_or(time::Duration::ZERO, |at| at + SEND_WINDOW - now);
        Ok(Err(ApiError::too_many_for(
            wait,
            "too many codes were sent for this link; try again later",
        )))
    }

    /// In the caller's transaction: the flow's compare-and-set from `base` and the effects.
    pub(super) fn store(
        &self,
        c: &mut DbConn,
        state: &AppState,
        grant: &Grant,
        base: Base,
        visitor: &Visitor,
        now: OffsetDateTime,
    ) -> Result<Result<StoredStep, ApiError>, StoreError> {
        let Self {
            flow,
            effects,
            lease_id,
            ..
        } = self;
        let lease_id = *lease_id;
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
            if let Err(refused) = self.sends_allowed(c, state, grant.id, now)? {
                return Ok(Err(refused));
            }
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
                Effect::SendOtp { send } => (
                    AuditKind::OtpSent,
                    serde_json::json!({
                        "send": send,
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
        Ok(Ok(StoredStep { grant_state, lease }))
    }

    /// After the commit: the refusal, the signed lease, or the code's delivery.
    pub(super) fn finish(
        self,
        state: &AppState,
        grant: &Arc<Grant>,
        stored: StoredStep,
        visitor: &Visitor,
        now: OffsetDateTime,
    ) -> Result<Next, ApiError> {
        let StoredStep { grant_state, lease } = stored;

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
        let Some(code) = self.code else {
            return Err(ApiError::internal(
                "a step that neither refused, leased nor sent",
            ));
        };
        let to = grant
            .otp_to
            .clone()
            .ok_or_else(|| ApiError::internal("grant with an OTP channel but no destination"))?;
        let minutes = u32::try_from(state.limits.otp_ttl.whole_minutes()).unwrap_or(10);
        let message = OtpMessage::new(now, grant.otp_channel, to, grant.id, code.code, minutes);
        Ok(Next::Otp {
            sent_to: sent_to(grant),
            pending: Some(Box::new(Delivery {
                message,
                grant: grant.clone(),
                flow: self.flow.id,
                send: code.send,
                visitor: visitor.clone(),
            })),
        })
    }
}

pub(super) fn with_flow(mut detail: serde_json::Value, flow: FlowId) -> serde_json::Value {
    if let Some(map) = detail.as_object_mut() {
        map.entry("flow").or_insert_with(|| serde_json::json!(flow));
    }
    detail
}

pub(super) fn append(
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
