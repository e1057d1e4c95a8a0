//! Grants: inserted once, never updated. Their mutable facts live in `grant_state`, changed only
//! by conditional updates in the same transaction as the audit event that records the change.

use diesel::prelude::*;
use std::collections::BTreeMap;
use time::OffsetDateTime;

use linklease_grant::{
    Commitments, FactorKind, Grant, GrantId, GrantState, GrantStatus, NewGrant, OtpChannel,
    SecretHash, TenantId, micros, micros::rfc3339,
};

use linklease_lease::FlowLimits;

use crate::audit::{self, Actor, AuditKind, NewEvent};
use crate::conn::MultiBackend;
use crate::schema::{grant_labels, grant_payloads, grant_state, grants};
use crate::{DbConn, StoreError, parse_id};

/// A grant with its current facts.
#[derive(Clone, Debug, PartialEq)]
pub struct GrantRecord {
    /// The immutable grant.
    pub grant: Grant,
    /// Its mutable facts.
    pub state: GrantState,
    /// The grant that replaced it, if any.
    pub superseded_by: Option<GrantId>,
}

impl GrantRecord {
    /// Its status at `now`.
    pub fn status(&self, now: OffsetDateTime) -> GrantStatus {
        self.state
            .status(self.grant.expires_at, self.grant.max_uses, now)
    }
}

/// The reason recorded when a newer grant replaces an older one.
pub const SUPERSEDED: &str = "superseded";

/// Stores a new grant, its payload, labels and state, and its `grant.created` event. If it
/// supersedes another grant of the same tenant, that grant must be active and is revoked (reason
/// `superseded`) in the same transaction. Call inside a write transaction.
pub fn insert(conn: &mut DbConn, new: &NewGrant, actor: &Actor) -> Result<(), StoreError> {
    insert_all(conn, std::slice::from_ref(new), actor)
}

/// Stores many new grants as [`insert`] would, one after the other, but with one multi-row
/// statement per table for every 256 grants. A batch in which any grant
/// supersedes another is stored grant by grant (it may supersede one of its own).
pub fn insert_all(conn: &mut DbConn, news: &[NewGrant], actor: &Actor) -> Result<(), StoreError> {
    if news.iter().any(|n| n.grant.supersedes.is_some()) {
        for new in news {
            if let Some(old) = new.grant.supersedes {
                supersede(
                    conn,
                    new.grant.tenant,
                    old,
                    new.grant.id,
                    actor,
                    new.grant.created_at,
                )?;
            }
            insert_batch(conn, std::slice::from_ref(new), actor)?;
        }
        return Ok(());
    }
    for chunk in news.chunks(crate::INSERT_CHUNK) {
        insert_batch(conn, chunk, actor)?;
    }
    Ok(())
}

#[derive(Insertable)]
#[diesel(table_name = grants, treat_none_as_default_value = false)]
struct NewGrantRow<'a> {
    id: String,
    tenant_id: String,
    api_key_id: String,
    created_at: i64,
    expires_at: i64,
    token_hash: &'a [u8],
    payload_sha256: &'a [u8],
    permissions: String,
    max_uses: i32,
    lease_ttl_seconds: i32,
    factor_kind: &'a str,
    factor_verifier: Option<&'a [u8]>,
    otp_channel: &'a str,
    otp_to: Option<&'a str>,
    allowed_ip_blocks: String,
    labels: String,
    supersedes: Option<String>,
    commitment_salt: Option<&'a [u8]>,
    payload_commitment: Option<&'a [u8]>,
}

#[derive(Insertable)]
#[diesel(table_name = grant_payloads, treat_none_as_default_value = false)]
struct NewPayloadRow<'a> {
    grant_id: String,
    payload: &'a str,
}

#[derive(Insertable)]
#[diesel(table_name = grant_labels, treat_none_as_default_value = false)]
struct NewLabelRow<'a> {
    grant_id: String,
    tenant_id: String,
    name: &'a str,
    value: &'a str,
}

#[derive(Insertable)]
#[diesel(table_name = grant_state, treat_none_as_default_value = false)]
struct NewStateRow {
    grant_id: String,
}

