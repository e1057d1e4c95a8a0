//! Audit events: recorded in the same transaction as the change they record, so a change that
//! cannot be recorded does not happen, and chained: each event hashes its fields and the previous
//! event of its tenant's chain (`linklease_audit`). On PostgreSQL an event takes its place in the
//! chain moments after the commit (`audit_queue`). See `docs/AUDIT.md`.

use diesel::prelude::*;
use serde::Serialize;
use time::OffsetDateTime;

use linklease_grant::{GrantId, LeaseId, TenantId, micros};

use linklease_audit::{
    ChainVerifier, EventRecord, GENESIS, Head, PublicKey, SYSTEM_CHAIN, Tamper, event_hash,
};

use crate::schema::{audit_events, audit_heads, audit_queue};
use crate::{DbConn, StoreError};

/// What happened. The names are the stable strings of the product contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AuditKind {
    TenantCreated,
    UseCompleted,
    GrantCreated,
    GrantRevoked,
    GrantLocked,
    GrantUsed,
    LinkVisited,
    FactorPassed,
    FactorFailed,
    OtpSent,
    OtpFailedToSend,
    OtpPassed,
    OtpFailed,
    LeaseIssued,
    LeaseRefreshed,
    LeaseEnded,
    PayloadRead,
    SubmissionAccepted,
    SubmissionRejected,
    ApiKeyCreated,
    ApiKeyRevoked,
    ClientCreated,
    ClientRevoked,
    KeysRotated,
    PayloadPurged,
}

impl AuditKind {
    /// The stable name (`grant.created`, …).
    pub fn as_str(self) -> &'static str {
        use AuditKind::*;
        match self {
            TenantCreated => "tenant.created",
            UseCompleted => "use.completed",
            GrantCreated => "grant.created",
            GrantRevoked => "grant.revoked",
            GrantLocked => "grant.locked",
            GrantUsed => "grant.used",
            LinkVisited => "link.visited",
            FactorPassed => "factor.passed",
            FactorFailed => "factor.failed",
            OtpSent => "otp.sent",
            OtpFailedToSend => "otp.failed_to_send",
            OtpPassed => "otp.passed",
            OtpFailed => "otp.failed",
            LeaseIssued => "lease.issued",
            LeaseRefreshed => "lease.refreshed",
            LeaseEnded => "lease.ended",
            PayloadRead => "payload.read",
            SubmissionAccepted => "submission.accepted",
            SubmissionRejected => "submission.rejected",
            ApiKeyCreated => "apikey.created",
            ApiKeyRevoked => "apikey.revoked",
            ClientCreated => "client.created",
            ClientRevoked => "client.revoked",
            KeysRotated => "keys.rotated",
            PayloadPurged => "payload.purged",
        }
    }
}

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// `operator`, `apikey`, `client`, `visitor`, `lease` or `system`.
    pub kind: &'static str,
    /// The API key, client or lease id, where there is one.
    pub id: Option<String>,
    /// The client address, where the act came over the network.
    pub ip: Option<String>,
    /// The client's user agent, where it sent one.
    pub user_agent: Option<String>,
}

impl Actor {
    /// The operator at the console (CLI).
    pub fn operator() -> Self {
        Self {
            kind: "operator",
            id: None,
            ip: None,
            user_agent: None,
        }
    }

    /// The broker itself (for example a supersede or a lock it decides).
    pub fn system() -> Self {
        Self {
            kind: "system",
            ..Self::operator()
        }
    }
}

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// When.
    pub at: OffsetDateTime,
    /// Whose.
    pub tenant: Option<TenantId>,
    /// About which grant.
    pub grant: Option<GrantId>,
    /// About which lease.
    pub lease: Option<LeaseId>,
    /// What.
    pub kind: AuditKind,
    /// Who.
    pub actor: Actor,
    /// Facts worth keeping; never a secret.
    pub detail: serde_json::Value,
}

/// An event's fields as stored, before it takes its place in a chain: what PostgreSQL's queue
/// holds (see `audit_queue`).
#[derive(Clone, Debug, Insertable, Queryable, Selectable)]
#[diesel(table_name = audit_queue, treat_none_as_default_value = false)]
pub(crate) struct Unchained {
    /// The tenant id, or `system`.
    pub(crate) chain: String,
    at: i64,
    tenant_id: Option<String>,
    grant_id: Option<String>,
    lease_id: Option<String>,
    kind: String,
    actor_kind: String,
    actor_id: Option<String>,
    actor_ip: Option<String>,
    actor_user_agent: Option<String>,
    detail: String,
}

