//! An application that embeds `lars_lb::LoadBalance` directly, without the
//! agent: a fixed list of four hosts, one of which fails 90% of its calls.
//!
//! The calls are faked and time is simulated (100 calls per second for two
//! minutes of virtual time, no sleeping), so the run takes milliseconds.
//! It prints, per host, how many picks it got, and when the bad host was
//! marked overloaded and when it recovered.
//!
//! `cargo run --example embedded_lb`
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lars_lb::{Choice, HostAddr, LbConfig, LbEvent, LoadBalance, ModKey, Outcome};

/// xorshift64*: enough to fake call outcomes, and reproducible.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() {
    let hosts: Vec<HostAddr> = [
        "10.0.0.1:9000",
        "10.0.0.2:9000",
        "10.0.0.3:9000",
        "10.0.0.4:9000",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let bad = hosts[2];
    let err_rate = |h: HostAddr| if h == bad { 0.9 } else { 0.0 };

    // The application owns the clock; the balancer only receives `now`.
    let start = Instant::now();
    let mut now = start;
    let mut lb = LoadBalance::new(ModKey::new(100, 1), LbConfig::default());
    lb.update(&hosts, now);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut picks: BTreeMap<HostAddr, (u64, u64)> = BTreeMap::new();
    let mut overload_answers = 0u64;
    let step = Duration::from_millis(10);
    let end = start + Duration::from_secs(120);
    while now < end {
        match lb.choice_one_host(now) {
            Choice::Idle(h) | Choice::Probe(h) => {
                let failed = rng.unit() < err_rate(h);
                let e = picks.entry(h).or_default();
                e.0 += 1;
                e.1 += u64::from(failed);
                // A failed call took 30 ms here (below the 100 ms unit: one
                // virtual error each).
                let outcome = if failed {
                    Outcome::Failure { timecost_ms: 30 }
                } else {
                    Outcome::SuccessIn { latency_ms: 5 }
                };
                lb.report(h, outcome, now);
            }
            Choice::Overload => overload_answers += 1,
            Choice::NoExist => unreachable!("the host list is fixed and not empty"),
        }
        for ev in lb.drain_events() {
            if let LbEvent::Transition(t) = ev {
                println!(
                    "t={:>7.2}s  {}  {:?} -> {:?}  ({:?}; vsucc {} verr {} rsucc {} rerr {} contin_err {})",
                    (t.at - start).as_secs_f64(),
                    t.host,
                    t.from,
                    t.to,
                    t.reason,
                    t.counters.vsucc,
                    t.counters.verr,
                    t.counters.rsucc,
                    t.counters.rerr,
                    t.counters.contin_err,
                );
            }
        }
        now += step;
    }

    let total: u64 = picks.values().map(|p| p.0).sum();
    println!("\n{total} calls in 120 s of virtual time; {overload_answers} answered Overload");
    for (h, (n, failed)) in &picks {
        println!(
            "{h:<16} picks {n:>6} ({:>5.1}%)  failed {failed:>5}  error rate {:>3.0}%",
            *n as f64 * 100.0 / total as f64,
            err_rate(*h) * 100.0,
        );
    }
}
