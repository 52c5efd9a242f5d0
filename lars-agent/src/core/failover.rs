//! Which dns an agent talks to, and when it gives up on it: [`DnsFailover`],
//! sans-IO (no socket, no clock: `now` is passed in, randomness is seeded
//! from the agent's identity).
//!
//! - Each agent ranks the dns addresses by rendezvous (highest random
//!   weight) hashing of `(identity, address)`: its own preference
//!   [`order`](DnsFailover::order). A fleet spreads evenly over the dns, and
//!   the agents of a lost dns spread evenly over the survivors (each moves to
//!   the next address in its own order).
//! - It talks to one dns at a time and stays with it while it works (no
//!   flapping back to its first choice); when the current dns is lost, the
//!   next attempts walk the order from the top (first choice first, the
//!   lost one last), so an agent returns to its first choice exactly when
//!   that one is reachable again and the current one is lost.
//! - A dns is lost on disconnect, on a failed connect, and on silence: a
//!   pull outstanding and no frame from the dns for `silence_timeout`. While
//!   nothing is outstanding, a keepalive pull is due every `keepalive`, so a
//!   hung dns is noticed within `keepalive + silence_timeout`.
//! - Connection storms are damped: the first attempt at another dns after a
//!   loss waits uniformly in `[0, failover_jitter]`; further attempts wait
//!   full jitter in `[0, backoff]`, the backoff doubling from `min_backoff`
//!   to `max_backoff` per failed attempt.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use lars_agent::core::{DnsFailover, FailoverConfig, identity_hash};
//!
//! let addrs = vec!["10.0.0.1:7778".parse().unwrap(), "10.0.0.2:7778".parse().unwrap()];
//! let mut f = DnsFailover::new(addrs, identity_hash("host-a:8888"), FailoverConfig::default());
//! let t0 = Instant::now();
//! let (first, at) = f.next_attempt(t0);
//! assert_eq!((first, at), (f.order()[0], t0)); // the first attempt is at once
//! f.on_connected(t0);
//! f.on_lost(t0 + Duration::from_secs(5)); // disconnected: fail over
//! let (second, at) = f.next_attempt(t0 + Duration::from_secs(5));
//! assert_eq!(second, f.order()[1]);
//! assert!(at <= t0 + Duration::from_secs(5) + FailoverConfig::default().failover_jitter);
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A connection that received a frame or lived this long resets the
/// backoff when lost; one lost sooner counts as a failed attempt (a full
/// dns accepting and closing at once).
pub const STABLE_AFTER: Duration = Duration::from_secs(1);

/// The timing of a [`DnsFailover`] (`[dnsserver]` keys of the agent conf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverConfig {
    /// A pull outstanding and no frame for this long: the dns is declared
    /// dead (`[dnsserver] silence_timeout`, default 3 s).
    pub silence_timeout: Duration,
    /// With nothing outstanding, a keepalive pull this long after the last
    /// pull or frame (`[dnsserver] keepalive`, default 1 s).
    pub keepalive: Duration,
    /// The first attempt at another dns after a loss waits uniformly in
    /// `[0, failover_jitter]` (`[dnsserver] failover_jitter`, default 200 ms).
    pub failover_jitter: Duration,
    /// The reconnect backoff starts here (50 ms) ...
    pub min_backoff: Duration,
    /// ... and doubles per failed attempt up to here (2 s).
    pub max_backoff: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            silence_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(1),
            failover_jitter: Duration::from_millis(200),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No attempt yet.
    Start,
    /// Lost (or never connected): the next attempt is being planned.
    Down,
    /// An attempt at `order[idx]`.
    Connecting(usize),
    /// Connected to `order[idx]` since `since`; `framed` once a frame came.
    Up {
        idx: usize,
        since: Instant,
        framed: bool,
    },
}

/// The dns choice and failover of one agent (see the module docs): a pure
/// state machine the driver asks where and when to connect, and tells what
/// happened on the connection.
#[derive(Debug, Clone)]
pub struct DnsFailover {
    order: Vec<SocketAddr>,
    config: FailoverConfig,
    rng: u64,
    link: Link,
    /// Indices of `order` still to try in this round, front first.
    round: VecDeque<usize>,
    /// Failed attempts since the last stable connection (the backoff).
    failures: u32,
    /// The next attempt is the first at another dns after a loss.
    switching: bool,
    last_connected: Option<usize>,
    /// Pulls sent and not answered by a frame.
    outstanding: u32,
    /// When the oldest unanswered pull went out (or the last frame came).
    waiting_since: Option<Instant>,
    /// The last pull or frame.
    last_activity: Option<Instant>,
    failovers: u64,
    silences: u64,
}

