//! A private MariaDB primary and replica for replication tests.
//!
//! [`MariadbPair::start`] makes two data directories under the system temp
//! directory with `mariadb-install-db`, starts two `mariadbd --no-defaults`
//! on free 127.0.0.1 ports (their own sockets, pid files and logs; `server-id`
//! 1 and 2; the binary log on the primary, `read_only` on the replica), points
//! the replica at the primary (`CHANGE MASTER TO ... MASTER_USE_GTID =
//! slave_pos`, user root, an optional `MASTER_DELAY`) and waits, bounded,
//! until both answer and replication runs. Dropping the pair kills both
//! servers and removes the directories. It never touches any other server
//! (the shared one on 3306 included). Start-up takes about one second here
//! (two `mariadb-install-db` runs of ~0.5 s, servers up in ~0.2 s).
//!
//! ```no_run
//! let Some(pair) = lars_testkit::mariadb::MariadbPair::start_or_skip("my_test", 0) else {
//!     return;
//! };
//! pair.primary_exec("CREATE DATABASE d").unwrap();
//! pair.wait_caught_up(std::time::Duration::from_secs(10)).unwrap();
//! ```

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

/// How long the servers get to answer after being started.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Pairs made by this process, for unique directory names.
static PAIRS: AtomicU32 = AtomicU32::new(0);

/// One `mariadbd` of the pair.
#[derive(Debug)]
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// A new connection (TCP, never the socket).
    fn conn(&self) -> Result<mysql::Conn, String> {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.port)
            .user(Some("root"))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(2)))
            .read_timeout(Some(Duration::from_secs(20)))
            .write_timeout(Some(Duration::from_secs(20)));
        mysql::Conn::new(opts).map_err(|e| format!("connect to 127.0.0.1:{}: {e}", self.port))
    }

    fn exec(&self, sql: &str) -> Result<(), String> {
        self.conn()?
            .query_drop(sql)
            .map_err(|e| format!("{sql} on 127.0.0.1:{}: {e}", self.port))
    }

    /// The last lines of the server's error log, for failure messages.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private MariaDB primary and its replica, each a `mariadbd` of its own
/// on a free 127.0.0.1 port. See the [module](self) documentation.
#[derive(Debug)]
pub struct MariadbPair {
    dir: PathBuf,
    primary: Server,
    replica: Server,
}

