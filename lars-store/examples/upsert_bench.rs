//! Batch-upsert throughput of `ServerCallStatus` from one thread.
//!
//! ```text
//! cargo run --release -p lars-store --example upsert_bench -- \
//!     --url mysql://root@127.0.0.1:3306/lars_bench --rows 500000 --batch 5000
//! cargo run --release -p lars-store --example upsert_bench -- \
//!     --url mysql://root@127.0.0.1:3306/lars_bench --rows 20000 --mode original
//! ```
//!
//! `--mode store` (default) calls `StatsStore::upsert_call_status` once per
//! batch (multi-row statements, one transaction per batch). `--mode original`
//! replays the C++ reporter: one autocommitted single-row
//! `INSERT ... ON DUPLICATE KEY UPDATE` per row, after a ping, as the same-run
//! reference. Half of the rows update keys written earlier, half are new.
//! A MySQL database must be named `lars_bench*`: it is dropped and recreated.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use lars_core::{HostAddr, ModKey};
use lars_store::{CallStatusRow, StatsStore};
use mysql::prelude::Queryable;

struct Args {
    url: String,
    rows: usize,
    batch: usize,
    original: bool,
}

fn args() -> Args {
    let mut a = Args {
        url: "mysql://root@127.0.0.1:3306/lars_bench".into(),
        rows: 500_000,
        batch: 5_000,
        original: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--url" => a.url = val(),
            "--rows" => a.rows = val().parse().expect("--rows N"),
            "--batch" => a.batch = val().parse().expect("--batch N"),
            "--mode" => a.original = val() == "original",
            other => panic!("unknown flag {other}; see the file's doc"),
        }
    }
    a
}

/// Key `idx` (a bijection onto distinct primary keys).
fn row(idx: usize, j: usize) -> CallStatusRow {
    let idx = idx as u32;
    CallStatusRow {
        key: ModKey::new(1 + idx % 50, 1 + (idx / 50) % 20),
        host: HostAddr::new(0x0A00_0000 + idx / 1000, 9000),
        caller: 0xC0A8_0001,
        succ_cnt: j as u64 % 1000,
        err_cnt: j as u64 % 7,
        ts: 1_700_000_000 + (j as i64) / 1000,
        overload: j % 10 == 0,
    }
}

/// Row `j`: even rows are new keys, odd rows update a key written before.
fn nth(j: usize) -> CallStatusRow {
    let idx = if j % 2 == 0 || j < 2 {
        j / 2
    } else {
        (j.wrapping_mul(2_654_435_761)) % (j / 2)
    };
    row(idx, j)
}

fn reset_mysql(url: &str) {
    let (server, db) = url.rsplit_once('/').unwrap();
    assert!(
        db.starts_with("lars_bench"),
        "the bench database must be named lars_bench*"
    );
    let mut c = mysql::Conn::new(mysql::Opts::from_url(server).unwrap()).unwrap();
    c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .unwrap();
}

fn main() {
    let a = args();
    if a.url.starts_with("mysql://") {
        reset_mysql(&a.url);
    }
    let store = lars_store::open(&a.url).unwrap();
    let rows: Vec<CallStatusRow> = (0..a.rows).map(nth).collect();
    let start = Instant::now();
    if a.original {
        let mut c = mysql::Conn::new(mysql::Opts::from_url(&a.url).unwrap()).unwrap();
        for r in &rows {
            c.ping().unwrap();
            let ov = if r.overload { "1" } else { "0" };
            c.exec_drop(
                "INSERT INTO ServerCallStatus(modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, \
                 overload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE succ_cnt = ?, \
                 err_cnt = ?, ts = ?, overload = ?",
                mysql::Params::Positional(vec![
                    r.key.modid.into(),
                    r.key.cmdid.into(),
                    r.host.ip.into(),
                    r.host.port.into(),
                    r.caller.into(),
                    r.succ_cnt.into(),
                    r.err_cnt.into(),
                    r.ts.into(),
                    ov.into(),
                    r.succ_cnt.into(),
                    r.err_cnt.into(),
                    r.ts.into(),
                    ov.into(),
                ]),
            )
            .unwrap();
        }
    } else {
        for chunk in rows.chunks(a.batch.max(1)) {
            store.upsert_call_status(chunk).unwrap();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let stored = store.call_status(None).unwrap().len();
    println!(
        "mode={} rows={} batch={} stored_keys={} secs={:.3} rows_per_sec={:.0}",
        if a.original { "original" } else { "store" },
        a.rows,
        if a.original { 1 } else { a.batch },
        stored,
        secs,
        a.rows as f64 / secs
    );
}
