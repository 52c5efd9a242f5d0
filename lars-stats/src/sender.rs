//! The agent's half of the contract: cumulative counters per `(key, host)`,
//! turned into `ReportStatusRequest`s for the reporter.
//!
//! The rules (docs/stats.md):
//! - counters are cumulative since the agent started, so a message that
//!   arrives twice counts once;
//! - counters that start from zero (a host seen for the first time, counters
//!   about to pass 2^31, a host whose counters were last known to arrive
//!   [`IDLE_RESTART`] seconds ago) are announced by a `(0, 0)` report for
//!   that host, first in the same message as the new values, so the reporter
//!   always sees the reset even when the new values exceed the old ones, and
//!   sees it before the values even when it applies messages in any order
//!   (the C++ reporter hands each message to one of several database
//!   threads; one message is applied by one thread, in sequence);
//! - what went out in the last interval before the connection changed may be
//!   lost: it is sent again on the next connection (as it is, within
//!   [`RESEND_WITHIN`]), and messages still queued when the connection drops
//!   are put back;
//! - a restart never goes out while the counters before it are unsent or in
//!   doubt: they go once more first, the restart one tick later (the reporter
//!   could not tell whether it had them).

use std::collections::{HashMap, HashSet, VecDeque};

use lars_core::proto::{HostCallResult, ReportStatusRequest};
use lars_core::{HostAddr, ModKey};
use lars_lb::KeyReport;

use crate::windows::EXPIRE_AFTER;

/// Default bound on keys waiting to be reported while the reporter is away.
pub const DEFAULT_MAX_PENDING_KEYS: usize = 100_000;

/// Counters restart from zero before either would pass this (the original
/// schema stores them as signed 32-bit integers).
pub const COUNTER_LIMIT: u32 = i32::MAX as u32;

/// Seconds since a host's counters were last known to arrive after which
/// they start again from the calls not yet sent (announced): half the time
/// after which the reporter forgets a stream ([`EXPIRE_AFTER`]), so a
/// cumulative value is never sent to a reporter that may have forgotten what
/// it continues.
pub const IDLE_RESTART: u32 = (EXPIRE_AFTER / 2) as u32;

/// Seconds since a host's counters were last known to arrive within which
/// counters in doubt (sent just before a connection was lost) are sent again
/// as they are: the reporter surely still remembers the stream (10 minutes
/// short of [`EXPIRE_AFTER`]). Later, the host restarts instead, and the
/// calls of the message in doubt count only if it did arrive: a connection
/// lost with counters in doubt must be back within `RESEND_WITHIN -
/// IDLE_RESTART` (20 minutes) for the totals to stay exact.
pub const RESEND_WITHIN: u32 = (EXPIRE_AFTER - 600) as u32;

/// What a [`CumulativeSender`] did since it was created (for status pages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderCounters {
    /// Messages with counters handed out by
    /// [`poll_transmit`](CumulativeSender::poll_transmit).
    pub messages: u64,
    /// Messages handed out that open with a `(0, 0)` announcement.
    pub announcements: u64,
    /// Times a key could not be queued because
    /// [`max_pending_keys`](CumulativeSender::new) keys were already waiting
    /// (its counters stay; its next traffic carries them).
    pub keys_dropped: u64,
    /// Times a host's counters started again from zero before 2^31.
    pub counter_restarts: u64,
    /// Times a host's counters started again after [`IDLE_RESTART`] seconds
    /// without a message about it.
    pub idle_restarts: u64,
    /// Keys sent again because the connection changed while they were in
    /// doubt.
    pub resent_keys: u64,
    /// Calls that could not be sent: a restart found more than
    /// [`COUNTER_LIMIT`] calls of one host not yet sent (2^31 calls between
    /// two reports), and kept only the newest interval's.
    pub calls_dropped: u64,
}

/// Cumulative counters of one `(key, host)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cum {
    succ: u32,
    err: u32,
    overload: bool,
    /// Changed since last queued.
    dirty: bool,
    /// A `(0, 0)` report for this host was queued since the counters
    /// (re)started at zero.
    announced: bool,
    /// The counters would pass [`COUNTER_LIMIT`]: they stay as they are
    /// until the restart goes out, and new calls gather in `carry`.
    restart_due: bool,
    /// Calls recorded since the restart became due.
    carry: (u64, u64),
    /// The counters last handed out may have been lost: they go again
    /// before a counter restart (after a restart the reporter could not tell
    /// whether it had them: it would count them twice or not at all).
    resend: bool,
    /// Calls recorded and not yet in any queued counters.
    unsent: (u64, u64),
    /// `ts` of the last counters known to have arrived (a tick passed after
    /// them on the same connection) or of the last announcement: the
    /// reporter has seen the stream since.
    confirmed_at: Option<u32>,
}

