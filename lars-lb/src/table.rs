//! The dns's pure structures: [`RouteTable`], the double buffer of
//! `ModKey -> hosts`, and [`Subscriptions`], which connection wants which key.

use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use lars_core::{HostAddr, ModKey};

/// One immutable generation of routes: each key's hosts, sorted and unique.
pub type Routes = HashMap<ModKey, Arc<[HostAddr]>>;

/// The dns's route table as a double buffer: readers hold a cheap snapshot
/// (`Arc<Routes>`) and never wait for a reload; a reload builds the next
/// generation aside and swaps it in, reporting which keys changed.
///
/// A plain value type with no lock inside: the dns keeps it in whatever
/// shared cell it likes (e.g. an `RwLock<RouteTable>` held only to clone the
/// `Arc`, or an `ArcSwap<Routes>` fed from [`current`](Self::current)).
///
/// ```
/// use lars_lb::{HostAddr, ModKey, RouteTable};
///
/// let k = ModKey::new(1, 1);
/// let h: HostAddr = "10.0.0.1:80".parse().unwrap();
/// let mut table = RouteTable::default();
/// let snap = table.current(); // a reader's snapshot
/// let changed = table.reload(RouteTable::build([(k, h)]));
/// assert_eq!(changed, vec![k]);
/// assert!(snap.get(&k).is_none()); // the old snapshot is untouched
/// assert_eq!(table.hosts(k).as_deref(), Some(&[h][..]));
/// assert!(table.reload(RouteTable::build([(k, h)])).is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    current: Arc<Routes>,
    version: u64,
}

impl RouteTable {
    /// Builds one generation from `(key, host)` rows (e.g. the `RouteData`
    /// table): hosts grouped by key, sorted, duplicates removed.
    pub fn build(rows: impl IntoIterator<Item = (ModKey, HostAddr)>) -> Routes {
        let mut grouped: HashMap<ModKey, Vec<HostAddr>> = HashMap::new();
        for (k, h) in rows {
            grouped.entry(k).or_default().push(h);
        }
        grouped
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_unstable();
                v.dedup();
                (k, Arc::from(v))
            })
            .collect()
    }

    /// A table holding `routes` (version 1).
    pub fn new(routes: Routes) -> Self {
        let mut t = Self::default();
        t.reload(routes);
        t
    }

    /// A snapshot of the current generation; O(1), never waits.
    pub fn current(&self) -> Arc<Routes> {
        Arc::clone(&self.current)
    }

    /// The hosts of `key` in the current generation.
    pub fn hosts(&self, key: ModKey) -> Option<Arc<[HostAddr]>> {
        self.current.get(&key).cloned()
    }

    /// How many reloads changed something (starts at 0).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Swaps `next` in and returns the keys whose hosts differ (added,
    /// removed or changed), sorted. Host lists are normalised (sorted,
    /// unique) first, so order in `next` does not matter. When nothing
    /// changed the current generation stays (old snapshots stay equal) and
    /// the version does not move. O(keys + hosts).
    pub fn reload(&mut self, mut next: Routes) -> Vec<ModKey> {
        for v in next.values_mut() {
            if !v.is_sorted_by(|a, b| a < b) {
                let mut s = v.to_vec();
                s.sort_unstable();
                s.dedup();
                *v = Arc::from(s);
            }
        }
        let mut changed: Vec<ModKey> = next
            .iter()
            .filter(|(k, v)| self.current.get(*k) != Some(*v))
            .map(|(k, _)| *k)
            .chain(
                self.current
                    .keys()
                    .filter(|k| !next.contains_key(*k))
                    .copied(),
            )
            .collect();
        changed.sort_unstable();
        if !changed.is_empty() {
            self.current = Arc::new(next);
            self.version += 1;
        }
        changed
    }
}

/// A connection's identity in the dns: a counter, never a file descriptor
/// (fds are reused).
pub type ConnId = u64;

