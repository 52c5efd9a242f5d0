//! The agent's two TCP clients (lars-net `TcpClient`): to the dns (pulls out,
//! routes in) and to the reporter (statistics out), shared by the UDP agent
//! and the embedded mode.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use lars_core::proto::{GetRouteRequest, GetRouteResponse, ReportStatusRequest};
use lars_core::{HostAddr, MessageId, ModKey};
use lars_net::{ClientSender, DisconnectedPolicy, Router, TcpClient};

use crate::core::Uplink;

/// Reconnect backoff of both clients.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the reporter connection looks like to the shards.
#[derive(Debug)]
pub(crate) struct ReporterState {
    pub connected: AtomicBool,
    pub epoch: AtomicU64,
    pub caller: AtomicU32,
}

/// The senders of both clients, as a [`Uplink`].
#[derive(Debug)]
pub(crate) struct NetUplink {
    dns: ClientSender,
    reporter: ClientSender,
    rep: Arc<ReporterState>,
}

impl NetUplink {
    /// The reporter connection state.
    pub(crate) fn reporter_state(&self) -> &Arc<ReporterState> {
        &self.rep
    }
}

impl Uplink for NetUplink {
    fn pull(&self, key: ModKey) {
        let (modid, cmdid) = key.to_wire();
        let req = GetRouteRequest { modid, cmdid };
        if let Err(e) = self.dns.send(MessageId::GetRouteRequest, &req) {
            tracing::warn!("cannot encode a pull: {e}");
        }
    }

    fn reporter_connected(&self) -> bool {
        self.rep.connected.load(Ordering::Acquire)
    }

    fn reporter_epoch(&self) -> u64 {
        self.rep.epoch.load(Ordering::Acquire)
    }

    fn caller(&self) -> u32 {
        self.rep.caller.load(Ordering::Relaxed)
    }

    fn report(&self, msg: &ReportStatusRequest) {
        if let Err(e) = self.reporter.send(MessageId::ReportStatusRequest, msg) {
            tracing::warn!("cannot encode a report: {e}");
        }
    }
}

/// Both running clients.
#[derive(Debug)]
pub(crate) struct Clients {
    pub dns: TcpClient,
    pub reporter: TcpClient,
    pub uplink: Arc<NetUplink>,
}

impl Clients {
    /// Starts both clients. `on_route` gets every GetRouteResponse (reply or
    /// push) on the dns client's thread; `on_dns_connect` runs after every
    /// (re)connect to the dns.
    pub(crate) fn start(
        dns: SocketAddr,
        reporter: SocketAddr,
        on_route: impl Fn(ModKey, Vec<HostAddr>) + Send + Sync + 'static,
        on_dns_connect: impl Fn() + Send + Sync + 'static,
    ) -> lars_net::Result<Self> {
        let router =
            Router::new().route(MessageId::GetRouteResponse, move |_, frame| match frame
                .message::<GetRouteResponse>(
            ) {
                Ok(rsp) => {
                    let key = ModKey::from_wire(rsp.modid, rsp.cmdid);
                    let hosts = rsp.host.iter().filter_map(HostAddr::from_proto).collect();
                    on_route(key, hosts);
                }
                Err(e) => tracing::warn!("bad GetRouteResponse from the dns: {e}"),
            });
        let dns = TcpClient::builder(dns)
            .name("lars-agent-dns")
            .router(router)
            // A pull made while the dns is away is dropped; every key is
            // pulled again on connect.
            .disconnected_policy(DisconnectedPolicy::Drop)
            .backoff(MIN_BACKOFF, MAX_BACKOFF)
            .on_connect(move |conn| {
                tracing::info!(dns = %conn.peer_addr(), "dns connected; pulling every key in use");
                on_dns_connect();
            })
            .on_close(|conn| tracing::warn!(dns = %conn.peer_addr(), "dns connection lost"))
            .start()?;
        let rep = Arc::new(ReporterState {
            connected: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            caller: AtomicU32::new(u32::from(Ipv4Addr::LOCALHOST)),
        });
        let (r1, r2) = (Arc::clone(&rep), Arc::clone(&rep));
        let reporter = TcpClient::builder(reporter)
            .name("lars-agent-reporter")
            // Shards buffer (merge) statistics themselves while it is away.
            .disconnected_policy(DisconnectedPolicy::Drop)
            .backoff(MIN_BACKOFF, MAX_BACKOFF)
            .on_connect(move |conn| {
                if let Ok(SocketAddr::V4(local)) = conn.local_addr() {
                    r1.caller.store(u32::from(*local.ip()), Ordering::Relaxed);
                } else if let Ok(SocketAddr::V6(local)) = conn.local_addr() {
                    if let Some(v4) = local.ip().to_ipv4_mapped() {
                        r1.caller.store(u32::from(v4), Ordering::Relaxed);
                    }
                }
                r1.epoch.fetch_add(1, Ordering::AcqRel);
                r1.connected.store(true, Ordering::Release);
                tracing::info!(reporter = %conn.peer_addr(), caller = %IpAddr::V4(Ipv4Addr::from(r1.caller.load(Ordering::Relaxed))), "reporter connected");
            })
            .on_close(move |conn| {
                r2.connected.store(false, Ordering::Release);
                tracing::warn!(reporter = %conn.peer_addr(), "reporter connection lost; buffering statistics");
            })
            .start()?;
        let uplink = Arc::new(NetUplink {
            dns: dns.sender(),
            reporter: reporter.sender(),
            rep,
        });
        Ok(Self {
            dns,
            reporter,
            uplink,
        })
    }

    /// Stops and joins both clients.
    pub(crate) fn join(&mut self) {
        self.dns.join();
        self.reporter.join();
    }
}
