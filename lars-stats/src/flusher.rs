//! The reporter writer's state machine: what to write next, the chunk in
//! doubt, retry with backoff and giving up, the prune schedule and the
//! graceful stop. The writer thread only drives it: it asks
//! [`Flusher::poll_action`], does the store call the [`Action`] names, and
//! hands the result back ([`Flusher::on_written`], [`Flusher::on_pruned`]);
//! between actions it sleeps until [`Flusher::next_deadline`] or until new
//! rows are [`push`](Flusher::push)ed.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use lars_core::ModKey;

use crate::aggregate::{Batch, BoundOutcome, CallStatusRow, HistoryRow, Pending, RejectedRow};

/// Rows per store call (each call is one transaction; a `(key, host)` whose
/// rows are more goes alone, whole).
pub const WRITE_CHUNK: usize = 5_000;
/// How long a graceful stop keeps retrying the database before giving up on
/// the rows still pending.
pub const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Failed writes in a row with a statement error (not an outage) after which
/// the rows of the flush are given up.
pub const MAX_QUERY_FAILURES: u32 = 5;
/// First wait after a failed write; it doubles after each further failure.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(2);
/// Time between two prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Time before a failed prune is tried again.
pub const PRUNE_RETRY: Duration = Duration::from_secs(60);
/// How long the store remembers which chunks it applied, in seconds
/// (a chunk in doubt is retried within this time or not at all).
pub const BATCH_MARKS_KEPT: i64 = 2 * 86_400;

/// Why a write failed, as far as the [`Flusher`] cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The store cannot be reached (an outage): retried until it is back
    /// (or the stop timeout passes).
    Unavailable,
    /// The store rejected the statement: retried, and the rows are given up
    /// after [`MAX_QUERY_FAILURES`] such failures in a row.
    Rejected,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Writes one chunk of a flush in ONE transaction, at most once under
    /// `id` (`StatsStore::write_flush_once`): the `history` deltas added,
    /// the `status` counters upserted and `id` recorded, or nothing when `id`
    /// is already recorded. A chunk holds every row of the flush of each of
    /// its `(key, host)`s (history and the status rows of all callers), so
    /// the persisted counters of a stream never run ahead of or behind its
    /// persisted history, whatever moment the reporter dies at: whoever
    /// resumes from them counts each call once. A chunk whose write failed
    /// comes back unchanged, under the same id: the failure may have come
    /// after the commit, with the acknowledgement lost.
    Write {
        /// The chunk's id; the store records it in the same transaction.
        id: u64,
        /// History deltas to add.
        history: Vec<HistoryRow>,
        /// Latest counters to upsert into `ServerCallStatus`.
        status: Vec<CallStatusRow>,
        /// Reports rejected by the trust limits, per key and minute, to add
        /// to `lars_rejected_reports` (all in the flush's first chunk).
        rejected: Vec<RejectedRow>,
    },
    /// Prune old history and old chunk marks.
    Prune(Prune),
}

impl Action {
    /// The rows of a [`Action::Write`] (0 for a prune).
    pub fn rows(&self) -> usize {
        match self {
            Self::Write {
                history,
                status,
                rejected,
                ..
            } => history.len() + status.len() + rejected.len(),
            Self::Prune(_) => 0,
        }
    }
}

/// What a prune removes; the cutoffs come from the driver's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// Days of history kept; `None`: history is kept forever.
    pub retention_days: Option<u32>,
}

impl Prune {
    /// History minutes before this unix second go (`None`: none).
    pub fn history_before(&self, unix_now: i64) -> Option<i64> {
        self.retention_days
            .map(|d| unix_now.saturating_sub(i64::from(d) * 86_400))
    }

    /// Applied-chunk marks before this unix second go.
    pub fn marks_before(&self, unix_now: i64) -> i64 {
        unix_now.saturating_sub(BATCH_MARKS_KEPT)
    }
}

/// Why rows were given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// [`MAX_QUERY_FAILURES`] statement errors in a row.
    Rejected,
    /// The stop timeout passed with the store still failing.
    StopTimeout,
}

/// What the result of a write led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Written; the flush goes on.
    Continue,
    /// Written, and with it everything the flush took: it began at
    /// `started`.
    Flushed {
        /// When the flush took its first rows.
        started: Instant,
    },
    /// Failed; the rows are kept (the chunk in doubt, the rest back
    /// in the buffer, `bound` says what that merged or dropped) and the next
    /// write waits until `retry_at`.
    Retry {
        /// When writing resumes.
        retry_at: Instant,
        /// What putting the rows back into the bounded buffer did.
        bound: BoundOutcome,
    },
    /// Failed, and `rows` rows were given up.
    GaveUp {
        /// Rows dropped (the chunk in doubt included).
        rows: u64,
        /// Why.
        reason: GiveUp,
        /// When writing resumes.
        retry_at: Instant,
    },
    /// No write was outstanding: the result was ignored.
    Unexpected,
}

