//! Flows as stored. Every change is a compare-and-set on `version`: of two requests (on one or
//! several instances) advancing the same flow, one wins and the other gets `Conflict`.

use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, HasSqlType, Integer, Nullable, Text};

use diesel::dsl::{count_star, min, sum};
use linklease_grant::{FlowId, GrantId, SecretHash, micros};
use linklease_lease::{Flow, Holder, SentOtp, Step};
use time::OffsetDateTime;

use crate::schema::{flows, leases};
use crate::{DbConn, StoreError, parse_id};

/// A flow and the version it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFlow {
    /// The flow.
    pub flow: Flow,
    /// Pass back to [`save`].
    pub version: i32,
}

/// Stores a new flow; a browser flow carries the keyed hash of its cookie secret.
pub fn insert(
    conn: &mut DbConn,
    flow: &Flow,
    cookie_hash: Option<&SecretHash>,
) -> Result<(), StoreError> {
    insert_at(conn, flow, cookie_hash, 0)
}

/// Stores a new flow at `version`: a flow opened and stepped in one transaction is stored as
/// [`insert`] then [`save`] would leave it, in one statement.
pub fn insert_at(
    conn: &mut DbConn,
    flow: &Flow,
    cookie_hash: Option<&SecretHash>,
    version: i32,
) -> Result<(), StoreError> {
    let row = FlowRow::from_flow(flow, version);
    diesel::insert_into(flows::table)
        .values((
            flows::id.eq(&row.id),
            flows::grant_id.eq(&row.grant_id),
            flows::client_id.eq(&row.client_id),
            flows::cookie_hash.eq(cookie_hash.map(|h| h.0.to_vec())),
            flows::created_at.eq(row.created_at),
            flows::expires_at.eq(row.expires_at),
            flows::step.eq(&row.step),
            flows::sends.eq(row.sends),
            flows::otp_send.eq(row.otp_send),
            flows::otp_hash.eq(&row.otp_hash),
            flows::otp_sent_at.eq(row.otp_sent_at),
            flows::otp_expires_at.eq(row.otp_expires_at),
            flows::otp_tries.eq(row.otp_tries),
            flows::version.eq(version),
        ))
        .execute(conn)?;
    Ok(())
}

/// The flow `id`.
pub fn get(conn: &mut DbConn, id: FlowId) -> Result<StoredFlow, StoreError> {
    flows::table
        .find(id.to_string())
        .select(FlowRow::as_select())
        .get_result(conn)?
        .try_into()
}

/// The flow whose cookie secret has this keyed hash.
pub fn by_cookie(conn: &mut DbConn, cookie_hash: &SecretHash) -> Result<StoredFlow, StoreError> {
    flows::table
        .filter(flows::cookie_hash.eq(&cookie_hash.0[..]))
        .select(FlowRow::as_select())
        .get_result(conn)?
        .try_into()
}

/// Stores `flow` if nobody changed it since it was read at `version`; else `Conflict`.
pub fn save(conn: &mut DbConn, flow: &Flow, version: i32) -> Result<(), StoreError> {
    let row = FlowRow::from_flow(flow, version + 1);
    let changed = SaveFlow {
        row: &row,
        from_version: version,
    }
    .execute(conn)?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict("the flow changed meanwhile".into()))
    }
}

/// Flows of `grant` still open at `now` (not expired, dead or leased), and when the first of
/// them expires. Call it under the grant's row lock (`grants::by_token(.., true)` or
/// `grants::lock_state`) so that concurrent visits count each other.
pub fn open_of_grant(
    conn: &mut DbConn,
    grant: GrantId,
    now: OffsetDateTime,
) -> Result<(u32, Option<OffsetDateTime>), StoreError> {
    let (n, first): (i64, Option<i64>) = flows::table
        .filter(flows::grant_id.eq(grant.to_string()))
        .filter(flows::expires_at.gt(micros::to_micros(now)))
        .filter(flows::step.eq_any(Step::OPEN.map(Step::as_str)))
        .select((count_star(), min(flows::expires_at)))
        .get_result(conn)?;
    Ok((
        u32::try_from(n).unwrap_or(u32::MAX),
        first.map(micros::from_micros),
    ))
}

/// Codes sent by the flows of `grant` other than `except` that could have sent one after
/// `since` (those that expire after it), and when the first of those that sent anything
/// expires. Call it under the grant's row lock.
pub fn sends_of_grant_since(
    conn: &mut DbConn,
    grant: GrantId,
    since: OffsetDateTime,
    except: FlowId,
) -> Result<(u32, Option<OffsetDateTime>), StoreError> {
    let (sent, first): (Option<i64>, Option<i64>) = flows::table
        .filter(flows::grant_id.eq(grant.to_string()))
        .filter(flows::expires_at.gt(micros::to_micros(since)))
        .filter(flows::id.ne(except.to_string()))
        .filter(flows::sends.gt(0))
        .select((sum(flows::sends), min(flows::expires_at)))
        .get_result(conn)?;
    Ok((
        sent.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        first.map(micros::from_micros),
    ))
}

