//! The dns reading from a replica (`[store] read_url`, issue 15): against a
//! real MariaDB primary and replica (`lars_testkit::mariadb::MariadbPair`,
//! private servers on free ports) and, for the rules that need a replica
//! going backwards or failing on cue, against a stand-in replica (an SQLite
//! store the test edits as replication would).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::support::{Client, host, hosts_of, http_get, wait_stats};
use lars_core::{HostAddr, ModKey};
use lars_dns::{Dns, DnsConfig, DnsHandle};
use lars_store::{RouteAdmin, RouteChange, RouteRead, RouteSnapshot, Store, StoreError};
use lars_testkit::mariadb::MariadbPair;

const KEY: ModKey = ModKey::new(1, 1);

fn config(primary: &str, replica: Option<String>) -> DnsConfig {
    let mut c = DnsConfig::default();
    c.reactor.addr.set_port(0);
    c.reactor.thread_num = 2;
    c.http.addr = Some("127.0.0.1:0".parse().unwrap());
    c.store_url = primary.to_owned();
    c.store_read_url = replica;
    c.version_interval = Duration::from_millis(50);
    c.reload_interval = Duration::from_millis(500);
    c
}

/// The host lists pushed to `c` within `window` (none expected unless a
/// change is).
fn pushes_within(c: &mut Client, window: Duration) -> Vec<Vec<HostAddr>> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match c.recv(left) {
            Some(r) => out.push(hosts_of(&r)),
            None => break,
        }
    }
    out
}

/// Waits (bounded) for the next push to `c`.
fn next_push(c: &mut Client, secs: u64, what: &str) -> Vec<HostAddr> {
    match c.recv(Duration::from_secs(secs)) {
        Some(r) => hosts_of(&r),
        None => panic!("no push within {secs} s: {what}"),
    }
}

fn replica_version(pair: &MariadbPair) -> u64 {
    pair.replica_query("SELECT version FROM lars.RouteVersion WHERE id = 1")
        .unwrap()
        .map_or(0, |v| v.parse().unwrap())
}

