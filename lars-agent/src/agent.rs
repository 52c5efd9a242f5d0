//! The UDP agent: `port_count` shards, each a lars-net [`UdpServer`] (one
//! loop thread, one port) driving one [`AgentCore`] that owns the keys
//! `(modid + cmdid) % port_count` of it. The shell only feeds the core its
//! inputs (datagrams, dns frames, connection events, timeouts) and drains its
//! outputs to the socket, the dns and reporter clients, the other shards and
//! the snapshot writer.
// An I/O shell: clock, threads and locks are its business (see clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::AgentConfig;
use crossbeam_channel::Sender;
use lars_core::proto::GetRouteResponse;
use lars_core::{Chain, MessageId, ModKey};
use lars_net::{
    NetError, StatusServer, TcpClient, UdpHandle, UdpIo, UdpServer, UdpServerBuilder, UdpService,
};

use crate::core::{AgentCore, CoreConfig, Event, Reply, Shard, Transmit};
use crate::links::{self, DnsLink, LinkEvent, Links, Senders};
use crate::snapshot::{self, ShardRoutes};
use crate::stats::AgentStats;
use crate::{shard_of, status};

/// How often a shard hands its changed routes to the snapshot writer.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(2);
/// Receive attempts (each after a yield) a shard makes before it sleeps in
/// `epoll_wait`: an application's next datagram (its report right after a
/// reply, its next request) usually arrives within them, so neither side
/// pays a sleep and a wake-up per datagram. Restarts when a datagram is
/// found; an idle shard spins once per wake-up, then sleeps.
const SPIN_ROUNDS: u32 = 20;
/// Attempts at finding `port_count` consecutive free ports when
/// `base_port` is 0.
const EPHEMERAL_ATTEMPTS: usize = 50;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A UDP port could not be bound (the cause names the address).
    #[error("cannot open the agent's UDP ports")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: NetError,
    },
    /// No run of `port_count` consecutive free ephemeral ports was found.
    #[error("no {0} consecutive free UDP ports found")]
    NoPorts(u16),
    /// The dns or reporter client, or a thread, could not start.
    #[error("cannot start the dns or reporter client")]
    Net(#[from] NetError),
    /// The status HTTP server could not start (the cause names the
    /// address).
    #[error("cannot start the agent's status server")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: NetError,
    },
    /// A thread or socket could not be created.
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
    ///
    /// Wiring, each part complete when it starts: the shards' sockets and
    /// loops are created first (their handles queue what is posted), then
    /// the clients, which deliver to those handles, then the shards, which
    /// send through the clients and to each other.
    pub fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
        let count = usize::from(config.port_count.get());
        let restored = load_snapshot(&config);
        let builders = bind_shards(&config, count)?;
        let handles: Vec<UdpHandle<ShardShell>> = builders.iter().map(|b| b.handle()).collect();
        let udp_addrs: Vec<SocketAddrV4> = builders
            .iter()
            .filter_map(|b| match b.local_addr() {
                SocketAddr::V4(a) => Some(a),
                SocketAddr::V6(_) => None,
            })
            .collect();
        let base_port = udp_addrs
            .first()
            .map_or(config.base_port, SocketAddrV4::port);
        let reporter_addrs: Vec<SocketAddr> =
            config.reporters().into_iter().map(SocketAddr::V4).collect();
        let mut links = Links::start(
            links::dns_failover(&config, &config.identity(base_port)),
            &reporter_addrs,
            links::LinkTls::load(&config)?,
            deliver_to(handles.clone()),
        )?;
        let writer = match &config.snapshot_path {
            Some(p) => match snapshot::Writer::start(p.clone(), restored.clone(), count) {
                Ok(w) => Some(w),
                Err(e) => {
                    links.join();
                    return Err(e.into());
                }
            },
            None => None,
        };
        let senders = links.senders();
        let now = Instant::now();
        let mut servers = Vec::with_capacity(count);
        for (i, b) in builders.into_iter().enumerate() {
            let Some(shard) = Shard::new(i, count) else {
                continue; // i < count: never
            };
            let mut core = AgentCore::new(
                CoreConfig::new(config.lb.clone())
                    .shard(shard)
                    .report_interval(config.report_interval)
                    .snapshot_interval(SNAPSHOT_INTERVAL)
                    .key_limits(config.key_limits(count))
                    .reporters(
                        reporter_addrs.len(),
                        config.reporter_failover_grace,
                        config.reporter_handoff_hold,
                    ),
            );
            core.restore(&restored, now);
            let shell = ShardShell {
                index: i,
                core,
                senders: senders.clone(),
                peers: handles.clone(),
                snapshot: writer.as_ref().map(snapshot::Writer::sender),
            };
            match b
                .name(&format!("lars-agent-udp-{i}"))
                .spin(SPIN_ROUNDS)
                .start(shell)
            {
                Ok(s) => servers.push(s),
                Err(e) => {
                    drop(servers);
                    links.join();
                    if let Some(w) = writer {
                        w.join();
                    }
                    return Err(e.into());
                }
            }
        }
        let shared = Arc::new(Shared {
            handles,
            dns_link: Arc::clone(&links.dns_link),
            reporter_addrs: config.reporters(),
            dns_stats: links.dns.stats(),
            reporter_stats: links.reporters.iter().map(TcpClient::stats).collect(),
            udp_addrs: udp_addrs.clone(),
        });
        let mut handle = AgentHandle {
            servers,
            links: Some(links),
            writer,
            http: None,
            shared,
            udp_addrs,
        };
        if let Some(addr) = config.http.addr {
            let counted = Arc::<lars_net::http::HttpStats>::default();
            let handler = status::handler(Arc::clone(&handle.shared), &counted);
            match StatusServer::start_with_stats(addr, handler, counted) {
                Ok(s) => handle.http = Some(s),
                Err(source) => {
                    handle.stop();
                    return Err(AgentError::Http { addr, source });
                }
            }
        }
        tracing::info!(udp = ?handle.udp_addrs, dns = ?config.dns_list(), reporters = ?config.reporters(), "lars agent started");
        Ok(handle)
    }
}

