package lars

// Tests against a fake agent: a UDP socket on 127.0.0.1 that the test
// drives by hand, to check what the real agent never does (late, foreign or
// malformed replies, odd return codes, silence).

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"testing"
	"time"
)

type fakeAgent struct {
	t    *testing.T
	conn *net.UDPConn
	port int
}

func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeAgent{t: t, conn: conn, port: conn.LocalAddr().(*net.UDPAddr).Port}
}

// client is a client of this fake alone (one agent port).
func (f *fakeAgent) client(timeout time.Duration) *Client {
	f.t.Helper()
	c, err := NewClient(Options{BasePort: f.port, PortCount: 1, Timeout: timeout})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

type request struct {
	msgid int32
	body  []byte
	from  *net.UDPAddr
}

// recv waits up to wait for one datagram; ok is false when none came.
func (f *fakeAgent) recv(wait time.Duration) (request, bool) {
	buf := make([]byte, maxDatagram)
	if err := f.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return request{}, false
	}
	n, from, err := f.conn.ReadFromUDP(buf)
	if err != nil {
		return request{}, false
	}
	msgid, body, ok := splitDatagram(buf[:n])
	if !ok {
		f.t.Errorf("the client sent a malformed datagram %x", buf[:n])
	}
	return request{msgid: msgid, body: append([]byte(nil), body...), from: from}, true
}

func (f *fakeAgent) sendRaw(to *net.UDPAddr, datagram []byte) {
	if _, err := f.conn.WriteToUDP(datagram, to); err != nil {
		f.t.Errorf("fake agent send: %v", err)
	}
}

func (f *fakeAgent) send(to *net.UDPAddr, msgid int32, body []byte) {
	var fr frame
	fr.start(msgid)
	fr.buf = append(fr.buf, body...)
	f.sendRaw(to, fr.finish())
}

func decodeGetHostRequest(t *testing.T, b []byte) (seq uint32, modid, cmdid int32) {
	err := fields(b, func(field, wt int, v uint64, _ []byte) error {
		switch field {
		case 1:
			seq = uint32(v)
		case 2:
			modid = int32(v)
		case 3:
			cmdid = int32(v)
		}
		return nil
	})
	if err != nil {
		t.Errorf("GetHostRequest %x: %v", b, err)
	}
	return seq, modid, cmdid
}

func hostReply(seq uint32, modid, cmdid, retcode int32, host *hostInfo) []byte {
	var b []byte
	b = appendUint32(b, 1, seq)
	b = appendInt32(b, 2, modid)
	b = appendInt32(b, 3, cmdid)
	b = appendInt32(b, 4, retcode)
	if host != nil {
		b = appendHostInfo(b, 5, host.ip, host.port)
	}
	return b
}

func routeReply(modid, cmdid int32, hosts ...hostInfo) []byte {
	var b []byte
	b = appendInt32(b, 1, modid)
	b = appendInt32(b, 2, cmdid)
	for _, h := range hosts {
		b = appendHostInfo(b, 3, h.ip, h.port)
	}
	return b
}

// serve answers requests in the background with answer until the test ends.
func (f *fakeAgent) serve(answer func(r request)) {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r, ok := f.recv(20 * time.Millisecond); ok {
				answer(r)
			}
		}
	}()
	f.t.Cleanup(func() { close(stop); wg.Wait() })
}

var hostA = hostInfo{ip: 0x0a000001, port: 80}  // 10.0.0.1:80
var hostB = hostInfo{ip: -1062731343, port: 81} // 192.168.1.177:81 (negative on the wire)

