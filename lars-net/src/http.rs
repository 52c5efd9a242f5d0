//! A tiny HTTP/1.1 server for `/status` and `/metrics`: a small fixed pool
//! of std threads serving connections concurrently, one request per
//! connection (`Connection: close`), bounded request size, whole-request read
//! and whole-response write deadlines. Not a general web server. What it
//! refuses is counted in its [`HttpStats`] (each service shows them on its
//! `/status` and `/metrics`).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;

use crate::error::{NetError, Result};

/// Largest request accepted (head and body).
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to send its whole request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers one request.
pub type HttpHandler = Arc<dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync>;

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query, e.g. `/status`.
    pub path: String,
    /// Decoded query parameters in order.
    pub params: Vec<(String, String)>,
    /// Headers (names lower-cased) in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for GET).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of query parameter `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses a request head plus body; `None` if incomplete, `Err` if bad.
    /// Public for the fuzz target `http_request` (fuzz/); the server is its
    /// only other caller.
    pub fn parse(data: &[u8]) -> std::result::Result<Option<Self>, &'static str> {
        let Some(head_end) = find(data, b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&data[..head_end]).map_err(|_| "head not utf-8")?;
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().filter(|m| !m.is_empty()).ok_or("no method")?;
        let target = first.next().ok_or("no target")?;
        let mut headers = Vec::new();
        for line in lines {
            let (k, v) = line.split_once(':').ok_or("bad header")?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().map_err(|_| "bad content-length"))
            .transpose()?
            .unwrap_or(0);
        let body_start = head_end + 4;
        // `len` is the client's number: compared without adding, no overflow.
        if body_start > MAX_REQUEST || len > MAX_REQUEST - body_start {
            return Err(TOO_LARGE);
        }
        if data.len() < body_start + len {
            return Ok(None);
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Ok(Some(Self {
            method: method.to_owned(),
            path: percent_decode(path),
            params,
            headers,
            body: data[body_start..body_start + len].to_vec(),
        }))
    }
}

/// [`HttpRequest::parse`]'s error for a request over [`MAX_REQUEST`].
const TOO_LARGE: &str = "request too large";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// A response: status, content type, extra headers, body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// 200 with a JSON body.
    pub fn json(body: impl Into<String>) -> Self {
        Self::with("application/json", 200, body.into().into_bytes())
    }

    /// 200 with a plain-text body.
    pub fn text(body: impl Into<String>) -> Self {
        Self::with("text/plain; charset=utf-8", 200, body.into().into_bytes())
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::with("text/plain; charset=utf-8", 404, b"not found\n".to_vec())
    }

    /// 400 with a reason.
    pub fn bad_request(why: impl Into<String>) -> Self {
        Self::with("text/plain; charset=utf-8", 400, why.into().into_bytes())
    }

    /// Replaces the status code.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn with(content_type: &str, status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: content_type.to_owned(),
            headers: Vec::new(),
            body,
        }
    }

    fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        w.write_all(&self.body)?;
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A status server's counters: requests answered by the handler and
/// connections it answered itself or dropped, by reason. Shared (relaxed
/// atomics) between its threads and the service that renders them; read
/// with [`HttpStats::snapshot`].
#[derive(Debug, Default)]
pub struct HttpStats {
    requests: AtomicU64,
    bad_requests: AtomicU64,
    too_large: AtomicU64,
    read_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
    refused_busy: AtomicU64,
}

