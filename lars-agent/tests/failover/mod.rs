//! Several dns per agent, real sockets: failover on disconnect and on
//! silence, get_host never failing for cached keys meanwhile.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use lars_agent::core::{DnsFailover, FailoverConfig, identity_hash};
use lars_agent::{Agent, AgentConfig, AgentHandle};
use lars_client::LarsClient;
use lars_testkit::Proxy;

use crate::util::{Env, as_v4, client, hosts, json, reg, wait_until};

const T: Duration = Duration::from_secs(5);

/// An `[agent] id` whose dns preference order starts with `first`.
fn id_preferring(first: SocketAddrV4, addrs: &[SocketAddrV4]) -> String {
    let list: Vec<SocketAddr> = addrs.iter().copied().map(SocketAddr::V4).collect();
    (0..1000)
        .map(|i| format!("agent-{i}"))
        .find(|id| {
            let f = DnsFailover::new(list.clone(), identity_hash(id), FailoverConfig::default());
            f.order()[0] == SocketAddr::V4(first)
        })
        .unwrap()
}

fn config(env: &Env, addrs: &[SocketAddrV4], first: SocketAddrV4) -> AgentConfig {
    let mut cfg = env.agent_config();
    cfg.dns_addrs = addrs.to_vec();
    cfg.id = Some(id_preferring(first, addrs));
    cfg.dns_failover.silence_timeout = Duration::from_secs(1);
    cfg.dns_failover.keepalive = Duration::from_millis(200);
    cfg
}

fn in_use(agent: &AgentHandle) -> Option<String> {
    json(agent, "/status")["dns"]["in_use"]
        .as_str()
        .map(str::to_owned)
}

