package lars

// The wire format of PROTOCOL.md: one frame per UDP datagram, an 8-byte
// header (msgid i32 LE, body length i32 LE) then a proto3 body. The few
// messages the API exchanges are encoded and decoded by hand here, so the
// module needs nothing outside the standard library.

import (
	"encoding/binary"
	"errors"
)

// Message ids of the frames the API sends and receives.
const (
	msgGetHostRequest     = 4
	msgGetHostResponse    = 5
	msgReportRequest      = 6
	msgAPIGetRouteRequest = 7
	msgAPIGetRouteReply   = 8
)

const (
	headerLen   = 8
	maxBodyLen  = 65535 - headerLen
	maxDatagram = 65535
)

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

var errMalformed = errors.New("malformed protobuf body")

// frame is an encoder of one request datagram into a reusable buffer.
type frame struct {
	buf []byte
}

func (f *frame) start(msgid int32) {
	f.buf = append(f.buf[:0], 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(f.buf[0:4], uint32(msgid))
}

// finish writes the body length into the header and returns the datagram.
func (f *frame) finish() []byte {
	binary.LittleEndian.PutUint32(f.buf[4:8], uint32(len(f.buf)-headerLen))
	return f.buf
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendTag(b []byte, field int, wt int) []byte {
	return appendVarint(b, uint64(field)<<3|uint64(wt))
}

// appendInt32 appends a proto3 int32 field (omitted when 0). A negative value
// travels sign-extended to 64 bits (10 bytes), as protobuf requires.
func appendInt32(b []byte, field int, v int32) []byte {
	if v == 0 {
		return b
	}
	b = appendTag(b, field, wireVarint)
	return appendVarint(b, uint64(int64(v)))
}

// appendUint32 appends a proto3 uint32 field (omitted when 0).
func appendUint32(b []byte, field int, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = appendTag(b, field, wireVarint)
	return appendVarint(b, uint64(v))
}

// appendHostInfo appends a HostInfo{ip=1, port=2} as an embedded message.
func appendHostInfo(b []byte, field int, ip, port int32) []byte {
	var body [24]byte
	inner := appendInt32(body[:0], 1, ip)
	inner = appendInt32(inner, 2, port)
	b = appendTag(b, field, wireBytes)
	b = appendVarint(b, uint64(len(inner)))
	return append(b, inner...)
}

func encodeGetHostRequest(f *frame, seq uint32, modid, cmdid int32) []byte {
	f.start(msgGetHostRequest)
	f.buf = appendUint32(f.buf, 1, seq)
	f.buf = appendInt32(f.buf, 2, modid)
	f.buf = appendInt32(f.buf, 3, cmdid)
	return f.finish()
}

func encodeGetRouteRequest(f *frame, modid, cmdid int32) []byte {
	f.start(msgAPIGetRouteRequest)
	f.buf = appendInt32(f.buf, 1, modid)
	f.buf = appendInt32(f.buf, 2, cmdid)
	return f.finish()
}

func encodeReportRequest(f *frame, modid, cmdid, ip, port, retcode int32, timecost uint32) []byte {
	f.start(msgReportRequest)
	f.buf = appendInt32(f.buf, 1, modid)
	f.buf = appendInt32(f.buf, 2, cmdid)
	f.buf = appendHostInfo(f.buf, 3, ip, port)
	f.buf = appendInt32(f.buf, 4, retcode)
	f.buf = appendUint32(f.buf, 5, timecost)
	return f.finish()
}

// splitDatagram checks that data is exactly one frame and returns its msgid
// and body; ok is false for anything else (too short, length mismatch).
func splitDatagram(data []byte) (msgid int32, body []byte, ok bool) {
	if len(data) < headerLen {
		return 0, nil, false
	}
	msgid = int32(binary.LittleEndian.Uint32(data[0:4]))
	n := int32(binary.LittleEndian.Uint32(data[4:8]))
	if n < 0 || n > maxBodyLen || int(n) != len(data)-headerLen {
		return 0, nil, false
	}
	return msgid, data[headerLen:], true
}

// fields walks a protobuf body, calling fn for every field; varint values
// come in v, length-delimited ones in sub. Unknown fields are skipped by the
// caller simply ignoring them (fixed32/fixed64 are accepted and skipped).
func fields(body []byte, fn func(field int, wt int, v uint64, sub []byte) error) error {
	for len(body) > 0 {
		key, n := readVarint(body)
		if n == 0 {
			return errMalformed
		}
		body = body[n:]
		field, wt := int(key>>3), int(key&7)
		if field == 0 {
			return errMalformed
		}
		switch wt {
		case wireVarint:
			v, n := readVarint(body)
			if n == 0 {
				return errMalformed
			}
			body = body[n:]
			if err := fn(field, wt, v, nil); err != nil {
				return err
			}
		case wireBytes:
			l, n := readVarint(body)
			if n == 0 || l > uint64(len(body)-n) {
				return errMalformed
			}
			sub := body[n : n+int(l)]
			body = body[n+int(l):]
			if err := fn(field, wt, 0, sub); err != nil {
				return err
			}
		case wireFixed32:
			if len(body) < 4 {
				return errMalformed
			}
			body = body[4:]
		case wireFixed64:
			if len(body) < 8 {
				return errMalformed
			}
			body = body[8:]
		default:
			return errMalformed
		}
	}
	return nil
}

// readVarint decodes a varint at the start of b; n is 0 when b does not hold
// a complete varint of at most 10 bytes.
func readVarint(b []byte) (v uint64, n int) {
	for i := 0; i < len(b) && i < 10; i++ {
		c := b[i]
		v |= uint64(c&0x7f) << (7 * uint(i))
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

// wrongType rejects a known field that arrives with another wire type.
func wrongType(wt, want int) error {
	if wt != want {
		return errMalformed
	}
	return nil
}

type hostInfo struct {
	ip, port int32
}

func decodeHostInfo(b []byte) (hostInfo, error) {
	var h hostInfo
	err := fields(b, func(field, wt int, v uint64, _ []byte) error {
		switch field {
		case 1:
			h.ip = int32(v)
			return wrongType(wt, wireVarint)
		case 2:
			h.port = int32(v)
			return wrongType(wt, wireVarint)
		}
		return nil
	})
	return h, err
}

type getHostResponse struct {
	seq          uint32
	modid, cmdid int32
	retcode      int32
	host         hostInfo
	hasHost      bool
}

func decodeGetHostResponse(b []byte) (getHostResponse, error) {
	var r getHostResponse
	err := fields(b, func(field, wt int, v uint64, sub []byte) error {
		switch field {
		case 1:
			r.seq = uint32(v)
			return wrongType(wt, wireVarint)
		case 2:
			r.modid = int32(v)
			return wrongType(wt, wireVarint)
		case 3:
			r.cmdid = int32(v)
			return wrongType(wt, wireVarint)
		case 4:
			r.retcode = int32(v)
			return wrongType(wt, wireVarint)
		case 5:
			if err := wrongType(wt, wireBytes); err != nil {
				return err
			}
			h, err := decodeHostInfo(sub)
			r.host, r.hasHost = h, true
			return err
		}
		return nil
	})
	return r, err
}

type getRouteResponse struct {
	modid, cmdid int32
	hosts        []hostInfo
}

func decodeGetRouteResponse(b []byte) (getRouteResponse, error) {
	var r getRouteResponse
	err := fields(b, func(field, wt int, v uint64, sub []byte) error {
		switch field {
		case 1:
			r.modid = int32(v)
			return wrongType(wt, wireVarint)
		case 2:
			r.cmdid = int32(v)
			return wrongType(wt, wireVarint)
		case 3:
			if err := wrongType(wt, wireBytes); err != nil {
				return err
			}
			h, err := decodeHostInfo(sub)
			r.hosts = append(r.hosts, h)
			return err
		}
		return nil
	})
	return r, err
}