/// What queueing a host's counters changed, to undo it if the message is
/// never handed out.
#[derive(Debug, Clone, Copy)]
struct Undo {
    host: HostAddr,
    /// Taken out of `unsent`.
    unsent: (u64, u64),
}

/// A message queued by [`CumulativeSender::report_tick`], not yet handed out.
#[derive(Debug, Clone)]
struct Queued {
    key: ModKey,
    /// Hosts announced at `(0, 0)` at the start of the message.
    announced: Vec<HostAddr>,
    /// Hosts whose counters follow.
    hosts: Vec<Undo>,
    msg: ReportStatusRequest,
}

/// The agent's statistics sender: a pure state machine, no clock, no I/O.
///
/// The driver feeds it the balancer's batches ([`record`](Self::record)),
/// tells it about the reporter connection ([`on_connected`](Self::on_connected),
/// [`on_disconnected`](Self::on_disconnected)), calls
/// [`report_tick`](Self::report_tick) every report interval and sends what
/// [`poll_transmit`](Self::poll_transmit) hands out, in order, on the
/// connection it last announced.
///
/// ```
/// use lars_core::{HostAddr, ModKey};
/// use lars_lb::{HostReport, KeyReport};
/// use lars_stats::CumulativeSender;
///
/// let key = ModKey::new(1, 2);
/// let host = HostAddr::new(0x0a00_0001, 80);
/// let calls = |succ, err| KeyReport {
///     key,
///     results: vec![HostReport { host, succ, err, overload: false }],
/// };
/// let mut sender = CumulativeSender::new(0x7f00_0001, 1000);
/// sender.on_connected(1);
/// sender.record([calls(3, 1)]);
/// sender.report_tick(1_700_000_000);
/// // A host seen for the first time is announced at (0, 0), then its
/// // counters, in the same message.
/// let first = sender.poll_transmit().unwrap();
/// let counts: Vec<_> = first.results.iter().map(|r| (r.succ, r.err)).collect();
/// assert_eq!(counts, [(0, 0), (3, 1)]);
/// assert!(sender.poll_transmit().is_none());
/// // Counters are cumulative.
/// sender.record([calls(2, 0)]);
/// sender.report_tick(1_700_000_010);
/// let next = sender.poll_transmit().unwrap();
/// assert_eq!((next.results[0].succ, next.results[0].err), (5, 1));
/// ```
#[derive(Debug)]
pub struct CumulativeSender {
    caller: u32,
    max_pending_keys: usize,
    cum: HashMap<ModKey, HashMap<HostAddr, Cum>>,
    /// Keys with hosts to send at the next tick.
    dirty: HashSet<ModKey>,
    /// Queued by the last tick, not yet handed out.
    outbox: VecDeque<Queued>,
    /// Counters handed out since the last tick: in doubt until the next tick
    /// on the same connection.
    in_doubt: Vec<(ModKey, u32, Vec<HostAddr>)>,
    /// The connection the in-doubt messages went out on.
    sent_epoch: Option<u64>,
    /// The current connection, `None` while disconnected.
    connected: Option<u64>,
    counters: SenderCounters,
}

impl CumulativeSender {
    /// A sender for the agent whose IPv4 is `caller` (host order; the
    /// `caller` field of every message), keeping at most `max_pending_keys`
    /// keys waiting while the reporter is away (at least 1). Starts
    /// disconnected.
    pub fn new(caller: u32, max_pending_keys: usize) -> Self {
        Self {
            caller,
            max_pending_keys: max_pending_keys.max(1),
            cum: HashMap::new(),
            dirty: HashSet::new(),
            outbox: VecDeque::new(),
            in_doubt: Vec::new(),
            sent_epoch: None,
            connected: None,
            counters: SenderCounters::default(),
        }
    }

