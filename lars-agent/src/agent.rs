//! The UDP agent: `port_count` shards, each a thread (see `udp.rs`)
//! owning one UDP port and the keys `(modid + cmdid) % port_count` of it.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use lars_core::config::AgentConfig;
use lars_core::proto::{
    GetHostRequest, GetHostResponse, GetRouteRequest, GetRouteResponse, ReportRequest,
};
use lars_core::{HostAddr, MessageId, ModKey, RetCode};
use lars_lb::{Choice, Outcome};
use lars_net::{NetError, StatusServer};
use prost::Message;

use crate::core::{Core, DEFAULT_MAX_PENDING_REPORT_KEYS, ShardCounters, inc};
use crate::snapshot::{self, ShardRoutes};
use crate::udp::{Periodic, ShardHandle, ShardIo, ShardThread};
use crate::uplink::Clients;
use crate::{shard_of, status};

/// How often a shard runs its hosts' timers.
const TICK: Duration = Duration::from_millis(20);
/// How often a shard checks whether its routes changed for the snapshot.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(2);
/// Attempts at finding `port_count` consecutive free ports when
/// `base_port` is 0.
const EPHEMERAL_ATTEMPTS: usize = 50;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A UDP port could not be bound.
    #[error("cannot bind UDP {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// No run of `port_count` consecutive free ephemeral ports was found.
    #[error("no {0} consecutive free UDP ports found")]
    NoPorts(u16),
    /// The dns or reporter client, or a thread, could not start.
    #[error("cannot start the dns or reporter client")]
    Net(#[from] NetError),
    /// The status HTTP server could not start.
    #[error("cannot start the status server on {addr}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: NetError,
    },
    /// A thread could not be spawned.
    #[error("cannot start a thread or socket")]
    Io(#[from] std::io::Error),
}

/// The lars load-balance agent (see the crate docs).
#[derive(Debug)]
pub struct Agent;