/// Inserts the rows of `news` (none superseding another) and records their events.
fn insert_batch(conn: &mut DbConn, news: &[NewGrant], actor: &Actor) -> Result<(), StoreError> {
    let mut grant_rows = Vec::with_capacity(news.len());
    let mut payload_rows = Vec::with_capacity(news.len());
    let mut label_rows = Vec::new();
    let mut state_rows = Vec::with_capacity(news.len());
    for new in news {
        let g = &new.grant;
        let id = g.id.to_string();
        let tenant = g.tenant.to_string();
        grant_rows.push(NewGrantRow {
            id: id.clone(),
            tenant_id: tenant.clone(),
            api_key_id: g.api_key.to_string(),
            created_at: micros::to_micros(g.created_at),
            expires_at: micros::to_micros(g.expires_at),
            token_hash: &new.token_hash.0[..],
            payload_sha256: &g.payload_sha256[..],
            permissions: to_json(&g.permissions)?,
            max_uses: to_i32(g.max_uses),
            lease_ttl_seconds: to_i32(g.lease_ttl_seconds),
            factor_kind: g.factor_kind.as_str(),
            factor_verifier: g.factor_verifier.as_ref().map(|h| &h.0[..]),
            otp_channel: g.otp_channel.as_str(),
            otp_to: g.otp_to.as_deref(),
            allowed_ip_blocks: to_json(&g.allowed_ip_blocks)?,
            labels: to_json(&g.labels)?,
            supersedes: g.supersedes.map(|s| s.to_string()),
            commitment_salt: g.commitments.as_ref().map(|c| &c.salt[..]),
            payload_commitment: g.commitments.as_ref().map(|c| &c.payload[..]),
        });
        payload_rows.push(NewPayloadRow {
            grant_id: id.clone(),
            payload: &new.payload,
        });
        for (name, value) in &g.labels {
            label_rows.push(NewLabelRow {
                grant_id: id.clone(),
                tenant_id: tenant.clone(),
                name,
                value,
            });
        }
        state_rows.push(NewStateRow { grant_id: id });
    }
    insert_rows!(conn, grants::table, grant_rows);
    insert_rows!(conn, grant_payloads::table, payload_rows);
    insert_rows!(conn, grant_labels::table, label_rows);
    insert_rows!(conn, grant_state::table, state_rows);
    for new in news {
        audit::append(conn, &created_event(new, actor))?;
    }
    Ok(())
}

/// The `grant.created` event of `new`.
fn created_event(new: &NewGrant, actor: &Actor) -> NewEvent {
    let g = &new.grant;
    let (payload_name, payload_value) = g.payload_evidence();
    let mut detail = serde_json::json!({
        "expires_at": rfc3339(g.expires_at),
        "max_uses": g.max_uses,
        "lease_ttl_seconds": g.lease_ttl_seconds,
        "factor_kind": g.factor_kind.as_str(),
        "otp_channel": g.otp_channel.as_str(),
        "writable": g.permissions.can_write(),
        "supersedes": g.supersedes,
    });
    detail[payload_name] = payload_value.into();
    NewEvent {
        at: g.created_at,
        tenant: Some(g.tenant),
        grant: Some(g.id),
        lease: None,
        kind: AuditKind::GrantCreated,
        actor: actor.clone(),
        detail,
    }
}

fn supersede(
    conn: &mut DbConn,
    tenant: TenantId,
    old: GrantId,
    new: GrantId,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let record = get(conn, tenant, old)?;
    let status = record.status(now);
    if status != GrantStatus::Active {
        return Err(StoreError::GrantNotActive(status));
    }
    // Conditional: a concurrent revoke, supersede, lock or last use wins, and this one fails.
    let changed = diesel::update(grant_state::table)
        .filter(grant_state::grant_id.eq(old.to_string()))
        .filter(grant_state::revoked_at.is_null())
        .filter(grant_state::locked_at.is_null())
        .filter(grant_state::uses.lt(to_i32(record.grant.max_uses)))
        .set((
            grant_state::revoked_at.eq(micros::to_micros(now)),
            grant_state::revoke_reason.eq(SUPERSEDED),
        ))
        .execute(conn)?;
    if changed != 1 {
        let status = get(conn, tenant, old)?.status(now);
        return Err(StoreError::GrantNotActive(status));
    }
    audit::append(
        conn,
        &NewEvent {
            at: now,
            tenant: Some(tenant),
            grant: Some(old),
            lease: None,
            kind: AuditKind::GrantRevoked,
            actor: actor.clone(),
            detail: serde_json::json!({ "reason": SUPERSEDED, "superseded_by": new }),
        },
    )
}

