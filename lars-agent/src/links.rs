//! The agent's TCP connections (lars-net `TcpClient`s, reconnecting
//! forever): to one dns at a time (pulls out; answers and pushes in), chosen
//! and failed over by a [`DnsFailover`], and to every reporter (statistics
//! out, each key to one of them). What they see is turned into [`LinkEvent`]s for the cores; what the
//! cores send goes through [`Senders`].
//!
//! The dns failover runs on the dns client's thread (its dialer and hooks)
//! and on a small watchdog thread that closes a silent connection and sends
//! keepalive pulls; the failover state is shared behind one mutex (touched
//! once per pull, frame and connection event).
// An I/O shell: clock, threads and locks are its business (see clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use lars_core::MessageId;
use lars_core::frame::Frame;
use lars_core::proto::GetRouteRequest;
use lars_net::{ClientSender, DisconnectedPolicy, Router, TcpClient};

use crate::core::{DnsFailover, Transmit};

/// Reconnect backoff of the reporter clients.
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
    /// Connected to reporter `link`: its `epoch`-th connect; `caller` is
    /// the agent's address on the first reporter connection of the process
    /// (the same on every link, for good: the reporters' stream identity).
    ReporterConnected {
        link: usize,
        epoch: u64,
        caller: Ipv4Addr,
    },
    /// Reporter connection `link` is lost.
    ReporterDisconnected { link: usize },
}

/// The dns failover and what the watchdog needs, shared by the dns
/// client's thread, the watchdog and the senders.
#[derive(Debug)]
struct DnsState {
    failover: DnsFailover,
    /// The key of the last pull: what a keepalive pulls again.
    keepalive_key: Option<GetRouteRequest>,
    keepalives: u64,
}

/// The dns side of the links, shared.
#[derive(Debug)]
pub(crate) struct DnsLink {
    state: Mutex<DnsState>,
}

impl DnsLink {
    fn lock(&self) -> MutexGuard<'_, DnsState> {
        // The state is consistent between calls (no method unwinds half-way).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `/status` shows of the dns side.
    pub(crate) fn status(&self) -> DnsStatus {
        let s = self.lock();
        DnsStatus {
            order: s.failover.order().to_vec(),
            current: s.failover.current(),
            failovers: s.failover.failovers(),
            silences: s.failover.silences(),
            keepalives: s.keepalives,
        }
    }
}

/// The dns side of the agent, for status pages.
#[derive(Debug, Clone, Default)]
pub(crate) struct DnsStatus {
    /// The dns addresses in this agent's preference order.
    pub order: Vec<SocketAddr>,
    /// The one in use.
    pub current: Option<SocketAddr>,
    /// Connections established to another dns than the one before.
    pub failovers: u64,
    /// Connections closed for silence.
    pub silences: u64,
    /// Keepalive pulls sent.
    pub keepalives: u64,
}

/// Where the cores' dns and reporter transmits go (any thread).
#[derive(Debug, Clone)]
pub(crate) struct Senders {
    dns: ClientSender,
    dns_link: Arc<DnsLink>,
    reporters: Vec<ClientSender>,
}

