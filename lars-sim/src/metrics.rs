//! [`Metrics`]: one table row per scenario and policy, computed from a
//! [`Trace`] (see docs/sim.md for each definition).

use std::collections::VecDeque;
use std::time::Duration;

use crate::engine::Trace;
use crate::scenario::{Scenario, ScenarioKind};

/// A host is at "full share" when its share of the calls in the sliding
/// window reaches this fraction of a fair share (1 / hosts in the route).
pub const FULL_SHARE: f64 = 0.9;

/// The measures of one run (or their means over seeds). Times are in
/// seconds of virtual time, shares in percent; `None` where a measure does
/// not apply (no bad host, no recovery) or never happened.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// The scenario's name.
    pub scenario: String,
    /// The balancer's name.
    pub policy: String,
    /// What the scenario is about (`healthy`, `faults`, `flap`,
    /// `allrecover`, `rolling`, `replay`).
    pub kind: &'static str,
    /// Runs averaged (seeds).
    pub seeds: u32,
    /// Calls made.
    pub calls: f64,
    /// Failed calls (rejected ones included).
    pub failed: f64,
    /// Failed calls, % of calls.
    pub failed_pct: f64,
    /// Calls the balancer had no host for.
    pub rejected: f64,
    /// Of the calls made while at least one host was bad, the % sent to a
    /// host that was bad at that moment.
    pub bad_share_pct: Option<f64>,
    /// Caller latency median, ms, over calls that reached a host (a failed
    /// call's latency is its timecost).
    pub p50_ms: Option<f64>,
    /// Caller latency 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Mean time from a host going bad to it being out of rotation, s
    /// (0 when it was already out), over the bad episodes where it happened.
    pub detect_mean_s: Option<f64>,
    /// The longest such time, s.
    pub detect_max_s: Option<f64>,
    /// Bad episodes during which the host was never out of rotation.
    pub undetected: f64,
    /// Mean time from a host coming back (recovering, or joining the route)
    /// to its first call, s.
    pub first_traffic_mean_s: Option<f64>,
    /// Mean time from a host coming back to its full share, s.
    pub full_share_mean_s: Option<f64>,
    /// The longest such time, s.
    pub full_share_max_s: Option<f64>,
    /// Comebacks that did not reach full share before the host went bad
    /// again, left the route, or the run ended.
    pub never_full: f64,
    /// Probes: picks the balancer flagged as probes of hosts out of rotation.
    pub probes: f64,
    /// The mean share, %, of calls a host got while back up after having
    /// been bad or joined (fair: 100 / hosts).
    pub up_share_pct: Option<f64>,
    /// `allrecover`: time from the hosts coming back until every host is at
    /// full share at once, s.
    pub all_full_s: Option<f64>,
    /// `allrecover`: the largest share a host took in a window during that
    /// ramp, as a multiple of the fair share.
    pub ramp_peak_x: Option<f64>,
    /// `healthy`: the largest deviation of a host's share of all calls from
    /// the fair share, % of fair.
    pub spread_pct: Option<f64>,
}

impl Metrics {
    /// The mean of several runs' metrics (same scenario and policy): every
    /// number is averaged, an optional one over the runs that have it.
    pub fn mean(runs: &[Metrics]) -> Option<Metrics> {
        let first = runs.first()?;
        let n = runs.len() as f64;
        let avg = |f: fn(&Metrics) -> f64| runs.iter().map(f).sum::<f64>() / n;
        let avg_opt = |f: fn(&Metrics) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        Some(Metrics {
            scenario: first.scenario.clone(),
            policy: first.policy.clone(),
            kind: first.kind,
            seeds: runs.iter().map(|m| m.seeds).sum(),
            calls: avg(|m| m.calls),
            failed: avg(|m| m.failed),
            failed_pct: avg(|m| m.failed_pct),
            rejected: avg(|m| m.rejected),
            bad_share_pct: avg_opt(|m| m.bad_share_pct),
            p50_ms: avg_opt(|m| m.p50_ms),
            p99_ms: avg_opt(|m| m.p99_ms),
            detect_mean_s: avg_opt(|m| m.detect_mean_s),
            detect_max_s: avg_opt(|m| m.detect_max_s),
            undetected: avg(|m| m.undetected),
            first_traffic_mean_s: avg_opt(|m| m.first_traffic_mean_s),
            full_share_mean_s: avg_opt(|m| m.full_share_mean_s),
            full_share_max_s: avg_opt(|m| m.full_share_max_s),
            never_full: avg(|m| m.never_full),
            probes: avg(|m| m.probes),
            up_share_pct: avg_opt(|m| m.up_share_pct),
            all_full_s: avg_opt(|m| m.all_full_s),
            ramp_peak_x: avg_opt(|m| m.ramp_peak_x),
            spread_pct: avg_opt(|m| m.spread_pct),
        })
    }

