//! The original `simulator` (`lars simulator`): call a service `count` times through the agent,
//! fail each call with probability `err_rate / 10`, report every outcome, and
//! tally the answers per host.
//!
//! Ours: every simulated call also gets a latency, reported as the
//! `timecost` of its report (successes and failures alike), so the agent's
//! latency estimates have something to work on. Nothing is really called:
//! the latency is **drawn**, not measured (and not slept), from a
//! [`LatencyModel`] — lognormal around a median, from a generator seeded by
//! the run's seed, so a run repeats exactly. [`SimReport::latency_ms`] keeps
//! what was reported.
//!
//! Overload is observed **from the client side only**: the agent's own state
//! transitions are logged by the agent. Two signals are reported as
//! [`SimEvent`]s: `get_host` starting / stopping to answer `Overload` (every
//! host overloaded), and a host that is not returned for at least
//! `absence_threshold` consecutive queries (probably overloaded by the agent
//! while others serve, though a long run of picks of other hosts looks the
//! same).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::SocketAddrV4;
use std::time::Duration;

use lars_client::{ApiError, LarsClient, Outcome};

/// A failure probability in tenths: 0 (never fail) to 10 (always fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrRate(u8);

impl ErrRate {
    /// `tenths` out of 10 calls fail; `None` above 10.
    pub const fn new(tenths: u8) -> Option<Self> {
        if tenths <= 10 {
            Some(Self(tenths))
        } else {
            None
        }
    }

    /// The rate in tenths.
    pub const fn tenths(self) -> u8 {
        self.0
    }
}

/// The latency of a simulated call: lognormal, `median * exp(sigma * z)`
/// with `z` standard normal, capped at [`LatencyModel::CAP`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyModel {
    median: Duration,
    sigma: f64,
}

impl LatencyModel {
    /// The longest latency drawn (a large `sigma` cannot overflow).
    pub const CAP: Duration = Duration::from_secs(3600);

    /// Latencies around `median`; `sigma` is the standard deviation of their
    /// logarithm (0: every call takes `median`; 0.5: p99 about 3.2x the
    /// median). `None` unless `sigma` is finite and non-negative.
    pub fn new(median: Duration, sigma: f64) -> Option<Self> {
        (sigma.is_finite() && sigma >= 0.0).then_some(Self { median, sigma })
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.median
    }

    /// The spread (standard deviation of the logarithm).
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    fn draw(&self, rng: &mut SplitMix64) -> Duration {
        if self.sigma == 0.0 {
            return self.median.min(Self::CAP);
        }
        let secs = self.median.as_secs_f64() * (self.sigma * rng.normal()).exp();
        Duration::try_from_secs_f64(secs).map_or(Self::CAP, |d| d.min(Self::CAP))
    }
}

impl Default for LatencyModel {
    /// A 5 ms median with sigma 0.5 (p99 about 16 ms).
    fn default() -> Self {
        Self {
            median: Duration::from_millis(5),
            sigma: 0.5,
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Module id of the service.
    pub modid: u32,
    /// Command id of the service.
    pub cmdid: u32,
    /// Probability that a call fails (the original's default is 2).
    pub err_rate: ErrRate,
    /// Number of `get_host` queries (the original's default is 100).
    pub count: u64,
    /// Pause between queries (the original sleeps 6 ms).
    pub interval: Duration,
    /// Seed of the failure and latency draws, so a run can be repeated.
    pub seed: u64,
    /// Consecutive queries without a host that make it "absent".
    pub absence_threshold: u64,
    /// Ours: the latency reported with every call; `None` reports none
    /// (timecost 0, as the original simulator).
    pub latency: Option<LatencyModel>,
}

impl SimOptions {
    /// The original's defaults for `(modid, cmdid)`: err_rate 2, 100 queries,
    /// 6 ms apart; seed 0; absence after 20 queries; ours: the default
    /// [`LatencyModel`] (5 ms median).
    pub fn new(modid: u32, cmdid: u32) -> Self {
        Self {
            modid,
            cmdid,
            err_rate: ErrRate(2),
            count: 100,
            interval: Duration::from_millis(6),
            seed: 0,
            absence_threshold: 20,
            latency: Some(LatencyModel::default()),
        }
    }
}

/// Calls that went to one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTally {
    /// Calls reported as successes.
    pub succ: u64,
    /// Calls reported as failures.
    pub err: u64,
}

/// One simulated call: the host `get_host` answered, the outcome drawn for
/// it and the latency reported with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimCall {
    /// The host called.
    pub host: SocketAddrV4,
    /// How the call went.
    pub outcome: Outcome,
    /// The latency drawn for the call (`None` when latency is off).
    pub latency: Option<Duration>,
}

