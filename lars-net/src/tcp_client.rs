//! The framed TCP client: one loop thread, non-blocking connect, reconnect
//! forever with capped exponential backoff (or wherever and whenever a
//! [`Dialer`] says), a cross-thread send queue.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lars_core::frame::{self, FrameError};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Token};
use prost::Message;

use crate::conn::{Conn, ConnHook, ConnId, ReadOutcome, Router, dispatch};
use crate::error::Result;
use crate::event_loop::{LoopCtx, LoopHandle, LoopState, LoopThread, TimerId};
use crate::stats::NetStats;
use crate::tls::{ClientTls, TlsRefusal};

const READ_CHUNK: usize = 64 * 1024;
/// A connection that lived this long, or received a frame, resets the
/// reconnect backoff when lost; one the server closed sooner (a full server
/// refusing it) counts as a failed attempt.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// What a client does with frames sent while it is not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectedPolicy {
    /// Keep up to this many frames and send them after the next connect;
    /// beyond that, drop (counted in [`NetStats::dropped`]).
    Queue(usize),
    /// Drop them (counted in [`NetStats::dropped`]).
    Drop,
}

/// Decides each connect attempt of a client with several servers: called
/// before every attempt (the first included) with the current instant, it
/// answers the server to try and the instant to try it at (a past instant:
/// at once). It replaces the client's own address and backoff.
pub type Dialer = Box<dyn FnMut(Instant) -> (SocketAddr, Instant) + Send>;

/// Told the server of every connect attempt that failed (refused, timed
/// out, or any other error before the connection was established).
pub type FailHook = Arc<dyn Fn(SocketAddr) + Send + Sync>;

/// Configures and starts a [`TcpClient`].
pub struct ClientBuilder {
    addr: SocketAddr,
    router: Router,
    on_connect: Option<ConnHook>,
    on_close: Option<ConnHook>,
    on_connect_failed: Option<FailHook>,
    dialer: Option<Dialer>,
    policy: DisconnectedPolicy,
    min_backoff: Duration,
    max_backoff: Duration,
    connect_timeout: Duration,
    name: String,
    tls: Option<ClientTls>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("addr", &self.addr)
            .field("policy", &self.policy)
            .finish()
    }
}

