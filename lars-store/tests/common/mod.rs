//! Per-test databases: a temp SQLite file, or a MySQL database
//! `lars_test_<name>_<pid>` dropped on exit (even after a failure).

use mysql::prelude::Queryable;

/// Which backend a test database uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Mysql,
}

/// A fresh database for one test; dropped with the value.
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    /// Server URL without database (MySQL only).
    server: String,
    db: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lars.db");
        TestDb {
            kind: Kind::Sqlite,
            url: format!("sqlite://{}", path.display()),
            server: String::new(),
            db: path.display().to_string(),
            _dir: Some(dir),
        }
    }

    /// `None` (with a note) when `LARS_MYSQL_URL` is unset.
    pub fn mysql(name: &str) -> Option<Self> {
        let server = lars_testkit::mysql_server(&format!("the MySQL run of {name}"))?;
        let db = format!("lars_test_{name}_{}", std::process::id());
        let db: String = db.chars().take(64).collect();
        let mut c = mysql::Conn::new(mysql::Opts::from_url(&server).unwrap()).unwrap();
        c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .unwrap();
        Some(TestDb {
            kind: Kind::Mysql,
            url: format!("{server}/{db}"),
            server,
            db,
            _dir: None,
        })
    }

    pub fn open(&self) -> lars_store::Store {
        lars_store::open(&self.url).unwrap()
    }

    /// Runs raw SQL statements (test setup only), in the test database.
    pub fn exec(&self, stmts: &[&str]) {
        match self.kind {
            Kind::Sqlite => {
                let c = rusqlite::Connection::open(&self.db).unwrap();
                for s in stmts {
                    c.execute_batch(s).unwrap();
                }
            }
            Kind::Mysql => {
                let mut c = self.mysql_conn();
                for s in stmts {
                    c.query_drop(*s).unwrap();
                }
            }
        }
    }

    /// Reads one column of text rows (for schema comparisons).
    pub fn texts(&self, sqlite_sql: &str, mysql_sql: &str) -> Vec<String> {
        match self.kind {
            Kind::Sqlite => {
                let c = rusqlite::Connection::open(&self.db).unwrap();
                let mut s = c.prepare(sqlite_sql).unwrap();
                s.query_map([], |r| r.get::<_, String>(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Kind::Mysql => {
                let mut c = self.mysql_conn();
                let rows: Vec<mysql::Row> = c.query(mysql_sql).unwrap();
                rows.into_iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| match r.as_ref(i) {
                                Some(mysql::Value::Bytes(b)) => String::from_utf8_lossy(b).into(),
                                Some(v) => format!("{v:?}"),
                                None => String::new(),
                            })
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                    .collect()
            }
        }
    }

    /// A plain connection to the test database (MySQL only).
    pub fn mysql_conn(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(&self.url).unwrap()).unwrap()
    }

    /// A plain connection to the server without a database (MySQL only).
    pub fn mysql_server_conn(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(&self.server).unwrap()).unwrap()
    }

    pub fn db_name(&self) -> &str {
        &self.db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.kind == Kind::Mysql {
            if let Ok(opts) = mysql::Opts::from_url(&self.server) {
                if let Ok(mut c) = mysql::Conn::new(opts) {
                    let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db));
                }
            }
        }
    }
}

/// Defines `mod $name { fn sqlite(); fn mysql(); }` running `$body(&TestDb)`
/// against both backends.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                let db = $crate::common::TestDb::sqlite();
                let f: fn(&$crate::common::TestDb) = $body;
                f(&db);
            }

            #[test]
            fn mysql() {
                let Some(db) = $crate::common::TestDb::mysql(stringify!($name)) else {
                    return;
                };
                let f: fn(&$crate::common::TestDb) = $body;
                f(&db);
            }
        }
    };
}
