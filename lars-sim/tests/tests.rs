//! lars-sim in virtual time: the engine against the real balancers, the
//! metrics on hand-built traces, determinism, the plot. Nothing sleeps; call
//! counts are small so the debug build stays fast.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lars_lb::HostAddr;
use lars_sim::{
    Balancer, BalancerKind, CallRecord, CallResult, HostModel, Metrics, Phase, Pick,
    RotationChange, RoundRobin, RunOptions, Scenario, ScenarioKind, ShareSeries, Trace, Workload,
    measure, run, run_balancer, simulate, svg,
};

#[allow(clippy::disallowed_methods)] // the test is the driver: it reads the clock once
fn epoch() -> Instant {
    Instant::now()
}

fn s(x: f64) -> Duration {
    Duration::from_secs_f64(x)
}

fn workload(calls: u64) -> Workload {
    Workload::new(10, 100.0, calls).unwrap()
}

#[test]
fn rr_on_dead1_fails_a_tenth_of_the_calls_after_the_onset() {
    // 30 s: h0 dead from 10 s, so 2000 calls of which round robin sends 200 to it.
    let sc = Scenario::named("dead1", &workload(3000)).unwrap();
    let m = run(&sc, BalancerKind::Rr, &RunOptions::default(), 1, 1, epoch()).metrics;
    assert_eq!(m.calls, 3000.0);
    assert_eq!(m.failed, 200.0);
    assert_eq!(m.bad_share_pct, Some(10.0));
    assert_eq!(m.undetected, 1.0);
    assert_eq!(m.detect_mean_s, None);
    assert_eq!(m.rejected, 0.0);
    assert_eq!(m.probes, 0.0);
}

#[test]
fn the_real_load_balance_is_driven_classic_probes_and_ejects() {
    let sc = Scenario::named("dead1", &workload(3000)).unwrap();
    let m = run(
        &sc,
        BalancerKind::Classic,
        &RunOptions::default(),
        1,
        1,
        epoch(),
    )
    .metrics;
    assert_eq!(m.policy, "classic");
    // Out of rotation after 15 consecutive errors, then probed 1 in 11 picks.
    let d = m.detect_mean_s.unwrap();
    assert!(d > 0.0 && d < 3.0, "{d}");
    assert!(m.probes > 100.0, "{}", m.probes);
    assert!(m.failed < 200.0);
    // Adaptive goes through the same LoadBalance with the other policy.
    let a = run(
        &sc,
        BalancerKind::Adaptive,
        &RunOptions::default(),
        1,
        1,
        epoch(),
    )
    .metrics;
    assert_eq!(a.policy, "adaptive");
}

#[test]
fn the_reference_models_take_a_dead_host_out() {
    let sc = Scenario::named("dead1", &workload(3000)).unwrap();
    for kind in [BalancerKind::Envoy, BalancerKind::P2c] {
        let m = run(&sc, kind, &RunOptions::default(), 1, 1, epoch()).metrics;
        // Five consecutive failures, at 10 calls/s per host: about 0.5 s.
        assert!(m.detect_max_s.unwrap() < 1.5, "{kind}: {m:?}");
        assert!(m.failed < 20.0, "{kind}: {m:?}");
    }
}

#[test]
fn the_same_seed_gives_the_same_result() {
    let sc = Scenario::named("half1", &workload(2000)).unwrap();
    let opts = RunOptions::default();
    for kind in BalancerKind::ALL {
        let a = run(&sc, kind, &opts, 5, 2, epoch()).metrics;
        let b = run(&sc, kind, &opts, 5, 2, epoch()).metrics;
        assert_eq!(a, b, "{kind}");
        assert_eq!(a.seeds, 2);
    }
    let a = run(&sc, BalancerKind::Rr, &opts, 5, 1, epoch()).metrics;
    let c = run(&sc, BalancerKind::Rr, &opts, 6, 1, epoch()).metrics;
    assert_ne!(a.failed, c.failed, "another seed draws other outcomes");
}

