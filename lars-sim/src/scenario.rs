//! [`Scenario`]: modelled backends (failure probability, latency, an up/down
//! schedule per host) and the route the balancer is given, over virtual time.
//!
//! Named scenarios are parsed from a small grammar (`dead3`, `flap1:10/50`,
//! `gray1:0.02`, ...; see [`Scenario::named`]); a replay scenario is built from
//! the reporter's per-minute history ([`Scenario::replay`]).

use std::fmt;
use std::time::Duration;

use lars_core::HostAddr;

/// When the named scenarios' trouble starts: a host goes bad at t = 10 s, not
/// at t = 0, so every balancer has warmed up and detection times are
/// measurable.
pub const ONSET: Duration = Duration::from_secs(10);

/// The named scenarios, in table order: what `lars sim` runs by default.
pub const NAMED: [&str; 11] = [
    "healthy",
    "dead1",
    "dead3",
    "dead6",
    "half1",
    "gray1",
    "slow1",
    "flap1",
    "timeouts1",
    "allrecover",
    "rolling",
];

/// A scenario that cannot be built, a policy name that is unknown, a
/// workload out of range.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario's name is none of the families of the grammar.
    UnknownScenario {
        /// The scenario as given.
        spec: String,
    },
    /// The scenario's family is known but its count or parameters are not
    /// valid.
    BadScenario {
        /// The scenario as given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// The policy name is none of `rr`, `classic`, `adaptive`, `envoy`, `p2c`.
    UnknownPolicy {
        /// The name as given.
        name: String,
    },
    /// Hosts, rate or call count out of range.
    BadWorkload {
        /// What is wrong.
        why: String,
    },
    /// A replay has nothing to replay (no rows, an empty time range).
    EmptyReplay {
        /// What is missing.
        why: String,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownScenario { spec } => write!(
                f,
                "unknown scenario {spec:?}: expected healthy, deadK, halfK[:P], grayK[:P], \
                 slowK[:X], flapK[:DOWN/UP], timeoutsK[:MS], allrecover[:DOWN] or \
                 rolling[:EVERY/LAG] (see docs/sim.md)"
            ),
            Self::BadScenario { spec, why } => write!(f, "bad scenario {spec:?}: {why}"),
            Self::UnknownPolicy { name } => write!(
                f,
                "unknown policy {name:?}: expected rr, classic, adaptive, envoy or p2c"
            ),
            Self::BadWorkload { why } => write!(f, "bad workload: {why}"),
            Self::EmptyReplay { why } => write!(f, "nothing to replay: {why}"),
        }
    }
}

impl std::error::Error for SimError {}

/// How many hosts, how fast calls arrive (one after another, at a fixed
/// rate, in virtual time) and how many calls a run makes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// Hosts in the route (the named scenarios' N).
    pub hosts: usize,
    /// Calls per second.
    pub rate: f64,
    /// Calls per run.
    pub calls: u64,
}

impl Default for Workload {
    /// 10 hosts, 100 calls/s, 100,000 calls.
    fn default() -> Self {
        Self {
            hosts: 10,
            rate: 100.0,
            calls: 100_000,
        }
    }
}

/// The largest host count a workload accepts.
pub const MAX_HOSTS: usize = 100_000;

/// The largest call count a run accepts (a run keeps every call in its
/// trace, about 40 bytes each).
pub const MAX_CALLS: u64 = 10_000_000;

impl Workload {
    /// A checked workload: 1 to [`MAX_HOSTS`] hosts, a finite rate from 0.001
    /// to 10^6 calls/s, 1 to [`MAX_CALLS`] calls.
    pub fn new(hosts: usize, rate: f64, calls: u64) -> Result<Self, SimError> {
        let bad = |why: String| Err(SimError::BadWorkload { why });
        if hosts == 0 || hosts > MAX_HOSTS {
            return bad(format!("{hosts} hosts: expected 1 to {MAX_HOSTS}"));
        }
        if !(rate.is_finite() && (0.001..=1e6).contains(&rate)) {
            return bad(format!("rate {rate}: expected 0.001 to 1000000 calls/s"));
        }
        if calls == 0 || calls > MAX_CALLS {
            return bad(format!(
                "{calls} calls: expected 1 to {MAX_CALLS} per run (a replay makes as many as \
                 its period holds at the recorded rate; lower them with --calls or --rate)"
            ));
        }
        Ok(Self { hosts, rate, calls })
    }

