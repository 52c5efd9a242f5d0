//! The agent's UDP path in-process: arbitrary datagrams (raw bytes, or
//! well-formed GetHost / Report / GetRoute requests so the fuzzer reaches the
//! deep states quickly) into `AgentCore::handle_datagram`, mixed with dns
//! frames, connection events and time advancing, with every output drained
//! after each step. No sockets.
//!
//! Invariants: no panic; a host handed to an application belongs to the
//! key's route; a request is forwarded only to another existing shard; the
//! GetHost counters add up; every GetHost / GetRoute request gets exactly one
//! reply; the outbound frames encode.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use lars_agent::core::{AgentCore, CoreConfig, Reply, Request, Shard, Transmit};
use lars_core::proto::{
    GetHostRequest, GetRouteRequest, GetRouteResponse, HostInfo, ReportRequest,
};
use lars_core::{Frame, HostAddr, MessageId, ModKey, RetCode, frame};
use lars_lb::LoadBalanceConfig;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    shard: u8,
    shards: u8,
    classic: bool,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Raw(Vec<u8>),
    GetHost {
        seq: u32,
        key: u8,
    },
    Report {
        key: u8,
        host: u8,
        retcode: i32,
        timecost: u32,
    },
    GetRoute {
        key: u8,
    },
    /// A GetRouteResponse from the dns: the key and a mask of hosts.
    Route {
        key: u8,
        hosts: u16,
    },
    DnsRaw {
        msgid: i32,
        body: Vec<u8>,
    },
    Advance {
        ms: u16,
    },
    DnsUp,
    DnsDown,
    /// Reporter link `link % 3` connected (a new epoch).
    ReporterUp {
        link: u8,
    },
    /// Reporter link `link % 3` lost.
    ReporterDown {
        link: u8,
    },
}

/// Keys and hosts from small sets, so requests meet the routes.
fn key(k: u8) -> ModKey {
    ModKey::new(u32::from(k % 4) + 1, u32::from(k / 4 % 2) + 1)
}

fn host(h: u8) -> HostAddr {
    HostAddr::new(0x0a00_0000 | u32::from(h % 16), 80 + u16::from(h % 3))
}

fuzz_target!(|input: Input| {
    let count = usize::from(input.shards % 3) + 1;
    let Some(shard) = Shard::new(usize::from(input.shard) % count, count) else {
        return;
    };
    let lb = if input.classic {
        LoadBalanceConfig::classic()
    } else {
        LoadBalanceConfig::default()
    };
    // Three reporter links: keys shard over them, move on a grace and hold.
    let mut core = AgentCore::new(CoreConfig::new(lb).shard(shard).reporters(
        REPORTER_LINKS,
        Duration::from_secs(2),
        Duration::from_secs(1),
    ));
    let app: SocketAddr = "127.0.0.1:40000".parse().expect("literal");
    let t0 = Instant::now();
    let mut now = t0;
    let mut epoch = 0;
    for op in input.ops.into_iter().take(256) {
        let mut asks = 0;
        match op {
            Op::Raw(d) => {
                asks += expect_reply(&d, shard);
                core.handle_datagram(app, &d, now);
            }
            Op::GetHost { seq, key: k } => {
                let (modid, cmdid) = key(k).to_wire();
                let d = bytes(
                    MessageId::GetHostRequest,
                    &GetHostRequest { seq, modid, cmdid },
                );
                asks += expect_reply(&d, shard);
                core.handle_datagram(app, &d, now);
            }
            Op::Report {
                key: k,
                host: h,
                retcode,
                timecost,
            } => {
                let (modid, cmdid) = key(k).to_wire();
                let host = Some(host(h).to_proto());
                let r = ReportRequest {
                    modid,
                    cmdid,
                    host,
                    retcode,
                    timecost,
                };
                core.handle_datagram(app, &bytes(MessageId::ReportRequest, &r), now);
            }
            Op::GetRoute { key: k } => {
                let (modid, cmdid) = key(k).to_wire();
                let d = bytes(
                    MessageId::ApiGetRouteRequest,
                    &GetRouteRequest { modid, cmdid },
                );
                asks += expect_reply(&d, shard);
                core.handle_datagram(app, &d, now);
            }
            Op::Route { key: k, hosts } => {
                let (modid, cmdid) = key(k).to_wire();
                let host: Vec<HostInfo> = (0..16u8)
                    .filter(|i| hosts & (1 << i) != 0)
                    .map(|i| host(i).to_proto())
                    .collect();
                let rsp = GetRouteResponse { modid, cmdid, host };
                let f = frame::decode_datagram(&bytes(MessageId::GetRouteResponse, &rsp))
                    .expect("own frame decodes");
                core.handle_dns_frame(&f, now);
            }
            Op::DnsRaw { msgid, body } => {
                let f = Frame {
                    msgid,
                    body: body.into(),
                };
                core.handle_dns_frame(&f, now);
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms) * 10);
                let unix = 1_700_000_000 + (now - t0).as_secs() as u32;
                core.handle_timeout(now, unix);
            }
            Op::DnsUp => core.on_dns_connected(now),
            Op::DnsDown => core.on_dns_disconnected(),
            Op::ReporterUp { link } => {
                epoch += 1;
                let link = usize::from(link) % REPORTER_LINKS;
                let caller = "10.0.0.100".parse().expect("literal");
                core.on_reporter_connected(link, epoch, caller, now);
            }
            Op::ReporterDown { link } => {
                core.on_reporter_disconnected(usize::from(link) % REPORTER_LINKS, now);
            }
        }
        drain(&mut core, shard, asks);
        let c = core.counters();
        assert_eq!(
            c.get_host,
            c.get_host_succ + c.get_host_overload + c.get_host_noexist
        );
    }
});