/// A change seen from the client side (query indices start at 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    /// `get_host` started answering `Overload` at query `at`.
    OverloadBegan {
        /// Query index.
        at: u64,
    },
    /// `get_host` returned a host again at query `at` after answering
    /// `Overload`.
    OverloadEnded {
        /// Query index.
        at: u64,
    },
    /// `host` was not returned by queries `from..=to` (at least
    /// `absence_threshold` of them) after having been returned before.
    HostAbsent {
        /// The host.
        host: SocketAddrV4,
        /// First query without it.
        from: u64,
        /// Last query without it.
        to: u64,
        /// Whether it was returned again after `to` (false: absent until the
        /// end of the run).
        returned: bool,
    },
}

impl SimEvent {
    fn at(&self) -> u64 {
        match self {
            Self::OverloadBegan { at } | Self::OverloadEnded { at } => *at,
            Self::HostAbsent { from, .. } => *from,
        }
    }
}

/// Everything a simulation observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Calls per host, by address.
    pub hosts: BTreeMap<SocketAddrV4, HostTally>,
    /// `get_host` answers `Overload`.
    pub overload: u64,
    /// `get_host` answers `NoExist`.
    pub noexist: u64,
    /// `get_host` answers `System`.
    pub system: u64,
    /// `get_host` timeouts.
    pub timeout: u64,
    /// Socket errors (of `get_host` or `report`).
    pub io: u64,
    /// Client-side transitions, in query order.
    pub events: Vec<SimEvent>,
    /// Ours: the timecost of every report sent, in wire milliseconds (so a
    /// sub-millisecond latency shows as 1), in call order; empty when
    /// latency is off.
    pub latency_ms: Vec<u32>,
}

impl SimReport {
    /// The `q`-quantile (0..=1, nearest rank) of the reported latencies;
    /// `None` when none was reported.
    pub fn latency_quantile(&self, q: f64) -> Option<u32> {
        let mut v = self.latency_ms.clone();
        v.sort_unstable();
        let last = v.len().checked_sub(1)?;
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        v.get(rank.saturating_sub(1).min(last)).copied()
    }
}