    /// Virtual time from the first call to one interval after the last.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.calls as f64 / self.rate)
    }

    /// When call `i` (from 0) is made.
    pub fn call_time(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * 1e9 / self.rate).round() as u64)
    }
}

/// A host's latency distribution: lognormal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median latency of a call, in milliseconds.
    pub median_ms: f64,
    /// Standard deviation of the latency's logarithm.
    pub sigma: f64,
}

impl Default for Latency {
    /// Median 5 ms, sigma 0.5 (p99 about 16 ms).
    fn default() -> Self {
        Self {
            median_ms: 5.0,
            sigma: 0.5,
        }
    }
}

/// How a host behaves from `from` until its next phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Start of the phase (virtual time since the start of the run).
    pub from: Duration,
    /// Probability that a call fails.
    pub fail: f64,
    /// Latency multiplier (1 = normal).
    pub slow: f64,
    /// How long a failed call takes, in ms (a timeout); `None`: a failure
    /// comes back as fast as a success would (a drawn latency).
    pub fail_ms: Option<u32>,
    /// Whether the host counts as bad in this phase (for the share of calls
    /// sent to bad hosts, detection and recovery times).
    pub bad: bool,
}

impl Phase {
    /// A healthy phase from `from`: no failures, normal latency.
    pub const fn healthy(from: Duration) -> Self {
        Self {
            from,
            fail: 0.0,
            slow: 1.0,
            fail_ms: None,
            bad: false,
        }
    }

    /// A bad phase from `from` in which a call fails with probability `fail`.
    pub const fn failing(from: Duration, fail: f64) -> Self {
        Self {
            from,
            fail,
            slow: 1.0,
            fail_ms: None,
            bad: true,
        }
    }
}

/// One modelled backend.
#[derive(Debug, Clone, PartialEq)]
pub struct HostModel {
    /// Its address (what the balancer sees).
    pub addr: HostAddr,
    /// A short name for tables and plots (`h0`, `n3`, an address).
    pub label: String,
    /// Its position in the route; a host replacing another in `rolling`
    /// takes the same slot (plots draw one line per slot).
    pub slot: usize,
    /// Its latency when healthy.
    pub latency: Latency,
    /// Its behaviour over time, sorted by `from`, the first from t = 0.
    pub phases: Vec<Phase>,
}

impl HostModel {
    /// A host healthy from t = 0.
    pub fn healthy(addr: HostAddr, label: impl Into<String>, slot: usize) -> Self {
        Self {
            addr,
            label: label.into(),
            slot,
            latency: Latency::default(),
            phases: vec![Phase::healthy(Duration::ZERO)],
        }
    }

    /// The phase in force at `t`.
    pub fn phase_at(&self, t: Duration) -> Phase {
        let i = self.phases.partition_point(|p| p.from <= t);
        self.phases
            .get(i.saturating_sub(1))
            .copied()
            .unwrap_or(Phase::healthy(Duration::ZERO))
    }
}

/// A route update at `at`: the hosts in `leave` leave the route, then those
/// in `join` join it at the end (indexes into [`Scenario::hosts`]). The
/// balancer gets the whole new route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteChange {
    /// When the balancer gets the new route.
    pub at: Duration,
    /// Hosts leaving the route.
    pub leave: Vec<usize>,
    /// Hosts joining the route.
    pub join: Vec<usize>,
}

impl RouteChange {
    /// Applies the change to `route`: removes `leave`, appends the hosts of
    /// `join` not already in it.
    pub fn apply(&self, route: &mut Vec<usize>) {
        route.retain(|h| !self.leave.contains(h));
        for &h in &self.join {
            if !route.contains(&h) {
                route.push(h);
            }
        }
    }
}

/// What a scenario is about, which selects the extra metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ScenarioKind {
    /// No failures: the spread of calls over equal hosts.
    Healthy,
    /// Some hosts fail or slow down from [`ONSET`] on.
    Faults,
    /// Some hosts go down and up repeatedly: their share while up.
    Flap,
    /// Every host is down, then every host comes back at `at`: how long
    /// until all are at full share and the largest share one took meanwhile.
    AllRecover {
        /// When the hosts come back.
        at: Duration,
    },
    /// Route updates replace the hosts one by one.
    Rolling,
    /// Backends modelled from the reporter's history.
    Replay,
}

