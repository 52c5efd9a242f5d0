//! The dns load tool: `conns` client connections each keep `window`
//! `GetRouteRequest`s in flight for `duration`; the same run then measures a
//! raw-socket reference (a minimal blocking std server, one thread per
//! connection, answering every request with the very same response bytes)
//! and reports both rates and their ratio.
//!
//! With `tls`, the in-process dns also gets a TLS listener (mutual TLS, a
//! throwaway CA: [`BenchTls`]) and the same load runs over it, right after
//! the plain one.
//!
//! With `dns` and `dns_tls`, that external address is a dns's TLS port: the
//! load goes over TLS, the server's certificate checked against the given CA
//! file and the client certificate presented when given (the files of a
//! client's `[tls]`, loaded by [`lars_net::ClientTls`] as the agent does).
//! The first request tells a refused handshake (our certificate refused, the
//! server's not verifying) apart as [`BenchError::Tls`] before the load
//! starts. The raw reference stays plain.
//!
//! Used by `lars bench dns` and `examples/bench_dns.rs`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lars_core::config::{Allowlist, ClientAuth, ClientTlsConfig, TlsListenerConfig};
use lars_core::frame::HEADER_LEN;
use lars_core::proto::GetRouteRequest;
use lars_core::{MessageId, ModKey, frame};
use lars_dns::DnsConfig;
use lars_dns::{Dns, DnsError};
use lars_net::ClientTls;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Client connections (one client thread each).
    pub conns: usize,
    /// Requests in flight per connection (1 = ping-pong).
    pub window: usize,
    /// How long each of the two measurements runs.
    pub duration: Duration,
    /// The key asked for.
    pub key: ModKey,
    /// An external dns to measure; `None` starts one in-process over a
    /// temporary SQLite store holding the demo routes.
    pub dns: Option<SocketAddr>,
    /// With `dns`: that address is the dns's TLS port, reached with these
    /// files (CA the server certificate must chain to, optional client
    /// certificate and key, optional server name; default name: the
    /// address's IP).
    pub dns_tls: Option<ClientTlsConfig>,
    /// Worker loops of the in-process dns (`threadNum`).
    pub threads: usize,
    /// Also measure the in-process dns over TLS (mutual TLS).
    pub tls: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            conns: 1,
            window: 1,
            duration: Duration::from_secs(5),
            key: ModKey::new(1, 1),
            dns: None,
            dns_tls: None,
            threads: 2,
            tls: false,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Replies received.
    pub replies: u64,
    /// Seconds measured.
    pub secs: f64,
}

impl Measurement {
    /// Replies per second.
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.replies as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// The result of [`run`].
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The options measured.
    pub options: BenchOptions,
    /// Bytes of one reply frame.
    pub reply_bytes: usize,
    /// The dns.
    pub dns: Measurement,
    /// The dns over TLS (with `tls`), same run.
    pub tls: Option<Measurement>,
    /// The raw-socket reference, same run, same reply bytes.
    pub raw: Measurement,
}

impl BenchReport {
    /// `tls / dns` (plain), with `tls`.
    pub fn tls_ratio(&self) -> Option<f64> {
        let plain = self.dns.per_sec();
        self.tls.map(|t| {
            if plain > 0.0 {
                t.per_sec() / plain
            } else {
                0.0
            }
        })
    }

