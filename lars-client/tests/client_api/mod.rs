//! LarsClient against fake agents.

use std::io;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lars_client::{ApiError, ClientConfig, LarsClient, Outcome, REG_INIT_ATTEMPTS, timecost_ms};
use lars_core::{MessageId, frame, proto};

use crate::fake::{FakeAgent, GET_HOST, GET_ROUTE, REPORT, addr, answer, host_reply, route_reply};

const T: Duration = Duration::from_millis(500);

#[test]
fn get_host_returns_the_agents_host_and_sends_the_key() {
    let fake = FakeAgent::start(|f| vec![answer(f, 0, Some("192.168.1.177:7777"))]);
    let client = LarsClient::connect(&fake.config(T)).unwrap();
    assert_eq!(client.get_host(3, 7).unwrap(), addr("192.168.1.177:7777"));
    let frames = fake.received();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].msgid, GET_HOST);
    let req: proto::GetHostRequest = frames[0].message().unwrap();
    assert_eq!((req.modid, req.cmdid), (3, 7));
}

#[test]
fn retcodes_map_to_typed_errors() {
    // The fake answers by modid: 1 overload, 2 system, 3 noexist, 4 success
    // without a host, 5 an unknown retcode.
    let fake = FakeAgent::start(|f| {
        let req: proto::GetHostRequest = f.message().unwrap();
        let (code, host) = match req.modid {
            1 => (1, Some("1.2.3.4:5")),
            2 => (2, None),
            3 => (3, None),
            4 => (0, None),
            _ => (42, Some("1.2.3.4:5")),
        };
        vec![answer(f, code, host)]
    });
    let client = LarsClient::connect(&fake.config(T)).unwrap();
    assert!(matches!(client.get_host(1, 1), Err(ApiError::Overload)));
    assert!(matches!(client.get_host(2, 1), Err(ApiError::System)));
    assert!(matches!(client.get_host(3, 1), Err(ApiError::NoExist)));
    assert!(matches!(client.get_host(4, 1), Err(ApiError::System)));
    assert!(matches!(client.get_host(5, 1), Err(ApiError::System)));
}

#[test]
fn stale_and_foreign_replies_are_discarded() {
    // Request 0 is never answered (it times out); request 1 is answered with
    // the late reply of request 0, a reply for another key, a garbage datagram,
    // a reply of the wrong type, and only then its own reply.
    let mut n = 0;
    let fake = FakeAgent::start(move |f| {
        n += 1;
        if f.msgid != GET_HOST || n == 1 {
            return vec![];
        }
        let req: proto::GetHostRequest = f.message().unwrap();
        vec![
            host_reply(
                req.seq.wrapping_sub(1),
                req.modid,
                req.cmdid,
                0,
                Some("6.6.6.6:6"),
            ),
            host_reply(req.seq, req.modid + 1, req.cmdid, 0, Some("7.7.7.7:7")),
            vec![1, 2, 3],
            route_reply(req.modid, req.cmdid, &["8.8.8.8:8"]),
            answer(f, 0, Some("10.0.0.1:80")),
        ]
    });
    let client = LarsClient::connect(&fake.config(Duration::from_millis(100))).unwrap();
    assert!(matches!(client.get_host(1, 1), Err(ApiError::Timeout)));
    assert_eq!(client.get_host(1, 1).unwrap(), addr("10.0.0.1:80"));
}