    /// Folds the calls of one interval (from
    /// `lars_lb::RouteLb::take_report_batches`) into the cumulative counters.
    /// Counters that would pass [`COUNTER_LIMIT`] stay as they are and start
    /// again from the calls after them, announced by a `(0, 0)` report, at
    /// the first tick where the counters before went out and are not in
    /// doubt.
    pub fn record<I: IntoIterator<Item = KeyReport>>(&mut self, batches: I) {
        for batch in batches {
            let hosts = self.cum.entry(batch.key).or_default();
            for r in batch.results {
                let c = hosts.entry(r.host).or_default();
                let calls = (u64::from(r.succ), u64::from(r.err));
                c.unsent = add(c.unsent, calls);
                if c.restart_due {
                    c.carry = add(c.carry, calls);
                } else {
                    let succ = c.succ.checked_add(r.succ).filter(|&v| v <= COUNTER_LIMIT);
                    let err = c.err.checked_add(r.err).filter(|&v| v <= COUNTER_LIMIT);
                    match (succ, err) {
                        (Some(succ), Some(err)) => (c.succ, c.err) = (succ, err),
                        // The counters go out as they are once more; the
                        // next tick starts them again from these calls.
                        _ => (c.restart_due, c.carry) = (true, calls),
                    }
                }
                c.overload = r.overload;
                c.dirty = true;
            }
            self.mark_dirty(batch.key);
        }
    }

    /// The reporter connection `epoch` is up (epochs count connects; a new
    /// one means messages of the previous connection may have been lost).
    /// What was handed out in the last interval on another connection is
    /// sent again at the next tick (cumulative, so idempotent).
    pub fn on_connected(&mut self, epoch: u64) {
        if self.connected.is_some_and(|e| e != epoch) {
            // Switched connections without a disconnect in between.
            self.put_back();
        }
        self.connected = Some(epoch);
        if self.sent_epoch.is_some_and(|e| e != epoch) {
            self.resend_in_doubt();
        }
    }

    /// The reporter connection is down: messages still queued are put back,
    /// those handed out in the last interval are sent again after the next
    /// connect.
    pub fn on_disconnected(&mut self) {
        self.connected = None;
        self.put_back();
        self.resend_in_doubt();
    }

    /// Whether the sender believes the reporter is connected.
    pub fn is_connected(&self) -> bool {
        self.connected.is_some()
    }

    /// The report interval elapsed: when connected, queues one message per
    /// key with new counters (only its hosts that changed), opening with a
    /// `(0, 0)` report of each of its hosts whose counters (re)start at zero
    /// (the announcement and the values in one message, so a reporter that
    /// applies messages in any order still sees the reset first).
    /// `ts` is unix seconds, copied into each message. Messages handed out
    /// before this tick on the same connection are no longer in doubt.
    pub fn report_tick(&mut self, ts: u32) {
        if self.connected.is_none() {
            return;
        }
        for (key, sent, hosts) in self.in_doubt.drain(..) {
            let Some(cum) = self.cum.get_mut(&key) else {
                continue;
            };
            for h in hosts {
                if let Some(c) = cum.get_mut(&h) {
                    c.confirmed_at = c.confirmed_at.max(Some(sent));
                }
            }
        }
        self.sent_epoch = None;
        if self.dirty.is_empty() {
            return;
        }
        let caller = self.caller as i32; // the same 32 bits
        let mut keys: Vec<ModKey> = self.dirty.drain().collect();
        keys.sort_unstable();
        for key in keys {
            let Some(hosts) = self.cum.get_mut(&key) else {
                continue;
            };
            let mut changed: Vec<(HostAddr, &mut Cum)> = hosts
                .iter_mut()
                .filter(|(_, c)| c.dirty)
                .map(|(h, c)| (*h, c))
                .collect();
            if changed.is_empty() {
                continue;
            }
            changed.sort_unstable_by_key(|(h, _)| *h);
            let mut zeros = Vec::new();
            let mut values = Vec::with_capacity(changed.len());
            let mut again = false;
            for (host, c) in changed {
                let age = c.confirmed_at.map_or(0, |t| ts.saturating_sub(t));
                let restart = if c.resend && age < RESEND_WITHIN {
                    // Counters in doubt go again as they are, while the
                    // reporter surely remembers the stream; any restart
                    // waits for the next tick.
                    None
                } else if age >= IDLE_RESTART {
                    // The reporter may forget this stream soon: start again
                    // from what it has not been sent.
                    self.counters.idle_restarts += 1;
                    Some(c.unsent)
                } else if c.restart_due && !c.resend && sub(c.unsent, c.carry) == (0, 0) {
                    // The counters as they stand went out before and are
                    // not in doubt: the restart can follow.
                    self.counters.counter_restarts += 1;
                    Some(c.carry)
                } else {
                    None
                };
                if let Some(calls) = restart {
                    let (kept, dropped) = clamp(calls);
                    (c.succ, c.err) = kept;
                    self.counters.calls_dropped += dropped;
                    (c.restart_due, c.carry, c.announced) = (false, (0, 0), false);
                }
                if !c.announced {
                    c.announced = true;
                    c.confirmed_at = Some(ts);
                    zeros.push(host);
                }
                // A restart held back (the counters go out once more first)
                // goes at the next tick.
                let left = if c.restart_due { c.carry } else { (0, 0) };
                again |= c.restart_due;
                let undo = Undo {
                    host,
                    unsent: sub(c.unsent, left),
                };
                (c.dirty, c.resend) = (c.restart_due, false);
                c.unsent = left;
                values.push((undo, wire_result(host, c.succ, c.err, c.overload)));
            }
            if again {
                self.mark_dirty(key);
            }
            let (modid, cmdid) = key.to_wire();
            // The announcements first, then the values: one message, applied
            // in sequence by any reporter.
            let mut results: Vec<HostCallResult> =
                zeros.iter().map(|&h| wire_result(h, 0, 0, false)).collect();
            let (hosts, vals): (Vec<Undo>, Vec<HostCallResult>) = values.into_iter().unzip();
            results.extend(vals);
            self.outbox.push_back(Queued {
                key,
                announced: zeros,
                hosts,
                msg: ReportStatusRequest {
                    modid,
                    cmdid,
                    caller,
                    results,
                    ts,
                },
            });
        }
    }

