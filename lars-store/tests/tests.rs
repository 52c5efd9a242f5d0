//! lars-store integration tests: every test runs against SQLite, and against
//! MySQL/MariaDB when `LARS_MYSQL_URL` is set (e.g. `mysql://root@127.0.0.1:3306`).
#![allow(clippy::unwrap_used)]

mod common;
mod original;
mod routes;
mod stats;
mod timeouts;
mod users;