/// Asks for the cached keys on a thread until stopped; counts failures.
struct Hammer {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Hammer {
    fn start(c: LarsClient, keys: Vec<(u32, u32)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let (s, n, f) = (Arc::clone(&stop), Arc::clone(&calls), Arc::clone(&failures));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for &(modid, cmdid) in &keys {
                    n.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = c.get_host(modid, cmdid) {
                        eprintln!("get_host({modid}, {cmdid}): {e:?}");
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            stop,
            calls,
            failures,
            thread: Some(thread),
        }
    }

    /// Stops and joins; (calls, failures).
    fn finish(mut self) -> (u64, u64) {
        self.join();
        (
            self.calls.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        self.join();
    }
}

#[test]
fn two_dns_the_one_in_use_stops_the_agent_fails_over_and_get_host_never_fails() {
    let env = Env::new();
    let mut second = env.extra_dns();
    let (a, b) = (env.dns_addr, as_v4(second.local_addr()));
    for cmdid in 1..=3 {
        env.set_hosts(21, cmdid, &hosts(&[&format!("10.0.21.{cmdid}:80")]));
    }
    let mut agent = Agent::start(config(&env, &[a, b], b)).unwrap();
    let c = client(&agent, T);
    for cmdid in 1..=3 {
        reg(&c, 21, cmdid);
    }
    assert_eq!(in_use(&agent), Some(b.to_string()));
    let status = json(&agent, "/status");
    assert_eq!(status["dns"]["addrs"].as_array().unwrap().len(), 2);
    let hammer = Hammer::start(client(&agent, T), (1..=3).map(|c| (21, c)).collect());
    std::thread::sleep(Duration::from_millis(200));
    // The dns in use goes away: the agent moves to the other one.
    second.stop();
    wait_until(T, "failover to the first dns", || {
        in_use(&agent) == Some(a.to_string())
    });
    // Its keys were pulled again there: a change reaches the agent by push.
    env.set_hosts(21, 1, &hosts(&["10.0.21.9:80"]));
    wait_until(T, "push from the new dns", || {
        c.get_route(21, 1).unwrap() == vec!["10.0.21.9:80".parse::<SocketAddrV4>().unwrap()]
    });
    let (calls, failures) = hammer.finish();
    assert!(calls > 0);
    assert_eq!(failures, 0, "get_host failed {failures} of {calls} times");
    assert_eq!(agent.stats().dns_failovers, 1);
    let (_, metrics) = crate::util::http_get(&agent, "/metrics");
    assert!(
        metrics.contains("lars_agent_dns_failovers_total 1"),
        "{metrics}"
    );
    agent.stop();
}

#[test]
fn a_hung_dns_is_left_after_the_silence_timeout() {
    let env = Env::new();
    let second = env.extra_dns();
    let proxy = Proxy::start(SocketAddr::V4(env.dns_addr));
    let (hung, other) = (as_v4(proxy.addr), as_v4(second.local_addr()));
    env.set_hosts(22, 1, &hosts(&["10.0.22.1:80"]));
    let mut agent = Agent::start(config(&env, &[hung, other], hung)).unwrap();
    let c = client(&agent, T);
    reg(&c, 22, 1);
    assert_eq!(in_use(&agent), Some(hung.to_string()));
    let hammer = Hammer::start(client(&agent, T), vec![(22, 1)]);
    // The dns hangs: the connection stays open, nothing comes back. The
    // keepalive pull (every 200 ms) goes unanswered for 1 s.
    proxy.freeze();
    wait_until(T, "failover after silence", || {
        in_use(&agent) == Some(other.to_string())
    });
    let status = json(&agent, "/status");
    assert_eq!(status["dns"]["silences"], 1, "{status}");
    assert!(
        status["dns"]["keepalives"].as_u64().unwrap() >= 1,
        "{status}"
    );
    let (calls, failures) = hammer.finish();
    assert!(calls > 0);
    assert_eq!(failures, 0, "get_host failed {failures} of {calls} times");
    env.set_hosts(22, 1, &hosts(&["10.0.22.9:80"]));
    wait_until(T, "push from the new dns", || {
        c.get_route(22, 1).unwrap() == vec!["10.0.22.9:80".parse::<SocketAddrV4>().unwrap()]
    });
    proxy.thaw();
    agent.stop();
}

#[test]
fn three_reporters_one_stopped_its_keys_move_and_the_store_totals_are_exact() {
    use lars_agent::core::ReporterRing;
    use lars_client::Outcome;
    use lars_core::ModKey;
    use lars_store::StatsStore;

    let env = Env::new();
    let mut r1 = env.extra_reporter();
    let r2 = env.extra_reporter();
    let addrs = [
        env.reporter_addr,
        as_v4(r1.local_addr()),
        as_v4(r2.local_addr()),
    ];
    let keys: Vec<u32> = (1..=12).collect();
    for &cmdid in &keys {
        env.set_hosts(30, cmdid, &hosts(&[&format!("10.0.30.{cmdid}:80")]));
    }
    let ring = ReporterRing::new(3);
    let on_1: Vec<u32> = keys
        .iter()
        .copied()
        .filter(|&c| ring.primary(ModKey::new(30, c)) == 1)
        .collect();
    assert!(!on_1.is_empty(), "some keys belong to reporter 1");
    let mut cfg = env.agent_config();
    cfg.reporter_addrs = addrs.to_vec();
    cfg.reporter_failover_grace = Duration::from_millis(500);
    cfg.reporter_handoff_hold = Duration::from_millis(500);
    let mut agent = Agent::start(cfg).unwrap();
    wait_until(T, "3 reporters connected", || {
        json(&agent, "/status")["reporter"]["links"]
            .as_array()
            .is_some_and(|l| l.iter().all(|l| l["connected"] == true))
    });
    let c = client(&agent, T);
    for &cmdid in &keys {
        reg(&c, 30, cmdid);
    }
    let (mut succ, mut err) = (0u64, 0u64);
    let mut calls = |rounds: u32| {
        for i in 0..rounds {
            for &cmdid in &keys {
                let host = c.get_host(30, cmdid).unwrap();
                let outcome = if i % 7 == 0 {
                    err += 1;
                    Outcome::Failure
                } else {
                    succ += 1;
                    Outcome::Success
                };
                c.report(30, cmdid, host, outcome, None).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    calls(25);
    // Reporter 1 goes away: after the grace its keys move (held, then in
    // full) to the others.
    r1.stop();
    calls(60);
    let moved = on_1.len() as u64;
    wait_until(T, "reporter 1's keys moved", || {
        let s = json(&agent, "/status");
        s["reporter"]["handoffs"].as_u64() >= Some(moved) && s["reporter"]["links"][1]["keys"] == 0
    });
    let (_, metrics) = crate::util::http_get(&agent, "/metrics");
    assert!(
        metrics.contains(&format!("lars_agent_reporter_handoffs_total {moved}")),
        "{metrics}"
    );
    calls(10);
    let made = (succ, err);
    wait_until(
        Duration::from_secs(10),
        "every call in the store's history",
        || env.store.history_totals(None, 0).unwrap() == made,
    );
    // One caller for every stream, whichever reporter wrote it.
    let rows = env.store.call_status(None).unwrap();
    assert!(rows.iter().all(|r| r.caller == 0x7f00_0001), "{rows:?}");
    // Nothing more arrives: counted once.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.store.history_totals(None, 0).unwrap(), made);
    agent.stop();
    drop(r2);
}
