//! The discrete-event loop: calls at a fixed rate, reports delivered when the
//! calls complete, the balancer's timers and route updates, all in virtual
//! time; the result is a [`Trace`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use lars_lb::HostAddr;

use crate::balancer::{Balancer, CallResult};
use crate::rng::Rng;
use crate::scenario::Scenario;

/// One call as it happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallRecord {
    /// When it was made.
    pub at: Duration,
    /// The host it went to (index into [`Scenario::hosts`]); `None`: the
    /// balancer had no host (a rejected call, counted as failed).
    pub host: Option<usize>,
    /// Whether it succeeded.
    pub ok: bool,
    /// How long it took in ms (a failure's timecost; 0 when rejected).
    pub latency_ms: f32,
}

/// A host entering or leaving rotation, as the balancer reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationChange {
    /// When it was observed (the time of the event that caused it).
    pub at: Duration,
    /// The host (index into [`Scenario::hosts`]).
    pub host: usize,
    /// In rotation afterwards.
    pub in_rotation: bool,
}

/// Everything a run produced, for the metrics and the plot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Every call, in time order.
    pub calls: Vec<CallRecord>,
    /// Every change of a routed host's rotation state, in time order (a
    /// host is in rotation when it joins the route unless a change says
    /// otherwise).
    pub rotation: Vec<RotationChange>,
    /// Picks the balancer flagged as probes.
    pub probes: u64,
}

/// A completed call whose report is not yet delivered.
#[derive(Debug, PartialEq)]
struct Pending {
    due: Duration,
    seq: u64,
    host: HostAddr,
    result: CallResult,
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Runs `scenario` against `balancer`; backend outcomes and latencies are
/// drawn from a generator seeded with `seed`.
///
/// Call `i` is made at `i / rate`. Before each call, in time order: route
/// updates due, the balancer's timers due, reports of calls completed (a
/// call completes at its start plus its latency; a failure's latency is its
/// timecost). Then the balancer picks; the host's phase at that moment
/// decides the outcome. After every event the routed hosts' rotation states
/// are read and changes recorded. Reports still in flight at the end are
/// dropped.
pub fn simulate(scenario: &Scenario, balancer: &mut dyn Balancer, seed: u64) -> Trace {
    let mut rng = Rng::new(seed);
    let index: HashMap<HostAddr, usize> = scenario
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.addr, i))
        .collect();
    let n = scenario.hosts.len();
    let mut trace = Trace {
        calls: Vec::with_capacity(scenario.workload.calls.min(1 << 24) as usize),
        ..Trace::default()
    };
    let mut routed: Vec<usize> = scenario.route.clone();
    let mut rot = vec![true; n];
    let addrs =
        |r: &[usize]| -> Vec<HostAddr> { r.iter().map(|&i| scenario.hosts[i].addr).collect() };
    balancer.update(&addrs(&routed), Duration::ZERO);
    let sample = |b: &dyn Balancer, routed: &[usize], rot: &mut [bool], now, trace: &mut Trace| {
        for &h in routed {
            let r = b.in_rotation(scenario.hosts[h].addr);
            if r != rot[h] {
                rot[h] = r;
                trace.rotation.push(RotationChange {
                    at: now,
                    host: h,
                    in_rotation: r,
                });
            }
        }
    };
    sample(balancer, &routed, &mut rot, Duration::ZERO, &mut trace);

    let mut pending: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut next_change = 0usize;
    // The last deadline handled: a balancer whose deadline does not move
    // past it is not woken again before the next call.
    let mut handled: Option<Duration> = None;
    for i in 0..scenario.workload.calls {
        let t = scenario.workload.call_time(i);
        loop {
            let change = scenario
                .changes
                .get(next_change)
                .map(|c| c.at)
                .filter(|&at| at <= t);
            let deadline = balancer
                .next_deadline()
                .filter(|&d| d <= t && handled.is_none_or(|h| d > h));
            let report = pending.peek().map(|p| p.0.due).filter(|&d| d <= t);
            // Earliest first; on a tie: route, then timers, then reports.
            let mut best: Option<(Duration, u8)> = None;
            for (at, kind) in [(change, 0u8), (deadline, 1), (report, 2)] {
                if let Some(at) = at
                    && best.is_none_or(|(b, _)| at < b)
                {
                    best = Some((at, kind));
                }
            }
            let Some((at, kind)) = best else {
                break;
            };
            match kind {
                0 => {
                    let c = &scenario.changes[next_change];
                    next_change += 1;
                    // A host (re)joining starts in rotation.
                    for &h in &c.join {
                        if !routed.contains(&h) && !rot[h] {
                            rot[h] = true;
                            trace.rotation.push(RotationChange {
                                at,
                                host: h,
                                in_rotation: true,
                            });
                        }
                    }
                    c.apply(&mut routed);
                    balancer.update(&addrs(&routed), at);
                }
                1 => {
                    handled = Some(at);
                    balancer.handle_timeout(at);
                }
                _ => {
                    if let Some(Reverse(p)) = pending.pop() {
                        balancer.report(p.host, p.result, p.due);
                    }
                }
            }
            sample(balancer, &routed, &mut rot, at, &mut trace);
        }
        let pick = balancer.pick(t);
        if pick.probe {
            trace.probes += 1;
        }
        let host = pick.host.and_then(|a| index.get(&a).copied());
        let record = match host {
            None => CallRecord {
                at: t,
                host: None,
                ok: false,
                latency_ms: 0.0,
            },
            Some(h) => {
                let model = &scenario.hosts[h];
                let phase = model.phase_at(t);
                let ok = !(phase.fail > 0.0 && rng.unit() < phase.fail);
                let drawn =
                    rng.lognormal(model.latency.median_ms, model.latency.sigma) * phase.slow;
                let latency = match (ok, phase.fail_ms) {
                    (false, Some(ms)) => f64::from(ms),
                    _ => drawn,
                };
                seq += 1;
                pending.push(Reverse(Pending {
                    due: t + Duration::from_secs_f64(latency / 1000.0),
                    seq,
                    host: model.addr,
                    result: CallResult {
                        ok,
                        latency_ms: latency,
                    },
                }));
                CallRecord {
                    at: t,
                    host: Some(h),
                    ok,
                    latency_ms: latency as f32,
                }
            }
        };
        trace.calls.push(record);
        sample(balancer, &routed, &mut rot, t, &mut trace);
    }
    trace
}