/// What really happened in a replayed period (the reporter's totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Recorded {
    /// Calls recorded.
    pub calls: u64,
    /// Failed calls recorded.
    pub failed: u64,
}

/// A host's stretch of time in some condition: bad, or back up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    /// The host (index into [`Scenario::hosts`]).
    pub host: usize,
    /// Start.
    pub from: Duration,
    /// End (exclusive): the condition ends, the host leaves the route, or
    /// the run ends.
    pub until: Duration,
}

/// One per-minute row of the reporter's history for one host (what the
/// store's history table holds; the CLI reads it, lars-sim stays pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryMinute {
    /// The host.
    pub host: HostAddr,
    /// Start of the minute, unix seconds.
    pub minute: i64,
    /// Successful calls in that minute.
    pub succ: u64,
    /// Failed calls in that minute.
    pub err: u64,
}

/// What a replay scenario is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The scenario's name in tables (e.g. `replay 1/1`).
    pub name: String,
    /// Start of the replayed period, unix seconds (virtual time 0).
    pub from: i64,
    /// End of the replayed period (exclusive), unix seconds.
    pub to: i64,
    /// The history rows of the key; rows outside `[from, to)` are ignored.
    pub rows: Vec<HistoryMinute>,
    /// A host-minute whose failure rate is at least this counts as bad
    /// (0.1 in `lars sim --replay`).
    pub bad_rate: f64,
}

/// A complete what-if: the modelled hosts, the route the balancer gets and
/// its updates, and the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The name in tables (`dead1`, `flap1:10/50`, `replay 1/1`).
    pub name: String,
    /// What it is about.
    pub kind: ScenarioKind,
    /// Rate and call count; `hosts` is the initial route's size.
    pub workload: Workload,
    /// Every host that is ever in the route.
    pub hosts: Vec<HostModel>,
    /// The route at t = 0 (indexes into `hosts`).
    pub route: Vec<usize>,
    /// Route updates, sorted by time.
    pub changes: Vec<RouteChange>,
    /// Replay: what really happened in the period.
    pub recorded: Option<Recorded>,
}

/// A parsed scenario name.
enum Family {
    Healthy,
    Fail { k: usize, fail: f64 },
    Slow { k: usize, factor: f64 },
    Flap { k: usize, down: f64, up: f64 },
    Timeouts { k: usize, ms: u32 },
    AllRecover { down: f64 },
    Rolling { every: f64, lag: f64 },
}

