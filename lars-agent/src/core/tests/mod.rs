//! The core in virtual time: no sockets, no threads, no sleeps.
#![allow(clippy::unwrap_used)]

mod sharding;
mod util;

use std::net::Ipv4Addr;
use std::time::Duration;

use lars_core::proto::{GetHostRequest, GetRouteRequest};
use lars_core::{MessageId, ModKey, RetCode};
use lars_lb::{Choice, HostReport, KeyLimits, KeyReport, LoadBalanceConfig, Outcome, Policy};
use lars_stats::COUNTER_LIMIT;

use super::{AgentCore, CoreConfig, Event, Reply, Request, Shard, Transmit};
use util::{Pair, UNIX_START, datagram, h};

const K: ModKey = ModKey::new(1, 1);

fn retcode(r: RetCode) -> i32 {
    r.into()
}

// ---- routes: pulls, replies, pushes ----------------------------------------

#[test]
fn first_use_answers_noexist_pulls_once_then_serves() {
    let mut p = Pair::new();
    p.dns.routes.insert(K, vec![h("10.0.0.1:80")]);
    p.dns.hold = true;
    assert_eq!(p.get_host(K).retcode, retcode(RetCode::NoExist));
    // PULLING: asking again does not pull again.
    assert_eq!(p.get_host(K).retcode, retcode(RetCode::NoExist));
    assert_eq!(p.dns.pulls, vec![K]);
    p.dns.hold = false;
    p.drive();
    let r = p.get_host(K);
    assert_eq!(r.retcode, retcode(RetCode::Succ));
    assert_eq!(p.host(K), Some(h("10.0.0.1:80")));
    let c = p.core.counters();
    assert_eq!((c.get_host, c.get_host_noexist, c.get_host_succ), (4, 2, 2));
    assert_eq!((c.pulls, c.routes_applied), (1, 1));
}

#[test]
fn get_route_get_host_and_report_are_answered_as_the_original() {
    let mut p = Pair::new();
    p.set_route(K, &["10.0.0.2:80", "10.0.0.1:80"]);
    // Unknown: an empty answer, and a pull.
    assert_eq!(p.get_route(K), vec![]);
    assert_eq!(p.get_route(K), vec![h("10.0.0.1:80"), h("10.0.0.2:80")]);
    let host = p.host(K).unwrap();
    // A report is never answered (Pair::report checks).
    p.report(K, host, 0);
    // A key with no hosts at the dns: an empty answer, NoExist.
    let empty = ModKey::new(2, 2);
    assert_eq!(p.get_route(empty), vec![]);
    assert_eq!(p.get_host(empty).retcode, retcode(RetCode::NoExist));
    let c = p.core.counters();
    assert_eq!((c.get_route, c.get_host, c.reports), (3, 2, 1));
}

#[test]
fn garbage_is_dropped_counted_and_never_answered() {
    let mut p = Pair::new();
    let good = datagram(
        MessageId::GetHostRequest,
        &GetHostRequest {
            seq: 1,
            modid: 1,
            cmdid: 1,
        },
    );
    let mut wrong_len = good.clone();
    wrong_len.push(0);
    let mut unknown = good.clone();
    unknown[0] = 99;
    let mut bad_body = vec![4, 0, 0, 0, 3, 0, 0, 0];
    bad_body.extend_from_slice(&[0xff, 0xff, 0xff]);
    let no_host = datagram(
        MessageId::ReportRequest,
        &lars_core::proto::ReportRequest {
            modid: 1,
            cmdid: 1,
            ..Default::default()
        },
    );
    let garbage: Vec<&[u8]> = vec![b"", b"xyz", &wrong_len, &unknown, &bad_body, &no_host];
    for g in &garbage {
        p.send(g);
    }
    assert!(p.replies.is_empty());
    assert_eq!(p.core.counters().garbage, garbage.len() as u64);
    p.send(&good);
    assert_eq!(p.replies.len(), 1);
}

