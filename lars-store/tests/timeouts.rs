//! Bounded waits: a hung MySQL server and a locked SQLite file end in
//! `Unavailable` errors after their timeouts instead of stalling; the
//! reporter's streamed resume read.

use std::time::{Duration, Instant};

use lars_core::{HostAddr, ModKey};
use lars_store::{CallStatusRow, RouteAdmin, StatsStore};

use crate::both;
use crate::common::TestDb;
use lars_testkit::Proxy;

/// `url` (`mysql://auth@host:port/db`) through `proxy`, with our I/O timeout.
fn via(url: &str, proxy: std::net::SocketAddr, timeout_ms: u64) -> String {
    let rest = url.strip_prefix("mysql://").unwrap();
    let (auth, tail) = rest.rsplit_once('@').unwrap();
    let db = tail.split_once('/').unwrap().1;
    format!("mysql://{auth}@{proxy}/{db}?prefer_socket=false&io_timeout_ms={timeout_ms}")
}

fn target(url: &str) -> std::net::SocketAddr {
    let host = url.rsplit_once('@').unwrap().1.split_once('/').unwrap().0;
    std::net::ToSocketAddrs::to_socket_addrs(host)
        .unwrap()
        .next()
        .unwrap()
}

#[test]
fn mysql_hung_server_is_unavailable_within_the_io_timeout() {
    let Some(db) = TestDb::mysql("hung_server") else {
        return;
    };
    db.open(); // creates the database directly
    let proxy = Proxy::start(target(&db.url));
    let s = lars_store::open(&via(&db.url, proxy.addr, 500)).unwrap();
    s.ping().unwrap();
    proxy.freeze();
    let t0 = Instant::now();
    let e = s.ping().unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    // Two attempts (the one retry) of at most 0.5 s each, plus reconnecting:
    // far from the old 60 s per read.
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let chain = lars_store::Chain(&e).to_string();
    assert_eq!(chain.matches("while trying to").count(), 1, "{chain}");
    proxy.thaw();
    s.ping().unwrap();
    s.add_host(ModKey::new(1, 1), HostAddr::new(1, 1)).unwrap();
}

#[test]
fn sqlite_locked_file_is_unavailable_after_the_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lars.db");
    let s = lars_store::open(&format!("sqlite://{}?busy_timeout_ms=300", path.display())).unwrap();
    assert!(path.exists(), "the parameter is not part of the file name");
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let t0 = Instant::now();
    let e = s
        .add_host(ModKey::new(1, 1), HostAddr::new(1, 1))
        .unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "waited for the lock"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    s.add_host(ModKey::new(1, 1), HostAddr::new(1, 1)).unwrap();
    assert!(lars_store::open(&format!("sqlite://{}?busy_timeout_ms=x", path.display())).is_err());
}

#[test]
fn sqlite_open_errors_say_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/dir/lars.db", dir.path().display());
    let e = lars_store::open(&url).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let chain = lars_store::Chain(&e).to_string();
    assert_eq!(
        chain.matches("unable to open database file").count(),
        1,
        "{chain}"
    );
    assert!(chain.contains("missing/dir/lars.db"), "{chain}");
}

fn row(i: u32, ts: i64) -> CallStatusRow {
    CallStatusRow {
        key: ModKey::new(1, i % 7),
        host: HostAddr::new(0x0A00_0001 + i, 80),
        caller: i,
        succ_cnt: u64::from(i) * 2,
        err_cnt: u64::from(i),
        ts,
        overload: i % 2 == 0,
    }
}

both!(recent_status_rows_are_streamed_with_a_cap, |db| {
    let s = db.open();
    let old: Vec<_> = (0..50).map(|i| row(i, 1_000)).collect();
    let new: Vec<_> = (50..130).map(|i| row(i, 5_000 + i64::from(i))).collect();
    s.upsert_call_status(&old).unwrap();
    s.upsert_call_status(&new).unwrap();
    let mut seen = Vec::new();
    let n = s
        .for_each_recent_status(5_000, 1_000, &mut |r| seen.push(r))
        .unwrap();
    assert_eq!(n, 80);
    seen.sort_by_key(|r| r.caller);
    assert_eq!(seen, new);
    let mut capped = 0;
    let n = s
        .for_each_recent_status(0, 30, &mut |_| capped += 1)
        .unwrap();
    assert_eq!((n, capped), (30, 30));
});

both!(pruning_many_rows_deletes_them_all_in_chunks, |db| {
    let s = db.open();
    // 25,000 old rows (more than two pruning statements) and 10 new ones.
    let rows: Vec<_> = (0..25_010u32)
        .map(|i| lars_store::HistoryRow {
            key: ModKey::new(3, 1 + i % 10),
            host: HostAddr::new(0x0A00_0000 + i, 80),
            minute: if i < 25_000 { 60 } else { 6_000 },
            succ: 1,
            err: 0,
        })
        .collect();
    s.append_history(&rows).unwrap();
    assert_eq!(s.prune_history(600).unwrap(), 25_000);
    assert_eq!(s.history_totals(None, 0).unwrap(), (10, 0));
    assert_eq!(s.prune_history(600).unwrap(), 0);
});
