//! Failed logins counted per user name, in memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failed logins of one name that block it for the rest of the window.
pub(crate) const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted in.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Failed-login counts by user name.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    map: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        // Every mutation is one insert/remove: a poisoned map is still whole.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn blocked(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    pub(crate) fn failed(&self, name: &str) {
        let mut map = self.lock();
        if map.len() >= 10_000 {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let e = map.entry(name.to_owned()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAILURE_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    pub(crate) fn clear(&self, name: &str) {
        self.lock().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_blocks_after_max_failures() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("a");
        }
        assert!(!t.blocked("a"));
        t.failed("a");
        assert!(t.blocked("a"));
        assert!(!t.blocked("b"));
        t.clear("a");
        assert!(!t.blocked("a"));
    }
}
