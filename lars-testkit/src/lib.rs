//! Test support shared by lars' crates (dev-dependency only).
//!
//! Two things every crate's tests need and must do the same way:
//!
//! - **A skip that shows.** A test that cannot run here (no MySQL, no
//!   browser) calls [`skip`]: it writes `SKIPPED <test>: <reason>` straight
//!   to the process's standard error, which `cargo test` does not capture,
//!   so the line appears in the output of a passing run. Under CI (`CI` is
//!   set, as `.ci/run` does) a skip is a failure instead: CI must run
//!   everything.
//! - **A MySQL database of its own.** [`MysqlDb`] creates a fresh database
//!   under a per-test name at `LARS_MYSQL_URL` and drops it when dropped, so
//!   no run leaves a database behind and two tests never share one.
//! - **A database that goes away.** [`Proxy`] stands between a service and
//!   its database: [`Proxy::cut`] closes every connection and refuses new
//!   ones (a server that is down), [`Proxy::freeze`] forwards nothing and
//!   closes nothing (a server that hangs, as under SIGSTOP).

pub mod mariadb;
mod proxy;
pub mod tls;

pub use proxy::Proxy;

/// A config file for one test of a service binary, written to the system
/// temp directory under a name unique to `prefix`, `name` and this process.
pub fn temp_conf(prefix: &str, name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{prefix}-{name}-{}.conf", std::process::id()));
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
    path
}

/// Runs the binary at `bin` with `args` (logging at `warn`) to its end.
pub fn run_bin(bin: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    match std::process::Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot run {bin}: {e}"),
    }
}

use std::io::Write;

use mysql::prelude::Queryable;

/// The environment variable naming the MySQL/MariaDB server for tests.
pub const MYSQL_URL_VAR: &str = "LARS_MYSQL_URL";

/// Whether this run is CI, where a skipped test is a failure.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Report that (part of) `test` did not run because of `reason`.
///
/// Outside CI this prints `SKIPPED <test>: <reason>` where the test output
/// shows it; under CI it panics, so a missing part fails the run.
pub fn skip(test: &str, reason: &str) {
    if under_ci() {
        panic!("{test} cannot run under CI: {reason}");
    }
    // Not `eprintln!`: libtest captures that for passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The server URL from `LARS_MYSQL_URL` without a trailing slash, or `None`
/// after a visible [`skip`] of `test`.
pub fn mysql_server(test: &str) -> Option<String> {
    match std::env::var(MYSQL_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().trim_end_matches('/').to_owned()),
        _ => {
            skip(
                test,
                &format!("{MYSQL_URL_VAR} is not set (e.g. mysql://root@127.0.0.1:3306)"),
            );
            None
        }
    }
}

/// A database of one test on the MySQL server, dropped when this is dropped.
///
/// The name is `<prefix>_<test>_<pid>` (cut to MySQL's 64 characters), so
/// concurrent test binaries and tests never meet; any leftover of the same
/// name is dropped first.
#[derive(Debug)]
pub struct MysqlDb {
    server: String,
    name: String,
}

impl MysqlDb {
    /// A fresh, empty database for `test`, or `None` after a visible skip
    /// when no server is configured. Panics when the server is configured but
    /// cannot be reached: that is a broken environment, not a skip.
    pub fn create(prefix: &str, test: &str) -> Option<MysqlDb> {
        let server = mysql_server(test)?;
        let name = db_name(prefix, test, std::process::id());
        let db = MysqlDb { server, name };
        db.exec(&format!("DROP DATABASE IF EXISTS `{}`", db.name));
        db.exec(&format!("CREATE DATABASE `{}`", db.name));
        Some(db)
    }

    /// The server URL (`mysql://user@host:port`, no database).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database (`<server>/<name>`).
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    fn exec(&self, sql: &str) {
        let opts = match mysql::Opts::from_url(&self.server) {
            Ok(opts) => opts,
            Err(e) => panic!("{MYSQL_URL_VAR}={} is not a MySQL URL: {e}", self.server),
        };
        let mut conn = match mysql::Conn::new(opts) {
            Ok(conn) => conn,
            Err(e) => panic!("cannot connect to {}: {e}", self.server),
        };
        if let Err(e) = conn.query_drop(sql) {
            panic!("{sql} on {}: {e}", self.server);
        }
    }
}

/// `<prefix>_<test>_<pid>` with every character outside `[A-Za-z0-9_]`
/// replaced by `_`, cut to MySQL's 64-character limit.
fn db_name(prefix: &str, test: &str, pid: u32) -> String {
    format!("{prefix}_{test}_{pid}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(64)
        .collect()
}

impl Drop for MysqlDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.name);
        let dropped = mysql::Opts::from_url(&self.server)
            .map_err(|e| e.to_string())
            .and_then(|opts| mysql::Conn::new(opts).map_err(|e| e.to_string()))
            .and_then(|mut conn| conn.query_drop(&sql).map_err(|e| e.to_string()));
        if let Err(e) = dropped {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_exists(server: &str, name: &str) -> bool {
        let opts = mysql::Opts::from_url(server).unwrap_or_else(|e| panic!("{e}"));
        let mut conn = mysql::Conn::new(opts).unwrap_or_else(|e| panic!("{e}"));
        let found: Option<String> = conn
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (name,),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        found.is_some()
    }

    #[test]
    fn a_database_is_created_and_dropped() {
        let Some(db) = MysqlDb::create("lars_testkit", "create_drop") else {
            return;
        };
        let (server, name) = (db.server().to_owned(), db.name().to_owned());
        assert!(db.url().ends_with(&format!("/{name}")));
        assert!(schema_exists(&server, &name));
        drop(db);
        assert!(!schema_exists(&server, &name), "{name} was not dropped");
    }

    #[test]
    fn names_are_safe_and_bounded() {
        let name = db_name("p", &"a-b c`".repeat(30), 42);
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("p_a_b_c_"));
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_eq!(db_name("lars", "x", 7), "lars_x_7");
    }
}
