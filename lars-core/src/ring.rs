//! A consistent-hash ring: maps a [`ModKey`] to one of N workers with 32-bit
//! murmur3 and virtual nodes, so one key is always handled by one worker and
//! adding a worker only moves the keys that now belong to it.

use crate::ModKey;

/// Virtual nodes per worker used by [`HashRing::new`].
pub const DEFAULT_VNODES: u32 = 160;

/// A ring of `workers` workers, each placed at `vnodes` points.
#[derive(Debug, Clone)]
pub struct HashRing {
    points: Vec<(u32, usize)>,
    workers: usize,
}

impl HashRing {
    /// A ring of `workers` workers with [`DEFAULT_VNODES`] points each.
    /// A ring of zero workers is treated as one worker.
    pub fn new(workers: usize) -> Self {
        Self::with_vnodes(workers, DEFAULT_VNODES)
    }

    /// A ring with an explicit number of virtual nodes per worker (at least 1).
    pub fn with_vnodes(workers: usize, vnodes: u32) -> Self {
        let workers = workers.max(1);
        let vnodes = vnodes.max(1);
        let mut points = Vec::with_capacity(workers * vnodes as usize);
        for w in 0..workers {
            for v in 0..vnodes {
                let label = format!("lars-worker-{w}#{v}");
                points.push((murmur3_32(label.as_bytes(), 0), w));
            }
        }
        // Ties (vanishingly rare) go to the lower worker, deterministically.
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Self { points, workers }
    }

    /// Number of workers on the ring.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The worker that owns `key`: the first point at or after its hash,
    /// wrapping around.
    pub fn worker(&self, key: ModKey) -> usize {
        let h = murmur3_32(&key.packed().to_le_bytes(), 0);
        let i = self.points.partition_point(|p| p.0 < h);
        match self.points.get(i) {
            Some(p) => p.1,
            None => self.points.first().map_or(0, |p| p.1),
        }
    }

    /// The owner of `key` among the workers for which `available` holds:
    /// [`worker`](Self::worker) when it is available, else the next
    /// available worker clockwise on the ring (so the keys of a lost worker
    /// spread over the others, and only they move); [`worker`](Self::worker)
    /// when none is available.
    pub fn worker_among(&self, key: ModKey, available: impl Fn(usize) -> bool) -> usize {
        let h = murmur3_32(&key.packed().to_le_bytes(), 0);
        let start = self.points.partition_point(|p| p.0 < h);
        let (before, after) = self.points.split_at(start.min(self.points.len()));
        let mut clockwise = after.iter().chain(before).map(|p| p.1);
        let primary = clockwise.next().unwrap_or(0);
        if available(primary) {
            return primary;
        }
        clockwise.find(|&w| available(w)).unwrap_or(primary)
    }
}

/// MurmurHash3, x86 32-bit variant.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> impl Iterator<Item = ModKey> {
        (0..100_000u32).map(|i| ModKey::new(i / 100 + 1, i % 100 + 1))
    }

    #[test]
    fn murmur3_known_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn keys_spread_within_15_percent() {
        let ring = HashRing::new(8);
        let mut counts = [0usize; 8];
        for k in keys() {
            counts[ring.worker(k)] += 1;
        }
        let mean = 100_000.0 / 8.0;
        for (w, c) in counts.iter().enumerate() {
            let dev = (*c as f64 - mean).abs() / mean;
            assert!(
                dev <= 0.15,
                "worker {w} got {c} keys ({:.1}% off)",
                dev * 100.0
            );
        }
    }

    #[test]
    fn a_ninth_worker_only_takes_keys() {
        let eight = HashRing::new(8);
        let nine = HashRing::new(9);
        let mut moved = 0;
        for k in keys() {
            let (a, b) = (eight.worker(k), nine.worker(k));
            if a != b {
                assert_eq!(b, 8, "{k} moved from {a} to {b}, not to the new worker");
                moved += 1;
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn a_lost_workers_keys_spread_over_the_others_and_only_they_move() {
        let ring = HashRing::new(3);
        let mut moved = [0usize; 3];
        for i in 0..30_000u32 {
            let key = ModKey::new(i, i.wrapping_mul(7));
            let owner = ring.worker(key);
            assert_eq!(ring.worker_among(key, |_| true), owner);
            assert_eq!(ring.worker_among(key, |_| false), owner);
            let without_1 = ring.worker_among(key, |w| w != 1);
            if owner == 1 {
                assert_ne!(without_1, 1);
                moved[without_1] += 1;
            } else {
                assert_eq!(without_1, owner, "a key of a live worker moved");
            }
        }
        // Worker 1's ~10,000 keys split between 0 and 2, roughly evenly.
        assert!(moved[0] > 3_000 && moved[2] > 3_000, "{moved:?}");
    }

    #[test]
    fn zero_workers_is_one() {
        let ring = HashRing::new(0);
        assert_eq!(ring.workers(), 1);
        assert_eq!(ring.worker(ModKey::new(1, 2)), 0);
    }
}
