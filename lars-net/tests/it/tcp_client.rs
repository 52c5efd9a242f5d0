use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use lars_net::{DisconnectedPolicy, Router, TcpClient, TcpServer};

use super::common::*;

fn client_builder(addr: std::net::SocketAddr) -> lars_net::ClientBuilder {
    TcpClient::builder(addr).backoff(Duration::from_millis(10), Duration::from_millis(100))
}

#[test]
fn client_reconnects_after_server_restart_and_reruns_on_connect() {
    let mut server = builder().start().unwrap();
    let addr = server.local_addr();
    let connects = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&connects);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let tx = Mutex::new(tx);
    let mut client = client_builder(addr)
        .on_connect(move |c| {
            let k = n.fetch_add(1, Ordering::SeqCst) + 1;
            c.send_raw(1, format!("hello {k}").as_bytes()).unwrap();
        })
        .router(Router::new().route(2, move |_, f| {
            tx.lock().unwrap().send(f.body.to_vec()).unwrap();
        }))
        .start()
        .unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"hello 1");
    assert!(client.is_connected());

    server.join();
    drop(server);
    assert!(wait_until(|| !client.is_connected()));

    let mut server = restart_on(addr);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"hello 2");
    assert!(client.is_connected());
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    // And the sender works across threads after the reconnect.
    let sender = client.sender();
    std::thread::spawn(move || sender.send_frames(frame_bytes(1, b"from thread")))
        .join()
        .unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"from thread");
    client.join();
    server.join();
}

/// Restarts an echo server on `addr`, retrying while the port is briefly busy.
fn restart_on(addr: std::net::SocketAddr) -> TcpServer {
    let mut last = None;
    for _ in 0..100 {
        match TcpServer::builder(addr).router(echo_router()).start() {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot restart on {addr}: {last:?}");
}

#[test]
fn frames_sent_while_disconnected_are_queued_up_to_the_bound() {
    // Find a free port, then leave it closed for now.
    let addr = {
        let mut s = builder().start().unwrap();
        let a = s.local_addr();
        s.join();
        a
    };
    let mut client = client_builder(addr)
        .disconnected_policy(DisconnectedPolicy::Queue(2))
        .start()
        .unwrap();
    for i in 0..3u8 {
        client.sender().send_frames(frame_bytes(1, &[i]));
    }
    assert!(wait_until(|| client.stats().snapshot().dropped == 1));
    assert!(client.stats().snapshot().connect_failures >= 1);

    let (tx, rx) = mpsc::channel::<u8>();
    let tx = Mutex::new(tx);
    let mut server = None;
    for _ in 0..100 {
        let tx2 = tx.lock().unwrap().clone();
        let tx2 = Mutex::new(tx2);
        match TcpServer::builder(addr)
            .router(Router::new().route(1, move |_, f| {
                tx2.lock().unwrap().send(f.body[0]).unwrap();
            }))
            .start()
        {
            Ok(s) => {
                server = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut server = server.unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 0);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 1);
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    client.join();
    server.join();
}

#[test]
fn drop_policy_counts_dropped_frames() {
    let addr = {
        let mut s = builder().start().unwrap();
        let a = s.local_addr();
        s.join();
        a
    };
    let mut client = client_builder(addr)
        .disconnected_policy(DisconnectedPolicy::Drop)
        .start()
        .unwrap();
    client
        .send(1, &lars_core::proto::GetRouteRequest::default())
        .unwrap();
    assert!(wait_until(|| client.stats().snapshot().dropped == 1));
    assert!(!client.is_connected());
    client.join();
}

#[test]
fn a_server_that_refuses_every_connection_is_retried_with_growing_backoff() {
    // maxConn 0: every connection is accepted and closed at once, as a full
    // server does. Each such "connect" must count as a failure for the
    // backoff, or the client reconnects every `min` (a storm against a
    // server that is already full).
    let mut server = builder().max_conn(0).start().unwrap();
    let mut client = TcpClient::builder(server.local_addr())
        .backoff(Duration::from_millis(10), Duration::from_secs(1))
        .start()
        .unwrap();
    assert!(wait_until(|| server.stats().snapshot().refused >= 2));
    std::thread::sleep(Duration::from_secs(1));
    // 10 + 20 + 40 + ... ms: at most 8 attempts fit in the first ~1.3 s
    // (a fixed 10 ms retry would make about a hundred).
    let attempts = server.stats().snapshot().refused;
    assert!(attempts <= 10, "{attempts} attempts in about a second");
    client.join();
    server.join();
}

#[test]
fn a_dialer_picks_each_attempt_failures_are_told_and_close_connection_reconnects() {
    let dead = {
        let mut s = builder().start().unwrap();
        let a = s.local_addr();
        s.join();
        a
    };
    let mut live = builder().start().unwrap();
    let live_addr = live.local_addr();
    // Attempts go to the dead server first, then to the live one, then to
    // the live one again (after a close).
    let plan = Arc::new(Mutex::new(vec![live_addr, live_addr, dead]));
    let asked = Arc::new(AtomicUsize::new(0));
    let (p, a) = (Arc::clone(&plan), Arc::clone(&asked));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::clone(&failed);
    let closes = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&closes);
    let (tx, rx) = mpsc::channel::<std::net::SocketAddr>();
    let tx = Mutex::new(tx);
    let mut client = TcpClient::builder(dead)
        .dialer(move |now| {
            a.fetch_add(1, Ordering::SeqCst);
            let next = p.lock().unwrap().pop().unwrap_or(live_addr);
            (next, now + Duration::from_millis(5))
        })
        .on_connect_failed(move |addr| f.lock().unwrap().push(addr))
        .on_connect(move |conn| tx.lock().unwrap().send(conn.peer_addr()).unwrap())
        .on_close(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .start()
        .unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), live_addr);
    assert_eq!(*failed.lock().unwrap(), vec![dead]);
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    // Closed on demand: the hook runs and the dialer plans the next attempt.
    client.sender().close_connection();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), live_addr);
    assert_eq!(closes.load(Ordering::SeqCst), 1);
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert!(client.is_connected());
    client.join();
    live.join();
}
