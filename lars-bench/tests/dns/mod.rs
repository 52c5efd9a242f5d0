//! The dns tool against an external dns's TLS port (issue 16): a dns with a
//! `[tls]` listener requiring client certificates from the test PKI's CA,
//! started by the test, measured through its address like a deployed one.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use lars_bench::dns::{self, BenchError, BenchOptions};
use lars_core::config::{Allowlist, ClientAuth, ClientTlsConfig, TlsListenerConfig};
use lars_dns::{Dns, DnsConfig, DnsHandle};
use lars_testkit::tls::TestPki;

/// A dns over a SQLite store holding the demo routes, with a mutual-TLS
/// listener; stopped on drop (by its handle).
struct TlsDns {
    _dns: DnsHandle,
    tls_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TlsDns {
    fn start(pki: &TestPki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/lars.db", dir.path().display());
        let store = lars_store::open(&url).unwrap();
        store.seed_demo().unwrap();
        let port = dns::free_port().unwrap();
        let mut config = DnsConfig::default();
        config.reactor.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        config.reactor.thread_num = 1;
        config.reactor.max_conn_per_peer = 0;
        config.reactor.tls = Some(TlsListenerConfig {
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            ca: Some(pki.ca.clone()),
            client_auth: ClientAuth::Required,
            allow: Allowlist::everyone(),
        });
        let dns = Dns::start(config, store).unwrap();
        Self {
            _dns: dns,
            tls_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            _dir: dir,
        }
    }
}

/// A client `[tls]`: trust `ca`, present `client` (cert, key) if any.
fn files(ca: &Path, client: Option<(&Path, &Path)>) -> ClientTlsConfig {
    ClientTlsConfig {
        ca: ca.to_path_buf(),
        cert: client.map(|(c, _)| c.to_path_buf()),
        key: client.map(|(_, k)| k.to_path_buf()),
        server_name: None,
    }
}

fn options(addr: SocketAddr, tls: ClientTlsConfig) -> BenchOptions {
    BenchOptions {
        conns: 2,
        window: 8,
        duration: Duration::from_secs(1),
        dns: Some(addr),
        dns_tls: Some(tls),
        ..BenchOptions::default()
    }
}

/// The message of a [`BenchError::Tls`]; panics naming what came instead.
fn tls_error(r: Result<dns::BenchReport, BenchError>) -> String {
    match r {
        Err(BenchError::Tls(m)) => m,
        Err(e) => panic!("expected a TLS error, got {e:?}"),
        Ok(report) => panic!("expected a TLS error, measured {report}"),
    }
}

#[test]
fn measures_an_external_dns_over_mutual_tls() {
    let pki = TestPki::new("bench-dns-ext");
    let dns = TlsDns::start(&pki);
    let tls = files(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let report = dns::run(options(dns.tls_addr, tls)).unwrap();
    assert!(report.dns.replies > 0, "{report}");
    assert!(report.raw.replies > 0, "{report}");
    assert!(report.to_string().contains("over TLS"), "{report}");
    // A server name instead of the IP (the certificate names localhost).
    let named = ClientTlsConfig {
        server_name: Some("localhost".into()),
        ..files(&pki.ca, Some((&pki.client_cert, &pki.client_key)))
    };
    let report = dns::run(BenchOptions {
        duration: Duration::from_millis(200),
        ..options(dns.tls_addr, named)
    })
    .unwrap();
    assert!(report.dns.replies > 0, "{report}");
}

#[test]
fn an_external_dns_refusing_the_handshake_is_a_clear_error() {
    let pki = TestPki::new("bench-dns-refused");
    let dns = TlsDns::start(&pki);
    // A client certificate from another CA: the dns refuses it.
    let other = files(
        &pki.ca,
        Some((&pki.other_client_cert, &pki.other_client_key)),
    );
    let m = tls_error(dns::run(options(dns.tls_addr, other)));
    assert!(m.contains("refused our certificate"), "{m}");
    assert!(
        m.contains(&pki.other_client_cert.display().to_string()),
        "{m}"
    );
    // No client certificate at all.
    let m = tls_error(dns::run(options(dns.tls_addr, files(&pki.ca, None))));
    assert!(m.contains("requires a client certificate"), "{m}");
    // We trust another CA than the one that signed the dns's certificate.
    let wrong_ca = files(&pki.other_ca, Some((&pki.client_cert, &pki.client_key)));
    let m = tls_error(dns::run(options(dns.tls_addr, wrong_ca)));
    assert!(m.contains("does not verify against the CA file"), "{m}");
    assert!(m.contains(&pki.other_ca.display().to_string()), "{m}");
    // A name the certificate does not carry.
    let wrong_name = ClientTlsConfig {
        server_name: Some("elsewhere.example".into()),
        ..files(&pki.ca, Some((&pki.client_cert, &pki.client_key)))
    };
    let m = tls_error(dns::run(options(dns.tls_addr, wrong_name)));
    assert!(m.contains("for the name elsewhere.example"), "{m}");
}

#[test]
fn unusable_tls_files_are_named() {
    let pki = TestPki::new("bench-dns-files");
    let missing = pki.dir.join("no-such-ca.pem");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    let m = tls_error(dns::run(options(addr, files(&missing, None))));
    assert!(m.contains(&missing.display().to_string()), "{m}");
    // A key file holding no key.
    let no_key = files(&pki.ca, Some((&pki.client_cert, &pki.client_cert)));
    let m = tls_error(dns::run(options(addr, no_key)));
    assert!(m.contains(&pki.client_cert.display().to_string()), "{m}");
    // A port that closes at once (like a plain port or an allow list
    // refusing us): a clear error, no hang.
    let closing = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let closing_addr = closing.local_addr().unwrap();
    closing.set_nonblocking(true).unwrap();
    let closer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok((s, _)) = closing.accept() {
                drop(s);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let tls = files(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let result = dns::run(options(closing_addr, tls));
    closer.join().unwrap();
    match result {
        Err(BenchError::Io(e)) => {
            assert!(e.to_string().contains("during the TLS handshake"), "{e}")
        }
        other => panic!("expected an i/o error, got {other:?}"),
    }
    // dns_tls without an external dns.
    let o = BenchOptions {
        dns: None,
        ..options(addr, files(&pki.ca, None))
    };
    assert!(matches!(dns::run(o), Err(BenchError::Invalid(_))));
}
