//! A virtual-time simulation harness: fake hosts with error rates, a seeded
//! generator, and `step()` / `run_for(d)` that pick, fake the call, report and
//! advance time. Nothing sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lars_lb::{
    Choice, HostAddr, HostState, LbConfig, LbEvent, LoadBalance, ModKey, Outcome, Reason,
    Transition,
};

use crate::{host, hosts, no_contin, t0};

/// xorshift64*: deterministic, good enough to fake call outcomes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A fake host: fails a call with probability `err_rate`, and a failed call
/// takes `fail_ms`.
#[derive(Debug, Clone, Copy)]
pub struct FakeHost {
    pub addr: HostAddr,
    pub err_rate: f64,
    pub fail_ms: u32,
}

#[derive(Debug)]
pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub lb: LoadBalance,
    pub hosts: Vec<FakeHost>,
    pub rng: Rng,
    /// Time between two calls.
    pub interval: Duration,
    pub picks: HashMap<HostAddr, u64>,
    pub overload_answers: u64,
    pub transitions: Vec<Transition>,
}

impl Sim {
    pub fn new(cfg: LbConfig, hosts: Vec<FakeHost>, interval: Duration, seed: u64) -> Self {
        let start = t0();
        let mut lb = LoadBalance::new(ModKey::new(1, 1), cfg);
        let addrs: Vec<HostAddr> = hosts.iter().map(|h| h.addr).collect();
        lb.update(&addrs, start);
        Self {
            start,
            now: start,
            lb,
            hosts,
            rng: Rng::new(seed),
            interval,
            picks: HashMap::new(),
            overload_answers: 0,
            transitions: Vec::new(),
        }
    }

    /// One call: pick, fake the outcome, report, drive timers, advance time.
    pub fn step(&mut self) {
        match self.lb.choice_one_host(self.now) {
            Choice::Idle(h) | Choice::Probe(h) => {
                *self.picks.entry(h).or_default() += 1;
                let fake = *self.hosts.iter().find(|f| f.addr == h).unwrap();
                let outcome = if self.rng.unit() < fake.err_rate {
                    Outcome::Failure {
                        timecost_ms: fake.fail_ms,
                    }
                } else {
                    Outcome::Success
                };
                self.lb.report(h, outcome, self.now);
            }
            Choice::Overload => self.overload_answers += 1,
            Choice::NoExist => panic!("the sim always has hosts"),
        }
        self.collect();
        self.advance(self.interval);
    }

    /// Moves virtual time forward by `d`, firing every timer on its deadline.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(dl) = self.lb.next_deadline() {
            if dl > end {
                break;
            }
            self.now = self.now.max(dl);
            self.lb.handle_timeout(self.now);
            self.collect();
        }
        self.now = end;
    }

    /// Steps until `d` of virtual time has passed.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn collect(&mut self) {
        for ev in self.lb.drain_events() {
            if let LbEvent::Transition(t) = ev {
                self.transitions.push(t);
            }
        }
    }

    pub fn transitions_of(&self, h: HostAddr) -> Vec<&Transition> {
        self.transitions.iter().filter(|t| t.host == h).collect()
    }

    pub fn at(&self, t: &Transition) -> Duration {
        t.at - self.start
    }
}

fn healthy(addr: HostAddr) -> FakeHost {
    FakeHost {
        addr,
        err_rate: 0.0,
        fail_ms: 0,
    }
}

