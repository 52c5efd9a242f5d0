//! A framed TCP connection as handlers see it, the message router, counters.

use std::any::Any;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use lars_core::frame::{self, Frame, FrameError};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use prost::Message;

use crate::stats::NetStats;
use crate::tls::TlsRefusal;

/// Output a connection may have queued (peer not reading) before it is
/// closed as a slow consumer.
pub(crate) const MAX_PENDING_WRITE: usize = 64 * 1024 * 1024;

/// A connection's identity: unique for the life of the process, never reused
/// (unlike a file descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Handles one message id: gets the connection (to reply, or to read and keep
/// per-connection state) and the frame.
pub(crate) type Handler = Arc<dyn Fn(&mut Conn, Frame) + Send + Sync>;

/// A connection hook (on connect, on close).
pub(crate) type ConnHook = Arc<dyn Fn(&mut Conn) + Send + Sync>;

/// Maps message ids to handlers. Frames with an unknown id are logged,
/// counted and skipped.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<i32, Handler>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.routes.keys().collect();
        ids.sort();
        f.debug_struct("Router").field("msgids", &ids).finish()
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `msgid` to `handler` (replacing any previous one).
    pub fn route(
        mut self,
        msgid: impl Into<i32>,
        handler: impl Fn(&mut Conn, Frame) + Send + Sync + 'static,
    ) -> Self {
        self.routes.insert(msgid.into(), Arc::new(handler));
        self
    }

    /// The handler for `msgid`.
    pub(crate) fn get(&self, msgid: i32) -> Option<&Handler> {
        self.routes.get(&msgid)
    }
}

/// One framed TCP connection, owned by its event loop. Handlers get `&mut
/// Conn`: sends are appended to its write buffer and flushed when the handler
/// returns (directly; WRITABLE interest is registered only while a write is
/// pending).
pub struct Conn {
    id: ConnId,
    pub(crate) stream: TcpStream,
    peer: SocketAddr,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    pub(crate) write_interest: bool,
    pub(crate) closing: bool,
    data: Option<Box<dyn Any + Send>>,
    worker: usize,
    pub(crate) stats: Arc<NetStats>,
    /// When the connection was accepted (or established).
    pub(crate) opened_at: Instant,
    /// Whether a whole frame has arrived on it yet.
    pub(crate) framed: bool,
    /// Since when an incomplete frame has been waiting in `rbuf` (or, on
    /// a TLS connection, since when its handshake has been going on).
    pub(crate) partial_since: Option<Instant>,
    /// The TLS session, on a TLS connection: the socket carries its
    /// records, `rbuf` and `wbuf` hold plaintext.
    pub(crate) tls: Option<Box<rustls::Connection>>,
    /// Why the TLS handshake failed, once it has (the error text too).
    pub(crate) tls_failure: Option<(TlsRefusal, String)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("pending_write", &self.wbuf.len())
            .finish()
    }
}

/// What reading did to a connection.
pub(crate) enum ReadOutcome {
    /// Still open.
    Open,
    /// Peer closed or the socket failed.
    Closed,
}

impl Conn {
    pub(crate) fn new(
        id: ConnId,
        stream: TcpStream,
        peer: SocketAddr,
        worker: usize,
        stats: Arc<NetStats>,
    ) -> Self {
        Self {
            id,
            stream,
            peer,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
            write_interest: false,
            closing: false,
            data: None,
            worker,
            stats,
            opened_at: Instant::now(),
            framed: false,
            partial_since: None,
            tls: None,
            tls_failure: None,
        }
    }

