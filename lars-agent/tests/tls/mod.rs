//! The agent's links over TLS (issue 16): a real dns and reporter with a
//! mutual-TLS port each next to the plain one, certificates made in the
//! test. An agent with the right client certificate gets routes and its
//! reports persist; the embedded agent does too; without a certificate, or
//! with one of another CA, it is refused and counted; a plain original
//! client still gets routes on the plain port.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use lars_agent::{Agent, AgentConfig, EmbeddedAgent};
use lars_client::{ApiError, Outcome};
use lars_core::HostAddr;
use lars_core::config::{Allowlist, ClientAuth, ClientTlsConfig, TlsListenerConfig};
use lars_core::proto::{GetRouteRequest, GetRouteResponse};
use lars_core::{MessageId, ModKey, frame};
use lars_dns::{Dns, DnsConfig, DnsHandle};
use lars_reporter::{Reporter, ReporterConfig, ReporterHandle};
use lars_store::{RouteAdmin, StatsStore, Store};
use lars_testkit::tls::TestPki;

use crate::util::{client, hosts, reg, v4, wait_until};

const T: Duration = Duration::from_secs(5);

fn listener(pki: &TestPki, port: u16) -> TlsListenerConfig {
    TlsListenerConfig {
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        ca: Some(pki.ca.clone()),
        client_auth: ClientAuth::Required,
        allow: Allowlist::everyone(),
    }
}

/// The IPv4 address of a TLS listener bound on port 0 (the port the system
/// chose, as the service reports it).
fn v4_of(addr: Option<std::net::SocketAddr>) -> SocketAddrV4 {
    match addr {
        Some(std::net::SocketAddr::V4(a)) => a,
        other => panic!("no IPv4 TLS listener: {other:?}"),
    }
}

/// A dns and a reporter over one SQLite store, each with a plain port and a
/// mutual-TLS port.
struct TlsEnv {
    _dir: tempfile::TempDir,
    store: Store,
    dns: DnsHandle,
    reporter: ReporterHandle,
    dns_tls: SocketAddrV4,
    reporter_tls: SocketAddrV4,
}

impl TlsEnv {
    fn new(pki: &TestPki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            lars_store::open(&format!("sqlite://{}", dir.path().join("x.db").display())).unwrap();
        let mut d = DnsConfig::default();
        d.reactor.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        d.reactor.thread_num = 1;
        d.reactor.tls = Some(listener(pki, 0));
        d.version_interval = Duration::from_millis(100);
        let dns = Dns::start(d, store.clone()).unwrap();
        let mut r = ReporterConfig::default();
        r.reactor.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        r.reactor.thread_num = 1;
        r.reactor.tls = Some(listener(pki, 0));
        r.db_thread_cnt = std::num::NonZeroUsize::MIN;
        r.flush_interval = Duration::from_millis(100);
        let reporter = Reporter::start(r, store.clone()).unwrap();
        Self {
            _dir: dir,
            store,
            dns_tls: v4_of(dns.tls_addr()),
            reporter_tls: v4_of(reporter.tls_addr()),
            dns,
            reporter,
        }
    }

    /// An agent config reaching both TLS ports with `cert` (or none).
    fn agent_config(&self, ca: PathBuf, cert: Option<(PathBuf, PathBuf)>) -> AgentConfig {
        AgentConfig {
            dns: self.dns_tls,
            reporter: self.reporter_tls,
            dns_tls: true,
            reporter_tls: true,
            tls: Some(ClientTlsConfig {
                ca,
                cert: cert.as_ref().map(|c| c.0.clone()),
                key: cert.map(|c| c.1),
                server_name: None,
            }),
            base_port: 0,
            port_count: std::num::NonZeroU16::new(1).unwrap(),
            report_interval: Duration::from_millis(100),
            snapshot_path: None,
            http: lars_core::config::HttpConfig { addr: None },
            ..AgentConfig::default()
        }
    }
}

