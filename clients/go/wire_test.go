package lars

import (
	"bytes"
	"encoding/hex"
	"math"
	"testing"
	"time"
)

func TestGetHostRequestBytes(t *testing.T) {
	var f frame
	got := encodeGetHostRequest(&f, 1, -1, 2)
	// header: msgid 4, body length 15; body: seq=1, modid=-1 (10-byte
	// sign-extended varint), cmdid=2.
	want, _ := hex.DecodeString("04000000" + "0f000000" + "0801" + "10ffffffffffffffffff01" + "1802")
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
	if msgid, body, ok := splitDatagram(got); !ok || msgid != msgGetHostRequest || len(body) != 15 {
		t.Fatalf("splitDatagram: %d %x %v", msgid, body, ok)
	}
}

func TestZeroFieldsAreOmitted(t *testing.T) {
	var f frame
	got := encodeGetRouteRequest(&f, 0, 0)
	want, _ := hex.DecodeString("07000000" + "00000000")
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
}

func TestReportRequestBytes(t *testing.T) {
	var f frame
	ip, err := parseIPv4("192.168.1.177")
	if err != nil || ip != 3232235953 {
		t.Fatalf("parseIPv4: %d %v", ip, err)
	}
	got := encodeReportRequest(&f, 1, 2, int32(ip), 80, 1, 3)
	_, body, ok := splitDatagram(got)
	if !ok {
		t.Fatal("not one frame")
	}
	var modid, cmdid, retcode int32
	var timecost uint32
	var host hostInfo
	err = fields(body, func(field, wt int, v uint64, sub []byte) error {
		var err error
		switch field {
		case 1:
			modid = int32(v)
		case 2:
			cmdid = int32(v)
		case 3:
			host, err = decodeHostInfo(sub)
		case 4:
			retcode = int32(v)
		case 5:
			timecost = uint32(v)
		}
		return err
	})
	if err != nil || modid != 1 || cmdid != 2 || retcode != 1 || timecost != 3 {
		t.Fatalf("decoded %d %d %d %d (%v)", modid, cmdid, retcode, timecost, err)
	}
	if uint32(host.ip) != 3232235953 || host.port != 80 || ipString(host.ip) != "192.168.1.177" {
		t.Fatalf("host %+v = %s", host, ipString(host.ip))
	}
}

func TestDecodeSkipsUnknownFields(t *testing.T) {
	// GetRouteResponse{modid=5, cmdid=6, host=[1.2.3.4:80, 5.6.7.8:81]} then
	// the lars dns's confirmed_empty=4 (varint) and a fixed32 and a fixed64
	// field nobody knows.
	var b []byte
	b = appendInt32(b, 1, 5)
	b = appendInt32(b, 2, 6)
	b = appendHostInfo(b, 3, 0x01020304, 80)
	b = appendHostInfo(b, 3, 0x05060708, 81)
	b = appendTag(b, 4, wireVarint)
	b = appendVarint(b, 1)
	b = appendTag(b, 9, wireFixed32)
	b = append(b, 1, 2, 3, 4)
	b = appendTag(b, 10, wireFixed64)
	b = append(b, 1, 2, 3, 4, 5, 6, 7, 8)
	r, err := decodeGetRouteResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.modid != 5 || r.cmdid != 6 || len(r.hosts) != 2 ||
		ipString(r.hosts[0].ip) != "1.2.3.4" || r.hosts[1].port != 81 {
		t.Fatalf("decoded %+v", r)
	}
}

func TestMalformedBodiesAreErrors(t *testing.T) {
	for _, hexBody := range []string{
		"08",                       // truncated varint
		"0a05010203",               // length past the end
		"0b",                       // wire type 3 (group)
		"00",                       // field 0
		"0d0102",                   // truncated fixed32
		"08ffffffffffffffffffff01", // varint of 11 bytes
		"2a02ff",                   // host: length past the end
		"2001",                     // this is retcode=1: valid
	} {
		b, _ := hex.DecodeString(hexBody)
		_, err := decodeGetHostResponse(b)
		if hexBody == "2001" {
			if err != nil {
				t.Errorf("%s: %v", hexBody, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: decoded without error", hexBody)
		}
	}
	// A known field with the wrong wire type is rejected.
	b := appendTag(nil, 1, wireBytes)
	b = append(b, 0)
	if _, err := decodeGetHostResponse(b); err == nil {
		t.Error("seq as bytes decoded without error")
	}
}

func TestSplitDatagramDemandsAnExactFit(t *testing.T) {
	var f frame
	good := encodeGetRouteRequest(&f, 1, 2)
	if _, _, ok := splitDatagram(good); !ok {
		t.Fatal("a good frame is refused")
	}
	for name, d := range map[string][]byte{
		"short header": good[:7],
		"short body":   good[:len(good)-1],
		"trailing":     append(append([]byte(nil), good...), 0),
		"negative len": {7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, _, ok := splitDatagram(d); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestTimecost(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want uint32
	}{
		{0, 0},
		{time.Microsecond, 1},
		{999 * time.Microsecond, 1},
		{3 * time.Millisecond, 3},
		{3*time.Millisecond + 900*time.Microsecond, 3},
		{time.Duration(math.MaxInt64), math.MaxUint32},
	}
	for _, c := range cases {
		if got := timecostMS(c.d); got != c.want {
			t.Errorf("timecostMS(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestIPConversions(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "127.0.0.1", "192.168.1.177", "255.255.255.255"} {
		v, err := parseIPv4(s)
		if err != nil || ipString(int32(v)) != s {
			t.Errorf("%s -> %d (%v) -> %s", s, v, err, ipString(int32(v)))
		}
	}
	for _, s := range []string{"", "1.2.3", "300.1.2.3", "::1", "01.2.3.4", "not-an-ip", "1.2.3.4:80"} {
		if _, err := parseIPv4(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
}

// FuzzDecode: no input makes a decoder panic (the seeds run under go test).
func FuzzDecode(f *testing.F) {
	var fr frame
	f.Add(encodeGetHostRequest(&fr, 7, -3, 9))
	f.Add(encodeReportRequest(&fr, 1, 2, -5, 80, 1, 3))
	f.Add([]byte{0x1a, 0x04, 0x08, 0x01, 0x10, 0x50})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeGetHostResponse(b)
		_, _ = decodeGetRouteResponse(b)
		_, _, _ = splitDatagram(b)
	})
}
