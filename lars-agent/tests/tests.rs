//! End-to-end tests: dns, reporter and agent in-process on ephemeral ports,
//! SQLite, real UDP clients.
#![allow(clippy::unwrap_used)]
// Real sockets, threads and time: these tests run the services.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod failover;
mod tls;
mod util;

use std::collections::BTreeSet;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use lars_agent::{Agent, EmbeddedAgent};
use lars_bench::simulate::{ErrRate, SimOptions, simulate};
use lars_client::{ApiError, ClientConfig, LarsClient, Outcome};
use lars_core::proto::{GetHostRequest, GetHostResponse};
use lars_core::{MessageId, ModKey, frame};
use lars_lb::{LoadBalanceConfig, Policy};
use lars_store::{RouteAdmin, StatsStore};

use util::{Env, client, hosts, http_get, json, reg, v4, wait_until};

const T: Duration = Duration::from_secs(2);

#[test]
fn first_get_host_is_noexist_then_reg_init_resolves_and_hosts_rotate() {
    let env = Env::new();
    let hs = hosts(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
    env.set_hosts(1, 1, &hs);
    // Strict round-robin is the classic rule (adaptive weighs hosts).
    let mut agent = env.classic_agent();
    let c = client(&agent, T);
    assert!(matches!(c.get_host(1, 1), Err(ApiError::NoExist)));
    assert_eq!(v4(&hs), {
        let mut r = reg(&c, 1, 1);
        r.sort();
        r
    });
    let picks: Vec<SocketAddrV4> = (0..9).map(|_| c.get_host(1, 1).unwrap()).collect();
    // Round-robin: every window of 3 picks holds the 3 hosts; period 3.
    for w in picks.windows(3) {
        assert_eq!(w.iter().collect::<BTreeSet<_>>().len(), 3, "{picks:?}");
    }
    assert_eq!(picks[0], picks[3]);
    let s = agent.stats();
    assert_eq!(s.get_host_noexist, 1);
    assert_eq!(s.get_host_succ, 9);
    assert!(s.dns_connected);
    agent.stop();
}

#[test]
fn simulator_with_80_percent_errors_overloads_hosts_and_they_come_back() {
    let env = Env::new();
    let hs = hosts(&["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]);
    env.set_hosts(2, 5, &hs);
    // The classic rules: error rates overload hosts, overload_timeout (1 s)
    // brings them back without calls.
    let mut agent = env.classic_agent();
    let c = client(&agent, T);
    reg(&c, 2, 5);
    let mut opts = SimOptions::new(2, 5);
    opts.err_rate = ErrRate::new(8).unwrap();
    opts.count = 400;
    opts.interval = Duration::ZERO;
    opts.seed = 7;
    let report = simulate(&c, &opts, |_, _| {});
    assert!(agent.stats().transitions >= 3, "{:?}", agent.stats());
    assert!(report.overload > 0, "{report:?}");
    // With overload_timeout 1 s every host is idle again soon, without calls.
    wait_until(Duration::from_secs(5), "hosts back to idle", || {
        let v = json(&agent, "/routes?modid=2&cmdid=5");
        let states: Vec<&str> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["state"].as_str().unwrap())
            .collect();
        states == ["idle", "idle", "idle"]
    });
    assert!(c.get_host(2, 5).is_ok());
    agent.stop();
}

#[test]
fn route_change_in_the_store_reaches_get_route_within_2s() {
    let env = Env::new();
    env.set_hosts(3, 1, &hosts(&["10.0.2.1:80"]));
    let mut agent = env.agent();
    let c = client(&agent, T);
    assert_eq!(reg(&c, 3, 1).len(), 1);
    let new = hosts(&["10.0.2.2:80", "10.0.2.3:80"]);
    env.set_hosts(3, 1, &new);
    let changed = Instant::now();
    wait_until(T, "route change pushed", || {
        let mut r = c.get_route(3, 1).unwrap();
        r.sort();
        r == v4(&new)
    });
    assert!(changed.elapsed() < T);
    // get_host follows the new hosts too.
    assert!(v4(&new).contains(&c.get_host(3, 1).unwrap()));
    agent.stop();
}

#[test]
fn dns_restarted_on_the_same_port_agent_reconnects_and_new_keys_resolve() {
    let mut env = Env::new();
    env.set_hosts(4, 1, &hosts(&["10.0.3.1:80"]));
    env.set_hosts(4, 2, &hosts(&["10.0.3.2:80"]));
    let mut agent = env.agent();
    let c = client(&agent, T);
    reg(&c, 4, 1);
    env.stop_dns();
    wait_until(T, "dns loss seen", || !agent.stats().dns_connected);
    // Known keys keep being served while the dns is down.
    assert_eq!(c.get_host(4, 1).unwrap().to_string(), "10.0.3.1:80");
    // A new key asked for while the dns is down: pulled after the reconnect.
    assert!(matches!(c.get_host(4, 2), Err(ApiError::NoExist)));
    env.restart_dns();
    wait_until(Duration::from_secs(10), "dns reconnect", || {
        agent.stats().dns_connects >= 2
    });
    wait_until(T, "pending key resolved", || c.get_host(4, 2).is_ok());
    env.set_hosts(4, 3, &hosts(&["10.0.3.3:80"]));
    assert_eq!(reg(&c, 4, 3)[0].to_string(), "10.0.3.3:80");
    // Subscriptions were renewed: a change of an old key is pushed again.
    env.set_hosts(4, 1, &hosts(&["10.0.3.9:80"]));
    wait_until(T, "push after reconnect", || {
        c.get_route(4, 1).unwrap() == vec!["10.0.3.9:80".parse::<SocketAddrV4>().unwrap()]
    });
    agent.stop();
}

#[test]
fn reporter_down_does_not_slow_get_host_and_statistics_arrive_after_it_returns() {
    let mut env = Env::new();
    let hs = hosts(&["10.0.4.1:80", "10.0.4.2:80"]);
    env.set_hosts(5, 1, &hs);
    let mut agent = env.agent();
    wait_until(T, "reporter connected", || agent.stats().reporter_connected);
    env.stop_reporter();
    wait_until(T, "reporter loss seen", || {
        !agent.stats().reporter_connected
    });
    // A short timeout: nothing in the get_host path waits for the reporter.
    let c = client(&agent, Duration::from_millis(500));
    reg(&c, 5, 1);
    let (mut succ, mut err) = (0u64, 0u64);
    for i in 0..200 {
        let h = c.get_host(5, 1).unwrap();
        let outcome = if i % 10 == 0 {
            err += 1;
            Outcome::Failure
        } else {
            succ += 1;
            Outcome::Success
        };
        c.report(5, 1, h, outcome, None).unwrap();
    }
    wait_until(T, "reports applied", || agent.stats().reports == 200);
    std::thread::sleep(Duration::from_millis(300)); // a few report intervals
    assert_eq!(agent.stats().report_messages, 0);
    env.restart_reporter();
    wait_until(Duration::from_secs(10), "statistics delivered", || {
        let s = env.reporter.as_ref().unwrap().stats();
        s.succ_in == succ && s.err_in == err
    });
    // One message per key per interval, never one per API report.
    assert!(agent.stats().report_messages < 10, "{:?}", agent.stats());
    // caller = the agent's IPv4 (the local address of the reporter
    // connection, 127.0.0.1 here) as the host-order integer.
    wait_until(Duration::from_secs(5), "ServerCallStatus rows", || {
        let rows = env.store.call_status(Some(ModKey::new(5, 1))).unwrap();
        rows.len() == 2 && rows.iter().all(|r| r.caller == 0x7f00_0001)
    });
    agent.stop();
}

#[test]
fn agent_restarted_while_the_dns_is_down_serves_its_snapshot() {
    let mut env = Env::new();
    env.set_hosts(6, 1, &hosts(&["10.0.5.1:80"]));
    env.set_hosts(6, 2, &hosts(&["10.0.5.2:80", "10.0.5.3:80"]));
    let mut agent = env.agent();
    let c = client(&agent, T);
    reg(&c, 6, 1);
    reg(&c, 6, 2);
    agent.stop(); // writes the final snapshot
    env.stop_dns();
    let text = std::fs::read_to_string(env.snapshot_path()).unwrap();
    assert!(text.starts_with("lars-agent-routes 1\n"), "{text}");
    let mut agent = env.agent();
    let c = client(&agent, T);
    assert_eq!(c.get_host(6, 1).unwrap().to_string(), "10.0.5.1:80");
    let mut r = c.get_route(6, 2).unwrap();
    r.sort();
    assert_eq!(r, v4(&hosts(&["10.0.5.2:80", "10.0.5.3:80"])));
    assert!(!agent.stats().dns_connected);
    agent.stop();
}

#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    let env = Env::new();
    env.set_hosts(7, 2, &hosts(&["10.0.6.1:80"]));
    let mut agent = env.agent();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(agent.udp_addrs()[0]).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let good = frame::to_bytes(
        MessageId::GetHostRequest.into(),
        &GetHostRequest {
            seq: 1,
            modid: 7,
            cmdid: 2,
        },
    )
    .unwrap();
    let mut wrong_len = good.to_vec();
    wrong_len.push(0);
    let mut unknown = good.to_vec();
    unknown[0] = 99;
    let mut bad_body = vec![4, 0, 0, 0, 3, 0, 0, 0];
    bad_body.extend_from_slice(&[0xff, 0xff, 0xff]);
    let garbage: Vec<&[u8]> = vec![b"", b"xyz", &wrong_len, &unknown, &bad_body];
    for g in &garbage {
        sock.send(g).unwrap();
    }
    let mut buf = [0u8; 2048];
    assert!(sock.recv(&mut buf).is_err(), "garbage was answered");
    wait_until(T, "garbage counted", || {
        agent.stats().garbage == garbage.len() as u64
    });
    // The agent still answers.
    sock.send(&good).unwrap();
    let n = sock.recv(&mut buf).unwrap();
    let rsp: GetHostResponse = frame::decode_datagram(&buf[..n])
        .unwrap()
        .message()
        .unwrap();
    assert_eq!((rsp.seq, rsp.modid, rsp.cmdid), (1, 7, 2));
    agent.stop();
}

#[test]
fn request_on_a_non_owning_port_is_answered_from_that_port_by_the_owner() {
    let env = Env::new();
    let hs = hosts(&["10.0.7.1:80", "10.0.7.2:80"]);
    env.set_hosts(1, 1, &hs); // owner shard (1 + 1) % 3 = 2
    // Strict round-robin (classic) shows the owner's state is the only one.
    let mut agent = env.classic_agent();
    let c = client(&agent, T);
    reg(&c, 1, 1);
    let first = c.get_host(1, 1).unwrap();
    // Ask port 0: the reply comes from port 0 (connected socket), and the
    // round-robin state is the owner's (no duplicate state).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(agent.udp_addrs()[0]).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let req = GetHostRequest {
        seq: 42,
        modid: 1,
        cmdid: 1,
    };
    sock.send(&frame::to_bytes(MessageId::GetHostRequest.into(), &req).unwrap())
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).unwrap();
    let rsp: GetHostResponse = frame::decode_datagram(&buf[..n])
        .unwrap()
        .message()
        .unwrap();
    assert_eq!((rsp.seq, rsp.retcode), (42, 0));
    let second = lars_core::HostAddr::from_proto(&rsp.host.unwrap()).unwrap();
    assert_ne!(SocketAddrV4::from(second), first);
    assert_eq!(c.get_host(1, 1).unwrap(), first);
    assert_eq!(agent.stats().forwarded, 1);
    agent.stop();
}

