//! Framed UDP: one frame per datagram.
//!
//! [`UdpServer<S>`] is one event loop owning a user state `S` and one or more
//! sockets. Datagram handlers, timers and posted tasks all get `&mut S` and a
//! [`UdpCtx`] to send with, on the loop thread, so `S` needs no lock. Run one
//! server per socket (one loop each), or bind several sockets on one loop.
//!
//! [`UdpClient`] is a small blocking client (std socket with timeouts).

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lars_core::frame::{self, Frame, FrameError};
use mio::event::Event;
use mio::net::UdpSocket;
use mio::{Interest, Token};
use prost::Message;

use crate::error::{NetError, Result};
use crate::event_loop::{LoopCtx, LoopHandle, LoopState, LoopThread, TimerId};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;

/// Counters of a UDP server (relaxed atomics).
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagrams received and handed to a handler.
    pub frames_in: AtomicU64,
    /// Datagrams sent.
    pub frames_out: AtomicU64,
    /// Datagrams dropped because their size did not match their header.
    pub bad_datagrams: AtomicU64,
    /// Sends that failed (e.g. socket buffer full).
    pub send_errors: AtomicU64,
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A datagram handler: state, send context, the frame, its sender.
pub type UdpHandler<S> = Box<dyn FnMut(&mut S, &mut UdpCtx<'_>, Frame, SocketAddr) + Send>;
type UdpTick<S> = Box<dyn FnMut(&mut S, &mut UdpCtx<'_>) + Send>;

/// Sends datagrams from a [`UdpServer`]'s sockets. In a datagram handler,
/// [`reply`](Self::reply) answers the sender from the socket it arrived on.
pub struct UdpCtx<'a> {
    sockets: &'a [UdpSocket],
    current: usize,
    peer: Option<SocketAddr>,
    out: &'a mut BytesMut,
    stats: &'a UdpStats,
}

impl std::fmt::Debug for UdpCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpCtx")
            .field("socket", &self.current)
            .field("peer", &self.peer)
            .finish()
    }
}

impl UdpCtx<'_> {
    /// The sender of the datagram being handled (`None` in timers and tasks).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Index of the socket the datagram arrived on (bind order), 0 in timers
    /// and tasks.
    pub fn socket_index(&self) -> usize {
        self.current
    }

    /// Local address of socket `index`.
    pub fn local_addr(&self, index: usize) -> Option<SocketAddr> {
        self.sockets.get(index)?.local_addr().ok()
    }

    /// Replies `msg` to the datagram's sender. A no-op outside a handler.
    pub fn reply<M: Message>(&mut self, msgid: impl Into<i32>, msg: &M) -> Result<()> {
        match self.peer {
            Some(peer) => self.send_to(peer, msgid, msg),
            None => Ok(()),
        }
    }

    /// Sends `msg` to `to` from the current socket.
    pub fn send_to<M: Message>(
        &mut self,
        to: SocketAddr,
        msgid: impl Into<i32>,
        msg: &M,
    ) -> Result<()> {
        self.out.clear();
        frame::encode(msgid.into(), msg, self.out)?;
        let (sockets, current) = (self.sockets, self.current);
        send_datagram(sockets, current, self.stats, &self.out[..], to)
    }

    /// Sends an encoded body as one frame to `to` from the current socket.
    pub fn send_raw_to(
        &mut self,
        to: SocketAddr,
        msgid: impl Into<i32>,
        body: &[u8],
    ) -> Result<()> {
        self.out.clear();
        frame::encode_raw(msgid.into(), body, self.out)?;
        send_datagram(self.sockets, self.current, self.stats, &self.out[..], to)
    }

    /// Sends bytes that already are one whole frame to `to`.
    pub fn send_frame_to(&mut self, to: SocketAddr, frame: &[u8]) -> Result<()> {
        send_datagram(self.sockets, self.current, self.stats, frame, to)
    }
}

fn send_datagram(
    sockets: &[UdpSocket],
    index: usize,
    stats: &UdpStats,
    data: &[u8],
    to: SocketAddr,
) -> Result<()> {
    let Some(sock) = sockets.get(index) else {
        return Err(NetError::Config(format!("no socket {index}")));
    };
    loop {
        match sock.send_to(data, to) {
            Ok(_) => {
                inc(&stats.frames_out);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                inc(&stats.send_errors);
                return Err(e.into());
            }
        }
    }
}

struct UdpLoop<S> {
    user: S,
    sockets: Vec<UdpSocket>,
    handlers: Vec<UdpHandler<S>>,
    buf: Vec<u8>,
    out: BytesMut,
    stats: Arc<UdpStats>,
}

