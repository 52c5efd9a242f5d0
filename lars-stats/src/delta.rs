//! Turns reported counters into deltas: the last counters of every
//! `(key, host, caller)` are kept, and each new report yields what was added
//! since the previous one. Pure: no clock, no I/O (time is an argument).

use std::collections::HashMap;

use lars_core::{HostAddr, ModKey};

/// Identifies one stream of counters: a caller reporting on one host of a key.
pub type StreamKey = (ModKey, HostAddr, u32);

/// What one report added to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delta {
    /// Successful calls added.
    pub succ: u64,
    /// Failed calls added.
    pub err: u64,
    /// The counters went down: the sender started a new window (or
    /// restarted), so the new values themselves are the delta.
    pub reset: bool,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    succ: u32,
    err: u32,
    seen: i64,
    /// When a live report last updated the counters; `None`: they come from
    /// the store (the start-up resume or a re-read) and no report since.
    live: Option<i64>,
    /// The receiver batch (see [`Receiver`](crate::Receiver)) that holds the
    /// stream's last rows; 0: none.
    batch: u64,
    /// Reports of this stream rejected in a row for growth beyond the trust
    /// limits (see [`DeltaTracker::reject`]).
    rejected: u32,
}

/// What a report would add to a stream, without recording it
/// ([`DeltaTracker::peek`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    /// The delta [`observe`](DeltaTracker::observe) would yield.
    pub delta: Delta,
    /// When the stream's counters were last set (a report, or the store's
    /// `ts` for counters read from it); `None`: unknown stream.
    pub since: Option<i64>,
}

/// Reports of a stream rejected in a row for growth before its counters are
/// taken as they are (see [`DeltaTracker::reject`]).
pub const RESYNC_AFTER: u32 = 3;

/// The last counters of every stream.
///
/// Rule: `delta = new - old` when neither counter went down; otherwise
/// (either counter is smaller than before) the sender reset its counters and
/// `delta = new`. A stream seen for the first time yields `delta = new`.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    last: HashMap<StreamKey, Last>,
}

