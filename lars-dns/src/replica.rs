//! Reading from a replica (`[store] read_url`): which store the reloader
//! reads, what it knows of the replica's lag, and the rules for falling
//! back to the primary and returning. Pure: every call takes `now`.
//!
//! The rules (docs/dns.md):
//! - A version older than the one served is never loaded (a replica that
//!   lags, or one that fell behind after a failover): counted in
//!   `stale_reads`, logged at most every [`STALE_LOG_EVERY`].
//! - The replica failing for `[store] read_fallback_after` (or staying
//!   behind the primary's version for `[store] read_max_lag`) turns the
//!   reads to the primary (`fallbacks`); 0 disables either rule.
//! - On the primary, the replica is tried again every
//!   `read_fallback_after` (at least [`MIN_PROBE_EVERY`]); the reads return
//!   to it once it answers with at least the version served.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The most primary versions kept while the replica has not reached them
/// (beyond, newer ones are not recorded: the lag is still measured from the
/// oldest).
const MAX_UNREACHED: usize = 64;

/// Stale reads are logged at most this often (each line gives the count).
pub(crate) const STALE_LOG_EVERY: Duration = Duration::from_secs(10);

/// The shortest wait between two tries of a replica while on the primary.
pub(crate) const MIN_PROBE_EVERY: Duration = Duration::from_millis(100);

/// Which store the reloader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `[store] url`.
    Primary,
    /// `[store] read_url`.
    Replica,
}

/// The replica as the reloader sees it. Cloned into the shared state after
/// each round for `/status`.
#[derive(Debug, Clone)]
pub(crate) struct ReadState {
    /// The replica's URL, password redacted.
    pub(crate) shown_url: String,
    fallback_after: Duration,
    max_lag: Duration,
    pub(crate) source: Source,
    /// Why the reads are on the primary (while they are).
    pub(crate) fallback_reason: Option<String>,
    failing_since: Option<Instant>,
    pub(crate) last_ok: Option<Instant>,
    last_probe: Option<Instant>,
    /// The replica's `RouteVersion` at its last answer.
    pub(crate) replica_version: Option<u64>,
    /// The primary's `RouteVersion` at its last check.
    pub(crate) primary_version: Option<u64>,
    primary_checked: Option<Instant>,
    /// The primary's versions the replica has not shown yet, with when the
    /// primary was seen at each (oldest first, at most [`MAX_UNREACHED`]):
    /// the replica is behind since the first one.
    unreached: VecDeque<(Instant, u64)>,
    pub(crate) stale_reads: u64,
    pub(crate) fallbacks: u64,
    stale_logged: Option<Instant>,
    stale_unlogged: u64,
}

impl ReadState {
    pub(crate) fn new(shown_url: String, fallback_after: Duration, max_lag: Duration) -> Self {
        Self {
            shown_url,
            fallback_after,
            max_lag,
            source: Source::Replica,
            fallback_reason: None,
            failing_since: None,
            last_ok: None,
            last_probe: None,
            replica_version: None,
            primary_version: None,
            primary_checked: None,
            unreached: VecDeque::new(),
            stale_reads: 0,
            fallbacks: 0,
            stale_logged: None,
            stale_unlogged: 0,
        }
    }

    /// The replica answered `version`.
    pub(crate) fn replica_ok(&mut self, now: Instant, version: u64) {
        self.failing_since = None;
        self.last_ok = Some(now);
        self.replica_version = Some(version);
        self.update_behind();
    }

    /// A read of the replica failed. Returns whether the reads should fall
    /// back to the primary now.
    pub(crate) fn replica_failed(&mut self, now: Instant) -> bool {
        let since = *self.failing_since.get_or_insert(now);
        !self.fallback_after.is_zero()
            && now.saturating_duration_since(since) >= self.fallback_after
    }

    /// Whether the primary's version is due for a lag check (every
    /// `every`).
    pub(crate) fn primary_check_due(&self, now: Instant, every: Duration) -> bool {
        self.primary_checked
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
    }

    /// The primary answered `version`.
    pub(crate) fn primary_seen(&mut self, now: Instant, version: u64) {
        self.primary_version = Some(version);
        self.primary_checked = Some(now);
        // Gone back (a restored primary): start over.
        if self
            .unreached
            .back()
            .is_some_and(|&(_, last)| version < last)
        {
            self.unreached.clear();
        }
        let newer = self
            .unreached
            .back()
            .is_none_or(|&(_, last)| version > last);
        if newer && self.unreached.len() < MAX_UNREACHED {
            self.unreached.push_back((now, version));
        }
        self.update_behind();
    }

    /// Drops the primary's versions the replica has reached.
    fn update_behind(&mut self) {
        let reached = self.replica_version.unwrap_or(0);
        while self.unreached.front().is_some_and(|&(_, p)| p <= reached) {
            self.unreached.pop_front();
        }
    }

    /// Since when the replica has been behind: when the primary was first
    /// seen at a version the replica has not shown yet. A replica that
    /// follows with a steady lag `d` is behind for about `d` at a time,
    /// however often the primary changes.
    pub(crate) fn behind_since(&self) -> Option<Instant> {
        self.unreached.front().map(|&(t, _)| t)
    }

    /// Whether the replica has stayed behind the primary longer than
    /// `[store] read_max_lag`.
    pub(crate) fn too_far_behind(&self, now: Instant) -> bool {
        !self.max_lag.is_zero()
            && self
                .behind_since()
                .is_some_and(|s| now.saturating_duration_since(s) >= self.max_lag)
    }

