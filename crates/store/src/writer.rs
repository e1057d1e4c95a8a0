//! SQLite's one writer, with group commit.
//!
//! SQLite lets one connection write at a time. This process's writers queue on a lock that
//! blocks (fair, unlike SQLite's polling busy handler, which could starve one writer past the
//! busy timeout) for one dedicated connection, whose page cache stays valid from one write to
//! the next.
//!
//! **Group commit.** A commit costs more than most writes: every page the transaction touched
//! goes to the WAL. So while other writers are queued, the transaction is left open: each writer
//! runs inside a savepoint of it, and the last writer of a burst (or the one that fills a batch)
//! commits for everyone in it. The rules:
//! - A writer returns only after the commit that holds its changes: nothing is acknowledged
//!   before it is durable.
//! - A writer whose closure fails rolls back to its own savepoint and returns its error at once;
//!   the others' changes stay.
//! - A failure of the transaction itself (`COMMIT` failing, an error after which SQLite rolled
//!   the whole transaction back, a panic in a closure) fails every writer of the batch, none of
//!   whose changes were committed.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::R2D2Connection;

use crate::{Backend, DbConn, StoreError, conn};

/// Most writers in one transaction.
const MAX_BATCH: usize = 64;
/// Longest a transaction stays open waiting for more writers.
const MAX_OPEN: Duration = Duration::from_millis(2);

/// The one SQLite writer of this process.
pub(crate) struct SqliteWriter {
    state: Mutex<State>,
    /// Writers waiting for `state`: while there are any, the open transaction is left to them.
    queued: AtomicUsize,
    /// Transactions committed.
    commits: AtomicU64,
    /// Writers whose changes those transactions held.
    committed_writes: AtomicU64,
    max_batch: usize,
    max_open: Duration,
}

impl Default for SqliteWriter {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            queued: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            committed_writes: AtomicU64::new(0),
            max_batch: MAX_BATCH,
            max_open: MAX_OPEN,
        }
    }
}

#[derive(Default)]
struct State {
    conn: Option<DbConn>,
    open: Option<OpenBatch>,
}

/// The transaction being filled.
struct OpenBatch {
    begun: Instant,
    members: usize,
    batch: Arc<Batch>,
}

/// The outcome of one transaction, awaited by the writers whose changes it holds.
#[derive(Default)]
struct Batch {
    outcome: Mutex<Option<Result<(), String>>>,
    settled: Condvar,
}

impl Batch {
    fn settle(&self, outcome: Result<(), String>) {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        self.settled.notify_all();
    }

    fn wait(&self) -> Result<(), StoreError> {
        let mut outcome = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match &*outcome {
                Some(Ok(())) => return Ok(()),
                Some(Err(message)) => return Err(StoreError::Unavailable(message.clone())),
                None => {
                    outcome = self
                        .settled
                        .wait(outcome)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

impl SqliteWriter {
    /// Runs `f` (through `run`, which appends its audit events) in the current transaction and
    /// returns once that transaction has committed. Blocks.
    pub(crate) fn write<T>(
        &self,
        backend: &Backend,
        run: impl FnOnce(&mut DbConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);

        // The first writer of a transaction needs no savepoint: rolling the whole transaction
        // back undoes its changes and nobody else's. (This also keeps a large lone write, such
        // as a batch of grants, from copying every page it touches into a savepoint journal.)
        let first = state.open.is_none();
        let batch = state.begin(backend)?;
        if !first && let Err(e) = state.execute("SAVEPOINT writer") {
            state.fail(&e);
            return Err(e);
        }
        let ran = match state.conn() {
            Ok(conn) => match catch_unwind(AssertUnwindSafe(|| run(conn))) {
                Ok(ran) => ran,
                Err(panic) => {
                    state.fail(&StoreError::Internal("a writer panicked".into()));
                    state.conn = None; // in doubt
                    drop(state);
                    resume_unwind(panic);
                }
            },
            Err(e) => Err(e),
        };
        match ran {
            Ok(value) => {
                if !first && let Err(e) = state.execute("RELEASE writer") {
                    state.fail(&e);
                    return Err(e);
                }
                let full = state.open.as_mut().is_none_or(|open| {
                    open.members += 1;
                    open.members >= self.max_batch || open.begun.elapsed() >= self.max_open
                });
                if full || self.queued.load(Ordering::SeqCst) == 0 {
                    self.commit(&mut state).map(|()| value)
                } else {
                    drop(state);
                    batch.wait().map(|()| value)
                }
            }
            Err(e) if first => {
                // The transaction holds this writer's changes only.
                state.fail(&e);
                Err(e)
            }
            Err(e) => {
                // Undo this writer's part only. If that fails, SQLite has already rolled the
                // whole transaction back (or the connection broke): the batch is lost.
                let undone = state.execute("ROLLBACK TO writer; RELEASE writer");
                let broken = state.conn().map_or(true, |c| c.is_broken());
                if undone.is_err() || broken || matches!(e, StoreError::Unavailable(_)) {
                    state.fail(&e);
                } else if self.queued.load(Ordering::SeqCst) == 0 {
                    // Nobody else will come to commit the others' changes.
                    let _ = self.commit(&mut state);
                }
                Err(e)
            }
        }
    }

    /// Transactions committed so far, and the writes they held.
    pub(crate) fn stats(&self) -> crate::WriteStats {
        crate::WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.committed_writes.load(Ordering::Relaxed),
        }
    }

    /// Commits the open transaction and tells its writers.
    fn commit(&self, state: &mut State) -> Result<(), StoreError> {
        let Some(open) = state.open.take() else {
            return Ok(());
        };
        match state.execute("COMMIT") {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.committed_writes
                    .fetch_add(open.members as u64, Ordering::Relaxed);
                open.batch.settle(Ok(()));
                Ok(())
            }
            Err(e) => {
                state.open = Some(open);
                state.fail(&e);
                Err(e)
            }
        }
    }

    /// The state, after a writer that panicked while holding it (outside `write`'s own
    /// guard) has been cleaned up after: its transaction is in doubt and is dropped.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.fail(&StoreError::Internal("a writer panicked".into()));
            state.conn = None; // in doubt
            self.state.clear_poison();
            state
        })
    }
}

