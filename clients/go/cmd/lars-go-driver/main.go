// Command lars-go-driver is the Go client's conformance driver (run by
// clients/go/driver.sh): `check` runs the shared scenario against a running
// agent and prints one `CHECK <name> PASS|FAIL <detail>` line per check;
// `bench` runs a single-threaded get_host + report loop and prints
// `BENCH ops_per_sec <n>`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"example.invalid/lars"
)

type config struct {
	basePort   int
	ports      int
	timeout    time.Duration
	modid      int
	cmdid      int
	hosts      []string
	reportHost string
	stallPort  int
	seconds    int
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || (args[0] != "check" && args[0] != "bench") {
		fmt.Fprintln(os.Stderr, "usage: lars-go-driver check|bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C [--hosts IP:PORT,... --report-host IP:PORT --stall-port S] [--seconds N]")
		return 2
	}
	mode := args[0]
	fs := flag.NewFlagSet("lars-go-driver "+mode, flag.ContinueOnError)
	var cfg config
	var timeoutMS int
	var hosts string
	fs.IntVar(&cfg.basePort, "base-port", lars.DefaultBasePort, "the agent's first UDP port")
	fs.IntVar(&cfg.ports, "ports", lars.DefaultPortCount, "how many UDP ports the agent listens on")
	fs.IntVar(&timeoutMS, "timeout-ms", 50, "receive timeout of one request, in ms")
	fs.IntVar(&cfg.modid, "modid", -1, "the key's modid")
	fs.IntVar(&cfg.cmdid, "cmdid", -1, "the key's cmdid")
	fs.StringVar(&hosts, "hosts", "", "the key's hosts, IP:PORT,IP:PORT,...")
	fs.StringVar(&cfg.reportHost, "report-host", "", "the host to report on, IP:PORT")
	fs.IntVar(&cfg.stallPort, "stall-port", 0, "base port of an agent that never answers")
	fs.IntVar(&cfg.seconds, "seconds", 5, "bench duration in seconds")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg.timeout = time.Duration(timeoutMS) * time.Millisecond
	if hosts != "" {
		cfg.hosts = strings.Split(hosts, ",")
	}
	if cfg.modid < 0 || cfg.cmdid < 0 || timeoutMS <= 0 {
		fmt.Fprintln(os.Stderr, "lars-go-driver: --modid, --cmdid and a positive --timeout-ms are required")
		return 2
	}
	if mode == "bench" {
		return bench(cfg)
	}
	if len(cfg.hosts) == 0 || cfg.reportHost == "" || cfg.stallPort == 0 {
		fmt.Fprintln(os.Stderr, "lars-go-driver: check needs --hosts, --report-host and --stall-port")
		return 2
	}
	return check(cfg)
}

