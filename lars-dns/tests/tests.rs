//! End-to-end tests: the dns in-process on an ephemeral port over SQLite (and
//! over MariaDB/MySQL when `LARS_MYSQL_URL` is set), real TCP clients
//! speaking the wire protocol.
#![allow(clippy::unwrap_used)]

mod dashboard;
mod hung_store;
mod replica;
mod support;

use std::time::{Duration, Instant};

use lars_core::ModKey;
use lars_dns::DnsConfig;
use lars_dns::{Dns, DnsError};
use lars_store::RouteAdmin;
use support::{Client, Fixture, MysqlFx, SqliteFx, host, http_get, start_dns, wait_stats};

/// Runs a scenario over SQLite, and over MySQL when configured.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::SqliteFx::new());
            }
            #[test]
            fn mysql() {
                if let Some(fx) = super::MysqlFx::new(stringify!($name)) {
                    super::$name(&fx);
                }
            }
        }
    )*};
}

both_backends!(
    lookups_and_status,
    push_reaches_subscribers_only,
    closed_connection_gets_no_pushes,
    periodic_reload_pushes_unversioned_edits,
    outage_keeps_serving_and_recovers,
);

fn lookups_and_status(fx: &dyn Fixture) {
    let k = ModKey::new(1, 1);
    let (h1, h2) = (host("10.0.0.1:80"), host("10.0.0.2:80"));
    fx.admin().set_hosts(k, &[h2, h1]).unwrap();
    let mut dns = start_dns(fx.dns_store(), 100, 10_000);
    let mut c = Client::connect(dns.local_addr());
    assert_eq!(c.ask(k), vec![h1, h2]);
    assert_eq!(c.ask(ModKey::new(9, 9)), vec![]);
    // Negative wire ids are the same 32 bits: echoed, unknown, empty.
    assert_eq!(c.ask(ModKey::from_wire(-1, 3)), vec![]);

    let http = dns.http_addr().unwrap();
    let (status, body) = http_get(http, "/status");
    assert!(status.contains("200"), "{status}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["requests"], 3, "{body}");
    assert_eq!(v["keys"], 1, "{body}");
    assert_eq!(v["hosts"], 2, "{body}");
    assert_eq!(v["connections"], 1, "{body}");
    assert_eq!(v["subscribed_connections"], 1, "{body}");
    assert_eq!(v["subscribed_keys"], 3, "{body}");
    assert_eq!(v["store"]["healthy"], true, "{body}");
    assert!(v["route_version"].as_u64().unwrap() > 0, "{body}");
    let (status, metrics) = http_get(http, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        metrics.contains("\nlars_dns_requests_total 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nlars_dns_store_up 1\n"), "{metrics}");
    assert!(http_get(http, "/nope").0.contains("404"));
    dns.stop();
}

fn push_reaches_subscribers_only(fx: &dyn Fixture) {
    let (k1, k2) = (ModKey::new(1, 1), ModKey::new(2, 2));
    let (h1, h2, h3) = (
        host("10.0.0.1:80"),
        host("10.0.0.2:80"),
        host("10.0.0.3:80"),
    );
    fx.admin().set_hosts(k1, &[h1]).unwrap();
    fx.admin().set_hosts(k2, &[h2]).unwrap();
    let mut dns = start_dns(fx.dns_store(), 100, 60_000);
    let mut a = Client::connect(dns.local_addr());
    let mut b = Client::connect(dns.local_addr());
    assert_eq!(a.ask(k1), vec![h1]);
    assert_eq!(b.ask(k2), vec![h2]);

    let t0 = Instant::now();
    fx.admin().add_host(k1, h3).unwrap();
    let push = a
        .recv(Duration::from_millis(1500))
        .expect("push within 1.5 s");
    assert!(t0.elapsed() <= Duration::from_millis(1500));
    assert_eq!(ModKey::from_wire(push.modid, push.cmdid), k1);
    assert_eq!(support::hosts_of(&push), vec![h1, h3]);
    assert!(b.recv(Duration::from_millis(300)).is_none(), "b got a push");

    // Deleting the key pushes an empty list.
    let v = fx.admin().delete_key(k1).unwrap();
    let push = a.recv(Duration::from_millis(1500)).expect("delete push");
    assert!(push.host.is_empty());
    wait_stats(&dns, 5, "version", |s| s.route_version == v);
    assert!(b.recv(Duration::from_millis(200)).is_none(), "b got a push");
    // The processed change rows are gone.
    wait_stats(&dns, 5, "pushes", |s| s.pushes == 2);
    let pending = lars_store::RouteRead::pending_changes(fx.admin()).unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    dns.stop();
}

fn closed_connection_gets_no_pushes(fx: &dyn Fixture) {
    let (k1, k2) = (ModKey::new(1, 1), ModKey::new(2, 2));
    fx.admin().set_hosts(k1, &[host("10.0.0.1:80")]).unwrap();
    fx.admin().set_hosts(k2, &[host("10.0.0.2:80")]).unwrap();
    let mut dns = start_dns(fx.dns_store(), 100, 60_000);
    let mut a = Client::connect(dns.local_addr());
    a.ask(k1);
    drop(a);
    // Likely the same fd on the server side.
    let mut b = Client::connect(dns.local_addr());
    b.ask(k2);
    let v = fx.admin().add_host(k1, host("10.0.0.9:80")).unwrap();
    wait_stats(&dns, 5, "the change to be processed", |s| {
        s.route_version == v
    });
    assert!(
        b.recv(Duration::from_millis(300)).is_none(),
        "b got a's push"
    );
    wait_stats(&dns, 5, "a to be unsubscribed", |s| {
        s.subscribed_connections == 1
    });
    assert_eq!(dns.stats().pushes, 0);
    let mut c = Client::connect(dns.local_addr());
    assert_eq!(c.ask(k1).len(), 2);
    dns.stop();
}

fn periodic_reload_pushes_unversioned_edits(fx: &dyn Fixture) {
    let k = ModKey::new(5, 5);
    let mut dns = start_dns(fx.dns_store(), 100, 300);
    let mut a = Client::connect(dns.local_addr());
    assert!(a.ask(k).is_empty());
    // An edit behind the admin's back: no RouteVersion bump, no RouteChange.
    fx.raw_sql(
        "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES (5, 5, 2130706433, 7000)",
    );
    let push = a.recv(Duration::from_secs(5)).expect("push after reload");
    assert_eq!(support::hosts_of(&push), vec![host("127.0.0.1:7000")]);
    dns.stop();
}

fn outage_keeps_serving_and_recovers(fx: &dyn Fixture) {
    let k = ModKey::new(1, 1);
    let (h1, h2) = (host("10.0.0.1:80"), host("10.0.0.2:80"));
    fx.admin().set_hosts(k, &[h1]).unwrap();
    let mut dns = start_dns(fx.dns_store(), 100, 500);
    let mut a = Client::connect(dns.local_addr());
    assert_eq!(a.ask(k), vec![h1]);

    fx.cut();
    wait_stats(&dns, 10, "the outage to be noticed", |s| !s.store.healthy);
    // Lookups keep answering from the last good table, new clients too.
    assert_eq!(a.ask(k), vec![h1]);
    let mut b = Client::connect(dns.local_addr());
    assert_eq!(b.ask(k), vec![h1]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.ask(k), vec![h1]);
    let s = dns.stats();
    assert!(s.store.last_error.is_some(), "{s:?}");
    assert_eq!(s.keys, 1);

    fx.restore();
    wait_stats(&dns, 15, "recovery", |s| s.store.healthy);
    fx.admin().add_host(k, h2).unwrap();
    let push = a.recv(Duration::from_secs(3)).expect("push after recovery");
    assert_eq!(support::hosts_of(&push), vec![h1, h2]);
    let push = b.recv(Duration::from_secs(3)).expect("push after recovery");
    assert_eq!(support::hosts_of(&push), vec![h1, h2]);
    assert!(dns.stats().store.failures > 0);
    dns.stop();
}

#[test]
fn thousand_concurrent_connections() {
    let fx = SqliteFx::new();
    let k = ModKey::new(1, 1);
    fx.admin().set_hosts(k, &[host("10.0.0.1:80")]).unwrap();
    // All from 127.0.0.1: above the per-peer connection limit's default.
    let mut config = DnsConfig::default();
    config.reactor.addr.set_port(0);
    config.reactor.thread_num = 2;
    config.reactor.max_conn_per_peer = 2000;
    config.version_interval = Duration::from_millis(100);
    let mut dns = Dns::start(config, fx.dns_store()).unwrap();
    let mut clients: Vec<Client> = (0..1000)
        .map(|_| Client::connect(dns.local_addr()))
        .collect();
    for c in &mut clients {
        c.send(k);
    }
    for c in &mut clients {
        let resp = c.recv(Duration::from_secs(10)).expect("reply");
        assert_eq!(resp.host.len(), 1);
    }
    wait_stats(&dns, 10, "1000 connections", |s| {
        s.connections == 1000 && s.subscribed_connections == 1000
    });
    drop(clients);
    wait_stats(&dns, 10, "every connection closed", |s| {
        s.connections == 0 && s.subscribed_connections == 0 && s.subscribed_keys == 0
    });
    assert_eq!(dns.stats().requests, 1000);
    dns.stop();
}

#[test]
fn start_fails_when_the_store_is_unreadable() {
    let fx = SqliteFx::new();
    fx.admin()
        .set_hosts(ModKey::new(1, 1), &[host("10.0.0.1:80")])
        .unwrap();
    let store = fx.dns_store();
    fx.cut();
    let mut config = DnsConfig::default();
    config.reactor.addr.set_port(0);
    let err = Dns::start(config, store).unwrap_err();
    fx.restore();
    match err {
        DnsError::Store(e) => assert!(e.is_unavailable(), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn zero_intervals_are_rejected() {
    let fx = SqliteFx::new();
    let mut config = DnsConfig::default();
    config.reactor.addr.set_port(0);
    config.version_interval = Duration::ZERO;
    assert!(matches!(
        Dns::start(config, fx.dns_store()),
        Err(DnsError::Config(_))
    ));
}

#[test]
fn sample_conf_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/lars_dns.conf");
    let c = DnsConfig::load(path).unwrap();
    assert_eq!(c.reactor.addr.port(), 7778);
    assert_eq!(c.reactor.thread_num, 5);
    assert_eq!(c.reactor.max_conn, 1024);
    assert_eq!(c.version_interval, Duration::from_secs(1));
    assert_eq!(c.reload_interval, Duration::from_secs(10));
    assert_eq!(c.store_url, "mysql://root@127.0.0.1:3306/lars_dns");
    assert!(c.http.addr.is_none());
}

// ---- bounded subscriptions and deliberate deletes (issue 13 items 6, 11) ----

/// Whether a reply body carries our field 4, `confirmed_empty`.
fn confirmed_empty(body: &[u8]) -> bool {
    <lars_core::proto::GetRouteResponseExt as prost::Message>::decode(body)
        .unwrap()
        .confirmed_empty
}

#[test]
fn unsubscribe_drops_the_subscription_and_its_pushes() {
    let fx = SqliteFx::new();
    let (k1, k2) = (ModKey::new(1, 1), ModKey::new(2, 2));
    let (h1, h2) = (host("10.0.0.1:80"), host("10.0.0.2:80"));
    fx.admin().set_hosts(k1, &[h1]).unwrap();
    let mut dns = start_dns(fx.dns_store(), 100, 60_000);
    let mut a = Client::connect(dns.local_addr());
    let mut b = Client::connect(dns.local_addr());
    assert_eq!(a.ask(k1), vec![h1]);
    assert_eq!(a.ask(k2), vec![]);
    assert_eq!(b.ask(k2), vec![]);
    wait_stats(&dns, 5, "3 subscriptions", |s| {
        s.subscribed_keys == 2 && s.subscribed_connections == 2
    });
    // a forgets k2 (and asks to forget a key it never had: ignored).
    a.unsubscribe(k2);
    a.unsubscribe(ModKey::new(7, 7));
    wait_stats(&dns, 5, "a's k2 subscription dropped", |s| {
        s.unsubscribes == 1
    });
    b.unsubscribe(k2);
    wait_stats(&dns, 5, "k2 without subscribers", |s| {
        s.subscribed_keys == 1 && s.subscribed_connections == 1 && s.unsubscribes == 2
    });
    // Hosts for k2 are pushed to nobody; a change of k1 still reaches a.
    fx.admin().set_hosts(k2, &[h2]).unwrap();
    let v = fx.admin().add_host(k1, h2).unwrap();
    let push = a.recv(Duration::from_secs(3)).expect("k1 push");
    assert_eq!(ModKey::from_wire(push.modid, push.cmdid), k1);
    wait_stats(&dns, 5, "both changes processed", |s| s.route_version == v);
    assert!(
        a.recv(Duration::from_millis(300)).is_none(),
        "k2 pushed to a"
    );
    assert!(
        b.recv(Duration::from_millis(100)).is_none(),
        "k2 pushed to b"
    );
    // Asking again subscribes again.
    assert_eq!(b.ask(k2), vec![h2]);
    wait_stats(&dns, 5, "k2 subscribed again", |s| s.subscribed_keys == 2);
    let (_, metrics) = http_get(dns.http_addr().unwrap(), "/metrics");
    assert!(
        metrics.contains("\nlars_dns_unsubscribes_total 2\n"),
        "{metrics}"
    );
    dns.stop();
}

#[test]
fn an_empty_answer_is_confirmed_only_from_a_table_with_keys() {
    let fx = SqliteFx::new();
    let (k1, k2, unknown) = (ModKey::new(1, 1), ModKey::new(2, 2), ModKey::new(9, 9));
    fx.admin().set_hosts(k1, &[host("10.0.0.1:80")]).unwrap();
    fx.admin().set_hosts(k2, &[host("10.0.0.2:80")]).unwrap();
    let mut dns = start_dns(fx.dns_store(), 100, 60_000);
    let mut a = Client::connect(dns.local_addr());
    a.send(k1);
    assert!(!confirmed_empty(
        &a.recv_body(Duration::from_secs(5)).unwrap()
    ));
    a.send(k2);
    a.recv_body(Duration::from_secs(5)).unwrap();
    // A key the store has no row for: empty, confirmed.
    a.send(unknown);
    assert!(confirmed_empty(
        &a.recv_body(Duration::from_secs(5)).unwrap()
    ));
    // A deliberate delete: the push is empty and confirmed.
    fx.admin().delete_key(k1).unwrap();
    let body = a.recv_body(Duration::from_secs(3)).expect("delete push");
    let push = <lars_core::proto::GetRouteResponse as prost::Message>::decode(&body[..]).unwrap();
    assert_eq!(
        (ModKey::from_wire(push.modid, push.cmdid), push.host.len()),
        (k1, 0)
    );
    assert!(confirmed_empty(&body));
    // The table becomes empty: that looks like a wiped or wrong store, so
    // the empty answers are not confirmed (agents keep their hosts).
    fx.admin().delete_key(k2).unwrap();
    let body = a.recv_body(Duration::from_secs(3)).expect("delete push");
    assert!(!confirmed_empty(&body));
    a.send(unknown);
    assert!(!confirmed_empty(
        &a.recv_body(Duration::from_secs(5)).unwrap()
    ));
    dns.stop();
}

#[test]
fn subscriptions_to_keys_without_hosts_are_bounded_per_connection() {
    let fx = SqliteFx::new();
    let k = ModKey::new(1, 1);
    fx.admin().set_hosts(k, &[host("10.0.0.1:80")]).unwrap();
    assert_eq!(DnsConfig::default().max_unhosted_subscriptions, 10_000);
    let mut config = DnsConfig::default();
    config.reactor.addr.set_port(0);
    config.version_interval = Duration::from_millis(100);
    config.max_unhosted_subscriptions = 1000;
    let mut dns = Dns::start(config, fx.dns_store()).unwrap();
    let mut a = Client::connect(dns.local_addr());
    // 1,050 unknown keys, as an original agent sprayed with keys would ask.
    for batch in 0..21 {
        for i in 0..50 {
            a.send(ModKey::new(1000 + batch * 50 + i, 1));
        }
        for _ in 0..50 {
            a.recv_body(Duration::from_secs(10))
                .expect("every request answered");
        }
    }
    let s = dns.stats();
    assert_eq!((s.subscribed_keys, s.unhosted_refused), (1000, 50), "{s:?}");
    // A key with hosts is still subscribed, and pushed.
    assert_eq!(a.ask(k).len(), 1);
    wait_stats(&dns, 5, "the hosted key subscribed", |s| {
        s.subscribed_keys == 1001
    });
    fx.admin().add_host(k, host("10.0.0.2:80")).unwrap();
    let push = a.recv(Duration::from_secs(3)).expect("push");
    assert_eq!(push.host.len(), 2);
    // Unsubscribing makes room again.
    a.unsubscribe(ModKey::new(1000, 1));
    a.send(ModKey::new(99_999, 1));
    a.recv_body(Duration::from_secs(5)).unwrap();
    wait_stats(&dns, 5, "room made by the unsubscribe", |s| {
        s.subscribed_keys == 1001 && s.unhosted_refused == 50
    });
    dns.stop();
}

#[test]
fn a_port_in_use_is_named_once_in_the_error_chain() {
    let fx = SqliteFx::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    for http in [false, true] {
        let mut config = DnsConfig::default();
        if http {
            config.reactor.addr.set_port(0);
            config.http.addr = Some(addr);
        } else {
            config.reactor.addr.set_port(addr.port());
        }
        let e = Dns::start(config, fx.dns_store()).unwrap_err();
        let line = lars_core::Chain(&e).to_string();
        assert_eq!(line.matches(&addr.to_string()).count(), 1, "{line}");
    }
}
