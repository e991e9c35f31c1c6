//go:build lab

package probes

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// Loopback tests need nothing but root: every 127.0.0.0/8 address and ::1
// answer on this machine. Namespace tests (lab_test.go) cover loss, delay and
// silence.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("ICMP tests need root (raw sockets and network namespaces); run the suite as root, as CI does")
	}
}

func engines(t *testing.T, opts Options) map[string]Engine {
	t.Helper()
	out := map[string]Engine{}
	shared, err := NewShared(opts)
	if err != nil {
		t.Fatal(err)
	}
	out["shared"] = shared
	pb, err := NewProBing(opts)
	if err != nil {
		t.Fatal(err)
	}
	out["pro-bing"] = pb
	t.Cleanup(func() {
		for _, p := range out {
			p.Close()
		}
	})
	return out
}

// probeWant probes addrs and reports every result that does not count
// sent requests and received replies.
func probeWant(t *testing.T, p Engine, addrs []netip.Addr, sent, received int) {
	t.Helper()
	res, err := p.Probe(context.Background(), HostTargets(addrs))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Sent != sent || r.Received != received {
			t.Errorf("%s: %+v, want %d sent and %d received", addrs[i], r, sent, received)
		}
	}
}

func TestLoopbackAnswers(t *testing.T) {
	requireRoot(t)
	addrs := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.3.4"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("::ffff:127.0.0.9"),
		netip.MustParseAddr("127.0.3.4"), // the same address twice: both answered
	}
	for name, p := range engines(t, Options{Privileged: true, Count: 3, Timeout: time.Second, Spacing: 20 * time.Millisecond}) {
		t.Run(name, func(t *testing.T) {
			res, err := p.Probe(context.Background(), HostTargets(addrs))
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != len(addrs) {
				t.Fatalf("%d results for %d addresses", len(res), len(addrs))
			}
			for i, r := range res {
				if r.Sent != 3 || r.Received != 3 || len(r.RTTs) != 3 {
					t.Errorf("%s: %+v", addrs[i], r)
				}
				for _, rtt := range r.RTTs {
					if rtt <= 0 || rtt > time.Second {
						t.Errorf("%s: rtt %v", addrs[i], rtt)
					}
				}
			}
			// A second cycle starts clean.
			res, err = p.Probe(context.Background(), HostTargets(addrs[:1]))
			if err != nil || res[0].Received != 3 {
				t.Errorf("second cycle: %+v %v", res, err)
			}
		})
	}
}

func TestEmptyCycle(t *testing.T) {
	requireRoot(t)
	for name, p := range engines(t, Options{Privileged: true}) {
		res, err := p.Probe(context.Background(), HostTargets(nil))
		if err != nil || len(res) != 0 {
			t.Errorf("%s: %v %v", name, res, err)
		}
	}
}

// A healthy cycle ends when the last reply arrives, not after the timeout.
func TestCycleEndsEarly(t *testing.T) {
	requireRoot(t)
	// Bounds far apart, so that a loaded machine cannot blur them: a
	// cycle that waited for its timeout would take 30 s.
	p, err := NewShared(Options{Privileged: true, Count: 2, Timeout: 30 * time.Second, Spacing: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	if _, err := p.Probe(context.Background(), HostTargets([]netip.Addr{netip.MustParseAddr("127.0.0.1")})); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("cycle took %v with every reply in", took)
	}
}

func TestCancel(t *testing.T) {
	requireRoot(t)
	// Uncancelled, the cycle would take 2 spacings and a timeout: 30 s.
	p, err := NewShared(Options{Privileged: true, Count: 3, Spacing: 10 * time.Second, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = p.Probe(ctx, HostTargets([]netip.Addr{netip.MustParseAddr("127.0.0.1")}))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Errorf("cancel: %v after %v", err, time.Since(start))
	}
}

func TestUnprivilegedPermissionError(t *testing.T) {
	requireRoot(t)
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Fields(string(b))[0] != "1" {
		t.Skipf("ping_group_range is %q here: datagram sockets are allowed; the namespace tests check the error", b)
	}
	_, err = NewShared(Options{Privileged: false})
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "ping_group_range") || !strings.Contains(err.Error(), "sysctl -w") {
		t.Errorf("error does not say how to grant the permission: %v", err)
	}
}

func TestClosedProber(t *testing.T) {
	requireRoot(t)
	p, err := NewShared(Options{Privileged: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close()
	if _, err := p.Probe(context.Background(), HostTargets([]netip.Addr{netip.MustParseAddr("127.0.0.1")})); err == nil {
		t.Error("probe on a closed prober")
	}
}

// As root, auto mode opens raw sockets, and both engines probe with them.
func TestAutoModeAsRoot(t *testing.T) {
	requireRoot(t)
	opts := Options{Auto: true, Count: 2, Timeout: time.Second, Spacing: 10 * time.Millisecond}
	shared, err := NewShared(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	if !shared.opts.Privileged || shared.spaces[""].socks[0] == nil || !shared.spaces[""].socks[0].privileged {
		t.Errorf("auto as root did not open raw sockets: %+v", shared.opts)
	}
	pb, err := NewProBing(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !pb.opts.Privileged {
		t.Error("auto as root: pro-bing not privileged")
	}
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	for name, p := range map[string]Engine{"shared": shared, "pro-bing": pb} {
		t.Run(name, func(t *testing.T) { probeWant(t, p, addrs, 2, 2) })
	}
}

// A send rate above one pinger per nanosecond means no pacing, not a panic.
func TestProBingUnboundedRate(t *testing.T) {
	requireRoot(t)
	p, err := NewProBing(Options{Privileged: true, Count: 1, Timeout: time.Second, PacketsPerSecond: 2_000_000_000})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	probeWant(t, p, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}, 1, 1)
}

// Without an IPv6 socket (a host without IPv6) IPv6 requests are not sent:
// Sent stays 0, which the exporter reports as no icmp_up rather than down,
// and each counts as a send error. IPv4 targets are not affected.
func TestSharedWithoutIPv6Socket(t *testing.T) {
	requireRoot(t)
	p, err := NewShared(Options{Privileged: true, Count: 2, Timeout: time.Second, Spacing: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// As NewShared leaves it when the IPv6 socket cannot be opened.
	p.mu.Lock()
	p.closeSocket(p.spaces[""], 1)
	p.mu.Unlock()
	addrs := []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")}
	res, err := p.Probe(context.Background(), HostTargets(addrs))
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Sent != 0 || r.Received != 0 {
		t.Errorf("::1 without an IPv6 socket: %+v", r)
	}
	if r := res[1]; r.Sent != 2 || r.Received != 2 {
		t.Errorf("127.0.0.1: %+v", r)
	}
	if st := p.Stats(); st.SendErrors != 2 {
		t.Errorf("send errors %d, want 2", st.SendErrors)
	}
}