impl Scenario {
    /// Builds a named scenario for workload `w` (N = `w.hosts`; the bad hosts
    /// are the first ones; trouble starts at [`ONSET`] = 10 s):
    ///
    /// | spec | meaning |
    /// |---|---|
    /// | `healthy` | no failures |
    /// | `deadK` | K hosts fail every call |
    /// | `halfK[:P]` | K hosts fail with probability P (0.5) |
    /// | `grayK[:P]` | K hosts fail with probability P (0.05) |
    /// | `slowK[:X]` | K hosts answer X (10) times slower, no errors |
    /// | `flapK[:DOWN/UP]` | K hosts down DOWN s (30), up UP s (30), repeating |
    /// | `timeoutsK[:MS]` | K hosts dead behind timeouts: a failure takes MS ms (1000) |
    /// | `allrecover[:DOWN]` | every host down for DOWN s (20), then up |
    /// | `rolling[:EVERY/LAG]` | every EVERY s (5) one host stops; LAG s (2) later the route replaces it with a new healthy host |
    ///
    /// K may be left out (1). "Down" is failing every call, fast.
    pub fn named(spec: &str, w: &Workload) -> Result<Self, SimError> {
        let family = parse(spec)?;
        let n = w.hosts;
        let end = w.duration();
        let bad = |why: String| SimError::BadScenario {
            spec: spec.to_owned(),
            why,
        };
        let check_k = |k: usize| {
            if k == 0 || k > n {
                Err(bad(format!(
                    "{k} bad host(s) out of {n}: expected 1 to {n}"
                )))
            } else {
                Ok(k)
            }
        };
        let mut hosts: Vec<HostModel> = (0..n)
            .map(|i| HostModel::healthy(addr(0, i), format!("h{i}"), i))
            .collect();
        let mut changes = Vec::new();
        let kind = match family {
            Family::Healthy => ScenarioKind::Healthy,
            Family::Fail { k, fail } => {
                for h in &mut hosts[..check_k(k)?] {
                    h.phases.push(Phase::failing(ONSET, fail));
                }
                ScenarioKind::Faults
            }
            Family::Slow { k, factor } => {
                for h in &mut hosts[..check_k(k)?] {
                    h.phases.push(Phase {
                        slow: factor,
                        ..Phase::failing(ONSET, 0.0)
                    });
                }
                ScenarioKind::Faults
            }
            Family::Timeouts { k, ms } => {
                for h in &mut hosts[..check_k(k)?] {
                    h.phases.push(Phase {
                        fail_ms: Some(ms),
                        ..Phase::failing(ONSET, 1.0)
                    });
                }
                ScenarioKind::Faults
            }
            Family::Flap { k, down, up } => {
                for h in &mut hosts[..check_k(k)?] {
                    let mut t = ONSET.as_secs_f64();
                    while t < end.as_secs_f64() {
                        h.phases.push(Phase::failing(secs(t), 1.0));
                        h.phases.push(Phase::healthy(secs(t + down)));
                        t += down + up;
                    }
                }
                ScenarioKind::Flap
            }
            Family::AllRecover { down } => {
                let at = secs(ONSET.as_secs_f64() + down);
                for h in &mut hosts {
                    h.phases.push(Phase::failing(ONSET, 1.0));
                    h.phases.push(Phase::healthy(at));
                }
                ScenarioKind::AllRecover { at }
            }
            Family::Rolling { every, lag } => {
                for i in 0..n {
                    let stop = secs(ONSET.as_secs_f64() + every * i as f64);
                    if stop >= end {
                        break;
                    }
                    if lag > 0.0 {
                        hosts[i].phases.push(Phase::failing(stop, 1.0));
                    }
                    let new = hosts.len();
                    hosts.push(HostModel::healthy(addr(1, i), format!("n{i}"), i));
                    changes.push(RouteChange {
                        at: stop + secs(lag),
                        leave: vec![i],
                        join: vec![new],
                    });
                }
                ScenarioKind::Rolling
            }
        };
        Ok(Self {
            name: spec.to_owned(),
            kind,
            workload: *w,
            hosts,
            route: (0..n).collect(),
            changes,
            recorded: None,
        })
    }