/// A round robin that records when each report arrives and what it says.
struct Recorder {
    rr: RoundRobin,
    picks: Vec<(Duration, HostAddr)>,
    reports: Vec<(Duration, HostAddr, CallResult)>,
}

impl Balancer for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn update(&mut self, hosts: &[HostAddr], now: Duration) {
        self.rr.update(hosts, now);
    }
    fn pick(&mut self, now: Duration) -> Pick {
        let p = self.rr.pick(now);
        if let Some(h) = p.host {
            self.picks.push((now, h));
        }
        p
    }
    fn report(&mut self, host: HostAddr, result: CallResult, now: Duration) {
        self.reports.push((now, host, result));
    }
    fn in_rotation(&self, _host: HostAddr) -> bool {
        true
    }
}

#[test]
fn reports_arrive_when_the_calls_complete_in_order() {
    let sc = Scenario::named("timeouts1", &workload(1500)).unwrap();
    let mut b = Recorder {
        rr: RoundRobin::new(),
        picks: Vec::new(),
        reports: Vec::new(),
    };
    let trace = simulate(&sc, &mut b, 3);
    assert_eq!(trace.calls.len(), 1500);
    // Delivered in completion order.
    assert!(b.reports.windows(2).all(|w| w[0].0 <= w[1].0));
    // Each failure of the dead host is learned 1 s after its call.
    let dead = sc.hosts[0].addr;
    let fails: Vec<_> = b.reports.iter().filter(|r| !r.2.ok).collect();
    assert!(!fails.is_empty());
    assert!(
        fails
            .iter()
            .all(|r| r.1 == dead && r.2.latency_ms == 1000.0)
    );
    let first_fail_call = trace.calls.iter().find(|c| !c.ok).unwrap();
    assert_eq!(fails[0].0, first_fail_call.at + s(1.0));
    // Calls still in flight at the end are not reported.
    assert!(b.reports.len() < b.picks.len());
    // A failed call's caller latency is its timecost.
    assert_eq!(first_fail_call.latency_ms, 1000.0);
}

#[test]
fn route_updates_reach_the_balancer() {
    let sc = Scenario::named("rolling:2/1", &workload(5000)).unwrap();
    let trace = simulate(&sc, &mut RoundRobin::new(), 1);
    let last = sc.changes.last().unwrap().at;
    assert!(
        trace
            .calls
            .iter()
            .filter(|c| c.at >= last)
            .all(|c| c.host.is_some_and(|h| h >= 10)),
        "only new hosts after the last update"
    );
    let m = measure(&sc, "rr", &trace, s(1.0));
    // Ten joins, each a comeback: round robin reaches them within a round.
    assert!(m.first_traffic_mean_s.unwrap() < 0.11);
    assert_eq!(m.never_full, 0.0);
}

/// Two hosts, 10 calls/s for 10 s; h0 bad in [2 s, 5 s).
fn two_hosts(kind: ScenarioKind, h0: Vec<Phase>, h1: Vec<Phase>) -> Scenario {
    let a: HostAddr = "10.0.0.1:80".parse().unwrap();
    let b: HostAddr = "10.0.0.2:80".parse().unwrap();
    Scenario {
        name: "hand".into(),
        kind,
        workload: Workload::new(2, 10.0, 100).unwrap(),
        hosts: vec![
            HostModel {
                phases: h0,
                ..HostModel::healthy(a, "h0", 0)
            },
            HostModel {
                phases: h1,
                ..HostModel::healthy(b, "h1", 1)
            },
        ],
        route: vec![0, 1],
        changes: vec![],
        recorded: None,
    }
}

fn call(i: u64, host: usize, ok: bool) -> CallRecord {
    CallRecord {
        at: Duration::from_millis(100 * i),
        host: Some(host),
        ok,
        latency_ms: 5.0,
    }
}