#[test]
fn an_agent_over_mutual_tls_gets_routes_and_its_reports_persist() {
    let pki = TestPki::new("agent-tls");
    let env = TlsEnv::new(&pki);
    let hs = hosts(&["10.0.16.1:80", "10.0.16.2:80"]);
    env.store.set_hosts(ModKey::new(16, 1), &hs).unwrap();
    let cfg = env.agent_config(
        pki.ca.clone(),
        Some((pki.client_cert.clone(), pki.client_key.clone())),
    );
    let mut agent = Agent::start(cfg).unwrap();
    let c = client(&agent, Duration::from_secs(2));
    let mut got = reg(&c, 16, 1);
    got.sort();
    assert_eq!(got, v4(&hs));
    let h = c.get_host(16, 1).unwrap();
    for _ in 0..7 {
        c.report(16, 1, h, Outcome::Success, None).unwrap();
    }
    c.report(16, 1, h, Outcome::Failure, None).unwrap();
    wait_until(T, "reports persisted over TLS", || {
        let rows = env.store.call_status(Some(ModKey::new(16, 1))).unwrap();
        rows.iter()
            .any(|r| r.host == HostAddr::from(h) && r.succ_cnt == 7 && r.err_cnt == 1)
    });
    let d = env.dns.stats().tcp_limits;
    let r = env.reporter.stats().tcp_limits;
    assert!(
        d.tls_handshakes >= 1 && r.tls_handshakes >= 1,
        "{d:?} {r:?}"
    );

    // An original agent on the dns' plain port is served as before.
    let mut plain = TcpStream::connect(env.dns.local_addr()).unwrap();
    plain.set_read_timeout(Some(T)).unwrap();
    let req = frame::to_bytes(
        MessageId::GetRouteRequest.into(),
        &GetRouteRequest {
            modid: 16,
            cmdid: 1,
        },
    )
    .unwrap();
    plain.write_all(&req).unwrap();
    let mut head = [0u8; 8];
    plain.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; i32::from_le_bytes(head[4..].try_into().unwrap()) as usize];
    plain.read_exact(&mut body).unwrap();
    let resp: GetRouteResponse = prost::Message::decode(&body[..]).unwrap();
    assert_eq!(resp.host.len(), 2);
    assert_eq!(agent.stats().link_tls_failures, 0);
    agent.stop();

    // An agent that trusts another CA refuses the servers' certificates:
    // its failed handshakes show on its own counters.
    let cfg = env.agent_config(
        pki.other_ca.clone(),
        Some((pki.client_cert.clone(), pki.client_key.clone())),
    );
    let mut distrustful = Agent::start(cfg).unwrap();
    wait_until(T, "the agent's failed handshakes counted", || {
        distrustful.stats().link_tls_failures >= 2
    });
    distrustful.stop();
}

#[test]
fn the_embedded_agent_speaks_tls_and_agents_without_the_right_certificate_are_refused() {
    let pki = TestPki::new("agent-tls-refused");
    let env = TlsEnv::new(&pki);
    let hs = hosts(&["10.0.17.1:80"]);
    env.store.set_hosts(ModKey::new(17, 1), &hs).unwrap();

    // The embedded agent (what the lars tools use), with its certificate.
    let cfg = env.agent_config(
        pki.ca.clone(),
        Some((pki.client_cert.clone(), pki.client_key.clone())),
    );
    let mut e = EmbeddedAgent::start(cfg).unwrap();
    assert_eq!(e.reg_init(17, 1).unwrap(), v4(&hs));
    e.stop();

    // No client certificate: refused during the handshake, counted.
    let mut e = EmbeddedAgent::start(env.agent_config(pki.ca.clone(), None)).unwrap();
    wait_until(T, "refusals without a certificate counted", || {
        env.dns.stats().tcp_limits.tls_refused_no_cert >= 1
            && env.reporter.stats().tcp_limits.tls_refused_no_cert >= 1
    });
    assert!(matches!(
        e.get_host(17, 1),
        Err(ApiError::NoExist | ApiError::Timeout)
    ));
    e.stop();

    // A certificate of another CA: refused, counted.
    let cfg = env.agent_config(
        pki.ca.clone(),
        Some((pki.other_client_cert.clone(), pki.other_client_key.clone())),
    );
    let mut e = EmbeddedAgent::start(cfg).unwrap();
    wait_until(T, "refusals of the other CA counted", || {
        env.dns.stats().tcp_limits.tls_refused_bad_cert >= 1
    });
    assert!(e.reg_init(17, 1).is_err() || e.get_host(17, 1).is_err());
    e.stop();

    // A certificate file that does not exist fails the start, naming it.
    let missing = pki.dir.join("missing.pem");
    let cfg = env.agent_config(pki.ca.clone(), Some((missing, pki.client_key.clone())));
    let err = chain(EmbeddedAgent::start(cfg).err());
    assert!(err.contains("missing.pem"), "{err}");
}

/// An error and its causes, joined.
fn chain(e: Option<impl std::error::Error>) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = e.as_ref().map(|e| e as &dyn std::error::Error);
    while let Some(c) = cur {
        out.push_str(&c.to_string());
        out.push_str(": ");
        cur = c.source();
    }
    out
}
