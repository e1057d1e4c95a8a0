//! The audit log's index by grant, deferred on SQLite.
//!
//! A B-tree index on `audit_events (grant_id, seq)` puts each event of a different grant on a
//! different leaf page, so a group commit of *n* `payload.read` events wrote about *n* index pages
//! to the WAL: most of the cost of a lease read. On SQLite the serving process instead indexes
//! events by grant in the background ([`Store::index_audit`], every [`INDEX_EVERY`]). It reads the
//! events after the watermark `upto`, sorts them by grant so that one leaf page takes many
//! entries, inserts them in short write transactions (the writer is never held for long), then
//! moves the watermark.
//!
//! A grant's history ([`grant_events`]) is the indexed events up to the watermark plus every
//! event after it, found by `seq` (a range scan of the last second or so): no event is missed or
//! doubled whatever the indexer is doing.
//!
//! Invariant: every event with a grant and `seq <= upto` is in `audit_grant_index`. Entries past
//! the watermark (a pass cut off half-way) are ignored by readers and inserted again, harmlessly,
//! by the next pass. Without a server nothing indexes; a history then scans the events since the
//! server stopped.
//!
//! PostgreSQL keeps the plain index: several instances share the database and none owns it.

use std::time::Duration;

use diesel::prelude::*;

use linklease_grant::GrantId;

use crate::audit::{AuditKind, Event};
use crate::schema::{audit_events, audit_grant_index, audit_grant_index_state};
use crate::{Backend, DbConn, Store, StoreError};

/// How often a serving process indexes the events appended since its last pass.
pub(crate) const INDEX_EVERY: Duration = Duration::from_secs(1);
/// Most events one pass reads (a larger backlog takes several passes, back to back).
const PASS_LIMIT: usize = 100_000;
/// Index entries per write transaction: short enough not to hold other writers up.
const CHUNK: usize = 512;

/// Every event of `grant` (only those of `kind` if given), oldest first.
pub(crate) fn grant_events(
    conn: &mut DbConn,
    grant: GrantId,
    kind: Option<AuditKind>,
) -> Result<Vec<Event>, StoreError> {
    let id = grant.to_string();
    let of_grant = || {
        let query = audit_events::table
            .filter(audit_events::grant_id.eq(id.clone()))
            .order(audit_events::seq.asc())
            .select(Event::as_select())
            .into_boxed();
        match kind {
            Some(kind) => query.filter(audit_events::kind.eq(kind.as_str())),
            None => query,
        }
    };
    match conn {
        DbConn::Pg(_) => {
            crate::audit_queue::settle(conn)?;
            Ok(of_grant().load(conn)?)
        }
        DbConn::Sqlite(_) => {
            // The watermark first: every event up to it was indexed when it was read, and
            // neither events nor entries are ever removed, so the two parts below are disjoint
            // and together whole, in whatever snapshots they are read.
            let upto = watermark(conn)?;
            let indexed = audit_grant_index::table
                .filter(audit_grant_index::grant_id.eq(id.clone()))
                .filter(audit_grant_index::seq.le(upto))
                .select(audit_grant_index::seq);
            let mut events: Vec<Event> = of_grant()
                .filter(audit_events::seq.eq_any(indexed))
                .load(conn)?;
            events.extend(of_grant().filter(audit_events::seq.gt(upto)).load(conn)?);
            Ok(events)
        }
    }
}

/// The watermark: every event with a grant and `seq` up to it is indexed.
fn watermark(conn: &mut DbConn) -> Result<i64, StoreError> {
    Ok(audit_grant_index_state::table
        .select(audit_grant_index_state::upto)
        .get_result(conn)?)
}

/// Events past the watermark, read for one pass.
struct Unindexed {
    /// The last `seq` read: the watermark once they are indexed.
    last: i64,
    /// How many events were read (with a grant or not).
    read: usize,
    /// `(grant, seq)` of those with a grant, sorted; the grant as a number, which sorts as its
    /// text does (24 bytes an entry, nothing on the heap: a pass holds tens of thousands).
    ids: Vec<(u128, i64)>,
    /// Grant ids stored in another spelling (none are written so), kept as they are.
    odd: Vec<(String, i64)>,
}

/// Events read per query while collecting a pass.
const PAGE: usize = 8192;