#[test]
fn a_host_failing_90_percent_gets_few_picks() {
    let mut fakes: Vec<FakeHost> = hosts(3).into_iter().map(healthy).collect();
    fakes[1].err_rate = 0.9;
    let mut sim = Sim::new(LbConfig::classic(), fakes, Duration::from_millis(10), 42);
    sim.run_for(Duration::from_secs(120));
    let total: u64 = sim.picks.values().sum();
    assert_eq!(total, 12_000);
    let bad = sim.picks[&host(2)];
    // Probes alone give an overloaded host one pick in probe_num + 1 (9%);
    // without the balancer it would get a third.
    assert!(bad * 8 < total, "bad host got {bad} of {total} picks");
    // The healthy hosts share the rest evenly and are never overloaded.
    let (a, c) = (sim.picks[&host(1)], sim.picks[&host(3)]);
    assert!(a.abs_diff(c) <= 1, "{a} vs {c}");
    assert!(sim.transitions_of(host(1)).is_empty());
    assert!(sim.transitions_of(host(3)).is_empty());
    // The bad host went back and forth: overloaded by the rules, back on
    // timeout (its probes almost never succeed 6 times out of 11).
    let tr = sim.transitions_of(host(2));
    assert!(tr.len() >= 6, "{tr:?}");
    assert!(
        tr.iter().any(|t| t.to == HostState::Overload
            && matches!(t.reason, Reason::ContinErr | Reason::ErrRate))
    );
    assert!(tr.iter().any(|t| t.reason == Reason::OverloadTimeout));
    assert_eq!(sim.overload_answers, 0);
    sim.lb.check_invariants().unwrap();
}

#[test]
fn twenty_failing_calls_per_window_overload_at_the_window_end() {
    let bad = FakeHost {
        addr: host(1),
        err_rate: 1.0,
        fail_ms: 0,
    };
    // 20 calls per 15 s window: 20 / (180 + 20) is not > 0.1, and the
    // consecutive rule is out of the way, so only the window rule can fire.
    let mut sim = Sim::new(no_contin(), vec![bad], Duration::from_millis(750), 7);
    sim.run_for(Duration::from_secs(15));
    let tr = sim.transitions_of(host(1));
    assert_eq!(tr.len(), 1, "{tr:?}");
    assert_eq!(tr[0].reason, Reason::WindowErrRate);
    assert_eq!(sim.at(tr[0]), Duration::from_secs(15));
    assert_eq!((tr[0].counters.rerr, tr[0].counters.rsucc), (20, 0));
    assert_eq!(tr[0].counters.verr, 20);
}

#[test]
fn an_overloaded_host_without_traffic_comes_back_on_time() {
    let fakes: Vec<FakeHost> = hosts(2).into_iter().map(healthy).collect();
    let mut sim = Sim::new(LbConfig::classic(), fakes, Duration::from_secs(1), 1);
    for _ in 0..15 {
        sim.lb.report(
            host(2),
            Outcome::Failure { timecost_ms: 0 },
            sim.start + Duration::from_secs(1),
        );
    }
    // Nobody calls anything: only timers run.
    sim.advance(Duration::from_secs(60));
    let tr = sim.transitions_of(host(2));
    assert_eq!(tr.len(), 2, "{tr:?}");
    assert_eq!(tr[1].reason, Reason::OverloadTimeout);
    assert_eq!(sim.at(tr[1]), Duration::from_secs(16));
    assert_eq!(sim.lb.idle_len(), 2);
}

#[test]
fn a_dead_host_behind_slow_timeouts_is_found_quickly() {
    // The guide's chapter 8 case: each call to the dead host times out after
    // 1 s, so only a few failures per window arrive.
    let mut fakes: Vec<FakeHost> = hosts(2).into_iter().map(healthy).collect();
    fakes[1] = FakeHost {
        addr: host(2),
        err_rate: 1.0,
        fail_ms: 1000,
    };
    let mut sim = Sim::new(no_contin(), fakes, Duration::from_millis(1000), 3);
    sim.run_for(Duration::from_secs(10));
    let tr = sim.transitions_of(host(2));
    // 10 virtual errors per failure: 3 failures give 30 / 210 > 0.1.
    assert_eq!(tr[0].reason, Reason::ErrRate);
    assert_eq!(tr[0].counters.rerr, 3);
    assert_eq!(tr[0].counters.verr, 30);
}
