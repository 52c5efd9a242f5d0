//! Helpers: stores, a reporting client, HTTP GET (the proxy that cuts or
//! freezes the database is `lars_testkit::Proxy`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lars_core::frame;
use lars_core::proto::{HostCallResult, ReportStatusRequest};
use lars_reporter::ReporterConfig;

pub fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// Polls `cond` every 10 ms until true; panics after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A config on ephemeral ports with a short flush interval.
pub fn config(workers: usize) -> ReporterConfig {
    let mut c = ReporterConfig::default();
    c.reactor.addr = "127.0.0.1:0".parse().unwrap();
    c.reactor.thread_num = 2;
    c.http.addr = Some("127.0.0.1:0".parse().unwrap());
    c.db_thread_cnt = std::num::NonZeroUsize::new(workers).unwrap();
    c.flush_interval = Duration::from_millis(100);
    c
}

/// A store for one test: a temp SQLite file, or a fresh MySQL database.
pub struct TestDb {
    pub url: String,
    mysql_base: Option<String>,
    name: String,
    dir: Option<std::path::PathBuf>,
}

impl TestDb {
    pub fn sqlite(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lars-reporter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            url: format!("sqlite://{}/lars.db", dir.display()),
            mysql_base: None,
            name: name.to_owned(),
            dir: Some(dir),
        }
    }

    /// `None` (with a note) when `LARS_MYSQL_URL` is unset.
    pub fn mysql(name: &str) -> Option<Self> {
        let base = lars_testkit::mysql_server(&format!("the MariaDB part of {name}"))?;
        let db = format!("lars_test_reporter_{name}_{}", std::process::id());
        let db = Self {
            url: format!("{base}/{db}"),
            mysql_base: Some(base),
            name: db,
            dir: None,
        };
        db.drop_mysql();
        Some(db)
    }

    /// The same database reached through `proxy` instead of directly.
    pub fn url_via(&self, proxy: SocketAddr) -> String {
        let base = self.mysql_base.as_deref().unwrap();
        let (scheme_auth, _) = base.rsplit_once('@').unwrap();
        // prefer_socket=false: else the driver switches to the unix socket and
        // bypasses the proxy.
        format!("{scheme_auth}@{proxy}/{}?prefer_socket=false", self.name)
    }

    fn drop_mysql(&self) {
        use mysql::prelude::Queryable;
        if let Some(base) = &self.mysql_base {
            let mut conn = mysql::Conn::new(mysql::Opts::from_url(base).unwrap()).unwrap();
            conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name))
                .unwrap();
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.drop_mysql();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// An agent-like sender on one TCP connection.
pub struct Agent {
    stream: TcpStream,
    pub caller: i32,
}

impl Agent {
    pub fn connect(addr: SocketAddr, caller: i32) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream, caller }
    }

    /// Sends one report: `(ip, port, succ, err, overload)` per host.
    pub fn report(
        &mut self,
        modid: i32,
        cmdid: i32,
        ts: u32,
        hosts: &[(u32, u16, u32, u32, bool)],
    ) {
        let req = ReportStatusRequest {
            modid,
            cmdid,
            caller: self.caller,
            ts,
            results: hosts
                .iter()
                .map(|&(ip, port, succ, err, overload)| HostCallResult {
                    ip: ip as i32,
                    port: i32::from(port),
                    succ,
                    err,
                    overload,
                })
                .collect(),
        };
        self.stream
            .write_all(&frame::to_bytes(3, &req).unwrap())
            .unwrap();
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }
}

/// `GET path` on `addr`: `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}