#[test]
fn status_routes_and_metrics_pages() {
    let env = Env::new();
    env.set_hosts(8, 1, &hosts(&["10.0.8.1:80"]));
    let mut agent = env.agent();
    let c = client(&agent, T);
    reg(&c, 8, 1);
    let h = c.get_host(8, 1).unwrap();
    c.report(8, 1, h, Outcome::Success, None).unwrap();
    wait_until(T, "report applied", || agent.stats().reports == 1);
    let s = json(&agent, "/status");
    assert_eq!(s["keys"], 1);
    assert_eq!(s["hosts"]["idle"], 1);
    assert_eq!(s["requests"]["get_host"], 1);
    assert_eq!(s["reports"], 1);
    assert_eq!(s["dns"]["connected"], true);
    wait_until(T, "cumulative counters", || {
        json(&agent, "/routes?modid=8&cmdid=1")["hosts"][0]["succ_total"] == 1
    });
    let r = json(&agent, "/routes?modid=8&cmdid=1");
    assert_eq!(r["hosts"][0]["host"], "10.0.8.1:80");
    assert_eq!(r["hosts"][0]["state"], "idle");
    assert_eq!(r["policy"], "adaptive");
    // Policy state: an idle host is not ejected and has no probe due.
    let h = &r["hosts"][0];
    assert!(h["ejected_until_s"].is_null(), "{h}");
    assert!(h["next_probe_s"].is_null(), "{h}");
    assert!(h["since_s"].as_f64().unwrap() >= 0.0, "{h}");
    assert!((0.0..=1.0).contains(&h["weight"].as_f64().unwrap()), "{h}");
    assert!(h["strikes"].is_u64(), "{h}");
    assert!(h.get("latency_ms").is_some(), "{h}");
    assert_eq!(http_get(&agent, "/routes?modid=9&cmdid=9").0, 404);
    assert_eq!(http_get(&agent, "/routes?modid=x").0, 400);
    let (code, m) = http_get(&agent, "/metrics");
    assert_eq!(code, 200);
    assert!(m.contains("lars_agent_get_host_total 1\n"), "{m}");
    assert!(m.contains("lars_agent_keys 1\n"), "{m}");
    agent.stop();
}

