//! Route administration and reading.

use std::collections::HashSet;

use lars_core::{HostAddr, ModKey};
use lars_store::{RouteAdmin, RouteFilter, RouteRead, Store, StoreError};

use crate::both;
use crate::common::{Kind, TestDb};

fn h(port: u16) -> HostAddr {
    HostAddr::new(0x7f00_0001, port)
}

fn hosts(s: &Store, key: ModKey) -> Vec<HostAddr> {
    s.load_routes()
        .unwrap()
        .routes
        .get(&key)
        .cloned()
        .unwrap_or_default()
}

/// Pending changes as (key, version).
fn changes(s: &Store) -> Vec<(ModKey, u64)> {
    s.pending_changes()
        .unwrap()
        .into_iter()
        .map(|c| (c.key, c.version))
        .collect()
}

both!(admin_operations_write_routes_version_and_change, |db| {
    let s = db.open();
    let k = ModKey::new(7, 1);
    let v0 = s.version().unwrap();

    let v1 = s.add_host(k, h(9001)).unwrap();
    assert!(v1 > v0);
    assert_eq!(s.version().unwrap(), v1);
    assert_eq!(hosts(&s, k), vec![h(9001)]);
    assert_eq!(changes(&s), vec![(k, v1)]);

    let err = s.add_host(k, h(9001)).unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert_eq!(s.version().unwrap(), v1, "a refused add writes no version");
    assert_eq!(changes(&s).len(), 1);

    let v2 = s.add_host(k, h(9002)).unwrap();
    assert!(v2 > v1);
    let v3 = s.remove_host(k, h(9001)).unwrap();
    assert!(v3 > v2);
    assert_eq!(hosts(&s, k), vec![h(9002)]);
    assert!(s.remove_host(k, h(9001)).unwrap_err().is_not_found());

    let v4 = s.set_hosts(k, &[h(9005), h(9006), h(9005)]).unwrap();
    assert!(v4 > v3);
    assert_eq!(hosts(&s, k), vec![h(9005), h(9006)]);

    let other = ModKey::new(7, 2);
    let v5 = s.set_hosts(other, &[h(9100)]).unwrap();
    let rows = s
        .list_routes(RouteFilter {
            modid: Some(7),
            cmdid: Some(1),
        })
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| (r.key, r.host)).collect::<Vec<_>>(),
        vec![(k, h(9005)), (k, h(9006))]
    );
    assert!(rows[0].id < rows[1].id);
    assert_eq!(
        s.list_routes(RouteFilter {
            modid: Some(7),
            cmdid: None
        })
        .unwrap()
        .len(),
        3
    );
    assert_eq!(s.list_routes(RouteFilter::default()).unwrap().len(), 3);

    let v6 = s.delete_key(k).unwrap();
    assert!(v6 > v5);
    assert!(hosts(&s, k).is_empty());
    assert_eq!(hosts(&s, other), vec![h(9100)]);
    assert!(s.delete_key(k).unwrap_err().is_not_found());
    assert_eq!(
        changes(&s),
        vec![(k, v1), (k, v2), (k, v3), (k, v4), (other, v5), (k, v6)]
    );
    assert_eq!(s.version().unwrap(), v6);

    // Invalid input never reaches the database.
    assert!(matches!(
        s.add_host(k, HostAddr::new(0, 80)),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.set_hosts(k, &[h(0)]),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.version().unwrap(), v6);
});

both!(failure_in_the_middle_leaves_nothing_behind, |db| {
    let s = db.open();
    let k = ModKey::new(3, 3);
    let v = s.set_hosts(k, &[h(1), h(2)]).unwrap();
    s.delete_changes(None).unwrap();
    // Every route transaction writes RouteData, then RouteChange, then
    // RouteVersion: a trigger failing the RouteChange insert fails it in the
    // middle, after RouteData was already modified.
    match db.kind {
        Kind::Sqlite => db.exec(&["CREATE TRIGGER fail_change BEFORE INSERT ON RouteChange \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"]),
        Kind::Mysql => db.exec(&["CREATE TRIGGER fail_change BEFORE INSERT ON RouteChange \
             FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'"]),
    }
    let attempts: Vec<Result<u64, StoreError>> = vec![
        s.add_host(k, h(3)),
        s.remove_host(k, h(1)),
        s.set_hosts(k, &[h(7)]),
        s.replace_host(k, h(1), h(8)),
        s.delete_key(k),
    ];
    for r in attempts {
        let err = r.unwrap_err();
        assert!(matches!(err, StoreError::Query { .. }), "{err:?}");
        assert!(!err.is_unavailable());
        assert!(err.to_string().contains("RouteChange"), "{err}");
    }
    assert_eq!(hosts(&s, k), vec![h(1), h(2)]);
    assert_eq!(s.version().unwrap(), v);
    assert!(changes(&s).is_empty());

    db.exec(&["DROP TRIGGER fail_change"]);
    let v2 = s.add_host(k, h(3)).unwrap();
    assert!(v2 > v);
    assert_eq!(changes(&s), vec![(k, v2)]);
});