fn load_snapshot(config: &AgentConfig) -> Vec<(ModKey, Vec<lars_core::HostAddr>)> {
    let Some(p) = &config.snapshot_path else {
        return Vec::new();
    };
    match snapshot::load(p) {
        Ok(r) => {
            if !r.is_empty() {
                tracing::info!(keys = r.len(), path = %p.display(), "routes restored from snapshot");
            }
            r
        }
        Err(e) => {
            tracing::warn!("ignoring the route snapshot: {}", Chain(&e));
            Vec::new()
        }
    }
}

/// Binds the shards' ports (consecutive) and creates their loops.
fn bind_shards(
    config: &AgentConfig,
    count: usize,
) -> Result<Vec<UdpServerBuilder<ShardShell>>, AgentError> {
    let bind_all = |base: u16| -> Result<Vec<UdpServerBuilder<ShardShell>>, AgentError> {
        (0..count)
            .map(|i| {
                let port = u16::try_from(usize::from(base) + i)
                    .map_err(|_| AgentError::NoPorts(config.port_count.get()))?;
                let addr = SocketAddr::V4(SocketAddrV4::new(config.udp_ip, port));
                let b =
                    UdpServer::bind(addr).map_err(|source| AgentError::Bind { addr, source })?;
                Ok(if config.rcvbuf == 0 {
                    b
                } else {
                    b.recv_buffer(config.rcvbuf)
                })
            })
            .collect()
    };
    if config.base_port != 0 || count == 1 {
        return bind_all(config.base_port);
    }
    // Ephemeral and consecutive: probe a free port, try the run after it.
    for _ in 0..EPHEMERAL_ATTEMPTS {
        let probe = UdpSocket::bind(SocketAddrV4::new(config.udp_ip, 0))?;
        let base = probe.local_addr()?.port();
        drop(probe);
        if usize::from(base) + count > usize::from(u16::MAX) {
            continue;
        }
        match bind_all(base) {
            Ok(s) => return Ok(s),
            Err(AgentError::Bind { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AgentError::NoPorts(config.port_count.get()))
}

/// What the dns and reporter clients see, posted to the shards: a dns answer
/// to the shard owning its key, connection events to every shard.
fn deliver_to(shards: Vec<UdpHandle<ShardShell>>) -> impl Fn(LinkEvent) + Send + Sync + 'static {
    move |ev| match ev {
        LinkEvent::DnsFrame(frame) => {
            let key = match frame.message::<GetRouteResponse>() {
                Ok(rsp) => ModKey::from_wire(rsp.modid, rsp.cmdid),
                Err(e) => {
                    return tracing::warn!("bad GetRouteResponse from the dns: {}", Chain(&e));
                }
            };
            if let Some(owner) = shards.get(shard_of(key, shards.len())) {
                owner.post(move |s, io| {
                    s.core.handle_dns_frame(&frame, Instant::now());
                    s.flush(io);
                });
            }
        }
        ev => {
            for h in &shards {
                let ev = ev.clone();
                h.post(move |s, io| {
                    let now = Instant::now();
                    match ev {
                        LinkEvent::DnsConnected => s.core.on_dns_connected(now),
                        LinkEvent::DnsDisconnected => s.core.on_dns_disconnected(),
                        LinkEvent::ReporterConnected {
                            link,
                            epoch,
                            caller,
                        } => {
                            s.core.on_reporter_connected(link, epoch, caller, now);
                        }
                        LinkEvent::ReporterDisconnected { link } => {
                            s.core.on_reporter_disconnected(link, now);
                        }
                        LinkEvent::DnsFrame(_) => {}
                    }
                    s.flush(io);
                });
            }
        }
    }
}

/// The wall clock's unix second (the statistics' `ts`).
pub(crate) fn unix_now() -> u32 {
    u32::try_from(lars_core::time::unix_now()).unwrap_or(u32::MAX)
}

/// One shard: the I/O shell around its core, the state of one UDP loop.
pub(crate) struct ShardShell {
    index: usize,
    pub(crate) core: AgentCore,
    senders: Senders,
    peers: Vec<UdpHandle<ShardShell>>,
    snapshot: Option<Sender<ShardRoutes>>,
}

impl UdpService for ShardShell {
    fn on_datagram(&mut self, io: &mut UdpIo<'_>, from: SocketAddr, data: &[u8]) {
        self.core.handle_datagram(from, data, Instant::now());
        self.flush(io);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn on_timeout(&mut self, io: &mut UdpIo<'_>, now: Instant) {
        self.core.handle_timeout(now, unix_now());
        self.flush(io);
    }
}

impl ShardShell {
    /// Sends everything the core produced.
    fn flush(&mut self, io: &mut UdpIo<'_>) {
        while let Some(t) = self.core.poll_transmit() {
            match t {
                Transmit::Dns(_) | Transmit::DnsUnsubscribe(_) | Transmit::Reporter { .. } => {
                    self.senders.send(&t);
                }
                Transmit::App { via, to, reply } if via == self.index => {
                    send_reply(io, to, &reply);
                }
                Transmit::App { via, to, reply } => {
                    if let Some(origin) = self.peers.get(via) {
                        origin.post(move |_, io| send_reply(io, to, &reply));
                    }
                }
                Transmit::Shard {
                    shard,
                    via,
                    from,
                    request,
                } => {
                    if let Some(owner) = self.peers.get(shard) {
                        owner.post(move |s, io| {
                            s.core.handle_request(via, from, request, Instant::now());
                            s.flush(io);
                        });
                    }
                }
            }
        }
        while let Some(Event::Snapshot(routes)) = self.core.poll_event() {
            if let Some(tx) = &self.snapshot {
                let _ = tx.send((self.index, routes));
            }
        }
    }

    /// Hands every route of this shard to the snapshot writer (at stop).
    fn send_snapshot(&mut self) {
        if let Some(tx) = &self.snapshot {
            let _ = tx.send((self.index, self.core.snapshot_routes()));
        }
    }
}

fn send_reply(io: &mut UdpIo<'_>, to: SocketAddr, reply: &Reply) {
    let sent = match reply {
        Reply::GetHost(m) => io.send(to, MessageId::GetHostResponse, m),
        Reply::GetRoute(m) => io.send(to, MessageId::ApiGetRouteResponse, m),
    };
    if let Err(e) = sent {
        tracing::debug!("reply to {to}: {}", Chain(&e));
    }
}

/// What the handle and the status pages share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub handles: Vec<UdpHandle<ShardShell>>,
    pub dns_link: Arc<DnsLink>,
    pub reporter_addrs: Vec<SocketAddrV4>,
    pub dns_stats: Arc<lars_net::NetStats>,
    pub reporter_stats: Vec<Arc<lars_net::NetStats>>,
    pub udp_addrs: Vec<SocketAddrV4>,
}

impl Shared {
    /// The counters now: every shard's (bounded wait) and the connections'.
    fn stats(&self) -> AgentStats {
        let mut s = AgentStats::sum(&self.ask_all_shells(|s| s.core.counters()));
        s.dns_connected = self.dns_stats.snapshot().open > 0;
        s.dns_connects = self.dns_stats.snapshot().accepted;
        s.dns_failovers = self.dns_link.status().failovers;
        let reporters: Vec<_> = self.reporter_stats.iter().map(|r| r.snapshot()).collect();
        s.reporter_connected = reporters.iter().any(|r| r.open > 0);
        s.reporter_connects = reporters.iter().map(|r| r.accepted).sum();
        let dns = self.dns_stats.snapshot();
        let links = || std::iter::once(&dns).chain(&reporters);
        s.link_connect_failures = links().map(|l| l.connect_failures).sum();
        s.link_tls_failures = links().map(|l| l.tls_refused_handshake).sum();
        s
    }

    /// Datagrams the kernel dropped on the agent's UDP sockets since they
    /// were bound (summed over the shards; read from `/proc/net/udp`, no
    /// shard is asked). `None` where the kernel does not say (not Linux).
    pub(crate) fn udp_drops(&self) -> Option<u64> {
        self.handles
            .iter()
            .filter_map(UdpHandle::kernel_drops)
            .reduce(|a, b| a + b)
    }

    /// Runs `f` on every shard and collects the answers (bounded wait).
    fn ask_all_shells<T: Send + 'static>(
        &self,
        f: impl Fn(&mut ShardShell) -> T + Send + Sync + Clone + 'static,
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
    fn ask_shell<T: Send + 'static>(
        &self,
        key: ModKey,
        f: impl FnOnce(&mut ShardShell) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let h = self.handles.get(shard_of(key, self.handles.len()))?;
        h.post(move |s, _| {
            let _ = tx.send(f(s));
        });
        rx.recv_timeout(Duration::from_secs(2)).ok()
    }
}

impl status::Shards for Shared {
    fn stats(&self) -> AgentStats {
        Shared::stats(self)
    }

    fn ask_all<T: Send + 'static>(
        &self,
        f: impl Fn(&AgentCore) -> T + Send + Sync + Clone + 'static,
    ) -> Vec<T> {
        self.ask_all_shells(move |s| f(&s.core))
    }

    fn ask<T: Send + 'static>(
        &self,
        key: ModKey,
        f: impl FnOnce(&AgentCore) -> T + Send + 'static,
    ) -> Option<T> {
        self.ask_shell(key, move |s| f(&s.core))
    }

    fn udp_drops(&self) -> Option<u64> {
        Shared::udp_drops(self)
    }

    fn addrs(&self) -> status::Addrs {
        status::Addrs {
            udp: self.udp_addrs.clone(),
            shards: self.handles.len(),
            dns: self.dns_link.status(),
            reporters: self
                .reporter_addrs
                .iter()
                .zip(&self.reporter_stats)
                .map(|(a, st)| (*a, st.snapshot().open > 0))
                .collect(),
        }
    }
}

