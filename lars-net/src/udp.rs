//! A UDP server: one event loop owning one socket and a user state.
//!
//! The state implements [`UdpService`]: every datagram is handed to it as
//! received (bytes and sender; decoding is the service's business), it may ask
//! for a deadline of its own (`poll_timeout` / `on_timeout`, the shape of a
//! sans-IO core), and tasks posted from other threads through a
//! [`UdpHandle`] get `&mut S` on the loop, so `S` needs no lock. Replies go out
//! through [`UdpIo`], from the socket the requests arrived on.
//!
//! Servers are made in two steps: [`UdpServer::bind`] binds the socket and
//! creates the loop (its address and handle are known, posts queue up), then
//! [`UdpServerBuilder::start`] builds nothing more than the state and starts
//! the thread. Servers whose states post to each other are all bound first.
//!
//! The socket's receive buffer can be raised ([`UdpServerBuilder::recv_buffer`])
//! and the datagrams the kernel dropped because it was full are readable
//! from any thread ([`UdpHandle::kernel_drops`], Linux: the `drops` column of
//! `/proc/net/udp{,6}` for the socket's inode).

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use lars_core::frame;
use mio::event::Event;
use mio::net::UdpSocket;
use mio::{Interest, Token};
use prost::Message;

use crate::error::{NetError, Result};
use crate::event_loop::{LoopBuilder, LoopCtx, LoopHandle, LoopState, LoopThread};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
const SOCKET: Token = Token(0);
/// Receive errors tolerated per readiness event before waiting for the next.
const MAX_ERRORS_PER_EVENT: u32 = 64;

/// What one receive did.
enum Recv {
    Datagram,
    Empty,
    Error,
}

/// What a [`UdpServer`] drives: datagrams in, an optional deadline.
pub trait UdpService: Send + 'static {
    /// One datagram `data` from `from` (any size, unchecked).
    fn on_datagram(&mut self, io: &mut UdpIo<'_>, from: SocketAddr, data: &[u8]);

    /// When [`on_timeout`](Self::on_timeout) should run next; asked before
    /// the loop sleeps. `None`: no deadline.
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    /// The deadline passed (`now` is the loop's clock). Must move the deadline
    /// past `now` or clear it.
    fn on_timeout(&mut self, io: &mut UdpIo<'_>, now: Instant) {
        let _ = (io, now);
    }
}

/// Sends datagrams from a [`UdpServer`]'s socket.
pub struct UdpIo<'a> {
    sock: &'a UdpSocket,
    out: &'a mut BytesMut,
}

impl std::fmt::Debug for UdpIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpIo")
            .field("local_addr", &self.sock.local_addr().ok())
            .finish()
    }
}

