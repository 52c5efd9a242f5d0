//! The rules of `LoadBalance` with exact numbers.

use std::time::Duration;

use lars_lb::{
    Choice, HostState, LbConfig, LbEvent, LoadBalance, ModKey, Outcome, Reason, UpdateSummary,
};

use crate::{host, hosts, no_contin, t0};

const FAIL: Outcome = Outcome::Failure { timecost_ms: 0 };
const KEY: ModKey = ModKey::new(5, 6);

fn lb_with(cfg: LbConfig, n: u32) -> (LoadBalance, std::time::Instant) {
    let now = t0();
    let mut lb = LoadBalance::new(KEY, cfg);
    lb.update(&hosts(n), now);
    (lb, now)
}

fn overload(lb: &mut LoadBalance, h: lars_lb::HostAddr, now: std::time::Instant) {
    while lb.host(h).unwrap().state == HostState::Idle {
        lb.report(h, FAIL, now);
    }
}

#[test]
fn ten_successes_then_the_22nd_failure_overloads() {
    let (mut lb, now) = lb_with(no_contin(), 1);
    let h = host(1);
    for _ in 0..10 {
        assert_eq!(lb.report(h, Outcome::Success, now), Some(HostState::Idle));
    }
    for n in 1..=21 {
        assert_eq!(
            lb.report(h, FAIL, now),
            Some(HostState::Idle),
            "failure {n}"
        );
    }
    assert_eq!(lb.report(h, FAIL, now), Some(HostState::Overload));
    let ev = lb.poll_event().unwrap();
    let LbEvent::Transition(t) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (t.from, t.to, t.reason),
        (HostState::Idle, HostState::Overload, Reason::ErrRate)
    );
    assert_eq!((t.key, t.host), (KEY, h));
    assert_eq!((t.counters.vsucc, t.counters.verr), (190, 22));
    assert_eq!((t.counters.rsucc, t.counters.rerr), (10, 22));
    assert_eq!(t.counters.contin_err, 22);
    // Entering overload resets the counters to 0 / init_err_cnt.
    let c = lb.host(h).unwrap().counters;
    assert_eq!((c.vsucc, c.verr, c.rsucc, c.rerr), (0, 5, 0, 0));
    assert!(lb.poll_event().is_none());
}

#[test]
fn fifteen_consecutive_failures_overload() {
    // err_rate out of the way: 29 / 210 would pass 0.1 first.
    let cfg = LbConfig {
        err_rate: 0.5,
        ..LbConfig::classic()
    };
    let (mut lb, now) = lb_with(cfg, 1);
    for _ in 0..14 {
        lb.report(host(1), FAIL, now);
    }
    lb.report(host(1), Outcome::Success, now);
    for _ in 0..14 {
        assert_eq!(lb.report(host(1), FAIL, now), Some(HostState::Idle));
    }
    assert_eq!(lb.report(host(1), FAIL, now), Some(HostState::Overload));
    let Some(LbEvent::Transition(t)) = lb.poll_event() else {
        panic!()
    };
    assert_eq!(t.reason, Reason::ContinErr);
    assert_eq!((t.counters.vsucc, t.counters.verr), (181, 29));
}

#[test]
fn an_overloaded_host_recovers_on_its_6th_success() {
    // succ_rate 0.5 and init_err_cnt 5: 5 / 10 is not > 0.5, 6 / 11 is.
    let (mut lb, now) = lb_with(no_contin(), 1);
    overload(&mut lb, host(1), now);
    lb.drain_events().for_each(drop);
    for _ in 0..5 {
        assert_eq!(
            lb.report(host(1), Outcome::Success, now),
            Some(HostState::Overload)
        );
    }
    assert_eq!(
        lb.report(host(1), Outcome::Success, now),
        Some(HostState::Idle)
    );
    let Some(LbEvent::Transition(t)) = lb.poll_event() else {
        panic!()
    };
    assert_eq!(
        (t.reason, t.counters.vsucc, t.counters.verr),
        (Reason::SuccRate, 6, 5)
    );
    assert_eq!(lb.host(host(1)).unwrap().counters.vsucc, 180);
}

