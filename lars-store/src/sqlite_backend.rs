//! The embedded SQLite backend: one file in WAL mode, one connection behind a
//! mutex (SQLite serialises writers anyway), `BEGIN IMMEDIATE` for every
//! write transaction, a busy timeout for other processes sharing the file.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lars_core::{HostAddr, ModKey};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::{
    CallStatusRow, DescKind, Description, HistoryRow, RejectedRow, Result, RouteChange,
    RouteFilter, RouteOp, RouteRow, RouteSnapshot, StoreError, User, floor_minute, next_version,
    now_secs, plan_replace, valid_route,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS RouteData (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    modid INTEGER NOT NULL,
    cmdid INTEGER NOT NULL,
    serverip INTEGER NOT NULL,
    serverport INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS RouteVersion (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO RouteVersion(id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS RouteChange (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    modid INTEGER NOT NULL,
    cmdid INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ServerCallStatus (
    modid INTEGER NOT NULL,
    cmdid INTEGER NOT NULL,
    ip INTEGER NOT NULL,
    port INTEGER NOT NULL,
    caller INTEGER NOT NULL,
    succ_cnt INTEGER NOT NULL,
    err_cnt INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    overload TEXT NOT NULL,
    PRIMARY KEY (modid, cmdid, ip, port, caller)
);
CREATE TABLE IF NOT EXISTS ModIDConfig (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    modid INTEGER NOT NULL,
    content TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS CmdIDConfig (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cmdid INTEGER NOT NULL,
    content TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lars_call_history (
    modid INTEGER NOT NULL,
    cmdid INTEGER NOT NULL,
    ip INTEGER NOT NULL,
    port INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    succ INTEGER NOT NULL,
    err INTEGER NOT NULL,
    PRIMARY KEY (modid, cmdid, ip, port, minute)
);
CREATE INDEX IF NOT EXISTS lars_call_history_minute ON lars_call_history(minute);
CREATE TABLE IF NOT EXISTS lars_history_batches (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lars_history_batches_at ON lars_history_batches(at);
CREATE TABLE IF NOT EXISTS lars_rejected_reports (
    modid INTEGER NOT NULL,
    cmdid INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    reports INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    PRIMARY KEY (modid, cmdid, minute)
);
CREATE INDEX IF NOT EXISTS lars_rejected_reports_minute ON lars_rejected_reports(minute);
CREATE TABLE IF NOT EXISTS lars_users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

pub(crate) struct SqliteStore {
    path: String,
    conn: Mutex<Connection>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sqlite://{}", self.path)
    }
}

/// Maps a rusqlite error to a store error with the statement's purpose.
fn err(purpose: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| {
        let unavailable = matches!(
            e.sqlite_error_code(),
            Some(
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::ReadOnly
                    | ErrorCode::DiskFull
                    | ErrorCode::NotADatabase
            )
        );
        let source = Box::new(SqliteCause(e));
        if unavailable {
            StoreError::Unavailable { purpose, source }
        } else {
            StoreError::Query { purpose, source }
        }
    }
}

/// A rusqlite error that says its cause once. rusqlite's `SqliteFailure`
/// with a message displays the message and also chains the bare code's text
/// as its source ("unable to open database file: x.db" then "Error code 14:
/// unable to open database file"); this shows the message with the code.
#[derive(Debug)]
struct SqliteCause(rusqlite::Error);

impl std::fmt::Display for SqliteCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            rusqlite::Error::SqliteFailure(code, Some(msg)) => {
                write!(f, "{msg} (sqlite error {})", code.extended_code)
            }
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for SqliteCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            rusqlite::Error::SqliteFailure(_, Some(_)) => None,
            other => other.source(),
        }
    }
}

/// How long a statement waits for a lock another connection holds before it
/// fails as [`StoreError::Unavailable`] ([`BUSY_TIMEOUT_PARAM`] changes it).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL query parameter setting the busy timeout in milliseconds:
/// `sqlite://./lars.db?busy_timeout_ms=2000`.
pub const BUSY_TIMEOUT_PARAM: &str = "busy_timeout_ms";

/// Splits `path?busy_timeout_ms=N` into the file path and the timeout (the
/// default without the parameter; a `?` followed by anything else is part
/// of the file name).
pub(crate) fn take_busy_timeout(path: &str) -> std::result::Result<(&str, Duration), String> {
    let Some((file, v)) = path
        .rsplit_once('?')
        .and_then(|(f, q)| Some((f, q.strip_prefix(BUSY_TIMEOUT_PARAM)?.strip_prefix('=')?)))
    else {
        return Ok((path, DEFAULT_BUSY_TIMEOUT));
    };
    let ms: u64 = v
        .parse()
        .map_err(|_| format!("{BUSY_TIMEOUT_PARAM}={v}: expected milliseconds"))?;
    if file.is_empty() {
        return Err("no file path after sqlite://".into());
    }
    Ok((file, Duration::from_millis(ms)))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The `(row id, host)` rows of key `(m, c)` in id order, read inside the
/// route transaction `tx`; rows that cannot hold a host are left out.
fn key_rows(tx: &rusqlite::Transaction<'_>, m: i64, c: i64) -> Result<Vec<(i64, HostAddr)>> {
    let purpose = "read the key's RouteData";
    let mut stmt = tx
        .prepare_cached(
            "SELECT id, serverip, serverport FROM RouteData \
             WHERE modid = ?1 AND cmdid = ?2 ORDER BY id",
        )
        .map_err(err(purpose))?;
    let rows = stmt
        .query_map(params![m, c], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(err(purpose))?;
    let mut out = Vec::new();
    for r in rows {
        let (id, ip, port) = r.map_err(err(purpose))?;
        if let (Ok(ip), Ok(port)) = (u32::try_from(ip), u16::try_from(port)) {
            out.push((id, HostAddr::new(ip, port)));
        }
    }
    Ok(out)
}

fn desc_table(kind: DescKind) -> (&'static str, &'static str) {
    match kind {
        DescKind::Mod => ("ModIDConfig", "modid"),
        DescKind::Cmd => ("CmdIDConfig", "cmdid"),
    }
}

impl SqliteStore {
    pub(crate) fn open(path: &str, busy_timeout: Duration) -> Result<Self> {
        let conn = Connection::open(path).map_err(err("open the sqlite file"))?;
        conn.busy_timeout(busy_timeout)
            .map_err(err("set the busy timeout"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err("switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path, mode, "sqlite refused WAL mode");
        }
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: any
        // open transaction was rolled back when it was dropped.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn init_schema(&self) -> Result<()> {
        self.conn()
            .execute_batch(SCHEMA)
            .map_err(err("create the schema"))
    }

    pub(crate) fn ping(&self) -> Result<()> {
        self.conn()
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map(drop)
            .map_err(err("ping"))
    }

    pub(crate) fn version(&self) -> Result<u64> {
        let v: Option<i64> = self
            .conn()
            .query_row("SELECT version FROM RouteVersion WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err("read RouteVersion"))?;
        Ok(v.map_or(0, to_u64))
    }

    pub(crate) fn load_routes(&self) -> Result<RouteSnapshot> {
        let conn = self.conn();
        let purpose = "read RouteData";
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, modid, cmdid, serverip, serverport FROM RouteData ORDER BY id",
            )
            .map_err(err(purpose))?;
        let mut rows = stmt.query([]).map_err(err(purpose))?;
        let mut snap = RouteSnapshot::default();
        while let Some(r) = rows.next().map_err(err(purpose))? {
            let f = |i| r.get::<_, i64>(i).map_err(err(purpose));
            match valid_route("RouteData", f(0)?, f(1)?, f(2)?, f(3)?, f(4)?) {
                Some((key, host)) => snap.routes.entry(key).or_default().push(host),
                None => snap.skipped += 1,
            }
        }
        Ok(snap)
    }

    pub(crate) fn changed_keys(&self, up_to: u64) -> Result<Vec<ModKey>> {
        let conn = self.conn();
        let purpose = "read RouteChange";
        let mut stmt = conn
            .prepare_cached(
                "SELECT DISTINCT modid, cmdid FROM RouteChange WHERE version <= ?1 \
                 ORDER BY modid, cmdid",
            )
            .map_err(err(purpose))?;
        let rows = stmt
            .query_map([to_i64(up_to)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(err(purpose))?;
        let mut keys = Vec::new();
        for r in rows {
            let (m, c) = r.map_err(err(purpose))?;
            if let (Ok(m), Ok(c)) = (u32::try_from(m), u32::try_from(c)) {
                keys.push(ModKey::new(m, c));
            }
        }
        Ok(keys)
    }

    pub(crate) fn delete_changes(&self, up_to: Option<u64>) -> Result<u64> {
        let conn = self.conn();
        let n = match up_to {
            Some(v) => conn.execute("DELETE FROM RouteChange WHERE version <= ?1", [to_i64(v)]),
            None => conn.execute("DELETE FROM RouteChange", []),
        }
        .map_err(err("delete RouteChange"))?;
        Ok(n as u64)
    }

    pub(crate) fn pending_changes(&self) -> Result<Vec<RouteChange>> {
        let conn = self.conn();
        let purpose = "read RouteChange";
        let mut stmt = conn
            .prepare_cached("SELECT id, modid, cmdid, version FROM RouteChange ORDER BY id")
            .map_err(err(purpose))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(err(purpose))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, m, c, v) = r.map_err(err(purpose))?;
            if let (Ok(m), Ok(c)) = (u32::try_from(m), u32::try_from(c)) {
                out.push(RouteChange {
                    id: to_u64(id),
                    key: ModKey::new(m, c),
                    version: to_u64(v),
                });
            }
        }
        Ok(out)
    }

    pub(crate) fn mutate_routes(&self, key: ModKey, op: RouteOp<'_>) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin the route transaction"))?;
        let prev: Option<i64> = tx
            .query_row("SELECT version FROM RouteVersion WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err("read RouteVersion"))?;
        let version = next_version(prev.map_or(0, to_u64), now_secs());
        let (m, c) = (i64::from(key.modid), i64::from(key.cmdid));
        let insert = |tx: &rusqlite::Transaction<'_>, h: HostAddr| {
            tx.prepare_cached(
                "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![m, c, i64::from(h.ip), i64::from(h.port)]))
            .map_err(err("insert RouteData"))
        };
        match op {
            RouteOp::Add(h) => {
                let exists = tx
                    .query_row(
                        "SELECT 1 FROM RouteData WHERE modid = ?1 AND cmdid = ?2 \
                         AND serverip = ?3 AND serverport = ?4 LIMIT 1",
                        params![m, c, i64::from(h.ip), i64::from(h.port)],
                        |_| Ok(()),
                    )
                    .optional()
                    .map_err(err("check RouteData"))?
                    .is_some();
                if exists {
                    return Err(StoreError::AlreadyExists(format!("route {key} -> {h}")));
                }
                insert(&tx, h)?;
            }
            RouteOp::Remove(h) => {
                let n = tx
                    .execute(
                        "DELETE FROM RouteData WHERE modid = ?1 AND cmdid = ?2 \
                         AND serverip = ?3 AND serverport = ?4",
                        params![m, c, i64::from(h.ip), i64::from(h.port)],
                    )
                    .map_err(err("delete RouteData"))?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("route {key} -> {h}")));
                }
            }
            RouteOp::Set(hosts) => {
                tx.execute(
                    "DELETE FROM RouteData WHERE modid = ?1 AND cmdid = ?2",
                    params![m, c],
                )
                .map_err(err("delete RouteData"))?;
                for &h in hosts {
                    insert(&tx, h)?;
                }
            }
            RouteOp::Replace { old, new } => {
                let rows = key_rows(&tx, m, c)?;
                let (at, duplicates) = plan_replace(key, &rows, old, new)?;
                tx.execute(
                    "UPDATE RouteData SET serverip = ?2, serverport = ?3 WHERE id = ?1",
                    params![at, i64::from(new.ip), i64::from(new.port)],
                )
                .map_err(err("update RouteData"))?;
                for id in duplicates {
                    tx.execute("DELETE FROM RouteData WHERE id = ?1", [id])
                        .map_err(err("delete RouteData"))?;
                }
            }
            RouteOp::DeleteKey => {
                let n = tx
                    .execute(
                        "DELETE FROM RouteData WHERE modid = ?1 AND cmdid = ?2",
                        params![m, c],
                    )
                    .map_err(err("delete RouteData"))?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("routes of {key}")));
                }
            }
        }
        tx.execute(
            "INSERT INTO RouteChange(modid, cmdid, version) VALUES (?1, ?2, ?3)",
            params![m, c, to_i64(version)],
        )
        .map_err(err("insert RouteChange"))?;
        let v = to_i64(version);
        if prev.is_some() {
            tx.execute("UPDATE RouteVersion SET version = ?1 WHERE id = 1", [v])
        } else {
            tx.execute("INSERT INTO RouteVersion(id, version) VALUES (1, ?1)", [v])
        }
        .map_err(err("write RouteVersion"))?;
        tx.commit().map_err(err("commit the route transaction"))?;
        Ok(version)
    }

    pub(crate) fn list_routes(&self, filter: RouteFilter) -> Result<Vec<RouteRow>> {
        let conn = self.conn();
        let purpose = "list RouteData";
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, modid, cmdid, serverip, serverport FROM RouteData \
                 WHERE (?1 IS NULL OR modid = ?1) AND (?2 IS NULL OR cmdid = ?2) \
                 ORDER BY modid, cmdid, id",
            )
            .map_err(err(purpose))?;
        let mut rows = stmt
            .query(params![filter.modid, filter.cmdid])
            .map_err(err(purpose))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err(purpose))? {
            let f = |i| r.get::<_, i64>(i).map_err(err(purpose));
            let id = f(0)?;
            if let Some((key, host)) = valid_route("RouteData", id, f(1)?, f(2)?, f(3)?, f(4)?) {
                out.push(RouteRow {
                    id: to_u64(id),
                    key,
                    host,
                });
            }
        }
        Ok(out)
    }

    pub(crate) fn descriptions(
        &self,
        kind: DescKind,
        search: Option<&str>,
    ) -> Result<Vec<Description>> {
        let (table, col) = desc_table(kind);
        let conn = self.conn();
        let purpose = "read descriptions";
        let sql = format!(
            "SELECT id, {col}, content FROM {table} \
             WHERE ?1 IS NULL OR instr(content, ?1) > 0 OR CAST({col} AS TEXT) = ?1 \
             ORDER BY {col}, id"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(err(purpose))?;
        let rows = stmt
            .query_map([search], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(err(purpose))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, code, content) = r.map_err(err(purpose))?;
            if let Ok(code) = u32::try_from(code) {
                out.push(Description {
                    id: to_u64(id),
                    code,
                    content,
                });
            }
        }
        Ok(out)
    }

    pub(crate) fn set_description(&self, kind: DescKind, code: u32, content: &str) -> Result<()> {
        let (table, col) = desc_table(kind);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin the description transaction"))?;
        let n = tx
            .execute(
                &format!("UPDATE {table} SET content = ?2 WHERE {col} = ?1"),
                params![code, content],
            )
            .map_err(err("update a description"))?;
        if n == 0 {
            tx.execute(
                &format!("INSERT INTO {table}({col}, content) VALUES (?1, ?2)"),
                params![code, content],
            )
            .map_err(err("insert a description"))?;
        }
        tx.commit().map_err(err("commit a description"))
    }

    pub(crate) fn delete_description(&self, kind: DescKind, code: u32) -> Result<()> {
        let (table, col) = desc_table(kind);
        let n = self
            .conn()
            .execute(&format!("DELETE FROM {table} WHERE {col} = ?1"), [code])
            .map_err(err("delete a description"))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("{table} {col} {code}")));
        }
        Ok(())
    }

    pub(crate) fn create_user(&self, name: &str, hash: &str, now: i64) -> Result<User> {
        let conn = self.conn();
        let r = conn.execute(
            "INSERT INTO lars_users(username, password_hash, created_at) VALUES (?1, ?2, ?3)",
            params![name, hash, now],
        );
        match r {
            Ok(_) => Ok(User {
                id: to_u64(conn.last_insert_rowid()),
                username: name.to_owned(),
                password_hash: hash.to_owned(),
                created_at: now,
            }),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                Err(StoreError::AlreadyExists(format!("user {name:?}")))
            }
            Err(e) => Err(err("insert a user")(e)),
        }
    }

    fn users(&self, by_name: Option<&str>) -> Result<Vec<User>> {
        let conn = self.conn();
        let purpose = "read users";
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, username, password_hash, created_at FROM lars_users \
                 WHERE ?1 IS NULL OR username = ?1 ORDER BY username",
            )
            .map_err(err(purpose))?;
        let rows = stmt
            .query_map([by_name], |r| {
                Ok(User {
                    id: to_u64(r.get(0)?),
                    username: r.get(1)?,
                    password_hash: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })
            .map_err(err(purpose))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err(purpose))
    }

    pub(crate) fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        Ok(self.users(Some(name))?.into_iter().next())
    }

    pub(crate) fn list_users(&self) -> Result<Vec<User>> {
        self.users(None)
    }

    pub(crate) fn set_password(&self, name: &str, hash: &str) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE lars_users SET password_hash = ?2 WHERE username = ?1",
                params![name, hash],
            )
            .map_err(err("update a user"))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("user {name:?}")));
        }
        Ok(())
    }

    pub(crate) fn delete_user(&self, name: &str) -> Result<()> {
        let n = self
            .conn()
            .execute("DELETE FROM lars_users WHERE username = ?1", [name])
            .map_err(err("delete a user"))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("user {name:?}")));
        }
        Ok(())
    }

    pub(crate) fn upsert_call_status(&self, rows: &[CallStatusRow]) -> Result<()> {
        let mut conn = self.conn();
        let purpose = "upsert ServerCallStatus";
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err(purpose))?;
        upsert_status_in(&tx, rows)?;
        tx.commit().map_err(err("commit ServerCallStatus"))
    }

    pub(crate) fn append_history(
        &self,
        rows: &[HistoryRow],
        mark: Option<(u64, i64)>,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let purpose = "append lars_call_history";
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err(purpose))?;
        if let Some(mark) = mark {
            if !mark_batch_in(&tx, mark)? {
                return Ok(false);
            }
        }
        append_history_in(&tx, rows)?;
        tx.commit().map_err(err("commit lars_call_history"))?;
        Ok(true)
    }

    /// One chunk of a reporter's flush in one transaction: batch `mark`
    /// recorded, `history` added and `status` upserted, or nothing when the
    /// batch is already recorded (`false`).
    pub(crate) fn write_flush(
        &self,
        history: &[HistoryRow],
        status: &[CallStatusRow],
        rejected: &[RejectedRow],
        mark: (u64, i64),
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("write a flush"))?;
        if !mark_batch_in(&tx, mark)? {
            return Ok(false);
        }
        append_history_in(&tx, history)?;
        upsert_status_in(&tx, status)?;
        add_rejected_in(&tx, rejected)?;
        tx.commit().map_err(err("commit a flush"))?;
        Ok(true)
    }

    /// `ServerCallStatus` rows of `key` reported by `caller`.
    pub(crate) fn call_status_of(&self, key: ModKey, caller: u32) -> Result<Vec<CallStatusRow>> {
        Ok(self
            .call_status(Some(key))?
            .into_iter()
            .filter(|r| r.caller == caller)
            .collect())
    }

    pub(crate) fn prune_batches(&self, older_than: i64) -> Result<u64> {
        self.delete_before(
            "DELETE FROM lars_history_batches WHERE at < ?1",
            "prune lars_history_batches",
            older_than,
        )
    }

    pub(crate) fn prune_history(&self, older_than: i64) -> Result<u64> {
        self.delete_before(
            "DELETE FROM lars_rejected_reports WHERE minute < ?1",
            "prune lars_rejected_reports",
            older_than,
        )?;
        self.delete_before(
            "DELETE FROM lars_call_history WHERE minute < ?1",
            "prune lars_call_history",
            older_than,
        )
    }

    /// Runs a `DELETE ... WHERE <time> < ?1`; returns the rows deleted.
    fn delete_before(&self, sql: &str, purpose: &'static str, older_than: i64) -> Result<u64> {
        let n = self
            .conn()
            .execute(sql, [older_than])
            .map_err(err(purpose))?;
        Ok(n as u64)
    }

    pub(crate) fn call_status(&self, key: Option<ModKey>) -> Result<Vec<CallStatusRow>> {
        let conn = self.conn();
        let purpose = "read ServerCallStatus";
        let mut stmt = conn
            .prepare_cached(
                "SELECT modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload \
                 FROM ServerCallStatus WHERE ?1 IS NULL OR (modid = ?1 AND cmdid = ?2) \
                 ORDER BY modid, cmdid, ip, port, caller",
            )
            .map_err(err(purpose))?;
        let mut rows = stmt
            .query(params![key.map(|k| k.modid), key.map(|k| k.cmdid)])
            .map_err(err(purpose))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err(purpose))? {
            let f = |i| r.get::<_, i64>(i).map_err(err(purpose));
            let overload: String = r.get(8).map_err(err(purpose))?;
            let Some((key, host)) = valid_route("ServerCallStatus", -1, f(0)?, f(1)?, f(2)?, f(3)?)
            else {
                continue;
            };
            out.push(CallStatusRow {
                key,
                host,
                caller: f(4)? as u32,
                succ_cnt: to_u64(f(5)?),
                err_cnt: to_u64(f(6)?),
                ts: f(7)?,
                overload: overload == "1",
            });
        }
        Ok(out)
    }

    pub(crate) fn for_each_recent_status(
        &self,
        since: i64,
        limit: u64,
        f: &mut dyn FnMut(CallStatusRow),
    ) -> Result<u64> {
        let conn = self.conn();
        let purpose = "read recent ServerCallStatus";
        let mut stmt = conn
            .prepare_cached(
                "SELECT modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload \
                 FROM ServerCallStatus WHERE ts >= ?1 LIMIT ?2",
            )
            .map_err(err(purpose))?;
        let mut rows = stmt
            .query(params![since, to_i64(limit)])
            .map_err(err(purpose))?;
        let mut handed = 0;
        while let Some(r) = rows.next().map_err(err(purpose))? {
            let g = |i| r.get::<_, i64>(i).map_err(err(purpose));
            let overload: String = r.get(8).map_err(err(purpose))?;
            let Some((key, host)) = valid_route("ServerCallStatus", -1, g(0)?, g(1)?, g(2)?, g(3)?)
            else {
                continue;
            };
            f(CallStatusRow {
                key,
                host,
                caller: g(4)? as u32,
                succ_cnt: to_u64(g(5)?),
                err_cnt: to_u64(g(6)?),
                ts: g(7)?,
                overload: overload == "1",
            });
            handed += 1;
        }
        Ok(handed)
    }

    pub(crate) fn history(&self, key: Option<ModKey>, since: i64) -> Result<Vec<HistoryRow>> {
        let conn = self.conn();
        let purpose = "read lars_call_history";
        let mut stmt = conn
            .prepare_cached(
                "SELECT modid, cmdid, ip, port, minute, succ, err FROM lars_call_history \
                 WHERE minute >= ?3 AND (?1 IS NULL OR (modid = ?1 AND cmdid = ?2)) \
                 ORDER BY minute, modid, cmdid, ip, port",
            )
            .map_err(err(purpose))?;
        let mut rows = stmt
            .query(params![key.map(|k| k.modid), key.map(|k| k.cmdid), since])
            .map_err(err(purpose))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err(purpose))? {
            let f = |i| r.get::<_, i64>(i).map_err(err(purpose));
            let Some((key, host)) =
                valid_route("lars_call_history", -1, f(0)?, f(1)?, f(2)?, f(3)?)
            else {
                continue;
            };
            out.push(HistoryRow {
                key,
                host,
                minute: f(4)?,
                succ: to_u64(f(5)?),
                err: to_u64(f(6)?),
            });
        }
        Ok(out)
    }

    pub(crate) fn rejected_reports(
        &self,
        key: Option<ModKey>,
        since: i64,
    ) -> Result<Vec<RejectedRow>> {
        let conn = self.conn();
        let purpose = "read lars_rejected_reports";
        let mut stmt = conn
            .prepare_cached(
                "SELECT modid, cmdid, minute, reports, calls FROM lars_rejected_reports \
                 WHERE minute >= ?3 AND (?1 IS NULL OR (modid = ?1 AND cmdid = ?2)) \
                 ORDER BY minute, modid, cmdid",
            )
            .map_err(err(purpose))?;
        let mut rows = stmt
            .query(params![key.map(|k| k.modid), key.map(|k| k.cmdid), since])
            .map_err(err(purpose))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err(purpose))? {
            let g = |i| r.get::<_, i64>(i).map_err(err(purpose));
            let (Ok(modid), Ok(cmdid)) = (u32::try_from(g(0)?), u32::try_from(g(1)?)) else {
                continue;
            };
            out.push(RejectedRow {
                key: ModKey::new(modid, cmdid),
                minute: g(2)?,
                reports: to_u64(g(3)?),
                calls: to_u64(g(4)?),
            });
        }
        Ok(out)
    }

    pub(crate) fn history_totals(&self, key: Option<ModKey>, since: i64) -> Result<(u64, u64)> {
        let (s, e): (i64, i64) = self
            .conn()
            .query_row(
                "SELECT COALESCE(SUM(succ), 0), COALESCE(SUM(err), 0) FROM lars_call_history \
                 WHERE minute >= ?3 AND (?1 IS NULL OR (modid = ?1 AND cmdid = ?2))",
                params![key.map(|k| k.modid), key.map(|k| k.cmdid), since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err("sum lars_call_history"))?;
        Ok((to_u64(s), to_u64(e)))
    }
}

