//! An original Lars database (the guide's `lars_dns.sql`) is read unchanged.

use lars_core::{HostAddr, ModKey};
use lars_store::{CallStatusRow, RouteRead, StatsStore};
use mysql::prelude::Queryable;

use crate::both;
use crate::common::{Kind, TestDb};

/// `lars_dns.sql` from the guide, verbatim but for the database statements.
const MYSQL_DDL: &[&str] = &[
    "DROP TABLE IF EXISTS `RouteData`",
    "CREATE TABLE `RouteData` (
    `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
    `modid` int(10) unsigned NOT NULL,
    `cmdid` int(10) unsigned NOT NULL,
    `serverip` int(10) unsigned NOT NULL,
    `serverport` int(10) unsigned NOT NULL,
    PRIMARY KEY (`id`)
) ENGINE=InnoDB AUTO_INCREMENT=116064 DEFAULT CHARSET=utf8",
    "DROP TABLE IF EXISTS `RouteVersion`",
    "CREATE TABLE RouteVersion (
    `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
    `version` int(10) unsigned NOT NULL,
    PRIMARY KEY (`id`)
)",
    "INSERT INTO RouteVersion(version) VALUES(0)",
    "DROP TABLE IF EXISTS `RouteChange`",
    "CREATE TABLE RouteChange (
    `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
    `modid` int(10) unsigned NOT NULL,
    `cmdid` int(10) unsigned NOT NULL,
    `version` bigint(20) unsigned NOT NULL,
    PRIMARY KEY (`id`)
)",
    "DROP TABLE IF EXISTS `ServerCallStatus`",
    "CREATE TABLE `ServerCallStatus` (
      `modid` int(11) NOT NULL,
      `cmdid` int(11) NOT NULL,
      `ip` int(11) NOT NULL,
      `port` int(11) NOT NULL,
      `caller` int(11) NOT NULL,
      `succ_cnt` int(11) NOT NULL,
      `err_cnt` int(11) NOT NULL,
      `ts` bigint(20) NOT NULL,
      `overload` char(1) NOT NULL,
      PRIMARY KEY (`modid`,`cmdid`,`ip`,`port`,`caller`),
      KEY `mlb_index` (`modid`,`cmdid`,`ip`,`port`,`caller`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8",
];

/// The same tables as SQLite would hold them.
const SQLITE_DDL: &[&str] = &[
    "CREATE TABLE RouteData (id INTEGER PRIMARY KEY AUTOINCREMENT, modid INTEGER NOT NULL, \
     cmdid INTEGER NOT NULL, serverip INTEGER NOT NULL, serverport INTEGER NOT NULL)",
    "CREATE TABLE RouteVersion (id INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL)",
    "INSERT INTO RouteVersion(version) VALUES(0)",
    "CREATE TABLE RouteChange (id INTEGER PRIMARY KEY AUTOINCREMENT, modid INTEGER NOT NULL, \
     cmdid INTEGER NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE ServerCallStatus (modid INTEGER NOT NULL, cmdid INTEGER NOT NULL, \
     ip INTEGER NOT NULL, port INTEGER NOT NULL, caller INTEGER NOT NULL, \
     succ_cnt INTEGER NOT NULL, err_cnt INTEGER NOT NULL, ts INTEGER NOT NULL, \
     overload TEXT NOT NULL, PRIMARY KEY (modid, cmdid, ip, port, caller))",
];

/// The guide's `dns_route_insert.sql` and `test_insert_dns_route.sql`.
const DATA: &[&str] = &[
    "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES(1, 1, 3232235953, 7777)",
    "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES(1, 2, 3232235954, 7776)",
    "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES(1, 2, 3232235955, 7778)",
    "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES(1, 2, 3232235956, 7779)",
    "INSERT INTO RouteData(modid, cmdid, serverip, serverport) VALUES(1, 1, 3232235953, 9999)",
    "UPDATE RouteVersion SET version = 1574000000 WHERE id = 1",
    "INSERT INTO RouteChange(modid, cmdid, version) VALUES(1, 1, 1574000000)",
];

fn schema(db: &TestDb) -> Vec<String> {
    let mut out = db.texts(
        "SELECT sql FROM sqlite_master WHERE name IN \
         ('RouteData', 'RouteVersion', 'RouteChange', 'ServerCallStatus') ORDER BY name",
        "SELECT CONCAT(TABLE_NAME, ' ', COLUMN_NAME, ' ', COLUMN_TYPE, ' ', COLUMN_KEY) \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN \
         ('RouteData', 'RouteVersion', 'RouteChange', 'ServerCallStatus') \
         ORDER BY TABLE_NAME, ORDINAL_POSITION",
    );
    out.extend(db.texts(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN \
         ('RouteData', 'RouteVersion', 'RouteChange', 'ServerCallStatus') ORDER BY name",
        "SELECT CONCAT(TABLE_NAME, ' ', INDEX_NAME, ' ', COLUMN_NAME) \
         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN \
         ('RouteData', 'RouteVersion', 'RouteChange', 'ServerCallStatus') ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
    ));
    out
}

both!(original_database_is_read_unchanged, |db| {
    match db.kind {
        Kind::Sqlite => db.exec(SQLITE_DDL),
        Kind::Mysql => {
            db.mysql_server_conn()
                .query_drop(format!("CREATE DATABASE `{}`", db.db_name()))
                .unwrap();
            db.exec(MYSQL_DDL);
        }
    }
    db.exec(DATA);
    let before = schema(db);
    assert!(!before.is_empty());

    let s = db.open();
    assert_eq!(schema(db), before, "the original tables are untouched");
    assert_eq!(s.version().unwrap(), 1_574_000_000);
    let snap = s.load_routes().unwrap();
    assert_eq!(snap.skipped, 0);
    let ip =
        |last: u32| HostAddr::new(u32::from(std::net::Ipv4Addr::new(192, 168, 1, 0)) + last, 0);
    let at = |last: u32, port: u16| HostAddr { port, ..ip(last) };
    assert_eq!(
        snap.routes[&ModKey::new(1, 1)],
        vec![at(177, 7777), at(177, 9999)]
    );
    assert_eq!(
        snap.routes[&ModKey::new(1, 2)],
        vec![at(178, 7776), at(179, 7778), at(180, 7779)]
    );
    assert_eq!(
        s.changed_keys(1_574_000_000).unwrap(),
        vec![ModKey::new(1, 1)]
    );

    // The original signed ServerCallStatus stores high ips and callers.
    let rows = vec![
        CallStatusRow {
            key: ModKey::new(1, 1),
            host: at(177, 7777),
            caller: u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)),
            succ_cnt: 10,
            err_cnt: 2,
            ts: 1_574_000_100,
            overload: false,
        },
        CallStatusRow {
            key: ModKey::new(1, 2),
            host: at(178, 7776),
            caller: u32::from(std::net::Ipv4Addr::new(200, 1, 2, 3)),
            succ_cnt: 0,
            err_cnt: 9,
            ts: 1_574_000_100,
            overload: true,
        },
    ];
    s.upsert_call_status(&rows).unwrap();
    assert_eq!(s.call_status(None).unwrap(), rows);
    assert_eq!(schema(db), before);
});