/// Replica lag of 2 s (`MASTER_DELAY = 2`): the dns serves an edit only once
/// the replica has it, a subscriber never sees an older host list after a
/// newer one, each edit is pushed once, and everything converges.
#[test]
fn a_lagging_replica_delays_pushes_that_never_go_back() {
    let Some(pair) = MariadbPair::start_or_skip("a_lagging_replica_delays_pushes", 2) else {
        return;
    };
    let primary_url = format!("{}/lars", pair.primary_url());
    let admin = lars_store::open(&primary_url).unwrap();
    admin.set_hosts(KEY, &[host("10.0.0.1:1")]).unwrap();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();

    let replica_url = format!("{}/lars?prefer_socket=false", pair.replica_url());
    let cfg = config(&primary_url, Some(replica_url));
    let dns = Dns::start(cfg, lars_store::open(&primary_url).unwrap()).unwrap();
    assert_eq!(dns.stats().reads.reading, "replica");
    let mut c = Client::connect(dns.local_addr());
    assert_eq!(c.ask(KEY), vec![host("10.0.0.1:1")]);

    let edits: Vec<HostAddr> = (2..=4).map(|i| host(&format!("10.0.0.{i}:1"))).collect();
    let mut written = vec![(dns.stats().route_version, host("10.0.0.1:1"))];
    for h in &edits {
        written.push((admin.set_hosts(KEY, &[*h]).unwrap(), *h));
        thread::sleep(Duration::from_millis(300));
    }
    let last_version = written[3].0;

    // Until the last edit is served: the dns never serves a version the
    // replica does not have (read the dns first: the replica only moves
    // forward), and the lag shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pushed = Vec::new();
    let (mut lag_seen, mut behind_seen) = (false, false);
    loop {
        let s = dns.stats();
        let on_replica = replica_version(&pair);
        assert!(
            s.route_version <= on_replica,
            "the dns serves version {} but the replica has only {on_replica}",
            s.route_version
        );
        lag_seen |= s.route_version < last_version;
        // The hosts served at a version are those written at it (read from
        // the replica, not newer rows from the primary).
        let hosts = Client::connect(dns.local_addr()).ask(KEY);
        if dns.stats().route_version == s.route_version {
            let at = written.iter().find(|(v, _)| *v == s.route_version);
            assert_eq!(
                at.map(|(_, h)| vec![*h]),
                Some(hosts),
                "version {} served with other hosts",
                s.route_version
            );
        }

        behind_seen |= s.reads.version_behind > 0;
        pushed.extend(pushes_within(&mut c, Duration::from_millis(50)));
        if s.route_version == last_version && pushed.last() == Some(&vec![edits[2]]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within 30 s: {s:#?}, pushed {pushed:?}"
        );
    }
    assert!(lag_seen, "the 2 s replica delay was never visible");
    assert!(behind_seen, "/status never showed the replica behind");
    // Pushed in edit order, each once, none older after a newer one.
    let order: Vec<usize> = pushed
        .iter()
        .map(|hs| edits.iter().position(|h| hs == &vec![*h]).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "pushes out of order or repeated: {pushed:?}"
    );
    assert!(pushes_within(&mut c, Duration::from_millis(300)).is_empty());
    let s = dns.stats();
    assert_eq!((s.reads.stale_reads, s.reads.fallbacks), (0, 0), "{s:#?}");
    // /status names the replica without a password and the metrics exist.
    let http = dns.http_addr().unwrap();
    let (_, body) = http_get(http, "/status");
    assert!(body.contains("\"reading\": \"replica\""), "{body}");
    let (_, metrics) = http_get(http, "/metrics");
    assert!(
        metrics.contains("\nlars_dns_store_reading_replica 1\n"),
        "{metrics}"
    );
}

/// The replica down (its proxy cut) and stopped: after `read_fallback_after`
/// the reads turn to the primary and its edits are pushed; the replica back
/// but behind the served version is ignored (stale, no push of its older
/// hosts) and the primary is read meanwhile; once it has caught up the
/// reads return to it without a push, and its next edit is pushed once.
#[test]
fn fallback_to_the_primary_and_back_never_pushes_an_older_version() {
    let Some(pair) = MariadbPair::start_or_skip("fallback_to_the_primary_and_back", 0) else {
        return;
    };
    let primary_url = format!("{}/lars", pair.primary_url());
    let admin = lars_store::open(&primary_url).unwrap();
    admin.set_hosts(KEY, &[host("10.0.0.1:1")]).unwrap();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();
    let proxy = lars_testkit::Proxy::start(pair.replica_addr());
    let replica_url = format!(
        "mysql://root@{}/lars?prefer_socket=false&io_timeout_ms=1000",
        proxy.addr
    );
    let mut cfg = config(&primary_url, Some(replica_url));
    cfg.read_fallback_after = Duration::from_secs(1);
    let dns = Dns::start(cfg, lars_store::open(&primary_url).unwrap()).unwrap();
    let mut c = Client::connect(dns.local_addr());
    assert_eq!(c.ask(KEY), vec![host("10.0.0.1:1")]);

    // The replica goes down and falls behind.
    pair.stop_replication().unwrap();
    proxy.cut();
    let v2 = admin.set_hosts(KEY, &[host("10.0.0.2:1")]).unwrap();
    wait_stats(&dns, 20, "the fallback to the primary", |s| {
        s.reads.reading == "primary" && s.reads.fallbacks == 1 && s.route_version == v2
    });
    assert_eq!(
        next_push(&mut c, 5, "v2 from the primary"),
        vec![host("10.0.0.2:1")]
    );
    assert!(dns.stats().reads.fallback_reason.is_some());

    // Back, but behind what was served: ignored, stale reads counted.
    proxy.restore();
    assert!(replica_version(&pair) < v2);
    wait_stats(&dns, 20, "stale reads of the lagging replica", |s| {
        s.reads.stale_reads >= 2
    });
    let s = dns.stats();
    assert_eq!(
        (s.reads.reading, s.route_version),
        ("primary", v2),
        "{s:#?}"
    );
    assert!(
        pushes_within(&mut c, Duration::from_millis(300)).is_empty(),
        "the replica's older hosts were pushed"
    );
    let v3 = admin.set_hosts(KEY, &[host("10.0.0.3:1")]).unwrap();
    assert_eq!(
        next_push(&mut c, 5, "v3 from the primary"),
        vec![host("10.0.0.3:1")]
    );

    // Caught up: the reads return to the replica, nothing is pushed again.
    pair.start_replication().unwrap();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();
    wait_stats(&dns, 20, "the return to the replica", |s| {
        s.reads.reading == "replica" && s.reads.replica_version == Some(v3)
    });
    assert!(pushes_within(&mut c, Duration::from_millis(300)).is_empty());
    let v4 = admin.set_hosts(KEY, &[host("10.0.0.4:1")]).unwrap();
    assert_eq!(
        next_push(&mut c, 10, "v4 via the replica"),
        vec![host("10.0.0.4:1")]
    );
    wait_stats(&dns, 5, "v4 served from the replica", |s| {
        s.route_version == v4 && s.reads.reading == "replica"
    });
    assert!(pushes_within(&mut c, Duration::from_millis(300)).is_empty());
    assert_eq!(dns.stats().reads.fallbacks, 1);
}

/// A dns (re)started while its replica lags (replication stopped) starts
/// from the primary's newer table: its agents never get routes older than
/// the primary had at start. The replica's older version is ignored
/// (stale) until it catches up, which pushes nothing; the next edit comes
/// through the replica.
#[test]
fn a_dns_started_on_a_lagging_replica_serves_the_primarys_version() {
    let Some(pair) = MariadbPair::start_or_skip("a_dns_started_on_a_lagging_replica", 0) else {
        return;
    };
    let primary_url = format!("{}/lars", pair.primary_url());
    let admin = lars_store::open(&primary_url).unwrap();
    admin.set_hosts(KEY, &[host("10.0.0.1:1")]).unwrap();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();
    pair.stop_replication().unwrap();
    let v2 = admin.set_hosts(KEY, &[host("10.0.0.2:1")]).unwrap();
    assert!(replica_version(&pair) < v2);

    let replica_url = format!("{}/lars?prefer_socket=false", pair.replica_url());
    let dns = Dns::start(
        config(&primary_url, Some(replica_url)),
        lars_store::open(&primary_url).unwrap(),
    )
    .unwrap();
    let s = dns.stats();
    assert_eq!(
        (s.route_version, s.reads.reading),
        (v2, "replica"),
        "{s:#?}"
    );
    let mut c = Client::connect(dns.local_addr());
    assert_eq!(c.ask(KEY), vec![host("10.0.0.2:1")]);
    wait_stats(&dns, 10, "stale reads of the lagging replica", |s| {
        s.reads.stale_reads >= 2
    });
    assert!(pushes_within(&mut c, Duration::from_millis(300)).is_empty());
    assert_eq!(dns.stats().route_version, v2);

    pair.start_replication().unwrap();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();
    wait_stats(&dns, 10, "the replica caught up", |s| {
        s.reads.replica_version == Some(v2)
    });
    assert!(pushes_within(&mut c, Duration::from_millis(300)).is_empty());
    let v3 = admin.set_hosts(KEY, &[host("10.0.0.3:1")]).unwrap();
    assert_eq!(
        next_push(&mut c, 10, "v3 via the replica"),
        vec![host("10.0.0.3:1")]
    );
    let s = dns.stats();
    assert_eq!((s.route_version, s.reads.fallbacks), (v3, 0), "{s:#?}");
}

/// A stand-in replica: an SQLite store the test edits as replication
/// would, which can be made to fail.
#[derive(Clone)]
struct StandIn {
    store: Store,
    fail: Arc<AtomicBool>,
}

impl fmt::Debug for StandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stand-in replica")
    }
}