impl<S> UdpLoop<S> {
    fn with_ctx<R>(&mut self, f: impl FnOnce(&mut S, &mut UdpCtx<'_>) -> R) -> R {
        let mut ctx = UdpCtx {
            sockets: &self.sockets,
            current: 0,
            peer: None,
            out: &mut self.out,
            stats: &self.stats,
        };
        f(&mut self.user, &mut ctx)
    }
}

impl<S: 'static> LoopState for UdpLoop<S> {
    fn on_ready(&mut self, _ctx: &mut LoopCtx<Self>, event: &Event) {
        let index = event.token().0;
        let UdpLoop {
            user,
            sockets,
            handlers,
            buf,
            out,
            stats,
        } = self;
        let (Some(sock), Some(handler)) = (sockets.get(index), handlers.get_mut(index)) else {
            return;
        };
        loop {
            match sock.recv_from(buf) {
                Ok((n, peer)) => match frame::decode_datagram(&buf[..n]) {
                    Ok(f) => {
                        inc(&stats.frames_in);
                        let mut ctx = UdpCtx {
                            sockets,
                            current: index,
                            peer: Some(peer),
                            out,
                            stats,
                        };
                        handler(user, &mut ctx, f, peer);
                    }
                    Err(e) => {
                        inc(&stats.bad_datagrams);
                        tracing::debug!("datagram from {peer} dropped: {e}");
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. ICMP port unreachable surfaced as ECONNREFUSED:
                    // not fatal for a server socket.
                    tracing::debug!("udp recv error: {e}");
                }
            }
        }
    }
}

/// Configures and starts a [`UdpServer`].
pub struct UdpServerBuilder<S> {
    state: S,
    binds: Vec<(SocketAddr, UdpHandler<S>)>,
    ticks: Vec<(Duration, UdpTick<S>)>,
    name: String,
}

impl<S> std::fmt::Debug for UdpServerBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpServerBuilder")
            .field("binds", &self.binds.iter().map(|b| b.0).collect::<Vec<_>>())
            .finish()
    }
}

impl<S: Send + 'static> UdpServerBuilder<S> {
    /// Adds a socket bound to `addr` whose datagrams go to `handler`.
    pub fn bind(
        mut self,
        addr: SocketAddr,
        handler: impl FnMut(&mut S, &mut UdpCtx<'_>, Frame, SocketAddr) + Send + 'static,
    ) -> Self {
        self.binds.push((addr, Box::new(handler)));
        self
    }

    /// Runs `f` every `period` on the loop.
    pub fn every(
        mut self,
        period: Duration,
        f: impl FnMut(&mut S, &mut UdpCtx<'_>) + Send + 'static,
    ) -> Self {
        self.ticks.push((period, Box::new(f)));
        self
    }

    /// Thread name (default `lars-udp`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Binds every socket (all or nothing) and starts the loop thread.
    pub fn start(self) -> Result<UdpServer<S>> {
        if self.binds.is_empty() {
            return Err(NetError::Config("a UDP server needs a socket".into()));
        }
        let mut sockets = Vec::with_capacity(self.binds.len());
        let mut handlers = Vec::with_capacity(self.binds.len());
        let mut addrs = Vec::with_capacity(self.binds.len());
        for (addr, h) in self.binds {
            let std = StdUdpSocket::bind(addr)?;
            std.set_nonblocking(true)?;
            addrs.push(std.local_addr()?);
            sockets.push(UdpSocket::from_std(std));
            handlers.push(h);
        }
        let stats = Arc::new(UdpStats::default());
        let st = Arc::clone(&stats);
        let user = self.state;
        let ticks = self.ticks;
        let thread = LoopThread::spawn(&self.name, move |ctx| {
            for (i, s) in sockets.iter_mut().enumerate() {
                ctx.registry().register(s, Token(i), Interest::READABLE)?;
            }
            for (period, mut f) in ticks {
                ctx.run_every(period, move |l: &mut UdpLoop<S>, _| {
                    l.with_ctx(|s, c| f(s, c))
                });
            }
            Ok(UdpLoop {
                user,
                sockets,
                handlers,
                buf: vec![0; MAX_DATAGRAM],
                out: BytesMut::with_capacity(MAX_DATAGRAM),
                stats: st,
            })
        })?;
        tracing::info!("udp server listening on {addrs:?}");
        Ok(UdpServer {
            handle: UdpHandle {
                lp: thread.handle().clone(),
            },
            thread,
            addrs,
            stats,
        })
    }
}

/// A running UDP server: one loop thread owning a state `S` and its sockets.
/// Stopped and joined on drop.
pub struct UdpServer<S: 'static> {
    thread: LoopThread<UdpLoop<S>>,
    handle: UdpHandle<S>,
    addrs: Vec<SocketAddr>,
    stats: Arc<UdpStats>,
}

impl<S> std::fmt::Debug for UdpServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpServer")
            .field("addrs", &self.addrs)
            .finish()
    }
}

