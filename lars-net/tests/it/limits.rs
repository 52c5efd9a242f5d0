//! Connection limits of the TCP server (`maxConnPerPeer`, `idleTimeout`,
//! `frameTimeout`, rate-limited refusal logs) and bind errors that name
//! their address.

use std::error::Error as _;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use lars_net::http::PromText;
use lars_net::{
    HttpRequest, HttpResponse, NetError, StatusServer, TcpServer, UdpIo, UdpServer, UdpService,
};
use socket2::{Domain, Socket, Type};

use super::common::*;

/// A client connection from `local_ip` (any 127.x.y.z is loopback on Linux),
/// so a test can be several peers at once.
fn connect_from(local_ip: &str, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{local_ip}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&server.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

#[test]
fn idle_connections_beyond_the_per_peer_cap_are_refused_another_peer_is_served() {
    let mut server = builder()
        .threads(2)
        .max_conn(100)
        .max_conn_per_peer(3)
        .idle_timeout(Duration::ZERO)
        .start()
        .unwrap();
    let addr = server.local_addr();
    // One address opens 5 idle connections: the first 3 are kept.
    let mut idle: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    assert!(wait_until(
        || server.stats().snapshot().refused_per_peer == 2
    ));
    for c in &mut idle[3..] {
        assert!(
            is_closed(c),
            "a connection over maxConnPerPeer must be closed"
        );
    }
    assert!(wait_until(|| server.stats().snapshot().open == 3));
    // Another address still gets in and is served.
    let mut other = connect_from("127.0.0.2", addr);
    round_trip(&mut other, b"from another peer");
    // The capped address's accepted connections work; one more is refused.
    round_trip(&mut idle[0], b"kept");
    let mut extra = connect(addr);
    assert!(is_closed(&mut extra));
    // Closing one gives the address its slot back.
    drop(idle.remove(1));
    assert!(wait_until(|| server.stats().snapshot().open == 3));
    let mut again = connect(addr);
    round_trip(&mut again, b"slot given back");
    let s = server.stats().snapshot();
    assert_eq!(
        (s.refused_per_peer, s.refused_max_conn, s.refused),
        (3, 0, 3)
    );
    // What the services put on /status and /metrics.
    assert_eq!(s.limits().refused_per_peer, 3);
    let mut text = PromText::default();
    s.limits().prometheus("lars_x", &mut text);
    let text = text.into_string();
    assert!(
        text.contains("\nlars_x_tcp_refused_total{reason=\"per_peer\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("\nlars_x_tcp_closed_total{reason=\"idle\"} 0\n"));
    server.join();
}

#[test]
fn connections_without_a_frame_are_closed_after_the_idle_timeout() {
    let mut server = builder()
        .threads(2)
        .max_conn(3)
        .max_conn_per_peer(0)
        .idle_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let addr = server.local_addr();
    // A real client: it completes a frame, so idleness never closes it.
    let mut client = connect(addr);
    round_trip(&mut client, b"real");
    // Two idle connections fill maxConn; the next client is refused.
    let mut idle = [connect(addr), connect(addr)];
    assert!(wait_until(|| server.stats().snapshot().open == 3));
    let mut refused = connect(addr);
    assert!(is_closed(&mut refused));
    assert_eq!(server.stats().snapshot().refused_max_conn, 1);
    // The idle ones are closed after the timeout...
    for c in &mut idle {
        assert!(is_closed(c), "an idle connection must be closed");
    }
    assert_eq!(server.stats().snapshot().closed_idle, 2);
    assert!(wait_until(|| server.stats().snapshot().open == 1));
    // ...and a new client gets in, while the real one (older than the
    // timeout by now) is still served.
    let mut late = connect(addr);
    round_trip(&mut late, b"got in");
    round_trip(&mut client, b"still here");
    assert_eq!(server.stats().snapshot().closed_idle, 2);
    server.join();
}

#[test]
fn idle_age_counts_from_the_accept_even_when_the_worker_is_busy() {
    // One worker, held busy by a slow handler while an idle connection is
    // accepted and, after it, another refused: the idle one's age starts at
    // its accept (before the refusal), not when the busy worker takes it.
    let router = echo_router().route(9, |_, _| std::thread::sleep(Duration::from_millis(300)));
    let mut server = lars_net::TcpServer::builder("127.0.0.1:0".parse().unwrap())
        .router(router)
        .max_conn(2)
        .idle_timeout(Duration::from_millis(100))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut busy = connect(addr);
    round_trip(&mut busy, b"a client");
    write_frame(&mut busy, 9, b"");
    let mut idle = connect(addr);
    assert!(wait_until(|| server.stats().snapshot().open == 2));
    let mut refused = connect(addr);
    assert!(is_closed(&mut refused));
    assert!(
        is_closed(&mut idle),
        "the idle connection kept a client out"
    );
    assert_eq!(server.stats().snapshot().closed_idle, 1);
    round_trip(&mut busy, b"still served");
    server.join();
}

#[test]
fn a_silent_client_is_left_alone_while_nobody_is_refused() {
    // An agent connects and has nothing to send yet: while it keeps nobody
    // out, the idle timeout does not cut it (no reconnect churn).
    let timeout = Duration::from_millis(100);
    let mut server = builder()
        .max_conn(10)
        .idle_timeout(timeout)
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut quiet = connect(addr);
    assert!(wait_until(|| server.stats().snapshot().open == 1));
    std::thread::sleep(timeout * 5);
    round_trip(&mut quiet, b"still connected");
    assert_eq!(server.stats().snapshot().closed_idle, 0);
    server.join();
}

#[test]
fn a_per_peer_refusal_closes_idle_connections_of_that_peer_only() {
    let timeout = Duration::from_millis(200);
    let mut server = builder()
        .threads(2)
        .max_conn(100)
        .max_conn_per_peer(2)
        .idle_timeout(timeout)
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut other = connect_from("127.0.0.2", addr);
    let mut full = [connect(addr), connect(addr)];
    assert!(wait_until(|| server.stats().snapshot().open == 3));
    std::thread::sleep(timeout * 2);
    // 127.0.0.1 is at its cap: the refusal frees its own stale slots...
    let mut refused = connect(addr);
    assert!(is_closed(&mut refused));
    for c in &mut full {
        assert!(is_closed(c), "a stale connection of the capped peer");
    }
    assert_eq!(server.stats().snapshot().closed_idle, 2);
    // ...and leaves another address's silent connection alone.
    round_trip(&mut other, b"untouched");
    let mut back = connect(addr);
    round_trip(&mut back, b"the capped peer gets in again");
    server.join();
}

#[test]
fn a_partial_frame_older_than_the_frame_timeout_closes_the_connection() {
    let mut server = builder()
        .idle_timeout(Duration::ZERO)
        .frame_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut good = connect(addr);
    round_trip(&mut good, b"ok");
    let mut slow = connect(addr);
    round_trip(&mut slow, b"a client so far");
    // Half a header, then nothing.
    slow.write_all(&header(1, 10)[..5]).unwrap();
    assert!(is_closed(&mut slow), "a stuck partial frame must close it");
    let s = server.stats().snapshot();
    assert_eq!((s.closed_partial_frame, s.closed_idle), (1, 0));
    round_trip(&mut good, b"unaffected");
    server.join();
}

#[test]
fn every_refusal_is_counted_and_logged_at_most_once_per_interval() {
    let mut server = builder()
        .max_conn(1)
        .refused_log_interval(Duration::from_secs(3600))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut held = connect(addr);
    round_trip(&mut held, b"held");
    let mut refused: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    for c in &mut refused {
        assert!(is_closed(c));
    }
    assert!(wait_until(|| server.stats().snapshot().refused == 20));
    let s = server.stats().snapshot();
    assert_eq!(s.refused_max_conn, 20);
    // The first refusal is logged at once; the other 19 wait for the next
    // line, an interval (an hour) later.
    assert_eq!(s.refused_log_lines, 1);
    round_trip(&mut held, b"still served");
    server.join();
}

/// The bind error names what was bound and the address, and carries the OS
/// error as its source without repeating it.
fn assert_names_address(e: &NetError, what: &str, addr: SocketAddr) {
    let text = e.to_string();
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(text.contains(what), "{text}");
    let source = e.source().expect("a bind error has the OS error as source");
    let io = source.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        !text.contains(&source.to_string()),
        "cause repeated: {text}"
    );
}

struct Nothing;

impl UdpService for Nothing {
    fn on_datagram(&mut self, _io: &mut UdpIo<'_>, _from: SocketAddr, _data: &[u8]) {}
}

#[test]
fn bind_errors_name_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = TcpServer::builder(addr).start().unwrap_err();
    assert_names_address(&e, "tcp", addr);

    let handler = Arc::new(|_: &HttpRequest| HttpResponse::text("x"));
    let e = StatusServer::start(addr, handler).unwrap_err();
    assert_names_address(&e, "http", addr);

    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let Err(e) = UdpServer::<Nothing>::bind(addr) else {
        panic!("bound {addr} twice");
    };
    assert_names_address(&e, "udp", addr);
}

#[test]
fn limits_of_any_size_do_not_overflow_the_clock() {
    // Duration::MAX through the builder (the config loader caps its values,
    // a program may not): "never", not a panic on the first deadline.
    let mut server = builder()
        .max_conn(1)
        .idle_timeout(Duration::MAX)
        .frame_timeout(Duration::MAX)
        .refused_log_interval(Duration::MAX)
        .start()
        .unwrap();
    let addr = server.local_addr();
    let mut c = connect(addr);
    c.write_all(&header(1, 2)).unwrap();
    for _ in 0..3 {
        let mut refused = connect(addr);
        assert!(is_closed(&mut refused));
    }
    assert!(wait_until(|| server.stats().snapshot().refused == 3));
    c.write_all(b"ok").unwrap();
    assert_eq!(read_frame(&mut c), (2, b"ok".to_vec()));
    drop(c);
    assert!(wait_until(|| server.stats().snapshot().open == 0));
    let mut again = connect(addr);
    round_trip(&mut again, b"still accepting");
    drop(again);
    assert!(wait_until(|| server.stats().snapshot().open == 0));
    // A client's connect timeout and backoff alike.
    let mut client = lars_net::TcpClient::builder(addr)
        .connect_timeout(Duration::MAX)
        .backoff(Duration::MAX, Duration::MAX)
        .start()
        .unwrap();
    assert!(wait_until(|| client.is_connected()));
    client.join();
    server.join();
}