/// Records batch `id` (time `at`) in `lars_history_batches` inside `tx`;
/// `false` when it is already there (committed before, its acknowledgement
/// lost).
fn mark_batch_in(tx: &rusqlite::Transaction<'_>, (id, at): (u64, i64)) -> Result<bool> {
    // The id's bit pattern in SQLite's signed integer.
    let n = tx
        .execute(
            "INSERT OR IGNORE INTO lars_history_batches(id, at) VALUES (?1, ?2)",
            params![id as i64, at],
        )
        .map_err(err("mark a history batch"))?;
    Ok(n > 0)
}

/// Adds `rows` to `lars_call_history` inside `tx`.
fn append_history_in(tx: &rusqlite::Transaction<'_>, rows: &[HistoryRow]) -> Result<()> {
    let purpose = "append lars_call_history";
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO lars_call_history(modid, cmdid, ip, port, minute, succ, err) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT(modid, cmdid, ip, port, minute) DO UPDATE SET \
             succ = succ + excluded.succ, err = err + excluded.err",
        )
        .map_err(err(purpose))?;
    for r in rows {
        stmt.execute(params![
            r.key.modid,
            r.key.cmdid,
            r.host.ip,
            r.host.port,
            floor_minute(r.minute),
            to_i64(r.succ),
            to_i64(r.err),
        ])
        .map_err(err(purpose))?;
    }
    Ok(())
}

