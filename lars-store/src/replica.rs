//! Reading routes from a read replica (the dns's `[store] read_url`).
//!
//! [`open_replica`] gives a [`ReplicaStore`]: a [`RouteRead`] that only
//! ever reads. Unlike [`open`](crate::open) it creates nothing (no database,
//! no schema: a replica receives those from its primary, and a statement
//! written on a replica would make it diverge), every session is
//! `READ ONLY`, and it connects lazily: a replica that is down when the dns
//! starts is an error of the first read, not of opening, so the dns can
//! start from the primary and turn to the replica when it answers.
//! [`RouteRead::delete_changes`] is refused: the `RouteChange` rows are
//! pruned on the primary.

use std::fmt;

use lars_core::ModKey;
use mysql::{Pool, PoolConstraints, PoolOpts, PooledConn};

use crate::mysql_backend::{
    MysqlUrl, is_connection_error, parse_url, read_changed_keys, read_pending_changes, read_routes,
    read_version,
};
use crate::{
    Result, RouteChange, RouteRead, RouteSnapshot, Store, StoreError, redact, shown_with_db,
};

/// Opens the read replica named by `url` for route reading only.
///
/// - `mysql://user:pass@host:port/db`: a lazy pool of at most 4 `READ ONLY`
///   sessions on database `db` (default [`DEFAULT_MYSQL_DB`]), which must
///   exist (replicated from the primary); `?io_timeout_ms=N` as for
///   [`open`](crate::open). Nothing is created or written.
/// - `sqlite://path`: the file opened as by [`open`](crate::open) (SQLite
///   has no replicas; accepted so that a configuration can be tried on one
///   machine).
///
/// Fails only on a malformed URL (and for SQLite on an unopenable file).
pub fn open_replica(url: &str) -> Result<ReplicaStore> {
    if url.starts_with("mysql://") {
        return MysqlReplica::open(url).map(|m| ReplicaStore {
            inner: Inner::Mysql(m),
        });
    }
    if url.starts_with("sqlite://") {
        return crate::open(url).map(|s| ReplicaStore {
            inner: Inner::Sqlite(s),
        });
    }
    Err(StoreError::InvalidUrl {
        url: redact(url),
        why: "expected mysql://user:pass@host:port/db or sqlite://path".into(),
    })
}

/// A read-only route reader on a replica: see [`open_replica`]. Cheap to
/// clone (clones share the pool); `Send + Sync`.
#[derive(Clone)]
pub struct ReplicaStore {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Mysql(MysqlReplica),
    Sqlite(Store),
}

impl ReplicaStore {
    /// The URL with its password redacted, for logs and `/status`.
    pub fn shown_url(&self) -> String {
        match &self.inner {
            Inner::Mysql(m) => m.shown.clone(),
            Inner::Sqlite(s) => format!("{s:?}"),
        }
    }
}

impl fmt::Debug for ReplicaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReplicaStore")
            .field(&self.shown_url())
            .finish()
    }
}

impl RouteRead for ReplicaStore {
    fn version(&self) -> Result<u64> {
        match &self.inner {
            Inner::Mysql(m) => m.version(),
            Inner::Sqlite(s) => s.version(),
        }
    }
    fn load_routes(&self) -> Result<RouteSnapshot> {
        match &self.inner {
            Inner::Mysql(m) => m.load_routes(),
            Inner::Sqlite(s) => s.load_routes(),
        }
    }
    fn changed_keys(&self, up_to: u64) -> Result<Vec<ModKey>> {
        match &self.inner {
            Inner::Mysql(m) => m.changed_keys(up_to),
            Inner::Sqlite(s) => s.changed_keys(up_to),
        }
    }
    /// Refused: a replica is never written; prune on the primary.
    fn delete_changes(&self, _up_to: Option<u64>) -> Result<u64> {
        Err(StoreError::Invalid(
            "the read replica is never written: RouteChange rows are pruned on the primary".into(),
        ))
    }
    fn pending_changes(&self) -> Result<Vec<RouteChange>> {
        match &self.inner {
            Inner::Mysql(m) => m.pending_changes(),
            Inner::Sqlite(s) => s.pending_changes(),
        }
    }
}

#[derive(Clone)]
struct MysqlReplica {
    pool: Pool,
    shown: String,
}

impl MysqlReplica {
    fn open(url: &str) -> Result<Self> {
        let MysqlUrl { url, db, base } = parse_url(url)?;
        // min 0: no connection is made before the first read.
        let constraints = PoolConstraints::new(0, 4).unwrap_or_default();
        let builder = base
            .db_name(Some(db.clone()))
            .init(vec!["SET SESSION TRANSACTION READ ONLY"])
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        let pool = Pool::new(builder).map_err(|e| StoreError::Unavailable {
            purpose: "open the replica's connection pool",
            source: Box::new(e),
        })?;
        Ok(Self {
            pool,
            shown: shown_with_db(&url, &db),
        })
    }

    /// Runs `op` on a pooled connection, once more on a fresh one after a
    /// connection-level error.
    fn run<T>(
        &self,
        purpose: &'static str,
        op: impl Fn(&mut PooledConn) -> std::result::Result<T, mysql::Error>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = self.pool.get_conn().and_then(|mut c| op(&mut c));
            match res {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 1 && is_connection_error(&e) => {
                    tracing::debug!(purpose, error = %e, "replica read failed, retrying once");
                }
                Err(e) if is_connection_error(&e) => {
                    return Err(StoreError::Unavailable {
                        purpose,
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    return Err(StoreError::Query {
                        purpose,
                        source: Box::new(e),
                    });
                }
            }
        }
    }

    fn version(&self) -> Result<u64> {
        self.run("read RouteVersion on the replica", read_version)
    }

    fn load_routes(&self) -> Result<RouteSnapshot> {
        self.run("read RouteData on the replica", read_routes)
    }

    fn changed_keys(&self, up_to: u64) -> Result<Vec<ModKey>> {
        self.run("read RouteChange on the replica", |c| {
            read_changed_keys(c, up_to)
        })
    }

    fn pending_changes(&self) -> Result<Vec<RouteChange>> {
        self.run("read RouteChange on the replica", read_pending_changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_connects_to_nothing_and_redacts() {
        // Port 1 on loopback: nothing listens; opening must still succeed.
        let r = open_replica("mysql://u:secret@127.0.0.1:1/lars?io_timeout_ms=500").unwrap();
        assert_eq!(r.shown_url(), "mysql://u:***@127.0.0.1:1/lars");
        assert!(!format!("{r:?}").contains("secret"));
        let e = r.version().unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(r.delete_changes(None).is_err());
        assert!(matches!(
            open_replica("postgres://x"),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(open_replica("mysql://u@h/bad-name").is_err());
        assert!(open_replica("mysql://u@h/db?io_timeout_ms=0").is_err());
    }
}