/// Revokes a grant of `tenant`. Revoking an already revoked grant changes nothing (the first
/// reason stays) and records nothing.
pub fn revoke(
    conn: &mut DbConn,
    tenant: TenantId,
    id: GrantId,
    reason: &str,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<GrantRecord, StoreError> {
    let now = micros::truncate(now);
    // Tenant check first: another tenant's grant is NotFound, and is not touched.
    get(conn, tenant, id)?;
    let changed = diesel::update(grant_state::table)
        .filter(grant_state::grant_id.eq(id.to_string()))
        .filter(grant_state::revoked_at.is_null())
        .set((
            grant_state::revoked_at.eq(micros::to_micros(now)),
            grant_state::revoke_reason.eq(reason),
        ))
        .execute(conn)?;
    if changed == 1 {
        audit::append(
            conn,
            &NewEvent {
                at: now,
                tenant: Some(tenant),
                grant: Some(id),
                lease: None,
                kind: AuditKind::GrantRevoked,
                actor: actor.clone(),
                detail: serde_json::json!({ "reason": reason }),
            },
        )?;
    }
    get(conn, tenant, id)
}

type GrantAndState = (GrantRow, StateRow);

/// One grant of `tenant`; another tenant's grant is `NotFound`.
pub fn get(conn: &mut DbConn, tenant: TenantId, id: GrantId) -> Result<GrantRecord, StoreError> {
    let record = by_id(conn, id)?;
    if record.grant.tenant == tenant {
        Ok(record)
    } else {
        Err(StoreError::NotFound)
    }
}

/// One grant of any tenant, for paths where the id comes from a verified lease or flow.
pub fn by_id(conn: &mut DbConn, id: GrantId) -> Result<GrantRecord, StoreError> {
    let found: GrantAndState = grants::table
        .inner_join(grant_state::table)
        .filter(grants::id.eq(id.to_string()))
        .select((GrantRow::as_select(), StateRow::as_select()))
        .get_result(conn)?;
    record(conn, found)
}

/// One grant of any tenant without its successor (`superseded_by` is `None`): one query, for
/// the lease check on every request, which needs only the grant and its state.
pub fn for_lease(conn: &mut DbConn, id: GrantId) -> Result<GrantRecord, StoreError> {
    let (row, state): GrantAndState = grants::table
        .inner_join(grant_state::table)
        .filter(grants::id.eq(id.to_string()))
        .select((GrantRow::as_select(), StateRow::as_select()))
        .get_result(conn)?;
    Ok(GrantRecord {
        grant: row.try_into()?,
        state: state.try_into()?,
        superseded_by: None,
    })
}

/// The grant whose link token has this keyed hash (a link visit or an exchange), without its
/// successor (`superseded_by` is `None`): one query. With `lock`, the grant's rows stay locked
/// for the rest of the transaction, as [`lock_state`] would leave them (PostgreSQL
/// `SELECT … FOR UPDATE`; on SQLite the one writer holds the write lock already): its state is
/// then fresh, and the one query takes the lock too.
pub fn by_token(
    conn: &mut DbConn,
    token_hash: &SecretHash,
    lock: bool,
) -> Result<GrantRecord, StoreError> {
    let found = grants::table
        .inner_join(grant_state::table)
        .filter(grants::token_hash.eq(&token_hash.0[..]));
    let (row, state): GrantAndState = match conn {
        DbConn::Pg(pg) if lock => found
            .select((GrantRow::as_select(), StateRow::as_select()))
            .for_update()
            .get_result(pg)?,
        _ => found
            .select((GrantRow::as_select(), StateRow::as_select()))
            .get_result(conn)?,
    };
    Ok(GrantRecord {
        grant: row.try_into()?,
        state: state.try_into()?,
        superseded_by: None,
    })
}

fn record(conn: &mut DbConn, (row, state): GrantAndState) -> Result<GrantRecord, StoreError> {
    let superseded_by = grants::table
        .filter(grants::supersedes.eq(&row.id))
        .select(grants::id)
        .get_result::<String>(conn)
        .optional()?
        .map(|s| parse_id(&s))
        .transpose()?;
    Ok(GrantRecord {
        grant: row.try_into()?,
        state: state.try_into()?,
        superseded_by,
    })
}

/// Locks the grant's state row for the rest of the transaction and returns it fresh: on
/// PostgreSQL `SELECT … FOR UPDATE` (concurrent steps on one grant then queue, each seeing the
/// one before committed; one round trip, and no new row version as a no-op `UPDATE` would
/// leave); on SQLite the one writer already holds the database's write lock, and the read
/// alone is a statement diesel caches (it never caches an `UPDATE`).
/// Call first in a transaction that decides on the grant's status.
pub fn lock_state(conn: &mut DbConn, grant: GrantId) -> Result<GrantState, StoreError> {
    let id = grant.to_string();
    let target = grant_state::table.filter(grant_state::grant_id.eq(&id));
    let row: StateRow = match conn {
        DbConn::Pg(pg) => target
            .select(StateRow::as_select())
            .for_update()
            .get_result(pg)?,
        DbConn::Sqlite(_) => target.select(StateRow::as_select()).get_result(conn)?,
    };
    row.try_into()
}

/// A failed attempt to count against a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A wrong second factor.
    Factor,
    /// A wrong one-time code.
    Otp,
}

