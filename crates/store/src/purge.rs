//! Retention: `linklease purge --ended-before DATE`. For every grant that stopped being active
//! before the date, the payload row is deleted and each submission's body is emptied; the grant
//! (with its payload's hash and commitment), the submissions (with theirs) and the audit chain stay,
//! so the log still verifies and still proves what was delivered and received. Each purged grant
//! gets one `payload.purged` event with the counts. See `docs/AUDIT.md`.

use diesel::prelude::*;
use time::OffsetDateTime;

use linklease_grant::{GrantId, micros, micros::rfc3339};

use crate::audit::{self, Actor, AuditKind, NewEvent};
use crate::grants;
use crate::schema::{grant_payloads, grant_state, grants as grants_t, submissions};
use crate::{DbConn, StoreError, parse_id};

/// What one call purged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Grants purged (each got a `payload.purged` event).
    pub grants: u64,
    /// Payload rows deleted.
    pub payloads: u64,
    /// Submission bodies emptied.
    pub submissions: u64,
    /// Pass as `after` to continue; `None` once every candidate was seen.
    pub next: Option<GrantId>,
}

/// Purges, in the caller's (write) transaction, up to `limit` candidate grants with ids after
/// `after`: those that still hold a payload or a non-empty submission body and ended before
/// `ended_before` (and before `now`: a grant still active is never touched, whatever the date).
/// A grant ended when it expired, was revoked or locked, or when its `grant.used` event was
/// recorded. Run it again with [`Purged::next`] until that is `None`; purging twice is harmless
/// (a grant with nothing left to remove is skipped and gets no second event).
pub fn ended_before(
    conn: &mut DbConn,
    ended_before: OffsetDateTime,
    now: OffsetDateTime,
    actor: &Actor,
    after: Option<GrantId>,
    limit: u32,
) -> Result<Purged, StoreError> {
    let now = micros::truncate(now);
    let cutoff = micros::to_micros(ended_before.min(now));
    let mut query = grants_t::table
        .inner_join(grant_state::table)
        .filter(
            grants_t::id
                .eq_any(grant_payloads::table.select(grant_payloads::grant_id))
                .or(grants_t::id.eq_any(
                    submissions::table
                        .filter(submissions::body.ne(""))
                        .select(submissions::grant_id),
                )),
        )
        // A superset of the ended grants; each is checked exactly below.
        .filter(
            grants_t::expires_at
                .lt(cutoff)
                .or(grant_state::revoked_at.lt(cutoff))
                .or(grant_state::locked_at.lt(cutoff))
                .or(grant_state::uses.ge(grants_t::max_uses)),
        )
        .select(grants_t::id)
        .order(grants_t::id.asc())
        .limit(i64::from(limit.max(1)))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(grants_t::id.gt(after.to_string()));
    }
    let candidates: Vec<String> = query.load(conn)?;
    let mut purged = Purged {
        next: if candidates.len() >= limit.max(1) as usize {
            candidates.last().map(|id| parse_id(id)).transpose()?
        } else {
            None
        },
        ..Purged::default()
    };
    for id in &candidates {
        let id: GrantId = parse_id(id)?;
        // Serialises with anything else deciding on this grant (another purge, on PostgreSQL).
        grants::lock_state(conn, id)?;
        let record = grants::by_id(conn, id)?;
        let used_at: Option<i64> =
            crate::audit_index::grant_events(conn, id, Some(AuditKind::GrantUsed))?
                .first()
                .map(|e| e.at);
        let before = |t: Option<OffsetDateTime>| t.is_some_and(|t| micros::to_micros(t) < cutoff);
        let ended = before(Some(record.grant.expires_at))
            || before(record.state.revoked_at)
            || before(record.state.locked_at)
            || used_at.is_some_and(|at| at < cutoff);
        if !ended {
            continue;
        }
        let payloads = diesel::delete(grant_payloads::table.find(id.to_string())).execute(conn)?;
        let bodies = diesel::update(
            submissions::table
                .filter(submissions::grant_id.eq(id.to_string()))
                .filter(submissions::body.ne("")),
        )
        .set(submissions::body.eq(""))
        .execute(conn)?;
        if payloads == 0 && bodies == 0 {
            continue;
        }
        let mut detail = serde_json::json!({
            "status": record.status(now).as_str(),
            "ended_before": rfc3339(ended_before),
            "payload_removed": payloads == 1,
            "submission_bodies_emptied": bodies,
        });
        let (payload_name, payload_value) = record.grant.payload_evidence();
        detail[payload_name] = payload_value.into();
        audit::append(
            conn,
            &NewEvent {
                at: now,
                tenant: Some(record.grant.tenant),
                grant: Some(id),
                lease: None,
                kind: AuditKind::PayloadPurged,
                actor: actor.clone(),
                detail,
            },
        )?;
        purged.grants += 1;
        purged.payloads += payloads as u64;
        purged.submissions += bodies as u64;
    }
    Ok(purged)
}
