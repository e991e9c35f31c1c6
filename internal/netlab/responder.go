package netlab

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Responder answers echo requests (IPv4 and IPv6) in a namespace whose
// kernel does not (net.ipv4.icmp_echo_ignore_all), after a delay: the
// labs' stand-in for netem's delay, which this kernel lacks. Used by this
// lab's Slow namespace and by the OVN lab's slow VMs.
type Responder struct {
	delay atomic.Int64
	c4    *ipv4.PacketConn
	c6    *ipv6.PacketConn
	raw4  *icmp.PacketConn
	raw6  *icmp.PacketConn
	wg    sync.WaitGroup
	once  sync.Once
}

// StartResponder starts answering in namespace ns (a name under
// /run/netns) after delay, until Stop.
func StartResponder(ns string, delay time.Duration) (*Responder, error) {
	r := &Responder{}
	r.delay.Store(int64(delay))
	err := Do(ns, func() error {
		var err error
		if r.raw4, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); err != nil {
			return err
		}
		if r.raw6, err = icmp.ListenPacket("ip6:ipv6-icmp", "::"); err != nil {
			r.raw4.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.c4, r.c6 = r.raw4.IPv4PacketConn(), r.raw6.IPv6PacketConn()
	// The destination of each request becomes the source of its reply:
	// the VM addresses live on lo, and the route back leaves by the veth.
	if err := r.setup(); err != nil {
		r.raw4.Close()
		r.raw6.Close()
		return nil, err
	}
	r.wg.Add(2)
	go r.serve4()
	go r.serve6()
	return r, nil
}

func (r *Responder) setup() error {
	if err := r.c4.SetControlMessage(ipv4.FlagDst, true); err != nil {
		return err
	}
	if err := r.c6.SetControlMessage(ipv6.FlagDst, true); err != nil {
		return err
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeEchoRequest)
	return r.c6.SetICMPFilter(&f)
}

// SetDelay changes how late the replies leave.
func (r *Responder) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

func (r *Responder) serve4() {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := r.c4.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < 8 || buf[0] != 8 || cm == nil {
			continue
		}
		msg, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		reply, err := (&icmp.Message{Type: ipv4.ICMPTypeEchoReply, Body: msg.Body}).Marshal(nil)
		if err != nil {
			continue
		}
		dst := cm.Dst
		r.wg.Add(1)
		time.AfterFunc(time.Duration(r.delay.Load()), func() {
			defer r.wg.Done()
			_, _ = r.c4.WriteTo(reply, &ipv4.ControlMessage{Src: dst}, src)
		})
	}
}

func (r *Responder) serve6() {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := r.c6.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < 8 || buf[0] != 128 || cm == nil {
			continue
		}
		reply := append([]byte(nil), buf[:n]...)
		reply[0] = 129
		reply[2], reply[3] = 0, 0 // the kernel computes ICMPv6 checksums
		dst := cm.Dst
		r.wg.Add(1)
		time.AfterFunc(time.Duration(r.delay.Load()), func() {
			defer r.wg.Done()
			_, _ = r.c6.WriteTo(reply, &ipv6.ControlMessage{Src: dst}, src)
		})
	}
}

// Stop closes the sockets and waits for the replies in flight; calling it
// again does nothing.
func (r *Responder) Stop() {
	r.once.Do(func() {
		r.raw4.Close()
		r.raw6.Close()
		r.wg.Wait()
	})
}
