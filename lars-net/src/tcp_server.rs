//! The framed TCP server: one acceptor loop and `threads` worker loops.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use lars_core::config::ReactorConfig;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::conn::{Conn, ConnHook, ConnId, NetStats, ReadOutcome, Router, dispatch};
use crate::error::{NetError, Result};
use crate::event_loop::{LoopCtx, LoopHandle, LoopState, LoopThread};
use crate::pool::ThreadPool;

const LISTENER: Token = Token(0);
/// Bits of a [`ConnId`] that hold the owning worker's index.
const WORKER_BITS: u32 = 16;
const READ_CHUNK: usize = 64 * 1024;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Configures and starts a [`TcpServer`].
pub struct ServerBuilder {
    addr: SocketAddr,
    threads: usize,
    max_conn: usize,
    backlog: i32,
    router: Router,
    on_connect: Option<ConnHook>,
    on_close: Option<ConnHook>,
    name: String,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("addr", &self.addr)
            .field("threads", &self.threads)
            .field("max_conn", &self.max_conn)
            .field("router", &self.router)
            .finish()
    }
}

impl ServerBuilder {
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
        let listener = bind_listener(self.addr, self.backlog)?;
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(NetStats::default());
        let shared = Arc::new(WorkerShared {
            router: self.router,
            on_connect: self.on_connect,
            on_close: self.on_close,
            stats: Arc::clone(&stats),
        });
        let sh = Arc::clone(&shared);
        let workers = ThreadPool::start(&self.name, self.threads, move |index, _ctx| {
            Ok(Worker {
                index,
                conns: HashMap::new(),
                shared: Arc::clone(&sh),
                scratch: vec![0; READ_CHUNK],
            })
        })?;
        let handle = ServerHandle {
            inner: Arc::new(HandleInner {
                workers: workers.handles().to_vec(),
                stats: Arc::clone(&stats),
                local_addr,
            }),
        };
        let acceptor_handle = handle.clone();
        let max_conn = self.max_conn;
        let acceptor = LoopThread::spawn(&format!("{}-accept", self.name), move |ctx| {
            let mut listener = listener;
            ctx.registry()
                .register(&mut listener, LISTENER, Interest::READABLE)?;
            Ok(Acceptor {
                listener,
                max_conn,
                next_seq: AtomicU64::new(1),
                next_worker: AtomicUsize::new(0),
                server: acceptor_handle,
                backing_off: false,
            })
        })?;
        tracing::info!("tcp server listening on {local_addr}");
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
            backlog: 1024,
            router: Router::new(),
            on_connect: None,
            on_close: None,
            name: "lars-tcp".to_owned(),
        }
    }

    /// A builder from a service's `[reactor]` section.
    pub fn from_config(cfg: &ReactorConfig) -> ServerBuilder {
        Self::builder(SocketAddr::V4(cfg.addr))
            .threads(cfg.thread_num)
            .max_conn(cfg.max_conn)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
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
}

/// One worker loop's state: its connections by id.
pub struct Worker {
    index: usize,
    conns: HashMap<u64, Conn>,
    shared: Arc<WorkerShared>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("conns", &self.conns.len())
            .finish()
    }
}

impl Worker {
    fn add(&mut self, ctx: &mut LoopCtx<Self>, id: u64, mut stream: TcpStream, peer: SocketAddr) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("conn#{id}: TCP_NODELAY: {e}");
        }
        if let Err(e) = ctx
            .registry()
            .register(&mut stream, Token(id as usize), Interest::READABLE)
        {
            tracing::warn!("conn#{id}: register failed: {e}");
            self.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut conn = Conn::new(
            ConnId(id),
            stream,
            peer,
            self.index,
            Arc::clone(&self.shared.stats),
        );
        if let Some(hook) = &self.shared.on_connect {
            hook(&mut conn);
        }
        self.conns.insert(id, conn);
        self.after_io(ctx, id);
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
        }
        if alive && (conn.write_interest || !conn.wbuf.is_empty()) {
            self.after_io(ctx, id);
        } else if !alive {
            self.close(ctx, id);
        }
    }
}

struct Acceptor {
    listener: TcpListener,
    max_conn: usize,
    next_seq: AtomicU64,
    next_worker: AtomicUsize,
    server: ServerHandle,
    backing_off: bool,
}

impl Acceptor {
    fn accept_all(&mut self, ctx: &mut LoopCtx<Self>) {
        if self.backing_off {
            return;
        }
        let stats = Arc::clone(&self.server.inner.stats);
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if stats.open.load(Ordering::Relaxed) as usize >= self.max_conn {
                        NetStats::inc(&stats.refused);
                        tracing::warn!(
                            "connection from {peer} refused: maxConn {} reached",
                            self.max_conn
                        );
                        drop(stream);
                        continue;
                    }
                    stats.open.fetch_add(1, Ordering::Relaxed);
                    NetStats::inc(&stats.accepted);
                    let workers = &self.server.inner.workers;
                    let w = self.next_worker.fetch_add(1, Ordering::Relaxed) % workers.len();
                    let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                    let id = (seq << WORKER_BITS) | w as u64;
                    let posted = workers[w].post(move |worker, ctx| {
                        worker.add(ctx, id, stream, peer);
                    });
                    if !posted {
                        stats.open.fetch_sub(1, Ordering::Relaxed);
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
}

impl LoopState for Acceptor {
    fn on_ready(&mut self, ctx: &mut LoopCtx<Self>, event: &Event) {
        if event.token() == LISTENER {
            self.accept_all(ctx);
        }
    }
}
