//! [`run`]: one scenario, one balancer, one or more seeds: simulate, measure,
//! and keep the share series for a plot.

use std::time::{Duration, Instant};

use lars_lb::LbConfig;

use crate::balancer::Balancer;
use crate::engine::simulate;
use crate::kind::BalancerKind;
use crate::metrics::{Metrics, measure};
use crate::plot::ShareSeries;
use crate::scenario::Scenario;

/// How runs are made and measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// The `[loadbalance]` section for `classic` and `adaptive` (their
    /// `policy` key is overridden by the balancer kind).
    pub lb: LbConfig,
    /// The sliding window of the full-share test (1 s).
    pub share_window: Duration,
    /// Keep a share series for a plot: `(bucket, until)`; see
    /// [`ShareSeries::auto_range`].
    pub plot: Option<(Duration, Duration)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            lb: LbConfig::default(),
            share_window: Duration::from_secs(1),
            plot: None,
        }
    }
}

/// What [`run`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// The metrics, averaged over the seeds.
    pub metrics: Metrics,
    /// The share series of the first seed's run, when asked for.
    pub series: Option<ShareSeries>,
}

/// Runs `scenario` against a balancer you built (any [`Balancer`]) with
/// backend seed `seed`, and measures it.
pub fn run_balancer(
    scenario: &Scenario,
    balancer: &mut dyn Balancer,
    seed: u64,
    opts: &RunOptions,
) -> RunResult {
    let trace = simulate(scenario, balancer, seed);
    let name = balancer.name().to_owned();
    let metrics = measure(scenario, &name, &trace, opts.share_window);
    let series = opts
        .plot
        .map(|(bucket, until)| ShareSeries::from_trace(scenario, &name, &trace, bucket, until));
    RunResult { metrics, series }
}

/// Runs `scenario` against a fresh balancer of `kind` once per seed
/// (`seed`, `seed + 1`, ... `seeds` of them, at least one; the seed drives
/// the backends and the balancer's own randomness) and averages the
/// metrics. `epoch` is the instant virtual time 0 maps to for `LoadBalance`
/// (read the clock once in the caller; lars-sim never does).
pub fn run(
    scenario: &Scenario,
    kind: BalancerKind,
    opts: &RunOptions,
    seed: u64,
    seeds: u32,
    epoch: Instant,
) -> RunResult {
    let mut all = Vec::new();
    let mut series = None;
    for k in 0..u64::from(seeds.max(1)) {
        let s = seed.wrapping_add(k);
        let mut b = kind.build(&opts.lb, s, epoch);
        let r = run_balancer(scenario, b.as_mut(), s, opts);
        if series.is_none() {
            series = r.series;
        }
        all.push(r.metrics);
    }
    // `all` has at least one run.
    let metrics = Metrics::mean(&all).unwrap_or_else(|| unreachable!("seeds >= 1"));
    RunResult { metrics, series }
}
