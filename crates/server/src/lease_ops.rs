//! What a lease holder does, shared by the JSON API and the browser pages: read the payload,
//! submit, complete, refresh, end. Every change takes its use with one conditional update in
//! the same transaction as the submission and its audit events (see `grants::take_use`).

use linklease_grant::{GrantStatus, SubmissionId, commitment, micros, request::sha256};
use linklease_lease::lease::refreshed_expiry;
use linklease_lease::submission::{self, SubmissionError, SubmissionRequest};
use linklease_lease::token::Scope;
use linklease_store::audit::{self, AuditKind, NewEvent};
use linklease_store::grants;
use linklease_store::leases;
use linklease_store::submissions::{self, SubmissionRecord};
use linklease_store::{DbConn, StoreError};
use serde_json::value::RawValue;
use std::sync::Arc;
use time::OffsetDateTime;

use crate::AppState;
use crate::error::{ApiError, Code};
use crate::exchange::{self, IssuedLease};
use crate::lease_auth::LeaseHolder;

/// Why a lease ended, as recorded.
pub const ENDED_BY_HOLDER: &str = "ended by holder";
/// The reason recorded when the grant's last use ends the lease.
pub const ENDED_BY_LAST_USE: &str = "grant used";

fn event(
    holder: &LeaseHolder,
    kind: AuditKind,
    detail: serde_json::Value,
    now: OffsetDateTime,
) -> NewEvent {
    NewEvent {
        at: now,
        tenant: Some(holder.grant.grant.tenant),
        grant: Some(holder.grant.grant.id),
        lease: Some(holder.lease.id),
        kind,
        actor: holder.actor(),
        detail,
    }
}

/// The payload, recording `payload.read` (committed before it is returned). Blocks.
pub fn read_payload(state: &AppState, holder: &LeaseHolder) -> Result<Arc<RawValue>, ApiError> {
    let payload = payload_of(state, holder)?;
    // Answered only once the read is on the record (group commit shares the transaction).
    state.audit_writer.call(read_event(state, holder))?;
    Ok(payload)
}

/// The payload a lease may read, as its stored JSON text (cached; the grant's payload never
/// changes). Blocks on a miss. The caller records the read with [`read_event`] before
/// answering.
pub fn payload_of(state: &AppState, holder: &LeaseHolder) -> Result<Arc<RawValue>, ApiError> {
    holder.require(Scope::Read)?;
    let grant = holder.grant.grant.id;
    if let Some(payload) = state.payloads.get(grant) {
        return Ok(payload);
    }
    let text = state
        .store
        .read(|c| grants::payload(c, grant))?
        .ok_or_else(|| ApiError::new(Code::NotFound, "the payload was removed by retention"))?;
    let payload: Arc<RawValue> = RawValue::from_string(text)
        .map_err(ApiError::internal)?
        .into();
    state.payloads.put(grant, payload.clone());
    Ok(payload)
}

/// The `payload.read` event of `holder` now.
pub fn read_event(state: &AppState, holder: &LeaseHolder) -> NewEvent {
    let (name, value) = holder.grant.grant.payload_evidence();
    let mut detail = serde_json::Map::new();
    detail.insert(name.to_owned(), value.into());
    event(
        holder,
        AuditKind::PayloadRead,
        detail.into(),
        micros::truncate(state.clock.now()),
    )
}

/// The result of an accepted submission (or of its idempotent replay).
#[derive(Debug)]
pub struct Accepted {
    /// The stored submission.
    pub submission: SubmissionRecord,
    /// The grant's status after it.
    pub grant_status: GrantStatus,
    /// Whether this is the replay of an earlier submission.
    pub replayed: bool,
}