impl HttpStats {
    /// The counters now.
    pub fn snapshot(&self) -> HttpStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HttpStatsSnapshot {
            requests: r(&self.requests),
            bad_requests: r(&self.bad_requests),
            too_large: r(&self.too_large),
            read_timeouts: r(&self.read_timeouts),
            write_timeouts: r(&self.write_timeouts),
            refused_busy: r(&self.refused_busy),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A copy of a status server's [`HttpStats`], the part a service puts on
/// its `/status` (as `http`) and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HttpStatsSnapshot {
    /// Requests parsed and handed to the handler (whatever it answered).
    pub requests: u64,
    /// Malformed requests answered 400 (bad request line, header or
    /// `Content-Length`, head not UTF-8).
    pub bad_requests: u64,
    /// Requests over [`MAX_REQUEST`] answered 413.
    pub too_large: u64,
    /// Connections that did not send a whole request within
    /// [`READ_TIMEOUT`] (answered 408, best effort, and closed).
    pub read_timeouts: u64,
    /// Responses not written within [`WRITE_TIMEOUT`] (the client does not
    /// read; closed).
    pub write_timeouts: u64,
    /// Connections refused with 503: [`MAX_QUEUED`] were already waiting.
    pub refused_busy: u64,
}

impl HttpStatsSnapshot {
    /// Writes `{prefix}_http_requests_total` and
    /// `{prefix}_http_refused_total{reason=..}` (e.g. prefix `lars_dns`).
    pub fn prometheus(&self, prefix: &str, out: &mut PromText) {
        out.metric(
            &format!("{prefix}_http_requests_total"),
            "counter",
            "Status HTTP requests handed to the handler.",
            self.requests,
        );
        out.labelled(
            &format!("{prefix}_http_refused_total"),
            "counter",
            "Status HTTP connections answered with an error or dropped by the server, by reason.",
            [
                ("bad_request", self.bad_requests),
                ("too_large", self.too_large),
                ("read_timeout", self.read_timeouts),
                ("write_timeout", self.write_timeouts),
                ("busy", self.refused_busy),
            ]
            .map(|(why, n)| (format!("reason=\"{why}\""), n)),
        );
    }
}

/// A running status server. Stopped and joined on drop.
///
/// One acceptor thread hands connections to [`WORKERS`] handler threads over
/// a queue bounded to [`MAX_QUEUED`]; beyond that a connection is answered
/// 503 (best effort, without waiting) and closed. Each request must arrive
/// whole within [`READ_TIMEOUT`] and its response be written within
/// [`WRITE_TIMEOUT`] (totals, not per byte), so slow or silent clients hold
/// at most one worker each for that long and cannot block the others.
pub struct StatusServer {
    addr: SocketAddr,
    stats: Arc<HttpStats>,
    stop: Arc<AtomicBool>,
    joins: Vec<JoinHandle<()>>,
}

/// Handler threads serving connections concurrently.
pub const WORKERS: usize = 16;
/// Accepted connections waiting for a worker before new ones are refused.
pub const MAX_QUEUED: usize = 64;
/// How long writing a response may take in total.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a blocked read or write waits before checking the stop flag and
/// its deadline again.
const SLICE: Duration = Duration::from_millis(100);

impl std::fmt::Debug for StatusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl StatusServer {
    /// Binds `addr` and serves every request with `handler` on a small pool
    /// of threads; its counters are [`StatusServer::stats`].
    pub fn start(addr: SocketAddr, handler: HttpHandler) -> Result<Self> {
        Self::start_with_stats(addr, handler, Arc::default())
    }

