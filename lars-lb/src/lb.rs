//! [`LoadBalance`]: the hosts of one service, their idle and overload lists,
//! and the rules that move hosts between them.
//!
//! Layout: hosts live in a slab (`Vec<Slot>` plus a free list) and are found
//! by address through a hash map. Each slot carries two pairs of intrusive
//! links: one for its round-robin ring (idle or overload), one for its timer
//! ring (idle windows or overload stays, in the order they started). Rings
//! are circular, so "take the front, put it at the back" is one pointer move,
//! and removing a host is an unlink: every state change is O(1).

use std::time::{Duration, Instant};

use crate::config::{LoadBalanceConfig, Policy};
use hashbrown::HashMap;
use lars_core::{HostAddr, ModKey, RetCode};

use crate::event::{
    Counters, DEFAULT_EVENT_CAPACITY, EventQueue, HostState, LbEvent, Reason, Transition,
};

mod adaptive;

use adaptive::{Adapt, AdaptKey};

/// The answer of [`LoadBalance::choice_one_host`] and [`RouteLb::get_host`](crate::RouteLb::get_host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Choice {
    /// An idle host, taken round-robin.
    Idle(HostAddr),
    /// An overloaded host, picked as a probe: its report may bring it back.
    Probe(HostAddr),
    /// Every host is overloaded and no probe is due.
    Overload,
    /// No host is known for the key (yet).
    NoExist,
}

impl Choice {
    /// The picked host, if any.
    pub const fn host(self) -> Option<HostAddr> {
        match self {
            Self::Idle(h) | Self::Probe(h) => Some(h),
            Self::Overload | Self::NoExist => None,
        }
    }

    /// The wire return code of this answer.
    pub const fn retcode(self) -> RetCode {
        match self {
            Self::Idle(_) | Self::Probe(_) => RetCode::Succ,
            Self::Overload => RetCode::Overload,
            Self::NoExist => RetCode::NoExist,
        }
    }
}

/// The result of one call to a host, as the application reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded; how long it took is not known (neutral for the
    /// latency estimate).
    Success,
    /// The call succeeded after `latency_ms` milliseconds. The `classic`
    /// policy treats it as [`Outcome::Success`]; `adaptive` feeds the
    /// latency into the host's estimate.
    SuccessIn {
        /// How long the call took, in milliseconds.
        latency_ms: u32,
    },
    /// The call failed after `timecost_ms` milliseconds (0 when unknown).
    ///
    /// It counts as `max(1, timecost_ms / timecost_unit_ms)` virtual errors
    /// (one when `timecost_unit_ms` is 0) and always as one real error.
    Failure {
        /// How long the failed call took, in milliseconds; 0 when unknown.
        timecost_ms: u32,
    },
}

impl Outcome {
    /// The outcome of a wire `ReportRequest`: retcode 0 is a success (with
    /// its latency when `timecost_ms > 0`; the original clients send 0),
    /// anything else a failure that took `timecost_ms`.
    pub const fn from_retcode(retcode: i32, timecost_ms: u32) -> Self {
        match (retcode, timecost_ms) {
            (0, 0) => Self::Success,
            (0, latency_ms) => Self::SuccessIn { latency_ms },
            _ => Self::Failure { timecost_ms },
        }
    }

    /// Whether the call succeeded.
    pub const fn is_success(self) -> bool {
        !matches!(self, Self::Failure { .. })
    }

    /// How long the call took, when known (a failure's `timecost_ms` of 0
    /// counts as unknown).
    pub const fn latency_ms(self) -> Option<u32> {
        match self {
            Self::Success | Self::Failure { timecost_ms: 0 } => None,
            Self::SuccessIn { latency_ms } => Some(latency_ms),
            Self::Failure { timecost_ms } => Some(timecost_ms),
        }
    }
}

/// What [`LoadBalance::update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateSummary {
    /// Hosts that joined the idle list with fresh counters.
    pub added: usize,
    /// Hosts that left the lists and the table.
    pub removed: usize,
    /// Hosts that kept their state.
    pub kept: usize,
}

