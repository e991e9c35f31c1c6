package probes

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// Shared probes every address through one long-lived socket per address
// family. A single reader per socket sleeps in recvmmsg until replies come,
// and each reply is matched to its request by the index in its payload.
type Shared struct {
	opts  Options
	magic uint32
	id    uint16
	epoch time.Time

	mu      sync.Mutex // serialises Probe and socket (re)opening
	sockets [2]*socket // [0] IPv4, [1] IPv6; nil until opened
	broken  [2]atomic.Bool
	cycleNo uint32
	current atomic.Pointer[cycle]
	readers sync.WaitGroup
	closed  atomic.Bool
	stats   stats
}

// cycle is the state of one Probe call shared with the readers. Packet i of
// address a has index a*count+i in the slices.
type cycle struct {
	number  uint32
	addrs   []netip.Addr
	count   int
	timeout int64
	sentAt  []atomic.Int64 // ns since epoch; 0 = not sent
	rtt     []atomic.Int64 // ns; 0 = no reply yet
	pending atomic.Int64   // sent and not yet answered
	allSent atomic.Bool
	done    chan struct{}
	once    sync.Once
}

func (c *cycle) finishIfComplete() {
	if c.allSent.Load() && c.pending.Load() == 0 {
		c.once.Do(func() { close(c.done) })
	}
}

// NewShared opens the IPv4 socket (its failure is returned: without it the
// exporter cannot do its job) and the IPv6 socket (its failure is logged and
// only IPv6 targets fail, for hosts without IPv6). In auto mode the IPv4
// socket decides the mode of both.
func NewShared(opts Options) (*Shared, error) {
	opts.setDefaults()
	s := &Shared{
		opts:  opts,
		magic: rand.Uint32(),
		id:    uint16(rand.UintN(1 << 16)),
		epoch: time.Now(),
	}
	sock, auto, err := openIPv4(&s.opts, s.id)
	if err != nil {
		return nil, err
	}
	s.start(0, sock)
	if err := s.open(1); err != nil {
		// Requests to IPv6 targets then count as send errors and their
		// openstack_vm_icmp_up is left out, rather than reported down.
		opts.Logger.Warn("IPv6 targets cannot be probed: their requests count as send errors and they get no "+
			"openstack_vm_icmp_up; if this host has no IPv6, set probe.icmp.ip_versions: [4]", "err", err)
	}
	opts.Logger.Info("ICMP probing", "engine", "shared", "mode", modeName(s.opts.Privileged), "auto", auto)
	return s, nil
}

func (s *Shared) open(family int) error {
	sock, err := openSocket(family == 1, s.opts.Privileged, s.id)
	if err != nil {
		return err
	}
	s.start(family, sock)
	return nil
}

// start makes sock the family's socket and starts its reader.
func (s *Shared) start(family int, sock *socket) {
	s.sockets[family] = sock
	s.broken[family].Store(false)
	s.readers.Add(1)
	go s.read(family, sock)
}

// reopenBroken replaces a socket whose reader failed.
func (s *Shared) reopenBroken() {
	for f := range s.sockets {
		if !s.broken[f].Load() {
			continue
		}
		if old := s.sockets[f]; old != nil {
			_ = old.close()
			s.sockets[f] = nil
		}
		if err := s.open(f); err != nil {
			s.opts.Logger.Error("reopening ICMP socket failed", "ipv6", f == 1, "err", err)
		}
	}
}

func (s *Shared) now() int64 { return int64(time.Since(s.epoch)) }

// read is the only goroutine reading the socket; it blocks in the kernel
// until replies arrive, so an idle prober costs nothing.
func (s *Shared) read(family int, sock *socket) {
	defer s.readers.Done()
	const batch = 64
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 256)}
	}
	for {
		n, err := sock.readBatch(msgs)
		now := s.now()
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if isTransient(err) {
				continue
			}
			s.stats.socketErrors.Add(1)
			s.broken[family].Store(true)
			s.opts.Logger.Error("ICMP socket failed; it is reopened at the next cycle", "ipv6", family == 1, "err", err)
			return
		}
		c := s.current.Load()
		if c == nil {
			continue
		}
		for i := 0; i < n; i++ {
			body := sock.icmpBody(msgs[i].Buffers[0][:msgs[i].N])
			s.match(c, sock, body, msgs[i].Addr, now)
		}
	}
}

func isTransient(err error) bool {
	return errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOBUFS)
}

// match counts a reply if it answers a request of the running cycle, comes
// from the address that request went to, and is in time. A duplicate reply is
// counted once.
func (s *Shared) match(c *cycle, sock *socket, body []byte, from net.Addr, now int64) {
	e, ok := parseEchoReply(body, sock.v6)
	if !ok || e.magic != s.magic || e.cycle != c.number {
		return
	}
	if sock.privileged && e.id != s.id {
		return
	}
	idx := int(e.index)
	if idx >= len(c.sentAt) || e.seq != uint16(idx) {
		return
	}
	if src := sourceOf(from); src != c.addrs[idx/c.count].WithZone(src.Zone()) {
		return
	}
	sent := c.sentAt[idx].Load()
	if sent == 0 {
		return
	}
	rtt := now - sent
	if rtt > c.timeout {
		return
	}
	if rtt < 1 {
		rtt = 1
	}
	if c.rtt[idx].CompareAndSwap(0, rtt) {
		c.pending.Add(-1)
		c.finishIfComplete()
	}
}

