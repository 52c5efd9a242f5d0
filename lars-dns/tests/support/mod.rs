//! Test fixtures: the store backends (with a way to make them unreachable,
//! through `lars_testkit::Proxy`), a wire-protocol client, and a dns starter.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use lars_core::frame::HEADER_LEN;
use lars_core::proto::{GetRouteRequest, GetRouteResponse};
use lars_core::{HostAddr, MessageId, ModKey, frame};
use lars_dns::DnsConfig;
use lars_dns::{Dns, DnsHandle, DnsStats};
use lars_store::Store;
use prost::Message;

/// A store backend for a scenario.
pub trait Fixture {
    /// A store handle for the dns (its own connection / pool).
    fn dns_store(&self) -> Store;
    /// The admin's store handle (a separate connection, like the console).
    fn admin(&self) -> &Store;
    /// Runs raw SQL on the database behind the admin's back.
    fn raw_sql(&self, sql: &str);
    /// Makes the dns's store unreachable.
    fn cut(&self);
    /// Makes it reachable again.
    fn restore(&self);
}

/// SQLite in a temp dir. The outage overwrites the database, WAL and shm
/// files in place (same sizes) with garbage and later writes the saved bytes
/// back: SQLite keeps its files open, so renaming or chmod (we run as root)
/// would not stop an open connection, while in-place garbage makes every
/// read fail with "file is not a database".
pub struct SqliteFx {
    dir: tempfile::TempDir,
    admin: Store,
    saved: Mutex<Vec<(PathBuf, Vec<u8>)>>,
}

impl SqliteFx {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let admin = lars_store::open(&Self::url_of(&dir)).unwrap();
        Self {
            dir,
            admin,
            saved: Mutex::new(Vec::new()),
        }
    }

    fn url_of(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("lars.db").display())
    }

    pub fn url(&self) -> String {
        Self::url_of(&self.dir)
    }

    fn files(&self) -> Vec<PathBuf> {
        ["lars.db", "lars.db-wal", "lars.db-shm"]
            .iter()
            .map(|f| self.dir.path().join(f))
            .filter(|p| p.exists())
            .collect()
    }
}

impl Fixture for SqliteFx {
    fn dns_store(&self) -> Store {
        lars_store::open(&self.url()).unwrap()
    }
    fn admin(&self) -> &Store {
        &self.admin
    }
    fn raw_sql(&self, sql: &str) {
        let c = rusqlite::Connection::open(self.dir.path().join("lars.db")).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.execute_batch(sql).unwrap();
    }
    fn cut(&self) {
        let mut saved = self.saved.lock().unwrap();
        for p in self.files() {
            let bytes = std::fs::read(&p).unwrap();
            let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all(&vec![0xA5; bytes.len()]).unwrap();
            saved.push((p, bytes));
        }
    }
    fn restore(&self) {
        for (p, bytes) in self.saved.lock().unwrap().drain(..) {
            let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all(&bytes).unwrap();
        }
    }
}

/// MariaDB / MySQL at `LARS_MYSQL_URL`, database `lars_test_dns_<name>_<pid>`
/// (dropped after); the dns reaches it through a [`lars_testkit::Proxy`] the
/// test can cut.
pub struct MysqlFx {
    server: String,
    db: String,
    admin: Store,
    proxy: lars_testkit::Proxy,
}

impl MysqlFx {
    /// `None` (with a note) when `LARS_MYSQL_URL` is unset.
    pub fn new(name: &str) -> Option<Self> {
        let server = lars_testkit::mysql_server(&format!("the MySQL variant of {name}"))?;
        let db = format!("lars_test_dns_{name}_{}", std::process::id());
        let admin = lars_store::open(&format!("{server}/{db}")).unwrap();
        let upstream = host_port(&server);
        let proxy = lars_testkit::Proxy::start(upstream);
        Some(Self {
            server,
            db,
            admin,
            proxy,
        })
    }

    /// The URL through the proxy.
    fn proxied_url(&self) -> String {
        let rest = self.server.strip_prefix("mysql://").unwrap();
        let auth = rest
            .rsplit_once('@')
            .map_or(String::new(), |(a, _)| format!("{a}@"));
        // prefer_socket=false: otherwise the driver switches to the unix
        // socket for a loopback server and bypasses the proxy.
        format!(
            "mysql://{auth}{}/{}?prefer_socket=false",
            self.proxy.addr, self.db
        )
    }
}

