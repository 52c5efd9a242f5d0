//! The frame codec: `msgid (i32 LE) | msglen (i32 LE) | body`, pure and
//! allocation-light. TCP streams use [`decode`] repeatedly on a growing buffer;
//! UDP datagrams use [`decode_datagram`], which demands an exact fit.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest body a frame may carry: 65535 minus the header.
pub const MAX_BODY_LEN: usize = 65_535 - HEADER_LEN;

/// One decoded frame: its message id and its undecoded protobuf body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header's message id (see [`crate::MessageId`]).
    pub msgid: i32,
    /// The protobuf body.
    pub body: Bytes,
}

impl Frame {
    /// Decodes the body as message `M`.
    pub fn message<M: Message + Default>(&self) -> Result<M, FrameError> {
        M::decode(self.body.clone()).map_err(|e| FrameError::Body {
            msgid: self.msgid,
            source: e,
        })
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header's `msglen` is outside `0..=65527`: the stream cannot be
    /// resynchronised, so a TCP connection must be closed.
    #[error("frame length {0} outside 0..={MAX_BODY_LEN}")]
    BadLength(i64),
    /// A datagram's size does not match `msglen + 8`.
    #[error("datagram of {got} bytes does not match its header ({expected} bytes)")]
    DatagramSize {
        /// Bytes the header announces, header included.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The body is not a valid protobuf message of the expected type.
    #[error("malformed body for msgid {msgid}")]
    Body {
        /// The frame's message id.
        msgid: i32,
        /// The protobuf error.
        source: prost::DecodeError,
    },
}

/// Appends one frame holding `msg` to `out`. Fails only when the encoded body
/// exceeds [`MAX_BODY_LEN`]; `out` is then left unchanged.
pub fn encode<M: Message>(msgid: i32, msg: &M, out: &mut BytesMut) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > MAX_BODY_LEN {
        return Err(FrameError::BadLength(len as i64));
    }
    out.reserve(HEADER_LEN + len);
    out.put_i32_le(msgid);
    out.put_i32_le(len as i32);
    // BytesMut grows on demand, so prost's only error (no room) cannot occur;
    // it is still mapped rather than unwrapped.
    msg.encode(out)
        .map_err(|_| FrameError::BadLength(len as i64))
}

/// Appends one frame with an already encoded `body` to `out`.
pub fn encode_raw(msgid: i32, body: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    if body.len() > MAX_BODY_LEN {
        return Err(FrameError::BadLength(body.len() as i64));
    }
    out.reserve(HEADER_LEN + body.len());
    out.put_i32_le(msgid);
    out.put_i32_le(body.len() as i32);
    out.put_slice(body);
    Ok(())
}

/// Encodes `msg` as a fresh frame, for a datagram or a one-off send.
pub fn to_bytes<M: Message>(msgid: i32, msg: &M) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + msg.encoded_len());
    encode(msgid, msg, &mut out)?;
    Ok(out.freeze())
}

/// Takes the next complete frame off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed (nothing is consumed). A header with
/// an out-of-range length is an error and nothing is consumed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let (msgid, len) = read_header(buf)?;
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let body = buf.split_to(len).freeze();
    Ok(Some(Frame { msgid, body }))
}

/// Decodes a datagram that must hold exactly one frame.
pub fn decode_datagram(data: &[u8]) -> Result<Frame, FrameError> {
    if data.len() < HEADER_LEN {
        return Err(FrameError::DatagramSize {
            expected: HEADER_LEN,
            got: data.len(),
        });
    }
    let (msgid, len) = read_header(data)?;
    if data.len() != HEADER_LEN + len {
        return Err(FrameError::DatagramSize {
            expected: HEADER_LEN + len,
            got: data.len(),
        });
    }
    Ok(Frame {
        msgid,
        body: Bytes::copy_from_slice(&data[HEADER_LEN..]),
    })
}

fn read_header(data: &[u8]) -> Result<(i32, usize), FrameError> {
    let mut h = &data[..HEADER_LEN];
    let msgid = h.get_i32_le();
    let len = h.get_i32_le();
    match usize::try_from(len) {
        Ok(n) if n <= MAX_BODY_LEN => Ok((msgid, n)),
        _ => Err(FrameError::BadLength(i64::from(len))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    fn sample(i: i32) -> proto::GetHostResponse {
        proto::GetHostResponse {
            seq: i as u32,
            modid: i,
            cmdid: -i,
            retcode: 0,
            host: Some(proto::HostInfo {
                ip: -12345,
                port: 7777,
            }),
        }
    }

    #[test]
    fn frame_split_at_every_byte_boundary() {
        let mut whole = BytesMut::new();
        encode(5, &sample(1), &mut whole).unwrap();
        encode(5, &sample(2), &mut whole).unwrap();
        let whole = whole.freeze();
        for cut in 0..=whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut got = Vec::new();
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f.message::<proto::GetHostResponse>().unwrap());
            }
            buf.extend_from_slice(&whole[cut..]);
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f.message::<proto::GetHostResponse>().unwrap());
            }
            assert_eq!(got, vec![sample(1), sample(2)], "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_thousand_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        for i in 0..1000 {
            encode(5, &sample(i), &mut buf).unwrap();
        }
        for i in 0..1000 {
            let f = decode(&mut buf).unwrap().unwrap();
            assert_eq!(f.msgid, 5);
            assert_eq!(f.message::<proto::GetHostResponse>().unwrap(), sample(i));
        }
        assert!(decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn out_of_range_lengths_are_errors() {
        for len in [-1i32, 65_528, 65_536, i32::MIN] {
            let mut buf = BytesMut::new();
            buf.put_i32_le(1);
            buf.put_i32_le(len);
            assert!(
                matches!(decode(&mut buf), Err(FrameError::BadLength(_))),
                "{len}"
            );
        }
        let mut ok = BytesMut::new();
        ok.put_i32_le(1);
        ok.put_i32_le(65_527);
        assert!(
            decode(&mut ok).unwrap().is_none(),
            "65527 is legal, just incomplete"
        );
    }

    #[test]
    fn empty_body_is_a_frame() {
        let mut buf = BytesMut::new();
        encode(7, &proto::GetRouteRequest::default(), &mut buf).unwrap();
        assert_eq!(buf.len(), HEADER_LEN);
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            f.message::<proto::GetRouteRequest>().unwrap(),
            Default::default()
        );
    }

    #[test]
    fn datagram_must_fit_exactly() {
        let bytes = to_bytes(4, &sample(3)).unwrap();
        assert!(decode_datagram(&bytes).is_ok());
        assert!(matches!(
            decode_datagram(&bytes[..bytes.len() - 1]),
            Err(FrameError::DatagramSize { .. })
        ));
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(
            decode_datagram(&longer),
            Err(FrameError::DatagramSize { .. })
        ));
        assert!(decode_datagram(&[1, 2, 3]).is_err());
    }

    #[test]
    fn garbage_body_is_a_typed_error() {
        let mut buf = BytesMut::new();
        encode_raw(4, &[0xff, 0xff, 0xff], &mut buf).unwrap();
        let f = decode(&mut buf).unwrap().unwrap();
        let e = f.message::<proto::GetHostRequest>().unwrap_err();
        assert!(matches!(e, FrameError::Body { msgid: 4, .. }));
        // The protobuf cause is the source, not repeated in the message.
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(!e.to_string().contains(&cause), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
            let _ = decode_datagram(&data);
        }
    }
}
