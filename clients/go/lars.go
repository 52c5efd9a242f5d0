// Package lars is the Go client of the lars agent (the Lars load balancer's
// per-machine agent): it asks the local agent over UDP which host of a
// service (modid, cmdid) to call, and reports how each call went.
//
// The principal type is Client (built by NewClient or Dial); Host is one
// host of a route. A typical lifecycle:
//
//	c, err := lars.Dial() // agent on 127.0.0.1:8888..8890, 50 ms timeout
//	if err != nil { ... }
//	defer c.Close()
//	if _, err := c.RegInit(1, 1); err != nil { ... } // once, before first use
//	ip, port, err := c.GetHost(1, 1)
//	// ... call ip:port, timing it ...
//	c.Report(1, 1, ip, port, callOK, elapsed)
//
// The wire protocol is the original's (see shared/spec/PROTOCOL.md in the
// lars repository): a request for (modid, cmdid) goes to agent port
// base + (modid + cmdid) % portCount; replies are matched by sequence number
// (GetHost) or by key (GetRoute), and anything else is discarded.
package lars

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of Options, the original deployment's.
const (
	DefaultAgentIP   = "127.0.0.1"
	DefaultBasePort  = 8888
	DefaultPortCount = 3
	DefaultTimeout   = 50 * time.Millisecond
)

// The original reg_init's retry policy.
const (
	// RegInitAttempts is how many times RegInit asks for the route.
	RegInitAttempts = 3
	// RegInitWait is how long RegInit waits after an empty answer or timeout.
	RegInitWait = 50 * time.Millisecond
)

// Options say where the agent is and how long to wait for it. A zero field
// takes its default.
type Options struct {
	// AgentIP is the agent's IPv4 address (default "127.0.0.1").
	AgentIP string
	// BasePort is the agent's first UDP port (default 8888).
	BasePort int
	// PortCount is how many consecutive UDP ports the agent listens on
	// (default 3).
	PortCount int
	// Timeout is the receive timeout of one request (default 50 ms).
	Timeout time.Duration
}

// Host is one host of a route.
type Host struct {
	IP   string
	Port int
}

// String is "ip:port".
func (h Host) String() string {
	return net.JoinHostPort(h.IP, strconv.Itoa(h.Port))
}

// Client is a connection to the local lars agent: one connected UDP socket
// per agent port. It is safe for concurrent use by many goroutines: each
// agent port has a lock held from the send of a request until its reply (or
// timeout), so a goroutine never reads a reply meant for another one, and
// replies arriving after their request timed out are discarded by sequence
// number. Requests to the same agent port therefore wait for each other; for
// throughput give each goroutine its own Client (a Client is a few sockets
// and nothing else). Report never waits for a request: it only sends.
type Client struct {
	ports   []*agentPort
	seq     atomic.Uint32
	timeout time.Duration

	requests  atomic.Uint64
	timeouts  atomic.Uint64
	discarded atomic.Uint64
	reports   atomic.Uint64
}

// Stats are a Client's counters since it was made.
type Stats struct {
	// Requests is how many GetHost and GetRoute requests were sent (RegInit
	// sends GetRoutes).
	Requests uint64
	// Timeouts is how many of them got no matching reply in time.
	Timeouts uint64
	// Discarded is how many datagrams were dropped while waiting for a
	// reply: not one well-formed frame, another message, another key, or a
	// stale sequence number (a late reply to a timed-out request).
	Discarded uint64
	// Reports is how many reports were sent.
	Reports uint64
}

type agentPort struct {
	conn *net.UDPConn
	addr string

	mu  sync.Mutex // held from a request's send until its reply or timeout
	out frame
	in  []byte

	reportMu  sync.Mutex // guards reportOut only
	reportOut frame
}

// Dial is NewClient with the default Options.
func Dial() (*Client, error) {
	return NewClient(Options{})
}

// NewClient checks opts and opens one UDP socket per agent port. Connecting a
// UDP socket sends nothing, so this succeeds even if no agent runs. Bad
// options give an error wrapping ErrInvalidArgument.
func NewClient(opts Options) (*Client, error) {
	if opts.AgentIP == "" {
		opts.AgentIP = DefaultAgentIP
	}
	if opts.BasePort == 0 {
		opts.BasePort = DefaultBasePort
	}
	if opts.PortCount == 0 {
		opts.PortCount = DefaultPortCount
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	ip := net.ParseIP(opts.AgentIP).To4()
	if ip == nil {
		return nil, fmt.Errorf("%w: agent ip %q is not an IPv4 address", ErrInvalidArgument, opts.AgentIP)
	}
	if opts.PortCount < 0 {
		return nil, fmt.Errorf("%w: port count %d must be at least 1", ErrInvalidArgument, opts.PortCount)
	}
	// Each bound checked alone first, so the sum cannot overflow.
	if opts.BasePort < 1 || opts.BasePort > 65535 || opts.PortCount > 65535 ||
		opts.BasePort+opts.PortCount-1 > 65535 {
		return nil, fmt.Errorf("%w: agent ports %d..%d do not fit in 1..65535",
			ErrInvalidArgument, opts.BasePort, opts.BasePort+opts.PortCount-1)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("%w: timeout %v must be positive", ErrInvalidArgument, opts.Timeout)
	}
	c := &Client{timeout: opts.Timeout}
	for i := 0; i < opts.PortCount; i++ {
		raddr := &net.UDPAddr{IP: ip, Port: opts.BasePort + i}
		conn, err := net.DialUDP("udp4", nil, raddr)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("lars: opening a socket to the agent at %s: %w", raddr, err)
		}
		c.ports = append(c.ports, &agentPort{
			conn:      conn,
			addr:      raddr.String(),
			in:        make([]byte, maxDatagram),
			out:       frame{buf: make([]byte, 0, 128)},
			reportOut: frame{buf: make([]byte, 0, 128)},
		})
	}
	return c, nil
}