#[test]
fn metrics_of_a_hand_built_trace() {
    let sc = two_hosts(
        ScenarioKind::Faults,
        vec![
            Phase::healthy(s(0.0)),
            Phase::failing(s(2.0), 1.0),
            Phase::healthy(s(5.0)),
        ],
        vec![Phase::healthy(s(0.0))],
    );
    // h0 leaves rotation at 2.5 s and comes back at 6 s; meanwhile h1 gets
    // every call, otherwise the calls alternate.
    let calls = (0..100)
        .map(|i| {
            let t = i as f64 / 10.0;
            let h = if (2.5..6.0).contains(&t) {
                1
            } else {
                (i % 2) as usize
            };
            call(i, h, !(h == 0 && (2.0..5.0).contains(&t)))
        })
        .collect();
    let trace = Trace {
        calls,
        rotation: vec![
            RotationChange {
                at: s(2.5),
                host: 0,
                in_rotation: false,
            },
            RotationChange {
                at: s(6.0),
                host: 0,
                in_rotation: true,
            },
        ],
        probes: 3,
    };
    let m = measure(&sc, "hand", &trace, s(1.0));
    assert_eq!(m.failed, 3.0); // calls 20, 22, 24
    assert_eq!(m.failed_pct, 3.0);
    // 30 calls in [2 s, 5 s), 3 of them to h0.
    assert_eq!(m.bad_share_pct, Some(10.0));
    assert_eq!(m.detect_mean_s, Some(0.5));
    assert_eq!(m.detect_max_s, Some(0.5));
    assert_eq!(m.undetected, 0.0);
    // Back at 5 s; first call at 6 s; 5 of the 10 calls of (5.8 s, 6.8 s]
    // (90% of a fair 5) at 6.8 s.
    assert_eq!(m.first_traffic_mean_s, Some(1.0));
    let full = m.full_share_mean_s.unwrap();
    assert!((full - 1.8).abs() < 1e-9, "{full}");
    assert_eq!(m.never_full, 0.0);
    // In [5 s, 10 s): 50 calls, 20 to h0.
    assert_eq!(m.up_share_pct, Some(40.0));
    assert_eq!((m.p50_ms, m.p99_ms), (Some(5.0), Some(5.0)));
    assert_eq!(m.probes, 3.0);
    assert_eq!(
        (m.spread_pct, m.all_full_s, m.ramp_peak_x),
        (None, None, None)
    );
    assert_eq!(m.extra(), "");
}

#[test]
fn allrecover_ramp_metrics_of_a_hand_built_trace() {
    let down = vec![
        Phase::healthy(s(0.0)),
        Phase::failing(s(1.0), 1.0),
        Phase::healthy(s(2.0)),
    ];
    let sc = two_hosts(ScenarioKind::AllRecover { at: s(2.0) }, down.clone(), down);
    // Alternate, except that calls are rejected while both are down and h0
    // takes every call in [2 s, 4 s).
    let calls = (0..80)
        .map(|i| match i {
            10..20 => CallRecord {
                host: None,
                ok: false,
                latency_ms: 0.0,
                ..call(i, 0, false)
            },
            20..40 => call(i, 0, true),
            _ => call(i, (i % 2) as usize, true),
        })
        .collect();
    let trace = Trace {
        calls,
        ..Trace::default()
    };
    let m = measure(&sc, "hand", &trace, s(1.0));
    // Both at 5 of 10 calls again at 4.9 s.
    let all = m.all_full_s.unwrap();
    assert!((all - 2.9).abs() < 1e-9, "{all}");
    // (2 s, 3 s] went all to h0: twice a fair share.
    assert_eq!(m.ramp_peak_x, Some(2.0));
    // h0 at 5 of the 10 calls of (1.4 s, 2.4 s] at 2.4 s, h1 after 2.9 s.
    let round = |v: Option<f64>| v.map(|v| (v * 1e9).round() / 1e9);
    assert_eq!(round(m.full_share_mean_s), Some(1.65));
    assert_eq!(round(m.full_share_max_s), Some(2.9));
    assert_eq!(m.rejected, 10.0);
    assert_eq!(round(m.first_traffic_mean_s), Some(1.05));
    // Both hosts were bad: detection never happened (no rotation changes).
    assert_eq!(m.undetected, 2.0);
    assert!(m.extra().starts_with("all full 2.90s, peak 2.00x"));
}

