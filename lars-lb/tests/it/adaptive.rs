//! Exact tests of the adaptive policy in virtual time.

use std::time::Duration;

use lars_lb::{Choice, HostState, LbConfig, LbEvent, LoadBalance, ModKey, Outcome, Reason};

use crate::{host, hosts, t0};

const KEY: ModKey = ModKey::new(1, 1);

/// `n` hosts with a history: 50 successes each, so the others' failure
/// rate is known to be low.
fn lb(n: u32) -> (LoadBalance, std::time::Instant) {
    lb_with(LbConfig::default(), n)
}

fn lb_with(cfg: LbConfig, n: u32) -> (LoadBalance, std::time::Instant) {
    let now = t0();
    let mut lb = LoadBalance::new(KEY, cfg);
    lb.update(&hosts(n), now);
    for _ in 0..50 {
        for h in 1..=n {
            lb.report(host(h), ok(), now);
        }
    }
    (lb, now)
}

fn fail() -> Outcome {
    Outcome::Failure { timecost_ms: 0 }
}

fn ok() -> Outcome {
    Outcome::SuccessIn { latency_ms: 5 }
}

fn reasons(lb: &mut LoadBalance) -> Vec<Reason> {
    lb.drain_events()
        .filter_map(|e| match e {
            LbEvent::Transition(t) => Some(t.reason),
            _ => None,
        })
        .collect()
}

/// Every pick at `now` until `n` picks, counted per host.
fn picks(lb: &mut LoadBalance, n: usize, now: std::time::Instant) -> Vec<Choice> {
    (0..n).map(|_| lb.choice_one_host(now)).collect()
}

#[test]
fn default_policy_is_adaptive_and_classic_is_one_setting_away() {
    assert_eq!(LbConfig::default().policy, lars_lb::Policy::Adaptive);
    assert_eq!(LbConfig::classic().policy, lars_lb::Policy::Classic);
    let ini = lars_core::config::Ini::parse("t.conf", "[loadbalance]\npolicy = classic\n").unwrap();
    let cfg = LbConfig::from_ini(&ini).unwrap();
    assert_eq!(cfg.policy, lars_lb::Policy::Classic);
    let bad = lars_core::config::Ini::parse("t.conf", "[loadbalance]\npolicy = fastest\n").unwrap();
    let e = LbConfig::from_ini(&bad).unwrap_err().to_string();
    assert!(e.contains("policy") && e.contains("fastest"), "{e}");
}

#[test]
fn two_consecutive_failures_eject_while_the_others_succeed() {
    let (mut lb, now) = lb(5);
    for h in 2..=5 {
        lb.report(host(h), ok(), now);
    }
    assert_eq!(lb.report(host(1), fail(), now), Some(HostState::Idle));
    assert_eq!(lb.report(host(1), fail(), now), Some(HostState::Overload));
    assert_eq!(reasons(&mut lb), vec![Reason::FailureStreak]);
    // Out of rotation: no pick goes there until its probe is due.
    assert!(
        picks(&mut lb, 100, now)
            .iter()
            .all(|c| matches!(c, Choice::Idle(h) if *h != host(1)))
    );
}

#[test]
fn a_success_between_failures_resets_the_streak() {
    let (mut lb, now) = lb(5);
    lb.report(host(1), fail(), now);
    lb.report(host(1), ok(), now);
    assert_eq!(lb.report(host(1), fail(), now), Some(HostState::Idle));
}

#[test]
fn one_slow_failure_ejects_at_once() {
    let (mut lb, now) = lb(5);
    // 1000 ms with timecost_unit_ms 100 weighs 11 failures.
    assert_eq!(
        lb.report(host(1), Outcome::Failure { timecost_ms: 1000 }, now),
        Some(HostState::Overload)
    );
}

