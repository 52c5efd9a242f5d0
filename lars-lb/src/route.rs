//! [`RouteLb`]: many [`LoadBalance`]s, one per key, with the original's
//! NEW / PULLING route status, pull requests and statistics batches.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::config::LoadBalanceConfig;
use hashbrown::{HashMap, HashSet};
use lars_core::{HostAddr, ModKey};

use crate::event::{DEFAULT_EVENT_CAPACITY, EventQueue, HostState, LbEvent};
use crate::lb::{Choice, HostReport, LoadBalance, Outcome, UpdateSummary};

/// The route status of a key (the original's `load_balance::STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteStatus {
    /// Not being pulled: a pull may be requested.
    New,
    /// A pull was requested and no answer arrived yet: no second pull.
    Pulling,
}

/// What [`RouteLb::apply_route`] did with a dns answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteApplied {
    /// The key's hosts were updated.
    Updated(UpdateSummary),
    /// The answer was empty and empty-route protection kept the last hosts
    /// (an [`LbEvent::EmptyRouteKept`] warning was queued).
    KeptEmpty,
    /// The answer was empty and the key was removed (protection off; an
    /// [`LbEvent::KeyRemoved`] was queued).
    Removed,
    /// The key is not in use here (never asked for, or removed): ignored.
    Ignored,
}

/// One statistics batch: the calls of one key since the previous batch,
/// ready to become a `ReportStatusRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    /// The service.
    pub key: ModKey,
    /// Per-host counts since the previous batch.
    pub results: Vec<HostReport>,
}

/// Bounds on the keys a [`RouteLb`] holds without hosts: what stops a
/// spray of unknown keys from growing the agent (and its dns subscriptions)
/// without end. The default is unbounded, as the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// Keys without hosts (asked for, unknown to the dns or not answered
    /// yet) held at once; beyond it a new unknown key answers
    /// [`Choice::NoExist`] without being created or pulled (counted in
    /// [`RouteLb::refused_keys`]).
    pub max_empty_keys: usize,
    /// A key without hosts that no application used (get_host, get_route,
    /// report) for this long is forgotten (counted in
    /// [`RouteLb::expired_keys`], handed out by
    /// [`RouteLb::take_forgotten`]); `None` keeps them forever.
    pub empty_key_expiry: Option<Duration>,
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            max_empty_keys: usize::MAX,
            empty_key_expiry: None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    lb: LoadBalance,
    status: RouteStatus,
    /// When the dns last answered for this key; `None` = never (or restored
    /// from a snapshot), which makes the next use pull.
    updated: Option<Instant>,
    /// When an application last used the key (or it was created).
    used: Instant,
}