/// A read-only view of one host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostView {
    /// The host.
    pub addr: HostAddr,
    /// Its state.
    pub state: HostState,
    /// Its counters.
    pub counters: Counters,
    /// When its current idle window or overload stay started.
    pub since: Instant,
    /// Adaptive: when the next probe of this out-of-rotation host is due
    /// (`None` in rotation, or with the classic policy).
    pub probe_at: Option<Instant>,
    /// Adaptive: the host's latency estimate in milliseconds, once reported.
    pub latency_ms: Option<f64>,
    /// Adaptive: the host's share relative to a full one, in `[0, 1]`
    /// (slow start times the latency factor); 1 with the classic policy.
    pub weight: f64,
    /// Adaptive: strikes against the host (ejections and failed probes not
    /// yet forgiven); each triples the probe interval.
    pub strikes: u32,
}

/// Calls to one host since the last statistics batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostReport {
    /// The host.
    pub host: HostAddr,
    /// Successful calls reported since the last batch.
    pub succ: u32,
    /// Failed calls reported since the last batch.
    pub err: u32,
    /// Whether the host is overloaded now (for a removed host: when removed).
    pub overload: bool,
}

const NIL: u32 = u32::MAX;
/// Link pair of the round-robin ring (idle or overload).
const RR: usize = 0;
/// Link pair of the timer ring (idle windows or overload stays).
const TM: usize = 1;

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

#[derive(Debug, Clone, Copy)]
struct Ring {
    head: u32,
    len: u32,
}

impl Ring {
    const EMPTY: Self = Self { head: NIL, len: 0 };
}

#[derive(Debug, Clone)]
struct Slot {
    addr: HostAddr,
    state: HostState,
    occupied: bool,
    link: [Link; 2],
    since: Instant,
    c: Counters,
    /// Calls since the last statistics batch.
    batch_succ: u32,
    batch_err: u32,
    /// In `LoadBalance::dirty` (traffic or a state change since the last batch).
    dirty: bool,
    /// Update generation that last listed this host.
    seen: u32,
    /// The adaptive policy's state of this host.
    a: Adapt,
}

/// The load balancer of one service ([`ModKey`]): a host table, an idle list
/// and an overload list served round-robin, and the rules that move hosts
/// between the lists.
///
/// Pure: no I/O, no clock. Every time-dependent call takes `now`; `now`
/// values older than one already seen are treated as that one (time never
/// goes back inside). Transitions come out as [`LbEvent`]s the caller drains
/// with [`poll_event`](Self::poll_event) / [`drain_events`](Self::drain_events).
///
/// ```
/// use std::time::{Duration, Instant};
/// use lars_lb::{Choice, LbConfig, LoadBalance, ModKey, Outcome};
///
/// let now = Instant::now();
/// let hosts = ["10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap()];
/// let mut lb = LoadBalance::new(ModKey::new(1, 1), LbConfig::classic());
/// lb.update(&hosts, now);
/// let Choice::Idle(h) = lb.choice_one_host(now) else { unreachable!() };
/// assert_eq!(h, hosts[0]);
/// lb.report(h, Outcome::Failure { timecost_ms: 5000 }, now); // 50 virtual errors
/// assert_eq!(lb.overload_len(), 1);
/// assert_eq!(lb.choice_one_host(now), Choice::Idle(hosts[1]));
/// // Nobody is sent to the overloaded host; it still comes back on time.
/// let later = now + Duration::from_secs(15);
/// assert_eq!(lb.next_deadline(), Some(later));
/// lb.handle_timeout(later);
/// assert_eq!(lb.idle_len(), 2);
/// ```
#[derive(Debug)]
pub struct LoadBalance {
    key: ModKey,
    cfg: LoadBalanceConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    table: HashMap<HostAddr, u32>,
    idle: Ring,
    overload: Ring,
    idle_timers: Ring,
    overload_timers: Ring,
    /// Picks since the last probe (the original's `_access_cnt`).
    access_cnt: u32,
    /// Earliest timer deadline, cached for the pick path.
    due: Option<Instant>,
    clock: Option<Instant>,
    generation: u32,
    dirty: Vec<u32>,
    removed_reports: Vec<HostReport>,
    events: EventQueue,
    /// `cfg.policy == Policy::Adaptive`, read on every pick.
    adaptive: bool,
    /// The adaptive policy's key-wide state.
    ak: AdaptKey,
}

