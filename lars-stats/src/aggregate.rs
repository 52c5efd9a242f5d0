//! In-memory aggregation before the database: a [`Batch`] of rows (latest
//! `ServerCallStatus` counters and per-minute history deltas), the
//! [`DoubleBuffer`] a worker fills while the other side is flushed, and the
//! bounded [`Pending`] buffer that keeps unwritten rows while the database is
//! down. Pure: no clock, no I/O.

use std::collections::{BTreeMap, HashMap};
use std::mem;

use lars_core::{HostAddr, ModKey};

use crate::delta::StreamKey;

/// The latest counters of one stream, a row of the original
/// `ServerCallStatus` table (lars-store persists this type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallStatusRow {
    /// Called key.
    pub key: ModKey,
    /// Called host.
    pub host: HostAddr,
    /// The caller's id (the agent's ip as in the original).
    pub caller: u32,
    /// The caller's cumulative successful calls, as last reported.
    pub succ_cnt: u64,
    /// The caller's cumulative failed calls, as last reported.
    pub err_cnt: u64,
    /// Report time, unix seconds.
    pub ts: i64,
    /// Whether the host was overloaded.
    pub overload: bool,
}

/// Per-minute call totals of one `(key, host)`, a row of `lars_call_history`
/// (lars-store persists this type). Appending the same key and minute again
/// adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRow {
    /// Called key.
    pub key: ModKey,
    /// Called host.
    pub host: HostAddr,
    /// Start of the minute, unix seconds (a multiple of 60).
    pub minute: i64,
    /// Successful calls in that minute.
    pub succ: u64,
    /// Failed calls in that minute.
    pub err: u64,
}

/// Reports of one key rejected by the reporter's trust limits in one minute
/// (the calls they claimed were not counted anywhere); a row of
/// `lars_rejected_reports`, which the console reads to say that a key's
/// numbers were clipped. Appending the same key and minute again adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedRow {
    /// The key the reports were about.
    pub key: ModKey,
    /// Start of the minute, unix seconds (a multiple of 60).
    pub minute: i64,
    /// Reports (messages) rejected.
    pub reports: u64,
    /// Calls (succ + err) those reports claimed.
    pub calls: u64,
}

/// Most rejected `(key, minute)` rows a batch holds (reports for random keys
/// cannot grow it without bound); beyond it a rejection is still counted by
/// the reporter but not recorded in the store.
pub const MAX_REJECTED_ROWS: usize = 10_000;

/// The most calls a [`RejectedRow`] holds (2^62: the store adds two of them
/// without overflowing a signed 64-bit column).
pub const MAX_REJECTED_CALLS: u64 = 1 << 62;

/// History deltas of one minute, per `(key, host)`: `(succ, err)`.
type MinuteRows = HashMap<(ModKey, HostAddr), (u64, u64)>;

