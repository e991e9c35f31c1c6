package probes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	probing "github.com/prometheus-community/pro-bing"
)

// ProBing probes each address with its own short-lived pro-bing Pinger per
// cycle, a bounded number at a time. It is the simpler engine, kept for
// comparison and for hosts where a long-lived shared socket is unwanted; see
// the package documentation for what it costs.
type ProBing struct {
	opts        Options
	concurrency int
	nextID      uint16
	mu          sync.Mutex
	stats       stats
}

// proBingConcurrency bounds the open sockets: with raw sockets the kernel
// hands every reply to every open socket's filter.
const proBingConcurrency = 128

// NewProBing checks that the mode's socket can be opened, so that a missing
// privilege is reported at start rather than at the first cycle.
func NewProBing(opts Options) (*ProBing, error) {
	opts.setDefaults()
	sock, auto, err := openIPv4(&opts, 0)
	if err != nil {
		return nil, err
	}
	_ = sock.close()
	opts.Logger.Info("ICMP probing", "engine", "pro-bing", "mode", modeName(opts.Privileged), "auto", auto)
	return &ProBing{opts: opts, concurrency: proBingConcurrency}, nil
}

// Probe runs one pinger per target of the exporter's own namespace. Targets
// in another namespace are left UnprobedEngineUnsupported: a pinger opens
// its socket per target and cycle, and each would need its own switch into
// the namespace (a locked thread and two setns calls per probe), which is
// what the Shared engine's long-lived socket per namespace avoids.
func (p *ProBing) Probe(ctx context.Context, targets []Target) ([]Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	results := make([]Result, len(targets))
	addrs := make([]netip.Addr, 0, len(targets))
	index := make([]int, 0, len(targets))
	for i, t := range targets {
		if t.Namespace != "" {
			results[i].Unprobed = UnprobedEngineUnsupported
			continue
		}
		addrs = append(addrs, t.Addr)
		index = append(index, i)
	}
	sem := make(chan struct{}, p.concurrency)
	var wg sync.WaitGroup
	// Start pingers no faster than the configured packet rate allows. A rate
	// above one pinger per nanosecond is no pacing at all (and a zero
	// period would make NewTicker panic).
	var pace <-chan time.Time
	if period := time.Second * time.Duration(p.opts.Count) / time.Duration(p.opts.PacketsPerSecond); period > 0 {
		t := time.NewTicker(period)
		defer t.Stop()
		pace = t.C
	}
	for i, addr := range addrs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return results, ctx.Err()
		}
		if i > 0 && pace != nil {
			select {
			case <-pace:
			case <-ctx.Done():
				<-sem
				wg.Wait()
				return results, ctx.Err()
			}
		}
		// Distinct IDs keep concurrent raw-socket pingers from taking each
		// other's replies (pro-bing picks them at random otherwise).
		p.nextID++
		id := int(p.nextID)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[index[i]] = p.ping(ctx, addr.Unmap(), id)
		}()
	}
	wg.Wait()
	return results, ctx.Err()
}

func (p *ProBing) ping(ctx context.Context, addr netip.Addr, id int) Result {
	pinger := probing.New("")
	pinger.SetLogger(probing.NoopLogger{})
	pinger.SetPrivileged(p.opts.Privileged)
	pinger.SetIPAddr(&net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()})
	pinger.SetID(id)
	pinger.Count = p.opts.Count
	pinger.Interval = p.opts.Spacing
	if pinger.Interval <= 0 {
		pinger.Interval = time.Millisecond
	}
	pinger.Timeout = time.Duration(p.opts.Count-1)*pinger.Interval + p.opts.Timeout
	// Only what one cycle needs is kept: the library's own RTT and TTL
	// records grow without bound otherwise.
	pinger.RecordRtts = false
	pinger.RecordTTLs = false
	var res Result
	var mu sync.Mutex
	pinger.OnRecv = func(pkt *probing.Packet) {
		if pkt.Rtt > p.opts.Timeout {
			return
		}
		mu.Lock()
		res.RTTs = append(res.RTTs, pkt.Rtt)
		mu.Unlock()
	}
	pinger.OnSendError = func(*probing.Packet, error) { p.stats.sendErrors.Add(1) }
	if err := pinger.RunWithContext(ctx); err != nil && !errors.Is(err, context.Canceled) {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			err = permissionErr(p.opts.Privileged, err)
		}
		p.stats.socketErrors.Add(1)
		p.opts.Logger.Debug("pinger failed", "address", addr, "err", fmt.Errorf("pro-bing: %w", err))
	}
	st := pinger.Statistics()
	mu.Lock()
	defer mu.Unlock()
	res.Sent = st.PacketsSent
	res.Received = len(res.RTTs)
	return res
}

// Stats returns the prober's failure counters.
func (p *ProBing) Stats() Stats { return p.stats.snapshot() }

// Close has nothing to release: pingers close their sockets as they end.
func (p *ProBing) Close() error { return nil }
