//! Proptest invariants of LoadBalance under random operations in virtual
//! time: every host is in exactly one list, lists and table agree, a pick is
//! always a current host in the right state, probes happen at the rate.

use std::time::Duration;

use lars_lb::{Choice, HostAddr, HostState, LbConfig, LoadBalance, ModKey, Outcome};
use proptest::prelude::*;

use crate::{host, t0};

#[derive(Debug, Clone)]
enum Op {
    /// Replace the host list with the hosts whose bit is set (12-host pool).
    Update(u16),
    /// `n` picks at the same instant.
    Picks(u8),
    Report {
        host: u32,
        ok: bool,
        timecost_ms: u32,
    },
    Advance(u32),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => any::<u16>().prop_map(Op::Update),
        4 => (1..40u8).prop_map(Op::Picks),
        8 => (1..=12u32, any::<bool>(), prop_oneof![Just(0u32), 0..3000u32])
            .prop_map(|(host, ok, timecost_ms)| Op::Report { host, ok, timecost_ms }),
        2 => (0..20_000u32).prop_map(Op::Advance),
        1 => Just(Op::Timeout),
    ]
}

fn cfg() -> impl Strategy<Value = LbConfig> {
    (0..5u32, 1..6u32, 1..20u32, 1..20u32).prop_map(|(probe, init_err, ce, cs)| LbConfig {
        probe_num: probe,
        init_succ_cnt: 20,
        init_err_cnt: init_err,
        contin_err_limit: ce,
        contin_succ_limit: cs,
        idle_timeout: Duration::from_secs(3),
        overload_timeout: Duration::from_secs(4),
        ..LbConfig::classic()
    })
}

fn pool(mask: u16) -> Vec<HostAddr> {
    (1..=12)
        .filter(|i| mask & (1 << (i - 1)) != 0)
        .map(host)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn load_balance_invariants(cfg in cfg(), first in any::<u16>(), ops in prop::collection::vec(op(), 0..80)) {
        let mut now = t0();
        let probe_num = cfg.probe_num as usize;
        let mut lb = LoadBalance::new(ModKey::new(1, 1), cfg);
        lb.update(&pool(first), now);
        for op in ops {
            match op {
                Op::Update(mask) => {
                    let want = pool(mask);
                    lb.update(&want, now);
                    let mut got: Vec<_> = lb.hosts().collect();
                    got.sort();
                    prop_assert_eq!(got, want);
                }
                Op::Picks(n) => {
                    // Timers first, so that the lists stay fixed during the run.
                    lb.handle_timeout(now);
                    let (idle, over) = (lb.idle_len(), lb.overload_len());
                    let mut probes = 0usize;
                    let mut overloads = 0usize;
                    for _ in 0..n {
                        match lb.choice_one_host(now) {
                            Choice::Idle(h) => {
                                prop_assert_eq!(lb.host(h).map(|v| v.state), Some(HostState::Idle));
                            }
                            Choice::Probe(h) => {
                                prop_assert_eq!(lb.host(h).map(|v| v.state), Some(HostState::Overload));
                                probes += 1;
                            }
                            Choice::Overload => overloads += 1,
                            Choice::NoExist => prop_assert!(lb.is_empty()),
                        }
                    }
                    let n = usize::from(n);
                    if over == 0 {
                        prop_assert_eq!(probes + overloads, 0);
                    } else {
                        // One probe per probe_num + 1 picks, give or take the
                        // counter's starting point.
                        let per = probe_num + 1;
                        prop_assert!(probes >= n / per && probes <= n.div_ceil(per),
                            "{} probes in {} picks, probe_num {}", probes, n, probe_num);
                        if idle == 0 {
                            prop_assert_eq!(probes + overloads, n);
                        } else {
                            prop_assert_eq!(overloads, 0);
                        }
                    }
                }
                Op::Report { host: h, ok, timecost_ms } => {
                    let outcome = if ok { Outcome::Success } else { Outcome::Failure { timecost_ms } };
                    let known = lb.contains(host(h));
                    prop_assert_eq!(lb.report(host(h), outcome, now).is_some(), known);
                }
                Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
                Op::Timeout => {
                    lb.handle_timeout(now);
                    if let Some(d) = lb.next_deadline() {
                        prop_assert!(d > now);
                    }
                }
            }
            if let Err(e) = lb.check_invariants() {
                prop_assert!(false, "{}", e);
            }
            prop_assert_eq!(lb.idle_len() + lb.overload_len(), lb.len());
            prop_assert_eq!(lb.idle_hosts().count(), lb.idle_len());
            prop_assert_eq!(lb.overload_hosts().count(), lb.overload_len());
        }
    }
}