/// Rows waiting to be written: at most one status row per stream (the latest)
/// and one history row per `(key, host, minute)` (the sum of its deltas).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    status: HashMap<StreamKey, CallStatusRow>,
    history: BTreeMap<i64, MinuteRows>,
    history_rows: usize,
    /// Rejected reports per `(key, minute)`: `(reports, calls)`.
    rejected: HashMap<(ModKey, i64), (u64, u64)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the latest counters of a stream (a later call wins).
    pub fn set_status(&mut self, row: CallStatusRow) {
        self.status.insert((row.key, row.host, row.caller), row);
    }

    /// Adds deltas to the history of `(key, host)` in the minute holding
    /// unix second `ts`.
    pub fn add_history(&mut self, key: ModKey, host: HostAddr, ts: i64, succ: u64, err: u64) {
        let minute = ts - ts.rem_euclid(60);
        let rows = &mut self.history_rows;
        let e = self
            .history
            .entry(minute)
            .or_default()
            .entry((key, host))
            .or_insert_with(|| {
                *rows += 1;
                (0, 0)
            });
        e.0 += succ;
        e.1 += err;
    }

    /// Records `reports` rejected reports of `key` claiming `calls` calls, in
    /// the minute holding unix second `ts`; `false` (nothing recorded) when
    /// the batch already holds [`MAX_REJECTED_ROWS`] other rows.
    pub fn add_rejected(&mut self, key: ModKey, ts: i64, reports: u64, calls: u64) -> bool {
        let minute = ts - ts.rem_euclid(60);
        let full = self.rejected.len() >= MAX_REJECTED_ROWS;
        match self.rejected.get_mut(&(key, minute)) {
            Some(e) => {
                e.0 = e.0.saturating_add(reports);
                e.1 = e.1.saturating_add(calls).min(MAX_REJECTED_CALLS);
                true
            }
            None if full => false,
            None => {
                self.rejected
                    .insert((key, minute), (reports, calls.min(MAX_REJECTED_CALLS)));
                true
            }
        }
    }

    /// Takes the rejected-report rows out (the rest of the batch stays).
    pub fn take_rejected(&mut self) -> Vec<RejectedRow> {
        self.rejected
            .drain()
            .map(|((key, minute), (reports, calls))| RejectedRow {
                key,
                minute,
                reports,
                calls,
            })
            .collect()
    }

    /// Rejected-report rows held.
    pub fn rejected_len(&self) -> usize {
        self.rejected.len()
    }

    /// Merges a batch that is newer than this one: its status rows win, its
    /// history and rejected reports add up.
    pub fn merge_newer(&mut self, newer: Batch) {
        self.status.extend(newer.status);
        self.merge_history(newer.history);
        self.merge_rejected(newer.rejected);
    }

    /// Merges a batch that is older than this one (a failed write put back):
    /// its status rows only fill gaps, its history and rejected reports add
    /// up.
    pub fn merge_older(&mut self, older: Batch) {
        for (k, row) in older.status {
            self.status.entry(k).or_insert(row);
        }
        self.merge_history(older.history);
        self.merge_rejected(older.rejected);
    }

    fn merge_rejected(&mut self, other: HashMap<(ModKey, i64), (u64, u64)>) {
        for ((key, minute), (reports, calls)) in other {
            self.add_rejected(key, minute, reports, calls);
        }
    }

    fn merge_history(&mut self, other: BTreeMap<i64, MinuteRows>) {
        for (minute, rows) in other {
            for ((key, host), (s, e)) in rows {
                self.add_history(key, host, minute, s, e);
            }
        }
    }

    /// Status rows held.
    pub fn status_len(&self) -> usize {
        self.status.len()
    }

    /// History rows held.
    pub fn history_len(&self) -> usize {
        self.history_rows
    }

    /// All rows held (status, history and rejected reports).
    pub fn len(&self) -> usize {
        self.status.len() + self.history_rows + self.rejected.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(succ, err)` summed over the history rows.
    pub fn history_totals(&self) -> (u64, u64) {
        self.history
            .values()
            .flat_map(HashMap::values)
            .fold((0, 0), |(s, e), (a, b)| (s + a, e + b))
    }

    /// Splits the batch into the rows to write (rejected reports: take them
    /// first with [`take_rejected`](Self::take_rejected)).
    pub fn into_rows(self) -> (Vec<CallStatusRow>, Vec<HistoryRow>) {
        let status = self.status.into_values().collect();
        let history = self
            .history
            .into_iter()
            .flat_map(|(minute, rows)| {
                rows.into_iter()
                    .map(move |((key, host), (succ, err))| HistoryRow {
                        key,
                        host,
                        minute,
                        succ,
                        err,
                    })
            })
            .collect();
        (status, history)
    }

    /// A batch from rows (to put back rows whose write failed).
    pub fn from_rows(status: Vec<CallStatusRow>, history: Vec<HistoryRow>) -> Self {
        let mut b = Self::new();
        for r in status {
            b.set_status(r);
        }
        for h in history {
            b.add_history(h.key, h.host, h.minute, h.succ, h.err);
        }
        b
    }

    /// Merges the oldest minute of history into the next one; returns the
    /// rows saved, or `None` when fewer than two minutes are held.
    fn merge_oldest_minute(&mut self) -> Option<usize> {
        if self.history.len() < 2 {
            return None;
        }
        let (_, oldest) = self.history.pop_first()?;
        let (&next, _) = self.history.first_key_value()?;
        let before = self.history_rows;
        self.history_rows -= oldest.len();
        for ((key, host), (s, e)) in oldest {
            self.add_history(key, host, next, s, e);
        }
        Some(before - self.history_rows)
    }

    /// Drops the oldest minute of history; returns `(rows, succ, err)` lost.
    fn drop_oldest_minute(&mut self) -> Option<(usize, u64, u64)> {
        let (_, oldest) = self.history.pop_first()?;
        self.history_rows -= oldest.len();
        let (s, e) = oldest
            .values()
            .fold((0, 0), |(s, e), (a, b)| (s + a, e + b));
        Some((oldest.len(), s, e))
    }
}

/// The two sides a worker aggregates into: the active side takes updates;
/// [`DoubleBuffer::swap`] hands the filled side out to be written and makes
/// the other (empty) side active.
#[derive(Debug, Default)]
pub struct DoubleBuffer {
    active: Batch,
    spare: Batch,
}

impl DoubleBuffer {
    /// Two empty sides.
    pub fn new() -> Self {
        Self::default()
    }

    /// The side taking updates.
    pub fn active(&mut self) -> &mut Batch {
        &mut self.active
    }

    /// Makes the spare side active and returns the filled one.
    pub fn swap(&mut self) -> Batch {
        mem::replace(&mut self.active, mem::take(&mut self.spare))
    }

    /// Gives an emptied side back so its allocation is reused.
    pub fn recycle(&mut self, mut side: Batch) {
        side.status.clear();
        side.history.clear();
        side.history_rows = 0;
        side.rejected.clear();
        self.spare = side;
    }
}

/// What enforcing the bound did; all zero when under the bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundOutcome {
    /// Oldest history minutes merged into the next minute.
    pub minutes_merged: u64,
    /// History rows dropped.
    pub rows_dropped: u64,
    /// Successful calls lost with them.
    pub succ_dropped: u64,
    /// Failed calls lost with them.
    pub err_dropped: u64,
}

impl BoundOutcome {
    /// Whether anything was merged or dropped.
    pub fn any(&self) -> bool {
        self.minutes_merged > 0 || self.rows_dropped > 0
    }
}

/// Rows not yet written, bounded by `max_rows`. Filled by each flush tick,
/// emptied by a successful write, refilled (as older data) by a failed one.
#[derive(Debug)]
pub struct Pending {
    batch: Batch,
    max_rows: usize,
}

impl Pending {
    /// An empty buffer holding at most `max_rows` rows (history rows are
    /// merged or dropped beyond that; status rows, one per live stream, are
    /// always kept).
    pub fn new(max_rows: usize) -> Self {
        Self {
            batch: Batch::new(),
            max_rows: max_rows.max(1),
        }
    }

    /// Adds a freshly swapped side and enforces the bound.
    pub fn push_newer(&mut self, side: Batch) -> BoundOutcome {
        self.batch.merge_newer(side);
        self.enforce()
    }

    /// Puts back rows whose write failed and enforces the bound.
    pub fn put_back(&mut self, failed: Batch) -> BoundOutcome {
        self.batch.merge_older(failed);
        self.enforce()
    }

    /// Takes everything out to write it.
    pub fn take(&mut self) -> Batch {
        mem::take(&mut self.batch)
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// While over the bound: merge the oldest history minute into the next
    /// one (counts are kept, their minute moves later); when a single minute
    /// is left and still over, drop the oldest minute.
    fn enforce(&mut self) -> BoundOutcome {
        let mut out = BoundOutcome::default();
        while self.batch.len() > self.max_rows && self.batch.history_len() > 0 {
            if let Some(_saved) = self.batch.merge_oldest_minute() {
                out.minutes_merged += 1;
            } else if let Some((rows, s, e)) = self.batch.drop_oldest_minute() {
                out.rows_dropped += rows as u64;
                out.succ_dropped += s;
                out.err_dropped += e;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: ModKey = ModKey::new(1, 1);

    fn h(port: u16) -> HostAddr {
        HostAddr::new(0x7f00_0001, port)
    }

    fn status(port: u16, caller: u32, succ: u64, ts: i64) -> CallStatusRow {
        CallStatusRow {
            key: K,
            host: h(port),
            caller,
            succ_cnt: succ,
            err_cnt: 0,
            ts,
            overload: false,
        }
    }

    #[test]
    fn history_adds_up_per_minute_and_status_keeps_the_latest() {
        let mut b = Batch::new();
        b.add_history(K, h(1), 120, 2, 1);
        b.add_history(K, h(1), 179, 3, 0);
        b.add_history(K, h(1), 180, 1, 0);
        b.set_status(status(1, 9, 5, 120));
        b.set_status(status(1, 9, 8, 179));
        assert_eq!((b.status_len(), b.history_len()), (1, 2));
        assert_eq!(b.history_totals(), (6, 1));
        let (s, hist) = b.into_rows();
        assert_eq!(s[0].succ_cnt, 8);
        let mut hist: Vec<_> = hist.iter().map(|r| (r.minute, r.succ, r.err)).collect();
        hist.sort();
        assert_eq!(hist, vec![(120, 5, 1), (180, 1, 0)]);
    }

    #[test]
    fn newer_status_wins_older_only_fills_gaps() {
        let mut a = Batch::new();
        a.set_status(status(1, 1, 10, 200));
        let mut old = Batch::new();
        old.set_status(status(1, 1, 3, 100));
        old.set_status(status(2, 1, 4, 100));
        old.add_history(K, h(1), 100, 3, 0);
        a.add_history(K, h(1), 100, 7, 0);
        a.merge_older(old.clone());
        let (s, _) = a.clone().into_rows();
        assert!(s.contains(&status(1, 1, 10, 200)) && s.contains(&status(2, 1, 4, 100)));
        assert_eq!(a.history_totals(), (10, 0));
        let mut b = Batch::new();
        b.set_status(status(1, 1, 10, 200));
        b.merge_newer(old);
        assert_eq!(b.into_rows().0.len(), 2);
    }

    #[test]
    fn rows_round_trip() {
        let mut b = Batch::new();
        b.set_status(status(1, 1, 1, 60));
        b.add_history(K, h(2), 61, 4, 5);
        let (s, hist) = b.clone().into_rows();
        assert_eq!(Batch::from_rows(s, hist), b);
    }

    #[test]
    fn double_buffer_swaps_sides() {
        let mut d = DoubleBuffer::new();
        d.active().add_history(K, h(1), 0, 1, 0);
        let filled = d.swap();
        assert_eq!(filled.history_len(), 1);
        assert!(d.active().is_empty());
        d.active().add_history(K, h(1), 0, 1, 0);
        d.recycle(filled);
        let second = d.swap();
        assert_eq!(second.history_totals(), (1, 0));
        assert!(d.active().is_empty(), "the recycled side was emptied");
    }

    #[test]
    fn pending_merges_oldest_minutes_then_drops_keeping_totals_while_it_can() {
        let mut p = Pending::new(4);
        let mut side = Batch::new();
        for m in 0..3i64 {
            side.add_history(K, h(1), m * 60, 1, 0);
            side.add_history(K, h(2), m * 60, 1, 1);
        }
        // 6 rows > 4: minute 0 merges into minute 60 (6 -> 4 rows).
        let out = p.push_newer(side);
        assert_eq!(out.minutes_merged, 1);
        assert_eq!(out.rows_dropped, 0);
        assert_eq!(p.len(), 4);
        let b = p.take();
        assert_eq!(b.history_totals(), (6, 3), "merging keeps every count");

        // Distinct hosts in one minute cannot merge: the minute is dropped.
        let mut p = Pending::new(2);
        let mut side = Batch::new();
        for port in 1..=3 {
            side.add_history(K, h(port), 0, 2, 1);
        }
        let out = p.push_newer(side);
        assert_eq!(
            out,
            BoundOutcome {
                minutes_merged: 0,
                rows_dropped: 3,
                succ_dropped: 6,
                err_dropped: 3
            }
        );
        assert!(out.any());
        assert!(p.is_empty());
    }

    #[test]
    fn put_back_is_older_data() {
        let mut p = Pending::new(100);
        let mut newer = Batch::new();
        newer.set_status(status(1, 1, 9, 300));
        p.push_newer(newer);
        let mut failed = Batch::new();
        failed.set_status(status(1, 1, 5, 200));
        failed.add_history(K, h(1), 200, 5, 0);
        assert!(!p.put_back(failed).any());
        let (s, hist) = p.take().into_rows();
        assert_eq!(s, vec![status(1, 1, 9, 300)]);
        assert_eq!(hist.len(), 1);
    }
}