    /// `dns / raw`.
    pub fn ratio(&self) -> f64 {
        let raw = self.raw.per_sec();
        if raw > 0.0 {
            self.dns.per_sec() / raw
        } else {
            0.0
        }
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "conns={} window={} duration={:?} key={} reply={} bytes",
            o.conns, o.window, o.duration, o.key, self.reply_bytes
        )?;
        let over = match o.dns_tls {
            Some(_) => ", over TLS",
            None => "",
        };
        writeln!(
            f,
            "dns: {:>12.0} replies/s ({} replies in {:.2} s{over})",
            self.dns.per_sec(),
            self.dns.replies,
            self.dns.secs
        )?;
        if let Some(t) = &self.tls {
            writeln!(
                f,
                "tls: {:>12.0} replies/s ({} replies in {:.2} s, mutual TLS)",
                t.per_sec(),
                t.replies,
                t.secs
            )?;
        }
        writeln!(
            f,
            "raw: {:>12.0} replies/s ({} replies in {:.2} s)",
            self.raw.per_sec(),
            self.raw.replies,
            self.raw.secs
        )?;
        if let Some(r) = self.tls_ratio() {
            writeln!(f, "ratio tls/dns: {r:.3}")?;
        }
        write!(f, "ratio dns/raw: {:.3}", self.ratio())
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A socket operation failed.
    #[error("i/o error")]
    Io(#[from] io::Error),
    /// The in-process dns could not start.
    #[error("cannot start the dns")]
    Dns(#[from] DnsError),
    /// The temporary store could not be prepared.
    #[error("cannot prepare the store")]
    Store(#[from] lars_store::StoreError),
    /// The options cannot be measured.
    #[error("invalid options: {0}")]
    Invalid(String),
    /// TLS to the dns could not be set up: a CA, certificate or key file is
    /// unusable (the message names it), or the handshake was refused (the
    /// message says which side refused and why).
    #[error("tls: {0}")]
    Tls(String),
}

/// Measures the dns, then the raw reference, with the same options.
pub fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    if options.conns == 0 || options.window == 0 || options.duration.is_zero() {
        return Err(BenchError::Invalid(
            "conns, window and duration must be positive".into(),
        ));
    }
    let request = request_frame(options.key)?;
    let (dns, tls, reply) = match options.dns {
        Some(_) if options.tls => {
            return Err(BenchError::Invalid(
                "tls measures the in-process dns only (it makes its own certificates)".into(),
            ));
        }
        None if options.dns_tls.is_some() => {
            return Err(BenchError::Invalid(
                "dns_tls needs dns (the address of the dns's TLS port)".into(),
            ));
        }
        Some(addr) => {
            let client = match &options.dns_tls {
                Some(files) => Some(load_client_tls(files).map_err(BenchError::Tls)?),
                None => None,
            };
            let tls = client.as_ref();
            let explain = |e| explain_bench_error(e, tls, addr, "dns");
            let reply = fetch_reply(addr, &request, tls).map_err(explain)?;
            let m = load(addr, &options, &request, None, tls).map_err(explain)?;
            (m, None, reply)
        }
        None => {
            let tmp = TempDb::new()?;
            let store = lars_store::open(&tmp.url())?;
            store.seed_demo()?;
            let mut config = DnsConfig::default();
            config.reactor.addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
            config.reactor.thread_num = options.threads.max(1);
            config.reactor.max_conn = options.conns.saturating_add(16);
            // Every load connection comes from 127.0.0.1.
            config.reactor.max_conn_per_peer = 0;
            let tls = match options.tls {
                true => Some(BenchTls::new()?),
                false => None,
            };
            let tls_addr = match &tls {
                Some(t) => {
                    let port = free_port()?;
                    config.reactor.tls = Some(t.listener(port));
                    Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                }
                None => None,
            };
            let client = match &tls {
                Some(t) => Some(load_client_tls(&t.client_files()).map_err(BenchError::Tls)?),
                None => None,
            };
            let mut handle = Dns::start(config, store)?;
            let addr = handle.local_addr();
            let reply = fetch_reply(addr, &request, None)?;
            let m = load(addr, &options, &request, None, None);
            let t = match (&client, tls_addr, &m) {
                (Some(c), Some(a), Ok(_)) => Some(load(a, &options, &request, None, Some(c))),
                _ => None,
            };
            handle.stop();
            (m?, t.transpose()?, reply)
        }
    };
    let raw = RawServer::start(reply.clone())?;
    let raw_m = load(raw.addr, &options, &request, None, None);
    raw.stop();
    Ok(BenchReport {
        options,
        reply_bytes: reply.len(),
        dns,
        tls,
        raw: raw_m?,
    })
}

/// Throwaway certificates for a benchmark's in-process services: a CA, a
/// server certificate for 127.0.0.1 and a client certificate (mutual TLS,
/// as lars agents use it), in a temp directory removed on drop.
#[derive(Debug)]
pub struct BenchTls {
    pki: lars_testkit::tls::TestPki,
}

impl BenchTls {
    /// Generates the certificates.
    pub fn new() -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        // TestPki panics on a temp dir it cannot write: make that an error.
        std::panic::catch_unwind(|| lars_testkit::tls::TestPki::new(&name))
            .map(|pki| Self { pki })
            .map_err(|_| io::Error::other("cannot write the benchmark certificates"))
    }

    /// A `[tls]` listener on 127.0.0.1:`port` requiring client
    /// certificates from the bench CA.
    pub fn listener(&self, port: u16) -> TlsListenerConfig {
        TlsListenerConfig {
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            cert: self.pki.server_cert.clone(),
            key: self.pki.server_key.clone(),
            ca: Some(self.pki.ca.clone()),
            client_auth: ClientAuth::Required,
            allow: Allowlist::everyone(),
        }
    }

    /// The client `[tls]` files (bench CA, client certificate and key;
    /// the server name is the address's IP), for [`lars_net::ClientTls`].
    pub fn client_files(&self) -> ClientTlsConfig {
        ClientTlsConfig {
            ca: self.pki.ca.clone(),
            cert: Some(self.pki.client_cert.clone()),
            key: Some(self.pki.client_key.clone()),
            server_name: None,
        }
    }
}

/// Loads a client's TLS files (see [`lars_net::ClientTls::load`]); the
/// error names the file that could not be used.
pub(crate) fn load_client_tls(files: &ClientTlsConfig) -> Result<ClientTls, String> {
    ClientTls::load(files).map_err(|e| match e {
        lars_net::NetError::Tls(m) => m,
        other => other.to_string(),
    })
}

/// What a TLS failure inside `e` means for the operator (`server`: "dns" or
/// "reporter", at `addr`), naming the files of `client`; `None` when `e`
/// carries no TLS error.
pub(crate) fn explain_tls(
    e: &io::Error,
    client: &ClientTls,
    addr: SocketAddr,
    server: &str,
) -> Option<String> {
    use rustls::AlertDescription as Alert;
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let files = client.files();
    Some(match tls {
        rustls::Error::InvalidCertificate(_) => {
            let name = match &files.server_name {
                Some(n) => n.clone(),
                None => addr.ip().to_string(),
            };
            format!(
                "the {server}'s certificate at {addr} does not verify against the CA file {} \
                 for the name {name} ({tls})",
                files.ca.display()
            )
        }
        rustls::Error::AlertReceived(Alert::CertificateRequired) if files.cert.is_none() => {
            format!(
                "the {server} at {addr} requires a client certificate (mutual TLS) and none was given"
            )
        }
        rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateRequired
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied
            | Alert::DecryptError),
        ) => match &files.cert {
            Some(cert) => format!(
                "the {server} at {addr} refused our certificate {} ({alert:?}): it must be \
                 signed by a CA of the {server}'s [tls] ca",
                cert.display()
            ),
            None => format!("the {server} at {addr} refused the TLS handshake ({alert:?})"),
        },
        other => format!("TLS with the {server} at {addr} failed: {other}"),
    })
}

