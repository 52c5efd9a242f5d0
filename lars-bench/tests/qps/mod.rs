//! `qps::run` against fake agents, and the raw UDP reference.

use std::collections::BTreeSet;
use std::time::Duration;

use lars_bench::qps;
use lars_client::ClientConfig;
use lars_core::proto;

use crate::fake::{FakeAgent, GET_HOST, GET_ROUTE, REPORT, serving_agent};

#[test]
fn qps_loops_get_host_and_report_per_thread_key() {
    let fake = serving_agent();
    let mut seconds = Vec::new();
    let summary = qps::run(
        &fake.config(Duration::from_millis(500)),
        2,
        Duration::from_secs(1),
        |s| seconds.push(s.clone()),
    )
    .unwrap();
    assert_eq!(summary.threads, 2);
    assert_eq!(summary.errors, 0);
    assert_eq!(seconds.len(), 1);
    assert_eq!(summary.per_second, vec![seconds[0].total]);
    assert!(seconds[0].per_thread.iter().all(|&n| n > 0), "{seconds:?}");
    assert!(summary.answered >= seconds[0].total);
    assert!(summary.elapsed >= Duration::from_secs(1));

    let frames = fake.received();
    let keys: BTreeSet<(i32, i32)> = frames
        .iter()
        .filter(|f| f.msgid == GET_HOST)
        .map(|f| {
            let r: proto::GetHostRequest = f.message().unwrap();
            (r.modid, r.cmdid)
        })
        .collect();
    assert_eq!(keys, BTreeSet::from([(1, 1), (2, 1)]));
    let reports: Vec<proto::ReportRequest> = frames
        .iter()
        .filter(|f| f.msgid == REPORT)
        .map(|f| f.message().unwrap())
        .collect();
    assert!(!reports.is_empty());
    assert!(reports.iter().all(|r| r.retcode == 0));
    assert!(frames.iter().any(|f| f.msgid == GET_ROUTE), "reg_init ran");
}

#[test]
fn qps_counts_answers_without_a_host_apart() {
    // Key (1, 1) has a host, key (2, 1) does not exist (the demo's routes).
    let fake = FakeAgent::start(|f| match f.msgid {
        GET_HOST => {
            let req: proto::GetHostRequest = f.message().unwrap();
            if req.modid == 1 {
                vec![crate::fake::answer(f, 0, Some("10.0.0.1:80"))]
            } else {
                vec![crate::fake::answer(f, 3, None)]
            }
        }
        _ => vec![],
    });
    let summary = qps::run(
        &fake.config(Duration::from_millis(200)),
        2,
        Duration::from_millis(500),
        |_| {},
    )
    .unwrap();
    assert!(summary.no_host > 0, "{summary:?}");
    assert!(summary.no_host < summary.answered, "{summary:?}");
}

#[test]
fn qps_counts_a_stalled_agent_as_errors() {
    let fake = FakeAgent::start(|_| vec![]);
    let summary = qps::run(
        &fake.config(Duration::from_millis(50)),
        1,
        Duration::from_millis(300),
        |_| {},
    )
    .unwrap();
    assert_eq!(summary.answered, 0);
    assert!(summary.errors > 0);
    assert!(summary.per_second.is_empty());
}

#[test]
fn udp_reference_answers_every_thread() {
    let config = ClientConfig::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut seconds = Vec::new();
    let summary = qps::run_udp_reference(&config, 2, Duration::from_secs(1), |s| {
        seconds.push(s.clone())
    })
    .unwrap();
    assert_eq!(summary.errors, 0);
    assert_eq!(seconds.len(), 1);
    assert!(seconds[0].per_thread.iter().all(|&n| n > 0), "{seconds:?}");
    assert!(summary.average() > 0.0);
}
