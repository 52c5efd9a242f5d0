//! [`Balancer`]: what the simulator drives, and its implementations for
//! plain round robin and for the real [`lars_lb::LoadBalance`].

use std::time::{Duration, Instant};

use lars_lb::{Choice, HostAddr, HostState, LbConfig, LoadBalance, ModKey, Outcome, Policy};

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