/// The load balancers of many keys, as the agent needs them.
///
/// An unknown key answers [`Choice::NoExist`] and queues a pull request
/// ([`poll_pull`](Self::poll_pull)); when the dns answers, the driver calls
/// [`apply_route`](Self::apply_route). A used key whose routes are older
/// than `update_timeout` is pulled again, never twice while
/// [`RouteStatus::Pulling`]. Pulls are triggered by use (`get_host`,
/// `get_route`), as in the original; [`next_deadline`](Self::next_deadline)
/// covers the hosts' timers.
///
/// Keys without hosts can be bounded ([`set_key_limits`](Self::set_key_limits)):
/// a cap on how many are held (a new unknown key beyond it answers
/// `NoExist` without being created or pulled) and an expiry after which an
/// unused one is forgotten; forgotten keys are drained with
/// [`take_forgotten`](Self::take_forgotten) (the agent unsubscribes them at
/// the dns). Keys with hosts are never touched.
///
/// ```
/// use std::time::Instant;
/// use lars_lb::{Choice, LbConfig, ModKey, Outcome, RouteLb};
///
/// let now = Instant::now();
/// let key = ModKey::new(1, 1);
/// let host = "10.0.0.1:80".parse().unwrap();
/// let mut routes = RouteLb::new(LbConfig::default());
/// assert_eq!(routes.get_host(key, now), Choice::NoExist);
/// assert_eq!(routes.poll_pull(), Some(key)); // send a GetRouteRequest
/// routes.apply_route(key, &[host], now); // the GetRouteResponse
/// assert_eq!(routes.get_host(key, now), Choice::Idle(host));
/// routes.report(key, host, Outcome::Success, now);
/// let batch = routes.take_report_batches();
/// assert_eq!((batch[0].key, batch[0].results[0].succ), (key, 1));
/// ```
#[derive(Debug)]
pub struct RouteLb {
    cfg: LoadBalanceConfig,
    map: HashMap<ModKey, Entry>,
    pulls: Vec<ModKey>,
    timers: BinaryHeap<Reverse<(Instant, ModKey)>>,
    events: EventQueue,
    limits: KeyLimits,
    /// The keys in `map` without hosts (what the limits bound and the
    /// sweep scans).
    empty: HashSet<ModKey>,
    /// When the next expiry sweep of keys without hosts is due.
    sweep_at: Option<Instant>,
    /// Keys forgotten (expired) since the last `take_forgotten`.
    forgotten: Vec<ModKey>,
    refused: u64,
    expired: u64,
}

impl RouteLb {
    /// An empty set of routes; every key's balancer uses `config`.
    pub fn new(config: LoadBalanceConfig) -> Self {
        Self {
            cfg: config,
            map: HashMap::new(),
            pulls: Vec::new(),
            timers: BinaryHeap::new(),
            events: EventQueue::new(DEFAULT_EVENT_CAPACITY),
            limits: KeyLimits::default(),
            empty: HashSet::new(),
            sweep_at: None,
            forgotten: Vec::new(),
            refused: 0,
            expired: 0,
        }
    }

    /// Bounds the keys without hosts (see [`KeyLimits`]); keys already held
    /// stay (an expiry applies from the next use or creation of a key).
    pub fn set_key_limits(&mut self, limits: KeyLimits) {
        self.limits = limits;
        if limits.empty_key_expiry.is_none() {
            self.sweep_at = None;
        }
    }

    /// The bounds in use.
    pub fn key_limits(&self) -> KeyLimits {
        self.limits
    }

    /// The configuration in use.
    pub fn config(&self) -> &LoadBalanceConfig {
        &self.cfg
    }

    /// Picks a host for `key` (see [`LoadBalance::choice_one_host`]).
    ///
    /// An unknown key is created in [`RouteStatus::Pulling`], answers
    /// [`Choice::NoExist`] and queues a pull; a known key without hosts
    /// answers `NoExist`. A [`RouteStatus::New`] key whose routes are older
    /// than `update_timeout` (or never came from the dns) queues a pull.
    pub fn get_host(&mut self, key: ModKey, now: Instant) -> Choice {
        let Some(e) = self.map.get_mut(&key) else {
            self.create_pulling(key, now);
            return Choice::NoExist;
        };
        e.used = now;
        let before = e.lb.next_deadline();
        let choice = e.lb.choice_one_host(now);
        let stale = e.status == RouteStatus::New
            && e.updated
                .is_none_or(|u| now.saturating_duration_since(u) > self.cfg.update_timeout);
        if stale {
            e.status = RouteStatus::Pulling;
            self.pulls.push(key);
        }
        if e.lb.next_deadline() != before {
            push_timer(&mut self.timers, key, e.lb.next_deadline());
        }
        if !e.lb.events_mut().is_empty() {
            self.events.extend(e.lb.events_mut().drain());
        }
        choice
    }

