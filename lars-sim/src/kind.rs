//! [`BalancerKind`]: the balancers `lars sim --policy` names, and how each
//! is built.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use lars_lb::{LbConfig, Policy};

use crate::balancer::{Balancer, LarsBalancer, RoundRobin};
use crate::envoy::EnvoyOutlier;
use crate::p2c::P2cPeakEwma;
use crate::scenario::SimError;

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
}