/// Counts one failure on `grant` and locks it (recording `grant.locked`) when the counts reach
/// the limits; a locked grant counts nothing more. Returns the grant's facts after the change.
/// Call inside a write transaction, after [`lock_state`].
pub fn count_failure(
    conn: &mut DbConn,
    grant: &Grant,
    failure: Failure,
    limits: &FlowLimits,
    now: OffsetDateTime,
) -> Result<GrantState, StoreError> {
    let id = grant.id.to_string();
    let target = grant_state::table.filter(grant_state::grant_id.eq(&id));
    let unlocked = target.filter(grant_state::locked_at.is_null());
    match failure {
        Failure::Factor => diesel::update(unlocked)
            .set(grant_state::factor_failures.eq(grant_state::factor_failures + 1))
            .execute(conn)?,
        Failure::Otp => diesel::update(unlocked)
            .set(grant_state::otp_failures.eq(grant_state::otp_failures + 1))
            .execute(conn)?,
    };
    let mut state: GrantState = target
        .select(StateRow::as_select())
        .get_result(conn)?
        .try_into()?;
    if state.locked_at.is_none() && limits.locks(state.factor_failures, state.otp_failures) {
        let now = micros::truncate(now);
        let locked = diesel::update(target.filter(grant_state::locked_at.is_null()))
            .set(grant_state::locked_at.eq(micros::to_micros(now)))
            .execute(conn)?;
        if locked == 1 {
            state.locked_at = Some(now);
            audit::append(
                conn,
                &NewEvent {
                    at: now,
                    tenant: Some(grant.tenant),
                    grant: Some(grant.id),
                    lease: None,
                    kind: AuditKind::GrantLocked,
                    actor: Actor::system(),
                    detail: serde_json::json!({
                        "factor_failures": state.factor_failures,
                        "otp_failures": state.otp_failures,
                    }),
                },
            )?;
        }
    }
    Ok(state)
}

