//! Integration tests of the load tools: qps and simulate against fake agents
//! made of real UDP sockets on 127.0.0.1, the reporter tool against an
//! in-process reporter over SQLite, both service tools against a service's
//! mutual-TLS port as an external address. (The dns tool's in-process runs
//! are unit tests in `src/dns.rs`.)
#![allow(clippy::unwrap_used)]

mod dns;
// The fake agent of lars-client's tests, shared by path.
#[path = "../../lars-client/tests/fake/mod.rs"]
#[allow(dead_code)]
mod fake;
mod fleet;
mod qps;
mod reporter;
mod simulate;