#[test]
fn healthy_spread_and_means() {
    let sc = Scenario::named("healthy", &workload(1000)).unwrap();
    let rr = run(&sc, BalancerKind::Rr, &RunOptions::default(), 1, 1, epoch()).metrics;
    assert_eq!(rr.spread_pct, Some(0.0));
    assert_eq!(rr.bad_share_pct, None);
    let mut other = rr.clone();
    other.failed_pct = 2.0;
    other.spread_pct = None;
    let m = Metrics::mean(&[rr.clone(), other]).unwrap();
    assert_eq!(m.failed_pct, 1.0);
    assert_eq!(m.spread_pct, Some(0.0));
    assert_eq!(m.seeds, 2);
    assert!(Metrics::mean(&[]).is_none());
}

/// Checks that every tag is closed in order (a small XML well-formedness
/// test: no comments, CDATA or processing instructions are produced).
fn tags_balance(doc: &str) -> Result<usize, String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = doc;
    let mut n = 0;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').ok_or("unclosed <")? + start;
        let tag = &rest[start + 1..end];
        if tag.contains('<') {
            return Err(format!("< inside a tag: {tag}"));
        }
        let text = &rest[..start];
        if text.contains('>') || (text.contains('&') && !text.contains(';')) {
            return Err(format!("unescaped text {text:?}"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or("close without open")?;
            if open != name {
                return Err(format!("<{open}> closed by </{name}>"));
            }
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().ok_or("empty tag")?);
        }
        n += 1;
        rest = &rest[end + 1..];
    }
    if stack.is_empty() {
        Ok(n)
    } else {
        Err(format!("unclosed {stack:?}"))
    }
}

#[test]
fn the_svg_is_well_formed() {
    let w = workload(2000);
    let (bucket, until) = ShareSeries::auto_range(&w);
    assert_eq!((bucket, until), (s(1.0), s(20.0)));
    let opts = RunOptions {
        plot: Some((bucket, until)),
        ..RunOptions::default()
    };
    let mut series = Vec::new();
    for name in ["dead1", "rolling"] {
        let sc = Scenario::named(name, &w).unwrap();
        for kind in [BalancerKind::Rr, BalancerKind::Envoy] {
            series.push(run(&sc, kind, &opts, 1, 1, epoch()).series.unwrap());
        }
    }
    let doc = svg(&series, "a <test> & title");
    assert!(doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(doc.trim_end().ends_with("</svg>"));
    tags_balance(&doc).unwrap();
    assert!(doc.contains("a &lt;test&gt; &amp; title"));
    // One line per slot and panel; the bad host is marked in the legend.
    assert_eq!(doc.matches("<polyline").count(), 4 * 10);
    assert!(doc.contains("h0 (bad)") && doc.contains("h0→n0 (bad)"));
    // Shares are fractions of each bucket's calls.
    let rr = &series[0];
    assert_eq!(rr.shares.len(), 10);
    assert_eq!(rr.shares[0].len(), 20);
    for b in 0..20 {
        let total: f64 = rr.shares.iter().map(|v| v[b]).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
    assert_eq!(rr.bad_spans, vec![(s(10.0), s(20.0))]);
    assert!(tags_balance("<svg><g></svg>").is_err());
}

#[test]
fn a_custom_balancer_runs_through_run_balancer() {
    let sc = Scenario::named("gray1:0.5", &workload(2000)).unwrap();
    let mut rr = RoundRobin::new();
    let r = run_balancer(&sc, &mut rr, 9, &RunOptions::default());
    assert_eq!(r.metrics.policy, "rr");
    assert!(r.series.is_none());
    // Half of h0's 100 calls after 10 s fail, give or take.
    assert!(
        (30.0..=70.0).contains(&r.metrics.failed),
        "{}",
        r.metrics.failed
    );
}