impl Unchained {
    fn of(event: &NewEvent) -> Self {
        Self {
            chain: event
                .tenant
                .map_or_else(|| SYSTEM_CHAIN.to_owned(), |t| t.to_string()),
            at: micros::to_micros(event.at),
            tenant_id: event.tenant.map(|t| t.to_string()),
            grant_id: event.grant.map(|g| g.to_string()),
            lease_id: event.lease.map(|l| l.to_string()),
            kind: event.kind.as_str().to_owned(),
            actor_kind: event.actor.kind.to_owned(),
            actor_id: event.actor.id.clone(),
            actor_ip: event.actor.ip.clone(),
            actor_user_agent: event.actor.user_agent.clone(),
            detail: event.detail.to_string(),
        }
    }

    /// The event at position `chain_seq` of its chain, after `prev`, with its hash.
    fn chained(&self, chain_seq: i64, prev: &[u8; 32]) -> EventRow<'_> {
        let hash = event_hash(
            &self.chain,
            chain_seq,
            self.at,
            [
                self.tenant_id.as_deref(),
                self.grant_id.as_deref(),
                self.lease_id.as_deref(),
            ],
            &self.kind,
            [
                Some(self.actor_kind.as_str()),
                self.actor_id.as_deref(),
                self.actor_ip.as_deref(),
                self.actor_user_agent.as_deref(),
            ],
            &self.detail,
            prev,
        );
        EventRow {
            at: self.at,
            tenant_id: self.tenant_id.as_deref(),
            grant_id: self.grant_id.as_deref(),
            lease_id: self.lease_id.as_deref(),
            kind: &self.kind,
            actor_kind: &self.actor_kind,
            actor_id: self.actor_id.as_deref(),
            actor_ip: self.actor_ip.as_deref(),
            actor_user_agent: self.actor_user_agent.as_deref(),
            detail: &self.detail,
            chain: &self.chain,
            chain_seq,
            prev_hash: prev.to_vec(),
            hash: hash.to_vec(),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
struct EventRow<'a> {
    at: i64,
    tenant_id: Option<&'a str>,
    grant_id: Option<&'a str>,
    lease_id: Option<&'a str>,
    kind: &'a str,
    actor_kind: &'a str,
    actor_id: Option<&'a str>,
    actor_ip: Option<&'a str>,
    actor_user_agent: Option<&'a str>,
    detail: &'a str,
    chain: &'a str,
    chain_seq: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// Creates the (empty) chain of a new tenant. Call in the tenant's creating transaction.
pub(crate) fn start_chain(conn: &mut DbConn, chain: &str) -> Result<(), StoreError> {
    diesel::insert_into(audit_heads::table)
        .values((
            audit_heads::chain.eq(chain),
            audit_heads::chain_seq.eq(0),
            audit_heads::hash.eq(&GENESIS[..]),
        ))
        .execute(conn)?;
    Ok(())
}

/// Appends events in the caller's transaction. SQLite: to their chains at once, taking each
/// chain's head once (the same chain, hash for hash, as appending them one by one in this order).
/// PostgreSQL: to the queue, whose events take their places in their chains moments later (see
/// `audit_queue`), so that a tenant's transactions do not queue on its chain's head.
pub fn append_all(conn: &mut DbConn, events: &[NewEvent]) -> Result<(), StoreError> {
    let rows: Vec<Unchained> = events.iter().map(Unchained::of).collect();
    match conn {
        DbConn::Pg(_) => crate::audit_queue::enqueue(conn, &rows),
        DbConn::Sqlite(_) => {
            let mut by_chain: Vec<(&str, Vec<&Unchained>)> = Vec::new();
            for row in &rows {
                match by_chain.iter_mut().find(|(c, _)| *c == row.chain) {
                    Some((_, list)) => list.push(row),
                    None => by_chain.push((&row.chain, vec![row])),
                }
            }
            for (chain, list) in by_chain {
                let head = lock_head(conn, chain)?;
                extend_chain(conn, chain, head, &list)?;
            }
            Ok(())
        }
    }
}

/// Appends `events` (all of `chain`, in order) after the chain's locked `head` and moves the
/// head past them.
pub(crate) fn extend_chain(
    conn: &mut DbConn,
    chain: &str,
    (mut seq, head_hash): (i64, Vec<u8>),
    events: &[&Unchained],
) -> Result<(), StoreError> {
    let mut prev: [u8; 32] = head_hash
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("audit head of {chain}")))?;
    let rows: Vec<EventRow<'_>> = events
        .iter()
        .map(|event| {
            seq += 1;
            let row = event.chained(seq, &prev);
            prev.copy_from_slice(&row.hash);
            row
        })
        .collect();
    insert_rows!(conn, audit_events::table, rows);
    set_head(conn, chain, seq, &prev)
}

