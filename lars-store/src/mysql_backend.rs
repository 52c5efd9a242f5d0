//! The MySQL / MariaDB backend: a connection pool, prepared statements only,
//! multi-row statements for batches, one retry of an operation after a
//! connection-level error (the pool pings and replaces dead connections).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lars_core::{HostAddr, ModKey};
use mysql::prelude::Queryable;
use mysql::{
    Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, PooledConn, TxOpts, Value,
};

use crate::{
    CallStatusRow, DEFAULT_MYSQL_DB, DescKind, Description, HistoryRow, RejectedRow, Result,
    RouteChange, RouteFilter, RouteOp, RouteRow, RouteSnapshot, StoreError, User, floor_minute,
    next_version, now_secs, plan_replace, redact, shown_with_db, valid_route,
};

/// Rows per multi-row statement: 2,000 rows x 9 columns stays far below the
/// 65,535 placeholders of a prepared statement and a 16 MiB packet.
const CHUNK_ROWS: usize = 2_000;

/// The default bound on one network read or write of a statement
/// ([`IO_TIMEOUT_PARAM`] changes it): a server that stops answering (hung,
/// stopped, a network path that drops packets) turns into an
/// [`StoreError::Unavailable`] after this long instead of a silent stall.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL query parameter (ours, removed before the driver sees the URL)
/// setting the I/O timeout in milliseconds: `mysql://...?io_timeout_ms=5000`.
pub const IO_TIMEOUT_PARAM: &str = "io_timeout_ms";

/// Rows per pruning `DELETE`: a week of history at once could otherwise run
/// past the I/O timeout (and hold its locks as long).
const DELETE_CHUNK: u64 = 10_000;

/// The TCP connect timeout (or the I/O timeout when shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Removes [`IO_TIMEOUT_PARAM`] from `url`'s query: `(url without it, the
/// timeout or the default)`.
fn take_io_timeout(url: &str) -> std::result::Result<(String, Duration), String> {
    let Some((main, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), DEFAULT_IO_TIMEOUT));
    };
    let mut timeout = DEFAULT_IO_TIMEOUT;
    let mut rest = Vec::new();
    for p in query.split('&') {
        match p.split_once('=') {
            Some((k, v)) if k == IO_TIMEOUT_PARAM => {
                let ms: u64 =
                    v.parse().ok().filter(|&ms| ms > 0).ok_or_else(|| {
                        format!("{IO_TIMEOUT_PARAM}={v}: expected milliseconds > 0")
                    })?;
                timeout = Duration::from_millis(ms);
            }
            _ => rest.push(p),
        }
    }
    let url = if rest.is_empty() {
        main.to_owned()
    } else {
        format!("{main}?{}", rest.join("&"))
    };
    Ok((url, timeout))
}

