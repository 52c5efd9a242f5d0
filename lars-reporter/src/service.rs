//! The running service: the TCP server, the store workers and their writers,
//! the HTTP status endpoints.
//!
//! Threads: the lars-net acceptor and `[reactor] threadNum` loops decode
//! frames and hand each request to the worker its key hashes to on the ring;
//! each of the `db_thread_cnt` workers turns counters into deltas, updates its
//! windows and the active side of its double buffer (a
//! [`lars_stats::Receiver`]), and every `flush_interval` pushes the filled
//! side into its [`lars_stats::Flusher`]; its writer thread performs the
//! flusher's actions against the store and reports their results. The policy
//! (deltas, time rules, chunking, the chunk in doubt, retry, give-up, prune
//! schedule) is lars-stats'; this file only moves data and reads the clock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::ReporterConfig;
use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};
use lars_core::proto::ReportStatusRequest;
use lars_core::ring::HashRing;
use lars_core::{MessageId, ModKey};
use lars_net::http::HttpStats;
use lars_net::{HttpRequest, HttpResponse, NetStats, Router, StatusServer, TcpServer};
use lars_stats::{
    Action, BoundOutcome, EXPIRE_AFTER, Flusher, GiveUp, HostView, Progress, Prune, Received,
    Receiver, Rejection, ReportTime, TrustLimits, Windows, WriteError,
};
use lars_store::{Chain, StatsStore, Store, StoreError};

use crate::stats::{Stats, StatsSnapshot, add};

/// Reports queued per worker before the network threads wait (backpressure
/// onto the agents' TCP connections instead of unbounded memory).
pub const QUEUE_CAPACITY: usize = 65_536;