func check(cfg config) int {
	c, err := lars.NewClient(lars.Options{BasePort: cfg.basePort, PortCount: cfg.ports, Timeout: cfg.timeout})
	if err != nil {
		fmt.Fprintf(os.Stderr, "lars-go-driver: %v\n", err)
		return 1
	}
	defer c.Close()
	checks := []struct {
		name string
		fn   func(*lars.Client, config) (string, error)
	}{
		{"noexist_then_host", checkNoExistThenHost},
		{"round_robin", checkRoundRobin},
		{"report", checkReport},
		{"get_route", checkGetRoute},
		{"timeout", checkTimeout},
		{"bad_input", checkBadInput},
	}
	failed := 0
	for _, ch := range checks {
		detail, err := ch.fn(c, cfg)
		if err != nil {
			failed++
			fmt.Printf("CHECK %s FAIL %v\n", ch.name, err)
		} else {
			fmt.Printf("CHECK %s PASS %s\n", ch.name, detail)
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func inSet(set []string, h string) bool {
	for _, s := range set {
		if s == h {
			return true
		}
	}
	return false
}

func checkNoExistThenHost(c *lars.Client, cfg config) (string, error) {
	_, _, err := c.GetHost(cfg.modid, cfg.cmdid)
	if !errors.Is(err, lars.ErrNoExist) {
		return "", fmt.Errorf("first get_host: want ErrNoExist, got %v", err)
	}
	if _, err := c.RegInit(cfg.modid, cfg.cmdid); err != nil {
		return "", fmt.Errorf("reg_init: %v", err)
	}
	ip, port, err := c.GetHost(cfg.modid, cfg.cmdid)
	if err != nil {
		return "", fmt.Errorf("get_host after reg_init: %v", err)
	}
	h := lars.Host{IP: ip, Port: port}.String()
	if !inSet(cfg.hosts, h) {
		return "", fmt.Errorf("get_host gave %s, not one of %v", h, cfg.hosts)
	}
	return "NOEXIST then " + h, nil
}

func checkRoundRobin(c *lars.Client, cfg config) (string, error) {
	counts := map[string]int{}
	for i := 0; i < 30; i++ {
		ip, port, err := c.GetHost(cfg.modid, cfg.cmdid)
		if err != nil {
			return "", fmt.Errorf("get_host %d: %v", i+1, err)
		}
		if err := c.Report(cfg.modid, cfg.cmdid, ip, port, true, time.Millisecond); err != nil {
			return "", fmt.Errorf("report %d: %v", i+1, err)
		}
		counts[lars.Host{IP: ip, Port: port}.String()]++
	}
	var parts []string
	for h, n := range counts {
		parts = append(parts, fmt.Sprintf("%s=%d", h, n))
	}
	sort.Strings(parts)
	detail := strings.Join(parts, " ")
	for _, h := range cfg.hosts {
		if counts[h] < 6 {
			return "", fmt.Errorf("%s returned %d times (< 6): %s", h, counts[h], detail)
		}
	}
	for h := range counts {
		if !inSet(cfg.hosts, h) {
			return "", fmt.Errorf("unexpected host %s: %s", h, detail)
		}
	}
	return detail, nil
}

func splitHost(s string) (lars.Host, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return lars.Host{}, fmt.Errorf("%q is not IP:PORT", s)
	}
	var port int
	if _, err := fmt.Sscanf(s[i+1:], "%d", &port); err != nil {
		return lars.Host{}, fmt.Errorf("%q is not IP:PORT", s)
	}
	return lars.Host{IP: s[:i], Port: port}, nil
}

func checkReport(c *lars.Client, cfg config) (string, error) {
	h, err := splitHost(cfg.reportHost)
	if err != nil {
		return "", err
	}
	for i := 0; i < 7; i++ {
		if err := c.ReportHost(cfg.modid, cfg.cmdid, h, i < 5, 3*time.Millisecond); err != nil {
			return "", fmt.Errorf("report %d: %v", i+1, err)
		}
	}
	return "5 succ 2 err on " + h.String(), nil
}

func checkGetRoute(c *lars.Client, cfg config) (string, error) {
	route, err := c.GetRoute(cfg.modid, cfg.cmdid)
	if err != nil {
		return "", fmt.Errorf("get_route: %v", err)
	}
	var got []string
	for _, h := range route {
		got = append(got, h.String())
	}
	want := append([]string(nil), cfg.hosts...)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		return "", fmt.Errorf("get_route gave [%s], want [%s]", strings.Join(got, ","), strings.Join(want, ","))
	}
	return strings.Join(got, ","), nil
}

func checkTimeout(_ *lars.Client, cfg config) (string, error) {
	s, err := lars.NewClient(lars.Options{BasePort: cfg.stallPort, PortCount: cfg.ports, Timeout: cfg.timeout})
	if err != nil {
		return "", err
	}
	defer s.Close()
	start := time.Now()
	_, _, err = s.GetHost(cfg.modid, cfg.cmdid)
	took := time.Since(start)
	if !errors.Is(err, lars.ErrTimeout) {
		return "", fmt.Errorf("want ErrTimeout, got %v after %v", err, took)
	}
	if took > 2*cfg.timeout {
		return "", fmt.Errorf("timed out after %v, more than 2x %v", took, cfg.timeout)
	}
	return fmt.Sprintf("ErrTimeout after %.1fms (timeout %v)", float64(took.Microseconds())/1000, cfg.timeout), nil
}

func checkBadInput(_ *lars.Client, cfg config) (string, error) {
	// Against the stalled agent: any network wait would show as a timeout.
	s, err := lars.NewClient(lars.Options{BasePort: cfg.stallPort, PortCount: cfg.ports, Timeout: cfg.timeout})
	if err != nil {
		return "", err
	}
	defer s.Close()
	cases := []struct {
		name string
		call func() error
	}{
		{"get_host modid -1", func() error { _, _, err := s.GetHost(-1, cfg.cmdid); return err }},
		{"get_host cmdid -1", func() error { _, _, err := s.GetHost(cfg.modid, -1); return err }},
		{"get_route modid -1", func() error { _, err := s.GetRoute(-1, cfg.cmdid); return err }},
		{"report ip 300.1.2.3", func() error { return s.Report(cfg.modid, cfg.cmdid, "300.1.2.3", 80, true, 0) }},
		{"report ip not-an-ip", func() error { return s.Report(cfg.modid, cfg.cmdid, "not-an-ip", 80, true, 0) }},
		{"report port 0", func() error { return s.Report(cfg.modid, cfg.cmdid, "127.0.0.1", 0, true, 0) }},
	}
	var slowest time.Duration
	for _, tc := range cases {
		start := time.Now()
		err := tc.call()
		took := time.Since(start)
		if !errors.Is(err, lars.ErrInvalidArgument) {
			return "", fmt.Errorf("%s: want ErrInvalidArgument, got %v", tc.name, err)
		}
		if took >= cfg.timeout {
			return "", fmt.Errorf("%s: took %v, a network wait", tc.name, took)
		}
		if took > slowest {
			slowest = took
		}
	}
	return fmt.Sprintf("%d cases rejected at once (slowest %v)", len(cases), slowest), nil
}

func bench(cfg config) int {
	c, err := lars.NewClient(lars.Options{BasePort: cfg.basePort, PortCount: cfg.ports, Timeout: cfg.timeout})
	if err != nil {
		fmt.Fprintf(os.Stderr, "lars-go-driver: %v\n", err)
		return 1
	}
	defer c.Close()
	if _, err := c.RegInit(cfg.modid, cfg.cmdid); err != nil {
		fmt.Fprintf(os.Stderr, "lars-go-driver: reg_init %d/%d: %v\n", cfg.modid, cfg.cmdid, err)
		return 1
	}
	var ops, errs int
	start := time.Now()
	end := start.Add(time.Duration(cfg.seconds) * time.Second)
	for time.Now().Before(end) {
		t := time.Now()
		ip, port, err := c.GetHost(cfg.modid, cfg.cmdid)
		if err != nil {
			errs++
			continue
		}
		if err := c.Report(cfg.modid, cfg.cmdid, ip, port, true, time.Since(t)); err != nil {
			errs++
			continue
		}
		ops++
	}
	elapsed := time.Since(start).Seconds()
	if errs > 0 {
		fmt.Fprintf(os.Stderr, "lars-go-driver: %d failed get_host/report calls\n", errs)
	}
	fmt.Printf("BENCH ops_per_sec %.0f\n", float64(ops)/elapsed)
	return 0
}