    /// The next message to send on the current connection, in order; `None`
    /// when nothing is queued or the reporter is away.
    pub fn poll_transmit(&mut self) -> Option<ReportStatusRequest> {
        let epoch = self.connected?;
        let q = self.outbox.pop_front()?;
        if !q.announced.is_empty() {
            self.counters.announcements += 1;
        }
        self.counters.messages += 1;
        self.in_doubt
            .push((q.key, q.msg.ts, q.hosts.iter().map(|u| u.host).collect()));
        self.sent_epoch = Some(epoch);
        Some(q.msg)
    }

    /// Cumulative `(successes, errors)` of `host` of `key` (since the agent
    /// started or the counters last restarted), as last recorded.
    pub fn cumulative(&self, key: ModKey, host: HostAddr) -> (u32, u32) {
        self.cum
            .get(&key)
            .and_then(|h| h.get(&host))
            .map_or((0, 0), |c| (c.succ, c.err))
    }

    /// Keys waiting for the next tick.
    pub fn pending_keys(&self) -> usize {
        self.dirty.len()
    }

    /// Messages queued and not yet handed out.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// What the sender did so far.
    pub fn counters(&self) -> SenderCounters {
        self.counters
    }

    /// Queued messages were never sent: what queueing them changed is undone
    /// (announcements due again, counters changed again).
    fn put_back(&mut self) {
        // Newest first, so each host ends as it was before the oldest.
        while let Some(q) = self.outbox.pop_back() {
            if let Some(hosts) = self.cum.get_mut(&q.key) {
                for h in &q.announced {
                    if let Some(c) = hosts.get_mut(h) {
                        (c.announced, c.dirty) = (false, true);
                    }
                }
                for u in &q.hosts {
                    let Some(c) = hosts.get_mut(&u.host) else {
                        continue;
                    };
                    c.unsent = add(c.unsent, u.unsent);
                    // Never sent, but its restart (if it carried one) is
                    // done: treat it as lost.
                    (c.resend, c.dirty) = (true, true);
                }
            }
            self.mark_dirty(q.key);
        }
    }

    /// Counters handed out in the last interval may be lost: those hosts go
    /// again at the next tick.
    fn resend_in_doubt(&mut self) {
        self.sent_epoch = None;
        for (key, _, sent) in std::mem::take(&mut self.in_doubt) {
            if let Some(hosts) = self.cum.get_mut(&key) {
                for h in sent {
                    if let Some(c) = hosts.get_mut(&h) {
                        (c.dirty, c.resend) = (true, true);
                    }
                }
            }
            self.counters.resent_keys += 1;
            self.mark_dirty(key);
        }
    }

    fn mark_dirty(&mut self, key: ModKey) {
        if self.dirty.len() >= self.max_pending_keys && !self.dirty.contains(&key) {
            // Its hosts stay dirty: the next batch of this key carries them.
            self.counters.keys_dropped += 1;
            return;
        }
        self.dirty.insert(key);
    }
}

fn add(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

fn sub(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))
}