// Close closes the sockets. Requests made after Close fail with an error
// wrapping net.ErrClosed.
func (c *Client) Close() error {
	var first error
	for _, p := range c.ports {
		if err := p.conn.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Requests:  c.requests.Load(),
		Timeouts:  c.timeouts.Load(),
		Discarded: c.discarded.Load(),
		Reports:   c.reports.Load(),
	}
}

// Timeout is the receive timeout of every request.
func (c *Client) Timeout() time.Duration {
	return c.timeout
}

// GetHost asks the agent for one host of (modid, cmdid).
//
// Errors: ErrNoExist (first request of a key: the agent starts pulling it;
// call RegInit once before first use), ErrOverload, ErrSystem, ErrTimeout,
// ErrInvalidArgument (an id outside 0..4294967295), or a socket error.
func (c *Client) GetHost(modid, cmdid int) (ip string, port int, err error) {
	m, cm, err := wireKey(modid, cmdid)
	if err != nil {
		return "", 0, err
	}
	p := c.port(modid, cmdid)
	seq := c.seq.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	req := encodeGetHostRequest(&p.out, seq, m, cm)
	var rsp getHostResponse
	err = c.request(p, req, func(msgid int32, body []byte) bool {
		if msgid != msgGetHostResponse {
			return false
		}
		r, err := decodeGetHostResponse(body)
		if err != nil || r.seq != seq || r.modid != m || r.cmdid != cm {
			return false
		}
		rsp = r
		return true
	})
	if err != nil {
		return "", 0, err
	}
	switch rsp.retcode {
	case RetSucc:
		if !rsp.hasHost || rsp.host.port <= 0 || rsp.host.port > 65535 {
			return "", 0, fmt.Errorf("%w: a success without a valid host", ErrSystem)
		}
		return ipString(rsp.host.ip), int(rsp.host.port), nil
	case RetOverload:
		return "", 0, ErrOverload
	case RetNoExist:
		return "", 0, ErrNoExist
	case RetSystemError:
		return "", 0, ErrSystem
	default:
		return "", 0, fmt.Errorf("%w: unknown return code %d", ErrSystem, rsp.retcode)
	}
}

// GetRoute asks the agent for every host of (modid, cmdid). An empty list is
// a valid answer (the agent does not know the key yet and starts pulling
// it). The reply carries no sequence number: it is matched by key. Hosts
// with an invalid port are left out.
func (c *Client) GetRoute(modid, cmdid int) ([]Host, error) {
	m, cm, err := wireKey(modid, cmdid)
	if err != nil {
		return nil, err
	}
	p := c.port(modid, cmdid)
	p.mu.Lock()
	defer p.mu.Unlock()
	req := encodeGetRouteRequest(&p.out, m, cm)
	var rsp getRouteResponse
	err = c.request(p, req, func(msgid int32, body []byte) bool {
		if msgid != msgAPIGetRouteReply {
			return false
		}
		r, err := decodeGetRouteResponse(body)
		if err != nil || r.modid != m || r.cmdid != cm {
			return false
		}
		rsp = r
		return true
	})
	if err != nil {
		return nil, err
	}
	hosts := make([]Host, 0, len(rsp.hosts))
	for _, h := range rsp.hosts {
		if h.port > 0 && h.port <= 65535 {
			hosts = append(hosts, Host{IP: ipString(h.ip), Port: int(h.port)})
		}
	}
	return hosts, nil
}

// RegInit registers interest in (modid, cmdid) before first use, like the
// original's reg_init: it asks for the route up to RegInitAttempts times,
// waiting RegInitWait after each empty answer or timeout, and returns the
// hosts, or ErrNoExist (ErrTimeout if the last attempt timed out) when the
// route stays empty. Other errors return at once.
func (c *Client) RegInit(modid, cmdid int) ([]Host, error) {
	last := ErrNoExist
	for attempt := 1; attempt <= RegInitAttempts; attempt++ {
		hosts, err := c.GetRoute(modid, cmdid)
		switch {
		case err == nil && len(hosts) > 0:
			return hosts, nil
		case err == nil:
			last = ErrNoExist
		case errors.Is(err, ErrTimeout):
			last = err
		default:
			return nil, err
		}
		if attempt < RegInitAttempts {
			time.Sleep(RegInitWait)
		}
	}
	return nil, last
}

