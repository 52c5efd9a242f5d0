use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lars_core::frame;
use lars_core::proto::{GetHostRequest, GetHostResponse};
use lars_net::{UdpIo, UdpServer, UdpService};

use super::common::{WAIT, thread_names};

/// Answers every GetHostRequest (msgid 4) with a GetHostResponse (5) whose
/// retcode counts the requests answered; other datagrams are counted as bad.
/// `tick` fires its deadline once, `after` its arming.
#[derive(Debug, Default)]
struct Counter {
    answered: u32,
    bad: u32,
    deadline: Option<Instant>,
    fired: Option<mpsc::Sender<u32>>,
}

impl UdpService for Counter {
    fn on_datagram(&mut self, io: &mut UdpIo<'_>, from: SocketAddr, data: &[u8]) {
        let req = frame::decode_datagram(data)
            .ok()
            .filter(|f| f.msgid == 4)
            .and_then(|f| f.message::<GetHostRequest>().ok());
        let Some(req) = req else {
            self.bad += 1;
            return;
        };
        self.answered += 1;
        let resp = GetHostResponse {
            seq: req.seq,
            modid: req.modid,
            cmdid: req.cmdid,
            retcode: self.answered as i32,
            host: None,
        };
        io.send(from, 5, &resp).unwrap();
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.deadline
    }

    fn on_timeout(&mut self, _io: &mut UdpIo<'_>, _now: Instant) {
        self.deadline = None;
        if let Some(tx) = &self.fired {
            tx.send(self.answered).unwrap();
        }
    }
}

fn client(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn ask(c: &UdpSocket, seq: u32) -> GetHostResponse {
    let req = GetHostRequest {
        seq,
        modid: 1,
        cmdid: 2,
    };
    c.send(&frame::to_bytes(4, &req).unwrap()).unwrap();
    let mut buf = [0u8; 1500];
    let n = c.recv(&mut buf).unwrap();
    let f = frame::decode_datagram(&buf[..n]).unwrap();
    assert_eq!(f.msgid, 5);
    f.message().unwrap()
}

#[test]
fn datagrams_reach_the_service_and_replies_come_from_its_socket() {
    let mut server = UdpServer::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .start(Counter::default())
        .unwrap();
    let c = client(server.local_addr());
    c.send(&[1, 2, 3]).unwrap();
    for seq in 1..=3u32 {
        let r = ask(&c, seq);
        assert_eq!((r.seq, r.retcode), (seq, seq as i32));
    }
    let (tx, rx) = mpsc::channel();
    assert!(server.handle().post(move |s, _| tx.send(s.bad).unwrap()));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 1);
    server.join();
    assert!(!server.handle().post(|_, _| {}));
}

#[test]
fn the_handle_works_before_start_and_posted_tasks_can_send() {
    let b = UdpServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = b.local_addr();
    let h = b.handle();
    let c = client(addr);
    // Posted before the service exists: runs once it does.
    let to = c.local_addr().unwrap();
    assert!(h.post(move |s: &mut Counter, io| {
        s.answered += 100;
        let msg = GetHostResponse {
            seq: 9,
            retcode: s.answered as i32,
            ..GetHostResponse::default()
        };
        io.send(to, 5, &msg).unwrap();
    }));
    let mut server = b.name("udp-early").start(Counter::default()).unwrap();
    let mut buf = [0u8; 1500];
    let n = c.recv(&mut buf).unwrap();
    let r: GetHostResponse = frame::decode_datagram(&buf[..n])
        .unwrap()
        .message()
        .unwrap();
    assert_eq!((r.seq, r.retcode), (9, 100));
    assert_eq!(ask(&c, 1).retcode, 101);
    server.join();
    assert!(!thread_names().iter().any(|n| n == "udp-early"));
}

#[test]
fn the_service_deadline_fires_and_a_spinning_server_still_answers() {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let service = Counter {
        deadline: Some(start + Duration::from_millis(50)),
        fired: Some(tx),
        ..Counter::default()
    };
    let mut server = UdpServer::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .spin(20)
        .start(service)
        .unwrap();
    let c = client(server.local_addr());
    for seq in 1..=100u32 {
        assert_eq!(ask(&c, seq).retcode, seq as i32);
    }
    // The deadline fires once, not before it is due, whatever the traffic.
    let answered = rx.recv_timeout(WAIT).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(answered <= 100);
    // A new deadline, armed from another thread, wakes the sleeping loop.
    let h = server.handle();
    assert!(h.post(|s, _| s.deadline = Some(Instant::now() + Duration::from_millis(10))));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), 100);
    server.join();
}

/// Blocks the loop on its first datagram until released.
struct Stuck(Option<mpsc::Receiver<()>>);

impl UdpService for Stuck {
    fn on_datagram(&mut self, _io: &mut UdpIo<'_>, _from: SocketAddr, _data: &[u8]) {
        if let Some(rx) = self.0.take() {
            let _ = rx.recv_timeout(WAIT);
        }
    }
}

#[test]
fn kernel_drops_are_counted_and_the_receive_buffer_can_be_raised() {
    // A raised buffer: Linux reports twice what it granted, capped by
    // net.core.rmem_max; at least the 256 KiB asked is never less than the
    // default 208 KiB it replaces.
    let b = UdpServer::<Stuck>::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let before = b.recv_buffer_size().unwrap();
    let b = b.recv_buffer(1 << 20);
    let granted = b.recv_buffer_size().unwrap();
    assert!(granted >= before, "{granted} < {before}");
    if let Some(max) = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|m| m.trim().parse::<usize>().ok())
    {
        assert!(granted >= max.min(1 << 20), "{granted}, rmem_max {max}");
    }
    drop(b);

    // A small buffer behind a stuck loop: a burst overflows it, and the
    // overflow shows in kernel_drops().
    let b = UdpServer::<Stuck>::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .recv_buffer(4096);
    let (release, rx) = mpsc::channel();
    let mut server = b.start(Stuck(Some(rx))).unwrap();
    if server.kernel_drops().is_none() {
        lars_testkit::skip("udp kernel_drops", "no /proc/net/udp on this system");
        return;
    }
    // Usually 0; stray datagrams from other tests (to a port this socket
    // reuses) may already have been dropped, so compare with the start.
    let before = server.kernel_drops().unwrap();
    let c = client(server.local_addr());
    c.send(&[0]).unwrap();
    std::thread::sleep(Duration::from_millis(100)); // the loop is now stuck
    for _ in 0..2000 {
        let _ = c.send(&[0u8; 512]);
    }
    let drops = server.handle().kernel_drops().unwrap();
    assert!(
        drops > before,
        "no drops counted after a 2000-datagram burst ({before} before, {drops} after)"
    );
    release.send(()).unwrap();
    server.join();
}