/// Which connection subscribed to which key, both ways, so that a reload can
/// push changed keys to their subscribers and a closed connection can be
/// forgotten in O(its keys).
///
/// ```
/// use lars_lb::{ModKey, Subscriptions};
///
/// let (a, b) = (ModKey::new(1, 1), ModKey::new(2, 2));
/// let mut subs = Subscriptions::default();
/// subs.subscribe(7, a);
/// subs.subscribe(7, b);
/// subs.subscribe(8, a);
/// assert_eq!(subs.publish(&[a]), vec![(7, vec![a]), (8, vec![a])]);
/// subs.unsubscribe_all(7);
/// assert_eq!(subs.publish(&[a, b]), vec![(8, vec![a])]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Subscriptions {
    by_key: HashMap<ModKey, HashSet<ConnId>>,
    by_conn: HashMap<ConnId, HashSet<ModKey>>,
}

impl Subscriptions {
    /// Subscribes `conn` to `key`; false when it already was.
    pub fn subscribe(&mut self, conn: ConnId, key: ModKey) -> bool {
        let new = self.by_key.entry(key).or_default().insert(conn);
        if new {
            self.by_conn.entry(conn).or_default().insert(key);
        }
        new
    }

    /// Unsubscribes `conn` from `key`; false when it was not subscribed.
    pub fn unsubscribe(&mut self, conn: ConnId, key: ModKey) -> bool {
        let Some(conns) = self.by_key.get_mut(&key) else {
            return false;
        };
        if !conns.remove(&conn) {
            return false;
        }
        if conns.is_empty() {
            self.by_key.remove(&key);
        }
        if let Some(keys) = self.by_conn.get_mut(&conn) {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
        true
    }

    /// Forgets every subscription of `conn` (it closed); returns how many.
    pub fn unsubscribe_all(&mut self, conn: ConnId) -> usize {
        let Some(keys) = self.by_conn.remove(&conn) else {
            return 0;
        };
        for k in &keys {
            if let Some(conns) = self.by_key.get_mut(k) {
                conns.remove(&conn);
                if conns.is_empty() {
                    self.by_key.remove(k);
                }
            }
        }
        keys.len()
    }

    /// For each connection subscribed to some of `changed`, the keys to push
    /// to it (in `changed` order); connections sorted by id.
    pub fn publish(&self, changed: &[ModKey]) -> Vec<(ConnId, Vec<ModKey>)> {
        let mut per: HashMap<ConnId, Vec<ModKey>> = HashMap::new();
        for k in changed {
            if let Some(conns) = self.by_key.get(k) {
                for c in conns {
                    per.entry(*c).or_default().push(*k);
                }
            }
        }
        let mut out: Vec<(ConnId, Vec<ModKey>)> = per.into_iter().collect();
        out.sort_unstable_by_key(|(c, _)| *c);
        out
    }

    /// The connections subscribed to `key`.
    pub fn subscribers(&self, key: ModKey) -> impl Iterator<Item = ConnId> + '_ {
        self.by_key.get(&key).into_iter().flatten().copied()
    }

    /// The keys `conn` is subscribed to.
    pub fn keys_of(&self, conn: ConnId) -> impl Iterator<Item = ModKey> + '_ {
        self.by_conn.get(&conn).into_iter().flatten().copied()
    }

    /// Whether `conn` is subscribed to `key`.
    pub fn is_subscribed(&self, conn: ConnId, key: ModKey) -> bool {
        self.by_key.get(&key).is_some_and(|c| c.contains(&conn))
    }

    /// Number of subscribed connections.
    pub fn connections(&self) -> usize {
        self.by_conn.len()
    }

    /// Number of keys with at least one subscriber.
    pub fn keys(&self) -> usize {
        self.by_key.len()
    }

    /// Checks that both directions agree (for tests).
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let fwd: usize = self.by_key.values().map(HashSet::len).sum();
        let back: usize = self.by_conn.values().map(HashSet::len).sum();
        if fwd != back {
            return Err(format!("{fwd} key->conn pairs, {back} conn->key pairs"));
        }
        for (k, conns) in &self.by_key {
            if conns.is_empty() {
                return Err(format!("empty set for {k}"));
            }
            for c in conns {
                if !self.by_conn.get(c).is_some_and(|ks| ks.contains(k)) {
                    return Err(format!("{c} -> {k} missing"));
                }
            }
        }
        if self.by_conn.values().any(HashSet::is_empty) {
            return Err("empty set for a connection".into());
        }
        Ok(())
    }
}
