//! The reporter's half of the contract: a `ReportStatusRequest` in, the
//! calls it adds out, into the batch to write and the live windows; the
//! rules for late, future and missing timestamps; resuming from the
//! counters persisted before a restart.

use std::collections::HashMap;

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

/// Sanity bounds on what one report may claim (docs/stats.md, "Trust
/// limits"): calls that could not have happened in the time since the
/// stream's last report are not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustLimits {
    /// Calls per second one stream `(caller, key, host)` may add, and one
    /// message (a caller's report of one key, all hosts) in all.
    pub max_calls_per_second: u64,
    /// The shortest time a report is measured over, seconds (one report
    /// interval): also the time taken for a stream or key seen for the
    /// first time.
    pub floor_secs: i64,
    /// The most calls one message may add, however long since the last.
    pub max_calls_per_message: u64,
}

impl Default for TrustLimits {
    /// 1,000,000 calls/s over at least 1 s, at most 1,000,000,000 per
    /// message.
    fn default() -> Self {
        Self {
            max_calls_per_second: 1_000_000,
            floor_secs: 1,
            max_calls_per_message: 1_000_000_000,
        }
    }
}

/// Why a report was rejected by the [`TrustLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// One host's calls exceed `max_calls_per_second` times the time since
    /// that stream's last report (at least `floor_secs`).
    StreamRate,
    /// The message's calls (all hosts) exceed `max_calls_per_second` times
    /// the time since the caller's last accepted report of the key.
    KeyRate,
    /// The message's calls exceed `max_calls_per_message`.
    MessageTotal,
}

impl Rejection {
    /// The name used in counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StreamRate => "stream_rate",
            Self::KeyRate => "key_rate",
            Self::MessageTotal => "message_total",
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
    /// Why the whole report was rejected (then nothing was added).
    pub rejected: Option<Rejection>,
    /// Calls (succ + err) a rejected report claimed.
    pub rejected_calls: u64,
    /// The rejection could not be recorded for the store (the batch holds
    /// [`MAX_REJECTED_ROWS`](crate::MAX_REJECTED_ROWS) other rows).
    pub rejection_unrecorded: bool,
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
    /// The trust limits, when on.
    limits: Option<TrustLimits>,
    /// When each `(key, caller)` last had a report accepted (unix seconds).
    key_seen: HashMap<(ModKey, u32), i64>,
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

    /// Reports claiming more calls than `limits` allow are rejected whole:
    /// nothing counted, nothing written but a [`RejectedRow`] of the key
    /// (see [`DeltaTracker::reject`] for what becomes of the counters).
    /// Without it (the default) every report is believed.
    ///
    /// [`RejectedRow`]: crate::RejectedRow
    pub fn with_trust_limits(mut self, limits: TrustLimits) -> Self {
        self.limits = Some(limits);
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
            rejected: None,
            rejected_calls: 0,
            rejection_unrecorded: false,
        };
        let Some(ts) = time.at() else {
            return out;
        };
        let key = ModKey::from_wire(req.modid, req.cmdid);
        let caller = req.caller as u32; // the same 32 bits
        if let Some(limits) = self.limits {
            if let Some((why, calls)) = self.untrusted(req, key, caller, now, limits) {
                for r in &req.results {
                    if let Some(host) = HostAddr::from_wire(r.ip, r.port) {
                        self.tracker.reject((key, host, caller), r.succ, r.err, now);
                    } else {
                        out.bad_results += 1;
                    }
                }
                out.rejected = Some(why);
                out.rejected_calls = calls;
                out.rejection_unrecorded = !self.buffer.active().add_rejected(key, ts, 1, calls);
                return out;
            }
            self.key_seen.insert((key, caller), now);
        }
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

