//! The agent's protocol state machine, sans-IO: a deterministic core that
//! performs no I/O, starts no threads, takes no locks and never reads the
//! clock. Time is the `now` you pass.
//!
//! One [`AgentCore`] is one shard of the agent (or the whole embedded agent):
//! a [`RouteLb`] for the keys it owns and the cumulative statistics of
//! [`lars_stats::CumulativeSender`]. Inputs come in as calls —
//! [`handle_datagram`](AgentCore::handle_datagram) from applications,
//! [`handle_dns_frame`](AgentCore::handle_dns_frame) from the dns, the
//! connection events `on_dns_connected` / `on_reporter_connected(link, epoch, ..)`
//! and their `_disconnected` twins, [`handle_timeout`](AgentCore::handle_timeout)
//! — and everything outbound comes out as values the driver drains:
//! [`poll_transmit`](AgentCore::poll_transmit) (a pull for the dns, a report
//! batch for the reporter, a reply to an application, a request for the
//! shard owning its key), [`poll_event`](AgentCore::poll_event) (routes to
//! snapshot) and [`poll_timeout`](AgentCore::poll_timeout) (when to call
//! `handle_timeout` next).
//!
//! ```
//! use std::time::Instant;
//! use lars_agent::core::{AgentCore, CoreConfig, Reply, Transmit};
//! use lars_core::proto::{GetHostRequest, GetRouteResponse, HostInfo};
//! use lars_core::{MessageId, RetCode, frame};
//! use lars_lb::LoadBalanceConfig;
//!
//! let now = Instant::now();
//! let app = "127.0.0.1:40000".parse().unwrap();
//! let mut core = AgentCore::new(CoreConfig::new(LoadBalanceConfig::default()));
//! core.on_dns_connected(now);
//! let ask = GetHostRequest { seq: 1, modid: 7, cmdid: 1 };
//! let ask = frame::to_bytes(MessageId::GetHostRequest.into(), &ask).unwrap();
//! let retcode = |t: Option<Transmit>| match t {
//!     Some(Transmit::App { reply: Reply::GetHost(r), .. }) => RetCode::from_i32(r.retcode),
//!     other => panic!("not a GetHost reply: {other:?}"),
//! };
//!
//! // First use: the answer is "no such key", and the key is pulled.
//! core.handle_datagram(app, &ask, now);
//! assert_eq!(retcode(core.poll_transmit()), Some(RetCode::NoExist));
//! assert!(matches!(core.poll_transmit(), Some(Transmit::Dns(pull)) if pull.modid == 7));
//!
//! // The dns answers; the next request gets the host.
//! let route = GetRouteResponse { modid: 7, cmdid: 1, host: vec![HostInfo { ip: 0x0a00_0001, port: 80 }] };
//! let route = frame::to_bytes(MessageId::GetRouteResponse.into(), &route).unwrap();
//! core.handle_dns_frame(&frame::decode_datagram(&route).unwrap(), now);
//! core.handle_datagram(app, &ask, now);
//! assert_eq!(retcode(core.poll_transmit()), Some(RetCode::Succ));
//! assert!(core.poll_transmit().is_none());
//! ```

mod failover;
mod reporters;
#[cfg(test)]
mod tests;

pub use failover::{DnsFailover, FailoverConfig, STABLE_AFTER, identity_hash};
pub use reporters::{LinkView, ReporterRing};

use reporters::Reporters;

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lars_core::frame::{self, Frame};
use lars_core::proto::{
    GetHostRequest, GetHostResponse, GetRouteRequest, GetRouteResponse, GetRouteResponseExt,
    ReportRequest, ReportStatusRequest,
};
use lars_core::{Chain, HostAddr, MessageId, ModKey, RetCode};
use lars_lb::{Choice, KeyLimits, LbEvent, LoadBalanceConfig, Outcome, RouteApplied, RouteLb};
use lars_stats::DEFAULT_MAX_PENDING_KEYS;