func TestGetHostDiscardsForeignAndMalformedReplies(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(time.Second)
	f.serve(func(r request) {
		seq, m, cm := decodeGetHostRequest(t, r.body)
		f.sendRaw(r.from, []byte{1, 2, 3})                                           // not a frame
		f.send(r.from, msgGetHostResponse, []byte{0x08})                             // bad body
		f.send(r.from, msgAPIGetRouteReply, routeReply(m, cm, hostA))                // another message
		f.send(r.from, msgGetHostResponse, hostReply(seq+1, m, cm, RetSucc, &hostA)) // another seq
		f.send(r.from, msgGetHostResponse, hostReply(seq, m+1, cm, RetSucc, &hostA)) // another key
		f.send(r.from, msgGetHostResponse, hostReply(seq, m, cm, RetSucc, &hostB))
	})
	ip, port, err := c.GetHost(7, 9)
	if err != nil || ip != "192.168.1.177" || port != 81 {
		t.Fatalf("GetHost = %s:%d, %v", ip, port, err)
	}
	if s := c.Stats(); s != (Stats{Requests: 1, Discarded: 5}) {
		t.Fatalf("stats %+v, want 1 request and 5 discarded datagrams", s)
	}
}

func TestLateReplyIsDiscarded(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		_, _, err := c.GetHost(1, 1)
		done <- err
	}()
	first, ok := f.recv(2 * time.Second)
	if !ok {
		t.Fatal("no first request")
	}
	if err := <-done; !errors.Is(err, ErrTimeout) {
		t.Fatalf("first GetHost: %v", err)
	}
	go func() {
		ip, port, err := c.GetHost(1, 1)
		if err == nil {
			err = fmt.Errorf("%s:%d", ip, port)
		}
		done <- err
	}()
	second, ok := f.recv(2 * time.Second)
	if !ok {
		t.Fatal("no second request")
	}
	seq1, _, _ := decodeGetHostRequest(t, first.body)
	seq2, _, _ := decodeGetHostRequest(t, second.body)
	if seq1 == seq2 {
		t.Fatalf("both requests carry seq %d", seq1)
	}
	f.send(second.from, msgGetHostResponse, hostReply(seq1, 1, 1, RetSucc, &hostA))
	f.send(second.from, msgGetHostResponse, hostReply(seq2, 1, 1, RetSucc, &hostB))
	if err := <-done; err == nil || err.Error() != "192.168.1.177:81" {
		t.Fatalf("second GetHost got %v, want the second reply's host", err)
	}
	if s := c.Stats(); s != (Stats{Requests: 2, Timeouts: 1, Discarded: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestRetcodes(t *testing.T) {
	cases := []struct {
		retcode int32
		host    *hostInfo
		want    error
	}{
		{RetOverload, nil, ErrOverload},
		{RetNoExist, nil, ErrNoExist},
		{RetSystemError, nil, ErrSystem},
		{42, &hostA, ErrSystem},
		{RetSucc, nil, ErrSystem},
		{RetSucc, &hostInfo{ip: 1, port: 0}, ErrSystem},
		{RetSucc, &hostInfo{ip: 1, port: 70000}, ErrSystem},
	}
	for _, tc := range cases {
		f := newFakeAgent(t)
		c := f.client(time.Second)
		tc := tc
		f.serve(func(r request) {
			seq, m, cm := decodeGetHostRequest(t, r.body)
			f.send(r.from, msgGetHostResponse, hostReply(seq, m, cm, tc.retcode, tc.host))
		})
		ip, port, err := c.GetHost(3, 4)
		if !errors.Is(err, tc.want) {
			t.Errorf("retcode %d host %v: got %s:%d %v, want %v", tc.retcode, tc.host, ip, port, err, tc.want)
		}
	}
}

func TestTimeoutWhenTheAgentIsSilent(t *testing.T) {
	f := newFakeAgent(t)
	timeout := 50 * time.Millisecond
	c := f.client(timeout)
	start := time.Now()
	_, _, err := c.GetHost(1, 2)
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("GetHost: %v", err)
	}
	if took < timeout {
		t.Fatalf("gave up after %v, before the %v timeout", took, timeout)
	}
	if _, err := c.GetRoute(1, 2); !errors.Is(err, ErrTimeout) {
		t.Fatalf("GetRoute: %v", err)
	}
	if s := c.Stats(); s.Timeouts != 2 || s.Requests != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSocketErrorWhenNothingListens(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(time.Second)
	f.conn.Close()
	// Linux answers a datagram to a closed port with ICMP port unreachable,
	// which the connected socket reports: an error, not a 1 s timeout.
	_, _, err := c.GetHost(1, 2)
	if err == nil || errors.Is(err, ErrTimeout) {
		t.Fatalf("GetHost: %v", err)
	}
}

func TestGetRouteAndRegInit(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(time.Second)
	var mu sync.Mutex
	asked := 0
	f.serve(func(r request) {
		if r.msgid != msgAPIGetRouteRequest {
			t.Errorf("msgid %d", r.msgid)
			return
		}
		mu.Lock()
		asked++
		n := asked
		mu.Unlock()
		if n < 3 {
			f.send(r.from, msgAPIGetRouteReply, routeReply(5, 6)) // empty: not yet
			return
		}
		f.send(r.from, msgAPIGetRouteReply, routeReply(5, 7, hostB))                                  // another key
		f.send(r.from, msgAPIGetRouteReply, routeReply(5, 6, hostA, hostInfo{ip: 1, port: 0}, hostB)) // port 0 left out
	})
	start := time.Now()
	hosts, err := c.RegInit(5, 6)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].String() != "10.0.0.1:80" || hosts[1].String() != "192.168.1.177:81" {
		t.Fatalf("hosts %v", hosts)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked != 3 {
		t.Fatalf("asked %d times, want 3", asked)
	}
	if took := time.Since(start); took < 2*RegInitWait {
		t.Fatalf("3 attempts in %v: the waits between them are missing", took)
	}
}

func TestRegInitGivesUpAfterThreeEmptyRoutes(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(time.Second)
	var mu sync.Mutex
	asked := 0
	f.serve(func(r request) {
		mu.Lock()
		asked++
		mu.Unlock()
		f.send(r.from, msgAPIGetRouteReply, routeReply(5, 6))
	})
	if _, err := c.RegInit(5, 6); !errors.Is(err, ErrNoExist) {
		t.Fatalf("RegInit: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked != RegInitAttempts {
		t.Fatalf("asked %d times, want %d", asked, RegInitAttempts)
	}
}

func TestReportSendsTheRightDatagram(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(time.Second)
	if err := c.Report(4294967295, 2, "192.168.1.177", 8080, false, 3*time.Millisecond+500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s != (Stats{Reports: 1}) {
		t.Fatalf("stats %+v", s)
	}
	r, ok := f.recv(2 * time.Second)
	if !ok || r.msgid != msgReportRequest {
		t.Fatalf("got %+v %v", r, ok)
	}
	var modid, cmdid, retcode int32
	var timecost uint32
	var host hostInfo
	err := fields(r.body, func(field, wt int, v uint64, sub []byte) error {
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
	if err != nil || modid != -1 || cmdid != 2 || retcode != 1 || timecost != 3 {
		t.Fatalf("report %d %d %d %d (%v)", modid, cmdid, retcode, timecost, err)
	}
	if host.ip != hostB.ip || host.port != 8080 {
		t.Fatalf("host %+v", host)
	}
}

func TestBadInputIsRejectedBeforeSending(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(time.Second)
	calls := map[string]func() error{
		"GetHost modid -1":        func() error { _, _, err := c.GetHost(-1, 1); return err },
		"GetHost cmdid -1":        func() error { _, _, err := c.GetHost(1, -1); return err },
		"GetHost modid 2^32":      func() error { _, _, err := c.GetHost(1<<32, 1); return err },
		"GetRoute cmdid -5":       func() error { _, err := c.GetRoute(1, -5); return err },
		"RegInit modid -1":        func() error { _, err := c.RegInit(-1, 1); return err },
		"Report ip 300.1.2.3":     func() error { return c.Report(1, 1, "300.1.2.3", 80, true, 0) },
		"Report ip empty":         func() error { return c.Report(1, 1, "", 80, true, 0) },
		"Report ip with port":     func() error { return c.Report(1, 1, "1.2.3.4:80", 80, true, 0) },
		"Report port 0":           func() error { return c.Report(1, 1, "1.2.3.4", 0, true, 0) },
		"Report port 65536":       func() error { return c.Report(1, 1, "1.2.3.4", 65536, true, 0) },
		"Report negative latency": func() error { return c.Report(1, 1, "1.2.3.4", 80, true, -time.Millisecond) },
		"Report modid -1":         func() error { return c.Report(-1, 1, "1.2.3.4", 80, true, 0) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if r, ok := f.recv(100 * time.Millisecond); ok {
		t.Fatalf("bad input reached the agent: %+v", r)
	}
	if s := c.Stats(); s != (Stats{}) {
		t.Fatalf("stats %+v after bad input only", s)
	}
}

func TestOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"ip":            {AgentIP: "localhost"},
		"ipv6":          {AgentIP: "::1"},
		"port range":    {BasePort: 65535, PortCount: 2},
		"negative port": {BasePort: -1},
		"big port":      {BasePort: 70000, PortCount: 1},
		"overflow":      {BasePort: math.MaxInt, PortCount: 2},
		"many ports":    {BasePort: 1, PortCount: math.MaxInt},
		"port count":    {PortCount: -1},
		"timeout":       {Timeout: -time.Second},
	} {
		if c, err := NewClient(o); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
			if c != nil {
				c.Close()
			}
		}
	}
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.ports) != 3 || c.ports[0].addr != "127.0.0.1:8888" || c.ports[2].addr != "127.0.0.1:8890" || c.Timeout() != 50*time.Millisecond {
		t.Fatalf("defaults: %d ports from %s, %v", len(c.ports), c.ports[0].addr, c.Timeout())
	}
	// The original mapping: base + (modid + cmdid) % 3, no overflow.
	for _, k := range []struct{ m, c, want int }{{1, 1, 2}, {2, 1, 0}, {3, 1, 1}, {4294967295, 4294967295, int((2 * uint64(4294967295)) % 3)}} {
		if got := c.port(k.m, k.c); got != c.ports[k.want] {
			t.Errorf("port(%d, %d) = %s, want %s", k.m, k.c, got.addr, c.ports[k.want].addr)
		}
	}
}

func TestConcurrentCallersGetTheirOwnReplies(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(2 * time.Second)
	// The fake answers every request with port 1000 + cmdid, so each caller
	// can tell its replies from the others'.
	f.serve(func(r request) {
		seq, m, cm := decodeGetHostRequest(t, r.body)
		f.send(r.from, msgGetHostResponse, hostReply(seq, m, cm, RetSucc, &hostInfo{ip: 1, port: 1000 + cm}))
	})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(cmdid int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_, port, err := c.GetHost(1, cmdid)
				if err != nil {
					errs <- err
					return
				}
				if port != 1000+cmdid {
					errs <- fmt.Errorf("cmdid %d got port %d", cmdid, port)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRetCode(t *testing.T) {
	for err, want := range map[error]int{
		nil:                                RetSucc,
		ErrOverload:                        RetOverload,
		fmt.Errorf("x: %w", ErrNoExist):    RetNoExist,
		ErrSystem:                          RetSystemError,
		fmt.Errorf("y: %w", ErrTimeout):    RetSystemError,
		fmt.Errorf("z: %w", net.ErrClosed): RetSystemError,
	} {
		if got := RetCode(err); got != want {
			t.Errorf("RetCode(%v) = %d, want %d", err, got, want)
		}
	}
}

func TestClosedClient(t *testing.T) {
	f := newFakeAgent(t)
	c := f.client(time.Second)
	c.Close()
	if _, _, err := c.GetHost(1, 1); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("GetHost after Close: %v", err)
	}
}
