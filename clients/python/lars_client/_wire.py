"""The agent's UDP wire format: one frame per datagram (msgid i32 LE, body
length i32 LE, protobuf body), and the few proto3 messages the API uses,
encoded and decoded by hand (stdlib only). See shared/spec/PROTOCOL.md."""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

# Message ids.
GET_HOST_REQUEST = 4
GET_HOST_RESPONSE = 5
REPORT_REQUEST = 6
API_GET_ROUTE_REQUEST = 7
API_GET_ROUTE_RESPONSE = 8

HEADER = struct.Struct("<ii")
MAX_BODY = 65535 - HEADER.size

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


class DecodeError(Exception):
    """A datagram that is not a well-formed frame or message."""


def to_int32(v: int) -> int:
    """The int32 with the same low 32 bits as `v` (ids and IPs travel as int32)."""
    v &= _U32
    return v - (1 << 32) if v >= 1 << 31 else v


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def _varint(v: int) -> bytes:
    if 0 <= v < 0x80:
        return _ONE_BYTE[v]
    # Negative int32 values are sign-extended to 64 bits (10 bytes), as proto3 does.
    v &= _U64
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _field_varint(num: int, v: int) -> bytes:
    # proto3: a field with its default value (0) is not written.
    return _varint(num << 3) + _varint(v) if v else b""


def _field_bytes(num: int, b: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(b)) + b


def _host(ip: int, port: int) -> bytes:
    return _field_varint(1, to_int32(ip)) + _field_varint(2, to_int32(port))


def frame(msgid: int, body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise ValueError(f"message body of {len(body)} bytes is over {MAX_BODY}")
    return HEADER.pack(msgid, len(body)) + body


def get_host_request(seq: int, modid: int, cmdid: int) -> bytes:
    body = (_field_varint(1, seq & _U32) + _field_varint(2, to_int32(modid))
            + _field_varint(3, to_int32(cmdid)))
    return frame(GET_HOST_REQUEST, body)


def get_route_request(modid: int, cmdid: int) -> bytes:
    body = _field_varint(1, to_int32(modid)) + _field_varint(2, to_int32(cmdid))
    return frame(API_GET_ROUTE_REQUEST, body)


def report_request(modid: int, cmdid: int, ip: int, port: int, retcode: int,
                   timecost: int) -> bytes:
    body = (_field_varint(1, to_int32(modid)) + _field_varint(2, to_int32(cmdid))
            + _field_bytes(3, _host(ip, port)) + _field_varint(4, to_int32(retcode))
            + _field_varint(5, timecost & _U32))
    return frame(REPORT_REQUEST, body)


# ---------------------------------------------------------------- decoding

Fields = Dict[int, List[object]]


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    v = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v & _U64, pos
    raise DecodeError("varint over 10 bytes")


def _fields(buf: bytes) -> Fields:
    """Every field of a message: number -> values (int for varints, bytes for
    length-delimited); fixed-width fields are skipped."""
    out: Fields = {}
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise DecodeError("field number 0")
        if wire == 0:
            v, pos = _read_varint(buf, pos)
            out.setdefault(num, []).append(v)
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            if pos + n > len(buf):
                raise DecodeError("truncated length-delimited field")
            out.setdefault(num, []).append(bytes(buf[pos:pos + n]))
            pos += n
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise DecodeError("truncated fixed-width field")
    return out


def _int(f: Fields, num: int, signed: bool = True) -> int:
    vals = f.get(num)
    if not vals:
        return 0
    v = vals[-1]
    if not isinstance(v, int):
        raise DecodeError(f"field {num} is not a varint")
    return to_int32(v) if signed else v & _U32


def _host_of(raw: object) -> Tuple[int, int]:
    """(ip as u32, port) of a HostInfo."""
    if not isinstance(raw, bytes):
        raise DecodeError("host is not a message")
    f = _fields(raw)
    return _int(f, 1) & _U32, _int(f, 2)


def unframe(datagram: bytes) -> Tuple[int, bytes]:
    """(msgid, body) of one datagram; the body length must match exactly."""
    if len(datagram) < HEADER.size:
        raise DecodeError("datagram shorter than a frame header")
    msgid, n = HEADER.unpack_from(datagram)
    if n < 0 or n + HEADER.size != len(datagram):
        raise DecodeError("frame length does not match the datagram")
    return msgid, datagram[HEADER.size:]


def get_host_response(body: bytes) -> Tuple[int, int, int, int, Optional[Tuple[int, int]]]:
    """(seq, modid, cmdid, retcode, host) of a GetHostResponse body; modid and
    cmdid as int32, host (ip u32, port) or None."""
    f = _fields(body)
    hosts = f.get(5)
    host = _host_of(hosts[-1]) if hosts else None
    return _int(f, 1, signed=False), _int(f, 2), _int(f, 3), _int(f, 4), host


def get_route_response(body: bytes) -> Tuple[int, int, List[Tuple[int, int]]]:
    """(modid, cmdid, hosts) of a GetRouteResponse body."""
    f = _fields(body)
    return _int(f, 1), _int(f, 2), [_host_of(h) for h in f.get(3, [])]


def get_host_request_fields(body: bytes) -> Tuple[int, int, int]:
    """(seq, modid, cmdid) of a GetHostRequest body (for tests and fakes)."""
    f = _fields(body)
    return _int(f, 1, signed=False), _int(f, 2), _int(f, 3)


def report_request_fields(body: bytes) -> Tuple[int, int, Tuple[int, int], int, int]:
    """(modid, cmdid, host, retcode, timecost) of a ReportRequest body."""
    f = _fields(body)
    hosts = f.get(3)
    host = _host_of(hosts[-1]) if hosts else (0, 0)
    return _int(f, 1), _int(f, 2), host, _int(f, 4), _int(f, 5, signed=False)


def get_host_response_frame(seq: int, modid: int, cmdid: int, retcode: int,
                            host: Optional[Tuple[int, int]]) -> bytes:
    """A GetHostResponse datagram (for tests and fakes)."""
    body = (_field_varint(1, seq & _U32) + _field_varint(2, to_int32(modid))
            + _field_varint(3, to_int32(cmdid)) + _field_varint(4, to_int32(retcode)))
    if host is not None:
        body += _field_bytes(5, _host(*host))
    return frame(GET_HOST_RESPONSE, body)
