package probes

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// The same address in two namespaces is two targets: a reply counts only
// for the target whose socket it arrived on.
func TestMatchRequiresTheTargetsSocket(t *testing.T) {
	s := &Shared{magic: 0xabcdef01, id: 9}
	a := netip.MustParseAddr("198.18.7.11")
	sockA, sockB := &socket{privileged: true}, &socket{privileged: true}
	c := &cycle{number: 5, count: 1, timeout: int64(time.Second), addrs: []netip.Addr{a, a},
		socks: []*socket{sockA, sockB}, unprobed: make([]string, 2),
		sentAt: make([]atomic.Int64, 2), rtt: make([]atomic.Int64, 2), done: make(chan struct{})}
	c.sentAt[0].Store(1)
	c.sentAt[1].Store(1)
	c.pending.Store(2)
	reply := func(idx int) []byte {
		b := make([]byte, packetLen)
		echo{id: 9, seq: uint16(idx), magic: 0xabcdef01, cycle: 5, index: uint32(idx)}.marshal(b, false)
		b[0] = icmpv4EchoReply
		return b
	}
	from := &net.IPAddr{IP: a.AsSlice()}
	// Target 0's reply arriving on target 1's socket, and the reverse.
	s.match(c, sockB, reply(0), from, 100)
	s.match(c, sockA, reply(1), from, 100)
	if c.rtt[0].Load() != 0 || c.rtt[1].Load() != 0 {
		t.Fatalf("a reply was counted on another namespace's socket: rtts %d %d", c.rtt[0].Load(), c.rtt[1].Load())
	}
	s.match(c, sockA, reply(0), from, 100)
	if c.rtt[0].Load() == 0 || c.rtt[1].Load() != 0 {
		t.Errorf("reply on its own socket: rtts %d %d, want only target 0 answered", c.rtt[0].Load(), c.rtt[1].Load())
	}
	// From another address on the right socket: ignored.
	s.match(c, sockB, reply(1), &net.IPAddr{IP: net.ParseIP("198.18.7.12")}, 100)
	if c.rtt[1].Load() != 0 {
		t.Error("a reply from another address was counted")
	}
}

// The pro-bing engine probes no namespace target: each is reported
// engine_unsupported, never sent anything, and the others keep their order.
func TestProBingLeavesNamespaceTargetsUnprobed(t *testing.T) {
	p := &ProBing{opts: Options{Count: 1, Timeout: time.Millisecond, PacketsPerSecond: 1000}, concurrency: 1}
	p.opts.setDefaults()
	targets := []Target{
		{Addr: netip.MustParseAddr("198.18.7.11"), Namespace: "ovmxt-a"},
		{Addr: netip.MustParseAddr("198.18.7.12"), Namespace: "ovmxt-b"},
	}
	res, err := p.Probe(context.Background(), targets)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Unprobed != UnprobedEngineUnsupported || r.Sent != 0 {
			t.Errorf("target %d: %+v, want unprobed %s", i, r, UnprobedEngineUnsupported)
		}
	}
}

// Namespaces that do not exist, or whose names could leave the namespace
// directory, leave their targets unprobed (no_namespace), never counted as
// namespace errors, never sent anything, and hold no socket.
func TestSharedMissingNamespaces(t *testing.T) {
	dir := t.TempDir()
	s := &Shared{opts: Options{Count: 2, Timeout: time.Second, NetnsDir: dir}, spaces: map[string]*vantage{"": {}}}
	s.opts.setDefaults()
	targets := []Target{
		{Addr: netip.MustParseAddr("198.18.7.11"), Namespace: "ovmxt-gone"},
		{Addr: netip.MustParseAddr("2001:2::11"), Namespace: "ovmxt-gone"},
		{Addr: netip.MustParseAddr("198.18.7.11"), Namespace: "../../proc/self/ns/net"},
		{Addr: netip.MustParseAddr("198.18.7.11"), Namespace: ".."},
	}
	for cycle := 0; cycle < 2; cycle++ {
		res, err := s.Probe(context.Background(), targets)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Unprobed != UnprobedNoNamespace || r.Sent != 0 {
				t.Errorf("cycle %d target %d (%s): %+v, want unprobed %s", cycle, i, targets[i].Namespace, r, UnprobedNoNamespace)
			}
		}
	}
	if st := s.Stats(); st != (Stats{}) {
		t.Errorf("stats %+v: a missing namespace is no error", st)
	}
	for name, v := range s.spaces {
		if v.socks != [2]*socket{} {
			t.Errorf("namespace %q holds sockets", name)
		}
	}
	// No longer targeted: forgotten.
	if _, err := s.Probe(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if len(s.spaces) != 1 {
		t.Errorf("%d namespaces kept after none is targeted", len(s.spaces))
	}
}
