package exporter

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// Prober runs probe cycles over the inventory's addresses and keeps, per
// target, what the collectors export.
type Prober struct {
	engine probes.Engine
	inv    func() *inventory.Snapshot
	logger *slog.Logger

	cfgMu   sync.Mutex
	cfg     config.ICMP
	retired probes.Stats // counts of engines replaced by reloads

	ambiguousMu sync.Mutex
	ambiguous   map[netip.Addr][]string // as last logged

	mu      sync.RWMutex
	targets map[key]*targetState
	// le and leBounds: the rendered le labels of the buckets in use, one
	// copy for all targets (a copy each was 2 MB at 10,000 targets).
	le       []string
	leBounds []float64
	// generation counts changes of targets, for caches of what they render.
	generation uint64
	health     ProbeHealth
}

// ProbeHealth is the state of the probe loop.
type ProbeHealth struct {
	Targets      int
	LastDuration time.Duration
	LastCycleEnd time.Time
	Cycles       uint64
	Overruns     uint64
	// CycleErrors counts cycles whose engine call failed; their results
	// are discarded.
	CycleErrors  uint64
	InvalidAddrs int
	// DuplicateAddr counts addresses that more than one server has; they
	// are not probed.
	DuplicateAddr int
}

type targetState struct {
	labels   []byte   // escaped, for the text writer
	values   []string // label values, for the collectors
	le       []string // rendered le labels of the buckets
	up       float64
	probed   bool // a request of the last cycle left the host; else up is unknown
	sent     uint64
	received uint64
	rtt      *rttHistogram
}

// newTargetState starts a target's series; le holds the rendered le labels
// of bounds, shared by every target (they are never changed).
func newTargetState(t Target, bounds []float64, le []string) *targetState {
	return &targetState{
		labels: labelsOf("id", t.ServerID, "name", t.Name, "project_id", t.ProjectID, "host", t.Host,
			"network", t.Network, "address", t.Addr.String()),
		values: []string{t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, t.Addr.String()},
		le:     le,
		rtt:    newRTTHistogram(bounds),
	}
}

// NewProber returns a prober over the snapshots inv returns.
func NewProber(engine probes.Engine, cfg config.ICMP, inv func() *inventory.Snapshot, logger *slog.Logger) *Prober {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Prober{engine: engine, inv: inv, logger: logger, cfg: cfg, targets: map[key]*targetState{}}
	return p
}

