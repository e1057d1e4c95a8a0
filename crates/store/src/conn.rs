//! One connection type over both backends, chosen by the URL scheme, and its pool.

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, CustomizeConnection, ManageConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use std::time::Duration;

use crate::StoreError;

/// A connection to either backend. Queries are written once against this type.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    /// The scale-out backend.
    Pg(PgConnection),
    /// The embedded default.
    Sqlite(SqliteConnection),
}

/// Which database a URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…` or `postgresql://…`, passed to libpq as is.
    Postgres(String),
    /// `sqlite://PATH` or `sqlite:PATH`; the file is created if missing.
    Sqlite(String),
}

impl Backend {
    /// Picks the backend from the URL scheme. The error never quotes the URL (it may hold a
    /// password).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres(url.to_owned()))
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(StoreError::Internal("sqlite URL has no path".into()));
            }
            Ok(Backend::Sqlite(path.to_owned()))
        } else {
            Err(StoreError::Internal(
                "database URL must start with sqlite:// or postgres://".into(),
            ))
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    pub(crate) fn establish(&self) -> Result<DbConn, diesel::ConnectionError> {
        match self {
            Backend::Postgres(url) => PgConnection::establish(url).map(DbConn::Pg),
            Backend::Sqlite(path) => {
                if let Some(parent) = std::path::Path::new(path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        diesel::ConnectionError::BadConnection(format!(
                            "cannot create {}: {e}",
                            parent.display()
                        ))
                    })?;
                }
                create_private(path).map_err(|e| {
                    diesel::ConnectionError::BadConnection(format!("cannot create {path}: {e}"))
                })?;
                SqliteConnection::establish(path).map(DbConn::Sqlite)
            }
        }
    }

    /// SQLite: the database file and the `-wal` and `-shm` files beside it (which SQLite
    /// creates with the main file's permissions). Empty for PostgreSQL.
    pub fn sqlite_files(&self) -> Vec<std::path::PathBuf> {
        match self {
            Backend::Postgres(_) => Vec::new(),
            Backend::Sqlite(path) if is_special(path) => Vec::new(),
            Backend::Sqlite(path) => ["", "-wal", "-shm"]
                .iter()
                .map(|suffix| format!("{path}{suffix}").into())
                .collect(),
        }
    }
}

/// `:memory:` and `file:` URIs name no plain file to create.
fn is_special(path: &str) -> bool {
    path == ":memory:" || path.starts_with("file:")
}

/// Creates the SQLite file with mode 0600 (owner only: it holds payloads) if it is missing,
/// before SQLite opens it; an existing file is left as it is.
fn create_private(path: &str) -> std::io::Result<()> {
    if is_special(path) {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Per-connection settings. SQLite: busy timeout first (so that switching to WAL waits rather
/// than failing), WAL, `synchronous=NORMAL` (durable across process crashes; WAL keeps the
/// database consistent across power loss), foreign keys on. The WAL is copied back into
/// the file (checkpointed) by a background thread while a server runs (see `live`); the
/// committing connection does it only past 16,384 pages, as a backstop. PostgreSQL: a statement timeout so
/// that no request waits forever.
const SQLITE_SETUP: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
     PRAGMA wal_autocheckpoint = 16384;";
/// The SQLite writer's connection also keeps a bigger page cache (16 MiB, eight times the
/// default): it is the one that walks the indexes on every write, and nothing else invalidates
/// its cache. A batch of grants touches a random leaf of the token-hash index per grant; with
/// 4 MiB those leaves were read back from the file (P3 batches 18,600-18,800 -> 20,500-20,900
/// grants/s side by side; peak RSS under P1 +12-30 MB).
pub(crate) const SQLITE_WRITER_SETUP: &str = "PRAGMA cache_size = -16384;";
const POSTGRES_SETUP: &str = "SET statement_timeout = '15s';";

/// Makes pooled connections.
#[derive(Debug)]
pub struct Manager {
    backend: Backend,
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        self.backend
            .establish()
            .map_err(r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        conn.is_broken()
    }
}

#[derive(Debug)]
struct Setup;

impl CustomizeConnection<DbConn, r2d2::Error> for Setup {
    fn on_acquire(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        conn.batch_execute(setup_sql(conn))
            .map_err(r2d2::Error::QueryError)
    }
}

/// A new connection outside the pool, with the pool's settings.
pub(crate) fn establish_set_up(backend: &Backend) -> Result<DbConn, StoreError> {
    let mut conn = backend
        .establish()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    conn.batch_execute(setup_sql(&conn))?;
    Ok(conn)
}

/// The settings every new connection gets.
pub(crate) fn setup_sql(conn: &DbConn) -> &'static str {
    match conn {
        DbConn::Sqlite(_) => SQLITE_SETUP,
        DbConn::Pg(_) => POSTGRES_SETUP,
    }
}

/// How big the pool is and how long a request waits for a connection.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Most open connections.
    pub max_size: u32,
    /// How long to wait for a free connection before answering `unavailable`.
    pub timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The pool type.
pub type Pool = r2d2::Pool<Manager>;

/// Builds the pool without connecting: a server whose database is down still starts, answers
/// `/readyz` with 503, and recovers by itself when the database returns.
///
/// Connections open on demand (`min_idle` 0). r2d2 opens them on its own threads; a pool that
/// kept one warm would still be connecting in the background when a one-shot CLI verb exits,
/// and libpq's TLS library tearing down under that thread crashes the process.
pub(crate) fn build_pool(backend: Backend, options: &PoolOptions) -> Pool {
    r2d2::Pool::builder()
        .max_size(options.max_size)
        .min_idle(Some(0))
        // No `SELECT 1` before every use: on PostgreSQL it was a round trip per request. A
        // connection that died while idle fails its first query instead, and is dropped
        // (`has_broken`); `Store::read` then tries once more on a fresh one.
        .test_on_check_out(false)
        .connection_timeout(options.timeout)
        .connection_customizer(Box::new(Setup))
        .build_unchecked(Manager { backend })
}
