//! The shard loop: one thread per UDP port.
//!
//! The socket is non-blocking. The loop receives until `WouldBlock`, then
//! yields the CPU a few times (`SPIN_YIELDS`) re-trying the receive before
//! it sleeps in `epoll_wait`: a client's next datagram (its report right
//! after a reply, its next request) usually arrives during those yields, so
//! the shard is not put to sleep and woken twice per call, and the sender
//! skips the wake-up work. Work from other threads (dns answers, forwarded
//! requests, status queries) is posted on a channel and wakes the loop with a
//! [`mio::Waker`]; it also runs on every tick.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use lars_core::frame::{HEADER_LEN, MAX_BODY_LEN};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use prost::Message;

use crate::agent::Shard;

/// Receive retries (each after a `yield_now`) before sleeping in epoll.
const SPIN_YIELDS: u32 = 20;
const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;

/// Work posted to a shard from another thread.
pub(crate) type Task = Box<dyn FnOnce(&mut Shard, &ShardIo) + Send>;

/// Posts work to one shard from any thread.
#[derive(Clone)]
pub(crate) struct ShardHandle {
    tx: Sender<Task>,
    waker: Arc<Waker>,
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for ShardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHandle").finish_non_exhaustive()
    }
}

impl ShardHandle {
    /// Runs `f` on the shard's thread soon; false once the shard stopped.
    pub(crate) fn post(&self, f: impl FnOnce(&mut Shard, &ShardIo) + Send + 'static) -> bool {
        if self.stopped.load(Ordering::Acquire) || self.tx.send(Box::new(f)).is_err() {
            return false;
        }
        self.wake();
        true
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::debug!("shard wake-up: {e}");
        }
    }
}

/// The shard's socket, for replies (from the port requests arrived on).
#[derive(Debug)]
pub(crate) struct ShardIo {
    sock: UdpSocket,
    out: std::cell::RefCell<Vec<u8>>,
}

impl ShardIo {
    /// Sends `msg` as one frame to `to`.
    pub(crate) fn send<M: Message>(&self, to: SocketAddr, msgid: impl Into<i32>, msg: &M) {
        let len = msg.encoded_len();
        if len > MAX_BODY_LEN {
            tracing::warn!("reply of {len} bytes too large; dropped");
            return;
        }
        let mut out = self.out.borrow_mut();
        out.clear();
        out.extend_from_slice(&msgid.into().to_le_bytes());
        out.extend_from_slice(&(len as i32).to_le_bytes()); // <= MAX_BODY_LEN
        // Encoding into a Vec cannot run out of room.
        let _ = msg.encode(&mut *out);
        loop {
            match self.sock.send_to(&out, to) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("reply to {to}: {e}");
                    return;
                }
            }
        }
    }
}

/// What a shard thread does besides answering datagrams.
pub(crate) struct Periodic {
    pub tick: Duration,
    pub report_interval: Duration,
    pub snapshot_interval: Duration,
}

/// A running shard thread.
#[derive(Debug)]
pub(crate) struct ShardThread {
    handle: ShardHandle,
    addr: SocketAddrV4,
    join: Option<JoinHandle<()>>,
}

impl ShardThread {
    /// Binds `addr` and starts the shard's thread.
    pub(crate) fn start(
        addr: SocketAddrV4,
        shard: Shard,
        periodic: Periodic,
        name: &str,
    ) -> io::Result<Self> {
        let std = std::net::UdpSocket::bind(addr)?;
        let SocketAddr::V4(local) = std.local_addr()? else {
            return Err(io::Error::other("bound a non-IPv4 address"));
        };
        std.set_nonblocking(true)?;
        let mut sock = UdpSocket::from_std(std);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut sock, SOCKET, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stopped = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stopped);
        let io = ShardIo {
            sock,
            out: std::cell::RefCell::new(Vec::with_capacity(1024)),
        };
        let join = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(shard, &io, poll, &rx, &st, &periodic))?;
        Ok(Self {
            handle: ShardHandle { tx, waker, stopped },
            addr: local,
            join: Some(join),
        })
    }

    pub(crate) fn handle(&self) -> ShardHandle {
        self.handle.clone()
    }

    pub(crate) fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Stops the thread and waits for it.
    pub(crate) fn join(&mut self) {
        self.handle.stopped.store(true, Ordering::Release);
        self.handle.wake();
        if let Some(j) = self.join.take() {
            if j.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

impl Drop for ShardThread {
    fn drop(&mut self) {
        self.join();
    }
}

fn run(
    mut shard: Shard,
    io: &ShardIo,
    mut poll: Poll,
    rx: &Receiver<Task>,
    stopped: &AtomicBool,
    p: &Periodic,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut events = Events::with_capacity(8);
    let start = Instant::now();
    let (mut next_tick, mut next_report, mut next_snapshot) = (
        start + p.tick,
        start + p.report_interval,
        start + p.snapshot_interval,
    );
    let mut spins = 0;
    loop {
        match io.sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                spins = 0;
                on_datagram(&mut shard, io, &buf[..n], from);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !rx.is_empty() {
                    run_tasks(&mut shard, io, rx);
                } else if spins < SPIN_YIELDS {
                    spins += 1;
                    thread::yield_now();
                } else {
                    spins = 0;
                    let wait = next_tick.saturating_duration_since(Instant::now());
                    if let Err(e) = poll.poll(&mut events, Some(wait)) {
                        if e.kind() != io::ErrorKind::Interrupted {
                            tracing::error!("shard poll: {e}");
                        }
                    }
                    run_tasks(&mut shard, io, rx);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // E.g. ICMP port unreachable of an earlier reply: not fatal.
            Err(e) => tracing::debug!("udp recv: {e}"),
        }
        if stopped.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + p.tick;
            run_tasks(&mut shard, io, rx);
            shard.core.tick(now);
            if now >= next_report {
                next_report = now + p.report_interval;
                shard.core.report_tick(crate::agent::unix_now());
            }
            if now >= next_snapshot {
                next_snapshot = now + p.snapshot_interval;
                shard.send_snapshot(false);
            }
        }
    }
}

fn run_tasks(shard: &mut Shard, io: &ShardIo, rx: &Receiver<Task>) {
    for task in rx.try_iter() {
        task(shard, io);
    }
}

/// A datagram: exactly one frame (`msgid | msglen | body`), or garbage.
fn on_datagram(shard: &mut Shard, io: &ShardIo, data: &[u8], from: SocketAddr) {
    if data.len() < HEADER_LEN {
        return shard.garbage(from);
    }
    let msgid = i32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let len = i32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    match usize::try_from(len) {
        Ok(len) if len <= MAX_BODY_LEN && HEADER_LEN + len == data.len() => {
            shard.on_frame(io, msgid, &data[HEADER_LEN..], from);
        }
        _ => shard.garbage(from),
    }
}
