package exporter

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// Prober runs probe cycles over the inventory's addresses and keeps, per
// target, what the collectors export.
type Prober struct {
	engine probes.Prober
	inv    func() *inventory.Snapshot
	logger *slog.Logger

	cfgMu   sync.Mutex
	cfg     config.ICMP
	retired probes.Stats // counts of engines replaced by reloads

	mu      sync.RWMutex
	targets map[key]*targetState
	// generation counts changes of targets, for caches of what they render.
	generation uint64
	health     ProbeHealth
}

// ProbeHealth is the state of the probe loop.
type ProbeHealth struct {
	Targets       int
	LastDuration  time.Duration
	LastCycleEnd  time.Time
	Cycles        uint64
	Overruns      uint64
	InvalidAddrs  int
	DuplicateAddr int
}

type targetState struct {
	target   Target
	labels   []byte   // escaped, for the text writer
	values   []string // label values, for the collectors
	le       []string // rendered le labels of the buckets
	up       float64
	sent     uint64
	received uint64
	rtt      *rttHistogram
}

func newTargetState(t Target, bounds []float64) *targetState {
	return &targetState{
		target: t,
		labels: labelsOf("id", t.ServerID, "name", t.Name, "project_id", t.ProjectID, "host", t.Host,
			"network", t.Network, "address", t.Addr.String()),
		values: []string{t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, t.Addr.String()},
		le:     leLabels(bounds),
		rtt:    newRTTHistogram(bounds),
	}
}

// NewProber returns a prober over the snapshots inv returns.
func NewProber(engine probes.Prober, cfg config.ICMP, inv func() *inventory.Snapshot, logger *slog.Logger) *Prober {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Prober{engine: engine, inv: inv, logger: logger, cfg: cfg, targets: map[key]*targetState{}}
	return p
}

// SetConfig applies a reloaded probe configuration, and a new engine when
// engine is not nil, from the next cycle on. It returns the engine replaced,
// which the caller closes once no cycle uses it.
func (p *Prober) SetConfig(cfg config.ICMP, engine probes.Prober) (old probes.Prober) {
	p.cfgMu.Lock()
	defer p.cfgMu.Unlock()
	if !slices.Equal(cfg.RTTBuckets, p.cfg.RTTBuckets) {
		// Histograms cannot change buckets; start the series anew.
		p.mu.Lock()
		p.targets = map[key]*targetState{}
		p.generation++
		p.mu.Unlock()
	}
	p.cfg = cfg
	if engine != nil {
		old, p.engine = p.engine, engine
		if old != nil {
			st := old.Stats()
			p.retired.SendErrors += st.SendErrors
			p.retired.SocketErrors += st.SocketErrors
		}
	}
	return old
}

func (p *Prober) current() (config.ICMP, probes.Prober) {
	p.cfgMu.Lock()
	defer p.cfgMu.Unlock()
	return p.cfg, p.engine
}

// Run starts a cycle every interval until ctx ends. A cycle that overruns
// its interval is counted and the next one starts at once.
func (p *Prober) Run(ctx context.Context) {
	next := time.Now()
	for {
		start := time.Now()
		p.Cycle(ctx)
		if ctx.Err() != nil {
			return
		}
		cfg, _ := p.current()
		interval := cfg.Interval
		next = next.Add(interval)
		if now := time.Now(); now.After(next) {
			p.mu.Lock()
			p.health.Overruns++
			p.mu.Unlock()
			p.logger.Warn("probe cycle overran its interval", "took", time.Since(start), "interval", interval)
			next = now
			continue
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Cycle probes every selected address once and records the outcome.
func (p *Prober) Cycle(ctx context.Context) {
	cfg, engine := p.current()
	if !cfg.Enabled || engine == nil {
		p.mu.Lock()
		if len(p.targets) > 0 {
			p.targets = map[key]*targetState{}
			p.generation++
		}
		p.health.Targets = 0
		p.mu.Unlock()
		return
	}
	sel := SelectTargets(p.inv(), &cfg)

	// One echo stream per address, however many servers share it (tenant
	// networks overlap; the same floating IP can move between servers).
	index := make(map[netip.Addr]int, len(sel.Targets))
	addrs := make([]netip.Addr, 0, len(sel.Targets))
	duplicates := 0
	for _, t := range sel.Targets {
		if _, ok := index[t.Addr]; ok {
			duplicates++
			continue
		}
		index[t.Addr] = len(addrs)
		addrs = append(addrs, t.Addr)
	}

	start := time.Now()
	results, err := engine.Probe(ctx, addrs)
	took := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return
	}
	if err != nil {
		p.logger.Error("probe cycle failed", "err", err)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	live := make(map[key]bool, len(sel.Targets))
	for _, t := range sel.Targets {
		k := t.key()
		live[k] = true
		i := index[t.Addr]
		if i >= len(results) {
			continue
		}
		r := results[i]
		st := p.targets[k]
		if st == nil {
			st = newTargetState(t, cfg.RTTBuckets)
			p.targets[k] = st
		}
		st.sent += uint64(r.Sent)
		st.received += uint64(r.Received)
		st.up = 0
		if r.Received > 0 {
			st.up = 1
		}
		for _, rtt := range r.RTTs {
			st.rtt.observe(rtt.Seconds())
		}
	}
	for k := range p.targets {
		if !live[k] {
			delete(p.targets, k)
		}
	}
	p.health.Targets = len(sel.Targets)
	p.health.LastDuration = took
	p.health.LastCycleEnd = time.Now()
	p.health.Cycles++
	p.generation++
	p.health.InvalidAddrs = sel.Invalid
	p.health.DuplicateAddr = duplicates
}

// Health returns the probe loop's state.
func (p *Prober) Health() ProbeHealth {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.health
}

// Generation changes whenever the targets or their results do.
func (p *Prober) Generation() uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.generation
}

// EngineStats returns the engines' failure counters, those of engines
// replaced by reloads included, so the counters never go back.
func (p *Prober) EngineStats() probes.Stats {
	p.cfgMu.Lock()
	defer p.cfgMu.Unlock()
	st := p.retired
	if p.engine == nil {
		return st
	}
	cur := p.engine.Stats()
	st.SendErrors += cur.SendErrors
	st.SocketErrors += cur.SocketErrors
	return st
}