/// Takes one use of `grant`, or fails with its status if it is no longer active. One
/// conditional update: of any number of concurrent callers on any number of instances, exactly
/// `max_uses` succeed. Records `grant.used` when the last use is taken. Returns the uses taken
/// so far. Call inside the write transaction that stores what the use is for.
pub fn take_use(
    conn: &mut DbConn,
    grant: &Grant,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<u32, StoreError> {
    let id = grant.id.to_string();
    let read_state = |conn: &mut DbConn| -> Result<GrantState, StoreError> {
        grant_state::table
            .filter(grant_state::grant_id.eq(&id))
            .select(StateRow::as_select())
            .get_result(conn)?
            .try_into()
    };
    if now >= grant.expires_at {
        // Expired, or something that outranks expiry (revoked, locked, used).
        let state = read_state(conn)?;
        return Err(StoreError::GrantNotActive(state.status(
            grant.expires_at,
            grant.max_uses,
            now,
        )));
    }
    // The state after the use comes back with it (one statement); none comes back when no
    // use was left to take.
    // (diesel's `MultiConnection` has no `RETURNING`: typed per backend.)
    let statement = diesel::update(
        grant_state::table
            .filter(grant_state::grant_id.eq(&id))
            .filter(grant_state::uses.lt(to_i32(grant.max_uses)))
            .filter(grant_state::revoked_at.is_null())
            .filter(grant_state::locked_at.is_null()),
    )
    .set(grant_state::uses.eq(grant_state::uses + 1));
    let taken: Option<StateRow> = match conn {
        DbConn::Pg(c) => statement
            .returning(StateRow::as_returning())
            .get_result(c)
            .optional()?,
        DbConn::Sqlite(c) => statement
            .returning(StateRow::as_returning())
            .get_result(c)
            .optional()?,
    };
    let Some(state) = taken else {
        let state = read_state(conn)?;
        return Err(StoreError::GrantNotActive(state.status(
            grant.expires_at,
            grant.max_uses,
            now,
        )));
    };
    let state: GrantState = state.try_into()?;
    if state.uses >= grant.max_uses {
        audit::append(
            conn,
            &NewEvent {
                at: micros::truncate(now),
                tenant: Some(grant.tenant),
                grant: Some(grant.id),
                lease: None,
                kind: AuditKind::GrantUsed,
                actor: actor.clone(),
                detail: serde_json::json!({ "uses": state.uses }),
            },
        )?;
    }
    Ok(state.uses)
}

/// Reserves `count` child records against `max` (all submissions of the grant together).
/// Returns how many were left if they do not fit. Call inside the submission's transaction.
pub fn take_creates(
    conn: &mut DbConn,
    grant: GrantId,
    count: u32,
    max: u32,
) -> Result<Result<(), u32>, StoreError> {
    if count == 0 {
        return Ok(Ok(()));
    }
    if count <= max {
        let taken = diesel::update(
            grant_state::table
                .filter(grant_state::grant_id.eq(grant.to_string()))
                .filter(grant_state::creates.le(to_i32(max - count))),
        )
        .set(grant_state::creates.eq(grant_state::creates + to_i32(count)))
        .execute(conn)?;
        if taken == 1 {
            return Ok(Ok(()));
        }
    }
    Ok(Err(max.saturating_sub(creates(conn, grant)?)))
}

/// Child records created so far on `grant`.
pub fn creates(conn: &mut DbConn, grant: GrantId) -> Result<u32, StoreError> {
    let created: i32 = grant_state::table
        .filter(grant_state::grant_id.eq(grant.to_string()))
        .select(grant_state::creates)
        .get_result(conn)?;
    u32::try_from(created).map_err(|_| StoreError::Corrupt("negative creates".into()))
}

/// The stored payload of a grant (`None` once retention removed it).
pub fn payload(conn: &mut DbConn, id: GrantId) -> Result<Option<String>, StoreError> {
    Ok(grant_payloads::table
        .find(id.to_string())
        .select(grant_payloads::payload)
        .get_result(conn)
        .optional()?)
}

/// Which grants a listing wants.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only grants with this status (at the `now` of the query).
    pub status: Option<GrantStatus>,
    /// Only grants carrying every one of these labels.
    pub labels: Vec<(String, String)>,
    /// Only grants older than this one (the cursor of the previous page).
    pub before: Option<GrantId>,
    /// At most this many.
    pub limit: u32,
}