// Report tells the agent how a call to ip:port of (modid, cmdid) went: ok
// for a success. Nothing is awaited (the agent never replies).
//
// latency is how long the call took, for successes and failures alike (the
// agent's adaptive policy prefers faster hosts). It travels in whole
// milliseconds, at least 1 for a positive latency (0 on the wire means
// "unknown"); pass 0 when unknown. A negative latency, a bad id, an ip that
// is not a dotted IPv4 quad or a port outside 1..65535 give an error
// wrapping ErrInvalidArgument and send nothing.
func (c *Client) Report(modid, cmdid int, ip string, port int, ok bool, latency time.Duration) error {
	m, cm, err := wireKey(modid, cmdid)
	if err != nil {
		return err
	}
	ipBits, err := parseIPv4(ip)
	if err != nil {
		return err
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("%w: port %d outside 1..65535", ErrInvalidArgument, port)
	}
	if latency < 0 {
		return fmt.Errorf("%w: negative latency %v", ErrInvalidArgument, latency)
	}
	var retcode int32
	if !ok {
		retcode = 1 // what the original tools send for a failed call
	}
	p := c.port(modid, cmdid)
	p.reportMu.Lock()
	defer p.reportMu.Unlock()
	req := encodeReportRequest(&p.reportOut, m, cm, int32(ipBits), int32(port), retcode, timecostMS(latency))
	if err := send(p, req); err != nil {
		return fmt.Errorf("lars: report to the agent at %s: %w", p.addr, err)
	}
	c.reports.Add(1)
	return nil
}

// ReportHost is Report for a Host.
func (c *Client) ReportHost(modid, cmdid int, h Host, ok bool, latency time.Duration) error {
	return c.Report(modid, cmdid, h.IP, h.Port, ok, latency)
}

// port is the agent port serving (modid, cmdid): (modid + cmdid) % count,
// the mapping existing clients rely on (ids are already checked).
func (c *Client) port(modid, cmdid int) *agentPort {
	i := (uint64(modid) + uint64(cmdid)) % uint64(len(c.ports))
	return c.ports[i]
}

// request sends req on p (whose lock the caller holds) and reads datagrams
// until accept takes one, or the timeout passes. Datagrams that are not one
// well-formed frame, or that accept refuses (stale seq, another key, another
// message), are discarded.
func (c *Client) request(p *agentPort, req []byte, accept func(msgid int32, body []byte) bool) error {
	if err := p.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return fmt.Errorf("lars: agent at %s: %w", p.addr, err)
	}
	if err := send(p, req); err != nil {
		return fmt.Errorf("lars: request to the agent at %s: %w", p.addr, err)
	}
	c.requests.Add(1)
	for {
		n, err := p.conn.Read(p.in)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.timeouts.Add(1)
				return fmt.Errorf("%w (%v, agent at %s)", ErrTimeout, c.timeout, p.addr)
			}
			return fmt.Errorf("lars: reply from the agent at %s: %w", p.addr, err)
		}
		msgid, body, ok := splitDatagram(p.in[:n])
		if ok && accept(msgid, body) {
			return nil
		}
		c.discarded.Add(1)
	}
}

// send writes one datagram. A connected UDP socket reports an earlier ICMP
// "port unreachable" on its next call; that stale error is retried once so it
// does not fail an unrelated later request.
func send(p *agentPort, datagram []byte) error {
	_, err := p.conn.Write(datagram)
	if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		_, err = p.conn.Write(datagram)
	}
	return err
}

// wireKey checks the ids (0..4294967295, the original's unsigned columns)
// and returns their int32 wire form (the same 32 bits).
func wireKey(modid, cmdid int) (int32, int32, error) {
	if modid < 0 || uint64(modid) > math.MaxUint32 {
		return 0, 0, fmt.Errorf("%w: modid %d outside 0..4294967295", ErrInvalidArgument, modid)
	}
	if cmdid < 0 || uint64(cmdid) > math.MaxUint32 {
		return 0, 0, fmt.Errorf("%w: cmdid %d outside 0..4294967295", ErrInvalidArgument, cmdid)
	}
	return int32(uint32(modid)), int32(uint32(cmdid)), nil
}

// parseIPv4 turns a dotted quad into the original's host-order integer
// ("192.168.1.177" is 3232235953).
func parseIPv4(s string) (uint32, error) {
	ip := net.ParseIP(s).To4()
	if ip == nil {
		return 0, fmt.Errorf("%w: ip %q is not a dotted IPv4 address", ErrInvalidArgument, s)
	}
	return binary.BigEndian.Uint32(ip), nil
}

// ipString is the dotted quad of a wire ip (the 32 bits, never byte-swapped).
func ipString(ip int32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(ip))
	return net.IP(b[:]).String()
}

// timecostMS is the ReportRequest timecost of a latency: whole milliseconds,
// at least 1 for a positive latency, saturating at MaxUint32; 0 for 0.
func timecostMS(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	ms := d / time.Millisecond
	if ms < 1 {
		return 1
	}
	if ms > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(ms)
}