/// Deletes up to `limit` flows that expired before `before` and issued no lease (a lease's row
/// names its flow); returns how many. Their `link.visited` and other events stay in the audit
/// log; nothing else refers to them.
pub fn sweep(conn: &mut DbConn, before: OffsetDateTime, limit: u32) -> Result<usize, StoreError> {
    let ids: Vec<String> = flows::table
        .filter(flows::expires_at.lt(micros::to_micros(before)))
        .filter(flows::id.ne_all(leases::table.select(leases::flow_id)))
        .select(flows::id)
        .order(flows::expires_at)
        .limit(i64::from(limit))
        .load(conn)?;
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(flows::table.filter(flows::id.eq_any(&ids))).execute(conn)?)
}

/// The compare-and-set of [`save`] as a statement whose SQL never changes, which diesel keeps
/// prepared: an `UPDATE` built with its query builder is prepared afresh every time (parsed
/// and planned again, a round trip's worth of work on PostgreSQL), and every step of every
/// flow saves the flow.
struct SaveFlow<'a> {
    row: &'a FlowRow,
    from_version: i32,
}

impl<DB> QueryFragment<DB> for SaveFlow<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Integer> + HasSqlType<BigInt> + HasSqlType<Binary>,
    String: ToSql<Text, DB>,
    i32: ToSql<Integer, DB>,
    Option<i32>: ToSql<Nullable<Integer>, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
    Option<Vec<u8>>: ToSql<Nullable<Binary>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let row = self.row;
        out.push_sql("UPDATE flows SET step = ");
        out.push_bind_param::<Text, _>(&row.step)?;
        out.push_sql(", sends = ");
        out.push_bind_param::<Integer, _>(&row.sends)?;
        out.push_sql(", otp_send = ");
        out.push_bind_param::<Nullable<Integer>, _>(&row.otp_send)?;
        out.push_sql(", otp_hash = ");
        out.push_bind_param::<Nullable<Binary>, _>(&row.otp_hash)?;
        out.push_sql(", otp_sent_at = ");
        out.push_bind_param::<Nullable<BigInt>, _>(&row.otp_sent_at)?;
        out.push_sql(", otp_expires_at = ");
        out.push_bind_param::<Nullable<BigInt>, _>(&row.otp_expires_at)?;
        out.push_sql(", otp_tries = ");
        out.push_bind_param::<Nullable<Integer>, _>(&row.otp_tries)?;
        out.push_sql(", version = ");
        out.push_bind_param::<Integer, _>(&row.version)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, _>(&row.id)?;
        out.push_sql(" AND version = ");
        out.push_bind_param::<Integer, _>(&self.from_version)?;
        Ok(())
    }
}

impl QueryId for SaveFlow<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Conn> RunQueryDsl<Conn> for SaveFlow<'_> {}

#[derive(Queryable, Selectable)]
#[diesel(table_name = flows)]
struct FlowRow {
    id: String,
    grant_id: String,
    client_id: Option<String>,
    created_at: i64,
    expires_at: i64,
    step: String,
    sends: i32,
    otp_send: Option<i32>,
    otp_hash: Option<Vec<u8>>,
    otp_sent_at: Option<i64>,
    otp_expires_at: Option<i64>,
    otp_tries: Option<i32>,
    version: i32,
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl FlowRow {
    fn from_flow(flow: &Flow, version: i32) -> Self {
        let otp = flow.otp.as_ref();
        Self {
            id: flow.id.to_string(),
            grant_id: flow.grant.to_string(),
            client_id: match flow.holder {
                Holder::Browser => None,
                Holder::Partner(client) => Some(client.to_string()),
            },
            created_at: micros::to_micros(flow.created_at),
            expires_at: micros::to_micros(flow.expires_at),
            step: flow.step.as_str().to_owned(),
            sends: count(flow.sends),
            otp_send: otp.map(|o| count(o.send)),
            otp_hash: otp.map(|o| o.hash.0.to_vec()),
            otp_sent_at: otp.map(|o| micros::to_micros(o.sent_at)),
            otp_expires_at: otp.map(|o| micros::to_micros(o.expires_at)),
            otp_tries: otp.map(|o| count(o.tries)),
            version,
        }
    }
}

impl TryFrom<FlowRow> for StoredFlow {
    type Error = StoreError;
    fn try_from(row: FlowRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("flow {} {what}", row.id));
        let uint = |n: i32| u32::try_from(n).map_err(|_| corrupt("negative count"));
        let otp = match (
            row.otp_send,
            &row.otp_hash,
            row.otp_sent_at,
            row.otp_expires_at,
            row.otp_tries,
        ) {
            (Some(send), Some(hash), Some(sent_at), Some(expires_at), Some(tries)) => {
                Some(SentOtp {
                    send: uint(send)?,
                    hash: SecretHash::from_slice(hash).ok_or_else(|| corrupt("otp_hash"))?,
                    sent_at: micros::from_micros(sent_at),
                    expires_at: micros::from_micros(expires_at),
                    tries: uint(tries)?,
                })
            }
            (None, None, None, None, None) => None,
            _ => return Err(corrupt("partial otp")),
        };
        Ok(StoredFlow {
            flow: Flow {
                id: parse_id(&row.id)?,
                grant: parse_id(&row.grant_id)?,
                holder: match &row.client_id {
                    None => Holder::Browser,
                    Some(client) => Holder::Partner(parse_id(client)?),
                },
                created_at: micros::from_micros(row.created_at),
                expires_at: micros::from_micros(row.expires_at),
                step: Step::parse(&row.step).ok_or_else(|| corrupt("step"))?,
                sends: uint(row.sends)?,
                otp,
            },
            version: row.version,
        })
    }
}
