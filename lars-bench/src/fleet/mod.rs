//! The fleet benchmark (`lars bench fleet`): many agent connections against
//! several real `lars-dns` and `lars-reporter` processes over one store, all
//! on loopback, every phase bounded by a deadline.
//!
//! - (a) **push** ([`PushReport`]): `subscribers` lean subscriber
//!   connections spread over `dns` dns processes; a route change written to
//!   the store; time until each subscriber has the push (p50/p99/max).
//! - (b) **dns killed** ([`DnsKillReport`]): `agents` real agent cores
//!   (in-process, one lean connection each, driven by the agent's
//!   `DnsFailover`) with `agent_keys` cached keys; the dns serving most of
//!   them is SIGKILLed; time until each of its agents is connected elsewhere
//!   with every key re-pulled, and `get_host` failures meanwhile (goal 0).
//! - (c) **reporters** ([`ReportersReport`]): `report_agents` real agent
//!   cores record calls and report them to `reporters` reporter processes,
//!   each key to its owner on the cores' reporter ring; one reporter is
//!   SIGKILLed mid-run and restarted; the store's history totals must equal
//!   the calls recorded.
//!
//! The service processes are the real binaries (found next to the running
//! executable, or through `LARS_DNS_BIN` / `LARS_REPORTER_BIN`), started from
//! config files written into a temporary directory, each SIGKILLed and reaped
//! when the run ends (also on a panic: drop guards). The bench raises its own
//! soft `RLIMIT_NOFILE` to the hard limit (rustix; the children inherit it)
//! and refuses a fleet that does not fit in it.
//!
//! Ctrl-C in a terminal reaches the whole foreground process group: the
//! children stop on their own SIGINT, the bench dies without its drop guards
//! (its temporary directory stays). A SIGKILL of the bench alone leaves the
//! children running (no parent-death signal: that needs `unsafe` pre_exec).

mod dns_kill;
mod procs;
mod push;
mod reporters;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use lars_core::{HostAddr, ModKey};
use lars_store::RouteAdmin;
use serde::Serialize;

pub use dns_kill::DnsKillReport;
pub use push::PushReport;
pub use reporters::{ReporterLoad, ReportersReport};

use procs::{Kind, Service, TempDir};

/// What to run. A count of zero skips its part.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Dns processes.
    pub dns: usize,
    /// Part (a): subscriber connections, spread over the dns processes.
    pub subscribers: usize,
    /// The dns processes' version poll interval (`[dns] version_interval`).
    pub dns_poll: Duration,
    /// Worker loops per dns process (`[reactor] threadNum`).
    pub dns_threads: usize,
    /// The store: `None` is a fresh SQLite file in the run's temporary
    /// directory; else a store URL (`mysql://...`) every process shares.
    pub store: Option<String>,
    /// Part (b): lean agents (real agent cores, one connection each).
    pub agents: usize,
    /// Part (b): keys each agent caches (the same keys for every agent).
    pub agent_keys: u32,
    /// Part (b): `get_host` calls per loop pass while the dns is killed.
    pub get_host_batch: usize,
    /// Part (c): reporter processes.
    pub reporters: usize,
    /// Part (c): simulated reporting agents (one connection to each reporter).
    pub report_agents: usize,
    /// Part (c): keys per simulated agent (each agent its own keys).
    pub report_keys: u32,
    /// Part (c): hosts per key.
    pub report_hosts: u32,
    /// Part (c): seconds of report load (the kill at 25 %, the restart once
    /// the victim's keys are with the next reporter); at least 10.
    pub report_duration: Duration,
    /// Part (c): the agents' report interval.
    pub report_interval: Duration,
    /// Part (c): how long a lost reporter has to come back before its keys
    /// move to the next reporter on the ring.
    pub handoff_grace: Duration,
    /// Part (c): how long a moved key's statistics are held before they go
    /// to the new owner.
    pub handoff_hold: Duration,
    /// The `lars-dns` binary (`None`: `LARS_DNS_BIN`, else next to this
    /// executable).
    pub dns_bin: Option<PathBuf>,
    /// The `lars-reporter` binary (likewise, `LARS_REPORTER_BIN`).
    pub reporter_bin: Option<PathBuf>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            dns: 2,
            subscribers: 10_000,
            dns_poll: Duration::from_millis(250),
            dns_threads: 2,
            agents: 5_000,
            agent_keys: 4,
            get_host_batch: 2_000,
            reporters: 3,
            report_agents: 1_000,
            report_keys: 4,
            report_hosts: 3,
            report_duration: Duration::from_secs(30),
            report_interval: Duration::from_secs(1),
            handoff_grace: Duration::from_secs(2),
            handoff_hold: Duration::from_secs(5),
            store: None,
            dns_bin: None,
            reporter_bin: None,
        }
    }
}