/// Routes of many keys, as a snapshot holds them.
pub type Routes = Vec<(ModKey, Vec<HostAddr>)>;

/// Which shard a core is among how many: it owns the keys with
/// `(modid + cmdid) % count == index` (see [`crate::shard_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// The only shard: owns every key (the embedded agent).
    pub const ONLY: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; `None` unless `index < count`.
    pub fn new(index: usize, count: usize) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// This shard's index.
    pub fn index(self) -> usize {
        self.index
    }

    /// The shard owning `key`.
    pub fn owner(self, key: ModKey) -> usize {
        crate::shard_of(key, self.count)
    }
}

/// How an [`AgentCore`] is built.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    lb: LoadBalanceConfig,
    shard: Shard,
    report_interval: Duration,
    snapshot_interval: Option<Duration>,
    max_pending_report_keys: usize,
    key_limits: KeyLimits,
    reporter_links: usize,
    failover_grace: Duration,
    handoff_hold: Duration,
}

impl CoreConfig {
    /// Balancers built from `lb`; the only shard, statistics every second,
    /// no snapshots, at most [`DEFAULT_MAX_PENDING_KEYS`] keys pending while
    /// the reporter is away.
    pub fn new(lb: LoadBalanceConfig) -> Self {
        Self {
            lb,
            shard: Shard::ONLY,
            report_interval: Duration::from_secs(1),
            snapshot_interval: None,
            max_pending_report_keys: DEFAULT_MAX_PENDING_KEYS,
            key_limits: KeyLimits::default(),
            reporter_links: 1,
            failover_grace: Duration::from_secs(10),
            handoff_hold: Duration::from_secs(5),
        }
    }

    /// Statistics go to `links` reporters (at least 1), each key to one of
    /// them by consistent hashing ([`ReporterRing`]); a lost reporter keeps
    /// its keys for `failover_grace`, then they move to the next available
    /// reporter on the ring, and back when it is connected again; a key that
    /// moved sends nothing for `handoff_hold`, then every host's counters to
    /// its new owner. One reporter by default (grace 10 s, hold 5 s).
    pub fn reporters(
        mut self,
        links: usize,
        failover_grace: Duration,
        handoff_hold: Duration,
    ) -> Self {
        self.reporter_links = links.max(1);
        self.failover_grace = failover_grace;
        self.handoff_hold = handoff_hold;
        self
    }

    /// Bounds the keys held without hosts: at most `limits.max_empty_keys`
    /// (a new unknown key beyond it answers `RET_NOEXIST` without a pull,
    /// counted in `unknown_keys_refused`), each forgotten after
    /// `limits.empty_key_expiry` without use (counted in `keys_expired`)
    /// and unsubscribed at the dns. Unbounded by default.
    pub fn key_limits(mut self, limits: KeyLimits) -> Self {
        self.key_limits = limits;
        self
    }

    /// This core is `shard`.
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// At most one statistics message per key per `interval` (the first
    /// traffic after a quiet spell is reported at once).
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }

    /// Routes changed by the dns are handed out as [`Event::Snapshot`] at
    /// most once per `interval`.
    pub fn snapshot_interval(mut self, interval: Duration) -> Self {
        self.snapshot_interval = Some(interval);
        self
    }

    /// Keys kept waiting while the reporter is away (at least 1).
    pub fn max_pending_report_keys(mut self, keys: usize) -> Self {
        self.max_pending_report_keys = keys;
        self
    }
}

/// A request of an application, decoded from its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// GetHostRequest: answered with [`Reply::GetHost`].
    GetHost {
        /// Echoed in the reply.
        seq: u32,
        /// The service.
        key: ModKey,
    },
    /// ReportRequest: never answered.
    Report {
        /// The service.
        key: ModKey,
        /// The host called.
        host: HostAddr,
        /// How the call went.
        outcome: Outcome,
    },
    /// API GetRouteRequest: answered with [`Reply::GetRoute`].
    GetRoute {
        /// The service.
        key: ModKey,
    },
}

