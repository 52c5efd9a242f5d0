//! The reporter load tool (`lars bench reporter`, `examples/bench_reporter.rs`): `conns` TCP connections
//! send `ReportStatusRequest`s of `hosts` host results each, over `keys` keys
//! of a fresh modid, at `rate` reports/s in total (0: as fast as possible) for
//! `duration`; then the tool waits until the store's history totals for that
//! modid equal what was sent, checks every `ServerCallStatus` row against the
//! last counters sent, and reports what was ingested.
//!
//! Each connection is one caller and sends cumulative counters per
//! `(key, host)`, like an agent does.
//!
//! With `tls`, the same load then runs again over the reporter's TLS port
//! (another fresh modid), and the report holds both.
//!
//! With `addr_tls`, `addr` itself is a reporter's TLS port (an external
//! reporter): the load goes over TLS with those files (CA, optional client
//! certificate, optional server name: a client's `[tls]`, loaded by
//! [`lars_net::ClientTls`] as the agent does). The reporter never answers,
//! so before the load one connection waits [`REFUSAL_WAIT`] after its
//! handshake for a refusal (TLS 1.3 sends it right after the handshake):
//! a refused certificate is a [`BenchError::Tls`], not a load of reports
//! written into a closed connection.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lars_core::config::ClientTlsConfig;
use lars_core::proto::{HostCallResult, ReportStatusRequest};
use lars_core::{HostAddr, MessageId, ModKey, frame};
use lars_net::ClientTls;
use lars_store::StatsStore;
use serde::Serialize;

/// What to send, and where to check it arrived.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The reporter's TCP address.
    pub addr: SocketAddr,
    /// `addr` is a TLS port, reached with these files (CA the server
    /// certificate must chain to, optional client certificate and key,
    /// optional server name; default name: the address's IP).
    pub addr_tls: Option<ClientTlsConfig>,
    /// The store the reporter writes to (read back to verify).
    pub store_url: String,
    /// Connections (callers), each on its own thread.
    pub conns: usize,
    /// Keys: cmdid `1..=keys` of [`BenchOptions::modid`].
    pub keys: u32,
    /// Host results per report.
    pub hosts: u32,
    /// Reports per second in total; 0 sends as fast as possible.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// The modid used; `None` picks a fresh one from the clock so earlier
    /// runs never count.
    pub modid: Option<u32>,
    /// How long to wait for the store to hold every count after sending.
    pub verify_timeout: Duration,
    /// The process whose RSS is sampled every second (`None`: this one, which
    /// is the reporter's when it runs in-process).
    pub rss_pid: Option<u32>,
    /// Then run the load again over TLS, to this TLS port.
    pub tls: Option<TlsTarget>,
}

/// The reporter's TLS port and how to connect to it.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// The TLS listener (`[tls] port`).
    pub addr: SocketAddr,
    /// The client's TLS files (CA, client certificate, server name).
    pub files: ClientTlsConfig,
}

