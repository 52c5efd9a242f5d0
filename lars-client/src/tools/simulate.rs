//! The original `simulator`: call a service `count` times through the agent,
//! fail each call with probability `err_rate / 10`, report every outcome, and
//! tally the answers per host.
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

use crate::{ApiError, LarsClient, Outcome};

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
    /// Seed of the failure draws, so a run can be repeated.
    pub seed: u64,
    /// Consecutive queries without a host that make it "absent".
    pub absence_threshold: u64,
}

impl SimOptions {
    /// The original's defaults for `(modid, cmdid)`: err_rate 2, 100 queries,
    /// 6 ms apart; seed 0; absence after 20 queries.
    pub fn new(modid: u32, cmdid: u32) -> Self {
        Self {
            modid,
            cmdid,
            err_rate: ErrRate(2),
            count: 100,
            interval: Duration::from_millis(6),
            seed: 0,
            absence_threshold: 20,
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
}

/// Runs the simulation; `on_call(index, result)` sees every query (the host
/// and the outcome reported for it, or the `get_host` error).
pub fn simulate(
    client: &LarsClient,
    opts: &SimOptions,
    mut on_call: impl FnMut(u64, &Result<(SocketAddrV4, Outcome), ApiError>),
) -> SimReport {
    let mut report = SimReport::default();
    let mut rng = SplitMix64(opts.seed);
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
            (host, outcome)
        });
        match &result {
            Ok((host, outcome)) => {
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
                if let Err(e) = client.report(opts.modid, opts.cmdid, *host, *outcome, None) {
                    tracing::warn!(error = %e, "report failed");
                    report.io += 1;
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

/// SplitMix64: a tiny seeded generator, enough to draw call failures.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
    fn draws_follow_the_rate() {
        let mut rng = SplitMix64(42);
        let fails = (0..10_000).filter(|_| rng.next() % 10 < 3).count();
        assert!((2_700..3_300).contains(&fails), "{fails}");
    }
}