    /// The scenario-specific measure, as the table's last column shows it.
    pub fn extra(&self) -> String {
        let f = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
        match self.kind {
            "healthy" => format!("spread +-{}% of fair", f(self.spread_pct, 1)),
            "flap" => format!("up share {}%", f(self.up_share_pct, 2)),
            "allrecover" => format!(
                "{}, peak {}x fair",
                self.all_full_s
                    .map_or("never all full".to_owned(), |v| format!("all full {v:.2}s")),
                f(self.ramp_peak_x, 2)
            ),
            _ => String::new(),
        }
    }
}

fn kind_name(k: ScenarioKind) -> &'static str {
    match k {
        ScenarioKind::Healthy => "healthy",
        ScenarioKind::Faults => "faults",
        ScenarioKind::Flap => "flap",
        ScenarioKind::AllRecover { .. } => "allrecover",
        ScenarioKind::Rolling => "rolling",
        ScenarioKind::Replay => "replay",
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(f64::from(sorted[rank.min(sorted.len()) - 1]))
}

/// Computes the metrics of `trace`, a run of `scenario` by `policy`;
/// `window` is the sliding window of the full-share test (1 s in `lars
/// sim`).
pub fn measure(scenario: &Scenario, policy: &str, trace: &Trace, window: Duration) -> Metrics {
    let calls = &trace.calls;
    let n_calls = calls.len();
    let n_hosts = scenario.hosts.len();
    let failed = calls.iter().filter(|c| !c.ok).count();
    let rejected = calls.iter().filter(|c| c.host.is_none()).count();
    let mut lat: Vec<f32> = calls
        .iter()
        .filter(|c| c.host.is_some())
        .map(|c| c.latency_ms)
        .collect();
    lat.sort_by(f32::total_cmp);

    // Calls of each host, by time (indexes into `calls`).
    let mut per_host: Vec<Vec<usize>> = vec![Vec::new(); n_hosts];
    for (i, c) in calls.iter().enumerate() {
        if let Some(h) = c.host {
            per_host[h].push(i);
        }
    }
    // First call index at or after `t`.
    let call_index = |t: Duration| calls.partition_point(|c| c.at < t);

    // Share of calls sent to bad hosts.
    let bad = scenario.bad_episodes();
    let mut edges: Vec<(Duration, bool, usize)> = Vec::new();
    for e in &bad {
        edges.push((e.from, true, e.host));
        edges.push((e.until, false, e.host));
    }
    // Ends before starts at the same instant.
    edges.sort_by_key(|&(t, start, h)| (t, start, h));
    let mut bad_now = vec![0u32; n_hosts];
    let mut bad_hosts = 0u32;
    let (mut during, mut to_bad) = (0u64, 0u64);
    let mut e = 0;
    for c in calls {
        while e < edges.len() && edges[e].0 <= c.at {
            let (_, start, h) = edges[e];
            if start {
                if bad_now[h] == 0 {
                    bad_hosts += 1;
                }
                bad_now[h] += 1;
            } else {
                bad_now[h] = bad_now[h].saturating_sub(1);
                if bad_now[h] == 0 {
                    bad_hosts = bad_hosts.saturating_sub(1);
                }
            }
            e += 1;
        }
        if bad_hosts > 0 {
            during += 1;
            if c.host.is_some_and(|h| bad_now[h] > 0) {
                to_bad += 1;
            }
        }
    }

    // Detection: from going bad to out of rotation.
    let mut changes: Vec<Vec<(Duration, bool)>> = vec![Vec::new(); n_hosts];
    for r in &trace.rotation {
        changes[r.host].push((r.at, r.in_rotation));
    }
    let mut detect = Vec::new();
    let mut undetected = 0u64;
    for ep in &bad {
        let ch = &changes[ep.host];
        let k = ch.partition_point(|c| c.0 <= ep.from);
        let in_at_start = k == 0 || ch[k - 1].1;
        if !in_at_start {
            detect.push(0.0);
            continue;
        }
        match ch[k..].iter().find(|c| !c.1 && c.0 < ep.until) {
            Some(c) => detect.push(secs(c.0 - ep.from)),
            None => undetected += 1,
        }
    }

    // Comebacks: first traffic, share while up.
    let ups = scenario.up_episodes();
    let mut first_traffic = Vec::new();
    let (mut up_calls, mut up_host_calls) = (0usize, 0usize);
    for ep in &ups {
        let idx = &per_host[ep.host];
        let (a, b) = (call_index(ep.from), call_index(ep.until));
        let k = idx.partition_point(|&i| i < a);
        if let Some(&i) = idx.get(k)
            && i < b
        {
            first_traffic.push(secs(calls[i].at - ep.from));
        }
        up_calls += b - a;
        up_host_calls += idx[k..].iter().take_while(|&&i| i < b).count();
    }

    // Full share: a sliding window over the calls.
    let mut full = vec![None::<f64>; ups.len()];
    let mut route_len = scenario.route.len();
    let mut next_change = 0;
    let mut win: VecDeque<usize> = VecDeque::new();
    let mut count = vec![0u64; n_hosts];
    let recover_at = match scenario.kind {
        ScenarioKind::AllRecover { at } => Some(at),
        _ => None,
    };
    let mut routed: Vec<usize> = scenario.route.clone();
    let mut all_full: Option<Duration> = None;
    let mut ramp_peak: Option<f64> = None;
    let mut open_from = 0; // ups before this index have started
    let mut active: Vec<usize> = Vec::new(); // started, not yet full or over
    for (i, c) in calls.iter().enumerate() {
        while let Some(ch) = scenario.changes.get(next_change)
            && ch.at <= c.at
        {
            ch.apply(&mut routed);
            route_len = routed.len();
            next_change += 1;
        }
        win.push_back(i);
        if let Some(h) = c.host {
            count[h] += 1;
        }
        while let Some(&j) = win.front()
            && calls[j].at + window <= c.at
        {
            win.pop_front();
            if let Some(h) = calls[j].host {
                count[h] -= 1;
            }
        }
        let len = win.len() as f64;
        let fair = 1.0 / route_len.max(1) as f64;
        let is_full = |h: usize| count[h] as f64 >= FULL_SHARE * fair * len;
        while open_from < ups.len() && ups[open_from].from <= c.at {
            active.push(open_from);
            open_from += 1;
        }
        active.retain(|&k| {
            let ep = &ups[k];
            if c.at >= ep.until {
                return false;
            }
            if is_full(ep.host) {
                full[k] = Some(secs(c.at - ep.from));
                return false;
            }
            true
        });
        if let Some(at) = recover_at
            && c.at >= at
            && all_full.is_none()
        {
            let done = routed.iter().all(|&h| is_full(h));
            if c.at >= at + window || done {
                let peak = routed.iter().map(|&h| count[h]).max().unwrap_or(0) as f64 / len / fair;
                ramp_peak = Some(ramp_peak.map_or(peak, |p: f64| p.max(peak)));
            }
            if done {
                all_full = Some(c.at - at);
            }
        }
    }
    let full_times: Vec<f64> = full.iter().flatten().copied().collect();

    let spread = (scenario.kind == ScenarioKind::Healthy && n_calls > 0).then(|| {
        let fair = 1.0 / scenario.route.len().max(1) as f64;
        scenario
            .route
            .iter()
            .map(|&h| ((per_host[h].len() as f64 / n_calls as f64) - fair).abs() / fair * 100.0)
            .fold(0.0, f64::max)
    });

    Metrics {
        scenario: scenario.name.clone(),
        policy: policy.to_owned(),
        kind: kind_name(scenario.kind),
        seeds: 1,
        calls: n_calls as f64,
        failed: failed as f64,
        failed_pct: if n_calls == 0 {
            0.0
        } else {
            100.0 * failed as f64 / n_calls as f64
        },
        rejected: rejected as f64,
        bad_share_pct: (during > 0).then(|| 100.0 * to_bad as f64 / during as f64),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        detect_mean_s: mean(&detect),
        detect_max_s: max(&detect),
        undetected: undetected as f64,
        first_traffic_mean_s: mean(&first_traffic),
        full_share_mean_s: mean(&full_times),
        full_share_max_s: max(&full_times),
        never_full: (ups.len() - full_times.len()) as f64,
        probes: trace.probes as f64,
        up_share_pct: (up_calls > 0).then(|| 100.0 * up_host_calls as f64 / up_calls as f64),
        all_full_s: all_full.map(secs),
        ramp_peak_x: ramp_peak,
        spread_pct: spread,
    }
}