/// Where the [`Flusher`] is (for status pages and docs/stats.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlusherState {
    /// Nothing to write; waiting for rows (or the next prune).
    Idle,
    /// A flush is going on: rows taken, more actions to come.
    Flushing,
    /// An action is out; waiting for its result.
    Waiting,
    /// A write failed; nothing is written before `until`.
    Backoff {
        /// When writing resumes.
        until: Instant,
    },
    /// Stopped and everything written or given up: the driver may exit.
    Done,
}

/// The rows of one `(key, host)` in a flush: its history and the status rows
/// of all its callers, always written in the same transaction.
#[derive(Debug, Clone, Default)]
struct Group {
    history: Vec<HistoryRow>,
    status: Vec<CallStatusRow>,
}

impl Group {
    fn rows(&self) -> usize {
        self.history.len() + self.status.len()
    }
}

/// A chunk of a flush and the id that makes its write idempotent.
#[derive(Debug, Clone)]
struct Chunk {
    id: u64,
    history: Vec<HistoryRow>,
    status: Vec<CallStatusRow>,
    rejected: Vec<RejectedRow>,
}

impl Chunk {
    fn rows(&self) -> usize {
        self.history.len() + self.status.len() + self.rejected.len()
    }

    fn action(&self) -> Action {
        Action::Write {
            id: self.id,
            history: self.history.clone(),
            status: self.status.clone(),
            rejected: self.rejected.clone(),
        }
    }
}

/// The rows a flush took and has not written yet, by `(key, host)` in key
/// order.
#[derive(Debug)]
struct Flush {
    started: Instant,
    groups: VecDeque<Group>,
    /// Rejected reports, written with the first chunk.
    rejected: Vec<RejectedRow>,
    rows: usize,
}

impl Flush {
    fn new(started: Instant, mut batch: Batch) -> Self {
        let rejected = batch.take_rejected();
        let (status, history) = batch.into_rows();
        let rows = status.len() + history.len() + rejected.len();
        let mut groups: BTreeMap<(ModKey, u32, u16), Group> = BTreeMap::new();
        for r in history {
            let g = groups.entry((r.key, r.host.ip, r.host.port)).or_default();
            g.history.push(r);
        }
        for r in status {
            let g = groups.entry((r.key, r.host.ip, r.host.port)).or_default();
            g.status.push(r);
        }
        Self {
            started,
            groups: groups.into_values().collect(),
            rejected,
            rows,
        }
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.rejected.is_empty()
    }

    /// Whole groups, up to `max` rows (at least one group), and the
    /// rejected reports if not yet taken.
    fn take_chunk(
        &mut self,
        max: usize,
    ) -> (Vec<HistoryRow>, Vec<CallStatusRow>, Vec<RejectedRow>) {
        let rejected = std::mem::take(&mut self.rejected);
        self.rows -= rejected.len();
        let (mut history, mut status) = (Vec::new(), Vec::new());
        while let Some(g) = self.groups.front() {
            let n = history.len() + status.len();
            if n > 0 && n + g.rows() > max {
                break;
            }
            let Some(g) = self.groups.pop_front() else {
                break;
            };
            self.rows -= g.rows();
            history.extend(g.history);
            status.extend(g.status);
        }
        (history, status, rejected)
    }

    fn into_batch(self) -> Batch {
        let (mut status, mut history) = (Vec::new(), Vec::new());
        for g in self.groups {
            history.extend(g.history);
            status.extend(g.status);
        }
        let mut batch = Batch::from_rows(status, history);
        for r in self.rejected {
            batch.add_rejected(r.key, r.minute, r.reports, r.calls);
        }
        batch
    }
}

/// The action out, kept until its result comes back.
#[derive(Debug)]
enum InFlight {
    /// The chunk in doubt (it stays in `in_doubt` meanwhile).
    InDoubt,
    Write(Chunk),
    Prune,
}

