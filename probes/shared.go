package probes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/netns"
)

// Shared probes every target through one long-lived socket per (network
// namespace, address family). A single reader per socket sleeps in recvmmsg
// until replies come, and each reply is matched to its request by the index
// in its payload.
//
// The sockets of a namespace other than the exporter's own are raw ones
// (ICMP datagram sockets are refused in the Neutron namespaces, whose
// ping_group_range is "1 0"), opened on a locked OS thread that entered the
// namespace and came back (netns.Do): a socket stays in the namespace it was
// created in, so probing needs no namespace switch. Each cycle compares the
// namespace each socket lives in with the one the name now denotes, reopens
// the sockets of a namespace deleted and recreated, and closes those of a
// namespace gone or no longer targeted.
type Shared struct {
	opts  Options
	magic uint32
	id    uint16
	epoch time.Time

	mu      sync.Mutex // serialises Probe and socket (re)opening
	spaces  map[string]*vantage
	cycleNo uint32
	current atomic.Pointer[cycle]
	readers sync.WaitGroup
	closed  atomic.Bool
	stats   stats
}

// vantage is one network namespace's sockets; "" is the exporter's own.
type vantage struct {
	name  string
	ns    netns.ID   // the namespace the sockets live in; zero for the own one
	socks [2]*socket // [0] IPv4, [1] IPv6; nil until opened
	done  [2]chan struct{}
	// broken is set by a reader whose socket failed.
	broken [2]atomic.Bool
	// unprobed is why the family's targets cannot be probed this cycle.
	unprobed [2]string
	// problem is the last failure logged, so that each is logged once.
	problem string
}

// cycle is the state of one Probe call shared with the readers. Packet i of
// target a has index a*count+i in the slices.
type cycle struct {
	number   uint32
	addrs    []netip.Addr
	socks    []*socket // per target: the socket it is probed through
	unprobed []string  // per target
	count    int
	timeout  int64
	sentAt   []atomic.Int64 // ns since epoch; 0 = not sent
	rtt      []atomic.Int64 // ns; 0 = no reply yet
	pending  atomic.Int64   // sent and not yet answered
	allSent  atomic.Bool
	done     chan struct{}
	once     sync.Once
}

func (c *cycle) finishIfComplete() {
	if c.allSent.Load() && c.pending.Load() == 0 {
		c.once.Do(func() { close(c.done) })
	}
}

// NewShared opens the IPv4 socket of the exporter's own namespace (its
// failure is returned: without it the exporter cannot do its job) and the
// IPv6 one (its failure is logged and only IPv6 targets fail, for hosts
// without IPv6). In auto mode the IPv4 socket decides the mode of both.
// Sockets in other namespaces are opened by Probe when targets need them.
func NewShared(opts Options) (*Shared, error) {
	opts.setDefaults()
	s := &Shared{
		opts:   opts,
		magic:  rand.Uint32(),
		id:     uint16(rand.UintN(1 << 16)),
		epoch:  time.Now(),
		spaces: map[string]*vantage{},
	}
	host := &vantage{}
	s.spaces[""] = host
	sock, auto, err := openIPv4(&s.opts, s.id)
	if err != nil {
		return nil, err
	}
	s.start(host, 0, sock, maxBatch)
	if err := s.openHost(1); err != nil {
		// Requests to IPv6 targets then count as send errors and their
		// openstack_vm_icmp_up is left out, rather than reported down.
		opts.Logger.Warn("IPv6 targets cannot be probed: their requests count as send errors and they get no "+
			"openstack_vm_icmp_up; if this host has no IPv6, set probe.icmp.ip_versions: [4]", "err", err)
	}
	opts.Logger.Info("ICMP probing", "engine", "shared", "mode", modeName(s.opts.Privileged), "auto", auto)
	logPrivileges(s.opts)
	return s, nil
}

// logPrivileges says at start which capabilities probing from network
// namespaces lacks, and how to grant them: a warning when the namespace
// directory holds namespaces (a Neutron agent runs here), else for
// information. The engine runs on without them: namespace targets are then
// unprobed, reason no_privilege.
func logPrivileges(opts Options) {
	_, msg := netns.CheckPrivileges()
	if msg == "" {
		return
	}
	names, _ := netns.List(opts.NetnsDir)
	level := slog.LevelInfo
	if len(names) > 0 {
		level = slog.LevelWarn
	}
	opts.Logger.Log(context.Background(), level, "probing from network namespaces is not possible",
		"netns_dir", opts.NetnsDir, "namespaces", len(names), "reason", msg)
}

func (s *Shared) openHost(family int) error {
	sock, err := openSocket(family == 1, s.opts.Privileged, s.id)
	if err != nil {
		return err
	}
	s.start(s.spaces[""], family, sock, maxBatch)
	return nil
}