    /// [`StatusServer::start`], counting into `stats`: a service creates
    /// them first so that its handler can render them.
    pub fn start_with_stats(
        addr: SocketAddr,
        handler: HttpHandler,
        stats: Arc<HttpStats>,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(NetError::bind("http", addr))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded::<TcpStream>(MAX_QUEUED);
        let mut server = Self {
            addr,
            stats,
            stop,
            joins: Vec::with_capacity(WORKERS + 1),
        };
        for i in 0..WORKERS {
            let (rx, handler, st) = (rx.clone(), Arc::clone(&handler), Arc::clone(&server.stop));
            let stats = Arc::clone(&server.stats);
            let spawned = thread::Builder::new()
                .name(format!("lars-http-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || work(rx, handler, &stats, st));
            match spawned {
                Ok(j) => server.joins.push(j),
                Err(e) => {
                    drop(tx);
                    server.stop_and_join(false);
                    return Err(e.into());
                }
            }
        }
        let st = Arc::clone(&server.stop);
        let stats = Arc::clone(&server.stats);
        match thread::Builder::new()
            .name("lars-http".into())
            .spawn(move || accept(listener, tx, &stats, st))
        {
            Ok(j) => server.joins.push(j),
            Err(e) => {
                server.stop_and_join(false);
                return Err(e.into());
            }
        }
        tracing::info!("status server on http://{addr}");
        Ok(server)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters (the ones given to [`StatusServer::start_with_stats`]).
    pub fn stats(&self) -> Arc<HttpStats> {
        Arc::clone(&self.stats)
    }

    /// Stops serving and joins every thread (within about `SLICE` (100 ms) of a
    /// worker's current read or write).
    pub fn stop(&mut self) {
        self.stop_and_join(true);
    }

    fn stop_and_join(&mut self, wake: bool) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        if wake {
            // Wake the blocking accept with a connection to ourselves.
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(if wake.is_ipv4() {
                    Ipv4Addr::LOCALHOST.into()
                } else {
                    Ipv6Addr::LOCALHOST.into()
                });
            }
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        }
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The acceptor: queues connections for the workers, refuses beyond the cap.
/// Dropping `tx` on return lets idle workers end.
fn accept(listener: TcpListener, tx: Sender<TcpStream>, stats: &HttpStats, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match stream {
            Ok(s) => match tx.try_send(s) {
                Ok(()) => {}
                Err(TrySendError::Full(s)) => {
                    tracing::debug!("http: {MAX_QUEUED} connections waiting, refusing one");
                    HttpStats::add(&stats.refused_busy);
                    refuse(s, &HttpResponse::text("busy\n").status(503));
                }
                Err(TrySendError::Disconnected(_)) => return,
            },
            Err(e) => {
                tracing::warn!("http accept: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Best-effort `resp` without blocking (the acceptor, or a worker whose
/// client is too slow).
fn refuse(mut s: TcpStream, resp: &HttpResponse) {
    if s.set_nonblocking(true).is_ok() {
        let mut out = Vec::new();
        let _ = resp.write_to(&mut out);
        let _ = s.write(&out);
    }
}

fn work(rx: Receiver<TcpStream>, handler: HttpHandler, stats: &HttpStats, stop: Arc<AtomicBool>) {
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match rx.recv_timeout(SLICE) {
            Ok(s) => {
                if let Err(e) = answer(s, &handler, stats, &stop) {
                    tracing::debug!("http: {e}");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} deadline passed"))
}

/// Time left before `deadline`, at most [`SLICE`]; an error once it passed
/// or the server stops.
fn slice_until(deadline: Instant, stop: &AtomicBool, what: &str) -> io::Result<Duration> {
    if stop.load(Ordering::Acquire) {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "server stopping",
        ));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(what));
    }
    Ok(left.min(SLICE))
}

/// Reads one request, answers it and counts what went wrong. A refused
/// request is logged at debug only: anyone can send one, the counters say
/// how many.
fn answer(
    mut s: TcpStream,
    handler: &HttpHandler,
    stats: &HttpStats,
    stop: &AtomicBool,
) -> io::Result<()> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut data = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let resp = loop {
        match HttpRequest::parse(&data) {
            Ok(Some(req)) => {
                HttpStats::add(&stats.requests);
                break handler(&req);
            }
            Ok(None) if data.len() >= MAX_REQUEST => {
                HttpStats::add(&stats.too_large);
                tracing::debug!(peer = ?s.peer_addr().ok(), "http: request too large");
                break HttpResponse::bad_request("request too large\n").status(413);
            }
            Ok(None) => {}
            Err(why) => {
                let (counter, status) = if why == TOO_LARGE {
                    (&stats.too_large, 413)
                } else {
                    (&stats.bad_requests, 400)
                };
                HttpStats::add(counter);
                tracing::debug!(peer = ?s.peer_addr().ok(), "http: bad request: {why}");
                break HttpResponse::bad_request(format!("{why}\n")).status(status);
            }
        }
        let slice = match slice_until(deadline, stop, "read") {
            Ok(d) => d,
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    HttpStats::add(&stats.read_timeouts);
                    refuse(s, &HttpResponse::text("request timeout\n").status(408));
                }
                return Err(e);
            }
        };
        s.set_read_timeout(Some(slice))?;
        match s.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if retryable(&e) => {}
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::with_capacity(256 + resp.body.len());
    resp.write_to(&mut out)?;
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let mut sent = 0;
    while sent < out.len() {
        let slice = slice_until(deadline, stop, "write").inspect_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                HttpStats::add(&stats.write_timeouts);
            }
        })?;
        s.set_write_timeout(Some(slice))?;
        match s.write(&out[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if retryable(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Prometheus text exposition (format 0.0.4), written one metric at a time:
/// each gets its `# HELP` and `# TYPE` lines. The `/metrics` pages of the
/// dns, the reporter and the agent all write through it.
///
/// ```
/// let mut m = lars_net::http::PromText::default();
/// m.metric("lars_x_total", "counter", "Things done.", 3);
/// assert_eq!(
///     m.into_string(),
///     "# HELP lars_x_total Things done.\n# TYPE lars_x_total counter\nlars_x_total 3\n"
/// );
/// ```
#[derive(Debug, Default)]
pub struct PromText {
    out: String,
}

impl PromText {
    /// Appends one metric: `kind` is `counter` or `gauge`.
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }

    /// Appends one metric with a sample per label set: `labels` is the
    /// inside of the braces (`worker="0"`).
    pub fn labelled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, u64)>,
    ) {
        use std::fmt::Write as _;
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, value) in samples {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    /// The text written so far.
    pub fn into_string(self) -> String {
        self.out
    }
}

/// A read or write that ran out its time slice (or was interrupted): try
/// again until the overall deadline.
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_with_query() {
        let r =
            HttpRequest::parse(b"GET /route?modid=1&cmdid=2&x=a%20b+c HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/route");
        assert_eq!(r.query("modid"), Some("1"));
        assert_eq!(r.query("x"), Some("a b c"));
        assert_eq!(r.query("nope"), None);
        assert_eq!(r.header("HOST"), Some("x"));
    }

    #[test]
    fn waits_for_body_then_reads_it() {
        let head = b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nab";
        assert!(HttpRequest::parse(head).unwrap().is_none());
        let full = b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(HttpRequest::parse(full).unwrap().unwrap().body, b"abc");
    }

    #[test]
    fn rejects_garbage_and_huge_bodies() {
        assert!(HttpRequest::parse(b"GET\r\n\r\n").is_err());
        assert!(HttpRequest::parse(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").is_err());
        assert!(HttpRequest::parse(b"GET / HTTP/1.1\r\nbad\r\n\r\n").is_err());
    }

    /// Found by the fuzz target `http_request`: a Content-Length near
    /// `usize::MAX` overflowed `body_start + len` (a panic in the worker;
    /// without overflow checks, a slice with its end before its start).
    #[test]
    fn content_length_near_usize_max_is_too_large() {
        let req = format!("GET / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", usize::MAX);
        assert_eq!(
            HttpRequest::parse(req.as_bytes()).err(),
            Some("request too large")
        );
    }

    /// Sends `req` to `addr` and returns the whole answer.
    fn exchange(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Each way a request can go wrong is answered with its status and
    /// counted under its own reason; a good one is counted as a request.
    #[test]
    fn bad_requests_are_answered_and_counted_by_reason() {
        let mut server = StatusServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|_| HttpResponse::text("ok\n")),
        )
        .unwrap();
        let addr = server.local_addr();
        let stats = server.stats();
        assert_eq!(stats.snapshot(), HttpStatsSnapshot::default());

        let ok = exchange(addr, b"GET /status HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        let bad = exchange(addr, b"\x16\x03\x01garbage\r\nno colon\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
        let bad = exchange(addr, b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
        let big = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
        assert!(
            big.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{big}"
        );
        // Half a request, then silence: answered 408 after READ_TIMEOUT.
        let slow = exchange(addr, b"GET /status HTTP/1.1\r\n");
        assert!(
            slow.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{slow}"
        );

        let got = stats.snapshot();
        assert_eq!(
            got,
            HttpStatsSnapshot {
                requests: 1,
                bad_requests: 2,
                too_large: 1,
                read_timeouts: 1,
                write_timeouts: 0,
                refused_busy: 0,
            }
        );
        let mut text = PromText::default();
        got.prometheus("lars_x", &mut text);
        let text = text.into_string();
        assert!(text.contains("lars_x_http_requests_total 1\n"), "{text}");
        assert!(
            text.contains("lars_x_http_refused_total{reason=\"bad_request\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("lars_x_http_refused_total{reason=\"read_timeout\"} 1\n"));
        server.stop();
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