impl Request {
    /// Decodes one datagram (exactly one frame); `None` for garbage: size not
    /// matching the header, unknown msgid, undecodable body, report without
    /// a host.
    pub fn decode(datagram: &[u8]) -> Option<Self> {
        let f = frame::decode_datagram(datagram).ok()?;
        match MessageId::from_i32(f.msgid)? {
            MessageId::GetHostRequest => {
                let req: GetHostRequest = f.message().ok()?;
                Some(Request::GetHost {
                    seq: req.seq,
                    key: ModKey::from_wire(req.modid, req.cmdid),
                })
            }
            MessageId::ReportRequest => {
                let req: ReportRequest = f.message().ok()?;
                let host = req.host.as_ref().and_then(HostAddr::from_proto)?;
                Some(Request::Report {
                    key: ModKey::from_wire(req.modid, req.cmdid),
                    host,
                    outcome: Outcome::from_retcode(req.retcode, req.timecost),
                })
            }
            MessageId::ApiGetRouteRequest => {
                let req: GetRouteRequest = f.message().ok()?;
                Some(Request::GetRoute {
                    key: ModKey::from_wire(req.modid, req.cmdid),
                })
            }
            _ => None,
        }
    }

    /// The service the request is about.
    pub fn key(&self) -> ModKey {
        match *self {
            Request::GetHost { key, .. }
            | Request::Report { key, .. }
            | Request::GetRoute { key } => key,
        }
    }
}

/// A reply to an application.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// To a GetHostRequest.
    GetHost(GetHostResponse),
    /// To an API GetRouteRequest.
    GetRoute(GetRouteResponse),
}

impl Reply {
    /// The frame's message id.
    pub fn msgid(&self) -> MessageId {
        match self {
            Reply::GetHost(_) => MessageId::GetHostResponse,
            Reply::GetRoute(_) => MessageId::ApiGetRouteResponse,
        }
    }
}

/// Something to send, drained with [`AgentCore::poll_transmit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// A pull for the dns connection.
    Dns(GetRouteRequest),
    /// For the dns connection: the key was forgotten here, its pushes are
    /// no longer wanted (lars-only msgid `UnsubscribeRoute` (101), body
    /// `GetRouteRequest`; an original dns skips it).
    DnsUnsubscribe(GetRouteRequest),
    /// A statistics message for reporter connection `link`, in order.
    Reporter {
        /// The reporter link (index in the reporter list).
        link: usize,
        /// What to send.
        msg: ReportStatusRequest,
    },
    /// A reply datagram to the application at `to`, sent from the port of
    /// shard `via` (the one the request arrived on: the C++ API's connected
    /// sockets take nothing else).
    App {
        /// The shard whose socket sends it.
        via: usize,
        /// The application.
        to: SocketAddr,
        /// What to send.
        reply: Reply,
    },
    /// A request that arrived on shard `via` for a key owned by shard
    /// `shard`: hand it to that shard's [`AgentCore::handle_request`].
    Shard {
        /// The owning shard.
        shard: usize,
        /// The shard it arrived on (its reply goes out from there).
        via: usize,
        /// The application.
        from: SocketAddr,
        /// The request.
        request: Request,
    },
}

/// Something other than a transmit, drained with [`AgentCore::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The routes changed since the last snapshot: every key with hosts, to
    /// be written (at most once per snapshot interval).
    Snapshot(Routes),
}