#[test]
fn a_key_wide_outage_ejects_nobody() {
    let (mut lb, mut now) = lb(10);
    for round in 0..50 {
        for h in 1..=10 {
            lb.report(host(h), fail(), now);
        }
        now += Duration::from_millis(100);
        assert_eq!(lb.overload_len(), 0, "round {round}");
    }
    // And all of them are back at full share the moment they succeed.
    for h in 1..=10 {
        lb.report(host(h), ok(), now);
    }
    let mut count = std::collections::HashMap::new();
    for c in picks(&mut lb, 1000, now) {
        *count.entry(c.host().unwrap()).or_insert(0) += 1;
    }
    assert!(count.values().all(|&n| n == 100), "{count:?}");
}

#[test]
fn a_gray_host_is_ejected_as_an_outlier() {
    let (mut lb, mut now) = lb(10);
    // The others: 200 calls each, no failure.
    for _ in 0..200 {
        for h in 2..=10 {
            lb.report(host(h), ok(), now);
        }
        now += Duration::from_millis(10);
    }
    // Host 1 fails one call in 20, never twice in a row.
    let mut state = HostState::Idle;
    for i in 0..60 {
        let o = if i % 20 == 19 { fail() } else { ok() };
        state = lb.report(host(1), o, now).unwrap();
        if state == HostState::Overload {
            break;
        }
    }
    assert_eq!(state, HostState::Overload);
    assert_eq!(reasons(&mut lb), vec![Reason::Outlier]);
}

#[test]
fn a_healthy_host_with_one_failure_in_hundreds_stays() {
    let (mut lb, mut now) = lb(10);
    for i in 0..400 {
        for h in 1..=10 {
            let o = if h == 1 && i == 200 { fail() } else { ok() };
            lb.report(host(h), o, now);
        }
        now += Duration::from_millis(10);
    }
    assert_eq!(lb.overload_len(), 0);
}

#[test]
fn probes_are_limited_in_time_and_back_off() {
    let (mut lb, now) = lb(3);
    lb.report(host(1), fail(), now);
    lb.report(host(1), fail(), now);
    let first = lb.host(host(1)).unwrap().probe_at.unwrap();
    let d = first.duration_since(now);
    // probe_interval (1 s) with 10% jitter.
    assert!(
        d >= Duration::from_millis(900) && d <= Duration::from_millis(1100),
        "{d:?}"
    );
    assert_eq!(lb.next_deadline(), Some(first));
    // Before it is due, every pick goes elsewhere.
    let before = first - Duration::from_millis(1);
    assert!(
        picks(&mut lb, 50, before)
            .iter()
            .all(|c| matches!(c, Choice::Idle(_)))
    );
    // When due: exactly one probe, then the idle hosts again.
    let got = picks(&mut lb, 50, first);
    assert_eq!(got[0], Choice::Probe(host(1)));
    assert!(got[1..].iter().all(|c| matches!(c, Choice::Idle(_))));
    assert_eq!(lb.probes_sent(), 1);
    // The probe fails: the next one comes about 3 s later.
    lb.report(host(1), fail(), first);
    let second = lb.host(host(1)).unwrap().probe_at.unwrap();
    let d = second.duration_since(first);
    assert!(
        d >= Duration::from_millis(2700) && d <= Duration::from_millis(3300),
        "{d:?}"
    );
    assert_eq!(lb.host(host(1)).unwrap().strikes, 2);
    // It succeeds: back in rotation, slow-starting.
    assert_eq!(picks(&mut lb, 1, second), vec![Choice::Probe(host(1))]);
    assert_eq!(lb.report(host(1), ok(), second), Some(HostState::Idle));
    assert!(reasons(&mut lb).ends_with(&[Reason::ProbeSucceeded]));
    let w = lb.host(host(1)).unwrap().weight;
    assert!(w < 0.2, "weight {w} right after coming back");
}

#[test]
fn a_probe_without_a_report_is_repeated_after_its_interval() {
    let (mut lb, now) = lb(3);
    lb.report(host(1), fail(), now);
    lb.report(host(1), fail(), now);
    let due = lb.host(host(1)).unwrap().probe_at.unwrap();
    assert_eq!(lb.choice_one_host(due), Choice::Probe(host(1)));
    let again = lb.host(host(1)).unwrap().probe_at.unwrap();
    assert_eq!(lb.next_deadline(), Some(again));
    assert!(again > due);
    assert!(
        picks(&mut lb, 20, again - Duration::from_millis(1))
            .iter()
            .all(|c| matches!(c, Choice::Idle(_)))
    );
    assert_eq!(lb.choice_one_host(again), Choice::Probe(host(1)));
}

