//! Each protobuf message body of the wire protocol, decoded from arbitrary
//! bytes (the first byte picks the message), then taken where the services
//! take it: hosts into `HostAddr`, keys into `ModKey`, report outcomes into
//! `Outcome`, and a `ReportStatusRequest` through the reporter's statistics
//! receiver (`lars_stats::Receiver`).
//!
//! Invariants: decode never panics; a decoded message re-encodes and decodes
//! to itself; the receiver's counts agree with the request.
#![no_main]

use lars_core::proto::{
    GetHostRequest, GetHostResponse, GetRouteRequest, GetRouteResponse, HostCallResult, HostInfo,
    ReportRequest, ReportStatusRequest,
};
use lars_core::{HostAddr, ModKey, RetCode};
use lars_lb::Outcome;
use lars_stats::{Receiver, Windows};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Some(h) = round_trip::<HostInfo>(body) {
                host(&h);
            }
        }
        1 => {
            if let Some(r) = round_trip::<GetRouteRequest>(body) {
                key(r.modid, r.cmdid);
            }
        }
        2 => {
            if let Some(r) = round_trip::<GetRouteResponse>(body) {
                key(r.modid, r.cmdid);
                r.host.iter().for_each(host);
            }
        }
        3 => {
            if let Some(r) = round_trip::<HostCallResult>(body) {
                let _ = HostAddr::from_wire(r.ip, r.port);
            }
        }
        4 => {
            if let Some(r) = round_trip::<ReportStatusRequest>(body) {
                report_status(&r);
            }
        }
        5 => {
            if let Some(r) = round_trip::<GetHostRequest>(body) {
                key(r.modid, r.cmdid);
            }
        }
        6 => {
            if let Some(r) = round_trip::<GetHostResponse>(body) {
                key(r.modid, r.cmdid);
                let _ = RetCode::from_i32(r.retcode);
                r.host.iter().for_each(host);
            }
        }
        _ => {
            if let Some(r) = round_trip::<ReportRequest>(body) {
                key(r.modid, r.cmdid);
                r.host.iter().for_each(host);
                let o = Outcome::from_retcode(r.retcode, r.timecost);
                assert_eq!(r.retcode == 0, !matches!(o, Outcome::Failure { .. }));
            }
        }
    }
});

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(body: &[u8]) -> Option<M> {
    let m = M::decode(body).ok()?;
    let again = m.encode_to_vec();
    assert_eq!(again.len(), m.encoded_len());
    assert_eq!(
        M::decode(again.as_slice()).expect("own encoding decodes"),
        m
    );
    Some(m)
}

fn key(modid: i32, cmdid: i32) {
    let k = ModKey::from_wire(modid, cmdid);
    assert_eq!(k.to_wire(), (modid, cmdid));
}

fn host(h: &HostInfo) {
    if let Some(a) = HostAddr::from_proto(h) {
        assert_eq!(HostAddr::from_proto(&a.to_proto()), Some(a));
    }
}

/// The reporter's worker: the request at a `now` near its `ts`.
fn report_status(r: &ReportStatusRequest) {
    let mut rx = Receiver::new();
    let mut windows = Windows::new();
    let now = i64::from(r.ts);
    let got = rx.receive(r, now, &mut windows);
    let bad = r
        .results
        .iter()
        .filter(|h| HostAddr::from_wire(h.ip, h.port).is_none())
        .count() as u64;
    if got.time.at().is_some() {
        assert_eq!(got.bad_results, bad);
    }
    // The same counters again are no new calls.
    let again = rx.receive(r, now, &mut windows);
    if again.time.at().is_some() && r.results.len() as u64 == bad + distinct(r) {
        assert_eq!((again.succ, again.err), (0, 0));
    }
    let _ = rx.take_batch();
    let _ = rx.expire(now + 1_000_000);
}

/// Hosts named once in the request (a host named twice in one request gets
/// two observations, so the second pass is not all zero for it).
fn distinct(r: &ReportStatusRequest) -> u64 {
    let mut seen: Vec<HostAddr> = r
        .results
        .iter()
        .filter_map(|h| HostAddr::from_wire(h.ip, h.port))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len() as u64
}