/// Checks and stores a submission, taking one use. Blocks.
pub fn submit(
    state: &AppState,
    holder: &LeaseHolder,
    request: &SubmissionRequest,
) -> Result<Accepted, ApiError> {
    holder.require(Scope::Write)?;
    let now = micros::truncate(state.clock.now());
    let grant = &holder.grant.grant;
    let key = request.idempotency_key.as_deref();
    if let Some(key) = key
        && let Some(first) = state
            .store
            .read(|c| submissions::by_idempotency_key(c, grant.id, key))?
    {
        return replay(state, request, first, now);
    }
    // The count matters only to a submission that creates child records where allowed.
    let created = if request.creates.is_empty() || grant.permissions.create.is_none() {
        0
    } else {
        state.store.read(|c| grants::creates(c, grant.id))?
    };
    let body = match submission::validate(&grant.permissions, request, created) {
        Ok(body) => body,
        Err(e) => {
            let err = submission_error(e);
            state.store.write(|c| {
                audit::append(
                    c,
                    &event(
                        holder,
                        AuditKind::SubmissionRejected,
                        serde_json::json!({ "code": err.code.as_str(), "fields": err.errors.iter().map(|p| &p.field).collect::<Vec<_>>() }),
                        now,
                    ),
                )
            })?;
            return Err(err);
        }
    };
    let id = SubmissionId::new(now, &state.rng).map_err(ApiError::internal)?;
    let record = SubmissionRecord {
        id,
        tenant: grant.tenant,
        grant: grant.id,
        lease: holder.lease.id,
        received_at: now,
        body_sha256: sha256(body.as_bytes()),
        body_commitment: grant.commitments.map(|c| c.body(body.as_bytes())),
        body,
        creates: u32::try_from(request.creates.len()).unwrap_or(u32::MAX),
        idempotency_key: request.idempotency_key.clone(),
    };
    let outcome = state.store.write(|c| {
        // Child records first: when they do not fit, nothing has changed yet and nothing is
        // committed. The use is taken after, so a refused use rolls the reservation back.
        if let Some(create) = &grant.permissions.create
            && let Err(left) = grants::take_creates(c, grant.id, record.creates, create.max)?
        {
            let err = submission_error(SubmissionError::CreateLimit { left });
            audit::append(
                c,
                &event(
                    holder,
                    AuditKind::SubmissionRejected,
                    serde_json::json!({ "code": err.code.as_str(), "fields": ["creates"] }),
                    now,
                ),
            )?;
            return Ok(Err(err));
        }
        let uses = grants::take_use(c, grant, &holder.actor(), now)?;
        submissions::insert(c, &record)?;
        let mut detail = serde_json::json!({
            "submission": record.id,
            "fields": request.fields.keys().collect::<Vec<_>>(),
            "creates": record.creates,
            "uses": uses,
        });
        let (body_name, body_value) =
            commitment::body_evidence(record.body_commitment.as_ref(), &record.body_sha256);
        detail[body_name] = body_value.into();
        audit::append(
            c,
            &event(holder, AuditKind::SubmissionAccepted, detail, now),
        )?;
        let status = end_if_used(c, holder, uses, now)?;
        Ok(Ok(status))
    });
    match outcome {
        Ok(Ok(grant_status)) => Ok(Accepted {
            submission: record,
            grant_status,
            replayed: false,
        }),
        Ok(Err(e)) => Err(e),
        // A concurrent request with the same idempotency key won: answer with its result.
        Err(StoreError::Conflict(_)) if key.is_some() => {
            let first = state
                .store
                .read(|c| submissions::by_idempotency_key(c, grant.id, key.unwrap_or_default()))?
                .ok_or_else(|| ApiError::new(Code::Conflict, "the submission conflicted"))?;
            replay(state, request, first, now)
        }
        Err(e) => Err(e.into()),
    }
}

/// The replay of a submission whose lease has since ended with the grant's last use: a client
/// retrying its final submission gets the first answer, not `grant_used`. The token's signature
/// is checked; the submission must have come through that very lease. Blocks.
pub fn replay_after_end(
    state: &AppState,
    presented: &crate::lease_auth::Presented,
    request: &SubmissionRequest,
) -> Option<Result<Accepted, ApiError>> {
    let key = request.idempotency_key.as_deref()?;
    let claims = crate::lease_auth::verify_token(state, &presented.token).ok()?;
    presented.check_csrf(state, claims.jti).ok()?;
    let first = state
        .store
        .read(|c| submissions::by_idempotency_key(c, claims.sub, key))
        .ok()??;
    if first.lease != claims.jti {
        return None;
    }
    Some(replay(
        state,
        request,
        first,
        micros::truncate(state.clock.now()),
    ))
}