impl LoadBalance {
    /// An empty balancer for `key`; hosts arrive with [`update`](Self::update).
    pub fn new(key: ModKey, config: LoadBalanceConfig) -> Self {
        let seed = (u64::from(key.modid) << 32 | u64::from(key.cmdid)) ^ 0x6c61_7273_6c62_0001;
        Self {
            key,
            adaptive: config.policy == Policy::Adaptive,
            ak: AdaptKey::new(seed),
            cfg: config,
            slots: Vec::new(),
            free: Vec::new(),
            table: HashMap::new(),
            idle: Ring::EMPTY,
            overload: Ring::EMPTY,
            idle_timers: Ring::EMPTY,
            overload_timers: Ring::EMPTY,
            access_cnt: 0,
            due: None,
            clock: None,
            generation: 0,
            dirty: Vec::new(),
            removed_reports: Vec::new(),
            events: EventQueue::new(DEFAULT_EVENT_CAPACITY),
        }
    }

    /// The service this balancer serves.
    pub fn key(&self) -> ModKey {
        self.key
    }

    /// The configuration in use.
    pub fn config(&self) -> &LoadBalanceConfig {
        &self.cfg
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Number of idle hosts.
    pub fn idle_len(&self) -> usize {
        self.idle.len as usize
    }

    /// Number of overloaded hosts.
    pub fn overload_len(&self) -> usize {
        self.overload.len as usize
    }

    /// Whether `host` is in the table.
    pub fn contains(&self, host: HostAddr) -> bool {
        self.table.contains_key(&host)
    }

    /// The state and counters of `host`.
    pub fn host(&self, host: HostAddr) -> Option<HostView> {
        let i = *self.table.get(&host)?;
        let s = &self.slots[i as usize];
        let now = self.clock.unwrap_or(s.since);
        Some(HostView {
            addr: s.addr,
            state: s.state,
            counters: s.c,
            since: s.since,
            probe_at: s.a.probe_at.filter(|_| self.adaptive),
            latency_ms: s.a.latency_ms().filter(|_| self.adaptive),
            weight: self.weight_at(i, now),
            strikes: if self.adaptive { s.a.strikes() } else { 0 },
        })
    }

    /// The policy this balancer follows.
    pub fn policy(&self) -> Policy {
        self.cfg.policy
    }

    /// Reseeds the generator behind the adaptive policy's probe jitter (by
    /// default seeded from the key), for reproducible runs.
    pub fn set_seed(&mut self, seed: u64) {
        self.ak.seed(seed);
    }

    /// Probes handed out so far (adaptive policy).
    pub fn probes_sent(&self) -> u64 {
        self.ak.probes
    }

    /// Ejections the adaptive policy's cap refused so far.
    pub fn ejections_capped(&self) -> u64 {
        self.ak.capped
    }

    /// All hosts, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = HostAddr> + '_ {
        self.table.keys().copied()
    }

