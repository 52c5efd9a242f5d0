//! Part (c), the reporters: `agents` simulated agents, each a real
//! `lars_agent::core::AgentCore` with `keys` keys of `hosts` hosts (routes
//! restored, no dns) and one TCP connection to every reporter, record calls
//! once per `tick` for `duration`; the core shards its statistics over the
//! reporter links by consistent hashing of the key and keeps the agent's half
//! of the handoff contract itself (a lost reporter's keys move to the next on
//! the ring after `grace`, are held `hold`, then every host's counters go to
//! the new owner; a reconnected reporter gets its keys in full). One reporter
//! is SIGKILLed at 25 % of the run and restarted once its keys are with the
//! next reporter (and went there); after the load the cores tick on without
//! new calls until no key is held, then the bench waits until the store's
//! history totals for the run's modid equal the calls recorded (or a
//! deadline), and 2 s more.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lars_agent::core::{AgentCore, CoreConfig, Transmit};
use lars_core::{HostAddr, MessageId, ModKey, frame};
use lars_lb::{LoadBalanceConfig, Outcome};
use lars_store::StatsStore;
use serde::Serialize;

use super::FleetError;
use super::procs::Service;

/// How part (c) runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub agents: usize,
    pub keys: u32,
    pub hosts: u32,
    pub duration: Duration,
    pub tick: Duration,
    pub grace: Duration,
    pub hold: Duration,
    pub modid: u32,
    /// The reporter killed and restarted (index).
    pub victim: usize,
    pub settle_timeout: Duration,
}

/// What part (c) saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReportersReport {
    /// Reporter processes.
    pub reporters: usize,
    /// Simulated agents (real agent cores).
    pub agents: usize,
    /// Keys per agent (each agent its own keys).
    pub keys_per_agent: u32,
    /// Hosts per key.
    pub hosts_per_key: u32,
    /// Seconds of report load.
    pub load_secs: f64,
    /// The reporter SIGKILLed (index).
    pub killed: usize,
    /// Seconds into the run of the kill.
    pub killed_at: f64,
    /// Seconds into the run of the restart.
    pub restarted_at: f64,
    /// Seconds the agents hold a moved key before sending it to its new owner.
    pub hold_secs: f64,
    /// Seconds a lost reporter has to come back before its keys move.
    pub grace_secs: f64,
    /// Key moves between reporter links (the cores' `reporter_handoffs`).
    pub moves: u64,
    /// Successful calls recorded.
    pub succ_sent: u64,
    /// Failed calls recorded.
    pub err_sent: u64,
    /// Successful calls in the store's history.
    pub succ_stored: u64,
    /// Failed calls in the store's history.
    pub err_stored: u64,
    /// Whether the store holds exactly what was recorded.
    pub exact: bool,
    /// Seconds from the end of the load until the totals were equal (or the
    /// deadline).
    pub settle_secs: f64,
    /// Per reporter: report messages sent to it, and per second of load.
    pub per_reporter: Vec<ReporterLoad>,
}

/// The report load one reporter took.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReporterLoad {
    /// `ReportStatusRequest` messages written to it.
    pub reports: u64,
    /// `reports / load_secs`.
    pub per_sec: f64,
}

struct Link {
    stream: Option<TcpStream>,
    /// Connections made so far (the core's epoch of this link).
    epoch: u64,
    out: BytesMut,
}

struct SimAgent {
    core: AgentCore,
    caller: Ipv4Addr,
    keys: Vec<ModKey>,
    links: Vec<Link>,
}

/// How often the cores' timers and transmits are driven.
const PASS: Duration = Duration::from_millis(50);

