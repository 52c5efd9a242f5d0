//! [`Balancer`]: what the simulator drives, and its implementations for
//! plain round robin and for the real [`lars_lb::LoadBalance`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use lars_lb::{Choice, HostAddr, HostState, LbConfig, LoadBalance, ModKey, Outcome, Policy};

use crate::envoy::EnvoyOutlier;
use crate::p2c::P2cPeakEwma;
use crate::scenario::SimError;

/// The answer of [`Balancer::pick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// The host to call; `None` rejects the call (it counts as failed).
    pub host: Option<HostAddr>,
    /// Whether this pick is a probe of a host out of rotation.
    pub probe: bool,
}

impl Pick {
    /// A regular pick of `host`.
    pub const fn to(host: HostAddr) -> Self {
        Self {
            host: Some(host),
            probe: false,
        }
    }

    /// No host.
    pub const NONE: Self = Self {
        host: None,
        probe: false,
    };
}

/// The result of one call, as the balancer learns it when the call
/// completes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallResult {
    /// Whether the call succeeded.
    pub ok: bool,
    /// How long it took, in milliseconds (a failure's timecost).
    pub latency_ms: f64,
}

/// A load balancer under simulation. Time is virtual: a [`Duration`] since
/// the start of the run, never going back.
///
/// The simulator calls [`update`](Self::update) with the route, then for each
/// call: delivers the reports due ([`report`](Self::report), in completion
/// order), handles the timers due ([`handle_timeout`](Self::handle_timeout)
/// at [`next_deadline`](Self::next_deadline)), and asks for a host
/// ([`pick`](Self::pick)). After each of these it reads
/// [`in_rotation`](Self::in_rotation) for every routed host.
pub trait Balancer {
    /// The name in tables.
    fn name(&self) -> &str;
    /// Replaces the route: new hosts join, missing hosts leave, the others
    /// keep their state.
    fn update(&mut self, hosts: &[HostAddr], now: Duration);
    /// Picks a host for a call made at `now`.
    fn pick(&mut self, now: Duration) -> Pick;
    /// The result of a call to `host`, delivered when the call completes.
    fn report(&mut self, host: HostAddr, result: CallResult, now: Duration);
    /// Whether `host` is in rotation (picked normally) rather than out of it
    /// (ejected, overloaded, dead: at most probed).
    fn in_rotation(&self, host: HostAddr) -> bool;
    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    fn next_deadline(&self) -> Option<Duration> {
        None
    }
    /// Runs the timers due at `now`.
    fn handle_timeout(&mut self, _now: Duration) {}
}

/// The balancers `lars sim --policy` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BalancerKind {
    /// Plain round robin over the route, no health at all.
    Rr,
    /// The real `LoadBalance` with `policy = classic` (the original Lars rules).
    Classic,
    /// The real `LoadBalance` with `policy = adaptive`.
    Adaptive,
    /// A model of Envoy's outlier detection with its documented defaults,
    /// round robin over the hosts not ejected ([`EnvoyOutlier`]).
    Envoy,
    /// A model of Finagle/linkerd's power of two choices over a peak EWMA of
    /// latency, with Finagle's failure accrual ([`P2cPeakEwma`]).
    P2c,
}

impl BalancerKind {
    /// All five, in table order.
    pub const ALL: [Self; 5] = [
        Self::Rr,
        Self::Classic,
        Self::Adaptive,
        Self::Envoy,
        Self::P2c,
    ];

    /// The name `--policy` takes.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Classic => "classic",
            Self::Adaptive => "adaptive",
            Self::Envoy => "envoy",
            Self::P2c => "p2c",
        }
    }

    /// A fresh balancer of this kind. `lb` is the `[loadbalance]` section for
    /// `classic` and `adaptive` (its `policy` is overridden); `seed` seeds
    /// the models' randomness; `epoch` is the real instant virtual time 0
    /// maps to (`LoadBalance` takes `Instant`s; nothing reads the clock).
    pub fn build(self, lb: &LbConfig, seed: u64, epoch: Instant) -> Box<dyn Balancer> {
        match self {
            Self::Rr => Box::new(RoundRobin::new()),
            Self::Classic => Box::new(LarsBalancer::new(
                LbConfig {
                    policy: Policy::Classic,
                    ..lb.clone()
                },
                epoch,
            )),
            Self::Adaptive => Box::new(LarsBalancer::new(
                LbConfig {
                    policy: Policy::Adaptive,
                    ..lb.clone()
                },
                epoch,
            )),
            Self::Envoy => Box::new(EnvoyOutlier::new(Default::default())),
            Self::P2c => Box::new(P2cPeakEwma::new(Default::default(), seed)),
        }
    }
}

impl fmt::Display for BalancerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BalancerKind {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.name() == t)
            .ok_or_else(|| SimError::UnknownPolicy { name: s.to_owned() })
    }
}

