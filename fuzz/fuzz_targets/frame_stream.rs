//! The TCP frame decoder (`lars_core::frame::decode`) fed a stream in chunks
//! of a fuzzed size, as a connection's reads arrive, plus the datagram
//! decoder on the whole input; every decoded frame's body is decoded as the
//! message its msgid names, as the services do.
//!
//! Invariants: bytes are consumed exactly frame by frame (re-encoding the
//! frames gives back the consumed prefix), an error consumes nothing, a body
//! never exceeds `MAX_BODY_LEN`.
#![no_main]

use bytes::{BufMut, BytesMut};
use lars_core::proto::{
    GetHostRequest, GetHostResponse, GetRouteRequest, GetRouteResponse, ReportRequest,
    ReportStatusRequest,
};
use lars_core::{Frame, MessageId, frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut buf = BytesMut::new();
    let (mut fed, mut consumed) = (0, 0);
    let mut again = BytesMut::new();
    loop {
        match frame::decode(&mut buf) {
            Ok(Some(f)) => {
                assert!(f.body.len() <= frame::MAX_BODY_LEN);
                consumed += frame::HEADER_LEN + f.body.len();
                assert_eq!(consumed + buf.len(), fed);
                frame::encode_raw(f.msgid, &f.body, &mut again).expect("a decoded body fits");
                bodies(&f);
                continue;
            }
            Ok(None) => assert_eq!(consumed + buf.len(), fed),
            Err(_) => {
                // The connection is closed; nothing of the bad header is taken.
                assert_eq!(consumed + buf.len(), fed);
                assert!(buf.len() >= frame::HEADER_LEN);
                break;
            }
        }
        if fed == data.len() {
            break;
        }
        let n = step.min(data.len() - fed);
        buf.put_slice(&data[fed..fed + n]);
        fed += n;
    }
    assert_eq!(&again[..], &data[..consumed]);

    if let Ok(f) = frame::decode_datagram(data) {
        assert_eq!(frame::HEADER_LEN + f.body.len(), data.len());
        bodies(&f);
    }
});

/// Decodes the body as the message its msgid names; a decoded message
/// re-encodes to a frame that decodes to the same message.
fn bodies(f: &Frame) {
    let Some(id) = MessageId::from_i32(f.msgid) else {
        return;
    };
    match id {
        MessageId::GetRouteRequest | MessageId::ApiGetRouteRequest => same::<GetRouteRequest>(f),
        MessageId::GetRouteResponse | MessageId::ApiGetRouteResponse => same::<GetRouteResponse>(f),
        MessageId::ReportStatusRequest => same::<ReportStatusRequest>(f),
        MessageId::GetHostRequest => same::<GetHostRequest>(f),
        MessageId::GetHostResponse => same::<GetHostResponse>(f),
        MessageId::ReportRequest => same::<ReportRequest>(f),
        _ => {}
    }
}

fn same<M: prost::Message + Default + PartialEq + std::fmt::Debug>(f: &Frame) {
    let Ok(m) = f.message::<M>() else {
        return;
    };
    // Re-encoding may grow (a negative int32 sent as a 5-byte varint comes
    // back as 10 bytes) past the frame limit: then encode refuses, cleanly.
    let Ok(bytes) = frame::to_bytes(f.msgid, &m) else {
        assert!(m.encoded_len() > frame::MAX_BODY_LEN);
        return;
    };
    let back = frame::decode_datagram(&bytes).expect("own frame decodes");
    assert_eq!(back.message::<M>().expect("own body decodes"), m);
}
