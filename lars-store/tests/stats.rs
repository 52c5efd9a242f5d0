//! Call statistics: batch upserts, history and retention.

use lars_core::{HostAddr, ModKey};
use lars_store::{CallStatusRow, HistoryRow, RejectedRow, StatsStore};

use crate::both;

fn status_rows(n: u32, salt: u64) -> Vec<CallStatusRow> {
    (0..n)
        .map(|i| CallStatusRow {
            key: ModKey::new(1 + i / 1000, 1 + (i / 100) % 10),
            host: HostAddr::new(0xC0A8_0000 + (i % 100), 8000 + (i % 7) as u16),
            caller: 0x0A00_0001 + i % 3,
            succ_cnt: u64::from(i) * 3 + salt,
            err_cnt: u64::from(i % 11) + salt,
            ts: 1_700_000_000 + i64::from(i) + salt as i64,
            overload: (i + salt as u32) % 5 == 0,
        })
        .collect()
}

fn sort_status(mut v: Vec<CallStatusRow>) -> Vec<CallStatusRow> {
    v.sort_by_key(|r| (r.key, r.host, r.caller));
    v
}

both!(call_status_batches_round_trip, |db| {
    let s = db.open();
    let rows = status_rows(10_000, 0);
    s.upsert_call_status(&rows).unwrap();
    let back = s.call_status(None).unwrap();
    assert_eq!(back.len(), 10_000);
    assert_eq!(back, sort_status(rows.clone()));

    // Upsert over existing rows plus new ones: latest values win.
    let mut next = status_rows(10_000, 5);
    next.truncate(6_000);
    next.extend(status_rows(12_000, 9).into_iter().skip(10_000));
    s.upsert_call_status(&next).unwrap();
    let mut expect = rows;
    expect.splice(0..6_000, next[..6_000].iter().copied());
    expect.extend_from_slice(&next[6_000..]);
    assert_eq!(s.call_status(None).unwrap(), sort_status(expect.clone()));

    let key = ModKey::new(2, 1);
    let one = s.call_status(Some(key)).unwrap();
    assert!(!one.is_empty());
    assert_eq!(
        one,
        sort_status(expect.into_iter().filter(|r| r.key == key).collect())
    );
    s.upsert_call_status(&[]).unwrap();
});

both!(history_batches_round_trip_add_up_and_prune, |db| {
    let s = db.open();
    let base = 1_700_000_000 - 1_700_000_000 % 60;
    let rows: Vec<HistoryRow> = (0..10_000u32)
        .map(|i| HistoryRow {
            key: ModKey::new(1 + i % 20, 1 + (i / 20) % 50),
            host: HostAddr::new(0xC0A8_0001 + i % 7, 9000),
            minute: base + 60 * i64::from(i / 1000),
            succ: u64::from(i) * 7,
            err: u64::from(i % 13),
        })
        .collect();
    s.append_history(&rows).unwrap();
    let mut expect = rows.clone();
    expect.sort_by_key(|r| (r.minute, r.key, r.host));
    assert_eq!(s.history(None, 0).unwrap(), expect);

    let (succ, err) = s.history_totals(None, 0).unwrap();
    assert_eq!(succ, rows.iter().map(|r| r.succ).sum::<u64>());
    assert_eq!(err, rows.iter().map(|r| r.err).sum::<u64>());

    // A second flush within the same minutes adds up; unaligned minutes floor.
    let again: Vec<HistoryRow> = rows
        .iter()
        .take(100)
        .map(|r| HistoryRow {
            minute: r.minute + 59,
            ..*r
        })
        .collect();
    s.append_history(&again).unwrap();
    let key = rows[0].key;
    let doubled: u64 = rows
        .iter()
        .filter(|r| r.key == key)
        .map(|r| r.succ)
        .sum::<u64>()
        + again
            .iter()
            .filter(|r| r.key == key)
            .map(|r| r.succ)
            .sum::<u64>();
    assert_eq!(s.history_totals(Some(key), 0).unwrap().0, doubled);
    let of_key = s.history(Some(key), base + 60 * 5).unwrap();
    assert!(
        of_key
            .iter()
            .all(|r| r.key == key && r.minute >= base + 300)
    );
    assert_eq!(
        of_key.len(),
        rows.iter()
            .filter(|r| r.key == key && r.minute >= base + 300)
            .count()
    );

    // Retention: drop everything older than minute 4.
    let dropped = s.prune_history(base + 60 * 4).unwrap();
    assert_eq!(dropped, 4_000);
    assert_eq!(s.history(None, 0).unwrap().len(), 6_000);
    assert_eq!(s.prune_history(base + 60 * 4).unwrap(), 0);
});

both!(a_history_batch_is_applied_at_most_once, |db| {
    let s = db.open();
    let row = |succ| HistoryRow {
        key: ModKey::new(9, 9),
        host: HostAddr::new(0x0a00_0001, 80),
        minute: 1_700_000_040,
        succ,
        err: 1,
    };
    assert!(s.append_history_once(41, 1_000, &[row(5)]).unwrap());
    // The retry of a commit whose acknowledgement was lost: nothing added.
    assert!(!s.append_history_once(41, 1_001, &[row(5)]).unwrap());
    assert_eq!(s.history_totals(None, 0).unwrap(), (5, 1));
    // Another batch, and ids with the top bit set, are their own.
    assert!(s.append_history_once(u64::MAX, 2_000, &[row(2)]).unwrap());
    assert!(!s.append_history_once(u64::MAX, 2_000, &[row(2)]).unwrap());
    assert_eq!(s.history_totals(None, 0).unwrap(), (7, 2));
    // Pruning forgets only the older marks.
    assert_eq!(s.prune_batches(1_500).unwrap(), 1);
    assert!(s.append_history_once(41, 3_000, &[row(1)]).unwrap());
    assert!(!s.append_history_once(u64::MAX, 3_000, &[row(1)]).unwrap());
    assert_eq!(s.history_totals(None, 0).unwrap(), (8, 3));
});

