//! Submissions: append-only (the database refuses UPDATE and DELETE), one per accepted write.

use diesel::prelude::*;
use time::OffsetDateTime;

use linklease_grant::{GrantId, LeaseId, SubmissionId, TenantId, micros};

use crate::schema::submissions;
use crate::{DbConn, StoreError, parse_id};

/// A stored submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionRecord {
    /// Its id (UUIDv7).
    pub id: SubmissionId,
    /// The grant's tenant.
    pub tenant: TenantId,
    /// The grant.
    pub grant: GrantId,
    /// The lease it came through.
    pub lease: LeaseId,
    /// When it was accepted.
    pub received_at: OffsetDateTime,
    /// The canonical body: `{"creates":[…],"fields":{…}}`.
    pub body: String,
    /// SHA-256 of `body` (for the originator's API and idempotent replays).
    pub body_sha256: [u8; 32],
    /// `HMAC-SHA256(grant's salt, body)`, what the audit log shows (absent for grants made
    /// before salts).
    pub body_commitment: Option<[u8; 32]>,
    /// Child records it created.
    pub creates: u32,
    /// The holder's idempotency key.
    pub idempotency_key: Option<String>,
}

/// Stores a submission. A second one with the same grant and idempotency key is `Conflict`.
pub fn insert(conn: &mut DbConn, s: &SubmissionRecord) -> Result<(), StoreError> {
    diesel::insert_into(submissions::table)
        .values((
            submissions::id.eq(s.id.to_string()),
            submissions::tenant_id.eq(s.tenant.to_string()),
            submissions::grant_id.eq(s.grant.to_string()),
            submissions::lease_id.eq(s.lease.to_string()),
            submissions::received_at.eq(micros::to_micros(s.received_at)),
            submissions::body.eq(&s.body),
            submissions::body_sha256.eq(&s.body_sha256[..]),
            submissions::body_commitment.eq(s.body_commitment.as_ref().map(|c| &c[..])),
            submissions::creates.eq(i32::try_from(s.creates).unwrap_or(i32::MAX)),
            submissions::idempotency_key.eq(&s.idempotency_key),
        ))
        .execute(conn)?;
    Ok(())
}

/// The submission of `grant` made under `key`, if any.
pub fn by_idempotency_key(
    conn: &mut DbConn,
    grant: GrantId,
    key: &str,
) -> Result<Option<SubmissionRecord>, StoreError> {
    submissions::table
        .filter(submissions::grant_id.eq(grant.to_string()))
        .filter(submissions::idempotency_key.eq(key))
        .select(SubmissionRow::as_select())
        .get_result(conn)
        .optional()?
        .map(TryInto::try_into)
        .transpose()
}

/// Submissions of `tenant` (of one grant, if given), oldest first, after the cursor id.
pub fn list(
    conn: &mut DbConn,
    tenant: TenantId,
    grant: Option<GrantId>,
    after: Option<SubmissionId>,
    limit: i64,
) -> Result<Vec<SubmissionRecord>, StoreError> {
    let mut query = submissions::table
        .filter(submissions::tenant_id.eq(tenant.to_string()))
        .select(SubmissionRow::as_select())
        .order(submissions::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(grant) = grant {
        query = query.filter(submissions::grant_id.eq(grant.to_string()));
    }
    if let Some(after) = after {
        query = query.filter(submissions::id.gt(after.to_string()));
    }
    query
        .load::<SubmissionRow>(conn)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = submissions)]
struct SubmissionRow {
    id: String,
    tenant_id: String,
    grant_id: String,
    lease_id: String,
    received_at: i64,
    body: String,
    body_sha256: Vec<u8>,
    creates: i32,
    idempotency_key: Option<String>,
    body_commitment: Option<Vec<u8>>,
}

impl TryFrom<SubmissionRow> for SubmissionRecord {
    type Error = StoreError;
    fn try_from(row: SubmissionRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("submission {} {what}", row.id));
        Ok(SubmissionRecord {
            id: parse_id(&row.id)?,
            tenant: parse_id(&row.tenant_id)?,
            grant: parse_id(&row.grant_id)?,
            lease: parse_id(&row.lease_id)?,
            received_at: micros::from_micros(row.received_at),
            body_sha256: row
                .body_sha256
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("body_sha256"))?,
            body_commitment: row
                .body_commitment
                .map(|c| {
                    c.as_slice()
                        .try_into()
                        .map_err(|_| corrupt("body_commitment"))
                })
                .transpose()?,
            body: row.body,
            creates: u32::try_from(row.creates).map_err(|_| corrupt("creates"))?,
            idempotency_key: row.idempotency_key,
        })
    }
}
