//! The lars load tools: programs that put load on a running (or in-process)
//! lars service and measure it, each next to a reference measured in the same
//! run. They are operator tools, not part of any service: the services and
//! the application API (`lars-client`) never depend on this crate; the `lars`
//! command line (`lars bench`, `lars qps`, `lars simulator`) and the examples
//! here do.
//!
//! - [`dns`]: route lookups per second against the dns ([`dns::run`] ->
//!   [`dns::BenchReport`]), beside a raw-socket server answering the same
//!   reply bytes (`lars bench dns`, `examples/bench_dns.rs`).
//! - [`reporter`]: reports per second into the reporter, then a check that
//!   the store holds every count sent ([`reporter::run`] ->
//!   [`reporter::BenchReport`]; `lars bench reporter`,
//!   `examples/bench_reporter.rs`).
//! - [`qps`]: `get_host` + `report` round trips per second against the agent,
//!   beside a raw UDP request/response reference ([`qps::run`],
//!   [`qps::run_udp_reference`] -> [`qps::QpsSummary`]; `lars qps`).
//! - [`simulate`]: the original `simulator`: calls through the agent with an
//!   error rate and a modelled latency, per-host tallies and the overload
//!   transitions seen from the client ([`simulate::simulate`] ->
//!   [`simulate::SimReport`]; `lars simulator`).
//!
//! They print nothing: results come back as values (each report type is
//! `Debug`, the dns one also `Display`), progress through callbacks.
//!
//! A short dns measurement against a dns started in-process over a temporary
//! SQLite store holding the demo routes:
//!
//! ```
//! use std::time::Duration;
//! use lars_bench::dns::{self, BenchOptions};
//!
//! let report = dns::run(BenchOptions {
//!     conns: 1,
//!     window: 4,
//!     duration: Duration::from_millis(100),
//!     ..BenchOptions::default()
//! })?;
//! assert!(report.dns.replies > 0 && report.raw.replies > 0);
//! println!("{report}"); // both rates and "ratio dns/raw: ..."
//! # Ok::<(), lars_bench::dns::BenchError>(())
//! ```
#![warn(missing_docs)]

pub mod dns;
pub mod fleet;
pub mod qps;
pub mod reporter;
pub mod simulate;