/// Plain round robin over the route: the baseline with no notion of health.
#[derive(Debug, Default)]
pub struct RoundRobin {
    hosts: Vec<HostAddr>,
    next: usize,
}

impl RoundRobin {
    /// An empty round robin.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for RoundRobin {
    fn name(&self) -> &str {
        "rr"
    }

    fn update(&mut self, hosts: &[HostAddr], _now: Duration) {
        self.hosts = hosts.to_vec();
    }

    fn pick(&mut self, _now: Duration) -> Pick {
        if self.hosts.is_empty() {
            return Pick::NONE;
        }
        let h = self.hosts[self.next % self.hosts.len()];
        self.next = self.next.wrapping_add(1);
        Pick::to(h)
    }

    fn report(&mut self, _host: HostAddr, _result: CallResult, _now: Duration) {}

    fn in_rotation(&self, _host: HostAddr) -> bool {
        true
    }
}

/// The real [`LoadBalance`] behind the [`Balancer`] trait: virtual time is
/// `epoch + now`, a success is reported as
/// [`Outcome::SuccessIn`] with its latency, a failure as
/// [`Outcome::Failure`] with its timecost, and a host is in rotation while
/// its state is [`HostState::Idle`].
#[derive(Debug)]
pub struct LarsBalancer {
    lb: LoadBalance,
    epoch: Instant,
    name: &'static str,
}

impl LarsBalancer {
    /// A balancer with `config` (its `policy` decides classic or adaptive).
    pub fn new(config: LbConfig, epoch: Instant) -> Self {
        let name = match config.policy {
            Policy::Classic => "classic",
            Policy::Adaptive => "adaptive",
        };
        let mut lb = LoadBalance::new(ModKey::new(1, 1), config);
        lb.set_event_capacity(0);
        Self { lb, epoch, name }
    }

    /// The balancer itself, to inspect.
    pub fn inner(&self) -> &LoadBalance {
        &self.lb
    }

    fn at(&self, now: Duration) -> Instant {
        self.epoch + now
    }
}

/// Milliseconds as the wire carries them: rounded, at least 1 (0 would mean
/// "unknown").
fn wire_ms(ms: f64) -> u32 {
    ms.round().clamp(1.0, f64::from(u32::MAX)) as u32
}

impl Balancer for LarsBalancer {
    fn name(&self) -> &str {
        self.name
    }

    fn update(&mut self, hosts: &[HostAddr], now: Duration) {
        self.lb.update(hosts, self.at(now));
    }

    fn pick(&mut self, now: Duration) -> Pick {
        match self.lb.choice_one_host(self.at(now)) {
            Choice::Idle(h) => Pick::to(h),
            Choice::Probe(h) => Pick {
                host: Some(h),
                probe: true,
            },
            Choice::Overload | Choice::NoExist => Pick::NONE,
        }
    }

    fn report(&mut self, host: HostAddr, result: CallResult, now: Duration) {
        let outcome = if result.ok {
            Outcome::SuccessIn {
                latency_ms: wire_ms(result.latency_ms),
            }
        } else {
            Outcome::Failure {
                timecost_ms: wire_ms(result.latency_ms),
            }
        };
        self.lb.report(host, outcome, self.at(now));
    }

    fn in_rotation(&self, host: HostAddr) -> bool {
        self.lb
            .host(host)
            .is_some_and(|v| v.state == HostState::Idle)
    }

    fn next_deadline(&self) -> Option<Duration> {
        self.lb
            .next_deadline()
            .map(|d| d.saturating_duration_since(self.epoch))
    }

    fn handle_timeout(&mut self, now: Duration) {
        self.lb.handle_timeout(self.at(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for k in BalancerKind::ALL {
            assert_eq!(k.name().parse::<BalancerKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!(" P2C ".parse::<BalancerKind>().unwrap(), BalancerKind::P2c);
        assert!(matches!(
            "random".parse::<BalancerKind>(),
            Err(SimError::UnknownPolicy { .. })
        ));
    }

    #[test]
    fn round_robin_cycles() {
        let hs: Vec<HostAddr> = (1..=3).map(|i| HostAddr::new(i, 80)).collect();
        let mut rr = RoundRobin::new();
        assert_eq!(rr.pick(Duration::ZERO), Pick::NONE);
        rr.update(&hs, Duration::ZERO);
        let got: Vec<_> = (0..6)
            .map(|_| rr.pick(Duration::ZERO).host.unwrap())
            .collect();
        assert_eq!(got, [hs[0], hs[1], hs[2], hs[0], hs[1], hs[2]]);
    }

    #[test]
    fn wire_ms_is_never_zero() {
        assert_eq!(wire_ms(0.2), 1);
        assert_eq!(wire_ms(4.6), 5);
        assert_eq!(wire_ms(f64::INFINITY), u32::MAX);
    }
}
