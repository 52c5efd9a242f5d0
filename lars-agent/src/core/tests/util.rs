//! A virtual-time harness in the manner of quinn-proto's `Pair`: one
//! [`AgentCore`] and the three peers it talks to — an application, a dns and
//! a reporter — as plain data, exchanging the core's transmits in memory.
//! Nothing sleeps and nothing touches a socket: time moves only when a test
//! calls [`Pair::advance`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lars_core::frame::{self, Frame};
use lars_core::proto::{
    GetHostRequest, GetHostResponse, GetRouteRequest, GetRouteResponse, GetRouteResponseExt,
    ReportRequest, ReportStatusRequest,
};
use lars_core::{HostAddr, MessageId, ModKey};
use lars_lb::LoadBalanceConfig;

use crate::core::{AgentCore, CoreConfig, Reply, Transmit};

/// The unix second at the start of every test.
pub(super) const UNIX_START: u32 = 1_700_000_000;

/// `"10.0.0.1:80"` as a host.
pub(super) fn h(s: &str) -> HostAddr {
    s.parse().expect("a test host address")
}

/// Encodes `msg` as one datagram.
pub(super) fn datagram<M: prost::Message>(msgid: MessageId, msg: &M) -> Vec<u8> {
    frame::to_bytes(msgid.into(), msg)
        .expect("a small test message")
        .to_vec()
}

/// Decodes one frame's bytes.
fn as_frame(bytes: &[u8]) -> Frame {
    frame::decode_datagram(bytes).expect("a frame the test encoded")
}

/// The dns as the agent sees it: a route table, and the keys each connection
/// pulled (the real dns pushes changes only for those).
#[derive(Debug, Default)]
pub(super) struct FakeDns {
    pub routes: HashMap<ModKey, Vec<HostAddr>>,
    pub connected: bool,
    /// Every pull received, in order.
    pub pulls: Vec<ModKey>,
    /// Keys pulled on the current connection.
    pub subscribed: HashSet<ModKey>,
    /// While true, pulls are received but not answered.
    pub hold: bool,
    /// Answers not sent yet (while `hold`).
    pub held: Vec<ModKey>,
    /// Every unsubscribe received, in order.
    pub unsubscribes: Vec<ModKey>,
    /// As a lars dns: empty answers carry `confirmed_empty` (an original
    /// dns, or a lars dns with an empty table, sends them plain).
    pub confirms_empty: bool,
}

impl FakeDns {
    fn answer(&self, key: ModKey) -> Frame {
        let (modid, cmdid) = key.to_wire();
        let host: Vec<_> = self
            .routes
            .get(&key)
            .map(|hs| hs.iter().map(|h| h.to_proto()).collect())
            .unwrap_or_default();
        let mut body = prost::Message::encode_to_vec(&GetRouteResponse {
            modid,
            cmdid,
            host: host.clone(),
        });
        if host.is_empty() && self.confirms_empty {
            body.extend(prost::Message::encode_to_vec(&GetRouteResponseExt {
                confirmed_empty: true,
            }));
        }
        let len = i32::try_from(body.len()).expect("a small test message");
        let mut out = i32::from(MessageId::GetRouteResponse)
            .to_le_bytes()
            .to_vec();
        out.extend(len.to_le_bytes());
        out.extend(body);
        as_frame(&out)
    }
}

/// The reporter as the agent sees it: the messages that arrived, and the
/// receiving half of the counter contract to check totals.
#[derive(Debug, Default)]
pub(super) struct FakeReporter {
    pub connected: bool,
    /// Connects so far (the epoch of the current connection).
    pub epoch: u64,
    pub messages: Vec<ReportStatusRequest>,
    /// Last counters per (key, host), as the reporter keeps them.
    last: HashMap<(ModKey, HostAddr), (u32, u32)>,
    /// Calls counted per (key, host): the deltas summed.
    pub totals: HashMap<(ModKey, HostAddr), (u64, u64)>,
}