    /// Builds a scenario from the reporter's per-minute history: the hosts
    /// are those in the rows; each host fails, minute by minute, with its
    /// recorded failure rate (a minute without calls keeps the previous
    /// minute's rate, 0 before any); calls arrive at `rate` (default: the
    /// recorded calls over the period) and a run makes `calls` of them
    /// (default: as many as fit in the period). All hosts stay in the route
    /// for the whole period; latency is the default lognormal.
    pub fn replay(r: &Replay, rate: Option<f64>, calls: Option<u64>) -> Result<Self, SimError> {
        let empty = |why: String| Err(SimError::EmptyReplay { why });
        if r.to <= r.from {
            return empty(format!("the period {}..{} is empty", r.from, r.to));
        }
        let first_minute = r.from.div_euclid(60) * 60;
        let rows: Vec<HistoryMinute> = r
            .rows
            .iter()
            .copied()
            .filter(|x| x.minute >= first_minute && x.minute < r.to)
            .collect();
        let mut addrs: Vec<HostAddr> = rows.iter().map(|x| x.host).collect();
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            return empty("no history rows in the period".into());
        }
        let succ: u64 = rows.iter().map(|x| x.succ).sum();
        let err: u64 = rows.iter().map(|x| x.err).sum();
        if succ + err == 0 {
            return empty("the history rows of the period count no call".into());
        }
        let span = (r.to - r.from) as f64;
        let rate = rate.unwrap_or((succ + err) as f64 / span);
        let calls = calls.unwrap_or_else(|| (rate * span).round().max(1.0) as u64);
        let workload = Workload::new(addrs.len(), rate, calls)?;
        let minutes = (r.to - first_minute + 59) / 60;
        let mut hosts = Vec::with_capacity(addrs.len());
        for (slot, &a) in addrs.iter().enumerate() {
            let mut per_minute: Vec<Option<f64>> = vec![None; minutes as usize];
            let mut counts = vec![(0u64, 0u64); minutes as usize];
            for x in rows.iter().filter(|x| x.host == a) {
                let m = ((x.minute - first_minute) / 60) as usize;
                if let Some(c) = counts.get_mut(m) {
                    c.0 += x.succ;
                    c.1 += x.err;
                }
            }
            for (m, &(s, e)) in counts.iter().enumerate() {
                if s + e > 0 {
                    per_minute[m] = Some(e as f64 / (s + e) as f64);
                }
            }
            let mut phases: Vec<Phase> = Vec::new();
            let mut p = 0.0;
            for (m, known) in per_minute.iter().enumerate() {
                p = known.unwrap_or(p);
                let start = (first_minute + 60 * m as i64 - r.from).max(0);
                let from = Duration::from_secs(start as u64);
                let phase = Phase {
                    from,
                    fail: p,
                    slow: 1.0,
                    fail_ms: None,
                    bad: p > 0.0 && p >= r.bad_rate,
                };
                match phases.last() {
                    Some(last) if last.fail == phase.fail && last.bad == phase.bad => {}
                    _ => phases.push(phase),
                }
            }
            if let Some(f) = phases.first_mut() {
                f.from = Duration::ZERO;
            }
            hosts.push(HostModel {
                addr: a,
                label: a.to_string(),
                slot,
                latency: Latency::default(),
                phases,
            });
        }
        Ok(Self {
            name: r.name.clone(),
            kind: ScenarioKind::Replay,
            workload,
            route: (0..hosts.len()).collect(),
            hosts,
            changes: Vec::new(),
            recorded: Some(Recorded {
                calls: succ + err,
                failed: err,
            }),
        })
    }

    /// The virtual time a run covers.
    pub fn duration(&self) -> Duration {
        self.workload.duration()
    }

    /// For each host, the stretches during which it is in the route,
    /// clipped to the run.
    pub fn membership(&self) -> Vec<Vec<(Duration, Duration)>> {
        let end = self.duration();
        let mut out = vec![Vec::new(); self.hosts.len()];
        let mut since: Vec<Option<Duration>> = vec![None; self.hosts.len()];
        for &h in &self.route {
            since[h] = Some(Duration::ZERO);
        }
        for c in &self.changes {
            for &h in &c.leave {
                if let Some(s) = since[h].take() {
                    out[h].push((s, c.at.min(end)));
                }
            }
            for &h in &c.join {
                if since[h].is_none() {
                    since[h] = Some(c.at);
                }
            }
        }
        for (h, s) in since.iter().enumerate() {
            if let Some(s) = *s {
                out[h].push((s, end));
            }
        }
        for v in &mut out {
            v.retain(|&(a, b)| a < b);
        }
        out
    }

    /// The stretches during which a host is bad while in the route (one per
    /// maximal run of bad phases), sorted by start.
    pub fn bad_episodes(&self) -> Vec<Episode> {
        let end = self.duration();
        let member = self.membership();
        let mut out = Vec::new();
        for (h, m) in self.hosts.iter().enumerate() {
            for (from, until) in runs(&m.phases, end, |p| p.bad) {
                for &(a, b) in &member[h] {
                    let (s, e) = (from.max(a), until.min(b));
                    if s < e {
                        out.push(Episode {
                            host: h,
                            from: s,
                            until: e,
                        });
                    }
                }
            }
        }
        out.sort_by_key(|e| (e.from, e.host));
        out
    }

    /// The moments a host becomes usable after t = 0 (it recovers from a bad
    /// phase, or joins the route healthy), each until it goes bad again,
    /// leaves the route or the run ends; sorted by start.
    pub fn up_episodes(&self) -> Vec<Episode> {
        let end = self.duration();
        let member = self.membership();
        let mut out = Vec::new();
        for (h, m) in self.hosts.iter().enumerate() {
            let good = runs(&m.phases, end, |p| !p.bad);
            for &(a, b) in &member[h] {
                for &(from, until) in &good {
                    let (s, e) = (from.max(a), until.min(b));
                    // A recovery (a good run starting after t = 0 inside the
                    // membership) or a join (membership starting after t = 0
                    // inside a good run).
                    let starts_up =
                        (from > Duration::ZERO && from >= a) || (a > Duration::ZERO && a >= from);
                    if s < e && starts_up {
                        out.push(Episode {
                            host: h,
                            from: s,
                            until: e,
                        });
                    }
                }
            }
        }
        out.sort_by_key(|e| (e.from, e.host));
        out
    }
}

