#![doc = include_str!("../README.md")]

/// Rows per multi-row `INSERT` (at most 17 parameters a row: well under SQLite's and
/// PostgreSQL's limits on parameters per statement).
pub(crate) const INSERT_CHUNK: usize = 256;

/// Inserts the slice `rows` into `table`, typed per backend (diesel's `MultiConnection` has no
/// multi-row inserts of its own). SQLite (no round trips) takes one row at a time through a
/// single-row statement, whose SQL is fixed and so stays in the connection's statement cache:
/// diesel prepares a multi-row statement afresh every time. PostgreSQL takes one statement per
/// [`INSERT_CHUNK`] rows (one round trip for many), a lone row as a single-row statement. The row
/// type must be `treat_none_as_default_value = false`: for rows that may hold `DEFAULT`, diesel's
/// SQLite backend inserts row by row in a transaction of its own, which cannot nest in ours.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {
        match &mut *$conn {
            $crate::DbConn::Sqlite(c) => {
                for row in $rows.iter() {
                    diesel::insert_into($table).values(row).execute(c)?;
                }
            }
            $crate::DbConn::Pg(c) => {
                for chunk in $rows.chunks($crate::INSERT_CHUNK) {
                    match chunk {
                        [row] => diesel::insert_into($table).values(row).execute(c)?,
                        rows => diesel::insert_into($table).values(rows).execute(c)?,
                    };
                }
            }
        }
    };
}

pub mod api_keys;
pub mod audit;
mod audit_index;
pub mod audit_keys;
pub mod audit_queue;
pub mod clients;
mod conn;
mod error;
pub mod flows;
pub mod grants;
pub mod leases;
mod live;
pub mod migrate;
pub mod purge;
pub mod schema;
pub mod signing_keys;
pub mod submissions;
pub mod tenants;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

use diesel::Connection;
use diesel::connection::SimpleConnection;

pub use conn::{Backend, DbConn, PoolOptions};
pub use error::StoreError;
pub use live::{ServeLock, WriteHold};

/// The database: a pool of connections to one backend.
#[derive(Clone)]
pub struct Store {
    pool: conn::Pool,
    backend: Backend,
    /// SQLite's one writer connection, with group commit (see `writer`).
    sqlite_writer: std::sync::Arc<writer::SqliteWriter>,
    /// The single-node copy of lease facts (off unless this process serves a SQLite file).
    live: std::sync::Arc<live::LiveFacts>,
    /// PostgreSQL: wakes the audit chainer after a write (see `audit_queue`).
    audit_queued: std::sync::Arc<audit_queue::Signal>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        write!(f, "Store({})", self.backend.name())
    }
}

impl Store {
    /// Opens a pool on the database named by `url` (it does not migrate; see [`Store::migrate`]).
    pub fn open(url: &str, options: &PoolOptions) -> Result<Self, StoreError> {
        let backend = Backend::from_url(url)?;
        let pool = conn::build_pool(backend.clone(), options);
        Ok(Self {
            pool,
            backend,
            sqlite_writer: std::sync::Arc::default(),
            live: std::sync::Arc::default(),
            audit_queued: std::sync::Arc::default(),
        })
    }

    /// Opens the database and applies pending migrations first.
    pub fn open_migrated(url: &str, options: &PoolOptions) -> Result<Self, StoreError> {
        migrate::run_pending(&Backend::from_url(url)?)?;
        Self::open(url, options)
    }