#[test]
fn api_times_out_cleanly_against_a_stalled_agent() {
    // A bound socket that never answers: a stalled agent.
    let stalled = UdpSocket::bind("127.0.0.1:0").unwrap();
    let c = LarsClient::connect(
        &ClientConfig::builder()
            .base_port(stalled.local_addr().unwrap().port())
            .port_count(1)
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .unwrap();
    let t = Instant::now();
    assert!(matches!(c.get_host(1, 1), Err(ApiError::Timeout)));
    assert!(matches!(c.get_route(1, 1), Err(ApiError::Timeout)));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn agent_with_one_port_and_explicit_ports_config() {
    let env = Env::new();
    env.set_hosts(9, 9, &hosts(&["10.0.9.1:80"]));
    let mut cfg = env.agent_config();
    cfg.port_count = std::num::NonZeroU16::MIN;
    cfg.snapshot_path = None;
    cfg.http.addr = None;
    let mut agent = Agent::start(cfg).unwrap();
    assert_eq!(agent.udp_addrs().len(), 1);
    assert!(agent.http_addr().is_none());
    let c = client(&agent, T);
    assert_eq!(reg(&c, 9, 9)[0].to_string(), "10.0.9.1:80");
    agent.stop();
    agent.stop(); // idempotent
}

#[test]
fn embedded_agent_against_the_real_dns_and_reporter() {
    let env = Env::new();
    let hs = hosts(&["10.0.10.1:80", "10.0.10.2:80"]);
    env.set_hosts(10, 1, &hs);
    // Strict round-robin (classic): two picks, two hosts.
    let mut e = EmbeddedAgent::start(env.classic_agent_config()).unwrap();
    assert!(matches!(e.get_host(10, 1), Err(ApiError::NoExist)));
    let mut r = e.reg_init(10, 1).unwrap();
    r.sort();
    assert_eq!(r, v4(&hs));
    let a = e.get_host(10, 1).unwrap();
    let b = e.get_host(10, 1).unwrap();
    assert_ne!(a, b);
    for _ in 0..5 {
        e.report(10, 1, a, Outcome::Success, Some(Duration::from_millis(3)))
            .unwrap();
    }
    e.report(10, 1, b, Outcome::Failure, None).unwrap();
    let rep = env.reporter.as_ref().unwrap();
    wait_until(
        Duration::from_secs(5),
        "embedded statistics delivered",
        || {
            let s = rep.stats();
            s.succ_in == 5 && s.err_in == 1
        },
    );
    assert_eq!(e.stats().reports, 6);
    assert_eq!(e.get_route(10, 1).unwrap().len(), 2);
    e.stop();
}

#[test]
fn a_restarted_agent_announces_its_reset_so_no_call_is_lost() {
    let env = Env::new();
    let x = hosts(&["10.0.11.1:80"]);
    env.set_hosts(11, 1, &x);
    let rep = env.reporter.as_ref().unwrap();
    let x = v4(&x)[0];
    // The first agent life: 2 calls. The second: 3 calls, counted from zero
    // again; without the (0, 0) announcement the reporter would read 2 -> 3
    // as one new call.
    for (life, calls, total) in [(1, 2u64, 2u64), (2, 3, 5)] {
        let mut e = EmbeddedAgent::start(env.agent_config()).unwrap();
        e.reg_init(11, 1).unwrap();
        for _ in 0..calls {
            e.report(11, 1, x, Outcome::Success, None).unwrap();
        }
        wait_until(Duration::from_secs(5), "statistics delivered", || {
            rep.stats().succ_in == total
        });
        assert_eq!(rep.stats().succ_in, total, "life {life}");
        e.stop();
    }
    assert!(rep.stats().resets >= 1, "{:?}", rep.stats());
}

#[test]
fn sample_and_original_confs_load() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf");
    let c = lars_agent::AgentConfig::load(format!("{root}/lars_lb_agent.conf")).unwrap();
    assert_eq!((c.base_port, c.port_count.get()), (8888, 3));
    // The sample documents every [loadbalance] key with its default.
    assert_eq!(c.lb, LoadBalanceConfig::default());
    assert_eq!(c.lb.policy, Policy::Adaptive);
    assert_eq!(c.report_interval, Duration::from_secs(1));
    assert!(c.http.addr.is_none());
    let o = lars_agent::AgentConfig::load(format!("{root}/original/lars_lb_agent.conf")).unwrap();
    assert_eq!(o.dns.port(), 7778);
    // No policy key in the original: the default.
    assert_eq!(o.lb.policy, Policy::Adaptive);
}

// ---- policies: conf -> RouteLb, /status and /routes ------------------------

/// Reports `n` failures of `bad` through `c` and waits until the agent has
/// applied them and taken `bad` out of rotation.
fn fail_until_overloaded(
    agent: &lars_agent::AgentHandle,
    c: &LarsClient,
    (modid, cmdid): (u32, u32),
    bad: SocketAddrV4,
    n: u64,
) {
    let before = agent.stats().reports;
    for _ in 0..n {
        c.report(modid, cmdid, bad, Outcome::Failure, None).unwrap();
    }
    wait_until(T, "failures applied", || {
        agent.stats().reports == before + n
    });
    let path = format!("/routes?modid={modid}&cmdid={cmdid}");
    let v = json(agent, &path);
    let state = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == bad.to_string())
        .map(|h| h["state"].clone());
    assert_eq!(state, Some("overload".into()), "{v}");
}

