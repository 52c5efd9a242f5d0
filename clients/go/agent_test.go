package lars

// Tests against a real lars agent (target/debug/lars-agent, built by ci.sh
// with `cargo build -p lars-agent-bin`; LARS_AGENT_BIN overrides the path).
// TestMain starts one agent serving the routes of agentRoutes from a
// snapshot file (no dns needed: any other key answers NOEXIST) on free
// ports, and kills it at the end.

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The snapshot the agent serves. Keys 1/1 .. 1/3 map to different agent
// ports (base + (modid + cmdid) % 3).
var agentRoutes = map[[2]int][]string{
	{1, 1}: {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"},
	{1, 2}: {"10.0.1.1:81", "10.0.1.2:82"},
	{1, 3}: {"192.168.1.177:8080"},
	{2, 1}: {"10.0.2.1:80", "10.0.2.2:80", "10.0.2.3:80"},
}

var agentBasePort int

func TestMain(m *testing.M) {
	os.Exit(runWithAgent(m))
}

func agentBinary() (string, error) {
	if p := os.Getenv("LARS_AGENT_BIN"); p != "" {
		return p, nil
	}
	target := os.Getenv("CARGO_TARGET_DIR")
	if target == "" {
		target = filepath.Join("..", "..", "target")
	}
	p, err := filepath.Abs(filepath.Join(target, "debug", "lars-agent"))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no lars agent at %s (build it with `cargo build -p lars-agent-bin`, as clients/go/ci.sh does, or set LARS_AGENT_BIN): %w", p, err)
	}
	return p, nil
}

// freeBasePort finds P such that UDP ports P, P+1, P+2 on 127.0.0.1 are free
// (below the Linux ephemeral range, never the defaults 8888..8890).
func freeBasePort() (int, error) {
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for try := 0; try < 200; try++ {
		p := 20000 + rng.Intn(12000)
		var held []*net.UDPConn
		ok := true
		for i := 0; i < 3; i++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + i})
			if err != nil {
				ok = false
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
		if ok {
			return p, nil
		}
	}
	return 0, errors.New("no three consecutive free UDP ports")
}