#[test]
fn slow_start_ramps_a_returning_host_to_its_fair_share() {
    let (mut lb, now) = lb(2);
    lb.report(host(1), fail(), now);
    lb.report(host(1), fail(), now);
    let due = lb.host(host(1)).unwrap().probe_at.unwrap();
    assert_eq!(lb.choice_one_host(due), Choice::Probe(host(1)));
    lb.report(host(1), ok(), due);
    // slow_start is 1 s: at 0.5 s the host has about half a share, never more.
    let mid = due + Duration::from_millis(500);
    let got = picks(&mut lb, 1000, mid);
    let share = got.iter().filter(|c| **c == Choice::Idle(host(1))).count();
    assert!((300..=340).contains(&share), "{share} of 1000 at half ramp");
    // After the ramp: an exact half.
    let end = due + Duration::from_secs(1);
    let got = picks(&mut lb, 1000, end);
    let share = got.iter().filter(|c| **c == Choice::Idle(host(1))).count();
    assert_eq!(share, 500);
    assert_eq!(lb.host(host(1)).unwrap().weight, 1.0);
}

#[test]
fn hosts_of_a_new_key_start_at_full_share_and_equal_hosts_get_exact_shares() {
    let (mut lb, now) = lb(10);
    let mut count = std::collections::HashMap::new();
    for c in picks(&mut lb, 10_000, now) {
        *count.entry(c.host().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(count.len(), 10);
    assert!(count.values().all(|&n| n == 1000), "{count:?}");
}

#[test]
fn a_slow_host_gets_a_trickle() {
    let (mut lb, mut now) = lb(10);
    // Calls as the picks send them: host 1 answers in 50 ms, the others in 5.
    for _ in 0..2000 {
        let h = lb.choice_one_host(now).host().unwrap();
        let ms = if h == host(1) { 50 } else { 5 };
        lb.report(h, Outcome::SuccessIn { latency_ms: ms }, now);
        now += Duration::from_millis(10);
    }
    let v = lb.host(host(1)).unwrap();
    assert!(v.latency_ms.unwrap() > 40.0);
    assert!(v.weight < 0.01, "weight {}", v.weight);
    let got = picks(&mut lb, 10_000, now);
    let slow = got.iter().filter(|c| **c == Choice::Idle(host(1))).count();
    assert!(slow <= 10, "{slow} of 10000 picks to the 10x slower host");
    // A success without latency changes nothing.
    lb.report(host(1), Outcome::Success, now);
    assert_eq!(lb.host(host(1)).unwrap().latency_ms, v.latency_ms);
}

#[test]
fn the_ejection_cap_keeps_hosts_in_rotation() {
    let mut cfg = LbConfig::default();
    cfg.adaptive.max_ejection_percent = 50;
    let (mut lb, now) = lb_with(cfg, 4);
    for h in 1..=2 {
        for _ in 0..2 {
            lb.report(host(h), fail(), now);
        }
    }
    assert_eq!(lb.overload_len(), 2);
    for _ in 0..5 {
        lb.report(host(3), fail(), now);
    }
    assert_eq!(lb.overload_len(), 2);
    assert!(lb.ejections_capped() > 0);
    // Two hosts: at most one out, whatever the cap says.
    let mut cfg = LbConfig::default();
    cfg.adaptive.max_ejection_percent = 100;
    let (mut lb, now) = lb_with(cfg, 2);
    lb.report(host(1), fail(), now);
    lb.report(host(1), fail(), now);
    assert_eq!(lb.overload_len(), 1);
    for _ in 0..10 {
        lb.report(host(2), fail(), now);
    }
    assert_eq!(lb.idle_hosts().collect::<Vec<_>>(), vec![host(2)]);
}

#[test]
fn a_host_that_was_down_before_is_probed_when_its_outage_should_end() {
    let (mut lb, mut now) = lb(5);
    let eject = |lb: &mut LoadBalance, now| {
        for _ in 0..50 {
            for h in 2..=5 {
                lb.report(host(h), ok(), now);
            }
        }
        lb.report(host(1), fail(), now);
        lb.report(host(1), fail(), now);
        assert_eq!(lb.host(host(1)).unwrap().state, HostState::Overload);
    };
    eject(&mut lb, now);
    let ejected = now;
    // Down for 20 s: probes at ~1 s, ~4 s, ~13 s fail, ~40 s succeeds.
    let mut failed = 0;
    loop {
        let due = lb.next_deadline().unwrap();
        now = due;
        assert_eq!(lb.choice_one_host(now), Choice::Probe(host(1)));
        if now.duration_since(ejected) >= Duration::from_secs(20) {
            lb.report(host(1), ok(), now);
            break;
        }
        lb.report(host(1), fail(), now);
        failed += 1;
    }
    assert!(failed >= 2);
    // Next outage: the first probe waits about the learned length.
    now += Duration::from_secs(120);
    eject(&mut lb, now);
    let wait = lb
        .host(host(1))
        .unwrap()
        .probe_at
        .unwrap()
        .duration_since(now);
    assert!(
        wait >= Duration::from_secs(15) && wait <= Duration::from_secs(40),
        "{wait:?}"
    );
}

#[test]
fn a_removed_ejected_host_leaves_no_probe_behind() {
    let (mut lb, now) = lb(3);
    lb.report(host(1), fail(), now);
    lb.report(host(1), fail(), now);
    lb.update(&[host(2), host(3)], now);
    let later = now + Duration::from_secs(5);
    assert!(
        picks(&mut lb, 30, later)
            .iter()
            .all(|c| matches!(c, Choice::Idle(_)))
    );
    assert_eq!(lb.next_deadline(), None);
    lb.check_invariants().unwrap();
}

#[test]
fn a_host_that_stops_answering_stops_collecting_calls() {
    let (mut lb, mut now) = lb(10);
    // Every host answers within the 10 ms between calls, except host 1,
    // which answers nothing (its calls hang until a timeout).
    let mut to_host1 = 0;
    for _ in 0..1000 {
        let h = lb.choice_one_host(now).host().unwrap();
        if h == host(1) {
            to_host1 += 1;
        } else {
            lb.report(h, ok(), now);
        }
        now += Duration::from_millis(10);
    }
    // Fair would be 100 calls; it gets a trickle once two are unanswered.
    assert!(to_host1 <= 6, "{to_host1} calls to the silent host");
    // The timeouts come back: one of them ejects the host.
    assert_eq!(
        lb.report(host(1), Outcome::Failure { timecost_ms: 1000 }, now),
        Some(HostState::Overload)
    );
}

/// Found by the fuzz target `lb_ops`: a config may hold any `Duration`
/// (an embedder builds it; the loader once accepted `1e19` seconds), and
/// ejecting a host then added the probe interval to `now` (`Instant +
/// Duration` overflow) or made it from an `f64` too big: a panic either way.
/// The probe is simply never due.
#[test]
fn huge_probe_interval_does_not_overflow_the_clock() {
    let mut cfg = LbConfig::default();
    cfg.adaptive.probe_interval = Duration::MAX;
    cfg.adaptive.probe_interval_max = Duration::MAX;
    let (mut lb, now) = lb_with(cfg, 3);
    lb.report(host(3), fail(), now);
    assert_eq!(lb.report(host(3), fail(), now), Some(HostState::Overload));
    let later = now + Duration::from_secs(3600);
    assert!(lb.next_deadline().is_none_or(|d| d > later));
    lb.handle_timeout(later);
    assert!((0..100).all(|_| lb.choice_one_host(later) != Choice::Probe(host(3))));
    lb.check_invariants().unwrap();
}