impl ClientBuilder {
    /// The router for incoming frames.
    pub fn router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// Runs on every successful (re)connect, before queued frames are sent;
    /// it may send (e.g. re-pull state).
    pub fn on_connect(mut self, f: impl Fn(&mut Conn) + Send + Sync + 'static) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// Runs when an established connection closes.
    pub fn on_close(mut self, f: impl Fn(&mut Conn) + Send + Sync + 'static) -> Self {
        self.on_close = Some(Arc::new(f));
        self
    }

    /// Runs on the client's thread after every failed connect attempt, with
    /// the address tried (before the next attempt is planned).
    pub fn on_connect_failed(mut self, f: impl Fn(SocketAddr) + Send + Sync + 'static) -> Self {
        self.on_connect_failed = Some(Arc::new(f));
        self
    }

    /// Lets `dialer` choose the server and the time of every connect attempt
    /// (see [`Dialer`]) instead of the builder's address and
    /// [`backoff`](Self::backoff): for a client of several equivalent
    /// servers that fails over between them. It runs on the client's thread,
    /// after the `on_close` or `on_connect_failed` hook of the attempt
    /// before.
    pub fn dialer(
        mut self,
        dialer: impl FnMut(Instant) -> (SocketAddr, Instant) + Send + 'static,
    ) -> Self {
        self.dialer = Some(Box::new(dialer));
        self
    }

    /// What to do with frames sent while disconnected (default `Queue(10_000)`).
    pub fn disconnected_policy(mut self, policy: DisconnectedPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Reconnect delays: starts at `min`, doubles per failure up to `max`
    /// (defaults 100 ms and 5 s); reset when a connection that received a
    /// frame or lived at least 1 s is lost. A connection the server closes
    /// at once (a full server refusing it) is a failure like any other.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min.max(Duration::from_millis(1));
        self.max_backoff = max.max(self.min_backoff);
        self
    }

    /// Gives up a connect attempt after this long (default 3 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Speaks TLS to the server (its TLS port): the server certificate must
    /// chain to the configured CA and name the configured server name (or
    /// the server's IP); the client certificate, if configured, is sent to
    /// a server that requires one. Frames sent before the handshake ends
    /// wait for it; a handshake not done within the connect timeout, or
    /// that fails, is a failed connect (logged, counted in
    /// `tls_refused_handshake`).
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Thread name (default `lars-client`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Starts the client thread; it connects at once and keeps reconnecting.
    pub fn start(self) -> Result<TcpClient> {
        let stats = Arc::new(NetStats::default());
        let connected = Arc::new(AtomicBool::new(false));
        let outbox = Arc::new(Outbox {
            frames: Mutex::new(Vec::new()),
        });
        let st = Arc::clone(&stats);
        let cn = Arc::clone(&connected);
        let ob = Arc::clone(&outbox);
        let b = self;
        let name = b.name.clone();
        let thread = LoopThread::spawn(&name, move |ctx| {
            let mut c = ClientLoop {
                addr: b.addr,
                router: b.router,
                on_connect: b.on_connect,
                on_close: b.on_close,
                on_connect_failed: b.on_connect_failed,
                dialer: b.dialer,
                policy: b.policy,
                min_backoff: b.min_backoff,
                max_backoff: b.max_backoff,
                backoff: b.min_backoff,
                connect_timeout: b.connect_timeout,
                stats: st,
                connected: cn,
                outbox: ob,
                state: State::Idle,
                seq: 0,
                pending: VecDeque::new(),
                scratch: vec![0; READ_CHUNK],
                tls: b.tls,
            };
            if c.dialer.is_some() {
                c.retry_later(ctx);
            } else {
                c.connect(ctx);
            }
            Ok(c)
        })?;
        let sender = ClientSender {
            handle: thread.handle().clone(),
            outbox,
            stats: Arc::clone(&stats),
        };
        Ok(TcpClient {
            thread,
            sender,
            connected,
            stats,
        })
    }
}

/// A framed TCP client that stays connected to one server for its whole life.
/// Stopped and joined on drop.
pub struct TcpClient {
    thread: LoopThread<ClientLoop>,
    sender: ClientSender,
    connected: Arc<AtomicBool>,
    stats: Arc<NetStats>,
}

impl std::fmt::Debug for TcpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClient")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl TcpClient {
    /// A builder for a client of `addr`.
    pub fn builder(addr: SocketAddr) -> ClientBuilder {
        ClientBuilder {
            addr,
            router: Router::new(),
            on_connect: None,
            on_close: None,
            on_connect_failed: None,
            dialer: None,
            policy: DisconnectedPolicy::Queue(10_000),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            name: "lars-client".to_owned(),
            tls: None,
        }
    }

    /// A cloneable sender usable from any thread.
    pub fn sender(&self) -> ClientSender {
        self.sender.clone()
    }

    /// Sends `msg` (see [`ClientSender::send`]).
    pub fn send<M: Message>(
        &self,
        msgid: impl Into<i32>,
        msg: &M,
    ) -> std::result::Result<(), FrameError> {
        self.sender.send(msgid, msg)
    }

    /// Whether a connection is established now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The client's counters (`accepted` counts successful connects).
    pub fn stats(&self) -> Arc<NetStats> {
        Arc::clone(&self.stats)
    }

    /// Closes the established connection, if any, as if it were lost (its
    /// `on_close` hook runs and the next attempt is planned): for a server
    /// that stopped answering. Does not wait.
    pub fn close_connection(&self) {
        self.sender.close_connection();
    }

    /// Stops the client (does not wait).
    pub fn stop(&self) {
        self.thread.stop();
    }

    /// Stops the client and joins its thread.
    pub fn join(&mut self) {
        self.thread.join();
    }
}

struct Outbox {
    frames: Mutex<Vec<Bytes>>,
}

/// Sends frames through a [`TcpClient`] from any thread. Frames are written
/// in order; while disconnected the client's [`DisconnectedPolicy`] applies.
#[derive(Clone)]
pub struct ClientSender {
    handle: LoopHandle<ClientLoop>,
    outbox: Arc<Outbox>,
    stats: Arc<NetStats>,
}

impl std::fmt::Debug for ClientSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSender").finish_non_exhaustive()
    }
}

impl ClientSender {
    /// Encodes and sends `msg` as one frame. Fails only if it is too large.
    pub fn send<M: Message>(
        &self,
        msgid: impl Into<i32>,
        msg: &M,
    ) -> std::result::Result<(), FrameError> {
        self.send_frames(frame::to_bytes(msgid.into(), msg)?);
        Ok(())
    }

    /// Closes the client's established connection, if any, as if it were
    /// lost (see [`TcpClient::close_connection`]). Does not wait.
    pub fn close_connection(&self) {
        self.handle.post(|c, ctx| {
            if matches!(c.state, State::Connected(_)) {
                c.lost(ctx);
            }
        });
    }

