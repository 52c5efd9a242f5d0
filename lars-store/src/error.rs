//! The store's error type.

use std::error::Error as StdError;

/// A boxed driver error (`mysql::Error` or `rusqlite::Error`).
pub type DriverError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything a store operation can fail with.
///
/// Driver errors carry the purpose of the statement that failed (for example
/// `"insert RouteChange"`), so a log line says what the store was doing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is neither `mysql://...` nor `sqlite://...`, or is malformed.
    #[error("invalid store url {url:?}: {why}")]
    InvalidUrl {
        /// The URL as given (password removed).
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The database cannot be reached (server down, connection lost after the
    /// one retry, file cannot be opened or stays locked).
    #[error("database unavailable while trying to {purpose}")]
    Unavailable {
        /// What the store was doing.
        purpose: &'static str,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// The database answered a statement with an error.
    #[error("database error while trying to {purpose}")]
    Query {
        /// What the store was doing.
        purpose: &'static str,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// The row the operation needs does not exist (host not in the key's
    /// list, unknown key, user or description).
    #[error("not found: {0}")]
    NotFound(String),
    /// The row the operation would create already exists (host already in the
    /// key's list, user name taken).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The input cannot be stored (port 0, ip 0, empty user name, ...).
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl StoreError {
    /// True when the database itself is down or unreachable, as opposed to a
    /// bad statement or bad input: callers keep their data and retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// True for [`StoreError::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists(_))
    }
}

/// Displays an error and its causes on one line (see [`lars_core::Chain`]):
/// a [`StoreError`]'s own message never repeats its cause.
///
/// ```
/// let e = lars_store::open("postgres://x").unwrap_err();
/// assert!(lars_store::Chain(&e).to_string().starts_with("invalid store url"));
/// ```
pub use lars_core::Chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_printed_once() {
        let e = StoreError::Unavailable {
            purpose: "ping",
            source: Box::new(std::io::Error::other("connection refused")),
        };
        assert_eq!(e.to_string(), "database unavailable while trying to ping");
        assert_eq!(
            Chain(&e).to_string(),
            "database unavailable while trying to ping: connection refused"
        );
    }
}
