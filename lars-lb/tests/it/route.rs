//! RouteLb: pulls, route status, empty routes, statistics, timers.

use std::time::Duration;

use lars_lb::{
    Choice, HostState, KeyLimits, LbConfig, LbEvent, ModKey, Outcome, RouteApplied, RouteLb,
    RouteStatus, UpdateSummary,
};

use crate::{host, hosts, t0};

const K: ModKey = ModKey::new(1, 2);
const K2: ModKey = ModKey::new(3, 4);

#[test]
fn an_unknown_key_answers_noexist_and_pulls_once() {
    let now = t0();
    let mut r = RouteLb::new(LbConfig::classic());
    assert_eq!(r.get_host(K, now), Choice::NoExist);
    assert_eq!(r.status(K), Some(RouteStatus::Pulling));
    assert_eq!(r.get_host(K, now), Choice::NoExist);
    assert_eq!(r.get_route(K, now), None);
    assert_eq!(r.take_pulls(), vec![K]);
    assert_eq!(r.poll_pull(), None);
    let applied = r.apply_route(K, &hosts(2), now);
    assert_eq!(
        applied,
        RouteApplied::Updated(UpdateSummary {
            added: 2,
            removed: 0,
            kept: 0
        })
    );
    assert_eq!(r.status(K), Some(RouteStatus::New));
    assert_eq!(r.get_host(K, now), Choice::Idle(host(1)));
    assert_eq!(r.get_route(K, now), Some(hosts(2)));
    assert_eq!(r.poll_pull(), None);
}

#[test]
fn stale_routes_are_pulled_again_but_never_twice_while_pulling() {
    let now = t0();
    let mut r = RouteLb::new(LbConfig::classic());
    r.get_host(K, now);
    r.take_pulls();
    r.apply_route(K, &hosts(1), now);
    // Exactly update_timeout old is still fresh (the original uses `>`).
    r.get_host(K, now + Duration::from_secs(15));
    assert_eq!(r.poll_pull(), None);
    let late = now + Duration::from_secs(16);
    assert_eq!(r.get_host(K, late), Choice::Idle(host(1)));
    assert_eq!(r.take_pulls(), vec![K]);
    r.get_host(K, late);
    r.get_route(K, late);
    assert!(r.take_pulls().is_empty());
    // The connection to the dns dropped: PULLING goes back to NEW and the
    // next use pulls again.
    r.reset_pulling();
    assert_eq!(r.status(K), Some(RouteStatus::New));
    r.get_host(K, late);
    assert_eq!(r.take_pulls(), vec![K]);
    assert_eq!(r.keys().collect::<Vec<_>>(), vec![K]);
}

#[test]
fn empty_route_protection_keeps_the_last_hosts() {
    let now = t0();
    let mut r = RouteLb::new(LbConfig::classic());
    r.get_host(K, now);
    r.apply_route(K, &hosts(2), now);
    assert_eq!(r.apply_route(K, &[], now), RouteApplied::KeptEmpty);
    assert_eq!(r.get_route(K, now), Some(hosts(2)));
    let evs: Vec<_> = r.drain_events().collect();
    assert_eq!(evs, vec![LbEvent::EmptyRouteKept { key: K, hosts: 2 }]);
    assert_eq!(r.status(K), Some(RouteStatus::New));
}

#[test]
fn without_protection_an_empty_route_removes_the_key() {
    let now = t0();
    let cfg = LbConfig {
        empty_route_protection: false,
        ..LbConfig::classic()
    };
    let mut r = RouteLb::new(cfg);
    r.get_host(K, now);
    r.apply_route(K, &hosts(2), now);
    assert_eq!(r.apply_route(K, &[], now), RouteApplied::Removed);
    assert!(r.status(K).is_none());
    assert_eq!(r.poll_event(), Some(LbEvent::KeyRemoved { key: K }));
    // Answers for keys not in use are ignored, as in the original.
    assert_eq!(r.apply_route(K, &hosts(1), now), RouteApplied::Ignored);
    assert!(r.is_empty());
}

#[test]
fn an_empty_first_answer_waits_update_timeout_before_pulling_again() {
    let now = t0();
    let mut r = RouteLb::new(LbConfig::classic());
    r.get_host(K, now);
    r.take_pulls();
    assert_eq!(
        r.apply_route(K, &[], now),
        RouteApplied::Updated(UpdateSummary::default())
    );
    assert_eq!(r.get_host(K, now + Duration::from_secs(1)), Choice::NoExist);
    assert!(r.take_pulls().is_empty());
    r.get_host(K, now + Duration::from_secs(16));
    assert_eq!(r.take_pulls(), vec![K]);
}

