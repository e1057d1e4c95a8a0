//! A fresh database per test, on either backend (feature `testing`).
//!
//! SQLite: a migrated file in a temporary directory. PostgreSQL: a new schema in the database
//! named by `LINKLEASE_TEST_POSTGRES_URL`, selected through libpq's `options=-csearch_path=…`,
//! migrated, and dropped when the test ends. Without that variable PostgreSQL tests are skipped
//! locally, but fail under CI (`CI` set): CI must never silently test one backend.
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test support: a failure here is a failed test.

use diesel::Connection;
use diesel::connection::SimpleConnection;
use ring::rand::SecureRandom;

use crate::{PoolOptions, Store};

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "LINKLEASE_TEST_POSTGRES_URL";

/// A database that lives as long as the test.
pub struct TestDb {
    /// The migrated store.
    pub store: Store,
    /// Its URL (for starting a second server or a CLI on the same database).
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

impl TestDb {
    /// A fresh, migrated SQLite database in a temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = Store::open_migrated(&url, &PoolOptions::default()).expect("open sqlite");
        Self {
            store,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh, migrated PostgreSQL schema, or `None` (skip) when no server is configured
    /// outside CI.
    pub fn postgres() -> Option<Self> {
        let Some(admin_url) = std::env::var(POSTGRES_URL_VAR)
            .ok()
            .filter(|s| !s.is_empty())
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{POSTGRES_URL_VAR} must be set under CI: PostgreSQL tests may not be skipped there"
            );
            eprintln!("skipping PostgreSQL test: {POSTGRES_URL_VAR} is not set");
            return None;
        };
        let mut suffix = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut suffix)
            .expect("random");
        let schema = format!(
            "t_{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let mut admin = diesel::PgConnection::establish(&admin_url).unwrap_or_else(|e| {
            panic!("{POSTGRES_URL_VAR} is set but PostgreSQL is unreachable: {e}")
        });
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("create schema");
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-csearch_path%3D{schema}");
        let store = Store::open_migrated(&url, &PoolOptions::default()).expect("open postgres");
        Some(Self {
            store,
            url,
            cleanup: Cleanup::Postgres { admin_url, schema },
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, schema } = &self.cleanup
            && let Ok(mut admin) = diesel::PgConnection::establish(admin_url)
        {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// Declares each listed `fn name(db: &TestDb)` as two tests, `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&$crate::testing::TestDb::sqlite()); } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                if let Some(db) = $crate::testing::TestDb::postgres() { super::$name(&db); }
            } )*
        }
    };
}
