//! The console's counters ([`WebStats`]): what its limits turned away. Read
//! with [`WebHandle::stats`](crate::WebHandle::stats) or `GET /api/stats`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A snapshot of the console's counters (totals since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WebStats {
    /// Logins that succeeded.
    pub logins_ok: u64,
    /// Logins with an unknown name or a wrong password.
    pub logins_failed: u64,
    /// Logins refused without a check: the (name, address) pair is in its
    /// backoff (429 `throttled`).
    pub logins_throttled: u64,
    /// Logins refused because every password check was taken for longer
    /// than `password_check_wait` (503 `busy`).
    pub logins_busy: u64,
    /// Requests refused for a `Host` header the console does not answer to
    /// (421 `host`).
    pub hosts_rejected: u64,
    /// (name, address) pairs the login throttle remembers now.
    pub throttle_entries: u64,
    /// Live sessions now.
    pub sessions: u64,
}

/// The counters behind [`WebStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) logins_ok: AtomicU64,
    pub(crate) logins_failed: AtomicU64,
    pub(crate) logins_throttled: AtomicU64,
    pub(crate) logins_busy: AtomicU64,
    pub(crate) hosts_rejected: AtomicU64,
}

impl Counters {
    /// Adds one; returns the new total.
    pub(crate) fn bump(c: &AtomicU64) -> u64 {
        c.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Lets a warning through at most once per `every`, so a flood of refusals
/// is one log line (with the running total) and not one per request.
#[derive(Debug)]
pub(crate) struct LogGate {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl LogGate {
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether to log now.
    pub(crate) fn open(&self, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gate_opens_once_per_period() {
        let g = LogGate::new(Duration::from_secs(10));
        let t = Instant::now();
        assert!(g.open(t));
        assert!(!g.open(t + Duration::from_secs(9)));
        assert!(g.open(t + Duration::from_secs(10)));
    }
}
