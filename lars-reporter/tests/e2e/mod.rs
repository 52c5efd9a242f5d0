//! Reports sent over TCP end up in the store with exact counts.

use std::collections::HashMap;
use std::time::Duration;

use lars_core::{HostAddr, ModKey};
use lars_reporter::Reporter;
use lars_reporter::ReporterConfig;
use lars_store::StatsStore;

use crate::support::{Agent, TestDb, config, http_get, now, wait_until};
use lars_testkit::Proxy;

const LOCAL: u32 = 0x7f00_0001;
const K1: ModKey = ModKey::new(100, 1);
const K2: ModKey = ModKey::new(100, 2);
const LATE: ModKey = ModKey::new(100, 3);
const HOSTS: [u16; 2] = [9001, 9002];

/// Sent totals per (key, port) and last counters per (key, port, caller).
#[derive(Default)]
struct Sent {
    totals: HashMap<(ModKey, u16), (u64, u64)>,
    last: HashMap<(ModKey, u16, u32), (u32, u32, bool)>,
    reports: u64,
}

impl Sent {
    fn sum(&self) -> u64 {
        self.totals.values().map(|(s, e)| s + e).sum()
    }
}

/// The C++ agent: cumulative window counters per host, reset to zero when
/// the host's window restarts, a report with every host after every call.
fn cpp_agent(agent: &mut Agent, key: ModKey, calls: u32, sent: &mut Sent) {
    let mut c = [(0u32, 0u32); 2];
    for i in 0..calls {
        let h = (i % 2) as usize;
        if i % 37 == 36 {
            c[h] = (0, 0); // window reset: the next report is below the last
        }
        if i % 5 == 0 {
            c[h].1 += 1;
            sent.totals.entry((key, HOSTS[h])).or_default().1 += 1;
        } else {
            c[h].0 += 1;
            sent.totals.entry((key, HOSTS[h])).or_default().0 += 1;
        }
        let overload = i + 1 == calls;
        let hosts: Vec<_> = (0..2)
            .map(|j| (LOCAL, HOSTS[j], c[j].0, c[j].1, overload && j == 1))
            .collect();
        agent.report(key.modid as i32, key.cmdid as i32, now(), &hosts);
        sent.reports += 1;
        for (j, &(_, port, s, e, o)) in hosts.iter().enumerate() {
            let _ = j;
            sent.last
                .insert((key, port, agent.caller as u32), (s, e, o));
        }
    }
}

/// Our agent: cumulative counters per (key, host) since it started, a report
/// per interval with many calls each; a reset is announced by a zero report.
fn our_agent(agent: &mut Agent, key: ModKey, intervals: u32, sent: &mut Sent) {
    let mut c = [(0u32, 0u32); 2];
    for i in 0..intervals {
        if i == intervals / 2 {
            c = [(0, 0); 2];
            let zeros: Vec<_> = (0..2).map(|j| (LOCAL, HOSTS[j], 0, 0, false)).collect();
            agent.report(key.modid as i32, key.cmdid as i32, now(), &zeros);
            sent.reports += 1;
        }
        for (j, cj) in c.iter_mut().enumerate() {
            let (ds, de) = (10 + i * 7 % 13 + j as u32, i % 3);
            cj.0 += ds;
            cj.1 += de;
            let t = sent.totals.entry((key, HOSTS[j])).or_default();
            t.0 += u64::from(ds);
            t.1 += u64::from(de);
        }
        let hosts: Vec<_> = (0..2)
            .map(|j| (LOCAL, HOSTS[j], c[j].0, c[j].1, false))
            .collect();
        agent.report(key.modid as i32, key.cmdid as i32, now(), &hosts);
        sent.reports += 1;
        for &(_, port, s, e, o) in &hosts {
            sent.last
                .insert((key, port, agent.caller as u32), (s, e, o));
        }
    }
}

