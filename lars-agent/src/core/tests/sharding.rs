//! Several reporters in virtual time: keys spread over 3 links by the ring,
//! a lost link keeps its keys for the grace, then they move (held, then in
//! full) and come back; the caller never changes; the reporters, re-reading
//! stale streams from their shared store, count every call exactly once.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lars_core::proto::ReportStatusRequest;
use lars_core::{HostAddr, ModKey};
use lars_lb::{LoadBalanceConfig, Outcome};

use super::util::{UNIX_START, h};
use crate::core::{AgentCore, CoreConfig, ReporterRing, Transmit};

const GRACE: Duration = Duration::from_secs(10);
const HOLD: Duration = Duration::from_secs(5);
/// A stream not updated live for this long is re-read from the store
/// before a report is applied (the reporters' rule).
const STALE: Duration = Duration::from_secs(2);

/// One reporter: what arrived, and its memory of each stream.
#[derive(Debug, Default)]
struct FakeLink {
    connected: bool,
    epoch: u64,
    messages: Vec<ReportStatusRequest>,
    /// (succ, err, last live update) per stream.
    last: HashMap<(ModKey, HostAddr), (u32, u32, Instant)>,
}

/// Three reporters over one store, one core.
struct Fleet {
    now: Instant,
    start: Instant,
    core: AgentCore,
    links: Vec<FakeLink>,
    /// The shared store: last counters written per stream.
    store: HashMap<(ModKey, HostAddr), (u32, u32)>,
    /// Calls counted (deltas summed over every reporter).
    counted: HashMap<(ModKey, HostAddr), (u64, u64)>,
    /// Calls made.
    made: HashMap<(ModKey, HostAddr), (u64, u64)>,
    callers: HashSet<i32>,
}

impl Fleet {
    fn new(keys: &[ModKey]) -> Self {
        #[allow(clippy::disallowed_methods)] // the origin of virtual time, nothing else
        let start = Instant::now();
        let mut core =
            AgentCore::new(CoreConfig::new(LoadBalanceConfig::default()).reporters(3, GRACE, HOLD));
        let routes: Vec<(ModKey, Vec<HostAddr>)> = keys
            .iter()
            .map(|&k| (k, vec![h("10.0.0.1:80"), h("10.0.0.2:80")]))
            .collect();
        core.restore(&routes, start);
        let mut f = Self {
            now: start,
            start,
            core,
            links: (0..3).map(|_| FakeLink::default()).collect(),
            store: HashMap::new(),
            counted: HashMap::new(),
            made: HashMap::new(),
            callers: HashSet::new(),
        };
        for l in 0..3 {
            f.up(l);
        }
        f
    }

    fn unix(&self) -> u32 {
        UNIX_START + u32::try_from(self.now.duration_since(self.start).as_secs()).unwrap()
    }

    fn up(&mut self, l: usize) {
        let link = &mut self.links[l];
        link.connected = true;
        link.epoch += 1;
        let epoch = link.epoch;
        // Each link sees another local address: only the first one counts.
        let caller = Ipv4Addr::new(10, 9, 9, u8::try_from(l + 1).unwrap());
        self.core.on_reporter_connected(l, epoch, caller, self.now);
        self.drive();
    }

    fn down(&mut self, l: usize) {
        self.links[l].connected = false;
        self.core.on_reporter_disconnected(l, self.now);
        self.drive();
    }