impl State {
    fn conn(&mut self) -> Result<&mut DbConn, StoreError> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the writer has no connection".into()))
    }

    fn execute(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.conn()?.batch_execute(sql)?)
    }

    /// Opens a transaction (and a connection) unless one is open; returns its batch.
    fn begin(&mut self, backend: &Backend) -> Result<Arc<Batch>, StoreError> {
        if let Some(open) = &self.open {
            return Ok(open.batch.clone());
        }
        let conn = match self.conn.take() {
            Some(conn) => self.conn.insert(conn),
            None => {
                let mut conn = conn::establish_set_up(backend)?;
                conn.batch_execute(conn::SQLITE_WRITER_SETUP)?;
                self.conn.insert(conn)
            }
        };
        if let Err(e) = conn.batch_execute("BEGIN IMMEDIATE") {
            if conn.is_broken() {
                self.conn = None;
            }
            return Err(e.into());
        }
        let batch = Arc::new(Batch::default());
        self.open = Some(OpenBatch {
            begun: Instant::now(),
            members: 0,
            batch: batch.clone(),
        });
        Ok(batch)
    }

    /// Rolls the open transaction back, fails its writers, and drops the connection if it
    /// broke or the database is unavailable.
    fn fail(&mut self, cause: &StoreError) {
        let mut in_doubt = matches!(cause, StoreError::Unavailable(_));
        if let Some(conn) = self.conn.as_mut() {
            // Fails harmlessly when SQLite has rolled back already.
            let _ = conn.batch_execute("ROLLBACK");
            in_doubt |= conn.is_broken();
        }
        if in_doubt {
            // Start afresh next time rather than reuse a connection in doubt.
            self.conn = None;
        }
        if let Some(open) = self.open.take() {
            open.batch
                .settle(Err(format!("the transaction was rolled back: {cause}")));
        }
    }
}

