//! Requests per second against the agent, like the original `qps` tool, and a
//! raw UDP request/response reference measured the same way (`lars qps`).
//!
//! [`run`]: thread `i` owns a [`LarsClient`], uses key `(i + 1, 1)`, calls
//! `reg_init` once, then loops `get_host` and, on success, `report` success.
//! Answers `Ok`, `Overload` and `NoExist` count as answered (the original
//! counts them as legal returns); `Overload` and `NoExist` are also counted
//! apart as `no_host`, so a key without a route shows; `System`, `Timeout`
//! and `Io` count as errors.
//!
//! [`run_udp_reference`]: the same threads and port mapping against an
//! in-process server of one thread per port that answers every datagram with
//! a pre-encoded `GetHostResponse` of the same size; clients send pre-encoded
//! requests and decode nothing. It is the floor any agent is measured against.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lars_client::{ApiError, ClientConfig, LarsClient, Outcome};
use lars_core::{HostAddr, MessageId, frame, proto};

/// One elapsed second of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Second {
    /// 1 for the first second.
    pub index: u64,
    /// Answered requests of each thread during this second.
    pub per_thread: Vec<u64>,
    /// Answered requests of all threads during this second.
    pub total: u64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct QpsSummary {
    /// Threads that sent requests.
    pub threads: usize,
    /// Total answered requests per full second.
    pub per_second: Vec<u64>,
    /// Answered requests over the whole run.
    pub answered: u64,
    /// Failed requests (timeouts, system errors, socket errors).
    pub errors: u64,
    /// Answered requests that got no host (`Overload` or `NoExist`): a key
    /// without a route, or every host overloaded. Included in `answered`.
    pub no_host: u64,
    /// Time from the start of the loops to the stop signal.
    pub elapsed: Duration,
}

impl QpsSummary {
    /// Answered requests per second over the whole run.
    pub fn average(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.answered as f64 / secs
        } else {
            0.0
        }
    }
}

enum Step {
    Answered,
    /// Answered, but without a host.
    NoHost,
    Error,
}

/// Load-tests the agent of `config` with `threads` threads for `duration`
/// (at most [`MAX_DURATION`]), calling `on_second` after every full second.
/// Fails only if a client cannot be opened.
pub fn run(
    config: &ClientConfig,
    threads: usize,
    duration: Duration,
    on_second: impl FnMut(&Second),
) -> Result<QpsSummary, ApiError> {
    let clients = (0..threads)
        .map(|_| LarsClient::connect(config))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(drive(
        clients,
        duration,
        on_second,
        |i, client| {
            let key = thread_key(i);
            if let Err(e) = client.reg_init(key.0, key.1) {
                tracing::info!(modid = key.0, cmdid = key.1, error = %e, "reg_init found no host");
            }
        },
        |i, client| {
            let (modid, cmdid) = thread_key(i);
            match client.get_host(modid, cmdid) {
                Ok(host) => match client.report(modid, cmdid, host, Outcome::Success, None) {
                    Ok(()) => Step::Answered,
                    Err(_) => Step::Error,
                },
                Err(ApiError::Overload | ApiError::NoExist) => Step::NoHost,
                Err(_) => Step::Error,
            }
        },
    ))
}

/// Measures raw UDP request/response with the same thread count, duration and
/// port mapping as [`run`] against an in-process minimal server (see the
/// module docs). The receive timeout is `config.timeout()`.
pub fn run_udp_reference(
    config: &ClientConfig,
    threads: usize,
    duration: Duration,
    on_second: impl FnMut(&Second),
) -> io::Result<QpsSummary> {
    let servers = (0..config.port_count())
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let addrs = servers
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<io::Result<Vec<SocketAddr>>>()?;
    let reply = reference_reply()?;
    let clients = (0..threads)
        .map(|i| {
            let (modid, cmdid) = thread_key(i);
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            sock.connect(addrs[config.port_index(modid, cmdid)])?;
            sock.set_read_timeout(Some(config.timeout()))?;
            let req = encode(
                MessageId::GetHostRequest,
                &proto::GetHostRequest {
                    seq: REFERENCE_SEQ,
                    modid: modid as i32,
                    cmdid: cmdid as i32,
                },
            )?;
            Ok((sock, req, vec![0u8; 1500]))
        })
        .collect::<io::Result<Vec<_>>>()?;

    let stop_servers = AtomicBool::new(false);
    Ok(std::thread::scope(|s| {
        for server in &servers {
            let (reply, stop) = (&reply, &stop_servers);
            s.spawn(move || serve_reference(server, reply, stop));
        }
        let summary = drive(
            clients,
            duration,
            on_second,
            |_, _| {},
            |_, (sock, req, buf)| match sock.send(req).and_then(|_| sock.recv(buf)) {
                Ok(_) => Step::Answered,
                Err(_) => Step::Error,
            },
        );
        stop_servers.store(true, Ordering::Relaxed);
        summary
    }))
}

