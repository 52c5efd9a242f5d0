//! The framed TCP server: one acceptor loop and `threads` worker loops.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lars_core::config::{Allowlist, ReactorConfig, TlsListenerConfig};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::conn::{Conn, ConnHook, ConnId, ReadOutcome, Router, dispatch};
use crate::error::{NetError, Result};
use crate::event_loop::{LoopCtx, LoopHandle, LoopState, LoopThread};
use crate::pool::ThreadPool;
use crate::stats::NetStats;
use crate::tls::{ServerTls, TlsRefusal};

const LISTENER: Token = Token(0);
/// The TLS listener's token on the acceptor loop.
const TLS_LISTENER: Token = Token(1);
/// Bits of a [`ConnId`] that hold the owning worker's index.
const WORKER_BITS: u32 = 16;
const READ_CHUNK: usize = 64 * 1024;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connection deadlines due within this much of each other are handled in
/// one sweep of a worker's connections.
const SWEEP_SLACK: Duration = Duration::from_millis(50);
/// While connections are being refused, workers are asked to close idle
/// connections without a frame at most this often.
const SWEEP_ON_REFUSAL: Duration = Duration::from_millis(200);

/// Configures and starts a [`TcpServer`].
pub struct ServerBuilder {
    addr: SocketAddr,
    threads: usize,
    max_conn: usize,
    max_conn_per_peer: usize,
    idle_timeout: Option<Duration>,
    frame_timeout: Option<Duration>,
    refused_log_interval: Duration,
    backlog: i32,
    router: Router,
    on_connect: Option<ConnHook>,
    on_close: Option<ConnHook>,
    name: String,
    allow: Allowlist,
    tls: Option<TlsListenerConfig>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("addr", &self.addr)
            .field("threads", &self.threads)
            .field("max_conn", &self.max_conn)
            .field("max_conn_per_peer", &self.max_conn_per_peer)
            .field("idle_timeout", &self.idle_timeout)
            .field("frame_timeout", &self.frame_timeout)
            .field("refused_log_interval", &self.refused_log_interval)
            .field("router", &self.router)
            .field("allow", &self.allow)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ServerBuilder {
    /// Who may connect to the plain listener (`[reactor] allow`; default
    /// everyone): a connection from elsewhere is closed at once on accept,
    /// counted (`refused_not_allowed`) and logged (rate-limited).
    pub fn allow(mut self, allow: Allowlist) -> Self {
        self.allow = allow;
        self
    }

    /// A second listener speaking TLS (`[tls]`), served by the same workers
    /// and router: certificate, key, CA for client certificates, whether
    /// they are required, and its own allowlist. The handshake must finish
    /// within `frameTimeout`.
    pub fn tls(mut self, tls: TlsListenerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Worker loops (`threadNum`, default 1; at least 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Connections served at once (`maxConn`, default 1024).
    pub fn max_conn(mut self, n: usize) -> Self {
        self.max_conn = n;
        self
    }

    /// Connections one remote IP address may hold at once
    /// (`maxConnPerPeer`, default 256); the next one from that address is
    /// closed at once. 0: no cap.
    pub fn max_conn_per_peer(mut self, n: usize) -> Self {
        self.max_conn_per_peer = n;
        self
    }

    /// A connection that has not completed its first frame this long after
    /// it was accepted is closed once, since it was accepted, a connection
    /// has been refused for `maxConn` or one from its own address for
    /// `maxConnPerPeer` (it holds a slot someone wanted): `idleTimeout`,
    /// default 60 s; zero: never. While nobody is refused, a silent client
    /// is left alone; a connection that completed a frame is a client and
    /// is never closed for being idle.
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = (!t.is_zero()).then_some(t);
        self
    }

    /// How long the start of a frame may wait in a connection's buffer for
    /// the rest before the connection is closed (`frameTimeout`, default
    /// 30 s; zero: forever).
    pub fn frame_timeout(mut self, t: Duration) -> Self {
        self.frame_timeout = (!t.is_zero()).then_some(t);
        self
    }

    /// Refused connections are logged at most once per `interval`
    /// (`refusedLogInterval`, default 10 s), one line counting them by
    /// reason; every one is counted in [`NetStats`].
    pub fn refused_log_interval(mut self, interval: Duration) -> Self {
        self.refused_log_interval = interval;
        self
    }

    /// Listen backlog (default 1024).
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }

    /// The message router.
    pub fn router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// Runs on the worker loop when a connection is accepted (it may send).
    pub fn on_connect(mut self, f: impl Fn(&mut Conn) + Send + Sync + 'static) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// Runs on the worker loop just before a connection is dropped, for any
    /// reason (peer closed, bad frame, server stopping is NOT included).
    pub fn on_close(mut self, f: impl Fn(&mut Conn) + Send + Sync + 'static) -> Self {
        self.on_close = Some(Arc::new(f));
        self
    }

    /// Thread name prefix (default `lars-tcp`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Binds, starts the workers and the acceptor.
    pub fn start(self) -> Result<TcpServer> {
        if self.threads == 0 || self.threads >= (1 << WORKER_BITS) {
            return Err(NetError::Config(format!(
                "threads must be in 1..65536, got {}",
                self.threads
            )));
        }
        let listener =
            bind_listener(self.addr, self.backlog).map_err(NetError::bind("tcp", self.addr))?;
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(NetStats::default());
        let tls = match &self.tls {
            None => None,
            Some(files) => {
                let server_tls = ServerTls::load_counted(files, Arc::clone(&stats))?;
                let addr = SocketAddr::V4(files.addr);
                let l = bind_listener(addr, self.backlog).map_err(NetError::bind("tls", addr))?;
                let tls_addr = l.local_addr()?;
                Some(TlsListener {
                    listener: l,
                    local_addr: tls_addr,
                    allow: files.allow.clone(),
                    tls: server_tls,
                })
            }
        };
        let tls_addr = tls.as_ref().map(|t| t.local_addr);
        let server_tls = tls.as_ref().map(|t| t.tls.clone());
        let peers = Arc::new(Peers::new(self.max_conn_per_peer));
        let shared = Arc::new(WorkerShared {
            router: self.router,
            on_connect: self.on_connect,
            on_close: self.on_close,
            stats: Arc::clone(&stats),
            peers: Arc::clone(&peers),
            idle_timeout: self.idle_timeout,
            frame_timeout: self.frame_timeout,
            last_refused_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let sh = Arc::clone(&shared);
        let acceptor_shared = Arc::clone(&shared);
        let log_interval = self.refused_log_interval;
        let why = reasons(
            self.max_conn,
            self.max_conn_per_peer,
            self.idle_timeout,
            self.frame_timeout,
        );
        let worker_why = why.clone();
        let tls_why = why.clone();
        let workers = ThreadPool::start(&self.name, self.threads, move |index, _ctx| {
            Ok(Worker {
                index,
                conns: HashMap::new(),
                shared: Arc::clone(&sh),
                scratch: vec![0; READ_CHUNK],
                next_sweep: None,
                closed_log: RateLog::new(log_interval, worker_why.clone()),
                tls_log: RateLog::new(log_interval, tls_why.clone()),
                tls_addr,
            })
        })?;
        let handle = ServerHandle {
            inner: Arc::new(HandleInner {
                workers: workers.handles().to_vec(),
                stats: Arc::clone(&stats),
                local_addr,
                tls_addr,
                tls: server_tls,
            }),
        };
        let acceptor_handle = handle.clone();
        let max_conn = self.max_conn;
        let allow = self.allow;
        let acceptor = LoopThread::spawn(&format!("{}-accept", self.name), move |ctx| {
            let mut listener = listener;
            ctx.registry()
                .register(&mut listener, LISTENER, Interest::READABLE)?;
            let mut tls = tls;
            if let Some(t) = tls.as_mut() {
                ctx.registry()
                    .register(&mut t.listener, TLS_LISTENER, Interest::READABLE)?;
            }
            Ok(Acceptor {
                listener,
                allow,
                tls,
                max_conn,
                peers,
                next_seq: AtomicU64::new(1),
                next_worker: AtomicUsize::new(0),
                server: acceptor_handle,
                backing_off: false,
                refused_log: RateLog::new(log_interval, why),
                shared: acceptor_shared,
                last_sweep_request: None,
            })
        })?;
        match tls_addr {
            None => tracing::info!("tcp server listening on {local_addr}"),
            Some(t) => tracing::info!("tcp server listening on {local_addr}, tls on {t}"),
        }
        Ok(TcpServer {
            acceptor,
            workers,
            handle,
        })
    }
}

fn bind_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A running framed TCP server. Stopped and joined on drop.
pub struct TcpServer {
    acceptor: LoopThread<Acceptor>,
    workers: ThreadPool<Worker>,
    handle: ServerHandle,
}

impl std::fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("local_addr", &self.handle.local_addr())
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl TcpServer {
    /// A builder for a server on `addr` (port 0 picks a free port).
    pub fn builder(addr: SocketAddr) -> ServerBuilder {
        ServerBuilder {
            addr,
            threads: 1,
            max_conn: 1024,
            max_conn_per_peer: 256,
            idle_timeout: Some(Duration::from_secs(60)),
            frame_timeout: Some(Duration::from_secs(30)),
            refused_log_interval: Duration::from_secs(10),
            backlog: 1024,
            router: Router::new(),
            on_connect: None,
            on_close: None,
            name: "lars-tcp".to_owned(),
            allow: Allowlist::everyone(),
            tls: None,
        }
    }

    /// A builder from a service's `[reactor]` section.
    pub fn from_config(cfg: &ReactorConfig) -> ServerBuilder {
        let b = Self::builder(SocketAddr::V4(cfg.addr));
        let b = match &cfg.tls {
            Some(tls) => b.tls(tls.clone()),
            None => b,
        };
        b.allow(cfg.allow.clone())
            .threads(cfg.thread_num)
            .max_conn(cfg.max_conn)
            .max_conn_per_peer(cfg.max_conn_per_peer)
            .idle_timeout(cfg.idle_timeout)
            .frame_timeout(cfg.frame_timeout)
            .refused_log_interval(cfg.refused_log_interval)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The bound address of the TLS listener, if it has one.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.handle.tls_local_addr()
    }

    /// Reloads the TLS certificate, key and CA from their files (what
    /// SIGHUP does, see [`crate::reload_tls`]): new handshakes use them,
    /// open connections keep theirs; a bad file keeps the old ones (logged,
    /// counted in `tls_reload_failures`). Ok without a TLS listener.
    pub fn reload_tls(&self) -> Result<()> {
        self.handle.reload_tls()
    }

    /// A cloneable handle to reach connections and workers from any thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<NetStats> {
        Arc::clone(&self.handle.inner.stats)
    }

    /// Stops accepting and stops every worker (does not wait).
    pub fn stop(&self) {
        self.acceptor.stop();
        self.workers.stop();
    }

    /// Stops and joins every thread; open connections are closed.
    pub fn join(&mut self) {
        self.acceptor.join();
        self.workers.join();
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.join();
    }
}

struct HandleInner {
    workers: Vec<LoopHandle<Worker>>,
    stats: Arc<NetStats>,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tls: Option<ServerTls>,
}

/// A cloneable, `Send` handle to a running server: reach a connection by id
/// (the task hops to the owning worker loop).
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The bound address of the TLS listener, if it has one.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.inner.tls_addr
    }

    /// See [`TcpServer::reload_tls`].
    pub fn reload_tls(&self) -> Result<()> {
        self.inner.tls.as_ref().map_or(Ok(()), ServerTls::reload)
    }

    /// Runs `f` with connection `id` on its worker loop, then flushes it. If
    /// the connection is gone by then, `f` is dropped unrun. Returns false if
    /// the id names no worker or the server stopped.
    pub fn with_conn(&self, id: ConnId, f: impl FnOnce(&mut Conn) + Send + 'static) -> bool {
        let Some(worker) = self.inner.workers.get(worker_of(id)) else {
            return false;
        };
        worker.post(move |w, ctx| {
            if let Some(conn) = w.conns.get_mut(&id.0) {
                f(conn);
            }
            w.after_io(ctx, id.0);
        })
    }
}

fn worker_of(id: ConnId) -> usize {
    (id.0 & ((1 << WORKER_BITS) - 1)) as usize
}

struct WorkerShared {
    router: Router,
    on_connect: Option<ConnHook>,
    on_close: Option<ConnHook>,
    stats: Arc<NetStats>,
    peers: Arc<Peers>,
    idle_timeout: Option<Duration>,
    frame_timeout: Option<Duration>,
    /// When the server last refused a connection for `maxConn`, as
    /// milliseconds after `epoch` plus one (0: never).
    last_refused_ms: AtomicU64,
    epoch: Instant,
}

impl WorkerShared {
    fn note_refused(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1;
        self.last_refused_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether `conn` (no frame yet) holds a slot someone wanted: a
    /// connection was refused for `maxConn` since it was accepted, or one
    /// from its own address for `maxConnPerPeer`.
    fn wanted(&self, conn: &Conn, peers: &PeerTable) -> bool {
        let ms = self.last_refused_ms.load(Ordering::Relaxed);
        // Millisecond resolution, rounded up: a refusal in the same
        // millisecond as the accept counts.
        let max_conn = ms != 0
            && self
                .epoch
                .checked_add(Duration::from_millis(ms))
                .is_some_and(|t| t >= conn.opened_at);
        max_conn
            || peers
                .get(&conn.peer_addr().ip())
                .and_then(|p| p.refused_at)
                .is_some_and(|t| t >= conn.opened_at)
    }
}

/// One remote address's connections, for `maxConnPerPeer`.
#[derive(Debug, Default)]
struct Peer {
    open: usize,
    /// When a connection from it was last refused for `maxConnPerPeer`.
    refused_at: Option<Instant>,
}

type PeerTable = HashMap<IpAddr, Peer>;

/// Open connections per remote IP address, for `maxConnPerPeer`: taken by
/// the acceptor, given back by the worker that closes the connection.
struct Peers {
    max: usize,
    table: Mutex<PeerTable>,
}

impl Peers {
    fn new(max: usize) -> Self {
        Self {
            max,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeerTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more connection from `ip`, unless it already holds `max`
    /// (the refusal is then noted at `now`).
    fn try_acquire(&self, ip: IpAddr, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut table = self.lock();
        let peer = table.entry(ip).or_default();
        if peer.open >= self.max {
            peer.refused_at = Some(now);
            return false;
        }
        peer.open += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut table = self.lock();
        if let Some(peer) = table.get_mut(&ip) {
            peer.open = peer.open.saturating_sub(1);
            if peer.open == 0 {
                table.remove(&ip);
            }
        }
    }
}

/// The text of each [`Reason`], with the limit it hit.
fn reasons(
    max_conn: usize,
    per_peer: usize,
    idle: Option<Duration>,
    frame: Option<Duration>,
) -> [String; REASONS] {
    [
        format!("at maxConn {max_conn}"),
        format!("over maxConnPerPeer {per_peer}"),
        format!(
            "without a frame within idleTimeout {:?}",
            idle.unwrap_or_default()
        ),
        format!(
            "with a partial frame older than frameTimeout {:?}",
            frame.unwrap_or_default()
        ),
        "from an address not in the allowlist (allow)".to_owned(),
        "with no client certificate (client_auth = required)".to_owned(),
        "with a client certificate that does not verify against [tls] ca".to_owned(),
        "failing the TLS handshake (not TLS, or no common version or cipher)".to_owned(),
        format!(
            "not finishing the TLS handshake within frameTimeout {:?}",
            frame.unwrap_or_default()
        ),
    ]
}

/// How many [`Reason`]s there are.
const REASONS: usize = 9;

/// Why a connection was turned away or cut (an index into [`RateLog`]'s
/// counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// Refused: `maxConn` open.
    MaxConn = 0,
    /// Refused: the address holds `maxConnPerPeer`.
    PerPeer = 1,
    /// Closed: no frame within `idleTimeout`.
    Idle = 2,
    /// Closed: a partial frame older than `frameTimeout`.
    PartialFrame = 3,
    /// Refused: the address is not in the listener's `allow`.
    NotAllowed = 4,
    /// TLS: no client certificate while one is required.
    TlsNoCert = 5,
    /// TLS: a client certificate that does not verify.
    TlsBadCert = 6,
    /// TLS: another handshake failure.
    TlsHandshake = 7,
    /// TLS: the handshake did not finish within `frameTimeout`.
    TlsTimeout = 8,
}

impl Reason {
    fn of_tls(r: TlsRefusal) -> Self {
        match r {
            TlsRefusal::NoClientCert => Self::TlsNoCert,
            TlsRefusal::BadClientCert => Self::TlsBadCert,
            TlsRefusal::Handshake => Self::TlsHandshake,
        }
    }
}

/// Counts connections refused or closed by a limit, and writes at most one
/// log line per interval about them: the first at once, the rest summed up
/// when the interval since the last line has passed. Clock-free (`now` is
/// passed in), so its rule is tested without sleeping.
#[derive(Debug)]
struct RateLog {
    interval: Duration,
    /// What each [`Reason`] means here, e.g. `at maxConn 1024`.
    reasons: [String; REASONS],
    counts: [u64; REASONS],
    last_peer: Option<SocketAddr>,
    last_line: Option<Instant>,
    /// A timer will flush the counts (set by the owner).
    flush_pending: bool,
}

impl RateLog {
    fn new(interval: Duration, reasons: [String; REASONS]) -> Self {
        Self {
            interval,
            reasons,
            counts: [0; REASONS],
            last_peer: None,
            last_line: None,
            flush_pending: false,
        }
    }