/// The chain's head position and hash, locked for the rest of the transaction (created if the
/// chain has none yet). PostgreSQL: `SELECT … FOR UPDATE` takes the row lock. SQLite: the one
/// writer already holds the database's write lock, so a plain read will do, and unlike an
/// `UPDATE` (which diesel never caches) its prepared statement is reused.
pub(crate) fn lock_head(conn: &mut DbConn, chain: &str) -> Result<(i64, Vec<u8>), StoreError> {
    let head = audit_heads::table.filter(audit_heads::chain.eq(chain));
    let columns = (audit_heads::chain_seq, audit_heads::hash);
    let found = match conn {
        DbConn::Pg(pg) => head
            .select(columns)
            .for_update()
            .get_result(pg)
            .optional()?,
        DbConn::Sqlite(_) => head.select(columns).get_result(conn).optional()?,
    };
    match found {
        Some(found) => Ok(found),
        None => {
            start_chain(conn, chain)?;
            Ok(head.select(columns).get_result(conn)?)
        }
    }
}

/// Moves the chain's head. SQLite replaces the row: the statement is cached, unlike an
/// `UPDATE`'s (nothing refers to a head row, so replacing it is the same as updating it).
fn set_head(conn: &mut DbConn, chain: &str, seq: i64, hash: &[u8; 32]) -> Result<(), StoreError> {
    let values = (
        audit_heads::chain.eq(chain),
        audit_heads::chain_seq.eq(seq),
        audit_heads::hash.eq(&hash[..]),
    );
    match conn {
        DbConn::Sqlite(c) => diesel::replace_into(audit_heads::table)
            .values(values)
            .execute(c)?,
        DbConn::Pg(c) => diesel::update(audit_heads::table.filter(audit_heads::chain.eq(chain)))
            .set(values)
            .execute(c)?,
    };
    Ok(())
}

thread_local! {
    /// Events of the write transaction running on this thread, appended just before it commits.
    static PENDING: std::cell::RefCell<Option<Vec<NewEvent>>> =
        const { std::cell::RefCell::new(None) };
}

/// Collects the events of a write transaction on this thread while it lives (see
/// [`crate::Store::write`]); dropping it, even in a panic, stops collecting.
pub(crate) struct Collecting;

impl Collecting {
    /// Starts collecting.
    pub(crate) fn start() -> Self {
        PENDING.with(|p| *p.borrow_mut() = Some(Vec::new()));
        Collecting
    }

    /// The events collected so far; collecting stops.
    pub(crate) fn finish(self) -> Vec<NewEvent> {
        PENDING.with(|p| p.borrow_mut().take().unwrap_or_default())
    }
}

impl Drop for Collecting {
    fn drop(&mut self) {
        PENDING.with(|p| p.borrow_mut().take());
    }
}

/// Appends `event` to its tenant's chain (or the system chain), in the transaction that makes
/// the change. Inside [`crate::Store::write`] the event is appended when the transaction is
/// about to commit: the chain's head row is locked only then, as the transaction's last lock, so
/// appends to one chain hold each other up only for that moment and never wait in a lock cycle
/// with the rows the change itself touches. Elsewhere it is appended at once.
pub fn append(conn: &mut DbConn, event: &NewEvent) -> Result<(), StoreError> {
    let collected = PENDING.with(|p| match p.borrow_mut().as_mut() {
        Some(pending) => {
            pending.push(event.clone());
            true
        }
        None => false,
    });
    if collected {
        Ok(())
    } else {
        append_all(conn, std::slice::from_ref(event))
    }
}

