//! Integration tests of lars-core: the original configuration files shipped
//! with the C++ Lars load unchanged.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddrV4;
use std::path::PathBuf;

use lars_core::config::{DnsConfig, ReporterConfig};

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
        c.db_thread_cnt.get(),
        3,
        "read from the original's [repoter] spelling"
    );
    assert_eq!(c.store_url, "mysql://root:aceld@127.0.0.1:3306/lars_dns");
}