/// How long the check before a TLS load waits, after its handshake, for the
/// reporter to refuse our certificate. A TLS 1.3 server checks the client
/// certificate after the client's side of the handshake is done and refuses
/// with an alert within a round trip; a reporter never writes otherwise, so
/// silence for this long means accepted.
pub const REFUSAL_WAIT: Duration = Duration::from_secs(1);

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 7779)),
            addr_tls: None,
            store_url: lars_core::config::DEFAULT_STORE_URL.to_owned(),
            conns: 4,
            keys: 100,
            hosts: 3,
            rate: 0,
            duration: Duration::from_secs(10),
            modid: None,
            verify_timeout: Duration::from_secs(60),
            rss_pid: None,
            tls: None,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    /// The modid used.
    pub modid: u32,
    /// Whether this load went over TLS.
    pub over_tls: bool,
    /// Reports sent.
    pub reports: u64,
    /// Host results sent.
    pub results: u64,
    /// Successful calls sent (sum of the increments).
    pub succ_sent: u64,
    /// Failed calls sent.
    pub err_sent: u64,
    /// Seconds spent sending.
    pub send_secs: f64,
    /// Seconds from the first send until the store held every count (or the
    /// timeout).
    pub persisted_secs: f64,
    /// Successful calls found in the history table.
    pub succ_persisted: u64,
    /// Failed calls found in the history table.
    pub err_persisted: u64,
    /// `ServerCallStatus` rows whose counters equal the last ones sent.
    pub status_rows_ok: u64,
    /// `ServerCallStatus` rows expected (`conns * keys * hosts`).
    pub status_rows_expected: u64,
    /// Whether every count arrived and every status row is right.
    pub complete: bool,
    /// Reports per second sent.
    pub sent_per_sec: f64,
    /// Reports per second ingested and persisted (reports / persisted_secs).
    pub ingested_per_sec: f64,
    /// RSS in KiB sampled about every second while sending.
    pub rss_kib: Vec<u64>,
    /// The same load over TLS (with `tls`), after this one.
    pub tls: Option<Box<BenchReport>>,
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The store could not be opened or read.
    #[error("store")]
    Store(#[from] lars_store::StoreError),
    /// A connection to the reporter failed.
    #[error("connection to the reporter")]
    Io(#[from] std::io::Error),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Invalid(String),
    /// TLS to the reporter could not be set up: a CA, certificate or key
    /// file is unusable (the message names it), or the handshake was refused
    /// (the message says which side refused and why).
    #[error("tls: {0}")]
    Tls(String),
}

/// The most `(key, host)` pairs one connection tracks (`keys * hosts`): what
/// `lars bench reporter` allows (100,000 keys x 1,000 hosts).
const MAX_KEY_HOSTS: u64 = 100_000_000;

struct ConnResult {
    reports: u64,
    results: u64,
    succ: u64,
    err: u64,
    last: Vec<(u32, u32)>,
}

fn unix_now() -> u32 {
    u32::try_from(lars_core::time::unix_now()).unwrap_or(u32::MAX)
}

/// The ip of bench host `h` (127.0.1.x: stored data, never connected to).
fn bench_host(h: u32) -> HostAddr {
    HostAddr::new(0x7f00_0100 + (h % 250) + 1, 10_000 + (h / 250) as u16)
}

/// RSS of `pid` (or this process) in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the load and the verification (over TLS with `addr_tls`; then again
/// over TLS, with `tls`).
pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    validate(opts)?;
    let mut report = match &opts.addr_tls {
        Some(files) => {
            let client = tls_client(files, opts.addr)?;
            run_one(opts, opts.addr, Some(&client), opts.modid)?
        }
        None => run_one(opts, opts.addr, None, opts.modid)?,
    };
    if let Some(t) = &opts.tls {
        let modid = report.modid.wrapping_add(1);
        let client = tls_client(&t.files, t.addr)?;
        let tls = run_one(opts, t.addr, Some(&client), Some(modid))?;
        report.tls = Some(Box::new(tls));
    }
    Ok(report)
}

/// Loads the TLS files and checks, on one connection, that the reporter at
/// `addr` completes a handshake and does not refuse us within
/// [`REFUSAL_WAIT`].
fn tls_client(files: &ClientTlsConfig, addr: SocketAddr) -> Result<ClientTls, BenchError> {
    let client = crate::dns::load_client_tls(files).map_err(BenchError::Tls)?;
    let explain = |e: io::Error| match crate::dns::explain_tls(&e, &client, addr, "reporter") {
        Some(m) => BenchError::Tls(m),
        None => BenchError::Io(e),
    };
    let mut s = crate::dns::connect_stream(addr, Some(&client), REFUSAL_WAIT).map_err(explain)?;
    let closed = || {
        BenchError::Tls(format!(
            "the reporter at {addr} closed the connection right after the TLS handshake"
        ))
    };
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        // A reporter never writes: data is odd but no refusal.
        Ok(n) if n > 0 => Ok(client),
        Ok(_) => Err(closed()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(client)
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(closed()),
        Err(e) => Err(explain(e)),
    }
}