/// The writer's state machine: what to write next, the chunk in
/// doubt, retry with backoff and giving up, the prune schedule and the
/// graceful stop (docs/stats.md). Pure: `now` is an argument, the store
/// calls are the driver's. The driver asks [`poll_action`](Self::poll_action),
/// performs the [`Action`], hands the result back
/// ([`on_written`](Self::on_written), [`on_pruned`](Self::on_pruned)), and
/// between actions sleeps until [`next_deadline`](Self::next_deadline) or
/// until rows are [`push`](Self::push)ed.
///
/// ```
/// use std::time::{Duration, Instant};
/// use lars_core::{HostAddr, ModKey};
/// use lars_stats::{Action, Batch, Flusher, Progress, WriteError};
///
/// let t0 = Instant::now(); // the driver's clock
/// let mut f = Flusher::new(10_000, 41);
/// let mut batch = Batch::new();
/// batch.add_history(ModKey::new(1, 1), HostAddr::new(0x0a00_0001, 80), 120, 5, 1);
/// f.push(batch);
/// let Some(Action::Write { id, history, status, rejected }) = f.poll_action(t0) else {
///     panic!()
/// };
/// assert_eq!((id, history.len(), status.len(), rejected.len()), (42, 1, 0, 0));
/// // The commit's acknowledgement is lost: the same chunk, same id, later.
/// let Progress::Retry { retry_at, .. } = f.on_written(t0, Err(WriteError::Unavailable)) else {
///     panic!()
/// };
/// assert_eq!(f.poll_action(t0), None);
/// assert_eq!(f.next_deadline(), Some(retry_at));
/// let again = f.poll_action(retry_at);
/// assert_eq!(again, Some(Action::Write { id: 42, history, status, rejected }));
/// assert!(matches!(f.on_written(retry_at, Ok(())), Progress::Flushed { .. }));
/// f.stop(retry_at);
/// assert!(f.is_done());
/// ```
#[derive(Debug)]
pub struct Flusher {
    pending: Pending,
    flush: Option<Flush>,
    in_doubt: Option<Chunk>,
    in_flight: Option<InFlight>,
    last_id: u64,
    write_chunk: usize,
    /// The current backoff step, `None` after a complete flush.
    retry: Option<Duration>,
    retry_at: Option<Instant>,
    query_failures: u32,
    stop_deadline: Option<Instant>,
    prune: Option<Prune>,
    /// When the next prune is due; `None`: at the first poll.
    next_prune: Option<Instant>,
    /// The last receiver batch pushed (see [`push_taken`](Self::push_taken)).
    pushed_through: u64,
    /// `pushed_through` when the flush going on took its rows.
    taking_through: u64,
    /// The last receiver batch whose rows are all confirmed.
    confirmed_through: u64,
}

impl Flusher {
    /// A flusher keeping at most `max_pending_rows` rows waiting (see
    /// [`Pending`]), numbering its chunks from `first_chunk_id + 1`
    /// (the driver picks a random start, so chunk ids of two writers or two
    /// runs do not collide).
    pub fn new(max_pending_rows: usize, first_chunk_id: u64) -> Self {
        Self {
            pending: Pending::new(max_pending_rows),
            flush: None,
            in_doubt: None,
            in_flight: None,
            last_id: first_chunk_id,
            write_chunk: WRITE_CHUNK,
            retry: None,
            retry_at: None,
            query_failures: 0,
            stop_deadline: None,
            prune: None,
            next_prune: None,
            pushed_through: 0,
            taking_through: 0,
            confirmed_through: 0,
        }
    }

    /// This flusher also prunes: history older than `retention_days` (0:
    /// kept forever) and old chunk marks, at the first poll and then every
    /// [`PRUNE_EVERY`].
    pub fn with_prune(mut self, retention_days: u32) -> Self {
        self.prune = Some(Prune {
            retention_days: (retention_days > 0).then_some(retention_days),
        });
        self
    }

    /// Rows per store call instead of [`WRITE_CHUNK`] (at least 1).
    pub fn with_write_chunk(mut self, rows: usize) -> Self {
        self.write_chunk = rows.max(1);
        self
    }

    /// Adds rows gathered since the last push (newer than everything held)
    /// and enforces the bound.
    pub fn push(&mut self, batch: Batch) -> BoundOutcome {
        self.pending.push_newer(batch)
    }

    /// [`push`](Self::push) of the receiver's batch number `through` (see
    /// [`Receiver::batches_taken`](crate::Receiver::batches_taken); an empty
    /// batch may be pushed too), so that
    /// [`flushed_through`](Self::flushed_through) can tell when its rows are
    /// in the store.
    pub fn push_taken(&mut self, batch: Batch, through: u64) -> BoundOutcome {
        self.pushed_through = self.pushed_through.max(through);
        self.push(batch)
    }

