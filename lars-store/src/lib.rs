//! The lars store: routes, route versions and call statistics in MySQL /
//! MariaDB (the original `lars_dns` schema, so an existing Lars database works
//! unchanged) or in an embedded SQLite file (the default, no server needed).
//!
//! Principal types:
//! - [`Store`]: a cheap-to-clone, thread-safe handle on either backend, made
//!   by [`open`] from a URL (`mysql://user:pass@host:port/db` or
//!   `sqlite://path`). It implements every capability trait.
//! - The capability traits: [`RouteRead`] (dns), [`RouteAdmin`] and
//!   [`Descriptions`] and [`UserStore`] (CLI and console), [`StatsStore`]
//!   (reporter). The services never know which backend they hold.
//! - [`StoreError`]: typed errors carrying the failed statement's purpose;
//!   [`StoreError::is_unavailable`] tells a down database from a bad query.
//!
//! [`open`] creates the MySQL database when missing and always runs
//! [`Store::init_schema`], which is idempotent and on an existing Lars
//! database only adds the tables of ours.
//!
//! ```
//! use lars_core::{HostAddr, ModKey};
//! use lars_store::{RouteAdmin, RouteRead};
//!
//! # fn main() -> Result<(), lars_store::StoreError> {
//! let dir = std::env::temp_dir().join(format!("lars-store-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).ok();
//! let store = lars_store::open(&format!("sqlite://{}/lars.db", dir.display()))?;
//! let key = ModKey::new(1, 1);
//! let v1 = store.add_host(key, "127.0.0.1:9001".parse().expect("valid literal"))?;
//! let v2 = store.add_host(key, HostAddr::new(0x7f00_0001, 9002))?;
//! assert!(v2 > v1);
//! assert_eq!(store.version()?, v2);
//! assert_eq!(store.load_routes()?.routes[&key].len(), 2);
//! assert_eq!(store.changed_keys(v2)?, vec![key]);
//! store.delete_changes(Some(v2))?;
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod error;
mod model;
mod mysql_backend;
pub mod replica;
mod sqlite_backend;

use std::fmt;
use std::sync::Arc;

use lars_core::{HostAddr, ModKey};

pub use error::{Chain, DriverError, StoreError};
pub use model::{
    CallStatusRow, DescKind, Description, Descriptions, HistoryRow, RejectedRow, Result,
    RouteAdmin, RouteChange, RouteFilter, RouteRead, RouteRow, RouteSnapshot, StatsStore, User,
    UserStore,
};
pub use mysql_backend::{DEFAULT_IO_TIMEOUT, IO_TIMEOUT_PARAM};
pub use sqlite_backend::{BUSY_TIMEOUT_PARAM, DEFAULT_BUSY_TIMEOUT};

use mysql_backend::MysqlStore;
use sqlite_backend::SqliteStore;

/// The default embedded store URL (same as `lars_core::config::DEFAULT_STORE_URL`).
pub const DEFAULT_URL: &str = "sqlite://./lars.db";

/// The MySQL database used when a `mysql://` URL names none.
pub const DEFAULT_MYSQL_DB: &str = "lars_dns";

/// Opens the store named by `url` and makes sure its schema exists.
///
/// - `mysql://user:pass@host:port/db`: a connection pool; `db` defaults to
///   [`DEFAULT_MYSQL_DB`] and is created when missing.
///   Every network read and write of a statement is bounded by
///   [`DEFAULT_IO_TIMEOUT`] (`?io_timeout_ms=N` changes it): a hung server
///   becomes [`StoreError::Unavailable`], not a stall.
/// - `sqlite://path` (`sqlite://./lars.db`, `sqlite:///abs/lars.db`): one file
///   in WAL mode, created when missing. A file another process keeps locked
///   fails with [`StoreError::Unavailable`] after [`DEFAULT_BUSY_TIMEOUT`]
///   (`sqlite://path?busy_timeout_ms=N` changes it).
///
/// Then runs [`Store::init_schema`].
pub fn open(url: &str) -> Result<Store> {
    let inner = if url.starts_with("mysql://") {
        Inner::Mysql(Arc::new(MysqlStore::open(url)?))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                why: "no file path after sqlite://".into(),
            });
        }
        let (path, busy) =
            sqlite_backend::take_busy_timeout(path).map_err(|why| StoreError::InvalidUrl {
                url: url.to_owned(),
                why,
            })?;
        Inner::Sqlite(Arc::new(SqliteStore::open(path, busy)?))
    } else {
        return Err(StoreError::InvalidUrl {
            url: redact(url),
            why: "expected mysql://user:pass@host:port/db or sqlite://path".into(),
        });
    };
    let store = Store { inner };
    store.init_schema()?;
    Ok(store)
}