both!(replace_host_changes_one_host_in_place, |db| {
    let s = db.open();
    let k = ModKey::new(12, 1);
    let v0 = s.set_hosts(k, &[h(1), h(2), h(3)]).unwrap();
    let ids = |s: &Store| -> Vec<u64> {
        s.list_routes(RouteFilter {
            modid: Some(12),
            cmdid: Some(1),
        })
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
    };
    let ids0 = ids(&s);

    let v1 = s.replace_host(k, h(2), h(9)).unwrap();
    assert!(v1 > v0);
    assert_eq!(hosts(&s, k), vec![h(1), h(9), h(3)], "kept its place");
    assert_eq!(ids(&s), ids0, "the row was updated, not re-inserted");
    assert_eq!(changes(&s).last(), Some(&(k, v1)));

    // Refusals write nothing.
    let err = s.replace_host(k, h(2), h(4)).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = s.replace_host(k, h(1), h(3)).unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    let err = s.replace_host(k, h(1), h(0)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let err = s.replace_host(ModKey::new(12, 2), h(1), h(4)).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(s.version().unwrap(), v1);
    assert_eq!(hosts(&s, k), vec![h(1), h(9), h(3)]);

    // Saving a host unchanged is still a write.
    let v2 = s.replace_host(k, h(1), h(1)).unwrap();
    assert!(v2 > v1);
    assert_eq!(hosts(&s, k), vec![h(1), h(9), h(3)]);

    // Rows duplicating the old host (written by hand) go with it.
    db.exec(&[
        "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES (12, 1, 2130706433, 1)",
    ]);
    assert_eq!(hosts(&s, k), vec![h(1), h(9), h(3), h(1)]);
    s.replace_host(k, h(1), h(7)).unwrap();
    assert_eq!(hosts(&s, k), vec![h(7), h(9), h(3)]);
});

both!(concurrent_host_edits_of_one_key_lose_nothing, |db| {
    let s = db.open();
    let k = ModKey::new(13, 1);
    const PER_THREAD: u16 = 20;
    let all: Vec<HostAddr> = (1..=2 * PER_THREAD).map(h).collect();
    s.set_hosts(k, &all).unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = (0..2u16)
        .map(|t| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for p in t * PER_THREAD + 1..=(t + 1) * PER_THREAD {
                    s.replace_host(k, h(p), h(p + 1000)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let edited: Vec<HostAddr> = (1..=2 * PER_THREAD).map(|p| h(p + 1000)).collect();
    assert_eq!(hosts(&s, k), edited, "every edit kept, in place");
    assert_eq!(changes(&s).len(), 1 + 2 * usize::from(PER_THREAD));
});

both!(versions_strictly_increase_in_a_tight_loop, |db| {
    let s = db.open();
    let k = ModKey::new(9, 9);
    let mut versions = Vec::new();
    for port in 1..=100u16 {
        versions.push(s.add_host(k, h(port)).unwrap());
    }
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(s.version().unwrap(), versions[99]);
    let logged: Vec<u64> = changes(&s).into_iter().map(|(_, v)| v).collect();
    assert_eq!(logged, versions);
    assert_eq!(hosts(&s, k).len(), 100);
});

both!(versions_are_unique_across_threads, |db| {
    let s = db.open();
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                (1..=25u16)
                    .map(|p| s.add_host(ModKey::new(10, t), h(p)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let v = t.join().unwrap();
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        all.extend(v);
    }
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 50);
    assert_eq!(s.version().unwrap(), *all.iter().max().unwrap());
});

both!(changes_up_to_a_version_are_read_and_deleted_exactly, |db| {
    let s = db.open();
    let (a, b, c) = (ModKey::new(1, 1), ModKey::new(1, 2), ModKey::new(2, 1));
    let va = s.add_host(a, h(1)).unwrap();
    let vb = s.add_host(b, h(1)).unwrap();
    let va2 = s.add_host(a, h(2)).unwrap();
    let vc = s.add_host(c, h(1)).unwrap();
    assert_eq!(s.changed_keys(va).unwrap(), vec![a]);
    assert_eq!(s.changed_keys(vb).unwrap(), vec![a, b]);
    assert_eq!(s.changed_keys(va2).unwrap(), vec![a, b], "distinct keys");
    assert_eq!(s.delete_changes(Some(va2)).unwrap(), 3);
    assert_eq!(changes(&s), vec![(c, vc)]);
    assert!(s.changed_keys(va2).unwrap().is_empty());
    assert_eq!(s.changed_keys(vc).unwrap(), vec![c]);
    s.add_host(c, h(2)).unwrap();
    assert_eq!(s.delete_changes(None).unwrap(), 2);
    assert!(changes(&s).is_empty());
});

both!(invalid_rows_are_skipped_and_counted, |db| {
    let s = db.open();
    let k = ModKey::new(4, 4);
    s.add_host(k, h(80)).unwrap();
    db.exec(&[
        "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES (4, 4, 2130706433, 0)",
        "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES (4, 4, 2130706433, 70000)",
        "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES (4, 4, 0, 81)",
        "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES (4, 5, 2130706433, 82)",
    ]);
    let snap = s.load_routes().unwrap();
    assert_eq!(snap.skipped, 3);
    assert_eq!(snap.routes[&k], vec![h(80)]);
    assert_eq!(snap.routes[&ModKey::new(4, 5)], vec![h(82)]);
    assert_eq!(s.list_routes(RouteFilter::default()).unwrap().len(), 2);

    db.exec(&[
        "INSERT INTO ServerCallStatus(modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload) \
         VALUES (4, 4, 2130706433, 0, 1, 1, 1, 1, '0')",
        "INSERT INTO ServerCallStatus(modid, cmdid, ip, port, caller, succ_cnt, err_cnt, ts, overload) \
         VALUES (4, 4, 2130706433, 80, 1, 5, 6, 7, '1')",
    ]);
    let status = lars_store::StatsStore::call_status(&s, None).unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(
        (status[0].host, status[0].succ_cnt, status[0].overload),
        (h(80), 5, true)
    );
});

both!(schema_is_idempotent_and_demo_seeds, |db| {
    let s = db.open();
    let v = s.seed_demo().unwrap();
    s.init_schema().unwrap();
    drop(s);
    let s = db.open();
    s.ping().unwrap();
    assert_eq!(s.version().unwrap(), v);
    let snap = s.load_routes().unwrap();
    assert_eq!(snap.routes.len(), 3);
    assert_eq!(
        snap.routes[&ModKey::new(1, 2)],
        vec![h(9011), h(9012), h(9013)]
    );
    // Seeding again replaces, never duplicates.
    let v2 = s.seed_demo().unwrap();
    assert!(v2 > v);
    assert_eq!(s.list_routes(RouteFilter::default()).unwrap().len(), 9);
});

#[test]
fn mysql_recovers_after_its_connections_are_killed() {
    use mysql::prelude::Queryable;
    let Some(db) = TestDb::mysql("kill") else {
        return;
    };
    let s = db.open();
    let k = ModKey::new(5, 5);
    let v1 = s.add_host(k, h(1)).unwrap();
    let mut admin = db.mysql_server_conn();
    let ids: Vec<u64> = admin
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
            (db.db_name(),),
        )
        .unwrap();
    assert!(!ids.is_empty(), "the pool holds a connection");
    for id in &ids {
        admin.query_drop(format!("KILL {id}")).unwrap();
    }
    // The next operations succeed transparently.
    assert_eq!(s.version().unwrap(), v1);
    let v2 = s.add_host(k, h(2)).unwrap();
    assert!(v2 > v1);
    assert_eq!(hosts(&s, k), vec![h(1), h(2)]);

    // A connection killed while the store holds it between operations.
    let ids: Vec<u64> = admin
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
            (db.db_name(),),
        )
        .unwrap();
    for id in &ids {
        admin.query_drop(format!("KILL CONNECTION {id}")).unwrap();
    }
    s.ping().unwrap();
    assert_eq!(s.load_routes().unwrap().routes[&k].len(), 2);
}

#[test]
fn mysql_operation_killed_mid_transaction_is_retried() {
    use mysql::prelude::Queryable;
    let Some(db) = TestDb::mysql("kill_mid") else {
        return;
    };
    let s = db.open();
    let k = ModKey::new(6, 6);
    let v1 = s.add_host(k, h(1)).unwrap();
    // Hold the version lock so the store's next transaction blocks inside it.
    let mut holder = db.mysql_conn();
    let holder_id = holder.connection_id();
    let mut tx = holder.start_transaction(mysql::TxOpts::default()).unwrap();
    let _: Option<u64> = tx
        .query_first("SELECT version FROM RouteVersion WHERE id = 1 FOR UPDATE")
        .unwrap();
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || s.add_host(k, h(2)))
    };
    let mut admin = db.mysql_server_conn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let victim: u64 = loop {
        let id: Option<u64> = admin
            .exec_first(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? \
                 AND INFO LIKE '%RouteVersion%FOR UPDATE%' AND ID <> ?",
                (db.db_name(), holder_id),
            )
            .unwrap();
        if let Some(id) = id {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "writer never blocked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    admin.query_drop(format!("KILL {victim}")).unwrap();
    tx.rollback().unwrap();
    let v2 = writer.join().unwrap().unwrap();
    assert!(v2 > v1);
    assert_eq!(hosts(&s, k), vec![h(1), h(2)]);
    assert_eq!(changes(&s).len(), 2, "the retried transaction wrote once");
}

#[test]
fn mysql_down_server_is_unavailable() {
    // A port nothing listens on: connecting fails as Unavailable.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let err = lars_store::open(&format!("mysql://root@127.0.0.1:{port}/x")).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[test]
fn bad_mysql_database_names_are_rejected() {
    let err = lars_store::open("mysql://root@127.0.0.1:1/bad-name").unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
}
