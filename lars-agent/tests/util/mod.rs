//! Test harness: dns, reporter and agent in-process over SQLite, on
//! ephemeral ports; real UDP clients.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lars_agent::AgentConfig;
use lars_agent::{Agent, AgentHandle};
use lars_client::{ApiError, ClientConfig, LarsClient};
use lars_core::config::{HttpConfig, Ini};
use lars_core::proto::{GetRouteRequest, GetRouteResponse};
use lars_core::{HostAddr, MessageId, ModKey, frame};
use lars_dns::DnsConfig;
use lars_dns::{Dns, DnsHandle};
use lars_lb::Policy;
use lars_reporter::ReporterConfig;
use lars_reporter::{Reporter, ReporterHandle};
use lars_store::{RouteAdmin, Store};

/// Waits until `f` holds, polling every 20 ms; panics with `what` after
/// `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `reg_init` through `c`, again until the agent has the key's hosts (at
/// most 5 s): one `reg_init` waits about 100 ms for the dns, which a loaded
/// CI machine can exceed.
pub fn reg(c: &LarsClient, modid: u32, cmdid: u32) -> Vec<SocketAddrV4> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.reg_init(modid, cmdid) {
            Ok(r) if !r.is_empty() => return r,
            Ok(_) | Err(ApiError::NoExist | ApiError::Timeout) if Instant::now() < deadline => {}
            other => panic!("reg_init({modid}, {cmdid}): {other:?}"),
        }
    }
}

pub fn hosts(list: &[&str]) -> Vec<HostAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

pub fn v4(list: &[HostAddr]) -> Vec<SocketAddrV4> {
    let mut v: Vec<SocketAddrV4> = list.iter().map(|h| SocketAddrV4::from(*h)).collect();
    v.sort();
    v
}