#[test]
fn conf_with_policy_classic_probes_every_probe_num_plus_1_picks() {
    let env = Env::new();
    let hs = hosts(&["10.0.12.1:80", "10.0.12.2:80", "10.0.12.3:80"]);
    env.set_hosts(12, 1, &hs);
    let cfg = env.conf_agent_config(
        "policy = classic\nprobe_num = 4\nidle_timeout = 60\noverload_timeout = 60",
    );
    let mut agent = Agent::start(cfg).unwrap();
    let s = json(&agent, "/status");
    assert_eq!(s["policy"], "classic");
    assert_eq!(s["loadbalance"]["policy"], "classic");
    assert_eq!(s["loadbalance"]["probe_num"], 4);
    assert_eq!(s["loadbalance"]["overload_timeout"], 60.0);
    let c = client(&agent, T);
    reg(&c, 12, 1);
    let bad = v4(&hs)[0];
    fail_until_overloaded(&agent, &c, (12, 1), bad, 15);
    // One pick in every probe_num + 1 = 5 probes the overloaded host, however
    // close together the picks are.
    let probes: Vec<usize> = (0..20)
        .filter(|_| c.get_host(12, 1).unwrap() == bad)
        .collect();
    assert_eq!(probes, vec![4, 9, 14, 19]);
    let r = json(&agent, "/routes?modid=12&cmdid=1");
    assert_eq!(r["policy"], "classic");
    let h = &r["hosts"][0];
    assert_eq!(
        (h["host"].as_str(), h["state"].as_str()),
        (Some("10.0.12.1:80"), Some("overload"))
    );
    // Classic: back when overload_timeout (60 s) ends; probes are counted in
    // picks, not scheduled.
    let until = h["ejected_until_s"].as_f64().unwrap();
    assert!((50.0..=60.0).contains(&until), "{h}");
    assert!(h["next_probe_s"].is_null(), "{h}");
    assert_eq!(h["weight"], 1.0);
    assert!(r["hosts"][1]["ejected_until_s"].is_null(), "{r}");
    agent.stop();
}

