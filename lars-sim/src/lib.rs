//! A what-if simulator for lars: the real [`lars_lb::LoadBalance`] (policies
//! `classic` and `adaptive`), plain round robin and reference models of
//! Envoy's outlier detection and of Finagle/linkerd's P2C peak-EWMA, driven
//! against modelled backends. Deterministic and pure like lars-lb: no I/O,
//! no threads, never reads the clock; time is virtual and a run depends only
//! on its inputs and seed.
//!
//! - [`Scenario`]: the modelled hosts (failure probability, lognormal
//!   latency, an up/down schedule), the route and its updates, the workload;
//!   named ones from a small grammar ([`Scenario::named`]: `dead1`,
//!   `flap1:30/30`, ...) or rebuilt from the reporter's history
//!   ([`Scenario::replay`]).
//! - [`Balancer`]: what is simulated, with [`BalancerKind`] naming the five
//!   built in ([`RoundRobin`], [`LarsBalancer`], [`EnvoyOutlier`],
//!   [`P2cPeakEwma`]).
//! - [`run`] gives a [`RunResult`]: the [`Metrics`] row (failed calls, share
//!   sent to bad hosts, latency, detection and recovery times, probes) and a
//!   [`ShareSeries`] that [`svg`] draws.
//!
//! ```
//! use std::time::Instant;
//! use lars_sim::{BalancerKind, RunOptions, Scenario, Workload, run};
//!
//! // 10 hosts, 100 calls/s, 30 s; host h0 fails every call from t = 10 s.
//! let w = Workload::new(10, 100.0, 3_000)?;
//! let dead1 = Scenario::named("dead1", &w)?;
//! let epoch = Instant::now(); // the caller reads the clock, never lars-sim
//! let opts = RunOptions::default();
//! let rr = run(&dead1, BalancerKind::Rr, &opts, 1, 1, epoch).metrics;
//! let p2c = run(&dead1, BalancerKind::P2c, &opts, 1, 1, epoch).metrics;
//! assert!((rr.failed_pct - 100.0 * 200.0 / 3000.0).abs() < 1.0); // 1 in 10 after 10 s
//! assert!(p2c.failed_pct < 1.0); // marked dead after 5 failures
//! assert!(p2c.detect_max_s.unwrap() < 1.0);
//! # Ok::<(), lars_sim::SimError>(())
//! ```
#![warn(missing_docs)]

mod balancer;
mod engine;
mod envoy;
mod kind;
mod metrics;
mod p2c;
mod plot;
mod rng;
mod run;
mod scenario;

pub use balancer::{Balancer, CallResult, LarsBalancer, Pick, RoundRobin};
pub use engine::{CallRecord, RotationChange, Trace, simulate};
pub use envoy::{EnvoyConfig, EnvoyOutlier};
pub use kind::BalancerKind;
pub use metrics::{FULL_SHARE, Metrics, measure};
pub use p2c::{P2cConfig, P2cPeakEwma};
pub use plot::{ShareSeries, svg};
pub use rng::Rng;
pub use run::{RunOptions, RunResult, run, run_balancer};
pub use scenario::{
    Episode, HistoryMinute, HostModel, Latency, MAX_CALLS, MAX_HOSTS, NAMED, ONSET, Phase,
    Recorded, Replay, RouteChange, Scenario, ScenarioKind, SimError, Workload,
};
