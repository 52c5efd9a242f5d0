//! A hung database reads as unhealthy and recovers with exact totals, and an
//! idle reporter notices it too (the health probe); the start-up resume
//! reads the persisted counters once, streamed and capped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lars_core::ModKey;
use lars_reporter::Reporter;
use lars_store::StatsStore;

use crate::support::{Agent, TestDb, config, http_get, now, wait_until};
use lars_testkit::Proxy;

const LOCAL: u32 = 0x7f00_0001;
const HOSTS: [u16; 2] = [9001, 9002];

fn status(r: &lars_reporter::ReporterHandle) -> serde_json::Value {
    let (code, body) = http_get(r.http_addr().unwrap(), "/status");
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

fn metric(r: &lars_reporter::ReporterHandle, name: &str) -> u64 {
    let (_, body) = http_get(r.http_addr().unwrap(), "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
}

/// Cumulative counters of one agent per (key, port), reported every 20 ms.
struct Load {
    keys: Vec<ModKey>,
    counters: HashMap<(ModKey, u16), (u32, u32)>,
}

impl Load {
    fn send_for(&mut self, agent: &mut Agent, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            for &k in &self.keys {
                let hosts: Vec<_> = HOSTS
                    .iter()
                    .map(|&p| {
                        let c = self.counters.entry((k, p)).or_default();
                        c.0 += 3;
                        c.1 += 1;
                        (LOCAL, p, c.0, c.1, false)
                    })
                    .collect();
                agent.report(k.modid as i32, k.cmdid as i32, now(), &hosts);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn total(&self) -> u64 {
        self.counters.values().map(|&(s, e)| u64::from(s + e)).sum()
    }
}

/// The MariaDB server's address in `db`'s URL (what a proxy forwards to).
fn server_addr(db: &TestDb) -> std::net::SocketAddr {
    let target = db
        .url
        .rsplit_once('@')
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .0;
    std::net::ToSocketAddrs::to_socket_addrs(target)
        .unwrap()
        .next()
        .unwrap()
}

#[test]
fn mysql_hung_database_is_unhealthy_and_recovers_exactly() {
    let Some(db) = TestDb::mysql("hung") else {
        return;
    };
    let target = server_addr(&db);
    let direct = lars_store::open(&db.url).unwrap();
    let proxy = Proxy::start(target);
    // Writes give up after 2 x 4 s (one retry); health must not wait for that.
    let via = lars_store::open(&format!("{}&io_timeout_ms=4000", db.url_via(proxy.addr))).unwrap();
    let mut c = config(2);
    c.db_stall_timeout = Duration::from_millis(500);
    let mut r = Reporter::start(c, via).unwrap();
    let mut agent = Agent::connect(r.local_addr(), 5);
    let mut load = Load {
        keys: (1..=3).map(|c| ModKey::new(210, c)).collect(),
        counters: HashMap::new(),
    };
    load.send_for(&mut agent, Duration::from_millis(600));
    wait_until(10, "a first successful flush", || r.stats().flushes > 0);
    assert_eq!(status(&r)["db_healthy"], true);

    proxy.freeze();
    let failures_before = r.stats().flush_failures;
    load.send_for(&mut agent, Duration::from_millis(300));
    // Unhealthy once a write is in flight longer than db_stall_timeout,
    // before the write itself fails.
    let mut seen = serde_json::Value::Null;
    wait_until(10, "/status to say unhealthy", || {
        seen = status(&r);
        seen["db_healthy"] == false
    });
    assert_eq!(seen["flush_failures"], failures_before, "{seen}");
    let age1 = metric(&r, "lars_reporter_last_flush_age_seconds");
    load.send_for(&mut agent, Duration::from_millis(2500));
    let age2 = metric(&r, "lars_reporter_last_flush_age_seconds");
    assert!(age2 >= age1 + 2, "the flush age grows: {age1} -> {age2}");
    assert!(metric(&r, "lars_reporter_db_write_in_flight_seconds") >= 1);
    assert_eq!(metric(&r, "lars_reporter_db_healthy"), 0);
    assert!(metric(&r, "lars_reporter_db_stalls_total") >= 1);
    wait_until(20, "the hung writes to fail and be counted", || {
        r.stats().flush_failures > failures_before
    });
    let during = r.stats();
    assert!(!during.db_healthy, "{during:?}");
    assert!(during.pending_rows > 0, "{during:?}");

    proxy.thaw();
    load.send_for(&mut agent, Duration::from_millis(600));
    let sent = load.total();
    wait_until(30, "everything written after the thaw", || {
        let s = r.stats();
        s.db_healthy && s.pending_rows == 0 && s.succ_written + s.err_written == sent
    });
    assert_eq!(status(&r)["db_write_in_flight_secs"], 0);
    assert!(metric(&r, "lars_reporter_last_flush_age_seconds") <= 2);
    drop(agent);
    r.stop();
    for (&(k, p), &(s, e)) in &load.counters {
        let got = direct
            .history(Some(k), 0)
            .unwrap()
            .iter()
            .filter(|h| h.host.port == p)
            .fold((0, 0), |(s, e), h| (s + h.succ, e + h.err));
        assert_eq!(
            got,
            (u64::from(s), u64::from(e)),
            "{k} {p}: none lost, none doubled"
        );
    }
    for &k in &load.keys {
        for row in direct.call_status(Some(k)).unwrap() {
            let (s, e) = load.counters[&(k, row.host.port)];
            assert_eq!((row.succ_cnt, row.err_cnt), (u64::from(s), u64::from(e)));
        }
    }
    drop(proxy);
}

/// A reporter nothing reports to (no rows to write) notices, through its
/// health probe (`db_probe_interval`), a database that hangs (the proxy
/// freezes) and one that is gone (the proxy cuts), within a bound, counts
/// it, says why, and is healthy again once the database answers. Without the
/// probe `db_healthy` stays true throughout (nothing is ever in flight).
#[test]
fn mysql_idle_reporter_probes_a_hung_or_gone_database() {
    let Some(db) = TestDb::mysql("idle_probe") else {
        return;
    };
    let target = server_addr(&db);
    lars_store::open(&db.url).unwrap().init_schema().unwrap();
    let proxy = Proxy::start(target);
    let via = lars_store::open(&format!("{}&io_timeout_ms=2000", db.url_via(proxy.addr))).unwrap();
    let mut c = config(2);
    c.db_stall_timeout = Duration::from_millis(300);
    c.db_probe_interval = Duration::from_millis(200);
    let mut r = Reporter::start(c, via).unwrap();
    wait_until(10, "two successful probes", || {
        let s = r.stats();
        s.db_probes >= 2 && s.db_probe_failures == 0 && s.db_healthy
    });
    assert!(r.stats().db_answer_age_secs <= 1, "{:?}", r.stats());

    // Hung: the probe in flight longer than db_stall_timeout.
    proxy.freeze();
    let mut seen = serde_json::Value::Null;
    wait_until(10, "/status to say unhealthy while frozen", || {
        seen = status(&r);
        seen["db_healthy"] == false
    });
    wait_until(10, "the stalled probe to be counted", || {
        r.stats().db_probe_failures >= 1
    });
    let s = r.stats();
    assert!(!s.db_healthy, "{s:?}");
    assert!(
        s.last_db_error.as_deref().unwrap_or("").contains("probe"),
        "{s:?}"
    );
    assert_eq!((s.flushes, s.pending_rows, s.db_stalls), (0, 0, 0), "{s:?}");
    assert!(metric(&r, "lars_reporter_db_probe_failures_total") >= 1);
    assert_eq!(metric(&r, "lars_reporter_db_healthy"), 0);
    let age = r.stats().db_answer_age_secs;
    wait_until(10, "the answer age to keep growing", || {
        r.stats().db_answer_age_secs >= age + 2
    });
    assert!(!r.stats().db_healthy);

    proxy.thaw();
    wait_until(15, "healthy again after the thaw", || r.stats().db_healthy);
    let s = r.stats();
    assert!(s.db_answer_age_secs <= 1, "{s:?}");

    // Gone: connections closed, new ones refused.
    let failures = s.db_probe_failures;
    proxy.cut();
    wait_until(15, "unhealthy while cut", || {
        let s = r.stats();
        !s.db_healthy && s.db_probe_failures > failures
    });
    assert_eq!(status(&r)["db_healthy"], false);

    proxy.restore();
    wait_until(15, "healthy again after the restore", || {
        r.stats().db_healthy
    });
    assert_eq!(status(&r)["db_healthy"], true);
    r.stop();
    drop(proxy);
}

/// Many keys over three workers; a restart reads the persisted counters
/// once (only the rows under an hour old) and the live windows afterwards
/// hold exactly the calls made since.
fn restart_windows_are_right(url: &str) {
    let store = lars_store::open(url).unwrap();
    // Rows older than an hour are not read at all.
    let old: Vec<_> = (0..40u32)
        .map(|i| lars_store::CallStatusRow {
            key: ModKey::new(400, i),
            host: lars_core::HostAddr::new(LOCAL, 9001),
            caller: 1,
            succ_cnt: 5,
            err_cnt: 5,
            ts: i64::from(now()) - 2 * 3600,
            overload: false,
        })
        .collect();
    store.upsert_call_status(&old).unwrap();
    let keys: Vec<ModKey> = (1..=12).map(|c| ModKey::new(401, c)).collect();
    let mut r = Reporter::start(config(3), store.clone()).unwrap();
    let mut a = Agent::connect(r.local_addr(), 7);
    for &k in &keys {
        a.report(
            k.modid as i32,
            k.cmdid as i32,
            now(),
            &[(LOCAL, 9001, 10, 2, false)],
        );
    }
    wait_until(10, "first reports", || {
        r.stats().requests == keys.len() as u64
    });
    drop(a);
    r.stop();

    let mut r = Reporter::start(config(3), store.clone()).unwrap();
    wait_until(10, "counters resumed", || r.stats().resumed_streams == 12);
    let s = r.stats();
    assert_eq!(
        (s.resume_rows_read, s.resume_capped, s.resume_failures),
        (12, 0, 0),
        "one read for all workers, only recent rows: {s:?}"
    );
    let mut a = Agent::connect(r.local_addr(), 7);
    for &k in &keys {
        a.report(
            k.modid as i32,
            k.cmdid as i32,
            now(),
            &[(LOCAL, 9001, 13, 3, false)],
        );
    }
    // Counted when received; applied by the workers (after a re-read of
    // the resumed streams) a little later.
    wait_until(10, "reports after the restart applied", || {
        keys.iter().all(|&k| r.hosts(k).len() == 1)
    });
    for &k in &keys {
        let view = r.hosts(k);
        assert_eq!(view.len(), 1, "{k}");
        let w = &view[0].windows;
        assert_eq!((w.h1.succ, w.h1.err), (3, 1), "{k}: only the calls since");
        assert_eq!((w.m1.succ, w.m1.err), (3, 1), "{k}");
    }
    drop(a);
    r.stop();
    assert_eq!(r.stats().resets, 0);
    let (s, e) = store.history_totals(Some(ModKey::new(401, 1)), 0).unwrap();
    assert_eq!((s, e), (13, 3));

    // A cap below the rows: a warning, a counter, and the rest start empty.
    let mut c = config(3);
    c.resume_max_rows = 5;
    let r = Reporter::start(c, store.clone()).unwrap();
    wait_until(10, "capped resume", || r.stats().resume_capped == 1);
    let s = r.stats();
    assert_eq!((s.resume_rows_read, s.resumed_streams), (5, 5), "{s:?}");
}

#[test]
fn sqlite_restart_reads_recent_counters_once_and_windows_are_right() {
    let db = TestDb::sqlite("restart_windows");
    restart_windows_are_right(&db.url);
}

#[test]
fn mysql_restart_reads_recent_counters_once_and_windows_are_right() {
    if let Some(db) = TestDb::mysql("restart_windows") {
        restart_windows_are_right(&db.url);
    }
}