#[test]
fn a_stalled_agent_times_out_within_the_bound() {
    let fake = FakeAgent::start(|_| vec![]);
    let client = LarsClient::connect(&fake.config(Duration::from_millis(100))).unwrap();
    let t = Instant::now();
    assert!(matches!(client.get_host(1, 1), Err(ApiError::Timeout)));
    assert!(matches!(client.get_route(1, 1), Err(ApiError::Timeout)));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_stream_of_stale_replies_does_not_extend_the_deadline() {
    // A spammer answers the request with 150 stale replies 10 ms apart
    // (1.5 s); the client must give up after its 100 ms.
    let spam = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = spam.local_addr().unwrap().port();
    let spammer = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        spam.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (n, from) = spam.recv_from(&mut buf).unwrap();
        let req: proto::GetHostRequest = frame::decode_datagram(&buf[..n])
            .unwrap()
            .message()
            .unwrap();
        for _ in 0..150 {
            let stale = host_reply(
                req.seq.wrapping_add(1),
                req.modid,
                req.cmdid,
                0,
                Some("6.6.6.6:6"),
            );
            let _ = spam.send_to(&stale, from);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let config = ClientConfig::builder()
        .base_port(port)
        .port_count(1)
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let client = LarsClient::connect(&config).unwrap();
    let t = Instant::now();
    assert!(matches!(client.get_host(1, 1), Err(ApiError::Timeout)));
    let took = t.elapsed();
    spammer.join().unwrap();
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[test]
fn no_agent_listening_is_a_socket_error() {
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = gone.local_addr().unwrap().port();
    drop(gone);
    let config = ClientConfig::builder()
        .base_port(port)
        .port_count(1)
        .timeout(T)
        .build()
        .unwrap();
    let client = LarsClient::connect(&config).unwrap();
    match client.get_host(1, 1) {
        Err(ApiError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
        other => panic!("expected ConnectionRefused, got {other:?}"),
    }
}

#[test]
fn report_sends_the_exact_frame_with_timecost() {
    let fake = FakeAgent::start(|_| vec![]);
    let client = LarsClient::connect(&fake.config(T)).unwrap();
    let host = addr("192.168.1.177:7777");
    client
        .report(
            5,
            6,
            host,
            Outcome::Failure,
            Some(Duration::from_millis(12)),
        )
        .unwrap();
    client.report(5, 6, host, Outcome::Success, None).unwrap();
    let frames: Vec<_> = (0..2)
        .map(|_| fake.frames.recv_timeout(T).unwrap())
        .collect();
    let expected = |retcode, timecost| proto::ReportRequest {
        modid: 5,
        cmdid: 6,
        host: Some(proto::HostInfo {
            ip: 3_232_235_953u32 as i32,
            port: 7777,
        }),
        retcode,
        timecost,
    };
    assert_eq!(frames[0].msgid, REPORT);
    assert_eq!(
        frames[0].message::<proto::ReportRequest>().unwrap(),
        expected(1, 12)
    );
    assert_eq!(
        frames[1].message::<proto::ReportRequest>().unwrap(),
        expected(0, 0)
    );
    let bytes = frame::to_bytes(MessageId::ReportRequest.into(), &expected(1, 12)).unwrap();
    assert_eq!(frames[0].body, bytes.slice(8..));
}

#[test]
fn report_carries_the_latency_of_successes_and_failures_at_least_1_ms() {
    let fake = FakeAgent::start(|_| vec![]);
    let client = LarsClient::connect(&fake.config(T)).unwrap();
    let host = addr("10.0.0.1:80");
    let sent = [
        (Outcome::Success, Some(Duration::from_millis(7)), (0, 7)),
        (Outcome::Success, Some(Duration::from_micros(300)), (0, 1)),
        (Outcome::Success, Some(Duration::ZERO), (0, 1)),
        (Outcome::Success, None, (0, 0)),
        (Outcome::Failure, Some(Duration::from_micros(1_900)), (1, 1)),
        (Outcome::Failure, Some(Duration::from_secs(1)), (1, 1000)),
        (Outcome::Failure, Some(Duration::MAX), (1, u32::MAX)),
    ];
    for (outcome, timecost, _) in sent {
        client.report(1, 1, host, outcome, timecost).unwrap();
    }
    let got: Vec<(i32, u32)> = (0..sent.len())
        .map(|_| {
            let r: proto::ReportRequest = fake.frames.recv_timeout(T).unwrap().message().unwrap();
            (r.retcode, r.timecost)
        })
        .collect();
    let want: Vec<(i32, u32)> = sent.iter().map(|s| s.2).collect();
    assert_eq!(got, want);
}

#[test]
fn timecost_ms_keeps_known_latencies_known() {
    assert_eq!(timecost_ms(None), 0);
    assert_eq!(timecost_ms(Some(Duration::ZERO)), 1);
    assert_eq!(timecost_ms(Some(Duration::from_nanos(1))), 1);
    assert_eq!(timecost_ms(Some(Duration::from_micros(2_500))), 2);
    assert_eq!(timecost_ms(Some(Duration::from_secs(5_000_000))), u32::MAX);
}

#[test]
fn get_route_parses_the_hosts_of_its_own_key() {
    let fake = FakeAgent::start(|f| {
        let req: proto::GetRouteRequest = f.message().unwrap();
        if req.modid == 9 {
            return vec![route_reply(9, 1, &[])];
        }
        vec![
            route_reply(req.modid + 1, req.cmdid, &["6.6.6.6:6"]),
            host_reply(0, req.modid, req.cmdid, 0, Some("7.7.7.7:7")),
            route_reply(
                req.modid,
                req.cmdid,
                &["10.0.0.1:80", "10.0.0.2:81", "192.168.1.177:7777"],
            ),
        ]
    });
    let client = LarsClient::connect(&fake.config(T)).unwrap();
    assert_eq!(
        client.get_route(2, 3).unwrap(),
        vec![
            addr("10.0.0.1:80"),
            addr("10.0.0.2:81"),
            addr("192.168.1.177:7777")
        ]
    );
    assert_eq!(client.get_route(9, 1).unwrap(), vec![]);
    let frames = fake.received();
    assert!(frames.iter().all(|f| f.msgid == GET_ROUTE));
}

#[test]
fn reg_init_retries_while_the_route_is_empty() {
    let mut n = 0;
    let fake = FakeAgent::start(move |f| {
        let req: proto::GetRouteRequest = f.message().unwrap();
        n += 1;
        let hosts: &[&str] = if req.modid == 1 && n >= 3 {
            &["10.0.0.1:80"]
        } else {
            &[]
        };
        vec![route_reply(req.modid, req.cmdid, hosts)]
    });
    let client = LarsClient::connect(&fake.config(T)).unwrap();
    assert_eq!(client.reg_init(1, 1).unwrap(), vec![addr("10.0.0.1:80")]);
    assert_eq!(fake.received().len(), 3);
    assert!(matches!(client.reg_init(2, 1), Err(ApiError::NoExist)));
    assert_eq!(fake.received().len(), REG_INIT_ATTEMPTS as usize);
}

/// Binds three consecutive ports on 127.0.0.1.
fn three_consecutive_ports() -> Vec<UdpSocket> {
    for _ in 0..100 {
        let first = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = first.local_addr().unwrap().port();
        if p > 65_533 {
            continue;
        }
        let rest: Result<Vec<_>, _> = (1..3)
            .map(|i| UdpSocket::bind(("127.0.0.1", p + i)))
            .collect();
        if let Ok(rest) = rest {
            return std::iter::once(first).chain(rest).collect();
        }
    }
    panic!("no three consecutive free ports");
}

#[test]
fn keys_go_to_base_port_plus_modid_plus_cmdid_mod_3() {
    let socks = three_consecutive_ports();
    let base = socks[0].local_addr().unwrap().port();
    // Each fake answers with its own index as the host port.
    let fakes: Vec<FakeAgent> = socks
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let host = format!("10.0.0.1:{}", 100 + i);
            FakeAgent::start_on(s, move |f| vec![answer(f, 0, Some(&host))])
        })
        .collect();
    let config = ClientConfig::builder()
        .base_port(base)
        .timeout(T)
        .build()
        .unwrap();
    let client = LarsClient::connect(&config).unwrap();
    for (modid, cmdid) in [(1, 1), (1, 2), (1, 3), (7, 5), (100, 1)] {
        let expected = 100 + (modid + cmdid) % 3;
        assert_eq!(
            client.get_host(modid, cmdid).unwrap().port(),
            expected as u16
        );
    }
    drop(fakes);
}

#[test]
fn the_client_can_be_sent_and_shared() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LarsClient>();
}

#[test]
fn one_client_shared_by_threads_gets_each_thread_its_own_reply() {
    // The fake answers with the key in the host port, so a reply read by the
    // wrong thread would show.
    let fake = FakeAgent::start(|f| {
        let req: proto::GetHostRequest = f.message().unwrap();
        let host = format!("10.0.0.1:{}", 1000 + req.modid);
        vec![answer(f, 0, Some(&host))]
    });
    let client = Arc::new(LarsClient::connect(&fake.config(T)).unwrap());
    let threads: Vec<_> = (1..=4u32)
        .map(|modid| {
            let client = Arc::clone(&client);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let host = client.get_host(modid, 1).unwrap();
                    assert_eq!(u32::from(host.port()), 1000 + modid);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
