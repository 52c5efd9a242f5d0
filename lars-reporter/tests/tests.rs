//! End-to-end tests of the reporter: real TCP clients, a real store (SQLite
//! always, MariaDB when `LARS_MYSQL_URL` is set), real HTTP.
#![allow(clippy::unwrap_used)]

mod e2e;
mod hardening;
mod support;
mod trust;
