//! Part (b), a dns killed: `agents` lean agents, each a real
//! `lars_agent::core::AgentCore` (in-process, no UDP side) with a few cached
//! keys, driven by the agent's own dns failover policy
//! (`lars_agent::core::DnsFailover`: preference order by rendezvous hashing of
//! the agent's identity, jittered reconnect, silence detection), each on one
//! non-blocking connection of one mio loop. Once every agent holds all its
//! keys, the dns most of them use is SIGKILLed; the bench times, per agent it
//! served, the moment it is connected to another dns AND has the answers to
//! the pulls of every key; meanwhile `get_host` is called round robin over the
//! agents' cached keys, and every answer that is not a host counts as a
//! failure.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lars_agent::core::{
    AgentCore, CoreConfig, DnsFailover, FailoverConfig, Transmit, identity_hash,
};
use lars_core::proto::GetRouteRequest;
use lars_core::{MessageId, ModKey, frame};
use lars_lb::{Choice, LoadBalanceConfig};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::procs::Service;
use super::{FleetError, Latency};

/// How part (b) runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub agents: usize,
    /// The keys every agent caches (all with hosts in the store).
    pub keys: Vec<ModKey>,
    /// `get_host` calls per loop pass (round robin over agents and keys).
    pub get_host_batch: usize,
    /// How long the failover may take before the agents left are counted
    /// as timed out.
    pub deadline: Duration,
}

/// What part (b) saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsKillReport {
    /// Lean agents.
    pub agents: usize,
    /// Keys cached per agent.
    pub keys_per_agent: usize,
    /// Agents holding every key before the kill.
    pub ready: usize,
    /// Seconds until every agent held every key (connect + pulls).
    pub setup_secs: f64,
    /// Agents per dns before the kill (the dns order of the run).
    pub per_dns: Vec<usize>,
    /// The dns killed (index in the run's dns list).
    pub killed: usize,
    /// Agents the killed dns served.
    pub served: usize,
    /// Of them, connected to another dns with every key re-pulled by the
    /// deadline.
    pub resubscribed: usize,
    /// Of them, not by the deadline.
    pub timed_out: usize,
    /// From the SIGKILL until each served agent was connected elsewhere
    /// with every key answered.
    pub latency: Latency,
    /// `get_host` calls from the kill until the last agent was back.
    pub get_host_calls: u64,
    /// Of them, answered without a host (`NoExist` or `Overload`): goal 0.
    pub get_host_failures: u64,
    /// Failovers (connections to another dns than the one before), summed.
    pub failovers: u64,
    /// Connections closed for silence, summed.
    pub silences: u64,
    /// The failover policy's timing (jitter, silence timeout), seconds.
    pub failover_jitter_secs: f64,
    /// Seconds of silence with a pull outstanding before a dns is dead.
    pub silence_timeout_secs: f64,
}

struct Conn {
    stream: MioStream,
    addr: SocketAddr,
    connecting: bool,
    inbuf: BytesMut,
    out: BytesMut,
    writable_armed: bool,
}

struct LeanAgent {
    core: AgentCore,
    failover: DnsFailover,
    conn: Option<Conn>,
    attempt: Option<(SocketAddr, Instant)>,
    /// Keys answered since the current connection was made.
    answered: Vec<bool>,
    /// When every key was answered on the current connection.
    ready_at: Option<Instant>,
}

