package lars_test

import (
	"log"
	"time"

	"example.invalid/lars"
)

func callService(ip string, port int) bool { return ip != "" && port > 0 }

// The README's example: compiled by go test (not run: it needs an agent on
// the default ports).
func Example() {
	c, err := lars.Dial() // agent on 127.0.0.1:8888..8890, 50 ms timeout
	if err != nil {
		log.Fatal(err)
	}
	c.RegInit(1, 1) // once per key, before first use
	if ip, port, err := c.GetHost(1, 1); err == nil {
		start := time.Now()
		ok := callService(ip, port)
		c.Report(1, 1, ip, port, ok, time.Since(start))
	}
}