impl Senders {
    /// Sends a pull to the dns or a statistics message to the reporter
    /// (dropped by the client while its connection is down); replies and
    /// forwarded requests are not theirs and are ignored.
    pub(crate) fn send(&self, t: &Transmit) {
        let sent = match t {
            // Sent under the failover's lock, as the watchdog's keepalives
            // are: a keepalive never re-subscribes a key after its
            // unsubscribe.
            Transmit::Dns(req) => {
                let mut s = self.dns_link.lock();
                s.failover.on_pull_sent(Instant::now());
                s.keepalive_key = Some(*req);
                self.dns.send(MessageId::GetRouteRequest, req)
            }
            Transmit::DnsUnsubscribe(req) => {
                let mut s = self.dns_link.lock();
                if s.keepalive_key.as_ref() == Some(req) {
                    s.keepalive_key = None;
                }
                self.dns.send(MessageId::UnsubscribeRoute, req)
            }
            Transmit::Reporter { link, msg } => match self.reporters.get(*link) {
                Some(r) => r.send(MessageId::ReportStatusRequest, msg),
                None => return,
            },
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

/// The dns failover of an agent with `config` whose UDP base port is
/// `base_port` (its identity when `[agent] id` is absent).
pub(crate) fn dns_failover(config: &crate::AgentConfig, identity: &str) -> DnsFailover {
    DnsFailover::new(
        config.dns_list().into_iter().map(SocketAddr::V4).collect(),
        crate::core::identity_hash(identity),
        config.dns_failover,
    )
}

/// The running clients and the dns watchdog.
#[derive(Debug)]
pub(crate) struct Links {
    pub dns: TcpClient,
    pub dns_link: Arc<DnsLink>,
    /// One client per reporter address, in `[reporter] addrs` order (the
    /// link index).
    pub reporters: Vec<TcpClient>,
    watchdog: Option<(Sender<Wake>, JoinHandle<()>)>,
}

/// What wakes the watchdog before its deadline.
#[derive(Debug)]
enum Wake {
    /// Connected: a keepalive deadline now exists.
    Connected,
    /// Return.
    Stop,
}

/// The TLS of the agent's two links (`[tls]`, `[dnsserver] tls`,
/// `[reporter] tls`): `None` is plain.
#[derive(Debug, Default)]
pub(crate) struct LinkTls {
    dns: Option<lars_net::ClientTls>,
    reporter: Option<lars_net::ClientTls>,
}

impl LinkTls {
    /// Loads the CA and client certificate once for both links (an
    /// unreadable or bad file is an error naming it).
    pub(crate) fn load(config: &crate::AgentConfig) -> lars_net::Result<Self> {
        let Some(files) = config
            .tls
            .as_ref()
            .filter(|_| config.dns_tls || config.reporter_tls)
        else {
            return Ok(Self::default());
        };
        let tls = lars_net::ClientTls::load(files)?;
        Ok(Self {
            dns: config.dns_tls.then(|| tls.clone()),
            reporter: config.reporter_tls.then_some(tls),
        })
    }
}

impl Links {
    /// Starts both clients; `deliver` gets every event, on the client's
    /// thread. Frames sent while a connection is down are dropped: the cores
    /// re-pull on connect and keep statistics themselves.
    pub(crate) fn start(
        failover: DnsFailover,
        reporters: &[SocketAddr],
        tls: LinkTls,
        deliver: impl Fn(LinkEvent) + Send + Sync + 'static,
    ) -> lars_net::Result<Self> {
        let deliver = Arc::new(deliver);
        let (d1, d2, d3) = (
            Arc::clone(&deliver),
            Arc::clone(&deliver),
            Arc::clone(&deliver),
        );
        let connect_timeout = failover.config().silence_timeout;
        let first = failover.order().first().copied();
        let dns_link = Arc::new(DnsLink {
            state: Mutex::new(DnsState {
                failover,
                keepalive_key: None,
                keepalives: 0,
            }),
        });
        let (wake_tx, wake_rx) = crossbeam_channel::unbounded::<Wake>();
        let (l1, l2, l3, l4, l5) = (
            Arc::clone(&dns_link),
            Arc::clone(&dns_link),
            Arc::clone(&dns_link),
            Arc::clone(&dns_link),
            Arc::clone(&dns_link),
        );
        let woken = wake_tx.clone();
        let router = Router::new().route(MessageId::GetRouteResponse, move |_, frame| {
            l1.lock().failover.on_frame(Instant::now());
            d1(LinkEvent::DnsFrame(frame));
        });
        let dns = TcpClient::builder(first.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7778))));
        let dns = match tls.dns {
            Some(t) => dns.tls(t),
            None => dns,
        };
        let dns = dns
            .name("lars-agent-dns")
            .router(router)
            .disconnected_policy(DisconnectedPolicy::Drop)
            .connect_timeout(connect_timeout)
            .dialer(move |now| l2.lock().failover.next_attempt(now))
            .on_connect_failed(move |addr| {
                tracing::debug!(dns = %addr, "cannot connect to the dns");
                l3.lock().failover.on_lost(Instant::now());
            })
            .on_connect(move |conn| {
                l4.lock().failover.on_connected(Instant::now());
                let _ = woken.send(Wake::Connected);
                tracing::info!(dns = %conn.peer_addr(), "dns connected; pulling every key in use");
                d2(LinkEvent::DnsConnected);
            })
            .on_close(move |conn| {
                l5.lock().failover.on_lost(Instant::now());
                tracing::warn!(dns = %conn.peer_addr(), "dns connection lost; failing over");
                d3(LinkEvent::DnsDisconnected);
            })
            .start()?;
        let watchdog = {
            let (link, sender) = (Arc::clone(&dns_link), dns.sender());
            std::thread::Builder::new()
                .name("lars-agent-dns-watch".into())
                .spawn(move || watch_dns(&link, &sender, &wake_rx))
        };
        let watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                let mut dns = dns;
                dns.join();
                return Err(lars_net::NetError::from(e));
            }
        };
        let caller: Arc<Mutex<Option<Ipv4Addr>>> = Arc::default();
        let mut clients = Vec::with_capacity(reporters.len());
        for (link, addr) in reporters.iter().enumerate() {
            let started = start_reporter(
                link,
                *addr,
                tls.reporter.clone(),
                Arc::clone(&caller),
                Arc::clone(&deliver),
            );
            match started {
                Ok(c) => clients.push(c),
                Err(e) => {
                    for mut c in clients {
                        c.join();
                    }
                    let mut dns = dns;
                    dns.join();
                    let _ = wake_tx.send(Wake::Stop);
                    let _ = watchdog.join();
                    return Err(e);
                }
            }
        }
        Ok(Self {
            dns,
            dns_link,
            reporters: clients,
            watchdog: Some((wake_tx, watchdog)),
        })
    }

    /// The senders of both clients.
    pub(crate) fn senders(&self) -> Senders {
        Senders {
            dns: self.dns.sender(),
            dns_link: Arc::clone(&self.dns_link),
            reporters: self.reporters.iter().map(TcpClient::sender).collect(),
        }
    }

    /// Stops and joins both clients (their hooks, and what they hold, are
    /// dropped).
    pub(crate) fn join(&mut self) {
        if let Some((wake, thread)) = self.watchdog.take() {
            let _ = wake.send(Wake::Stop);
            if thread.join().is_err() {
                tracing::error!("the dns watchdog thread panicked");
            }
        }
        self.dns.join();
        for r in &mut self.reporters {
            r.join();
        }
    }
}