/// The result of [`run`]: one report per part that ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetReport {
    /// The soft `RLIMIT_NOFILE` the run had (raised to the hard limit).
    pub fd_limit: u64,
    /// Part (a).
    pub push: Option<PushReport>,
    /// Part (b).
    pub dns_kill: Option<DnsKillReport>,
    /// Part (c).
    pub reporters: Option<ReportersReport>,
}

/// Latency percentiles of one part, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// The percentiles of `samples` (sorted in place; nearest rank).
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let rank = |q: f64| {
            let n = samples.len();
            let i = ((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
            samples.get(i).map_or(0.0, Duration::as_secs_f64)
        };
        Self {
            count: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples.last().map_or(0.0, Duration::as_secs_f64),
        }
    }
}

/// Why the fleet could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// An option is out of range, or the fleet does not fit.
    #[error("invalid options: {0}")]
    Invalid(String),
    /// A service binary was not found.
    #[error("{0}")]
    MissingBinary(String),
    /// A service process failed to start or to serve.
    #[error("{0}")]
    Service(String),
    /// The store failed.
    #[error("store")]
    Store(#[from] lars_store::StoreError),
    /// A socket or file operation failed.
    #[error("i/o")]
    Io(#[source] io::Error),
}

/// File descriptors the bench keeps for itself beyond the fleet's sockets.
const FD_SLACK: u64 = 128;

/// Runs the parts whose counts are not zero, in order (a), and reports.
/// `progress` gets one line per step.
pub fn run(opts: &FleetOptions, progress: &mut dyn FnMut(&str)) -> Result<FleetReport, FleetError> {
    if opts.dns == 0 && (opts.subscribers > 0 || opts.agents > 0) {
        return Err(FleetError::Invalid("at least one dns is needed".into()));
    }
    if opts.agents > 0 && (opts.dns < 2 || opts.agent_keys == 0) {
        return Err(FleetError::Invalid(
            "the dns kill needs at least 2 dns and 1 key per agent".into(),
        ));
    }
    let fd_limit = procs::raise_fd_limit();
    let report_conns = (opts.report_agents as u64).saturating_mul(opts.reporters as u64);
    let need = (opts.subscribers as u64)
        .max(opts.agents as u64)
        .max(report_conns)
        + FD_SLACK;
    if need > fd_limit {
        return Err(FleetError::Invalid(format!(
            "{} subscriber connections, {} agents, {report_conns} reporter connections: that \
             needs about {need} file descriptors; the limit is {fd_limit} (ulimit -Hn): ask for \
             fewer",
            opts.subscribers, opts.agents
        )));
    }
    if opts.reporters > 0 {
        if opts.report_agents == 0 || opts.report_keys == 0 || opts.report_hosts == 0 {
            return Err(FleetError::Invalid(
                "reporters need at least one agent, key and host".into(),
            ));
        }
        if opts.report_duration < Duration::from_secs(10) {
            return Err(FleetError::Invalid(
                "the report load runs at least 10 s".into(),
            ));
        }
        if opts.report_interval.is_zero() {
            return Err(FleetError::Invalid(
                "the report interval must be positive".into(),
            ));
        }
    }
    let mut report = FleetReport {
        fd_limit,
        ..FleetReport::default()
    };
    let tmp = TempDir::new("lars-bench-fleet").map_err(FleetError::Io)?;
    let store_url = match &opts.store {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", tmp.path().join("lars.db").display()),
    };
    let store = lars_store::open(&store_url)?;
    // A modid of its own, so a shared store's other routes never count.
    let modid = 0x3000_0000 | (unix_now() & 0x0fff_ffff);
    let push_key = ModKey::new(modid, 1);
    let host_a = HostAddr::new(u32::from(Ipv4Addr::new(127, 0, 2, 1)), 9001);
    let host_b = HostAddr::new(u32::from(Ipv4Addr::new(127, 0, 2, 2)), 9002);
    store.set_hosts(push_key, &[host_a])?;
    let agent_keys: Vec<ModKey> = (0..opts.agent_keys)
        .map(|k| ModKey::new(modid, k + 2))
        .collect();
    for (k, &key) in agent_keys.iter().enumerate() {
        let hosts: Vec<HostAddr> = (0..3u16)
            .map(|h| {
                HostAddr::new(
                    u32::from(Ipv4Addr::new(127, 0, 4, 1)),
                    10_000 + k as u16 * 4 + h,
                )
            })
            .collect();
        store.set_hosts(key, &hosts)?;
    }

    if opts.subscribers > 0 || opts.agents > 0 {
        let dns_bin = procs::locate(Kind::Dns, opts.dns_bin.as_deref())?;
        // After the kill, every agent is on the dns left.
        let max_conn = opts.subscribers.max(opts.agents) + 64;
        let mut dns = Vec::with_capacity(opts.dns);
        for i in 0..opts.dns {
            dns.push(start_dns(
                &tmp,
                &dns_bin,
                i,
                &store_url,
                max_conn,
                opts.dns_threads,
                opts.dns_poll,
            )?);
        }
        for d in &mut dns {
            d.wait_ready(Duration::from_secs(20))?;
        }
        progress(&format!(
            "fleet: {} dns processes up ({}), version poll {:?}",
            dns.len(),
            dns.iter()
                .map(|d| format!("{} pid {}", d.addr(), d.pid().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", "),
            opts.dns_poll
        ));
        let addrs: Vec<SocketAddr> = dns.iter().map(Service::addr).collect();
        if opts.subscribers > 0 {
            let plan = push::Plan {
                subscribers: opts.subscribers,
                key: push_key,
                hosts_after: vec![host_a, host_b],
                new_host: host_b,
                dns_poll: opts.dns_poll,
            };
            report.push = Some(push::run(&addrs, &store, &plan, progress)?);
        }
        if opts.agents > 0 {
            let plan = dns_kill::Plan {
                agents: opts.agents,
                keys: agent_keys.clone(),
                get_host_batch: opts.get_host_batch.max(1),
                deadline: Duration::from_secs(30),
            };
            report.dns_kill = Some(dns_kill::run(&mut dns, &plan, progress)?);
        }
    }
    if opts.reporters > 0 {
        let bin = procs::locate(Kind::Reporter, opts.reporter_bin.as_deref())?;
        let max_conn = opts.report_agents + 64;
        let mut reps = Vec::with_capacity(opts.reporters);
        for i in 0..opts.reporters {
            reps.push(start_reporter(&tmp, &bin, i, &store_url, max_conn)?);
        }
        for r in &mut reps {
            r.wait_ready(Duration::from_secs(20))?;
        }
        let plan = reporters::Plan {
            agents: opts.report_agents,
            keys: opts.report_keys,
            hosts: opts.report_hosts,
            duration: opts.report_duration,
            tick: opts.report_interval,
            grace: opts.handoff_grace,
            hold: opts.handoff_hold,
            modid: modid + 1,
            victim: opts.reporters / 2,
            settle_timeout: Duration::from_secs(30),
        };
        report.reporters = Some(reporters::run(&mut reps, &store, &plan, progress)?);
    }
    Ok(report)
}

fn start_reporter(
    tmp: &TempDir,
    bin: &std::path::Path,
    index: usize,
    store_url: &str,
    max_conn: usize,
) -> Result<Service, FleetError> {
    let port = procs::free_port().map_err(FleetError::Io)?;
    let conf = tmp.path().join(format!("reporter{index}.conf"));
    let text = format!(
        "[reactor]\nip = 127.0.0.1\nport = {port}\nthreadNum = 1\nmaxConn = {max_conn}\n\
         maxConnPerPeer = 0\n\n[store]\nurl = {store_url}\n\n[reporter]\ndb_thread_cnt = 2\n\
         flush_interval = 1\n"
    );
    std::fs::write(&conf, text).map_err(FleetError::Io)?;
    Service::spawn(
        Kind::Reporter,
        format!("reporter{index}"),
        bin,
        conf,
        tmp.path().join(format!("reporter{index}.log")),
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
    )
}

fn start_dns(
    tmp: &TempDir,
    bin: &std::path::Path,
    index: usize,
    store_url: &str,
    max_conn: usize,
    threads: usize,
    poll: Duration,
) -> Result<Service, FleetError> {
    let port = procs::free_port().map_err(FleetError::Io)?;
    let conf = tmp.path().join(format!("dns{index}.conf"));
    let text = format!(
        "[reactor]\nip = 127.0.0.1\nport = {port}\nthreadNum = {threads}\nmaxConn = {max_conn}\n\
         maxConnPerPeer = 0\n\n[store]\nurl = {store_url}\n\n[dns]\nversion_interval = {}\n\
         reload_interval = 3600\nmax_unhosted_subscriptions = 0\n",
        poll.as_secs_f64()
    );
    std::fs::write(&conf, text).map_err(FleetError::Io)?;
    Service::spawn(
        Kind::Dns,
        format!("dns{index}"),
        bin,
        conf,
        tmp.path().join(format!("dns{index}.log")),
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
    )
}

fn unix_now() -> u32 {
    u32::try_from(lars_core::time::unix_now()).unwrap_or(u32::MAX)
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<34} {:>9} {:>9} {:>9} {:>12}",
            "part", "p50", "p99", "max", "count"
        )?;
        if let Some(p) = &self.push {
            writeln!(
                f,
                "{:<34} {:>8.3}s {:>8.3}s {:>8.3}s {:>5}/{:<6}",
                "(a) push: route change -> subscriber",
                p.latency.p50,
                p.latency.p99,
                p.latency.max,
                p.pushed,
                p.subscribers
            )?;
            writeln!(
                f,
                "    dns version poll {:.3} s; subscribed {} in {:.1} s; store write {:.3} s; \
                 failed {}, timed out {}",
                p.dns_poll_secs,
                p.subscribed,
                p.subscribe_secs,
                p.write_secs,
                p.failed,
                p.timed_out
            )?;
        }
        if let Some(b) = &self.dns_kill {
            writeln!(
                f,
                "{:<34} {:>8.3}s {:>8.3}s {:>8.3}s {:>5}/{:<6}",
                "(b) dns killed: agent resubscribed",
                b.latency.p50,
                b.latency.p99,
                b.latency.max,
                b.resubscribed,
                b.served
            )?;
            writeln!(
                f,
                "    {} agents x {} keys (per dns {:?}), dns {} killed; get_host during the \
                 failover {} calls, {} failed; timed out {}; failovers {}, silences {}; \
                 jitter {:.3} s, silence timeout {:.1} s",
                b.agents,
                b.keys_per_agent,
                b.per_dns,
                b.killed,
                b.get_host_calls,
                b.get_host_failures,
                b.timed_out,
                b.failovers,
                b.silences,
                b.failover_jitter_secs,
                b.silence_timeout_secs
            )?;
        }
        if let Some(r) = &self.reporters {
            writeln!(
                f,
                "{:<34} sent {}/{} ok/failed calls, stored {}/{}: {}",
                "(c) reporters: kill + restart",
                r.succ_sent,
                r.err_sent,
                r.succ_stored,
                r.err_stored,
                if r.exact { "exact" } else { "NOT EXACT" }
            )?;
            writeln!(
                f,
                "    {} reporters, {} agents x {} keys x {} hosts, {:.0} s of load; reporter {} \
                 killed at {:.1} s, restarted at {:.1} s; grace {:.1} s, hold {:.1} s; \
                 {} key moves; settled in {:.1} s",
                r.reporters,
                r.agents,
                r.keys_per_agent,
                r.hosts_per_key,
                r.load_secs,
                r.killed,
                r.killed_at,
                r.restarted_at,
                r.grace_secs,
                r.hold_secs,
                r.moves,
                r.settle_secs
            )?;
            let loads: Vec<String> = r
                .per_reporter
                .iter()
                .enumerate()
                .map(|(i, l)| format!("#{i} {:.0}", l.per_sec))
                .collect();
            writeln!(f, "    reports/s per reporter: {}", loads.join(", "))?;
        }
        write!(f, "file descriptor limit {}", self.fd_limit)
    }
}
