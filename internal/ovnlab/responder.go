package ovnlab

import (
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
)

// responder answers ICMPv4 echo requests in a VM's namespace after a
// delay: the lab's stand-in for netem's delay (the namespace's kernel has
// icmp_echo_ignore_all set).
type responder struct {
	delay time.Duration
	raw   *icmp.PacketConn
	c     *ipv4.PacketConn
	wg    sync.WaitGroup
	once  sync.Once
}

func startResponder(ns string, delay time.Duration) (*responder, error) {
	r := &responder{delay: delay}
	err := netlab.Do(ns, func() error {
		var err error
		r.raw, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return nil, err
	}
	r.c = r.raw.IPv4PacketConn()
	if err := r.c.SetControlMessage(ipv4.FlagDst, true); err != nil {
		r.raw.Close()
		return nil, err
	}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

func (r *responder) serve() {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := r.c.ReadFrom(buf)
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
		time.AfterFunc(r.delay, func() {
			defer r.wg.Done()
			_, _ = r.c.WriteTo(reply, &ipv4.ControlMessage{Src: dst}, src)
		})
	}
}

func (r *responder) stop() {
	r.once.Do(func() {
		r.raw.Close()
		r.wg.Wait()
	})
}
