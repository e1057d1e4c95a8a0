//! Leases as stored: issued once, extended by refresh, ended once.

use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Text};
use time::OffsetDateTime;

use linklease_grant::{ClientId, FlowId, GrantId, LeaseId, TenantId, micros};

use linklease_grant::GrantState;

use crate::grants::StateRow;
use crate::schema::{clients, grant_state, leases};
use crate::{DbConn, StoreError, parse_id};

/// A lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Its id (the token's `jti`).
    pub id: LeaseId,
    /// The grant's tenant.
    pub tenant: TenantId,
    /// The grant (the token's `sub`).
    pub grant: GrantId,
    /// The flow that issued it.
    pub flow: FlowId,
    /// The partner client that exchanged it, or `None` for a browser.
    pub client: Option<ClientId>,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
    /// When it expires (moved by refresh).
    pub expires_at: OffsetDateTime,
    /// When it ended early (logout, `DELETE /v1/lease`, the grant's last use).
    pub ended_at: Option<OffsetDateTime>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// The address it was issued to.
    pub ip: Option<String>,
    /// The user agent it was issued to.
    pub user_agent: Option<String>,
}

impl LeaseRecord {
    /// Whether it still authorizes anything at `now` (the grant's status is checked apart).
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }
}

/// Stores a new lease. Call inside the transaction that finishes its flow.
pub fn insert(conn: &mut DbConn, lease: &LeaseRecord) -> Result<(), StoreError> {
    diesel::insert_into(leases::table)
        .values((
            leases::id.eq(lease.id.to_string()),
            leases::tenant_id.eq(lease.tenant.to_string()),
            leases::grant_id.eq(lease.grant.to_string()),
            leases::flow_id.eq(lease.flow.to_string()),
            leases::client_id.eq(lease.client.map(|c| c.to_string())),
            leases::issued_at.eq(micros::to_micros(lease.issued_at)),
            leases::expires_at.eq(micros::to_micros(lease.expires_at)),
            leases::ip.eq(&lease.ip),
            leases::user_agent.eq(&lease.user_agent),
        ))
        .execute(conn)?;
    Ok(())
}

/// The lease `id`.
pub fn get(conn: &mut DbConn, id: LeaseId) -> Result<LeaseRecord, StoreError> {
    leases::table
        .find(id.to_string())
        .select(LeaseRow::as_select())
        .get_result(conn)?
        .try_into()
}

/// Moves the expiry of a live lease; `false` if it has ended meanwhile.
pub fn extend(
    conn: &mut DbConn,
    id: LeaseId,
    expires_at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        leases::table
            .filter(leases::id.eq(id.to_string()))
            .filter(leases::ended_at.is_null()),
    )
    .set(leases::expires_at.eq(micros::to_micros(expires_at)))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Ends a lease; `false` if it had already ended (the first end stays).
pub fn end(
    conn: &mut DbConn,
    id: LeaseId,
    reason: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let changed = EndLease {
        id: id.to_string(),
        ended_at: micros::to_micros(now),
        reason,
    }
    .execute(conn)?;
    Ok(changed == 1)
}

/// [`end`] as a statement whose SQL never changes, which diesel keeps prepared (it prepares an
/// `UPDATE` built with its query builder afresh every time; the last use of every grant ends
/// its lease).
struct EndLease<'a> {
    id: String,
    ended_at: i64,
    reason: &'a str,
}

impl<DB> QueryFragment<DB> for EndLease<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<BigInt>,
    String: ToSql<Text, DB>,
    str: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE leases SET ended_at = ");
        out.push_bind_param::<BigInt, _>(&self.ended_at)?;
        out.push_sql(", end_reason = ");
        out.push_bind_param::<Text, _>(self.reason)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, _>(&self.id)?;
        out.push_sql(" AND ended_at IS NULL");
        Ok(())
    }
}

impl QueryId for EndLease<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Conn> RunQueryDsl<Conn> for EndLease<'_> {}

#[derive(Queryable, Selectable)]
#[diesel(table_name = leases)]
struct LeaseRow {
    id: String,
    tenant_id: String,
    grant_id: String,
    flow_id: String,
    client_id: Option<String>,
    issued_at: i64,
    expires_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl TryFrom<LeaseRow> for LeaseRecord {
    type Error = StoreError;
    fn try_from(row: LeaseRow) -> Result<Self, StoreError> {
        Ok(LeaseRecord {
            id: parse_id(&row.id)?,
            tenant: parse_id(&row.tenant_id)?,
            grant: parse_id(&row.grant_id)?,
            flow: parse_id(&row.flow_id)?,
            client: row.client_id.as_deref().map(parse_id).transpose()?,
            issued_at: micros::from_micros(row.issued_at),
            expires_at: micros::from_micros(row.expires_at),
            ended_at: row.ended_at.map(micros::from_micros),
            end_reason: row.end_reason,
            ip: row.ip,
            user_agent: row.user_agent,
        })
    }
}

/// What can change about a lease and its grant, read in one query for every lease request:
/// the lease's expiry and end, the grant's state, and the partner client's revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFacts {
    /// The lease's grant.
    pub grant: GrantId,
    /// The lease's expiry (moved by refresh).
    pub expires_at: OffsetDateTime,
    /// When the lease ended, if it did.
    pub ended_at: Option<OffsetDateTime>,
    /// The grant's mutable facts.
    pub state: GrantState,
    /// For a partner's lease: whether its client is revoked.
    pub client_revoked: bool,
}

type FactsRow = (String, i64, Option<i64>, StateRow, Option<i64>);

/// The mutable facts of those of the leases `ids` that exist, in no particular order (one
/// query, whatever the number: the group read of many requests).
pub fn facts_of(
    conn: &mut DbConn,
    ids: &[LeaseId],
) -> Result<Vec<(LeaseId, LeaseFacts)>, StoreError> {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows: Vec<(String, FactsRow)> = leases::table
        .inner_join(grant_state::table.on(grant_state::grant_id.eq(leases::grant_id)))
        .left_join(clients::table.on(clients::id.nullable().eq(leases::client_id)))
        .filter(leases::id.eq_any(&ids))
        .select((
            leases::id,
            (
                leases::grant_id,
                leases::expires_at,
                leases::ended_at,
                StateRow::as_select(),
                clients::revoked_at.nullable(),
            ),
        ))
        .load(conn)?;
    rows.into_iter()
        .map(
            |(id, (grant, expires_at, ended_at, state, client_revoked_at))| {
                let facts = LeaseFacts {
                    grant: parse_id(&grant)?,
                    expires_at: micros::from_micros(expires_at),
                    ended_at: ended_at.map(micros::from_micros),
                    state: state.try_into()?,
                    client_revoked: client_revoked_at.is_some(),
                };
                Ok((parse_id(&id)?, facts))
            },
        )
        .collect()
}