/// Calls as restarted counters, and how many do not fit under
/// [`COUNTER_LIMIT`] (2^31 calls of one host between two reports).
fn clamp(calls: (u64, u64)) -> ((u32, u32), u64) {
    let limit = u64::from(COUNTER_LIMIT);
    let fit = |v: u64| v.min(limit) as u32; // at most COUNTER_LIMIT: fits
    let dropped = calls.0.saturating_sub(limit) + calls.1.saturating_sub(limit);
    ((fit(calls.0), fit(calls.1)), dropped)
}

fn wire_result(host: HostAddr, succ: u32, err: u32, overload: bool) -> HostCallResult {
    let (ip, port) = host.to_wire();
    HostCallResult {
        ip,
        port,
        succ,
        err,
        overload,
    }
}

#[cfg(test)]
mod tests {
    use lars_lb::HostReport;

    use super::*;

    const CALLER: u32 = 0x7f00_0001;

    fn h(n: u16) -> HostAddr {
        HostAddr::new(0x0a00_0000 | u32::from(n), 80)
    }

    fn calls(key: ModKey, host: HostAddr, succ: u32, err: u32) -> KeyReport {
        KeyReport {
            key,
            results: vec![HostReport {
                host,
                succ,
                err,
                overload: false,
            }],
        }
    }

    fn connected(max_pending: usize) -> CumulativeSender {
        let mut s = CumulativeSender::new(CALLER, max_pending);
        s.on_connected(1);
        s
    }

    fn drain(s: &mut CumulativeSender) -> Vec<ReportStatusRequest> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    /// `(ts, [(succ, err)])` of each message.
    fn counts(msgs: &[ReportStatusRequest]) -> Vec<(u32, Vec<(u32, u32)>)> {
        msgs.iter()
            .map(|m| (m.ts, m.results.iter().map(|r| (r.succ, r.err)).collect()))
            .collect()
    }

    #[test]
    fn counters_are_cumulative_and_only_new_traffic_is_sent() {
        let mut s = connected(10);
        let (a, b) = (ModKey::new(1, 1), ModKey::new(2, 1));
        s.record([calls(a, h(1), 1, 1), calls(a, h(2), 1, 0)]);
        s.report_tick(100);
        let first = drain(&mut s);
        // First the hosts seen for the first time, at (0, 0): the reset the
        // reporter needs before counters that start from zero, in the same
        // message as the counters.
        assert_eq!(
            counts(&first),
            vec![(100, vec![(0, 0), (0, 0), (1, 1), (1, 0)])]
        );
        assert!(first.iter().all(|m| m.caller == CALLER as i32));
        assert_eq!((first[0].modid, first[0].cmdid), (1, 1));
        s.record([calls(a, h(1), 1, 0)]);
        s.report_tick(101);
        s.report_tick(102);
        // Only host 1, with its cumulative counters, no zeros; key b silent.
        assert_eq!(counts(&drain(&mut s)), vec![(101, vec![(2, 1)])]);
        assert_eq!(s.cumulative(a, h(1)), (2, 1));
        assert_eq!(s.cumulative(b, h(1)), (0, 0));
        let c = s.counters();
        assert_eq!((c.messages, c.announcements), (2, 1));
    }

    #[test]
    fn counters_near_the_limit_restart_from_zero_announced() {
        let mut s = connected(10);
        let k = ModKey::new(1, 1);
        s.record([calls(k, h(1), COUNTER_LIMIT - 1, 0)]);
        s.report_tick(1);
        s.record([calls(k, h(1), 1, 0)]);
        s.report_tick(2);
        s.record([calls(k, h(1), 2, 0)]);
        s.report_tick(3);
        assert_eq!(
            counts(&drain(&mut s)),
            vec![
                (1, vec![(0, 0), (COUNTER_LIMIT - 1, 0)]),
                (2, vec![(COUNTER_LIMIT, 0)]),
                (3, vec![(0, 0), (2, 0)]),
            ]
        );
        assert_eq!(s.counters().counter_restarts, 1);
    }