/// Starts the client of reporter `link` at `addr`; the first connection of
/// any link fixes `caller`.
fn start_reporter(
    link: usize,
    addr: SocketAddr,
    tls: Option<lars_net::ClientTls>,
    caller: Arc<Mutex<Option<Ipv4Addr>>>,
    deliver: Arc<impl Fn(LinkEvent) + Send + Sync + 'static>,
) -> lars_net::Result<TcpClient> {
    let (r1, r2) = (Arc::clone(&deliver), deliver);
    let epochs = AtomicU64::new(0);
    let builder = TcpClient::builder(addr);
    let builder = match tls {
        Some(t) => builder.tls(t),
        None => builder,
    };
    builder
        .name(&format!("lars-agent-reporter-{link}"))
        .disconnected_policy(DisconnectedPolicy::Drop)
        .backoff(MIN_BACKOFF, MAX_BACKOFF)
        .on_connect(move |conn| {
            let local = match conn.local_addr() {
                Ok(SocketAddr::V4(local)) => *local.ip(),
                Ok(SocketAddr::V6(local)) => {
                    local.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST)
                }
                Err(_) => Ipv4Addr::LOCALHOST,
            };
            let caller = *caller
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(local);
            let epoch = epochs.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::info!(reporter = %conn.peer_addr(), link, caller = %IpAddr::V4(caller), "reporter connected");
            r1(LinkEvent::ReporterConnected {
                link,
                epoch,
                caller,
            });
        })
        .on_close(move |conn| {
            tracing::warn!(reporter = %conn.peer_addr(), link, "reporter connection lost; keeping statistics");
            r2(LinkEvent::ReporterDisconnected { link });
        })
        .start()
}

/// The watchdog: closes the dns connection when it falls silent (a pull
/// outstanding, no frame for `silence_timeout`) and sends a keepalive pull
/// of a key in use when nothing is outstanding for `keepalive`. Returns
/// on [`Wake::Stop`].
fn watch_dns(link: &DnsLink, dns: &ClientSender, wake: &crossbeam_channel::Receiver<Wake>) {
    loop {
        let deadline = link.lock().failover.poll_timeout();
        let woke = match deadline {
            Some(at) => wake.recv_deadline(at),
            None => wake.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        if let Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) = woke {
            return;
        }
        let now = Instant::now();
        let mut s = link.lock();
        if s.failover.check_silence(now) {
            let silent = s.failover.config().silence_timeout;
            drop(s);
            tracing::warn!(
                "the dns did not answer a pull for {silent:?} ([dnsserver] silence_timeout); \
                 closing the connection and failing over"
            );
            dns.close_connection();
            continue;
        }
        if s.failover.keepalive_due(now) {
            if let Some(req) = s.keepalive_key {
                s.failover.on_pull_sent(now);
                s.keepalives += 1;
                if let Err(e) = dns.send(MessageId::GetRouteRequest, &req) {
                    tracing::warn!("cannot encode a keepalive pull: {}", lars_core::Chain(&e));
                }
            }
        }
    }
}