impl StandIn {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                purpose: "read the stand-in replica",
                source: Box::new(std::io::Error::other("down")),
            });
        }
        Ok(())
    }
}

impl RouteRead for StandIn {
    fn version(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.store.version()
    }
    fn load_routes(&self) -> Result<RouteSnapshot, StoreError> {
        self.check()?;
        self.store.load_routes()
    }
    fn changed_keys(&self, up_to: u64) -> Result<Vec<ModKey>, StoreError> {
        self.check()?;
        self.store.changed_keys(up_to)
    }
    fn delete_changes(&self, _: Option<u64>) -> Result<u64, StoreError> {
        panic!("the dns wrote to its replica");
    }
    fn pending_changes(&self) -> Result<Vec<RouteChange>, StoreError> {
        self.store.pending_changes()
    }
}

struct StandInFx {
    _dir: tempfile::TempDir,
    primary: Store,
    primary_url: String,
    replica_path: std::path::PathBuf,
    replica: StandIn,
}

impl StandInFx {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let primary_url = format!("sqlite://{}", dir.path().join("p.db").display());
        let replica_path = dir.path().join("r.db");
        let replica = StandIn {
            store: lars_store::open(&format!("sqlite://{}", replica_path.display())).unwrap(),
            fail: Arc::new(AtomicBool::new(false)),
        };
        Self {
            primary: lars_store::open(&primary_url).unwrap(),
            primary_url,
            replica_path,
            replica,
            _dir: dir,
        }
    }

    /// Writes `hosts` at `version` on the stand-in, as replication would.
    fn replicate(&self, hosts: &[HostAddr], version: u64) {
        let c = rusqlite::Connection::open(&self.replica_path).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.execute_batch("DELETE FROM RouteData").unwrap();
        for h in hosts {
            c.execute(
                "INSERT INTO RouteData (modid, cmdid, serverip, serverport) VALUES (1, 1, ?1, ?2)",
                (i64::from(h.ip), i64::from(h.port)),
            )
            .unwrap();
        }
        let version = i64::try_from(version).unwrap();
        c.execute(
            "INSERT INTO RouteChange (modid, cmdid, version) VALUES (1, 1, ?1)",
            (version,),
        )
        .unwrap();
        c.execute(
            "UPDATE RouteVersion SET version = ?1 WHERE id = 1",
            (version,),
        )
        .unwrap();
    }

    fn start(&self, fallback_after: Duration) -> DnsHandle {
        let mut cfg = config(&self.primary_url, None);
        cfg.read_fallback_after = fallback_after;
        Dns::start_with_replica(
            cfg,
            lars_store::open(&self.primary_url).unwrap(),
            self.replica.clone(),
        )
        .unwrap()
    }
}