    /// Whether this connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether its TLS handshake is still going on (false on a plain
    /// connection).
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// The peer's certificate chain (DER, leaf first), on a TLS
    /// connection whose peer sent one.
    pub fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
        let certs = self.tls.as_ref()?.peer_certificates()?;
        Some(certs.iter().map(|c| c.as_ref().to_vec()).collect())
    }

    /// Whether a flush has anything to do (plaintext queued, TLS records
    /// to send, or WRITABLE interest to drop).
    pub(crate) fn wants_flush(&self) -> bool {
        self.write_interest
            || !self.wbuf.is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Index of the worker loop that owns this connection (0 for a client).
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Sends `msg` as one frame. Fails only if the body is too large.
    pub fn send<M: Message>(&mut self, msgid: impl Into<i32>, msg: &M) -> Result<(), FrameError> {
        frame::encode(msgid.into(), msg, &mut self.wbuf)?;
        NetStats::inc(&self.stats.frames_out);
        Ok(())
    }

    /// Sends an already encoded body as one frame.
    pub fn send_raw(&mut self, msgid: impl Into<i32>, body: &[u8]) -> Result<(), FrameError> {
        frame::encode_raw(msgid.into(), body, &mut self.wbuf)?;
        NetStats::inc(&self.stats.frames_out);
        Ok(())
    }

    /// Sends bytes that already hold one or more whole frames (header
    /// included), e.g. a frame encoded once and pushed to many connections.
    pub fn send_frames(&mut self, frames: &[u8]) {
        self.wbuf.extend_from_slice(frames);
        NetStats::inc(&self.stats.frames_out);
    }

    /// Closes the connection after the current handler (pending output is
    /// written first if the socket takes it at once).
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Stores typed per-connection state, replacing any previous value.
    pub fn set_data<T: Any + Send>(&mut self, value: T) {
        self.data = Some(Box::new(value));
    }

    /// The per-connection state, if it is a `T`.
    pub fn data<T: Any>(&self) -> Option<&T> {
        self.data.as_ref()?.downcast_ref()
    }

    /// The per-connection state, mutably, if it is a `T`.
    pub fn data_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.data.as_mut()?.downcast_mut()
    }

    /// Reads what the socket has into the read buffer (until a short read or
    /// WouldBlock; see `read_all` for why a short read is enough).
    pub(crate) fn read_in(&mut self, scratch: &mut [u8], read_closed: bool) -> ReadOutcome {
        if self.tls.is_some() {
            return self.read_tls_in(scratch);
        }
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    self.rbuf.extend_from_slice(&scratch[..n]);
                    // Edge-triggered epoll raises a new event for any data
                    // (or FIN) arriving after this read, so a short read means
                    // the socket is drained: skip the extra WouldBlock read,
                    // unless the event already reported the peer's FIN.
                    if n < scratch.len() && !read_closed {
                        return ReadOutcome::Open;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("{}: read error: {e}", self.id);
                    return ReadOutcome::Closed;
                }
            }
        }
    }

    /// A TLS connection's read: socket bytes into rustls, records
    /// processed, plaintext into `rbuf`, until the socket would block.
    /// A failed handshake is noted in `tls_failure` (the alert is sent).
    fn read_tls_in(&mut self, scratch: &mut [u8]) -> ReadOutcome {
        let Self {
            tls,
            stream,
            rbuf,
            stats,
            id,
            tls_failure,
            framed,
            ..
        } = self;
        let Some(tls) = tls.as_deref_mut() else {
            return ReadOutcome::Closed;
        };
        loop {
            let n = match stream.read(scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("{id}: read error: {e}");
                    return ReadOutcome::Closed;
                }
            };
            let mut input = &scratch[..n];
            loop {
                if !input.is_empty() {
                    if let Err(e) = tls.read_tls(&mut input) {
                        tracing::debug!("{id}: tls read: {e}");
                        return ReadOutcome::Closed;
                    }
                }
                let was_handshaking = tls.is_handshaking();
                if let Err(e) = tls.process_new_packets() {
                    // A TLS 1.3 client ends its handshake before the server
                    // has checked its certificate: the server's refusal
                    // arrives after, before any frame.
                    if was_handshaking || !*framed {
                        *tls_failure = Some((TlsRefusal::of(&e), e.to_string()));
                    } else {
                        tracing::debug!("{id}: tls error: {e}");
                    }
                    // Best effort: the alert telling the peer why.
                    let _ = tls.write_tls(stream);
                    return ReadOutcome::Closed;
                }
                if was_handshaking && !tls.is_handshaking() {
                    NetStats::inc(&stats.tls_handshakes);
                }
                match drain_plaintext(tls, rbuf) {
                    Ok(false) => {}
                    Ok(true) => return ReadOutcome::Closed,
                    Err(e) => {
                        tracing::debug!("{id}: tls plaintext: {e}");
                        return ReadOutcome::Closed;
                    }
                }
                if input.is_empty() {
                    break;
                }
            }
            if n == 0 {
                return ReadOutcome::Closed;
            }
        }
    }

    /// Writes what it can of the write buffer and sets WRITABLE interest iff
    /// something is left. Returns false if the socket failed.
    pub(crate) fn flush(&mut self, registry: &Registry, token: Token) -> bool {
        let pending = match self.tls.as_deref_mut() {
            None => {
                while !self.wbuf.is_empty() {
                    match self.stream.write(&self.wbuf) {
                        Ok(0) => return false,
                        Ok(n) => self.wbuf.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::debug!("{}: write error: {e}", self.id);
                            return false;
                        }
                    }
                }
                !self.wbuf.is_empty()
            }
            Some(tls) => {
                loop {
                    if !self.wbuf.is_empty() {
                        match tls.writer().write(&self.wbuf) {
                            Ok(n) => self.wbuf.advance(n),
                            Err(e) => {
                                tracing::debug!("{}: tls write: {e}", self.id);
                                return false;
                            }
                        }
                    }
                    if !tls.wants_write() {
                        break;
                    }
                    match tls.write_tls(&mut self.stream) {
                        Ok(0) => return false,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::debug!("{}: write error: {e}", self.id);
                            return false;
                        }
                    }
                }
                // Plaintext rustls holds back until the handshake ends is
                // sent by the flush after the handshake's last read.
                tls.wants_write() || (!self.wbuf.is_empty() && !tls.is_handshaking())
            }
        };
        if self.wbuf.len() > MAX_PENDING_WRITE {
            tracing::warn!(
                "{} to {}: {} bytes pending, peer does not read; closing",
                self.id,
                self.peer,
                self.wbuf.len()
            );
            return false;
        }
        let want = pending;
        if want != self.write_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = registry.reregister(&mut self.stream, token, interest) {
                tracing::warn!("{}: reregister failed: {e}", self.id);
                return false;
            }
            self.write_interest = want;
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 1 << 20 {
            // Give back memory after a burst.
            self.wbuf = BytesMut::with_capacity(8 * 1024);
        }
        true
    }
}