both!(
    a_flush_chunk_commits_history_and_status_together_at_most_once,
    |db| {
        let s = db.open();
        let key = ModKey::new(7, 7);
        let host = HostAddr::new(0x0a00_0001, 80);
        let hist = |succ| HistoryRow {
            key,
            host,
            minute: 1_700_000_040,
            succ,
            err: 1,
        };
        let status = |caller, succ_cnt| CallStatusRow {
            key,
            host,
            caller,
            succ_cnt,
            err_cnt: 1,
            ts: 1_700_000_050,
            overload: false,
        };
        assert!(
            s.write_flush_once(5, 1_000, &[hist(5)], &[status(9, 5)], &[])
                .unwrap()
        );
        // The retry after a lost acknowledgement writes neither part again.
        assert!(
            !s.write_flush_once(5, 1_001, &[hist(5)], &[status(9, 6)], &[])
                .unwrap()
        );
        assert_eq!(s.history_totals(None, 0).unwrap(), (5, 1));
        assert_eq!(s.call_status_of(key, 9).unwrap(), vec![status(9, 5)]);
        // A status row the database refuses: the history of the same
        // transaction is not written either, nor the batch mark.
        let kind = db.kind;
        match kind {
            crate::common::Kind::Sqlite => db.exec(&[
                "CREATE TRIGGER refuse BEFORE INSERT ON ServerCallStatus WHEN NEW.caller = 666 \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
            ]),
            crate::common::Kind::Mysql => db.exec(&[
                "CREATE TRIGGER refuse BEFORE INSERT ON ServerCallStatus FOR EACH ROW \
             BEGIN IF NEW.caller = 666 THEN SIGNAL SQLSTATE '45000'; END IF; END",
            ]),
        }
        let refused =
            s.write_flush_once(6, 1_002, &[hist(3)], &[status(9, 8), status(666, 1)], &[]);
        assert!(refused.is_err());
        assert_eq!(s.history_totals(None, 0).unwrap(), (5, 1));
        assert_eq!(s.call_status_of(key, 9).unwrap(), vec![status(9, 5)]);
        db.exec(&["DROP TRIGGER refuse"]);
        assert!(
            s.write_flush_once(6, 1_003, &[hist(3)], &[status(9, 8)], &[])
                .unwrap()
        );
        assert_eq!(s.history_totals(None, 0).unwrap(), (8, 2));
        // One caller's rows of one key, every host.
        let other = HostAddr::new(0x0a00_0002, 81);
        s.upsert_call_status(&[
            CallStatusRow {
                host: other,
                ..status(9, 1)
            },
            status(10, 4),
        ])
        .unwrap();
        let mut mine = s.call_status_of(key, 9).unwrap();
        mine.sort_by_key(|r| r.host);
        assert_eq!(
            mine,
            vec![
                status(9, 8),
                CallStatusRow {
                    host: other,
                    ..status(9, 1)
                }
            ]
        );
        assert_eq!(s.call_status_of(key, 11).unwrap(), vec![]);
        // A caller with the top bit set (the original's signed columns).
        s.upsert_call_status(&[status(0xF000_0001, 2)]).unwrap();
        assert_eq!(
            s.call_status_of(key, 0xF000_0001).unwrap(),
            vec![status(0xF000_0001, 2)]
        );
    }
);

both!(
    rejected_reports_add_up_once_per_flush_and_are_pruned_with_the_history,
    |db| {
        let s = db.open();
        let key = ModKey::new(3, 4);
        let rej = |minute, reports, calls| RejectedRow {
            key,
            minute,
            reports,
            calls,
        };
        assert!(
            s.write_flush_once(1, 1_000, &[], &[], &[rej(60, 1, 8_589_934_590)])
                .unwrap()
        );
        // The retry of the same chunk adds nothing.
        assert!(
            !s.write_flush_once(1, 1_000, &[], &[], &[rej(60, 1, 8_589_934_590)])
                .unwrap()
        );
        assert!(
            s.write_flush_once(2, 1_000, &[], &[], &[rej(61, 2, 10), rej(120, 1, 1)])
                .unwrap()
        );
        // Counts at the cap add up without overflowing.
        assert!(
            s.write_flush_once(3, 1_000, &[], &[], &[rej(180, 1, u64::MAX)])
                .unwrap()
        );
        assert!(
            s.write_flush_once(4, 1_000, &[], &[], &[rej(180, 1, u64::MAX)])
                .unwrap()
        );
        assert_eq!(
            s.rejected_reports(Some(key), 0).unwrap(),
            vec![
                rej(60, 3, 8_589_934_600),
                rej(120, 1, 1),
                rej(180, 2, 1 << 62)
            ]
        );
        assert_eq!(s.rejected_reports(None, 120).unwrap().len(), 2);
        assert_eq!(
            s.rejected_reports(Some(ModKey::new(3, 5)), 0).unwrap(),
            vec![]
        );
        assert_eq!(
            s.history_totals(Some(key), 0).unwrap(),
            (0, 0),
            "never written as calls"
        );
        s.prune_history(120).unwrap();
        assert_eq!(s.rejected_reports(None, 0).unwrap().len(), 2);
    }
);