/// The replica goes back to an older version while it is read (a failover
/// to a replica further behind): the older version is never loaded and
/// nothing is pushed; when it moves past the served version again, the
/// change is pushed once. The RouteChange rows are pruned on the primary
/// only (the stand-in panics on a write).
#[test]
fn a_replica_going_back_is_ignored_while_read() {
    let fx = StandInFx::new();
    let v1 = fx.primary.set_hosts(KEY, &[host("10.0.0.1:1")]).unwrap();
    fx.replicate(&[host("10.0.0.1:1")], v1);
    let dns = fx.start(Duration::from_secs(10));
    let mut c = Client::connect(dns.local_addr());
    assert_eq!(c.ask(KEY), vec![host("10.0.0.1:1")]);

    let v2 = fx.primary.set_hosts(KEY, &[host("10.0.0.2:1")]).unwrap();
    fx.replicate(&[host("10.0.0.2:1")], v2);
    assert_eq!(next_push(&mut c, 5, "v2"), vec![host("10.0.0.2:1")]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fx.primary.pending_changes().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "RouteChange not pruned on the primary"
        );
        thread::sleep(Duration::from_millis(20));
    }

    // The replica now answers v1 with v1's hosts.
    fx.replicate(&[host("10.0.0.1:1")], v1);
    wait_stats(&dns, 10, "stale reads", |s| s.reads.stale_reads >= 3);
    let s = dns.stats();
    assert_eq!(
        (s.route_version, s.reads.reading),
        (v2, "replica"),
        "{s:#?}"
    );
    assert!(pushes_within(&mut c, Duration::from_millis(300)).is_empty());
    assert_eq!(
        c.ask(KEY),
        vec![host("10.0.0.2:1")],
        "the newer table stays"
    );

    let v3 = fx.primary.set_hosts(KEY, &[host("10.0.0.3:1")]).unwrap();
    fx.replicate(&[host("10.0.0.3:1")], v3);
    assert_eq!(next_push(&mut c, 5, "v3"), vec![host("10.0.0.3:1")]);
    assert!(pushes_within(&mut c, Duration::from_millis(300)).is_empty());
}