    /// Turns the reads to the primary.
    pub(crate) fn fall_back(&mut self, now: Instant, reason: String) {
        self.source = Source::Primary;
        self.fallbacks += 1;
        self.last_probe = Some(now);
        tracing::warn!(
            replica = %self.shown_url,
            "reading the routes from the primary: {reason}; the replica is tried again every \
             {:.1} s",
            self.probe_every().as_secs_f64()
        );
        self.fallback_reason = Some(reason);
    }

    fn probe_every(&self) -> Duration {
        self.fallback_after.max(MIN_PROBE_EVERY)
    }

    /// While on the primary: whether the replica is due for a try.
    pub(crate) fn probe_due(&mut self, now: Instant) -> bool {
        if self.source != Source::Primary {
            return false;
        }
        let due = self
            .last_probe
            .is_none_or(|t| now.saturating_duration_since(t) >= self.probe_every());
        if due {
            self.last_probe = Some(now);
        }
        due
    }

    /// The replica answered a probe with at least the version served: the
    /// reads return to it.
    pub(crate) fn back_to_replica(&mut self) {
        if self.source == Source::Primary {
            tracing::info!(
                replica = %self.shown_url,
                version = self.replica_version.unwrap_or(0),
                "the replica answers and has the served version: reading the routes from it again"
            );
        }
        self.source = Source::Replica;
        self.fallback_reason = None;
    }

    /// A store answered `version`, older than `served`: not loaded.
    pub(crate) fn stale(&mut self, now: Instant, source: Source, version: u64, served: u64) {
        self.stale_reads += 1;
        self.stale_unlogged += 1;
        let due = self
            .stale_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= STALE_LOG_EVERY);
        if due {
            tracing::warn!(
                replica = %self.shown_url,
                ?source,
                version,
                served,
                reads = self.stale_unlogged,
                "the store answered a route version older than the one served (replica lag); \
                 ignored, the served table stays (counted in stale_reads)"
            );
            self.stale_logged = Some(now);
            self.stale_unlogged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn failures_fall_back_only_after_the_bound() {
        let t0 = Instant::now();
        let mut r = ReadState::new("r".into(), s(10), s(0));
        assert!(!r.replica_failed(t0));
        assert!(!r.replica_failed(t0 + s(9)));
        assert!(r.replica_failed(t0 + s(10)));
        // An answer in between restarts the clock.
        r.replica_ok(t0 + s(11), 5);
        assert!(!r.replica_failed(t0 + s(12)));
        assert!(!r.replica_failed(t0 + s(21)));
        assert!(r.replica_failed(t0 + s(22)));
        // 0: never.
        let mut never = ReadState::new("r".into(), s(0), s(0));
        assert!(!never.replica_failed(t0));
        assert!(!never.replica_failed(t0 + s(100_000)));
    }

    #[test]
    fn probes_are_spaced_and_only_on_the_primary() {
        let t0 = Instant::now();
        let mut r = ReadState::new("r".into(), s(10), s(0));
        assert!(!r.probe_due(t0), "on the replica nothing is probed");
        r.fall_back(t0, "down".into());
        assert_eq!((r.source, r.fallbacks), (Source::Primary, 1));
        assert!(!r.probe_due(t0 + s(9)));
        assert!(r.probe_due(t0 + s(10)));
        assert!(!r.probe_due(t0 + s(11)));
        r.back_to_replica();
        assert_eq!(r.source, Source::Replica);
        assert!(r.fallback_reason.is_none());
    }

    #[test]
    fn lag_is_measured_against_the_primarys_last_version() {
        let t0 = Instant::now();
        let mut r = ReadState::new("r".into(), s(10), s(60));
        assert!(r.primary_check_due(t0, s(10)));
        r.primary_seen(t0, 7);
        assert!(!r.primary_check_due(t0 + s(5), s(10)));
        r.replica_ok(t0 + s(1), 5);
        assert_eq!(r.behind_since(), Some(t0), "behind since the primary had 7");
        assert!(!r.too_far_behind(t0 + s(59)));
        assert!(r.too_far_behind(t0 + s(60)));
        r.replica_ok(t0 + s(62), 7);
        assert_eq!(r.behind_since(), None);
        assert!(!r.too_far_behind(t0 + s(200)));
        // A steady lag of 2 s under edits every second, checked every
        // second: behind for about 2 s at a time, never for read_max_lag.
        let t1 = t0 + s(300);
        for i in 0..200u64 {
            let now = t1 + s(i);
            r.primary_seen(now, 100 + i);
            r.replica_ok(now, (100 + i).saturating_sub(2));
            assert!(!r.too_far_behind(now), "at {i}");
            let since = if i == 0 { now } else { now - s(1) };
            assert_eq!(r.behind_since(), Some(since), "at {i}");
        }
        // A primary gone back starts over.
        r.primary_seen(t1 + s(500), 50);
        r.replica_ok(t1 + s(500), 50);
        assert_eq!(r.behind_since(), None);
        // 0: never.
        let mut never = ReadState::new("r".into(), s(10), s(0));
        never.primary_seen(t0, 9);
        never.replica_ok(t0, 1);
        assert!(!never.too_far_behind(t0 + s(100_000)));
    }

    #[test]
    fn stale_reads_are_all_counted() {
        let t0 = Instant::now();
        let mut r = ReadState::new("r".into(), s(10), s(0));
        for i in 0..5 {
            r.stale(t0 + Duration::from_millis(i), Source::Replica, 3, 4);
        }
        assert_eq!(r.stale_reads, 5);
        assert_eq!(
            r.stale_unlogged, 4,
            "one line for the first, the rest later"
        );
    }
}