    /// Sends bytes holding one or more whole frames.
    pub fn send_frames(&self, frames: Bytes) {
        let first = {
            let mut q = self
                .outbox
                .frames
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            q.push(frames);
            q.len() == 1
        };
        if first && !self.handle.post(|c, ctx| c.drain_outbox(ctx)) {
            NetStats::inc(&self.stats.dropped);
        }
    }
}

enum State {
    Idle,
    Connecting {
        token: Token,
        stream: TcpStream,
        timeout: TimerId,
    },
    Connected(Box<Conn>),
}

struct ClientLoop {
    addr: SocketAddr,
    router: Router,
    on_connect: Option<ConnHook>,
    on_close: Option<ConnHook>,
    on_connect_failed: Option<FailHook>,
    dialer: Option<Dialer>,
    policy: DisconnectedPolicy,
    min_backoff: Duration,
    max_backoff: Duration,
    backoff: Duration,
    connect_timeout: Duration,
    stats: Arc<NetStats>,
    connected: Arc<AtomicBool>,
    outbox: Arc<Outbox>,
    state: State,
    seq: u64,
    pending: VecDeque<Bytes>,
    scratch: Vec<u8>,
    tls: Option<ClientTls>,
}

impl ClientLoop {
    fn connect(&mut self, ctx: &mut LoopCtx<Self>) {
        self.seq += 1;
        let token = Token(self.seq as usize);
        match TcpStream::connect(self.addr) {
            Ok(mut stream) => {
                if let Err(e) = ctx.registry().register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.failed(ctx, &e);
                    return;
                }
                let seq = self.seq;
                let timeout = ctx.run_after(self.connect_timeout, move |c: &mut Self, ctx| {
                    if c.seq == seq && matches!(c.state, State::Connecting { .. }) {
                        c.drop_stream(ctx);
                        c.failed(ctx, &io::Error::from(io::ErrorKind::TimedOut));
                    }
                });
                self.state = State::Connecting {
                    token,
                    stream,
                    timeout,
                };
            }
            Err(e) => self.failed(ctx, &e),
        }
    }

    fn drop_stream(&mut self, ctx: &mut LoopCtx<Self>) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Connecting { mut stream, .. } => {
                let _ = ctx.registry().deregister(&mut stream);
            }
            State::Connected(mut conn) => {
                let _ = ctx.registry().deregister(&mut conn.stream);
            }
        }
    }

    fn failed(&mut self, ctx: &mut LoopCtx<Self>, e: &io::Error) {
        NetStats::inc(&self.stats.connect_failures);
        tracing::debug!("connect to {} failed: {e}", self.addr);
        if let Some(hook) = &self.on_connect_failed {
            hook(self.addr);
        }
        self.retry_later(ctx);
    }

    /// Plans the next attempt: where and when the dialer says, or to the
    /// same address after the backoff.
    fn retry_later(&mut self, ctx: &mut LoopCtx<Self>) {
        self.state = State::Idle;
        let delay = match &mut self.dialer {
            Some(dial) => {
                let now = Instant::now();
                let (addr, at) = dial(now);
                self.addr = addr;
                at.saturating_duration_since(now)
            }
            None => {
                let delay = self.backoff;
                self.backoff = self.backoff.saturating_mul(2).min(self.max_backoff);
                delay
            }
        };
        tracing::debug!("next connect to {} in {delay:?}", self.addr);
        ctx.run_after(delay, |c: &mut Self, ctx| {
            if matches!(c.state, State::Idle) {
                c.connect(ctx);
            }
        });
    }

    fn established(&mut self, ctx: &mut LoopCtx<Self>, token: Token, stream: TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let peer = stream.peer_addr().unwrap_or(self.addr);
        let mut conn = Box::new(Conn::new(
            ConnId(self.seq),
            stream,
            peer,
            0,
            Arc::clone(&self.stats),
        ));
        if let Some(tls) = &self.tls {
            match tls.connect(peer) {
                Ok(session) => conn.tls = Some(Box::new(rustls::Connection::Client(session))),
                Err(e) => {
                    tracing::error!("tls to {peer}: {e}");
                    let mut stream = conn.stream;
                    let _ = ctx.registry().deregister(&mut stream);
                    self.failed(ctx, &io::Error::other(e.to_string()));
                    return;
                }
            }
            // A server that never finishes the handshake is a failed
            // connect too.
            let seq = self.seq;
            ctx.run_after(self.connect_timeout, move |c: &mut Self, ctx| {
                if let State::Connected(conn) = &c.state {
                    if c.seq == seq && conn.handshaking() {
                        tracing::warn!(
                            "tls to {}: handshake not done within {:?}",
                            c.addr,
                            c.connect_timeout
                        );
                        NetStats::inc(&c.stats.tls_refused_handshake);
                        c.lost(ctx);
                    }
                }
            });
        }
        // Registered READABLE|WRITABLE for the connect; flush() below sets
        // the interest to what the write buffer needs.
        conn.write_interest = true;
        self.connected.store(true, Ordering::Release);
        NetStats::inc(&self.stats.accepted);
        self.stats.open.store(1, Ordering::Relaxed);
        tracing::info!("connected to {}", self.addr);
        if let Some(hook) = &self.on_connect {
            hook(&mut conn);
        }
        for f in self.pending.drain(..) {
            conn.send_frames(&f);
        }
        self.state = State::Connected(conn);
        self.drain_outbox(ctx);
        self.flush(ctx, token);
    }

    fn flush(&mut self, ctx: &mut LoopCtx<Self>, token: Token) {
        if let State::Connected(conn) = &mut self.state {
            if !conn.flush(ctx.registry(), token) || conn.closing {
                self.lost(ctx);
            }
        }
    }

    fn lost(&mut self, ctx: &mut LoopCtx<Self>) {
        if let State::Connected(conn) = &mut self.state {
            if conn.framed || conn.opened_at.elapsed() >= STABLE_AFTER {
                self.backoff = self.min_backoff;
            } else {
                NetStats::inc(&self.stats.connect_failures);
            }
            if let Some(hook) = &self.on_close {
                hook(conn);
            }
            tracing::info!("connection to {} lost", self.addr);
        }
        self.drop_stream(ctx);
        self.connected.store(false, Ordering::Release);
        self.stats.open.store(0, Ordering::Relaxed);
        self.retry_later(ctx);
    }

    fn drain_outbox(&mut self, ctx: &mut LoopCtx<Self>) {
        let frames = std::mem::take(
            &mut *self
                .outbox
                .frames
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if frames.is_empty() {
            return;
        }
        match &mut self.state {
            State::Connected(conn) => {
                for f in &frames {
                    conn.send_frames(f);
                }
                let token = Token(self.seq as usize);
                self.flush(ctx, token);
            }
            _ => {
                for f in frames {
                    match self.policy {
                        DisconnectedPolicy::Queue(max) if self.pending.len() < max => {
                            self.pending.push_back(f);
                        }
                        _ => NetStats::inc(&self.stats.dropped),
                    }
                }
            }
        }
    }
}

