//! `lars bench fleet` end to end, small: the real `lars-dns` and
//! `lars-reporter` binaries (from this target directory, next to the test
//! executable's `deps/`), a few hundred connections, a few seconds. Checks
//! the invariants only (every subscriber got the push, no failed get_host,
//! totals exact), never timings.

use std::path::PathBuf;
use std::time::Duration;

use lars_bench::fleet::{self, FleetOptions};

/// `target/<profile>/<name>`: the test runs from `target/<profile>/deps/`.
fn service_bin(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn bins(test: &str) -> Option<(PathBuf, PathBuf)> {
    match (service_bin("lars-dns"), service_bin("lars-reporter")) {
        (Some(d), Some(r)) => Some((d, r)),
        _ => {
            lars_testkit::skip(
                test,
                "lars-dns / lars-reporter are not built in this target directory \
                 (cargo build -p lars-dns-bin -p lars-reporter-bin)",
            );
            None
        }
    }
}

fn small(dns_bin: PathBuf, reporter_bin: PathBuf) -> FleetOptions {
    FleetOptions {
        dns: 2,
        subscribers: 0,
        dns_poll: Duration::from_millis(100),
        dns_threads: 1,
        agents: 0,
        agent_keys: 3,
        reporters: 0,
        report_agents: 40,
        report_keys: 5,
        report_hosts: 3,
        report_duration: Duration::from_secs(10),
        report_interval: Duration::from_millis(500),
        dns_bin: Some(dns_bin),
        reporter_bin: Some(reporter_bin),
        ..FleetOptions::default()
    }
}

#[test]
fn push_reaches_every_subscriber() {
    let Some((d, r)) = bins("fleet::push_reaches_every_subscriber") else {
        return;
    };
    let opts = FleetOptions {
        subscribers: 200,
        ..small(d, r)
    };
    let report = fleet::run(&opts, &mut |l| eprintln!("{l}")).unwrap();
    eprintln!("{report}");
    let push = report.push.unwrap();
    assert_eq!(push.subscribed, 200, "{push:?}");
    assert_eq!(push.pushed, 200, "{push:?}");
    assert_eq!((push.failed, push.timed_out), (0, 0), "{push:?}");
    assert_eq!(push.latency.count, 200);
    assert!(push.latency.p50 <= push.latency.p99 && push.latency.p99 <= push.latency.max);
}

#[test]
fn dns_killed_agents_resubscribe_without_a_failed_get_host() {
    let Some((d, r)) = bins("fleet::dns_killed_agents_resubscribe_without_a_failed_get_host")
    else {
        return;
    };
    let opts = FleetOptions {
        agents: 100,
        ..small(d, r)
    };
    let report = fleet::run(&opts, &mut |l| eprintln!("{l}")).unwrap();
    eprintln!("{report}");
    let b = report.dns_kill.unwrap();
    assert_eq!(b.ready, 100, "{b:?}");
    // Both dns served agents (the rendezvous order spreads them).
    assert!(b.per_dns.iter().all(|&n| n > 0), "{b:?}");
    assert!(b.served > 0, "{b:?}");
    assert_eq!(b.resubscribed, b.served, "{b:?}");
    assert_eq!(b.timed_out, 0, "{b:?}");
    assert!(b.failovers >= b.served as u64, "{b:?}");
    assert!(b.get_host_calls > 0, "{b:?}");
    assert_eq!(b.get_host_failures, 0, "{b:?}");
}

#[test]
fn reporter_killed_and_restarted_keeps_totals_exact() {
    let Some((d, r)) = bins("fleet::reporter_killed_and_restarted_keeps_totals_exact") else {
        return;
    };
    let opts = FleetOptions {
        reporters: 3,
        ..small(d, r)
    };
    let report = fleet::run(&opts, &mut |l| eprintln!("{l}")).unwrap();
    eprintln!("{report}");
    let rep = report.reporters.unwrap();
    assert!(rep.succ_sent > 0 && rep.err_sent > 0, "{rep:?}");
    // The victim's keys moved away and back.
    assert!(rep.moves > 0, "{rep:?}");
    assert_eq!(rep.per_reporter.len(), 3);
    assert!(rep.per_reporter.iter().all(|l| l.reports > 0), "{rep:?}");
    assert_eq!(
        (rep.succ_stored, rep.err_stored),
        (rep.succ_sent, rep.err_sent),
        "history totals differ from the calls sent: {rep:?}"
    );
    assert!(rep.exact);
}

#[test]
fn a_missing_binary_is_a_clear_error() {
    let opts = FleetOptions {
        subscribers: 10,
        dns_bin: Some(PathBuf::from("/nonexistent/lars-dns")),
        ..FleetOptions::default()
    };
    let err = fleet::run(&opts, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("lars-dns not found at /nonexistent/lars-dns"),
        "{err}"
    );
}

#[test]
fn a_fleet_beyond_the_fd_limit_is_refused() {
    let opts = FleetOptions {
        subscribers: 10_000_000,
        ..FleetOptions::default()
    };
    let err = fleet::run(&opts, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("file descriptors"), "{err}");
}