fn validate(opts: &BenchOptions) -> Result<(), BenchError> {
    if opts.conns == 0 || opts.keys == 0 || opts.hosts == 0 {
        return Err(BenchError::Invalid(
            "conns, keys and hosts must be at least 1".into(),
        ));
    }
    if opts.hosts > 2000 {
        return Err(BenchError::Invalid("at most 2000 hosts per report".into()));
    }
    if u64::from(opts.keys) * u64::from(opts.hosts) > MAX_KEY_HOSTS {
        return Err(BenchError::Invalid(format!(
            "keys x hosts must be at most {MAX_KEY_HOSTS}"
        )));
    }
    Ok(())
}

fn run_one(
    opts: &BenchOptions,
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    modid: Option<u32>,
) -> Result<BenchReport, BenchError> {
    let explain = |e: BenchError| match (e, tls) {
        (BenchError::Io(io), Some(c)) => match crate::dns::explain_tls(&io, c, addr, "reporter") {
            Some(m) => BenchError::Tls(m),
            None => BenchError::Io(io),
        },
        (e, _) => e,
    };
    let store = lars_store::open(&opts.store_url)?;
    let modid = modid.unwrap_or(0x2000_0000 | (unix_now() & 0x0fff_ffff));
    let since = i64::from(unix_now()) - 120;
    let stop = Arc::new(AtomicBool::new(false));
    let per_conn_rate = if opts.rate == 0 {
        0.0
    } else {
        opts.rate as f64 / opts.conns as f64
    };
    let start = Instant::now();
    let mut joins = Vec::with_capacity(opts.conns);
    for c in 0..opts.conns {
        let stream = crate::dns::connect_stream(addr, tls, Duration::from_secs(5))
            .map_err(|e| explain(e.into()))?;
        let stop = Arc::clone(&stop);
        let (keys, hosts) = (opts.keys, opts.hosts);
        let caller = c as u32 + 1;
        joins.push(thread::spawn(move || {
            send_loop(
                stream,
                modid,
                keys,
                hosts,
                caller,
                per_conn_rate,
                start,
                &stop,
            )
        }));
    }
    let mut rss = Vec::new();
    while start.elapsed() < opts.duration {
        if let Some(r) = rss_kib(opts.rss_pid) {
            rss.push(r);
        }
        thread::sleep(Duration::from_secs(1).min(opts.duration.saturating_sub(start.elapsed())));
    }
    stop.store(true, Ordering::Relaxed);
    let mut conns = Vec::with_capacity(joins.len());
    for j in joins {
        match j.join() {
            Ok(r) => conns.push(r.map_err(explain)?),
            Err(_) => return Err(BenchError::Invalid("a sender thread panicked".into())),
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    if let Some(r) = rss_kib(opts.rss_pid) {
        rss.push(r);
    }

    let mut report = BenchReport {
        modid,
        over_tls: tls.is_some(),
        send_secs,
        rss_kib: rss,
        status_rows_expected: opts.conns as u64 * u64::from(opts.keys) * u64::from(opts.hosts),
        ..BenchReport::default()
    };
    for c in &conns {
        report.reports += c.reports;
        report.results += c.results;
        report.succ_sent += c.succ;
        report.err_sent += c.err;
    }
    // Status rows (the last counters each caller sent for each host) are
    // written after the history chunks of the same flush: wait for both.
    let deadline = Instant::now() + opts.verify_timeout;
    loop {
        let (s, e) = history_totals(&store, modid, since)?;
        report.succ_persisted = s;
        report.err_persisted = e;
        report.persisted_secs = start.elapsed().as_secs_f64();
        report.status_rows_ok = status_rows_ok(&store, modid, opts, &conns)?;
        let done = (s, e) == (report.succ_sent, report.err_sent)
            && report.status_rows_ok == report.status_rows_expected;
        if done || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    report.complete = report.succ_persisted == report.succ_sent
        && report.err_persisted == report.err_sent
        && report.status_rows_ok == report.status_rows_expected;
    report.sent_per_sec = report.reports as f64 / send_secs.max(1e-9);
    report.ingested_per_sec = report.reports as f64 / report.persisted_secs.max(1e-9);
    Ok(report)
}

/// How many `ServerCallStatus` rows of the bench keys hold the last counters
/// their caller sent.
fn status_rows_ok(
    store: &lars_store::Store,
    modid: u32,
    opts: &BenchOptions,
    conns: &[ConnResult],
) -> Result<u64, BenchError> {
    let mut ok = 0;
    for k in 1..=opts.keys {
        for row in store.call_status(Some(ModKey::new(modid, k)))? {
            let Some(conn) = (row.caller as usize)
                .checked_sub(1)
                .and_then(|i| conns.get(i))
            else {
                continue;
            };
            let Some(h) = (0..opts.hosts).find(|&h| bench_host(h) == row.host) else {
                continue;
            };
            let idx = ((k - 1) * opts.hosts + h) as usize;
            if conn
                .last
                .get(idx)
                .map(|&(s, e)| (u64::from(s), u64::from(e)))
                == Some((row.succ_cnt, row.err_cnt))
            {
                ok += 1;
            }
        }
    }
    Ok(ok)
}

fn history_totals(
    store: &lars_store::Store,
    modid: u32,
    since: i64,
) -> Result<(u64, u64), BenchError> {
    Ok(store
        .history(None, since)?
        .iter()
        .filter(|r| r.key.modid == modid)
        .fold((0, 0), |(s, e), r| (s + r.succ, e + r.err)))
}

#[allow(clippy::too_many_arguments)]
fn send_loop(
    mut stream: Box<dyn crate::dns::Stream>,
    modid: u32,
    keys: u32,
    hosts: u32,
    caller: u32,
    rate: f64,
    start: Instant,
    stop: &AtomicBool,
) -> Result<ConnResult, BenchError> {
    let mut out = ConnResult {
        reports: 0,
        results: 0,
        succ: 0,
        err: 0,
        last: vec![(0, 0); (keys * hosts) as usize],
    };
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut req = ReportStatusRequest {
        modid: modid as i32,
        cmdid: 0,
        caller: caller as i32,
        results: Vec::with_capacity(hosts as usize),
        ts: 0,
    };
    let mut key = caller % keys;
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = if rate > 0.0 {
            let target = (start.elapsed().as_secs_f64() * rate) as u64;
            if target <= out.reports {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            (target - out.reports).min(1024)
        } else {
            256
        };
        let ts = unix_now();
        buf.clear();
        for _ in 0..due {
            req.cmdid = (key + 1) as i32;
            req.ts = ts;
            req.results.clear();
            for h in 0..hosts {
                seq += 1;
                let idx = (key * hosts + h) as usize;
                let (ds, de) = (1 + (seq % 3) as u32, u32::from(seq % 5 == 0));
                let Some(c) = out.last.get_mut(idx) else {
                    continue;
                };
                c.0 += ds;
                c.1 += de;
                out.succ += u64::from(ds);
                out.err += u64::from(de);
                let (ip, port) = bench_host(h).to_wire();
                req.results.push(HostCallResult {
                    ip,
                    port,
                    succ: c.0,
                    err: c.1,
                    overload: false,
                });
            }
            out.results += u64::from(hosts);
            out.reports += 1;
            frame::encode(MessageId::ReportStatusRequest.into(), &req, &mut buf)
                .map_err(|e| BenchError::Invalid(e.to_string()))?;
            key = (key + 1) % keys;
        }
        stream.write_all(&buf)?;
    }
    stream.flush()?;
    Ok(out)
}
