//! Stateful target: arbitrary operation sequences — picks, reports with
//! every kind of outcome, route updates, host adds and removals, time
//! advancing (and the occasional earlier `now` a racing driver can hand in),
//! timeouts, pulls and report batches — on a `LoadBalance` and a `RouteLb`
//! built from any `[loadbalance]` section the config loader accepts, its
//! durations then optionally replaced by any value an embedder could put in
//! a `LoadBalanceConfig` (up to `Duration::MAX`) that keeps the loader's
//! rules (probe interval > 0 and <= its max, half-lives > 0).
//!
//! Invariants: no panic for any such config; a picked host is in the
//! route; `check_invariants` holds after every step; idle + overload = hosts;
//! a report batch counts exactly the accepted reports since the last one;
//! `get_route` lists the route's hosts; a due timer is handled, not lost.
#![no_main]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use lars_core::config::Ini;
use lars_lb::{Choice, HostAddr, LoadBalance, LoadBalanceConfig, ModKey, Outcome, RouteLb};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    cfg: Vec<(Knob, Value)>,
    durations: Vec<(u8, Dur)>,
    seed: u64,
    ops: Vec<Op>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Knob {
    ProbeNum,
    InitSuccCnt,
    InitErrCnt,
    ErrRate,
    SuccRate,
    ContinErrLimit,
    ContinSuccLimit,
    WindowErrRate,
    IdleTimeout,
    OverloadTimeout,
    UpdateTimeout,
    TimecostUnitMs,
    EmptyRouteProtection,
    Policy,
    EjectConsecutive,
    OutlierSignificance,
    StatsHalfLife,
    ProbeInterval,
    ProbeIntervalMax,
    StrikeForgive,
    SlowStart,
    MaxEjectionPercent,
    LatencyTolerance,
    LatencyHalfLife,
}

impl Knob {
    fn key(self) -> &'static str {
        match self {
            Knob::ProbeNum => "probe_num",
            Knob::InitSuccCnt => "init_succ_cnt",
            Knob::InitErrCnt => "init_err_cnt",
            Knob::ErrRate => "err_rate",
            Knob::SuccRate => "succ_rate",
            Knob::ContinErrLimit => "contin_err_limit",
            Knob::ContinSuccLimit => "contin_succ_limit",
            Knob::WindowErrRate => "window_err_rate",
            Knob::IdleTimeout => "idle_timeout",
            Knob::OverloadTimeout => "overload_timeout",
            Knob::UpdateTimeout => "update_timeout",
            Knob::TimecostUnitMs => "timecost_unit_ms",
            Knob::EmptyRouteProtection => "empty_route_protection",
            Knob::Policy => "policy",
            Knob::EjectConsecutive => "eject_consecutive",
            Knob::OutlierSignificance => "outlier_significance",
            Knob::StatsHalfLife => "stats_half_life",
            Knob::ProbeInterval => "probe_interval",
            Knob::ProbeIntervalMax => "probe_interval_max",
            Knob::StrikeForgive => "strike_forgive",
            Knob::SlowStart => "slow_start",
            Knob::MaxEjectionPercent => "max_ejection_percent",
            Knob::LatencyTolerance => "latency_tolerance",
            Knob::LatencyHalfLife => "latency_half_life",
        }
    }
}

/// A value as it could be written in the file.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Value {
    Small(u8),
    Int(u32),
    Float(f64),
    Classic,
    Adaptive,
}

impl Value {
    fn text(self) -> String {
        match self {
            Value::Small(v) => v.to_string(),
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Classic => "classic".into(),
            Value::Adaptive => "adaptive".into(),
        }
    }
}

/// A duration an embedder may set.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Dur {
    Millis(u16),
    Secs(u64),
    Max,
}

impl Dur {
    fn get(self) -> Duration {
        match self {
            Dur::Millis(v) => Duration::from_millis(u64::from(v)),
            Dur::Secs(v) => Duration::from_secs(v),
            Dur::Max => Duration::MAX,
        }
    }
}

