use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use lars_net::ConnId;

use super::common::*;

#[test]
fn bad_lengths_close_only_that_connection() {
    let mut server = builder().threads(2).start().unwrap();
    let mut good = connect(server.local_addr());
    round_trip(&mut good, b"before");
    for bad_len in [-1i32, 65_536] {
        let mut bad = connect(server.local_addr());
        round_trip(&mut bad, b"fine so far");
        bad.write_all(&header(1, bad_len)).unwrap();
        assert!(
            is_closed(&mut bad),
            "msglen {bad_len} must close the connection"
        );
        round_trip(&mut good, b"still served");
    }
    let stats = server.stats().snapshot();
    assert_eq!(stats.bad_frames, 2);
    assert!(wait_until(|| server.stats().snapshot().open == 1));
    server.join();
}

#[test]
fn unknown_msgid_is_skipped_and_counted() {
    let mut server = builder().start().unwrap();
    let mut c = connect(server.local_addr());
    write_frame(&mut c, 99, b"who knows");
    write_frame(&mut c, 1, b"known");
    assert_eq!(read_frame(&mut c), (2, b"known".to_vec()));
    assert_eq!(server.stats().snapshot().unknown_msgids, 1);
    assert_eq!(server.stats().snapshot().frames_in, 2);
    server.join();
}

#[test]
fn connection_over_max_conn_is_refused_others_keep_working() {
    let mut server = builder().threads(2).max_conn(2).start().unwrap();
    let mut a = connect(server.local_addr());
    let mut b = connect(server.local_addr());
    round_trip(&mut a, b"a");
    round_trip(&mut b, b"b");
    let mut c = connect(server.local_addr());
    assert!(is_closed(&mut c), "third connection must be closed");
    round_trip(&mut a, b"a2");
    round_trip(&mut b, b"b2");
    assert_eq!(server.stats().snapshot().refused, 1);
    // Once one closes, a new one is accepted again.
    drop(a);
    assert!(wait_until(|| server.stats().snapshot().open == 1));
    let mut d = connect(server.local_addr());
    round_trip(&mut d, b"d");
    server.join();
}

#[test]
fn connections_are_spread_over_all_workers() {
    let mut server = builder().threads(3).start().unwrap();
    let mut seen = BTreeSet::new();
    let mut conns: Vec<_> = (0..6).map(|_| connect(server.local_addr())).collect();
    for c in &mut conns {
        write_frame(c, 3, b"");
        let (id, body) = read_frame(c);
        assert_eq!(id, 4);
        seen.insert(body[0]);
    }
    assert_eq!(seen, BTreeSet::from([0, 1, 2]));
    server.join();
}

#[test]
fn a_connection_is_reached_by_id_from_another_thread() {
    let (tx, rx) = mpsc::channel::<ConnId>();
    let tx = Mutex::new(tx);
    let closed = Arc::new(AtomicUsize::new(0));
    let cl = Arc::clone(&closed);
    let mut server = builder()
        .threads(2)
        .on_connect(move |c| {
            c.set_data(String::from("state"));
            tx.lock().unwrap().send(c.id()).unwrap();
        })
        .on_close(move |c| {
            assert_eq!(c.data::<String>().map(String::as_str), Some("state"));
            cl.fetch_add(1, Ordering::SeqCst);
        })
        .start()
        .unwrap();
    let mut c1 = connect(server.local_addr());
    let mut c2 = connect(server.local_addr());
    let id1 = rx.recv_timeout(WAIT).unwrap();
    let id2 = rx.recv_timeout(WAIT).unwrap();
    assert_ne!(id1, id2);
    let handle = server.handle();
    std::thread::spawn(move || {
        assert!(handle.with_conn(id2, |c| c.send_raw(7, b"to two").unwrap()));
        assert!(handle.with_conn(id1, |c| c.send_raw(7, b"to one").unwrap()));
    })
    .join()
    .unwrap();
    // Which socket got which id depends on accept order: match by body.
    let mut bodies = BTreeSet::new();
    for c in [&mut c1, &mut c2] {
        let (id, body) = read_frame(c);
        assert_eq!(id, 7);
        bodies.insert(body);
    }
    assert_eq!(
        bodies,
        BTreeSet::from([b"to one".to_vec(), b"to two".to_vec()])
    );
    drop(c1);
    assert!(wait_until(|| closed.load(Ordering::SeqCst) == 1));
    server.join();
}

#[test]
fn shutdown_joins_every_thread_and_closes_connections() {
    let mut server = builder().threads(2).name("sdtest").start().unwrap();
    let mut c = connect(server.local_addr());
    round_trip(&mut c, b"x");
    assert!(thread_names().iter().any(|n| n.starts_with("sdtest")));
    server.join();
    assert!(
        !thread_names().iter().any(|n| n.starts_with("sdtest")),
        "{:?}",
        thread_names()
    );
    assert!(is_closed(&mut c));
}

#[test]
fn many_frames_in_one_write_are_all_answered() {
    let mut server = builder().start().unwrap();
    let mut c = connect(server.local_addr());
    let mut all = Vec::new();
    for i in 0..1000u32 {
        all.extend_from_slice(&header(1, 4));
        all.extend_from_slice(&i.to_le_bytes());
    }
    c.write_all(&all).unwrap();
    for i in 0..1000u32 {
        assert_eq!(read_frame(&mut c), (2, i.to_le_bytes().to_vec()));
    }
    server.join();
}

#[test]
fn large_replies_are_flushed_when_writable() {
    // 200 replies of ~60 KiB each exceed the socket buffers: the server must
    // queue and finish on WRITABLE while the client reads slowly.
    let body = vec![7u8; 60_000];
    let mut server = builder().start().unwrap();
    let mut c = connect(server.local_addr());
    for _ in 0..200 {
        write_frame(&mut c, 1, &body);
    }
    for _ in 0..200 {
        assert_eq!(read_frame(&mut c), (2, body.clone()));
    }
    server.join();
}
