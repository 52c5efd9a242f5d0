//! [`EnvoyOutlier`]: a reference model of Envoy's outlier detection with its
//! documented defaults, over round robin.
//!
//! Written from Envoy's public documentation, not from its code:
//! - the architecture overview "Outlier detection"
//!   (`docs/root/intro/arch_overview/upstream/outlier.rst`: the ejection
//!   algorithm, consecutive 5xx, success rate);
//! - the API reference `config.cluster.v3.OutlierDetection` (defaults:
//!   `consecutive_5xx` 5, `interval` 10 s "between ejection analysis sweeps.
//!   This can result in both new ejections as well as hosts being returned to
//!   service", `base_ejection_time` 30 s, `max_ejection_time` 300 s,
//!   `max_ejection_percent` 10 "but will eject at least one host regardless
//!   of the value", `success_rate_minimum_hosts` 5,
//!   `success_rate_request_volume` 100, `success_rate_stdev_factor` 1900,
//!   i.e. 1.9; the failure-percentage and gateway-failure detectors are off
//!   by default);
//! - the load-balancing overview "Panic threshold" (`healthy_panic_threshold`
//!   50%: below it, Envoy balances over all hosts, ejected or not).

use std::collections::HashMap;
use std::time::Duration;

use lars_lb::HostAddr;

use crate::balancer::{Balancer, CallResult, Pick};

/// The knobs of the model, defaulting to Envoy's documented defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvoyConfig {
    /// `consecutive_5xx` (5): consecutive failures that eject a host at once.
    pub consecutive_5xx: u32,
    /// `interval` (10 s): the period of the ejection analysis sweep (success
    /// rate detector, returns to service, multiplier decrements).
    pub interval: Duration,
    /// `base_ejection_time` (30 s), multiplied by the host's ejection
    /// multiplier.
    pub base_ejection_time: Duration,
    /// `max_ejection_time` (300 s): the cap of an ejection's length.
    pub max_ejection_time: Duration,
    /// `max_ejection_percent` (10): at most this share of hosts ejected,
    /// except that one host may always be.
    pub max_ejection_percent: u32,
    /// `success_rate_minimum_hosts` (5): hosts with enough volume needed for
    /// the success-rate detector to run.
    pub success_rate_minimum_hosts: usize,
    /// `success_rate_request_volume` (100): requests in the interval for a
    /// host to count in the success-rate detector.
    pub success_rate_request_volume: u64,
    /// `success_rate_stdev_factor` (1900 / 1000 = 1.9): a host whose success
    /// rate is below `mean - factor * stdev` is ejected.
    pub success_rate_stdev_factor: f64,
    /// `healthy_panic_threshold` (50%): with fewer healthy hosts than this,
    /// route over all hosts.
    pub healthy_panic_threshold: f64,
}

impl Default for EnvoyConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1.9,
            healthy_panic_threshold: 50.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Host {
    addr: HostAddr,
    /// When its current ejection started.
    ejected_at: Option<Duration>,
    /// The ejection multiplier: +1 per ejection (until the ejection time
    /// reaches `max_ejection_time`), -1 per sweep that finds the host in
    /// service.
    multiplier: u32,
    consecutive: u32,
    /// Results in the current interval, for the success-rate detector.
    ok: u64,
    total: u64,
}

impl Host {
    fn new(addr: HostAddr) -> Self {
        Self {
            addr,
            ejected_at: None,
            multiplier: 0,
            consecutive: 0,
            ok: 0,
            total: 0,
        }
    }
}

/// Envoy's outlier detection over round robin (see the module doc for the
/// documents modelled).
///
/// - Consecutive 5xx: the `consecutive_5xx`-th consecutive failure ejects
///   the host at once (and restarts the count, ejected or not). Results of a
///   host while ejected do not count toward it.
/// - Every `interval` (from the start of the run) a sweep: ejected hosts
///   whose ejection time (`base_ejection_time` times the multiplier, capped
///   at `max_ejection_time`) has passed return to service, unconditionally;
///   hosts found in service have their multiplier decremented; then the
///   success-rate detector compares the interval's success rates of the hosts
///   with at least `success_rate_request_volume` results (when at least
///   `success_rate_minimum_hosts` have) and ejects those below
///   `mean - stdev_factor * stdev` (population standard deviation).
/// - An ejection is allowed while `(ejected + 1) / hosts <=
///   max_ejection_percent`, and always when no host is ejected.
/// - Picks: round robin over the hosts in service; when fewer than
///   `healthy_panic_threshold` percent are, round robin over all hosts.
#[derive(Debug)]
pub struct EnvoyOutlier {
    cfg: EnvoyConfig,
    hosts: Vec<Host>,
    index: HashMap<HostAddr, usize>,
    healthy: Vec<usize>,
    rr: usize,
    next_sweep: Duration,
}

impl EnvoyOutlier {
    /// A model with `cfg` (use `Default::default()` for Envoy's defaults).
    pub fn new(cfg: EnvoyConfig) -> Self {
        Self {
            cfg,
            hosts: Vec::new(),
            index: HashMap::new(),
            healthy: Vec::new(),
            rr: 0,
            next_sweep: cfg.interval.max(Duration::from_millis(1)),
        }
    }