/// A store, a dns and a reporter.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub dns: Option<DnsHandle>,
    pub reporter: Option<ReporterHandle>,
    pub dns_addr: SocketAddrV4,
    pub reporter_addr: SocketAddrV4,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            lars_store::open(&format!("sqlite://{}", dir.path().join("x.db").display())).unwrap();
        let dns = start_dns(&store, 0);
        let reporter = start_reporter(&store, 0);
        let dns_addr = as_v4(dns.local_addr());
        let reporter_addr = as_v4(reporter.local_addr());
        Self {
            dir,
            store,
            dns: Some(dns),
            reporter: Some(reporter),
            dns_addr,
            reporter_addr,
        }
    }

    pub fn set_hosts(&self, modid: u32, cmdid: u32, list: &[HostAddr]) {
        self.store
            .set_hosts(ModKey::new(modid, cmdid), list)
            .unwrap();
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.path().join("routes.snapshot")
    }

    /// An agent config with short timeouts talking to this env.
    pub fn agent_config(&self) -> AgentConfig {
        let mut c = AgentConfig {
            dns: self.dns_addr,
            reporter: self.reporter_addr,
            base_port: 0,
            port_count: std::num::NonZeroU16::new(3).unwrap(),
            report_interval: Duration::from_millis(100),
            snapshot_path: Some(self.snapshot_path()),
            ..AgentConfig::default()
        };
        c.lb.idle_timeout = Duration::from_secs(1);
        c.lb.overload_timeout = Duration::from_secs(1);
        c.lb.update_timeout = Duration::from_secs(15);
        c.http = HttpConfig {
            addr: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        };
        c
    }

    pub fn agent(&self) -> AgentHandle {
        Agent::start(self.agent_config()).unwrap()
    }

    /// [`agent_config`](Self::agent_config) with the classic policy, for
    /// tests that assert the original Lars rules (strict round-robin,
    /// overloaded hosts back after `overload_timeout`).
    pub fn classic_agent_config(&self) -> AgentConfig {
        let mut c = self.agent_config();
        c.lb.policy = Policy::Classic;
        c
    }

    pub fn classic_agent(&self) -> AgentHandle {
        Agent::start(self.classic_agent_config()).unwrap()
    }

    /// The agent config a conf file with `loadbalance` as its
    /// `[loadbalance]` section gives, pointed at this env (ephemeral UDP
    /// and status ports, no snapshot).
    pub fn conf_agent_config(&self, loadbalance: &str) -> AgentConfig {
        let text = format!(
            "[reporter]\nip = 127.0.0.1\nport = {}\n\n[dnsserver]\nip = 127.0.0.1\nport = {}\n\n\
             [loadbalance]\n{loadbalance}\n\n[agent]\nbase_port = 0\nport_count = 3\n\
             report_interval = 0.1\nsnapshot_path =\n\n[http]\nport = 0\n",
            self.reporter_addr.port(),
            self.dns_addr.port(),
        );
        AgentConfig::from_ini(&Ini::parse("test.conf", &text).unwrap()).unwrap()
    }

    /// Another dns over this env's store, on an ephemeral port.
    pub fn extra_dns(&self) -> DnsHandle {
        start_dns(&self.store, 0)
    }

    /// Another reporter over this env's store, on an ephemeral port.
    pub fn extra_reporter(&self) -> ReporterHandle {
        start_reporter(&self.store, 0)
    }

    pub fn stop_dns(&mut self) {
        if let Some(mut d) = self.dns.take() {
            d.stop();
        }
    }

    /// Restarts the dns on its previous port (retrying while the port is
    /// still held).
    pub fn restart_dns(&mut self) {
        let store = self.store.clone();
        self.restart_dns_with(&store);
    }

    /// Restarts the dns on its previous port over `store`.
    pub fn restart_dns_with(&mut self, store: &Store) {
        self.stop_dns();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match try_start_dns(store, self.dns_addr.port()) {
                Ok(d) => {
                    self.dns = Some(d);
                    return;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "dns restart: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    pub fn stop_reporter(&mut self) {
        if let Some(mut r) = self.reporter.take() {
            r.stop();
        }
    }

    pub fn restart_reporter(&mut self) {
        self.stop_reporter();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match try_start_reporter(&self.store, self.reporter_addr.port()) {
                Ok(r) => {
                    self.reporter = Some(r);
                    return;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "reporter restart: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_dns();
        self.stop_reporter();
    }
}

pub fn as_v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("ipv6"),
    }
}

fn try_start_dns(store: &Store, port: u16) -> Result<DnsHandle, lars_dns::DnsError> {
    let mut c = DnsConfig::default();
    c.reactor.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    c.reactor.thread_num = 1;
    c.version_interval = Duration::from_millis(100);
    Dns::start(c, store.clone())
}

fn start_dns(store: &Store, port: u16) -> DnsHandle {
    try_start_dns(store, port).unwrap()
}

fn try_start_reporter(
    store: &Store,
    port: u16,
) -> Result<ReporterHandle, lars_reporter::ReporterError> {
    let mut c = ReporterConfig::default();
    c.reactor.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    c.reactor.thread_num = 1;
    c.db_thread_cnt = std::num::NonZeroUsize::MIN;
    c.flush_interval = Duration::from_millis(100);
    Reporter::start(c, store.clone())
}

fn start_reporter(store: &Store, port: u16) -> ReporterHandle {
    try_start_reporter(store, port).unwrap()
}

/// A real UDP client of `agent` (per-request timeout `timeout`).
pub fn client(agent: &AgentHandle, timeout: Duration) -> LarsClient {
    let n = u16::try_from(agent.udp_addrs().len()).unwrap();
    LarsClient::connect(
        &ClientConfig::builder()
            .base_port(agent.base_port())
            .port_count(n)
            .timeout(timeout)
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// `GET path` on the agent's status server: (status code, body).
pub fn http_get(agent: &AgentHandle, path: &str) -> (u16, String) {
    let addr = agent.http_addr().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

pub fn json(agent: &AgentHandle, path: &str) -> serde_json::Value {
    let (code, body) = http_get(agent, path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A dns behaving as the original: answers `GetRouteRequest` (1) with a
/// plain `GetRouteResponse` (no field 4) from its table, pushes on demand,
/// and skips every other msgid (its `msg_router` prints "msgid N is not
/// register!" and reads on). One connection at a time; stopped on drop.
pub struct OriginalDns {
    pub addr: SocketAddrV4,
    table: Arc<Mutex<HashMap<ModKey, Vec<HostAddr>>>>,
    conn: Arc<Mutex<Option<TcpStream>>>,
    /// Frames with a msgid it has no callback for.
    pub unknown_msgids: Arc<AtomicU64>,
    /// Connections accepted.
    pub accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OriginalDns {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = as_v4(listener.local_addr().unwrap());
        let table: Arc<Mutex<HashMap<ModKey, Vec<HostAddr>>>> = Arc::default();
        let conn: Arc<Mutex<Option<TcpStream>>> = Arc::default();
        let unknown_msgids = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, c, u, a, s) = (
            Arc::clone(&table),
            Arc::clone(&conn),
            Arc::clone(&unknown_msgids),
            Arc::clone(&accepted),
            Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            let mut stream: Option<TcpStream> = None;
            let mut buf = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok((sock, _)) = listener.accept() {
                    sock.set_nonblocking(false).unwrap();
                    sock.set_read_timeout(Some(Duration::from_millis(20)))
                        .unwrap();
                    *c.lock().unwrap() = Some(sock.try_clone().unwrap());
                    stream = Some(sock);
                    buf.clear();
                    a.fetch_add(1, Ordering::Relaxed);
                }
                let Some(sock) = stream.as_mut() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let mut chunk = [0u8; 4096];
                match sock.read(&mut chunk) {
                    Ok(0) => stream = None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(_) => {} // timeout: check stop, accept
                }
                while let Some((msgid, body)) = take_frame(&mut buf) {
                    if msgid == i32::from(MessageId::GetRouteRequest) {
                        let req = <GetRouteRequest as prost::Message>::decode(&body[..]).unwrap();
                        let key = ModKey::from_wire(req.modid, req.cmdid);
                        let hosts = t.lock().unwrap().get(&key).cloned().unwrap_or_default();
                        write_route(&c, key, &hosts);
                    } else {
                        u.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            addr,
            table,
            conn,
            unknown_msgids,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Sets `key`'s hosts and pushes them (the original pushes every
    /// changed key to its subscribers).
    pub fn set_and_push(&self, key: ModKey, hosts: &[HostAddr]) {
        self.table.lock().unwrap().insert(key, hosts.to_vec());
        write_route(&self.conn, key, hosts);
    }
}

impl Drop for OriginalDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Takes one whole frame (msgid, body) off the front of `buf`, if there
/// is one.
fn take_frame(buf: &mut Vec<u8>) -> Option<(i32, Vec<u8>)> {
    let head = buf.get(..8)?;
    let msgid = i32::from_le_bytes(head[..4].try_into().unwrap());
    let len = usize::try_from(i32::from_le_bytes(head[4..].try_into().unwrap())).unwrap();
    let body = buf.get(8..8 + len)?.to_vec();
    buf.drain(..8 + len);
    Some((msgid, body))
}

fn write_route(conn: &Mutex<Option<TcpStream>>, key: ModKey, hosts: &[HostAddr]) {
    let (modid, cmdid) = key.to_wire();
    let rsp = GetRouteResponse {
        modid,
        cmdid,
        host: hosts.iter().map(|h| h.to_proto()).collect(),
    };
    let bytes = frame::to_bytes(MessageId::GetRouteResponse.into(), &rsp).unwrap();
    if let Some(s) = conn.lock().unwrap().as_mut() {
        let _ = s.write_all(&bytes);
    }
}
