//! The reporter's half of the contract: a `ReportStatusRequest` in, the
//! calls it adds out, into the batch to write and the live windows; the
//! rules for late, future and missing timestamps; resuming from the
//! counters persisted before a restart.

use lars_core::proto::ReportStatusRequest;
use lars_core::{HostAddr, ModKey};

use crate::aggregate::{Batch, CallStatusRow, DoubleBuffer};
use crate::delta::DeltaTracker;
use crate::windows::{EXPIRE_AFTER, Windows};

/// Reports whose `ts` is more than this many seconds behind the reporter's
/// clock are ignored (and counted).
pub const LATE_AFTER: i64 = 3600;

/// When a report counts, by the reporter's clock `now` (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportTime {
    /// At its own `ts`.
    AsSent(i64),
    /// It carried `ts = 0`: taken as `now`.
    Zero(i64),
    /// Its `ts` was ahead of `now`: taken as `now`.
    Future(i64),
    /// Its `ts` is more than [`LATE_AFTER`] seconds behind `now`: ignored.
    Late,
}

impl ReportTime {
    /// The rule for a report stamped `ts` received at `now`.
    pub fn of(ts: u32, now: i64) -> Self {
        if ts == 0 {
            return Self::Zero(now);
        }
        let ts = i64::from(ts);
        if ts < now - LATE_AFTER {
            Self::Late
        } else if ts > now {
            Self::Future(now)
        } else {
            Self::AsSent(ts)
        }
    }

    /// The unix second the report counts at; `None` when it is ignored.
    pub fn at(self) -> Option<i64> {
        match self {
            Self::AsSent(t) | Self::Zero(t) | Self::Future(t) => Some(t),
            Self::Late => None,
        }
    }
}

/// What one report added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// How its timestamp was taken (nothing else counts when
    /// [`ReportTime::Late`]).
    pub time: ReportTime,
    /// Host results skipped for an invalid port.
    pub bad_results: u64,
    /// Counter resets seen (a counter went down).
    pub resets: u64,
    /// Successful calls added.
    pub succ: u64,
    /// Failed calls added.
    pub err: u64,
}

/// The reporter side of one worker: the [`DeltaTracker`] of its streams and
/// the [`DoubleBuffer`] its rows gather in. Pure: `now` is an argument.
///
/// ```
/// use lars_core::proto::{HostCallResult, ReportStatusRequest};
/// use lars_stats::{Receiver, ReportTime, Windows};
///
/// let mut rx = Receiver::new();
/// let mut windows = Windows::new();
/// let report = |succ, err| ReportStatusRequest {
///     modid: 1, cmdid: 2, caller: 7, ts: 1_700_000_000,
///     results: vec![HostCallResult { ip: 0x0a00_0001, port: 80, succ, err, overload: false }],
/// };
/// let now = 1_700_000_001;
/// assert_eq!(rx.receive(&report(5, 1), now, &mut windows).succ, 5);
/// // Cumulative: only what was added since counts.
/// let r = rx.receive(&report(8, 1), now, &mut windows);
/// assert_eq!((r.time, r.succ, r.err), (ReportTime::AsSent(1_700_000_000), 3, 0));
/// assert_eq!(rx.take_batch().history_totals(), (8, 1));
/// ```
#[derive(Debug, Default)]
pub struct Receiver {
    tracker: DeltaTracker,
    buffer: DoubleBuffer,
    /// Batches handed out by [`take_batch`](Self::take_batch); the active
    /// side is batch `taken + 1`.
    taken: u64,
    /// The last batch whose rows are all in the store (or given up).
    flushed_through: u64,
    /// `Some(secs)`: streams not updated live for that long are re-read.
    reload_after: Option<i64>,
}

impl Receiver {
    /// No streams, nothing gathered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Streams not updated by a live report for `secs` seconds (and streams
    /// known only from the store, or not at all) are re-read from the store
    /// before a report is applied: see [`reload_needed`](Self::reload_needed).
    /// Without it (the default) memory is trusted.
    pub fn with_reload_after(mut self, secs: i64) -> Self {
        self.reload_after = Some(secs.max(0));
        self
    }

    /// Batches handed out by [`take_batch`](Self::take_batch) so far: the
    /// number of the last one (the first is 1).
    pub fn batches_taken(&self) -> u64 {
        self.taken
    }

    /// Every row of the batches up to `batch` (as numbered by
    /// [`batches_taken`](Self::batches_taken)) is in the store, or was given
    /// up: streams whose last rows were in them may be re-read.
    pub fn set_flushed_through(&mut self, batch: u64) {
        self.flushed_through = self.flushed_through.max(batch);
    }

