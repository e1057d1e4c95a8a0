//! The single-node SQLite mode: one `linklease serve` owns the database file, so an in-process
//! copy of the lease facts (a lease's expiry and end, its grant's state, its client's
//! revocation) is exactly as fresh as the database, and the lease check needs no query.
//!
//! How the copy stays exact:
//! - **Ownership.** The server holds an exclusive lock on `<db>-serve.lock` for its lifetime
//!   ([`Store::serve_exclusively`]); a second server on the same file is refused.
//! - **Its own writes.** Every [`Store::write`] moves a global epoch on once it has finished
//!   (committed or rolled back). A copied fact is tagged with the epoch read *before* its query
//!   and is valid only while the epoch has not moved, so no fact read before a change can
//!   outlive it. Appending audit events ([`Store::append_audit`]) changes no fact and moves
//!   nothing, which keeps the copy warm under a read-only load.
//! - **Other processes.** An operator's CLI writing to the same file first takes a hold
//!   ([`Store::hold_for_write`]): with no server it takes the lock itself (so no server starts
//!   half-way through its change); with a server it connects to `<db>-serve.sock`, and while
//!   that connection is open the server answers from the database only. When the connection
//!   closes (the command ended, or crashed) the server moves the epoch on. A command that cannot
//!   get a hold waits, then fails: it never changes the facts behind the server's back.
//!
//! PostgreSQL (several instances) never uses the copy: every lease check reads the database.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use linklease_grant::LeaseId;

use crate::leases::LeaseFacts;
use crate::{Backend, Store, StoreError};

/// Facts kept before the copy starts over (each is rebuilt from the database on a miss).
const MAX_FACTS: usize = 200_000;
/// How long an operator's command waits for a server's answer or for the lock.
const HOLD_WAIT: Duration = Duration::from_secs(10);
/// How often a serving process checkpoints the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// How long a starting server waits for an operator's command to finish.
const SERVE_WAIT: Duration = Duration::from_secs(3);

/// The in-process copy of lease facts (used only while this process serves the file).
#[derive(Debug, Default)]
pub(crate) struct LiveFacts {
    enabled: AtomicBool,
    epoch: AtomicU64,
    external_holds: AtomicUsize,
    facts: RwLock<HashMap<LeaseId, (u64, LeaseFacts)>>,
}

impl LiveFacts {
    fn usable(&self) -> bool {
        self.enabled.load(Ordering::Acquire) && self.external_holds.load(Ordering::Acquire) == 0
    }

    /// The copied facts of `lease`, if valid now.
    pub(crate) fn get(&self, lease: LeaseId) -> Option<LeaseFacts> {
        if !self.usable() {
            return None;
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let guard = self.facts.read().ok()?;
        guard
            .get(&lease)
            .filter(|(tag, _)| *tag == epoch)
            .map(|(_, facts)| facts.clone())
    }

    /// The epoch to tag a fact with; read it before querying.
    pub(crate) fn before_query(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Keeps `facts`, queried after [`LiveFacts::before_query`] returned `epoch`, unless
    /// anything changed since.
    pub(crate) fn keep(&self, lease: LeaseId, epoch: u64, facts: &LeaseFacts) {
        if !self.usable() || self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if let Ok(mut guard) = self.facts.write() {
            if guard.len() >= MAX_FACTS {
                guard.retain(|_, (tag, _)| *tag == epoch);
                if guard.len() >= MAX_FACTS {
                    guard.clear();
                }
            }
            guard.insert(lease, (epoch, facts.clone()));
        }
    }

    /// Invalidates every copied fact (after a write).
    pub(crate) fn changed(&self) {
        if self.enabled.load(Ordering::Acquire) {
            self.changed_always();
        }
    }

    fn changed_always(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// This server's claim on a SQLite file; dropping it ends the single-node mode.
#[derive(Debug)]
pub struct ServeLock {
    _lock: File,
    socket: PathBuf,
    live: Arc<LiveFacts>,
}

impl Drop for ServeLock {
    fn drop(&mut self) {
        self.live.enabled.store(false, Ordering::Release);
        self.live.changed_always();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// An operator's permission to write while a server may be running on the same file.
#[derive(Debug)]
pub enum WriteHold {
    /// PostgreSQL: servers read the database on every check; nothing to hold.
    Shared,
    /// No server was running: this process holds the lock, so none starts meanwhile.
    Locked(File),
    /// A server is running and answers from the database until this connection closes.
    Server(UnixStream),
}

fn sqlite_paths(store: &Store) -> Option<(PathBuf, PathBuf)> {
    match &store.backend {
        Backend::Sqlite(path) if path != ":memory:" && !path.starts_with("file:") => Some((
            PathBuf::from(format!("{path}-serve.lock")),
            PathBuf::from(format!("{path}-serve.sock")),
        )),
        _ => None,
    }
}

fn open_lock(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))
}

/// Tries the exclusive lock on `file` until `deadline`.
fn lock_until(file: &File, deadline: Instant) -> Result<bool, StoreError> {
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Unavailable(format!("cannot lock: {e}")));
            }
        }
    }
}