    fn drive(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            match t {
                Transmit::Reporter { link, msg } => self.receive(link, msg),
                Transmit::Dns(_) | Transmit::DnsUnsubscribe(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A reporter applies `msg` (sent while its link is down: lost).
    fn receive(&mut self, l: usize, msg: ReportStatusRequest) {
        assert!(
            self.links[l].connected,
            "a message for link {l}, which is down"
        );
        self.callers.insert(msg.caller);
        let key = ModKey::from_wire(msg.modid, msg.cmdid);
        let now = self.now;
        for r in &msg.results {
            let host = HostAddr::from_wire(r.ip, r.port).unwrap();
            let stream = (key, host);
            let link = &mut self.links[l];
            let (old_s, old_e) = match link.last.get(&stream) {
                Some(&(s, e, live)) if now.duration_since(live) < STALE => (s, e),
                // Stale or unknown: re-read from the store.
                _ => self.store.get(&stream).copied().unwrap_or((0, 0)),
            };
            let delta = |new: u32, old: u32| u64::from(if new >= old { new - old } else { new });
            let c = self.counted.entry(stream).or_default();
            c.0 += delta(r.succ, old_s);
            c.1 += delta(r.err, old_e);
            link.last.insert(stream, (r.succ, r.err, now));
            self.store.insert(stream, (r.succ, r.err));
        }
        self.links[l].messages.push(msg);
    }

    fn call(&mut self, key: ModKey, host: &str, ok: bool) {
        let host = h(host);
        let outcome = if ok {
            Outcome::from_retcode(0, 0)
        } else {
            Outcome::from_retcode(1, 0)
        };
        self.core.report(key, host, outcome, self.now);
        let m = self.made.entry((key, host)).or_default();
        if ok {
            m.0 += 1;
        } else {
            m.1 += 1;
        }
        self.drive();
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(at) = self.core.poll_timeout().filter(|&at| at <= end) {
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now, self.unix());
            self.drive();
        }
        self.now = end;
    }

    /// Calls on every key for `secs` seconds, one round per 100 ms.
    fn traffic(&mut self, keys: &[ModKey], secs: u64) {
        for i in 0..secs * 10 {
            for &k in keys {
                self.call(k, "10.0.0.1:80", true);
                if i % 3 == 0 {
                    self.call(k, "10.0.0.2:80", i % 2 == 0);
                }
            }
            self.advance(Duration::from_millis(100));
        }
    }

    /// The links that received anything about `key` since message `from[l]`.
    fn links_of(&self, key: ModKey, from: &[usize]) -> Vec<usize> {
        (0..3)
            .filter(|&l| {
                self.links[l].messages[from[l]..]
                    .iter()
                    .any(|m| ModKey::from_wire(m.modid, m.cmdid) == key)
            })
            .collect()
    }

    fn marks(&self) -> Vec<usize> {
        self.links.iter().map(|l| l.messages.len()).collect()
    }
}

#[test]
fn keys_spread_move_after_the_grace_held_then_in_full_and_come_back_exactly() {
    let keys: Vec<ModKey> = (1..=30).map(|i| ModKey::new(i, 1)).collect();
    let ring = ReporterRing::new(3);
    let mut f = Fleet::new(&keys);
    f.traffic(&keys, 3);
    // Each key's statistics went to its ring owner only; every link has some.
    let mut per_link = [0usize; 3];
    for &k in &keys {
        assert_eq!(f.links_of(k, &[0, 0, 0]), vec![ring.primary(k)], "{k}");
        assert_eq!(f.core.reporter_of(k), Some(ring.primary(k)));
        per_link[ring.primary(k)] += 1;
    }
    assert!(per_link.iter().all(|&n| n > 0), "{per_link:?}");
    let lost: Vec<ModKey> = keys
        .iter()
        .copied()
        .filter(|&k| ring.primary(k) == 1)
        .collect();

    // Link 1 is lost. During the grace its keys wait (nothing anywhere).
    f.down(1);
    let mark = f.marks();
    f.traffic(&keys, 9);
    for &k in &lost {
        assert_eq!(
            f.links_of(k, &mark),
            Vec::<usize>::new(),
            "{k} during the grace"
        );
        assert_eq!(f.core.reporter_of(k), Some(1));
    }
    // The grace ends: they move to the next link on the ring, held.
    f.traffic(&keys, 2);
    let moved_at = f.marks();
    let views = f.core.reporter_links();
    assert_eq!(views[1].keys, 0, "{views:?}");
    assert_eq!(views[0].held + views[2].held, lost.len(), "{views:?}");
    assert_eq!(f.core.counters().reporter_handoffs, lost.len() as u64);
    for &k in &lost {
        let to = ring.owner(k, |l| l != 1);
        assert_eq!(f.core.reporter_of(k), Some(to));
    }
    f.traffic(&keys, 3);
    for &k in &lost {
        assert_eq!(f.links_of(k, &moved_at), Vec::<usize>::new(), "{k} held");
    }
    // After the hold: every host's counters, at once, to the new owner.
    f.traffic(&keys, 3);
    for &k in &lost {
        let to = ring.owner(k, |l| l != 1);
        assert_eq!(f.links_of(k, &moved_at), vec![to], "{k}");
        let first = f.links[to].messages[moved_at[to]..]
            .iter()
            .find(|m| ModKey::from_wire(m.modid, m.cmdid) == k)
            .unwrap();
        let hosts: HashSet<i32> = first.results.iter().map(|r| r.ip).collect();
        assert_eq!(
            hosts.len(),
            2,
            "{k}: every host in the first message: {first:?}"
        );
    }
    // Link 1 is back: its keys return (held again), then go there in full.
    f.up(1);
    let back = f.marks();
    for &k in &lost {
        assert_eq!(f.core.reporter_of(k), Some(1));
    }
    f.traffic(&keys, 4);
    for &k in &lost {
        assert_eq!(
            f.links_of(k, &back),
            Vec::<usize>::new(),
            "{k} held on return"
        );
    }
    f.traffic(&keys, 3);
    for &k in &lost {
        assert_eq!(f.links_of(k, &back), vec![1], "{k} back on its owner");
    }
    // Everything settles: each call counted exactly once, one caller.
    f.advance(Duration::from_secs(3));
    assert_eq!(f.counted, f.made);
    assert_eq!(f.callers.len(), 1, "{:?}", f.callers);
    assert_eq!(
        f.callers.iter().next().copied(),
        Some(u32::from(Ipv4Addr::new(10, 9, 9, 1)) as i32)
    );
    assert_eq!(f.core.counters().reporter_handoffs, 2 * lost.len() as u64);
}

#[test]
fn a_reconnected_link_gets_every_key_it_owns_in_full() {
    let keys: Vec<ModKey> = (1..=12).map(|i| ModKey::new(i, 2)).collect();
    let ring = ReporterRing::new(3);
    let mut f = Fleet::new(&keys);
    f.traffic(&keys, 2);
    // Only host 1 keeps being called: host 2's counters are old news.
    for _ in 0..20 {
        for &k in &keys {
            f.call(k, "10.0.0.1:80", true);
        }
        f.advance(Duration::from_millis(100));
    }
    // Link 0 drops and is back at once (a reporter restarted: a new epoch).
    f.down(0);
    f.up(0);
    let mark = f.marks();
    f.advance(Duration::from_secs(2));
    for &k in keys.iter().filter(|&&k| ring.primary(k) == 0) {
        let msg = f.links[0].messages[mark[0]..]
            .iter()
            .find(|m| ModKey::from_wire(m.modid, m.cmdid) == k)
            .unwrap_or_else(|| panic!("{k} not resent"));
        assert_eq!(msg.results.len(), 2, "{k}: both hosts resent: {msg:?}");
    }
    // The other links were not disturbed.
    for &k in keys.iter().filter(|&&k| ring.primary(k) != 0) {
        assert!(f.links_of(k, &mark).is_empty(), "{k}");
    }
    assert_eq!(f.counted, f.made);
    assert_eq!(f.core.counters().reporter_handoffs, 0);
}