impl DnsFailover {
    /// The failover of the agent with identity hash `identity` (see
    /// [`identity_hash`]) over `addrs` (duplicates are dropped; an empty
    /// list makes every attempt go to `127.0.0.1:7778`, the default dns).
    pub fn new(addrs: Vec<SocketAddr>, identity: u64, config: FailoverConfig) -> Self {
        let mut addrs = addrs;
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            addrs.push(SocketAddr::from(([127, 0, 0, 1], 7778)));
        }
        // Highest weight first; ties (vanishingly rare) by address.
        addrs.sort_by_cached_key(|a| std::cmp::Reverse(rendezvous_weight(identity, a)));
        let min_backoff = config.min_backoff.max(Duration::from_millis(1));
        let config = FailoverConfig {
            min_backoff,
            max_backoff: config.max_backoff.max(min_backoff),
            ..config
        };
        Self {
            order: addrs,
            config,
            rng: identity ^ 0x6c61_7273_2d64_6e73, // "lars-dns"
            link: Link::Start,
            round: VecDeque::new(),
            failures: 0,
            switching: false,
            last_connected: None,
            outstanding: 0,
            waiting_since: None,
            last_activity: None,
            failovers: 0,
            silences: 0,
        }
    }

    /// This agent's preference order of the dns addresses.
    pub fn order(&self) -> &[SocketAddr] {
        &self.order
    }

    /// The timing in use.
    pub fn config(&self) -> &FailoverConfig {
        &self.config
    }

    /// Plans the next connect attempt: the address and the instant to try
    /// it at. The first attempt ever is at `now`.
    pub fn next_attempt(&mut self, now: Instant) -> (SocketAddr, Instant) {
        if self.round.is_empty() {
            self.round.extend(0..self.order.len());
        }
        let idx = self.round.pop_front().unwrap_or(0);
        let delay = match self.link {
            Link::Start => Duration::ZERO,
            _ if std::mem::take(&mut self.switching) => self.jitter(self.config.failover_jitter),
            _ => {
                let exp = self.failures.saturating_sub(1).min(20);
                let backoff = self
                    .config
                    .min_backoff
                    .saturating_mul(1 << exp)
                    .min(self.config.max_backoff);
                self.jitter(backoff)
            }
        };
        self.link = Link::Connecting(idx);
        let addr = self.order.get(idx).copied().unwrap_or(self.order[0]);
        (addr, now.checked_add(delay).unwrap_or(now))
    }

    /// The attempt planned last succeeded.
    pub fn on_connected(&mut self, now: Instant) {
        let Link::Connecting(idx) = self.link else {
            return;
        };
        if self.last_connected.is_some_and(|l| l != idx) {
            self.failovers += 1;
        }
        self.last_connected = Some(idx);
        self.link = Link::Up {
            idx,
            since: now,
            framed: false,
        };
        self.outstanding = 0;
        self.waiting_since = None;
        self.last_activity = Some(now);
    }

    /// A frame came from the dns: it is alive; it answers one pull.
    pub fn on_frame(&mut self, now: Instant) {
        if let Link::Up { framed, .. } = &mut self.link {
            *framed = true;
            self.outstanding = self.outstanding.saturating_sub(1);
            self.waiting_since = Some(now);
            self.last_activity = Some(now);
        }
    }

    /// A pull went to the dns (its answer is now outstanding).
    pub fn on_pull_sent(&mut self, now: Instant) {
        if let Link::Up { .. } = self.link {
            if self.outstanding == 0 {
                self.waiting_since = Some(now);
            }
            self.outstanding = self.outstanding.saturating_add(1);
            self.last_activity = Some(now);
        }
    }

    /// The connection is lost (disconnect, or closed for silence) or the
    /// attempt failed. Ignored when already down (a close for silence is
    /// reported again by the connection's own close).
    pub fn on_lost(&mut self, now: Instant) {
        match self.link {
            Link::Up { idx, since, framed } => {
                let stable = framed || now.saturating_duration_since(since) >= STABLE_AFTER;
                if stable {
                    self.failures = 0;
                } else {
                    self.failures = self.failures.saturating_add(1);
                }
                // The others in preference order, the lost one last.
                self.round.clear();
                self.round
                    .extend((0..self.order.len()).filter(|&i| i != idx));
                self.round.push_back(idx);
                self.switching = self.order.len() > 1;
                self.link = Link::Down;
            }
            Link::Connecting(_) => {
                self.failures = self.failures.saturating_add(1);
                self.link = Link::Down;
            }
            Link::Start | Link::Down => {}
        }
        self.outstanding = 0;
        self.waiting_since = None;
    }

    /// Closes for silence when [`is_silent`](Self::is_silent): counts it and
    /// treats the connection as lost. Returns whether it was.
    pub fn check_silence(&mut self, now: Instant) -> bool {
        if !self.is_silent(now) {
            return false;
        }
        self.silences += 1;
        self.on_lost(now);
        true
    }

    /// A pull has been outstanding without any frame from the dns for
    /// `silence_timeout`: the dns is to be declared dead.
    pub fn is_silent(&self, now: Instant) -> bool {
        matches!(self.link, Link::Up { .. })
            && self.outstanding > 0
            && self
                .waiting_since
                .and_then(|t| t.checked_add(self.config.silence_timeout))
                .is_some_and(|d| now >= d)
    }

    /// Whether a keepalive pull is due now (connected, nothing outstanding,
    /// no pull or frame for `keepalive`); when it is, the keepalive timer
    /// restarts (so a driver without a key to pull is not asked again at
    /// once). The driver sends the pull and calls
    /// [`on_pull_sent`](Self::on_pull_sent).
    pub fn keepalive_due(&mut self, now: Instant) -> bool {
        let due = matches!(self.link, Link::Up { .. })
            && self.outstanding == 0
            && self
                .last_activity
                .and_then(|t| t.checked_add(self.config.keepalive))
                .is_some_and(|d| now >= d);
        if due {
            self.last_activity = Some(now);
        }
        due
    }

    /// When [`check_silence`](Self::check_silence) or
    /// [`keepalive_due`](Self::keepalive_due) next has something to do;
    /// `None` while not connected (the attempts are planned by
    /// [`next_attempt`](Self::next_attempt)).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !matches!(self.link, Link::Up { .. }) {
            return None;
        }
        if self.outstanding > 0 {
            self.waiting_since?.checked_add(self.config.silence_timeout)
        } else {
            self.last_activity?.checked_add(self.config.keepalive)
        }
    }

    /// The dns connected now.
    pub fn current(&self) -> Option<SocketAddr> {
        match self.link {
            Link::Up { idx, .. } => self.order.get(idx).copied(),
            _ => None,
        }
    }

    /// Connections established to another dns than the one before.
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// Connections declared dead for silence.
    pub fn silences(&self) -> u64 {
        self.silences
    }

    /// Uniform in `[0, max]` (splitmix64).
    fn jitter(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let r = mix64(self.rng);
        Duration::from_nanos(r % nanos.saturating_add(1).max(1))
    }
}