/// Maximal runs of phases matching `keep`, as `[from, until)` clipped to `end`.
fn runs(
    phases: &[Phase],
    end: Duration,
    keep: impl Fn(&Phase) -> bool,
) -> Vec<(Duration, Duration)> {
    let mut out = Vec::new();
    let mut open: Option<Duration> = None;
    for p in phases {
        match (open, keep(p)) {
            (None, true) => open = Some(p.from),
            (Some(s), false) => {
                out.push((s, p.from.min(end)));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(s) = open {
        out.push((s, end));
    }
    out.retain(|&(a, b)| a < b);
    out
}

/// The address of host `i` of generation `g` (0: the initial hosts,
/// `10.0.0.1:80` on; 1: the hosts `rolling` adds, `10.128.0.1:80` on).
fn addr(g: u32, i: usize) -> HostAddr {
    // MAX_HOSTS < 2^23, so `i + 1` stays below the generation bit.
    HostAddr::new(0x0a00_0000 | (g << 23) | (i as u32 + 1), 80)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn parse(spec: &str) -> Result<Family, SimError> {
    let bad = |why: &str| SimError::BadScenario {
        spec: spec.to_owned(),
        why: why.to_owned(),
    };
    let (head, params) = match spec.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (spec, None),
    };
    let family = head.trim_end_matches(|c: char| c.is_ascii_digit());
    let k = match &head[family.len()..] {
        "" => None,
        d => Some(
            d.parse::<usize>()
                .map_err(|_| bad("the host count is too large"))?,
        ),
    };
    let num = |s: &str, what: &str| -> Result<f64, SimError> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| bad(&format!("{what} {s:?} is not a number")))
    };
    let pair = |p: &str, what: &str| -> Result<(f64, f64), SimError> {
        let (a, b) = p
            .split_once('/')
            .ok_or_else(|| bad(&format!("expected {what}")))?;
        Ok((num(a, "the first value")?, num(b, "the second value")?))
    };
    let no_k = || {
        if k.is_some() {
            Err(bad("this scenario takes no host count"))
        } else {
            Ok(())
        }
    };
    let k = || k.unwrap_or(1);
    let rate = |default: f64| -> Result<f64, SimError> {
        let p = params.map_or(Ok(default), |p| num(p, "the failure rate"))?;
        if p > 0.0 && p <= 1.0 {
            Ok(p)
        } else {
            Err(bad("the failure rate must be above 0 and at most 1"))
        }
    };
    Ok(match family {
        "healthy" => {
            no_k()?;
            if params.is_some() {
                return Err(bad("healthy takes no parameter"));
            }
            Family::Healthy
        }
        "dead" => {
            if params.is_some() {
                return Err(bad("deadK takes no parameter"));
            }
            Family::Fail { k: k(), fail: 1.0 }
        }
        "half" => Family::Fail {
            k: k(),
            fail: rate(0.5)?,
        },
        "gray" => Family::Fail {
            k: k(),
            fail: rate(0.05)?,
        },
        "slow" => {
            let factor = params.map_or(Ok(10.0), |p| num(p, "the slowdown"))?;
            if !(1.0..=1e6).contains(&factor) {
                return Err(bad("the slowdown must be from 1 to 1000000"));
            }
            Family::Slow { k: k(), factor }
        }
        "flap" => {
            let (down, up) = params.map_or(Ok((30.0, 30.0)), |p| pair(p, "DOWN/UP seconds"))?;
            if !(down >= 0.001 && up >= 0.001) {
                return Err(bad("DOWN and UP must be at least 0.001 s"));
            }
            Family::Flap { k: k(), down, up }
        }
        "timeouts" => {
            let ms = params.map_or(Ok(1000.0), |p| num(p, "the timeout"))?;
            if !(1.0..=3_600_000.0).contains(&ms) {
                return Err(bad("the timeout must be from 1 to 3600000 ms"));
            }
            Family::Timeouts {
                k: k(),
                ms: ms.round() as u32,
            }
        }
        "allrecover" => {
            no_k()?;
            let down = params.map_or(Ok(20.0), |p| num(p, "DOWN"))?;
            if down < 0.001 {
                return Err(bad("DOWN must be at least 0.001 s"));
            }
            Family::AllRecover { down }
        }
        "rolling" => {
            no_k()?;
            let (every, lag) = params.map_or(Ok((5.0, 2.0)), |p| pair(p, "EVERY/LAG seconds"))?;
            if !(every >= 0.001 && lag >= 0.0) {
                return Err(bad("EVERY must be at least 0.001 s and LAG at least 0"));
            }
            Family::Rolling { every, lag }
        }
        _ => {
            return Err(SimError::UnknownScenario {
                spec: spec.to_owned(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> Workload {
        Workload::new(10, 100.0, 20_000).unwrap() // 200 s
    }

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn every_named_scenario_builds() {
        for name in NAMED {
            let sc = Scenario::named(name, &w()).unwrap();
            assert_eq!(sc.name, name);
            assert_eq!(sc.route.len(), 10);
        }
    }

    #[test]
    fn dead_hosts_are_the_first_ones_from_the_onset() {
        let sc = Scenario::named("dead3", &w()).unwrap();
        let bad = sc.bad_episodes();
        assert_eq!(bad.len(), 3);
        for (i, e) in bad.iter().enumerate() {
            assert_eq!((e.host, e.from, e.until), (i, ONSET, s(200)));
        }
        assert_eq!(sc.hosts[0].phase_at(s(9)).fail, 0.0);
        assert_eq!(sc.hosts[0].phase_at(ONSET).fail, 1.0);
        assert_eq!(sc.hosts[3].phase_at(s(100)).fail, 0.0);
        assert!(sc.up_episodes().is_empty());
    }

    #[test]
    fn flap_alternates_and_its_recoveries_are_up_episodes() {
        let sc = Scenario::named("flap1:10/20", &w()).unwrap();
        let bad = sc.bad_episodes();
        let spans: Vec<(u64, u64)> = bad
            .iter()
            .map(|e| (e.from.as_secs(), e.until.as_secs()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (10, 20),
                (40, 50),
                (70, 80),
                (100, 110),
                (130, 140),
                (160, 170),
                (190, 200)
            ]
        );
        let ups: Vec<(u64, u64)> = sc
            .up_episodes()
            .iter()
            .map(|e| (e.from.as_secs(), e.until.as_secs()))
            .collect();
        assert_eq!(
            ups,
            vec![
                (20, 40),
                (50, 70),
                (80, 100),
                (110, 130),
                (140, 160),
                (170, 190)
            ]
        );
        assert_eq!(sc.kind, ScenarioKind::Flap);
    }

    #[test]
    fn allrecover_takes_every_host_down_then_up() {
        let sc = Scenario::named("allrecover", &w()).unwrap();
        assert_eq!(sc.kind, ScenarioKind::AllRecover { at: s(30) });
        assert_eq!(sc.bad_episodes().len(), 10);
        assert!(
            sc.bad_episodes()
                .iter()
                .all(|e| e.from == s(10) && e.until == s(30))
        );
        assert!(
            sc.up_episodes()
                .iter()
                .all(|e| e.from == s(30) && e.until == s(200))
        );
    }

    #[test]
    fn rolling_replaces_hosts_one_by_one() {
        let sc = Scenario::named("rolling:5/2", &w()).unwrap();
        assert_eq!(sc.hosts.len(), 20);
        assert_eq!(sc.changes.len(), 10);
        assert_eq!(sc.changes[0].at, s(12));
        assert_eq!(
            (sc.changes[0].leave.clone(), sc.changes[0].join.clone()),
            (vec![0], vec![10])
        );
        assert_eq!(sc.changes[9].at, s(57));
        let mut route = sc.route.clone();
        for c in &sc.changes {
            c.apply(&mut route);
        }
        assert_eq!(route, (10..20).collect::<Vec<_>>());
        let bad = sc.bad_episodes();
        assert_eq!(bad.len(), 10);
        assert_eq!((bad[1].host, bad[1].from, bad[1].until), (1, s(15), s(17)));
        let ups = sc.up_episodes();
        assert_eq!(ups.len(), 10);
        assert_eq!(
            (ups[0].host, ups[0].from, ups[0].until),
            (10, s(12), s(200))
        );
        assert_eq!(sc.hosts[10].slot, 0);
        // Old and new addresses never collide, even with many hosts.
        let mut addrs: Vec<HostAddr> = (0..MAX_HOSTS)
            .flat_map(|i| [addr(0, i), addr(1, i)])
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 2 * MAX_HOSTS);
    }

    #[test]
    fn parameters_and_errors() {
        let sc = Scenario::named("gray2:0.2", &w()).unwrap();
        assert_eq!(sc.hosts[1].phase_at(s(50)).fail, 0.2);
        assert_eq!(sc.hosts[2].phase_at(s(50)).fail, 0.0);
        let sc = Scenario::named("timeouts1:250", &w()).unwrap();
        assert_eq!(sc.hosts[0].phase_at(s(50)).fail_ms, Some(250));
        let sc = Scenario::named("slow1:4", &w()).unwrap();
        assert_eq!(sc.hosts[0].phase_at(s(50)).slow, 4.0);
        assert!(sc.hosts[0].phase_at(s(50)).bad);
        assert_eq!(
            Scenario::named("dead", &w()).unwrap().bad_episodes().len(),
            1
        );
        for bad in [
            "dead11",
            "dead0",
            "half1:2",
            "gray1:x",
            "flap1:30",
            "flap1:0/5",
            "healthy3",
            "allrecover2",
            "rolling:0/1",
            "timeouts1:0",
            "slow1:0.5",
            "dead1:3",
            "dead99999999999999999999999",
        ] {
            let e = Scenario::named(bad, &w()).unwrap_err();
            assert!(matches!(e, SimError::BadScenario { .. }), "{bad}: {e}");
        }
        for unknown in ["", "bogus", "Dead1", "1dead"] {
            let e = Scenario::named(unknown, &w()).unwrap_err();
            assert!(
                matches!(e, SimError::UnknownScenario { .. }),
                "{unknown}: {e}"
            );
        }
        assert!(Workload::new(0, 100.0, 1).is_err());
        assert!(Workload::new(1, f64::NAN, 1).is_err());
        assert!(Workload::new(1, 100.0, 0).is_err());
        assert!(Workload::new(1, 100.0, MAX_CALLS + 1).is_err());
    }

    #[test]
    fn replay_builds_per_minute_failure_rates() {
        let a: HostAddr = "10.9.0.1:80".parse().unwrap();
        let b: HostAddr = "10.9.0.2:80".parse().unwrap();
        let row = |host, minute, succ, err| HistoryMinute {
            host,
            minute,
            succ,
            err,
        };
        let r = Replay {
            name: "replay 1/1".into(),
            from: 6000,
            to: 6180,
            rows: vec![
                row(a, 6000, 60, 0),
                row(b, 6000, 30, 30),
                row(a, 6060, 60, 0),
                // b silent in the second minute: keeps 50%.
                row(a, 6120, 60, 0),
                row(b, 6120, 60, 0),
                row(b, 9000, 0, 60), // outside the period
            ],
            bad_rate: 0.1,
        };
        let sc = Scenario::replay(&r, None, None).unwrap();
        assert_eq!(sc.hosts.len(), 2);
        assert_eq!(sc.workload.rate, 300.0 / 180.0);
        assert_eq!(sc.workload.calls, 300);
        assert_eq!(
            sc.recorded,
            Some(Recorded {
                calls: 300,
                failed: 30
            })
        );
        let hb = &sc.hosts[1];
        assert_eq!(hb.phase_at(s(0)).fail, 0.5);
        assert_eq!(hb.phase_at(s(90)).fail, 0.5);
        assert_eq!(hb.phase_at(s(130)).fail, 0.0);
        let bad = sc.bad_episodes();
        assert_eq!(
            bad,
            vec![Episode {
                host: 1,
                from: s(0),
                until: s(120)
            }]
        );
        let sc = Scenario::replay(&r, Some(10.0), Some(50)).unwrap();
        assert_eq!((sc.workload.rate, sc.workload.calls), (10.0, 50));
        let none = Replay {
            rows: vec![],
            ..r.clone()
        };
        assert!(matches!(
            Scenario::replay(&none, None, None),
            Err(SimError::EmptyReplay { .. })
        ));
        let backwards = Replay { to: 5000, ..r };
        assert!(Scenario::replay(&backwards, None, None).is_err());
    }
}
