//! Part (c), the reporters: `agents` simulated agents, each with `keys` keys
//! of `hosts` hosts, report their calls through a `lars_stats::CumulativeSender`
//! per key to the reporter that owns the key on the ring ([`Ring`]), once per
//! `tick`, for `duration`. One reporter is SIGKILLed at 25 % of the run and
//! restarted once its keys are with the next reporter on the ring (and went
//! there at least once); after the load the agents tick on without new calls
//! until no key is held, then the bench waits until the store's history
//! totals for the run's modid equal the calls sent (or a deadline).
//!
//! The simulated agents keep the agent's side of the sharding contract:
//! - a reporter whose connection is lost is *gone* after `grace` without a
//!   reconnect; its keys move to the next reporter on the ring that is not
//!   gone, and when it is back (a connect succeeds) they move back;
//! - a key that moves is held: nothing of it is sent for `hold` (5 s), then
//!   the current cumulative counters of all its hosts go to the new owner
//!   (which re-reads the stream's persisted counters: the reporter's half);
//! - when a reporter's connection comes back before its keys moved, all its
//!   keys go again in full (current cumulative counters of every host).
//!
//! One `CumulativeSender` per (agent, key) makes "the connection" of a key
//! its owner: a move is a disconnect, then a connect with a new epoch.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lars_core::{HostAddr, MessageId, ModKey, frame};
use lars_lb::{HostReport, KeyReport};
use lars_stats::CumulativeSender;
use lars_store::StatsStore;
use serde::Serialize;

use super::FleetError;
use super::procs::Service;
use super::ring::Ring;

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
    /// Simulated agents.
    pub agents: usize,
    /// Keys per agent (each its own key).
    pub keys_per_agent: u32,
    /// Hosts per key.
    pub hosts_per_key: u32,
    /// Seconds of report load.
    pub load_secs: f64,
    /// The reporter SIGKILLed (index), and when (seconds into the run).
    pub killed: usize,
    /// Seconds into the run of the kill.
    pub killed_at: f64,
    /// Seconds into the run of the restart.
    pub restarted_at: f64,
    /// Seconds the agents hold a moved key before sending it to its new owner.
    pub hold_secs: f64,
    /// Seconds a lost reporter has to come back before its keys move.
    pub grace_secs: f64,
    /// Key moves (to another reporter and back).
    pub moves: u64,
    /// Successful calls sent.
    pub succ_sent: u64,
    /// Failed calls sent.
    pub err_sent: u64,
    /// Successful calls in the store's history.
    pub succ_stored: u64,
    /// Failed calls in the store's history.
    pub err_stored: u64,
    /// Whether the store holds exactly what was sent.
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

struct SimKey {
    key: ModKey,
    sender: CumulativeSender,
    /// The reporter its messages go to (the sender is connected), if any.
    owner: Option<usize>,
    /// Moving: nothing goes out before this.
    hold_until: Option<Instant>,
    assigned: bool,
}

struct Link {
    stream: Option<TcpStream>,
    /// Connections made so far (the epoch's low half).
    generation: u64,
    /// When the connection was lost (`None` while up).
    lost_at: Option<Instant>,
    out: BytesMut,
}

struct SimAgent {
    links: Vec<Link>,
    keys: Vec<SimKey>,
}

fn epoch(reporter: usize, generation: u64) -> u64 {
    ((reporter as u64) << 32) | generation
}

