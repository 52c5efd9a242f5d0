//! The state behind one shard of the agent (and behind the embedded mode): a
//! [`RouteLb`], the cumulative call counters sent to the reporter, and the
//! glue that turns the core's outputs (pull requests, statistics batches,
//! events) into messages on the [`Uplink`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hashbrown::{HashMap, HashSet};
use lars_core::proto::{HostCallResult, ReportStatusRequest};
use lars_core::{HostAddr, ModKey};
use lars_lb::{Choice, LbEvent, LoadBalanceConfig, Outcome, RouteApplied, RouteLb};

/// Default bound on keys waiting to be reported while the reporter is away.
pub const DEFAULT_MAX_PENDING_REPORT_KEYS: usize = 100_000;

/// Where a [`Core`] sends what it produces: pulls to the dns, statistics to
/// the reporter. Implemented over lars-net `TcpClient`s (and by fakes in
/// unit tests).
pub(crate) trait Uplink: Send + Sync {
    /// Sends a GetRouteRequest for `key` to the dns (dropped when it is away;
    /// the reconnect re-pulls).
    fn pull(&self, key: ModKey);
    /// Whether the reporter is connected now.
    fn reporter_connected(&self) -> bool;
    /// Counts reporter (re)connects; a change tells a shard that messages of
    /// the previous connection may have been lost.
    fn reporter_epoch(&self) -> u64;
    /// The `caller` field: the agent's IPv4 as the host-order u32.
    fn caller(&self) -> u32;
    /// Sends one ReportStatusRequest.
    fn report(&self, msg: &ReportStatusRequest);
}

/// Counters of one shard (relaxed atomics; summed by
/// [`AgentStats`](crate::AgentStats)).
#[derive(Debug, Default)]
pub(crate) struct ShardCounters {
    pub get_host: AtomicU64,
    pub get_host_succ: AtomicU64,
    pub get_host_overload: AtomicU64,
    pub get_host_noexist: AtomicU64,
    pub reports: AtomicU64,
    pub get_route: AtomicU64,
    pub garbage: AtomicU64,
    pub forwarded: AtomicU64,
    pub pulls: AtomicU64,
    pub routes_applied: AtomicU64,
    pub report_messages: AtomicU64,
    pub report_keys_dropped: AtomicU64,
    pub counter_restarts: AtomicU64,
    pub transitions: AtomicU64,
}

#[inline]
pub(crate) fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Cumulative counters of one (key, host) since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cum {
    succ: u32,
    err: u32,
    overload: bool,
    /// Changed since last sent.
    dirty: bool,
    /// A `(0, 0)` report for this host went out since the counters (re)started
    /// at zero: the reporter's contract for a reset (docs/reporter.md), so
    /// counters that start again from zero are never taken for growth.
    announced: bool,
}

/// Counters restart from zero before either would pass this (the original
/// schema stores them as signed 32-bit integers).
const COUNTER_LIMIT: u32 = i32::MAX as u32;