/// `e` as [`BenchError::Tls`] when it is a TLS failure with `client`.
fn explain_bench_error(
    e: BenchError,
    client: Option<&ClientTls>,
    addr: SocketAddr,
    server: &str,
) -> BenchError {
    match (e, client) {
        (BenchError::Io(io), Some(c)) => match explain_tls(&io, c, addr, server) {
            Some(m) => BenchError::Tls(m),
            None => BenchError::Io(io),
        },
        (e, _) => e,
    }
}

/// How long a connect to a service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a TLS handshake may wait for the service's next message.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A port free on 127.0.0.1 now (for a listener whose address the service
/// does not report back).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A byte stream to a server, plain or TLS.
pub(crate) trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Connects to `addr` (within [`CONNECT_TIMEOUT`]), over TLS with `tls`
/// (handshake done before returning, each of its reads within
/// [`HANDSHAKE_TIMEOUT`]); reads time out after
/// `read_timeout`.
pub(crate) fn connect_stream(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    read_timeout: Duration,
) -> io::Result<Box<dyn Stream>> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    let Some(client) = tls else {
        s.set_read_timeout(Some(read_timeout))?;
        return Ok(Box::new(s));
    };
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut conn = client.connect(addr).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        // Rustls errors pass unchanged (explain_tls reads them); silence
        // and a close get a message saying where it stopped.
        conn.complete_io(&mut s).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no TLS handshake answer from {addr} within {HANDSHAKE_TIMEOUT:?} (is it a TLS port?)"
                ),
            ),
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => io::Error::new(
                e.kind(),
                format!(
                    "{addr} closed the connection during the TLS handshake (a plain port? \
                     not on its allow list?)"
                ),
            ),
            _ => e,
        })?;
    }
    s.set_read_timeout(Some(read_timeout))?;
    Ok(Box::new(rustls::StreamOwned::new(conn, s)))
}