/// Replaces durations of `cfg` (`which` picks one); `None` when that breaks
/// a rule the loader enforces.
fn embed(mut cfg: LoadBalanceConfig, durations: &[(u8, Dur)]) -> Option<LoadBalanceConfig> {
    for &(which, d) in durations.iter().take(9) {
        let d = d.get();
        let a = &mut cfg.adaptive;
        match which % 9 {
            0 => cfg.idle_timeout = d,
            1 => cfg.overload_timeout = d,
            2 => cfg.update_timeout = d,
            3 => a.stats_half_life = d,
            4 => a.probe_interval = d,
            5 => a.probe_interval_max = d,
            6 => a.strike_forgive = d,
            7 => a.slow_start = d,
            _ => a.latency_half_life = d,
        }
    }
    let a = &cfg.adaptive;
    let ok = !a.probe_interval.is_zero()
        && a.probe_interval_max >= a.probe_interval
        && !a.stats_half_life.is_zero()
        && !a.latency_half_life.is_zero();
    ok.then_some(cfg)
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Op {
    Pick,
    Report {
        host: u8,
        outcome: Out,
    },
    Update {
        mask: u16,
    },
    Add {
        host: u8,
    },
    RemoveHost {
        host: u8,
    },
    Advance {
        ms: u16,
    },
    AdvanceLong {
        secs: u16,
    },
    /// An earlier `now` than the last one (a driver that read the clock
    /// before another thread's call went in).
    Earlier {
        ms: u16,
    },
    Timeout,
    TakeReport,
    Events,
    RouteGetHost {
        key: u8,
    },
    RouteReport {
        key: u8,
        host: u8,
        outcome: Out,
    },
    RouteApply {
        key: u8,
        mask: u16,
    },
    RouteRestore {
        key: u8,
        mask: u16,
    },
    RouteGetRoute {
        key: u8,
    },
    RouteRemove {
        key: u8,
    },
    RouteTimeout,
    RoutePulls,
    RouteResetPulling,
    RouteBatches,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Out {
    Success,
    SuccessIn(u32),
    Failure(u32),
    Wire(i32, u32),
}

impl Out {
    fn outcome(self) -> Outcome {
        match self {
            Out::Success => Outcome::Success,
            Out::SuccessIn(latency_ms) => Outcome::SuccessIn { latency_ms },
            Out::Failure(timecost_ms) => Outcome::Failure { timecost_ms },
            Out::Wire(retcode, timecost) => Outcome::from_retcode(retcode, timecost),
        }
    }
}

fn host(h: u8) -> HostAddr {
    HostAddr::new(0x0a00_0000 | u32::from(h % 16), 80)
}

fn hosts(mask: u16) -> Vec<HostAddr> {
    (0..16u8)
        .filter(|i| mask & (1 << i) != 0)
        .map(host)
        .collect()
}

fn key(k: u8) -> ModKey {
    ModKey::new(u32::from(k % 4) + 1, 1)
}

/// The config: the knobs written as a `[loadbalance]` section and read by
/// the loader, so only what a file could configure is used.
fn config(knobs: &[(Knob, Value)]) -> Option<LoadBalanceConfig> {
    let mut text = String::from("[loadbalance]\n");
    for (k, v) in knobs.iter().take(24) {
        let _ = writeln!(text, "{} = {}", k.key(), v.text());
    }
    let ini = Ini::parse("fuzz.conf", &text).ok()?;
    LoadBalanceConfig::from_ini(&ini).ok()
}

fuzz_target!(|input: Input| {
    let Some(cfg) = config(&input.cfg).and_then(|c| embed(c, &input.durations)) else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut latest = t0;
    let mut lb = LoadBalance::new(ModKey::new(9, 9), cfg.clone());
    lb.set_seed(input.seed);
    let mut routes = RouteLb::new(cfg);
    // Reports accepted since the last batch: (succ, err).
    let (mut succ, mut err) = (0u64, 0u64);
    for op in input.ops.into_iter().take(512) {
        match op {
            Op::Pick => match lb.choice_one_host(now) {
                Choice::Idle(h) | Choice::Probe(h) => assert!(lb.contains(h)),
                Choice::NoExist => assert!(lb.is_empty()),
                Choice::Overload => assert!(!lb.is_empty()),
            },
            Op::Report { host: h, outcome } => {
                let o = outcome.outcome();
                let known = lb.contains(host(h));
                let got = lb.report(host(h), o, now);
                assert_eq!(got.is_some(), known);
                if known {
                    if o.is_success() {
                        succ += 1;
                    } else {
                        err += 1;
                    }
                }
            }
            Op::Update { mask } => {
                let hs = hosts(mask);
                lb.update(&hs, now);
                let mut have: Vec<HostAddr> = lb.hosts().collect();
                have.sort_unstable();
                assert_eq!(have, hs);
            }
            Op::Add { host: h } => {
                let was = lb.contains(host(h));
                assert_eq!(lb.add_host(host(h), now), !was);
                assert!(lb.contains(host(h)));
            }
            Op::RemoveHost { host: h } => {
                let was = lb.contains(host(h));
                assert_eq!(lb.remove_host(host(h)), was);
                assert!(!lb.contains(host(h)));
            }
            Op::Advance { ms } => {
                latest += Duration::from_millis(u64::from(ms));
                now = latest;
            }
            Op::AdvanceLong { secs } => {
                latest += Duration::from_secs(u64::from(secs));
                now = latest;
            }
            Op::Earlier { ms } => {
                now = latest
                    .checked_sub(Duration::from_millis(u64::from(ms)))
                    .filter(|t| *t >= t0)
                    .unwrap_or(t0);
            }
            Op::Timeout => {
                if lb.next_deadline().is_some_and(|d| d <= now) {
                    lb.handle_timeout(now);
                }
            }
            Op::TakeReport => {
                let batch = lb.take_report();
                let s: u64 = batch.iter().map(|r| u64::from(r.succ)).sum();
                let e: u64 = batch.iter().map(|r| u64::from(r.err)).sum();
                assert_eq!((s, e), (succ, err), "batch counts the accepted reports");
                (succ, err) = (0, 0);
            }
            Op::Events => while lb.poll_event().is_some() {},
            Op::RouteGetHost { key: k } => {
                if let Some(h) = routes.get_host(key(k), now).host() {
                    assert!(routes.lb(key(k)).is_some_and(|l| l.contains(h)));
                }
            }
            Op::RouteReport {
                key: k,
                host: h,
                outcome,
            } => {
                let _ = routes.report(key(k), host(h), outcome.outcome(), now);
            }
            Op::RouteApply { key: k, mask } => {
                let _ = routes.apply_route(key(k), &hosts(mask), now);
            }
            Op::RouteRestore { key: k, mask } => routes.restore_route(key(k), &hosts(mask), now),
            Op::RouteGetRoute { key: k } => {
                if let Some(hs) = routes.get_route(key(k), now) {
                    let mut have: Vec<HostAddr> = routes
                        .lb(key(k))
                        .map(|l| l.hosts().collect())
                        .unwrap_or_default();
                    have.sort_unstable();
                    assert_eq!(hs, have);
                }
            }
            Op::RouteRemove { key: k } => {
                let _ = routes.remove(key(k));
            }
            Op::RouteTimeout => {
                if routes.next_deadline().is_some_and(|d| d <= now) {
                    routes.handle_timeout(now);
                }
            }
            Op::RoutePulls => {
                let _ = routes.take_pulls();
            }
            Op::RouteResetPulling => routes.reset_pulling(),
            Op::RouteBatches => {
                let _ = routes.take_report_batches();
                while routes.poll_event().is_some() {}
            }
        }
        assert_eq!(lb.idle_len() + lb.overload_len(), lb.len());
        if let Err(e) = lb.check_invariants() {
            panic!("LoadBalance invariant broken after {op:?}: {e}");
        }
        for k in routes.keys().collect::<Vec<_>>() {
            if let Some(l) = routes.lb(k)
                && let Err(e) = l.check_invariants()
            {
                panic!("RouteLb {k} invariant broken after {op:?}: {e}");
            }
        }
    }
});