impl LoopState for ClientLoop {
    fn on_ready(&mut self, ctx: &mut LoopCtx<Self>, event: &Event) {
        if event.token() != Token(self.seq as usize) {
            return;
        }
        match &mut self.state {
            State::Idle => {}
            State::Connecting { stream, .. } => {
                let err = match stream.take_error() {
                    Ok(Some(e)) | Err(e) => Some(e),
                    Ok(None) => None,
                };
                if let Some(e) = err {
                    self.drop_stream(ctx);
                    self.failed(ctx, &e);
                    return;
                }
                match stream.peer_addr() {
                    Ok(_) => {
                        let State::Connecting {
                            token,
                            stream,
                            timeout,
                        } = std::mem::replace(&mut self.state, State::Idle)
                        else {
                            return;
                        };
                        ctx.cancel(timeout);
                        self.established(ctx, token, stream);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        if event.is_error() || event.is_write_closed() {
                            self.drop_stream(ctx);
                            self.failed(ctx, &e);
                        }
                    }
                    Err(e) => {
                        self.drop_stream(ctx);
                        self.failed(ctx, &e);
                    }
                }
            }
            State::Connected(conn) => {
                let token = event.token();
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let closed = matches!(
                        conn.read_in(&mut self.scratch, event.is_read_closed()),
                        ReadOutcome::Closed
                    );
                    let ok = dispatch(conn, &self.router) && !closed;
                    if let Some((why, detail)) = conn.tls_failure.take() {
                        NetStats::inc(&self.stats.tls_refused_handshake);
                        let hint = match why {
                            TlsRefusal::BadClientCert => {
                                " (the server's certificate does not verify against [tls] ca and server_name)"
                            }
                            TlsRefusal::NoClientCert | TlsRefusal::Handshake => "",
                        };
                        tracing::warn!("tls to {}: handshake failed: {detail}{hint}", self.addr);
                    }
                    if !ok {
                        let _ = conn.flush(ctx.registry(), token);
                        self.lost(ctx);
                        return;
                    }
                }
                if conn.wants_flush() {
                    self.flush(ctx, token);
                }
            }
        }
    }
}
