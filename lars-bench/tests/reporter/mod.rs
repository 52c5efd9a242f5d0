//! The reporter tool against an in-process reporter over SQLite: every count
//! sent is found in the store, also through the reporter's mutual-TLS port
//! given as an external address.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use lars_bench::reporter::{self, BenchError, BenchOptions};
use lars_core::config::{Allowlist, ClientAuth, ClientTlsConfig, TlsListenerConfig};
use lars_reporter::ReporterConfig;
use lars_reporter::{Reporter, ReporterHandle};
use lars_testkit::tls::TestPki;

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

/// A reporter over SQLite with a mutual-TLS listener trusting the PKI's CA
/// for client certificates: (reporter, TLS address, store URL, store dir).
fn tls_reporter(pki: &TestPki) -> (ReporterHandle, SocketAddr, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/lars.db", dir.path().display());
    let store = lars_store::open(&url).unwrap();
    let port = lars_bench::dns::free_port().unwrap();
    let mut c = config(2);
    c.reactor.tls = Some(TlsListenerConfig {
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        ca: Some(pki.ca.clone()),
        client_auth: ClientAuth::Required,
        allow: Allowlist::everyone(),
    });
    let r = Reporter::start(c, store).unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    (r, addr, url, dir)
}

fn tls_options(addr: SocketAddr, url: &str, tls: ClientTlsConfig) -> BenchOptions {
    BenchOptions {
        addr,
        addr_tls: Some(tls),
        store_url: url.to_owned(),
        conns: 2,
        keys: 5,
        hosts: 3,
        rate: 2000,
        duration: Duration::from_secs(1),
        verify_timeout: Duration::from_secs(20),
        ..BenchOptions::default()
    }
}

#[test]
fn bench_tool_persists_every_count_through_an_external_tls_port() {
    let pki = TestPki::new("bench-reporter-ext");
    let (mut r, addr, url, _dir) = tls_reporter(&pki);
    let tls = ClientTlsConfig {
        ca: pki.ca.clone(),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
        server_name: None,
    };
    let result = reporter::run(&tls_options(addr, &url, tls));
    r.stop();
    let report = result.unwrap();
    assert!(report.over_tls, "{report:?}");
    assert!(report.reports > 0, "{report:?}");
    assert!(report.complete, "{report:?}");
    assert_eq!(report.status_rows_ok, 2 * 5 * 3);
    assert_eq!(report.succ_persisted, report.succ_sent);
    assert_eq!(report.err_persisted, report.err_sent);
}

#[test]
fn bench_tool_names_a_refused_certificate() {
    let pki = TestPki::new("bench-reporter-refused");
    let (mut r, addr, url, _dir) = tls_reporter(&pki);
    let other = ClientTlsConfig {
        ca: pki.ca.clone(),
        cert: Some(pki.other_client_cert.clone()),
        key: Some(pki.other_client_key.clone()),
        server_name: None,
    };
    let result = reporter::run(&tls_options(addr, &url, other));
    let no_cert = ClientTlsConfig {
        cert: None,
        key: None,
        ca: pki.ca.clone(),
        server_name: None,
    };
    let without = reporter::run(&tls_options(addr, &url, no_cert));
    let wrong_ca = ClientTlsConfig {
        ca: pki.other_ca.clone(),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
        server_name: None,
    };
    let unverified = reporter::run(&tls_options(addr, &url, wrong_ca));
    r.stop();
    let message = |r: Result<reporter::BenchReport, BenchError>| match r {
        Err(BenchError::Tls(m)) => m,
        other => panic!("expected a TLS error, got {other:?}"),
    };
    let m = message(result);
    assert!(m.contains("refused our certificate"), "{m}");
    assert!(
        m.contains(&pki.other_client_cert.display().to_string()),
        "{m}"
    );
    let m = message(without);
    assert!(m.contains("requires a client certificate"), "{m}");
    let m = message(unverified);
    assert!(m.contains("does not verify against the CA file"), "{m}");
}