    #[test]
    fn reporter_down_merges_and_bounds_keys_then_resends_after_reconnect() {
        let mut s = connected(1);
        let (a, b) = (ModKey::new(1, 1), ModKey::new(2, 1));
        s.record([calls(a, h(1), 1, 0)]);
        s.report_tick(1);
        let mut sent = drain(&mut s); // on connection 1, in doubt
        s.on_disconnected();
        for _ in 0..3 {
            s.record([calls(a, h(1), 1, 0), calls(b, h(1), 1, 0)]);
            s.report_tick(2);
            assert_eq!(s.poll_transmit(), None);
        }
        assert_eq!(s.pending_keys(), 1);
        assert!(s.counters().keys_dropped >= 1);
        s.on_connected(2);
        s.report_tick(3);
        sent.extend(drain(&mut s));
        // Key a merged: (0, 0) and its count 1, then one message with its
        // cumulative count 4.
        let a_msgs: Vec<_> = sent.iter().filter(|m| m.modid == 1).cloned().collect();
        assert_eq!(
            counts(&a_msgs),
            vec![(1, vec![(0, 0), (1, 0)]), (3, vec![(4, 0)])]
        );
        // Key b was dropped from the pending set while full; its next
        // traffic sends its whole cumulative count, announced.
        s.record([calls(b, h(1), 1, 0)]);
        s.report_tick(4);
        assert_eq!(counts(&drain(&mut s)), vec![(4, vec![(0, 0), (4, 0)])]);
        assert_eq!(s.counters().resent_keys, 1);
    }

    #[test]
    fn a_new_connection_resends_only_the_hosts_in_doubt() {
        let mut s = connected(10);
        let k = ModKey::new(1, 1);
        s.record([calls(k, h(1), 3, 0), calls(k, h(2), 5, 0)]);
        s.report_tick(1);
        drain(&mut s);
        s.report_tick(2); // confirms tick 1
        s.record([calls(k, h(1), 1, 0)]);
        s.report_tick(3);
        assert_eq!(counts(&drain(&mut s)), vec![(3, vec![(4, 0)])]);
        // Epoch 2 without a disconnect: host 1's last counters go again.
        s.on_connected(2);
        s.report_tick(4);
        assert_eq!(counts(&drain(&mut s)), vec![(4, vec![(4, 0)])]);
        // The same epoch again changes nothing.
        s.on_connected(2);
        s.report_tick(5);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn messages_never_handed_out_are_put_back_whole() {
        let mut s = connected(10);
        let k = ModKey::new(1, 1);
        s.record([calls(k, h(1), 3, 1)]);
        s.report_tick(1);
        assert_eq!(s.queued(), 1);
        s.on_disconnected(); // before anything was polled
        assert_eq!((s.queued(), s.pending_keys()), (0, 1));
        assert_eq!(s.poll_transmit(), None);
        s.record([calls(k, h(1), 1, 0)]);
        s.on_connected(2);
        s.report_tick(2);
        // The announcement was never sent: it goes first, then everything.
        assert_eq!(counts(&drain(&mut s)), vec![(2, vec![(0, 0), (4, 1)])]);
        assert_eq!(s.counters().resent_keys, 0);
    }

    #[test]
    fn a_host_silent_for_idle_restart_starts_again_announced() {
        let mut s = connected(10);
        let k = ModKey::new(1, 1);
        s.record([calls(k, h(1), 10, 2), calls(k, h(2), 1, 0)]);
        s.report_tick(1000);
        drain(&mut s);
        // Host 2 keeps reporting; host 1 is silent, then called again.
        for i in 1..=4 {
            s.record([calls(k, h(2), 1, 0)]);
            s.report_tick(1000 + i * IDLE_RESTART / 4);
            drain(&mut s);
        }
        s.record([calls(k, h(1), 3, 0), calls(k, h(2), 1, 0)]);
        s.report_tick(1000 + IDLE_RESTART + 1);
        let msgs = drain(&mut s);
        assert_eq!(msgs.len(), 1);
        // Host 1 (10.0.0.1) restarts from the calls not yet sent, announced
        // first; host 2 continues.
        assert_eq!(counts(&msgs)[0].1, vec![(0, 0), (3, 0), (6, 0)]);
        assert_eq!(msgs[0].results[0].ip, 0x0a00_0001);
        assert_eq!(s.counters().idle_restarts, 1);
    }

    #[test]
    fn nothing_goes_out_while_disconnected() {
        let mut s = CumulativeSender::new(CALLER, 0);
        let k = ModKey::new(1, 1);
        assert!(!s.is_connected());
        s.record([calls(k, h(1), 1, 0)]);
        s.report_tick(1);
        assert_eq!((s.poll_transmit(), s.pending_keys()), (None, 1));
        s.on_connected(7);
        assert!(s.is_connected());
        s.report_tick(2);
        assert_eq!(drain(&mut s).len(), 1);
    }
}