    /// The `(key, caller)` whose persisted counters must be read before `req`
    /// is applied at `now` (one read, every host of the message), or `None`:
    /// re-reading is off, the report is late (ignored), or every stream of
    /// the message was updated live less than the reload age ago, or still
    /// has unflushed rows here (see [`DeltaTracker::needs_reload`]).
    pub fn reload_needed(&self, req: &ReportStatusRequest, now: i64) -> Option<(ModKey, u32)> {
        let after = self.reload_after?;
        ReportTime::of(req.ts, now).at()?;
        let key = ModKey::from_wire(req.modid, req.cmdid);
        let caller = req.caller as u32;
        req.results
            .iter()
            .filter_map(|r| HostAddr::from_wire(r.ip, r.port))
            .any(|host| {
                self.tracker
                    .needs_reload((key, host, caller), now, after, self.flushed_through)
            })
            .then_some((key, caller))
    }

    /// Applies the persisted counters `rows` (the `ServerCallStatus` rows of
    /// `req`'s key and caller, read at `now`) to the streams of `req` that
    /// [`reload_needed`](Self::reload_needed): each continues from its row,
    /// or counts in full when the store has none (or only one older than
    /// [`EXPIRE_AFTER`], or beyond `u32`: the sender restarted its counters
    /// since). Returns the streams re-read.
    pub fn reload<I: IntoIterator<Item = CallStatusRow>>(
        &mut self,
        req: &ReportStatusRequest,
        rows: I,
        now: i64,
    ) -> u64 {
        let Some(after) = self.reload_after else {
            return 0;
        };
        let key = ModKey::from_wire(req.modid, req.cmdid);
        let caller = req.caller as u32;
        let rows: Vec<CallStatusRow> = rows
            .into_iter()
            .filter(|r| r.key == key && r.caller == caller)
            .collect();
        let mut reloaded = 0;
        for r in &req.results {
            let Some(host) = HostAddr::from_wire(r.ip, r.port) else {
                continue;
            };
            let stream = (key, host, caller);
            if !self
                .tracker
                .needs_reload(stream, now, after, self.flushed_through)
            {
                continue;
            }
            let persisted = rows
                .iter()
                .find(|p| p.host == host && p.ts >= now - EXPIRE_AFTER)
                .and_then(|p| {
                    Some((
                        u32::try_from(p.succ_cnt).ok()?,
                        u32::try_from(p.err_cnt).ok()?,
                        p.ts,
                    ))
                });
            self.tracker.reload(stream, persisted);
            reloaded += 1;
        }
        reloaded
    }

    /// Resumes from the counters persisted before a restart (the
    /// `ServerCallStatus` rows of this worker's keys), so a cumulative
    /// sender's history is not counted a second time. Rows older than
    /// [`EXPIRE_AFTER`] at `now` (the sender restarts its counters before
    /// then) and counters beyond `u32` are skipped; streams already observed
    /// keep their newer counters. Returns the streams resumed.
    pub fn resume<I: IntoIterator<Item = CallStatusRow>>(&mut self, rows: I, now: i64) -> u64 {
        let mut resumed = 0;
        for r in rows {
            if r.ts < now - EXPIRE_AFTER {
                continue;
            }
            let (Ok(succ), Ok(err)) = (u32::try_from(r.succ_cnt), u32::try_from(r.err_cnt)) else {
                continue;
            };
            self.tracker
                .seed((r.key, r.host, r.caller), succ, err, r.ts);
            resumed += 1;
        }
        resumed
    }

    /// Takes in one report received at `now` (unix seconds): each host's
    /// counters become a delta ([`DeltaTracker::observe`]) recorded in
    /// `windows` and, when not zero, in the history; the counters themselves
    /// become the stream's status row. A [`ReportTime::Late`] report changes
    /// nothing.
    pub fn receive(
        &mut self,
        req: &ReportStatusRequest,
        now: i64,
        windows: &mut Windows,
    ) -> Received {
        let time = ReportTime::of(req.ts, now);
        let mut out = Received {
            time,
            bad_results: 0,
            resets: 0,
            succ: 0,
            err: 0,
        };
        let Some(ts) = time.at() else {
            return out;
        };
        let key = ModKey::from_wire(req.modid, req.cmdid);
        let caller = req.caller as u32; // the same 32 bits
        let side = self.buffer.active();
        for r in &req.results {
            let Some(host) = HostAddr::from_wire(r.ip, r.port) else {
                out.bad_results += 1;
                continue;
            };
            let d =
                self.tracker
                    .observe_in((key, host, caller), r.succ, r.err, now, self.taken + 1);
            out.resets += u64::from(d.reset);
            out.succ += d.succ;
            out.err += d.err;
            windows.record((key, host, caller), ts, d.succ, d.err, r.overload);
            if d.succ > 0 || d.err > 0 {
                side.add_history(key, host, ts, d.succ, d.err);
            }
            side.set_status(CallStatusRow {
                key,
                host,
                caller,
                succ_cnt: u64::from(r.succ),
                err_cnt: u64::from(r.err),
                ts,
                overload: r.overload,
            });
        }
        out
    }