    /// The idle list, from the host the next idle pick returns.
    pub fn idle_hosts(&self) -> impl Iterator<Item = HostAddr> + '_ {
        self.ring_iter(self.idle, RR)
    }

    /// The overload list, from the host the next probe returns.
    pub fn overload_hosts(&self) -> impl Iterator<Item = HostAddr> + '_ {
        self.ring_iter(self.overload, RR)
    }

    /// Picks a host.
    ///
    /// From the idle list round-robin; when the overload list is not empty,
    /// every `probe_num + 1`-th pick probes the head of the overload list
    /// instead. When the idle list is empty the answer is
    /// [`Choice::Overload`] except every `probe_num + 1`-th call, which
    /// probes. Timers due at `now` are handled first. O(1).
    #[inline]
    pub fn choice_one_host(&mut self, now: Instant) -> Choice {
        if self.adaptive {
            return self.choice_adaptive(now);
        }
        if let Some(d) = self.due
            && now >= d
        {
            self.handle_timeout(now);
        }
        if self.overload.len == 0 {
            return match self.rotate_idle() {
                Some(h) => Choice::Idle(h),
                None => Choice::NoExist,
            };
        }
        if self.access_cnt >= self.cfg.probe_num {
            self.access_cnt = 0;
            let i = self.overload.head as usize;
            self.overload.head = self.slots[i].link[RR].next;
            return Choice::Probe(self.slots[i].addr);
        }
        self.access_cnt += 1;
        match self.rotate_idle() {
            Some(h) => Choice::Idle(h),
            None => Choice::Overload,
        }
    }

    #[inline]
    fn rotate_idle(&mut self) -> Option<HostAddr> {
        if self.idle.head == NIL {
            return None;
        }
        let i = self.idle.head as usize;
        self.idle.head = self.slots[i].link[RR].next;
        Some(self.slots[i].addr)
    }

    /// Records the outcome of one call to `host` and applies the rules;
    /// returns the host's state afterwards, or `None` for an unknown host
    /// (ignored, as in the original).
    ///
    /// Timers due at `now` are handled first, so a report arriving after a
    /// window ended counts in the next window. Then, for an idle host after a
    /// failure: overload when `verr / (vsucc + verr) > err_rate` or
    /// `contin_err >= contin_err_limit`; for an overloaded host after a
    /// success: idle when `vsucc / (vsucc + verr) > succ_rate` or
    /// `contin_succ >= contin_succ_limit`. O(1).
    pub fn report(&mut self, host: HostAddr, outcome: Outcome, now: Instant) -> Option<HostState> {
        let i = *self.table.get(&host)?;
        let now = self.tick(now);
        if let Some(d) = self.due
            && now >= d
        {
            self.handle_timeout(now);
        }
        let unit = self.cfg.timecost_unit_ms;
        let s = &mut self.slots[i as usize];
        let failed = match outcome {
            Outcome::Success | Outcome::SuccessIn { .. } => {
                s.c.vsucc = s.c.vsucc.saturating_add(1);
                s.c.rsucc = s.c.rsucc.saturating_add(1);
                s.c.contin_succ = s.c.contin_succ.saturating_add(1);
                s.c.contin_err = 0;
                s.batch_succ = s.batch_succ.saturating_add(1);
                false
            }
            Outcome::Failure { timecost_ms } => {
                let weight = timecost_ms.checked_div(unit).unwrap_or(1).max(1);
                s.c.verr = s.c.verr.saturating_add(weight);
                s.c.rerr = s.c.rerr.saturating_add(1);
                s.c.contin_err = s.c.contin_err.saturating_add(1);
                s.c.contin_succ = 0;
                s.batch_err = s.batch_err.saturating_add(1);
                true
            }
        };
        let state = s.state;
        let c = s.c;
        self.mark_dirty(i);
        if self.adaptive {
            return Some(self.report_adaptive(i, outcome, now));
        }
        match (state, failed) {
            (HostState::Idle, true) => {
                let rate = f64::from(c.verr) / (f64::from(c.vsucc) + f64::from(c.verr));
                let reason = if rate > self.cfg.err_rate {
                    Some(Reason::ErrRate)
                } else if c.contin_err >= self.cfg.contin_err_limit {
                    Some(Reason::ContinErr)
                } else {
                    None
                };
                if let Some(r) = reason {
                    self.mark_overload(i, r, now);
                    self.refresh_due();
                    return Some(HostState::Overload);
                }
            }
            (HostState::Overload, false) => {
                let rate = f64::from(c.vsucc) / (f64::from(c.vsucc) + f64::from(c.verr));
                let reason = if rate > self.cfg.succ_rate {
                    Some(Reason::SuccRate)
                } else if c.contin_succ >= self.cfg.contin_succ_limit {
                    Some(Reason::ContinSucc)
                } else {
                    None
                };
                if let Some(r) = reason {
                    self.mark_idle(i, r, now);
                    self.refresh_due();
                    return Some(HostState::Idle);
                }
            }
            _ => {}
        }
        Some(state)
    }

    /// Replaces the host list: new hosts join the idle list with fresh
    /// counters (their window starts at `now`), hosts not in `hosts` leave
    /// both lists and the table, the others keep their state. Duplicates in
    /// `hosts` count once. An empty `hosts` removes every host. O(len + hosts).
    pub fn update(&mut self, hosts: &[HostAddr], now: Instant) -> UpdateSummary {
        let now = self.tick(now);
        self.generation = self.generation.wrapping_add(1);
        let g = self.generation;
        let carriers = self.idle.len;
        let mut sum = UpdateSummary::default();
        for &h in hosts {
            if let Some(&i) = self.table.get(&h) {
                let s = &mut self.slots[i as usize];
                if s.seen != g {
                    s.seen = g;
                    sum.kept += 1;
                }
            } else {
                self.insert(h, g, now, carriers);
                sum.added += 1;
            }
        }
        let gone: Vec<u32> = self
            .table
            .values()
            .copied()
            .filter(|&i| self.slots[i as usize].seen != g)
            .collect();
        sum.removed = gone.len();
        for i in gone {
            self.remove_slot(i);
        }
        self.refresh_due();
        sum
    }

    /// Adds one host (idle, fresh counters, window starting at `now`);
    /// false when it was already there.
    pub fn add_host(&mut self, host: HostAddr, now: Instant) -> bool {
        if self.table.contains_key(&host) {
            return false;
        }
        let now = self.tick(now);
        let carriers = self.idle.len;
        self.insert(host, self.generation, now, carriers);
        self.refresh_due();
        true
    }

    /// Removes one host from its list and the table; false when unknown.
    pub fn remove_host(&mut self, host: HostAddr) -> bool {
        match self.table.get(&host) {
            Some(&i) => {
                self.remove_slot(i);
                self.refresh_due();
                true
            }
            None => false,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: the end
    /// of the oldest idle window or overload stay. O(1).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due
    }

    /// Applies the timers due at `now`: an idle host whose window
    /// (`idle_timeout`, from when it became idle or was added) has passed
    /// goes to overload if its real error rate in the window is
    /// `>= window_err_rate`, otherwise its counters reset and a new window
    /// starts; a host overloaded for `overload_timeout` goes back to idle.
    /// A host whose window or stay started at `now` itself is left for a
    /// later `now` (so zero timeouts cannot loop). O(expired hosts).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        if self.adaptive {
            self.timeout_adaptive(now);
            self.refresh_due();
            return;
        }
        while self.idle_timers.head != NIL {
            let i = self.idle_timers.head;
            let since = self.slots[i as usize].since;
            if since >= now || !expired(since, self.cfg.idle_timeout, now) {
                break;
            }
            let c = self.slots[i as usize].c;
            let real = u64::from(c.rsucc) + u64::from(c.rerr);
            if real > 0 && c.rerr as f64 / real as f64 >= self.cfg.window_err_rate {
                self.mark_overload(i, Reason::WindowErrRate, now);
            } else {
                self.restart_window(i, now);
            }
        }
        while self.overload_timers.head != NIL {
            let i = self.overload_timers.head;
            let since = self.slots[i as usize].since;
            if since >= now || !expired(since, self.cfg.overload_timeout, now) {
                break;
            }
            self.mark_idle(i, Reason::OverloadTimeout, now);
        }
        self.refresh_due();
    }

    /// Calls per host since the last batch, for hosts with calls or a state
    /// change since then (and hosts removed meanwhile). Resets the batch
    /// counters. O(hosts in the batch).
    pub fn take_report(&mut self) -> Vec<HostReport> {
        let mut out = std::mem::take(&mut self.removed_reports);
        for i in std::mem::take(&mut self.dirty) {
            let s = &mut self.slots[i as usize];
            if !s.dirty {
                continue;
            }
            s.dirty = false;
            out.push(HostReport {
                host: s.addr,
                succ: s.batch_succ,
                err: s.batch_err,
                overload: s.state == HostState::Overload,
            });
            s.batch_succ = 0;
            s.batch_err = 0;
        }
        out
    }

    /// Whether [`take_report`](Self::take_report) would return something.
    pub fn has_report(&self) -> bool {
        !self.dirty.is_empty() || !self.removed_reports.is_empty()
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
    /// 1024); 0 turns events off.
    pub fn set_event_capacity(&mut self, cap: usize) {
        self.events.set_capacity(cap);
    }

    /// Events dropped because nobody drained them.
    pub fn dropped_events(&self) -> u64 {
        self.events.dropped()
    }

    pub(crate) fn events_mut(&mut self) -> &mut EventQueue {
        &mut self.events
    }

    // ---- internals ----

    fn tick(&mut self, now: Instant) -> Instant {
        let now = match self.clock {
            Some(c) if c > now => c,
            _ => now,
        };
        self.clock = Some(now);
        now
    }

    fn insert(&mut self, addr: HostAddr, g: u32, now: Instant, carriers: u32) {
        let slot = Slot {
            addr,
            state: HostState::Idle,
            occupied: true,
            link: [UNLINKED; 2],
            since: now,
            c: self.idle_counters(),
            batch_succ: 0,
            batch_err: 0,
            dirty: false,
            seen: g,
            a: Adapt::new(now),
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                // Indices are u32 with NIL = u32::MAX; 4 billion hosts per key
                // cannot be reached before memory runs out.
                let i = u32::try_from(self.slots.len()).unwrap_or(NIL - 1);
                self.slots.push(slot);
                i
            }
        };
        self.table.insert(addr, i);
        push_back(&mut self.slots, &mut self.idle, RR, i);
        push_back(&mut self.slots, &mut self.idle_timers, TM, i);
        if self.adaptive {
            self.admit_new(i, now, carriers);
        }
    }

    fn remove_slot(&mut self, i: u32) {
        if self.adaptive {
            self.forget(i);
        }
        let (state, addr) = {
            let s = &self.slots[i as usize];
            (s.state, s.addr)
        };
        match state {
            HostState::Idle => {
                unlink(&mut self.slots, &mut self.idle, RR, i);
                unlink(&mut self.slots, &mut self.idle_timers, TM, i);
            }
            HostState::Overload => {
                unlink(&mut self.slots, &mut self.overload, RR, i);
                unlink(&mut self.slots, &mut self.overload_timers, TM, i);
            }
        }
        let s = &mut self.slots[i as usize];
        if s.dirty {
            s.dirty = false;
            self.removed_reports.push(HostReport {
                host: addr,
                succ: s.batch_succ,
                err: s.batch_err,
                overload: state == HostState::Overload,
            });
        }
        s.occupied = false;
        s.batch_succ = 0;
        s.batch_err = 0;
        self.table.remove(&addr);
        self.free.push(i);
    }

    fn idle_counters(&self) -> Counters {
        Counters {
            vsucc: self.cfg.init_succ_cnt,
            ..Counters::default()
        }
    }

    fn overload_counters(&self) -> Counters {
        Counters {
            verr: self.cfg.init_err_cnt,
            ..Counters::default()
        }
    }

    fn mark_dirty(&mut self, i: u32) {
        let s = &mut self.slots[i as usize];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(i);
        }
    }

    fn emit(&mut self, i: u32, from: HostState, to: HostState, reason: Reason, now: Instant) {
        if !self.events.enabled() {
            return;
        }
        let s = &self.slots[i as usize];
        self.events.push(LbEvent::Transition(Transition {
            key: self.key,
            host: s.addr,
            from,
            to,
            reason,
            at: now,
            counters: s.c,
        }));
    }

    fn mark_overload(&mut self, i: u32, reason: Reason, now: Instant) {
        self.emit(i, HostState::Idle, HostState::Overload, reason, now);
        unlink(&mut self.slots, &mut self.idle, RR, i);
        unlink(&mut self.slots, &mut self.idle_timers, TM, i);
        let c = self.overload_counters();
        let s = &mut self.slots[i as usize];
        s.state = HostState::Overload;
        s.c = c;
        s.since = now;
        push_back(&mut self.slots, &mut self.overload, RR, i);
        push_back(&mut self.slots, &mut self.overload_timers, TM, i);
        self.mark_dirty(i);
    }

    fn mark_idle(&mut self, i: u32, reason: Reason, now: Instant) {
        self.emit(i, HostState::Overload, HostState::Idle, reason, now);
        unlink(&mut self.slots, &mut self.overload, RR, i);
        unlink(&mut self.slots, &mut self.overload_timers, TM, i);
        let c = self.idle_counters();
        let s = &mut self.slots[i as usize];
        s.state = HostState::Idle;
        s.c = c;
        s.since = now;
        push_back(&mut self.slots, &mut self.idle, RR, i);
        push_back(&mut self.slots, &mut self.idle_timers, TM, i);
        self.mark_dirty(i);
    }

    fn restart_window(&mut self, i: u32, now: Instant) {
        unlink(&mut self.slots, &mut self.idle_timers, TM, i);
        let c = self.idle_counters();
        let s = &mut self.slots[i as usize];
        s.c = c;
        s.since = now;
        push_back(&mut self.slots, &mut self.idle_timers, TM, i);
    }

    fn refresh_due(&mut self) {
        if self.adaptive {
            self.due = self.adaptive_due();
            return;
        }
        let d = |ring: Ring, t: Duration| {
            (ring.head != NIL)
                .then(|| self.slots[ring.head as usize].since.checked_add(t))
                .flatten()
        };
        let a = d(self.idle_timers, self.cfg.idle_timeout);
        let b = d(self.overload_timers, self.cfg.overload_timeout);
        self.due = match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn ring_iter(&self, ring: Ring, k: usize) -> impl Iterator<Item = HostAddr> + '_ {
        let mut cur = ring.head;
        let mut left = ring.len;
        std::iter::from_fn(move || {
            if left == 0 || cur == NIL {
                return None;
            }
            left -= 1;
            let s = &self.slots[cur as usize];
            cur = s.link[k].next;
            Some(s.addr)
        })
    }

    /// Checks the internal invariants (for tests): every host is in exactly
    /// one round-robin ring and the matching timer ring, the rings agree with
    /// the table, and timer rings are ordered by start time.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = hashbrown::HashMap::<u32, u8>::new();
        let rings = [
            (self.idle, RR, HostState::Idle, 1u8),
            (self.overload, RR, HostState::Overload, 2),
            (self.idle_timers, TM, HostState::Idle, 4),
            (self.overload_timers, TM, HostState::Overload, 8),
        ];
        for (ring, k, state, bit) in rings {
            let mut cur = ring.head;
            let mut prev_since: Option<Instant> = None;
            for _ in 0..ring.len {
                if cur == NIL {
                    return Err("ring shorter than its len".into());
                }
                let s = &self.slots[cur as usize];
                if !s.occupied || s.state != state {
                    return Err(format!("{} in the wrong ring", s.addr));
                }
                if self.slots[s.link[k].next as usize].link[k].prev != cur {
                    return Err("broken links".into());
                }
                if k == TM {
                    if prev_since.is_some_and(|p| p > s.since) {
                        return Err("timer ring out of order".into());
                    }
                    prev_since = Some(s.since);
                }
                let e = seen.entry(cur).or_insert(0);
                if *e & bit != 0 {
                    return Err(format!("{} twice in a ring", s.addr));
                }
                *e |= bit;
                cur = s.link[k].next;
            }
            if ring.len > 0 && cur != ring.head {
                return Err("ring longer than its len".into());
            }
            if ring.len == 0 && ring.head != NIL {
                return Err("empty ring with a head".into());
            }
        }
        if seen.len() != self.table.len() {
            return Err("rings and table disagree".into());
        }
        for (addr, &i) in &self.table {
            let s = &self.slots[i as usize];
            let want = match s.state {
                HostState::Idle => 1 | 4,
                HostState::Overload => 2 | 8,
            };
            if s.addr != *addr || seen.get(&i) != Some(&want) {
                return Err(format!("{addr} not in exactly one list"));
            }
        }
        Ok(())
    }
}

