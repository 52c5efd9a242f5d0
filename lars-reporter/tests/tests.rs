//! End-to-end tests of the reporter: real TCP clients, a real store (SQLite
//! always, MariaDB when `LARS_MYSQL_URL` is set), real HTTP.
#![allow(clippy::unwrap_used)]

mod e2e;
#[path = "../../lars-store/tests/freeze_proxy.rs"]
mod freeze_proxy;
mod hardening;
mod support;