/// A stored event, as read back.
#[derive(Clone, Debug, PartialEq, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct Event {
    /// Position in the log.
    pub seq: i64,
    /// Microseconds since the epoch.
    pub at: i64,
    /// Tenant id.
    pub tenant_id: Option<String>,
    /// Grant id.
    pub grant_id: Option<String>,
    /// Lease id.
    pub lease_id: Option<String>,
    /// The stable kind name.
    pub kind: String,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor address.
    pub actor_ip: Option<String>,
    /// Actor user agent.
    pub actor_user_agent: Option<String>,
    /// JSON detail.
    pub detail: String,
    /// Hash of the previous event of the chain.
    pub prev_hash: Option<Vec<u8>>,
    /// This event's hash.
    pub hash: Option<Vec<u8>>,
    /// The chain (tenant id or `system`); `None` for events older than the chain.
    pub chain: Option<String>,
    /// Position in the chain.
    pub chain_seq: Option<i64>,
}

impl Event {
    /// The event as the audit domain sees it; `None` for events older than the chain, and for
    /// rows whose chain fields were mangled (verification then fails on the link).
    pub fn record(&self) -> Option<EventRecord> {
        Some(EventRecord {
            seq: self.seq,
            chain: self.chain.clone()?,
            chain_seq: self.chain_seq?,
            at: self.at,
            tenant: self.tenant_id.clone(),
            grant: self.grant_id.clone(),
            lease: self.lease_id.clone(),
            kind: self.kind.clone(),
            actor_kind: self.actor_kind.clone(),
            actor_id: self.actor_id.clone(),
            actor_ip: self.actor_ip.clone(),
            actor_user_agent: self.actor_user_agent.clone(),
            detail: self.detail.clone(),
            prev_hash: self.prev_hash.as_deref()?.try_into().ok()?,
            hash: self.hash.as_deref()?.try_into().ok()?,
        })
    }
}

/// Every event of one grant and of its leases, oldest first.
pub fn for_grant(conn: &mut DbConn, grant: GrantId) -> Result<Vec<Event>, StoreError> {
    crate::audit_index::grant_events(conn, grant, None)
}

/// Every event, oldest first (operators and tests; the auditor API pages through [`page`]).
pub fn all(conn: &mut DbConn) -> Result<Vec<Event>, StoreError> {
    crate::audit_queue::settle(conn)?;
    Ok(audit_events::table
        .order(audit_events::seq.asc())
        .select(Event::as_select())
        .load(conn)?)
}

/// Up to `limit` events after `after` (a `seq`), oldest first: of one tenant, or of every chain.
pub fn page(
    conn: &mut DbConn,
    tenant: Option<TenantId>,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    crate::audit_queue::settle(conn)?;
    chained_page(conn, tenant, after, limit)
}

/// [`page`] of what is chained already (the caller settled the queue).
fn chained_page(
    conn: &mut DbConn,
    tenant: Option<TenantId>,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let mut query = audit_events::table
        .filter(audit_events::seq.gt(after))
        .order(audit_events::seq.asc())
        .limit(limit)
        .select(Event::as_select())
        .into_boxed();
    if let Some(tenant) = tenant {
        query = query.filter(audit_events::tenant_id.eq(tenant.to_string()));
    }
    Ok(query.load(conn)?)
}