/// A stable 64-bit hash of an agent's identity (its `[agent] id`, or
/// `hostname:base_port`): the same on every run and every build (FNV-1a,
/// then a 64-bit finalizer), so an agent keeps its dns preference order
/// across restarts.
pub fn identity_hash(identity: &str) -> u64 {
    mix64(fnv1a(identity.as_bytes()))
}

/// The rendezvous weight of `addr` for the agent `identity`.
fn rendezvous_weight(identity: u64, addr: &SocketAddr) -> u64 {
    mix64(identity ^ fnv1a(addr.to_string().as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finalizer: every input bit moves every output bit.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The origin of virtual time.
    #[allow(clippy::disallowed_methods)] // the origin of virtual time, nothing else
    fn origin() -> Instant {
        Instant::now()
    }

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 7778)))
            .collect()
    }

    fn agent(i: u32, n: u8) -> DnsFailover {
        DnsFailover::new(
            addrs(n),
            identity_hash(&format!("host-{i}:8888")),
            FailoverConfig::default(),
        )
    }

    /// Connects `f` to its next attempt at `now`; the address.
    fn connect(f: &mut DnsFailover, now: Instant) -> SocketAddr {
        let (addr, _) = f.next_attempt(now);
        f.on_connected(now);
        addr
    }

    fn within(count: usize, expected: f64, tolerance: f64) -> bool {
        (count as f64 - expected).abs() <= expected * tolerance
    }

    #[test]
    fn ten_thousand_agents_spread_over_3_dns_and_a_lost_dns_splits_evenly() {
        let t0 = origin();
        let mut fleet: Vec<DnsFailover> = (0..10_000).map(|i| agent(i, 3)).collect();
        let a = addrs(3);
        let mut on = [0usize; 3];
        for f in &mut fleet {
            let addr = connect(f, t0);
            assert_eq!(addr, f.order()[0]);
            on[a.iter().position(|x| *x == addr).unwrap()] += 1;
        }
        for (i, n) in on.iter().enumerate() {
            assert!(within(*n, 10_000.0 / 3.0, 0.05), "dns {i}: {n} agents");
        }
        // dns 0 is lost: each of its agents moves to its own next choice.
        let t1 = t0 + Duration::from_secs(10);
        let mut moved = [0usize; 3];
        for f in fleet.iter_mut().filter(|f| f.current() == Some(a[0])) {
            f.on_lost(t1);
            let addr = connect(f, t1);
            assert_ne!(addr, a[0]);
            assert_eq!(addr, f.order()[1]);
            moved[a.iter().position(|x| *x == addr).unwrap()] += 1;
        }
        let half = on[0] as f64 / 2.0;
        assert!(
            within(moved[1], half, 0.05) && within(moved[2], half, 0.05),
            "{moved:?}"
        );
        assert_eq!(
            fleet.iter().map(DnsFailover::failovers).sum::<u64>(),
            on[0] as u64
        );
    }

    #[test]
    fn the_order_is_stable_per_identity_and_differs_between_identities() {
        assert_eq!(agent(7, 3).order(), agent(7, 3).order());
        let firsts: std::collections::HashSet<SocketAddr> =
            (0..20).map(|i| agent(i, 3).order()[0]).collect();
        assert_eq!(firsts.len(), 3);
        // Given in any order, with duplicates: the same preference order.
        let mut shuffled = addrs(3);
        shuffled.reverse();
        shuffled.push(shuffled[0]);
        let f = DnsFailover::new(
            shuffled,
            identity_hash("host-7:8888"),
            FailoverConfig::default(),
        );
        assert_eq!(f.order(), agent(7, 3).order());
    }

    #[test]
    fn no_flapping_back_while_the_current_dns_works_then_first_choice_again() {
        let t0 = origin();
        let mut f = agent(1, 3);
        let o = f.order().to_vec();
        assert_eq!(connect(&mut f, t0), o[0]);
        f.on_frame(t0);
        f.on_lost(t0 + Duration::from_secs(2));
        // The first choice is down: the second one.
        assert_eq!(connect(&mut f, t0 + Duration::from_secs(2)), o[1]);
        // Whatever happens on the working connection, it stays (only a loss
        // makes the driver ask for another attempt).
        for s in 3..60 {
            let now = t0 + Duration::from_secs(s);
            f.on_pull_sent(now);
            f.on_frame(now);
            assert!(!f.check_silence(now));
            assert_eq!(f.current(), Some(o[1]));
        }
        // Lost: the first choice is tried first again, then the third, the
        // lost one last, then the whole order again.
        let t = t0 + Duration::from_secs(60);
        f.on_lost(t);
        let mut tried = Vec::new();
        for _ in 0..4 {
            let (addr, _) = f.next_attempt(t);
            tried.push(addr);
            f.on_lost(t); // the attempt failed
        }
        assert_eq!(tried, vec![o[0], o[2], o[1], o[0]]);
        assert_eq!(connect(&mut f, t), o[1]);
        assert_eq!(
            f.failovers(),
            1,
            "o[0] -> o[1]; o[1] again is not a failover"
        );
    }

    #[test]
    fn silence_with_a_pull_outstanding_is_a_loss_and_keepalives_fill_idle_time() {
        let cfg = FailoverConfig::default();
        let t0 = origin();
        let mut f = agent(3, 2);
        let first = connect(&mut f, t0);
        // Idle: a keepalive after `keepalive`, not before.
        assert_eq!(f.poll_timeout(), Some(t0 + cfg.keepalive));
        assert!(!f.keepalive_due(t0 + cfg.keepalive - Duration::from_millis(1)));
        let t1 = t0 + cfg.keepalive;
        assert!(f.keepalive_due(t1));
        assert!(!f.keepalive_due(t1), "restarted: not due twice");
        f.on_pull_sent(t1);
        assert!(
            !f.keepalive_due(t1 + cfg.keepalive),
            "outstanding: no keepalive"
        );
        // Answered within the timeout: alive.
        f.on_frame(t1 + Duration::from_secs(2));
        assert!(!f.check_silence(t1 + cfg.silence_timeout));
        // A pull unanswered for silence_timeout: dead.
        let t2 = t1 + Duration::from_secs(3);
        f.on_pull_sent(t2);
        f.on_pull_sent(t2 + Duration::from_secs(1)); // a later pull does not extend it
        assert_eq!(f.poll_timeout(), Some(t2 + cfg.silence_timeout));
        assert!(!f.check_silence(t2 + cfg.silence_timeout - Duration::from_millis(1)));
        assert!(f.check_silence(t2 + cfg.silence_timeout));
        assert_eq!(
            (f.silences(), f.current(), f.poll_timeout()),
            (1, None, None)
        );
        // The connection's own close, reported after, changes nothing more.
        f.on_lost(t2 + cfg.silence_timeout);
        let (next, _) = f.next_attempt(t2 + cfg.silence_timeout);
        assert_ne!(next, first);
    }

    #[test]
    fn attempts_are_jittered_within_their_bounds_and_spread() {
        let cfg = FailoverConfig::default();
        let t0 = origin();
        let mut first_delays = Vec::new();
        for i in 0..1000 {
            let mut f = agent(i, 3);
            connect(&mut f, t0);
            f.on_frame(t0);
            let t = t0 + Duration::from_secs(5);
            f.on_lost(t);
            let (_, at) = f.next_attempt(t);
            let d = at - t;
            assert!(d <= cfg.failover_jitter, "{d:?}");
            first_delays.push(d);
            // Then failed attempts: full jitter under a doubling backoff.
            let mut backoff = cfg.min_backoff;
            for _ in 0..10 {
                f.on_lost(t);
                let (_, at) = f.next_attempt(t);
                assert!(at - t <= backoff, "{:?} > {backoff:?}", at - t);
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
        first_delays.sort_unstable();
        // Spread over the window, not bunched (5,000 agents must not
        // reconnect in one millisecond).
        assert!(
            first_delays[99] < Duration::from_millis(40),
            "{:?}",
            first_delays[99]
        );
        assert!(
            first_delays[899] > Duration::from_millis(160),
            "{:?}",
            first_delays[899]
        );
        // Seeded by the identity: the same agent waits the same.
        let run = || {
            let mut f = agent(42, 3);
            connect(&mut f, t0);
            f.on_lost(t0 + Duration::from_secs(5));
            f.next_attempt(t0 + Duration::from_secs(5)).1
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_connection_lost_at_once_without_a_frame_grows_the_backoff() {
        let cfg = FailoverConfig::default();
        let t0 = origin();
        let mut f = DnsFailover::new(addrs(1), 9, cfg);
        assert_eq!(f.next_attempt(t0).1, t0, "the first attempt is at once");
        // A full dns accepts and closes at once, again and again: the
        // failures pile up (the largest delay grows past min_backoff).
        let mut largest = Duration::ZERO;
        for _ in 0..8 {
            f.on_connected(t0);
            f.on_lost(t0);
            let (addr, at) = f.next_attempt(t0);
            assert_eq!(addr, addrs(1)[0]);
            largest = largest.max(at - t0);
        }
        assert!(largest > cfg.min_backoff, "{largest:?}");
        // A stable connection resets it.
        f.on_connected(t0);
        f.on_frame(t0);
        f.on_lost(t0 + Duration::from_secs(1));
        let (_, at) = f.next_attempt(t0 + Duration::from_secs(1));
        assert!(at - (t0 + Duration::from_secs(1)) <= cfg.min_backoff);
    }
}
