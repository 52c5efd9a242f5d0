//! `World`: one agent's [`CumulativeSender`], the wire, one reporter worker
//! ([`Receiver`], [`Windows`], [`Flusher`]) and a fake store that can fail a
//! write before or after its commit. Time is virtual: `now` in unix seconds
//! for both sides, `mono` the writer's `Instant`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use lars_core::proto::ReportStatusRequest;
use lars_core::{HostAddr, ModKey};
use lars_lb::{HostReport, KeyReport};
use lars_stats::{
    Action, COUNTER_LIMIT, CallStatusRow, CumulativeSender, Flusher, IDLE_RESTART, Progress,
    RESEND_WITHIN, Receiver, StreamKey, Windows, WriteError,
};

/// The agent's IPv4, the `caller` of every report.
pub const CALLER: u32 = 0x0a00_00fe;
/// The start of virtual time (unix seconds).
pub const START: i64 = 1_700_000_000;

/// The one real clock read of these tests: a base for virtual time.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

/// Key number `n`.
pub fn key(n: u8) -> ModKey {
    ModKey::new(100, u32::from(n))
}

/// Host number `n`.
pub fn host(n: u8) -> HostAddr {
    HostAddr::new(0x0a00_0000 | u32::from(n), 8000 + u16::from(n))
}

/// How the store answers one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails before the commit: nothing written, an outage.
    Unavailable,
    /// Fails before the commit: nothing written, a statement error.
    Rejected,
    /// Commits, then the acknowledgement is lost (reported as an outage).
    LostAck,
}

/// The store: history totals per `(key, host)`, applied chunk ids, status
/// rows; each call takes the next fault, if any.
#[derive(Debug, Default)]
pub struct FakeStore {
    pub history: BTreeMap<(ModKey, HostAddr), (u64, u64)>,
    pub marks: HashMap<u64, i64>,
    pub status: HashMap<StreamKey, CallStatusRow>,
    pub faults: VecDeque<Fault>,
    /// Chunks retried after a lost acknowledgement and skipped.
    pub already_applied: u64,
}

impl FakeStore {
    /// Performs `action` at `unix_now`; what the flusher is told.
    fn perform(&mut self, action: &Action, unix_now: i64) -> Result<(), WriteError> {
        let fault = self.faults.pop_front();
        match fault {
            Some(Fault::Unavailable) => return Err(WriteError::Unavailable),
            Some(Fault::Rejected) => return Err(WriteError::Rejected),
            Some(Fault::LostAck) | None => {}
        }
        match action {
            Action::Write {
                id,
                history,
                status,
                ..
            } => {
                if self.marks.contains_key(id) {
                    self.already_applied += 1;
                } else {
                    self.marks.insert(*id, unix_now);
                    for r in history {
                        let t = self.history.entry((r.key, r.host)).or_default();
                        t.0 += r.succ;
                        t.1 += r.err;
                    }
                    for r in status {
                        self.status.insert((r.key, r.host, r.caller), *r);
                    }
                }
            }
            Action::Prune(p) => {
                let before = p.marks_before(unix_now);
                self.marks.retain(|_, at| *at >= before);
            }
        }
        match fault {
            Some(Fault::LostAck) => Err(WriteError::Unavailable),
            _ => Ok(()),
        }
    }
}

/// One step of the world.
#[derive(Debug, Clone)]
pub enum Op {
    /// Calls of one host of one key, recorded by the agent.
    Calls {
        key: u8,
        host: u8,
        succ: u32,
        err: u32,
    },
    /// Time passes by `secs`; then a report interval: the reporter's periodic
    /// work (expiry, flush), then the agent's tick (after a change of
    /// connection, a connected agent also ticks one second in, as it does
    /// every interval).
    Tick { secs: u32 },
    /// The connection drops; of the last interval's counter messages, those
    /// in the bit mask are lost (the others were delivered).
    Disconnect { lose: u32 },
    /// The agent connects (again); when connected, it switches to a new
    /// connection (nothing lost).
    Connect,
    /// The agent stops (a last report) and a new one starts from zero.
    AgentRestart,
    /// The reporter stops gracefully (messages in the mask lost in transit)
    /// and a new one resumes from the store.
    ReporterRestart { lose: u32 },
}