#[test]
fn consecutive_successes_recover_when_the_rate_cannot() {
    let cfg = LbConfig {
        succ_rate: 1.0,
        contin_succ_limit: 15,
        ..LbConfig::classic()
    };
    let (mut lb, now) = lb_with(cfg, 1);
    overload(&mut lb, host(1), now);
    for _ in 0..14 {
        assert_eq!(
            lb.report(host(1), Outcome::Success, now),
            Some(HostState::Overload)
        );
    }
    assert_eq!(
        lb.report(host(1), Outcome::Success, now),
        Some(HostState::Idle)
    );
}

#[test]
fn one_overloaded_host_of_three_gets_one_pick_in_every_probe_num_plus_one() {
    let (mut lb, now) = lb_with(LbConfig::classic(), 3);
    overload(&mut lb, host(2), now);
    let picks: Vec<Choice> = (0..11 * 20).map(|_| lb.choice_one_host(now)).collect();
    for w in picks.windows(11) {
        let probes: Vec<_> = w.iter().filter(|c| matches!(c, Choice::Probe(_))).collect();
        assert_eq!(probes, vec![&Choice::Probe(host(2))]);
    }
    // The first 10 picks are idle (the counter starts at 0), the 11th probes.
    assert_eq!(picks[10], Choice::Probe(host(2)));
    // Idle picks alternate over the two idle hosts.
    let idle: Vec<_> = picks
        .iter()
        .filter_map(|c| match c {
            Choice::Idle(h) => Some(*h),
            _ => None,
        })
        .collect();
    assert_eq!(idle.len(), 200);
    assert!(idle.windows(2).all(|w| w[0] != w[1]));
}

#[test]
fn no_probe_counting_while_nothing_is_overloaded() {
    let (mut lb, now) = lb_with(LbConfig::classic(), 3);
    for _ in 0..25 {
        assert!(matches!(lb.choice_one_host(now), Choice::Idle(_)));
    }
    overload(&mut lb, host(1), now);
    let first_probe = (1..=11)
        .find(|_| matches!(lb.choice_one_host(now), Choice::Probe(_)))
        .unwrap();
    assert_eq!(first_probe, 11);
}

#[test]
fn all_overloaded_answers_probe_num_overloads_then_one_probe() {
    let (mut lb, now) = lb_with(LbConfig::classic(), 2);
    overload(&mut lb, host(1), now);
    overload(&mut lb, host(2), now);
    for round in 0..4 {
        for _ in 0..10 {
            assert_eq!(lb.choice_one_host(now), Choice::Overload);
        }
        // Probes go round-robin over the overload list.
        let want = if round % 2 == 0 { host(1) } else { host(2) };
        assert_eq!(lb.choice_one_host(now), Choice::Probe(want));
    }
}

#[test]
fn empty_balancer_answers_noexist() {
    let mut lb = LoadBalance::new(KEY, LbConfig::classic());
    assert_eq!(lb.choice_one_host(t0()), Choice::NoExist);
    assert_eq!(lb.report(host(1), Outcome::Success, t0()), None);
}

#[test]
fn a_new_host_failing_its_first_call_stays_idle() {
    // The C++ original starts a new host's window at time 0, so its first
    // failed call ends the "window" with a 100% error rate.
    let now = t0();
    let mut lb = LoadBalance::new(KEY, LbConfig::classic());
    lb.update(&hosts(1), now);
    let later = now + Duration::from_secs(100);
    lb.update(&hosts(2), later);
    let t = later + Duration::from_secs(1);
    assert_eq!(lb.report(host(2), FAIL, t), Some(HostState::Idle));
    assert_eq!(lb.report(host(1), FAIL, t), Some(HostState::Idle));
    assert!(lb.poll_event().is_none());
    // Its window ends idle_timeout after it was added.
    assert_eq!(
        lb.host(host(2)).unwrap().since + Duration::from_secs(15),
        later + Duration::from_secs(15)
    );
}

#[test]
fn window_end_resets_counters_when_the_error_rate_is_low() {
    let (mut lb, now) = lb_with(no_contin(), 1);
    let h = host(1);
    for i in 0..10 {
        let o = if i < 6 { Outcome::Success } else { FAIL };
        lb.report(h, o, now + Duration::from_secs(i));
    }
    // 4 / 10 < 0.7: reset at the window end, no transition.
    assert_eq!(lb.next_deadline(), Some(now + Duration::from_secs(15)));
    lb.handle_timeout(now + Duration::from_secs(15));
    let v = lb.host(h).unwrap();
    assert_eq!(v.state, HostState::Idle);
    assert_eq!(
        (v.counters.vsucc, v.counters.verr, v.counters.rerr),
        (180, 0, 0)
    );
    assert_eq!(v.since, now + Duration::from_secs(15));
    assert_eq!(lb.next_deadline(), Some(now + Duration::from_secs(30)));
    assert!(lb.poll_event().is_none());
}

