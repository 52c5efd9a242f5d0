//! Against a reporter that applies whole messages in any order, as the C++
//! original does: it hands each `ReportStatusRequest` to one of several
//! database threads with no ordering between messages, and each thread
//! upserts the `ServerCallStatus` row of every result in turn (last writer
//! wins per `(key, host, caller)`). The `(0, 0)` announcement and the values
//! of a host travel in one message, announcement first, so the stored
//! counters always end at the cumulative totals.

use std::collections::HashMap;

use lars_core::proto::ReportStatusRequest;
use lars_core::{HostAddr, ModKey};
use lars_lb::{HostReport, KeyReport};
use lars_stats::CumulativeSender;

const CALLER: u32 = 0x7f00_0001;

/// A `ServerCallStatus` row's key as the wire carries it: modid, cmdid, ip,
/// port, caller.
type Row = (i32, i32, i32, i32, i32);

/// Per `(key, host)`: the stored row, the sender's cumulative counters, the
/// calls recorded.
type Outcome = (ModKey, HostAddr, (u32, u32), (u32, u32), (u32, u32));

/// The original reporter's status table: each message applied whole, its
/// results in sequence, the last write of a row wins.
#[derive(Debug, Default)]
struct UpsertReporter {
    rows: HashMap<Row, (u32, u32)>,
}

impl UpsertReporter {
    fn apply(&mut self, m: &ReportStatusRequest) {
        for r in &m.results {
            self.rows
                .insert((m.modid, m.cmdid, r.ip, r.port, m.caller), (r.succ, r.err));
        }
    }

    fn row(&self, key: ModKey, host: HostAddr) -> (u32, u32) {
        let (modid, cmdid) = key.to_wire();
        let (ip, port) = host.to_wire();
        self.rows
            .get(&(modid, cmdid, ip, port, CALLER as i32))
            .copied()
            .unwrap_or((0, 0))
    }
}

/// A small seeded generator (xorshift64*), so every order is reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

fn host(n: u32) -> HostAddr {
    HostAddr::new(0x0a00_0000 | n, 80)
}

/// Several keys whose hosts appear at different ticks (each first sight is
/// announced) and fall silent; the messages of each tick reach the reporter's threads
/// together and are applied in a shuffled order (`None`: reversed).
fn run(seed: Option<u64>) -> Vec<Outcome> {
    let mut rng = Rng(seed.unwrap_or(1).max(1));
    let mut sender = CumulativeSender::new(CALLER, 1000);
    let mut reporter = UpsertReporter::default();
    let mut recorded: HashMap<(ModKey, HostAddr), (u32, u32)> = HashMap::new();
    let keys = [ModKey::new(1, 1), ModKey::new(1, 2), ModKey::new(2, 1)];
    sender.on_connected(1);
    for tick in 0..6u32 {
        let mut batches = Vec::new();
        for (k, &key) in keys.iter().enumerate() {
            // Host n is called at ticks n and n + 2 only: new hosts join at
            // every tick, and a host's last values may be its first.
            let results = (0..6)
                .filter(|&n| tick == n || tick == n + 2)
                .map(|n| {
                    let (succ, err) = (1 + (tick + n + k as u32) % 5, (tick * n) % 3);
                    let t = recorded.entry((key, host(n))).or_default();
                    (t.0, t.1) = (t.0 + succ, t.1 + err);
                    HostReport {
                        host: host(n),
                        succ,
                        err,
                        overload: false,
                    }
                })
                .collect();
            batches.push(KeyReport { key, results });
        }
        sender.record(batches);
        sender.report_tick(1_700_000_000 + tick * 10);
        let mut msgs: Vec<_> = std::iter::from_fn(|| sender.poll_transmit()).collect();
        match seed {
            Some(_) => rng.shuffle(&mut msgs),
            None => msgs.reverse(),
        }
        for m in &msgs {
            reporter.apply(m);
        }
    }
    let mut out: Vec<_> = recorded
        .into_iter()
        .map(|((key, h), total)| {
            (
                key,
                h,
                reporter.row(key, h),
                sender.cumulative(key, h),
                total,
            )
        })
        .collect();
    out.sort_unstable_by_key(|&(k, h, ..)| (k, h));
    out
}

#[test]
fn stored_counters_equal_the_totals_whatever_the_order_of_messages() {
    let orders = std::iter::once(None).chain((1..=200).map(Some));
    for seed in orders {
        let rows = run(seed);
        assert_eq!(rows.len(), 18);
        for (key, h, stored, cumulative, total) in rows {
            assert_eq!(
                (stored, cumulative),
                (total, total),
                "order {seed:?}, {key:?} {h:?}"
            );
        }
    }
}