/// Why the reporter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReporterError {
    /// The TCP or HTTP listener could not be started.
    #[error("cannot start listener")]
    Net(#[from] lars_net::NetError),
    /// A thread could not be spawned.
    #[error("cannot spawn thread")]
    Thread(#[from] std::io::Error),
}

enum Msg {
    Report(ReportStatusRequest),
    Stop,
}

struct WorkerShared {
    windows: Mutex<Windows>,
    /// The writer's state machine; the worker pushes rows and the stop into
    /// it, the writer thread drives it.
    writer: Mutex<Flusher>,
    wake: Condvar,
    /// When the writer's store operation in flight began, milliseconds
    /// since [`Shared::started`] plus one; 0 while it is idle.
    in_flight_since: AtomicU64,
    /// The operation in flight was already reported as stalled (or, for a
    /// probe, as failed).
    stall_reported: AtomicBool,
    /// The operation in flight is a health probe, not a write.
    probing: AtomicBool,
}

struct Shared {
    stats: Stats,
    ring: HashRing,
    senders: Vec<Sender<Msg>>,
    workers: Vec<Arc<WorkerShared>>,
    net: OnceLock<Arc<NetStats>>,
    /// The status server's counters (`[http]`; zero when it is off).
    http: Arc<HttpStats>,
    started: Instant,
    /// `[reporter] db_stall_timeout`.
    stall_after: Duration,
    /// `[reporter] db_probe_interval`; `None`: off.
    probe_every: Option<Duration>,
    /// When the database last answered (a write or a health probe
    /// succeeded), as [`Shared::mark`]; 0: not yet.
    db_answered_at: AtomicU64,
    /// `[reporter] stream_reload_after` in whole seconds; `None`: off.
    reload_after: Option<i64>,
    /// `[reporter] max_calls_per_second` and co; `None`: off.
    trust_limits: Option<TrustLimits>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread cannot leave these structures half-updated in a way
    // that matters more than losing the service, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> i64 {
    i64::try_from(lars_core::time::unix_now()).unwrap_or(i64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    /// Milliseconds since start, plus one (0 means "none").
    fn mark(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Records that the database just answered.
    fn db_answered(&self) {
        self.db_answered_at.store(self.mark(), Ordering::Relaxed);
    }

    /// When the database last answered; `None`: not since start.
    fn db_answered_instant(&self) -> Option<Instant> {
        match self.db_answered_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(self.started + Duration::from_millis(at - 1)),
        }
    }

    /// How long worker `ws`'s store operation has been in flight.
    fn in_flight(&self, ws: &WorkerShared) -> Option<Duration> {
        match ws.in_flight_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.mark().saturating_sub(since))),
        }
    }

    fn snapshot(&self) -> StatsSnapshot {
        let mut s = self.stats.snapshot();
        s.uptime_secs = self.started.elapsed().as_secs();
        let in_flight = self
            .workers
            .iter()
            .filter_map(|w| self.in_flight(w))
            .max()
            .unwrap_or_default();
        s.db_write_in_flight_secs = in_flight.as_secs();
        if in_flight > self.stall_after {
            // Stalled, even before the worker's next tick notices it.
            s.db_healthy = false;
        }
        s.last_flush_age_secs = match s.last_flush_unix_ms {
            0 => s.uptime_secs,
            at => unix_ms().saturating_sub(at) / 1000,
        };
        s.db_answer_age_secs = self
            .db_answered_instant()
            .map_or(s.uptime_secs, |at| at.elapsed().as_secs());
        s.http = self.http.snapshot();
        s.queue_depths = self.senders.iter().map(Sender::len).collect();
        s.pending_rows = self
            .workers
            .iter()
            .map(|w| lock(&w.writer).pending_rows() as u64)
            .sum();
        if let Some(net) = self.net.get() {
            let n = net.snapshot();
            s.bad_frames += n.bad_frames + n.unknown_msgids;
            s.connections = n.open;
            s.tcp_limits = n.limits();
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
        let n = config.db_thread_cnt.get();
        let mut senders = Vec::with_capacity(n);
        let mut receivers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
            senders.push(tx);
            receivers.push(rx);
        }
        let workers: Vec<Arc<WorkerShared>> = (0..n)
            .map(|i| {
                let mut flusher = Flusher::new(config.max_pending_rows, first_chunk_id(i));
                if i == 0 {
                    // One writer prunes for all.
                    flusher = flusher.with_prune(config.history_retention_days);
                }
                Arc::new(WorkerShared {
                    windows: Mutex::new(Windows::new()),
                    writer: Mutex::new(flusher),
                    wake: Condvar::new(),
                    in_flight_since: AtomicU64::new(0),
                    stall_reported: AtomicBool::new(false),
                    probing: AtomicBool::new(false),
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            stats: Stats::default(),
            ring: HashRing::new(n),
            senders,
            workers,
            net: OnceLock::new(),
            http: Arc::default(),
            started: Instant::now(),
            stall_after: config.db_stall_timeout,
            probe_every: Some(config.db_probe_interval).filter(|d| !d.is_zero()),
            db_answered_at: AtomicU64::new(0),
            reload_after: reload_secs(config.stream_reload_after),
            trust_limits: config.trust_limits,
        });
        shared.stats.db_healthy.store(true, Ordering::Relaxed);

        let flush = config.flush_interval;
        let mut joins = Vec::with_capacity(n + 1);
        let mut seed_txs = Vec::with_capacity(n);
        for (i, rx) in receivers.into_iter().enumerate() {
            let sh = Arc::clone(&shared);
            let st = store.clone();
            let (seed_tx, seed_rx) = crossbeam_channel::bounded(1);
            seed_txs.push(seed_tx);
            joins.push(
                thread::Builder::new()
                    .name(format!("reporter-w{i}"))
                    .spawn(move || worker_main(i, sh, st, rx, seed_rx, flush))?,
            );
        }
        {
            let sh = Arc::clone(&shared);
            let st = store.clone();
            let max_rows = config.resume_max_rows;
            joins.push(
                thread::Builder::new()
                    .name("reporter-resume".into())
                    .spawn(move || {
                        let seeds = resume_receivers(&sh, &st, unix_now(), max_rows);
                        for (tx, seed) in seed_txs.into_iter().zip(seeds) {
                            let _ = tx.send(seed);
                        }
                    })?,
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
            let handler = Arc::new(move |req: &HttpRequest| http_handler(&sh, req));
            let http = StatusServer::start_with_stats(addr, handler, Arc::clone(&shared.http))?;
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

    /// The bound address of the `[tls]` listener, if there is one (with
    /// `[tls] port = 0`, the port the system chose).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(TcpServer::tls_local_addr)
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
    /// the store (retrying up to [`STOP_FLUSH_TIMEOUT`](crate::STOP_FLUSH_TIMEOUT)
    /// while it is down) and joins every thread. Idempotent.
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

/// One receiver per worker, resumed from the `ServerCallStatus` rows under
/// [`EXPIRE_AFTER`] old (the last counters persisted per `(key, host,
/// caller)`; see [`Receiver::resume`]), read once for all workers, streamed
/// and capped at `max_rows`. Without it a restarted reporter would take the
/// first report of every cumulative stream as new calls and count the
/// sender's history twice. A store that cannot be read is logged and counted
/// (`resume_failures`): what was read is kept, the rest starts empty.
fn resume_receivers(shared: &Shared, store: &Store, now: i64, max_rows: u64) -> Vec<Receiver> {
    let mut receivers: Vec<Receiver> = (0..shared.workers.len())
        .map(|_| new_receiver(shared))
        .collect();
    let started = Instant::now();
    let mut resumed = 0;
    let read = store.for_each_recent_status(now - EXPIRE_AFTER, max_rows, &mut |row| {
        if let Some(r) = receivers.get_mut(shared.ring.worker(row.key)) {
            resumed += r.resume(std::iter::once(row), now);
        }
    });
    add(&shared.stats.resumed_streams, resumed);
    match read {
        Ok(rows) => {
            add(&shared.stats.resume_rows_read, rows);
            if rows >= max_rows {
                add(&shared.stats.resume_capped, 1);
                tracing::warn!(
                    rows,
                    "resume_max_rows reached: stopped reading the persisted counters; \
                     the first report of each stream not read counts in full"
                );
            }
            tracing::info!(
                rows,
                streams = resumed,
                ms = started.elapsed().as_millis() as u64,
                "resumed the persisted counters"
            );
        }
        Err(e) => {
            add(&shared.stats.resume_failures, 1);
            tracing::warn!(
                streams = resumed,
                "cannot read the persisted counters ({}); the first report of each \
                 stream not read counts in full",
                Chain(&e)
            );
        }
    }
    receivers
}

/// `stream_reload_after` in whole unix seconds (rounded up: reports are
/// stamped in seconds); `None` when zero (off).
fn reload_secs(after: Duration) -> Option<i64> {
    if after.is_zero() {
        return None;
    }
    Some(i64::try_from(after.as_secs()).unwrap_or(i64::MAX) + i64::from(after.subsec_nanos() > 0))
}

fn new_receiver(shared: &Shared) -> Receiver {
    let mut r = Receiver::new();
    if let Some(secs) = shared.reload_after {
        r = r.with_reload_after(secs);
    }
    if let Some(limits) = shared.trust_limits {
        r = r.with_trust_limits(limits);
    }
    r
}

/// At most one log line per this long about failed re-reads, and one about
/// rejected reports.
const RELOAD_LOG_EVERY: Duration = Duration::from_secs(10);

/// What one worker owns outright.
struct Worker {
    index: usize,
    shared: Arc<Shared>,
    ws: Arc<WorkerShared>,
    store: Store,
    receiver: Receiver,
    last_expire: i64,
    /// When a failed re-read was last logged, and the failures since.
    reload_log: Option<Instant>,
    reload_unlogged: u64,
    /// When a rejected report was last logged, and the rejections since.
    reject_log: Option<Instant>,
    reject_unlogged: u64,
}

fn worker_main(
    index: usize,
    shared: Arc<Shared>,
    store: Store,
    rx: crossbeam_channel::Receiver<Msg>,
    seed: crossbeam_channel::Receiver<Receiver>,
    flush: Duration,
) {
    let Some(ws) = shared.workers.get(index).cloned() else {
        return;
    };
    let writer = {
        let sh = Arc::clone(&shared);
        let ws = Arc::clone(&ws);
        let store = store.clone();
        thread::Builder::new()
            .name(format!("reporter-db{index}"))
            .spawn(move || writer_main(index, sh, ws, store))
    };
    let writer = match writer {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::error!("cannot spawn writer {index} ({e}); rows stay in memory");
            None
        }
    };
    // Reports wait in the queue until the resumed counters are here.
    let receiver = seed.recv().unwrap_or_else(|_| new_receiver(&shared));
    let mut w = Worker {
        index,
        shared,
        ws,
        store,
        receiver,
        last_expire: unix_now(),
        reload_log: None,
        reload_unlogged: 0,
        reject_log: None,
        reject_unlogged: 0,
    };
    let mut next_flush = Instant::now() + flush;
    let mut drained = Vec::with_capacity(1025);
    'run: loop {
        match rx.recv_deadline(next_flush) {
            Ok(Msg::Report(first)) => {
                // Drain what is queued, a bounded batch.
                drained.push(first);
                let mut stop = false;
                for _ in 0..1024 {
                    match rx.try_recv() {
                        Ok(Msg::Report(r)) => drained.push(r),
                        Ok(Msg::Stop) => {
                            stop = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                w.handle_all(&mut drained, unix_now());
                if stop {
                    break 'run;
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
    while let Ok(Msg::Report(r)) = rx.try_recv() {
        drained.push(r);
    }
    w.handle_all(&mut drained, unix_now());
    w.flush_tick();
    lock(&w.ws.writer).stop(Instant::now());
    w.ws.wake.notify_all();
    if let Some(j) = writer {
        if j.join().is_err() {
            tracing::error!("reporter writer {index} panicked");
        }
    }
}

impl Worker {
    /// Applies the reports drained from the queue, in order; a report whose
    /// streams must be re-read first (see [`Receiver::reload_needed`]) has
    /// its read done here, with no lock held.
    fn handle_all(&mut self, drained: &mut Vec<ReportStatusRequest>, now: i64) {
        let flushed = lock(&self.ws.writer).flushed_through();
        self.receiver.set_flushed_through(flushed);
        let ws = Arc::clone(&self.ws);
        let mut windows = None;
        for req in drained.drain(..) {
            if let Some((key, caller)) = self.receiver.reload_needed(&req, now) {
                windows = None; // no lock over a store read
                self.reload(&req, key, caller, now);
            }
            let windows = windows.get_or_insert_with(|| lock(&ws.windows));
            self.handle(windows, req, now);
        }
    }

    /// Re-reads the persisted counters of `key` reported by `caller` and
    /// hands them to the receiver; a failed read is counted, logged
    /// (rate-limited) and the report is applied from memory.
    fn reload(&mut self, req: &ReportStatusRequest, key: ModKey, caller: u32, now: i64) {
        let stats = &self.shared.stats;
        add(&stats.reload_reads, 1);
        match self.store.call_status_of(key, caller) {
            Ok(rows) => {
                let n = self.receiver.reload(req, rows, now);
                add(&stats.streams_reloaded, n);
            }
            Err(e) => {
                add(&stats.reload_failures, 1);
                self.reload_unlogged += 1;
                let due = self
                    .reload_log
                    .is_none_or(|t| t.elapsed() >= RELOAD_LOG_EVERY);
                if due {
                    tracing::warn!(
                        worker = self.index,
                        %key,
                        caller,
                        failures = self.reload_unlogged,
                        "cannot re-read the persisted counters of a stale stream ({}); \
                         applying the report from memory (a stream another reporter \
                         counted meanwhile may be counted twice)",
                        Chain(&e)
                    );
                    self.reload_log = Some(Instant::now());
                    self.reload_unlogged = 0;
                }
            }
        }
    }

    fn handle(&mut self, windows: &mut Windows, req: ReportStatusRequest, now: i64) {
        let got = self.receiver.receive(&req, now, windows);
        if let Some(why) = got.rejected {
            self.rejected(&req, why, got, now);
        }
        let stats = &self.shared.stats;
        match got.time {
            ReportTime::AsSent(_) => {}
            ReportTime::Zero(_) => add(&stats.zero_ts, 1),
            ReportTime::Future(_) => add(&stats.future_clamped, 1),
            ReportTime::Late => add(&stats.late_ignored, 1),
        }
        add(&stats.bad_results, got.bad_results);
        add(&stats.resets, got.resets);
        add(&stats.succ_in, got.succ);
        add(&stats.err_in, got.err);
    }

    /// Counts a report the trust limits rejected and logs it (rate-limited).
    fn rejected(&mut self, req: &ReportStatusRequest, why: Rejection, got: Received, now: i64) {
        let stats = &self.shared.stats;
        add(
            match why {
                Rejection::StreamRate => &stats.rejected_stream_rate,
                Rejection::KeyRate => &stats.rejected_key_rate,
                Rejection::MessageTotal => &stats.rejected_message_total,
            },
            1,
        );
        add(&stats.rejected_calls, got.rejected_calls);
        if got.rejection_unrecorded {
            add(&stats.rejections_unrecorded, 1);
        }
        self.reject_unlogged += 1;
        if self
            .reject_log
            .is_none_or(|t| t.elapsed() >= RELOAD_LOG_EVERY)
        {
            tracing::warn!(
                worker = self.index,
                key = %ModKey::from_wire(req.modid, req.cmdid),
                caller = %std::net::Ipv4Addr::from_bits(req.caller as u32),
                reason = why.as_str(),
                calls = got.rejected_calls,
                rejected = self.reject_unlogged,
                now,
                "REJECTED a report claiming more calls than could have happened \
                 (trust limits: max_calls_per_second, max_calls_per_message); \
                 nothing of it is counted"
            );
            self.reject_log = Some(Instant::now());
            self.reject_unlogged = 0;
        }
    }

    fn flush_tick(&mut self) {
        self.check_stall();
        let side = self.receiver.take_batch();
        let empty = side.is_empty();
        let (outcome, flushed) = {
            let mut writer = lock(&self.ws.writer);
            let outcome = writer.push_taken(side, self.receiver.batches_taken());
            (outcome, writer.flushed_through())
        };
        self.receiver.set_flushed_through(flushed);
        if !empty {
            report_bound(self.index, &self.shared.stats, outcome);
            self.ws.wake.notify_all();
        }
        let now = unix_now();
        if now - self.last_expire >= 60 {
            self.last_expire = now;
            let hosts = lock(&self.ws.windows).expire(now);
            let streams = self.receiver.expire(now);
            add(&self.shared.stats.expired_hosts, hosts as u64);
            add(&self.shared.stats.expired_streams, streams as u64);
        }
    }
}

impl Worker {
    /// A store operation of this worker's writer in flight longer than
    /// `db_stall_timeout` marks the database unhealthy (logged and counted
    /// once per operation: `db_stalls` for a write, `db_probe_failures` for
    /// a health probe); the next successful write or probe marks it healthy.
    fn check_stall(&self) {
        let Some(age) = self.shared.in_flight(&self.ws) else {
            return;
        };
        if age <= self.shared.stall_after || self.ws.stall_reported.swap(true, Ordering::Relaxed) {
            return;
        }
        let stats = &self.shared.stats;
        stats.db_healthy.store(false, Ordering::Relaxed);
        if self.ws.probing.load(Ordering::Relaxed) {
            add(&stats.db_probe_failures, 1);
            *lock(&stats.last_db_error) = Some(format!(
                "a database health probe (SELECT 1) has been in flight for {:.1} s",
                age.as_secs_f64()
            ));
            tracing::error!(
                worker = self.index,
                secs = age.as_secs(),
                "database health probe in flight longer than db_stall_timeout: the database is not answering"
            );
            return;
        }
        add(&stats.db_stalls, 1);
        *lock(&stats.last_db_error) = Some(format!(
            "a database write has been in flight for {:.1} s",
            age.as_secs_f64()
        ));
        tracing::error!(
            worker = self.index,
            secs = age.as_secs(),
            "database write in flight longer than db_stall_timeout: the database is not answering; rows stay in memory"
        );
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

/// A random start for the chunk ids of writer `index` (then consecutive), so
/// two writers or two runs never reuse an id the store still remembers.
fn first_chunk_id(index: usize) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(index);
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn classify(e: &StoreError) -> WriteError {
    if e.is_unavailable() {
        WriteError::Unavailable
    } else {
        WriteError::Rejected
    }
}

/// What a writer does next.
enum Job {
    /// The flusher's next action.
    Store(Action),
    /// A health probe (`SELECT 1`): nothing to write, and the database has
    /// not answered for `db_probe_interval`.
    Probe,
}

/// The idle health probe, run by writer 0 only (one `SELECT 1` per interval
/// per reporter, whatever `db_thread_cnt`).
struct Prober {
    every: Duration,
    /// When the last probe ended (or the writer started).
    last: Instant,
}

impl Prober {
    /// When the next probe is due: `every` after the later of the last
    /// probe and the database's last answer.
    fn due(&self, shared: &Shared) -> Instant {
        shared
            .db_answered_instant()
            .map_or(self.last, |at| at.max(self.last))
            + self.every
    }
}

/// The writer thread of worker `index`: waits for the [`Flusher`]'s next
/// action (new rows, the stop, or its deadline wake it), performs it against
/// the store with the lock released, and hands the result back. Writer 0
/// also probes an idle database (see [`Prober`]).
fn writer_main(index: usize, shared: Arc<Shared>, ws: Arc<WorkerShared>, store: Store) {
    let mut prober = shared
        .probe_every
        .filter(|_| index == 0)
        .map(|every| Prober {
            every,
            last: Instant::now(),
        });
    loop {
        let job = {
            let mut f = lock(&ws.writer);
            loop {
                if f.is_done() {
                    return;
                }
                let now = Instant::now();
                if let Some(action) = f.poll_action(now) {
                    break Job::Store(action);
                }
                // Only with nothing to write: rows are written (and
                // retried), and those writes tell the database's health.
                let probe_at = prober
                    .as_ref()
                    .filter(|_| nothing_to_write(&f))
                    .map(|p| p.due(&shared));
                if probe_at.is_some_and(|at| at <= now) {
                    break Job::Probe;
                }
                let wake_at = match (f.next_deadline(), probe_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                f = match wake_at {
                    Some(at) => {
                        ws.wake
                            .wait_timeout(f, at.saturating_duration_since(now))
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => ws.wake.wait(f).unwrap_or_else(|p| p.into_inner()),
                };
            }
        };
        ws.stall_reported.store(false, Ordering::Relaxed);
        match job {
            Job::Store(action) => {
                ws.in_flight_since.store(shared.mark(), Ordering::Relaxed);
                perform(index, &shared, &ws, &store, action);
            }
            Job::Probe => {
                if let Some(p) = prober.as_mut() {
                    if !others_busy(&shared, &ws) {
                        ws.probing.store(true, Ordering::Relaxed);
                        ws.in_flight_since.store(shared.mark(), Ordering::Relaxed);
                        probe(index, &shared, &ws, &store);
                    }
                    p.last = Instant::now();
                }
            }
        }
        ws.in_flight_since.store(0, Ordering::Relaxed);
        ws.probing.store(false, Ordering::Relaxed);
    }
}

/// No rows waiting, being written or in doubt.
fn nothing_to_write(f: &Flusher) -> bool {
    f.pending_rows() == 0 && f.unconfirmed_rows() == 0
}

/// Another writer has rows to write or a write in flight: its writes tell
/// the database's health, no probe needed.
fn others_busy(shared: &Shared, ws: &Arc<WorkerShared>) -> bool {
    shared.workers.iter().any(|w| {
        !Arc::ptr_eq(w, ws)
            && (w.in_flight_since.load(Ordering::Relaxed) != 0
                || !nothing_to_write(&lock(&w.writer)))
    })
}

/// One health probe: a `SELECT 1` bounded by the store's I/O timeout. A
/// failure marks the database unhealthy and is counted once per probe (not
/// again when [`Worker::check_stall`] already counted it as stalled); a
/// success marks it healthy.
fn probe(index: usize, shared: &Shared, ws: &WorkerShared, store: &Store) {
    let stats = &shared.stats;
    add(&stats.db_probes, 1);
    match store.ping() {
        Ok(()) => {
            shared.db_answered();
            if !stats.db_healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(worker = index, "database answers the health probe again");
            }
        }
        Err(e) => {
            if !ws.stall_reported.swap(true, Ordering::Relaxed) {
                add(&stats.db_probe_failures, 1);
            }
            *lock(&stats.last_db_error) =
                Some(format!("database health probe failed: {}", Chain(&e)));
            if stats.db_healthy.swap(false, Ordering::Relaxed) {
                tracing::error!(
                    worker = index,
                    "database health probe (SELECT 1) failed, the database is unhealthy: {}",
                    Chain(&e)
                );
            } else {
                tracing::warn!(
                    worker = index,
                    "database health probe (SELECT 1) failed again: {}",
                    Chain(&e)
                );
            }
        }
    }
}

/// Performs one of the flusher's actions against the store.
fn perform(index: usize, shared: &Shared, ws: &WorkerShared, store: &Store, action: Action) {
    let stats = &shared.stats;
    match action {
        Action::Write {
            id,
            history,
            status,
            rejected,
        } => {
            let result = store.write_flush_once(id, unix_now(), &history, &status, &rejected);
            if let Ok(applied) = result {
                shared.db_answered();
                if !applied {
                    add(&stats.chunks_already_applied, 1);
                }
                add(&stats.history_rows_written, history.len() as u64);
                add(&stats.status_rows_written, status.len() as u64);
                let (s, e) = history
                    .iter()
                    .fold((0, 0), |(s, e), r| (s + r.succ, e + r.err));
                add(&stats.succ_written, s);
                add(&stats.err_written, e);
            }
            written(index, stats, ws, result.map(drop));
        }
        Action::Prune(p) => {
            let ok = prune(store, p);
            lock(&ws.writer).on_pruned(Instant::now(), ok);
        }
    }
}

/// Hands a write's result to the flusher and logs and counts what it led to.
fn written(index: usize, stats: &Stats, ws: &WorkerShared, result: Result<(), StoreError>) {
    let progress =
        lock(&ws.writer).on_written(Instant::now(), result.as_ref().map_err(classify).copied());
    let e = match (progress, result) {
        (Progress::Flushed { started }, _) => {
            add(&stats.flushes, 1);
            stats.last_flush_unix_ms.store(unix_ms(), Ordering::Relaxed);
            stats.last_flush_duration_us.store(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            if !stats.db_healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(worker = index, "database is back; pending rows written");
            }
            return;
        }
        (Progress::Continue | Progress::Unexpected, _) | (_, Ok(())) => return,
        (_, Err(e)) => e,
    };
    add(&stats.flush_failures, 1);
    if stats.db_healthy.swap(false, Ordering::Relaxed) {
        tracing::error!(
            worker = index,
            "database write failed, keeping rows in memory: {}",
            Chain(&e)
        );
    }
    *lock(&stats.last_db_error) = Some(Chain(&e).to_string());
    match progress {
        Progress::Retry { bound, .. } => report_bound(index, stats, bound),
        Progress::GaveUp { rows, reason, .. } => {
            add(&stats.rows_rejected, rows);
            tracing::error!(
                worker = index,
                rows,
                "DROPPING rows that could not be written ({}): {}",
                match reason {
                    GiveUp::StopTimeout => "stop timeout",
                    GiveUp::Rejected => "repeated statement errors",
                },
                Chain(&e)
            );
        }
        _ => {}
    }
}

/// Prunes old history and old chunk marks; whether both went through.
fn prune(store: &Store, p: Prune) -> bool {
    let now = unix_now();
    let mut ok = true;
    if let Some(cutoff) = p.history_before(now) {
        match store.prune_history(cutoff) {
            Ok(n) if n > 0 => tracing::info!(
                rows = n,
                "pruned history older than {} days",
                p.retention_days.unwrap_or(0)
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("history prune failed: {}", Chain(&e));
                ok = false;
            }
        }
    }
    if let Err(e) = store.prune_batches(p.marks_before(now)) {
        tracing::warn!("pruning the applied-chunk marks failed: {}", Chain(&e));
        ok = false;
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_do_not_repeat_their_cause() {
        let e = ReporterError::Thread(std::io::Error::other("no threads left"));
        assert_eq!(e.to_string(), "cannot spawn thread");
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("no threads left"));
        assert_eq!(
            Chain(&e).to_string(),
            "cannot spawn thread: no threads left"
        );
    }
}