/// A handle on the store, either backend. Clone it freely: clones share one
/// connection pool (MySQL) or one connection (SQLite). `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Mysql(Arc<MysqlStore>),
    Sqlite(Arc<SqliteStore>),
}

/// Which backend a [`Store`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// MySQL or MariaDB.
    Mysql,
    /// Embedded SQLite.
    Sqlite,
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.inner {
            Inner::Mysql($s) => $e,
            Inner::Sqlite($s) => $e,
        }
    };
}

impl Store {
    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Mysql(_) => Backend::Mysql,
            Inner::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Creates the tables that are missing (original and ours) and the
    /// `RouteVersion` row id 1. Idempotent; never alters an existing table.
    pub fn init_schema(&self) -> Result<()> {
        dispatch!(self, s => s.init_schema())
    }

    /// A cheap round trip proving the database answers.
    pub fn ping(&self) -> Result<()> {
        dispatch!(self, s => s.ping())
    }

    /// Inserts a small demo route set: modid 1, cmdid 1..=3, three hosts each
    /// on 127.0.0.1 ports 9001.. (9001-9003, 9011-9013, 9021-9023), plus
    /// descriptions. Replaces those keys' hosts; returns the last version.
    pub fn seed_demo(&self) -> Result<u64> {
        let mut version = 0;
        for cmdid in 1..=3u32 {
            let key = ModKey::new(1, cmdid);
            let base = 9001 + (cmdid as u16 - 1) * 10;
            let hosts: Vec<HostAddr> = (0..3)
                .map(|i| HostAddr::new(u32::from(std::net::Ipv4Addr::LOCALHOST), base + i))
                .collect();
            version = self.set_hosts(key, &hosts)?;
            self.set_description(DescKind::Cmd, cmdid, &format!("demo command {cmdid}"))?;
        }
        self.set_description(DescKind::Mod, 1, "demo module")?;
        Ok(version)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        dispatch!(self, s => f.debug_tuple("Store").field(s).finish())
    }
}

impl RouteRead for Store {
    fn version(&self) -> Result<u64> {
        dispatch!(self, s => s.version())
    }
    fn load_routes(&self) -> Result<RouteSnapshot> {
        dispatch!(self, s => s.load_routes())
    }
    fn changed_keys(&self, up_to: u64) -> Result<Vec<ModKey>> {
        dispatch!(self, s => s.changed_keys(up_to))
    }
    fn delete_changes(&self, up_to: Option<u64>) -> Result<u64> {
        dispatch!(self, s => s.delete_changes(up_to))
    }
    fn pending_changes(&self) -> Result<Vec<RouteChange>> {
        dispatch!(self, s => s.pending_changes())
    }
}

impl RouteAdmin for Store {
    fn add_host(&self, key: ModKey, host: HostAddr) -> Result<u64> {
        check_host(host)?;
        dispatch!(self, s => s.mutate_routes(key, RouteOp::Add(host)))
    }
    fn remove_host(&self, key: ModKey, host: HostAddr) -> Result<u64> {
        dispatch!(self, s => s.mutate_routes(key, RouteOp::Remove(host)))
    }
    fn set_hosts(&self, key: ModKey, hosts: &[HostAddr]) -> Result<u64> {
        let mut list = Vec::with_capacity(hosts.len());
        for &h in hosts {
            check_host(h)?;
            if !list.contains(&h) {
                list.push(h);
            }
        }
        dispatch!(self, s => s.mutate_routes(key, RouteOp::Set(&list)))
    }
    fn replace_host(&self, key: ModKey, old: HostAddr, new: HostAddr) -> Result<u64> {
        check_host(new)?;
        dispatch!(self, s => s.mutate_routes(key, RouteOp::Replace { old, new }))
    }
    fn delete_key(&self, key: ModKey) -> Result<u64> {
        dispatch!(self, s => s.mutate_routes(key, RouteOp::DeleteKey))
    }
    fn list_routes(&self, filter: RouteFilter) -> Result<Vec<RouteRow>> {
        dispatch!(self, s => s.list_routes(filter))
    }
}