#[test]
fn reports_become_one_batch_per_key_with_interval_counts() {
    let now = t0();
    let mut r = RouteLb::new(LbConfig::classic());
    for k in [K, K2] {
        r.get_host(k, now);
        r.apply_route(k, &hosts(3), now);
    }
    for _ in 0..3 {
        r.report(K, host(1), Outcome::Success, now);
    }
    r.report(K, host(2), Outcome::Failure { timecost_ms: 0 }, now);
    assert_eq!(r.report(K2, host(9), Outcome::Success, now), None);
    assert_eq!(
        r.report(ModKey::new(9, 9), host(1), Outcome::Success, now),
        None
    );
    let b = r.take_report_batches();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].key, K);
    let mut res = b[0].results.clone();
    res.sort_by_key(|h| h.host);
    assert_eq!(
        res.iter()
            .map(|h| (h.host, h.succ, h.err, h.overload))
            .collect::<Vec<_>>(),
        vec![(host(1), 3, 0, false), (host(2), 0, 1, false)]
    );
    assert!(r.take_report_batches().is_empty());
    r.report(K2, host(3), Outcome::Success, now);
    let b = r.take_report_batches();
    assert_eq!((b.len(), b[0].key, b[0].results[0].succ), (1, K2, 1));
}

#[test]
fn timers_of_all_keys_are_driven_through_next_deadline() {
    let now = t0();
    let mut r = RouteLb::new(LbConfig::classic());
    r.get_host(K, now);
    r.apply_route(K, &hosts(2), now);
    let t1 = now + Duration::from_secs(5);
    r.get_host(K2, t1);
    r.apply_route(K2, &hosts(2), t1);
    for _ in 0..15 {
        r.report(K2, host(1), Outcome::Failure { timecost_ms: 0 }, t1);
    }
    assert_eq!(r.lb(K2).unwrap().overload_len(), 1);
    // Drive like an event loop: sleep until next_deadline, handle it.
    let mut now = now;
    let end = t1 + Duration::from_secs(20);
    while let Some(d) = r.next_deadline() {
        if d > end {
            break;
        }
        assert!(d >= now, "deadlines move forward");
        now = d;
        r.handle_timeout(now);
    }
    assert_eq!(r.lb(K2).unwrap().overload_len(), 0);
    let back: Vec<_> = r
        .drain_events()
        .filter_map(|e| match e {
            LbEvent::Transition(t) if t.to == HostState::Idle => Some(t.at),
            _ => None,
        })
        .collect();
    assert_eq!(back, vec![t1 + Duration::from_secs(15)]);
    r.lb(K).unwrap().check_invariants().unwrap();
}

#[test]
fn routes_export_and_restore() {
    let now = t0();
    let mut a = RouteLb::new(LbConfig::classic());
    for (k, n) in [(K, 2), (K2, 3)] {
        a.get_host(k, now);
        a.apply_route(k, &hosts(n), now);
    }
    a.get_host(ModKey::new(7, 7), now); // pulling, no hosts: not exported
    let mut snap: Vec<_> = a.routes().collect();
    snap.sort();
    assert_eq!(snap, vec![(K, hosts(2)), (K2, hosts(3))]);
    let mut b = RouteLb::new(LbConfig::classic());
    for (k, h) in &snap {
        b.restore_route(*k, h, now);
    }
    // Restored routes serve at once and are refreshed from the dns.
    assert_eq!(b.get_host(K, now), Choice::Idle(host(1)));
    assert_eq!(b.take_pulls(), vec![K]);
    assert_eq!(b.status(K), Some(RouteStatus::Pulling));
}

fn limited(max_empty_keys: usize, expiry_s: u64) -> RouteLb {
    let mut r = RouteLb::new(LbConfig::default());
    r.set_key_limits(KeyLimits {
        max_empty_keys,
        empty_key_expiry: Some(Duration::from_secs(expiry_s)),
    });
    r
}