/// One shard's routes and statistics.
pub(crate) struct Core {
    routes: RouteLb,
    cum: HashMap<ModKey, HashMap<HostAddr, Cum>>,
    dirty: HashSet<ModKey>,
    last_sent: Vec<ModKey>,
    seen_epoch: u64,
    max_pending_keys: usize,
    routes_changed: bool,
    counters: Arc<ShardCounters>,
    uplink: Arc<dyn Uplink>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("keys", &self.routes.len())
            .field("pending_report_keys", &self.dirty.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(
        lb: LoadBalanceConfig,
        uplink: Arc<dyn Uplink>,
        counters: Arc<ShardCounters>,
        max_pending_keys: usize,
    ) -> Self {
        Self {
            routes: RouteLb::new(lb),
            cum: HashMap::new(),
            dirty: HashSet::new(),
            last_sent: Vec::new(),
            seen_epoch: 0,
            max_pending_keys,
            routes_changed: false,
            counters,
            uplink,
        }
    }

    /// The routes (read-only, for status pages and snapshots).
    pub(crate) fn routes(&self) -> &RouteLb {
        &self.routes
    }

    /// This shard's counters.
    pub(crate) fn counters(&self) -> &ShardCounters {
        &self.counters
    }

    /// Picks a host for `key`; an unknown key answers `NoExist` and is pulled.
    #[inline]
    pub(crate) fn get_host(&mut self, key: ModKey, now: Instant) -> Choice {
        let c = &self.counters;
        inc(&c.get_host);
        let choice = self.routes.get_host(key, now);
        match choice {
            Choice::Idle(_) | Choice::Probe(_) => inc(&c.get_host_succ),
            Choice::Overload => inc(&c.get_host_overload),
            Choice::NoExist => inc(&c.get_host_noexist),
        }
        self.flush_outputs();
        choice
    }

    /// Records a call result; unknown keys and hosts are ignored.
    #[inline]
    pub(crate) fn report(&mut self, key: ModKey, host: HostAddr, outcome: Outcome, now: Instant) {
        inc(&self.counters.reports);
        self.routes.report(key, host, outcome, now);
        self.flush_outputs();
    }

    /// All hosts of `key` (sorted), empty when unknown (and then pulled).
    pub(crate) fn get_route(&mut self, key: ModKey, now: Instant) -> Vec<HostAddr> {
        inc(&self.counters.get_route);
        let hosts = self.routes.get_route(key, now).unwrap_or_default();
        self.flush_outputs();
        hosts
    }

    /// Applies a dns answer or push.
    pub(crate) fn apply_route(&mut self, key: ModKey, hosts: &[HostAddr], now: Instant) {
        inc(&self.counters.routes_applied);
        match self.routes.apply_route(key, hosts, now) {
            RouteApplied::Updated(sum) => {
                if sum.added > 0 || sum.removed > 0 {
                    self.routes_changed = true;
                    tracing::info!(
                        key = %key,
                        added = sum.added,
                        removed = sum.removed,
                        kept = sum.kept,
                        "route updated from the dns"
                    );
                }
            }
            RouteApplied::Removed => self.routes_changed = true,
            RouteApplied::KeptEmpty => {}
            RouteApplied::Ignored => {
                tracing::debug!(key = %key, "route for a key not in use ignored");
            }
        }
        self.flush_outputs();
    }

    /// Installs routes read from a snapshot (usable at once, pulled on use).
    pub(crate) fn restore(&mut self, key: ModKey, hosts: &[HostAddr], now: Instant) {
        self.routes.restore_route(key, hosts, now);
    }

    /// Runs due host timers (overload timeouts, idle windows).
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.routes.next_deadline().is_some_and(|d| d <= now) {
            self.routes.handle_timeout(now);
        }
        self.flush_outputs();
    }

    /// The dns connection was (re-)established: its subscriptions are new, so
    /// every key in use is pulled again; PULLING keys become NEW first (their
    /// request may have been lost) and are marked PULLING again.
    pub(crate) fn dns_connected(&mut self, now: Instant) {
        self.routes.reset_pulling();
        let keys: Vec<ModKey> = self.routes.keys().collect();
        for &key in &keys {
            // Marks keys without a dns answer PULLING again (and queues a
            // pull, replaced by the full list below).
            let _ = self.routes.get_route(key, now);
        }
        let _ = self.routes.take_pulls();
        for key in keys {
            inc(&self.counters.pulls);
            self.uplink.pull(key);
        }
        self.flush_outputs();
    }

    /// Whether the routes changed since the last call (for the snapshot).
    pub(crate) fn take_routes_changed(&mut self) -> bool {
        std::mem::take(&mut self.routes_changed)
    }

    /// Every key with hosts, for the snapshot.
    pub(crate) fn snapshot_routes(&self) -> Vec<(ModKey, Vec<HostAddr>)> {
        self.routes.routes().collect()
    }

    /// Cumulative (successes, errors) of a host since the agent started, as
    /// last folded in by [`report_tick`](Self::report_tick).
    pub(crate) fn cumulative(&self, key: ModKey, host: HostAddr) -> (u32, u32) {
        self.cum
            .get(&key)
            .and_then(|h| h.get(&host))
            .map_or((0, 0), |c| (c.succ, c.err))
    }

    /// Keys waiting to be reported.
    pub(crate) fn pending_report_keys(&self) -> usize {
        self.dirty.len()
    }