/// What a core counted since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreCounters {
    /// GetHost requests answered.
    pub get_host: u64,
    /// ... with a host.
    pub get_host_succ: u64,
    /// ... with `RET_OVERLOAD`.
    pub get_host_overload: u64,
    /// ... with `RET_NOEXIST`.
    pub get_host_noexist: u64,
    /// Call results recorded.
    pub reports: u64,
    /// GetRoute requests answered.
    pub get_route: u64,
    /// Datagrams dropped as garbage.
    pub garbage: u64,
    /// Requests handed to the shard owning their key.
    pub forwarded: u64,
    /// Pulls handed out for the dns.
    pub pulls: u64,
    /// Dns answers and pushes applied.
    pub routes_applied: u64,
    /// Host state changes.
    pub transitions: u64,
    /// Statistics messages handed out (a `(0, 0)` announcement travels at
    /// the start of the message with the host's values).
    pub report_messages: u64,
    /// Times a key could not join the bounded pending-report set.
    pub report_keys_dropped: u64,
    /// Host counters restarted from zero before passing 2^31.
    pub counter_restarts: u64,
    /// New unknown keys answered `RET_NOEXIST` without being created or
    /// pulled: the keys without hosts were at their limit.
    pub unknown_keys_refused: u64,
    /// Keys without hosts forgotten after their expiry without use.
    pub keys_expired: u64,
    /// Unsubscribes handed out for the dns.
    pub unsubscribes: u64,
    /// Keys whose hosts the dns confirmed deleted (`confirmed_empty`):
    /// their hosts left despite empty-route protection.
    pub routes_deleted: u64,
    /// Keys whose statistics moved to another reporter link.
    pub reporter_handoffs: u64,
    /// Unconfirmed empty answers for keys with hosts that empty-route
    /// protection kept the hosts through.
    pub empty_routes_kept: u64,
}

/// One shard of the agent, sans-IO (see the module docs).
#[derive(Debug)]
pub struct AgentCore {
    routes: RouteLb,
    stats: Reporters,
    shard: Shard,
    report_interval: Duration,
    snapshot_interval: Option<Duration>,
    dns_connected: bool,
    /// The `caller` of statistics messages: the agent's IPv4 on the first
    /// reporter connection (host order), the same on every link for the
    /// life of the core (the reporters' stream identity); 127.0.0.1 until
    /// then.
    caller: u32,
    caller_fixed: bool,
    /// Replies to applications: handed out first (someone waits for them).
    replies: VecDeque<Transmit>,
    /// Pulls and forwarded requests, in order.
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_report: Option<Instant>,
    last_report: Option<Instant>,
    next_snapshot: Option<Instant>,
    routes_changed: bool,
    /// The keys without hosts are at their limit (logged once per spell).
    refusing: bool,
    counters: CoreCounters,
}

impl AgentCore {
    /// A core with no routes, the dns and the reporter disconnected.
    pub fn new(config: CoreConfig) -> Self {
        let caller = u32::from(Ipv4Addr::LOCALHOST);
        let mut routes = RouteLb::new(config.lb);
        routes.set_key_limits(config.key_limits);
        Self {
            routes,
            stats: Reporters::new(
                config.reporter_links,
                caller,
                config.max_pending_report_keys,
                config.failover_grace,
                config.handoff_hold,
            ),
            shard: config.shard,
            report_interval: config.report_interval,
            snapshot_interval: config.snapshot_interval,
            dns_connected: false,
            caller,
            caller_fixed: false,
            replies: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_report: None,
            last_report: None,
            next_snapshot: None,
            routes_changed: false,
            refusing: false,
            counters: CoreCounters::default(),
        }
    }

    // ---- inputs -------------------------------------------------------

    /// Installs routes read from a snapshot, for the keys this shard owns:
    /// usable at once, pulled on first use (they never came from the dns).
    pub fn restore(&mut self, routes: &[(ModKey, Vec<HostAddr>)], now: Instant) {
        for (key, hosts) in routes {
            if self.shard.owner(*key) == self.shard.index {
                self.routes.restore_route(*key, hosts, now);
            }
        }
    }