/// Everything in one place.
#[derive(Debug)]
pub struct World {
    pub now: i64,
    mono: Instant,
    pub sender: CumulativeSender,
    epoch: u64,
    /// Handed out in the current interval, not yet delivered.
    wire: Vec<ReportStatusRequest>,
    sent_at: i64,
    pub receiver: Receiver,
    pub windows: Windows,
    pub flusher: Flusher,
    pub store: FakeStore,
    /// Calls recorded per `(key, host)`.
    pub expected: BTreeMap<(ModKey, HostAddr), (u64, u64)>,
    reporter_runs: u64,
    /// A loss not yet resent and confirmed: the `ts` of the interval it
    /// belonged to.
    doubt_ts: Option<i64>,
    /// The connection of the last tick while connected; `None` after any
    /// change of connection.
    last_tick_epoch: Option<u64>,
    /// Messages lost, for the summary.
    pub lost: u64,
    /// Calls per `(key, host)` since the last tick that queued everything,
    /// to keep them under the counter limit: more than 2^31 calls of one host
    /// between two reports is beyond the contract.
    unsent: HashMap<(u8, u8), (u64, u64)>,
}

impl World {
    /// A connected agent, a fresh reporter, a store failing with `faults`.
    pub fn new(faults: Vec<Fault>) -> Self {
        let mut sender = CumulativeSender::new(CALLER, 100_000);
        sender.on_connected(1);
        Self {
            now: START,
            mono: t0(),
            sender,
            epoch: 1,
            wire: Vec::new(),
            sent_at: START,
            receiver: Receiver::new(),
            windows: Windows::new(),
            flusher: new_flusher(0),
            store: FakeStore {
                faults: faults.into(),
                ..FakeStore::default()
            },
            expected: BTreeMap::new(),
            reporter_runs: 0,
            doubt_ts: None,
            last_tick_epoch: None,
            lost: 0,
            unsent: HashMap::new(),
        }
    }