    /// The ejection multiplier of `host` (for tests and curious readers).
    pub fn multiplier(&self, host: HostAddr) -> Option<u32> {
        self.index.get(&host).map(|&i| self.hosts[i].multiplier)
    }

    fn refresh(&mut self) {
        self.index = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.addr, i))
            .collect();
        self.healthy = (0..self.hosts.len())
            .filter(|&i| self.hosts[i].ejected_at.is_none())
            .collect();
    }

    fn ejection_time(&self, multiplier: u32) -> Duration {
        self.cfg
            .base_ejection_time
            .saturating_mul(multiplier)
            .min(self.cfg.max_ejection_time)
    }

    fn try_eject(&mut self, i: usize, now: Duration) {
        if self.hosts[i].ejected_at.is_some() {
            return;
        }
        let total = self.hosts.len();
        let active = self.hosts.iter().filter(|h| h.ejected_at.is_some()).count();
        let pct = 100.0 * (active + 1) as f64 / total as f64;
        if active > 0 && pct > f64::from(self.cfg.max_ejection_percent) {
            return;
        }
        let grow = self
            .cfg
            .base_ejection_time
            .saturating_mul(self.hosts[i].multiplier)
            < self.cfg.max_ejection_time;
        let h = &mut self.hosts[i];
        h.ejected_at = Some(now);
        if grow {
            h.multiplier += 1;
        }
        self.refresh();
    }

    fn sweep(&mut self, now: Duration) {
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            match h.ejected_at {
                None => {
                    let h = &mut self.hosts[i];
                    h.multiplier = h.multiplier.saturating_sub(1);
                }
                Some(at) => {
                    if now.saturating_sub(at) >= self.ejection_time(h.multiplier) {
                        let h = &mut self.hosts[i];
                        h.ejected_at = None;
                        h.consecutive = 0;
                    }
                }
            }
        }
        self.refresh();
        let rates: Vec<(usize, f64)> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.total >= self.cfg.success_rate_request_volume && h.total > 0)
            .map(|(i, h)| (i, 100.0 * h.ok as f64 / h.total as f64))
            .collect();
        if !rates.is_empty() && rates.len() >= self.cfg.success_rate_minimum_hosts {
            let n = rates.len() as f64;
            let mean = rates.iter().map(|r| r.1).sum::<f64>() / n;
            let var = rates.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n;
            let threshold = mean - self.cfg.success_rate_stdev_factor * var.sqrt();
            for (i, rate) in rates {
                if rate < threshold {
                    self.try_eject(i, now);
                }
            }
        }
        for h in &mut self.hosts {
            h.ok = 0;
            h.total = 0;
        }
    }
}

impl Balancer for EnvoyOutlier {
    fn name(&self) -> &str {
        "envoy"
    }

    fn update(&mut self, hosts: &[HostAddr], _now: Duration) {
        let mut old: HashMap<HostAddr, Host> = self.hosts.drain(..).map(|h| (h.addr, h)).collect();
        let mut seen = std::collections::HashSet::new();
        for &a in hosts {
            if seen.insert(a) {
                let h = old.remove(&a).unwrap_or_else(|| Host::new(a));
                self.hosts.push(h);
            }
        }
        self.refresh();
    }

    fn pick(&mut self, _now: Duration) -> Pick {
        let total = self.hosts.len();
        if total == 0 {
            return Pick::NONE;
        }
        let healthy_pct = 100.0 * self.healthy.len() as f64 / total as f64;
        let i = if healthy_pct < self.cfg.healthy_panic_threshold || self.healthy.is_empty() {
            self.rr % total
        } else {
            self.healthy[self.rr % self.healthy.len()]
        };
        self.rr = self.rr.wrapping_add(1);
        Pick::to(self.hosts[i].addr)
    }

    fn report(&mut self, host: HostAddr, result: CallResult, now: Duration) {
        let Some(&i) = self.index.get(&host) else {
            return;
        };
        let h = &mut self.hosts[i];
        h.total += 1;
        if result.ok {
            h.ok += 1;
        }
        if h.ejected_at.is_some() {
            return;
        }
        if result.ok {
            h.consecutive = 0;
            return;
        }
        h.consecutive += 1;
        if h.consecutive >= self.cfg.consecutive_5xx {
            h.consecutive = 0;
            self.try_eject(i, now);
        }
    }

    fn in_rotation(&self, host: HostAddr) -> bool {
        self.index
            .get(&host)
            .is_some_and(|&i| self.hosts[i].ejected_at.is_none())
    }

    fn next_deadline(&self) -> Option<Duration> {
        Some(self.next_sweep)
    }