// Probe sends opts.Count echo requests to every address, in rounds spaced by
// opts.Spacing and paced to opts.PacketsPerSecond, and returns when every
// request is answered or has timed out.
func (s *Shared) Probe(ctx context.Context, addrs []netip.Addr) ([]Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, errors.New("prober is closed")
	}
	s.reopenBroken()

	count := s.opts.Count
	s.cycleNo++
	c := &cycle{
		number:  s.cycleNo,
		addrs:   make([]netip.Addr, len(addrs)),
		count:   count,
		timeout: int64(s.opts.Timeout),
		sentAt:  make([]atomic.Int64, len(addrs)*count),
		rtt:     make([]atomic.Int64, len(addrs)*count),
		done:    make(chan struct{}),
	}
	for i, a := range addrs {
		c.addrs[i] = a.Unmap()
	}
	s.current.Store(c)
	defer s.current.Store(nil)

	lastSent, err := s.send(ctx, c)
	c.allSent.Store(true)
	c.finishIfComplete()
	if err == nil {
		wait := time.NewTimer(time.Duration(lastSent + c.timeout - s.now()))
		select {
		case <-c.done:
		case <-wait.C:
		case <-ctx.Done():
			err = ctx.Err()
		}
		wait.Stop()
	}
	s.current.Store(nil)
	return c.results(), err
}

// send writes every request of the cycle and returns when the last was sent.
func (s *Shared) send(ctx context.Context, c *cycle) (lastSent int64, err error) {
	var buf [packetLen]byte
	perPacket := int64(time.Second) / int64(s.opts.PacketsPerSecond)
	start := s.now()
	sentTotal := int64(0)
	dests := make([]net.Addr, len(c.addrs)) // built once, reused by every round
	for round := 0; round < c.count; round++ {
		if round > 0 {
			if err := sleepUntil(ctx, s, start+int64(round)*int64(s.opts.Spacing)); err != nil {
				return lastSent, err
			}
		}
		for a, addr := range c.addrs {
			// Pace in steps of a millisecond: finer sleeps cost more CPU
			// than they save in burstiness.
			due := start + sentTotal*perPacket
			if due-s.now() > int64(time.Millisecond) {
				if err := sleepUntil(ctx, s, due); err != nil {
					return lastSent, err
				}
			}
			idx := a*c.count + round
			family := 0
			if addr.Is6() {
				family = 1
			}
			sock := s.sockets[family]
			if sock == nil || !addr.IsValid() {
				s.stats.sendErrors.Add(1)
				continue
			}
			if dests[a] == nil {
				dests[a] = sock.destination(addr)
			}
			echo{id: s.id, seq: uint16(idx), magic: s.magic, cycle: c.number, index: uint32(idx)}.marshal(buf[:], sock.v6)
			c.pending.Add(1)
			now := s.now()
			c.sentAt[idx].Store(now)
			if err := writeRetrying(sock, buf[:], dests[a]); err != nil {
				c.sentAt[idx].Store(0)
				c.pending.Add(-1)
				s.stats.sendErrors.Add(1)
				s.opts.Logger.Debug("echo request not sent", "address", addr, "err", err)
				continue
			}
			lastSent = now
			sentTotal++
		}
	}
	return lastSent, nil
}

// writeRetrying retries a send the kernel refused for a full queue a few
// times, briefly; an unbounded retry could stall the whole cycle.
func writeRetrying(sock *socket, b []byte, dst net.Addr) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		if err = sock.writeTo(b, dst); err == nil || !errors.Is(err, syscall.ENOBUFS) {
			return err
		}
		time.Sleep(time.Millisecond << attempt)
	}
	return err
}

func sleepUntil(ctx context.Context, s *Shared, at int64) error {
	d := time.Duration(at - s.now())
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *cycle) results() []Result {
	res := make([]Result, len(c.addrs))
	rtts := make([]time.Duration, 0, len(c.rtt))
	for a := range c.addrs {
		r := &res[a]
		start := len(rtts)
		for i := a * c.count; i < (a+1)*c.count; i++ {
			if c.sentAt[i].Load() != 0 {
				r.Sent++
			}
			if v := c.rtt[i].Load(); v != 0 {
				rtts = append(rtts, time.Duration(v))
			}
		}
		r.RTTs = rtts[start:len(rtts):len(rtts)]
		r.Received = len(r.RTTs)
	}
	return res
}

// Stats returns the prober's failure counters.
func (s *Shared) Stats() Stats { return s.stats.snapshot() }

// Close closes the sockets and waits for the readers to stop.
func (s *Shared) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, sock := range s.sockets {
		if sock != nil {
			_ = sock.close()
			s.sockets[i] = nil
		}
	}
	s.readers.Wait()
	return nil
}