    /// Whether `req` claims more calls than `limits` allow at `now`: the
    /// reason and the calls claimed.
    fn untrusted(
        &self,
        req: &ReportStatusRequest,
        key: ModKey,
        caller: u32,
        now: i64,
        limits: TrustLimits,
    ) -> Option<(Rejection, u64)> {
        let floor = limits.floor_secs.max(1);
        let allowed = |since: Option<i64>| {
            let secs = since.map_or(floor, |t| now.saturating_sub(t).max(floor));
            limits
                .max_calls_per_second
                .saturating_mul(u64::try_from(secs).unwrap_or(u64::MAX))
        };
        let mut total: u64 = 0;
        let mut oldest: Option<i64> = None;
        let mut stream_over = false;
        for r in &req.results {
            let Some(host) = HostAddr::from_wire(r.ip, r.port) else {
                continue;
            };
            let p = self.tracker.peek((key, host, caller), r.succ, r.err);
            let calls = p.delta.succ + p.delta.err;
            total = total.saturating_add(calls);
            stream_over |= calls > allowed(p.since);
            oldest = match (oldest, p.since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let key_since = self.key_seen.get(&(key, caller)).copied().or(oldest);
        if total > limits.max_calls_per_message {
            Some((Rejection::MessageTotal, total))
        } else if stream_over {
            Some((Rejection::StreamRate, total))
        } else if total > allowed(key_since) {
            Some((Rejection::KeyRate, total))
        } else {
            None
        }
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
        self.key_seen.retain(|_, t| *t >= now - EXPIRE_AFTER);
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

    fn trusting() -> Receiver {
        Receiver::new().with_trust_limits(TrustLimits::default())
    }

    #[test]
    fn the_absurd_report_is_rejected_and_honest_traffic_after_it_counts_exactly() {
        let mut rx = trusting();
        let mut w = Windows::new();
        assert_eq!(rx.receive(&req(0, &[(80, 10, 0)]), NOW, &mut w).succ, 10);
        // succ = err = 2^32-1: 8.6 billion calls in a second.
        let r = rx.receive(&req(0, &[(80, u32::MAX, u32::MAX)]), NOW + 1, &mut w);
        assert_eq!(r.rejected, Some(Rejection::MessageTotal));
        assert_eq!((r.succ, r.err), (0, 0));
        assert_eq!(r.rejected_calls, 2 * u64::from(u32::MAX) - 10);
        // The honest sender goes on from its own counters.
        let r = rx.receive(&req(0, &[(80, 15, 1)]), NOW + 2, &mut w);
        assert_eq!((r.rejected, r.succ, r.err, r.resets), (None, 5, 1, 0));
        let mut b = rx.take_batch();
        let rejected = b.take_rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            (rejected[0].reports, rejected[0].key),
            (1, ModKey::new(1, 1))
        );
        assert_eq!(b.history_totals(), (15, 1), "nothing of it written");
        let (status, _) = b.into_rows();
        assert_eq!((status[0].succ_cnt, status[0].err_cnt), (15, 1));
        // The live windows never saw the absurd report either.
        let h1 = w.view(ModKey::new(1, 1), NOW + 2)[0].windows.h1;
        assert_eq!((h1.succ, h1.err), (15, 1));
    }

    #[test]
    fn growth_beyond_the_rate_is_rejected_then_counts_once_the_time_allows_it() {
        let mut rx = trusting();
        let mut w = Windows::new();
        rx.receive(&req(0, &[(80, 100, 0)]), NOW, &mut w);
        // 1.5 million calls in one second: not believed (yet).
        let r = rx.receive(&req(0, &[(80, 1_500_100, 0)]), NOW + 1, &mut w);
        assert_eq!(r.rejected, Some(Rejection::StreamRate));
        // Two seconds after the last accepted report it could have happened.
        let r = rx.receive(&req(0, &[(80, 1_500_200, 0)]), NOW + 2, &mut w);
        assert_eq!((r.rejected, r.succ), (None, 1_500_100));
        assert_eq!(rx.take_batch().history_totals(), (1_500_200, 0));
    }

    #[test]
    fn many_hosts_under_the_stream_rate_are_bounded_per_caller_and_key() {
        let mut rx = trusting();
        let mut w = Windows::new();
        let hosts = [(80, 600_000, 0), (81, 600_000, 0), (82, 600_000, 0)];
        let r = rx.receive(&req(0, &hosts), NOW, &mut w);
        assert_eq!(
            (r.rejected, r.rejected_calls),
            (Some(Rejection::KeyRate), 1_800_000)
        );
        // First reports over the limits: their counters are taken as they
        // are, only growth beyond them counts.
        let r = rx.receive(
            &req(0, &[(80, 600_001, 0), (81, 600_001, 0), (82, 600_002, 0)]),
            NOW + 1,
            &mut w,
        );
        assert_eq!((r.rejected, r.succ), (None, 4));
        let mut b = rx.take_batch();
        assert_eq!((b.take_rejected().len(), b.history_totals()), (1, (4, 0)));
    }

    #[test]
    fn without_limits_every_report_is_believed() {
        let mut rx = Receiver::new();
        let mut w = Windows::new();
        let r = rx.receive(&req(0, &[(80, u32::MAX, u32::MAX)]), NOW, &mut w);
        assert_eq!((r.rejected, r.succ), (None, u64::from(u32::MAX)));
    }
}