#[test]
fn dns_pushes_change_the_hosts_and_are_handed_out_for_the_snapshot() {
    let cfg =
        CoreConfig::new(LoadBalanceConfig::default()).snapshot_interval(Duration::from_secs(2));
    let mut p = Pair::with(cfg);
    p.set_route(K, &["10.0.0.1:80"]);
    assert_eq!(p.get_route(K), vec![]);
    assert_eq!(p.get_route(K), vec![h("10.0.0.1:80")]);
    p.set_route(K, &["10.0.0.2:80", "10.0.0.3:80"]);
    assert_eq!(p.get_route(K), vec![h("10.0.0.2:80"), h("10.0.0.3:80")]);
    // An empty push keeps the hosts (empty-route protection).
    p.set_route(K, &[]);
    assert_eq!(p.get_route(K).len(), 2);
    // One snapshot for both changes, once the interval passed.
    assert_eq!(p.core.poll_event(), None);
    p.advance(Duration::from_secs(2));
    assert_eq!(
        p.core.poll_event(),
        Some(Event::Snapshot(vec![(
            K,
            vec![h("10.0.0.2:80"), h("10.0.0.3:80")]
        )]))
    );
    assert_eq!(p.core.poll_event(), None);
    assert_eq!(p.core.counters().pulls, 1, "pushes need no pull");
}

#[test]
fn dns_reconnect_pulls_every_key_again_and_pushes_resume() {
    let mut p = Pair::new();
    let (a, b, c) = (ModKey::new(1, 1), ModKey::new(2, 1), ModKey::new(3, 1));
    p.set_route(a, &["10.0.0.1:80"]);
    p.set_route(b, &["10.0.0.2:80"]);
    p.set_route(c, &["10.0.0.3:80"]);
    assert_eq!(p.host(a), None);
    assert_eq!(p.host(a), Some(h("10.0.0.1:80")));
    // b's pull is lost with the connection.
    p.dns.hold = true;
    assert_eq!(p.host(b), None);
    p.dns_down();
    // Known keys are served from memory; a new key is not pulled while the
    // dns is away.
    assert_eq!(p.host(a), Some(h("10.0.0.1:80")));
    assert_eq!(p.host(c), None);
    assert_eq!(p.dns.pulls, vec![a, b]);
    p.dns.hold = false;
    p.dns_up();
    // Every key in use is pulled again, which also subscribes it.
    assert_eq!(p.dns.pulls[2..], [a, b, c]);
    assert_eq!(p.host(b), Some(h("10.0.0.2:80")));
    assert_eq!(p.host(c), Some(h("10.0.0.3:80")));
    p.set_route(a, &["10.0.0.9:80"]);
    assert_eq!(p.host(a), Some(h("10.0.0.9:80")));
    assert_eq!(p.dns.pulls.len(), 5, "no pull beyond the reconnect's");
}

#[test]
fn a_key_pulling_when_the_dns_reconnects_is_pulled_once() {
    let mut p = Pair::new();
    p.dns.hold = true;
    assert_eq!(p.host(K), None);
    p.dns_down();
    p.dns_up();
    assert_eq!(p.dns.pulls, vec![K, K]);
    // PULLING again after the reconnect: using it does not pull a third time.
    assert_eq!(p.host(K), None);
    assert_eq!(p.dns.pulls.len(), 2);
}

#[test]
fn a_request_for_another_shards_key_is_handled_by_the_owner_from_the_arrival_port() {
    let now = Pair::new().now;
    let shard = |i| {
        let cfg = CoreConfig::new(LoadBalanceConfig::classic()).shard(Shard::new(i, 3).unwrap());
        let mut core = AgentCore::new(cfg);
        core.on_dns_connected(now);
        core
    };
    let mut cores: Vec<AgentCore> = (0..3).map(shard).collect();
    let app = "127.0.0.1:40000".parse().unwrap();
    // (1 + 1) % 3 = 2 owns K; the request arrives on port 0.
    let ask = datagram(
        MessageId::GetHostRequest,
        &GetHostRequest {
            seq: 42,
            modid: 1,
            cmdid: 1,
        },
    );
    cores[0].handle_datagram(app, &ask, now);
    let Some(Transmit::Shard {
        shard: 2,
        via: 0,
        from,
        request,
    }) = cores[0].poll_transmit()
    else {
        panic!("expected a request for shard 2");
    };
    assert_eq!(request, Request::GetHost { seq: 42, key: K });
    assert_eq!(cores[0].counters().forwarded, 1);
    assert!(
        cores[0].routes().is_empty(),
        "no state on the arrival shard"
    );
    cores[2].handle_request(0, from, request, now);
    match cores[2].poll_transmit() {
        Some(Transmit::App {
            via: 0,
            to,
            reply: Reply::GetHost(r),
        }) => assert_eq!((to, r.seq, r.retcode), (app, 42, retcode(RetCode::NoExist))),
        other => panic!("expected a reply via shard 0, got {other:?}"),
    }
    assert_eq!(
        cores[2].poll_transmit(),
        Some(Transmit::Dns(GetRouteRequest { modid: 1, cmdid: 1 }))
    );
    assert_eq!(cores[2].counters().get_host_noexist, 1);
    // Snapshot routes are restored by the shard owning them only.
    let routes = vec![
        (K, vec![h("10.0.0.1:80")]),
        (ModKey::new(1, 2), vec![h("10.0.0.2:80")]),
    ];
    for c in &mut cores {
        c.restore(&routes, now);
    }
    let owned: Vec<usize> = cores.iter().map(|c| c.routes().len()).collect();
    assert_eq!(owned, vec![1, 0, 1]);
}