// SetConfig applies a reloaded probe configuration, and a new engine when
// engine is not nil, from the next cycle on. It returns the engine replaced,
// which the caller closes once no cycle uses it.
func (p *Prober) SetConfig(cfg config.ICMP, engine probes.Engine) (old probes.Engine) {
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

func (p *Prober) current() (config.ICMP, probes.Engine) {
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
	plan := planCycle(sel.Targets)
	p.logAmbiguous(plan.ambiguous)

	start := time.Now()
	results, err := engine.Probe(ctx, probes.HostTargets(plan.addrs))
	took := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return
	}
	if err == nil && len(results) != len(plan.addrs) {
		err = fmt.Errorf("the engine returned %d results for %d addresses", len(results), len(plan.addrs))
	}

	if err != nil {
		// Nothing of this cycle is recorded: the last completed cycle's
		// results stay, and its timestamp ages as for a stalled loop.
		p.mu.Lock()
		p.health.CycleErrors++
		p.health.InvalidAddrs = sel.Invalid
		p.health.DuplicateAddr = len(plan.ambiguous)
		p.mu.Unlock()
		p.logger.Error("probe cycle failed; its results are discarded", "err", err)
		return
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.health.InvalidAddrs = sel.Invalid
	p.health.DuplicateAddr = len(plan.ambiguous)
	live := make(map[key]bool, len(plan.targets))
	for _, t := range plan.targets {
		k := t.key()
		if live[k] {
			continue // listed twice with the same labels: one series
		}
		live[k] = true
		r := results[plan.index[t.Addr]]
		st := p.targets[k]
		if st == nil {
			if p.le == nil || !slices.Equal(p.leBounds, cfg.RTTBuckets) {
				p.leBounds, p.le = slices.Clone(cfg.RTTBuckets), leLabels(cfg.RTTBuckets)
			}
			st = newTargetState(t, cfg.RTTBuckets, p.le)
			p.targets[k] = st
		}
		st.sent += uint64(r.Sent)
		st.received += uint64(r.Received)
		// No request left the host (no socket for the family, sends
		// refused): the exporter's fault says nothing of the address.
		st.probed = r.Sent > 0
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
	p.health.Targets = len(live)
	p.health.LastDuration = took
	p.health.LastCycleEnd = time.Now()
	p.health.Cycles++
	p.generation++
}

// cyclePlan is what one cycle probes: each address once, however many of
// a server's addresses share it.
type cyclePlan struct {
	addrs   []netip.Addr
	index   map[netip.Addr]int
	targets []Target // those reported, in selection order
	// ambiguous holds the addresses that distinct servers have, with the
	// ids of those servers, sorted.
	ambiguous map[netip.Addr][]string
}

// planCycle leaves out every address that more than one server has
// (overlapping tenant networks, a floating IP in transit): a reply proves
// nothing about which of them answered. An address a server lists twice
// (on two networks) is probed once and reported for each.
func planCycle(targets []Target) cyclePlan {
	owner := make(map[netip.Addr]string, len(targets))
	var ambiguous map[netip.Addr][]string
	for _, t := range targets {
		id, ok := owner[t.Addr]
		switch {
		case !ok:
			owner[t.Addr] = t.ServerID
		case id != t.ServerID:
			if ambiguous == nil {
				ambiguous = map[netip.Addr][]string{}
			}
			ids := ambiguous[t.Addr]
			if ids == nil {
				ids = []string{id}
			}
			if !slices.Contains(ids, t.ServerID) {
				ids = append(ids, t.ServerID)
			}
			ambiguous[t.Addr] = ids
		}
	}
	plan := cyclePlan{
		addrs:     make([]netip.Addr, 0, len(owner)-len(ambiguous)),
		index:     make(map[netip.Addr]int, len(owner)-len(ambiguous)),
		targets:   make([]Target, 0, len(targets)),
		ambiguous: ambiguous,
	}
	for _, ids := range ambiguous {
		slices.Sort(ids)
	}
	for _, t := range targets {
		if _, ok := ambiguous[t.Addr]; ok {
			continue
		}
		plan.targets = append(plan.targets, t)
		if _, ok := plan.index[t.Addr]; !ok {
			plan.index[t.Addr] = len(plan.addrs)
			plan.addrs = append(plan.addrs, t.Addr)
		}
	}
	return plan
}

// logAmbiguous logs the addresses left out for being ambiguous when they
// change, not every cycle.
func (p *Prober) logAmbiguous(ambiguous map[netip.Addr][]string) {
	p.ambiguousMu.Lock()
	same := maps.EqualFunc(ambiguous, p.ambiguous, slices.Equal)
	p.ambiguous = ambiguous
	p.ambiguousMu.Unlock()
	if same {
		return
	}
	if len(ambiguous) == 0 {
		p.logger.Info("no address is held by more than one server any more")
		return
	}
	addrs := slices.SortedFunc(maps.Keys(ambiguous), netip.Addr.Compare)
	const shown = 20
	var b strings.Builder
	for i, a := range addrs[:min(len(addrs), shown)] {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", a, strings.Join(ambiguous[a], " "))
	}
	if len(addrs) > shown {
		fmt.Fprintf(&b, "; and %d more", len(addrs)-shown)
	}
	p.logger.Info("addresses held by more than one server are not probed, because a reply could come from either",
		"addresses", len(addrs), "servers", b.String())
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
