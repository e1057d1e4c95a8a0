//! What can go wrong in storage, in the few shapes the server needs to answer correctly.
//!
//! The messages here are for logs. They never hold secrets: queries bind secrets as parameters
//! and diesel's error messages do not echo bound values.

use linklease_grant::GrantStatus;

/// A storage failure.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist (or belongs to another tenant).
    #[error("not found")]
    NotFound,
    /// A uniqueness or reference rule refused the change.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The grant exists but is not active.
    #[error("grant is {}", .0.as_str())]
    GrantNotActive(GrantStatus),
    /// The database cannot be reached or is busy; the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value does not parse: a bug or tampering.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Anything else (a bug).
    #[error("database error: {0}")]
    Internal(String),
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match e {
            E::NotFound => StoreError::NotFound,
            E::DatabaseError(K::UniqueViolation, info) => {
                StoreError::Conflict(info.message().to_owned())
            }
            E::DatabaseError(K::ForeignKeyViolation, info) => {
                StoreError::Conflict(info.message().to_owned())
            }
            E::DatabaseError(K::ClosedConnection | K::SerializationFailure, info) => {
                StoreError::Unavailable(info.message().to_owned())
            }
            E::DatabaseError(_, info) if is_busy(info.message()) => {
                StoreError::Unavailable(info.message().to_owned())
            }
            E::BrokenTransactionManager => StoreError::Unavailable("broken transaction".into()),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<diesel::ConnectionError> for StoreError {
    fn from(e: diesel::ConnectionError) -> Self {
        StoreError::Unavailable(redact_connection_error(&e))
    }
}

fn is_busy(message: &str) -> bool {
    message.contains("database is locked")
        || message.contains("database is busy")
        || message.contains("statement timeout")
        || message.contains("canceling statement")
}

/// Connection errors can quote the URL, password included; keep only their first line's kind.
fn redact_connection_error(e: &diesel::ConnectionError) -> String {
    match e {
        diesel::ConnectionError::InvalidConnectionUrl(_) => "invalid database URL".into(),
        diesel::ConnectionError::BadConnection(msg) => {
            // libpq's messages name host and port, never the password.
            msg.lines().next().unwrap_or("connection failed").to_owned()
        }
        other => other.to_string(),
    }
}
