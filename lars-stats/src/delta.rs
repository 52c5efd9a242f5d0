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
}

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
        let new = Last {
            succ,
            err,
            seen: now,
        };
        match self.last.insert(stream, new) {
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

    /// Sets the last counters of `stream` without yielding a delta: used at
    /// start to resume from the counters already persisted, so a restarted
    /// reporter does not count a cumulative sender's history twice. A stream
    /// already observed keeps its newer counters.
    pub fn seed(&mut self, stream: StreamKey, succ: u32, err: u32, seen: i64) {
        self.last.entry(stream).or_insert(Last { succ, err, seen });
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
