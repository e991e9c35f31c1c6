package probes

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
)

// BenchmarkMatch measures the reader's work per echo reply: parse, check
// and record.
func BenchmarkMatch(b *testing.B) {
	const targets = 10000
	s := &Shared{magic: 0x12345678, id: 77}
	sock := &socket{privileged: true}
	c := &cycle{number: 3, count: 1, timeout: int64(1e18), addrs: make([]netip.Addr, targets), socks: make([]*socket, targets),
		sentAt: make([]atomic.Int64, targets), rtt: make([]atomic.Int64, targets), done: make(chan struct{})}
	replies := make([][]byte, targets)
	froms := make([]net.Addr, targets)
	for i := range c.addrs {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		c.addrs[i] = a
		c.sentAt[i].Store(1)
		buf := make([]byte, packetLen)
		echo{id: 77, seq: uint16(i), magic: 0x12345678, cycle: 3, index: uint32(i)}.marshal(buf, false)
		buf[0] = icmpv4EchoReply
		replies[i] = buf
		froms[i] = &net.IPAddr{IP: a.AsSlice()}
		c.socks[i] = sock
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		i := n % targets
		if i == 0 {
			for j := range c.rtt {
				c.rtt[j].Store(0)
			}
			c.pending.Store(targets)
		}
		s.match(c, sock, replies[i], froms[i], 1000)
	}
}

func BenchmarkMarshal(b *testing.B) {
	buf := make([]byte, packetLen)
	b.ReportAllocs()
	for n := 0; n < b.N; n++ {
		echo{id: 1, seq: uint16(n), magic: 2, cycle: 3, index: uint32(n)}.marshal(buf, false)
	}
}