/// Reporter links of the fuzzed core.
const REPORTER_LINKS: usize = 3;

fn bytes<M: prost::Message>(id: MessageId, m: &M) -> Vec<u8> {
    frame::to_bytes(id.into(), m)
        .expect("small message")
        .to_vec()
}

/// 1 when the datagram is a GetHost / GetRoute request this shard answers.
fn expect_reply(d: &[u8], shard: Shard) -> usize {
    match Request::decode(d) {
        Some(r @ (Request::GetHost { .. } | Request::GetRoute { .. })) => {
            usize::from(shard.owner(r.key()) == shard.index())
        }
        _ => 0,
    }
}

fn drain(core: &mut AgentCore, shard: Shard, asks: usize) {
    let mut replies = 0;
    while let Some(t) = core.poll_transmit() {
        match t {
            Transmit::App { via, reply, .. } => {
                replies += 1;
                assert_eq!(via, shard.index());
                check_reply(core, &reply);
            }
            Transmit::Shard {
                shard: to,
                via,
                request,
                ..
            } => {
                assert_ne!(to, shard.index());
                assert_eq!(via, shard.index());
                assert_eq!(shard.owner(request.key()), to);
            }
            Transmit::Dns(pull) => {
                let _ = frame::to_bytes(MessageId::GetRouteRequest.into(), &pull)
                    .expect("a pull encodes");
            }
            Transmit::Reporter { link, msg } => {
                assert!(link < REPORTER_LINKS);
                let _ = frame::to_bytes(MessageId::ReportStatusRequest.into(), &msg);
            }
            // Anything else for the dns connection (e.g. unsubscribes).
            _ => {}
        }
    }
    assert_eq!(replies, asks, "one reply per answered request");
    while core.poll_event().is_some() {}
}

fn check_reply(core: &AgentCore, reply: &Reply) {
    match reply {
        Reply::GetHost(r) => {
            let k = ModKey::from_wire(r.modid, r.cmdid);
            let succ = RetCode::from_i32(r.retcode) == Some(RetCode::Succ);
            assert_eq!(succ, r.host.is_some());
            if let Some(h) = r.host.as_ref().and_then(HostAddr::from_proto) {
                let lb = core.routes().lb(k).expect("a picked key is known");
                assert!(lb.contains(h), "picked host {h} not in the route of {k}");
            }
        }
        Reply::GetRoute(r) => {
            let k = ModKey::from_wire(r.modid, r.cmdid);
            for h in r.host.iter().filter_map(HostAddr::from_proto) {
                assert!(core.routes().lb(k).is_some_and(|lb| lb.contains(h)));
            }
        }
    }
}
