//! The running service: the TCP server, the store workers and their writers,
//! the HTTP status endpoints.
//!
//! Threads: the lars-net acceptor and `[reactor] threadNum` loops decode
//! frames and hand each request to the worker its key hashes to on the ring;
//! each of the `db_thread_cnt` workers turns counters into deltas, updates its
//! windows and the active side of its double buffer, and every
//! `flush_interval` swaps sides into its pending buffer; its writer thread
//! writes the pending rows and keeps them on failure.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use lars_core::config::ReporterConfig;
use lars_core::proto::ReportStatusRequest;
use lars_core::ring::HashRing;
use lars_core::{HostAddr, MessageId, ModKey};
use lars_net::{HttpRequest, HttpResponse, NetStats, Router, StatusServer, TcpServer};
use lars_store::{CallStatusRow, HistoryRow, StatsStore, Store};

use crate::aggregate::{Batch, BoundOutcome, DoubleBuffer, Pending};
use crate::delta::DeltaTracker;
use crate::stats::{Stats, StatsSnapshot, add};
use crate::windows::{EXPIRE_AFTER, HostView, Windows};

/// Reports whose `ts` is more than this many seconds behind the reporter's
/// clock are ignored (and counted).
pub const LATE_AFTER: i64 = 3600;
/// Reports queued per worker before the network threads wait (backpressure
/// onto the agents' TCP connections instead of unbounded memory).
pub const QUEUE_CAPACITY: usize = 65_536;
/// How long a graceful stop keeps retrying the database before giving up on
/// the rows still pending (logged and counted).
pub const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows per store call (each call is one transaction).
pub const WRITE_CHUNK: usize = 5_000;
/// Failed writes with a statement error (not an outage) after which the rows
/// are dropped, loudly.
const MAX_QUERY_FAILURES: u32 = 5;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long the store remembers which history chunks it applied (a chunk
/// in doubt is retried within this time or not at all).
const BATCH_MARKS_KEPT: i64 = 2 * 86_400;

/// Why the reporter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReporterError {
    /// The TCP or HTTP listener could not be started.
    #[error("cannot start listener: {0}")]
    Net(#[from] lars_net::NetError),
    /// A thread could not be spawned.
    #[error("cannot spawn thread: {0}")]
    Thread(#[from] std::io::Error),
}

enum Msg {
    Report(ReportStatusRequest),
    Stop,
}

struct WriterState {
    pending: Pending,
    stop: bool,
}

struct WorkerShared {
    windows: Mutex<Windows>,
    writer: Mutex<WriterState>,
    wake: Condvar,
}

struct Shared {
    stats: Stats,
    ring: HashRing,
    senders: Vec<Sender<Msg>>,
    workers: Vec<Arc<WorkerShared>>,
    net: OnceLock<Arc<NetStats>>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread cannot leave these structures half-updated in a way
    // that matters more than losing the service, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    fn snapshot(&self) -> StatsSnapshot {
        let mut s = self.stats.snapshot();
        s.uptime_secs = self.started.elapsed().as_secs();
        s.queue_depths = self.senders.iter().map(Sender::len).collect();
        s.pending_rows = self
            .workers
            .iter()
            .map(|w| lock(&w.writer).pending.len() as u64)
            .sum();
        if let Some(net) = self.net.get() {
            let n = net.snapshot();
            s.bad_frames += n.bad_frames + n.unknown_msgids;
            s.connections = n.open;
        }
        s
    }

    fn hosts(&self, key: ModKey) -> Vec<HostView> {
        let w = self.ring.worker(key);
        match self.workers.get(w) {
            Some(ws) => lock(&ws.windows).view(key, unix_now()),
            None => Vec::new(),
        }
    }

    fn on_frame(&self, frame: &lars_net::Frame) {
        let req: ReportStatusRequest = match frame.message() {
            Ok(r) => r,
            Err(e) => {
                add(&self.stats.bad_bodies, 1);
                tracing::warn!("dropping malformed ReportStatusRequest: {e}");
                return;
            }
        };
        add(&self.stats.requests, 1);
        add(&self.stats.results, req.results.len() as u64);
        let key = ModKey::from_wire(req.modid, req.cmdid);
        let Some(tx) = self.senders.get(self.ring.worker(key)) else {
            return;
        };
        match tx.try_send(Msg::Report(req)) {
            Ok(()) => {}
            // Full: wait (backpressure); the worker is draining.
            Err(TrySendError::Full(m)) => {
                let _ = tx.send(m);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// A running reporter. [`ReporterHandle::stop`] (or drop) stops it
/// gracefully: every accepted count is flushed to the store before it returns.
pub struct ReporterHandle {
    shared: Arc<Shared>,
    server: Option<TcpServer>,
    http: Option<StatusServer>,
    workers: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for ReporterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReporterHandle")
            .field("local_addr", &self.local_addr)
            .field("http_addr", &self.http_addr)
            .field("workers", &self.shared.workers.len())
            .finish()
    }
}

/// The reporter service; see [`Reporter::start`].
#[derive(Debug)]
pub struct Reporter;

impl Reporter {
    /// Starts the workers, the TCP server on `[reactor]` and, when
    /// configured, the HTTP server on `[http]`, writing into `store`.
    pub fn start(config: ReporterConfig, store: Store) -> Result<ReporterHandle, ReporterError> {
        let n = config.db_thread_cnt.max(1);
        let mut senders = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
            senders.push(tx);
            receivers.push(rx);
        }
        let workers: Vec<Arc<WorkerShared>> = (0..n)
            .map(|_| {
                Arc::new(WorkerShared {
                    windows: Mutex::new(Windows::new()),
                    writer: Mutex::new(WriterState {
                        pending: Pending::new(config.max_pending_rows),
                        stop: false,
                    }),
                    wake: Condvar::new(),
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            stats: Stats::default(),
            ring: HashRing::new(n),
            senders,
            workers,
            net: OnceLock::new(),
            started: Instant::now(),
        });
        shared.stats.db_healthy.store(true, Ordering::Relaxed);

        let flush = config.flush_interval.max(Duration::from_millis(10));
        let mut joins = Vec::with_capacity(n);
        for (i, rx) in receivers.into_iter().enumerate() {
            let sh = Arc::clone(&shared);
            let st = store.clone();
            let retention = config.history_retention_days;
            joins.push(
                thread::Builder::new()
                    .name(format!("reporter-w{i}"))
                    .spawn(move || worker_main(i, sh, st, rx, flush, retention))?,
            );
        }
        let mut handle = ReporterHandle {
            shared: Arc::clone(&shared),
            server: None,
            http: None,
            workers: joins,
            local_addr: SocketAddr::V4(config.reactor.addr),
            http_addr: None,
        };

        let sh = Arc::clone(&shared);
        let router = Router::new().route(MessageId::ReportStatusRequest, move |_conn, frame| {
            sh.on_frame(&frame);
        });
        let server = TcpServer::from_config(&config.reactor)
            .name("lars-reporter")
            .router(router)
            .start()?;
        let _ = shared.net.set(server.stats());
        handle.local_addr = server.local_addr();
        handle.server = Some(server);

        if let Some(addr) = config.http.addr {
            let sh = Arc::clone(&shared);
            let http = StatusServer::start(addr, Arc::new(move |req| http_handler(&sh, req)))?;
            handle.http_addr = Some(http.local_addr());
            handle.http = Some(http);
        }
        tracing::info!(
            addr = %handle.local_addr,
            workers = n,
            flush_ms = flush.as_millis() as u64,
            "lars-reporter started"
        );
        Ok(handle)
    }
}

impl ReporterHandle {
    /// The bound TCP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound HTTP address, when `[http]` is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The counters and gauges now.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.snapshot()
    }

    /// The live windows of every host of `key` (what `/hosts` shows).
    pub fn hosts(&self, key: ModKey) -> Vec<HostView> {
        self.shared.hosts(key)
    }

    /// Stops accepting, processes every queued report, flushes everything to
    /// the store (retrying up to [`STOP_FLUSH_TIMEOUT`] while it is down) and
    /// joins every thread. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
            server.join();
        }
        for tx in &self.shared.senders {
            let _ = tx.send(Msg::Stop);
        }
        for j in self.workers.drain(..) {
            if j.join().is_err() {
                tracing::error!("a reporter worker panicked");
            }
        }
        if let Some(mut http) = self.http.take() {
            http.stop();
        }
    }
}

impl Drop for ReporterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn http_handler(sh: &Shared, req: &HttpRequest) -> HttpResponse {
    if req.method != "GET" {
        return HttpResponse::bad_request("only GET\n").status(405);
    }
    match req.path.as_str() {
        "/status" => json(&sh.snapshot()),
        "/metrics" => HttpResponse::text(sh.snapshot().prometheus()),
        "/hosts" => {
            let parse = |k: &str| req.query(k).and_then(|v| v.parse::<u32>().ok());
            let (Some(modid), Some(cmdid)) = (parse("modid"), parse("cmdid")) else {
                return HttpResponse::bad_request("expected ?modid=<u32>&cmdid=<u32>\n");
            };
            let key = ModKey::new(modid, cmdid);
            json(&serde_json::json!({
                "modid": modid,
                "cmdid": cmdid,
                "now": unix_now(),
                "hosts": sh.hosts(key),
            }))
        }
        _ => HttpResponse::not_found(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> HttpResponse {
    match serde_json::to_string_pretty(v) {
        Ok(s) => HttpResponse::json(s),
        Err(e) => HttpResponse::text(format!("cannot encode: {e}\n")).status(500),
    }
}

/// The delta tracker of worker `index`, resumed from the `ServerCallStatus`
/// rows of its keys (the last counters persisted per `(key, host, caller)`,
/// at most [`EXPIRE_AFTER`] old). Without it a restarted reporter would take
/// the first report of every cumulative stream as new calls and count the
/// sender's history twice. A store that cannot be read is logged and counted
/// (`resume_failures`), and the worker starts empty.
fn resume_tracker(index: usize, shared: &Shared, store: &Store, now: i64) -> DeltaTracker {
    let mut tracker = DeltaTracker::new();
    let rows = match store.call_status(None) {
        Ok(rows) => rows,
        Err(e) => {
            add(&shared.stats.resume_failures, 1);
            tracing::warn!(
                "reporter worker {index}: cannot read the persisted counters ({e}); \
                 the first report of each stream counts in full"
            );
            return tracker;
        }
    };
    let mut resumed = 0u64;
    for r in rows {
        if r.ts < now - EXPIRE_AFTER || shared.ring.worker(r.key) != index {
            continue;
        }
        let (Ok(succ), Ok(err)) = (u32::try_from(r.succ_cnt), u32::try_from(r.err_cnt)) else {
            continue;
        };
        tracker.seed((r.key, r.host, r.caller), succ, err, r.ts);
        resumed += 1;
    }
    add(&shared.stats.resumed_streams, resumed);
    if resumed > 0 {
        tracing::info!(
            worker = index,
            streams = resumed,
            "resumed the persisted counters"
        );
    }
    tracker
}

/// What one worker owns outright.
struct Worker {
    index: usize,
    shared: Arc<Shared>,
    ws: Arc<WorkerShared>,
    tracker: DeltaTracker,
    buffer: DoubleBuffer,
    last_expire: i64,
}

fn worker_main(
    index: usize,
    shared: Arc<Shared>,
    store: Store,
    rx: Receiver<Msg>,
    flush: Duration,
    retention_days: u32,
) {
    let Some(ws) = shared.workers.get(index).cloned() else {
        return;
    };
    let seed_store = store.clone();
    let writer = {
        let sh = Arc::clone(&shared);
        let ws = Arc::clone(&ws);
        thread::Builder::new()
            .name(format!("reporter-db{index}"))
            .spawn(move || writer_main(index, sh, ws, store, flush, retention_days))
    };
    let writer = match writer {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::error!("cannot spawn writer {index}: {e}; rows stay in memory");
            None
        }
    };
    let tracker = resume_tracker(index, &shared, &seed_store, unix_now());
    let mut w = Worker {
        index,
        shared,
        ws,
        tracker,
        buffer: DoubleBuffer::new(),
        last_expire: unix_now(),
    };
    let mut next_flush = Instant::now() + flush;
    'run: loop {
        match rx.recv_deadline(next_flush) {
            Ok(Msg::Report(first)) => {
                let now = unix_now();
                let ws = Arc::clone(&w.ws);
                let mut windows = lock(&ws.windows);
                w.handle(&mut windows, first, now);
                // Drain what is queued under one lock, a bounded batch.
                for _ in 0..1024 {
                    match rx.try_recv() {
                        Ok(Msg::Report(r)) => w.handle(&mut windows, r, now),
                        Ok(Msg::Stop) => break 'run,
                        Err(_) => break,
                    }
                }
            }
            Ok(Msg::Stop) => break,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_flush {
            w.flush_tick();
            next_flush = Instant::now() + flush;
        }
    }
    // Graceful stop: what is still queued, then the last swap.
    let now = unix_now();
    {
        let ws = Arc::clone(&w.ws);
        let mut windows = lock(&ws.windows);
        while let Ok(Msg::Report(r)) = rx.try_recv() {
            w.handle(&mut windows, r, now);
        }
    }
    w.flush_tick();
    lock(&w.ws.writer).stop = true;
    w.ws.wake.notify_all();
    if let Some(j) = writer {
        if j.join().is_err() {
            tracing::error!("reporter writer {index} panicked");
        }
    }
}

impl Worker {
    fn handle(&mut self, windows: &mut Windows, req: ReportStatusRequest, now: i64) {
        let stats = &self.shared.stats;
        let key = ModKey::from_wire(req.modid, req.cmdid);
        let caller = req.caller as u32;
        let ts = if req.ts == 0 {
            add(&stats.zero_ts, 1);
            now
        } else {
            i64::from(req.ts)
        };
        if ts < now - LATE_AFTER {
            add(&stats.late_ignored, 1);
            return;
        }
        let ts = if ts > now {
            add(&stats.future_clamped, 1);
            now
        } else {
            ts
        };
        let side = self.buffer.active();
        for r in &req.results {
            let Some(host) = HostAddr::from_wire(r.ip, r.port) else {
                add(&stats.bad_results, 1);
                continue;
            };
            let d = self
                .tracker
                .observe((key, host, caller), r.succ, r.err, now);
            if d.reset {
                add(&stats.resets, 1);
            }
            add(&stats.succ_in, d.succ);
            add(&stats.err_in, d.err);
            windows.record((key, host, caller), ts, d.succ, d.err, r.overload);
            if d.succ > 0 || d.err > 0 {
                side.add_history(key, host, ts, d.succ, d.err);
            }
            side.set_status(CallStatusRow {
                key,
                host,
                caller,
                succ_cnt: u64::from(r.succ),
                err_cnt: u64::from(r.err),
                ts,
                overload: r.overload,
            });
        }
    }

    fn flush_tick(&mut self) {
        let side = self.buffer.swap();
        if !side.is_empty() {
            let outcome = lock(&self.ws.writer).pending.push_newer(side);
            report_bound(self.index, &self.shared.stats, outcome);
            self.ws.wake.notify_all();
        }
        let now = unix_now();
        if now - self.last_expire >= 60 {
            self.last_expire = now;
            let hosts = lock(&self.ws.windows).expire(now);
            let streams = self.tracker.expire(now - EXPIRE_AFTER);
            add(&self.shared.stats.expired_hosts, hosts as u64);
            add(&self.shared.stats.expired_streams, streams as u64);
        }
    }
}

fn report_bound(worker: usize, stats: &Stats, o: BoundOutcome) {
    if !o.any() {
        return;
    }
    add(&stats.minutes_merged, o.minutes_merged);
    add(&stats.history_rows_dropped, o.rows_dropped);
    add(&stats.calls_dropped, o.succ_dropped + o.err_dropped);
    if o.rows_dropped > 0 {
        tracing::error!(
            worker,
            rows = o.rows_dropped,
            succ = o.succ_dropped,
            err = o.err_dropped,
            "max_pending_rows reached while the database is behind: DROPPED the oldest history minute"
        );
    } else {
        tracing::warn!(
            worker,
            minutes = o.minutes_merged,
            "max_pending_rows reached while the database is behind: merged the oldest history minutes into the next (counts kept, minute moved later)"
        );
    }
}

/// A chunk of history rows and the id that makes its write idempotent. A
/// chunk whose write failed is kept exactly as it is, under the same id, until
/// the store confirms it: the failure may have hit after the commit (the
/// acknowledgement lost with the connection), and
/// [`StatsStore::append_history_once`] then skips it instead of adding it
/// twice.
#[derive(Debug)]
struct HistoryChunk {
    id: u64,
    rows: Vec<HistoryRow>,
}

/// Chunk ids: a random start per writer, then consecutive.
#[derive(Debug)]
struct ChunkIds(u64);

impl ChunkIds {
    fn new(index: usize) -> Self {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(index);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self(h.finish())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        self.0
    }
}

fn write_chunk(
    store: &Store,
    chunk: &HistoryChunk,
    stats: &Stats,
) -> Result<(), lars_store::StoreError> {
    if !store.append_history_once(chunk.id, unix_now(), &chunk.rows)? {
        add(&stats.chunks_already_applied, 1);
    }
    add(&stats.history_rows_written, chunk.rows.len() as u64);
    let (s, er) = chunk
        .rows
        .iter()
        .fold((0, 0), |(s, e), r| (s + r.succ, e + r.err));
    add(&stats.succ_written, s);
    add(&stats.err_written, er);
    Ok(())
}

/// Writes `batch` (after the chunk in doubt, if any); on failure returns the
/// rows not attempted, the failed chunk staying in `in_doubt`.
fn write_batch(
    store: &Store,
    batch: Batch,
    in_doubt: &mut Option<HistoryChunk>,
    ids: &mut ChunkIds,
    stats: &Stats,
) -> Result<(), Box<(Batch, lars_store::StoreError)>> {
    // The chunk in doubt first, under its own id; until it is confirmed
    // nothing else is written.
    if let Some(chunk) = in_doubt.take() {
        if let Err(e) = write_chunk(store, &chunk, stats) {
            *in_doubt = Some(chunk);
            return Err(Box::new((batch, e)));
        }
    }
    let (status, history) = batch.into_rows();
    // History first: it is additive, so every chunk is written at most once.
    // Status rows are idempotent.
    for (i, rows) in history.chunks(WRITE_CHUNK).enumerate() {
        let chunk = HistoryChunk {
            id: ids.next(),
            rows: rows.to_vec(),
        };
        if let Err(e) = write_chunk(store, &chunk, stats) {
            *in_doubt = Some(chunk);
            let rest = history
                .get((i + 1) * WRITE_CHUNK..)
                .map(<[HistoryRow]>::to_vec)
                .unwrap_or_default();
            return Err(Box::new((Batch::from_rows(status, rest), e)));
        }
    }
    for (i, chunk) in status.chunks(WRITE_CHUNK).enumerate() {
        if let Err(e) = store.upsert_call_status(chunk) {
            let rest = status[i * WRITE_CHUNK..].to_vec();
            return Err(Box::new((Batch::from_rows(rest, Vec::new()), e)));
        }
        add(&stats.status_rows_written, chunk.len() as u64);
    }
    Ok(())
}

fn writer_main(
    index: usize,
    shared: Arc<Shared>,
    ws: Arc<WorkerShared>,
    store: Store,
    flush: Duration,
    retention_days: u32,
) {
    let stats = &shared.stats;
    let mut retry: Option<Duration> = None;
    let mut query_failures = 0u32;
    let mut stop_deadline: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    let mut in_doubt: Option<HistoryChunk> = None;
    let mut ids = ChunkIds::new(index);
    loop {
        let batch = {
            let mut st = lock(&ws.writer);
            let wait = retry.unwrap_or(flush);
            if st.pending.is_empty() && !st.stop {
                st = ws
                    .wake
                    .wait_timeout(st, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            } else if retry.is_some() && !st.stop {
                st = ws
                    .wake
                    .wait_timeout_while(st, wait, |s| !s.stop)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if st.stop && stop_deadline.is_none() {
                stop_deadline = Some(Instant::now() + STOP_FLUSH_TIMEOUT);
            }
            let b = st.pending.take();
            if b.is_empty() && in_doubt.is_none() && st.stop {
                return;
            }
            b
        };
        if index == 0 && last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(Instant::now());
            let now = unix_now();
            if retention_days > 0 {
                let cutoff = now - i64::from(retention_days) * 86_400;
                match store.prune_history(cutoff) {
                    Ok(n) if n > 0 => {
                        tracing::info!(rows = n, "pruned history older than {retention_days} days")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!("history prune failed: {e}");
                        last_prune = None;
                    }
                }
            }
            if let Err(e) = store.prune_batches(now - BATCH_MARKS_KEPT) {
                tracing::warn!("pruning the applied-chunk marks failed: {e}");
                last_prune = None;
            }
        }
        if batch.is_empty() && in_doubt.is_none() {
            continue;
        }
        let started = Instant::now();
        match write_batch(&store, batch, &mut in_doubt, &mut ids, stats) {
            Ok(()) => {
                add(&stats.flushes, 1);
                stats.last_flush_unix_ms.store(unix_ms(), Ordering::Relaxed);
                stats.last_flush_duration_us.store(
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                if !stats.db_healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(worker = index, "database is back; pending rows written");
                }
                retry = None;
                query_failures = 0;
            }
            Err(failed) => {
                let (rest, e) = *failed;
                add(&stats.flush_failures, 1);
                if stats.db_healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(
                        worker = index,
                        "database write failed, keeping rows in memory: {e}"
                    );
                }
                *lock(&stats.last_db_error) = Some(e.to_string());
                let give_up_query = if e.is_unavailable() {
                    query_failures = 0;
                    false
                } else {
                    query_failures += 1;
                    query_failures >= MAX_QUERY_FAILURES
                };
                let past_deadline = stop_deadline.is_some_and(|d| Instant::now() >= d);
                if give_up_query || past_deadline {
                    let doubtful = in_doubt.take().map_or(0, |c| c.rows.len());
                    let n = (rest.len() + doubtful) as u64;
                    add(&stats.rows_rejected, n);
                    tracing::error!(
                        worker = index,
                        rows = n,
                        "DROPPING rows that could not be written ({}): {e}",
                        if past_deadline {
                            "stop timeout"
                        } else {
                            "repeated statement errors"
                        }
                    );
                    query_failures = 0;
                } else {
                    let outcome = lock(&ws.writer).pending.put_back(rest);
                    report_bound(index, stats, outcome);
                }
                let next = retry.map_or(RETRY_MIN, |r| (r * 2).min(RETRY_MAX));
                retry = Some(next);
                if stop_deadline.is_some() {
                    // Stopping: no more wake-ups will come; pace the retries.
                    thread::sleep(next);
                }
            }
        }
    }
}
