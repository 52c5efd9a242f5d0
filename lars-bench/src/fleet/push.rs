//! Part (a), the push: `n` lean subscribers (non-blocking sockets on one mio
//! loop, speaking the frame protocol: `GetRouteRequest` out,
//! `GetRouteResponse` in) each subscribe to one key on one of the dns
//! processes; once every one holds its first answer, the bench writes a route
//! change to the shared store and times, per subscriber, the arrival of the
//! push that carries the new host.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lars_core::proto::{GetRouteRequest, GetRouteResponse};
use lars_core::{HostAddr, MessageId, ModKey, frame};
use lars_store::RouteAdmin;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::{FleetError, Latency};

/// What part (a) saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    /// Subscriber connections asked for.
    pub subscribers: usize,
    /// Connections that held their first answer before the change.
    pub subscribed: usize,
    /// Connections that could not connect or were closed by the dns.
    pub failed: usize,
    /// Subscribers that received the pushed change.
    pub pushed: usize,
    /// Subscribed connections that had no push by the deadline.
    pub timed_out: usize,
    /// Seconds the subscriptions took (connect + first answer, all).
    pub subscribe_secs: f64,
    /// Seconds the route change took to commit in the store.
    pub write_secs: f64,
    /// The dns processes' version poll interval (`[dns] version_interval`),
    /// part of every push latency: seconds.
    pub dns_poll_secs: f64,
    /// From the start of the store write until each subscriber had the push.
    pub latency: Latency,
}

struct Sub {
    stream: MioStream,
    buf: BytesMut,
    subscribed: bool,
    pushed_at: Option<Instant>,
    closed: bool,
}

/// How part (a) runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub subscribers: usize,
    /// The key every subscriber asks for.
    pub key: ModKey,
    /// Its hosts after the change.
    pub hosts_after: Vec<HostAddr>,
    /// The host the change adds (what a push must carry).
    pub new_host: HostAddr,
    /// The dns processes' version poll interval.
    pub dns_poll: Duration,
}

/// Runs part (a) against running dns processes at `dns` that serve
/// `plan.key` (currently without `plan.new_host`).
pub(crate) fn run(
    dns: &[SocketAddr],
    store: &lars_store::Store,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<PushReport, FleetError> {
    let (subscribers, key, new_host, dns_poll) =
        (plan.subscribers, plan.key, plan.new_host, plan.dns_poll);
    let mut report = PushReport {
        subscribers,
        dns_poll_secs: dns_poll.as_secs_f64(),
        ..PushReport::default()
    };
    let request = frame::to_bytes(
        MessageId::GetRouteRequest.into(),
        &GetRouteRequest {
            modid: key.to_wire().0,
            cmdid: key.to_wire().1,
        },
    )
    .map_err(|e| FleetError::Invalid(e.to_string()))?;
    let mut poll = Poll::new().map_err(FleetError::Io)?;
    let mut subs: Vec<Sub> = Vec::with_capacity(subscribers);
    let start = Instant::now();
    for i in 0..subscribers {
        let Some(&addr) = dns.get(i % dns.len().max(1)) else {
            break;
        };
        match connect_and_ask(addr, &request) {
            Ok(std) => {
                let mut stream = MioStream::from_std(std);
                poll.registry()
                    .register(&mut stream, Token(subs.len()), Interest::READABLE)
                    .map_err(FleetError::Io)?;
                subs.push(Sub {
                    stream,
                    buf: BytesMut::with_capacity(256),
                    subscribed: false,
                    pushed_at: None,
                    closed: false,
                });
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!("subscriber {i} cannot connect to {addr}: {e}");
            }
        }
        if i % 2000 == 1999 {
            progress(&format!("push: {} subscribers connected", i + 1));
        }
    }
    // Every first answer, bounded.
    let deadline =
        Instant::now() + Duration::from_secs(30) + Duration::from_millis(subs.len() as u64);
    let mut events = Events::with_capacity(1024);
    let mut waiting = subs.len();
    while waiting > 0 && Instant::now() < deadline {
        poll_once(
            &mut poll,
            &mut events,
            &mut subs,
            key,
            new_host,
            &mut waiting,
            true,
        )?;
    }
    report.subscribe_secs = start.elapsed().as_secs_f64();
    report.subscribed = subs.iter().filter(|s| s.subscribed && !s.closed).count();
    progress(&format!(
        "push: {} of {} subscribed in {:.1} s; writing the route change",
        report.subscribed, subscribers, report.subscribe_secs
    ));

    let t0 = Instant::now();
    store.set_hosts(key, &plan.hosts_after)?;
    report.write_secs = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + dns_poll + Duration::from_secs(30);
    let mut waiting = report.subscribed;
    while waiting > 0 && Instant::now() < deadline {
        poll_once(
            &mut poll,
            &mut events,
            &mut subs,
            key,
            new_host,
            &mut waiting,
            false,
        )?;
    }
    let mut lat = Vec::with_capacity(subs.len());
    for s in &subs {
        if !s.subscribed {
            continue;
        }
        match s.pushed_at {
            Some(at) => lat.push(at.saturating_duration_since(t0)),
            None => report.timed_out += 1,
        }
    }
    report.failed += subs.iter().filter(|s| s.closed).count();
    report.pushed = lat.len();
    report.latency = Latency::of(&mut lat);
    Ok(report)
}

fn connect_and_ask(addr: SocketAddr, request: &[u8]) -> io::Result<TcpStream> {
    use std::io::Write as _;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.write_all(request)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// One poll round: reads every readable subscriber and decodes its frames.
/// `subscribing`: counting first answers (else pushes carrying `new_host`).
fn poll_once(
    poll: &mut Poll,
    events: &mut Events,
    subs: &mut [Sub],
    key: ModKey,
    new_host: HostAddr,
    waiting: &mut usize,
    subscribing: bool,
) -> Result<(), FleetError> {
    match poll.poll(events, Some(Duration::from_millis(50))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
        Err(e) => return Err(FleetError::Io(e)),
    }
    let now = Instant::now();
    for ev in events.iter() {
        let Some(sub) = subs.get_mut(ev.token().0) else {
            continue;
        };
        if sub.closed {
            continue;
        }
        let mut chunk = [0u8; 4096];
        loop {
            match sub.stream.read(&mut chunk) {
                Ok(0) => {
                    sub.closed = true;
                    break;
                }
                Ok(n) => sub
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    sub.closed = true;
                    break;
                }
            }
        }
        loop {
            let f = match frame::decode(&mut sub.buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("bad frame from the dns: {e}");
                    sub.closed = true;
                    break;
                }
            };
            if f.msgid != i32::from(MessageId::GetRouteResponse) {
                continue;
            }
            let Ok(resp) = f.message::<GetRouteResponse>() else {
                continue;
            };
            if ModKey::from_wire(resp.modid, resp.cmdid) != key {
                continue;
            }
            let has_new = resp
                .host
                .iter()
                .any(|h| HostAddr::from_wire(h.ip, h.port) == Some(new_host));
            if subscribing {
                if !sub.subscribed {
                    sub.subscribed = true;
                    *waiting = waiting.saturating_sub(1);
                }
            } else if has_new && sub.subscribed && sub.pushed_at.is_none() {
                sub.pushed_at = Some(now);
                *waiting = waiting.saturating_sub(1);
            }
        }
        if sub.closed
            && ((subscribing && !sub.subscribed) || (!subscribing && sub.pushed_at.is_none()))
        {
            *waiting = waiting.saturating_sub(1);
        }
    }
    Ok(())
}
