//! The blocking UDP client of the lars agent.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lars_core::{HostAddr, MessageId, ModKey, RetCode, frame, proto};
use prost::Message;

use crate::{ApiError, ClientConfig};

/// How many times [`LarsClient::reg_init`] asks for the route (the original's 3).
pub const REG_INIT_ATTEMPTS: u32 = 3;
/// How long [`LarsClient::reg_init`] waits between attempts (the original's 50 ms).
pub const REG_INIT_WAIT: Duration = Duration::from_millis(50);

/// Largest datagram the agent can send (one frame: 8 + 65527 bytes).
const MAX_DATAGRAM: usize = 65_535;

/// How a call to a host went, as reported to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded (wire retcode 0).
    Success,
    /// The call failed (wire retcode 1, as the original tools send).
    Failure,
}

impl Outcome {
    /// The ReportRequest retcode: 0 for success, 1 for failure.
    pub const fn retcode(self) -> i32 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
        }
    }
}

/// The `ReportRequest.timecost` of a call that took `timecost`: whole
/// milliseconds, at least 1 for a known duration (0 on the wire means
/// "unknown", so a sub-millisecond call must not look like one), saturating
/// at `u32::MAX`; `None` is 0.
pub fn timecost_ms(timecost: Option<Duration>) -> u32 {
    timecost.map_or(0, |d| {
        u32::try_from(d.as_millis()).map_or(u32::MAX, |ms| ms.max(1))
    })
}

/// A connection to the local lars agent: one connected UDP socket per agent
/// port; a request for `(modid, cmdid)` goes to port
/// `base_port + (modid + cmdid) % port_count`.
///
/// # Threading
///
/// `LarsClient` is `Send + Sync`. Each agent socket has a lock held from the
/// send of a request until its reply (or timeout), so a thread never reads a
/// reply meant for another one; replies that arrive late (after their
/// request timed out) are discarded by seq. Sharing one client (e.g. in an
/// `Arc`) is therefore correct, but requests to the same agent port then wait
/// for each other. For throughput, give each thread its own client (as the
/// `qps` tool does): a client is three sockets and costs nothing else.
/// [`report`](Self::report) never waits for the lock: it only sends.
#[derive(Debug)]
pub struct LarsClient {
    ports: Vec<AgentPort>,
    seq: AtomicU32,
    timeout: Duration,
}

#[derive(Debug)]
struct AgentPort {
    sock: UdpSocket,
    state: Mutex<PortState>,
}

/// What the request lock protects besides the right to read replies.
#[derive(Debug)]
struct PortState {
    /// The read timeout currently set on the socket (saves a syscall per
    /// request when unchanged).
    read_timeout: Duration,
    buf: Box<[u8]>,
}