    /// Counts one event; returns the line to log now, if one is due.
    fn record(&mut self, reason: Reason, peer: SocketAddr, now: Instant) -> Option<String> {
        self.counts[reason as usize] += 1;
        self.last_peer = Some(peer);
        self.flush(now)
    }

    /// When the events counted but not yet logged may be logged (`None`:
    /// there are none; the first event of all is logged at once by
    /// [`record`](Self::record), so a pending count always follows a line).
    fn due(&self) -> Option<Instant> {
        if self.counts.iter().all(|&c| c == 0) {
            return None;
        }
        // An interval past the clock's range: never again.
        self.last_line.and_then(|t| t.checked_add(self.interval))
    }

    /// The line for the events counted so far, if it is due at `now`.
    fn flush(&mut self, now: Instant) -> Option<String> {
        if self.counts.iter().all(|&c| c == 0) {
            return None;
        }
        if self
            .last_line
            .is_some_and(|t| t.checked_add(self.interval).is_none_or(|due| now < due))
        {
            return None;
        }
        let total: u64 = self.counts.iter().sum();
        let parts: Vec<String> = self
            .counts
            .iter()
            .zip(&self.reasons)
            .filter(|(c, _)| **c > 0)
            .map(|(c, why)| format!("{c} {why}"))
            .collect();
        let peer = self
            .last_peer
            .map_or_else(String::new, |p| format!("; last from {p}"));
        let line = format!(
            "{total} connection(s): {}{peer} (logged at most every {:?})",
            parts.join(", "),
            self.interval
        );
        self.counts = [0; REASONS];
        self.last_line = Some(now);
        Some(line)
    }
}

/// One worker loop's state: its connections by id.
pub struct Worker {
    index: usize,
    conns: HashMap<u64, Conn>,
    shared: Arc<WorkerShared>,
    scratch: Vec<u8>,
    /// When to look for connections past `idleTimeout` / `frameTimeout`.
    next_sweep: Option<Instant>,
    closed_log: RateLog,
    /// TLS handshakes refused on this worker.
    tls_log: RateLog,
    /// The TLS listener's address (for log lines).
    tls_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("conns", &self.conns.len())
            .finish()
    }
}

/// When `conn` may be closed for having completed no frame (`None`: it
/// has, there is no idle timeout, or it is past the clock's range).
fn idle_deadline(conn: &Conn, idle_timeout: Option<Duration>) -> Option<Instant> {
    idle_timeout
        .filter(|_| !conn.framed)
        .and_then(|t| conn.opened_at.checked_add(t))
}

/// When `conn` must be closed for a partial frame waiting too long.
fn partial_deadline(conn: &Conn, frame_timeout: Option<Duration>) -> Option<Instant> {
    conn.partial_since
        .zip(frame_timeout)
        .and_then(|(since, t)| since.checked_add(t))
}

impl Worker {
    /// Takes over a connection the acceptor accepted at `accepted_at`
    /// (with the TLS configuration of the moment, from the TLS listener).
    fn add(
        &mut self,
        ctx: &mut LoopCtx<Self>,
        id: u64,
        mut stream: TcpStream,
        peer: SocketAddr,
        accepted_at: Instant,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) {
        let session = match tls.map(rustls::ServerConnection::new) {
            None => None,
            Some(Ok(s)) => Some(Box::new(rustls::Connection::Server(s))),
            Some(Err(e)) => {
                tracing::warn!("conn#{id} from {peer}: cannot start a TLS session: {e}");
                self.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
                self.shared.peers.release(peer.ip());
                return;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("conn#{id}: TCP_NODELAY: {e}");
        }
        if let Err(e) = ctx
            .registry()
            .register(&mut stream, Token(id as usize), Interest::READABLE)
        {
            tracing::warn!("conn#{id}: register failed: {e}");
            self.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
            self.shared.peers.release(peer.ip());
            return;
        }
        let mut conn = Conn::new(
            ConnId(id),
            stream,
            peer,
            self.index,
            Arc::clone(&self.shared.stats),
        );
        // The acceptor's clock, not this loop's: a refusal the acceptor
        // makes after this accept is then never "before" it.
        conn.opened_at = accepted_at;
        if session.is_some() {
            // The handshake must end within frameTimeout, like a frame.
            conn.tls = session;
            conn.partial_since = Some(accepted_at);
            if let Some(at) = partial_deadline(&conn, self.shared.frame_timeout) {
                self.watch(at);
            }
        }
        if let Some(hook) = &self.shared.on_connect {
            hook(&mut conn);
        }
        if let Some(at) = idle_deadline(&conn, self.shared.idle_timeout) {
            self.watch(at);
        }
        self.conns.insert(id, conn);
        self.after_io(ctx, id);
    }

    /// Makes sure a sweep runs soon after `at`.
    fn watch(&mut self, at: Instant) {
        let at = at.checked_add(SWEEP_SLACK).unwrap_or(at);
        if self.next_sweep.is_none_or(|t| at < t) {
            self.next_sweep = Some(at);
        }
    }

    /// Closes every connection past its idle or partial-frame deadline.
    ///
    /// A connection past `idleTimeout` without a frame is closed only if,
    /// since it was accepted, a connection was refused for `maxConn`, or one
    /// from its own address for `maxConnPerPeer` (it keeps someone out);
    /// otherwise it is left alone until the acceptor refuses one and asks
    /// for a sweep. A partial frame past `frameTimeout` is always closed.
    fn sweep(&mut self, ctx: &mut LoopCtx<Self>, now: Instant) {
        let (idle, frame) = (self.shared.idle_timeout, self.shared.frame_timeout);
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        let mut soon = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        let peers = self.shared.peers.lock();
        for (&id, conn) in &self.conns {
            match partial_deadline(conn, frame) {
                Some(at) if at <= now => {
                    let why = if conn.handshaking() {
                        Reason::TlsTimeout
                    } else {
                        Reason::PartialFrame
                    };
                    expired.push((id, why, conn.peer_addr()));
                    continue;
                }
                Some(at) => soon(at),
                None => {}
            }
            match idle_deadline(conn, idle) {
                Some(at) if at > now => soon(at),
                Some(_) if self.shared.wanted(conn, &peers) => {
                    expired.push((id, Reason::Idle, conn.peer_addr()));
                }
                _ => {}
            }
        }
        drop(peers);
        self.next_sweep = None;
        if let Some(at) = next {
            self.watch(at);
        }
        for (id, why, peer) in expired {
            if why == Reason::TlsTimeout {
                NetStats::inc(&self.shared.stats.tls_handshake_timeout);
                let line = self.tls_log.record(why, peer, now);
                self.log_tls(ctx, line, now);
                self.close(ctx, id);
                continue;
            }
            let counter = match why {
                Reason::PartialFrame => &self.shared.stats.closed_partial_frame,
                _ => &self.shared.stats.closed_idle,
            };
            NetStats::inc(counter);
            tracing::debug!(
                "conn#{id} from {peer}: {}; closing",
                self.closed_log.reasons[why as usize]
            );
            let line = self.closed_log.record(why, peer, now);
            self.log_closed(ctx, line, now);
            self.close(ctx, id);
        }
    }

    /// Logs `line`, or arranges for the pending counts to be logged when due.
    fn log_closed(&mut self, ctx: &mut LoopCtx<Self>, line: Option<String>, now: Instant) {
        if let Some(line) = line {
            tracing::info!("tcp worker {}: closed {line}", self.index);
            return;
        }
        if self.closed_log.flush_pending {
            return;
        }
        if let Some(at) = self.closed_log.due() {
            self.closed_log.flush_pending = true;
            ctx.run_after(at.saturating_duration_since(now), |w: &mut Worker, ctx| {
                w.closed_log.flush_pending = false;
                let now = Instant::now();
                let line = w.closed_log.flush(now);
                w.log_closed(ctx, line, now);
            });
        }
    }

    /// Counts and logs (rate-limited) a TLS handshake that failed on `id`.
    fn tls_refused(&mut self, ctx: &mut LoopCtx<Self>, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some((refusal, detail)) = conn.tls_failure.take() else {
            return;
        };
        let peer = conn.peer_addr();
        let stats = &self.shared.stats;
        NetStats::inc(match refusal {
            TlsRefusal::NoClientCert => &stats.tls_refused_no_cert,
            TlsRefusal::BadClientCert => &stats.tls_refused_bad_cert,
            TlsRefusal::Handshake => &stats.tls_refused_handshake,
        });
        tracing::debug!("conn#{id} from {peer}: TLS handshake failed: {detail}");
        let now = Instant::now();
        let line = self
            .tls_log
            .record(Reason::of_tls(refusal), peer, now)
            .map(|l| format!("{l}; first error: {detail}"));
        self.log_tls(ctx, line, now);
    }

    /// Logs a TLS refusal `line`, or arranges for the pending counts to be
    /// logged when due.
    fn log_tls(&mut self, ctx: &mut LoopCtx<Self>, line: Option<String>, now: Instant) {
        if let Some(line) = line {
            NetStats::inc(&self.shared.stats.refused_log_lines);
            let addr = self
                .tls_addr
                .map_or_else(|| "?".to_owned(), |a| a.to_string());
            tracing::warn!("tls {addr}: refused {line}");
            return;
        }
        if self.tls_log.flush_pending {
            return;
        }
        if let Some(at) = self.tls_log.due() {
            self.tls_log.flush_pending = true;
            ctx.run_after(at.saturating_duration_since(now), |w: &mut Worker, ctx| {
                w.tls_log.flush_pending = false;
                let now = Instant::now();
                let line = w.tls_log.flush(now);
                w.log_tls(ctx, line, now);
            });
        }
    }

    /// Flushes connection `id` and closes it if it asked to or failed.
    fn after_io(&mut self, ctx: &mut LoopCtx<Self>, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let ok = conn.flush(ctx.registry(), Token(id as usize));
        if !ok || conn.closing {
            self.close(ctx, id);
        }
    }

    fn close(&mut self, ctx: &mut LoopCtx<Self>, id: u64) {
        if let Some(mut conn) = self.conns.remove(&id) {
            if let Some(hook) = &self.shared.on_close {
                hook(&mut conn);
            }
            let _ = ctx.registry().deregister(&mut conn.stream);
            self.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
            self.shared.peers.release(conn.peer_addr().ip());
            tracing::debug!("{} from {} closed", conn.id(), conn.peer_addr());
        }
    }
}

impl LoopState for Worker {
    fn on_ready(&mut self, ctx: &mut LoopCtx<Self>, event: &Event) {
        let id = event.token().0 as u64;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut alive = true;
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            let closed = matches!(
                conn.read_in(&mut self.scratch, event.is_read_closed()),
                ReadOutcome::Closed
            );
            // Dispatch what arrived even if the peer closed right after.
            alive = dispatch(conn, &self.shared.router) && !closed;
            if !alive {
                // Best effort: replies to the frames before the error.
                let _ = conn.flush(ctx.registry(), event.token());
            }
            if conn.tls_failure.is_some() {
                self.tls_refused(ctx, id);
            }
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let partial_deadline = partial_deadline(conn, self.shared.frame_timeout);
        if alive && conn.wants_flush() {
            self.after_io(ctx, id);
        } else if !alive {
            self.close(ctx, id);
        }
        if let (true, Some(at)) = (alive, partial_deadline) {
            self.watch(at);
        }
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.next_sweep
    }