#[test]
fn unknown_keys_beyond_the_cap_are_refused_without_a_pull() {
    let now = t0();
    let mut r = limited(2, 60);
    let (k1, k2, k3) = (ModKey::new(9, 1), ModKey::new(9, 2), ModKey::new(9, 3));
    assert_eq!(r.get_host(k1, now), Choice::NoExist);
    assert_eq!(r.get_route(k2, now), None);
    assert_eq!(r.empty_keys(), 2);
    assert_eq!(r.get_host(k3, now), Choice::NoExist);
    assert_eq!(r.get_route(k3, now), None);
    assert_eq!(r.refused_keys(), 2);
    assert_eq!(r.len(), 2);
    assert_eq!(r.take_pulls(), vec![k1, k2]);
    // A key that gets hosts no longer counts: room for another.
    r.apply_route(k1, &hosts(1), now);
    assert_eq!(r.empty_keys(), 1);
    assert_eq!(r.get_host(k3, now), Choice::NoExist);
    assert_eq!(r.take_pulls(), vec![k3]);
    assert_eq!(r.refused_keys(), 2);
    // Known keys are never refused, with or without hosts.
    assert_eq!(r.get_host(k2, now), Choice::NoExist);
    assert_eq!(r.get_host(k1, now), Choice::Idle(host(1)));
    assert_eq!(r.refused_keys(), 2);
}

#[test]
fn keys_without_hosts_and_without_use_expire_and_are_handed_out() {
    let now = t0();
    let s = Duration::from_secs;
    let mut r = limited(usize::MAX, 60);
    let (idle, used, served) = (ModKey::new(9, 1), ModKey::new(9, 2), ModKey::new(9, 3));
    for k in [idle, used, served] {
        r.get_host(k, now);
    }
    r.apply_route(idle, &[], now); // the dns knows no hosts
    r.apply_route(served, &hosts(1), now);
    let _ = r.take_pulls();
    assert_eq!(r.next_deadline(), Some(now + s(60)));
    r.get_host(used, now + s(30));
    r.handle_timeout(now + s(59));
    assert!(r.take_forgotten().is_empty());
    r.handle_timeout(now + s(60));
    assert_eq!(r.take_forgotten(), vec![idle]);
    assert_eq!(r.expired_keys(), 1);
    assert_eq!(r.status(idle), None);
    assert_eq!(r.empty_keys(), 1);
    // The next sweep is when the used key falls due; the served key stays.
    assert_eq!(r.next_deadline(), Some(now + s(90)));
    r.handle_timeout(now + s(90));
    assert_eq!(r.take_forgotten(), vec![used]);
    assert_eq!(r.next_deadline(), None);
    r.handle_timeout(now + s(10_000));
    assert_eq!(r.keys().collect::<Vec<_>>(), vec![served]);
    // An expired key asked for again is new again: pulled.
    assert_eq!(r.get_host(idle, now + s(10_001)), Choice::NoExist);
    assert_eq!(r.take_pulls(), vec![idle]);
}

#[test]
fn a_confirmed_empty_answer_removes_hosts_despite_protection() {
    let now = t0();
    let mut r = limited(usize::MAX, 60);
    assert!(r.config().empty_route_protection);
    r.get_host(K, now);
    r.apply_route(K, &hosts(2), now);
    // A plain empty answer (a failure, or an original dns) keeps them.
    assert_eq!(r.apply_route(K, &[], now), RouteApplied::KeptEmpty);
    assert_eq!(r.get_route(K, now), Some(hosts(2)));
    // A confirmed one does not.
    let applied = r.apply_confirmed_empty(K, now);
    assert!(
        matches!(applied, RouteApplied::Updated(s) if s.removed == 2),
        "{applied:?}"
    );
    assert!(
        r.drain_events()
            .any(|e| e == LbEvent::RouteDeleted { key: K, hosts: 2 })
    );
    assert_eq!(r.get_host(K, now), Choice::NoExist);
    assert_eq!(r.routes().count(), 0);
    assert_eq!(r.empty_keys(), 1);
    // Unknown keys are ignored; then the key expires like any empty one.
    assert_eq!(r.apply_confirmed_empty(K2, now), RouteApplied::Ignored);
    r.handle_timeout(now + Duration::from_secs(60));
    assert_eq!(r.take_forgotten(), vec![K]);
}

#[test]
fn keys_used_at_scattered_times_expire_in_few_sweeps_and_at_most_a_sixteenth_late() {
    let now = t0();
    let s = Duration::from_secs;
    let mut r = limited(usize::MAX, 160);
    for i in 0..100u32 {
        r.get_host(ModKey::new(100 + i, 1), now + s(u64::from(i)));
    }
    let mut sweeps = 0;
    let mut gone = 0;
    while let Some(d) = r.next_deadline() {
        r.handle_timeout(d);
        let f = r.take_forgotten();
        for k in &f {
            // Key 100 + i was last used at i s: due at 160 + i s.
            let due = now + s(160 + u64::from(k.modid - 100));
            assert!(d >= due && d <= due + s(10), "{k} at {:?}", d - now);
        }
        gone += f.len();
        sweeps += 1;
    }
    assert_eq!(gone, 100);
    assert!(sweeps <= 11, "{sweeps} sweeps");
}