/// A seq of the size a busy client's counter reaches (3 varint bytes).
const REFERENCE_SEQ: u32 = 1_000_000;

fn reference_reply() -> io::Result<Vec<u8>> {
    let host = HostAddr::new(0x7f00_0001, 9000);
    encode(
        MessageId::GetHostResponse,
        &proto::GetHostResponse {
            seq: REFERENCE_SEQ,
            modid: 1,
            cmdid: 1,
            retcode: 0,
            host: Some(host.to_proto()),
        },
    )
}

fn serve_reference(sock: &UdpSocket, reply: &[u8], stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(reply, from);
        }
    }
}

fn encode<M: prost::Message>(msgid: MessageId, msg: &M) -> io::Result<Vec<u8>> {
    frame::to_bytes(msgid.into(), msg)
        .map(|b| b.to_vec())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// The key of thread `i`: `(i + 1, 1)`, like the original.
fn thread_key(i: usize) -> (u32, u32) {
    (
        u32::try_from(i).map_or(u32::MAX, |i| i.saturating_add(1)),
        1,
    )
}

/// The longest run measured: a longer `duration` is cut to it (a run that
/// long is never waited for, and `start + duration` must not overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Runs one thread per state: `init` once, then `step` in a loop until
/// `duration` (at most [`MAX_DURATION`]) has passed since every thread
/// finished `init`.
fn drive<S: Send>(
    states: Vec<S>,
    duration: Duration,
    mut on_second: impl FnMut(&Second),
    init: impl Fn(usize, &mut S) + Sync,
    step: impl Fn(usize, &mut S) -> Step + Sync,
) -> QpsSummary {
    let threads = states.len();
    let answered: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let errors = AtomicU64::new(0);
    let no_host = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for (i, mut state) in states.into_iter().enumerate() {
            let (answered, errors, no_host) = (&answered[i], &errors, &no_host);
            let (stop, barrier) = (&stop, &barrier);
            let (init, step) = (&init, &step);
            s.spawn(move || {
                init(i, &mut state);
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    match step(i, &mut state) {
                        Step::Answered => answered.fetch_add(1, Ordering::Relaxed),
                        Step::NoHost => {
                            no_host.fetch_add(1, Ordering::Relaxed);
                            answered.fetch_add(1, Ordering::Relaxed)
                        }
                        Step::Error => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        let end = start + duration.min(MAX_DURATION);
        let snapshot =
            || -> Vec<u64> { answered.iter().map(|a| a.load(Ordering::Relaxed)).collect() };
        let mut prev = vec![0u64; threads];
        let mut per_second = Vec::new();
        for index in 1u64.. {
            let tick = start + Duration::from_secs(index);
            if tick > end {
                break;
            }
            sleep_until(tick);
            let now = snapshot();
            let per_thread: Vec<u64> = now.iter().zip(&prev).map(|(n, p)| n - p).collect();
            let total = per_thread.iter().sum();
            per_second.push(total);
            on_second(&Second {
                index,
                per_thread,
                total,
            });
            prev = now;
        }
        sleep_until(end);
        stop.store(true, Ordering::Relaxed);
        let elapsed = start.elapsed();
        QpsSummary {
            threads,
            per_second,
            answered: snapshot().iter().sum(),
            errors: errors.load(Ordering::Relaxed),
            no_host: no_host.load(Ordering::Relaxed),
            elapsed,
        }
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
