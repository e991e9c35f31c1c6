package probes

import (
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func TestEchoRoundTrip(t *testing.T) {
	e := echo{id: 0xbeef, seq: 7, magic: 0xdeadbeef, cycle: 42, index: 70007}
	var b [packetLen]byte
	e.marshal(b[:], false)
	// The standard library's parser must agree on the wire format, and the
	// checksum must verify.
	msg, err := icmp.ParseMessage(1, b[:])
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != ipv4.ICMPTypeEcho {
		t.Fatalf("type %v", msg.Type)
	}
	body := msg.Body.(*icmp.Echo)
	if body.ID != 0xbeef || body.Seq != 7 || len(body.Data) != payloadLen {
		t.Errorf("echo %+v", body)
	}
	if checksum(b[:]) != 0 {
		t.Error("checksum does not verify")
	}
	// Turn it into the reply the target sends back.
	b[0] = icmpv4EchoReply
	got, ok := parseEchoReply(b[:], false)
	if !ok || got != e {
		t.Errorf("parsed %+v ok=%v, want %+v", got, ok, e)
	}
}

func TestParseRejects(t *testing.T) {
	var b [packetLen]byte
	echo{magic: 1}.marshal(b[:], true)
	if _, ok := parseEchoReply(b[:], true); ok {
		t.Error("an echo request parsed as a reply")
	}
	b[0] = icmpv6EchoReply
	if _, ok := parseEchoReply(b[:], false); ok {
		t.Error("an ICMPv6 reply parsed as ICMPv4")
	}
	if _, ok := parseEchoReply(b[:packetLen-1], true); ok {
		t.Error("a short packet parsed")
	}
	b[1] = 1
	if _, ok := parseEchoReply(b[:], true); ok {
		t.Error("a non-zero code parsed")
	}
}

func TestIPv4HeaderStripping(t *testing.T) {
	s := &socket{privileged: true}
	payload := []byte{0, 0, 1, 2}
	withHeader := append(append([]byte{0x45}, make([]byte, 19)...), payload...)
	if got := s.icmpBody(withHeader); string(got) != string(payload) {
		t.Errorf("stripped %v", got)
	}
	withOptions := append(append([]byte{0x46}, make([]byte, 23)...), payload...)
	if got := s.icmpBody(withOptions); string(got) != string(payload) {
		t.Errorf("with options %v", got)
	}
	if s.icmpBody([]byte{0x45, 0}) != nil || s.icmpBody(append([]byte{0x60}, make([]byte, 30)...)) != nil {
		t.Error("garbage accepted")
	}
	dgram := &socket{}
	if got := dgram.icmpBody(payload); string(got) != string(payload) {
		t.Error("datagram socket body changed")
	}
}

func FuzzParseEchoReply(f *testing.F) {
	var b [packetLen]byte
	echo{id: 1, seq: 2, magic: 3, cycle: 4, index: 5}.marshal(b[:], false)
	b[0] = icmpv4EchoReply
	f.Add(b[:], false)
	f.Add([]byte{129, 0, 0, 0}, true)
	f.Fuzz(func(t *testing.T, data []byte, v6 bool) {
		e, ok := parseEchoReply(data, v6)
		if ok && len(data) < packetLen {
			t.Fatalf("accepted %d bytes: %+v", len(data), e)
		}
		s := &socket{privileged: true, v6: v6}
		_ = s.icmpBody(data)
	})
}
