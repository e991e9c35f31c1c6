package probes

import "encoding/binary"

// An echo request this package sends is an 8-byte ICMP header followed by a
// 16-byte payload: magic (random per prober), cycle number, packet index and
// a zero word. The payload, echoed back by the target, lets a reply be matched
// to its request in O(1) and rejects replies to other processes' pings and
// late replies from earlier cycles, whatever ID the kernel used.
const (
	headerLen  = 8
	payloadLen = 16
	packetLen  = headerLen + payloadLen
)

type echo struct {
	id, seq uint16
	magic   uint32
	cycle   uint32
	index   uint32
}

// marshal writes the echo request into b (at least packetLen bytes).
func (e echo) marshal(b []byte, v6 bool) {
	b[0] = icmpv4EchoRequest
	if v6 {
		b[0] = icmpv6EchoRequest
	}
	b[1] = 0
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint16(b[4:], e.id)
	binary.BigEndian.PutUint16(b[6:], e.seq)
	binary.BigEndian.PutUint32(b[8:], e.magic)
	binary.BigEndian.PutUint32(b[12:], e.cycle)
	binary.BigEndian.PutUint32(b[16:], e.index)
	binary.BigEndian.PutUint32(b[20:], 0)
	if !v6 {
		// The kernel fills the ICMPv6 checksum (it needs the pseudo-header)
		// and that of datagram sockets, but not that of a raw IPv4 socket.
		binary.BigEndian.PutUint16(b[2:], checksum(b[:packetLen]))
	}
}

// parseEchoReply decodes b as an echo reply of the family; ok is false for
// anything else.
func parseEchoReply(b []byte, v6 bool) (e echo, ok bool) {
	if len(b) < packetLen {
		return e, false
	}
	want := byte(icmpv4EchoReply)
	if v6 {
		want = icmpv6EchoReply
	}
	if b[0] != want || b[1] != 0 {
		return e, false
	}
	e.id = binary.BigEndian.Uint16(b[4:])
	e.seq = binary.BigEndian.Uint16(b[6:])
	e.magic = binary.BigEndian.Uint32(b[8:])
	e.cycle = binary.BigEndian.Uint32(b[12:])
	e.index = binary.BigEndian.Uint32(b[16:])
	return e, true
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
