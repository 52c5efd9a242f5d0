//! What the core tells its driver happened: host state transitions and
//! warnings, queued in a bounded buffer the caller drains.

use std::collections::VecDeque;
use std::time::Instant;

use lars_core::{HostAddr, ModKey};

/// The state of one host of a [`LoadBalance`](crate::LoadBalance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostState {
    /// In the idle list: picked round-robin.
    Idle,
    /// In the overload list: only picked as a probe.
    Overload,
}

/// Why a host changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Idle -> overload: after a failure, `verr / (vsucc + verr) > err_rate`.
    ErrRate,
    /// Idle -> overload: consecutive errors reached `contin_err_limit`.
    ContinErr,
    /// Idle -> overload: at the end of its window the host's real error rate
    /// was `>= window_err_rate`.
    WindowErrRate,
    /// Overload -> idle: after a success, `vsucc / (vsucc + verr) > succ_rate`.
    SuccRate,
    /// Overload -> idle: consecutive successes reached `contin_succ_limit`.
    ContinSucc,
    /// Overload -> idle: the host stayed `overload_timeout` in the overload list.
    OverloadTimeout,
    /// Adaptive, idle -> overload: consecutive failures (slow ones weigh
    /// more) reached the bar set by the other hosts' failure rate.
    FailureStreak,
    /// Adaptive, idle -> overload: the host's recent failures are improbable
    /// given the other hosts' failure rate (`outlier_significance`).
    Outlier,
    /// Adaptive, overload -> idle: a probe succeeded; the host slow-starts.
    ProbeSucceeded,
}

/// The counters of one host, as the rules see them.
///
/// Virtual counters decide transitions; real counters count calls (one
/// failed call is one real error whatever its timecost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Virtual successes (start at `init_succ_cnt` when idle, 0 when overloaded).
    pub vsucc: u32,
    /// Virtual errors (start at 0 when idle, `init_err_cnt` when overloaded);
    /// a slow failure adds `max(1, timecost / timecost_unit_ms)`.
    pub verr: u32,
    /// Real successes in the current window / overload period.
    pub rsucc: u32,
    /// Real errors in the current window / overload period.
    pub rerr: u32,
    /// Consecutive successful calls.
    pub contin_succ: u32,
    /// Consecutive failed calls.
    pub contin_err: u32,
}

/// One host changing state, with the counters that decided it (taken just
/// before they were reset for the new state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The service.
    pub key: ModKey,
    /// The host.
    pub host: HostAddr,
    /// State before.
    pub from: HostState,
    /// State after.
    pub to: HostState,
    /// The rule that fired.
    pub reason: Reason,
    /// The `now` of the call that made the change.
    pub at: Instant,
    /// The counters that decided it.
    pub counters: Counters,
}

/// Something the driver may want to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LbEvent {
    /// A host changed state.
    Transition(Transition),
    /// The dns answered an empty route and empty-route protection kept the
    /// last `hosts` hosts of `key` (a warning).
    EmptyRouteKept {
        /// The service.
        key: ModKey,
        /// How many hosts were kept.
        hosts: usize,
    },
    /// The dns answered an empty route and the key was removed (protection
    /// off, the original's behaviour).
    KeyRemoved {
        /// The service.
        key: ModKey,
    },
    /// The dns confirmed that `key` has no hosts (deleted in the store): its
    /// `hosts` hosts left, whatever empty-route protection says.
    RouteDeleted {
        /// The service.
        key: ModKey,
        /// How many hosts left.
        hosts: usize,
    },
}

/// Default capacity of an event queue.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// A bounded FIFO of events: when full, the oldest event is dropped and
/// counted; capacity 0 turns events off (nothing is queued or counted).
#[derive(Debug)]
pub(crate) struct EventQueue {
    buf: VecDeque<LbEvent>,
    cap: usize,
    dropped: u64,
}

impl EventQueue {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            cap,
            dropped: 0,
        }
    }

    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.cap != 0
    }

    pub(crate) fn push(&mut self, ev: LbEvent) {
        if self.cap == 0 {
            return;
        }
        if self.buf.len() >= self.cap {
            self.buf.pop_front();
            self.dropped += 1;
        }
        self.buf.push_back(ev);
    }

    pub(crate) fn extend(&mut self, evs: impl IntoIterator<Item = LbEvent>) {
        for ev in evs {
            self.push(ev);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<LbEvent> {
        self.buf.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, LbEvent> {
        self.buf.drain(..)
    }

    pub(crate) fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
        while self.buf.len() > cap {
            self.buf.pop_front();
            self.dropped += 1;
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let mut q = EventQueue::new(2);
        for i in 0..5 {
            q.push(LbEvent::KeyRemoved {
                key: ModKey::new(i, 0),
            });
        }
        assert_eq!(q.dropped(), 3);
        assert_eq!(
            q.pop(),
            Some(LbEvent::KeyRemoved {
                key: ModKey::new(3, 0)
            })
        );
        let mut off = EventQueue::new(0);
        off.push(LbEvent::KeyRemoved {
            key: ModKey::new(1, 1),
        });
        assert!(off.is_empty());
        assert_eq!(off.dropped(), 0);
    }
}