/// Runs part (b) against the running dns processes `dns` (their addresses in
/// `addrs`); kills the one serving most agents.
pub(crate) fn run(
    dns: &mut [Service],
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<DnsKillReport, FleetError> {
    let addrs: Vec<SocketAddr> = dns.iter().map(Service::addr).collect();
    let fo_config = FailoverConfig::default();
    let mut report = DnsKillReport {
        agents: plan.agents,
        keys_per_agent: plan.keys.len(),
        failover_jitter_secs: fo_config.failover_jitter.as_secs_f64(),
        silence_timeout_secs: fo_config.silence_timeout.as_secs_f64(),
        per_dns: vec![0; addrs.len()],
        ..DnsKillReport::default()
    };
    let mut poll = Poll::new().map_err(FleetError::Io)?;
    let mut events = Events::with_capacity(4096);
    let start = Instant::now();
    let mut agents: Vec<LeanAgent> = (0..plan.agents)
        .map(|i| {
            let mut core = AgentCore::new(CoreConfig::new(LoadBalanceConfig::default()));
            for &k in &plan.keys {
                // Known keys, PULLING until the dns answers.
                let _ = core.get_route(k, start);
            }
            while core.poll_transmit().is_some() {}
            LeanAgent {
                core,
                failover: DnsFailover::new(
                    addrs.clone(),
                    identity_hash(&format!("lars-bench-fleet-agent-{i}")),
                    fo_config,
                ),
                conn: None,
                attempt: None,
                answered: vec![false; plan.keys.len()],
                ready_at: None,
            }
        })
        .collect();
    let mut load = GetHostLoad::default();

    // Setup: every agent connected with every key answered.
    let setup_deadline =
        start + Duration::from_secs(60) + Duration::from_millis(plan.agents as u64 * 2);
    loop {
        let now = drive(&mut poll, &mut events, &mut agents, plan)?;
        if agents.iter().all(|a| a.ready_at.is_some()) || now >= setup_deadline {
            break;
        }
    }
    report.setup_secs = start.elapsed().as_secs_f64();
    report.ready = agents.iter().filter(|a| a.ready_at.is_some()).count();
    for a in &agents {
        let at = a
            .failover
            .current()
            .and_then(|c| addrs.iter().position(|&x| x == c));
        if let Some(n) = at.and_then(|i| report.per_dns.get_mut(i)) {
            *n += 1;
        }
    }
    progress(&format!(
        "dns kill: {} of {} agents hold {} keys each after {:.1} s; per dns {:?}",
        report.ready,
        plan.agents,
        plan.keys.len(),
        report.setup_secs,
        report.per_dns
    ));
    // A short steady phase under get_host load.
    let steady_end = Instant::now() + Duration::from_millis(500);
    while drive(&mut poll, &mut events, &mut agents, plan)? < steady_end {
        load.run(&mut agents, plan, Instant::now());
    }
    let victim = report
        .per_dns
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .map_or(0, |(i, _)| i);
    report.killed = victim;
    let victim_addr = addrs.get(victim).copied();
    let served: Vec<usize> = agents
        .iter()
        .enumerate()
        .filter(|(_, a)| a.failover.current() == victim_addr)
        .map(|(i, _)| i)
        .collect();
    report.served = served.len();
    let before = load;
    let t_kill = Instant::now();
    if let Some(d) = dns.get_mut(victim) {
        d.kill();
    }
    progress(&format!(
        "dns kill: dns {victim} ({}) SIGKILLed, it served {} agents",
        victim_addr.map_or_else(String::new, |a| a.to_string()),
        served.len()
    ));
    let back = |a: &LeanAgent| {
        a.ready_at.is_some_and(|r| r >= t_kill)
            && a.failover.current().is_some_and(|c| Some(c) != victim_addr)
    };
    let deadline = t_kill + plan.deadline;
    loop {
        let now = drive(&mut poll, &mut events, &mut agents, plan)?;
        load.run(&mut agents, plan, now);
        let all_back = served.iter().all(|&i| agents.get(i).is_none_or(&back));
        if all_back || now >= deadline {
            break;
        }
    }
    let mut lat = Vec::with_capacity(served.len());
    for &i in &served {
        match agents.get(i) {
            Some(a) if back(a) => {
                lat.push(
                    a.ready_at
                        .map_or(Duration::ZERO, |r| r.saturating_duration_since(t_kill)),
                );
            }
            _ => report.timed_out += 1,
        }
    }
    report.resubscribed = lat.len();
    report.latency = Latency::of(&mut lat);
    report.get_host_calls = load.calls - before.calls;
    report.get_host_failures = load.failures - before.failures;
    report.failovers = agents.iter().map(|a| a.failover.failovers()).sum();
    report.silences = agents.iter().map(|a| a.failover.silences()).sum();
    for a in &mut agents {
        if let Some(mut c) = a.conn.take() {
            let _ = poll.registry().deregister(&mut c.stream);
        }
    }
    Ok(report)
}

/// `get_host` round robin over every agent's cached keys.
#[derive(Debug, Default, Clone, Copy)]
struct GetHostLoad {
    next: u64,
    calls: u64,
    failures: u64,
}

impl GetHostLoad {
    fn run(&mut self, agents: &mut [LeanAgent], plan: &Plan, now: Instant) {
        let (na, nk) = (agents.len() as u64, plan.keys.len() as u64);
        if na == 0 || nk == 0 {
            return;
        }
        for _ in 0..plan.get_host_batch {
            let (ai, ki) = (self.next % na, (self.next / na) % nk);
            self.next += 1;
            let (Some(a), Some(&key)) = (agents.get_mut(ai as usize), plan.keys.get(ki as usize))
            else {
                continue;
            };
            self.calls += 1;
            match a.core.get_host(key, now) {
                Choice::Idle(_) | Choice::Probe(_) => {}
                Choice::Overload | Choice::NoExist => self.failures += 1,
            }
            flush_transmits(a, now);
        }
    }
}

/// One pass: poll the sockets (at most 2 ms), handle their events, then the
/// timers and connect attempts of every agent. Returns the pass's `now`.
fn drive(
    poll: &mut Poll,
    events: &mut Events,
    agents: &mut [LeanAgent],
    plan: &Plan,
) -> Result<Instant, FleetError> {
    match poll.poll(events, Some(Duration::from_millis(2))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(FleetError::Io(e)),
    }
    let now = Instant::now();
    for ev in events.iter() {
        let i = ev.token().0;
        let Some(a) = agents.get_mut(i) else {
            continue;
        };
        on_event(poll, a, plan, now);
    }
    let unix = super::unix_now();
    for (i, a) in agents.iter_mut().enumerate() {
        if a.core.poll_timeout().is_some_and(|t| t <= now) {
            a.core.handle_timeout(now, unix);
        }
        let connected = a.conn.as_ref().is_some_and(|c| !c.connecting);
        if connected {
            if a.failover.check_silence(now) {
                lose(poll, a, now);
            } else if a.failover.keepalive_due(now) {
                if let (Some(c), Some(&key)) = (a.conn.as_mut(), plan.keys.first()) {
                    let (modid, cmdid) = key.to_wire();
                    let req = GetRouteRequest { modid, cmdid };
                    if frame::encode(MessageId::GetRouteRequest.into(), &req, &mut c.out).is_ok() {
                        a.failover.on_pull_sent(now);
                    }
                }
            }
        } else if a.conn.is_none() {
            let (addr, at) = *a
                .attempt
                .get_or_insert_with(|| a.failover.next_attempt(now));
            if at <= now {
                a.attempt = None;
                match MioStream::connect(addr) {
                    Ok(mut stream) => {
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        if poll
                            .registry()
                            .register(&mut stream, Token(i), interest)
                            .is_ok()
                        {
                            a.conn = Some(Conn {
                                stream,
                                addr,
                                connecting: true,
                                inbuf: BytesMut::with_capacity(1024),
                                out: BytesMut::new(),
                                writable_armed: true,
                            });
                        } else {
                            a.failover.on_lost(now);
                        }
                    }
                    Err(_) => a.failover.on_lost(now),
                }
            }
        }
        flush_transmits(a, now);
        if write_out(poll, a, i).is_err() {
            lose(poll, a, now);
        }
    }
    Ok(now)
}

fn on_event(poll: &mut Poll, a: &mut LeanAgent, plan: &Plan, now: Instant) {
    let Some(c) = a.conn.as_mut() else {
        return;
    };
    if c.connecting {
        if let Ok(Some(_)) | Err(_) = c.stream.take_error() {
            lose(poll, a, now);
            return;
        }
        match c.stream.peer_addr() {
            Ok(_) => {
                c.connecting = false;
                tracing::trace!(dns = %c.addr, "connected");
                a.failover.on_connected(now);
                a.core.on_dns_connected(now);
                a.answered.fill(false);
                a.ready_at = None;
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(_) => {
                lose(poll, a, now);
                return;
            }
        }
    }
    let mut closed = false;
    let mut chunk = [0u8; 8192];
    if let Some(c) = a.conn.as_mut() {
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => c
                    .inbuf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        loop {
            let f = match frame::decode(&mut c.inbuf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("bad frame from the dns {}: {e}", c.addr);
                    closed = true;
                    break;
                }
            };
            a.failover.on_frame(now);
            a.core.handle_dns_frame(&f, now);
            if let Ok(rsp) = f.message::<lars_core::proto::GetRouteResponse>() {
                let key = ModKey::from_wire(rsp.modid, rsp.cmdid);
                let j = plan.keys.iter().position(|&k| k == key);
                if let (Some(done), false) =
                    (j.and_then(|j| a.answered.get_mut(j)), rsp.host.is_empty())
                {
                    *done = true;
                }
            }
        }
    }
    if a.ready_at.is_none() && a.answered.iter().all(|&d| d) {
        a.ready_at = Some(now);
    }
    if closed {
        lose(poll, a, now);
    }
}

/// Hands the core's pulls to the connection (others are dropped: no
/// reporter, no application).
fn flush_transmits(a: &mut LeanAgent, now: Instant) {
    while let Some(t) = a.core.poll_transmit() {
        let (msgid, req) = match t {
            Transmit::Dns(req) => (MessageId::GetRouteRequest, req),
            Transmit::DnsUnsubscribe(req) => (MessageId::UnsubscribeRoute, req),
            _ => continue,
        };
        let Some(c) = a.conn.as_mut().filter(|c| !c.connecting) else {
            continue;
        };
        if frame::encode(msgid.into(), &req, &mut c.out).is_ok()
            && msgid == MessageId::GetRouteRequest
        {
            a.failover.on_pull_sent(now);
        }
    }
}

/// Writes what is queued; arms WRITABLE while some is left.
fn write_out(poll: &mut Poll, a: &mut LeanAgent, i: usize) -> io::Result<()> {
    let Some(c) = a.conn.as_mut().filter(|c| !c.connecting) else {
        return Ok(());
    };
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let _ = c.out.split_to(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let want = !c.out.is_empty();
    if want != c.writable_armed {
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        poll.registry()
            .reregister(&mut c.stream, Token(i), interest)?;
        c.writable_armed = want;
    }
    Ok(())
}

/// The connection is gone (closed, refused, silent): the failover plans the
/// next attempt, the core keeps its routes and pulls again on the next
/// connect.
fn lose(poll: &mut Poll, a: &mut LeanAgent, now: Instant) {
    if let Some(mut c) = a.conn.take() {
        let _ = poll.registry().deregister(&mut c.stream);
        if !c.connecting {
            a.core.on_dns_disconnected();
        }
    }
    a.failover.on_lost(now);
    a.attempt = None;
    a.ready_at = None;
    a.answered.fill(false);
}