impl Descriptions for Store {
    fn descriptions(&self, kind: DescKind, search: Option<&str>) -> Result<Vec<Description>> {
        dispatch!(self, s => s.descriptions(kind, search))
    }
    fn set_description(&self, kind: DescKind, code: u32, content: &str) -> Result<()> {
        dispatch!(self, s => s.set_description(kind, code, content))
    }
    fn delete_description(&self, kind: DescKind, code: u32) -> Result<()> {
        dispatch!(self, s => s.delete_description(kind, code))
    }
}

impl UserStore for Store {
    fn create_user(&self, username: &str, password_hash: &str) -> Result<User> {
        if username.trim().is_empty() || username.len() > 190 {
            return Err(StoreError::Invalid(format!(
                "user name must be 1..=190 bytes and not blank, got {username:?}"
            )));
        }
        dispatch!(self, s => s.create_user(username, password_hash, now_secs()))
    }
    fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        dispatch!(self, s => s.user_by_name(username))
    }
    fn list_users(&self) -> Result<Vec<User>> {
        dispatch!(self, s => s.list_users())
    }
    fn set_password(&self, username: &str, password_hash: &str) -> Result<()> {
        dispatch!(self, s => s.set_password(username, password_hash))
    }
    fn delete_user(&self, username: &str) -> Result<()> {
        dispatch!(self, s => s.delete_user(username))
    }
}

