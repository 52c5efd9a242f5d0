//! The agent's two TCP connections (lars-net `TcpClient`s, reconnecting
//! forever): to the dns (pulls out; answers and pushes in) and to the
//! reporter (statistics out). What they see is turned into [`LinkEvent`]s
//! for the cores; what the cores send goes through [`Senders`].
// An I/O shell: clock, threads and locks are its business (see clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lars_core::MessageId;
use lars_core::frame::Frame;
use lars_net::{ClientSender, DisconnectedPolicy, Router, TcpClient};

use crate::core::Transmit;

/// Reconnect backoff of both clients.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the connections tell the cores (on the client threads).
#[derive(Debug, Clone)]
pub(crate) enum LinkEvent {
    /// Connected (again) to the dns.
    DnsConnected,
    /// The dns connection is lost.
    DnsDisconnected,
    /// A frame from the dns.
    DnsFrame(Frame),
    /// Connected to the reporter: the `epoch`-th connect, the agent's
    /// address on it.
    ReporterConnected { epoch: u64, caller: Ipv4Addr },
    /// The reporter connection is lost.
    ReporterDisconnected,
}

/// Where the cores' dns and reporter transmits go (any thread).
#[derive(Debug, Clone)]
pub(crate) struct Senders {
    dns: ClientSender,
    reporter: ClientSender,
}

impl Senders {
    /// Sends a pull to the dns or a statistics message to the reporter
    /// (dropped by the client while its connection is down); replies and
    /// forwarded requests are not theirs and are ignored.
    pub(crate) fn send(&self, t: &Transmit) {
        let sent = match t {
            Transmit::Dns(req) => self.dns.send(MessageId::GetRouteRequest, req),
            Transmit::DnsUnsubscribe(req) => self.dns.send(MessageId::UnsubscribeRoute, req),
            Transmit::Reporter(msg) => self.reporter.send(MessageId::ReportStatusRequest, msg),
            Transmit::App { .. } | Transmit::Shard { .. } => return,
        };
        if let Err(e) = sent {
            tracing::warn!(
                "cannot encode a message for the dns or reporter: {}",
                lars_core::Chain(&e)
            );
        }
    }
}

/// Both running clients.
#[derive(Debug)]
pub(crate) struct Links {
    pub dns: TcpClient,
    pub reporter: TcpClient,
}

impl Links {
    /// Starts both clients; `deliver` gets every event, on the client's
    /// thread. Frames sent while a connection is down are dropped: the cores
    /// re-pull on connect and keep statistics themselves.
    pub(crate) fn start(
        dns: SocketAddr,
        reporter: SocketAddr,
        deliver: impl Fn(LinkEvent) + Send + Sync + 'static,
    ) -> lars_net::Result<Self> {
        let deliver = Arc::new(deliver);
        let (d1, d2, d3) = (
            Arc::clone(&deliver),
            Arc::clone(&deliver),
            Arc::clone(&deliver),
        );
        let router = Router::new().route(MessageId::GetRouteResponse, move |_, frame| {
            d1(LinkEvent::DnsFrame(frame));
        });
        let dns = TcpClient::builder(dns)
            .name("lars-agent-dns")
            .router(router)
            .disconnected_policy(DisconnectedPolicy::Drop)
            .backoff(MIN_BACKOFF, MAX_BACKOFF)
            .on_connect(move |conn| {
                tracing::info!(dns = %conn.peer_addr(), "dns connected; pulling every key in use");
                d2(LinkEvent::DnsConnected);
            })
            .on_close(move |conn| {
                tracing::warn!(dns = %conn.peer_addr(), "dns connection lost");
                d3(LinkEvent::DnsDisconnected);
            })
            .start()?;
        let (r1, r2) = (Arc::clone(&deliver), deliver);
        let epochs = AtomicU64::new(0);
        let reporter = match TcpClient::builder(reporter)
            .name("lars-agent-reporter")
            .disconnected_policy(DisconnectedPolicy::Drop)
            .backoff(MIN_BACKOFF, MAX_BACKOFF)
            .on_connect(move |conn| {
                let caller = match conn.local_addr() {
                    Ok(SocketAddr::V4(local)) => *local.ip(),
                    Ok(SocketAddr::V6(local)) => {
                        local.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST)
                    }
                    Err(_) => Ipv4Addr::LOCALHOST,
                };
                let epoch = epochs.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(reporter = %conn.peer_addr(), caller = %IpAddr::V4(caller), "reporter connected");
                r1(LinkEvent::ReporterConnected { epoch, caller });
            })
            .on_close(move |conn| {
                tracing::warn!(reporter = %conn.peer_addr(), "reporter connection lost; keeping statistics");
                r2(LinkEvent::ReporterDisconnected);
            })
            .start()
        {
            Ok(r) => r,
            Err(e) => {
                let mut dns = dns;
                dns.join();
                return Err(e);
            }
        };
        Ok(Self { dns, reporter })
    }

    /// The senders of both clients.
    pub(crate) fn senders(&self) -> Senders {
        Senders {
            dns: self.dns.sender(),
            reporter: self.reporter.sender(),
        }
    }

    /// Stops and joins both clients (their hooks, and what they hold, are
    /// dropped).
    pub(crate) fn join(&mut self) {
        self.dns.join();
        self.reporter.join();
    }
}
