//! Embedded migrations, one set per backend, with identical folder names.

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::{Backend, DbConn, StoreError};

const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// An arbitrary constant: the advisory lock that keeps two instances from migrating at once.
const PG_MIGRATION_LOCK: i64 = 0x6c69_6e6b_6c65;

fn migrations(conn: &DbConn) -> EmbeddedMigrations {
    match conn {
        DbConn::Pg(_) => POSTGRES,
        DbConn::Sqlite(_) => SQLITE,
    }
}

fn harness_error(e: Box<dyn std::error::Error + Send + Sync>) -> StoreError {
    StoreError::Internal(format!("migration failed: {e}"))
}

/// Applies every pending migration and returns the names applied. On PostgreSQL an advisory
/// lock makes concurrent starts of several instances safe.
pub fn run_pending(backend: &Backend) -> Result<Vec<String>, StoreError> {
    let mut conn = backend.establish()?;
    let source = migrations(&conn);
    let applied = match &mut conn {
        DbConn::Pg(pg) => {
            pg.batch_execute(&format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))?;
            let result = pg
                .run_pending_migrations(source)
                .map(|v| v.iter().map(ToString::to_string).collect());
            pg.batch_execute(&format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"))?;
            result
        }
        DbConn::Sqlite(lite) => {
            lite.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = OFF;")?;
            lite.run_pending_migrations(source)
                .map(|v| v.iter().map(ToString::to_string).collect())
        }
    };
    applied.map_err(harness_error)
}

/// Reverts every applied migration (tests use it to prove each `down.sql` works).
pub fn revert_all(backend: &Backend) -> Result<(), StoreError> {
    let mut conn = backend.establish()?;
    let source = migrations(&conn);
    match &mut conn {
        DbConn::Pg(pg) => pg.revert_all_migrations(source).map(|_| ()),
        DbConn::Sqlite(lite) => lite.revert_all_migrations(source).map(|_| ()),
    }
    .map_err(harness_error)
}

/// Reverts the last applied migration and returns its name (tests use it to apply a data
/// migration again over stored rows).
pub fn revert_last(backend: &Backend) -> Result<String, StoreError> {
    let mut conn = backend.establish()?;
    let source = migrations(&conn);
    match &mut conn {
        DbConn::Pg(pg) => pg.revert_last_migration(source),
        DbConn::Sqlite(lite) => lite.revert_last_migration(source),
    }
    .map(|version| version.to_string())
    .map_err(harness_error)
}

/// The names of the embedded migrations of each backend: (sqlite, postgres).
pub fn embedded_names() -> Result<(Vec<String>, Vec<String>), StoreError> {
    let names = |source: EmbeddedMigrations| -> Result<Vec<String>, StoreError> {
        let list = MigrationSource::<diesel::sqlite::Sqlite>::migrations(&source)
            .map_err(harness_error)?;
        Ok(list.iter().map(|m| m.name().to_string()).collect())
    };
    Ok((names(SQLITE)?, names(POSTGRES)?))
}
