//! A hung database (the proxy to MariaDB stops forwarding, connections stay
//! open, as with a stopped server) reads as unhealthy within
//! `store_stall_timeout`, the age of the last good round grows, the failures
//! are counted, lookups keep being answered, and after the thaw the table
//! catches up with what changed meanwhile.

use std::time::Duration;

use lars_core::ModKey;
use lars_dns::{Dns, DnsConfig};
use lars_store::RouteAdmin;

use crate::support::{Client, host, http_get, wait_stats};
use lars_testkit::Proxy;

/// Drops the test database on the way out, even after a failure.
struct DropDb {
    server: String,
    db: String,
}

impl Drop for DropDb {
    fn drop(&mut self) {
        use mysql::prelude::Queryable;
        if let Ok(mut c) = mysql::Opts::from_url(&self.server)
            .and_then(|o| mysql::Conn::new(o).map_err(|_| mysql::UrlError::BadUrl))
        {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db));
        }
    }
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
}

#[test]
fn mysql_hung_store_is_unhealthy_and_recovers() {
    let Some(server) = lars_testkit::mysql_server("the hung-store test of the dns") else {
        return;
    };
    let db = format!("lars_test_dns_hung_{}", std::process::id());
    let _drop = DropDb {
        server: server.clone(),
        db: db.clone(),
    };
    let admin_url = format!("{server}/{db}");
    let admin = lars_store::open(&admin_url).unwrap();
    let k = ModKey::new(1, 1);
    let (h1, h2) = (host("10.0.0.1:80"), host("10.0.0.2:80"));
    admin.set_hosts(k, &[h1]).unwrap();

    let upstream = server.rsplit_once('@').map_or(server.as_str(), |(_, h)| h);
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(upstream.trim_end_matches('/'))
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream);
    let auth = server
        .strip_prefix("mysql://")
        .unwrap()
        .rsplit_once('@')
        .map_or(String::new(), |(a, _)| format!("{a}@"));
    // Reads give up after 2 x 3 s (one retry); health must not wait for that.
    let url = format!(
        "mysql://{auth}{}/{db}?prefer_socket=false&io_timeout_ms=3000",
        proxy.addr
    );
    let mut config = DnsConfig::default();
    config.reactor.addr.set_port(0);
    config.reactor.thread_num = 2;
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    config.version_interval = Duration::from_millis(100);
    config.reload_interval = Duration::from_millis(500);
    config.store_stall_timeout = Duration::from_millis(500);
    let mut dns = Dns::start(config, lars_store::open(&url).unwrap()).unwrap();
    let http = dns.http_addr().unwrap();
    let mut a = Client::connect(dns.local_addr());
    assert_eq!(a.ask(k), vec![h1]);
    wait_stats(&dns, 10, "a good round", |s| {
        s.store.healthy && s.store.last_ok_age_secs == 0
    });

    proxy.freeze();
    let mut seen: serde_json::Value;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        seen = serde_json::from_str(&http_get(http, "/status").1).unwrap();
        if seen["store"]["healthy"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never unhealthy: {seen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen["store"]["failures"], 0,
        "before any read failed: {seen}"
    );
    // Lookups are answered from the last good table meanwhile.
    assert_eq!(a.ask(k), vec![h1]);
    let v2 = admin.add_host(k, h2).unwrap();
    let age1 = metric(
        &http_get(http, "/metrics").1,
        "lars_dns_store_last_ok_age_seconds",
    );
    std::thread::sleep(Duration::from_millis(2200));
    let m = http_get(http, "/metrics").1;
    let age2 = metric(&m, "lars_dns_store_last_ok_age_seconds");
    assert!(age2 >= age1 + 2, "the age grows: {age1} -> {age2}");
    assert!(metric(&m, "lars_dns_store_round_in_flight_seconds") >= 1);
    assert_eq!(metric(&m, "lars_dns_store_up"), 0);
    assert_eq!(metric(&m, "lars_dns_store_stalls_total"), 1);
    wait_stats(&dns, 20, "the hung round to fail and be counted", |s| {
        s.store.failures > 0 && !s.store.healthy
    });
    assert_eq!(a.ask(k), vec![h1]);

    proxy.thaw();
    wait_stats(&dns, 30, "recovery", |s| {
        s.store.healthy && s.route_version == v2 && s.hosts == 2
    });
    let push = a.recv(Duration::from_secs(5)).expect("push after the thaw");
    assert_eq!(crate::support::hosts_of(&push), vec![h1, h2]);
    assert_eq!(a.ask(k), vec![h1, h2]);
    let s = dns.stats();
    assert_eq!(s.store.round_in_flight_secs, 0, "{s:?}");
    assert!(s.store.last_ok_age_secs <= 1, "{s:?}");
    dns.stop();
    drop(proxy);
    drop(admin);
    use mysql::prelude::Queryable;
    let mut c = mysql::Conn::new(mysql::Opts::from_url(&server).unwrap()).unwrap();
    c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .unwrap();
}