    /// Hands out what was gathered since the last call, to be written.
    /// It becomes batch number [`batches_taken`](Self::batches_taken).
    pub fn take_batch(&mut self) -> Batch {
        self.taken += 1;
        self.buffer.swap()
    }

    /// Gives an emptied batch back so its allocation is reused.
    pub fn recycle(&mut self, batch: Batch) {
        self.buffer.recycle(batch);
    }

    /// Forgets the streams without a report for [`EXPIRE_AFTER`] seconds at
    /// `now`; returns how many.
    pub fn expire(&mut self, now: i64) -> usize {
        self.tracker.expire(now - EXPIRE_AFTER)
    }

    /// Streams tracked.
    pub fn streams(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use lars_core::proto::HostCallResult;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn req(ts: u32, results: &[(i32, u32, u32)]) -> ReportStatusRequest {
        ReportStatusRequest {
            modid: 1,
            cmdid: 1,
            caller: 9,
            ts,
            results: results
                .iter()
                .map(|&(port, succ, err)| HostCallResult {
                    ip: 0x0a00_0001,
                    port,
                    succ,
                    err,
                    overload: false,
                })
                .collect(),
        }
    }

    #[test]
    fn timestamps_zero_and_future_are_now_late_is_ignored() {
        let now = NOW;
        assert_eq!(ReportTime::of(0, now), ReportTime::Zero(now));
        assert_eq!(ReportTime::of(NOW as u32 + 5, now), ReportTime::Future(now));
        assert_eq!(
            ReportTime::of(NOW as u32 - 10, now),
            ReportTime::AsSent(now - 10)
        );
        let edge = (now - LATE_AFTER) as u32;
        assert_eq!(
            ReportTime::of(edge, now),
            ReportTime::AsSent(now - LATE_AFTER)
        );
        assert_eq!(ReportTime::of(edge - 1, now), ReportTime::Late);
        assert_eq!(ReportTime::Late.at(), None);
    }

    #[test]
    fn a_late_report_changes_nothing_even_with_higher_counters() {
        let mut rx = Receiver::new();
        let mut w = Windows::new();
        rx.receive(&req(NOW as u32, &[(80, 5, 0)]), NOW, &mut w);
        let late = rx.receive(
            &req((NOW - 4000) as u32, &[(80, 1_000_000, 0)]),
            NOW,
            &mut w,
        );
        assert_eq!((late.time, late.succ), (ReportTime::Late, 0));
        // The stream still continues from 5.
        assert_eq!(
            rx.receive(&req(NOW as u32, &[(80, 7, 0)]), NOW, &mut w)
                .succ,
            2
        );
        assert_eq!(rx.take_batch().history_totals(), (7, 0));
    }

    #[test]
    fn bad_ports_are_skipped_and_resets_counted() {
        let mut rx = Receiver::new();
        let mut w = Windows::new();
        let r = rx.receive(
            &req(0, &[(0, 1, 0), (70_000, 1, 0), (80, 9, 0)]),
            NOW,
            &mut w,
        );
        assert_eq!(
            (r.bad_results, r.succ, r.time),
            (2, 9, ReportTime::Zero(NOW))
        );
        let r = rx.receive(&req(0, &[(80, 0, 0)]), NOW, &mut w);
        assert_eq!((r.resets, r.succ), (1, 0));
        let b = rx.take_batch();
        assert_eq!((b.status_len(), b.history_len()), (1, 1));
    }

    #[test]
    fn resume_skips_old_and_oversized_rows_and_never_overrides() {
        let row = |port, succ_cnt, ts| CallStatusRow {
            key: ModKey::new(1, 1),
            host: HostAddr::new(0x0a00_0001, port),
            caller: 9,
            succ_cnt,
            err_cnt: 0,
            ts,
            overload: false,
        };
        let mut rx = Receiver::new();
        let mut w = Windows::new();
        rx.receive(&req(NOW as u32, &[(83, 2, 0)]), NOW, &mut w);
        let rows = [
            row(80, 40, NOW - 10),
            row(81, 40, NOW - EXPIRE_AFTER - 1),
            row(82, u64::from(u32::MAX) + 1, NOW),
            row(83, 50, NOW),
        ];
        assert_eq!(rx.resume(rows, NOW), 2);
        let r = rx.receive(
            &req(NOW as u32, &[(80, 45, 0), (81, 3, 0), (83, 4, 0)]),
            NOW,
            &mut w,
        );
        assert_eq!(r.succ, 5 + 3 + 2);
        assert_eq!(rx.streams(), 3);
        assert_eq!(rx.expire(NOW + EXPIRE_AFTER + 1), 3);
    }
}
