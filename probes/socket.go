package probes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const (
	icmpv4EchoRequest = 8
	icmpv4EchoReply   = 0
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129

	// receiveBufferBytes absorbs the reply burst of a large cycle while the
	// reader is descheduled; the kernel default (~200 KiB) holds only a few
	// hundred replies.
	receiveBufferBytes = 4 << 20
)

// socket is one ICMP endpoint for one address family.
type socket struct {
	v6         bool
	privileged bool
	conn       *icmp.PacketConn
	p4         *ipv4.PacketConn
	p6         *ipv6.PacketConn
}

// openSocket opens the family's ICMP socket. A raw socket gets a BPF filter
// that passes only echo replies carrying id, so the process is not woken for
// the replies of every other ping on the host.
func openSocket(v6, privileged bool, id uint16) (*socket, error) {
	network, address := "udp4", "0.0.0.0"
	switch {
	case v6 && privileged:
		network, address = "ip6:ipv6-icmp", "::"
	case v6:
		network, address = "udp6", "::"
	case privileged:
		network = "ip4:icmp"
	}
	conn, err := icmp.ListenPacket(network, address)
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return nil, permissionErr(privileged, err)
		}
		return nil, fmt.Errorf("opening ICMP socket %s: %w", network, err)
	}
	s := &socket{v6: v6, privileged: privileged, conn: conn}
	if v6 {
		s.p6 = conn.IPv6PacketConn()
	} else {
		s.p4 = conn.IPv4PacketConn()
	}
	setReceiveBuffer(s.rawConn())
	if privileged {
		if err := s.installFilter(id); err != nil {
			conn.Close()
			return nil, fmt.Errorf("installing ICMP filter on %s: %w", network, err)
		}
	}
	return s, nil
}

func (s *socket) rawConn() net.PacketConn {
	if s.v6 {
		return s.p6.PacketConn
	}
	return s.p4.PacketConn
}

// setReceiveBuffer asks for a large buffer, forcing past net.core.rmem_max
// when the process may (CAP_NET_ADMIN) and settling for rmem_max otherwise.
func setReceiveBuffer(c net.PacketConn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, receiveBufferBytes) != nil {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, receiveBufferBytes)
		}
	})
}

func (s *socket) installFilter(id uint16) error {
	replyType := uint32(icmpv4EchoReply)
	// A raw IPv4 socket sees the IP header first; skip it by its length.
	prog := []bpf.Instruction{bpf.LoadMemShift{Off: 0}}
	load := func(off uint32, size int) bpf.Instruction { return bpf.LoadIndirect{Off: off, Size: size} }
	if s.v6 {
		replyType = icmpv6EchoReply
		prog = nil
		load = func(off uint32, size int) bpf.Instruction { return bpf.LoadAbsolute{Off: off, Size: size} }
	}
	prog = append(prog,
		load(0, 1),
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: replyType, SkipTrue: 3},
		load(4, 2),
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(id), SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	)
	filter, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	if s.v6 {
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeEchoReply)
		if err := s.p6.SetICMPFilter(&f); err != nil {
			return err
		}
		return s.p6.SetBPF(filter)
	}
	return s.p4.SetBPF(filter)
}

// readBatch reads up to len(ms) datagrams with one recvmmsg call.
func (s *socket) readBatch(ms []ipv4.Message) (int, error) {
	if s.v6 {
		return s.p6.ReadBatch(ms, 0)
	}
	return s.p4.ReadBatch(ms, 0)
}

// icmpBody strips what precedes the ICMP message: the IPv4 header that a
// raw IPv4 socket delivers with every datagram.
func (s *socket) icmpBody(b []byte) []byte {
	if s.v6 || !s.privileged {
		return b
	}
	if len(b) < 20 || b[0]>>4 != 4 {
		return nil
	}
	hl := int(b[0]&0x0f) * 4
	if hl < 20 || len(b) < hl {
		return nil
	}
	return b[hl:]
}

// destination builds the address form the socket type wants.
func (s *socket) destination(a netip.Addr) net.Addr {
	if s.privileged {
		return &net.IPAddr{IP: a.AsSlice(), Zone: a.Zone()}
	}
	return &net.UDPAddr{IP: a.AsSlice(), Zone: a.Zone()}
}

func (s *socket) writeTo(b []byte, dst net.Addr) error {
	_, err := s.conn.WriteTo(b, dst)
	return err
}

func (s *socket) close() error { return s.conn.Close() }

// sourceOf extracts the peer address of a received datagram.
func sourceOf(a net.Addr) netip.Addr {
	var ip net.IP
	var zone string
	switch v := a.(type) {
	case *net.IPAddr:
		ip, zone = v.IP, v.Zone
	case *net.UDPAddr:
		ip, zone = v.IP, v.Zone
	default:
		return netip.Addr{}
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return addr.Unmap().WithZone(zone)
}

func pingGroupRange() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return "unreadable: " + err.Error()
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func processGID() int { return os.Getgid() }
