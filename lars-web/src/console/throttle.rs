//! Failed logins counted per (user name, client address), in memory, with
//! exponential backoff. Time is passed in (`now`) so the rules are tested
//! without sleeping.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::LoginThrottle;

/// Who failed: a user name and where the attempts come from (an IPv6 client
/// by its /64, so one host's address range counts as one address).
type Key = (String, IpAddr);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

/// Failed-login counts by (name, address).
#[derive(Debug)]
pub(crate) struct Throttle {
    cfg: LoginThrottle,
    map: Mutex<HashMap<Key, Entry>>,
}

/// The address a client is counted under.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

impl Throttle {
    pub(crate) fn new(cfg: LoginThrottle) -> Self {
        Self {
            cfg: LoginThrottle {
                max_entries: cfg.max_entries.max(1),
                ..cfg
            },
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        // Every mutation is one insert/remove/retain: a poisoned map is still
        // whole.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `name` from `ip` is still refused without a check; `None`
    /// when it may try.
    pub(crate) fn blocked(&self, name: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.lock();
        let e = map.get(&(name.to_owned(), client_key(ip)))?;
        (e.blocked_until > now).then(|| e.blocked_until - now)
    }

    /// The block after failure number `n` (1-based).
    fn backoff(&self, n: u32) -> Duration {
        let over = n.saturating_sub(self.cfg.free_failures);
        if over == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (over - 1).min(30);
        self.cfg
            .first_backoff
            .saturating_mul(factor)
            .min(self.cfg.max_backoff)
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        // Quiet for `max_backoff` after the block ended.
        now.saturating_duration_since(e.blocked_until) >= self.cfg.max_backoff
    }

    /// Counts a failed login of `name` from `ip`; returns the block it now
    /// has (zero while the failures are still free).
    pub(crate) fn failed(&self, name: &str, ip: IpAddr, now: Instant) -> Duration {
        let key = (name.to_owned(), client_key(ip));
        let mut map = self.lock();
        if !map.contains_key(&key) && map.len() >= self.cfg.max_entries {
            self.make_room(&mut map, now);
        }
        let e = map.entry(key).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: now,
        });
        if self.expired(e, now) {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        let block = self.backoff(e.failures);
        e.blocked_until = now + block;
        block
    }

    /// A successful login forgets the pair's failures.
    pub(crate) fn clear(&self, name: &str, ip: IpAddr) {
        self.lock().remove(&(name.to_owned(), client_key(ip)));
    }

    /// Pairs remembered now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops expired entries, then the least recently failed ones, until a
    /// quarter of the room is free.
    fn make_room(&self, map: &mut HashMap<Key, Entry>, now: Instant) {
        map.retain(|_, e| !self.expired(e, now));
        let target = self.cfg.max_entries - self.cfg.max_entries / 4;
        if map.len() < target.max(1) {
            return;
        }
        let mut order: Vec<(Instant, Key)> = map
            .iter()
            .map(|(k, e)| (e.last_failure, k.clone()))
            .collect();
        order.sort_unstable_by_key(|(t, _)| *t);
        let excess = map.len() + 1 - target.max(1);
        for (_, k) in order.into_iter().take(excess) {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn throttle() -> Throttle {
        Throttle::new(LoginThrottle {
            free_failures: 3,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_entries: 100,
        })
    }

    #[test]
    fn a_lockout_from_one_address_does_not_block_another() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..10 {
            t.failed("admin", A, now);
        }
        assert!(t.blocked("admin", A, now).is_some());
        assert_eq!(t.blocked("admin", B, now), None);
        assert_eq!(t.blocked("bob", A, now), None);
        t.clear("admin", A);
        assert_eq!(t.blocked("admin", A, now), None);
    }

    #[test]
    fn the_backoff_doubles_up_to_the_maximum() {
        let t = throttle();
        let mut now = Instant::now();
        let mut blocks = Vec::new();
        for _ in 0..12 {
            let b = t.failed("admin", A, now);
            assert_eq!(
                t.blocked("admin", A, now),
                (b > Duration::ZERO).then_some(b)
            );
            blocks.push(b.as_secs());
            // The next try comes when the block has passed.
            now += b;
            assert_eq!(t.blocked("admin", A, now), None);
        }
        assert_eq!(blocks, [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn entries_expire_after_a_quiet_period() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..5 {
            t.failed("admin", A, now);
        }
        // Quiet for max_backoff after the block: failures start over.
        let later = now + Duration::from_secs(120);
        assert_eq!(t.blocked("admin", A, later), None);
        assert_eq!(t.failed("admin", A, later), Duration::ZERO);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_the_latest_offenders() {
        let t = throttle();
        let mut now = Instant::now();
        for i in 0..1000u32 {
            now += Duration::from_millis(1);
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.failed("admin", ip, now);
            assert!(t.len() <= 100);
        }
        for _ in 0..10 {
            t.failed("admin", A, now);
        }
        assert!(t.len() <= 100);
        assert!(t.blocked("admin", A, now).is_some());
    }

    #[test]
    fn an_ipv6_client_counts_by_its_slash_64() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..10u16 {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap_or(A);
            t.failed("admin", ip, now);
        }
        let other: IpAddr = "2001:db8::ffff".parse().unwrap_or(A);
        assert!(t.blocked("admin", other, now).is_some());
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap_or(A);
        assert_eq!(client_key(mapped), B);
    }
}