fn exact_counts(url: &str) {
    let store = lars_store::open(url).unwrap();
    let mut r = Reporter::start(config(2), store.clone()).unwrap();
    let http = r.http_addr().unwrap();
    let mut a = Agent::connect(r.local_addr(), 11);
    let mut b = Agent::connect(r.local_addr(), 22);
    let mut sent = Sent::default();
    cpp_agent(&mut a, K1, 200, &mut sent);
    our_agent(&mut b, K1, 40, &mut sent);
    our_agent(&mut b, K2, 30, &mut sent);
    // Late reports (more than an hour old) are ignored, even with counters
    // far above the current ones; the next fresh report is unaffected.
    for _ in 0..5 {
        b.report(100, 3, now() - 4000, &[(LOCAL, 9001, 500, 5, false)]);
    }
    b.report(100, 1, now() - 4000, &[(LOCAL, 9001, 1_000_000, 0, false)]);
    // A malformed body is counted and skipped; the connection goes on.
    b.raw(&[3, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xff]);
    our_agent(&mut b, K2, 5, &mut sent);
    let expected_requests = sent.reports + 6;

    wait_until(20, "every report processed", || {
        let s = r.stats();
        s.requests == expected_requests && s.succ_in + s.err_in == sent.sum()
    });

    // Live windows over HTTP.
    let (code, body) = http_get(http, "/hosts?modid=100&cmdid=1");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    for (h, port) in hosts.iter().zip(HOSTS) {
        assert_eq!(h["port"], port);
        let (s, e) = sent.totals[&(K1, port)];
        assert_eq!(h["windows"]["m5"]["succ"], s, "{h}");
        assert_eq!(h["windows"]["h1"]["err"], e, "{h}");
        assert_eq!(h["callers"].as_array().unwrap().len(), 2);
    }
    assert_eq!(
        hosts[1]["callers"][0]["overload"], true,
        "C++ agent's last report"
    );
    assert_eq!(http_get(http, "/hosts?modid=100").0, 400);
    let (code, body) = http_get(http, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["requests"], expected_requests);
    assert_eq!(status["late_ignored"], 6);
    assert_eq!(status["bad_frames"], 1);
    assert_eq!(status["queue_depths"].as_array().unwrap().len(), 2);
    let (code, metrics) = http_get(http, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains(&format!(
        "lars_reporter_requests_total {expected_requests}\n"
    )));
    assert_eq!(http_get(http, "/nope").0, 404);

    drop((a, b));
    r.stop();
    let s = r.stats();
    assert!(s.resets > 0, "counter resets were exercised");
    assert_eq!(s.pending_rows, 0);
    assert_eq!(s.succ_written + s.err_written, sent.sum());

    // The store: exact history totals per host, latest counters per caller.
    for key in [K1, K2] {
        let hist = store.history(Some(key), 0).unwrap();
        for port in HOSTS {
            let got = hist
                .iter()
                .filter(|h| h.host == HostAddr::new(LOCAL, port))
                .fold((0, 0), |(s, e), h| (s + h.succ, e + h.err));
            assert_eq!(got, sent.totals[&(key, port)], "{key} port {port}");
        }
        let rows = store.call_status(Some(key)).unwrap();
        let expected: Vec<_> = sent.last.keys().filter(|k| k.0 == key).collect();
        assert_eq!(rows.len(), expected.len());
        for row in rows {
            let (s, e, o) = sent.last[&(key, row.host.port, row.caller)];
            assert_eq!(
                (row.succ_cnt, row.err_cnt, row.overload),
                (u64::from(s), u64::from(e), o)
            );
        }
    }
    assert_eq!(store.history_totals(Some(LATE), 0).unwrap(), (0, 0));
    assert!(store.call_status(Some(LATE)).unwrap().is_empty());
}

#[test]
fn sqlite_counts_are_exact_across_resets_and_late_reports_ignored() {
    let db = TestDb::sqlite("exact");
    exact_counts(&db.url);
}