impl<S: Send + 'static> UdpServer<S> {
    /// A builder around `state` (add sockets with [`UdpServerBuilder::bind`]).
    pub fn builder(state: S) -> UdpServerBuilder<S> {
        UdpServerBuilder {
            state,
            binds: Vec::new(),
            ticks: Vec::new(),
            name: "lars-udp".to_owned(),
        }
    }

    /// One socket on `addr`, one loop, `handler` for every good datagram.
    pub fn start(
        addr: SocketAddr,
        state: S,
        handler: impl FnMut(&mut S, &mut UdpCtx<'_>, Frame, SocketAddr) + Send + 'static,
    ) -> Result<Self> {
        Self::builder(state).bind(addr, handler).start()
    }

    /// The first socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0] // start() refuses an empty socket list
    }

    /// Every socket's bound address, in bind order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A cloneable handle to post tasks and timers that get `&mut S`.
    pub fn handle(&self) -> UdpHandle<S> {
        self.handle.clone()
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<UdpStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the loop (does not wait).
    pub fn stop(&self) {
        self.thread.stop();
    }

    /// Stops the loop and joins its thread.
    pub fn join(&mut self) {
        self.thread.join();
    }
}

/// Posts work to a [`UdpServer`]'s loop from any thread; the work gets the
/// loop's `&mut S` (e.g. apply a route update to this shard, drain stats).
pub struct UdpHandle<S: 'static> {
    lp: LoopHandle<UdpLoop<S>>,
}

impl<S> Clone for UdpHandle<S> {
    fn clone(&self) -> Self {
        Self {
            lp: self.lp.clone(),
        }
    }
}

impl<S> std::fmt::Debug for UdpHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpHandle").finish_non_exhaustive()
    }
}

impl<S: 'static> UdpHandle<S> {
    /// Runs `f` on the loop soon. False if the server stopped.
    pub fn post(&self, f: impl FnOnce(&mut S, &mut UdpCtx<'_>) + Send + 'static) -> bool {
        self.lp.post(move |l, _| l.with_ctx(f))
    }

    /// Runs `f` on the loop once, `after` from now.
    pub fn run_after(
        &self,
        after: Duration,
        f: impl FnOnce(&mut S, &mut UdpCtx<'_>) + Send + 'static,
    ) -> bool {
        self.lp.post(move |_, ctx| {
            ctx.run_after(after, move |l, _| l.with_ctx(f));
        })
    }

    /// Runs `f` on the loop every `period`, for the life of the server.
    pub fn run_every(
        &self,
        period: Duration,
        mut f: impl FnMut(&mut S, &mut UdpCtx<'_>) + Send + 'static,
    ) -> bool {
        self.lp.post(move |_, ctx| {
            let _: TimerId = ctx.run_every(period, move |l, _| l.with_ctx(|s, c| f(s, c)));
        })
    }

    /// Stops the server's loop.
    pub fn stop(&self) {
        self.lp.stop();
    }
}

/// A blocking framed UDP client talking to one server (std socket).
#[derive(Debug)]
pub struct UdpClient {
    socket: StdUdpSocket,
    buf: Vec<u8>,
    out: BytesMut,
    bad: u64,
}

impl UdpClient {
    /// A socket on an ephemeral port of the matching family, connected to
    /// `server` (only its datagrams are received).
    pub fn connect(server: SocketAddr) -> Result<Self> {
        let local: SocketAddr = if server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = StdUdpSocket::bind(local)?;
        socket.connect(server)?;
        Ok(Self {
            socket,
            buf: vec![0; MAX_DATAGRAM],
            out: BytesMut::with_capacity(1024),
            bad: 0,
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// Sends `msg` as one datagram.
    pub fn send<M: Message>(&mut self, msgid: impl Into<i32>, msg: &M) -> Result<()> {
        self.out.clear();
        frame::encode(msgid.into(), msg, &mut self.out)?;
        self.socket.send(&self.out)?;
        Ok(())
    }

    /// Sends an encoded body as one datagram.
    pub fn send_raw(&mut self, msgid: impl Into<i32>, body: &[u8]) -> Result<()> {
        self.out.clear();
        frame::encode_raw(msgid.into(), body, &mut self.out)?;
        self.socket.send(&self.out)?;
        Ok(())
    }

    /// Sends raw bytes as one datagram (for tests of malformed input).
    pub fn send_bytes(&self, data: &[u8]) -> Result<()> {
        self.socket.send(data)?;
        Ok(())
    }

    /// Waits up to `timeout` for the next well-formed frame; malformed
    /// datagrams are skipped and counted ([`bad_datagrams`](Self::bad_datagrams)).
    pub fn recv(&mut self, timeout: Duration) -> Result<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetError::Timeout);
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.recv(&mut self.buf) {
                Ok(n) => match frame::decode_datagram(&self.buf[..n]) {
                    Ok(f) => return Ok(f),
                    Err(FrameError::DatagramSize { .. } | FrameError::BadLength(_)) => {
                        self.bad += 1;
                    }
                    Err(e) => return Err(e.into()),
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(NetError::Timeout);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Malformed datagrams skipped by [`recv`](Self::recv).
    pub fn bad_datagrams(&self) -> u64 {
        self.bad
    }
}
