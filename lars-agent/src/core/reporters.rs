//! Several reporters: each key's statistics go to one reporter link, its
//! owner on a consistent-hash ring ([`ReporterRing`]) among the links that
//! are available; one [`CumulativeSender`] per link, keys moved between them
//! whole. Sans-IO: `now` is passed in.
//!
//! The agent's half of the counter contract (docs/agent.md, docs/stats.md):
//! - a link is available while connected and for `failover_grace` after it
//!   was lost; then its keys go to the next available link on the ring, and
//!   back when it is connected again;
//! - a key that moves (either way) is held for `handoff_hold` (longer than
//!   the reporters' flush interval, so the reporter that had it has written
//!   what it applied), then every host's cumulative counters go to the new
//!   owner, which re-reads the stream's persisted counters first;
//! - a link that connects (a new epoch) gets every key it owns in full.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use lars_core::proto::ReportStatusRequest;
use lars_core::ring::HashRing;
use lars_core::{HostAddr, ModKey};
use lars_lb::KeyReport;
use lars_stats::{CumulativeSender, SenderCounters};

/// The consistent-hash ring of the reporter links: a key's owner is
/// [`HashRing::worker`] (`lars_core::HashRing` with its default points per
/// link) when that link is available, else the next available link
/// clockwise on the ring ([`HashRing::worker_among`]). The keys of a lost
/// link thus spread over the others, and only they move.
#[derive(Debug, Clone)]
pub struct ReporterRing {
    ring: HashRing,
}

impl ReporterRing {
    /// The ring of `links` reporter links (at least 1).
    pub fn new(links: usize) -> Self {
        Self {
            ring: HashRing::new(links.max(1)),
        }
    }

    /// The number of links.
    pub fn links(&self) -> usize {
        self.ring.workers()
    }

    /// The owner of `key` when every link is available.
    pub fn primary(&self, key: ModKey) -> usize {
        self.ring.worker(key)
    }

    /// The owner of `key` among the links for which `available` holds: the
    /// primary if available, else the next available link on the ring; the
    /// primary when none is.
    pub fn owner(&self, key: ModKey, available: impl Fn(usize) -> bool) -> usize {
        self.ring.worker_among(key, available)
    }
}

/// One reporter link as a core sees it (status pages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkView {
    /// Connected now.
    pub connected: bool,
    /// Keys whose statistics go to this link.
    pub keys: usize,
    /// Keys waiting to be sent on it (held keys included).
    pub pending: usize,
    /// Keys held after a move (nothing of them is sent until the hold
    /// ends).
    pub held: usize,
}

#[derive(Debug)]
struct Link {
    sender: CumulativeSender,
    connected: bool,
    /// Lost (or not connected yet) and still available until then.
    grace_until: Option<Instant>,
}

/// The reporter links of one core and the owner of each key.
#[derive(Debug)]
pub(crate) struct Reporters {
    links: Vec<Link>,
    ring: ReporterRing,
    owner: HashMap<ModKey, usize>,
    /// Held keys by the end of their hold.
    holds: BTreeSet<(Instant, ModKey)>,
    hold_of: HashMap<ModKey, Instant>,
    grace: Duration,
    hold: Duration,
    /// Links never connected got their first grace.
    started: bool,
    handoffs: u64,
    /// The link polled first (the one that last had a message).
    next_poll: usize,
}

impl Reporters {
    /// `links` links (at least 1), all disconnected.
    pub(crate) fn new(
        links: usize,
        caller: u32,
        max_pending_keys: usize,
        grace: Duration,
        hold: Duration,
    ) -> Self {
        let ring = ReporterRing::new(links);
        Self {
            links: (0..ring.links())
                .map(|_| Link {
                    sender: CumulativeSender::new(caller, max_pending_keys),
                    connected: false,
                    grace_until: None,
                })
                .collect(),
            ring,
            owner: HashMap::new(),
            holds: BTreeSet::new(),
            hold_of: HashMap::new(),
            grace,
            hold,
            started: false,
            handoffs: 0,
            next_poll: 0,
        }
    }