    /// Folds the interval's counts into the cumulative counters and, when the
    /// reporter is connected, sends one ReportStatusRequest per key with new
    /// traffic (only its hosts with new traffic). `ts` is unix seconds.
    pub(crate) fn report_tick(&mut self, ts: u32) {
        for batch in self.routes.take_report_batches() {
            let hosts = self.cum.entry(batch.key).or_default();
            for r in batch.results {
                let c = hosts.entry(r.host).or_default();
                let succ = c.succ.checked_add(r.succ).filter(|&v| v <= COUNTER_LIMIT);
                let err = c.err.checked_add(r.err).filter(|&v| v <= COUNTER_LIMIT);
                match (succ, err) {
                    (Some(succ), Some(err)) => (c.succ, c.err) = (succ, err),
                    _ => {
                        // Start again from zero, announced by a (0, 0) report.
                        inc(&self.counters.counter_restarts);
                        (c.succ, c.err) = (r.succ, r.err);
                        c.announced = false;
                    }
                }
                c.overload = r.overload;
                c.dirty = true;
            }
            self.mark_dirty(batch.key);
        }
        if !self.uplink.reporter_connected() {
            return;
        }
        let epoch = self.uplink.reporter_epoch();
        if epoch != self.seen_epoch {
            // What went out on the previous connection in the last interval
            // may be lost: send it again (cumulative, so idempotent).
            self.seen_epoch = epoch;
            for key in std::mem::take(&mut self.last_sent) {
                if let Some(hosts) = self.cum.get_mut(&key) {
                    hosts.values_mut().for_each(|c| c.dirty = true);
                }
                self.mark_dirty(key);
            }
        }
        self.last_sent.clear();
        if self.dirty.is_empty() {
            return;
        }
        let caller = self.uplink.caller() as i32; // the same 32 bits
        let mut keys: Vec<ModKey> = self.dirty.drain().collect();
        keys.sort_unstable();
        for key in keys {
            let Some(hosts) = self.cum.get_mut(&key) else {
                continue;
            };
            let (modid, cmdid) = key.to_wire();
            // Hosts whose counters (re)start at zero are announced first with
            // (0, 0), in their own message on the same connection, so the
            // reporter sees a reset before the new values.
            let mut zeros: Vec<HostCallResult> = hosts
                .iter_mut()
                .filter(|(_, c)| c.dirty && !c.announced)
                .map(|(h, c)| {
                    c.announced = true;
                    let (ip, port) = h.to_wire();
                    HostCallResult {
                        ip,
                        port,
                        succ: 0,
                        err: 0,
                        overload: false,
                    }
                })
                .collect();
            if !zeros.is_empty() {
                zeros.sort_unstable_by_key(|r| (r.ip as u32, r.port));
                self.uplink.report(&ReportStatusRequest {
                    modid,
                    cmdid,
                    caller,
                    results: zeros,
                    ts,
                });
            }
            let mut results: Vec<HostCallResult> = hosts
                .iter_mut()
                .filter(|(_, c)| c.dirty)
                .map(|(h, c)| {
                    c.dirty = false;
                    let (ip, port) = h.to_wire();
                    HostCallResult {
                        ip,
                        port,
                        succ: c.succ,
                        err: c.err,
                        overload: c.overload,
                    }
                })
                .collect();
            if results.is_empty() {
                continue;
            }
            results.sort_unstable_by_key(|r| (r.ip as u32, r.port));
            self.uplink.report(&ReportStatusRequest {
                modid,
                cmdid,
                caller,
                results,
                ts,
            });
            inc(&self.counters.report_messages);
            self.last_sent.push(key);
        }
    }

    fn mark_dirty(&mut self, key: ModKey) {
        if self.dirty.len() >= self.max_pending_keys && !self.dirty.contains(&key) {
            // Its hosts stay dirty: the next batch of this key carries them.
            inc(&self.counters.report_keys_dropped);
            return;
        }
        self.dirty.insert(key);
    }

    /// Sends queued pulls, logs queued events.
    #[inline]
    fn flush_outputs(&mut self) {
        for key in self.routes.take_pulls() {
            inc(&self.counters.pulls);
            tracing::debug!(key = %key, "pulling route from the dns");
            self.uplink.pull(key);
        }
        for ev in self.routes.drain_events() {
            log_event(&self.counters, &ev);
        }
    }
}

