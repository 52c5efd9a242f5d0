//! `simulate` (the original simulator) against fake agents.

use std::collections::BTreeSet;
use std::time::Duration;

use lars_bench::simulate::{ErrRate, LatencyModel, SimEvent, SimOptions, simulate};
use lars_client::{LarsClient, Outcome};
use lars_core::proto;

use crate::fake::{FakeAgent, GET_HOST, REPORT, addr, answer, serving_agent};

#[test]
fn simulate_tallies_hosts_and_sees_transitions() {
    // Query n: even -> A, odd -> B, except 20..50 -> A only (B absent) and
    // 60..70 -> Overload.
    let mut n = 0u32;
    let fake = FakeAgent::start(move |f| {
        if f.msgid != GET_HOST {
            return vec![];
        }
        let i = n;
        n += 1;
        match i {
            60..70 => vec![answer(f, 1, None)],
            20..50 => vec![answer(f, 0, Some("10.0.0.1:80"))],
            _ if i % 2 == 0 => vec![answer(f, 0, Some("10.0.0.1:80"))],
            _ => vec![answer(f, 0, Some("10.0.0.2:80"))],
        }
    });
    let client = LarsClient::connect(&fake.config(Duration::from_millis(500))).unwrap();
    let mut opts = SimOptions::new(1, 1);
    opts.err_rate = ErrRate::new(0).unwrap();
    opts.interval = Duration::ZERO;
    let mut calls = 0;
    let report = simulate(&client, &opts, |_, _| calls += 1);
    assert_eq!(calls, 100);
    let (a, b) = (addr("10.0.0.1:80"), addr("10.0.0.2:80"));
    assert_eq!((report.hosts[&a].succ, report.hosts[&a].err), (60, 0));
    assert_eq!((report.hosts[&b].succ, report.hosts[&b].err), (30, 0));
    assert_eq!(report.overload, 10);
    assert_eq!(
        report.events,
        vec![
            SimEvent::HostAbsent {
                host: b,
                from: 20,
                to: 50,
                returned: true
            },
            SimEvent::OverloadBegan { at: 60 },
            SimEvent::OverloadEnded { at: 70 },
        ]
    );
    let reports: Vec<proto::ReportRequest> = fake
        .received()
        .iter()
        .filter(|f| f.msgid == REPORT)
        .map(|f| f.message().unwrap())
        .collect();
    assert_eq!(reports.len(), 90);
    assert!(
        reports
            .iter()
            .all(|r| r.retcode == Outcome::Success.retcode())
    );
}

#[test]
fn simulate_reports_failures_at_the_error_rate() {
    let fake = serving_agent();
    let client = LarsClient::connect(&fake.config(Duration::from_millis(500))).unwrap();
    let mut opts = SimOptions::new(1, 1);
    opts.err_rate = ErrRate::new(10).unwrap();
    opts.interval = Duration::ZERO;
    opts.count = 30;
    opts.absence_threshold = 5;
    let report = simulate(&client, &opts, |_, _| {});
    assert_eq!(report.hosts[&addr("10.0.0.1:80")].err, 30);
    assert!(report.events.is_empty());
    let failures = fake
        .received()
        .iter()
        .filter(|f| f.msgid == REPORT)
        .filter(|f| f.message::<proto::ReportRequest>().unwrap().retcode == 1)
        .count();
    assert_eq!(failures, 30);
}

fn sent_reports(fake: &FakeAgent) -> Vec<proto::ReportRequest> {
    fake.received()
        .iter()
        .filter(|f| f.msgid == REPORT)
        .map(|f| f.message().unwrap())
        .collect()
}

#[test]
fn simulate_reports_a_latency_with_every_call() {
    let fake = serving_agent();
    let client = LarsClient::connect(&fake.config(Duration::from_millis(500))).unwrap();
    let mut opts = SimOptions::new(1, 1);
    opts.err_rate = ErrRate::new(5).unwrap();
    opts.interval = Duration::ZERO;
    opts.count = 40;
    opts.seed = 11;
    // The default model: 5 ms median, spread out.
    let mut seen = Vec::new();
    let report = simulate(&client, &opts, |_, r| {
        seen.push(r.as_ref().unwrap().latency.unwrap());
    });
    let reports = sent_reports(&fake);
    assert_eq!(reports.len(), 40);
    // Failures and successes alike carry their latency, never "unknown".
    assert!(reports.iter().any(|r| r.retcode == 1) && reports.iter().any(|r| r.retcode == 0));
    assert!(reports.iter().all(|r| r.timecost >= 1), "{reports:?}");
    let wire: Vec<u32> = reports.iter().map(|r| r.timecost).collect();
    assert_eq!(report.latency_ms, wire);
    let drawn: Vec<u32> = seen
        .iter()
        .map(|d| lars_client::timecost_ms(Some(*d)))
        .collect();
    assert_eq!(drawn, wire);
    assert!(wire.iter().collect::<BTreeSet<_>>().len() > 3, "{wire:?}");
    let p50 = report.latency_quantile(0.5).unwrap();
    assert!((3..=8).contains(&p50), "{p50}");

    // A fixed sub-millisecond latency is reported as 1 ms; none as 0.
    opts.latency = Some(LatencyModel::new(Duration::from_micros(400), 0.0).unwrap());
    opts.count = 5;
    let report = simulate(&client, &opts, |_, _| {});
    assert_eq!(report.latency_ms, vec![1; 5]);
    assert!(sent_reports(&fake).iter().all(|r| r.timecost == 1));
    opts.latency = None;
    let report = simulate(&client, &opts, |_, _| {});
    assert!(report.latency_ms.is_empty());
    assert_eq!(report.latency_quantile(0.5), None);
    assert!(sent_reports(&fake).iter().all(|r| r.timecost == 0));
}

#[test]
fn simulate_failure_draws_do_not_depend_on_latency() {
    let fake = serving_agent();
    let client = LarsClient::connect(&fake.config(Duration::from_millis(500))).unwrap();
    let mut opts = SimOptions::new(1, 1);
    opts.interval = Duration::ZERO;
    opts.count = 50;
    opts.seed = 5;
    let outcomes = |opts: &SimOptions| {
        let mut v = Vec::new();
        simulate(&client, opts, |_, r| v.push(r.as_ref().unwrap().outcome));
        v
    };
    let with = outcomes(&opts);
    opts.latency = None;
    assert_eq!(outcomes(&opts), with);
}
