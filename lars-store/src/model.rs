//! Row types and the capability traits every backend implements.

use std::collections::HashMap;

use lars_core::{HostAddr, ModKey};

use crate::StoreError;

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// All valid routes of the `RouteData` table, grouped by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSnapshot {
    /// Hosts of each key, in row-id order.
    pub routes: HashMap<ModKey, Vec<HostAddr>>,
    /// Rows skipped because they cannot be valid (ip 0, port 0 or > 65535,
    /// ids out of range); each was logged once with its row id.
    pub skipped: usize,
}

/// One `RouteData` row, with its id, for the admin side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRow {
    /// `RouteData.id`.
    pub id: u64,
    /// `(modid, cmdid)`.
    pub key: ModKey,
    /// `(serverip, serverport)`.
    pub host: HostAddr,
}

/// Which routes [`RouteAdmin::list_routes`] returns; `None` matches all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// Only this modid.
    pub modid: Option<u32>,
    /// Only this cmdid.
    pub cmdid: Option<u32>,
}

/// One pending `RouteChange` row: `key` changed at `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChange {
    /// `RouteChange.id`.
    pub id: u64,
    /// The changed key.
    pub key: ModKey,
    /// The route version written with the change.
    pub version: u64,
}

/// Which description table: `ModIDConfig` or `CmdIDConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DescKind {
    /// `ModIDConfig(id, modid, content)`.
    Mod,
    /// `CmdIDConfig(id, cmdid, content)`.
    Cmd,
}

/// A description of a modid or cmdid shown by the admin console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Row id.
    pub id: u64,
    /// The modid (for [`DescKind::Mod`]) or cmdid (for [`DescKind::Cmd`]).
    pub code: u32,
    /// Free text.
    pub content: String,
}

/// A user of the web console (table `lars_users`). The hash is opaque here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: u64,
    /// Unique login name.
    pub username: String,
    /// Password hash as produced by the web crate (argon2 PHC string).
    pub password_hash: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

// The statistics rows are lars-stats' types: the store persists what the
// statistics contract defines (`ServerCallStatus`, `lars_call_history`).
pub use lars_stats::{CallStatusRow, HistoryRow, RejectedRow};

/// Route reading, as the dns service needs it.
pub trait RouteRead {
    /// `RouteVersion.version` (row id 1); 0 when never set.
    fn version(&self) -> Result<u64>;
    /// All valid routes; invalid rows are skipped and counted.
    fn load_routes(&self) -> Result<RouteSnapshot>;
    /// Distinct keys of the `RouteChange` rows with `version <= up_to`,
    /// sorted.
    fn changed_keys(&self, up_to: u64) -> Result<Vec<ModKey>>;
    /// Deletes the processed `RouteChange` rows: those with
    /// `version <= up_to`, or all of them for `None` (start-up). Returns the
    /// number deleted.
    fn delete_changes(&self, up_to: Option<u64>) -> Result<u64>;
    /// All pending `RouteChange` rows, oldest first (console page).
    fn pending_changes(&self) -> Result<Vec<RouteChange>>;
}

/// Route administration. Every mutation is one transaction that writes the
/// routes, a new `RouteVersion` (strictly greater than the previous one) and
/// one `RouteChange` row per touched key, and returns the new version.
pub trait RouteAdmin {
    /// Adds `host` to `key`; [`StoreError::AlreadyExists`] when present.
    fn add_host(&self, key: ModKey, host: HostAddr) -> Result<u64>;
    /// Removes `host` from `key`; [`StoreError::NotFound`] when absent.
    fn remove_host(&self, key: ModKey, host: HostAddr) -> Result<u64>;
    /// Replaces the host list of `key` (duplicates collapsed; an empty list
    /// deletes the key).
    fn set_hosts(&self, key: ModKey, hosts: &[HostAddr]) -> Result<u64>;
    /// Changes host `old` of `key` into `new` in place (the row keeps its id,
    /// so the host keeps its place in the list). The key's rows are read and
    /// written inside the version transaction, so concurrent edits of one
    /// key never overwrite each other. [`StoreError::NotFound`] when `old`
    /// is not a route of `key`, [`StoreError::AlreadyExists`] when `new`
    /// already is (and differs from `old`), [`StoreError::Invalid`] when
    /// `new` cannot be routed to; nothing is written then. Rows that
    /// duplicate `old` are removed with it.
    fn replace_host(&self, key: ModKey, old: HostAddr, new: HostAddr) -> Result<u64>;
    /// Deletes every route of `key`; [`StoreError::NotFound`] when it has
    /// none.
    fn delete_key(&self, key: ModKey) -> Result<u64>;
    /// Valid `RouteData` rows matching `filter`, ordered by key then id.
    fn list_routes(&self, filter: RouteFilter) -> Result<Vec<RouteRow>>;
}

/// ModID / CmdID descriptions (`ModIDConfig`, `CmdIDConfig`).
pub trait Descriptions {
    /// Descriptions of `kind`, ordered by code; `search` keeps those whose
    /// content contains it or whose code equals it.
    fn descriptions(&self, kind: DescKind, search: Option<&str>) -> Result<Vec<Description>>;
    /// Sets the description of `code` (insert or update).
    fn set_description(&self, kind: DescKind, code: u32, content: &str) -> Result<()>;
    /// Deletes the description of `code`; [`StoreError::NotFound`] when none.
    fn delete_description(&self, kind: DescKind, code: u32) -> Result<()>;
}