fn expired(since: Instant, timeout: Duration, now: Instant) -> bool {
    since.checked_add(timeout).is_some_and(|d| now >= d)
}

fn push_back(slots: &mut [Slot], ring: &mut Ring, k: usize, i: u32) {
    if ring.head == NIL {
        slots[i as usize].link[k] = Link { prev: i, next: i };
        ring.head = i;
    } else {
        let h = ring.head;
        let t = slots[h as usize].link[k].prev;
        slots[i as usize].link[k] = Link { prev: t, next: h };
        slots[t as usize].link[k].next = i;
        slots[h as usize].link[k].prev = i;
    }
    ring.len += 1;
}

fn unlink(slots: &mut [Slot], ring: &mut Ring, k: usize, i: u32) {
    let Link { prev, next } = slots[i as usize].link[k];
    if next == i {
        ring.head = NIL;
    } else {
        slots[prev as usize].link[k].next = next;
        slots[next as usize].link[k].prev = prev;
        if ring.head == i {
            ring.head = next;
        }
    }
    slots[i as usize].link[k] = UNLINKED;
    ring.len -= 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(i: u32) -> Slot {
        #[allow(clippy::disallowed_methods)] // a base Instant for the fixture
        let now = Instant::now();
        Slot {
            addr: HostAddr::new(i, 1),
            state: HostState::Idle,
            occupied: true,
            link: [UNLINKED; 2],
            since: now,
            c: Counters::default(),
            batch_succ: 0,
            batch_err: 0,
            dirty: false,
            seen: 0,
            a: Adapt::new(now),
        }
    }

    fn order(slots: &[Slot], ring: Ring) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = ring.head;
        for _ in 0..ring.len {
            out.push(cur);
            cur = slots[cur as usize].link[RR].next;
        }
        assert_eq!(cur, ring.head);
        out
    }

    #[test]
    fn ring_push_unlink_and_rotate() {
        let mut slots: Vec<Slot> = (0..4).map(slot).collect();
        let mut r = Ring::EMPTY;
        for i in 0..4 {
            push_back(&mut slots, &mut r, RR, i);
        }
        assert_eq!(order(&slots, r), vec![0, 1, 2, 3]);
        // Rotation is a head move.
        r.head = slots[r.head as usize].link[RR].next;
        assert_eq!(order(&slots, r), vec![1, 2, 3, 0]);
        // Removing the head makes its successor the head.
        unlink(&mut slots, &mut r, RR, 1);
        assert_eq!(order(&slots, r), vec![2, 3, 0]);
        unlink(&mut slots, &mut r, RR, 3);
        assert_eq!(order(&slots, r), vec![2, 0]);
        // Pushing back inserts just before the head.
        push_back(&mut slots, &mut r, RR, 3);
        assert_eq!(order(&slots, r), vec![2, 0, 3]);
        for i in [2, 0, 3] {
            unlink(&mut slots, &mut r, RR, i);
        }
        assert_eq!((r.head, r.len), (NIL, 0));
    }

    #[test]
    fn removed_slots_are_reused() {
        #[allow(clippy::disallowed_methods)] // a base Instant for the test
        let now = Instant::now();
        let mut lb = LoadBalance::new(ModKey::new(1, 1), LoadBalanceConfig::default());
        let hs: Vec<HostAddr> = (1..=3).map(|i| HostAddr::new(i, 80)).collect();
        lb.update(&hs, now);
        assert!(lb.remove_host(hs[1]));
        assert!(!lb.remove_host(hs[1]));
        assert!(lb.add_host(HostAddr::new(9, 80), now));
        assert!(!lb.add_host(HostAddr::new(9, 80), now));
        assert_eq!(lb.slots.len(), 3);
        lb.check_invariants().unwrap();
    }
}