    /// All current hosts of `key`, or `None` (and a pull, as for
    /// [`get_host`](Self::get_host)) when the key is unknown or empty.
    pub fn get_route(&mut self, key: ModKey, now: Instant) -> Option<Vec<HostAddr>> {
        let Some(e) = self.map.get_mut(&key) else {
            self.create_pulling(key, now);
            return None;
        };
        e.used = now;
        let stale = e.status == RouteStatus::New
            && e.updated
                .is_none_or(|u| now.saturating_duration_since(u) > self.cfg.update_timeout);
        if stale {
            e.status = RouteStatus::Pulling;
            self.pulls.push(key);
        }
        if e.lb.is_empty() {
            return None;
        }
        let mut hosts: Vec<HostAddr> = e.lb.hosts().collect();
        hosts.sort_unstable();
        Some(hosts)
    }

    /// Records a call result (see [`LoadBalance::report`]); `None` when the
    /// key or host is unknown (ignored).
    pub fn report(
        &mut self,
        key: ModKey,
        host: HostAddr,
        outcome: Outcome,
        now: Instant,
    ) -> Option<HostState> {
        let e = self.map.get_mut(&key)?;
        e.used = now;
        let before = e.lb.next_deadline();
        let state = e.lb.report(host, outcome, now);
        if e.lb.next_deadline() != before {
            push_timer(&mut self.timers, key, e.lb.next_deadline());
        }
        if !e.lb.events_mut().is_empty() {
            self.events.extend(e.lb.events_mut().drain());
        }
        state
    }

    /// Applies a dns answer for `key`: updates its hosts (see
    /// [`LoadBalance::update`]), marks it [`RouteStatus::New`] and fresh.
    ///
    /// An empty answer for a key that has hosts keeps them when
    /// `empty_route_protection` is on (a warning event), or removes the key
    /// (the original). An empty answer for a key without hosts leaves it
    /// empty and fresh, so it is pulled again only after `update_timeout`.
    /// A key not in use here is ignored (the original).
    pub fn apply_route(&mut self, key: ModKey, hosts: &[HostAddr], now: Instant) -> RouteApplied {
        let Some(e) = self.map.get_mut(&key) else {
            return RouteApplied::Ignored;
        };
        e.status = RouteStatus::New;
        e.updated = Some(now);
        if hosts.is_empty() && !e.lb.is_empty() {
            if self.cfg.empty_route_protection {
                let n = e.lb.len();
                self.events.push(LbEvent::EmptyRouteKept { key, hosts: n });
                return RouteApplied::KeptEmpty;
            }
            self.remove(key);
            self.forgotten.push(key);
            self.events.push(LbEvent::KeyRemoved { key });
            return RouteApplied::Removed;
        }
        let was_empty = e.lb.is_empty();
        let before = e.lb.next_deadline();
        let sum = e.lb.update(hosts, now);
        if e.lb.next_deadline() != before {
            push_timer(&mut self.timers, key, e.lb.next_deadline());
        }
        let is_empty = e.lb.is_empty();
        self.recount(key, was_empty, is_empty, now);
        RouteApplied::Updated(sum)
    }

    /// Applies a dns answer for `key` that says its host list is empty *on
    /// purpose* (a lars dns's `confirmed_empty`: the store has no row for
    /// it): unlike [`apply_route`](Self::apply_route) with an empty list,
    /// empty-route protection does not apply, because this is a deliberate
    /// delete, not a failure. Every host leaves (an [`LbEvent::RouteDeleted`]
    /// when there were some); the key stays, without hosts, fresh, and
    /// expires like any key without hosts. A key not in use is ignored.
    pub fn apply_confirmed_empty(&mut self, key: ModKey, now: Instant) -> RouteApplied {
        let Some(e) = self.map.get_mut(&key) else {
            return RouteApplied::Ignored;
        };
        e.status = RouteStatus::New;
        e.updated = Some(now);
        let hosts = e.lb.len();
        if hosts == 0 {
            return RouteApplied::Updated(UpdateSummary::default());
        }
        let used = e.used;
        let before = e.lb.next_deadline();
        let sum = e.lb.update(&[], now);
        if e.lb.next_deadline() != before {
            push_timer(&mut self.timers, key, e.lb.next_deadline());
        }
        self.events.push(LbEvent::RouteDeleted { key, hosts });
        self.recount(key, false, true, used);
        RouteApplied::Updated(sum)
    }