#[test]
fn conf_without_policy_gives_adaptive_and_status_shows_its_knobs() {
    let env = Env::new();
    let cfg =
        env.conf_agent_config("probe_interval = 2.5\nslow_start = 7\nmax_ejection_percent = 50");
    assert_eq!(cfg.lb.policy, Policy::Adaptive);
    let mut agent = Agent::start(cfg).unwrap();
    let s = json(&agent, "/status");
    assert_eq!(s["policy"], "adaptive");
    let lb = &s["loadbalance"];
    assert_eq!(lb["policy"], "adaptive");
    assert_eq!(lb["probe_interval"], 2.5);
    assert_eq!(lb["slow_start"], 7.0);
    assert_eq!(lb["max_ejection_percent"], 50);
    // Unset knobs show their defaults.
    let d = LoadBalanceConfig::default();
    let a = d.adaptive;
    assert_eq!(lb["eject_consecutive"], a.eject_consecutive);
    assert_eq!(lb["outlier_significance"], a.outlier_significance);
    assert_eq!(lb["probe_interval_max"], a.probe_interval_max.as_secs_f64());
    assert_eq!(lb["stats_half_life"], a.stats_half_life.as_secs_f64());
    assert_eq!(lb["strike_forgive"], a.strike_forgive.as_secs_f64());
    assert_eq!(lb["latency_tolerance"], a.latency_tolerance);
    assert_eq!(lb["latency_half_life"], a.latency_half_life.as_secs_f64());
    assert_eq!(lb["probe_num"], d.probe_num);
    assert_eq!(lb["timecost_unit_ms"], d.timecost_unit_ms);
    agent.stop();
}