fn request_frame(key: ModKey) -> Result<Vec<u8>, BenchError> {
    let (modid, cmdid) = key.to_wire();
    frame::to_bytes(
        MessageId::GetRouteRequest.into(),
        &GetRouteRequest { modid, cmdid },
    )
    .map(|b| b.to_vec())
    .map_err(|e| BenchError::Invalid(e.to_string()))
}

/// Asks once (over TLS with `tls`) and returns the whole reply frame.
fn fetch_reply(
    addr: SocketAddr,
    request: &[u8],
    tls: Option<&ClientTls>,
) -> Result<Vec<u8>, BenchError> {
    let mut s = connect_stream(addr, tls, Duration::from_secs(5))?;
    s.write_all(request)?;
    let mut head = [0u8; HEADER_LEN];
    s.read_exact(&mut head)?;
    let len = body_len(&head).ok_or_else(|| BenchError::Invalid("bad reply header".into()))?;
    let mut reply = head.to_vec();
    reply.resize(HEADER_LEN + len, 0);
    s.read_exact(&mut reply[HEADER_LEN..])?;
    Ok(reply)
}

fn body_len(head: &[u8]) -> Option<usize> {
    let len = i32::from_le_bytes(head.get(4..8)?.try_into().ok()?);
    usize::try_from(len).ok()
}

/// Runs the clients against `addr` and counts replies. `Some(stop)` ends
/// early (tests).
fn load(
    addr: SocketAddr,
    o: &BenchOptions,
    request: &[u8],
    stop: Option<Arc<AtomicBool>>,
    tls: Option<&ClientTls>,
) -> Result<Measurement, BenchError> {
    let stop = stop.unwrap_or_default();
    let mut streams = Vec::with_capacity(o.conns);
    for _ in 0..o.conns {
        streams.push(connect_stream(addr, tls, Duration::from_millis(200))?);
    }
    let burst: Arc<Vec<u8>> = Arc::new(request.repeat(o.window));
    let req_len = request.len();
    let start = Instant::now();
    let deadline = start
        .checked_add(o.duration)
        .ok_or_else(|| BenchError::Invalid("duration too long".into()))?;
    let mut threads: Vec<JoinHandle<io::Result<u64>>> = Vec::with_capacity(o.conns);
    for s in streams {
        let (burst, stop) = (Arc::clone(&burst), Arc::clone(&stop));
        threads.push(
            thread::Builder::new()
                .name("bench-client".into())
                .spawn(move || client(s, &burst, req_len, &stop))?,
        );
    }
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        thread::sleep((deadline - Instant::now()).min(Duration::from_millis(20)));
    }
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let mut replies = 0;
    let mut first_err = None;
    for t in threads {
        match t.join() {
            Ok(Ok(n)) => replies += n,
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some(io::Error::other("client thread panicked"))),
        }
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(Measurement { replies, secs }),
    }
}