/// Runs part (c) against `reporters` (already serving), checking `store`.
pub(crate) fn run(
    reporters: &mut [Service],
    store: &lars_store::Store,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<ReportersReport, FleetError> {
    let n = reporters.len();
    let addrs: Vec<SocketAddr> = reporters.iter().map(Service::addr).collect();
    let ring = Ring::new(n);
    let hosts: Vec<HostAddr> = (0..plan.hosts)
        .map(|h| HostAddr::new(0x7f00_0300 + h + 1, 9000 + (h % 1000) as u16))
        .collect();
    let mut agents = Vec::with_capacity(plan.agents);
    for a in 0..plan.agents {
        let caller = 0x7f01_0000 + a as u32 + 1;
        let mut links = Vec::with_capacity(n);
        for &addr in &addrs {
            let mut link = Link {
                stream: None,
                generation: 0,
                lost_at: None,
                out: BytesMut::new(),
            };
            link.stream = Some(connect(addr).map_err(FleetError::Io)?);
            link.generation = 1;
            links.push(link);
        }
        let keys = (0..plan.keys)
            .map(|k| SimKey {
                key: ModKey::new(plan.modid, a as u32 * plan.keys + k + 1),
                sender: CumulativeSender::new(caller, lars_stats::DEFAULT_MAX_PENDING_KEYS),
                owner: None,
                hold_until: None,
                assigned: false,
            })
            .collect();
        agents.push(SimAgent { links, keys });
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
    let start = Instant::now();
    let kill_at = start + plan.duration.mul_f64(0.25);
    let load_end = start + plan.duration;
    let (mut killed, mut restarted) = (false, false);
    // The restart waits until the victim's keys are with their new owners
    // (and went there at least once), bounded.
    let mut moved_away_at: Option<Instant> = None;
    let mut drain_end: Option<Instant> = None;
    let mut seq: u64 = 0;
    let mut next_tick = start;
    progress(&format!(
        "reporters: {} agents x {} keys x {} hosts over {n} reporters for {:?}; reporter {} \
         killed at 25 %, restarted once its keys are with the next reporter",
        plan.agents, plan.keys, plan.hosts, plan.duration, plan.victim
    ));
    loop {
        let now = Instant::now();
        if now < next_tick {
            thread::sleep(next_tick - now);
            continue;
        }
        next_tick += plan.tick;
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
        let loading = now < load_end;
        let ts = super::unix_now();
        let mut held = 0usize;
        for agent in &mut agents {
            tick_agent(
                agent,
                &addrs,
                &ring,
                &hosts,
                plan,
                now,
                ts,
                loading,
                &mut seq,
                &mut report,
                &mut held,
            );
        }
        let victim_owns = agents
            .iter()
            .flat_map(|a| &a.keys)
            .any(|k| k.owner == Some(plan.victim) || k.hold_until.is_some());
        if killed && !restarted && moved_away_at.is_none() && !victim_owns {
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
    report.load_secs = plan.duration.as_secs_f64();
    for r in &mut report.per_reporter {
        r.per_sec = r.reports as f64 / report.load_secs.max(1e-9);
    }
    progress(&format!(
        "reporters: sent {} ok + {} failed calls; waiting for the store",
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
    report.exact = (report.succ_stored, report.err_stored) == (report.succ_sent, report.err_sent);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn tick_agent(
    agent: &mut SimAgent,
    addrs: &[SocketAddr],
    ring: &Ring,
    hosts: &[HostAddr],
    plan: &Plan,
    now: Instant,
    ts: u32,
    loading: bool,
    seq: &mut u64,
    report: &mut ReportersReport,
    held: &mut usize,
) {
    // 1. Connections: notice losses, reconnect.
    for (r, link) in agent.links.iter_mut().enumerate() {
        if link.stream.as_mut().is_some_and(|s| !still_open(s)) {
            lose(link, r, &mut agent.keys, now);
        }
        let reconnected = match (link.stream.is_none(), addrs.get(r)) {
            (true, Some(&addr)) => connect(addr).ok(),
            _ => None,
        };
        if let Some(stream) = reconnected {
            link.stream = Some(stream);
            link.generation += 1;
            link.lost_at = None;
            // Back before its keys moved: they go again in full.
            for k in agent.keys.iter_mut().filter(|k| k.owner == Some(r)) {
                k.sender.on_connected(epoch(r, link.generation));
                record_all(k, hosts);
            }
        }
    }
    let gone: Vec<bool> = agent
        .links
        .iter()
        .map(|l| {
            l.lost_at
                .is_some_and(|t| now.saturating_duration_since(t) >= plan.grace)
        })
        .collect();
    // 2. Keys: ownership, calls, messages.
    for k in &mut agent.keys {
        let target = ring.owner(k.key, |r| !gone.get(r).copied().unwrap_or(true));
        if let Some(t) = target.filter(|&t| k.owner != Some(t)) {
            if !k.assigned {
                // First assignment: no previous owner to wait for.
                k.assigned = true;
                k.hold_until = Some(now);
            } else if k.owner.is_some() {
                // A move: the old owner stops getting this key now.
                k.owner = None;
                k.sender.on_disconnected();
                k.hold_until = Some(now + plan.hold);
                report.moves += 1;
            } else if k.hold_until.is_none() {
                k.hold_until = Some(now + plan.hold);
                report.moves += 1;
            }
            let link = agent.links.get(t).filter(|l| l.stream.is_some());
            if let (true, Some(link)) = (k.hold_until.is_some_and(|h| h <= now), link) {
                k.owner = Some(t);
                k.hold_until = None;
                k.sender.on_connected(epoch(t, link.generation));
                record_all(k, hosts);
            }
        }
        if k.hold_until.is_some() {
            *held += 1;
        }
        if loading {
            let results = hosts
                .iter()
                .map(|&host| {
                    *seq += 1;
                    let succ = 1 + (*seq % 4) as u32;
                    let err = u32::from(*seq % 7 == 0);
                    report.succ_sent += u64::from(succ);
                    report.err_sent += u64::from(err);
                    HostReport {
                        host,
                        succ,
                        err,
                        overload: false,
                    }
                })
                .collect();
            k.sender.record([KeyReport {
                key: k.key,
                results,
            }]);
        }
        k.sender.report_tick(ts);
        let Some(owner) = k.owner else {
            continue;
        };
        let Some(link) = agent.links.get_mut(owner) else {
            continue;
        };
        while let Some(msg) = k.sender.poll_transmit() {
            match frame::encode(MessageId::ReportStatusRequest.into(), &msg, &mut link.out) {
                Ok(()) => {
                    if let Some(r) = report.per_reporter.get_mut(owner) {
                        r.reports += 1;
                    }
                }
                Err(e) => tracing::warn!("cannot encode a report: {e}"),
            }
        }
    }
    // 3. Writes.
    for (r, link) in agent.links.iter_mut().enumerate() {
        if link.out.is_empty() {
            continue;
        }
        let failed = match &mut link.stream {
            Some(stream) => stream.write_all(&link.out).is_err(),
            None => true,
        };
        link.out.clear();
        if failed && link.stream.is_some() {
            lose(link, r, &mut agent.keys, now);
        }
    }
}

/// The connection to reporter `r` is lost: its keys' senders disconnect
/// (what they handed out goes again on the next connection).
fn lose(link: &mut Link, r: usize, keys: &mut [SimKey], now: Instant) {
    link.stream = None;
    link.lost_at.get_or_insert(now);
    link.out.clear();
    for k in keys.iter_mut().filter(|k| k.owner == Some(r)) {
        k.sender.on_disconnected();
    }
}

/// Marks every host of `k` changed, so its next message carries the current
/// cumulative counters of all of them.
fn record_all(k: &mut SimKey, hosts: &[HostAddr]) {
    k.sender.record([KeyReport {
        key: k.key,
        results: hosts
            .iter()
            .map(|&host| HostReport {
                host,
                succ: 0,
                err: 0,
                overload: false,
            })
            .collect(),
    }]);
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