/// A running agent: its addresses, counters, and `stop()`.
#[derive(Debug)]
pub struct AgentHandle {
    servers: Vec<UdpServer<ShardShell>>,
    links: Option<Links>,
    writer: Option<snapshot::Writer>,
    http: Option<StatusServer>,
    shared: Arc<Shared>,
    udp_addrs: Vec<SocketAddrV4>,
}

impl AgentHandle {
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

    /// Datagrams the kernel dropped on the agent's UDP sockets (full
    /// receive buffers, see `[agent] rcvbuf`), summed over the shards.
    /// `None` where the kernel does not say (not Linux).
    pub fn udp_drops(&self) -> Option<u64> {
        self.shared.udp_drops()
    }

    /// Stops everything and joins every thread: the status server, the
    /// shards (after writing a final snapshot), the clients, the snapshot
    /// writer. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut h) = self.http.take() {
            h.stop();
        }
        if !self.servers.is_empty() {
            self.shared.ask_all_shells(ShardShell::send_snapshot);
        }
        for s in &mut self.servers {
            s.join();
        }
        // Shards (and their snapshot senders) are gone once dropped.
        self.servers.clear();
        if let Some(mut l) = self.links.take() {
            l.join();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn udp_sockets_get_the_configured_buffer_and_report_kernel_drops() {
        let config = AgentConfig {
            base_port: 0,
            snapshot_path: None,
            rcvbuf: 1 << 20,
            // Nothing listens there: the clients just keep retrying.
            dns: "127.0.0.1:9".parse().unwrap(),
            reporter: "127.0.0.1:9".parse().unwrap(),
            http: lars_core::config::HttpConfig { addr: None },
            ..AgentConfig::default()
        };
        let mut agent = Agent::start(config).unwrap();
        if std::path::Path::new("/proc/net/udp").exists() {
            assert_eq!(agent.udp_drops(), Some(0));
        }
        agent.stop();
    }
}