/// Needs the adaptive policy of lars-lb: time-limited probes, probe
/// schedule, strikes and latency estimates in `HostView`.
#[test]
fn adaptive_agent_limits_probes_in_time_and_routes_shows_policy_state() {
    let env = Env::new();
    let hs = hosts(&["10.0.13.1:80", "10.0.13.2:80", "10.0.13.3:80"]);
    env.set_hosts(13, 1, &hs);
    let cfg = env.conf_agent_config("probe_interval = 30\nprobe_interval_max = 60");
    let mut agent = Agent::start(cfg).unwrap();
    let c = client(&agent, T);
    reg(&c, 13, 1);
    let all = v4(&hs);
    let (bad, fast) = (all[0], all[1]);
    // Latencies reported with successes reach the host's estimate.
    for _ in 0..10 {
        c.report(
            13,
            1,
            fast,
            Outcome::Success,
            Some(Duration::from_millis(4)),
        )
        .unwrap();
    }
    wait_until(T, "latencies applied", || agent.stats().reports == 10);
    fail_until_overloaded(&agent, &c, (13, 1), bad, 15);
    // No probe of the bad host in 50 picks: its first probe is 30 s away.
    assert!((0..50).all(|_| c.get_host(13, 1).unwrap() != bad));
    let r = json(&agent, "/routes?modid=13&cmdid=1");
    assert_eq!(r["policy"], "adaptive");
    let by_host = |a: SocketAddrV4| {
        r["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == a.to_string())
            .cloned()
            .unwrap()
    };
    let b = by_host(bad);
    let probe = b["next_probe_s"].as_f64().unwrap_or(-1.0);
    // At most probe_interval_max (60 s) plus its 10% jitter.
    assert!((0.0..=66.0).contains(&probe), "{b}");
    assert_eq!(b["ejected_until_s"], b["next_probe_s"]);
    assert!(b["strikes"].as_u64().unwrap() >= 1, "{b}");
    let f = by_host(fast);
    let est = f["latency_ms"].as_f64().unwrap_or(-1.0);
    assert!((3.0..=5.0).contains(&est), "{f}");
    assert!(
        f["next_probe_s"].is_null() && f["ejected_until_s"].is_null(),
        "{f}"
    );
    agent.stop();
}

#[test]
fn embedded_agent_uses_the_configured_policy() {
    let env = Env::new();
    let hs = hosts(&["10.0.14.1:80", "10.0.14.2:80", "10.0.14.3:80"]);
    env.set_hosts(14, 1, &hs);
    let bad = v4(&hs)[0];
    // Default: adaptive, with the conf's knobs.
    let cfg = env.conf_agent_config("slow_start = 9");
    let e = EmbeddedAgent::start(cfg).unwrap();
    assert_eq!(e.lb_config().policy, Policy::Adaptive);
    assert_eq!(e.lb_config().adaptive.slow_start, Duration::from_secs(9));
    drop(e);
    // policy = classic: one probe every probe_num + 1 picks.
    let cfg = env.conf_agent_config(
        "policy = classic\nprobe_num = 3\nidle_timeout = 60\noverload_timeout = 60",
    );
    let mut e = EmbeddedAgent::start(cfg).unwrap();
    assert_eq!(e.lb_config().policy, Policy::Classic);
    e.reg_init(14, 1).unwrap();
    for _ in 0..15 {
        e.report(14, 1, bad, Outcome::Failure, None).unwrap();
    }
    assert_eq!(e.hosts(14, 1)[0].state, lars_lb::HostState::Overload);
    let probes: Vec<usize> = (0..12)
        .filter(|_| e.get_host(14, 1).unwrap() == bad)
        .collect();
    assert_eq!(probes, vec![3, 7, 11]);
    assert!(e.hosts(99, 1).is_empty());
    e.stop();
}

/// Needs the adaptive policy of lars-lb (latency estimates).
#[test]
fn embedded_agent_latencies_reach_the_host_estimate() {
    let env = Env::new();
    let hs = hosts(&["10.0.15.1:80", "10.0.15.2:80"]);
    env.set_hosts(15, 1, &hs);
    let mut e = EmbeddedAgent::start(env.agent_config()).unwrap();
    e.reg_init(15, 1).unwrap();
    let (a, b) = (v4(&hs)[0], v4(&hs)[1]);
    for _ in 0..10 {
        // Sub-millisecond calls count as 1 ms, not as "unknown".
        e.report(15, 1, a, Outcome::Success, Some(Duration::from_micros(200)))
            .unwrap();
        e.report(15, 1, b, Outcome::Success, None).unwrap();
    }
    let v = e.hosts(15, 1);
    assert_eq!(v[0].latency_ms, Some(1.0), "{v:?}");
    assert_eq!(v[1].latency_ms, None, "{v:?}");
    e.stop();
}

// ---- bounded keys and deliberate deletes (issue 13 items 6, 11) ----------

#[test]
fn sprayed_unknown_keys_are_capped_then_expire_and_leave_the_dns() {
    let env = Env::new();
    env.set_hosts(8, 1, &hosts(&["10.0.8.1:80"]));
    let mut cfg = env.agent_config();
    cfg.max_unknown_keys = 300; // 100 per shard
    cfg.unknown_key_expiry = Some(Duration::from_secs(3));
    let mut agent = Agent::start(cfg).unwrap();
    let c = client(&agent, T);
    reg(&c, 8, 1);
    let dns = || env.dns.as_ref().unwrap().stats();
    // 600 distinct unknown keys, 200 per shard.
    for i in 0..600 {
        assert!(matches!(c.get_host(1000 + i, 1), Err(ApiError::NoExist)));
    }
    let s = agent.stats();
    assert_eq!((s.unknown_keys_refused, s.keys_expired), (300, 0), "{s:?}");
    wait_until(T, "the held keys subscribed at the dns", || {
        dns().subscribed_keys == 301
    });
    // Unused for 3 s, they are forgotten and unsubscribed; the key with
    // hosts stays, subscribed.
    wait_until(
        Duration::from_secs(10),
        "the sprayed keys to leave the dns",
        || dns().subscribed_keys == 1,
    );
    let s = agent.stats();
    assert_eq!((s.keys_expired, s.unsubscribes), (300, 300), "{s:?}");
    assert_eq!(dns().unsubscribes, 300);
    assert_eq!(c.get_host(8, 1).unwrap().to_string(), "10.0.8.1:80");
    let v = json(&agent, "/status");
    assert_eq!(v["keys"], 1, "{v}");
    assert_eq!(v["unknown_keys"], 0, "{v}");
    assert_eq!(v["unknown_keys_refused"], 300, "{v}");
    assert_eq!(v["dns"]["unsubscribes"], 300, "{v}");
    // After a dns restart only the key in use is pulled again.
    let pulls = agent.stats().pulls;
    let mut env = env;
    env.restart_dns();
    wait_until(Duration::from_secs(10), "dns reconnect", || {
        agent.stats().dns_connects >= 2
    });
    wait_until(T, "the re-pull", || agent.stats().pulls > pulls);
    assert_eq!(agent.stats().pulls, pulls + 1);
    agent.stop();
}

#[test]
fn a_deleted_key_leaves_the_agent_and_its_snapshot_even_across_a_restart() {
    let env = Env::new();
    env.set_hosts(9, 1, &hosts(&["10.0.9.1:80"]));
    env.set_hosts(9, 2, &hosts(&["10.0.9.2:80"]));
    env.set_hosts(9, 3, &hosts(&["10.0.9.3:80"]));
    let cfg = env.agent_config();
    assert!(cfg.lb.empty_route_protection, "the default");
    let mut agent = Agent::start(cfg).unwrap();
    let c = client(&agent, T);
    for cmdid in 1..=3 {
        reg(&c, 9, cmdid);
    }
    // Deleted while the agent runs: gone within the push (version_interval
    // 100 ms here, 1 s by default).
    env.store.delete_key(ModKey::new(9, 1)).unwrap();
    wait_until(T, "the delete to reach the agent", || {
        c.get_route(9, 1).unwrap().is_empty()
    });
    assert!(matches!(c.get_host(9, 1), Err(ApiError::NoExist)));
    assert_eq!(agent.stats().routes_deleted, 1);
    agent.stop();
    let text = std::fs::read_to_string(env.snapshot_path()).unwrap();
    assert!(
        !text.contains("\n9 1 ") && text.contains("\n9 2 "),
        "{text}"
    );
    // Deleted while the agent is down: the snapshot brings it back, the
    // pull at the dns connect removes it.
    env.store.delete_key(ModKey::new(9, 2)).unwrap();
    let mut agent = Agent::start(env.agent_config()).unwrap();
    let c = client(&agent, T);
    wait_until(T, "the restored key to be dropped", || {
        c.get_route(9, 2).unwrap().is_empty()
    });
    assert_eq!(c.get_host(9, 3).unwrap().to_string(), "10.0.9.3:80");
    agent.stop();
    let text = std::fs::read_to_string(env.snapshot_path()).unwrap();
    assert!(
        !text.contains("\n9 2 ") && text.contains("\n9 3 "),
        "{text}"
    );
}

#[test]
fn a_dns_answering_empty_from_a_wiped_store_leaves_the_hosts() {
    let mut env = Env::new();
    env.set_hosts(10, 1, &hosts(&["10.0.10.1:80"]));
    let mut agent = env.agent();
    let c = client(&agent, T);
    reg(&c, 10, 1);
    let applied = agent.stats().routes_applied;
    // The dns comes back over an empty store (wiped, or the wrong one): it
    // answers every key empty, unconfirmed.
    let wiped = env.dir.path().join("wiped.db");
    let wiped = lars_store::open(&format!("sqlite://{}", wiped.display())).unwrap();
    env.restart_dns_with(&wiped);
    wait_until(Duration::from_secs(10), "dns reconnect", || {
        agent.stats().dns_connects >= 2
    });
    wait_until(T, "the re-pull answered", || {
        agent.stats().routes_applied > applied
    });
    assert_eq!(c.get_host(10, 1).unwrap().to_string(), "10.0.10.1:80");
    let s = agent.stats();
    assert_eq!((s.routes_deleted, s.empty_routes_kept), (0, 1), "{s:?}");
    let v = json(&agent, "/status");
    assert_eq!(v["dns"]["empty_routes_kept"], 1, "{v}");
    agent.stop();
    let text = std::fs::read_to_string(env.snapshot_path()).unwrap();
    assert!(text.contains("\n10 1 10.0.10.1:80"), "{text}");
}

#[test]
fn a_port_in_use_is_named_once_in_the_error_chain() {
    let env = Env::new();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cfg = env.agent_config();
    cfg.base_port = port;
    cfg.port_count = std::num::NonZeroU16::new(1).unwrap();
    let Err(e) = Agent::start(cfg) else {
        panic!("bound a port in use");
    };
    let line = lars_core::Chain(&e).to_string();
    assert_eq!(
        line.matches(&format!("127.0.0.1:{port}")).count(),
        1,
        "{line}"
    );
    assert!(line.contains("in use"), "{line}");
}

#[test]
fn embedded_agent_caps_and_expires_unknown_keys() {
    let env = Env::new();
    env.set_hosts(11, 1, &hosts(&["10.0.11.1:80"]));
    let mut cfg = env.agent_config();
    cfg.max_unknown_keys = 2;
    cfg.unknown_key_expiry = Some(Duration::from_secs(1));
    let mut e = EmbeddedAgent::start(cfg).unwrap();
    let dns = || env.dns.as_ref().unwrap().stats();
    assert!(matches!(e.get_host(20, 1), Err(ApiError::NoExist)));
    assert!(matches!(e.get_host(20, 2), Err(ApiError::NoExist)));
    wait_until(T, "both subscribed", || dns().subscribed_keys == 2);
    // At the limit: refused at once, nothing pulled.
    let pulls = e.stats().pulls;
    assert!(matches!(e.reg_init(11, 1), Err(ApiError::NoExist)));
    let s = e.stats();
    assert_eq!((s.unknown_keys_refused, s.pulls), (1, pulls), "{s:?}");
    // Once the unused ones expire (and leave the dns) there is room.
    wait_until(Duration::from_secs(5), "expiry", || {
        e.stats().keys_expired == 2 && dns().subscribed_keys == 0
    });
    assert_eq!(e.reg_init(11, 1).unwrap()[0].to_string(), "10.0.11.1:80");
    e.stop();
}

#[test]
fn against_an_original_dns_unsubscribes_are_skipped_and_empty_answers_protected() {
    let env = Env::new();
    let dns = util::OriginalDns::start();
    let key = ModKey::new(12, 1);
    dns.set_and_push(key, &hosts(&["10.0.12.1:80"]));
    let mut cfg = env.agent_config();
    cfg.dns = dns.addr;
    cfg.unknown_key_expiry = Some(Duration::from_secs(1));
    let mut agent = Agent::start(cfg).unwrap();
    let c = client(&agent, T);
    assert_eq!(reg(&c, 12, 1)[0].to_string(), "10.0.12.1:80");
    for cmdid in 1..=5 {
        assert!(matches!(c.get_host(13, cmdid), Err(ApiError::NoExist)));
    }
    // The unknown keys expire; their unsubscribes reach the original dns,
    // which skips them and keeps the connection.
    wait_until(
        Duration::from_secs(5),
        "unsubscribes skipped by the dns",
        || {
            dns.unknown_msgids
                .load(std::sync::atomic::Ordering::Relaxed)
                == 5
        },
    );
    assert_eq!(agent.stats().unsubscribes, 5);
    assert_eq!(c.get_host(12, 1).unwrap().to_string(), "10.0.12.1:80");
    // An original dns cannot confirm a delete: its empty push is protected.
    let applied = agent.stats().routes_applied;
    dns.set_and_push(key, &[]);
    wait_until(T, "the empty push applied", || {
        agent.stats().routes_applied > applied
    });
    assert_eq!(c.get_host(12, 1).unwrap().to_string(), "10.0.12.1:80");
    let s = agent.stats();
    assert_eq!((s.dns_connects, s.routes_deleted), (1, 0), "{s:?}");
    assert_eq!(dns.accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
    agent.stop();
}