/// Moves the plaintext rustls has decrypted into `rbuf`. Returns true when
/// the peer closed the session (close_notify).
fn drain_plaintext(tls: &mut rustls::Connection, rbuf: &mut BytesMut) -> io::Result<bool> {
    const CHUNK: usize = 16 * 1024;
    loop {
        let len = rbuf.len();
        rbuf.resize(len + CHUNK, 0);
        let r = tls.reader().read(&mut rbuf[len..]);
        match r {
            Ok(0) => {
                rbuf.truncate(len);
                return Ok(true);
            }
            Ok(n) => rbuf.truncate(len + n),
            Err(e) => {
                rbuf.truncate(len);
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(false),
                    _ => Err(e),
                };
            }
        }
    }
}

/// Decodes every complete frame in `conn`'s read buffer and dispatches it.
/// Returns false if the connection must close (bad length, or a handler
/// called [`Conn::close`]).
pub(crate) fn dispatch(conn: &mut Conn, router: &Router) -> bool {
    loop {
        match frame::decode(&mut conn.rbuf) {
            Ok(Some(f)) => {
                NetStats::inc(&conn.stats.frames_in);
                conn.framed = true;
                conn.partial_since = None;
                match router.get(f.msgid) {
                    Some(h) => h(conn, f),
                    None => {
                        NetStats::inc(&conn.stats.unknown_msgids);
                        tracing::warn!(
                            "{} from {}: unknown msgid {} skipped",
                            conn.id,
                            conn.peer,
                            f.msgid
                        );
                    }
                }
                if conn.closing {
                    return false;
                }
            }
            Ok(None) => {
                if conn.rbuf.is_empty() && !conn.handshaking() {
                    conn.partial_since = None;
                } else if conn.partial_since.is_none() {
                    conn.partial_since = Some(Instant::now());
                }
                return true;
            }
            Err(e) => {
                NetStats::inc(&conn.stats.bad_frames);
                tracing::warn!("{} from {}: {e}; closing", conn.id, conn.peer);
                return false;
            }
        }
    }
}