    /// Applies pending migrations; returns the names applied.
    pub fn migrate(&self) -> Result<Vec<String>, StoreError> {
        migrate::run_pending(&self.backend)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Runs `f` on a pooled connection, outside any transaction. Blocks. Connections are not
    /// tested before use, so if `f` fails because its connection broke (one that died while
    /// idle, say after a database restart), `f` runs once more on another: it only reads.
    pub fn read<T>(
        &self,
        mut f: impl FnMut(&mut DbConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        use diesel::r2d2::R2D2Connection;
        let mut conn = self.pool.get()?;
        match f(&mut conn) {
            Err(_) if conn.is_broken() => {
                drop(conn);
                let mut fresh = self.pool.get()?;
                f(&mut fresh)
            }
            done => done,
        }
    }

    /// The mutable facts of lease `id`: from the single-node copy when it holds them (see
    /// [`Store::serve_exclusively`]), else from the database. Blocks on a miss.
    pub fn lease_facts(
        &self,
        id: linklease_grant::LeaseId,
    ) -> Result<leases::LeaseFacts, StoreError> {
        if let Some(facts) = self.live.get(id) {
            return Ok(facts);
        }
        let mut found = self.lease_facts_of(std::slice::from_ref(&id));
        found.pop().unwrap_or(Err(StoreError::NotFound))
    }

    /// The mutable facts of each of the leases `ids`, in their order, from the database in one
    /// query (`NotFound` for a lease that does not exist); the single-node copy keeps them.
    /// Blocks.
    pub fn lease_facts_of(
        &self,
        ids: &[linklease_grant::LeaseId],
    ) -> Vec<Result<leases::LeaseFacts, StoreError>> {
        let epoch = self.live.before_query();
        let found = match self.read(|c| leases::facts_of(c, ids)) {
            Ok(found) => found,
            Err(e) => return ids.iter().map(|_| Err(e.clone())).collect(),
        };
        let found: std::collections::HashMap<_, _> = found.into_iter().collect();
        ids.iter()
            .map(|id| {
                let facts = found.get(id).cloned().ok_or(StoreError::NotFound)?;
                self.live.keep(*id, epoch, &facts);
                Ok(facts)
            })
            .collect()
    }

    /// The facts of lease `id` if the single-node copy holds them; never blocks.
    pub fn cached_lease_facts(&self, id: linklease_grant::LeaseId) -> Option<leases::LeaseFacts> {
        self.live.get(id)
    }

    /// Runs `f` in one transaction: all of it commits, or none of it does; returns once it
    /// has committed. Blocks.
    ///
    /// On SQLite that transaction may be shared with other writers queued at the same moment
    /// (group commit, see `writer`), `f` then running in a savepoint of it. It starts with
    /// `BEGIN IMMEDIATE`, taking the write lock up front: two deferred transactions that both
    /// upgrade to writing would otherwise fail with `SQLITE_BUSY` without waiting for the busy
    /// timeout.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut DbConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.transact(f);
        // Whatever it changed, no fact copied before it is valid any more.
        self.live.changed();
        result
    }

    /// Appends audit events in one write (the group commit of reads). It changes no lease
    /// or grant fact, so the single-node copy stays valid. Blocks.
    pub fn append_audit(&self, events: &[audit::NewEvent]) -> Result<(), StoreError> {
        self.transact(|c| audit::append_all(c, events))
    }

    fn transact<T>(
        &self,
        f: impl FnOnce(&mut DbConn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.backend {
            Backend::Sqlite(_) => self
                .sqlite_writer
                .write(&self.backend, |c| with_events(c, f)),
            Backend::Postgres(_) => {
                use diesel::r2d2::R2D2Connection;
                // A write cannot simply run again once its connection failed mid-way (it may
                // have committed). But if its `BEGIN` failed on a broken connection (one that
                // died while idle), nothing was done: it runs once more on a fresh connection.
                let mut f = Some(f);
                let run = |conn: &mut DbConn, f: &mut Option<_>| {
                    conn.transaction(|c| match f.take() {
                        Some(f) => with_events(c, f),
                        None => Err(StoreError::Internal("a write ran twice".into())),
                    })
                };
                let mut conn = self.pool.get()?;
                let done = match run(&mut conn, &mut f) {
                    Err(_) if f.is_some() && conn.is_broken() => {
                        drop(conn);
                        let mut fresh = self.pool.get()?;
                        run(&mut fresh, &mut f)
                    }
                    done => done,
                };
                // Its audit events wait in the queue.
                self.audit_queued.notify();
                done
            }
        }
    }

    /// SQLite's group commit so far (for `/metrics`); `None` on PostgreSQL, where every write
    /// commits on its own.
    pub fn write_stats(&self) -> Option<WriteStats> {
        match self.backend {
            Backend::Sqlite(_) => Some(self.sqlite_writer.stats()),
            Backend::Postgres(_) => None,
        }
    }

    /// Open and idle connections of the pool (for `/metrics`).
    pub fn pool_state(&self) -> diesel::r2d2::State {
        self.pool.state()
    }

    /// Whether the database answers (for `/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.batch_execute("SELECT 1")?))
    }
}

/// What SQLite's writer has committed since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes those transactions held (more than `commits` when writes were grouped).
    pub writes: u64,
}

/// Parses an id column; a malformed one means the stored data is corrupt.
pub(crate) fn parse_id<T: std::str::FromStr>(s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("malformed id {s:?}")))
}

/// Runs `f`, then appends the audit events it recorded (last: see `audit::append`).
fn with_events<T>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let collecting = audit::Collecting::start();
    let result = f(conn);
    let events = collecting.finish();
    let value = result?;
    audit::append_all(conn, &events)?;
    Ok(value)
}