    /// Applies one step.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Calls {
                key: k,
                host: h,
                succ,
                err,
            } => {
                self.deliver();
                let room = |sent: u64| u64::from(COUNTER_LIMIT).saturating_sub(sent) as u32;
                let u = self.unsent.entry((k, h)).or_default();
                let (succ, err) = (succ.min(room(u.0)), err.min(room(u.1)));
                u.0 += u64::from(succ);
                u.1 += u64::from(err);
                self.sender.record([KeyReport {
                    key: key(k),
                    results: vec![HostReport {
                        host: host(h),
                        succ,
                        err,
                        overload: false,
                    }],
                }]);
                let t = self.expected.entry((key(k), host(h))).or_default();
                t.0 += u64::from(succ);
                t.1 += u64::from(err);
            }
            Op::Tick { secs } => {
                // A connected agent ticks every interval: after a change
                // of connection, what is in doubt goes again at once (and
                // is confirmed by the next tick), not after a long pause.
                let changed = self.last_tick_epoch != Some(self.epoch);
                if secs > 1 && self.sender.is_connected() && changed {
                    self.tick(1);
                    self.tick(secs - 1);
                } else {
                    self.tick(secs);
                }
            }
            Op::Disconnect { lose } => {
                self.lose(lose);
                self.deliver();
                self.sender.on_disconnected();
            }
            Op::Connect => {
                self.deliver();
                self.epoch += 1;
                self.sender.on_connected(self.epoch);
            }
            Op::AgentRestart => {
                // A graceful stop sends its last counters; calls recorded
                // after that would die with the process.
                if !self.sender.is_connected() {
                    self.apply(&Op::Connect);
                }
                // A restart held back by a resend takes one more tick.
                for _ in 0..3 {
                    self.deliver();
                    if self.sender.pending_keys() == 0 {
                        break;
                    }
                    self.sender.report_tick(self.now as u32);
                    self.transmit();
                }
                self.deliver();
                self.doubt_ts = None;
                self.sender = CumulativeSender::new(CALLER, 100_000);
                self.epoch += 1;
                self.sender.on_connected(self.epoch);
            }
            Op::ReporterRestart { lose } => {
                self.lose(lose);
                self.deliver();
                self.sender.on_disconnected();
                self.stop_reporter();
                self.reporter_runs += 1;
                self.flusher = new_flusher(self.reporter_runs);
                self.receiver = Receiver::new();
                self.windows = Windows::new();
                let rows: Vec<CallStatusRow> = self.store.status.values().copied().collect();
                self.receiver.resume(rows, self.now);
            }
        }
    }

    /// Connects, sends everything, stops the reporter: afterwards the store
    /// holds all it will ever hold.
    pub fn finish(&mut self) {
        if !self.sender.is_connected() {
            self.apply(&Op::Connect);
        }
        for _ in 0..3 {
            self.tick(1);
        }
        self.deliver();
        assert_eq!(self.sender.pending_keys(), 0);
        self.stop_reporter();
    }

    fn tick(&mut self, secs: u32) {
        self.deliver();
        let mut now = self.now + i64::from(secs);
        if let Some(ts) = self.doubt_ts {
            // The model's promise (docs/stats.md): a connection lost with
            // counters in doubt is back, and their resend through, within
            // RESEND_WITHIN - IDLE_RESTART.
            let limit = ts + i64::from(RESEND_WITHIN - IDLE_RESTART) - 1;
            now = now.min(limit).max(self.now);
        }
        self.mono += Duration::from_secs((now - self.now) as u64);
        self.now = now;
        // The reporter worker's periodic work, then its writer.
        self.receiver.expire(now);
        self.windows.expire(now);
        self.flusher.push(self.receiver.take_batch());
        self.pump();
        // The agent's report interval.
        let epoch = self.sender.is_connected().then_some(self.epoch);
        if epoch.is_some() && self.last_tick_epoch == epoch {
            // This tick confirms what the last one sent: resends included.
            self.doubt_ts = None;
        }
        self.last_tick_epoch = epoch;
        self.sender.report_tick(now as u32);
        if self.sender.is_connected() && self.sender.pending_keys() == 0 {
            // Everything queued, nothing held back for the next tick.
            self.unsent.clear();
        }
        self.transmit();
    }

    fn transmit(&mut self) {
        self.sent_at = self.now;
        while let Some(m) = self.sender.poll_transmit() {
            self.wire.push(m);
        }
    }

    /// The counter messages of the wire in `mask` are lost (messages that
    /// carry an announcement, a host at `(0, 0)` before its values, always
    /// arrive: see docs/stats.md for why).
    fn lose(&mut self, mask: u32) {
        let mut i = 0;
        let before = self.wire.len();
        self.wire.retain(|m| {
            let announce = m.results.iter().enumerate().any(|(j, r)| {
                m.results[j + 1..]
                    .iter()
                    .any(|s| (s.ip, s.port) == (r.ip, r.port))
            });
            let keep = announce || mask & (1 << (i % 32)) == 0;
            i += 1;
            keep
        });
        if self.wire.len() < before {
            self.lost += (before - self.wire.len()) as u64;
            self.doubt_ts.get_or_insert(self.sent_at);
        }
    }

    fn deliver(&mut self) {
        for m in std::mem::take(&mut self.wire) {
            self.receiver.receive(&m, self.sent_at, &mut self.windows);
        }
    }

    /// Drives the flusher until it waits (a backoff, or nothing to do).
    fn pump(&mut self) {
        while let Some(action) = self.flusher.poll_action(self.mono) {
            let result = self.store.perform(&action, self.now);
            if let Action::Prune(_) = action {
                self.flusher.on_pruned(self.mono, result.is_ok());
                continue;
            }
            let progress = self.flusher.on_written(self.mono, result);
            assert!(
                !matches!(progress, Progress::GaveUp { .. } | Progress::Unexpected),
                "{progress:?}"
            );
        }
    }

    /// The graceful stop of the reporter: the last batch, then the flusher
    /// until done, sleeping in virtual time.
    fn stop_reporter(&mut self) {
        self.flusher.push(self.receiver.take_batch());
        self.flusher.stop(self.mono);
        loop {
            self.pump();
            if self.flusher.is_done() {
                return;
            }
            let next = self.flusher.next_deadline().unwrap();
            self.mono = self.mono.max(next);
        }
    }
}

fn new_flusher(run: u64) -> Flusher {
    Flusher::new(1_000_000, run << 32)
        .with_prune(0)
        .with_write_chunk(3)
}