impl Store {
    /// Claims the SQLite file for this server and turns the in-process copy of lease facts on
    /// (see the module docs). Fails if another process holds the file; waits briefly for an
    /// operator's command that holds it. Returns `None` and changes nothing on PostgreSQL, or
    /// when this store (shared by servers in one process) already serves the file.
    pub fn serve_exclusively(&self) -> Result<Option<ServeLock>, StoreError> {
        let Some((lock_path, socket_path)) = sqlite_paths(self) else {
            return Ok(None);
        };
        if self.live.enabled.load(Ordering::Acquire) {
            return Ok(None);
        }
        let lock = open_lock(&lock_path)?;
        if !lock_until(&lock, Instant::now() + SERVE_WAIT)? {
            return Err(StoreError::Conflict(
                "another linklease process holds this SQLite database (one server per file; \
                 use PostgreSQL for several instances)"
                    .into(),
            ));
        }
        // Holding the lock, any socket file left is a dead server's.
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path).map_err(|e| {
            StoreError::Unavailable(format!("cannot listen on {}: {e}", socket_path.display()))
        })?;
        let live = self.live.clone();
        std::thread::Builder::new()
            .name("linklease-holds".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let live = live.clone();
                    let _ = std::thread::Builder::new()
                        .name("linklease-hold".into())
                        .spawn(move || serve_hold(&live, stream));
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start: {e}")))?;
        // Nothing copied before is valid: a previous claim's drop moved the epoch on.
        self.live.enabled.store(true, Ordering::Release);
        let live = self.live.clone();
        let serving = move || live.enabled.load(Ordering::Acquire);
        if let Err(e) = self
            .start_checkpointer()
            .and_then(|()| self.start_audit_indexer(serving))
        {
            self.live.enabled.store(false, Ordering::Release);
            self.live.changed_always();
            return Err(e);
        }
        Ok(Some(ServeLock {
            _lock: lock,
            socket: socket_path,
            live: self.live.clone(),
        }))
    }

    /// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`] on a thread of
    /// its own (passive: it never blocks readers or the writer), so that commits do not.
    /// The thread ends with the server's claim.
    fn start_checkpointer(&self) -> Result<(), StoreError> {
        use diesel::connection::SimpleConnection;
        let mut conn = crate::conn::establish_set_up(&self.backend)?;
        let live = self.live.clone();
        std::thread::Builder::new()
            .name("linklease-checkpoint".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if !live.enabled.load(Ordering::Acquire) {
                        break;
                    }
                    if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
                        log::warn!("WAL checkpoint failed: {e}");
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start: {e}")))?;
        Ok(())
    }

    /// Takes a hold for an operator's write (see the module docs). Keep it until the change is
    /// committed; drop it then.
    pub fn hold_for_write(&self) -> Result<WriteHold, StoreError> {
        let Some((lock_path, socket_path)) = sqlite_paths(self) else {
            return Ok(WriteHold::Shared);
        };
        let lock = open_lock(&lock_path)?;
        let deadline = Instant::now() + HOLD_WAIT;
        loop {
            if lock_until(&lock, Instant::now())? {
                return Ok(WriteHold::Locked(lock));
            }
            if let Ok(mut stream) = UnixStream::connect(&socket_path) {
                stream
                    .set_read_timeout(Some(HOLD_WAIT))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let mut ack = [0u8; 1];
                if stream.read_exact(&mut ack).is_ok() && ack == *b"+" {
                    return Ok(WriteHold::Server(stream));
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    "a linklease server holds this SQLite database and did not answer on its \
                     control socket"
                        .into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One operator's hold: the copy is bypassed from the acknowledgement until the connection
/// closes, then invalidated.
fn serve_hold(live: &LiveFacts, mut stream: UnixStream) {
    live.external_holds.fetch_add(1, Ordering::AcqRel);
    if stream.write_all(b"+").is_ok() {
        let mut sink = [0u8; 64];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
    live.changed_always();
    live.external_holds.fetch_sub(1, Ordering::AcqRel);
}