impl MariadbPair {
    /// Starts a pair whose replica applies each transaction `delay_secs`
    /// after the primary committed it (`MASTER_DELAY`; 0: none), and waits
    /// until replication runs. Errors say what failed (with the server's log
    /// tail).
    pub fn start(delay_secs: u32) -> Result<MariadbPair, String> {
        let install = find_binary("mariadb-install-db")
            .or_else(|| find_binary("mysql_install_db"))
            .ok_or("mariadb-install-db is not installed")?;
        let mariadbd = find_binary("mariadbd")
            .or_else(|| find_binary("mysqld"))
            .ok_or("mariadbd is not installed")?;
        reap_orphans();
        let n = PAIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lars-mariadb-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        // From here on, a failure removes the directory (and kills what
        // started) through the guard.
        let mut guard = DirGuard(Some(dir.clone()));
        let primary = start_server(&install, &mariadbd, &dir, 1)?;
        let replica = match start_server(&install, &mariadbd, &dir, 2) {
            Ok(r) => r,
            Err(e) => {
                let mut p = primary;
                p.kill();
                return Err(e);
            }
        };
        guard.0 = None;
        let pair = MariadbPair {
            dir,
            primary,
            replica,
        };
        pair.wait_answering()?;
        pair.replica_exec(&format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
             MASTER_USER = 'root', MASTER_PASSWORD = '', MASTER_USE_GTID = slave_pos, \
             MASTER_CONNECT_RETRY = 1, MASTER_DELAY = {delay_secs}",
            pair.primary.port
        ))?;
        pair.start_replication()?;
        pair.wait_replication_running()?;
        Ok(pair)
    }

    /// [`start`](Self::start), or `None` after a visible
    /// [`skip`](crate::skip) of `test` when the pair cannot start here (no
    /// MariaDB installed, ...). Under CI that is a failure.
    pub fn start_or_skip(test: &str, delay_secs: u32) -> Option<MariadbPair> {
        match Self::start(delay_secs) {
            Ok(p) => Some(p),
            Err(e) => {
                crate::skip(
                    test,
                    &format!("cannot start a MariaDB primary and replica: {e}"),
                );
                None
            }
        }
    }

    /// `mysql://root@127.0.0.1:<port>` of the primary (no database).
    pub fn primary_url(&self) -> String {
        self.primary.url()
    }

    /// `mysql://root@127.0.0.1:<port>` of the replica (no database).
    pub fn replica_url(&self) -> String {
        self.replica.url()
    }

    /// The replica's address (to put a [`Proxy`](crate::Proxy) in front).
    pub fn replica_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.replica.port))
    }

    /// Runs `sql` on the primary.
    pub fn primary_exec(&self, sql: &str) -> Result<(), String> {
        self.primary.exec(sql)
    }

    /// Runs `sql` on the replica (as root, which `read_only` does not stop:
    /// for replication control, not data).
    pub fn replica_exec(&self, sql: &str) -> Result<(), String> {
        self.replica.exec(sql)
    }

    /// The first column of the first row of `sql` on the replica.
    pub fn replica_query(&self, sql: &str) -> Result<Option<String>, String> {
        query_one(&self.replica, sql)
    }

    /// The first column of the first row of `sql` on the primary.
    pub fn primary_query(&self, sql: &str) -> Result<Option<String>, String> {
        query_one(&self.primary, sql)
    }

    /// `STOP SLAVE`: the replica keeps its data and answers, but falls
    /// behind.
    pub fn stop_replication(&self) -> Result<(), String> {
        self.replica_exec("STOP SLAVE")
    }

    /// `START SLAVE`.
    pub fn start_replication(&self) -> Result<(), String> {
        self.replica_exec("START SLAVE")
    }

    /// Waits until the replica has applied everything the primary has
    /// written so far (`MASTER_GTID_WAIT`), at most `timeout`.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<(), String> {
        let pos = query_one(&self.primary, "SELECT @@gtid_binlog_pos")?.unwrap_or_default();
        let secs = timeout.as_secs_f64();
        let got = query_one(
            &self.replica,
            &format!("SELECT MASTER_GTID_WAIT('{pos}', {secs})"),
        )?;
        match got.as_deref() {
            Some("0") => Ok(()),
            other => Err(format!(
                "the replica did not reach {pos} within {secs} s (MASTER_GTID_WAIT = {other:?})"
            )),
        }
    }

    fn wait_answering(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        for s in [&self.primary, &self.replica] {
            loop {
                match s.conn() {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!(
                            "mariadbd on port {} did not answer within {} s: {e}\n{}",
                            s.port,
                            START_DEADLINE.as_secs(),
                            s.log_tail()
                        ));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(30)),
                }
            }
        }
        Ok(())
    }

    fn wait_replication_running(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let mut conn = self.replica.conn()?;
            let row: Option<mysql::Row> = conn
                .query_first("SHOW SLAVE STATUS")
                .map_err(|e| format!("SHOW SLAVE STATUS: {e}"))?;
            let field = |name: &str| {
                row.as_ref()
                    .and_then(|r| r.get_opt::<String, _>(name))
                    .and_then(Result::ok)
                    .unwrap_or_default()
            };
            let (io, sql) = (field("Slave_IO_Running"), field("Slave_SQL_Running"));
            if io == "Yes" && sql == "Yes" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "replication did not start within {} s (IO {io:?}, SQL {sql:?}, \
                     last IO error {:?})\n{}",
                    START_DEADLINE.as_secs(),
                    field("Last_IO_Error"),
                    self.replica.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(30));
        }
    }
}

impl Drop for MariadbPair {
    fn drop(&mut self) {
        self.replica.kill();
        self.primary.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the directory unless disarmed (start-up failures).
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn query_one(s: &Server, sql: &str) -> Result<Option<String>, String> {
    let mut conn = s.conn()?;
    let row: Option<mysql::Row> = conn
        .query_first(sql)
        .map_err(|e| format!("{sql} on 127.0.0.1:{}: {e}", s.port))?;
    Ok(row.and_then(|r| {
        r.get_opt::<mysql::Value, _>(0)
            .and_then(Result::ok)
            .and_then(|v| match v {
                mysql::Value::NULL => None,
                v => mysql::from_value_opt::<String>(v).ok(),
            })
    }))
}

/// Removes the pairs of test processes that died without dropping them
/// (killed by a timeout, SIGKILL): directories `lars-mariadb-<pid>-<n>` of
/// the temp directory whose `<pid>` no longer runs. Their servers are
/// killed first, by the pid files, and only when that process is a
/// `mariadbd` of that very directory.
fn reap_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix("lars-mariadb-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || running(&owner.to_string()) {
            continue;
        }
        let dir = entry.path();
        for id in [1, 2] {
            let Ok(pid) = std::fs::read_to_string(dir.join(format!("p{id}.pid"))) else {
                continue;
            };
            let pid = pid.trim();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("mariadbd") && cmdline.contains(&*dir.to_string_lossy()) {
                let _ = Command::new("kill").args(["-9", pid]).status();
                // Gone before its files are removed (bounded).
                let deadline = Instant::now() + Duration::from_secs(5);
                while running(pid) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Whether process `pid` runs (a zombie does not).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("State:"))
            .is_some_and(|l| !l.contains('Z'))
    })
}

