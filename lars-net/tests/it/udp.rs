use std::sync::mpsc;
use std::time::Duration;

use lars_core::proto::{GetHostRequest, GetHostResponse};
use lars_net::{UdpClient, UdpServer};

use super::common::WAIT;

/// State: how many requests this loop answered.
fn start_counter() -> UdpServer<u32> {
    UdpServer::start("127.0.0.1:0".parse().unwrap(), 0u32, |n, ctx, f, _peer| {
        if f.msgid == 4 {
            let req: GetHostRequest = f.message().unwrap();
            *n += 1;
            let resp = GetHostResponse {
                seq: req.seq,
                modid: req.modid,
                cmdid: req.cmdid,
                retcode: *n as i32,
                host: None,
            };
            ctx.reply(5, &resp).unwrap();
        }
    })
    .unwrap()
}

#[test]
fn bad_datagram_dropped_good_ones_answered() {
    let mut server = start_counter();
    let mut c = UdpClient::connect(server.local_addr()).unwrap();
    // Header says 10 bytes of body, 2 present.
    let mut bad = 4i32.to_le_bytes().to_vec();
    bad.extend_from_slice(&10i32.to_le_bytes());
    bad.extend_from_slice(&[1, 2]);
    c.send_bytes(&bad).unwrap();
    c.send_bytes(&[1, 2, 3]).unwrap();
    for seq in 1..=3u32 {
        c.send(
            4,
            &GetHostRequest {
                seq,
                modid: 1,
                cmdid: 2,
            },
        )
        .unwrap();
        let f = c.recv(WAIT).unwrap();
        assert_eq!(f.msgid, 5);
        let resp: GetHostResponse = f.message().unwrap();
        assert_eq!((resp.seq, resp.retcode), (seq, seq as i32));
    }
    assert_eq!(
        server
            .stats()
            .bad_datagrams
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    server.join();
}

#[test]
fn posted_tasks_and_timers_get_the_loop_state() {
    let mut server = start_counter();
    let mut c = UdpClient::connect(server.local_addr()).unwrap();
    c.send(
        4,
        &GetHostRequest {
            seq: 1,
            modid: 1,
            cmdid: 1,
        },
    )
    .unwrap();
    c.recv(WAIT).unwrap();

    let (tx, rx) = mpsc::channel();
    let h = server.handle();
    assert!(h.post(move |n, _| {
        *n += 100;
        tx.send(*n).unwrap();
    }));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 101);

    // A timer that can also send: pushes the count to our client.
    let to = c.local_addr().unwrap();
    h.run_after(Duration::from_millis(5), move |n, ctx| {
        ctx.send_raw_to(to, 9, &n.to_le_bytes()).unwrap();
    });
    let f = c.recv(WAIT).unwrap();
    assert_eq!((f.msgid, &f.body[..]), (9, &101u32.to_le_bytes()[..]));
    server.join();
    assert!(!server.handle().post(|_, _| {}));
}

#[test]
fn several_sockets_share_one_loop_and_its_state() {
    let (tx, rx) = mpsc::channel::<u32>();
    let tx = std::sync::Mutex::new(tx);
    let handler = |n: &mut u32, ctx: &mut lars_net::UdpCtx<'_>, _f: lars_core::Frame, _p| {
        *n += 1;
        let idx = ctx.socket_index() as u8;
        ctx.reply(
            6,
            &GetHostRequest {
                seq: *n,
                modid: i32::from(idx),
                cmdid: 0,
            },
        )
        .unwrap();
    };
    let mut server = UdpServer::builder(0u32)
        .bind("127.0.0.1:0".parse().unwrap(), handler)
        .bind("127.0.0.1:0".parse().unwrap(), handler)
        .every(Duration::from_millis(10), move |n, _| {
            let _ = tx.lock().unwrap().send(*n);
        })
        .start()
        .unwrap();
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let mut got = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let mut c = UdpClient::connect(*a).unwrap();
        c.send_raw(4, b"").unwrap();
        let r: GetHostRequest = c.recv(WAIT).unwrap().message().unwrap();
        assert_eq!(r.modid, i as i32);
        got.push(r.seq);
    }
    assert_eq!(got, vec![1, 2], "one state shared by both sockets");
    // The periodic timer eventually observes both requests.
    while rx.recv_timeout(WAIT).unwrap() != 2 {}
    server.join();
}