/// Runs part (c) against `reporters` (already serving), checking `store`.
pub(crate) fn run(
    reporters: &mut [Service],
    store: &lars_store::Store,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<ReportersReport, FleetError> {
    let n = reporters.len();
    let addrs: Vec<SocketAddr> = reporters.iter().map(Service::addr).collect();
    let hosts: Vec<HostAddr> = (0..plan.hosts)
        .map(|h| HostAddr::new(0x7f00_0300 + h + 1, 9000 + (h % 1000) as u16))
        .collect();
    let start = Instant::now();
    let config = CoreConfig::new(LoadBalanceConfig::default())
        .report_interval(plan.tick)
        .reporters(n, plan.grace, plan.hold);
    let mut agents = Vec::with_capacity(plan.agents);
    for a in 0..plan.agents {
        let caller = Ipv4Addr::from(0x7f01_0000 + a as u32 + 1);
        let keys: Vec<ModKey> = (0..plan.keys)
            .map(|k| ModKey::new(plan.modid, a as u32 * plan.keys + k + 1))
            .collect();
        let mut core = AgentCore::new(config.clone());
        let routes: Vec<(ModKey, Vec<HostAddr>)> =
            keys.iter().map(|&k| (k, hosts.clone())).collect();
        core.restore(&routes, start);
        let mut links = Vec::with_capacity(n);
        for (r, &addr) in addrs.iter().enumerate() {
            let stream = connect(addr).map_err(FleetError::Io)?;
            core.on_reporter_connected(r, 1, caller, start);
            links.push(Link {
                stream: Some(stream),
                epoch: 1,
                out: BytesMut::new(),
            });
        }
        agents.push(SimAgent {
            core,
            caller,
            keys,
            links,
        });
    }
    let mut report = ReportersReport {
        reporters: n,
        agents: plan.agents,
        keys_per_agent: plan.keys,
        hosts_per_key: plan.hosts,
        killed: plan.victim,
        hold_secs: plan.hold.as_secs_f64(),
        grace_secs: plan.grace.as_secs_f64(),
        per_reporter: vec![ReporterLoad::default(); n],
        ..ReportersReport::default()
    };
    let since = i64::from(super::unix_now()) - 120;
    let kill_at = start + plan.duration.mul_f64(0.25);
    let load_end = start + plan.duration;
    let (mut killed, mut restarted) = (false, false);
    // The restart waits until the victim's keys are with their new owners
    // (and went there at least once), bounded.
    let mut moved_away_at: Option<Instant> = None;
    let mut drain_end: Option<Instant> = None;
    let mut seq: u64 = 0;
    let mut next_tick = start;
    let mut next_pass = start;
    progress(&format!(
        "reporters: {} agents x {} keys x {} hosts over {n} reporters for {:?}; reporter {} \
         killed at 25 %, restarted once its keys are with the next reporter",
        plan.agents, plan.keys, plan.hosts, plan.duration, plan.victim
    ));
    loop {
        let now = Instant::now();
        if now < next_pass {
            thread::sleep(next_pass - now);
            continue;
        }
        next_pass = now + PASS;
        if !killed && now >= kill_at {
            if let Some(victim) = reporters.get_mut(plan.victim) {
                victim.kill();
            }
            killed = true;
            report.killed_at = start.elapsed().as_secs_f64();
            progress(&format!(
                "reporters: reporter {} SIGKILLed at {:.1} s",
                plan.victim, report.killed_at
            ));
        }
        let restart_due = moved_away_at.is_some_and(|t| now >= t + plan.tick * 2)
            || (killed && now >= kill_at + plan.grace + plan.hold + Duration::from_secs(10));
        if killed && !restarted && restart_due {
            if let Some(victim) = reporters.get_mut(plan.victim) {
                victim.restart()?;
                victim.wait_ready(Duration::from_secs(20))?;
            }
            restarted = true;
            report.restarted_at = start.elapsed().as_secs_f64();
            progress(&format!(
                "reporters: reporter {} restarted at {:.1} s",
                plan.victim, report.restarted_at
            ));
        }
        let tick = now >= next_tick;
        if tick {
            next_tick += plan.tick;
        }
        let loading = now < load_end;
        let unix = super::unix_now();
        for agent in &mut agents {
            if tick {
                check_links(agent, &addrs, now);
                if loading {
                    record_calls(agent, &hosts, now, &mut seq, &mut report);
                }
            }
            if agent.core.poll_timeout().is_some_and(|t| t <= now) {
                agent.core.handle_timeout(now, unix);
            }
            send(agent, now, &mut report);
        }
        if !tick {
            continue;
        }
        let held: usize = agents
            .iter()
            .map(|a| {
                a.core
                    .reporter_links()
                    .iter()
                    .map(|l| l.held)
                    .sum::<usize>()
            })
            .sum();
        let victim_owns = agents.iter().any(|a| {
            a.keys
                .iter()
                .any(|&k| a.core.reporter_of(k) == Some(plan.victim))
        });
        if killed && !restarted && moved_away_at.is_none() && !victim_owns && held == 0 {
            moved_away_at = Some(now);
        }
        if !loading && restarted {
            // After the load: ticks without new calls until no key is held.
            let end = *drain_end.get_or_insert(now + plan.grace + plan.hold + plan.tick * 3);
            if held == 0 || now >= end {
                if held > 0 {
                    tracing::warn!("{held} keys still held at the end of the drain");
                }
                break;
            }
        }
    }
    report.moves = agents
        .iter()
        .map(|a| a.core.counters().reporter_handoffs)
        .sum();
    report.load_secs = plan.duration.as_secs_f64();
    for r in &mut report.per_reporter {
        r.per_sec = r.reports as f64 / report.load_secs.max(1e-9);
    }
    progress(&format!(
        "reporters: recorded {} ok + {} failed calls; waiting for the store",
        report.succ_sent, report.err_sent
    ));
    let settle_start = Instant::now();
    let deadline = settle_start + plan.settle_timeout;
    let sent = (report.succ_sent, report.err_sent);
    let mut equal_since: Option<Instant> = None;
    loop {
        let (s, e) = history_totals(store, plan.modid, since)?;
        report.succ_stored = s;
        report.err_stored = e;
        let now = Instant::now();
        if (s, e) == sent {
            equal_since.get_or_insert(now);
            report.settle_secs = equal_since.map_or(0.0, |t| {
                t.saturating_duration_since(settle_start).as_secs_f64()
            });
        } else {
            equal_since = None;
            report.settle_secs = settle_start.elapsed().as_secs_f64();
        }
        // Equal and still equal 2 s later (a late flush would show), or more
        // than sent (counted twice: waiting cannot fix it), or the deadline.
        let stable = equal_since.is_some_and(|t| now >= t + Duration::from_secs(2));
        if stable || s > sent.0 || e > sent.1 || now >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    report.exact = (report.succ_stored, report.err_stored) == sent;
    Ok(report)
}

/// Notices closed connections (the reporter never writes to an agent: a
/// read that finds an end or an error means it is gone) and reconnects.
fn check_links(agent: &mut SimAgent, addrs: &[SocketAddr], now: Instant) {
    for (r, link) in agent.links.iter_mut().enumerate() {
        if link.stream.as_mut().is_some_and(|s| !still_open(s)) {
            link.stream = None;
            link.out.clear();
            agent.core.on_reporter_disconnected(r, now);
        }
        let reconnected = match (link.stream.is_none(), addrs.get(r)) {
            (true, Some(&addr)) => connect(addr).ok(),
            _ => None,
        };
        if let Some(stream) = reconnected {
            link.stream = Some(stream);
            link.epoch += 1;
            agent
                .core
                .on_reporter_connected(r, link.epoch, agent.caller, now);
        }
    }
}

/// One tick's calls: 1..=4 successes per host, a failure every 7th.
fn record_calls(
    agent: &mut SimAgent,
    hosts: &[HostAddr],
    now: Instant,
    seq: &mut u64,
    report: &mut ReportersReport,
) {
    for &key in &agent.keys {
        for &host in hosts {
            *seq += 1;
            let succ = 1 + *seq % 4;
            for _ in 0..succ {
                agent.core.report(key, host, Outcome::Success, now);
            }
            report.succ_sent += succ;
            if *seq % 7 == 0 {
                agent
                    .core
                    .report(key, host, Outcome::Failure { timecost_ms: 0 }, now);
                report.err_sent += 1;
            }
        }
    }
}

/// Hands the core's statistics messages to their links and writes them.
fn send(agent: &mut SimAgent, now: Instant, report: &mut ReportersReport) {
    while let Some(t) = agent.core.poll_transmit() {
        let Transmit::Reporter { link, msg } = t else {
            continue;
        };
        let Some(l) = agent.links.get_mut(link) else {
            continue;
        };
        match frame::encode(MessageId::ReportStatusRequest.into(), &msg, &mut l.out) {
            Ok(()) => {
                if let Some(r) = report.per_reporter.get_mut(link) {
                    r.reports += 1;
                }
            }
            Err(e) => tracing::warn!("cannot encode a report: {e}"),
        }
    }
    for (r, link) in agent.links.iter_mut().enumerate() {
        if link.out.is_empty() {
            continue;
        }
        let failed = match &mut link.stream {
            Some(stream) => stream.write_all(&link.out).is_err(),
            None => false,
        };
        link.out.clear();
        if failed {
            link.stream = None;
            agent.core.on_reporter_disconnected(r, now);
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Whether the reporter (which never writes to an agent) has not closed the
/// connection: a non-blocking read finds nothing.
fn still_open(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 64];
    let open = match stream.read(&mut b) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    open && stream.set_nonblocking(false).is_ok()
}

fn history_totals(
    store: &lars_store::Store,
    modid: u32,
    since: i64,
) -> Result<(u64, u64), FleetError> {
    Ok(store
        .history(None, since)?
        .iter()
        .filter(|r| r.key.modid == modid)
        .fold((0, 0), |(s, e), r| (s + r.succ, e + r.err)))
}
