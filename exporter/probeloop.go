package exporter

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/portsecurity"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

// ProbeLoop runs probe cycles over the inventory's addresses and keeps, per
// target, what the collectors export. Readers take a copy of its results
// with Results; nothing else of it is read from outside the loop.
type ProbeLoop struct {
	engine probes.Engine
	inv    func() *inventory.Snapshot
	logger *slog.Logger

	cfgMu   sync.Mutex
	cfg     config.ICMP
	retired probes.Stats // counts of engines replaced by reloads

	ambiguousMu sync.Mutex
	ambiguous   map[targets.Probe][]string // as last logged
	// Owned by the cycle: the vantage mode and namespace listing error
	// last logged.
	mode, nsErr string
	// namespaces reads the namespaces of netns_dir (netnsDir; tests
	// replace it).
	namespaces func(dir string) targets.Namespaces

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
	// DuplicateAddr counts addresses that more than one server has
	// within one vantage; they are not probed.
	DuplicateAddr int
	// Mode is the vantage mode of the last cycle: host, ovn-metadata,
	// dhcp ("" before the first).
	Mode string
	// Unprobed counts the selected addresses with no usable vantage, by
	// reason (targets.Reasons); never modified once set, share it.
	Unprobed map[string]int
	// Namespaces are, in the namespace modes, the networks with ACTIVE
	// ports here and whether their namespace exists; never modified.
	Namespaces []targets.NamespaceState
	// NamespaceErrors counts the namespaces selection could not enter to
	// read their addresses (the engine counts its own in its Stats).
	NamespaceErrors uint64
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
	// expected is openstack_vm_icmp_expected, absent when !expectedKnown.
	expected      float64
	expectedKnown bool
}

// newTargetState starts a target's series; le holds the rendered le labels
// of bounds, shared by every target (they are never changed).
func newTargetState(t Target, bounds []float64, le []string) *targetState {
	// Every per-address family has the labels targetLabels.
	values := []string{t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, t.Addr.String(), t.NetworkID, t.Vantage}
	return &targetState{
		labels: icmpUpFam.textLabels(values...),
		values: values,
		le:     le,
		rtt:    newRTTHistogram(bounds),
	}
}

// NewProbeLoop returns a probe loop over the snapshots inv returns.
func NewProbeLoop(engine probes.Engine, cfg config.ICMP, inv func() *inventory.Snapshot, logger *slog.Logger) *ProbeLoop {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &ProbeLoop{engine: engine, inv: inv, logger: logger, cfg: cfg, targets: map[key]*targetState{},
		namespaces: func(dir string) targets.Namespaces { return netnsDir(dir) }}
	return p
}

// SetConfig applies a reloaded probe configuration, and a new engine when
// engine is not nil, from the next cycle on. It returns the engine replaced,
// which the caller closes once no cycle uses it.
func (p *ProbeLoop) SetConfig(cfg config.ICMP, engine probes.Engine) (old probes.Engine) {
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
			p.retired.NamespaceErrors += st.NamespaceErrors
		}
	}
	return old
}

func (p *ProbeLoop) current() (config.ICMP, probes.Engine) {
	p.cfgMu.Lock()
	defer p.cfgMu.Unlock()
	return p.cfg, p.engine
}