    /// The first time the core sees time: links not connected yet get a
    /// grace from now (they are starting with the agent).
    fn start(&mut self, now: Instant) {
        if !std::mem::replace(&mut self.started, true) {
            for l in &mut self.links {
                if !l.connected {
                    l.grace_until = now.checked_add(self.grace);
                }
            }
        }
    }

    fn available(&self, link: usize, now: Instant) -> bool {
        self.links
            .get(link)
            .is_some_and(|l| l.connected || l.grace_until.is_some_and(|t| now < t))
    }

    fn desired(&self, key: ModKey, now: Instant) -> usize {
        self.ring.owner(key, |l| self.available(l, now))
    }

    /// Link `link`'s connection `epoch` is up.
    pub(crate) fn on_connected(&mut self, link: usize, epoch: u64, now: Instant) {
        self.start(now);
        let Some(l) = self.links.get_mut(link) else {
            tracing::warn!(link, "connect of an unknown reporter link ignored");
            return;
        };
        l.sender.on_connected(epoch);
        l.sender.resend_all();
        l.connected = true;
        l.grace_until = None;
        self.rebalance(now);
    }

    /// Link `link` is lost: available for the grace, then its keys move.
    pub(crate) fn on_disconnected(&mut self, link: usize, now: Instant) {
        self.start(now);
        let grace = self.grace;
        let Some(l) = self.links.get_mut(link) else {
            tracing::warn!(link, "loss of an unknown reporter link ignored");
            return;
        };
        l.sender.on_disconnected();
        if l.connected {
            l.grace_until = now.checked_add(grace);
        }
        l.connected = false;
        self.rebalance(now);
    }

    /// Folds one interval's calls into the senders of the keys' owners.
    pub(crate) fn record(&mut self, batches: Vec<KeyReport>, now: Instant) {
        self.start(now);
        for batch in batches {
            let link = match self.owner.get(&batch.key) {
                Some(&l) => l,
                None => {
                    let l = self.desired(batch.key, now);
                    self.owner.insert(batch.key, l);
                    l
                }
            };
            if let Some(l) = self.links.get_mut(link) {
                l.sender.record([batch]);
            }
        }
    }

    /// The statistics tick of every link.
    pub(crate) fn report_tick(&mut self, unix: u32) {
        for l in &mut self.links {
            l.sender.report_tick(unix);
        }
    }

    /// Whether another tick should follow: a connected link has messages
    /// queued or keys pending.
    pub(crate) fn wants_tick(&self) -> bool {
        self.links.iter().any(|l| {
            l.sender.is_connected() && (l.sender.queued() > 0 || l.sender.pending_keys() > 0)
        })
    }

    /// The next message and its link (each link's messages in order).
    pub(crate) fn poll_transmit(&mut self) -> Option<(usize, ReportStatusRequest)> {
        let n = self.links.len();
        for i in 0..n {
            let link = (self.next_poll + i) % n;
            if let Some(msg) = self.links.get_mut(link)?.sender.poll_transmit() {
                self.next_poll = link;
                return Some((link, msg));
            }
        }
        None
    }