fn replay(
    state: &AppState,
    request: &SubmissionRequest,
    first: SubmissionRecord,
    now: OffsetDateTime,
) -> Result<Accepted, ApiError> {
    if first.body_sha256 != sha256(submission::canonical(request).as_bytes()) {
        return Err(ApiError::new(
            Code::IdempotencyConflict,
            "this idempotency key was used with a different body",
        ));
    }
    let record = state.store.read(|c| grants::by_id(c, first.grant))?;
    Ok(Accepted {
        submission: first,
        grant_status: record.status(now),
        replayed: true,
    })
}

/// After a use: if it was the last, end this lease and say so.
fn end_if_used(
    c: &mut DbConn,
    holder: &LeaseHolder,
    uses: u32,
    now: OffsetDateTime,
) -> Result<GrantStatus, StoreError> {
    if uses < holder.grant.grant.max_uses {
        return Ok(GrantStatus::Active);
    }
    if leases::end(c, holder.lease.id, ENDED_BY_LAST_USE, now)? {
        audit::append(
            c,
            &event(
                holder,
                AuditKind::LeaseEnded,
                serde_json::json!({ "reason": ENDED_BY_LAST_USE }),
                now,
            ),
        )?;
    }
    Ok(GrantStatus::Used)
}

/// An explicit use without a submission. Blocks.
pub fn complete(state: &AppState, holder: &LeaseHolder) -> Result<GrantStatus, ApiError> {
    let now = micros::truncate(state.clock.now());
    Ok(state.store.write(|c| {
        let uses = grants::take_use(c, &holder.grant.grant, &holder.actor(), now)?;
        audit::append(
            c,
            &event(
                holder,
                AuditKind::UseCompleted,
                serde_json::json!({ "uses": uses }),
                now,
            ),
        )?;
        end_if_used(c, holder, uses, now)
    })?)
}

/// A new token for the same lease, expiring one TTL from now but never past one hour after
/// issue. Blocks.
pub fn refresh(state: &AppState, holder: &LeaseHolder) -> Result<IssuedLease, ApiError> {
    let now = micros::truncate(state.clock.now());
    let grant = &holder.grant.grant;
    let expires_at = refreshed_expiry(
        holder.lease.issued_at,
        now,
        grant.lease_ttl_seconds,
        &state.limits,
    );
    let extended = state.store.write(|c| {
        if !leases::extend(c, holder.lease.id, expires_at)? {
            return Ok(false);
        }
        audit::append(
            c,
            &event(
                holder,
                AuditKind::LeaseRefreshed,
                serde_json::json!({ "expires_at": crate::rfc3339(expires_at) }),
                now,
            ),
        )?;
        Ok(true)
    })?;
    if !extended {
        return Err(ApiError::new(Code::LeaseInvalid, "the lease has ended"));
    }
    let mut lease = holder.lease.clone();
    lease.expires_at = expires_at;
    exchange::sign(state, lease, &grant.permissions)
}

/// Ends the lease (logout). Ending an ended lease changes nothing. Blocks.
pub fn end(state: &AppState, holder: &LeaseHolder) -> Result<(), ApiError> {
    let now = micros::truncate(state.clock.now());
    state.store.write(|c| {
        if leases::end(c, holder.lease.id, ENDED_BY_HOLDER, now)? {
            audit::append(
                c,
                &event(
                    holder,
                    AuditKind::LeaseEnded,
                    serde_json::json!({ "reason": ENDED_BY_HOLDER }),
                    now,
                ),
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The spec code of a refused submission.
pub fn submission_error(e: SubmissionError) -> ApiError {
    match e {
        SubmissionError::NotWritable(problems) => {
            let mut err = ApiError::new(
                Code::FieldNotWritable,
                "some fields may not be written; see errors",
            );
            err.errors = problems.0;
            err
        }
        SubmissionError::Invalid(problems) => {
            let mut err = ApiError::new(Code::InvalidField, "some values are invalid; see errors");
            err.errors = problems.0;
            err
        }
        e @ SubmissionError::CreateLimit { .. } => {
            ApiError::new(Code::CreateLimitExceeded, e.to_string())
        }
        e @ SubmissionError::TooLarge => ApiError::new(Code::PayloadTooLarge, e.to_string()),
        e @ SubmissionError::Empty(_) => ApiError::new(Code::InvalidRequest, e.to_string()),
    }
}