#[test]
fn a_window_at_exactly_the_rate_overloads() {
    // 7 errors of 10 calls: 0.7 >= window_err_rate.
    let (mut lb, now) = lb_with(no_contin(), 1);
    for i in 0..10 {
        let o = if i < 3 { Outcome::Success } else { FAIL };
        lb.report(host(1), o, now + Duration::from_secs(1));
    }
    // A report after the window counts in the next window: the window is
    // judged first.
    lb.report(host(1), Outcome::Success, now + Duration::from_secs(15));
    assert_eq!(lb.host(host(1)).unwrap().state, HostState::Overload);
    let Some(LbEvent::Transition(t)) = lb.poll_event() else {
        panic!()
    };
    assert_eq!(
        (t.reason, t.counters.rsucc, t.counters.rerr),
        (Reason::WindowErrRate, 3, 7)
    );
}

#[test]
fn an_overloaded_host_returns_after_overload_timeout_without_reports() {
    let (mut lb, now) = lb_with(LbConfig::classic(), 2);
    let t1 = now + Duration::from_secs(3);
    overload(&mut lb, host(1), t1);
    lb.drain_events().for_each(drop);
    // Its overload stay ends before host 2's window? No: window at 15 s,
    // overload return at 18 s.
    assert_eq!(lb.next_deadline(), Some(now + Duration::from_secs(15)));
    lb.handle_timeout(now + Duration::from_secs(15));
    assert_eq!(lb.next_deadline(), Some(t1 + Duration::from_secs(15)));
    lb.handle_timeout(t1 + Duration::from_secs(15) - Duration::from_nanos(1));
    assert_eq!(lb.overload_len(), 1);
    // Checked on pick too: no handle_timeout call needed.
    let pick = lb.choice_one_host(t1 + Duration::from_secs(15));
    assert!(matches!(pick, Choice::Idle(_)));
    assert_eq!(lb.overload_len(), 0);
    let Some(LbEvent::Transition(t)) = lb.poll_event() else {
        panic!()
    };
    assert_eq!(
        (t.reason, t.at),
        (Reason::OverloadTimeout, t1 + Duration::from_secs(15))
    );
}

#[test]
fn timecost_scales_virtual_errors() {
    let cfg = LbConfig {
        err_rate: 1.0,
        ..no_contin()
    };
    let (mut lb, now) = lb_with(cfg.clone(), 1);
    lb.report(host(1), Outcome::Failure { timecost_ms: 5000 }, now);
    let c = lb.host(host(1)).unwrap().counters;
    assert_eq!((c.verr, c.rerr, c.contin_err), (50, 1, 1));
    lb.report(host(1), Outcome::Failure { timecost_ms: 99 }, now);
    lb.report(host(1), Outcome::Failure { timecost_ms: 0 }, now);
    assert_eq!(lb.host(host(1)).unwrap().counters.verr, 52);
    // Unit 0 disables the scaling.
    let (mut lb, now) = lb_with(
        LbConfig {
            timecost_unit_ms: 0,
            ..cfg
        },
        1,
    );
    lb.report(host(1), Outcome::Failure { timecost_ms: 5000 }, now);
    assert_eq!(lb.host(host(1)).unwrap().counters.verr, 1);
    // With defaults one 5 s failure overloads: 50 / 230 > 0.1.
    let (mut lb, now) = lb_with(LbConfig::classic(), 1);
    assert_eq!(
        lb.report(host(1), Outcome::Failure { timecost_ms: 5000 }, now),
        Some(HostState::Overload)
    );
    // A success's timecost is its latency (0 = unknown); classic ignores it.
    assert_eq!(Outcome::from_retcode(0, 0), Outcome::Success);
    assert_eq!(
        Outcome::from_retcode(0, 7),
        Outcome::SuccessIn { latency_ms: 7 }
    );
    assert_eq!(
        Outcome::from_retcode(2, 7),
        Outcome::Failure { timecost_ms: 7 }
    );
}