    /// The dns connection is (re-)established. It has no subscriptions for
    /// us, so every key in use is pulled again (which subscribes to its
    /// pushes); keys without an answer are PULLING again.
    pub fn on_dns_connected(&mut self, now: Instant) {
        self.dns_connected = true;
        self.routes.reset_pulling();
        let mut keys: Vec<ModKey> = self.routes.keys().collect();
        keys.sort_unstable();
        for &key in &keys {
            // Marks keys without a dns answer PULLING again (and queues a
            // pull, replaced by the full list below).
            let _ = self.routes.get_route(key, now);
        }
        let _ = self.routes.take_pulls();
        for key in keys {
            self.pull(key);
        }
        self.after_lb(now);
    }

    /// The dns connection is lost: pulls are not handed out until it is
    /// back (their keys stay PULLING; the reconnect pulls every key).
    pub fn on_dns_disconnected(&mut self) {
        self.dns_connected = false;
    }

    /// Reporter connection `link`'s `epoch`-th connect (a count of its
    /// connects) is up, with the agent's address `caller` on it (the first
    /// one fixes the `caller` of every message, on every link). Every key it
    /// owns goes again in full at the next statistics tick (a restarted
    /// reporter lost what it had not written), and keys that moved away
    /// while it was gone come back (held first).
    pub fn on_reporter_connected(
        &mut self,
        link: usize,
        epoch: u64,
        caller: Ipv4Addr,
        now: Instant,
    ) {
        if !std::mem::replace(&mut self.caller_fixed, true) {
            self.caller = u32::from(caller);
        }
        self.stats.on_connected(link, epoch, now);
        if self.stats.pending_keys() > 0 {
            self.arm_report(now);
        }
    }

    /// Reporter connection `link` is lost: its keys' statistics are kept
    /// (merged, the latest cumulative value wins) until it is back, or until
    /// its grace ends and they move to the next reporter on the ring.
    pub fn on_reporter_disconnected(&mut self, link: usize, now: Instant) {
        self.stats.on_disconnected(link, now);
        if self.stats.pending_keys() > 0 {
            self.arm_report(now);
        }
    }