fn log_event(counters: &ShardCounters, ev: &LbEvent) {
    match ev {
        LbEvent::Transition(t) => {
            inc(&counters.transitions);
            let c = t.counters;
            tracing::info!(
                key = %t.key,
                host = %t.host,
                from = ?t.from,
                to = ?t.to,
                reason = ?t.reason,
                vsucc = c.vsucc,
                verr = c.verr,
                rsucc = c.rsucc,
                rerr = c.rerr,
                contin_succ = c.contin_succ,
                contin_err = c.contin_err,
                "host state change"
            );
        }
        LbEvent::EmptyRouteKept { key, hosts } => {
            tracing::warn!(key = %key, hosts, "dns sent an empty route; keeping the last hosts");
        }
        LbEvent::KeyRemoved { key } => {
            tracing::info!(key = %key, "dns sent an empty route; key removed");
        }
        other => tracing::info!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    #[derive(Default)]
    struct FakeUplink {
        pulls: Mutex<Vec<ModKey>>,
        reports: Mutex<Vec<ReportStatusRequest>>,
        connected: AtomicBool,
        epoch: AtomicU64,
    }

    impl Uplink for FakeUplink {
        fn pull(&self, key: ModKey) {
            self.pulls.lock().unwrap().push(key);
        }
        fn reporter_connected(&self) -> bool {
            self.connected.load(Ordering::SeqCst)
        }
        fn reporter_epoch(&self) -> u64 {
            self.epoch.load(Ordering::SeqCst)
        }
        fn caller(&self) -> u32 {
            0x7f00_0001
        }
        fn report(&self, msg: &ReportStatusRequest) {
            self.reports.lock().unwrap().push(msg.clone());
        }
    }

    fn setup(max_pending: usize) -> (Core, Arc<FakeUplink>) {
        let up = Arc::new(FakeUplink::default());
        up.connected.store(true, Ordering::SeqCst);
        up.epoch.store(1, Ordering::SeqCst);
        let core = Core::new(
            LoadBalanceConfig::default(),
            up.clone(),
            Arc::default(),
            max_pending,
        );
        (core, up)
    }

    fn h(s: &str) -> HostAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unknown_key_pulls_once_then_serves() {
        let (mut core, up) = setup(10);
        let t = Instant::now();
        let k = ModKey::new(1, 1);
        assert_eq!(core.get_host(k, t), Choice::NoExist);
        assert_eq!(core.get_host(k, t), Choice::NoExist);
        assert_eq!(*up.pulls.lock().unwrap(), vec![k]);
        core.apply_route(k, &[h("10.0.0.1:80")], t);
        assert!(core.take_routes_changed());
        assert_eq!(core.get_host(k, t), Choice::Idle(h("10.0.0.1:80")));
        assert_eq!(core.counters().get_host_noexist.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn reconnect_repulls_every_key() {
        let (mut core, up) = setup(10);
        let t = Instant::now();
        let (a, b) = (ModKey::new(1, 1), ModKey::new(2, 1));
        core.get_host(a, t);
        core.get_host(b, t);
        core.apply_route(a, &[h("10.0.0.1:80")], t);
        up.pulls.lock().unwrap().clear();
        core.dns_connected(t);
        let mut pulls = up.pulls.lock().unwrap().clone();
        pulls.sort();
        assert_eq!(pulls, vec![a, b]);
        // b was PULLING and is PULLING again: no duplicate pull on use.
        core.get_host(b, t);
        assert_eq!(up.pulls.lock().unwrap().len(), 2);
    }

    #[test]
    fn counters_are_cumulative_and_only_new_traffic_is_sent() {
        let (mut core, up) = setup(10);
        let t = Instant::now();
        let (a, b) = (ModKey::new(1, 1), ModKey::new(2, 1));
        let (x, y) = (h("10.0.0.1:80"), h("10.0.0.2:80"));
        for k in [a, b] {
            core.get_host(k, t);
            core.apply_route(k, &[x, y], t);
        }
        core.report(a, x, Outcome::Success, t);
        core.report(a, x, Outcome::Failure { timecost_ms: 0 }, t);
        core.report(a, y, Outcome::Success, t);
        core.report_tick(100);
        core.report(a, x, Outcome::Success, t);
        core.report_tick(101);
        core.report_tick(102);
        let reports = up.reports.lock().unwrap().clone();
        assert_eq!(reports.len(), 3);
        // First the hosts seen for the first time, at (0, 0): the reset the
        // reporter needs before counters that start from zero.
        assert_eq!((reports[0].ts, reports[0].caller), (100, 0x7f00_0001));
        let z: Vec<_> = reports[0].results.iter().map(|r| (r.succ, r.err)).collect();
        assert_eq!(z, vec![(0, 0), (0, 0)]);
        assert_eq!((reports[1].ts, reports[1].caller), (100, 0x7f00_0001));
        let r1: Vec<_> = reports[1].results.iter().map(|r| (r.succ, r.err)).collect();
        assert_eq!(r1, vec![(1, 1), (1, 0)]);
        // Second batch: only host x, with its cumulative counters, no zeros.
        assert_eq!(reports[2].results.len(), 1);
        assert_eq!(
            (reports[2].results[0].succ, reports[2].results[0].err),
            (2, 1)
        );
    }

    #[test]
    fn counters_near_the_limit_restart_from_zero_announced() {
        let (mut core, up) = setup(10);
        let t = Instant::now();
        let k = ModKey::new(1, 1);
        let x = h("10.0.0.1:80");
        core.get_host(k, t);
        core.apply_route(k, &[x], t);
        core.report(k, x, Outcome::Success, t);
        core.report_tick(1);
        // Pretend the host already carried almost 2^31 successes.
        core.cum.get_mut(&k).unwrap().get_mut(&x).unwrap().succ = COUNTER_LIMIT;
        core.report(k, x, Outcome::Success, t);
        core.report(k, x, Outcome::Success, t);
        core.report_tick(2);
        let reports = up.reports.lock().unwrap().clone();
        let counts: Vec<_> = reports
            .iter()
            .map(|r| (r.ts, r.results[0].succ, r.results[0].err))
            .collect();
        assert_eq!(counts, vec![(1, 0, 0), (1, 1, 0), (2, 0, 0), (2, 2, 0)]);
        assert_eq!(core.counters().counter_restarts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reporter_down_merges_and_bounds_keys_then_resends_after_reconnect() {
        let (mut core, up) = setup(1);
        let t = Instant::now();
        let (a, b) = (ModKey::new(1, 1), ModKey::new(2, 1));
        let x = h("10.0.0.1:80");
        for k in [a, b] {
            core.get_host(k, t);
            core.apply_route(k, &[x], t);
        }
        core.report(a, x, Outcome::Success, t);
        core.report_tick(1); // sent on epoch 1
        up.connected.store(false, Ordering::SeqCst);
        for _ in 0..3 {
            core.report(a, x, Outcome::Success, t);
            core.report(b, x, Outcome::Success, t);
            core.report_tick(2);
        }
        assert_eq!(core.pending_report_keys(), 1);
        assert!(core.counters().report_keys_dropped.load(Ordering::Relaxed) >= 1);
        up.connected.store(true, Ordering::SeqCst);
        up.epoch.store(2, Ordering::SeqCst);
        core.report_tick(3);
        let reports = up.reports.lock().unwrap().clone();
        // Key a merged: (0, 0), its count 1, then one message with its
        // cumulative count 4.
        let last_a: Vec<_> = reports.iter().filter(|r| r.modid == 1).collect();
        assert_eq!(last_a.len(), 3);
        assert_eq!(last_a[0].results[0].succ, 0);
        assert_eq!(last_a[2].results[0].succ, 4);
        // Key b was dropped from the pending set while full; its next
        // traffic sends its whole cumulative count.
        core.report(b, x, Outcome::Success, t);
        core.report_tick(4);
        let reports = up.reports.lock().unwrap().clone();
        let last_b = reports.iter().rfind(|r| r.modid == 2).unwrap();
        assert_eq!(last_b.results[0].succ, 4);
    }

    #[test]
    fn overload_timeout_is_run_by_tick() {
        // The classic rules: a lone host is overloaded by 15 failures (the
        // adaptive policy keeps at least one host in rotation).
        let cfg = LoadBalanceConfig {
            overload_timeout: Duration::from_secs(1),
            ..LoadBalanceConfig::classic()
        };
        let up = Arc::new(FakeUplink::default());
        let mut core = Core::new(cfg, up, Arc::default(), 10);
        let t = Instant::now();
        let k = ModKey::new(1, 1);
        let x = h("10.0.0.1:80");
        core.get_host(k, t);
        core.apply_route(k, &[x], t);
        for _ in 0..15 {
            core.report(k, x, Outcome::Failure { timecost_ms: 0 }, t);
        }
        assert_eq!(core.routes().lb(k).unwrap().overload_len(), 1);
        assert_eq!(core.counters().transitions.load(Ordering::Relaxed), 1);
        core.tick(t + Duration::from_secs(2));
        assert_eq!(core.routes().lb(k).unwrap().idle_len(), 1);
    }

    /// A core with `cfg`, key `k` routed to `hosts`, and the first host
    /// failed 15 times in a row at `t` (out of rotation under both policies).
    fn with_one_bad_host(cfg: LoadBalanceConfig, hosts: &[HostAddr], t: Instant) -> Core {
        let mut core = Core::new(cfg, Arc::new(FakeUplink::default()), Arc::default(), 10);
        let k = ModKey::new(1, 1);
        core.get_host(k, t);
        core.apply_route(k, hosts, t);
        for _ in 0..15 {
            core.report(k, hosts[0], Outcome::Failure { timecost_ms: 0 }, t);
        }
        assert_eq!(core.routes().lb(k).unwrap().overload_len(), 1);
        core
    }

    fn picks_of(core: &mut Core, host: HostAddr, n: usize, t: Instant) -> Vec<usize> {
        (0..n)
            .filter(|_| core.get_host(ModKey::new(1, 1), t).host() == Some(host))
            .collect()
    }

    #[test]
    fn classic_policy_probes_every_probe_num_plus_1_picks() {
        let t = Instant::now();
        let hs = [h("10.0.0.1:80"), h("10.0.0.2:80"), h("10.0.0.3:80")];
        let cfg = LoadBalanceConfig {
            probe_num: 4,
            ..LoadBalanceConfig::classic()
        };
        let mut core = with_one_bad_host(cfg, &hs, t);
        assert_eq!(core.routes().config().policy, lars_lb::Policy::Classic);
        // Exactly one pick in every probe_num + 1 goes to the bad host,
        // however close together the picks are.
        let mut probes = Vec::new();
        for i in 0..20 {
            if core.get_host(ModKey::new(1, 1), t) == Choice::Probe(hs[0]) {
                probes.push(i);
            }
        }
        assert_eq!(probes, vec![4, 9, 14, 19]);
    }

    /// Needs the adaptive policy of lars-lb (probes limited in time).
    #[test]
    fn adaptive_policy_is_the_default_and_limits_probes_in_time() {
        let t = Instant::now();
        let hs = [h("10.0.0.1:80"), h("10.0.0.2:80"), h("10.0.0.3:80")];
        let cfg = LoadBalanceConfig::default();
        assert_eq!(cfg.policy, lars_lb::Policy::Adaptive);
        let probe_interval = cfg.adaptive.probe_interval;
        let mut core = with_one_bad_host(cfg, &hs, t);
        assert_eq!(core.routes().config().policy, lars_lb::Policy::Adaptive);
        // 100 picks at the same instant: no probe before probe_interval.
        assert_eq!(picks_of(&mut core, hs[0], 100, t), Vec::<usize>::new());
        // Then at most one probe, however many picks.
        let later = t + probe_interval * 2;
        core.tick(later);
        assert!(picks_of(&mut core, hs[0], 100, later).len() <= 1);
    }

    /// Needs the adaptive policy of lars-lb (latency estimates).
    #[test]
    fn latencies_reported_with_successes_reach_the_host_estimate() {
        let (mut core, _) = setup(10);
        let t = Instant::now();
        let k = ModKey::new(1, 1);
        let (x, y) = (h("10.0.0.1:80"), h("10.0.0.2:80"));
        core.get_host(k, t);
        core.apply_route(k, &[x, y], t);
        for i in 0..20u32 {
            let at = t + Duration::from_millis(u64::from(i) * 10);
            core.report(k, x, Outcome::from_retcode(0, 5), at);
            core.report(k, y, Outcome::Success, at);
        }
        let lb = core.routes().lb(k).unwrap();
        let est = lb.host(x).unwrap().latency_ms;
        assert!(est.is_some_and(|ms| (4.0..=6.0).contains(&ms)), "{est:?}");
        // Successes without a latency are neutral: no estimate.
        assert_eq!(lb.host(y).unwrap().latency_ms, None);
    }
}
