//! Integration tests of lars-core: the original configuration files shipped
//! with the C++ Lars load unchanged.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use lars_core::config::{AgentConfig, DnsConfig, ReporterConfig};

fn original(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../conf/original")
        .join(name)
}

#[test]
fn original_lars_dns_conf() {
    let c = DnsConfig::load(original("lars_dns.conf")).unwrap();
    assert_eq!(
        c.reactor.addr,
        "127.0.0.1:7778".parse::<SocketAddrV4>().unwrap()
    );
    assert_eq!(c.reactor.thread_num, 5);
    assert_eq!(c.reactor.max_conn, 1024);
    assert_eq!(c.store_url, "mysql://root:aceld@127.0.0.1:3306/lars_dns");
}

#[test]
fn original_lars_reporter_conf() {
    let c = ReporterConfig::load(original("lars_reporter.conf")).unwrap();
    assert_eq!(
        c.reactor.addr,
        "127.0.0.1:7779".parse::<SocketAddrV4>().unwrap()
    );
    assert_eq!(
        c.db_thread_cnt, 3,
        "read from the original's [repoter] spelling"
    );
    assert_eq!(c.store_url, "mysql://root:aceld@127.0.0.1:3306/lars_dns");
}

#[test]
fn original_lars_lb_agent_conf() {
    let c = AgentConfig::load(original("lars_lb_agent.conf")).unwrap();
    assert_eq!(
        c.reporter,
        "127.0.0.1:7779".parse::<SocketAddrV4>().unwrap()
    );
    assert_eq!(c.dns, "127.0.0.1:7778".parse::<SocketAddrV4>().unwrap());
    let lb = &c.lb;
    assert_eq!(lb.probe_num, 10);
    assert_eq!(lb.init_succ_cnt, 180);
    assert_eq!(lb.init_err_cnt, 5);
    assert!((lb.err_rate - 0.1).abs() < 1e-12);
    assert!((lb.succ_rate - 0.95).abs() < 1e-12);
    assert_eq!(lb.contin_err_limit, 15);
    assert_eq!(lb.contin_succ_limit, 15);
    assert!((lb.window_err_rate - 0.7).abs() < 1e-12);
    assert_eq!(lb.idle_timeout, Duration::from_secs(15));
    assert_eq!(lb.overload_timeout, Duration::from_secs(15));
    assert_eq!(lb.update_timeout, Duration::from_secs(15));
}