/// One client connection: keeps `burst.len() / req_len` requests in flight
/// and counts whole reply frames until `stop`.
fn client(
    mut s: Box<dyn Stream>,
    burst: &[u8],
    req_len: usize,
    stop: &AtomicBool,
) -> io::Result<u64> {
    s.write_all(burst)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut filled = 0;
    let mut replies = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = match s.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed",
                ));
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
        let mut pos = 0;
        let mut got = 0usize;
        while filled - pos >= HEADER_LEN {
            let len = body_len(&buf[pos..pos + HEADER_LEN])
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad reply"))?;
            if filled - pos < HEADER_LEN + len {
                break;
            }
            pos += HEADER_LEN + len;
            got += 1;
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        replies += got as u64;
        if got > 0 {
            s.write_all(&burst[..got * req_len])?;
        }
    }
    Ok(replies)
}

/// The raw-socket reference: blocking std sockets, one thread per
/// connection, every complete request answered with `reply`.
struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
}

impl RawServer {
    fn start(reply: Vec<u8>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let reply = Arc::new(reply);
        let acceptor = thread::Builder::new()
            .name("bench-raw".into())
            .spawn(move || {
                let mut conns = Vec::new();
                while !st.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let reply = Arc::clone(&reply);
                            conns.push(thread::spawn(move || raw_conn(s, &reply)));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            })?;
        Ok(Self {
            addr,
            stop,
            acceptor,
        })
    }

    /// Stops accepting; the connection threads end when their clients close.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.acceptor.join();
    }
}

fn raw_conn(mut s: TcpStream, reply: &[u8]) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = Vec::with_capacity(256 * 1024);
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut pos = 0;
        while filled - pos >= HEADER_LEN {
            let Some(len) = body_len(&buf[pos..pos + HEADER_LEN]) else {
                return Ok(());
            };
            if filled - pos < HEADER_LEN + len {
                break;
            }
            pos += HEADER_LEN + len;
            out.extend_from_slice(reply);
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        s.write_all(&out)?;
        out.clear();
    }
}

/// A SQLite file under the system temp dir, removed on drop.
struct TempDb {
    path: PathBuf,
}

impl TempDb {
    fn new() -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lars-bench-dns-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            path: dir.join("lars.db"),
        })
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_cause_once() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let errors: [Box<dyn std::error::Error>; 2] = [
            Box::new(BenchError::from(refused())),
            Box::new(crate::reporter::BenchError::from(refused())),
        ];
        for e in errors {
            // The whole chain, as `{:#}` prints it.
            let mut chain = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                chain = format!("{chain}: {c}");
                cause = c.source();
            }
            let cause = refused().to_string();
            assert_eq!(chain.matches(&cause).count(), 1, "{chain}");
        }
    }

    #[test]
    fn measures_both_servers_briefly() {
        let report = run(BenchOptions {
            conns: 2,
            window: 4,
            duration: Duration::from_millis(200),
            ..BenchOptions::default()
        })
        .unwrap();
        assert!(report.dns.replies > 0, "{report}");
        assert!(report.raw.replies > 0, "{report}");
        // The demo key 1/1 has three hosts: 8-byte header + 3 HostInfo.
        assert!(report.reply_bytes > HEADER_LEN + 3 * 4, "{report}");
        assert!(report.to_string().contains("ratio dns/raw"));
        assert!(report.tls.is_none());
    }

    #[test]
    fn measures_the_dns_over_tls_in_the_same_run() {
        let report = run(BenchOptions {
            conns: 2,
            window: 4,
            duration: Duration::from_millis(200),
            tls: true,
            ..BenchOptions::default()
        })
        .unwrap();
        assert!(report.tls.is_some_and(|t| t.replies > 0), "{report}");
        assert!(report.to_string().contains("ratio tls/dns"), "{report}");
        let external = BenchOptions {
            dns: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 1))),
            tls: true,
            ..BenchOptions::default()
        };
        assert!(matches!(run(external), Err(BenchError::Invalid(_))));
    }

    #[test]
    fn rejects_empty_options() {
        let o = BenchOptions {
            window: 0,
            ..BenchOptions::default()
        };
        assert!(matches!(run(o), Err(BenchError::Invalid(_))));
    }
}