fn unindexed(conn: &mut DbConn) -> Result<Option<Unindexed>, StoreError> {
    let upto = watermark(conn)?;
    let mut pass = Unindexed {
        last: upto,
        read: 0,
        ids: Vec::new(),
        odd: Vec::new(),
    };
    // Events commit in `seq` order (one writer), so a later page never holds a lower `seq`.
    while pass.read < PASS_LIMIT {
        let rows: Vec<(i64, Option<String>)> = audit_events::table
            .filter(audit_events::seq.gt(pass.last))
            .order(audit_events::seq.asc())
            .limit(PAGE as i64)
            .select((audit_events::seq, audit_events::grant_id))
            .load(conn)?;
        let Some(&(last, _)) = rows.last() else {
            break;
        };
        let full = rows.len() == PAGE;
        pass.last = last;
        pass.read += rows.len();
        for (seq, grant) in rows {
            match grant.as_deref().map(as_number) {
                None => {}
                Some(Some(id)) => pass.ids.push((id, seq)),
                Some(None) => pass.odd.extend(grant.map(|g| (g, seq))),
            }
        }
        if !full {
            break;
        }
    }
    if pass.read == 0 {
        return Ok(None);
    }
    pass.ids.sort_unstable();
    pass.odd.sort_unstable();
    Ok(Some(pass))
}

/// The id as a number, if it is spelt as a grant id is written (hyphenated, lower case).
fn as_number(text: &str) -> Option<u128> {
    let id = uuid::Uuid::try_parse(text).ok()?;
    let mut spelt = [0; uuid::fmt::Hyphenated::LENGTH];
    (id.hyphenated().encode_lower(&mut spelt) == text).then_some(id.as_u128())
}

fn insert(conn: &mut DbConn, grant: &str, seq: i64) -> Result<(), StoreError> {
    let DbConn::Sqlite(c) = conn else {
        return Err(StoreError::Internal(
            "the deferred index is SQLite's".into(),
        ));
    };
    diesel::insert_or_ignore_into(audit_grant_index::table)
        .values((
            audit_grant_index::grant_id.eq(grant),
            audit_grant_index::seq.eq(seq),
        ))
        .execute(c)?;
    Ok(())
}

/// Moves the watermark to `last` (never back: two passes may overlap).
fn advance(conn: &mut DbConn, last: i64) -> Result<(), StoreError> {
    diesel::update(audit_grant_index_state::table.filter(audit_grant_index_state::upto.lt(last)))
        .set(audit_grant_index_state::upto.eq(last))
        .execute(conn)?;
    Ok(())
}

impl Store {
    /// Indexes by grant the audit events appended since the last pass (SQLite; nothing to do on
    /// PostgreSQL). Returns how many events the watermark moved past. The server runs it every
    /// second; it changes no lease or grant fact.
    pub fn index_audit(&self) -> Result<usize, StoreError> {
        if !matches!(self.backend, Backend::Sqlite(_)) {
            return Ok(0);
        }
        let mut moved = 0;
        loop {
            let Some(pass) = self.read(unindexed)? else {
                return Ok(moved);
            };
            for chunk in pass.ids.chunks(CHUNK) {
                self.transact(|c| {
                    let mut spelt = [0; uuid::fmt::Hyphenated::LENGTH];
                    for &(id, seq) in chunk {
                        let grant = uuid::Uuid::from_u128(id).hyphenated();
                        insert(c, grant.encode_lower(&mut spelt), seq)?;
                    }
                    Ok(())
                })?;
            }
            for chunk in pass.odd.chunks(CHUNK) {
                self.transact(|c| {
                    chunk
                        .iter()
                        .try_for_each(|(grant, seq)| insert(c, grant, *seq))
                })?;
            }
            self.transact(|c| advance(c, pass.last))?;
            moved += pass.read;
            if pass.read < PASS_LIMIT {
                return Ok(moved);
            }
        }
    }

    /// Runs [`Store::index_audit`] every [`INDEX_EVERY`] on a thread of its own while this
    /// process serves the SQLite file (`keep_going` turns false when it stops).
    pub(crate) fn start_audit_indexer(
        &self,
        keep_going: impl Fn() -> bool + Send + 'static,
    ) -> Result<(), StoreError> {
        let store = self.clone();
        std::thread::Builder::new()
            .name("linklease-audit-index".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(INDEX_EVERY);
                    if !keep_going() {
                        break;
                    }
                    if let Err(e) = store.index_audit() {
                        log::warn!("indexing audit events by grant failed: {e}");
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::as_number;

    #[test]
    fn only_the_written_spelling_becomes_a_number() {
        let text = "0194f3c2-7a1b-7c3d-8e4f-a0b1c2d3e4f5";
        let id = as_number(text);
        assert_eq!(id, Some(0x0194f3c2_7a1b_7c3d_8e4f_a0b1c2d3e4f5));
        assert_eq!(as_number(&text.to_uppercase()), None);
        assert_eq!(as_number(&text.replace('-', "")), None);
        assert_eq!(as_number("not a grant"), None);
        // Numbers sort as the text does, which is what gives the inserts their locality.
        let lower = "0194f3c2-7a1b-7c3d-8e4f-a0b1c2d3e4f4";
        assert!(as_number(lower) < id && lower < text);
    }
}
