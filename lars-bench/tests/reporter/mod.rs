//! The reporter tool against an in-process reporter over SQLite: every count
//! sent is found in the store.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use lars_bench::reporter::{self, BenchError, BenchOptions};
use lars_reporter::Reporter;
use lars_reporter::ReporterConfig;

/// A reporter on an ephemeral port with a short flush interval.
fn config(workers: usize) -> ReporterConfig {
    let mut c = ReporterConfig::default();
    c.reactor.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    c.reactor.thread_num = 2;
    c.db_thread_cnt = std::num::NonZeroUsize::new(workers).unwrap();
    c.flush_interval = Duration::from_millis(100);
    c
}

#[test]
fn bench_tool_verifies_totals() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/lars.db", dir.path().display());
    let store = lars_store::open(&url).unwrap();
    let mut r = Reporter::start(config(2), store).unwrap();
    let report = reporter::run(&BenchOptions {
        addr: r.local_addr(),
        store_url: url.clone(),
        conns: 2,
        keys: 5,
        hosts: 3,
        rate: 2000,
        duration: Duration::from_millis(800),
        verify_timeout: Duration::from_secs(20),
        ..BenchOptions::default()
    })
    .unwrap();
    assert!(report.reports > 0);
    assert!(report.complete, "{report:?}");
    assert_eq!(report.status_rows_ok, 2 * 5 * 3);
    assert_eq!(report.succ_persisted, report.succ_sent);
    r.stop();
}

#[test]
fn bench_tool_rejects_out_of_range_options() {
    let invalid = |o: BenchOptions| matches!(reporter::run(&o), Err(BenchError::Invalid(_)));
    assert!(invalid(BenchOptions {
        conns: 0,
        ..BenchOptions::default()
    }));
    assert!(invalid(BenchOptions {
        hosts: 2001,
        ..BenchOptions::default()
    }));
    assert!(invalid(BenchOptions {
        keys: u32::MAX,
        hosts: 2000,
        ..BenchOptions::default()
    }));
}
