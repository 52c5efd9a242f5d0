//! [`P2cPeakEwma`]: a reference model of Finagle's / linkerd's power of two
//! choices over a peak EWMA of latency, with Finagle's failure accrual.
//!
//! Written from public documentation and the published reference code:
//! - Finagle's user guide, "Clients" (`doc/src/sphinx/Clients.rst`): P2C
//!   picks two nodes at random and takes the less loaded; `maxEffort` (5) is
//!   how many times it picks again when the chosen node is marked
//!   unavailable, after which the request goes to the last pick; Peak EWMA's
//!   `decayTime` defaults to 10 s; failure accrual's default policy marks an
//!   endpoint dead after 5 consecutive failures, for durations from an equal
//!   jittered backoff.
//! - Finagle's `PeakEwma` (cost: a peak-sensitive EWMA of round-trip times,
//!   weighted by the time between observations, decaying toward 0 as it is
//!   read; load = cost * (pending + 1)), `P2CPick` (two distinct nodes; the
//!   healthier, or if equally healthy the less loaded), `FailureAccrualFactory`
//!   (Alive -> Dead -> ProbeOpen -> ProbeClosed: after the dead time one
//!   request is let through; its success revives the node and resets the
//!   backoff, its failure marks it dead for the next backoff) and
//!   `Backoff.equalJittered(5 s, 300 s)` (5 s, then `d + uniform(0, d)` with
//!   `d = 5 s * 2^(k-1)`, capped at 300 s).
//! - tower's and linkerd2-proxy's Peak-EWMA (the same algorithm, derived
//!   from Finagle): a node with no latency observed yet starts from a
//!   default RTT, 30 ms in linkerd2-proxy, with a 10 s decay.

use std::collections::HashMap;
use std::time::Duration;

use lars_lb::HostAddr;

use crate::balancer::{Balancer, CallResult, Pick};
use crate::rng::Rng;

/// The knobs of the model, defaulting to the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct P2cConfig {
    /// Peak EWMA decay time (10 s).
    pub decay: Duration,
    /// The cost of a node before any latency is observed (30 ms, linkerd's
    /// default RTT).
    pub default_rtt_ms: f64,
    /// Picks tried while the chosen node is unavailable (5).
    pub max_effort: u32,
    /// Consecutive failures that mark a node dead (5).
    pub consecutive_failures: u32,
    /// The first dead time (5 s).
    pub backoff_start: Duration,
    /// The longest dead time (300 s).
    pub backoff_max: Duration,
}

