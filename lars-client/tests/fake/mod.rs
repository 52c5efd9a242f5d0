//! A fake agent: a real UDP socket on 127.0.0.1 served by one thread that
//! records every frame and answers through a handler. Dropping it stops and
//! joins the thread.

use std::net::{SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::Duration;

use lars_client::ClientConfig;
use lars_core::{Frame, HostAddr, MessageId, frame, proto};

pub struct FakeAgent {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub frames: Receiver<Frame>,
}

impl FakeAgent {
    /// A fake on an ephemeral port; `handler` returns the datagrams to send
    /// back for each frame received.
    pub fn start(handler: impl FnMut(&Frame) -> Vec<Vec<u8>> + Send + 'static) -> Self {
        Self::start_on(UdpSocket::bind("127.0.0.1:0").unwrap(), handler)
    }

    pub fn start_on(
        sock: UdpSocket,
        mut handler: impl FnMut(&Frame) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Self {
        let port = sock.local_addr().unwrap().port();
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, frames) = mpsc::channel();
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(f) = frame::decode_datagram(&buf[..n]) else {
                    continue;
                };
                let replies = handler(&f);
                // Recorded before replying: once a client has its reply, the
                // request is visible in `frames`.
                let _ = tx.send(f);
                for reply in replies {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
            frames,
        }
    }

    /// A client config pointing every key at this fake.
    pub fn config(&self, timeout: Duration) -> ClientConfig {
        ClientConfig::builder()
            .base_port(self.port)
            .port_count(1)
            .timeout(timeout)
            .build()
            .unwrap()
    }

    /// The frames received so far. Datagrams without a reply (reports) may
    /// still be in flight: this waits until none arrived for 100 ms.
    pub fn received(&self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Ok(f) = self.frames.recv_timeout(Duration::from_millis(100)) {
            out.push(f);
        }
        out
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

pub fn host_reply(seq: u32, modid: i32, cmdid: i32, retcode: i32, host: Option<&str>) -> Vec<u8> {
    let host = host.map(|h| h.parse::<HostAddr>().unwrap().to_proto());
    let rsp = proto::GetHostResponse {
        seq,
        modid,
        cmdid,
        retcode,
        host,
    };
    frame::to_bytes(MessageId::GetHostResponse.into(), &rsp)
        .unwrap()
        .to_vec()
}

/// The reply to a GetHostRequest frame, echoing its seq and key.
pub fn answer(f: &Frame, retcode: i32, host: Option<&str>) -> Vec<u8> {
    let req: proto::GetHostRequest = f.message().unwrap();
    host_reply(req.seq, req.modid, req.cmdid, retcode, host)
}

pub fn route_reply(modid: i32, cmdid: i32, hosts: &[&str]) -> Vec<u8> {
    let rsp = proto::GetRouteResponse {
        modid,
        cmdid,
        host: hosts
            .iter()
            .map(|h| h.parse::<HostAddr>().unwrap().to_proto())
            .collect(),
    };
    frame::to_bytes(MessageId::ApiGetRouteResponse.into(), &rsp)
        .unwrap()
        .to_vec()
}

pub fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

pub const GET_HOST: i32 = MessageId::GetHostRequest as i32;
pub const REPORT: i32 = MessageId::ReportRequest as i32;
pub const GET_ROUTE: i32 = MessageId::ApiGetRouteRequest as i32;

/// A fake that answers every GetRouteRequest and GetHostRequest with
/// 10.0.0.1:80 (the load tools' tests use it).
#[allow(dead_code)]
pub fn serving_agent() -> FakeAgent {
    FakeAgent::start(|f| match f.msgid {
        GET_ROUTE => {
            let req: proto::GetRouteRequest = f.message().unwrap();
            vec![route_reply(req.modid, req.cmdid, &["10.0.0.1:80"])]
        }
        GET_HOST => vec![answer(f, 0, Some("10.0.0.1:80"))],
        _ => vec![],
    })
}