impl Agent {
    /// Starts the agent: restores the route snapshot, binds the UDP ports,
    /// connects to the dns and the reporter (in the background, forever),
    /// and starts the status server if `[http]` asks for one.
    pub fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
        let count = usize::from(config.port_count.max(1));
        let restored = match &config.snapshot_path {
            Some(p) => match snapshot::load(p) {
                Ok(r) => {
                    if !r.is_empty() {
                        tracing::info!(keys = r.len(), path = %p.display(), "routes restored from snapshot");
                    }
                    r
                }
                Err(e) => {
                    tracing::warn!("ignoring the route snapshot: {e}");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let peers: Arc<OnceLock<Vec<ShardHandle>>> = Arc::new(OnceLock::new());
        let (p1, p2) = (Arc::clone(&peers), Arc::clone(&peers));
        let mut clients = Clients::start(
            SocketAddr::V4(config.dns),
            SocketAddr::V4(config.reporter),
            move |key, hosts| {
                if let Some(peers) = p1.get() {
                    let owner = shard_of(key, peers.len());
                    peers[owner].post(move |s, _| s.core.apply_route(key, &hosts, Instant::now()));
                }
            },
            move || {
                if let Some(peers) = p2.get() {
                    for p in peers {
                        p.post(|s, _| s.core.dns_connected(Instant::now()));
                    }
                }
            },
        )?;
        let writer = match &config.snapshot_path {
            Some(p) => Some(snapshot::Writer::start(p.clone(), restored.clone(), count)?),
            None => None,
        };
        let counters: Vec<Arc<ShardCounters>> = (0..count).map(|_| Arc::default()).collect();
        let make_shard = |i: usize| {
            let mut core = Core::new(
                config.lb.clone(),
                clients.uplink.clone(),
                Arc::clone(&counters[i]),
                DEFAULT_MAX_PENDING_REPORT_KEYS,
            );
            let now = Instant::now();
            for (key, hosts) in &restored {
                if shard_of(*key, count) == i {
                    core.restore(*key, hosts, now);
                }
            }
            Shard {
                index: i,
                count,
                core,
                peers: Arc::clone(&peers),
                snapshot: writer.as_ref().map(snapshot::Writer::sender),
            }
        };
        let servers = match bind_shards(&config, count, make_shard) {
            Ok(s) => s,
            Err(e) => {
                clients.join();
                if let Some(w) = writer {
                    w.join();
                }
                return Err(e);
            }
        };
        let handles: Vec<ShardHandle> = servers.iter().map(ShardThread::handle).collect();
        let _ = peers.set(handles.clone());
        if clients.dns.is_connected() {
            // The connect hook may have run before the shards were known.
            for h in &handles {
                h.post(|s, _| s.core.dns_connected(Instant::now()));
            }
        }
        let udp_addrs: Vec<SocketAddrV4> = servers.iter().map(ShardThread::local_addr).collect();
        let shared = Arc::new(Shared {
            handles,
            counters,
            dns_addr: config.dns,
            reporter_addr: config.reporter,
            dns_stats: clients.dns.stats(),
            reporter_stats: clients.reporter.stats(),
            reporter_state: Arc::clone(clients.uplink.reporter_state()),
            udp_addrs: udp_addrs.clone(),
        });
        let http = match config.http.addr {
            Some(addr) => match StatusServer::start(addr, status::handler(Arc::clone(&shared))) {
                Ok(s) => Some(s),
                Err(source) => {
                    let mut h =
                        AgentHandle::assemble(servers, clients, writer, None, shared, udp_addrs);
                    h.stop();
                    return Err(AgentError::Http { addr, source });
                }
            },
            None => None,
        };
        tracing::info!(udp = ?udp_addrs, dns = %config.dns, reporter = %config.reporter, "lars agent started");
        Ok(AgentHandle::assemble(
            servers, clients, writer, http, shared, udp_addrs,
        ))
    }
}

fn bind_shards(
    config: &AgentConfig,
    count: usize,
    make_shard: impl Fn(usize) -> Shard,
) -> Result<Vec<ShardThread>, AgentError> {
    let start = |base: u16| -> Result<Vec<ShardThread>, AgentError> {
        let mut servers = Vec::with_capacity(count);
        for i in 0..count {
            let port = u16::try_from(usize::from(base) + i)
                .map_err(|_| AgentError::NoPorts(config.port_count))?;
            let addr = SocketAddrV4::new(config.udp_ip, port);
            let periodic = Periodic {
                tick: TICK,
                report_interval: config.report_interval.max(Duration::from_millis(1)),
                snapshot_interval: SNAPSHOT_INTERVAL,
            };
            let server = ShardThread::start(
                addr,
                make_shard(i),
                periodic,
                &format!("lars-agent-udp-{i}"),
            )
            .map_err(|source| AgentError::Bind {
                addr: SocketAddr::V4(addr),
                source,
            })?;
            servers.push(server);
        }
        Ok(servers)
    };
    if config.base_port != 0 || count == 1 {
        return start(config.base_port);
    }
    // Ephemeral and consecutive: probe a free port, try the run after it.
    for _ in 0..EPHEMERAL_ATTEMPTS {
        let probe = UdpSocket::bind(SocketAddrV4::new(config.udp_ip, 0))?;
        let base = probe.local_addr()?.port();
        drop(probe);
        if usize::from(base) + count > usize::from(u16::MAX) {
            continue;
        }
        match start(base) {
            Ok(s) => return Ok(s),
            Err(AgentError::Bind { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AgentError::NoPorts(config.port_count))
}

/// Sums shard counters (connection fields left false/0).
pub(crate) fn stats_of(counters: &[Arc<ShardCounters>]) -> AgentStats {
    let sum = |f: fn(&ShardCounters) -> &std::sync::atomic::AtomicU64| -> u64 {
        counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
    };
    AgentStats {
        get_host: sum(|c| &c.get_host),
        get_host_succ: sum(|c| &c.get_host_succ),
        get_host_overload: sum(|c| &c.get_host_overload),
        get_host_noexist: sum(|c| &c.get_host_noexist),
        reports: sum(|c| &c.reports),
        get_route: sum(|c| &c.get_route),
        garbage: sum(|c| &c.garbage),
        forwarded: sum(|c| &c.forwarded),
        pulls: sum(|c| &c.pulls),
        routes_applied: sum(|c| &c.routes_applied),
        report_messages: sum(|c| &c.report_messages),
        report_keys_dropped: sum(|c| &c.report_keys_dropped),
        counter_restarts: sum(|c| &c.counter_restarts),
        transitions: sum(|c| &c.transitions),
        ..AgentStats::default()
    }
}

pub(crate) fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// One shard: the loop state of one UDP port.
pub(crate) struct Shard {
    index: usize,
    count: usize,
    pub(crate) core: Core,
    peers: Arc<OnceLock<Vec<ShardHandle>>>,
    snapshot: Option<Sender<ShardRoutes>>,
}

impl Shard {
    /// Sends this shard's routes to the snapshot writer if they changed (or
    /// always, when `force`).
    pub(crate) fn send_snapshot(&mut self, force: bool) {
        if !self.core.take_routes_changed() && !force {
            return;
        }
        if let Some(tx) = &self.snapshot {
            let _ = tx.send((self.index, self.core.snapshot_routes()));
        }
    }

    fn answer_get_host(&mut self, seq: u32, key: ModKey, now: Instant) -> GetHostResponse {
        let (modid, cmdid) = key.to_wire();
        let (retcode, host) = match self.core.get_host(key, now) {
            Choice::Idle(h) | Choice::Probe(h) => (RetCode::Succ, Some(h.to_proto())),
            Choice::Overload => (RetCode::Overload, None),
            Choice::NoExist => (RetCode::NoExist, None),
        };
        GetHostResponse {
            seq,
            modid,
            cmdid,
            retcode: retcode.into(),
            host,
        }
    }

    fn answer_get_route(&mut self, key: ModKey, now: Instant) -> GetRouteResponse {
        let (modid, cmdid) = key.to_wire();
        GetRouteResponse {
            modid,
            cmdid,
            host: self
                .core
                .get_route(key, now)
                .into_iter()
                .map(HostAddr::to_proto)
                .collect(),
        }
    }

    /// Runs `f` on the owning shard, then sends what it returns (if any) to
    /// `peer` from this shard's socket (the one the request arrived on).
    fn forward<M: Message + Send + 'static>(
        &self,
        owner: usize,
        peer: SocketAddr,
        msgid: MessageId,
        f: impl FnOnce(&mut Shard) -> Option<M> + Send + 'static,
    ) {
        let Some(peers) = self.peers.get() else {
            return;
        };
        inc(&self.core.counters().forwarded);
        let back = peers[self.index].clone();
        peers[owner].post(move |s, _| {
            if let Some(rsp) = f(s) {
                back.post(move |_, io| io.send(peer, msgid, &rsp));
            }
        });
    }

    pub(crate) fn garbage(&self, peer: SocketAddr) {
        inc(&self.core.counters().garbage);
        tracing::debug!("garbage datagram from {peer} dropped");
    }

    /// Handles one well-formed frame that arrived on this shard's port.
    pub(crate) fn on_frame(&mut self, io: &ShardIo, msgid: i32, body: &[u8], peer: SocketAddr) {
        let now = Instant::now();
        let s = self;
        match MessageId::from_i32(msgid) {
            Some(MessageId::GetHostRequest) => {
                let Ok(req) = GetHostRequest::decode(body) else {
                    return s.garbage(peer);
                };
                let key = ModKey::from_wire(req.modid, req.cmdid);
                let owner = shard_of(key, s.count);
                if owner == s.index {
                    let rsp = s.answer_get_host(req.seq, key, now);
                    io.send(peer, MessageId::GetHostResponse, &rsp);
                } else {
                    s.forward(owner, peer, MessageId::GetHostResponse, move |o| {
                        Some(o.answer_get_host(req.seq, key, Instant::now()))
                    });
                }
            }
            Some(MessageId::ReportRequest) => {
                let Ok(req) = ReportRequest::decode(body) else {
                    return s.garbage(peer);
                };
                let Some(host) = req.host.as_ref().and_then(HostAddr::from_proto) else {
                    return s.garbage(peer);
                };
                let key = ModKey::from_wire(req.modid, req.cmdid);
                let outcome = Outcome::from_retcode(req.retcode, req.timecost);
                let owner = shard_of(key, s.count);
                if owner == s.index {
                    s.core.report(key, host, outcome, now);
                } else {
                    s.forward(owner, peer, MessageId::GetHostResponse, move |o| {
                        o.core.report(key, host, outcome, Instant::now());
                        None::<GetHostResponse>
                    });
                }
            }
            Some(MessageId::ApiGetRouteRequest) => {
                let Ok(req) = GetRouteRequest::decode(body) else {
                    return s.garbage(peer);
                };
                let key = ModKey::from_wire(req.modid, req.cmdid);
                let owner = shard_of(key, s.count);
                if owner == s.index {
                    let rsp = s.answer_get_route(key, now);
                    io.send(peer, MessageId::ApiGetRouteResponse, &rsp);
                } else {
                    s.forward(owner, peer, MessageId::ApiGetRouteResponse, move |o| {
                        Some(o.answer_get_route(key, Instant::now()))
                    });
                }
            }
            _ => s.garbage(peer),
        }
    }
}

/// What the handle and the status pages share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub handles: Vec<ShardHandle>,
    pub counters: Vec<Arc<ShardCounters>>,
    pub dns_addr: SocketAddrV4,
    pub reporter_addr: SocketAddrV4,
    pub dns_stats: Arc<lars_net::NetStats>,
    pub reporter_stats: Arc<lars_net::NetStats>,
    pub reporter_state: Arc<crate::uplink::ReporterState>,
    pub udp_addrs: Vec<SocketAddrV4>,
}

impl Shared {
    pub(crate) fn stats(&self) -> AgentStats {
        let mut s = stats_of(&self.counters);
        s.dns_connected = self.dns_stats.open.load(Ordering::Relaxed) > 0;
        s.dns_connects = self.dns_stats.accepted.load(Ordering::Relaxed);
        s.reporter_connected = self.reporter_state.connected.load(Ordering::Acquire);
        s.reporter_connects = self.reporter_stats.accepted.load(Ordering::Relaxed);
        s
    }

    /// Runs `f` on every shard and collects the answers (bounded wait).
    pub(crate) fn ask_all<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Shard) -> T + Send + Sync + Clone + 'static,
    ) -> Vec<T> {
        let (tx, rx) = crossbeam_channel::unbounded();
        for h in &self.handles {
            let (tx, f) = (tx.clone(), f.clone());
            h.post(move |s, _| {
                let _ = tx.send(f(s));
            });
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut out = Vec::with_capacity(self.handles.len());
        while out.len() < self.handles.len() {
            match rx.recv_deadline(deadline) {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    /// Runs `f` on the shard owning `key` (bounded wait).
    pub(crate) fn ask<T: Send + 'static>(
        &self,
        key: ModKey,
        f: impl FnOnce(&mut Shard) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let h = &self.handles[shard_of(key, self.handles.len())];
        h.post(move |s, _| {
            let _ = tx.send(f(s));
        });
        rx.recv_timeout(Duration::from_secs(2)).ok()
    }
}

/// Counters of a running agent (see [`AgentHandle::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentStats {
    /// GetHostRequests answered.
    pub get_host: u64,
    /// ... with a host (`RET_SUCC`).
    pub get_host_succ: u64,
    /// ... with `RET_OVERLOAD`.
    pub get_host_overload: u64,
    /// ... with `RET_NOEXIST`.
    pub get_host_noexist: u64,
    /// ReportRequests applied.
    pub reports: u64,
    /// API GetRouteRequests answered.
    pub get_route: u64,
    /// Datagrams dropped: bad size, unknown msgid, malformed body.
    pub garbage: u64,
    /// Requests that arrived on a port not owning their key (handled by the
    /// owning shard, answered from the arrival port).
    pub forwarded: u64,
    /// GetRouteRequests sent to the dns.
    pub pulls: u64,
    /// GetRouteResponses from the dns applied.
    pub routes_applied: u64,
    /// ReportStatusRequests sent to the reporter.
    pub report_messages: u64,
    /// Times a key could not join the bounded pending-report set.
    pub report_keys_dropped: u64,
    /// Host counters restarted from zero before passing 2^31 (each announced
    /// to the reporter by a `(0, 0)` report).
    pub counter_restarts: u64,
    /// Host state changes.
    pub transitions: u64,
    /// Whether the dns is connected.
    pub dns_connected: bool,
    /// Successful connects to the dns.
    pub dns_connects: u64,
    /// Whether the reporter is connected.
    pub reporter_connected: bool,
    /// Successful connects to the reporter.
    pub reporter_connects: u64,
}

/// A running agent: its addresses, counters, and `stop()`.
#[derive(Debug)]
pub struct AgentHandle {
    servers: Vec<ShardThread>,
    clients: Option<Clients>,
    writer: Option<snapshot::Writer>,
    http: Option<StatusServer>,
    shared: Arc<Shared>,
    udp_addrs: Vec<SocketAddrV4>,
}

impl AgentHandle {
    fn assemble(
        servers: Vec<ShardThread>,
        clients: Clients,
        writer: Option<snapshot::Writer>,
        http: Option<StatusServer>,
        shared: Arc<Shared>,
        udp_addrs: Vec<SocketAddrV4>,
    ) -> Self {
        Self {
            servers,
            clients: Some(clients),
            writer,
            http,
            shared,
            udp_addrs,
        }
    }

    /// The UDP addresses, in shard order (consecutive ports).
    pub fn udp_addrs(&self) -> &[SocketAddrV4] {
        &self.udp_addrs
    }

    /// The first UDP port (the clients' `base_port`).
    pub fn base_port(&self) -> u16 {
        self.udp_addrs.first().map_or(0, SocketAddrV4::port)
    }

    /// The status server's address, if `[http]` enabled one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(StatusServer::local_addr)
    }

    /// The counters now.
    pub fn stats(&self) -> AgentStats {
        self.shared.stats()
    }

    /// Stops everything and joins every thread: the status server, the
    /// shards (after writing a final snapshot), the clients, the snapshot
    /// writer. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut h) = self.http.take() {
            h.stop();
        }
        if !self.servers.is_empty() {
            self.shared.ask_all(|s| s.send_snapshot(true));
        }
        for s in &mut self.servers {
            s.join();
        }
        // Shards (and their snapshot senders) are gone once joined.
        self.servers.clear();
        if let Some(mut c) = self.clients.take() {
            c.join();
        }
        if let Some(w) = self.writer.take() {
            w.join();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