func runWithAgent(m *testing.M) int {
	bin, err := agentBinary()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "lars-go-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	var snap strings.Builder
	snap.WriteString("lars-agent-routes 1\n")
	for k, hosts := range agentRoutes {
		fmt.Fprintf(&snap, "%d %d %s\n", k[0], k[1], strings.Join(hosts, " "))
	}
	snapshot := filepath.Join(dir, "routes.snapshot")
	if err := os.WriteFile(snapshot, []byte(snap.String()), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for attempt := 0; attempt < 5; attempt++ {
		base, err := freeBasePort()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		conf := filepath.Join(dir, "lb_agent.conf")
		text := fmt.Sprintf("[agent]\nbase_port = %d\nsnapshot_path = %s\n[dnsserver]\nip = 127.0.0.1\nport = 1\n[reporter]\nip = 127.0.0.1\nport = 1\n", base, snapshot)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		logf, err := os.Create(filepath.Join(dir, "agent.log"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cmd := exec.Command(bin, "-c", conf)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			fmt.Fprintf(os.Stderr, "starting %s: %v\n", bin, err)
			return 1
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		ready := waitReady(base, exited)
		if !ready {
			_ = cmd.Process.Kill()
			<-exited
			logf.Close()
			log, _ := os.ReadFile(filepath.Join(dir, "agent.log"))
			fmt.Fprintf(os.Stderr, "the agent on base port %d did not come up (attempt %d); its log:\n%s\n", base, attempt+1, log)
			continue
		}
		agentBasePort = base
		code := m.Run()
		_ = cmd.Process.Kill()
		<-exited
		logf.Close()
		return code
	}
	return 1
}

// waitReady asks for a snapshot route on every agent port until all answer,
// for up to 10 s or until the agent exits.
func waitReady(base int, exited <-chan struct{}) bool {
	c, err := NewClient(Options{BasePort: base, Timeout: 50 * time.Millisecond})
	if err != nil {
		return false
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		up := 0
		for _, k := range [][2]int{{1, 1}, {1, 2}, {1, 3}} {
			if hosts, err := c.GetRoute(k[0], k[1]); err == nil && len(hosts) > 0 {
				up++
			}
		}
		if up == 3 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func agentClient(t *testing.T) *Client {
	t.Helper()
	c, err := NewClient(Options{BasePort: agentBasePort, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func contains(set []string, s string) bool {
	for _, x := range set {
		if x == s {
			return true
		}
	}
	return false
}

func TestAgentGetHostRoundRobin(t *testing.T) {
	c := agentClient(t)
	want := agentRoutes[[2]int{1, 1}]
	counts := map[string]int{}
	for i := 0; i < 30; i++ {
		ip, port, err := c.GetHost(1, 1)
		if err != nil {
			t.Fatalf("GetHost %d: %v", i, err)
		}
		h := Host{IP: ip, Port: port}
		if err := c.ReportHost(1, 1, h, true, time.Millisecond); err != nil {
			t.Fatal(err)
		}
		counts[h.String()]++
	}
	for _, h := range want {
		if counts[h] < 6 {
			t.Errorf("%s returned %d times of 30: %v", h, counts[h], counts)
		}
	}
	for h := range counts {
		if !contains(want, h) {
			t.Errorf("unexpected host %s", h)
		}
	}
}

func TestAgentGetRouteAndRegInit(t *testing.T) {
	c := agentClient(t)
	for k, want := range agentRoutes {
		route, err := c.GetRoute(k[0], k[1])
		if err != nil {
			t.Fatalf("GetRoute %v: %v", k, err)
		}
		var got []string
		for _, h := range route {
			got = append(got, h.String())
		}
		sort.Strings(got)
		w := append([]string(nil), want...)
		sort.Strings(w)
		if strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("GetRoute %v = %v, want %v", k, got, w)
		}
		hosts, err := c.RegInit(k[0], k[1])
		if err != nil || len(hosts) != len(want) {
			t.Errorf("RegInit %v = %v, %v", k, hosts, err)
		}
	}
}

func TestAgentIPsTravelInHostOrder(t *testing.T) {
	c := agentClient(t)
	ip, port, err := c.GetHost(1, 3)
	if err != nil || ip != "192.168.1.177" || port != 8080 {
		t.Fatalf("GetHost(1, 3) = %s:%d, %v", ip, port, err)
	}
}

func TestAgentUnknownKey(t *testing.T) {
	c := agentClient(t)
	if _, _, err := c.GetHost(99, 7); !errors.Is(err, ErrNoExist) {
		t.Fatalf("GetHost of an unknown key: %v", err)
	}
	// No dns runs: the route stays empty through the three attempts.
	start := time.Now()
	if _, err := c.RegInit(99, 8); !errors.Is(err, ErrNoExist) {
		t.Fatalf("RegInit of an unknown key: %v", err)
	}
	if took := time.Since(start); took < 2*RegInitWait {
		t.Fatalf("RegInit gave up after %v, before its two waits", took)
	}
}

func TestAgentFailureReportsMarkAHostOverloaded(t *testing.T) {
	// 20 failures in a row (more than contin_err_limit = 15) move the host to
	// the overloaded list: it is then only handed out as a probe, so the
	// reports must have reached the agent with the right key and host.
	c := agentClient(t)
	const bad = "10.0.2.2"
	for i := 0; i < 20; i++ {
		if err := c.Report(2, 1, bad, 80, false, 3*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	// Reports are fire-and-forget: a get_route on the same agent port is
	// answered after them (one socket, in order).
	if _, err := c.GetRoute(2, 1); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for i := 0; i < 30; i++ {
		ip, port, err := c.GetHost(2, 1)
		if err != nil {
			t.Fatalf("GetHost: %v", err)
		}
		counts[ip]++
		if err := c.Report(2, 1, ip, port, ip != bad, time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if counts[bad] > 5 || counts["10.0.2.1"] < 10 || counts["10.0.2.3"] < 10 {
		t.Fatalf("after 20 failures %s still got %d of 30: %v", bad, counts[bad], counts)
	}
}

func TestAgentSharedClientManyGoroutines(t *testing.T) {
	c := agentClient(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(cmdid int) {
			defer wg.Done()
			want := agentRoutes[[2]int{1, cmdid}]
			for i := 0; i < 100; i++ {
				ip, port, err := c.GetHost(1, cmdid)
				if err != nil {
					errs <- err
					return
				}
				h := Host{IP: ip, Port: port}.String()
				if !contains(want, h) {
					errs <- fmt.Errorf("GetHost(1, %d) = %s, not in %v", cmdid, h, want)
					return
				}
				if err := c.Report(1, cmdid, ip, port, true, time.Millisecond); err != nil {
					errs <- err
					return
				}
			}
		}(1 + g%3)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