impl DeltaTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the counters `(succ, err)` reported for `stream` at `now` (unix
    /// seconds) and returns what they add.
    pub fn observe(&mut self, stream: StreamKey, succ: u32, err: u32, now: i64) -> Delta {
        self.observe_in(stream, succ, err, now, 0)
    }

    /// What the counters `(succ, err)` would add to `stream`, recording
    /// nothing.
    pub fn peek(&self, stream: StreamKey, succ: u32, err: u32) -> Peek {
        let old = self.last.get(&stream);
        Peek {
            delta: delta_of(old, succ, err),
            since: old.map(|l| l.seen),
        }
    }

    /// A report of `stream` with counters `(succ, err)` at `now` was rejected
    /// (it claimed more calls than could have happened). Nothing is counted.
    /// When it was growth over known counters, they stay, so the next honest
    /// report continues from them (nothing counted twice, nothing lost);
    /// after [`RESYNC_AFTER`] such rejections in a row, and at once when the
    /// report was a reset or the first of the stream (its values were the
    /// delta), the reported counters are taken as the stream's counters:
    /// only growth beyond them counts from now on (a stream cannot stay
    /// rejected for ever). Returns whether the counters were taken.
    pub fn reject(&mut self, stream: StreamKey, succ: u32, err: u32, now: i64) -> bool {
        let old = self.last.get(&stream).copied();
        let growth = old.is_some_and(|o| succ >= o.succ && err >= o.err);
        let rejected = old.map_or(0, |o| o.rejected) + 1;
        if growth && rejected < RESYNC_AFTER {
            if let Some(l) = self.last.get_mut(&stream) {
                l.rejected = rejected;
            }
            return false;
        }
        self.last.insert(
            stream,
            Last {
                succ,
                err,
                seen: now,
                live: Some(now),
                batch: old.map_or(0, |o| o.batch),
                rejected: 0,
            },
        );
        true
    }

    /// [`observe`](Self::observe), noting that the stream's rows go into
    /// receiver batch `batch` (see [`needs_reload`](Self::needs_reload)).
    pub fn observe_in(
        &mut self,
        stream: StreamKey,
        succ: u32,
        err: u32,
        now: i64,
        batch: u64,
    ) -> Delta {
        let new = Last {
            succ,
            err,
            seen: now,
            live: Some(now),
            batch,
            rejected: 0,
        };
        delta_of(self.last.insert(stream, new).as_ref(), succ, err)
    }

    /// Sets the last counters of `stream` without yielding a delta: used at
    /// start to resume from the counters already persisted, so a restarted
    /// reporter does not count a cumulative sender's history twice. A stream
    /// already observed keeps its newer counters.
    pub fn seed(&mut self, stream: StreamKey, succ: u32, err: u32, seen: i64) {
        self.last.entry(stream).or_insert(Last {
            succ,
            err,
            seen,
            live: None,
            batch: 0,
            rejected: 0,
        });
    }

    /// Whether the counters of `stream` must be read again from the store
    /// before a report at `now` is applied: the stream is unknown, known only
    /// from the store (resume, re-read), or no live report updated it for
    /// `after` seconds: another reporter may have counted it meanwhile (the
    /// agents move a key to another reporter when its owner is gone, and
    /// back). Never while this reporter still holds unflushed rows of the
    /// stream (its batch is above `flushed_through`): then its memory is
    /// newer than the store.
    pub fn needs_reload(
        &self,
        stream: StreamKey,
        now: i64,
        after: i64,
        flushed_through: u64,
    ) -> bool {
        match self.last.get(&stream) {
            None => true,
            Some(l) if l.batch > flushed_through => false,
            Some(l) => l.live.is_none_or(|t| now - t >= after),
        }
    }

    /// Replaces the counters of `stream` with those read from the store
    /// (`(succ, err, ts)`), or forgets the stream when the store has none (its
    /// next report then counts in full). No delta is yielded.
    pub fn reload(&mut self, stream: StreamKey, persisted: Option<(u32, u32, i64)>) {
        match persisted {
            Some((succ, err, seen)) => {
                self.last.insert(
                    stream,
                    Last {
                        succ,
                        err,
                        seen,
                        live: None,
                        batch: 0,
                        rejected: 0,
                    },
                );
            }
            None => {
                self.last.remove(&stream);
            }
        }
    }

    /// Forgets the streams last seen before `before`; returns how many.
    pub fn expire(&mut self, before: i64) -> usize {
        let n = self.last.len();
        self.last.retain(|_, l| l.seen >= before);
        n - self.last.len()
    }

    /// Streams tracked.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no stream is tracked.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The rule: growth is the difference, a counter going down is a reset (the
/// new values count), a first report counts whole.
fn delta_of(old: Option<&Last>, succ: u32, err: u32) -> Delta {
    match old {
        None => Delta {
            succ: u64::from(succ),
            err: u64::from(err),
            reset: false,
        },
        Some(old) if succ < old.succ || err < old.err => Delta {
            succ: u64::from(succ),
            err: u64::from(err),
            reset: true,
        },
        Some(old) => Delta {
            succ: u64::from(succ - old.succ),
            err: u64::from(err - old.err),
            reset: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: StreamKey = (ModKey::new(1, 2), HostAddr::new(0x7f00_0001, 80), 9);

    fn d(succ: u64, err: u64, reset: bool) -> Delta {
        Delta { succ, err, reset }
    }

    #[test]
    fn a_seeded_stream_continues_from_the_persisted_counters() {
        let mut t = DeltaTracker::new();
        t.seed(S, 40, 2, 100);
        assert_eq!(t.observe(S, 45, 2, 101), d(5, 0, false));
        // Seeding never overrides what was already observed.
        t.seed(S, 1, 1, 102);
        assert_eq!(t.observe(S, 46, 2, 103), d(1, 0, false));
        // Seeded streams expire like the others.
        let mut t = DeltaTracker::new();
        t.seed(S, 40, 2, 100);
        assert_eq!(t.expire(200), 1);
        assert_eq!(t.observe(S, 45, 2, 201), d(45, 2, false));
    }

    #[test]
    fn stale_unknown_and_resumed_streams_need_a_reload_unless_unflushed() {
        let mut t = DeltaTracker::new();
        assert!(t.needs_reload(S, 100, 3, 0), "unknown");
        t.seed(S, 40, 2, 90);
        assert!(t.needs_reload(S, 100, 3, 0), "known only from the store");
        t.observe_in(S, 45, 2, 100, 7);
        // Live and in batch 7, not yet flushed: memory is newer.
        assert!(!t.needs_reload(S, 102, 3, 6));
        assert!(
            !t.needs_reload(S, 200, 3, 6),
            "unflushed rows win over staleness"
        );
        assert!(!t.needs_reload(S, 102, 3, 7), "flushed and live");
        assert!(t.needs_reload(S, 103, 3, 7), "flushed and stale");
        // Another reporter counted 10 more meanwhile.
        t.reload(S, Some((55, 2, 150)));
        assert!(t.needs_reload(S, 151, 3, 7));
        assert_eq!(t.observe(S, 56, 2, 151), d(1, 0, false));
        assert!(!t.needs_reload(S, 152, 3, 7));
        // The store has no row: the stream is forgotten, counted in full.
        t.reload(S, None);
        assert_eq!(t.observe(S, 57, 2, 160), d(57, 2, false));
    }

    #[test]
    fn a_rejected_report_keeps_known_counters_and_takes_a_first_or_reset_one() {
        let mut t = DeltaTracker::new();
        t.observe(S, 100, 1, 10);
        assert_eq!(
            t.peek(S, u32::MAX, u32::MAX,),
            Peek {
                delta: d(u64::from(u32::MAX) - 100, u64::from(u32::MAX) - 1, false),
                since: Some(10)
            }
        );
        // Growth: the counters stay; the honest report continues from them.
        assert!(!t.reject(S, u32::MAX, u32::MAX, 11));
        assert_eq!(t.observe(S, 105, 1, 12), d(5, 0, false));
        // RESYNC_AFTER rejections in a row: the reported counters are taken.
        assert!(!t.reject(S, 1 << 30, 1, 13));
        assert!(!t.reject(S, 1 << 30, 1, 14));
        assert!(t.reject(S, 1 << 30, 1, 15));
        assert_eq!(t.observe(S, (1 << 30) + 2, 1, 16), d(2, 0, false));
        // A reset or a first report over the limits: taken at once.
        assert!(t.reject(S, 7, 7, 17));
        assert_eq!(t.observe(S, 8, 7, 18), d(1, 0, false));
        let other = (S.0, S.1, 77);
        assert_eq!(t.peek(other, 5, 0).since, None);
        assert!(t.reject(other, 5_000_000, 0, 19));
        assert_eq!(t.observe(other, 5_000_001, 0, 20), d(1, 0, false));
    }

    #[test]
    fn cumulative_counters_become_differences() {
        let mut t = DeltaTracker::new();
        assert_eq!(t.observe(S, 5, 1, 100), d(5, 1, false));
        assert_eq!(t.observe(S, 9, 1, 101), d(4, 0, false));
        assert_eq!(t.observe(S, 9, 1, 102), d(0, 0, false));
        assert_eq!(t.observe(S, 20, 7, 103), d(11, 6, false));
    }

    #[test]
    fn a_counter_going_down_is_a_reset_and_the_new_values_count() {
        let mut t = DeltaTracker::new();
        t.observe(S, 50, 3, 100);
        // Window reset: succ went down, err went up; both new values count.
        assert_eq!(t.observe(S, 2, 4, 101), d(2, 4, true));
        assert_eq!(t.observe(S, 3, 4, 102), d(1, 0, false));
        // A zero report after a reset is exact.
        assert_eq!(t.observe(S, 0, 0, 103), d(0, 0, true));
        assert_eq!(t.observe(S, 7, 0, 104), d(7, 0, false));
    }

    #[test]
    fn sum_of_deltas_equals_sum_sent_across_resets() {
        // A C++-style sender: cumulative window counters, reset to 0 every
        // few reports, reporting after every call.
        let mut t = DeltaTracker::new();
        let (mut cs, mut ce, mut sent, mut got) = (0u32, 0u32, 0u64, 0u64);
        for i in 0..1000u32 {
            if i % 37 == 0 {
                (cs, ce) = (0, 0);
            }
            if i % 3 == 0 {
                ce += 1;
            } else {
                cs += 1;
            }
            sent += 1;
            let dl = t.observe(S, cs, ce, i64::from(i));
            got += dl.succ + dl.err;
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn streams_are_independent_and_expire() {
        let mut t = DeltaTracker::new();
        let other = (S.0, S.1, 10);
        t.observe(S, 5, 0, 100);
        assert_eq!(t.observe(other, 3, 0, 200), d(3, 0, false));
        assert_eq!(t.expire(150), 1);
        assert_eq!(t.len(), 1);
        // Forgotten: the next report counts whole.
        assert_eq!(t.observe(S, 6, 0, 300), d(6, 0, false));
    }
}