/// Events of one tenant (or all) with `from <= at < to` (microseconds), oldest first, and each
/// chain's head just before the first of them: what an export bundle holds.
pub fn window(
    conn: &mut DbConn,
    tenant: Option<TenantId>,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<(Vec<Head>, Vec<EventRecord>), StoreError> {
    crate::audit_queue::settle(conn)?;
    // Chains in scope: the tenant's, or every chain.
    let chains: Vec<String> = match tenant {
        Some(t) => vec![t.to_string()],
        None => chained_heads(conn)?.into_iter().map(|h| h.chain).collect(),
    };
    // Each chain's window is a contiguous run of positions, from its first event at or after
    // `from` to its last event before `to`: `at` need not rise strictly along a chain (clocks
    // of instances differ), and a window by time alone could leave a hole in the chain.
    let mut events: Vec<EventRecord> = Vec::new();
    for chain in chains {
        let in_chain = audit_events::table.filter(audit_events::chain.eq(&chain));
        let lo: Option<i64> = match from {
            Some(from) => in_chain
                .filter(audit_events::at.ge(from))
                .select(diesel::dsl::min(audit_events::chain_seq))
                .get_result(conn)?,
            None => Some(1),
        };
        let hi: Option<i64> = match to {
            Some(to) => in_chain
                .filter(audit_events::at.lt(to))
                .select(diesel::dsl::max(audit_events::chain_seq))
                .get_result(conn)?,
            None => Some(i64::MAX),
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        let rows: Vec<Event> = in_chain
            .filter(audit_events::chain_seq.between(lo, hi))
            .order(audit_events::chain_seq.asc())
            .select(Event::as_select())
            .load(conn)?;
        for e in &rows {
            events.push(e.record().ok_or_else(|| {
                StoreError::Corrupt(format!("audit event {} chain fields", e.seq))
            })?);
        }
    }
    events.sort_by_key(|e| e.seq);
    let mut starts: Vec<Head> = Vec::new();
    for e in &events {
        if !starts.iter().any(|h| h.chain == e.chain) {
            starts.push(Head {
                chain: e.chain.clone(),
                chain_seq: e.chain_seq - 1,
                hash: e.prev_hash,
            });
        }
    }
    Ok((starts, events))
}

/// The recorded head of every chain.
pub fn heads(conn: &mut DbConn) -> Result<Vec<Head>, StoreError> {
    crate::audit_queue::settle(conn)?;
    chained_heads(conn)
}

/// [`heads`] as they stand (the caller settled the queue).
fn chained_heads(conn: &mut DbConn) -> Result<Vec<Head>, StoreError> {
    let rows: Vec<(String, i64, Vec<u8>)> = audit_heads::table
        .select((
            audit_heads::chain,
            audit_heads::chain_seq,
            audit_heads::hash,
        ))
        .order(audit_heads::chain.asc())
        .load(conn)?;
    rows.into_iter()
        .map(|(chain, chain_seq, hash)| {
            let hash = hash
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("audit head of {chain}")))?;
            Ok(Head {
                chain,
                chain_seq,
                hash,
            })
        })
        .collect()
}

/// What a full verification found.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    /// Chained events checked.
    pub events: u64,
    /// Events older than the chain (not covered).
    pub unchained: u64,
    /// Chains.
    pub chains: usize,
    /// Signed checkpoints checked.
    pub checkpoints: usize,
}

/// How many events verification reads per query.
const VERIFY_BATCH: i64 = 20_000;

/// Verifies the whole log: every event's hash and link in log order, every chain against its
/// recorded head, and every signed checkpoint (signature by one of `keys`, and the event it
/// pins). `Ok(Err(tamper))` names the first bad event.
pub fn verify(conn: &mut DbConn, keys: &[PublicKey]) -> Result<Result<Report, Tamper>, StoreError> {
    crate::audit_queue::settle(conn)?;
    let mut verifier = ChainVerifier::new();
    let checkpoints = crate::audit_keys::checkpoints(conn)?;
    for checkpoint in &checkpoints {
        if !checkpoint.verify(keys) {
            return Ok(Err(Tamper::HeadMismatch {
                chain: checkpoint.head.chain.clone(),
                chain_seq: checkpoint.head.chain_seq,
            }));
        }
        verifier.pin(checkpoint.head.clone());
    }
    let mut after = i64::MIN;
    let mut unchained = 0;
    loop {
        let batch = chained_page(conn, None, after, VERIFY_BATCH)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for event in &batch {
            match event.record() {
                Some(record) => {
                    if let Err(tamper) = verifier.push(&record) {
                        return Ok(Err(tamper));
                    }
                }
                // Events older than the chain all come before the first chained one; an
                // unchained row after it is an insertion dressed up as a legacy event.
                None if event.chain.is_none() && event.hash.is_none() && verifier.count() == 0 => {
                    unchained += 1
                }
                None => return Ok(Err(Tamper::Edited { seq: event.seq })),
            }
        }
    }
    let heads = chained_heads(conn)?;
    if let Err(tamper) = verifier.finish(&heads) {
        return Ok(Err(tamper));
    }
    Ok(Ok(Report {
        events: verifier.count(),
        unchained,
        chains: heads.len(),
        checkpoints: checkpoints.len(),
    }))
}