/// A tenant's grants, newest first.
pub fn list(
    conn: &mut DbConn,
    tenant: TenantId,
    filter: &ListFilter,
    now: OffsetDateTime,
) -> Result<Vec<GrantRecord>, StoreError> {
    let tenant_id = tenant.to_string();
    let mut query = grants::table
        .inner_join(grant_state::table)
        .filter(grants::tenant_id.eq(tenant_id.clone()))
        .select((GrantRow::as_select(), StateRow::as_select()))
        .order(grants::id.desc())
        .limit(i64::from(filter.limit))
        .into_boxed::<MultiBackend>();
    if let Some(before) = filter.before {
        query = query.filter(grants::id.lt(before.to_string()));
    }
    for (name, value) in &filter.labels {
        query = query.filter(
            grants::id.eq_any(
                grant_labels::table
                    .filter(grant_labels::tenant_id.eq(tenant_id.clone()))
                    .filter(grant_labels::name.eq(name.clone()))
                    .filter(grant_labels::value.eq(value.clone()))
                    .select(grant_labels::grant_id),
            ),
        );
    }
    if let Some(status) = filter.status {
        let now = micros::to_micros(now);
        let open = grant_state::revoked_at
            .is_null()
            .and(grant_state::locked_at.is_null());
        query = match status {
            GrantStatus::Revoked => query.filter(grant_state::revoked_at.is_not_null()),
            GrantStatus::Locked => query
                .filter(grant_state::revoked_at.is_null())
                .filter(grant_state::locked_at.is_not_null()),
            GrantStatus::Used => query
                .filter(open)
                .filter(grant_state::uses.ge(grants::max_uses)),
            GrantStatus::Expired => query
                .filter(open)
                .filter(grant_state::uses.lt(grants::max_uses))
                .filter(grants::expires_at.le(now)),
            GrantStatus::Active => query
                .filter(open)
                .filter(grant_state::uses.lt(grants::max_uses))
                .filter(grants::expires_at.gt(now)),
        };
    }
    let rows: Vec<GrantAndState> = query.load(conn)?;
    let ids: Vec<String> = rows.iter().map(|(g, _)| g.id.clone()).collect();
    let successors: BTreeMap<String, String> = grants::table
        .filter(grants::supersedes.eq_any(&ids))
        .select((grants::supersedes.assume_not_null(), grants::id))
        .load::<(String, String)>(conn)?
        .into_iter()
        .collect();
    rows.into_iter()
        .map(|(row, state)| {
            let superseded_by = successors.get(&row.id).map(|s| parse_id(s)).transpose()?;
            Ok(GrantRecord {
                grant: row.try_into()?,
                state: state.try_into()?,
                superseded_by,
            })
        })
        .collect()
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = grants)]
struct GrantRow {
    id: String,
    tenant_id: String,
    api_key_id: String,
    created_at: i64,
    expires_at: i64,
    payload_sha256: Vec<u8>,
    permissions: String,
    max_uses: i32,
    lease_ttl_seconds: i32,
    factor_kind: String,
    factor_verifier: Option<Vec<u8>>,
    otp_channel: String,
    otp_to: Option<String>,
    allowed_ip_blocks: String,
    labels: String,
    supersedes: Option<String>,
    commitment_salt: Option<Vec<u8>>,
    payload_commitment: Option<Vec<u8>>,
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;
    fn try_from(row: GrantRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("grant {} {what}", row.id));
        Ok(Grant {
            id: parse_id(&row.id)?,
            tenant: parse_id(&row.tenant_id)?,
            api_key: parse_id(&row.api_key_id)?,
            created_at: micros::from_micros(row.created_at),
            expires_at: micros::from_micros(row.expires_at),
            payload_sha256: row
                .payload_sha256
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("payload_sha256"))?,
            commitments: match (&row.commitment_salt, &row.payload_commitment) {
                (None, None) => None,
                (Some(salt), Some(payload)) => Some(Commitments {
                    salt: salt
                        .as_slice()
                        .try_into()
                        .map_err(|_| corrupt("commitment_salt"))?,
                    payload: payload
                        .as_slice()
                        .try_into()
                        .map_err(|_| corrupt("payload_commitment"))?,
                }),
                _ => return Err(corrupt("commitments")),
            },
            permissions: serde_json::from_str(&row.permissions)
                .map_err(|_| corrupt("permissions"))?,
            max_uses: u32::try_from(row.max_uses).map_err(|_| corrupt("max_uses"))?,
            lease_ttl_seconds: u32::try_from(row.lease_ttl_seconds)
                .map_err(|_| corrupt("lease_ttl_seconds"))?,
            factor_kind: FactorKind::parse(&row.factor_kind)
                .ok_or_else(|| corrupt("factor_kind"))?,
            factor_verifier: row
                .factor_verifier
                .map(|v| SecretHash::from_slice(&v).ok_or_else(|| corrupt("factor_verifier")))
                .transpose()?,
            otp_channel: OtpChannel::parse(&row.otp_channel)
                .ok_or_else(|| corrupt("otp_channel"))?,
            otp_to: row.otp_to,
            allowed_ip_blocks: serde_json::from_str(&row.allowed_ip_blocks)
                .map_err(|_| corrupt("allowed_ip_blocks"))?,
            labels: serde_json::from_str(&row.labels).map_err(|_| corrupt("labels"))?,
            supersedes: row.supersedes.as_deref().map(parse_id).transpose()?,
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = grant_state)]
pub(crate) struct StateRow {
    uses: i32,
    factor_failures: i32,
    otp_failures: i32,
    locked_at: Option<i64>,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
}

impl TryFrom<StateRow> for GrantState {
    type Error = StoreError;
    fn try_from(row: StateRow) -> Result<Self, StoreError> {
        let count = |n: i32| {
            u32::try_from(n).map_err(|_| StoreError::Corrupt("negative grant counter".into()))
        };
        Ok(GrantState {
            uses: count(row.uses)?,
            factor_failures: count(row.factor_failures)?,
            otp_failures: count(row.otp_failures)?,
            locked_at: row.locked_at.map(micros::from_micros),
            revoked_at: row.revoked_at.map(micros::from_micros),
            revoke_reason: row.revoke_reason,
        })
    }
}

/// Counts and limits are validated to be far below `i32::MAX`.
fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Serialises a JSON column; a failure is a bug, reported rather than panicked on.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}