    /// Installs `hosts` for `key` as if restored from a snapshot: the key is
    /// created if needed, in [`RouteStatus::New`] with no dns answer yet, so
    /// its first use also pulls. Empty `hosts` are ignored.
    pub fn restore_route(&mut self, key: ModKey, hosts: &[HostAddr], now: Instant) {
        if hosts.is_empty() {
            return;
        }
        let cfg = self.cfg.clone();
        let mut created = false;
        let e = self.map.entry(key).or_insert_with(|| {
            created = true;
            Entry {
                lb: LoadBalance::new(key, cfg),
                status: RouteStatus::New,
                updated: None,
                used: now,
            }
        });
        let was_empty = !created && e.lb.is_empty();
        let before = e.lb.next_deadline();
        e.lb.update(hosts, now);
        if e.lb.next_deadline() != before {
            push_timer(&mut self.timers, key, e.lb.next_deadline());
        }
        self.recount(key, was_empty, false, now);
    }

    /// Forgets `key` entirely; true when it was known.
    pub fn remove(&mut self, key: ModKey) -> bool {
        // Heap entries of a removed key are skipped when they come up.
        match self.map.remove(&key) {
            Some(e) => {
                if e.lb.is_empty() {
                    self.empty.remove(&key);
                }
                true
            }
            None => false,
        }
    }

    /// Keys forgotten since the last call: expired keys without hosts, and
    /// keys removed by an empty answer (protection off). The driver tells the
    /// dns it no longer needs their pushes.
    pub fn take_forgotten(&mut self) -> Vec<ModKey> {
        std::mem::take(&mut self.forgotten)
    }

    /// Keys without hosts held now.
    pub fn empty_keys(&self) -> usize {
        self.empty.len()
    }

    /// New unknown keys refused because [`KeyLimits::max_empty_keys`] keys
    /// without hosts were held.
    pub fn refused_keys(&self) -> u64 {
        self.refused
    }

    /// Keys without hosts forgotten after [`KeyLimits::empty_key_expiry`]
    /// without use.
    pub fn expired_keys(&self) -> u64 {
        self.expired
    }

    /// The next key to pull from the dns (send a `GetRouteRequest`).
    pub fn poll_pull(&mut self) -> Option<ModKey> {
        if self.pulls.is_empty() {
            None
        } else {
            Some(self.pulls.remove(0))
        }
    }

    /// All queued pulls, oldest first.
    pub fn take_pulls(&mut self) -> Vec<ModKey> {
        std::mem::take(&mut self.pulls)
    }

    /// After the dns connection is (re-)established: every
    /// [`RouteStatus::Pulling`] key goes back to [`RouteStatus::New`] (its
    /// request may be lost), and queued pulls are dropped; the next use pulls
    /// again. To re-pull at once, send one request per
    /// [`keys`](Self::keys).
    pub fn reset_pulling(&mut self) {
        for e in self.map.values_mut() {
            if e.status == RouteStatus::Pulling {
                e.status = RouteStatus::New;
                e.updated = None;
            }
        }
        self.pulls.clear();
    }

    /// The status of `key`, if known.
    pub fn status(&self, key: ModKey) -> Option<RouteStatus> {
        self.map.get(&key).map(|e| e.status)
    }

    /// The balancer of `key`, if known.
    pub fn lb(&self, key: ModKey) -> Option<&LoadBalance> {
        self.map.get(&key).map(|e| &e.lb)
    }