#[test]
fn mysql_counts_are_exact_across_resets_and_late_reports_ignored() {
    let Some(db) = TestDb::mysql("exact") else {
        return;
    };
    exact_counts(&db.url);
}

#[test]
fn mysql_outage_loses_nothing() {
    let Some(db) = TestDb::mysql("outage") else {
        return;
    };
    let base = std::env::var("LARS_MYSQL_URL").unwrap();
    let target = base.trim_end_matches('/').rsplit_once('@').unwrap().1;
    let target = std::net::ToSocketAddrs::to_socket_addrs(target)
        .unwrap()
        .next()
        .unwrap();
    // Create the schema directly, then let the reporter go through the proxy.
    let direct = lars_store::open(&db.url).unwrap();
    let proxy = Proxy::start(target);
    let via = lars_store::open(&db.url_via(proxy.addr)).unwrap();
    let mut r = Reporter::start(config(2), via).unwrap();
    let mut agent = Agent::connect(r.local_addr(), 5);
    let keys: Vec<ModKey> = (1..=3).map(|c| ModKey::new(200, c)).collect();
    let mut counters: HashMap<(ModKey, u16), (u32, u32)> = HashMap::new();
    let mut send_for = |agent: &mut Agent, d: Duration| {
        let end = std::time::Instant::now() + d;
        while std::time::Instant::now() < end {
            for &k in &keys {
                let hosts: Vec<_> = HOSTS
                    .iter()
                    .map(|&p| {
                        let c = counters.entry((k, p)).or_default();
                        c.0 += 3;
                        c.1 += 1;
                        (LOCAL, p, c.0, c.1, false)
                    })
                    .collect();
                agent.report(k.modid as i32, k.cmdid as i32, now(), &hosts);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    send_for(&mut agent, Duration::from_millis(600));
    wait_until(10, "a first successful flush", || r.stats().flushes > 0);
    proxy.cut();
    send_for(&mut agent, Duration::from_secs(3));
    let during = r.stats();
    assert!(during.flush_failures > 0, "the outage was seen: {during:?}");
    assert!(!during.db_healthy);
    proxy.restore();
    send_for(&mut agent, Duration::from_millis(600));
    let sent_total: u64 = counters.values().map(|&(s, e)| u64::from(s + e)).sum();
    wait_until(30, "everything written after the outage", || {
        let s = r.stats();
        s.db_healthy && s.pending_rows == 0 && s.succ_written + s.err_written == sent_total
    });
    drop(agent);
    r.stop();
    for &k in &keys {
        let hist = direct.history(Some(k), 0).unwrap();
        for p in HOSTS {
            let got = hist
                .iter()
                .filter(|h| h.host.port == p)
                .fold((0, 0), |(s, e), h| (s + h.succ, e + h.err));
            let c = counters[&(k, p)];
            assert_eq!(got, (u64::from(c.0), u64::from(c.1)), "{k} {p}");
        }
        for row in direct.call_status(Some(k)).unwrap() {
            let c = counters[&(k, row.host.port)];
            assert_eq!(
                (row.succ_cnt, row.err_cnt),
                (u64::from(c.0), u64::from(c.1))
            );
        }
    }
    drop(proxy);
}

#[test]
fn graceful_stop_flushes_what_is_queued() {
    let db = TestDb::sqlite("stop");
    let store = lars_store::open(&db.url).unwrap();
    let mut c = config(3);
    c.flush_interval = Duration::from_secs(3600); // only the stop flushes
    let mut r = Reporter::start(c, store.clone()).unwrap();
    let mut a = Agent::connect(r.local_addr(), 1);
    for i in 1..=50u32 {
        a.report(300, (i % 7) as i32, 0, &[(LOCAL, 9001, i, 0, false)]);
    }
    wait_until(10, "reports received", || r.stats().requests == 50);
    assert_eq!(r.stats().zero_ts, 50, "ts 0 is taken as now");
    assert_eq!(
        store.history_totals(None, 0).unwrap(),
        (0, 0),
        "nothing flushed yet"
    );
    drop(a);
    r.stop();
    // Per cmdid the counters are cumulative: the total is the last value.
    let mut expected = 0u64;
    for cmd in 0..7u32 {
        expected += u64::from((1..=50u32).filter(|i| i % 7 == cmd).max().unwrap());
    }
    assert_eq!(store.history_totals(None, 0).unwrap(), (expected, 0));
}

fn restart_resumes_counters(url: &str) {
    let store = lars_store::open(url).unwrap();
    let key = (301, 1);
    let mut r = Reporter::start(config(2), store.clone()).unwrap();
    let mut a = Agent::connect(r.local_addr(), 7);
    a.report(
        key.0,
        key.1,
        now(),
        &[(LOCAL, 9001, 10, 1, false), (LOCAL, 9002, 4, 0, false)],
    );
    wait_until(10, "first report received", || r.stats().requests == 1);
    drop(a);
    r.stop();
    assert_eq!(store.history_totals(None, 0).unwrap(), (14, 1));

    // A new reporter over the same store: the agent keeps counting, its next
    // cumulative report adds only the calls since the last one.
    let mut r = Reporter::start(config(2), store.clone()).unwrap();
    wait_until(10, "counters resumed", || r.stats().resumed_streams == 2);
    let mut a = Agent::connect(r.local_addr(), 7);
    a.report(
        key.0,
        key.1,
        now(),
        &[(LOCAL, 9001, 15, 1, false), (LOCAL, 9002, 4, 2, false)],
    );
    // Another caller is new: all of its calls count.
    let mut b = Agent::connect(r.local_addr(), 8);
    b.report(key.0, key.1, now(), &[(LOCAL, 9001, 3, 0, false)]);
    wait_until(10, "reports received", || r.stats().requests == 2);
    drop((a, b));
    r.stop();
    assert_eq!(r.stats().resets, 0);
    assert_eq!(store.history_totals(None, 0).unwrap(), (14 + 5 + 3, 1 + 2));
}

#[test]
fn sqlite_restart_resumes_persisted_counters() {
    let db = TestDb::sqlite("resume");
    restart_resumes_counters(&db.url);
}

#[test]
fn mysql_restart_resumes_persisted_counters() {
    if let Some(db) = TestDb::mysql("resume") {
        restart_resumes_counters(&db.url);
    }
}

#[test]
fn sample_conf_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/lars_reporter.conf");
    let c = ReporterConfig::load(path).unwrap();
    assert_eq!(c.reactor.addr.port(), 7779);
    assert_eq!(c.db_thread_cnt.get(), 3);
    assert_eq!(c.flush_interval, Duration::from_secs(1));
    assert!(c.http.addr.is_some());
}

/// A malformed request to the status port is answered 400 and counted in
/// `/status` (`http.bad_requests`) and `/metrics`.
#[test]
fn garbage_on_the_status_port_is_answered_400_and_counted() {
    use std::io::{Read, Write};

    let db = TestDb::sqlite("http_garbage");
    let store = lars_store::open(&db.url).unwrap();
    let mut r = Reporter::start(config(1), store).unwrap();
    let addr = r.http_addr().unwrap();
    assert_eq!(r.stats().http.bad_requests, 0);

    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x16\x03\x01 not http\r\nno header colon\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

    let (code, body) = http_get(addr, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["http"]["bad_requests"], 1, "{status}");
    let (_, metrics) = http_get(addr, "/metrics");
    assert!(
        metrics.contains("lars_reporter_http_refused_total{reason=\"bad_request\"} 1\n"),
        "{metrics}"
    );
    // Both GETs were parsed and handed to the handler (the /metrics one is
    // counted before it renders).
    assert!(
        metrics.contains("lars_reporter_http_requests_total 2\n"),
        "{metrics}"
    );
    r.stop();
}