// Run starts a cycle every interval until ctx ends. A cycle that overruns
// its interval is counted and the next one starts at once.
func (p *ProbeLoop) Run(ctx context.Context) {
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
func (p *ProbeLoop) Cycle(ctx context.Context) {
	cfg, engine := p.current()
	if !cfg.Enabled || engine == nil {
		p.mu.Lock()
		if len(p.targets) > 0 {
			p.targets = map[key]*targetState{}
			p.generation++
		}
		p.health.Targets = 0
		p.health.Mode, p.health.Unprobed, p.health.Namespaces = "", nil, nil
		p.mu.Unlock()
		return
	}
	snap := p.inv()
	sel := targets.Select(snap, &cfg, targets.Options{Engine: cfg.Engine, Namespaces: p.namespaces(cfg.NetnsDir)})
	p.logSelection(&sel)
	if sel.EnterErrors > 0 {
		p.mu.Lock()
		p.health.NamespaceErrors += uint64(sel.EnterErrors)
		p.mu.Unlock()
	}
	plan := targets.PlanCycle(sel.Targets)
	p.logAmbiguous(plan.Ambiguous)
	unprobed := sel.UnprobedCounts()

	probeTargets := make([]probes.Target, len(plan.Probes))
	for i, pr := range plan.Probes {
		probeTargets[i] = probes.Target{Addr: pr.Addr, Namespace: pr.Namespace}
	}
	start := time.Now()
	results, err := engine.Probe(ctx, probeTargets)
	took := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return
	}
	if err == nil && len(results) != len(probeTargets) {
		err = fmt.Errorf("the engine returned %d results for %d addresses", len(results), len(probeTargets))
	}

	if err != nil {
		// Nothing of this cycle is recorded: the last completed cycle's
		// results stay, and its timestamp ages as for a stalled loop.
		p.mu.Lock()
		p.health.CycleErrors++
		p.health.InvalidAddrs = sel.Invalid
		p.health.DuplicateAddr = len(plan.Ambiguous)
		p.health.Mode, p.health.Unprobed, p.health.Namespaces = sel.Mode, unprobed, sel.Namespaces
		p.mu.Unlock()
		p.logger.Error("probe cycle failed; its results are discarded", "err", err)
		return
	}

	// Whether each target should answer, decided before taking the lock
	// (the host vantage's route lookups are system calls).
	routes := routeSources{}
	expected := make([]portsecurity.Verdict, len(plan.Targets))
	for i := range plan.Targets {
		expected[i] = icmpExpected(&plan.Targets[i], snap.SecurityGroups, routes)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.health.InvalidAddrs = sel.Invalid
	p.health.DuplicateAddr = len(plan.Ambiguous)
	live := make(map[key]bool, len(plan.Targets))
	for i := range plan.Targets {
		t := &plan.Targets[i]
		r := results[plan.Index[targets.ProbeOf(t)]]
		if r.Unprobed != "" {
			// The engine could not probe it (its namespace vanished, no
			// privilege in it, an engine without namespaces): no series.
			unprobed[r.Unprobed]++
			continue
		}
		k := keyOf(t)
		if live[k] {
			continue // listed twice with the same labels: one series
		}
		live[k] = true
		st := p.targets[k]
		if st == nil {
			if p.le == nil || !slices.Equal(p.leBounds, cfg.RTTBuckets) {
				p.leBounds, p.le = slices.Clone(cfg.RTTBuckets), leLabels(cfg.RTTBuckets)
			}
			st = newTargetState(*t, cfg.RTTBuckets, p.le)
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
		st.expected, st.expectedKnown = 0, false
		switch expected[i] {
		case portsecurity.Admitted:
			st.expected, st.expectedKnown = 1, true
		case portsecurity.Denied:
			st.expectedKnown = true
		}
	}
	for k := range p.targets {
		if !live[k] {
			delete(p.targets, k)
		}
	}
	p.health.Targets = len(live)
	p.health.Mode, p.health.Unprobed, p.health.Namespaces = sel.Mode, unprobed, sel.Namespaces
	p.health.LastDuration = took
	p.health.LastCycleEnd = time.Now()
	p.health.Cycles++
	p.generation++
}

// logSelection logs a change of the vantage mode, and a failure to list
// the namespaces when it starts or changes, not every cycle.
func (p *ProbeLoop) logSelection(sel *targets.Selection) {
	if sel.Mode != p.mode {
		if p.mode == "" {
			p.logger.Info("probing vantage", "mode", sel.Mode)
		} else {
			p.logger.Info("probing vantage changed", "mode", sel.Mode, "was", p.mode)
		}
		p.mode = sel.Mode
	}
	msg := ""
	if sel.NamespaceErr != nil {
		msg = sel.NamespaceErr.Error()
	}
	if msg != p.nsErr {
		if msg != "" {
			p.logger.Error("cannot list the network namespaces; vantage auto probes from the host only", "err", msg)
		}
		p.nsErr = msg
	}
}

// logAmbiguous logs the addresses left out for being ambiguous when they
// change, not every cycle.
func (p *ProbeLoop) logAmbiguous(ambiguous map[targets.Probe][]string) {
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
	addrs := slices.SortedFunc(maps.Keys(ambiguous), func(a, b targets.Probe) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), a.Addr.Compare(b.Addr))
	})
	const shown = 20
	var b strings.Builder
	for i, a := range addrs[:min(len(addrs), shown)] {
		if i > 0 {
			b.WriteString("; ")
		}
		if a.Namespace != "" {
			fmt.Fprintf(&b, "%s in %s: %s", a.Addr, a.Namespace, strings.Join(ambiguous[a], " "))
		} else {
			fmt.Fprintf(&b, "%s: %s", a.Addr, strings.Join(ambiguous[a], " "))
		}
	}
	if len(addrs) > shown {
		fmt.Fprintf(&b, "; and %d more", len(addrs)-shown)
	}
	p.logger.Info("addresses held by more than one server are not probed, because a reply could come from either",
		"addresses", len(addrs), "servers", b.String())
}