#[cfg(all(test, feature = "testing"))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use diesel::RunQueryDsl;

    struct Scratch {
        _dir: tempfile::TempDir,
        backend: Backend,
        writer: SqliteWriter,
    }

    /// A scratch database whose writer keeps a transaction open as long as writers queue.
    fn scratch() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::Sqlite(dir.path().join("w.db").display().to_string());
        let writer = SqliteWriter {
            max_open: Duration::from_secs(600),
            ..SqliteWriter::default()
        };
        writer
            .write(&backend, |c| {
                Ok(c.batch_execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")?)
            })
            .unwrap();
        Scratch {
            _dir: dir,
            backend,
            writer,
        }
    }

    fn insert(c: &mut DbConn, x: i64) -> Result<(), StoreError> {
        Ok(c.batch_execute(&format!("INSERT INTO t VALUES ({x})"))?)
    }

    /// A writer that inserts `x`, then fails.
    fn insert_then_refuse(x: i64) -> impl FnOnce(&mut DbConn) -> Result<(), StoreError> + Send {
        move |c| {
            insert(c, x)?;
            Err(StoreError::Conflict("refused".into()))
        }
    }

    #[derive(diesel::QueryableByName)]
    struct X {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        x: i64,
    }

    /// What another connection sees: only what was committed.
    fn committed(s: &Scratch) -> Vec<i64> {
        let DbConn::Sqlite(mut c) = conn::establish_set_up(&s.backend).unwrap() else {
            unreachable!()
        };
        let rows: Vec<X> = diesel::sql_query("SELECT x FROM t ORDER BY x")
            .load(&mut c)
            .unwrap();
        rows.into_iter().map(|r| r.x).collect()
    }

    /// Waits until `n` writers queue behind the one running.
    fn until_queued(writer: &SqliteWriter, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while writer.queued.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "no writer queued");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs `first` (which finishes once another writer queues), then `second` behind it.
    fn two_writers<A: Send, B: Send>(
        s: &Scratch,
        first: impl FnOnce(&mut DbConn) -> Result<A, StoreError> + Send,
        second: impl FnOnce(&mut DbConn) -> Result<B, StoreError> + Send,
    ) -> (
        Result<A, StoreError>,
        std::thread::Result<Result<B, StoreError>>,
    ) {
        let (entered, wait) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                s.writer.write(&s.backend, |c| {
                    entered.send(()).unwrap();
                    until_queued(&s.writer, 1);
                    first(c)
                })
            });
            wait.recv().unwrap();
            let b = scope.spawn(|| s.writer.write(&s.backend, second));
            (a.join().unwrap(), b.join())
        })
    }

    #[test]
    fn queued_writers_share_one_commit() {
        let s = scratch();
        let before = s.writer.stats();
        let (a, b) = two_writers(&s, |c| insert(c, 1), |c| insert(c, 2));
        a.unwrap();
        b.unwrap().unwrap();
        assert_eq!(committed(&s), vec![1, 2]);
        let after = s.writer.stats();
        assert_eq!(after.commits, before.commits + 1);
        assert_eq!(after.writes, before.writes + 2);
    }

    #[test]
    fn a_failing_writer_takes_nothing_of_the_others() {
        let s = scratch();
        let (a, b) = two_writers(&s, |c| insert(c, 1), insert_then_refuse(2));
        a.unwrap();
        assert!(matches!(b.unwrap(), Err(StoreError::Conflict(_))));
        assert_eq!(committed(&s), vec![1]);
        s.writer.write(&s.backend, |c| insert(c, 3)).unwrap();
        assert_eq!(committed(&s), vec![1, 3]);
    }

    #[test]
    fn a_failing_first_writer_leaves_the_next_alone() {
        let s = scratch();
        let (a, b) = two_writers(&s, insert_then_refuse(1), |c| insert(c, 2));
        assert!(matches!(a, Err(StoreError::Conflict(_))));
        b.unwrap().unwrap();
        assert_eq!(committed(&s), vec![2]);
    }

    #[test]
    fn a_panicking_writer_fails_its_whole_batch_and_writes_go_on() {
        let s = scratch();
        let (a, b) = two_writers(
            &s,
            |c| insert(c, 1),
            |c| -> Result<(), StoreError> {
                insert(c, 2)?;
                panic!("a bug in the middle of a batch");
            },
        );
        assert!(b.is_err(), "the panic reaches its own caller");
        assert!(
            matches!(a, Err(StoreError::Unavailable(_))),
            "a writer whose batch was rolled back is told so"
        );
        assert_eq!(committed(&s), Vec::<i64>::new());
        s.writer.write(&s.backend, |c| insert(c, 3)).unwrap();
        assert_eq!(committed(&s), vec![3]);
    }

    #[test]
    fn a_full_batch_commits_without_waiting_for_the_queue() {
        let mut s = scratch();
        s.writer.max_batch = 1;
        let before = s.writer.commits.load(Ordering::SeqCst);
        let (a, b) = two_writers(&s, |c| insert(c, 1), |c| insert(c, 2));
        a.unwrap();
        b.unwrap().unwrap();
        assert_eq!(committed(&s), vec![1, 2]);
        assert_eq!(s.writer.commits.load(Ordering::SeqCst), before + 2);
    }
}
