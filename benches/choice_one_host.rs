//! Benchmarks of the lars-lb hot paths, for both policies (`classic` and
//! `adaptive`): `LoadBalance::choice_one_host` with 3, 100 and 10,000 hosts
//! (all in rotation, and 10% overloaded / ejected — at least one host), and
//! `LoadBalance::report` with and without state changes.
//!
//! Target: median <= 40 ns per pick, flat from 3 to 10,000 hosts, for both
//! policies.
//!
//! `cargo bench --bench choice_one_host -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use lars_core::HostAddr;
use lars_lb::{LbConfig, LoadBalance, ModKey, Outcome, Policy};

const SIZES: [u32; 3] = [3, 100, 10_000];

fn hosts(n: u32) -> Vec<HostAddr> {
    (0..n)
        .map(|i| HostAddr::new(0x0a00_0000 + i, 8000 + (i % 1000) as u16))
        .collect()
}

/// A balancer with `n` hosts, the first `overloaded` of them overloaded
/// (classic) or ejected (adaptive).
fn balancer_with(policy: Policy, n: u32, overloaded: u32, now: Instant) -> LoadBalance {
    let hs = hosts(n);
    let cfg = LbConfig {
        policy,
        ..LbConfig::default()
    };
    let mut lb = LoadBalance::new(ModKey::new(1, 1), cfg);
    lb.update(&hs, now);
    for h in &hs[..overloaded as usize] {
        // Classic: one 5 s failure counts as 50 errors: 50 / 230 > err_rate.
        // Adaptive: it weighs 51 failures, past any streak bar.
        lb.report(*h, Outcome::Failure { timecost_ms: 5000 }, now);
    }
    assert_eq!(lb.overload_len(), overloaded as usize);
    lb.drain_events().for_each(drop);
    lb
}

fn balancer(n: u32, overloaded: u32, now: Instant) -> LoadBalance {
    balancer_with(Policy::Classic, n, overloaded, now)
}

fn choice_one_host(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("LoadBalance::choice_one_host");
    for (name, policy) in [("classic", Policy::Classic), ("adaptive", Policy::Adaptive)] {
        for n in SIZES {
            let mut lb = balancer_with(policy, n, 0, now);
            g.bench_function(format!("{name}/hosts={n}"), |b| {
                b.iter(|| black_box(lb.choice_one_host(black_box(now))))
            });
            let over = (n / 10).max(1);
            let mut lb = balancer_with(policy, n, over, now);
            g.bench_function(format!("{name}/hosts={n}/overloaded={over}"), |b| {
                b.iter(|| black_box(lb.choice_one_host(black_box(now))))
            });
        }
    }
    g.finish();
}

fn report(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("LoadBalance::report");
    for n in SIZES {
        let hs = hosts(n);
        // Successes on idle hosts: a lookup and counters, no state change.
        let mut lb = balancer(n, 0, now);
        let mut i = 0usize;
        g.bench_function(format!("hosts={n}/success"), |b| {
            b.iter(|| {
                i = if i + 1 == hs.len() { 0 } else { i + 1 };
                black_box(lb.report(hs[i], Outcome::Success, black_box(now)))
            })
        });
        // The same with the adaptive policy and a latency: decayed counts and
        // the latency estimate are updated on every report.
        let mut lb = balancer_with(Policy::Adaptive, n, 0, now);
        let mut i = 0usize;
        g.bench_function(format!("adaptive/hosts={n}/success"), |b| {
            b.iter(|| {
                i = if i + 1 == hs.len() { 0 } else { i + 1 };
                black_box(lb.report(hs[i], Outcome::SuccessIn { latency_ms: 5 }, black_box(now)))
            })
        });
        // Per host, one slow failure (idle -> overload) then six successes
        // (overload -> idle): 2 transitions, with their events, every 7
        // reports. Events are queued and, as nobody drains them here, the
        // oldest are dropped: the worst case.
        let mut lb = balancer(n, 0, now);
        let cycle: Vec<(HostAddr, Outcome)> = hs
            .iter()
            .flat_map(|h| {
                std::iter::once((*h, Outcome::Failure { timecost_ms: 5000 }))
                    .chain(std::iter::repeat_n((*h, Outcome::Success), 6))
            })
            .collect();
        let mut j = 0usize;
        g.bench_function(format!("hosts={n}/with_transitions"), |b| {
            b.iter(|| {
                j = if j + 1 == cycle.len() { 0 } else { j + 1 };
                let (h, o) = cycle[j];
                black_box(lb.report(h, o, black_box(now)))
            })
        });
    }
    g.finish();
}

/// Same-run references, to read the numbers above on a loaded machine: the
/// floor of any round-robin pick (an index step over a `Vec`) and of any
/// report (one `hashbrown` lookup by address: `LoadBalance::contains`).
fn reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    for n in [3u32, 10_000] {
        let hs = hosts(n);
        let mut i = 0usize;
        g.bench_function(format!("vec_round_robin/hosts={n}"), |b| {
            b.iter(|| {
                i = if i + 1 == hs.len() { 0 } else { i + 1 };
                black_box(hs[i])
            })
        });
        let lb = balancer(n, 0, Instant::now());
        let mut j = 0usize;
        g.bench_function(format!("lookup/hosts={n}"), |b| {
            b.iter(|| {
                j = if j + 1 == hs.len() { 0 } else { j + 1 };
                black_box(lb.contains(hs[j]))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, choice_one_host, report, reference);
criterion_main!(benches);
