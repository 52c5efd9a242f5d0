//! Trust limits on reported statistics (docs/stats.md, "Trust limits"): a
//! report claiming more calls than could have happened is rejected whole,
//! counted by reason, recorded per key for the console, never written as
//! calls; honest traffic after it counts exactly.

use lars_core::{HostAddr, ModKey};
use lars_reporter::Reporter;
use lars_store::StatsStore;

use crate::support::{Agent, TestDb, config, http_get, now, wait_until};

const LOCAL: u32 = 0x7f00_0001;
const KEY: ModKey = ModKey::new(600, 1);

fn absurd_report_is_rejected(url: &str) {
    let store = lars_store::open(url).unwrap();
    let mut r = Reporter::start(config(2), store.clone()).unwrap();
    let (m, c) = (KEY.modid as i32, KEY.cmdid as i32);
    let mut honest = Agent::connect(r.local_addr(), 7);
    honest.report(m, c, now(), &[(LOCAL, 9001, 10, 1, false)]);
    wait_until(10, "the first report applied", || r.hosts(KEY).len() == 1);
    // The same stream (caller 7 spoofed), succ = err = 2^32-1.
    let mut liar = Agent::connect(r.local_addr(), 7);
    liar.report(m, c, now(), &[(LOCAL, 9001, u32::MAX, u32::MAX, false)]);
    wait_until(10, "the absurd report rejected", || {
        r.stats().rejected_reports.message_total == 1
    });
    // Many new hosts, each under the stream rate, together over the key's.
    let mut spread = Agent::connect(r.local_addr(), 8);
    let hosts: Vec<_> = (0..3u16)
        .map(|i| (LOCAL, 9100 + i, 600_000, 0, false))
        .collect();
    spread.report(m, c, now(), &hosts);
    wait_until(10, "the spread report rejected", || {
        r.stats().rejected_reports.key_rate == 1
    });
    // Honest traffic afterwards: from the honest counters, and only the
    // growth of the spread hosts' counters.
    honest.report(m, c, now(), &[(LOCAL, 9001, 15, 2, false)]);
    let grown: Vec<_> = (0..3u16)
        .map(|i| (LOCAL, 9100 + i, 600_001, 0, false))
        .collect();
    spread.report(m, c, now(), &grown);
    wait_until(10, "the honest reports applied", || {
        r.stats().succ_in == 10 + 5 + 3
    });
    let http = r.http_addr().unwrap();
    let (_, status) = http_get(http, "/status");
    assert!(status.contains("\"message_total\": 1"), "{status}");
    let (_, metrics) = http_get(http, "/metrics");
    assert!(
        metrics.contains("lars_reporter_rejected_reports_total{reason=\"key_rate\"} 1\n"),
        "{metrics}"
    );
    drop((honest, liar, spread));
    r.stop();
    let s = r.stats();
    assert_eq!((s.succ_in, s.err_in), (18, 2), "{s:?}");
    assert_eq!(
        s.rejected_calls,
        2 * u64::from(u32::MAX) - 11 + 1_800_000,
        "{s:?}"
    );
    assert_eq!(s.resets, 0, "the honest report is no reset");
    // Nothing of it written as calls or counters.
    assert_eq!(store.history_totals(Some(KEY), 0).unwrap(), (18, 2));
    let row = store.call_status_of(KEY, 7).unwrap();
    assert_eq!(
        (row[0].host, row[0].succ_cnt, row[0].err_cnt),
        (HostAddr::new(LOCAL, 9001), 15, 2)
    );
    // The console's record: two rejected reports of the key.
    let rejected = store.rejected_reports(Some(KEY), 0).unwrap();
    let (reports, calls) = rejected
        .iter()
        .fold((0, 0), |(r, c), x| (r + x.reports, c + x.calls));
    assert_eq!((reports, calls), (2, s.rejected_calls));
}

#[test]
fn sqlite_absurd_report_is_rejected_and_honest_traffic_counts_exactly() {
    let db = TestDb::sqlite("trust");
    absurd_report_is_rejected(&db.url);
}

#[test]
fn mysql_absurd_report_is_rejected_and_honest_traffic_counts_exactly() {
    if let Some(db) = TestDb::mysql("trust") {
        absurd_report_is_rejected(&db.url);
    }
}
