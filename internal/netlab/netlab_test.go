//go:build lab

package netlab

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pinger is the smallest sender that can tell the lab's behaviours apart;
// the exporter's engines are tested in package probes.
type pinger struct{ c4, c6 *icmp.PacketConn }

func newPinger(t *testing.T, l *Lab) *pinger {
	t.Helper()
	p := &pinger{}
	err := l.Do(func() error {
		var err error
		if p.c4, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); err != nil {
			return err
		}
		p.c6, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.c4.Close(); p.c6.Close() })
	return p
}

// ping sends n echo requests to each address and returns, per address,
// the replies and the slowest RTT.
func (p *pinger) ping(t *testing.T, addrs []netip.Addr, n int, wait time.Duration) (map[netip.Addr]int, map[netip.Addr]time.Duration) {
	t.Helper()
	id := int(time.Now().UnixNano() & 0xffff)
	type reply struct {
		seq  int
		from string
		at   time.Time
	}
	replies := make(chan reply, 65536)
	deadline := time.Now().Add(wait + time.Duration(n)*time.Millisecond)
	read := func(c *icmp.PacketConn, proto int, done chan<- struct{}) {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			c.SetReadDeadline(deadline)
			nb, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(proto, buf[:nb])
			if err != nil {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if ok && e.ID == id && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) {
				replies <- reply{e.Seq, from.(*net.IPAddr).IP.String(), time.Now()}
			}
		}
	}
	done4, done6 := make(chan struct{}), make(chan struct{})
	go read(p.c4, 1, done4)
	go read(p.c6, 58, done6)

	sent := map[int]time.Time{}
	index := map[int]netip.Addr{}
	for i := 0; i < n; i++ {
		for j, a := range addrs {
			seq := (i*len(addrs) + j) & 0xffff
			c, typ := p.c4, icmp.Type(ipv4.ICMPTypeEcho)
			if a.Is6() {
				c, typ = p.c6, ipv6.ICMPTypeEchoRequest
			}
			b, _ := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("netlab")}}).Marshal(nil)
			sent[seq], index[seq] = time.Now(), a
			if _, err := c.WriteTo(b, &net.IPAddr{IP: a.AsSlice()}); err != nil {
				t.Fatalf("send to %s: %v", a, err)
			}
			if j%100 == 99 {
				time.Sleep(time.Millisecond)
			}
		}
		time.Sleep(time.Millisecond)
	}
	<-done4
	<-done6
	close(replies)
	got := map[netip.Addr]int{}
	slowest := map[netip.Addr]time.Duration{}
	seen := map[int]bool{}
	for r := range replies {
		a, ok := index[r.seq]
		if !ok || seen[r.seq] || r.from != a.String() {
			continue
		}
		seen[r.seq] = true
		got[a]++
		slowest[a] = max(slowest[a], r.at.Sub(sent[r.seq]))
	}
	return got, slowest
}

func addrs(prefix string, from, n int) []netip.Addr {
	var out []netip.Addr
	for i := from; i < from+n; i++ {
		out = append(out, netip.MustParseAddr(fmt.Sprintf(prefix, i/250, i%250+1)))
	}
	return out
}

func TestBehaviours(t *testing.T) {
	l := New(t)
	answer := netip.MustParseAddr("198.18.0.1")
	answer6 := netip.MustParseAddr("2001:2::1:1")
	lossy := netip.MustParseAddr("198.18.1.1")
	slow := netip.MustParseAddr("198.18.2.1")
	slow6 := netip.MustParseAddr("2001:2::2:1")
	dead := netip.MustParseAddr("198.18.3.1")
	for b, as := range map[Behaviour][]netip.Addr{Answer: {answer, answer6}, Lossy: {lossy}, Slow: {slow, slow6}, Dead: {dead}} {
		if err := l.Add(b, as...); err != nil {
			t.Fatal(err)
		}
	}
	p := newPinger(t, l)

	got, _ := p.ping(t, []netip.Addr{answer, answer6, dead}, 3, 500*time.Millisecond)
	if got[answer] != 3 || got[answer6] != 3 || got[dead] != 0 {
		t.Errorf("answer/dead: %v", got)
	}

	got, _ = p.ping(t, []netip.Addr{lossy}, 200, time.Second)
	if got[lossy] < 40 || got[lossy] > 160 {
		t.Errorf("lossy at 50%%: %d of 200 answered", got[lossy])
	}

	l.SetDelay(50 * time.Millisecond)
	// Held 50 ms, never less; how much more depends on the machine's load
	// (164 ms seen with the whole suite running): bounded by the timeout.
	got, slowest := p.ping(t, []netip.Addr{slow, slow6}, 3, 2*time.Second)
	for _, a := range []netip.Addr{slow, slow6} {
		if got[a] != 3 || slowest[a] < 50*time.Millisecond {
			t.Errorf("slow %s: %d replies, slowest %v", a, got[a], slowest[a])
		}
	}

	if err := l.Remove(answer); err != nil {
		t.Fatal(err)
	}
	got, _ = p.ping(t, []netip.Addr{answer, answer6}, 2, 300*time.Millisecond)
	if got[answer] != 0 || got[answer6] != 2 {
		t.Errorf("after removing %s: %v", answer, got)
	}
	if err := l.Restore(Answer, answer); err != nil {
		t.Fatal(err)
	}
	got, _ = p.ping(t, []netip.Addr{answer}, 2, 300*time.Millisecond)
	if got[answer] != 2 {
		t.Errorf("after restoring: %v", got)
	}
	if err := l.Add(Answer, netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Error("an address outside the benchmarking ranges was accepted")
	}
}

func TestNoDefaultRoute(t *testing.T) {
	l := New(t)
	for _, fam := range []string{"-4", "-6"} {
		out, err := exec.Command("ip", "-n", l.HV(), fam, "route", "show", "default").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("hypervisor namespace %s default route: %q %v", fam, out, err)
		}
	}
}

func TestManyAddresses(t *testing.T) {
	l := New(t)
	many := addrs("198.18.%d.%d", 0, 5000)
	start := time.Now()
	if err := l.Add(Answer, many...); err != nil {
		t.Fatal(err)
	}
	t.Logf("5,000 addresses placed in %v", time.Since(start))
	p := newPinger(t, l)
	// What is checked is that every address was placed and answers, not
	// that 5,000 replies burst into one raw socket's receive buffer while
	// a loaded machine starves its reader: the addresses a round missed
	// are asked again, up to three more times.
	missing := many
	for round := 1; round <= 4 && len(missing) > 0; round++ {
		got, _ := p.ping(t, missing, 1, 2*time.Second)
		var again []netip.Addr
		for _, a := range missing {
			if got[a] != 1 {
				again = append(again, a)
			}
		}
		if len(again) > 0 {
			t.Logf("round %d: %d addresses did not answer", round, len(again))
		}
		missing = again
	}
	if len(missing) > 0 {
		t.Errorf("%d of 5,000 addresses never answered in four rounds, e.g. %v", len(missing), missing[0])
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	Require(t)
	l, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), l.prefix) {
		t.Errorf("namespaces left after Close:\n%s", out)
	}
}
