//! Codes: made before the step that records them, handed to the courier after its commit.

use std::sync::Arc;

use actix_web::web;
use linklease_courier::OtpMessage;
use linklease_grant::contact::mask;
use linklease_grant::{FlowId, Grant, SecretHash, SecretString, micros};
use linklease_lease::{Flow, otp};
use linklease_store::audit::{AuditKind, NewEvent};

use crate::error::{ApiError, Code};
use crate::{AppState, run};

use super::{Next, Visitor};

/// A code recorded as sent and not yet handed to the courier.
#[derive(Debug)]
pub struct Delivery {
    pub(super) message: OtpMessage,
    pub(super) grant: Arc<Grant>,
    pub(super) flow: FlowId,
    pub(super) send: u32,
    pub(super) visitor: Visitor,
}

/// A new code, made before the step that records it.
pub(super) struct NewCode {
    pub(super) send: u32,
    pub(super) code: SecretString,
    pub(super) hash: SecretHash,
}

impl NewCode {
    /// Code number [`Flow::next_send`] of `flow`.
    pub(super) fn for_flow(state: &AppState, flow: &Flow) -> Result<Self, ApiError> {
        let send = flow.next_send();
        let code = otp::generate(&state.rng).map_err(ApiError::internal)?;
        let hash = otp::hash(&state.keys, flow.id.0, send, &code);
        Ok(Self { send, code, hash })
    }
}

/// Hands the code of `next` (if it still has one) to the courier and awaits it, holding no
/// thread. A failed delivery is recorded (`otp.failed_to_send`) and answered `unavailable`
/// with the wait before the next send; the send still counts, since it may have left.
pub async fn deliver(state: &web::Data<AppState>, next: Next) -> Result<Next, ApiError> {
    let Next::Otp {
        sent_to,
        pending: Some(delivery),
    } = next
    else {
        return Ok(next);
    };
    let failed = match state.dispatcher.deliver(delivery.message.clone()).await {
        Ok(()) => {
            return Ok(Next::Otp {
                sent_to,
                pending: None,
            });
        }
        Err(e) => e,
    };
    log::warn!(target: "linklease::courier", "flow {}: delivery of code {} failed: {failed}",
        delivery.flow, delivery.send);
    let class = failed.class();
    run(state, move |state| {
        let now = micros::truncate(state.clock.now());
        let grant = &delivery.grant;
        state
            .store
            .append_audit(&[NewEvent {
                at: now,
                tenant: Some(grant.tenant),
                grant: Some(grant.id),
                lease: None,
                kind: AuditKind::OtpFailedToSend,
                actor: delivery.visitor.actor(),
                detail: serde_json::json!({
                    "flow": delivery.flow,
                    "send": delivery.send,
                    "channel": grant.otp_channel.as_str(),
                    "error": class,
                }),
            }])
            .map_err(ApiError::from)
    })
    .await?;
    let wait = state.limits.otp_resend_interval.whole_seconds().max(1);
    let mut err = ApiError::new(
        Code::Unavailable,
        "the code could not be sent; ask for a new one in a moment",
    );
    err.retry_after = Some(u32::try_from(wait).unwrap_or(u32::MAX));
    Err(err)
}

/// Where the grant's codes go, masked.
pub(super) fn sent_to(grant: &linklease_grant::Grant) -> String {
    grant
        .otp_to
        .as_deref()
        .map(|to| mask(grant.otp_channel, to))
        .unwrap_or_default()
}
