//! The statistics contract between the lars agent and the reporter, both
//! halves in one crate: a deterministic library that performs no I/O, starts
//! no threads, takes no locks and never reads the clock (time is the unix
//! second or the `Instant` you pass).
//!
//! - [`CumulativeSender`] (agent): the balancer's per-interval counts in,
//!   cumulative `ReportStatusRequest`s out, with the `(0, 0)` announcement of
//!   every counter restart and the resend of what a lost connection may have
//!   swallowed.
//! - [`Receiver`] (reporter): a report in, the calls it adds out
//!   ([`DeltaTracker`]), into the [`Batch`] to write and the live
//!   [`Windows`]; the late / future / zero timestamp rules ([`ReportTime`]);
//!   resuming from persisted counters after a restart.
//! - [`Flusher`] (reporter's writer): what to write next, the chunk in doubt,
//!   retry and give-up, the prune schedule; the writer thread performs the
//!   [`Action`]s it hands out and reports their results.
//!
//! The whole path, sender to store, in virtual time (docs/stats.md):
//!
//! ```
//! use std::time::Instant;
//! use lars_core::{HostAddr, ModKey};
//! use lars_lb::{HostReport, KeyReport};
//! use lars_stats::{Action, CumulativeSender, Flusher, Progress, Receiver, Windows};
//!
//! let (key, host) = (ModKey::new(1, 2), HostAddr::new(0x0a00_0001, 80));
//! let calls = |succ, err| KeyReport {
//!     key,
//!     results: vec![HostReport { host, succ, err, overload: false }],
//! };
//! let mut sender = CumulativeSender::new(0x7f00_0001, 1000);
//! let (mut receiver, mut windows) = (Receiver::new(), Windows::new());
//! let mut flusher = Flusher::new(100_000, 0);
//! let now = 1_700_000_000;
//! sender.on_connected(1);
//! for (i, n) in [3, 4, 5].into_iter().enumerate() {
//!     sender.record([calls(n, 1)]);
//!     sender.report_tick(now + i as u32);
//!     while let Some(msg) = sender.poll_transmit() {
//!         receiver.receive(&msg, i64::from(now), &mut windows); // the wire, elided
//!     }
//! }
//! flusher.push(receiver.take_batch());
//! let t0 = Instant::now(); // the driver reads the clock, never the crate
//! let mut written = (0, 0);
//! while let Some(action) = flusher.poll_action(t0) {
//!     if let Action::Write { history: rows, .. } = &action {
//!         written = rows.iter().fold(written, |(s, e), r| (s + r.succ, e + r.err));
//!     }
//!     if let Progress::Flushed { .. } = flusher.on_written(t0, Ok(())) {
//!         break;
//!     }
//! }
//! assert_eq!(written, (12, 3));
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod delta;
mod flusher;
mod receiver;
mod sender;
pub mod windows;

pub use aggregate::{
    Batch, BoundOutcome, CallStatusRow, DoubleBuffer, HistoryRow, MAX_REJECTED_ROWS, Pending,
    RejectedRow,
};
pub use delta::{Delta, DeltaTracker, Peek, RESYNC_AFTER, StreamKey};
pub use flusher::{
    Action, BATCH_MARKS_KEPT, Flusher, FlusherState, GiveUp, MAX_QUERY_FAILURES, PRUNE_EVERY,
    PRUNE_RETRY, Progress, Prune, RETRY_MAX, RETRY_MIN, STOP_FLUSH_TIMEOUT, WRITE_CHUNK,
    WriteError,
};
pub use receiver::{LATE_AFTER, Received, Receiver, Rejection, ReportTime, TrustLimits};
pub use sender::{
    COUNTER_LIMIT, CumulativeSender, DEFAULT_MAX_PENDING_KEYS, IDLE_RESTART, KeyStats,
    RESEND_WITHIN, SenderCounters,
};
pub use windows::{CallerView, EXPIRE_AFTER, HostView, Window, WindowCounts, Windows};