    /// When a hold or a grace ends next.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let grace = self
            .links
            .iter()
            .filter(|l| !l.connected)
            .filter_map(|l| l.grace_until)
            .min();
        let hold = self.holds.first().map(|h| h.0);
        grace.into_iter().chain(hold).min()
    }

    /// Ends the holds and graces due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.holds.first() {
            if at > now {
                break;
            }
            self.holds.pop_first();
            self.hold_of.remove(&key);
            if let Some(l) = self.owner.get(&key).and_then(|&l| self.links.get_mut(l)) {
                l.sender.release_key(key);
            }
        }
        let mut expired = false;
        for l in &mut self.links {
            if !l.connected && l.grace_until.is_some_and(|t| t <= now) {
                l.grace_until = None;
                expired = true;
            }
        }
        if expired {
            self.rebalance(now);
        }
    }

    /// Moves every key whose owner changed.
    fn rebalance(&mut self, now: Instant) {
        let mut moves: Vec<(ModKey, usize, usize)> = self
            .owner
            .iter()
            .filter_map(|(&key, &from)| {
                let to = self.desired(key, now);
                (to != from).then_some((key, from, to))
            })
            .collect();
        moves.sort_unstable();
        if !moves.is_empty() {
            tracing::info!(
                keys = moves.len(),
                "statistics keys move to other reporters"
            );
        }
        for (key, from, to) in moves {
            self.move_key(key, from, to, now);
        }
    }

    /// `key` goes from link `from` to link `to`, held.
    fn move_key(&mut self, key: ModKey, from: usize, to: usize, now: Instant) {
        self.owner.insert(key, to);
        let Some(stats) = self
            .links
            .get_mut(from)
            .and_then(|l| l.sender.take_key(key))
        else {
            return;
        };
        let Some(dest) = self.links.get_mut(to) else {
            return;
        };
        dest.sender.adopt_key(key, stats);
        self.handoffs += 1;
        if let Some(old) = self.hold_of.remove(&key) {
            self.holds.remove(&(old, key));
        }
        let until = now.checked_add(self.hold).unwrap_or(now);
        self.holds.insert((until, key));
        self.hold_of.insert(key, until);
    }

    /// Keys waiting on any link.
    pub(crate) fn pending_keys(&self) -> usize {
        self.links.iter().map(|l| l.sender.pending_keys()).sum()
    }

    /// Cumulative counters of `host` of `key`, from its owner.
    pub(crate) fn cumulative(&self, key: ModKey, host: HostAddr) -> (u32, u32) {
        self.owner
            .get(&key)
            .and_then(|&l| self.links.get(l))
            .map_or((0, 0), |l| l.sender.cumulative(key, host))
    }

    /// The senders' counters, summed.
    pub(crate) fn counters(&self) -> SenderCounters {
        let mut sum = SenderCounters::default();
        for l in &self.links {
            let c = l.sender.counters();
            sum.messages += c.messages;
            sum.announcements += c.announcements;
            sum.keys_dropped += c.keys_dropped;
            sum.counter_restarts += c.counter_restarts;
            sum.idle_restarts += c.idle_restarts;
            sum.resent_keys += c.resent_keys;
            sum.calls_dropped += c.calls_dropped;
        }
        sum
    }

    /// Keys moved to another link so far.
    pub(crate) fn handoffs(&self) -> u64 {
        self.handoffs
    }

    /// The owner link of `key`, if it has statistics.
    pub(crate) fn owner_of(&self, key: ModKey) -> Option<usize> {
        self.owner.get(&key).copied()
    }

    /// Each link as status pages show it.
    pub(crate) fn views(&self) -> Vec<LinkView> {
        let mut views: Vec<LinkView> = self
            .links
            .iter()
            .map(|l| LinkView {
                connected: l.connected,
                pending: l.sender.pending_keys(),
                ..LinkView::default()
            })
            .collect();
        for (key, &link) in &self.owner {
            if let (Some(v), Some(l)) = (views.get_mut(link), self.links.get(link)) {
                v.keys += 1;
                v.held += usize::from(l.sender.is_held(*key));
            }
        }
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_places_keys_as_hash_ring_and_a_lost_link_spreads_over_the_others() {
        let ring = ReporterRing::new(3);
        let hash_ring = HashRing::new(3);
        let mut moved = [0usize; 3];
        for i in 0..30_000u32 {
            let key = ModKey::new(i / 100 + 1, i % 100 + 1);
            assert_eq!(ring.owner(key, |_| true), hash_ring.worker(key));
            if ring.primary(key) == 0 {
                let to = ring.owner(key, |l| l != 0);
                assert_ne!(to, 0);
                moved[to] += 1;
            } else {
                // Keys of other links stay where they are.
                assert_eq!(ring.owner(key, |l| l != 0), ring.primary(key));
            }
        }
        let (a, b) = (moved[1] as f64, moved[2] as f64);
        assert!((a - b).abs() / (a + b) < 0.2, "{moved:?}");
        assert_eq!(
            ring.owner(ModKey::new(1, 1), |_| false),
            ring.primary(ModKey::new(1, 1))
        );
    }
}
