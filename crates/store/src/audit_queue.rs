//! PostgreSQL's audit queue: a change's events are committed with the change, then chained.
//!
//! Appending an event to its tenant's chain locks the chain's head row until the transaction
//! commits. Done in every write transaction, that made all of a tenant's writes, on every
//! instance, queue one behind the other on the head row, each holding it through its own commit
//! (a flush of PostgreSQL's WAL): a few hundred transactions a second at most, whatever the
//! number of instances. So on PostgreSQL a transaction only inserts its events into
//! `audit_queue` (no lock; concurrent commits share WAL flushes as usual), and a *chainer* moves
//! them into `audit_events` moments later, in order, chained and hashed:
//!
//! 1. It reads which chains have queued events, then locks those chains' heads in name order
//!    (so two chainers, on two instances, never wait for each other in a cycle).
//! 2. It reads those chains' queued events in queue order, appends them after the heads, deletes
//!    them from the queue and moves the heads, in the same transaction. Another chainer that
//!    waited for the locks reads the queue afterwards (each statement sees what was committed
//!    before it began), so no event is chained twice.
//!
//! Nothing is lost: an event is durable in the queue from the moment its change commits, and
//! leaves it only in the transaction that chains it. Every reader of the log chains what is
//! queued first ([`settle`]), so a history read right after a change shows it. A serving process
//! chains in the background ([`Store::start_audit_chainer`]), woken by its own commits and
//! every [`CHAIN_EVERY`] for other processes'. What changes: an event takes its chain position
//! a few milliseconds after its change commits, not in the same transaction. The chain links
//! events in the order they are chained, and within one transaction in the order they were
//! recorded. See docs/DECISIONS.md.
//!
//! SQLite has one writer, which holds the database's write lock anyway: it appends to the chains
//! in the change's own transaction, and its queue stays empty.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use diesel::prelude::*;

use crate::audit::{self, Unchained};
use crate::schema::audit_queue;
use crate::{DbConn, Store, StoreError};

/// How often a serving process looks for events other processes queued (its own commits wake
/// it at once).
pub(crate) const CHAIN_EVERY: Duration = Duration::from_millis(250);
/// Most events chained in one transaction.
const PASS_LIMIT: i64 = 2_000;

/// Queues `rows` in the caller's transaction (PostgreSQL).
pub(crate) fn enqueue(conn: &mut DbConn, rows: &[Unchained]) -> Result<(), StoreError> {
    insert_rows!(conn, audit_queue::table, rows);
    Ok(())
}

/// Chains every queued event (nothing to do on SQLite). Readers of the log call it first. Call
/// outside a transaction, or inside one that takes no chain head after it. Inside a read-only
/// transaction it does nothing: chain before such a snapshot begins ([`Store::chain_audit`]).
pub(crate) fn settle(conn: &mut DbConn) -> Result<(), StoreError> {
    if matches!(conn, DbConn::Sqlite(_)) {
        return Ok(());
    }
    while chain_queued(conn)? == PASS_LIMIT as usize {}
    Ok(())
}

/// One pass: chains up to [`PASS_LIMIT`] queued events in one transaction. Returns how many.
fn chain_queued(conn: &mut DbConn) -> Result<usize, StoreError> {
    let chains: Vec<String> = audit_queue::table
        .select(audit_queue::chain)
        // Nothing inside a read-only snapshot, which may not write: its caller chains first.
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "current_setting('transaction_read_only') = 'off'",
        ))
        .distinct()
        .order(audit_queue::chain.asc())
        .load(conn)?;
    if chains.is_empty() {
        return Ok(0);
    }
    conn.transaction(|c| {
        let mut heads = Vec::with_capacity(chains.len());
        for chain in &chains {
            heads.push(audit::lock_head(c, chain)?);
        }
        // Only now, under the locks: what another chainer took meanwhile is gone.
        let queued: Vec<(i64, Unchained)> = audit_queue::table
            .filter(audit_queue::chain.eq_any(&chains))
            .order(audit_queue::id.asc())
            .limit(PASS_LIMIT)
            .select((audit_queue::id, Unchained::as_select()))
            .load(c)?;
        if queued.is_empty() {
            return Ok(0);
        }
        for (chain, head) in chains.iter().zip(heads) {
            let events: Vec<&Unchained> = queued
                .iter()
                .map(|(_, row)| row)
                .filter(|row| row.chain == *chain)
                .collect();
            if !events.is_empty() {
                audit::extend_chain(c, chain, head, &events)?;
            }
        }
        let ids: Vec<i64> = queued.iter().map(|(id, _)| *id).collect();
        let deleted =
            diesel::delete(audit_queue::table.filter(audit_queue::id.eq_any(&ids))).execute(c)?;
        if deleted != ids.len() {
            // Cannot happen while every chainer holds the heads it chains; never chain twice.
            return Err(StoreError::Conflict(
                "queued audit events were chained by someone else".into(),
            ));
        }
        Ok(ids.len())
    })
}

/// Wakes the chainer after a commit that may have queued events.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    queued: Mutex<bool>,
    wake: Condvar,
}

impl Signal {
    /// Something may have been queued.
    pub(crate) fn notify(&self) {
        *self.queued.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_one();
    }

    /// Waits for [`Signal::notify`] or `timeout`, whichever comes first.
    fn wait(&self, timeout: Duration) {
        let queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut queued, _) = self
            .wake
            .wait_timeout_while(queued, timeout, |queued| !*queued)
            .unwrap_or_else(PoisonError::into_inner);
        *queued = false;
    }
}

/// The background chainer of a serving process; dropping it stops the thread.
#[derive(Debug)]
pub struct AuditChainer {
    stop: Arc<AtomicBool>,
    signal: Arc<Signal>,
}

impl Drop for AuditChainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.signal.notify();
    }
}

impl Store {
    /// Chains every queued audit event (PostgreSQL; nothing to do on SQLite). Readers of the
    /// log do it themselves; this is for the background chainer and for tests.
    pub fn chain_audit(&self) -> Result<(), StoreError> {
        self.read(settle)
    }

    /// Starts chaining queued audit events in the background (PostgreSQL; `None` on SQLite,
    /// which has no queue). Call once per serving process.
    pub fn start_audit_chainer(&self) -> Result<Option<AuditChainer>, StoreError> {
        if !matches!(self.backend, crate::Backend::Postgres(_)) {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let store = self.clone();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("linklease-audit-chain".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    match store.chain_audit() {
                        Ok(()) => store.audit_queued.wait(CHAIN_EVERY),
                        Err(e) => {
                            // Not again at every commit: a database that refuses keeps refusing
                            // for a while, and the events wait safely in the queue.
                            log::warn!("chaining queued audit events failed: {e}");
                            std::thread::sleep(CHAIN_EVERY);
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start: {e}")))?;
        Ok(Some(AuditChainer {
            stop,
            signal: self.audit_queued.clone(),
        }))
    }
}