// ---- bounded keys: cap, expiry, unsubscribe ------------------------------

fn limited(max_empty_keys: usize, expiry_s: u64) -> Pair {
    Pair::with(
        CoreConfig::new(LoadBalanceConfig::default())
            .snapshot_interval(Duration::from_secs(2))
            .key_limits(KeyLimits {
                max_empty_keys,
                empty_key_expiry: Some(Duration::from_secs(expiry_s)),
            }),
    )
}

#[test]
fn a_spray_of_unknown_keys_is_capped_counted_and_not_pulled() {
    let mut p = limited(100, 300);
    p.set_route(K, &["10.0.0.1:80"]);
    assert_eq!(p.host(K), None);
    for i in 0..1000 {
        let r = p.get_host(ModKey::new(1000 + i, 7));
        assert_eq!(r.retcode, retcode(RetCode::NoExist));
    }
    let c = p.core.counters();
    assert_eq!(c.unknown_keys_refused, 900);
    assert_eq!(c.get_host_noexist, 1001);
    // 100 unknown keys and the served one; only they were pulled and
    // subscribed at the dns.
    assert_eq!(p.core.routes().len(), 101);
    assert_eq!(p.dns.pulls.len(), 101);
    assert_eq!(p.dns.subscribed.len(), 101);
    // A key with hosts is served whatever the cap.
    assert_eq!(p.host(K), Some(h("10.0.0.1:80")));
    // A refused key asked for again is still refused (no pull), until room
    // is made; then it is pulled like any new key.
    let late = ModKey::new(5000, 7);
    p.set_route(late, &["10.0.0.5:80"]);
    assert_eq!(p.host(late), None);
    assert!(!p.dns.pulls.contains(&late));
    assert_eq!(p.core.counters().unknown_keys_refused, 901);
    // After a dns reconnect only the keys held are pulled again.
    p.dns_down();
    p.dns_up();
    assert_eq!(p.dns.pulls.len(), 202);
}

#[test]
fn unknown_keys_without_use_expire_are_unsubscribed_and_used_keys_stay() {
    let mut p = limited(10_000, 300);
    p.set_route(K, &["10.0.0.1:80"]);
    assert_eq!(p.host(K), None);
    let sprayed: Vec<ModKey> = (0..50).map(|i| ModKey::new(2000 + i, 1)).collect();
    for &k in &sprayed {
        assert_eq!(p.host(k), None);
    }
    let kept = ModKey::new(9, 9); // no hosts, but asked for every minute
    assert_eq!(p.host(kept), None);
    assert_eq!(p.dns.subscribed.len(), 52);
    for _ in 0..4 {
        p.advance(Duration::from_secs(60));
        assert_eq!(p.host(kept), None);
        assert_eq!(p.core.counters().keys_expired, 0);
    }
    // 300 s after their last use the sprayed keys go, in one sweep.
    p.advance(Duration::from_secs(59));
    assert_eq!(p.core.counters().keys_expired, 0);
    p.advance(Duration::from_secs(1));
    let c = p.core.counters();
    assert_eq!((c.keys_expired, c.unsubscribes), (50, 50));
    assert_eq!(p.dns.unsubscribes, sprayed);
    assert_eq!(p.dns.subscribed.len(), 2);
    assert_eq!(p.core.routes().len(), 2);
    assert_eq!(p.host(K), Some(h("10.0.0.1:80")));
    // The used one goes 300 s after its last use (at 240 s); the key with
    // hosts is idle too, yet never expires.
    p.advance(Duration::from_secs(239));
    assert_eq!(p.core.counters().keys_expired, 50);
    p.advance(Duration::from_secs(1));
    assert_eq!(p.core.counters().keys_expired, 51);
    assert_eq!(p.dns.unsubscribes.last(), Some(&kept));
    // Nothing left to sweep: an idle core has no deadline.
    p.advance(Duration::from_secs(3));
    assert_eq!(p.core.poll_timeout(), None);
    // While the dns is away nothing is sent (it forgot our subscriptions).
    let late = ModKey::new(77, 1);
    assert_eq!(p.host(late), None);
    p.dns_down();
    p.advance(Duration::from_secs(301));
    let c = p.core.counters();
    assert_eq!((c.keys_expired, c.unsubscribes), (52, 51));
}