    /// Every key in use (known here, with or without hosts).
    pub fn keys(&self) -> impl Iterator<Item = ModKey> + '_ {
        self.map.keys().copied()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every key with hosts and its hosts (sorted), for a snapshot.
    pub fn routes(&self) -> impl Iterator<Item = (ModKey, Vec<HostAddr>)> + '_ {
        self.map
            .iter()
            .filter(|(_, e)| !e.lb.is_empty())
            .map(|(k, e)| {
                let mut hosts: Vec<HostAddr> = e.lb.hosts().collect();
                hosts.sort_unstable();
                (*k, hosts)
            })
    }

    /// One batch per key with calls or state changes since the previous
    /// batch: per-host successes and errors in the interval and the current
    /// overload flag. O(keys + reported hosts).
    pub fn take_report_batches(&mut self) -> Vec<KeyReport> {
        let mut out = Vec::new();
        for (key, e) in &mut self.map {
            if e.lb.has_report() {
                let results = e.lb.take_report();
                if !results.is_empty() {
                    out.push(KeyReport { key: *key, results });
                }
            }
        }
        out.sort_unstable_by_key(|r| r.key);
        out
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work (may be
    /// early after hosts changed, never late). O(1).
    pub fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((d, _))| *d);
        match (timer, self.sweep_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies every key's timers due at `now` (see
    /// [`LoadBalance::handle_timeout`]). O(due keys * log keys).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.sweep_at.is_some_and(|d| d <= now) {
            self.sweep(now);
        }
        // Each due key runs once per call: a deadline it sets at or before
        // `now` (a zero window an embedder configured) waits for the next
        // call instead of looping here forever.
        let mut rearmed = Vec::new();
        while let Some(&Reverse((d, key))) = self.timers.peek() {
            if d > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.map.get_mut(&key) else {
                continue;
            };
            // Lazy deletion: only the entry matching the key's current
            // deadline does work; others are stale.
            if e.lb.next_deadline() != Some(d) {
                continue;
            }
            e.lb.handle_timeout(now);
            rearmed.push((key, e.lb.next_deadline()));
            if !e.lb.events_mut().is_empty() {
                self.events.extend(e.lb.events_mut().drain());
            }
        }
        for (key, deadline) in rearmed {
            push_timer(&mut self.timers, key, deadline);
        }
    }

    /// The next queued event.
    pub fn poll_event(&mut self) -> Option<LbEvent> {
        self.events.pop()
    }

    /// All queued events, oldest first.
    pub fn drain_events(&mut self) -> impl Iterator<Item = LbEvent> + '_ {
        self.events.drain()
    }

    /// Sets how many events are kept before the oldest are dropped (default
    /// 1024); 0 turns events off (also inside every balancer).
    pub fn set_event_capacity(&mut self, cap: usize) {
        self.events.set_capacity(cap);
        for e in self.map.values_mut() {
            e.lb.set_event_capacity(cap);
        }
    }

    /// Events dropped because nobody drained them.
    pub fn dropped_events(&self) -> u64 {
        self.events.dropped()
    }

    /// Creates an unknown key, PULLING, and queues its pull; refused (and
    /// counted) when the keys without hosts are at their limit.
    fn create_pulling(&mut self, key: ModKey, now: Instant) {
        if self.empty.len() >= self.limits.max_empty_keys {
            self.refused += 1;
            return;
        }
        let mut lb = LoadBalance::new(key, self.cfg.clone());
        if !self.events.enabled() {
            lb.set_event_capacity(0);
        }
        self.map.insert(
            key,
            Entry {
                lb,
                status: RouteStatus::Pulling,
                updated: None,
                used: now,
            },
        );
        self.pulls.push(key);
        self.recount(key, false, true, now);
    }

    /// Keeps the set of keys without hosts, and the expiry sweep armed
    /// while there are some (a key that became empty, last used at `used`,
    /// is due at `used + expiry` at the earliest).
    fn recount(&mut self, key: ModKey, was_empty: bool, is_empty: bool, used: Instant) {
        match (was_empty, is_empty) {
            (false, true) => {
                self.empty.insert(key);
                if let Some(expiry) = self.limits.empty_key_expiry {
                    let due = used.checked_add(expiry).unwrap_or(used);
                    self.sweep_at = Some(self.sweep_at.map_or(due, |s| s.min(due)));
                }
            }
            (true, false) => {
                self.empty.remove(&key);
            }
            _ => {}
        }
    }

    /// Forgets the keys without hosts unused for the expiry, and schedules
    /// the next sweep when the earliest of the others falls due, but no
    /// sooner than 1/16 of the expiry from now: a key goes at most that
    /// late, and keys used at scattered times cost one sweep per
    /// 1/16 expiry, not one each. O(keys without hosts).
    fn sweep(&mut self, now: Instant) {
        self.sweep_at = None;
        let Some(expiry) = self.limits.empty_key_expiry else {
            return;
        };
        let mut next: Option<Instant> = None;
        let mut gone = Vec::new();
        for key in &self.empty {
            let Some(e) = self.map.get(key) else {
                continue;
            };
            let due = e.used.checked_add(expiry).unwrap_or(e.used);
            if due <= now {
                gone.push(*key);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        gone.sort_unstable();
        for key in gone {
            self.remove(key);
            self.pulls.retain(|k| *k != key);
            self.expired += 1;
            self.forgotten.push(key);
        }
        let soonest = now.checked_add(expiry / 16).unwrap_or(now);
        self.sweep_at = next.map(|n| n.max(soonest));
    }
}

fn push_timer(heap: &mut BinaryHeap<Reverse<(Instant, ModKey)>>, key: ModKey, d: Option<Instant>) {
    if let Some(d) = d {
        heap.push(Reverse((d, key)));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn zero_windows_end_each_timeout_call() {
        // Found by the lb_ops fuzz target: with a zero idle window every
        // timer was due again at once and handle_timeout never returned.
        #[allow(clippy::disallowed_methods)] // a base Instant for the test
        let t0 = Instant::now();
        let cfg = LoadBalanceConfig {
            idle_timeout: Duration::ZERO,
            ..LoadBalanceConfig::classic()
        };
        let mut r = RouteLb::new(cfg);
        let hosts: Vec<HostAddr> = (1..=3).map(|i| HostAddr::new(i, 80)).collect();
        for m in 1..=2 {
            let key = ModKey::new(m, 1);
            r.get_host(key, t0);
            r.apply_route(key, &hosts, t0);
        }
        for step in 0..3 {
            let now = t0 + Duration::from_millis(step);
            if r.next_deadline().is_some_and(|d| d <= now) {
                r.handle_timeout(now);
            }
            assert!(
                r.next_deadline()
                    .is_some_and(|d| d <= now + Duration::from_millis(1))
            );
        }
    }

    #[test]
    fn stale_timer_entries_are_skipped() {
        #[allow(clippy::disallowed_methods)] // a base Instant for the test
        let now = Instant::now();
        let key = ModKey::new(1, 1);
        let h = HostAddr::new(1, 1);
        let mut r = RouteLb::new(LoadBalanceConfig::classic());
        r.get_host(key, now);
        r.apply_route(key, &[h], now);
        // The window ends at 15 s; a report at 10 s changes nothing, one at
        // 15 s restarts the window, leaving the 15 s entry stale.
        r.report(key, h, Outcome::Success, now + Duration::from_secs(15));
        assert_eq!(r.next_deadline(), Some(now + Duration::from_secs(15)));
        r.handle_timeout(now + Duration::from_secs(15));
        assert_eq!(r.next_deadline(), Some(now + Duration::from_secs(30)));
        assert_eq!(r.timers.len(), 1);
        // A removed key's entries are dropped when they come up.
        r.remove(key);
        r.handle_timeout(now + Duration::from_secs(30));
        assert_eq!(r.next_deadline(), None);
    }
}