fn host_port(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("mysql://").unwrap();
    let hp = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hp = hp.split('/').next().unwrap();
    let hp = if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:3306")
    };
    let hp = hp.replace("localhost", "127.0.0.1");
    hp.parse().unwrap()
}

impl Fixture for MysqlFx {
    fn dns_store(&self) -> Store {
        lars_store::open(&self.proxied_url()).unwrap()
    }
    fn admin(&self) -> &Store {
        &self.admin
    }
    fn raw_sql(&self, sql: &str) {
        use mysql::prelude::Queryable;
        let mut c = mysql::Conn::new(
            mysql::Opts::from_url(&format!("{}/{}", self.server, self.db)).unwrap(),
        )
        .unwrap();
        c.query_drop(sql).unwrap();
    }
    fn cut(&self) {
        self.proxy.cut();
    }
    fn restore(&self) {
        self.proxy.restore();
    }
}

impl Drop for MysqlFx {
    fn drop(&mut self) {
        use mysql::prelude::Queryable;
        if let Ok(opts) = mysql::Opts::from_url(&self.server) {
            if let Ok(mut c) = mysql::Conn::new(opts) {
                let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db));
            }
        }
    }
}

/// A dns on an ephemeral port with fast intervals and the status listener.
pub fn start_dns(store: Store, version_interval_ms: u64, reload_interval_ms: u64) -> DnsHandle {
    let mut config = DnsConfig::default();
    config.reactor.addr.set_port(0);
    config.reactor.thread_num = 2;
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    config.version_interval = Duration::from_millis(version_interval_ms);
    config.reload_interval = Duration::from_millis(reload_interval_ms);
    Dns::start(config, store).unwrap()
}

/// Polls `dns.stats()` until `pred` holds; panics after `secs`.
pub fn wait_stats(dns: &DnsHandle, secs: u64, what: &str, pred: impl Fn(&DnsStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = dns.stats();
        if pred(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A client speaking the wire protocol over a blocking socket.
pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Self { s, buf: Vec::new() }
    }

    pub fn send(&mut self, key: ModKey) {
        let (modid, cmdid) = key.to_wire();
        let bytes = frame::to_bytes(1, &GetRouteRequest { modid, cmdid }).unwrap();
        self.s.write_all(&bytes).unwrap();
    }

    /// Sends our `UnsubscribeRoute` (msgid 101) for `key`.
    pub fn unsubscribe(&mut self, key: ModKey) {
        let (modid, cmdid) = key.to_wire();
        let bytes = frame::to_bytes(
            MessageId::UnsubscribeRoute.into(),
            &GetRouteRequest { modid, cmdid },
        )
        .unwrap();
        self.s.write_all(&bytes).unwrap();
    }

    /// Asks for `key` and returns the hosts of the reply.
    pub fn ask(&mut self, key: ModKey) -> Vec<HostAddr> {
        self.send(key);
        let resp = self
            .recv(Duration::from_secs(5))
            .expect("no reply within 5 s");
        assert_eq!(ModKey::from_wire(resp.modid, resp.cmdid), key);
        hosts_of(&resp)
    }

    /// The next frame (a `GetRouteResponse`), or `None` after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<GetRouteResponse> {
        let body = self.recv_body(timeout)?;
        Some(GetRouteResponse::decode(&body[..]).unwrap())
    }

    /// The body of the next frame (a `GetRouteResponse`), or `None` after
    /// `timeout`.
    pub fn recv_body(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= HEADER_LEN {
                let msgid = i32::from_le_bytes(self.buf[0..4].try_into().unwrap());
                let len = i32::from_le_bytes(self.buf[4..8].try_into().unwrap()) as usize;
                if self.buf.len() >= HEADER_LEN + len {
                    assert_eq!(msgid, 2, "unexpected msgid");
                    let body = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
                    self.buf.drain(..HEADER_LEN + len);
                    return Some(body);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.s.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("dns closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }
}

pub fn hosts_of(resp: &GetRouteResponse) -> Vec<HostAddr> {
    let mut v: Vec<HostAddr> = resp
        .host
        .iter()
        .map(|h| HostAddr::from_proto(h).unwrap())
        .collect();
    v.sort();
    v
}

pub fn host(s: &str) -> HostAddr {
    s.parse().unwrap()
}

/// `GET path` on the status listener; returns (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}