    /// The last receiver batch (as numbered in
    /// [`push_taken`](Self::push_taken)) whose rows, and those of every
    /// batch before it, are all in the store or were given up: nothing of
    /// them is held here any more. For
    /// [`Receiver::set_flushed_through`](crate::Receiver::set_flushed_through).
    pub fn flushed_through(&self) -> u64 {
        let writing = matches!(self.in_flight, Some(InFlight::Write(_) | InFlight::InDoubt));
        if !writing && self.flush.is_none() && self.in_doubt.is_none() && self.pending.is_empty() {
            self.pushed_through
        } else {
            self.confirmed_through
        }
    }

    /// Starts the graceful stop at `now`: everything held is still written,
    /// retrying for up to [`STOP_FLUSH_TIMEOUT`]; then [`is_done`](Self::is_done).
    pub fn stop(&mut self, now: Instant) {
        if self.stop_deadline.is_none() {
            self.stop_deadline = Some(now + STOP_FLUSH_TIMEOUT);
        }
    }

    /// Whether the stop was asked and nothing is left: the driver may exit.
    pub fn is_done(&self) -> bool {
        self.stop_deadline.is_some()
            && self.in_flight.is_none()
            && self.flush.is_none()
            && self.in_doubt.is_none()
            && self.pending.is_empty()
    }