impl StatsStore for Store {
    fn upsert_call_status(&self, rows: &[CallStatusRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        dispatch!(self, s => s.upsert_call_status(rows))
    }
    fn append_history(&self, rows: &[HistoryRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        dispatch!(self, s => s.append_history(rows, None)).map(|_| ())
    }
    fn append_history_once(&self, batch: u64, at: i64, rows: &[HistoryRow]) -> Result<bool> {
        dispatch!(self, s => s.append_history(rows, Some((batch, at))))
    }
    fn write_flush_once(
        &self,
        batch: u64,
        at: i64,
        history: &[HistoryRow],
        status: &[CallStatusRow],
        rejected: &[RejectedRow],
    ) -> Result<bool> {
        dispatch!(self, s => s.write_flush(history, status, rejected, (batch, at)))
    }
    fn rejected_reports(&self, key: Option<ModKey>, since: i64) -> Result<Vec<RejectedRow>> {
        dispatch!(self, s => s.rejected_reports(key, since))
    }
    fn call_status_of(&self, key: ModKey, caller: u32) -> Result<Vec<CallStatusRow>> {
        dispatch!(self, s => s.call_status_of(key, caller))
    }
    fn prune_batches(&self, older_than: i64) -> Result<u64> {
        dispatch!(self, s => s.prune_batches(older_than))
    }
    fn prune_history(&self, older_than: i64) -> Result<u64> {
        dispatch!(self, s => s.prune_history(older_than))
    }
    fn call_status(&self, key: Option<ModKey>) -> Result<Vec<CallStatusRow>> {
        dispatch!(self, s => s.call_status(key))
    }
    fn for_each_recent_status(
        &self,
        since: i64,
        limit: u64,
        f: &mut dyn FnMut(CallStatusRow),
    ) -> Result<u64> {
        dispatch!(self, s => s.for_each_recent_status(since, limit, f))
    }
    fn history(&self, key: Option<ModKey>, since: i64) -> Result<Vec<HistoryRow>> {
        dispatch!(self, s => s.history(key, since))
    }
    fn history_totals(&self, key: Option<ModKey>, since: i64) -> Result<(u64, u64)> {
        dispatch!(self, s => s.history_totals(key, since))
    }
}

/// A route mutation, applied by a backend inside its version transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RouteOp<'a> {
    Add(HostAddr),
    Remove(HostAddr),
    Set(&'a [HostAddr]),
    /// Reads the key's rows inside the transaction: see
    /// [`RouteAdmin::replace_host`].
    Replace {
        old: HostAddr,
        new: HostAddr,
    },
    DeleteKey,
}

/// What a [`RouteOp::Replace`] does to a key's rows `(row id, host)`, read in
/// id order inside the version transaction: the row to update in place and
/// the rows duplicating `old` to delete, or why nothing may be written.
pub(crate) fn plan_replace(
    key: ModKey,
    rows: &[(i64, HostAddr)],
    old: HostAddr,
    new: HostAddr,
) -> Result<(i64, Vec<i64>)> {
    let mut at_old = rows.iter().filter(|(_, h)| *h == old).map(|(id, _)| *id);
    let Some(first) = at_old.next() else {
        return Err(StoreError::NotFound(format!("route {key} -> {old}")));
    };
    if old != new && rows.iter().any(|(_, h)| *h == new) {
        return Err(StoreError::AlreadyExists(format!("route {key} -> {new}")));
    }
    Ok((first, at_old.collect()))
}

/// The version rule: strictly increasing, and a plausible unix timestamp like
/// the original's `UNIX_TIMESTAMP(NOW())` whenever the clock is ahead.
pub(crate) fn next_version(previous: u64, now: i64) -> u64 {
    let now = u64::try_from(now).unwrap_or(0);
    previous.saturating_add(1).max(now)
}

/// Current unix time in seconds.
pub(crate) fn now_secs() -> i64 {
    i64::try_from(lars_core::time::unix_now()).unwrap_or(i64::MAX)
}

/// Floors unix seconds to the start of their minute.
pub(crate) fn floor_minute(t: i64) -> i64 {
    t - t.rem_euclid(60)
}

fn check_host(host: HostAddr) -> Result<()> {
    if host.ip == 0 || host.port == 0 {
        return Err(StoreError::Invalid(format!(
            "host {host} cannot be routed to (ip and port must be non-zero)"
        )));
    }
    Ok(())
}

/// Validates one stored route row; `None` (with one warning naming the row
/// id) when it cannot be valid. `id` is -1 for tables keyed by their columns.
pub(crate) fn valid_route(
    table: &str,
    id: i64,
    modid: i64,
    cmdid: i64,
    ip: i64,
    port: i64,
) -> Option<(ModKey, HostAddr)> {
    let key = u32::try_from(modid)
        .ok()
        .zip(u32::try_from(cmdid).ok())
        .map(|(m, c)| ModKey::new(m, c));
    let host = u32::try_from(ip)
        .ok()
        .filter(|&ip| ip != 0)
        .zip(u16::try_from(port).ok().filter(|&p| p != 0))
        .map(|(ip, port)| HostAddr::new(ip, port));
    match (key, host) {
        (Some(k), Some(h)) => Some((k, h)),
        _ if id < 0 => {
            tracing::warn!(
                table,
                modid,
                cmdid,
                ip,
                port,
                "skipping invalid {table} row (ip must be non-zero, port 1..=65535)"
            );
            None
        }
        _ => {
            tracing::warn!(
                table,
                row_id = id,
                modid,
                cmdid,
                ip,
                port,
                "skipping invalid {table} row {id} (ip must be non-zero, port 1..=65535)"
            );
            None
        }
    }
}

/// `url` with its password (if any) replaced by `***`, for error messages
/// and logs: `mysql://root:secret@db/lars` -> `mysql://root:***@db/lars`.
/// The query (`?socket=/run/mysqld/mysqld.sock&password=...`) is kept as
/// given except for a `password` parameter, which is replaced too.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (main, query) = split_query(rest);
    let main = match main.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => main.to_owned(),
        },
        None => main.to_owned(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{main}?{q}"),
        None => format!("{scheme}://{main}"),
    }
}

/// `rest` (a URL after `scheme://`) split at its query: `(main, query)`.
fn split_query(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('?') {
        Some((main, q)) => (main, Some(q)),
        None => (rest, None),
    }
}