/// Runs the simulation; `on_call(index, result)` sees every query (the
/// call reported for it, or the `get_host` error).
pub fn simulate(
    client: &LarsClient,
    opts: &SimOptions,
    mut on_call: impl FnMut(u64, &Result<SimCall, ApiError>),
) -> SimReport {
    let mut report = SimReport::default();
    let mut rng = SplitMix64(opts.seed);
    // Its own stream, so the failure draws of a seed do not depend on
    // whether latency is on.
    let mut latency_rng = SplitMix64(opts.seed ^ LATENCY_STREAM);
    let mut last_seen: BTreeMap<SocketAddrV4, u64> = BTreeMap::new();
    let mut overloaded = false;
    for i in 0..opts.count {
        if i > 0 && !opts.interval.is_zero() {
            std::thread::sleep(opts.interval);
        }
        let result = client.get_host(opts.modid, opts.cmdid).map(|host| {
            let outcome = if rng.next() % 10 < u64::from(opts.err_rate.0) {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            let latency = opts.latency.map(|m| m.draw(&mut latency_rng));
            SimCall {
                host,
                outcome,
                latency,
            }
        });
        match &result {
            Ok(SimCall {
                host,
                outcome,
                latency,
            }) => {
                if overloaded {
                    overloaded = false;
                    report.events.push(SimEvent::OverloadEnded { at: i });
                }
                match last_seen.entry(*host) {
                    Entry::Occupied(mut e) => {
                        let gap = i - *e.get() - 1;
                        if gap >= opts.absence_threshold.max(1) {
                            report.events.push(SimEvent::HostAbsent {
                                host: *host,
                                from: *e.get() + 1,
                                to: i - 1,
                                returned: true,
                            });
                        }
                        e.insert(i);
                    }
                    Entry::Vacant(e) => {
                        e.insert(i);
                    }
                }
                let tally = report.hosts.entry(*host).or_default();
                match outcome {
                    Outcome::Success => tally.succ += 1,
                    Outcome::Failure => tally.err += 1,
                }
                match client.report(opts.modid, opts.cmdid, *host, *outcome, *latency) {
                    Ok(()) if latency.is_some() => {
                        report.latency_ms.push(lars_client::timecost_ms(*latency));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "report failed");
                        report.io += 1;
                    }
                }
            }
            Err(ApiError::Overload) => {
                report.overload += 1;
                if !overloaded {
                    overloaded = true;
                    report.events.push(SimEvent::OverloadBegan { at: i });
                }
            }
            Err(ApiError::NoExist) => report.noexist += 1,
            Err(ApiError::Timeout) => report.timeout += 1,
            Err(ApiError::Io(_)) => report.io += 1,
            Err(_) => report.system += 1,
        }
        on_call(i, &result);
    }
    for (host, last) in last_seen {
        let gap = opts.count - last - 1;
        if gap >= opts.absence_threshold.max(1) {
            report.events.push(SimEvent::HostAbsent {
                host,
                from: last + 1,
                to: opts.count - 1,
                returned: false,
            });
        }
    }
    report.events.sort_by_key(SimEvent::at);
    report
}

/// Mixed into the seed of the latency draws ("latency!").
const LATENCY_STREAM: u64 = 0x6c61_7465_6e63_7921;

/// SplitMix64: a tiny seeded generator, enough to draw call failures and
/// latencies.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1]`.
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_rate_is_bounded() {
        assert_eq!(ErrRate::new(10).map(ErrRate::tenths), Some(10));
        assert_eq!(ErrRate::new(11), None);
    }

    #[test]
    fn latency_draws_are_lognormal_around_the_median() {
        let m = LatencyModel::new(Duration::from_millis(10), 0.5).unwrap();
        let mut rng = SplitMix64(3);
        let mut v: Vec<Duration> = (0..20_000).map(|_| m.draw(&mut rng)).collect();
        v.sort_unstable();
        let p50 = v[v.len() / 2].as_secs_f64() * 1e3;
        let p99 = v[v.len() * 99 / 100].as_secs_f64() * 1e3;
        // exp(0.5 * 2.326) = 3.20
        assert!((9.5..10.5).contains(&p50), "{p50}");
        assert!((29.0..35.0).contains(&p99), "{p99}");
        let fixed = LatencyModel::new(Duration::from_micros(300), 0.0).unwrap();
        assert_eq!(fixed.draw(&mut rng), Duration::from_micros(300));
        let wild = LatencyModel::new(Duration::from_secs(3000), 50.0).unwrap();
        assert!((0..100).all(|_| wild.draw(&mut rng) <= LatencyModel::CAP));
        assert_eq!(LatencyModel::new(Duration::ZERO, f64::NAN), None);
        assert_eq!(LatencyModel::new(Duration::ZERO, -1.0), None);
    }

    #[test]
    fn latency_quantiles_use_the_nearest_rank() {
        let mut r = SimReport::default();
        assert_eq!(r.latency_quantile(0.5), None);
        r.latency_ms = (1..=100).rev().collect();
        assert_eq!(r.latency_quantile(0.5), Some(50));
        assert_eq!(r.latency_quantile(0.99), Some(99));
        assert_eq!(r.latency_quantile(1.0), Some(100));
        assert_eq!(r.latency_quantile(0.0), Some(1));
    }

    #[test]
    fn draws_follow_the_rate() {
        let mut rng = SplitMix64(42);
        let fails = (0..10_000).filter(|_| rng.next() % 10 < 3).count();
        assert!((2_700..3_300).contains(&fails), "{fails}");
    }
}