    /// The next action at `now`, or `None` (an action is out, a backoff is
    /// running, nothing to do, or done). At most one action is out at a
    /// time: its result must come back before the next.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if self.in_flight.is_some() || self.is_done() {
            return None;
        }
        if let Some(prune) = self.prune {
            if self.next_prune.is_none_or(|t| now >= t) {
                self.in_flight = Some(InFlight::Prune);
                return Some(Action::Prune(prune));
            }
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        if self.flush.is_none() {
            if self.in_doubt.is_none() && self.pending.is_empty() {
                return None;
            }
            self.taking_through = self.pushed_through;
            self.flush = Some(Flush::new(now, self.pending.take()));
        }
        // The chunk in doubt first, under its own id; until it is confirmed
        // nothing else is written.
        if let Some(chunk) = &self.in_doubt {
            self.in_flight = Some(InFlight::InDoubt);
            return Some(chunk.action());
        }
        let flush = self.flush.as_mut()?;
        if !flush.is_empty() {
            let (history, status, rejected) = flush.take_chunk(self.write_chunk);
            self.last_id = self.last_id.wrapping_add(1);
            let chunk = Chunk {
                id: self.last_id,
                history,
                status,
                rejected,
            };
            let action = chunk.action();
            self.in_flight = Some(InFlight::Write(chunk));
            return Some(action);
        }
        // A flush with nothing left (the last write's result normally ends
        // it): end it and look again.
        self.flush = None;
        self.poll_action(now)
    }

    /// The result at `now` of the [`Action::Write`] last handed out.
    pub fn on_written(&mut self, now: Instant, result: Result<(), WriteError>) -> Progress {
        match self.in_flight.take() {
            Some(InFlight::InDoubt) => {
                if result.is_ok() {
                    self.in_doubt = None;
                }
                // On failure it stays in doubt.
            }
            Some(InFlight::Write(chunk)) => {
                if result.is_err() {
                    self.in_doubt = Some(chunk);
                }
            }
            other => {
                self.in_flight = other;
                return Progress::Unexpected;
            }
        }
        let Err(error) = result else {
            return self.written();
        };
        // The failed chunk is now in doubt; the rest of the flush goes back.
        let rest = self.flush.take().map(Flush::into_batch).unwrap_or_default();
        let give_up = match error {
            WriteError::Unavailable => {
                self.query_failures = 0;
                None
            }
            WriteError::Rejected => {
                self.query_failures += 1;
                (self.query_failures >= MAX_QUERY_FAILURES).then_some(GiveUp::Rejected)
            }
        };
        let past_deadline = self.stop_deadline.is_some_and(|d| now >= d);
        let give_up = if past_deadline {
            Some(GiveUp::StopTimeout)
        } else {
            give_up
        };
        let next = self.retry.map_or(RETRY_MIN, |r| (r * 2).min(RETRY_MAX));
        self.retry = Some(next);
        let retry_at = now + next;
        self.retry_at = Some(retry_at);
        match give_up {
            Some(reason) => {
                let mut rows = rest.len() as u64;
                rows += self.in_doubt.take().map_or(0, |c| c.rows() as u64);
                if reason == GiveUp::StopTimeout {
                    rows += self.pending.take().len() as u64;
                }
                self.query_failures = 0;
                Progress::GaveUp {
                    rows,
                    reason,
                    retry_at,
                }
            }
            None => Progress::Retry {
                retry_at,
                bound: self.pending.put_back(rest),
            },
        }
    }

    /// The result at `now` of the [`Action::Prune`] last handed out: the
    /// next prune is due [`PRUNE_EVERY`] later, or [`PRUNE_RETRY`] after a
    /// failure.
    pub fn on_pruned(&mut self, now: Instant, ok: bool) {
        match self.in_flight.take() {
            Some(InFlight::Prune) => {
                self.next_prune = Some(now + if ok { PRUNE_EVERY } else { PRUNE_RETRY });
            }
            other => self.in_flight = other,
        }
    }

    /// When the driver must call [`poll_action`](Self::poll_action) again
    /// even if no rows arrive: the end of a backoff, the next prune. `None`:
    /// only new rows (or the stop) bring work.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.in_flight.is_some() || self.is_done() {
            return None;
        }
        let has_work = self.flush.is_some() || self.in_doubt.is_some() || !self.pending.is_empty();
        let retry = self.retry_at.filter(|_| has_work);
        let prune = self.prune.and(self.next_prune);
        match (retry, prune) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Where the flusher is at `now`.
    pub fn state(&self, now: Instant) -> FlusherState {
        if self.is_done() {
            FlusherState::Done
        } else if self.in_flight.is_some() {
            FlusherState::Waiting
        } else if let Some(until) = self.retry_at.filter(|&t| now < t) {
            FlusherState::Backoff { until }
        } else if self.flush.is_some() || self.in_doubt.is_some() || !self.pending.is_empty() {
            FlusherState::Flushing
        } else {
            FlusherState::Idle
        }
    }

    /// Rows waiting in the buffer (not those of a flush going on).
    pub fn pending_rows(&self) -> usize {
        self.pending.len()
    }

    /// Rows taken by the flush going on and not yet confirmed, the chunk in
    /// doubt included.
    pub fn unconfirmed_rows(&self) -> usize {
        let in_flight = match &self.in_flight {
            Some(InFlight::Write(c)) => c.rows(),
            _ => 0,
        };
        self.flush.as_ref().map_or(0, |f| f.rows)
            + self.in_doubt.as_ref().map_or(0, Chunk::rows)
            + in_flight
    }

    /// The id of the chunk in doubt, if any.
    pub fn in_doubt(&self) -> Option<u64> {
        self.in_doubt.as_ref().map(|c| c.id)
    }

    /// A write succeeded: the flush ends when nothing of it is left.
    fn written(&mut self) -> Progress {
        match &self.flush {
            Some(f) if f.is_empty() && self.in_doubt.is_none() => {
                let started = f.started;
                self.flush = None;
                self.confirmed_through = self.taking_through;
                self.retry = None;
                self.retry_at = None;
                self.query_failures = 0;
                Progress::Flushed { started }
            }
            Some(_) => Progress::Continue,
            None => {
                // Cannot happen (a write belongs to a flush); treat as done.
                self.retry = None;
                self.retry_at = None;
                Progress::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lars_core::{HostAddr, ModKey};

    use super::*;

    /// The one real clock read of these tests: a base for virtual time.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    /// `n` history rows (distinct hosts, one minute) and one status row.
    fn batch(n: u16, succ: u64) -> Batch {
        let mut b = Batch::new();
        for port in 1..=n {
            b.add_history(ModKey::new(1, 1), HostAddr::new(1, port), 60, succ, 0);
        }
        b.set_status(CallStatusRow {
            key: ModKey::new(1, 1),
            host: HostAddr::new(1, 1),
            caller: 9,
            succ_cnt: succ,
            err_cnt: 0,
            ts: 60,
            overload: false,
        });
        b
    }

    /// A write's `(id, history rows, status rows)`.
    fn write(a: Option<Action>) -> (u64, usize, usize) {
        match a {
            Some(Action::Write {
                id,
                history,
                status,
                ..
            }) => (id, history.len(), status.len()),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn status_of(a: Option<Action>) -> Vec<CallStatusRow> {
        match a {
            Some(Action::Write { status, .. }) => status,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn a_flush_writes_whole_key_host_groups_in_chunks_under_consecutive_ids() {
        let t = t0();
        let mut f = Flusher::new(1000, 10).with_write_chunk(2);
        assert_eq!(f.state(t), FlusherState::Idle);
        assert_eq!((f.poll_action(t), f.next_deadline()), (None, None));
        // Host 1: a history row and a status row, together; hosts 2..5: one
        // history row each.
        f.push(batch(5, 1));
        assert_eq!(f.pending_rows(), 6);
        assert_eq!(write(f.poll_action(t)), (11, 1, 1));
        assert_eq!(f.state(t), FlusherState::Waiting);
        assert_eq!(f.poll_action(t), None, "one action at a time");
        assert_eq!(f.on_written(t, Ok(())), Progress::Continue);
        assert_eq!(f.state(t), FlusherState::Flushing);
        // Rows pushed meanwhile wait for the next flush.
        f.push(batch(1, 7));
        assert_eq!(write(f.poll_action(t)), (12, 2, 0));
        f.on_written(t, Ok(()));
        assert_eq!(write(f.poll_action(t)), (13, 2, 0));
        let later = ms(t, 5);
        assert_eq!(
            f.on_written(later, Ok(())),
            Progress::Flushed { started: t }
        );
        let rows = status_of(f.poll_action(later));
        assert_eq!((rows.len(), rows[0].succ_cnt), (1, 7));
        assert!(matches!(
            f.on_written(later, Ok(())),
            Progress::Flushed { .. }
        ));
        assert_eq!(f.state(later), FlusherState::Idle);
    }

    #[test]
    fn a_key_host_with_more_rows_than_a_chunk_goes_alone_and_whole() {
        let t = t0();
        let mut f = Flusher::new(1000, 0).with_write_chunk(1);
        let mut b = batch(2, 1);
        for minute in [120, 180] {
            b.add_history(ModKey::new(1, 1), HostAddr::new(1, 1), minute, 1, 0);
        }
        f.push(b);
        // Host 1: 3 minutes and its status row, over the chunk size.
        assert_eq!(write(f.poll_action(t)), (1, 3, 1));
        f.on_written(t, Ok(()));
        assert_eq!(write(f.poll_action(t)), (2, 1, 0));
    }

    #[test]
    fn a_failed_chunk_stays_in_doubt_and_goes_first_under_its_id() {
        let t = t0();
        let mut f = Flusher::new(1000, 0).with_write_chunk(2);
        f.push(batch(4, 1));
        assert_eq!(write(f.poll_action(t)), (1, 1, 1));
        f.on_written(t, Ok(()));
        assert_eq!(write(f.poll_action(t)), (2, 2, 0));
        // The acknowledgement of chunk 2 is lost.
        let Progress::Retry { retry_at, bound } = f.on_written(t, Err(WriteError::Unavailable))
        else {
            panic!()
        };
        assert!(!bound.any());
        assert_eq!(retry_at, ms(t, 100));
        assert_eq!(f.in_doubt(), Some(2));
        assert_eq!(f.unconfirmed_rows(), 2);
        // Host 4's row went back to the buffer; newer rows join it.
        assert_eq!(f.pending_rows(), 1);
        f.push(batch(1, 5));
        assert_eq!(f.state(t), FlusherState::Backoff { until: retry_at });
        assert_eq!(f.poll_action(ms(t, 99)), None);
        assert_eq!(f.next_deadline(), Some(retry_at));
        // Chunk 2 again, whole and under its id, before anything else.
        assert_eq!(write(f.poll_action(retry_at)), (2, 2, 0));
        assert_eq!(f.on_written(retry_at, Ok(())), Progress::Continue);
        assert_eq!(f.in_doubt(), None);
        let rows = status_of(f.poll_action(retry_at));
        assert_eq!((rows.len(), rows[0].succ_cnt), (1, 5));
        f.on_written(retry_at, Ok(()));
        assert_eq!(write(f.poll_action(retry_at)), (4, 1, 0));
        assert!(matches!(
            f.on_written(retry_at, Ok(())),
            Progress::Flushed { .. }
        ));
    }

    #[test]
    fn status_rows_stay_in_doubt_with_the_history_of_their_chunk() {
        let t = t0();
        let mut f = Flusher::new(1000, 0);
        f.push(batch(1, 3));
        let first = f.poll_action(t);
        let Progress::Retry { retry_at, .. } = f.on_written(t, Err(WriteError::Unavailable)) else {
            panic!()
        };
        assert_eq!((f.in_doubt(), f.pending_rows()), (Some(1), 0));
        // A newer status row of the same stream waits behind the chunk.
        f.push(batch(1, 4));
        assert_eq!(f.poll_action(retry_at), first);
        f.on_written(retry_at, Ok(()));
        assert_eq!(status_of(f.poll_action(retry_at))[0].succ_cnt, 4);
    }

    #[test]
    fn rejected_reports_go_with_the_first_chunk_and_back_on_failure() {
        let t = t0();
        let mut f = Flusher::new(1000, 0).with_write_chunk(1);
        let mut b = batch(2, 1);
        assert!(b.add_rejected(ModKey::new(1, 1), 61, 1, 500));
        assert!(b.add_rejected(ModKey::new(1, 1), 62, 2, 7));
        f.push(b);
        assert_eq!(f.pending_rows(), 4);
        let rejected = |a: Option<Action>| match a {
            Some(Action::Write { rejected, .. }) => rejected,
            other => panic!("{other:?}"),
        };
        let first = f.poll_action(t);
        let want = vec![RejectedRow {
            key: ModKey::new(1, 1),
            minute: 60,
            reports: 3,
            calls: 507,
        }];
        assert_eq!(rejected(first.clone()), want);
        let Progress::Retry { retry_at, .. } = f.on_written(t, Err(WriteError::Unavailable)) else {
            panic!()
        };
        assert_eq!(f.poll_action(retry_at), first, "in doubt, whole");
        f.on_written(retry_at, Ok(()));
        assert_eq!(rejected(f.poll_action(retry_at)), vec![]);
        // Rejected reports alone make a flush too.
        let mut f = Flusher::new(1000, 0);
        let mut b = Batch::new();
        b.add_rejected(ModKey::new(2, 2), 0, 1, 1);
        f.push(b);
        f.stop(t);
        assert!(!f.is_done());
        assert_eq!(rejected(f.poll_action(t)).len(), 1);
        f.on_written(t, Ok(()));
        assert!(f.is_done());
    }

    #[test]
    fn flushed_through_follows_the_receiver_batches_confirmed() {
        let t = t0();
        let mut f = Flusher::new(1000, 0).with_write_chunk(2);
        assert_eq!(f.flushed_through(), 0);
        f.push_taken(batch(3, 1), 1);
        assert_eq!(f.flushed_through(), 0, "pending");
        write(f.poll_action(t));
        f.push_taken(batch(1, 2), 2);
        f.on_written(t, Ok(()));
        assert_eq!(f.flushed_through(), 0, "the flush goes on");
        write(f.poll_action(t));
        assert!(matches!(f.on_written(t, Ok(())), Progress::Flushed { .. }));
        assert_eq!(f.flushed_through(), 1, "batch 2 still pending");
        write(f.poll_action(t));
        let Progress::Retry { retry_at, .. } = f.on_written(t, Err(WriteError::Unavailable)) else {
            panic!()
        };
        // An empty batch changes nothing while batch 2 is in doubt.
        f.push_taken(Batch::new(), 3);
        assert_eq!(f.flushed_through(), 1);
        write(f.poll_action(retry_at));
        f.on_written(retry_at, Ok(()));
        assert_eq!(f.flushed_through(), 3);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_after_a_complete_flush() {
        let mut t = t0();
        let mut f = Flusher::new(1000, 0);
        f.push(batch(1, 1));
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert!(f.poll_action(t).is_some());
            let Progress::Retry { retry_at, .. } = f.on_written(t, Err(WriteError::Unavailable))
            else {
                panic!()
            };
            waits.push((retry_at - t).as_millis());
            t = retry_at;
        }
        assert_eq!(waits, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        // An outage is never given up: the chunk is still in doubt.
        assert_eq!(f.in_doubt(), Some(1));
        write(f.poll_action(t));
        assert!(matches!(f.on_written(t, Ok(())), Progress::Flushed { .. }));
        f.push(batch(1, 1));
        f.poll_action(t);
        let Progress::Retry { retry_at, .. } = f.on_written(t, Err(WriteError::Rejected)) else {
            panic!()
        };
        assert_eq!(retry_at - t, RETRY_MIN);
    }

    #[test]
    fn repeated_statement_errors_give_up_what_the_flush_holds_then_go_on() {
        let mut t = t0();
        let mut f = Flusher::new(1000, 0);
        f.push(batch(2, 1));
        let mut outcomes = Vec::new();
        for i in 0..MAX_QUERY_FAILURES {
            assert!(f.poll_action(t).is_some());
            if i == 2 {
                f.push(batch(1, 9)); // arrives during the failures
            }
            let p = f.on_written(t, Err(WriteError::Rejected));
            outcomes.push(p);
            let (Progress::Retry { retry_at, .. } | Progress::GaveUp { retry_at, .. }) = p else {
                panic!("{p:?}")
            };
            t = retry_at;
        }
        let Some(Progress::GaveUp { rows, reason, .. }) = outcomes.last().copied() else {
            panic!()
        };
        // The chunk in doubt (3 rows), and what the last retry took from the
        // buffer: the newer batch's history and status rows.
        assert_eq!((rows, reason), (5, GiveUp::Rejected));
        assert_eq!((f.in_doubt(), f.pending_rows()), (None, 0));
        // Rows pushed afterwards are written as usual.
        f.push(batch(1, 2));
        assert_eq!(write(f.poll_action(t)), (2, 1, 1));
        assert!(matches!(f.on_written(t, Ok(())), Progress::Flushed { .. }));
    }

    #[test]
    fn an_outage_interrupted_by_statement_errors_starts_counting_again() {
        let mut t = t0();
        let mut f = Flusher::new(1000, 0);
        f.push(batch(1, 1));
        for e in [WriteError::Rejected; 4]
            .into_iter()
            .chain([WriteError::Unavailable])
            .chain([WriteError::Rejected; 4])
        {
            assert!(f.poll_action(t).is_some());
            let Progress::Retry { retry_at, .. } = f.on_written(t, Err(e)) else {
                panic!("gave up after {e:?}")
            };
            t = retry_at;
        }
    }

    #[test]
    fn stop_writes_everything_then_is_done() {
        let t = t0();
        let mut f = Flusher::new(1000, 0).with_write_chunk(1);
        f.push(batch(2, 1));
        f.stop(t);
        assert!(!f.is_done());
        write(f.poll_action(t));
        assert!(!f.is_done(), "a write is out");
        f.on_written(t, Ok(()));
        write(f.poll_action(t));
        f.on_written(t, Ok(()));
        assert!(f.is_done());
        assert_eq!(f.state(t), FlusherState::Done);
        assert_eq!((f.poll_action(t), f.next_deadline()), (None, None));
    }

    #[test]
    fn past_the_stop_timeout_everything_left_is_given_up() {
        let t = t0();
        let mut f = Flusher::new(1000, 0);
        f.push(batch(2, 1));
        f.stop(t);
        let mut now = t;
        loop {
            assert!(f.poll_action(now).is_some());
            match f.on_written(now, Err(WriteError::Unavailable)) {
                Progress::Retry { retry_at, .. } => now = retry_at,
                Progress::GaveUp { rows, reason, .. } => {
                    assert_eq!((rows, reason), (3, GiveUp::StopTimeout));
                    break;
                }
                p => panic!("{p:?}"),
            }
        }
        assert!(now - t >= STOP_FLUSH_TIMEOUT);
        assert!(now - t < STOP_FLUSH_TIMEOUT + RETRY_MAX);
        assert!(f.is_done());
    }

    #[test]
    fn prunes_at_the_first_poll_then_hourly_and_retries_a_failure() {
        let t = t0();
        let mut f = Flusher::new(1000, 0).with_prune(30);
        let Some(Action::Prune(p)) = f.poll_action(t) else {
            panic!()
        };
        assert_eq!(p.history_before(100 * 86_400), Some(70 * 86_400));
        assert_eq!(p.marks_before(100 * 86_400), 98 * 86_400);
        assert_eq!(f.on_written(t, Ok(())), Progress::Unexpected);
        f.on_pruned(t, true);
        assert_eq!(f.next_deadline(), Some(t + PRUNE_EVERY));
        // Writes go on meanwhile.
        f.push(batch(1, 1));
        write(f.poll_action(t));
        f.on_pruned(t, true); // not a prune: ignored
        f.on_written(t, Ok(()));
        // A due prune goes before the next write.
        f.push(batch(1, 2));
        let at = t + PRUNE_EVERY;
        assert!(matches!(f.poll_action(at), Some(Action::Prune(_))));
        f.on_pruned(at, false);
        write(f.poll_action(at));
        f.on_written(at, Ok(()));
        assert_eq!(f.next_deadline(), Some(at + PRUNE_RETRY));
        // Retention 0 keeps the history and still prunes the chunk marks.
        let mut f = Flusher::new(1000, 0).with_prune(0);
        let Some(Action::Prune(p)) = f.poll_action(t) else {
            panic!()
        };
        assert_eq!(p.history_before(100 * 86_400), None);
    }

    #[test]
    fn the_bound_applies_to_rows_put_back() {
        let t = t0();
        let mut f = Flusher::new(3, 0);
        let mut b = Batch::new();
        for minute in 0..3 {
            b.add_history(ModKey::new(1, 1), HostAddr::new(1, 1), minute * 60, 1, 0);
        }
        assert!(!f.push(b).any());
        write(f.poll_action(t)); // all 3 rows in one chunk
        f.push(batch(3, 1)); // 4 rows, 3 hosts in one minute: over the bound
        let Progress::Retry { bound, .. } = f.on_written(t, Err(WriteError::Unavailable)) else {
            panic!()
        };
        assert_eq!(
            f.in_doubt(),
            Some(1),
            "the chunk in doubt is not subject to the bound"
        );
        assert!(bound.any() || f.pending_rows() <= 3);
    }
}