/// Fresh-database DDL. The original tables keep the original names and
/// column names (`lars_dns.sql`); on an existing database `IF NOT EXISTS`
/// leaves them untouched.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS `RouteData` (
        `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
        `modid` int(10) unsigned NOT NULL,
        `cmdid` int(10) unsigned NOT NULL,
        `serverip` int(10) unsigned NOT NULL,
        `serverport` int(10) unsigned NOT NULL,
        PRIMARY KEY (`id`),
        KEY `idx_key` (`modid`, `cmdid`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `RouteVersion` (
        `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
        `version` int(10) unsigned NOT NULL,
        PRIMARY KEY (`id`)
    ) ENGINE=InnoDB",
    "INSERT IGNORE INTO `RouteVersion`(`id`, `version`) VALUES (1, 0)",
    "CREATE TABLE IF NOT EXISTS `RouteChange` (
        `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
        `modid` int(10) unsigned NOT NULL,
        `cmdid` int(10) unsigned NOT NULL,
        `version` bigint(20) unsigned NOT NULL,
        PRIMARY KEY (`id`)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `ServerCallStatus` (
        `modid` int(10) unsigned NOT NULL,
        `cmdid` int(10) unsigned NOT NULL,
        `ip` int(10) unsigned NOT NULL,
        `port` int(10) unsigned NOT NULL,
        `caller` int(10) unsigned NOT NULL,
        `succ_cnt` bigint(20) unsigned NOT NULL,
        `err_cnt` bigint(20) unsigned NOT NULL,
        `ts` bigint(20) NOT NULL,
        `overload` char(1) NOT NULL,
        PRIMARY KEY (`modid`, `cmdid`, `ip`, `port`, `caller`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `ModIDConfig` (
        `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
        `modid` int(10) unsigned NOT NULL,
        `content` varchar(1024) NOT NULL,
        PRIMARY KEY (`id`),
        UNIQUE KEY `uk_modid` (`modid`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `CmdIDConfig` (
        `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
        `cmdid` int(10) unsigned NOT NULL,
        `content` varchar(1024) NOT NULL,
        PRIMARY KEY (`id`),
        UNIQUE KEY `uk_cmdid` (`cmdid`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS `lars_call_history` (
        `modid` int(10) unsigned NOT NULL,
        `cmdid` int(10) unsigned NOT NULL,
        `ip` int(10) unsigned NOT NULL,
        `port` int(10) unsigned NOT NULL,
        `minute` bigint(20) NOT NULL,
        `succ` bigint(20) unsigned NOT NULL,
        `err` bigint(20) unsigned NOT NULL,
        PRIMARY KEY (`modid`, `cmdid`, `ip`, `port`, `minute`),
        KEY `idx_minute` (`minute`)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `lars_history_batches` (
        `id` bigint(20) unsigned NOT NULL,
        `at` bigint(20) NOT NULL,
        PRIMARY KEY (`id`),
        KEY `idx_at` (`at`)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `lars_rejected_reports` (
        `modid` int(10) unsigned NOT NULL,
        `cmdid` int(10) unsigned NOT NULL,
        `minute` bigint(20) NOT NULL,
        `reports` bigint(20) unsigned NOT NULL,
        `calls` bigint(20) unsigned NOT NULL,
        PRIMARY KEY (`modid`, `cmdid`, `minute`),
        KEY `idx_minute` (`minute`)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `lars_users` (
        `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
        `username` varchar(190) NOT NULL,
        `password_hash` varchar(512) NOT NULL,
        `created_at` bigint(20) NOT NULL,
        PRIMARY KEY (`id`),
        UNIQUE KEY `uk_username` (`username`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

pub(crate) struct MysqlStore {
    pool: Pool,
    url: String,
    /// True when `ServerCallStatus` is the original signed `int(11)` table:
    /// ip and caller are then stored as their 32-bit two's-complement
    /// pattern and counters are capped at `i32::MAX`.
    signed_stats: AtomicBool,
    /// True on MariaDB: batches use `COM_STMT_BULK_EXECUTE`.
    bulk: AtomicBool,
}

impl fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// A batch statement: `{head} (?, ...) {tail}`.
#[derive(Clone, Copy)]
struct Batch {
    purpose: &'static str,
    head: &'static str,
    tail: &'static str,
    cols: usize,
}

/// The `ServerCallStatus` upsert (latest counters win).
const STATUS_UPSERT: Batch = Batch {
    purpose: "upsert ServerCallStatus",
    head: "INSERT INTO ServerCallStatus\
           (modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload) VALUES",
    tail: "ON DUPLICATE KEY UPDATE succ_cnt = VALUES(succ_cnt), \
           err_cnt = VALUES(err_cnt), ts = VALUES(ts), overload = VALUES(overload)",
    cols: 9,
};

/// The `lars_call_history` append (the same key, host and minute add up).
const HISTORY_APPEND: Batch = Batch {
    purpose: "append lars_call_history",
    head: "INSERT INTO lars_call_history(modid, cmdid, ip, port, minute, succ, err) VALUES",
    tail: "ON DUPLICATE KEY UPDATE succ = succ + VALUES(succ), err = err + VALUES(err)",
    cols: 7,
};

/// The `lars_rejected_reports` append (the same key and minute add up,
/// capped at 2^62).
const REJECTED_APPEND: Batch = Batch {
    purpose: "add lars_rejected_reports",
    head: "INSERT INTO lars_rejected_reports(modid, cmdid, minute, reports, calls) VALUES",
    tail: "ON DUPLICATE KEY UPDATE \
           reports = LEAST(reports + VALUES(reports), 4611686018427387904), \
           calls = LEAST(calls + VALUES(calls), 4611686018427387904)",
    cols: 5,
};

/// `rows` as the parameter rows of [`REJECTED_APPEND`], in primary-key order.
fn rejected_vals(rows: &[RejectedRow]) -> Vec<Value> {
    let mut sorted: Vec<&RejectedRow> = rows.iter().collect();
    sorted.sort_by_key(|r| (r.key, floor_minute(r.minute)));
    let mut vals = Vec::with_capacity(rows.len() * 5);
    for r in sorted {
        vals.extend([
            Value::UInt(u64::from(r.key.modid)),
            Value::UInt(u64::from(r.key.cmdid)),
            Value::Int(floor_minute(r.minute)),
            Value::UInt(r.reports.min(1 << 62)),
            Value::UInt(r.calls.min(1 << 62)),
        ]);
    }
    vals
}

/// `rows` as the parameter rows of [`HISTORY_APPEND`], in primary-key order
/// (as for the status upsert).
fn history_vals(rows: &[HistoryRow]) -> Vec<Value> {
    let mut sorted: Vec<&HistoryRow> = rows.iter().collect();
    sorted.sort_by_key(|r| (r.key, r.host.ip, r.host.port, floor_minute(r.minute)));
    let mut vals = Vec::with_capacity(rows.len() * 7);
    for r in sorted {
        vals.extend([
            Value::UInt(u64::from(r.key.modid)),
            Value::UInt(u64::from(r.key.cmdid)),
            Value::UInt(u64::from(r.host.ip)),
            Value::UInt(u64::from(r.host.port)),
            Value::Int(floor_minute(r.minute)),
            Value::UInt(r.succ),
            Value::UInt(r.err),
        ]);
    }
    vals
}

/// An operation's failure: a driver error (maybe retried) or a final one.
enum OpErr {
    Db(&'static str, mysql::Error),
    Store(StoreError),
}

impl From<StoreError> for OpErr {
    fn from(e: StoreError) -> Self {
        OpErr::Store(e)
    }
}

trait Ctx<T> {
    fn ctx(self, purpose: &'static str) -> Result<T, OpErr>;
}

impl<T> Ctx<T> for std::result::Result<T, mysql::Error> {
    fn ctx(self, purpose: &'static str) -> Result<T, OpErr> {
        self.map_err(|e| OpErr::Db(purpose, e))
    }
}

/// Errors after which the connection is gone and a new one may succeed.
pub(crate) fn is_connection_error(e: &mysql::Error) -> bool {
    use mysql::DriverError as D;
    match e {
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) => true,
        mysql::Error::DriverError(d) => matches!(
            d,
            D::ConnectTimeout
                | D::CouldNotConnect(_)
                | D::PacketOutOfSync
                | D::UnexpectedPacket
                | D::Timeout
        ),
        // 1053 server shutdown, 1927 connection killed (MariaDB), 2006 gone
        // away, 2013 lost connection, 4031 idle disconnect (MySQL 8).
        mysql::Error::MySqlError(m) => matches!(m.code, 1053 | 1927 | 2006 | 2013 | 4031),
        _ => false,
    }
}

/// Errors after which running the whole operation again may succeed: lost
/// connections, and deadlocks (1213; InnoDB rolled the transaction back).
fn is_retryable(e: &mysql::Error) -> bool {
    is_connection_error(e) || matches!(e, mysql::Error::MySqlError(m) if m.code == 1213)
}

fn store_err(purpose: &'static str, e: mysql::Error) -> StoreError {
    if is_connection_error(&e) {
        StoreError::Unavailable {
            purpose,
            source: Box::new(e),
        }
    } else {
        StoreError::Query {
            purpose,
            source: Box::new(e),
        }
    }
}

fn is_duplicate(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(m) if m.code == 1062)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn desc_table(kind: DescKind) -> (&'static str, &'static str) {
    match kind {
        DescKind::Mod => ("ModIDConfig", "modid"),
        DescKind::Cmd => ("CmdIDConfig", "cmdid"),
    }
}

/// `(?, ?, ...), (?, ...)` for `rows` rows of `cols` columns.
fn placeholders(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// `WHERE` clause and parameters selecting one key, or everything.
fn key_filter(key: Option<ModKey>) -> (&'static str, Vec<Value>) {
    match key {
        Some(k) => (
            "modid = ? AND cmdid = ?",
            vec![k.modid.into(), k.cmdid.into()],
        ),
        None => ("1 = 1", Vec::new()),
    }
}

fn params(v: Vec<Value>) -> Params {
    if v.is_empty() {
        Params::Empty
    } else {
        Params::Positional(v)
    }
}

/// A `mysql://` URL taken apart: the URL without lars' own parameters, its
/// database (checked; [`DEFAULT_MYSQL_DB`] when it names none) and the
/// connection options with the I/O timeouts set and no database selected.
pub(crate) struct MysqlUrl {
    pub url: String,
    pub db: String,
    pub base: OptsBuilder,
}

/// Parses `url` for the primary and the replica alike; errors show it
/// redacted.
pub(crate) fn parse_url(url: &str) -> Result<MysqlUrl> {
    let shown = redact(url);
    let bad = |why: String| StoreError::InvalidUrl {
        url: shown.clone(),
        why,
    };
    let (url, io_timeout) = take_io_timeout(url).map_err(bad)?;
    let opts = Opts::from_url(&url).map_err(|e| bad(e.to_string()))?;
    let db = opts
        .get_db_name()
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_MYSQL_DB)
        .to_owned();
    if !db
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
    {
        return Err(bad(format!(
            "database name {db:?} must be letters, digits, _ or $"
        )));
    }
    let base = OptsBuilder::from_opts(opts)
        .db_name(None::<String>)
        .tcp_connect_timeout(Some(io_timeout.min(CONNECT_TIMEOUT)))
        .read_timeout(Some(io_timeout))
        .write_timeout(Some(io_timeout));
    Ok(MysqlUrl { url, db, base })
}

impl MysqlStore {
    pub(crate) fn open(url: &str) -> Result<Self> {
        let MysqlUrl { url, db, base } = parse_url(url)?;
        {
            let mut conn = Conn::new(base.clone()).map_err(|e| StoreError::Unavailable {
                purpose: "connect to the mysql server",
                source: Box::new(e),
            })?;
            // An identifier cannot be a parameter; `db` was checked above.
            conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{db}`"))
                .map_err(|e| store_err("create the database", e))?;
        }
        let pool_opts = PoolOpts::default().with_constraints(PoolConstraints::new_const::<1, 16>());
        let pool = Pool::new(base.db_name(Some(db.clone())).pool_opts(pool_opts)).map_err(|e| {
            StoreError::Unavailable {
                purpose: "open the connection pool",
                source: Box::new(e),
            }
        })?;
        let url = shown_with_db(&url, &db);
        Ok(Self {
            pool,
            url,
            signed_stats: AtomicBool::new(false),
            bulk: AtomicBool::new(false),
        })
    }

    /// Runs `op` on a pooled connection; after a connection-level error it
    /// runs it once more on a fresh connection (the failed transaction was
    /// rolled back by the server when the connection died).
    fn run<T>(&self, op: impl Fn(&mut PooledConn) -> Result<T, OpErr>) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = match self.pool.get_conn() {
                Ok(mut conn) => op(&mut conn),
                Err(e) => Err(OpErr::Db("get a connection", e)),
            };
            match res {
                Ok(v) => return Ok(v),
                Err(OpErr::Db(purpose, e)) if attempt == 1 && is_retryable(&e) => {
                    tracing::warn!(purpose, error = %e, "mysql operation failed, retrying once");
                }
                Err(OpErr::Db(purpose, e)) => return Err(store_err(purpose, e)),
                Err(OpErr::Store(e)) => return Err(e),
            }
        }
    }

    pub(crate) fn init_schema(&self) -> Result<()> {
        let (signed, mariadb) = self.run(|c| {
            for sql in SCHEMA {
                c.query_drop(*sql).ctx("create the schema")?;
            }
            let ty: Option<String> = c
                .query_first(
                    "SELECT COLUMN_TYPE FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'ServerCallStatus' \
                     AND COLUMN_NAME = 'ip'",
                )
                .ctx("inspect ServerCallStatus")?;
            let version: Option<String> =
                c.query_first("SELECT VERSION()").ctx("read VERSION()")?;
            Ok((
                ty.is_some_and(|t| !t.to_ascii_lowercase().contains("unsigned")),
                version.is_some_and(|v| v.contains("MariaDB")),
            ))
        })?;
        if signed {
            tracing::info!(
                "ServerCallStatus has the original signed columns: ip and caller are stored \
                 as 32-bit two's complement, counters capped at 2^31-1"
            );
        }
        self.signed_stats.store(signed, Ordering::Relaxed);
        self.bulk.store(
            mariadb && std::env::var_os("LARS_MYSQL_NO_BULK").is_none(),
            Ordering::Relaxed,
        );
        Ok(())
    }

    pub(crate) fn ping(&self) -> Result<()> {
        self.run(|c| c.query_drop("SELECT 1").ctx("ping"))
    }

    pub(crate) fn version(&self) -> Result<u64> {
        self.run(|c| read_version(c).ctx("read RouteVersion"))
    }

    pub(crate) fn load_routes(&self) -> Result<RouteSnapshot> {
        self.run(|c| read_routes(c).ctx("read RouteData"))
    }

    pub(crate) fn changed_keys(&self, up_to: u64) -> Result<Vec<ModKey>> {
        self.run(|c| read_changed_keys(c, up_to).ctx("read RouteChange"))
    }

    pub(crate) fn delete_changes(&self, up_to: Option<u64>) -> Result<u64> {
        self.run(|c| {
            match up_to {
                Some(v) => c.exec_drop("DELETE FROM RouteChange WHERE version <= ?", (v,)),
                None => c.query_drop("DELETE FROM RouteChange"),
            }
            .ctx("delete RouteChange")?;
            Ok(c.affected_rows())
        })
    }

    pub(crate) fn pending_changes(&self) -> Result<Vec<RouteChange>> {
        self.run(|c| read_pending_changes(c).ctx("read RouteChange"))
    }

    pub(crate) fn mutate_routes(&self, key: ModKey, op: RouteOp<'_>) -> Result<u64> {
        self.run(|c| {
            let mut tx = c
                .start_transaction(TxOpts::default())
                .ctx("begin the route transaction")?;
            let prev: Option<i64> = tx
                .query_first("SELECT version FROM RouteVersion WHERE id = 1 FOR UPDATE")
                .ctx("lock RouteVersion")?;
            let version = next_version(prev.map_or(0, to_u64), now_secs());
            let (m, cm) = (key.modid, key.cmdid);
            match op {
                RouteOp::Add(h) => {
                    let exists: Option<i64> = tx
                        .exec_first(
                            "SELECT id FROM RouteData WHERE modid = ? AND cmdid = ? \
                             AND serverip = ? AND serverport = ? LIMIT 1",
                            (m, cm, h.ip, h.port),
                        )
                        .ctx("check RouteData")?;
                    if exists.is_some() {
                        return Err(StoreError::AlreadyExists(format!("route {key} -> {h}")).into());
                    }
                    tx.exec_drop(
                        "INSERT INTO RouteData(modid, cmdid, serverip, serverport) \
                         VALUES (?, ?, ?, ?)",
                        (m, cm, h.ip, h.port),
                    )
                    .ctx("insert RouteData")?;
                }
                RouteOp::Remove(h) => {
                    tx.exec_drop(
                        "DELETE FROM RouteData WHERE modid = ? AND cmdid = ? \
                         AND serverip = ? AND serverport = ?",
                        (m, cm, h.ip, h.port),
                    )
                    .ctx("delete RouteData")?;
                    if tx.affected_rows() == 0 {
                        return Err(StoreError::NotFound(format!("route {key} -> {h}")).into());
                    }
                }
                RouteOp::Set(hosts) => {
                    tx.exec_drop(
                        "DELETE FROM RouteData WHERE modid = ? AND cmdid = ?",
                        (m, cm),
                    )
                    .ctx("delete RouteData")?;
                    if !hosts.is_empty() {
                        let sql = format!(
                            "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES {}",
                            placeholders(hosts.len(), 4)
                        );
                        let mut vals = Vec::with_capacity(hosts.len() * 4);
                        for h in hosts {
                            vals.extend([m.into(), cm.into(), h.ip.into(), h.port.into()]);
                        }
                        tx.exec_drop(sql, params(vals)).ctx("insert RouteData")?;
                    }
                }
                RouteOp::Replace { old, new } => {
                    // A locking read: the latest committed rows, whatever
                    // the isolation level's snapshot says.
                    let rows: Vec<(i64, i64, i64)> = tx
                        .exec(
                            "SELECT id, serverip, serverport FROM RouteData \
                             WHERE modid = ? AND cmdid = ? ORDER BY id FOR UPDATE",
                            (m, cm),
                        )
                        .ctx("read the key's RouteData")?;
                    let rows: Vec<(i64, HostAddr)> = rows
                        .into_iter()
                        .filter_map(|(id, ip, port)| {
                            let host =
                                HostAddr::new(u32::try_from(ip).ok()?, u16::try_from(port).ok()?);
                            Some((id, host))
                        })
                        .collect();
                    let (at, duplicates) = plan_replace(key, &rows, old, new)?;
                    tx.exec_drop(
                        "UPDATE RouteData SET serverip = ?, serverport = ? WHERE id = ?",
                        (new.ip, new.port, at),
                    )
                    .ctx("update RouteData")?;
                    for id in duplicates {
                        tx.exec_drop("DELETE FROM RouteData WHERE id = ?", (id,))
                            .ctx("delete RouteData")?;
                    }
                }
                RouteOp::DeleteKey => {
                    tx.exec_drop(
                        "DELETE FROM RouteData WHERE modid = ? AND cmdid = ?",
                        (m, cm),
                    )
                    .ctx("delete RouteData")?;
                    if tx.affected_rows() == 0 {
                        return Err(StoreError::NotFound(format!("routes of {key}")).into());
                    }
                }
            }
            tx.exec_drop(
                "INSERT INTO RouteChange(modid, cmdid, version) VALUES (?, ?, ?)",
                (m, cm, version),
            )
            .ctx("insert RouteChange")?;
            if prev.is_some() {
                tx.exec_drop(
                    "UPDATE RouteVersion SET version = ? WHERE id = 1",
                    (version,),
                )
            } else {
                tx.exec_drop(
                    "INSERT INTO RouteVersion(id, version) VALUES (1, ?)",
                    (version,),
                )
            }
            .ctx("write RouteVersion")?;
            tx.commit().ctx("commit the route transaction")?;
            Ok(version)
        })
    }

    pub(crate) fn list_routes(&self, filter: RouteFilter) -> Result<Vec<RouteRow>> {
        let mut cond = vec!["1 = 1"];
        let mut vals: Vec<Value> = Vec::new();
        if let Some(m) = filter.modid {
            cond.push("modid = ?");
            vals.push(m.into());
        }
        if let Some(c) = filter.cmdid {
            cond.push("cmdid = ?");
            vals.push(c.into());
        }
        let sql = format!(
            "SELECT id, modid, cmdid, serverip, serverport FROM RouteData WHERE {} \
             ORDER BY modid, cmdid, id",
            cond.join(" AND ")
        );
        self.run(|c| {
            let rows: Vec<(i64, i64, i64, i64, i64)> =
                c.exec(&sql, params(vals.clone())).ctx("list RouteData")?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, m, cm, ip, port)| {
                    let (key, host) = valid_route("RouteData", id, m, cm, ip, port)?;
                    Some(RouteRow {
                        id: to_u64(id),
                        key,
                        host,
                    })
                })
                .collect())
        })
    }

    pub(crate) fn descriptions(
        &self,
        kind: DescKind,
        search: Option<&str>,
    ) -> Result<Vec<Description>> {
        let (table, col) = desc_table(kind);
        let (sql, vals) = match search {
            Some(s) => (
                format!(
                    "SELECT id, {col}, content FROM {table} \
                     WHERE LOCATE(?, content) > 0 OR CAST({col} AS CHAR) = ? ORDER BY {col}, id"
                ),
                vec![Value::from(s), Value::from(s)],
            ),
            None => (
                format!("SELECT id, {col}, content FROM {table} ORDER BY {col}, id"),
                Vec::new(),
            ),
        };
        self.run(|c| {
            let rows: Vec<(i64, i64, String)> = c
                .exec(&sql, params(vals.clone()))
                .ctx("read descriptions")?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, code, content)| {
                    Some(Description {
                        id: to_u64(id),
                        code: u32::try_from(code).ok()?,
                        content,
                    })
                })
                .collect())
        })
    }

    pub(crate) fn set_description(&self, kind: DescKind, code: u32, content: &str) -> Result<()> {
        let (table, col) = desc_table(kind);
        let select = format!("SELECT id FROM {table} WHERE {col} = ? FOR UPDATE");
        let update = format!("UPDATE {table} SET content = ? WHERE {col} = ?");
        let insert = format!("INSERT INTO {table}({col}, content) VALUES (?, ?)");
        self.run(|c| {
            let mut tx = c
                .start_transaction(TxOpts::default())
                .ctx("begin the description transaction")?;
            let found: Option<i64> = tx.exec_first(&select, (code,)).ctx("read a description")?;
            if found.is_some() {
                tx.exec_drop(&update, (content, code))
                    .ctx("update a description")?;
            } else {
                tx.exec_drop(&insert, (code, content))
                    .ctx("insert a description")?;
            }
            tx.commit().ctx("commit a description")
        })
    }

    pub(crate) fn delete_description(&self, kind: DescKind, code: u32) -> Result<()> {
        let (table, col) = desc_table(kind);
        let sql = format!("DELETE FROM {table} WHERE {col} = ?");
        self.run(|c| {
            c.exec_drop(&sql, (code,)).ctx("delete a description")?;
            if c.affected_rows() == 0 {
                return Err(StoreError::NotFound(format!("{table} {col} {code}")).into());
            }
            Ok(())
        })
    }

    pub(crate) fn create_user(&self, name: &str, hash: &str, now: i64) -> Result<User> {
        self.run(|c| {
            let r = c.exec_drop(
                "INSERT INTO lars_users(username, password_hash, created_at) VALUES (?, ?, ?)",
                (name, hash, now),
            );
            match r {
                Ok(()) => Ok(User {
                    id: c.last_insert_id(),
                    username: name.to_owned(),
                    password_hash: hash.to_owned(),
                    created_at: now,
                }),
                Err(e) if is_duplicate(&e) => {
                    Err(StoreError::AlreadyExists(format!("user {name:?}")).into())
                }
                Err(e) => Err(OpErr::Db("insert a user", e)),
            }
        })
    }

    fn users(&self, by_name: Option<&str>) -> Result<Vec<User>> {
        let (sql, vals) = match by_name {
            Some(n) => (
                "SELECT id, username, password_hash, created_at FROM lars_users \
                 WHERE username = ?",
                vec![Value::from(n)],
            ),
            None => (
                "SELECT id, username, password_hash, created_at FROM lars_users \
                 ORDER BY username",
                Vec::new(),
            ),
        };
        self.run(|c| {
            let rows: Vec<(u64, String, String, i64)> =
                c.exec(sql, params(vals.clone())).ctx("read users")?;
            Ok(rows
                .into_iter()
                .map(|(id, username, password_hash, created_at)| User {
                    id,
                    username,
                    password_hash,
                    created_at,
                })
                .collect())
        })
    }

    pub(crate) fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        Ok(self.users(Some(name))?.into_iter().next())
    }

    pub(crate) fn list_users(&self) -> Result<Vec<User>> {
        self.users(None)
    }

    pub(crate) fn set_password(&self, name: &str, hash: &str) -> Result<()> {
        self.run(|c| {
            // Matched rows, not changed rows: compare with a select.
            let found: Option<u64> = c
                .exec_first("SELECT id FROM lars_users WHERE username = ?", (name,))
                .ctx("read a user")?;
            if found.is_none() {
                return Err(StoreError::NotFound(format!("user {name:?}")).into());
            }
            c.exec_drop(
                "UPDATE lars_users SET password_hash = ? WHERE username = ?",
                (hash, name),
            )
            .ctx("update a user")
        })
    }

    pub(crate) fn delete_user(&self, name: &str) -> Result<()> {
        self.run(|c| {
            c.exec_drop("DELETE FROM lars_users WHERE username = ?", (name,))
                .ctx("delete a user")?;
            if c.affected_rows() == 0 {
                return Err(StoreError::NotFound(format!("user {name:?}")).into());
            }
            Ok(())
        })
    }

    /// The value of a 32-bit id column (ip, caller): the original int(11)
    /// columns keep the bit pattern.
    fn id32(&self, v: u32) -> Value {
        if self.signed_stats.load(Ordering::Relaxed) {
            Value::Int(i64::from(v as i32))
        } else {
            Value::UInt(u64::from(v))
        }
    }

    /// `rows` as the parameter rows of [`STATUS_UPSERT`].
    fn status_vals(&self, rows: &[CallStatusRow]) -> Vec<Value> {
        let signed = self.signed_stats.load(Ordering::Relaxed);
        let cnt = |v: u64| -> Value {
            if signed {
                Value::UInt(v.min(i32::MAX as u64))
            } else {
                Value::UInt(v)
            }
        };
        // Primary-key order: cheaper B-tree inserts, and concurrent writers
        // take row locks in the same order (no deadlocks). The sort is
        // stable, so the last row of a key still wins.
        let mut sorted: Vec<&CallStatusRow> = rows.iter().collect();
        sorted.sort_by_key(|r| (r.key, r.host.ip, r.host.port, r.caller));
        let mut vals = Vec::with_capacity(rows.len() * 9);
        for r in sorted {
            vals.extend([
                Value::UInt(u64::from(r.key.modid)),
                Value::UInt(u64::from(r.key.cmdid)),
                self.id32(r.host.ip),
                Value::UInt(u64::from(r.host.port)),
                self.id32(r.caller),
                cnt(r.succ_cnt),
                cnt(r.err_cnt),
                Value::Int(r.ts),
                Value::Bytes(if r.overload {
                    b"1".to_vec()
                } else {
                    b"0".to_vec()
                }),
            ]);
        }
        vals
    }

    pub(crate) fn upsert_call_status(&self, rows: &[CallStatusRow]) -> Result<()> {
        self.write_batches(&[(STATUS_UPSERT, &self.status_vals(rows))], None)
            .map(|_| ())
    }

    pub(crate) fn append_history(
        &self,
        rows: &[HistoryRow],
        mark: Option<(u64, i64)>,
    ) -> Result<bool> {
        self.write_batches(&[(HISTORY_APPEND, &history_vals(rows))], mark)
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
        let history = history_vals(history);
        let status = self.status_vals(status);
        let rejected = rejected_vals(rejected);
        self.write_batches(
            &[
                (HISTORY_APPEND, &history),
                (STATUS_UPSERT, &status),
                (REJECTED_APPEND, &rejected),
            ],
            Some(mark),
        )
    }

    pub(crate) fn rejected_reports(
        &self,
        key: Option<ModKey>,
        since: i64,
    ) -> Result<Vec<RejectedRow>> {
        let (cond, mut vals) = key_filter(key);
        vals.push(since.into());
        let sql = format!(
            "SELECT modid, cmdid, minute, reports, calls FROM lars_rejected_reports \
             WHERE {cond} AND minute >= ? ORDER BY minute, modid, cmdid"
        );
        self.run(|c| {
            let rows: Vec<(u32, u32, i64, u64, u64)> = c
                .exec(&sql, params(vals.clone()))
                .ctx("read lars_rejected_reports")?;
            Ok(rows
                .into_iter()
                .map(|(modid, cmdid, minute, reports, calls)| RejectedRow {
                    key: ModKey::new(modid, cmdid),
                    minute,
                    reports,
                    calls,
                })
                .collect())
        })
    }

    /// `ServerCallStatus` rows of `key` reported by `caller` (one indexed read).
    pub(crate) fn call_status_of(&self, key: ModKey, caller: u32) -> Result<Vec<CallStatusRow>> {
        let caller = self.id32(caller);
        self.run(|c| {
            let rows: Vec<StatusRow> = c
                .exec(
                    "SELECT modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload \
                     FROM ServerCallStatus WHERE modid = ? AND cmdid = ? AND caller = ?",
                    (key.modid, key.cmdid, caller.clone()),
                )
                .ctx("read a caller's ServerCallStatus")?;
            Ok(rows.into_iter().filter_map(status_row).collect())
        })
    }

    pub(crate) fn prune_batches(&self, older_than: i64) -> Result<u64> {
        self.delete_before(
            "DELETE FROM lars_history_batches WHERE at < ?",
            "prune lars_history_batches",
            older_than,
        )
    }

    /// Writes each part's `vals` (rows of `batch.cols` values), all parts in
    /// one transaction: on MariaDB one single-row statement executed with
    /// `COM_STMT_BULK_EXECUTE` (an array of parameter rows per packet),
    /// elsewhere multi-row statements of [`CHUNK_ROWS`] rows. With `mark =
    /// Some((id, at))` the transaction first records batch `id` in
    /// `lars_history_batches` and writes nothing (returning `false`) when it
    /// is already there.
    fn write_batches(&self, parts: &[(Batch, &[Value])], mark: Option<(u64, i64)>) -> Result<bool> {
        let bulk = self.bulk.load(Ordering::Relaxed);
        let first = parts.first().map_or("write", |(b, _)| b.purpose);
        self.run(|c| {
            let mut tx = c.start_transaction(TxOpts::default()).ctx(first)?;
            if let Some((id, at)) = mark {
                tx.exec_drop(
                    "INSERT IGNORE INTO lars_history_batches(id, at) VALUES (?, ?)",
                    (id, at),
                )
                .ctx("mark a history batch")?;
                if tx.affected_rows() == 0 {
                    // Committed before (its acknowledgement was lost).
                    return Ok(false);
                }
            }
            for (batch, vals) in parts {
                let Batch {
                    purpose,
                    head,
                    tail,
                    cols,
                } = *batch;
                if vals.is_empty() {
                    continue;
                }
                if bulk {
                    let single = format!("{head} {} {tail}", placeholders(1, cols));
                    tx.exec_batch(
                        &single,
                        vals.chunks(cols).map(|r| Params::Positional(r.to_vec())),
                    )
                    .ctx(purpose)?;
                } else {
                    for chunk in vals.chunks(CHUNK_ROWS * cols) {
                        let sql =
                            format!("{head} {} {tail}", placeholders(chunk.len() / cols, cols));
                        tx.exec_drop(sql, Params::Positional(chunk.to_vec()))
                            .ctx(purpose)?;
                    }
                }
            }
            tx.commit().ctx(first)?;
            Ok(true)
        })
    }

    pub(crate) fn prune_history(&self, older_than: i64) -> Result<u64> {
        self.delete_before(
            "DELETE FROM lars_rejected_reports WHERE minute < ?",
            "prune lars_rejected_reports",
            older_than,
        )?;
        self.delete_before(
            "DELETE FROM lars_call_history WHERE minute < ?",
            "prune lars_call_history",
            older_than,
        )
    }

    /// Runs a `DELETE ... WHERE <time> < ?` in statements of at most
    /// [`DELETE_CHUNK`] rows (each far inside the I/O timeout, and short
    /// locks), until one deletes fewer; returns the rows deleted.
    fn delete_before(&self, sql: &str, purpose: &'static str, older_than: i64) -> Result<u64> {
        let sql = format!("{sql} LIMIT {DELETE_CHUNK}");
        let mut total = 0;
        loop {
            let n = self.run(|c| {
                c.exec_drop(&sql, (older_than,)).ctx(purpose)?;
                Ok(c.affected_rows())
            })?;
            total += n;
            if n < DELETE_CHUNK {
                return Ok(total);
            }
        }
    }

    pub(crate) fn call_status(&self, key: Option<ModKey>) -> Result<Vec<CallStatusRow>> {
        let (cond, vals) = key_filter(key);
        let sql = format!(
            "SELECT modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload \
             FROM ServerCallStatus WHERE {cond} ORDER BY modid, cmdid, ip, port, caller"
        );
        self.run(|c| {
            let rows: Vec<StatusRow> = c
                .exec(&sql, params(vals.clone()))
                .ctx("read ServerCallStatus")?;
            Ok(rows.into_iter().filter_map(status_row).collect())
        })
    }

    pub(crate) fn for_each_recent_status(
        &self,
        since: i64,
        limit: u64,
        f: &mut dyn FnMut(CallStatusRow),
    ) -> Result<u64> {
        let mut handed = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = match self.pool.get_conn() {
                Ok(mut c) => stream_status(&mut c, since, limit, f, &mut handed),
                Err(e) => Err(OpErr::Db("get a connection", e)),
            };
            match res {
                Ok(()) => return Ok(handed),
                Err(OpErr::Db(purpose, e)) if attempt == 1 && handed == 0 && is_retryable(&e) => {
                    tracing::warn!(purpose, error = %e, "mysql read failed, retrying once");
                }
                Err(OpErr::Db(purpose, e)) => return Err(store_err(purpose, e)),
                Err(OpErr::Store(e)) => return Err(e),
            }
        }
    }

    pub(crate) fn history(&self, key: Option<ModKey>, since: i64) -> Result<Vec<HistoryRow>> {
        let (cond, mut vals) = key_filter(key);
        vals.push(since.into());
        let sql = format!(
            "SELECT modid, cmdid, ip, port, minute, succ, err FROM lars_call_history \
             WHERE {cond} AND minute >= ? ORDER BY minute, modid, cmdid, ip, port"
        );
        self.run(|c| {
            type Row = (i64, i64, i64, i64, i64, u64, u64);
            let rows: Vec<Row> = c
                .exec(&sql, params(vals.clone()))
                .ctx("read lars_call_history")?;
            Ok(rows
                .into_iter()
                .filter_map(|(m, cm, ip, port, minute, succ, err)| {
                    let (key, host) = valid_route("lars_call_history", -1, m, cm, ip, port)?;
                    Some(HistoryRow {
                        key,
                        host,
                        minute,
                        succ,
                        err,
                    })
                })
                .collect())
        })
    }

    pub(crate) fn history_totals(&self, key: Option<ModKey>, since: i64) -> Result<(u64, u64)> {
        let (cond, mut vals) = key_filter(key);
        vals.push(since.into());
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(succ), 0) AS UNSIGNED), \
             CAST(COALESCE(SUM(err), 0) AS UNSIGNED) FROM lars_call_history \
             WHERE {cond} AND minute >= ?"
        );
        self.run(|c| {
            let r: Option<(u64, u64)> = c
                .exec_first(&sql, params(vals.clone()))
                .ctx("sum lars_call_history")?;
            Ok(r.unwrap_or((0, 0)))
        })
    }
}

/// One streamed `SELECT` of the recent `ServerCallStatus` rows; counts the
/// rows handed to `f` in `handed`.
fn stream_status(
    c: &mut PooledConn,
    since: i64,
    limit: u64,
    f: &mut dyn FnMut(CallStatusRow),
    handed: &mut u64,
) -> Result<(), OpErr> {
    let purpose = "read recent ServerCallStatus";
    let rows = c
        .exec_iter(
            "SELECT modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload \
             FROM ServerCallStatus WHERE ts >= ? LIMIT ?",
            (since, limit),
        )
        .ctx(purpose)?;
    for row in rows {
        let row = row.ctx(purpose)?;
        let row = mysql::from_row_opt::<StatusRow>(row)
            .map_err(|e| OpErr::Db(purpose, mysql::Error::FromRowError(e.0)))?;
        let Some(row) = status_row(row) else {
            continue;
        };
        f(row);
        *handed += 1;
    }
    Ok(())
}

/// A `ServerCallStatus` row as read: modid, cmdid, ip, port, caller,
/// succ_cnt, err_cnt, ts, overload.
type StatusRow = (i64, i64, i64, i64, i64, u64, u64, i64, String);

/// The row as a [`CallStatusRow`], or `None` (logged by `valid_route`) when
/// its key or host is invalid.
fn status_row((m, cm, ip, port, caller, succ, err, ts, ov): StatusRow) -> Option<CallStatusRow> {
    // Signed original columns hold the ip's bit pattern.
    let ip = i64::from(ip as u32);
    let (key, host) = valid_route("ServerCallStatus", -1, m, cm, ip, port)?;
    Some(CallStatusRow {
        key,
        host,
        caller: caller as u32,
        succ_cnt: succ,
        err_cnt: err,
        ts,
        overload: ov == "1",
    })
}

// ---- route reads, shared with the read-only replica (replica.rs) ---------

/// `RouteVersion`'s version (0 when the row is missing).
pub(crate) fn read_version(c: &mut PooledConn) -> Result<u64, mysql::Error> {
    let v: Option<i64> = c.query_first("SELECT version FROM RouteVersion WHERE id = 1")?;
    Ok(v.map_or(0, to_u64))
}

/// Every valid `RouteData` row, grouped by key (invalid rows counted).
pub(crate) fn read_routes(c: &mut PooledConn) -> Result<RouteSnapshot, mysql::Error> {
    let mut snap = RouteSnapshot::default();
    c.query_map(
        "SELECT id, modid, cmdid, serverip, serverport FROM RouteData ORDER BY id",
        |(id, m, cm, ip, port): (i64, i64, i64, i64, i64)| match valid_route(
            "RouteData",
            id,
            m,
            cm,
            ip,
            port,
        ) {
            Some((key, host)) => snap.routes.entry(key).or_default().push(host),
            None => snap.skipped += 1,
        },
    )?;
    Ok(snap)
}

/// The keys changed at versions up to `up_to`.
pub(crate) fn read_changed_keys(
    c: &mut PooledConn,
    up_to: u64,
) -> Result<Vec<ModKey>, mysql::Error> {
    let rows: Vec<(i64, i64)> = c.exec(
        "SELECT DISTINCT modid, cmdid FROM RouteChange WHERE version <= ? \
         ORDER BY modid, cmdid",
        (up_to,),
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|(m, cm)| Some(ModKey::new(u32::try_from(m).ok()?, u32::try_from(cm).ok()?)))
        .collect())
}

/// Every `RouteChange` row, oldest first.
pub(crate) fn read_pending_changes(c: &mut PooledConn) -> Result<Vec<RouteChange>, mysql::Error> {
    let rows: Vec<(i64, i64, i64, i64)> =
        c.query("SELECT id, modid, cmdid, version FROM RouteChange ORDER BY id")?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, m, cm, v)| {
            Some(RouteChange {
                id: to_u64(id),
                key: ModKey::new(u32::try_from(m).ok()?, u32::try_from(cm).ok()?),
                version: to_u64(v),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_io_timeout_parameter_is_ours() {
        let t = |u: &str| take_io_timeout(u);
        assert_eq!(
            t("mysql://r@h/db").unwrap(),
            ("mysql://r@h/db".into(), DEFAULT_IO_TIMEOUT)
        );
        assert_eq!(
            t("mysql://r@h/db?io_timeout_ms=1500").unwrap(),
            ("mysql://r@h/db".into(), Duration::from_millis(1500))
        );
        assert_eq!(
            t("mysql://r@h/db?prefer_socket=false&io_timeout_ms=2000&socket=/s").unwrap(),
            (
                "mysql://r@h/db?prefer_socket=false&socket=/s".into(),
                Duration::from_secs(2)
            )
        );
        assert!(t("mysql://r@h/db?io_timeout_ms=0").is_err());
        assert!(t("mysql://r@h/db?io_timeout_ms=x").is_err());
    }

    #[test]
    fn placeholders_shape() {
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