impl FakeReporter {
    /// The reporter's rule (docs/reporter.md): a `(0, 0)` report is a reset;
    /// otherwise the delta is new - old, or new when a counter went down.
    fn receive(&mut self, msg: ReportStatusRequest) {
        let key = ModKey::from_wire(msg.modid, msg.cmdid);
        for r in &msg.results {
            let Some(host) = HostAddr::from_wire(r.ip, r.port) else {
                continue;
            };
            let last = self.last.entry((key, host)).or_default();
            let delta = |new: u32, old: u32| u64::from(if new >= old { new - old } else { new });
            let t = self.totals.entry((key, host)).or_default();
            t.0 += delta(r.succ, last.0);
            t.1 += delta(r.err, last.1);
            *last = (r.succ, r.err);
        }
        self.messages.push(msg);
    }

    /// Results about `key`, as (succ, err), in the order sent (a `(0, 0)`
    /// announcement and the values after it share a message).
    pub fn counts(&self, key: ModKey) -> Vec<(u32, u32)> {
        self.messages
            .iter()
            .filter(|m| ModKey::from_wire(m.modid, m.cmdid) == key)
            .flat_map(|m| m.results.iter().map(|r| (r.succ, r.err)))
            .collect()
    }
}

/// One core, an application, a dns and a reporter, in virtual time.
#[derive(Debug)]
pub(super) struct Pair {
    pub now: Instant,
    pub core: AgentCore,
    pub dns: FakeDns,
    pub reporter: FakeReporter,
    /// Replies the application received.
    pub replies: VecDeque<Reply>,
    pub app: SocketAddr,
    start: Instant,
    seq: u32,
}

impl Pair {
    /// A core with the default `[loadbalance]` section, a report interval
    /// of 1 s, connected to both services.
    pub fn new() -> Self {
        Self::with(CoreConfig::new(LoadBalanceConfig::default()))
    }