    fn on_timeout(&mut self, ctx: &mut LoopCtx<Self>, now: Instant) {
        self.sweep(ctx, now);
    }
}

/// The TLS listener of a server: its socket, who may connect, and the
/// (reloadable) configuration new connections start their handshake with.
struct TlsListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    allow: Allowlist,
    tls: ServerTls,
}

struct Acceptor {
    listener: TcpListener,
    /// Who may connect to the plain listener.
    allow: Allowlist,
    tls: Option<TlsListener>,
    max_conn: usize,
    peers: Arc<Peers>,
    next_seq: AtomicU64,
    next_worker: AtomicUsize,
    server: ServerHandle,
    backing_off: bool,
    refused_log: RateLog,
    shared: Arc<WorkerShared>,
    last_sweep_request: Option<Instant>,
}

impl Acceptor {
    fn accept_all(&mut self, ctx: &mut LoopCtx<Self>) {
        self.accept_from(ctx, false);
        self.accept_from(ctx, true);
    }

    /// Accepts every pending connection of the plain listener, or of the
    /// TLS one.
    fn accept_from(&mut self, ctx: &mut LoopCtx<Self>, tls: bool) {
        if self.backing_off {
            return;
        }
        let stats = Arc::clone(&self.server.inner.stats);
        loop {
            let accepted = match (tls, &self.tls) {
                (false, _) => self.listener.accept(),
                (true, Some(t)) => t.listener.accept(),
                (true, None) => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let allow = match (tls, &self.tls) {
                        (true, Some(t)) => &t.allow,
                        _ => &self.allow,
                    };
                    if !allow.permits(peer.ip()) {
                        NetStats::inc(&stats.refused_not_allowed);
                        self.refuse(ctx, Reason::NotAllowed, peer);
                        drop(stream);
                        continue;
                    }
                    if stats.open.load(Ordering::Relaxed) as usize >= self.max_conn {
                        NetStats::inc(&stats.refused_max_conn);
                        self.refuse(ctx, Reason::MaxConn, peer);
                        drop(stream);
                        continue;
                    }
                    if !self.peers.try_acquire(peer.ip(), Instant::now()) {
                        NetStats::inc(&stats.refused_per_peer);
                        self.refuse(ctx, Reason::PerPeer, peer);
                        drop(stream);
                        continue;
                    }
                    stats.open.fetch_add(1, Ordering::Relaxed);
                    NetStats::inc(&stats.accepted);
                    let workers = &self.server.inner.workers;
                    let w = self.next_worker.fetch_add(1, Ordering::Relaxed) % workers.len();
                    let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                    let id = (seq << WORKER_BITS) | w as u64;
                    let accepted_at = Instant::now();
                    let config = match (tls, &self.tls) {
                        (true, Some(t)) => Some(t.tls.current()),
                        _ => None,
                    };
                    let posted = workers[w].post(move |worker, ctx| {
                        worker.add(ctx, id, stream, peer, accepted_at, config);
                    });
                    if !posted {
                        stats.open.fetch_sub(1, Ordering::Relaxed);
                        self.peers.release(peer.ip());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    NetStats::inc(&stats.accept_errors);
                    // EMFILE (24), ENFILE (23), ENOBUFS, ENOMEM...: the
                    // pending connection stays in the backlog; retry later
                    // (edge-triggered: no new event would come for it).
                    tracing::error!("accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    self.backing_off = true;
                    ctx.run_after(ACCEPT_BACKOFF, |a: &mut Acceptor, ctx| {
                        a.backing_off = false;
                        a.accept_all(ctx);
                    });
                    return;
                }
            }
        }
    }

    /// Counts a refused connection and logs (rate-limited) why.
    fn refuse(&mut self, ctx: &mut LoopCtx<Self>, why: Reason, peer: SocketAddr) {
        NetStats::inc(&self.server.inner.stats.refused);
        let now = Instant::now();
        if why == Reason::MaxConn {
            self.shared.note_refused(now);
        }
        // Connections without a frame past idleTimeout may now be closed:
        // have every worker look (at most once per SWEEP_ON_REFUSAL). Not
        // for an address outside the allowlist: it took no slot from anyone.
        if why != Reason::NotAllowed
            && self.shared.idle_timeout.is_some()
            && self
                .last_sweep_request
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_ON_REFUSAL)
        {
            self.last_sweep_request = Some(now);
            for w in &self.server.inner.workers {
                w.post(|w, ctx| w.sweep(ctx, Instant::now()));
            }
        }
        let line = self.refused_log.record(why, peer, now);
        self.log_refused(ctx, line, now);
    }