/// Upserts `rows` into `ServerCallStatus` inside `tx`.
fn upsert_status_in(tx: &rusqlite::Transaction<'_>, rows: &[CallStatusRow]) -> Result<()> {
    let purpose = "upsert ServerCallStatus";
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO ServerCallStatus\
             (modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT(modid, cmdid, ip, port, caller) DO UPDATE SET \
             succ_cnt = excluded.succ_cnt, err_cnt = excluded.err_cnt, \
             ts = excluded.ts, overload = excluded.overload",
        )
        .map_err(err(purpose))?;
    for r in rows {
        stmt.execute(params![
            r.key.modid,
            r.key.cmdid,
            r.host.ip,
            r.host.port,
            r.caller,
            to_i64(r.succ_cnt),
            to_i64(r.err_cnt),
            r.ts,
            if r.overload { "1" } else { "0" },
        ])
        .map_err(err(purpose))?;
    }
    Ok(())
}

/// Adds `rows` to `lars_rejected_reports` inside `tx`.
fn add_rejected_in(tx: &rusqlite::Transaction<'_>, rows: &[RejectedRow]) -> Result<()> {
    let purpose = "add lars_rejected_reports";
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO lars_rejected_reports(modid, cmdid, minute, reports, calls) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(modid, cmdid, minute) DO UPDATE SET \
             reports = min(reports + excluded.reports, 4611686018427387904), \
             calls = min(calls + excluded.calls, 4611686018427387904)",
        )
        .map_err(err(purpose))?;
    for r in rows {
        stmt.execute(params![
            r.key.modid,
            r.key.cmdid,
            floor_minute(r.minute),
            to_i64(r.reports.min(1 << 62)),
            to_i64(r.calls.min(1 << 62)),
        ])
        .map_err(err(purpose))?;
    }
    Ok(())
}