/// `name` on the `PATH` or in the usual sbin directories.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (mariadbd then needs `--user=root`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A free port of 127.0.0.1 (free when asked; mariadbd binds it a moment
/// later).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// Installs and starts server `id` (1: primary, 2: replica) under `dir`.
fn start_server(install: &Path, mariadbd: &Path, dir: &Path, id: u32) -> Result<Server, String> {
    let datadir = dir.join(format!("data{id}"));
    // A temporary directory of its own: the servers' temporary tables
    // never meet those of servers other tests install at the same time.
    let tmpdir = dir.join(format!("tmp{id}"));
    std::fs::create_dir_all(&tmpdir).map_err(|e| format!("create {}: {e}", tmpdir.display()))?;
    let root = running_as_root();
    // Parallel installs on a loaded machine failed now and then: once more
    // on a clean data directory before giving up.
    let mut failure = String::new();
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(&datadir);
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--tmpdir={}", tmpdir.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--innodb-log-file-size=8M")
            .stdin(Stdio::null());
        if root {
            cmd.arg("--user=root");
        }
        let out = cmd
            .output()
            .map_err(|e| format!("run {}: {e}", install.display()))?;
        if out.status.success() {
            failure.clear();
            break;
        }
        failure = format!(
            "{} failed ({}): {}{}",
            install.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !failure.is_empty() {
        return Err(failure);
    }
    // A port taken between `free_port` and the bind makes mariadbd exit:
    // try another one.
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        let log = dir.join(format!("error{id}.log"));
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--tmpdir={}", tmpdir.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--socket={}",
                dir.join(format!("s{id}.sock")).display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.join(format!("p{id}.pid")).display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--server-id={id}"))
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=16M")
            .arg("--innodb-log-file-size=8M")
            .arg("--max-connections=200")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            cmd.arg("--user=root");
        }
        if id == 1 {
            cmd.arg(format!("--log-bin={}", dir.join("binlog").display()))
                .arg("--binlog-format=ROW");
        } else {
            cmd.arg("--read-only=1").arg("--skip-slave-start");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("run {}: {e}", mariadbd.display()))?;
        let mut server = Server { child, port, log };
        // Either it answers or it exits (port taken, bad option).
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                last = format!(
                    "mariadbd (server {id}, port {port}) exited with {status}:\n{}",
                    server.log_tail()
                );
                break;
            }
            if server.conn().is_ok() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                let tail = server.log_tail();
                server.kill();
                return Err(format!(
                    "mariadbd (server {id}, port {port}) did not answer within {} s:\n{tail}",
                    START_DEADLINE.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(30));
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_replicates_and_is_removed() {
        let Some(pair) = MariadbPair::start_or_skip("mariadb::a_pair_replicates_and_is_removed", 0)
        else {
            return;
        };
        let dir = pair.dir.clone();
        pair.primary_exec("CREATE DATABASE t").unwrap();
        pair.primary_exec("CREATE TABLE t.x (a INT PRIMARY KEY)")
            .unwrap();
        pair.primary_exec("INSERT INTO t.x VALUES (7)").unwrap();
        pair.wait_caught_up(Duration::from_secs(20)).unwrap();
        assert_eq!(
            pair.replica_query("SELECT a FROM t.x").unwrap().as_deref(),
            Some("7")
        );
        // read_only: an ordinary write on the replica is refused to
        // non-root users; root passes, so just check the flag.
        assert_eq!(
            pair.replica_query("SELECT @@read_only").unwrap().as_deref(),
            Some("1")
        );
        let ports = (pair.primary.port, pair.replica.port);
        drop(pair);
        assert!(!dir.exists(), "{} was not removed", dir.display());
        for port in [ports.0, ports.1] {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "a server still listens on {port}"
            );
        }
    }
}