// start makes sock the family's socket of v and starts its reader, which
// reads up to batch replies a system call.
func (s *Shared) start(v *vantage, family int, sock *socket, batch int) {
	v.socks[family] = sock
	v.broken[family].Store(false)
	done := make(chan struct{})
	v.done[family] = done
	s.readers.Add(1)
	go s.read(v, family, sock, done, batch)
}

// closeSocket closes the family's socket of v and waits for its reader.
func (s *Shared) closeSocket(v *vantage, family int) {
	if v.socks[family] == nil {
		return
	}
	_ = v.socks[family].close()
	<-v.done[family]
	v.socks[family], v.done[family] = nil, nil
}

func (s *Shared) closeVantage(v *vantage) {
	s.closeSocket(v, 0)
	s.closeSocket(v, 1)
	v.ns = netns.ID{}
}

// reopenBroken closes the sockets whose reader failed and reopens those of
// the exporter's own namespace; Probe reopens the others when targeted.
func (s *Shared) reopenBroken() {
	for _, v := range s.spaces {
		for f := range v.socks {
			if !v.broken[f].Load() || v.socks[f] == nil {
				continue
			}
			s.closeSocket(v, f)
			if v.name != "" {
				continue
			}
			if err := s.openHost(f); err != nil {
				s.opts.Logger.Error("reopening ICMP socket failed", "ipv6", f == 1, "err", err)
			}
		}
	}
}

// prepare makes the sockets of every namespace targets need usable, closes
// those of namespaces no longer targeted, and sets why the families that
// cannot be probed cannot.
func (s *Shared) prepare(targets []Target) {
	need := map[string]*[2]int{} // targets per namespace and family
	for _, t := range targets {
		if t.Namespace == "" {
			continue
		}
		fams := need[t.Namespace]
		if fams == nil {
			fams = &[2]int{}
			need[t.Namespace] = fams
		}
		fams[familyOf(t.Addr.Unmap())]++
	}
	for name, v := range s.spaces {
		if name != "" && need[name] == nil {
			s.closeVantage(v)
			delete(s.spaces, name)
		}
	}
	for name, fams := range need {
		v := s.spaces[name]
		if v == nil {
			v = &vantage{name: name}
			s.spaces[name] = v
		}
		s.prepareNamespace(v, fams)
	}
}

func familyOf(a netip.Addr) int {
	if a.Is6() {
		return 1
	}
	return 0
}

func (s *Shared) prepareNamespace(v *vantage, fams *[2]int) {
	v.unprobed = [2]string{}
	if err := netns.ValidName(v.name); err != nil {
		// No namespace can have this name: no file of the directory does.
		s.fail(v, [2]bool{true, true}, fmt.Errorf("%w: %w", netns.ErrNotExist, err))
		return
	}
	id, err := netns.Identity(s.opts.NetnsDir, v.name)
	if err != nil {
		s.closeVantage(v)
		s.fail(v, [2]bool{true, true}, err)
		return
	}
	if !v.ns.IsZero() && v.ns != id {
		s.opts.Logger.Info("network namespace was recreated; reopening its ICMP sockets", "namespace", v.name)
		s.closeVantage(v)
	}
	failed := false
	for f, n := range fams {
		if n == 0 {
			s.closeSocket(v, f) // no target of the family any more
			continue
		}
		if v.socks[f] != nil {
			continue
		}
		sock, err := s.openIn(v.name, f == 1, id)
		if err != nil {
			s.fail(v, [2]bool{f == 0, f == 1}, err)
			failed = true
			continue
		}
		v.ns = id
		s.start(v, f, sock, namespaceBatch(n))
	}
	if !failed && v.problem != "" {
		s.opts.Logger.Info("probing from network namespace again", "namespace", v.name)
		v.problem = ""
	}
}

// errNamespaceChanged: the namespace was replaced while its socket opened.
var errNamespaceChanged = errors.New("the namespace was replaced while its socket was being opened")

// openIn opens a raw socket of the family inside namespace name, and checks
// that it lives in the namespace whose identity is want.
func (s *Shared) openIn(name string, v6 bool, want netns.ID) (*socket, error) {
	var sock *socket
	err := netns.Do(s.opts.NetnsDir, name, func() error {
		var err error
		sock, err = openSocket(v6, true, s.id)
		return err
	})
	if err != nil {
		return nil, err
	}
	sc, ok := sock.rawConn().(syscall.Conn)
	if !ok {
		_ = sock.close()
		return nil, errors.New("ICMP socket without a file descriptor")
	}
	got, err := netns.SocketIdentityOf(sc)
	if err == nil && got != want {
		err = errNamespaceChanged
	}
	if err != nil {
		_ = sock.close()
		return nil, err
	}
	return sock, nil
}