/// `read_fallback_after = 0`: a failing replica is never left; the dns
/// keeps its table, reports the store unhealthy, and recovers with it.
/// With a bound, a replica failing at start-up is replaced by the primary.
#[test]
fn fallback_rules_with_a_failing_replica() {
    let fx = StandInFx::new();
    let v1 = fx.primary.set_hosts(KEY, &[host("10.0.0.1:1")]).unwrap();
    fx.replicate(&[host("10.0.0.1:1")], v1);
    let dns = fx.start(Duration::ZERO);
    fx.replica.fail.store(true, Ordering::SeqCst);
    let v2 = fx.primary.set_hosts(KEY, &[host("10.0.0.2:1")]).unwrap();
    wait_stats(&dns, 10, "the store reported unhealthy", |s| {
        !s.store.healthy
    });
    thread::sleep(Duration::from_millis(500));
    let s = dns.stats();
    assert_eq!(
        (s.route_version, s.reads.reading, s.reads.fallbacks),
        (v1, "replica", 0),
        "{s:#?}"
    );
    fx.replicate(&[host("10.0.0.2:1")], v2);
    fx.replica.fail.store(false, Ordering::SeqCst);
    wait_stats(&dns, 10, "recovery on the replica", |s| {
        s.store.healthy && s.route_version == v2
    });
    drop(dns);

    // Down at start-up, with a bound: start from the primary.
    fx.replica.fail.store(true, Ordering::SeqCst);
    let v3 = fx.primary.set_hosts(KEY, &[host("10.0.0.3:1")]).unwrap();
    let dns = fx.start(Duration::from_millis(200));
    let s = dns.stats();
    assert_eq!(
        (s.route_version, s.reads.reading, s.reads.fallbacks),
        (v3, "primary", 1),
        "{s:#?}"
    );
    // Up and caught up: back to it.
    fx.replicate(&[host("10.0.0.3:1")], v3);
    fx.replica.fail.store(false, Ordering::SeqCst);
    wait_stats(&dns, 10, "the return to the replica", |s| {
        s.reads.reading == "replica"
    });
}

/// A replica that answers but stays behind (replication stopped) is left
/// for the primary after `read_max_lag`, and read again once it has caught
/// up; `read_max_lag = 0` never leaves it.
#[test]
fn a_replica_stuck_behind_is_left_after_read_max_lag() {
    let fx = StandInFx::new();
    let v1 = fx.primary.set_hosts(KEY, &[host("10.0.0.1:1")]).unwrap();
    fx.replicate(&[host("10.0.0.1:1")], v1);
    let mut cfg = config(&fx.primary_url, None);
    cfg.read_max_lag = Duration::from_millis(500);
    cfg.read_fallback_after = Duration::from_millis(200);
    let dns = Dns::start_with_replica(
        cfg,
        lars_store::open(&fx.primary_url).unwrap(),
        fx.replica.clone(),
    )
    .unwrap();
    let mut c = Client::connect(dns.local_addr());
    assert_eq!(c.ask(KEY), vec![host("10.0.0.1:1")]);

    // The primary moves on, the replica does not.
    let v2 = fx.primary.set_hosts(KEY, &[host("10.0.0.2:1")]).unwrap();
    wait_stats(&dns, 10, "the replica seen behind", |s| {
        s.reads.version_behind > 0
    });
    assert_eq!(
        dns.stats().route_version,
        v1,
        "nothing newer than the replica"
    );
    wait_stats(&dns, 10, "the fallback for lag", |s| {
        s.reads.reading == "primary" && s.route_version == v2
    });
    assert_eq!(
        next_push(&mut c, 5, "v2 from the primary"),
        vec![host("10.0.0.2:1")]
    );
    let s = dns.stats();
    assert_eq!(s.reads.fallbacks, 1);
    assert!(
        s.reads
            .fallback_reason
            .as_deref()
            .unwrap()
            .contains("read_max_lag"),
        "{s:#?}"
    );
    // Caught up: read again, nothing pushed twice.
    fx.replicate(&[host("10.0.0.2:1")], v2);
    wait_stats(&dns, 10, "the return to the replica", |s| {
        s.reads.reading == "replica" && s.reads.behind_secs == 0
    });
    assert!(pushes_within(&mut c, Duration::from_millis(300)).is_empty());
    drop(dns);

    // 0: stays on the replica, serving what it has.
    let mut cfg = config(&fx.primary_url, None);
    cfg.read_max_lag = Duration::ZERO;
    let dns = Dns::start_with_replica(
        cfg,
        lars_store::open(&fx.primary_url).unwrap(),
        fx.replica.clone(),
    )
    .unwrap();
    let v3 = fx.primary.set_hosts(KEY, &[host("10.0.0.3:1")]).unwrap();
    wait_stats(&dns, 10, "the replica seen behind", |s| {
        s.reads.behind_secs >= 2
    });
    let s = dns.stats();
    assert_eq!(
        (s.reads.reading, s.route_version),
        ("replica", v2),
        "{s:#?}"
    );
    assert!(v3 > v2);
}