impl UdpIo<'_> {
    /// Sends `msg` as one frame (`lars_core::frame`) to `to`. Fails when the
    /// message is too large for a frame or the socket refuses it (e.g. its
    /// buffer is full); nothing is retried.
    pub fn send<M: Message>(
        &mut self,
        to: SocketAddr,
        msgid: impl Into<i32>,
        msg: &M,
    ) -> Result<()> {
        self.out.clear();
        frame::encode(msgid.into(), msg, self.out)?;
        loop {
            match self.sock.send_to(&self.out[..], to) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The loop state: the user's service, its socket, buffers.
struct UdpLoop<S> {
    service: S,
    sock: UdpSocket,
    buf: Vec<u8>,
    out: BytesMut,
}

impl<S: UdpService> UdpLoop<S> {
    /// One non-blocking receive, handed to the service.
    fn recv_one(&mut self) -> Recv {
        let UdpLoop {
            service,
            sock,
            buf,
            out,
        } = self;
        loop {
            match sock.recv_from(buf) {
                Ok((n, from)) => {
                    let mut io = UdpIo { sock, out };
                    service.on_datagram(&mut io, from, &buf[..n]);
                    return Recv::Datagram;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Recv::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. ICMP port unreachable of an earlier reply, surfaced
                    // as ECONNREFUSED: not fatal for a server socket.
                    tracing::debug!("udp recv error: {e}");
                    return Recv::Error;
                }
            }
        }
    }

    fn io(&mut self) -> (&mut S, UdpIo<'_>) {
        (
            &mut self.service,
            UdpIo {
                sock: &self.sock,
                out: &mut self.out,
            },
        )
    }
}

impl<S: UdpService> LoopState for UdpLoop<S> {
    fn on_ready(&mut self, _ctx: &mut LoopCtx<Self>, event: &Event) {
        if event.token() != SOCKET {
            return;
        }
        // Edge-triggered: read until WouldBlock (a socket error is reported
        // once per receive; give up on a socket that keeps failing).
        let mut errors = 0;
        while errors < MAX_ERRORS_PER_EVENT {
            match self.recv_one() {
                Recv::Datagram => {}
                Recv::Empty => return,
                Recv::Error => errors += 1,
            }
        }
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.service.poll_timeout()
    }

    fn on_timeout(&mut self, _ctx: &mut LoopCtx<Self>, now: Instant) {
        let (service, mut io) = self.io();
        service.on_timeout(&mut io, now);
    }

    fn on_spin(&mut self, _ctx: &mut LoopCtx<Self>) -> bool {
        matches!(self.recv_one(), Recv::Datagram)
    }
}

/// A bound socket and a created loop, not running yet (see
/// [`UdpServer::bind`]).
pub struct UdpServerBuilder<S> {
    sock: UdpSocket,
    addr: SocketAddr,
    lp: LoopBuilder<UdpLoop<S>>,
    name: String,
    info: Arc<SocketInfo>,
}

impl<S> std::fmt::Debug for UdpServerBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpServerBuilder")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S: UdpService> UdpServerBuilder<S> {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to the loop, usable before it starts (posted tasks queue up).
    pub fn handle(&self) -> UdpHandle<S> {
        UdpHandle {
            lp: self.lp.handle().clone(),
            info: Arc::clone(&self.info),
        }
    }

    /// Asks for a receive buffer (`SO_RCVBUF`) of `bytes`, so that a burst
    /// waits in the kernel instead of being dropped. The kernel caps the
    /// request at `net.core.rmem_max` (Linux); a smaller result is logged,
    /// as is a failure, and the server keeps what it got. See
    /// [`recv_buffer_size`](Self::recv_buffer_size).
    pub fn recv_buffer(self, bytes: usize) -> Self {
        let sock = socket2::SockRef::from(&self.sock);
        match sock.set_recv_buffer_size(bytes) {
            Ok(()) => {
                let got = sock.recv_buffer_size().unwrap_or(0);
                // Linux reports twice the size it was asked for (the
                // kernel's bookkeeping overhead); compare like with like.
                let got = if cfg!(target_os = "linux") {
                    got / 2
                } else {
                    got
                };
                if got < bytes {
                    tracing::warn!(
                        "udp {}: asked for a {bytes}-byte receive buffer, the kernel granted \
                         {got} (raise net.core.rmem_max)",
                        self.addr
                    );
                }
            }
            Err(e) => tracing::warn!(
                "udp {}: cannot set a {bytes}-byte receive buffer: {e}",
                self.addr
            ),
        }
        self
    }

    /// The socket's receive buffer size as the kernel reports it
    /// (`SO_RCVBUF`; on Linux twice the usable size it granted).
    pub fn recv_buffer_size(&self) -> Result<usize> {
        Ok(socket2::SockRef::from(&self.sock).recv_buffer_size()?)
    }

    /// Thread name (default `lars-udp`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Spin up to `rounds` times (a non-blocking receive, then yield) before
    /// sleeping in `epoll_wait`; the budget restarts whenever a datagram or a
    /// task was found. For request/response peers on the same machine, whose
    /// next datagram usually arrives within microseconds: they then pay no
    /// sleep and wake-up per datagram. Default 0.
    pub fn spin(mut self, rounds: u32) -> Self {
        self.lp = self.lp.spin(rounds);
        self
    }

    /// Starts the loop thread around `service`.
    pub fn start(self, service: S) -> Result<UdpServer<S>> {
        let handle = self.handle();
        let addr = self.addr;
        let mut sock = self.sock;
        let thread = self.lp.spawn(&self.name, move |ctx| {
            ctx.registry()
                .register(&mut sock, SOCKET, Interest::READABLE)?;
            Ok(UdpLoop {
                service,
                sock,
                buf: vec![0; MAX_DATAGRAM],
                out: BytesMut::with_capacity(1024),
            })
        })?;
        tracing::debug!("udp server on {addr}");
        Ok(UdpServer {
            thread,
            handle,
            addr,
        })
    }
}

/// A running UDP server: one loop thread owning a service `S` and its socket.
/// Stopped and joined on drop.
pub struct UdpServer<S: UdpService> {
    thread: LoopThread<UdpLoop<S>>,
    handle: UdpHandle<S>,
    addr: SocketAddr,
}

impl<S: UdpService> std::fmt::Debug for UdpServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl<S: UdpService> UdpServer<S> {
    /// Binds `addr` (port 0 picks a free port) and creates the loop; start it
    /// with [`UdpServerBuilder::start`].
    pub fn bind(addr: SocketAddr) -> Result<UdpServerBuilder<S>> {
        let std = StdUdpSocket::bind(addr).map_err(NetError::bind("udp", addr))?;
        std.set_nonblocking(true)?;
        let addr = std.local_addr()?;
        let info = Arc::new(SocketInfo::of(&std, addr));
        Ok(UdpServerBuilder {
            sock: UdpSocket::from_std(std),
            addr,
            lp: LoopBuilder::new()?,
            name: "lars-udp".to_owned(),
            info,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A cloneable handle to post tasks that get `&mut S`.
    pub fn handle(&self) -> UdpHandle<S> {
        self.handle.clone()
    }

    /// Datagrams the kernel dropped on this socket (see
    /// [`UdpHandle::kernel_drops`]).
    pub fn kernel_drops(&self) -> Option<u64> {
        self.handle.kernel_drops()
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
/// loop's `&mut S` and a [`UdpIo`] to send with.
pub struct UdpHandle<S> {
    lp: LoopHandle<UdpLoop<S>>,
    info: Arc<SocketInfo>,
}

impl<S> Clone for UdpHandle<S> {
    fn clone(&self) -> Self {
        Self {
            lp: self.lp.clone(),
            info: Arc::clone(&self.info),
        }
    }
}

impl<S> UdpHandle<S> {
    /// Datagrams the kernel dropped on the server's socket since it was
    /// bound, mostly because its receive buffer was full: the `drops` column
    /// of `/proc/net/udp` (or `udp6`) for the socket's inode, read now.
    /// `None` where that is unavailable (not Linux, `/proc` not mounted).
    pub fn kernel_drops(&self) -> Option<u64> {
        self.info.drops()
    }
}

impl<S> std::fmt::Debug for UdpHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpHandle").finish_non_exhaustive()
    }
}

impl<S: UdpService> UdpHandle<S> {
    /// Runs `f` on the loop soon (queued until it starts). False once the
    /// server stopped; `f` is then dropped unrun.
    pub fn post(&self, f: impl FnOnce(&mut S, &mut UdpIo<'_>) + Send + 'static) -> bool {
        self.lp.post(move |l, _| {
            let (service, mut io) = l.io();
            f(service, &mut io);
        })
    }
}

/// What finds a socket's line in `/proc/net/udp{,6}`.
#[derive(Debug)]
struct SocketInfo {
    /// The socket's inode (`/proc/self/fd/N -> socket:[inode]`).
    inode: Option<u64>,
    ipv6: bool,
}

impl SocketInfo {
    #[cfg(unix)]
    fn of(sock: &StdUdpSocket, addr: SocketAddr) -> Self {
        use std::os::fd::AsRawFd;
        let inode = std::fs::read_link(format!("/proc/self/fd/{}", sock.as_raw_fd()))
            .ok()
            .and_then(|l| {
                l.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            });
        Self {
            inode,
            ipv6: addr.is_ipv6(),
        }
    }

    #[cfg(not(unix))]
    fn of(_sock: &StdUdpSocket, addr: SocketAddr) -> Self {
        Self {
            inode: None,
            ipv6: addr.is_ipv6(),
        }
    }

    fn drops(&self) -> Option<u64> {
        let inode = self.inode?;
        let table = if self.ipv6 {
            "/proc/net/udp6"
        } else {
            "/proc/net/udp"
        };
        drops_of(&std::fs::read_to_string(table).ok()?, inode)
    }
}

/// The `drops` column of the line for `inode` in a `/proc/net/udp` table.
fn drops_of(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        if cols.len() < 13 || cols[9].parse::<u64>().ok()? != inode {
            return None;
        }
        cols[12].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_column_by_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when \
                     retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:22B8 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000 \
               0 4242 2 0000000000000000 17\n\
            2: 0100007F:22B9 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000 \
               0 4243 2 0000000000000000 0\n";
        assert_eq!(drops_of(table, 4242), Some(17));
        assert_eq!(drops_of(table, 4243), Some(0));
        assert_eq!(drops_of(table, 1), None);
    }
}