    /// A core built from `config`, connected to both services.
    pub fn with(config: CoreConfig) -> Self {
        #[allow(clippy::disallowed_methods)] // the origin of virtual time, nothing else
        let start = Instant::now();
        let mut p = Self {
            now: start,
            core: AgentCore::new(config),
            dns: FakeDns::default(),
            reporter: FakeReporter::default(),
            replies: VecDeque::new(),
            app: SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000)),
            start,
            seq: 0,
        };
        p.dns_up();
        p.reporter_up();
        p
    }

    /// The unix second of `self.now`.
    pub fn unix(&self) -> u32 {
        let secs = self.now.duration_since(self.start).as_secs();
        UNIX_START + u32::try_from(secs).unwrap_or(u32::MAX - UNIX_START)
    }

    /// Delivers everything the core wants to send, and what the peers answer,
    /// until nothing moves.
    pub fn drive(&mut self) {
        loop {
            while let Some(t) = self.core.poll_transmit() {
                match t {
                    Transmit::Dns(GetRouteRequest { modid, cmdid }) => {
                        if self.dns.connected {
                            let key = ModKey::from_wire(modid, cmdid);
                            self.dns.pulls.push(key);
                            self.dns.subscribed.insert(key);
                            self.dns.held.push(key);
                        }
                    }
                    Transmit::DnsUnsubscribe(GetRouteRequest { modid, cmdid }) => {
                        if self.dns.connected {
                            let key = ModKey::from_wire(modid, cmdid);
                            self.dns.unsubscribes.push(key);
                            self.dns.subscribed.remove(&key);
                        }
                    }
                    Transmit::Reporter { link, msg } => {
                        assert_eq!(link, 0, "one reporter");
                        if self.reporter.connected {
                            self.reporter.receive(msg);
                        }
                    }
                    Transmit::App { via, to, reply } => {
                        assert_eq!((via, to), (0, self.app), "a reply for someone else");
                        self.replies.push_back(reply);
                    }
                    Transmit::Shard { .. } => panic!("one shard owns every key"),
                }
            }
            if self.dns.hold || self.dns.held.is_empty() {
                return;
            }
            for key in std::mem::take(&mut self.dns.held) {
                let answer = self.dns.answer(key);
                self.core.handle_dns_frame(&answer, self.now);
            }
        }
    }

    /// Lets `d` pass: every deadline on the way is handled at its time.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(at) = self.core.poll_timeout().filter(|&at| at <= end) {
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now, self.unix());
            self.drive();
        }
        self.now = end;
    }

    /// Sends `datagram` from the application and delivers what follows.
    pub fn send(&mut self, datagram: &[u8]) {
        self.core.handle_datagram(self.app, datagram, self.now);
        self.drive();
    }

    /// A GetHostRequest; its reply.
    pub fn get_host(&mut self, key: ModKey) -> GetHostResponse {
        self.seq += 1;
        let (modid, cmdid) = key.to_wire();
        let seq = self.seq;
        self.send(&datagram(
            MessageId::GetHostRequest,
            &GetHostRequest { seq, modid, cmdid },
        ));
        match self.replies.pop_front() {
            Some(Reply::GetHost(r)) => {
                assert_eq!((r.seq, r.modid, r.cmdid), (seq, modid, cmdid));
                r
            }
            other => panic!("expected a GetHostResponse, got {other:?}"),
        }
    }

    /// The host a GetHostRequest answered, `None` for `NoExist`/`Overload`.
    pub fn host(&mut self, key: ModKey) -> Option<HostAddr> {
        self.get_host(key)
            .host
            .as_ref()
            .and_then(HostAddr::from_proto)
    }

    /// An API GetRouteRequest; the hosts of its reply.
    pub fn get_route(&mut self, key: ModKey) -> Vec<HostAddr> {
        let (modid, cmdid) = key.to_wire();
        self.send(&datagram(
            MessageId::ApiGetRouteRequest,
            &GetRouteRequest { modid, cmdid },
        ));
        match self.replies.pop_front() {
            Some(Reply::GetRoute(r)) => {
                assert_eq!((r.modid, r.cmdid), (modid, cmdid));
                r.host.iter().filter_map(HostAddr::from_proto).collect()
            }
            other => panic!("expected a GetRouteResponse, got {other:?}"),
        }
    }

    /// A ReportRequest (`retcode` 0 is success) without a latency.
    pub fn report(&mut self, key: ModKey, host: HostAddr, retcode: i32) {
        self.report_in(key, host, retcode, 0);
    }

    /// A ReportRequest with the call's latency `timecost` (ms); never
    /// answered.
    pub fn report_in(&mut self, key: ModKey, host: HostAddr, retcode: i32, timecost: u32) {
        let (modid, cmdid) = key.to_wire();
        self.send(&datagram(
            MessageId::ReportRequest,
            &ReportRequest {
                modid,
                cmdid,
                host: Some(host.to_proto()),
                retcode,
                timecost,
            },
        ));
        assert!(self.replies.is_empty(), "a report was answered");
    }

    /// The route table of the dns says `hosts` for `key` (pushed to the
    /// agent if it is subscribed).
    pub fn set_route(&mut self, key: ModKey, hosts: &[&str]) {
        if hosts.is_empty() {
            self.dns.routes.remove(&key);
        } else {
            self.dns
                .routes
                .insert(key, hosts.iter().map(|s| h(s)).collect());
        }
        if self.dns.connected && self.dns.subscribed.contains(&key) {
            let push = self.dns.answer(key);
            self.core.handle_dns_frame(&push, self.now);
            self.drive();
        }
    }

    pub fn dns_down(&mut self) {
        self.dns.connected = false;
        self.dns.subscribed.clear();
        self.dns.held.clear();
        self.core.on_dns_disconnected();
        self.drive();
    }

    pub fn dns_up(&mut self) {
        self.dns.connected = true;
        self.core.on_dns_connected(self.now);
        self.drive();
    }

    pub fn reporter_down(&mut self) {
        self.reporter.connected = false;
        self.core.on_reporter_disconnected(0, self.now);
        self.drive();
    }

    pub fn reporter_up(&mut self) {
        self.reporter.connected = true;
        self.reporter.epoch += 1;
        let epoch = self.reporter.epoch;
        self.core
            .on_reporter_connected(0, epoch, Ipv4Addr::new(10, 1, 2, 3), self.now);
        self.drive();
    }
}