fn adaptive_cfg() -> impl Strategy<Value = LbConfig> {
    (1..4u32, 0..=100u32, 0..3u64).prop_map(|(k, pct, ss)| {
        let mut c = LbConfig::default();
        c.adaptive.eject_consecutive = k;
        c.adaptive.max_ejection_percent = pct;
        c.adaptive.slow_start = Duration::from_secs(ss);
        c
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The adaptive policy keeps the same structure: every host in exactly
    /// one list, a pick is always a current host in the right state, never
    /// "overload" while a host exists, the ejection cap holds, and a host
    /// is probed again only after its report or its probe interval.
    #[test]
    fn adaptive_invariants(cfg in adaptive_cfg(), first in any::<u16>(), ops in prop::collection::vec(op(), 0..80)) {
        let mut now = t0();
        let min_gap = cfg.adaptive.probe_interval.mul_f64(0.9);
        let pct = u64::from(cfg.adaptive.max_ejection_percent);
        let mut lb = LoadBalance::new(ModKey::new(1, 1), cfg);
        lb.update(&pool(first), now);
        // Host -> when it was last probed with no report since.
        let mut probed: std::collections::HashMap<HostAddr, std::time::Instant> = Default::default();
        for op in ops {
            match op {
                Op::Update(mask) => {
                    lb.update(&pool(mask), now);
                    probed.retain(|h, _| lb.contains(*h));
                }
                Op::Picks(n) => {
                    for _ in 0..n {
                        match lb.choice_one_host(now) {
                            Choice::Idle(h) => {
                                prop_assert_eq!(lb.host(h).map(|v| v.state), Some(HostState::Idle));
                            }
                            Choice::Probe(h) if lb.idle_len() == 0 => {
                                // Only ejected hosts left: served in turn.
                                prop_assert_eq!(lb.host(h).map(|v| v.state), Some(HostState::Overload));
                            }
                            Choice::Probe(h) => {
                                prop_assert_eq!(lb.host(h).map(|v| v.state), Some(HostState::Overload));
                                if let Some(&at) = probed.get(&h) {
                                    prop_assert!(now.duration_since(at) >= min_gap,
                                        "{} probed twice within {:?}", h, now.duration_since(at));
                                }
                                probed.insert(h, now);
                            }
                            Choice::Overload => prop_assert!(false, "adaptive answered overload"),
                            Choice::NoExist => prop_assert!(lb.is_empty()),
                        }
                    }
                }
                Op::Report { host: h, ok, timecost_ms } => {
                    let outcome = if ok {
                        Outcome::SuccessIn { latency_ms: timecost_ms }
                    } else {
                        Outcome::Failure { timecost_ms }
                    };
                    let known = lb.contains(host(h));
                    let before = lb.host(host(h)).map(|v| v.state);
                    let after = lb.report(host(h), outcome, now);
                    prop_assert_eq!(after.is_some(), known);
                    probed.remove(&host(h));
                    if before == Some(HostState::Idle) && after == Some(HostState::Overload) {
                        let (n, out) = (lb.len() as u64, lb.overload_len() as u64);
                        prop_assert!(out * 100 <= n * pct, "{} of {} out with a {}% cap", out, n, pct);
                        prop_assert!(lb.idle_len() >= 1, "every host ejected");
                    }
                }
                Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
                Op::Timeout => {
                    lb.handle_timeout(now);
                    if let Some(d) = lb.next_deadline() {
                        prop_assert!(d > now);
                    }
                }
            }
            if let Err(e) = lb.check_invariants() {
                prop_assert!(false, "{}", e);
            }
            for h in lb.hosts().collect::<Vec<_>>() {
                let v = lb.host(h).unwrap();
                prop_assert!((0.0..=1.0).contains(&v.weight));
                if v.state == HostState::Idle {
                    prop_assert!(v.probe_at.is_none());
                }
            }
        }
    }
}

/// Operations on a `RouteLb` with bounded keys (8 keys, 4 hosts).
#[derive(Debug, Clone)]
enum RouteOp {
    GetHost(u32),
    GetRoute(u32),
    Report(u32, u32),
    /// A dns answer with the hosts whose bit is set.
    Answer(u32, u8),
    ConfirmedEmpty(u32),
    Advance(u32),
}

fn route_op() -> impl Strategy<Value = RouteOp> {
    prop_oneof![
        4 => (0..8u32).prop_map(RouteOp::GetHost),
        1 => (0..8u32).prop_map(RouteOp::GetRoute),
        2 => (0..8u32, 1..=4u32).prop_map(|(k, h)| RouteOp::Report(k, h)),
        3 => (0..8u32, 0..16u8).prop_map(|(k, m)| RouteOp::Answer(k, m)),
        1 => (0..8u32).prop_map(RouteOp::ConfirmedEmpty),
        2 => (0..20_000u32).prop_map(RouteOp::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The set of keys without hosts matches the balancers; creation never
    /// passes the limit; forgotten keys are gone; nothing without hosts
    /// outlives its expiry by more than a sixteenth of it.
    #[test]
    fn route_lb_key_limit_invariants(
        max in 1..6usize,
        protection in any::<bool>(),
        ops in prop::collection::vec(route_op(), 0..120),
    ) {
        use lars_lb::{KeyLimits, RouteLb};
        let expiry = Duration::from_secs(16);
        let mut now = t0();
        let cfg = LbConfig { empty_route_protection: protection, ..LbConfig::default() };
        let mut r = RouteLb::new(cfg);
        r.set_key_limits(KeyLimits { max_empty_keys: max, empty_key_expiry: Some(expiry) });
        let key = |k: u32| ModKey::new(k, 1);
        for op in ops {
            let before = r.empty_keys();
            let known = |r: &RouteLb, k: u32| r.status(key(k)).is_some();
            match op {
                RouteOp::GetHost(k) => {
                    let new = !known(&r, k);
                    r.get_host(key(k), now);
                    if new {
                        prop_assert!(r.empty_keys() <= max.max(before));
                    }
                }
                RouteOp::GetRoute(k) => { r.get_route(key(k), now); }
                RouteOp::Report(k, h) => { r.report(key(k), host(h), Outcome::Success, now); }
                RouteOp::Answer(k, m) => {
                    let hosts: Vec<HostAddr> = (1..=4).filter(|i| m & (1 << (i - 1)) != 0).map(host).collect();
                    r.apply_route(key(k), &hosts, now);
                }
                RouteOp::ConfirmedEmpty(k) => { r.apply_confirmed_empty(key(k), now); }
                RouteOp::Advance(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    if r.next_deadline().is_some_and(|d| d <= now) {
                        r.handle_timeout(now);
                    }
                }
            }
            let _ = r.take_pulls();
            let empty = r.keys().filter(|k| r.lb(*k).is_some_and(|lb| lb.is_empty())).count();
            prop_assert_eq!(r.empty_keys(), empty);
            for k in r.take_forgotten() {
                prop_assert!(r.status(k).is_none(), "{k} forgotten but held");
            }
            if empty > 0 {
                prop_assert!(r.next_deadline().is_some());
            }
        }
        // Left alone, every key without hosts goes within expiry + 1/16.
        let end = now + expiry + expiry / 16;
        while let Some(d) = r.next_deadline().filter(|d| *d <= end) {
            r.handle_timeout(d);
        }
        prop_assert_eq!(r.empty_keys(), 0);
    }
}