#[test]
fn update_keeps_adds_and_removes() {
    let (mut lb, now) = lb_with(no_contin(), 4);
    overload(&mut lb, host(2), now);
    lb.report(host(3), Outcome::Success, now);
    let later = now + Duration::from_secs(2);
    let sum = lb.update(&[host(2), host(3), host(5), host(3)], later);
    assert_eq!(
        sum,
        UpdateSummary {
            added: 1,
            removed: 2,
            kept: 2
        }
    );
    assert_eq!(lb.len(), 3);
    assert!(!lb.contains(host(1)) && !lb.contains(host(4)));
    assert_eq!(lb.host(host(2)).unwrap().state, HostState::Overload);
    assert_eq!(lb.host(host(3)).unwrap().counters.vsucc, 181);
    let fresh = lb.host(host(5)).unwrap();
    assert_eq!(
        (fresh.state, fresh.counters.vsucc, fresh.since),
        (HostState::Idle, 180, later)
    );
    assert_eq!(lb.overload_hosts().collect::<Vec<_>>(), vec![host(2)]);
    let mut idle: Vec<_> = lb.idle_hosts().collect();
    idle.sort();
    assert_eq!(idle, vec![host(3), host(5)]);
    lb.check_invariants().unwrap();
    // Picks never return a removed host.
    for _ in 0..50 {
        let h = lb.choice_one_host(later).host().unwrap();
        assert!(lb.contains(h));
    }
    // Reports for removed hosts are ignored.
    assert_eq!(lb.report(host(1), FAIL, later), None);
    // An empty update removes everything.
    let sum = lb.update(&[], later);
    assert_eq!(
        sum,
        UpdateSummary {
            added: 0,
            removed: 3,
            kept: 0
        }
    );
    assert!(lb.is_empty());
    assert_eq!(lb.next_deadline(), None);
    lb.check_invariants().unwrap();
}

#[test]
fn statistics_batches_count_per_interval() {
    let (mut lb, now) = lb_with(LbConfig::classic(), 3);
    assert!(lb.take_report().is_empty());
    lb.report(host(1), Outcome::Success, now);
    lb.report(host(1), FAIL, now);
    lb.report(host(1), Outcome::Success, now);
    let r = lb.take_report();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].host, r[0].succ, r[0].err, r[0].overload),
        (host(1), 2, 1, false)
    );
    assert!(lb.take_report().is_empty());
    // A state change without traffic is reported with the new flag.
    overload(&mut lb, host(2), now);
    lb.take_report();
    lb.handle_timeout(now + Duration::from_secs(15));
    let mut r = lb.take_report();
    r.sort_by_key(|r| r.host);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].host, r[0].succ, r[0].err, r[0].overload),
        (host(2), 0, 0, false)
    );
    // Pending counts of a removed host are not lost.
    lb.report(host(3), FAIL, now + Duration::from_secs(15));
    lb.update(&hosts(2), now + Duration::from_secs(16));
    let r = lb.take_report();
    assert_eq!((r[0].host, r[0].err), (host(3), 1));
}

#[test]
fn events_are_bounded_and_can_be_off() {
    let (mut lb, now) = lb_with(LbConfig::classic(), 1);
    lb.set_event_capacity(2);
    for _ in 0..5 {
        overload(&mut lb, host(1), now);
        for _ in 0..6 {
            lb.report(host(1), Outcome::Success, now);
        }
    }
    assert_eq!(lb.drain_events().count(), 2);
    assert_eq!(lb.dropped_events(), 8);
    lb.set_event_capacity(0);
    overload(&mut lb, host(1), now);
    assert!(lb.poll_event().is_none());
}

#[test]
fn time_never_goes_back() {
    let (mut lb, now) = lb_with(LbConfig::classic(), 1);
    let late = now + Duration::from_secs(20);
    lb.handle_timeout(late);
    assert_eq!(lb.host(host(1)).unwrap().since, late);
    // An older `now` is treated as the latest seen.
    overload(&mut lb, host(1), now);
    assert_eq!(lb.host(host(1)).unwrap().since, late);
    lb.check_invariants().unwrap();
}

#[test]
fn zero_timeouts_do_not_loop() {
    let cfg = LbConfig {
        idle_timeout: Duration::ZERO,
        overload_timeout: Duration::ZERO,
        ..LbConfig::classic()
    };
    let (mut lb, now) = lb_with(cfg, 3);
    overload(&mut lb, host(1), now);
    lb.handle_timeout(now);
    lb.handle_timeout(now + Duration::from_millis(1));
    assert_eq!(lb.idle_len(), 3);
    lb.check_invariants().unwrap();
}