    /// A datagram from the application at `from`: a request for a key this
    /// shard owns is handled here; one for another shard's key comes out as
    /// [`Transmit::Shard`]; garbage is dropped and counted.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let Some(request) = Request::decode(datagram) else {
            self.counters.garbage += 1;
            tracing::debug!("garbage datagram from {from} dropped");
            return;
        };
        let owner = self.shard.owner(request.key());
        if owner == self.shard.index {
            self.handle_request(self.shard.index, from, request, now);
        } else {
            self.counters.forwarded += 1;
            self.transmits.push_back(Transmit::Shard {
                shard: owner,
                via: self.shard.index,
                from,
                request,
            });
        }
    }

    /// Handles `request` of the application at `from` on this shard; a reply
    /// is sent from shard `via`'s port.
    pub fn handle_request(&mut self, via: usize, from: SocketAddr, request: Request, now: Instant) {
        match request {
            Request::GetHost { seq, key } => {
                let (retcode, host) = match self.get_host(key, now) {
                    Choice::Idle(h) | Choice::Probe(h) => (RetCode::Succ, Some(h.to_proto())),
                    Choice::Overload => (RetCode::Overload, None),
                    Choice::NoExist => (RetCode::NoExist, None),
                };
                let (modid, cmdid) = key.to_wire();
                let reply = Reply::GetHost(GetHostResponse {
                    seq,
                    modid,
                    cmdid,
                    retcode: retcode.into(),
                    host,
                });
                self.replies.push_back(Transmit::App {
                    via,
                    to: from,
                    reply,
                });
            }
            Request::Report { key, host, outcome } => self.report(key, host, outcome, now),
            Request::GetRoute { key } => {
                let (modid, cmdid) = key.to_wire();
                let host = self
                    .get_route(key, now)
                    .into_iter()
                    .map(HostAddr::to_proto)
                    .collect();
                let reply = Reply::GetRoute(GetRouteResponse { modid, cmdid, host });
                self.replies.push_back(Transmit::App {
                    via,
                    to: from,
                    reply,
                });
            }
        }
    }

    /// A frame from the dns: a GetRouteResponse (answer or push) is applied;
    /// anything else is logged and dropped.
    ///
    /// An empty host list that a lars dns marks `confirmed_empty` (field 4,
    /// read as [`GetRouteResponseExt`] from the same body) is a deliberate
    /// delete: the hosts leave even under empty-route protection. An
    /// unmarked empty list (a failure, or an original dns) is protected.
    pub fn handle_dns_frame(&mut self, frame: &Frame, now: Instant) {
        if frame.msgid != i32::from(MessageId::GetRouteResponse) {
            tracing::warn!(msgid = frame.msgid, "unexpected frame from the dns dropped");
            return;
        }
        match frame.message::<GetRouteResponse>() {
            Ok(rsp) => {
                let key = ModKey::from_wire(rsp.modid, rsp.cmdid);
                let hosts: Vec<HostAddr> =
                    rsp.host.iter().filter_map(HostAddr::from_proto).collect();
                let confirmed = rsp.host.is_empty()
                    && frame
                        .message::<GetRouteResponseExt>()
                        .is_ok_and(|ext| ext.confirmed_empty);
                if confirmed {
                    self.counters.routes_applied += 1;
                    let applied = self.routes.apply_confirmed_empty(key, now);
                    if matches!(applied, RouteApplied::Updated(sum) if sum.removed > 0) {
                        self.counters.routes_deleted += 1;
                        self.mark_routes_changed(now);
                        self.arm_report(now);
                    }
                    self.after_lb(now);
                } else {
                    self.apply_route(key, &hosts, now);
                }
            }
            Err(e) => tracing::warn!("bad GetRouteResponse from the dns: {}", Chain(&e)),
        }
    }

    /// Runs what is due at `now`: host timers, the statistics tick (`unix`
    /// is the wall clock's unix second, the messages' `ts`), the snapshot.
    pub fn handle_timeout(&mut self, now: Instant, unix: u32) {
        if self.routes.next_deadline().is_some_and(|d| d <= now) {
            self.routes.handle_timeout(now);
            self.after_lb(now);
        }
        if self.stats.next_deadline().is_some_and(|d| d <= now) {
            self.stats.handle_timeout(now);
            if self.stats.pending_keys() > 0 {
                self.arm_report(now);
            }
        }
        if self.next_report.is_some_and(|d| d <= now) {
            self.report_tick(now, unix);
        }
        if self.next_snapshot.is_some_and(|d| d <= now) {
            self.next_snapshot = None;
            if std::mem::take(&mut self.routes_changed) {
                self.events
                    .push_back(Event::Snapshot(self.snapshot_routes()));
            }
        }
    }

    // ---- the application API (the embedded agent calls it directly) --

    /// Picks a host for `key`; an unknown key answers `NoExist` and is
    /// pulled.
    pub fn get_host(&mut self, key: ModKey, now: Instant) -> Choice {
        self.counters.get_host += 1;
        let choice = self.routes.get_host(key, now);
        self.check_refused();
        match choice {
            Choice::Idle(_) | Choice::Probe(_) => self.counters.get_host_succ += 1,
            Choice::Overload => self.counters.get_host_overload += 1,
            Choice::NoExist => self.counters.get_host_noexist += 1,
        }
        self.after_lb(now);
        choice
    }

    /// Records how a call to `host` went; unknown keys and hosts are ignored.
    pub fn report(&mut self, key: ModKey, host: HostAddr, outcome: Outcome, now: Instant) {
        self.counters.reports += 1;
        if self.routes.report(key, host, outcome, now).is_some() {
            self.arm_report(now);
        }
        self.after_lb(now);
    }

    /// Every host of `key` (sorted); empty when unknown (it is then pulled).
    pub fn get_route(&mut self, key: ModKey, now: Instant) -> Vec<HostAddr> {
        self.counters.get_route += 1;
        let hosts = self.routes.get_route(key, now).unwrap_or_default();
        self.check_refused();
        self.after_lb(now);
        hosts
    }

    // ---- outputs --------------------------------------------------------

    /// The next thing to send: replies to applications first, then
    /// forwarded requests and pulls in the order they arose, then statistics
    /// messages (only while the reporter is connected).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self
            .replies
            .pop_front()
            .or_else(|| self.transmits.pop_front())
        {
            return Some(t);
        }
        let (link, mut msg) = self.stats.poll_transmit()?;
        msg.caller = self.caller as i32; // the same 32 bits
        Some(Transmit::Reporter { link, msg })
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work (it may
    /// find none when host timers were rescheduled); `None` while idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.routes.next_deadline(),
            self.next_report,
            self.next_snapshot,
            self.stats.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- read-only views ------------------------------------------------

    /// The routes and balancers (status pages).
    pub fn routes(&self) -> &RouteLb {
        &self.routes
    }

    /// Every key with hosts, for a snapshot.
    pub fn snapshot_routes(&self) -> Routes {
        self.routes.routes().collect()
    }

    /// Cumulative `(successes, errors)` of `host` of `key`, as last folded
    /// into the statistics.
    pub fn cumulative(&self, key: ModKey, host: HostAddr) -> (u32, u32) {
        self.stats.cumulative(key, host)
    }

    /// Keys whose statistics wait for a reporter.
    pub fn pending_report_keys(&self) -> usize {
        self.stats.pending_keys()
    }

    /// Each reporter link: connected, keys owned, keys pending, keys held.
    pub fn reporter_links(&self) -> Vec<LinkView> {
        self.stats.views()
    }

    /// The reporter link `key`'s statistics go to, once it has any.
    pub fn reporter_of(&self, key: ModKey) -> Option<usize> {
        self.stats.owner_of(key)
    }

    /// What this core counted.
    pub fn counters(&self) -> CoreCounters {
        let s = self.stats.counters();
        CoreCounters {
            report_messages: s.messages,
            report_keys_dropped: s.keys_dropped,
            counter_restarts: s.counter_restarts,
            reporter_handoffs: self.stats.handoffs(),
            unknown_keys_refused: self.routes.refused_keys(),
            keys_expired: self.routes.expired_keys(),
            ..self.counters
        }
    }

    // ---- internals ------------------------------------------------------

    /// Applies a dns answer or push for `key`.
    fn apply_route(&mut self, key: ModKey, hosts: &[HostAddr], now: Instant) {
        self.counters.routes_applied += 1;
        match self.routes.apply_route(key, hosts, now) {
            RouteApplied::Updated(sum) => {
                if sum.added > 0 || sum.removed > 0 {
                    self.mark_routes_changed(now);
                    tracing::info!(
                        key = %key,
                        added = sum.added,
                        removed = sum.removed,
                        kept = sum.kept,
                        "route updated from the dns"
                    );
                }
                if sum.removed > 0 {
                    // Removed hosts' last calls are in the next batch.
                    self.arm_report(now);
                }
            }
            RouteApplied::Removed => {
                self.mark_routes_changed(now);
                self.arm_report(now);
            }
            RouteApplied::KeptEmpty => self.counters.empty_routes_kept += 1,
            RouteApplied::Ignored => {
                tracing::debug!(key = %key, "route for a key not in use ignored");
            }
        }
        self.after_lb(now);
    }

    /// The statistics tick: the interval's calls are folded into the
    /// cumulative counters and, when the reporter is connected, queued as
    /// messages (one per key with new traffic).
    ///
    /// Ticks follow traffic instead of running every interval, so an idle
    /// agent sleeps: after a tick that sent something (or left keys
    /// pending, e.g. a counter restart that goes out one tick later) one
    /// more follows an interval later, which also confirms what was sent.
    fn report_tick(&mut self, now: Instant, unix: u32) {
        self.next_report = None;
        self.last_report = Some(now);
        self.stats.record(self.routes.take_report_batches(), now);
        self.stats.report_tick(unix);
        if self.stats.wants_tick() {
            self.arm_report(now);
        }
    }

    /// Something will be in the next statistics batch: make sure a tick is
    /// due, at most one per report interval.
    fn arm_report(&mut self, now: Instant) {
        if self.next_report.is_none() {
            let at = self
                .last_report
                .and_then(|t| t.checked_add(self.report_interval))
                .map_or(now, |t| t.max(now));
            self.next_report = Some(at);
        }
    }

    /// The dns changed the routes: a snapshot is due within the interval.
    fn mark_routes_changed(&mut self, now: Instant) {
        self.routes_changed = true;
        if let (None, Some(interval)) = (self.next_snapshot, self.snapshot_interval) {
            self.next_snapshot = now.checked_add(interval);
        }
    }

    /// Queues a pull of `key` when the dns is connected.
    fn pull(&mut self, key: ModKey) {
        if !self.dns_connected {
            return;
        }
        self.counters.pulls += 1;
        tracing::debug!(key = %key, "pulling route from the dns");
        let (modid, cmdid) = key.to_wire();
        self.transmits
            .push_back(Transmit::Dns(GetRouteRequest { modid, cmdid }));
    }

    /// Logs once when unknown keys start being refused (the counter says
    /// how many), again only after the limit was left.
    fn check_refused(&mut self) {
        let limit = self.routes.key_limits().max_empty_keys;
        if self.routes.empty_keys() < limit {
            self.refusing = false;
        } else if !self.refusing && self.routes.refused_keys() > 0 {
            self.refusing = true;
            tracing::warn!(
                limit,
                "keys without hosts at their limit: new unknown keys answer NOEXIST without a \
                 pull ([agent] max_unknown_keys; counted in unknown_keys_refused)"
            );
        }
    }

    /// Hands out the balancers' pulls and unsubscribes, logs and counts
    /// their events.
    fn after_lb(&mut self, now: Instant) {
        for key in self.routes.take_pulls() {
            self.pull(key);
        }
        let forgotten = self.routes.take_forgotten();
        if !forgotten.is_empty() {
            tracing::debug!(keys = forgotten.len(), "keys forgotten");
            // A disconnected dns dropped our subscriptions already.
            if self.dns_connected {
                self.counters.unsubscribes += forgotten.len() as u64;
                for key in forgotten {
                    let (modid, cmdid) = key.to_wire();
                    self.transmits
                        .push_back(Transmit::DnsUnsubscribe(GetRouteRequest { modid, cmdid }));
                }
            }
        }
        while let Some(ev) = self.routes.poll_event() {
            if let LbEvent::Transition(_) = ev {
                self.counters.transitions += 1;
                // The host's state is in the next statistics batch.
                self.arm_report(now);
            }
            log_event(&ev);
        }
    }
}

fn log_event(ev: &LbEvent) {
    match ev {
        LbEvent::Transition(t) => {
            let c = t.counters;
            tracing::info!(
                key = %t.key,
                host = %t.host,
                from = ?t.from,
                to = ?t.to,
                reason = ?t.reason,
                vsucc = c.vsucc,
                verr = c.verr,
                rsucc = c.rsucc,
                rerr = c.rerr,
                contin_succ = c.contin_succ,
                contin_err = c.contin_err,
                "host state change"
            );
        }
        LbEvent::EmptyRouteKept { key, hosts } => {
            tracing::warn!(key = %key, hosts, "dns sent an empty route; keeping the last hosts");
        }
        LbEvent::KeyRemoved { key } => {
            tracing::info!(key = %key, "dns sent an empty route; key removed");
        }
        LbEvent::RouteDeleted { key, hosts } => {
            tracing::info!(key = %key, hosts, "dns confirmed the route deleted; hosts removed");
        }
        other => tracing::info!("{other:?}"),
    }
}