/// The redacted mysql `url` naming database `db`: the path (if any) is
/// replaced by `/db` and the query kept, so a `?socket=/a/b.sock` URL shows
/// its socket path as given.
pub(crate) fn shown_with_db(url: &str, db: &str) -> String {
    let shown = redact(url);
    let Some((scheme, rest)) = shown.split_once("://") else {
        return shown;
    };
    let (main, query) = split_query(rest);
    // The authority ends at the first '/' after the last '@' (a password
    // cannot contain an unencoded '/').
    let auth_end = main.rfind('@').map_or(0, |at| at + 1);
    let authority = match main[auth_end..].find('/') {
        Some(slash) => &main[..auth_end + slash],
        None => main,
    };
    match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_shareable_across_threads() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Store>();
    }

    #[test]
    fn version_rule_is_strict_and_timestamp_like() {
        assert_eq!(next_version(0, 1_700_000_000), 1_700_000_000);
        assert_eq!(next_version(1_700_000_000, 1_700_000_000), 1_700_000_001);
        assert_eq!(next_version(1_700_000_005, 1_700_000_000), 1_700_000_006);
        assert_eq!(next_version(7, -1), 8);
    }

    #[test]
    fn minutes_floor() {
        assert_eq!(floor_minute(125), 120);
        assert_eq!(floor_minute(120), 120);
        assert_eq!(floor_minute(-1), -60);
    }

    #[test]
    fn route_rows_are_validated() {
        assert!(valid_route("RouteData", 1, 1, 1, 0x7f00_0001, 80).is_some());
        assert!(valid_route("RouteData", 2, 1, 1, 0, 80).is_none());
        assert!(valid_route("RouteData", 3, 1, 1, 1, 0).is_none());
        assert!(valid_route("RouteData", 4, 1, 1, 1, 65_536).is_none());
        assert!(valid_route("RouteData", 5, -1, 1, 1, 80).is_none());
    }

    #[test]
    fn replace_plans_update_the_first_row_and_drop_duplicates() {
        let key = ModKey::new(1, 1);
        let (a, b, c) = (
            HostAddr::new(1, 1),
            HostAddr::new(2, 2),
            HostAddr::new(3, 3),
        );
        let rows = [(10, a), (11, b), (12, a)];
        assert_eq!(plan_replace(key, &rows, a, c).ok(), Some((10, vec![12])));
        assert_eq!(plan_replace(key, &rows, b, b).ok(), Some((11, vec![])));
        assert!(matches!(
            plan_replace(key, &rows, c, b),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            plan_replace(key, &rows, a, b),
            Err(StoreError::AlreadyExists(_))
        ));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("mysql://u:secret@h:1/db"), "mysql://u:***@h:1/db");
        assert_eq!(redact("mysql://u@h:1/db"), "mysql://u@h:1/db");
        assert_eq!(redact("sqlite://./x.db"), "sqlite://./x.db");
        assert_eq!(
            redact("mysql://u:pw@h/db?socket=/run/mysqld/mysqld.sock&password=pw2"),
            "mysql://u:***@h/db?socket=/run/mysqld/mysqld.sock&password=***"
        );
    }

    #[test]
    fn socket_urls_are_shown_as_given() {
        let sock = "?socket=/var/run/mysqld/mysqld.sock";
        assert_eq!(
            shown_with_db(&format!("mysql://root@localhost/lars{sock}"), "lars"),
            format!("mysql://root@localhost/lars{sock}")
        );
        assert_eq!(
            shown_with_db(&format!("mysql://root:pw@localhost{sock}"), "lars_dns"),
            format!("mysql://root:***@localhost/lars_dns{sock}")
        );
        assert_eq!(
            shown_with_db("mysql://root@127.0.0.1:3306", "lars_dns"),
            "mysql://root@127.0.0.1:3306/lars_dns"
        );
        assert_eq!(
            shown_with_db("mysql://root@127.0.0.1:3306/", "lars_dns"),
            "mysql://root@127.0.0.1:3306/lars_dns"
        );
    }

    #[test]
    fn bad_urls_are_rejected() {
        assert!(matches!(
            open("postgres://x"),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            open("sqlite://"),
            Err(StoreError::InvalidUrl { .. })
        ));
    }
}