#[test]
fn a_delete_the_dns_confirms_removes_the_hosts_despite_protection() {
    let mut p = limited(10_000, 300);
    p.dns.confirms_empty = true;
    assert!(p.core.routes().config().empty_route_protection);
    p.set_route(K, &["10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(p.get_route(K), vec![]);
    assert_eq!(p.get_route(K).len(), 2);
    p.advance(Duration::from_secs(2));
    assert!(matches!(p.core.poll_event(), Some(Event::Snapshot(r)) if r.len() == 1));
    // The operator deletes every host: the push says so.
    p.set_route(K, &[]);
    assert_eq!(p.get_route(K), vec![]);
    assert_eq!(p.get_host(K).retcode, retcode(RetCode::NoExist));
    assert_eq!(p.core.counters().routes_deleted, 1);
    // The snapshot forgets the key.
    p.advance(Duration::from_secs(2));
    assert_eq!(p.core.poll_event(), Some(Event::Snapshot(vec![])));
    // Hosts added again come back with the next push.
    p.set_route(K, &["10.0.0.3:80"]);
    assert_eq!(p.host(K), Some(h("10.0.0.3:80")));
}

#[test]
fn an_unconfirmed_empty_answer_keeps_the_hosts_even_after_a_restart() {
    // A dns that lost its store (or an original dns) answers empty without
    // confirming: protection keeps the hosts, also for keys restored from a
    // snapshot and pulled after a restart.
    let mut p = limited(10_000, 300);
    p.set_route(K, &["10.0.0.1:80"]);
    assert_eq!(p.host(K), None);
    p.set_route(K, &[]);
    assert_eq!(p.host(K), Some(h("10.0.0.1:80")));
    assert_eq!(p.core.counters().empty_routes_kept, 1);
    let mut restarted = limited(10_000, 300);
    restarted
        .core
        .restore(&[(K, vec![h("10.0.0.1:80")])], restarted.now);
    restarted.dns_down();
    restarted.dns_up();
    assert_eq!(restarted.dns.pulls, vec![K]);
    assert_eq!(restarted.host(K), Some(h("10.0.0.1:80")));
    // A lars dns confirming the delete removes them after the restart too.
    restarted.dns.confirms_empty = true;
    restarted.dns_down();
    restarted.dns_up();
    assert_eq!(restarted.host(K), None);
    assert_eq!(restarted.core.snapshot_routes(), vec![]);
    assert_eq!(p.core.counters().routes_deleted, 0);
}

// ---- statistics ------------------------------------------------------------

#[test]
fn statistics_are_cumulative_announced_first_and_only_new_traffic_is_sent() {
    let mut p = Pair::new();
    let (a, b) = (ModKey::new(1, 1), ModKey::new(2, 1));
    let (x, y) = (h("10.0.0.1:80"), h("10.0.0.2:80"));
    for k in [a, b] {
        p.set_route(k, &["10.0.0.1:80", "10.0.0.2:80"]);
        p.get_route(k);
    }
    p.report(a, x, 0);
    p.report(a, x, 1);
    p.report(a, y, 0);
    p.advance(Duration::from_secs(1));
    p.report(a, x, 0);
    p.advance(Duration::from_secs(1));
    p.advance(Duration::from_secs(1));
    let m = &p.reporter.messages;
    assert_eq!(m.len(), 2, "{m:?}");
    let caller = u32::from(Ipv4Addr::new(10, 1, 2, 3)) as i32;
    // First the hosts seen for the first time, at (0, 0): the reset the
    // reporter needs before counters that start from zero, in the same
    // message as the counters (a reporter that applies messages in any order
    // still sees the reset first).
    assert_eq!((m[0].ts, m[0].caller), (UNIX_START, caller));
    let counts = |i: usize| -> Vec<(u32, u32)> {
        p.reporter.messages[i]
            .results
            .iter()
            .map(|r| (r.succ, r.err))
            .collect()
    };
    assert_eq!(counts(0), vec![(0, 0), (0, 0), (1, 1), (1, 0)]);
    // Then only host x, with its cumulative counters, no zeros, in a later
    // interval.
    assert!(p.reporter.messages[1].ts > UNIX_START);
    assert_eq!(counts(1), vec![(2, 1)]);
    assert_eq!(p.reporter.totals[&(a, x)], (2, 1));
    assert_eq!(p.reporter.totals[&(a, y)], (1, 0));
    assert_eq!(p.core.counters().report_messages, 2);
    assert_eq!(p.core.cumulative(a, x), (2, 1));
}

#[test]
fn one_message_per_key_per_interval_however_many_reports() {
    let mut p = Pair::new();
    let x = h("10.0.0.1:80");
    p.set_route(K, &["10.0.0.1:80"]);
    p.get_route(K);
    for _ in 0..10 {
        for _ in 0..100 {
            p.report(K, x, 0);
        }
        p.advance(Duration::from_millis(100));
    }
    p.advance(Duration::from_secs(1));
    // The first report goes out at once, the rest one interval later.
    assert_eq!(p.reporter.counts(K), vec![(0, 0), (100, 0), (1000, 0)]);
    assert_eq!(p.reporter.totals[&(K, x)], (1000, 0));
}

#[test]
fn counters_about_to_pass_2_31_restart_from_zero_announced_and_counted_once() {
    let mut p = Pair::new();
    let x = h("10.0.0.1:80");
    p.set_route(K, &["10.0.0.1:80"]);
    p.get_route(K);
    p.report(K, x, 0);
    p.advance(Duration::from_secs(1));
    // Pretend the host already carried almost 2^31 successes.
    let now = p.now;
    p.core.stats.record(
        vec![KeyReport {
            key: K,
            results: vec![HostReport {
                host: x,
                succ: COUNTER_LIMIT - 1,
                err: 0,
                overload: false,
            }],
        }],
        now,
    );
    p.report(K, x, 0);
    p.report(K, x, 0);
    p.advance(Duration::from_secs(3));
    let sent = p.reporter.counts(K);
    // No counter ever passes the limit; the restart is announced by (0, 0)
    // before the counters start again from the new calls, in one message.
    assert!(
        sent.iter()
            .all(|&(s, e)| s <= COUNTER_LIMIT && e <= COUNTER_LIMIT)
    );
    assert_eq!(sent[sent.len() - 2..], [(0, 0), (2, 0)], "{sent:?}");
    let last = p.reporter.messages.last().map(|m| m.results.len());
    assert_eq!(last, Some(2), "announcement and values share the message");
    assert_eq!(p.core.counters().counter_restarts, 1);
    // The reporter counts every call once, across the restart.
    assert_eq!(
        p.reporter.totals[&(K, x)],
        (u64::from(COUNTER_LIMIT) + 2, 0)
    );
}

#[test]
fn a_restarted_core_announces_its_reset_so_no_call_is_lost() {
    let mut p = Pair::new();
    let x = h("10.0.0.1:80");
    // Life 1: 2 calls. Life 2: 3 calls, counted from zero again; without the
    // (0, 0) announcement the reporter would read 2 -> 3 as one new call.
    for calls in [2, 3] {
        p.core = AgentCore::new(CoreConfig::new(LoadBalanceConfig::default()));
        p.dns.subscribed.clear();
        p.dns_up();
        p.reporter_up();
        p.set_route(K, &["10.0.0.1:80"]);
        p.get_route(K);
        for _ in 0..calls {
            p.report(K, x, 0);
        }
        p.advance(Duration::from_secs(1));
    }
    assert_eq!(p.reporter.totals[&(K, x)], (5, 0));
}

#[test]
fn reporter_away_merges_bounded_keys_and_everything_goes_out_when_it_returns() {
    let cfg = CoreConfig::new(LoadBalanceConfig::default()).max_pending_report_keys(1);
    let mut p = Pair::with(cfg);
    let (a, b) = (ModKey::new(1, 1), ModKey::new(2, 1));
    let x = h("10.0.0.1:80");
    for k in [a, b] {
        p.set_route(k, &["10.0.0.1:80"]);
        p.get_route(k);
    }
    p.report(a, x, 0);
    p.advance(Duration::from_secs(1));
    p.reporter_down();
    for _ in 0..3 {
        p.report(a, x, 0);
        p.report(b, x, 0);
        p.advance(Duration::from_secs(1));
    }
    assert_eq!(p.core.pending_report_keys(), 1);
    assert!(p.core.counters().report_keys_dropped >= 1);
    let before = p.reporter.messages.len();
    p.reporter_up();
    p.advance(Duration::from_secs(1));
    assert!(
        p.reporter.messages.len() > before,
        "sent after the reconnect"
    );
    // Key a merged: (0, 0), its count 1, then one message with its
    // cumulative count 4.
    assert_eq!(p.reporter.counts(a), vec![(0, 0), (1, 0), (4, 0)]);
    // Key b did not fit while the reporter was away; its next traffic sends
    // its whole cumulative count.
    p.report(b, x, 0);
    p.advance(Duration::from_secs(1));
    assert_eq!(p.reporter.counts(b), vec![(0, 0), (4, 0)]);
    assert_eq!(p.reporter.totals[&(a, x)], (4, 0));
    assert_eq!(p.reporter.totals[&(b, x)], (4, 0));
}

#[test]
fn statistics_of_the_last_interval_are_resent_after_a_reconnect_and_count_once() {
    let mut p = Pair::new();
    let x = h("10.0.0.1:80");
    p.set_route(K, &["10.0.0.1:80"]);
    p.get_route(K);
    p.report(K, x, 0);
    p.report(K, x, 1);
    p.advance(Duration::ZERO);
    assert_eq!(p.reporter.counts(K), vec![(0, 0), (1, 1)]);
    // The connection drops before the next tick: maybe the message was lost
    // in flight.
    p.reporter_down();
    p.reporter_up();
    p.advance(Duration::from_secs(1));
    assert_eq!(p.reporter.counts(K), vec![(0, 0), (1, 1), (1, 1)]);
    assert_eq!(p.reporter.totals[&(K, x)], (1, 1), "a resend counts once");
}

#[test]
fn nothing_is_reported_for_unknown_keys_and_an_idle_core_has_no_deadline() {
    let mut p = Pair::new();
    p.report(ModKey::new(9, 9), h("10.0.0.1:80"), 0);
    assert_eq!(p.core.poll_timeout(), None);
    p.set_route(K, &["10.0.0.1:80", "10.0.0.2:80"]);
    p.get_route(K);
    let x = p.host(K).unwrap();
    p.report(K, x, 0);
    p.advance(Duration::from_secs(5));
    assert_eq!(p.reporter.counts(K), vec![(0, 0), (1, 0)]);
    // Reported, no host timer running: nothing to wake up for.
    assert_eq!(p.core.poll_timeout(), None);
}

// ---- host timers and policies ----------------------------------------------

#[test]
fn host_timers_run_at_their_deadline() {
    // The classic rules: a lone host is overloaded by 15 failures (the
    // adaptive policy keeps at least one host in rotation).
    let lb = LoadBalanceConfig {
        overload_timeout: Duration::from_secs(1),
        ..LoadBalanceConfig::classic()
    };
    let mut p = Pair::with(CoreConfig::new(lb));
    let x = h("10.0.0.1:80");
    p.set_route(K, &["10.0.0.1:80"]);
    p.get_route(K);
    for _ in 0..15 {
        p.report(K, x, 1);
    }
    assert_eq!(p.core.routes().lb(K).unwrap().overload_len(), 1);
    assert_eq!(p.core.counters().transitions, 1);
    assert_eq!(p.get_host(K).retcode, retcode(RetCode::Overload));
    let due = p.core.poll_timeout().unwrap();
    assert!(due <= p.now + Duration::from_secs(1));
    p.advance(Duration::from_secs(2));
    assert_eq!(p.core.routes().lb(K).unwrap().idle_len(), 1);
    assert_eq!(p.host(K), Some(x));
    // The overload and the return are in the statistics.
    assert!(
        p.reporter
            .messages
            .iter()
            .any(|m| m.results.iter().any(|r| r.overload))
    );
}

/// The core of `lb`, key K routed to `hosts`, and the first host failed 15
/// times in a row (out of rotation under both policies).
fn with_one_bad_host(lb: LoadBalanceConfig, hosts: &[&str]) -> Pair {
    let mut p = Pair::with(CoreConfig::new(lb));
    p.set_route(K, hosts);
    p.get_route(K);
    for _ in 0..15 {
        p.report(K, h(hosts[0]), 1);
    }
    assert_eq!(p.core.routes().lb(K).unwrap().overload_len(), 1);
    p
}

const THREE: [&str; 3] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];

#[test]
fn classic_policy_probes_every_probe_num_plus_1_picks() {
    let lb = LoadBalanceConfig {
        probe_num: 4,
        ..LoadBalanceConfig::classic()
    };
    let mut p = with_one_bad_host(lb, &THREE);
    assert_eq!(p.core.routes().config().policy, Policy::Classic);
    // Exactly one pick in every probe_num + 1 goes to the bad host, however
    // close together the picks are.
    let bad = h(THREE[0]);
    let probes: Vec<usize> = (0..20).filter(|_| p.host(K) == Some(bad)).collect();
    assert_eq!(probes, vec![4, 9, 14, 19]);
}

/// Needs the adaptive policy of lars-lb (probes limited in time).
#[test]
fn adaptive_policy_is_the_default_and_limits_probes_in_time() {
    let lb = LoadBalanceConfig::default();
    assert_eq!(lb.policy, Policy::Adaptive);
    let probe_interval = lb.adaptive.probe_interval;
    let mut p = with_one_bad_host(lb, &THREE);
    let bad = h(THREE[0]);
    // 100 picks at the same instant: no probe before probe_interval.
    assert_eq!((0..100).filter(|_| p.host(K) == Some(bad)).count(), 0);
    // Then at most one probe, however many picks.
    p.advance(probe_interval * 2);
    assert!((0..100).filter(|_| p.host(K) == Some(bad)).count() <= 1);
}

/// Needs the adaptive policy of lars-lb (latency estimates).
#[test]
fn latencies_reported_with_successes_reach_the_host_estimate() {
    let mut p = Pair::new();
    let (x, y) = (h("10.0.0.1:80"), h("10.0.0.2:80"));
    p.set_route(K, &["10.0.0.1:80", "10.0.0.2:80"]);
    p.get_route(K);
    for _ in 0..20 {
        p.report_in(K, x, 0, 5);
        p.report(K, y, 0);
        p.advance(Duration::from_millis(10));
    }
    let lb = p.core.routes().lb(K).unwrap();
    let est = lb.host(x).unwrap().latency_ms;
    assert!(est.is_some_and(|ms| (4.0..=6.0).contains(&ms)), "{est:?}");
    // Successes without a latency are neutral: no estimate.
    assert_eq!(lb.host(y).unwrap().latency_ms, None);
}

#[test]
fn the_application_api_is_the_datagram_api_without_the_datagrams() {
    let mut p = Pair::new();
    p.set_route(K, &["10.0.0.1:80"]);
    let now = p.now;
    assert_eq!(p.core.get_host(K, now), Choice::NoExist);
    p.drive();
    assert_eq!(p.core.get_host(K, now), Choice::Idle(h("10.0.0.1:80")));
    p.core.report(K, h("10.0.0.1:80"), Outcome::Success, now);
    assert_eq!(p.core.get_route(K, now), vec![h("10.0.0.1:80")]);
    assert!(p.replies.is_empty());
    let c = p.core.counters();
    assert_eq!((c.get_host, c.reports, c.get_route), (2, 1, 1));
}