// fail records why the families of v cannot be probed this cycle, counts
// the failures that are not a plain absence, and logs each new one once.
func (s *Shared) fail(v *vantage, fams [2]bool, err error) {
	reason := ""
	switch {
	case errors.Is(err, netns.ErrNotExist):
		reason = UnprobedNoNamespace
	case errors.Is(err, netns.ErrPermission), errors.Is(err, ErrPermission):
		reason = UnprobedNoPrivilege
		s.stats.namespaceErrors.Add(1)
	case errors.Is(err, errNamespaceChanged):
		// Opened again next cycle; until then its requests are send errors.
		s.stats.namespaceErrors.Add(1)
	default:
		// Its requests count as send errors, as for a family without a
		// socket in the exporter's own namespace.
		s.stats.namespaceErrors.Add(1)
	}
	for f, on := range fams {
		if on {
			v.unprobed[f] = reason
		}
	}
	if msg := err.Error(); msg != v.problem {
		v.problem = msg
		level := slog.LevelWarn
		if reason == UnprobedNoNamespace {
			level = slog.LevelInfo
		}
		if reason == UnprobedNoPrivilege {
			err = fmt.Errorf("%w; %s", err, netns.GrantHint)
		}
		s.opts.Logger.Log(context.Background(), level, "cannot probe from network namespace", "namespace", v.name,
			"unprobed", reason, "err", err)
	}
}

func (s *Shared) now() int64 { return int64(time.Since(s.epoch)) }

// read is the only goroutine reading the socket; it blocks in the kernel
// until replies arrive, so an idle prober costs nothing.
func (s *Shared) read(v *vantage, family int, sock *socket, done chan struct{}, batch int) {
	defer s.readers.Done()
	defer close(done)
	msgs := make([]ipv4.Message, batch)
	bufs := make([]byte, batch*replyBufferLen)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{bufs[i*replyBufferLen : (i+1)*replyBufferLen : (i+1)*replyBufferLen]}
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
			v.broken[family].Store(true)
			s.opts.Logger.Error("ICMP socket failed; it is reopened at the next cycle", "ipv6", family == 1,
				"namespace", v.name, "err", err)
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

// maxBatch is the most replies a reader takes per system call: the own
// namespace's socket takes every reply of a large cycle.
const maxBatch = 64

// namespaceBatch sizes the reader's batch of a namespace socket by the
// targets it had when opened: a namespace holds the VMs of one network on
// this host, often a few dozen, and hundreds of namespaces with buffers for
// 64 replies each would double the engine's memory (docs/performance.md).
func namespaceBatch(targets int) int {
	return min(maxBatch, max(4, targets/16))
}

// replyBufferLen holds an echo reply of this package with the largest IPv4
// header a raw socket delivers (60 bytes); longer datagrams are not ours.
const replyBufferLen = 128

func isTransient(err error) bool {
	return errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOBUFS)
}

// match counts a reply if it answers a request of the running cycle, comes
// from the address that request went to, arrived on the socket it left from
// (the same address in two namespaces is two targets), and is in time. A
// duplicate reply is counted once.
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
	if c.socks[idx/c.count] != sock {
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

// Probe sends opts.Count echo requests to every target, in rounds spaced by
// opts.Spacing and paced to opts.PacketsPerSecond over all namespaces, and
// returns when every request is answered or has timed out.
func (s *Shared) Probe(ctx context.Context, targets []Target) ([]Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, errors.New("prober is closed")
	}
	s.reopenBroken()
	s.prepare(targets)

	count := s.opts.Count
	s.cycleNo++
	c := &cycle{
		number:   s.cycleNo,
		addrs:    make([]netip.Addr, len(targets)),
		socks:    make([]*socket, len(targets)),
		unprobed: make([]string, len(targets)),
		count:    count,
		timeout:  int64(s.opts.Timeout),
		sentAt:   make([]atomic.Int64, len(targets)*count),
		rtt:      make([]atomic.Int64, len(targets)*count),
		done:     make(chan struct{}),
	}
	for i, t := range targets {
		a := t.Addr.Unmap()
		c.addrs[i] = a
		v := s.spaces[t.Namespace]
		f := familyOf(a)
		c.socks[i] = v.socks[f]
		c.unprobed[i] = v.unprobed[f]
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
			if c.unprobed[a] != "" {
				continue
			}
			sock := c.socks[a]
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
		r.Unprobed = c.unprobed[a]
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
	for name, v := range s.spaces {
		s.closeVantage(v)
		delete(s.spaces, name)
	}
	s.readers.Wait()
	return nil
}