impl LarsClient {
    /// Opens one UDP socket per agent port of `config` (connecting a UDP
    /// socket sends nothing, so this succeeds even if no agent runs).
    pub fn connect(config: &ClientConfig) -> io::Result<Self> {
        let ports = config
            .agent_addrs()
            .into_iter()
            .map(|addr| {
                let sock = UdpSocket::bind("0.0.0.0:0")?;
                sock.connect(addr)?;
                sock.set_read_timeout(Some(config.timeout()))?;
                Ok(AgentPort {
                    sock,
                    state: Mutex::new(PortState {
                        read_timeout: config.timeout(),
                        buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
                    }),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            ports,
            seq: AtomicU32::new(0),
            timeout: config.timeout(),
        })
    }

    /// The receive timeout of every request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks the agent for one host of `(modid, cmdid)`.
    ///
    /// Errors: [`ApiError::Overload`], [`ApiError::NoExist`] (first request of
    /// a key: the agent starts pulling it; see [`reg_init`](Self::reg_init)),
    /// [`ApiError::System`], [`ApiError::Timeout`], [`ApiError::Io`].
    pub fn get_host(&self, modid: u32, cmdid: u32) -> Result<SocketAddrV4, ApiError> {
        let (m, c) = ModKey::new(modid, cmdid).to_wire();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let req = encode(
            MessageId::GetHostRequest,
            &proto::GetHostRequest {
                seq,
                modid: m,
                cmdid: c,
            },
        )?;
        let rsp: proto::GetHostResponse = self.request(
            modid,
            cmdid,
            &req,
            MessageId::GetHostResponse,
            |r: &proto::GetHostResponse| r.seq == seq && r.modid == m && r.cmdid == c,
        )?;
        match RetCode::from_i32(rsp.retcode) {
            Some(RetCode::Succ) => rsp
                .host
                .as_ref()
                .and_then(HostAddr::from_proto)
                .map(SocketAddrV4::from)
                .ok_or(ApiError::System),
            Some(RetCode::Overload) => Err(ApiError::Overload),
            Some(RetCode::NoExist) => Err(ApiError::NoExist),
            Some(_) => Err(ApiError::System),
            None => {
                tracing::warn!(retcode = rsp.retcode, "unknown retcode from the agent");
                Err(ApiError::System)
            }
        }
    }

    /// Asks the agent for every host of `(modid, cmdid)`. An empty list is a
    /// valid answer (the agent does not know the key yet and starts pulling
    /// it). The reply carries no seq: it is matched by `(modid, cmdid)`.
    pub fn get_route(&self, modid: u32, cmdid: u32) -> Result<Vec<SocketAddrV4>, ApiError> {
        let (m, c) = ModKey::new(modid, cmdid).to_wire();
        let req = encode(
            MessageId::ApiGetRouteRequest,
            &proto::GetRouteRequest { modid: m, cmdid: c },
        )?;
        let rsp: proto::GetRouteResponse = self.request(
            modid,
            cmdid,
            &req,
            MessageId::ApiGetRouteResponse,
            |r: &proto::GetRouteResponse| r.modid == m && r.cmdid == c,
        )?;
        Ok(rsp
            .host
            .iter()
            .filter_map(HostAddr::from_proto)
            .map(SocketAddrV4::from)
            .collect())
    }

    /// Registers interest in `(modid, cmdid)` before first use, like the
    /// original: asks for the route up to [`REG_INIT_ATTEMPTS`] times,
    /// waiting [`REG_INIT_WAIT`] after each empty answer or timeout, and
    /// returns the hosts, or [`ApiError::NoExist`] if the route stays empty.
    /// Socket errors return at once.
    pub fn reg_init(&self, modid: u32, cmdid: u32) -> Result<Vec<SocketAddrV4>, ApiError> {
        let mut last = ApiError::NoExist;
        for attempt in 1..=REG_INIT_ATTEMPTS {
            match self.get_route(modid, cmdid) {
                Ok(hosts) if !hosts.is_empty() => return Ok(hosts),
                Ok(_) => last = ApiError::NoExist,
                Err(ApiError::Timeout) => last = ApiError::Timeout,
                Err(e) => return Err(e),
            }
            if attempt < REG_INIT_ATTEMPTS {
                std::thread::sleep(REG_INIT_WAIT);
            }
        }
        Err(last)
    }

    /// Tells the agent how a call to `host` went. Nothing is awaited (the
    /// agent never replies).
    ///
    /// `timecost` is how long the call took, for successes as well as
    /// failures: the agent's `adaptive` policy prefers faster hosts and
    /// weighs slow failures more. It travels in whole milliseconds (see
    /// [`timecost_ms`]): a known latency under 1 ms is sent as 1 ms, because
    /// 0 on the wire means "unknown"; `None` sends 0, like the original
    /// clients, and the report is then neutral for the latency estimate.
    pub fn report(
        &self,
        modid: u32,
        cmdid: u32,
        host: SocketAddrV4,
        outcome: Outcome,
        timecost: Option<Duration>,
    ) -> Result<(), ApiError> {
        let (m, c) = ModKey::new(modid, cmdid).to_wire();
        let timecost = timecost_ms(timecost);
        let req = encode(
            MessageId::ReportRequest,
            &proto::ReportRequest {
                modid: m,
                cmdid: c,
                host: Some(HostAddr::from(host).to_proto()),
                retcode: outcome.retcode(),
                timecost,
            },
        )?;
        send(&self.port(modid, cmdid).sock, &req)
    }

    fn port(&self, modid: u32, cmdid: u32) -> &AgentPort {
        let i = (u64::from(modid) + u64::from(cmdid)) % self.ports.len() as u64;
        // `ports` has port_count >= 1 entries (ClientConfig checks it) and i < len.
        &self.ports[i as usize]
    }

    /// Sends `req` and waits until a reply of type `msgid` that `accept`s
    /// arrives, discarding anything else, until the timeout.
    fn request<M: Message + Default>(
        &self,
        modid: u32,
        cmdid: u32,
        req: &[u8],
        msgid: MessageId,
        accept: impl Fn(&M) -> bool,
    ) -> Result<M, ApiError> {
        let port = self.port(modid, cmdid);
        let mut state = lock(&port.state);
        let deadline = Instant::now() + self.timeout;
        if state.read_timeout != self.timeout {
            port.sock.set_read_timeout(Some(self.timeout))?;
            state.read_timeout = self.timeout;
        }
        send(&port.sock, req)?;
        let PortState { read_timeout, buf } = &mut *state;
        loop {
            let n = match port.sock.recv(buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ApiError::Timeout);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(ApiError::Io(e)),
            };
            if n > 0 {
                match decode::<M>(&buf[..n], msgid) {
                    Some(m) if accept(&m) => return Ok(m),
                    Some(_) => tracing::debug!(?msgid, "discarding a stale reply"),
                    None => tracing::debug!(len = n, "discarding an unexpected datagram"),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::Timeout);
            }
            port.sock.set_read_timeout(Some(left))?;
            *read_timeout = left;
        }
    }
}

fn lock(m: &Mutex<PortState>) -> MutexGuard<'_, PortState> {
    // The state stays consistent even if a holder panicked (it only caches
    // the socket's timeout, which is re-set when it differs).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn encode<M: Message>(msgid: MessageId, msg: &M) -> Result<Bytes, ApiError> {
    // Only bodies over 64 KiB fail to encode; API requests are a few bytes.
    frame::to_bytes(msgid.into(), msg).map_err(|_| ApiError::System)
}

fn decode<M: Message + Default>(datagram: &[u8], msgid: MessageId) -> Option<M> {
    let f = frame::decode_datagram(datagram).ok()?;
    if f.msgid != i32::from(msgid) {
        return None;
    }
    f.message().ok()
}

/// Sends one datagram. A connected UDP socket reports an earlier ICMP "port
/// unreachable" on its next call; that stale error is retried once so it does
/// not fail an unrelated later request.
fn send(sock: &UdpSocket, datagram: &[u8]) -> Result<(), ApiError> {
    match sock.send(datagram) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => sock.send(datagram),
        r => r,
    }?;
    Ok(())
}
