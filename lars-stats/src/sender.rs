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
//!   could not tell whether it had them);
//! - with several reporters, one sender per reporter connection: a key moves
//!   between them whole ([`CumulativeSender::take_key`],
//!   [`CumulativeSender::adopt_key`]); the new owner holds it (sends nothing
//!   of it) until [`CumulativeSender::release_key`], then sends every host's
//!   cumulative counters, and a reconnect sends every key in full
//!   ([`CumulativeSender::resend_all`]).

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

/// The statistics of one key, taken out of one [`CumulativeSender`] to be
/// adopted by another (the key moved to another reporter): its hosts'
/// cumulative counters and their announcement and restart state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStats {
    hosts: HashMap<HostAddr, Cum>,
}

impl KeyStats {
    /// Cumulative `(successes, errors)` of `host`.
    pub fn cumulative(&self, host: HostAddr) -> (u32, u32) {
        self.hosts.get(&host).map_or((0, 0), |c| (c.succ, c.err))
    }
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
    /// Keys adopted and not released: nothing of them is queued.
    held: HashSet<ModKey>,
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
            held: HashSet::new(),
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
            if self.held.contains(&key) {
                // Held: stays pending until released.
                self.dirty.insert(key);
                continue;
            }
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

    /// The keys this sender has statistics of.
    pub fn keys(&self) -> impl Iterator<Item = ModKey> + '_ {
        self.cum.keys().copied()
    }

    /// Whether `key` is held (adopted, not released).
    pub fn is_held(&self, key: ModKey) -> bool {
        self.held.contains(&key)
    }

    /// Takes `key` out of this sender (it moves to another reporter): its
    /// messages queued and not handed out are undone first; what was handed
    /// out of it is no longer this sender's concern (the new owner sends
    /// everything). `None` when this sender has nothing of `key`.
    pub fn take_key(&mut self, key: ModKey) -> Option<KeyStats> {
        let mut queued = Vec::new();
        self.outbox.retain(|q| {
            if q.key == key {
                queued.push(q.clone());
                false
            } else {
                true
            }
        });
        // Newest first, so each host ends as it was before the oldest.
        for q in queued.into_iter().rev() {
            self.undo(&q);
        }
        self.in_doubt.retain(|(k, _, _)| *k != key);
        self.dirty.remove(&key);
        self.held.remove(&key);
        self.cum.remove(&key).map(|hosts| KeyStats { hosts })
    }

    /// Takes in `key` from another sender (see [`take_key`](Self::take_key)),
    /// held: nothing of it is queued until [`release_key`](Self::release_key)
    /// (the reporter that had it flushes what it applied meanwhile); then
    /// every host's cumulative counters go, not only those that changed,
    /// with the usual announcement and restart rules (a restart waits one
    /// tick behind them).
    pub fn adopt_key(&mut self, key: ModKey, stats: KeyStats) {
        let mut hosts = stats.hosts;
        for c in hosts.values_mut() {
            (c.dirty, c.resend) = (true, true);
        }
        match self.cum.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().extend(hosts),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(hosts);
            }
        }
        self.held.insert(key);
        self.mark_dirty(key);
    }

    /// Ends the hold of an adopted `key`: its counters go at the next tick.
    pub fn release_key(&mut self, key: ModKey) {
        if self.held.remove(&key) && self.cum.contains_key(&key) {
            self.mark_dirty(key);
        }
    }

    /// Every host of every key goes again at the next tick, as it is (a new
    /// connection to a reporter that may have restarted and lost rows it had
    /// not written: cumulative counters make the resend exact). Counters too
    /// old to resend ([`RESEND_WITHIN`]) restart instead, announced.
    pub fn resend_all(&mut self) {
        let keys: Vec<ModKey> = self.cum.keys().copied().collect();
        for key in keys {
            if let Some(hosts) = self.cum.get_mut(&key) {
                for c in hosts.values_mut() {
                    (c.dirty, c.resend) = (true, true);
                }
            }
            self.mark_dirty(key);
        }
    }

    /// Queued messages were never sent: what queueing them changed is undone
    /// (announcements due again, counters changed again).
    fn put_back(&mut self) {
        // Newest first, so each host ends as it was before the oldest.
        while let Some(q) = self.outbox.pop_back() {
            self.undo(&q);
        }
    }

    /// Undoes what queueing `q` changed.
    fn undo(&mut self, q: &Queued) {
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

    /// Three reporters over one shared store: keys move at random between
    /// them (take, adopt held, release a few ticks later), links drop and
    /// come back, the receiver a key moves to re-reads its streams from the
    /// store (as a lars reporter does for streams it has not updated live):
    /// the deltas add up to exactly the calls recorded.
    #[test]
    fn random_moves_between_three_reporters_keep_totals_exact() {
        use crate::{CallStatusRow, Receiver, Windows};

        /// xorshift64*, seeded per case.
        struct Rng(u64);
        impl Rng {
            fn below(&mut self, n: u64) -> u64 {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
            }
        }

        let keys = [ModKey::new(1, 1), ModKey::new(2, 1), ModKey::new(3, 1)];
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut senders: Vec<CumulativeSender> =
                (0..3).map(|_| CumulativeSender::new(CALLER, 100)).collect();
            let mut epochs = [1u64; 3];
            for (i, s) in senders.iter_mut().enumerate() {
                s.on_connected(epochs[i]);
            }
            let mut receivers: Vec<Receiver> = (0..3)
                .map(|_| Receiver::new().with_reload_after(0))
                .collect();
            let mut windows = Windows::new();
            // The store: the last counters applied of each stream.
            let mut store: HashMap<(ModKey, HostAddr), (u32, u32, i64)> = HashMap::new();
            let mut owner: HashMap<ModKey, usize> =
                keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
            let mut holds: Vec<(u32, ModKey)> = Vec::new();
            let (mut recorded, mut counted) = ((0u64, 0u64), (0u64, 0u64));
            let mut ts = 1_000u32;
            for _ in 0..150 {
                ts += 1;
                let now = i64::from(ts);
                match rng.below(10) {
                    0 => {
                        // A key moves to another reporter, held.
                        let key = keys[rng.below(3) as usize];
                        let from = owner[&key];
                        let to = (from + 1 + rng.below(2) as usize) % 3;
                        if let Some(st) = senders[from].take_key(key) {
                            senders[to].adopt_key(key, st);
                            holds.retain(|(_, k)| *k != key);
                            holds.push((ts + 1 + rng.below(3) as u32, key));
                        }
                        owner.insert(key, to);
                    }
                    1 => {
                        // A link drops (messages handed out may be lost)
                        // and comes back as a new epoch.
                        let l = rng.below(3) as usize;
                        senders[l].on_disconnected();
                        epochs[l] += 1;
                        senders[l].on_connected(epochs[l]);
                        senders[l].resend_all();
                    }
                    _ => {}
                }
                for (at, key) in holds.clone() {
                    if at <= ts {
                        senders[owner[&key]].release_key(key);
                    }
                }
                holds.retain(|(at, _)| *at > ts);
                let key = keys[rng.below(3) as usize];
                let host = h(rng.below(2) as u16 + 1);
                let (succ, err) = (rng.below(5) as u32, rng.below(2) as u32);
                recorded = (recorded.0 + u64::from(succ), recorded.1 + u64::from(err));
                senders[owner[&key]].record([calls(key, host, succ, err)]);
                for l in 0..3 {
                    senders[l].report_tick(ts);
                    match rng.below(8) {
                        // Left queued: a move may take them back.
                        0 | 1 => {}
                        // Handed out, and the connection breaks: lost.
                        2 => {
                            drain(&mut senders[l]);
                            senders[l].on_disconnected();
                            epochs[l] += 1;
                            senders[l].on_connected(epochs[l]);
                            senders[l].resend_all();
                        }
                        _ => {
                            for msg in drain(&mut senders[l]) {
                                let (rx, st) = (&mut receivers[l], &mut store);
                                apply(rx, &mut windows, st, &msg, now, &mut counted);
                            }
                        }
                    }
                }
            }
            // Every hold ends, the links stay up: everything arrives.
            for (_, key) in holds.drain(..) {
                senders[owner[&key]].release_key(key);
            }
            for _ in 0..3 {
                ts += 1;
                for l in 0..3 {
                    senders[l].report_tick(ts);
                    for msg in drain(&mut senders[l]) {
                        let (rx, st) = (&mut receivers[l], &mut store);
                        apply(rx, &mut windows, st, &msg, i64::from(ts), &mut counted);
                    }
                }
            }
            assert_eq!(counted, recorded, "seed {seed}");
        }

        /// A reporter applies `msg`: it re-reads the streams it has not
        /// updated live from the store first, then counts the deltas and
        /// writes the counters to the store.
        fn apply(
            rx: &mut Receiver,
            windows: &mut Windows,
            store: &mut HashMap<(ModKey, HostAddr), (u32, u32, i64)>,
            msg: &ReportStatusRequest,
            now: i64,
            counted: &mut (u64, u64),
        ) {
            let key = ModKey::from_wire(msg.modid, msg.cmdid);
            if rx.reload_needed(msg, now).is_some() {
                let rows: Vec<CallStatusRow> = store
                    .iter()
                    .filter(|((k, _), _)| *k == key)
                    .map(|((k, host), (succ, err, ts))| CallStatusRow {
                        key: *k,
                        host: *host,
                        caller: CALLER,
                        succ_cnt: u64::from(*succ),
                        err_cnt: u64::from(*err),
                        ts: *ts,
                        overload: false,
                    })
                    .collect();
                rx.reload(msg, rows, now);
            }
            let r = rx.receive(msg, now, windows);
            *counted = (counted.0 + r.succ, counted.1 + r.err);
            for res in &msg.results {
                if let Some(host) = HostAddr::from_wire(res.ip, res.port) {
                    store.insert((key, host), (res.succ, res.err, now));
                }
            }
            // Flushed at once: the store is never behind this reporter.
            let _ = rx.take_batch();
            rx.set_flushed_through(rx.batches_taken());
        }
    }
}