    fn handle_timeout(&mut self, now: Duration) {
        while self.next_sweep <= now {
            let at = self.next_sweep;
            self.sweep(at);
            self.next_sweep = at + self.cfg.interval.max(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: u32) -> Vec<HostAddr> {
        (1..=n).map(|i| HostAddr::new(i, 80)).collect()
    }

    const FAIL: CallResult = CallResult {
        ok: false,
        latency_ms: 5.0,
    };
    const OK: CallResult = CallResult {
        ok: true,
        latency_ms: 5.0,
    };

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn five_consecutive_failures_eject_for_the_base_time_then_the_sweep_returns_it() {
        let hs = hosts(10);
        let mut e = EnvoyOutlier::new(EnvoyConfig::default());
        e.update(&hs, Duration::ZERO);
        for _ in 0..4 {
            e.report(hs[0], FAIL, s(1));
        }
        assert!(e.in_rotation(hs[0]));
        e.report(hs[0], FAIL, s(1));
        assert!(!e.in_rotation(hs[0]));
        assert_eq!(e.multiplier(hs[0]), Some(1));
        // Round robin skips it.
        assert!((0..18).all(|_| e.pick(s(2)).host != Some(hs[0])));
        // Ejected at 1 s for 30 s: back at the first sweep at or after 31 s.
        e.handle_timeout(s(30));
        assert!(!e.in_rotation(hs[0]));
        e.handle_timeout(s(40));
        assert!(e.in_rotation(hs[0]));
        // Found in service by the next sweep: multiplier back to 0.
        e.handle_timeout(s(50));
        assert_eq!(e.multiplier(hs[0]), Some(0));
    }

    #[test]
    fn the_multiplier_grows_per_ejection_up_to_the_max_time() {
        let hs = hosts(10);
        let mut e = EnvoyOutlier::new(EnvoyConfig::default());
        e.update(&hs, Duration::ZERO);
        let mut t = 0;
        for round in 1..=12u32 {
            for _ in 0..5 {
                e.report(hs[0], FAIL, s(t));
            }
            assert!(!e.in_rotation(hs[0]));
            assert_eq!(e.multiplier(hs[0]), Some(round.min(10)));
            // Wait in sweeps until it is back.
            while !e.in_rotation(hs[0]) {
                t += 10;
                e.handle_timeout(s(t));
            }
        }
    }

    #[test]
    fn at_most_ten_percent_but_always_one() {
        let hs = hosts(10);
        let mut e = EnvoyOutlier::new(EnvoyConfig::default());
        e.update(&hs, Duration::ZERO);
        for h in &hs[..3] {
            for _ in 0..5 {
                e.report(*h, FAIL, s(1));
            }
        }
        let out = hs.iter().filter(|h| !e.in_rotation(**h)).count();
        assert_eq!(out, 1);
        // With 3 hosts 10% is less than one host: one is still ejected.
        let mut e = EnvoyOutlier::new(EnvoyConfig::default());
        e.update(&hs[..3], Duration::ZERO);
        for _ in 0..5 {
            e.report(hs[1], FAIL, s(1));
        }
        assert!(!e.in_rotation(hs[1]));
    }

    #[test]
    fn the_success_rate_detector_ejects_an_outlier_with_volume() {
        let hs = hosts(10);
        let mut e = EnvoyOutlier::new(EnvoyConfig::default());
        e.update(&hs, Duration::ZERO);
        for (i, h) in hs.iter().enumerate() {
            for k in 0..100 {
                // Host 0 fails every other call (never 5 in a row); the
                // others one call in 50.
                let fail = if i == 0 { k % 2 == 0 } else { k % 50 == 0 };
                e.report(*h, if fail { FAIL } else { OK }, s(5));
            }
        }
        assert!(e.in_rotation(hs[0]));
        e.handle_timeout(s(10));
        assert!(!e.in_rotation(hs[0]));
        assert!(hs[1..].iter().all(|h| e.in_rotation(*h)));
        // Below the volume nothing is judged.
        let mut e = EnvoyOutlier::new(EnvoyConfig::default());
        e.update(&hs, Duration::ZERO);
        for h in &hs {
            for k in 0..99 {
                let fail = *h == hs[0] && k % 2 == 0;
                e.report(*h, if fail { FAIL } else { OK }, s(5));
            }
        }
        e.handle_timeout(s(10));
        assert!(e.in_rotation(hs[0]));
    }

    #[test]
    fn panic_routes_over_all_hosts() {
        let hs = hosts(2);
        let mut e = EnvoyOutlier::new(EnvoyConfig::default());
        e.update(&hs, Duration::ZERO);
        for _ in 0..5 {
            e.report(hs[0], FAIL, s(1));
        }
        assert!(!e.in_rotation(hs[0]));
        // 1 of 2 healthy is 50%: not below the threshold.
        assert!((0..4).all(|_| e.pick(s(1)).host == Some(hs[1])));
        let hs = hosts(3);
        let mut e = EnvoyOutlier::new(EnvoyConfig {
            max_ejection_percent: 100,
            ..EnvoyConfig::default()
        });
        e.update(&hs, Duration::ZERO);
        for h in &hs[..2] {
            for _ in 0..5 {
                e.report(*h, FAIL, s(1));
            }
        }
        let picked: std::collections::HashSet<_> =
            (0..3).filter_map(|_| e.pick(s(1)).host).collect();
        assert_eq!(picked.len(), 3);
    }
}
