//! The reporter ring of the simulated agents: `lars_core::HashRing`'s points
//! (same labels, same murmur3, same virtual nodes), walked past reporters
//! that are gone, so a gone reporter's keys go to the next reporter on the
//! ring and every other key stays where it was.

use lars_core::ModKey;
use lars_core::ring::{DEFAULT_VNODES, murmur3_32};

/// `HashRing::new(workers)` with an owner lookup that skips gone workers.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    points: Vec<(u32, usize)>,
}

impl Ring {
    pub(crate) fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        let mut points = Vec::with_capacity(workers * DEFAULT_VNODES as usize);
        for w in 0..workers {
            for v in 0..DEFAULT_VNODES {
                let label = format!("lars-worker-{w}#{v}");
                points.push((murmur3_32(label.as_bytes(), 0), w));
            }
        }
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Self { points }
    }

    /// The first worker at or after `key`'s hash, wrapping around, for which
    /// `alive` holds; `None` when none does.
    pub(crate) fn owner(&self, key: ModKey, alive: impl Fn(usize) -> bool) -> Option<usize> {
        let h = murmur3_32(&key.packed().to_le_bytes(), 0);
        let i = self.points.partition_point(|p| p.0 < h);
        let (head, tail) = self.points.split_at(i.min(self.points.len()));
        tail.iter().chain(head).map(|p| p.1).find(|&w| alive(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lars_core::ring::HashRing;

    #[test]
    fn all_alive_is_hash_ring() {
        let (ring, reference) = (Ring::new(3), HashRing::new(3));
        for i in 0..5000u32 {
            let key = ModKey::new(7, i);
            assert_eq!(ring.owner(key, |_| true), Some(reference.worker(key)));
        }
    }

    #[test]
    fn only_a_gone_workers_keys_move() {
        let ring = Ring::new(3);
        let mut moved = 0;
        for i in 0..5000u32 {
            let key = ModKey::new(7, i);
            let before = ring.owner(key, |_| true);
            let after = ring.owner(key, |w| w != 1);
            if before == Some(1) {
                assert_ne!(after, Some(1));
                moved += 1;
            } else {
                assert_eq!(after, before);
            }
        }
        assert!(moved > 1000, "worker 1 owned {moved} of 5000 keys");
        assert_eq!(ring.owner(ModKey::new(1, 1), |_| false), None);
    }
}
