//go:build lab

package probes

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// Ten thousand targets come and go between cycles (loopback addresses
// answer here): every cycle reports exactly its own targets, and closing
// the prober leaves no goroutine and no socket behind.
func TestChurnLeavesNothingBehind(t *testing.T) {
	requireRoot(t)
	fds := openFDs(t)
	// A cycle ends with its last reply: the timeout only bounds a loaded
	// machine's slowest (500 ms lost 4 of 411 replies with the suite running).
	opts := Options{Privileged: true, Count: 1, Timeout: 10 * time.Second, PacketsPerSecond: 20000}
	for name, p := range engines(t, opts) {
		all := make([]netip.Addr, 10000)
		for i := range all {
			all[i] = netip.AddrFrom4([4]byte{127, 10, byte(i >> 8), byte(i)})
		}
		for cycle := 0; cycle < 4; cycle++ {
			n := 2000 + rand.IntN(8000)
			rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
			if name == "pro-bing" {
				n /= 10 // a pinger a target: slow enough at a tenth
			}
			res, err := p.Probe(context.Background(), HostTargets(all[:n]))
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != n {
				t.Fatalf("%s: %d results for %d targets", name, len(res), n)
			}
			lost := 0
			for _, r := range res {
				if r.Sent != 1 || r.Received != 1 {
					lost++
				}
			}
			if lost > 0 {
				t.Errorf("%s cycle %d: %d of %d loopback targets without a reply", name, cycle, lost, n)
			}
		}
		p.Close()
	}
	goleak.VerifyNone(t)
	if now := openFDs(t); now > fds {
		t.Errorf("%d file descriptors open after closing the probers, %d before", now, fds)
	}
}