/// Web-console users (`lars_users`).
pub trait UserStore {
    /// Creates a user; [`StoreError::AlreadyExists`] when the name is taken.
    fn create_user(&self, username: &str, password_hash: &str) -> Result<User>;
    /// The user called `username`, if any.
    fn user_by_name(&self, username: &str) -> Result<Option<User>>;
    /// All users, by name.
    fn list_users(&self) -> Result<Vec<User>>;
    /// Replaces a user's password hash; [`StoreError::NotFound`] when absent.
    fn set_password(&self, username: &str, password_hash: &str) -> Result<()>;
    /// Deletes a user; [`StoreError::NotFound`] when absent.
    fn delete_user(&self, username: &str) -> Result<()>;
}

/// Call statistics, written by the reporter and read by the console.
pub trait StatsStore {
    /// Upserts the latest counters (`ServerCallStatus`), all rows in one
    /// transaction, multi-row statements.
    fn upsert_call_status(&self, rows: &[CallStatusRow]) -> Result<()>;
    /// Adds per-minute deltas to `lars_call_history`, all rows in one
    /// transaction; the same `(key, host, minute)` adds up.
    fn append_history(&self, rows: &[HistoryRow]) -> Result<()>;
    /// [`append_history`](Self::append_history) at most once per `batch`:
    /// the same transaction records `batch` (a caller-chosen unique id) with
    /// time `at` (unix seconds) in `lars_history_batches`, and a batch already
    /// recorded writes nothing and returns `Ok(false)`. A writer whose commit
    /// failed ambiguously (the connection dropped before the acknowledgement)
    /// retries with the same id and never adds the rows twice.
    fn append_history_once(&self, batch: u64, at: i64, rows: &[HistoryRow]) -> Result<bool>;
    /// One chunk of a reporter's flush in ONE transaction, at most once per
    /// `batch` (recorded with time `at` as in
    /// [`append_history_once`](Self::append_history_once)): `history` added
    /// to `lars_call_history` and `status` upserted into `ServerCallStatus`,
    /// or nothing at all (`Ok(false)`) when `batch` is already recorded. The
    /// persisted counters of a stream and its persisted history therefore
    /// never disagree, whenever the writer dies: whoever resumes from the
    /// counters counts each call once.
    ///
    /// `rejected`: reports the reporter's trust limits rejected, added to
    /// `lars_rejected_reports` per key and minute in the same transaction
    /// (the console reads them to say a key's numbers were clipped).
    fn write_flush_once(
        &self,
        batch: u64,
        at: i64,
        history: &[HistoryRow],
        status: &[CallStatusRow],
        rejected: &[RejectedRow],
    ) -> Result<bool>;
    /// Rejected-report rows of `key` (all for `None`) with `minute >=
    /// since`, ordered by minute, key.
    fn rejected_reports(&self, key: Option<ModKey>, since: i64) -> Result<Vec<RejectedRow>>;
    /// The `ServerCallStatus` rows of `key` reported by `caller` (all its
    /// hosts), in no particular order: a reporter re-reads a stream's
    /// persisted counters with it when another reporter may have counted the
    /// stream meanwhile. Rows with an invalid host are skipped.
    fn call_status_of(&self, key: ModKey, caller: u32) -> Result<Vec<CallStatusRow>>;
    /// Forgets the batch ids recorded before `older_than` (unix seconds);
    /// returns how many.
    fn prune_batches(&self, older_than: i64) -> Result<u64>;
    /// Deletes history rows with `minute < older_than` (unix seconds);
    /// returns the number deleted. The rejected-report rows of those minutes
    /// go too (not counted).
    fn prune_history(&self, older_than: i64) -> Result<u64>;
    /// `ServerCallStatus` rows of `key` (all for `None`), ordered by key,
    /// host, caller. Rows with an invalid host are skipped.
    fn call_status(&self, key: Option<ModKey>) -> Result<Vec<CallStatusRow>>;
    /// Hands `f` each `ServerCallStatus` row with `ts >= since`, at most
    /// `limit` of them, in no particular order, one at a time as they come
    /// off the connection (never collected): a restarting reporter resumes
    /// its counters from them. Returns how many rows `f` saw. Rows with an
    /// invalid host are skipped. After a connection error before the first
    /// row the read is tried once more; after that the error is returned
    /// (the rows `f` already saw stay seen).
    fn for_each_recent_status(
        &self,
        since: i64,
        limit: u64,
        f: &mut dyn FnMut(CallStatusRow),
    ) -> Result<u64>;
    /// History rows of `key` (all for `None`) with `minute >= since`, ordered
    /// by minute, key, host.
    fn history(&self, key: Option<ModKey>, since: i64) -> Result<Vec<HistoryRow>>;
    /// `(sum succ, sum err)` of the history of `key` (all for `None`) with
    /// `minute >= since`.
    fn history_totals(&self, key: Option<ModKey>, since: i64) -> Result<(u64, u64)>;
}
