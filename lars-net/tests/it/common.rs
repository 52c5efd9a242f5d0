//! Blocking helpers for tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lars_net::{Router, ServerBuilder, TcpServer};

pub const WAIT: Duration = Duration::from_secs(5);

/// msgid 1 is echoed back as msgid 2; msgid 3 answers msgid 4 with the
/// worker index as one byte.
pub fn echo_router() -> Router {
    Router::new()
        .route(1, |c, f| c.send_raw(2, &f.body).unwrap())
        .route(3, |c, _| c.send_raw(4, &[c.worker() as u8]).unwrap())
}

pub fn builder() -> ServerBuilder {
    TcpServer::builder("127.0.0.1:0".parse().unwrap()).router(echo_router())
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub fn header(msgid: i32, len: i32) -> Vec<u8> {
    let mut v = msgid.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v
}

/// One whole frame (header and `body`).
pub fn frame_bytes(msgid: i32, body: &[u8]) -> bytes::Bytes {
    let mut v = header(msgid, body.len() as i32);
    v.extend_from_slice(body);
    v.into()
}

pub fn write_frame(s: &mut TcpStream, msgid: i32, body: &[u8]) {
    let mut v = header(msgid, body.len() as i32);
    v.extend_from_slice(body);
    s.write_all(&v).unwrap();
}

pub fn read_frame(s: &mut TcpStream) -> (i32, Vec<u8>) {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).unwrap();
    let msgid = i32::from_le_bytes(h[..4].try_into().unwrap());
    let len = i32::from_le_bytes(h[4..].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (msgid, body)
}

pub fn round_trip(s: &mut TcpStream, body: &[u8]) {
    write_frame(s, 1, body);
    assert_eq!(read_frame(s), (2, body.to_vec()));
}

/// True once the peer has closed the connection (EOF or reset).
pub fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

pub fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Names of this process's threads.
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .map(|s| s.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