    /// Logs `line`, or arranges for the pending counts to be logged when due.
    fn log_refused(&mut self, ctx: &mut LoopCtx<Self>, line: Option<String>, now: Instant) {
        if let Some(line) = line {
            NetStats::inc(&self.server.inner.stats.refused_log_lines);
            tracing::warn!("tcp {}: refused {line}", self.server.local_addr());
            return;
        }
        if self.refused_log.flush_pending {
            return;
        }
        if let Some(at) = self.refused_log.due() {
            self.refused_log.flush_pending = true;
            ctx.run_after(
                at.saturating_duration_since(now),
                |a: &mut Acceptor, ctx| {
                    a.refused_log.flush_pending = false;
                    let now = Instant::now();
                    let line = a.refused_log.flush(now);
                    a.log_refused(ctx, line, now);
                },
            );
        }
    }
}

impl LoopState for Acceptor {
    fn on_ready(&mut self, ctx: &mut LoopCtx<Self>, event: &Event) {
        if event.token() == LISTENER {
            self.accept_from(ctx, false);
        } else if event.token() == TLS_LISTENER {
            self.accept_from(ctx, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(interval: Duration) -> RateLog {
        RateLog::new(interval, reasons(1024, 256, None, None))
    }

    #[test]
    fn refusals_are_logged_at_once_then_at_most_once_per_interval() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let peer: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let mut l = log(10 * sec);
        let first = l.record(Reason::MaxConn, peer, t0).unwrap();
        assert!(
            first.starts_with("1 connection(s): 1 at maxConn 1024"),
            "{first}"
        );
        assert!(first.contains("last from 10.0.0.1:4000"), "{first}");
        // 999 more within the interval: no line, all counted.
        for i in 0..999u64 {
            let why = if i % 3 == 0 {
                Reason::PerPeer
            } else {
                Reason::MaxConn
            };
            assert_eq!(l.record(why, peer, t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(l.due(), Some(t0 + 10 * sec));
        assert_eq!(l.flush(t0 + 9 * sec), None);
        let line = l.flush(t0 + 10 * sec).unwrap();
        assert!(
            line.starts_with("999 connection(s): 666 at maxConn 1024, 333 over maxConnPerPeer 256"),
            "{line}"
        );
        assert_eq!(l.due(), None);
        assert_eq!(l.flush(t0 + 30 * sec), None);
        // After a quiet interval the next refusal is logged at once again.
        assert!(l.record(Reason::PerPeer, peer, t0 + 30 * sec).is_some());
    }
}