impl Default for P2cConfig {
    fn default() -> Self {
        Self {
            decay: Duration::from_secs(10),
            default_rtt_ms: 30.0,
            max_effort: 5,
            consecutive_failures: 5,
            backoff_start: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Accrual {
    /// Available.
    Alive,
    /// Unavailable until `until`; from then on, open for one probe.
    Dead { until: Duration },
    /// The probe is out; unavailable until its result.
    ProbeClosed,
}

#[derive(Debug, Clone)]
struct Node {
    addr: HostAddr,
    cost_ms: f64,
    stamp: Duration,
    pending: u32,
    accrual: Accrual,
    consecutive: u32,
    /// Next index into the backoff stream.
    attempt: u32,
}

/// Power of two choices over peak EWMA with failure accrual (see the module
/// doc for the documents modelled). A node is in rotation while its failure
/// accrual state is Alive.
#[derive(Debug)]
pub struct P2cPeakEwma {
    cfg: P2cConfig,
    nodes: Vec<Node>,
    index: HashMap<HostAddr, usize>,
    rng: Rng,
}

impl P2cPeakEwma {
    /// A model with `cfg`, its random choices seeded by `seed`.
    pub fn new(cfg: P2cConfig, seed: u64) -> Self {
        Self {
            cfg,
            nodes: Vec::new(),
            index: HashMap::new(),
            rng: Rng::new(seed ^ 0x5032_435f_4557_4d41),
        }
    }

    /// The load of `host` at `now` (for tests): cost * (pending + 1).
    pub fn load(&mut self, host: HostAddr, now: Duration) -> Option<f64> {
        let i = *self.index.get(&host)?;
        Some(self.load_of(i, now))
    }

    fn tau(&self) -> f64 {
        self.cfg.decay.as_secs_f64().max(1e-9)
    }

    /// Folds an observed round-trip time into the cost: a peak replaces it,
    /// a lower value pulls it down with weight `1 - exp(-elapsed / decay)`.
    fn observe(&mut self, i: usize, rtt_ms: f64, now: Duration) {
        let tau = self.tau();
        let n = &mut self.nodes[i];
        let td = now.saturating_sub(n.stamp).as_secs_f64();
        let w = (-td / tau).exp();
        if rtt_ms > n.cost_ms {
            n.cost_ms = rtt_ms;
        } else {
            n.cost_ms = n.cost_ms * w + rtt_ms * (1.0 - w);
        }
        n.stamp = n.stamp.max(now);
    }

    fn load_of(&mut self, i: usize, now: Duration) -> f64 {
        // Reading decays the cost toward 0 (an observation of 0).
        self.observe(i, 0.0, now);
        let n = &self.nodes[i];
        n.cost_ms * f64::from(n.pending + 1)
    }

    fn open(&self, i: usize, now: Duration) -> bool {
        match self.nodes[i].accrual {
            Accrual::Alive => true,
            Accrual::Dead { until } => now >= until,
            Accrual::ProbeClosed => false,
        }
    }

    fn next_backoff(&mut self, i: usize) -> Duration {
        let k = self.nodes[i].attempt;
        self.nodes[i].attempt = k.saturating_add(1);
        let start = self.cfg.backoff_start;
        if k == 0 {
            return start.min(self.cfg.backoff_max);
        }
        let half = start.saturating_mul(1u32 << (k - 1).min(20));
        let jitter = half.mul_f64(self.rng.unit());
        (half + jitter).min(self.cfg.backoff_max)
    }

    fn pick_once(&mut self, now: Duration) -> usize {
        let n = self.nodes.len();
        let a = self.rng.below(n);
        let mut b = self.rng.below(n - 1);
        if b >= a {
            b += 1;
        }
        let (oa, ob) = (self.open(a, now), self.open(b, now));
        if oa == ob {
            if self.load_of(a, now) < self.load_of(b, now) {
                a
            } else {
                b
            }
        } else if oa {
            a
        } else {
            b
        }
    }
}

impl Balancer for P2cPeakEwma {
    fn name(&self) -> &str {
        "p2c"
    }

    fn update(&mut self, hosts: &[HostAddr], now: Duration) {
        let mut old: HashMap<HostAddr, Node> = self.nodes.drain(..).map(|n| (n.addr, n)).collect();
        let mut seen = std::collections::HashSet::new();
        for &a in hosts {
            if seen.insert(a) {
                let node = old.remove(&a).unwrap_or(Node {
                    addr: a,
                    cost_ms: self.cfg.default_rtt_ms,
                    stamp: now,
                    pending: 0,
                    accrual: Accrual::Alive,
                    consecutive: 0,
                    attempt: 0,
                });
                self.nodes.push(node);
            }
        }
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.addr, i))
            .collect();
    }

    fn pick(&mut self, now: Duration) -> Pick {
        let i = match self.nodes.len() {
            0 => return Pick::NONE,
            1 => 0,
            _ => {
                let mut i = self.pick_once(now);
                for _ in 1..self.cfg.max_effort.max(1) {
                    if self.open(i, now) {
                        break;
                    }
                    i = self.pick_once(now);
                }
                i
            }
        };
        let probe = matches!(self.nodes[i].accrual, Accrual::Dead { until } if now >= until);
        let n = &mut self.nodes[i];
        n.pending += 1;
        if probe {
            n.accrual = Accrual::ProbeClosed;
        }
        Pick {
            host: Some(n.addr),
            probe,
        }
    }

    fn report(&mut self, host: HostAddr, result: CallResult, now: Duration) {
        let Some(&i) = self.index.get(&host) else {
            return;
        };
        self.nodes[i].pending = self.nodes[i].pending.saturating_sub(1);
        self.observe(i, result.latency_ms, now);
        let state = self.nodes[i].accrual;
        if result.ok {
            let n = &mut self.nodes[i];
            if state == Accrual::ProbeClosed {
                n.accrual = Accrual::Alive;
                n.attempt = 0;
            }
            n.consecutive = 0;
            return;
        }
        if matches!(state, Accrual::Alive | Accrual::ProbeClosed) {
            let n = &mut self.nodes[i];
            n.consecutive = n.consecutive.saturating_add(1);
            if n.consecutive >= self.cfg.consecutive_failures {
                let d = self.next_backoff(i);
                self.nodes[i].accrual = Accrual::Dead { until: now + d };
            }
        }
    }

    fn in_rotation(&self, host: HostAddr) -> bool {
        self.index
            .get(&host)
            .is_some_and(|&i| self.nodes[i].accrual == Accrual::Alive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: u32) -> Vec<HostAddr> {
        (1..=n).map(|i| HostAddr::new(i, 80)).collect()
    }

    fn res(ok: bool, ms: f64) -> CallResult {
        CallResult { ok, latency_ms: ms }
    }

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn peak_ewma_jumps_to_peaks_and_decays() {
        let hs = hosts(2);
        let mut p = P2cPeakEwma::new(P2cConfig::default(), 1);
        p.update(&hs, Duration::ZERO);
        // No data: the default RTT.
        assert_eq!(p.load(hs[0], Duration::ZERO), Some(30.0));
        p.report(hs[0], res(true, 100.0), Duration::ZERO);
        assert_eq!(p.load(hs[0], Duration::ZERO), Some(100.0));
        // One decay time later, e^-1 of it.
        let l = p.load(hs[0], s(10.0)).unwrap();
        assert!((l - 100.0 / std::f64::consts::E).abs() < 1e-9, "{l}");
        // Pending calls multiply the cost.
        p.nodes[0].pending = 2;
        let l2 = p.load(hs[0], s(10.0)).unwrap();
        assert!((l2 - 3.0 * l).abs() < 1e-9);
    }

    #[test]
    fn the_faster_host_wins_most_picks() {
        let hs = hosts(2);
        let mut p = P2cPeakEwma::new(P2cConfig::default(), 1);
        p.update(&hs, Duration::ZERO);
        p.report(hs[0], res(true, 5.0), Duration::ZERO);
        p.report(hs[1], res(true, 50.0), Duration::ZERO);
        // With two hosts both are always compared: the cheaper one wins.
        let picks = p.pick(s(0.001));
        assert_eq!(picks.host, Some(hs[0]));
    }

    #[test]
    fn failure_accrual_marks_dead_probes_and_backs_off() {
        let hs = hosts(2);
        let mut p = P2cPeakEwma::new(P2cConfig::default(), 3);
        p.update(&hs, Duration::ZERO);
        for _ in 0..4 {
            p.report(hs[0], res(false, 5.0), s(1.0));
        }
        assert!(p.in_rotation(hs[0]));
        p.report(hs[0], res(false, 5.0), s(1.0));
        assert!(!p.in_rotation(hs[0]));
        assert_eq!(p.nodes[0].accrual, Accrual::Dead { until: s(6.0) });
        // Dead: every pick goes to the other host.
        assert!((0..20).all(|_| p.pick(s(2.0)).host == Some(hs[1])));
        // Once the dead time is over the node is open for one probe; make
        // host 1 look expensive so the probe is picked.
        p.nodes[1].cost_ms = 1e9;
        let pick = p.pick(s(6.0));
        assert_eq!(
            pick,
            Pick {
                host: Some(hs[0]),
                probe: true
            }
        );
        assert!(!p.in_rotation(hs[0]));
        // The probe fails: dead again for the next backoff, in [5 s, 10 s).
        p.report(hs[0], res(false, 5.0), s(6.0));
        let Accrual::Dead { until } = p.nodes[0].accrual else {
            panic!("{:?}", p.nodes[0].accrual)
        };
        assert!(until >= s(11.0) && until < s(16.0), "{until:?}");
        // The next probe succeeds: alive, backoff reset.
        let pick = p.pick(until);
        assert!(pick.probe);
        p.report(hs[0], res(true, 5.0), until);
        assert!(p.in_rotation(hs[0]));
        assert_eq!(p.nodes[0].attempt, 0);
    }

    #[test]
    fn equal_jittered_backoff_grows_to_its_cap() {
        let hs = hosts(1);
        let mut p = P2cPeakEwma::new(P2cConfig::default(), 9);
        p.update(&hs, Duration::ZERO);
        let ds: Vec<Duration> = (0..10).map(|_| p.next_backoff(0)).collect();
        assert_eq!(ds[0], s(5.0));
        for (k, d) in ds.iter().enumerate().skip(1) {
            let half = 5.0 * f64::from(1u32 << (k - 1));
            assert!(
                d.as_secs_f64() >= half.min(300.0) && d.as_secs_f64() < (2.0 * half).min(300.0001)
            );
        }
        assert_eq!(ds[9], s(300.0));
    }
}
