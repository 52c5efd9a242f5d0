//! The lars reporter: receives the agents' `ReportStatusRequest`s (msgid 3,
//! never answered), aggregates them in memory and writes them to the store in
//! batches: the original `ServerCallStatus` table (latest counters per
//! `(modid, cmdid, ip, port, caller)`) and a per-minute history of deltas.
//! Live 1/5/15/60-minute windows are served over HTTP (`/status`, `/hosts`,
//! `/metrics`).
//!
//! Principal types:
//! - [`Reporter`] / [`ReporterHandle`]: start the service in-process, read its
//!   [`StatsSnapshot`], stop it gracefully (everything accepted is flushed).
//! - The policy lives in [`lars_stats`] (pure, no clock, no I/O): the
//!   [`lars_stats::Receiver`] (reported counters to deltas, reset detection,
//!   timestamp rules, batching), the live [`lars_stats::Windows`] (their
//!   [`HostView`] is what [`ReporterHandle::hosts`] returns) and the writer's
//!   [`lars_stats::Flusher`] (chunks, the chunk in doubt, retry, give-up,
//!   pruning). This crate moves reports from the network to them and their
//!   rows to the store.
//!
//! ```
//! use std::io::Write;
//! use lars_reporter::ReporterConfig;
//! use lars_core::proto::{HostCallResult, ReportStatusRequest};
//! use lars_core::{frame, ModKey};
//! use lars_store::StatsStore;
//!
//! let dir = std::env::temp_dir().join(format!("lars-reporter-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let store = lars_store::open(&format!("sqlite://{}/lars.db", dir.display())).unwrap();
//! let mut config = ReporterConfig::default();
//! config.reactor.addr = "127.0.0.1:0".parse().unwrap();
//! config.reactor.thread_num = 1;
//! config.db_thread_cnt = std::num::NonZeroUsize::MIN;
//! let mut reporter = lars_reporter::Reporter::start(config, store.clone()).unwrap();
//!
//! // An agent reports 5 successes and 1 error of host 127.0.0.1:9001.
//! let req = ReportStatusRequest {
//!     modid: 1, cmdid: 2, caller: 7, ts: 0,
//!     results: vec![HostCallResult { ip: 0x7f00_0001, port: 9001, succ: 5, err: 1, overload: false }],
//! };
//! let bytes = frame::to_bytes(3, &req).unwrap();
//! let mut conn = std::net::TcpStream::connect(reporter.local_addr()).unwrap();
//! conn.write_all(&bytes).unwrap();
//! drop(conn);
//! while reporter.stats().requests < 1 {
//!     std::thread::sleep(std::time::Duration::from_millis(5));
//! }
//! reporter.stop(); // flushes
//! assert_eq!(store.history_totals(Some(ModKey::new(1, 2)), 0).unwrap(), (5, 1));
//! # std::fs::remove_dir_all(&dir).ok();
//! ```
#![warn(missing_docs)]

pub mod config;
mod service;
mod stats;

pub use config::ReporterConfig;
pub use lars_stats::{
    CallerView, HostView, LATE_AFTER, STOP_FLUSH_TIMEOUT, WRITE_CHUNK, Window, WindowCounts,
};
pub use service::{QUEUE_CAPACITY, Reporter, ReporterError, ReporterHandle};
pub use stats::{Stats, StatsSnapshot};
