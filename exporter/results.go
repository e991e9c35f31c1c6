package exporter

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// Results is a copy of the probe loop's results, taken at once under the
// loop's lock by ProbeLoop.Results: the collectors and the text writer read
// only this, never the loop's lock or fields. Writing a scrape can block for
// as long as the client does not read, and the probe loop must not wait for
// that. A Results is reused from scrape to scrape: at 10,000 targets the rows
// and their buckets are a few hundred kilobytes.
type Results struct {
	Health ProbeHealth
	// Generation changes whenever the targets or their results do.
	Generation uint64
	// Interval is the configured interval between cycles.
	Interval time.Duration
	// Engine holds the engines' failure counters, those of engines
	// replaced by reloads included, so the counters never go back.
	Engine probes.Stats
	// Targets are filled with ResultTargets, in no order.
	Targets []TargetResult
	buckets []uint64 // the backing array of the targets' buckets
}

// TargetResult is one target as a scrape exports it. labels, values and le
// are never changed once built, so copies share them.
type TargetResult struct {
	labels         []byte   // escaped, for the text writer
	values         []string // label values, for the collectors
	le             []string // rendered le labels of the buckets
	up             float64
	probed         bool // a request of the last cycle left the host; else up is unknown
	expected       float64
	expectedKnown  bool
	sent, received uint64
	count          uint64
	sum            float64
	buckets        []uint64 // per classic bucket, not cumulative; +Inf last
	// histogram is the RTT histogram, classic and native buckets, for
	// client_golang; only with ResultHistograms.
	histogram prometheus.Metric
}

// ResultParts selects what Results copies beyond the loop's health.
type ResultParts uint8

const (
	// ResultTargets copies each target's series.
	ResultTargets ResultParts = 1 << iota
	// ResultHistograms also renders each target's RTT histogram, native
	// buckets included (the protobuf path).
	ResultHistograms
)

// Results copies the loop's state into r, reusing r's memory.
func (p *ProbeLoop) Results(r *Results, parts ResultParts) {
	p.cfgMu.Lock()
	r.Interval = p.cfg.Interval
	r.Engine = p.retired
	if p.engine != nil {
		cur := p.engine.Stats()
		r.Engine.SendErrors += cur.SendErrors
		r.Engine.SocketErrors += cur.SocketErrors
		r.Engine.NamespaceErrors += cur.NamespaceErrors
	}
	p.cfgMu.Unlock()

	p.mu.RLock()
	defer p.mu.RUnlock()
	r.Health, r.Generation = p.health, p.generation
	clear(r.Targets) // drop the labels of targets that may be gone
	r.Targets = r.Targets[:0]
	if parts&(ResultTargets|ResultHistograms) == 0 {
		return
	}
	n := 0
	for _, st := range p.targets {
		n += len(st.rtt.classic)
	}
	r.Targets = slices.Grow(r.Targets, len(p.targets))
	// Grown once, so that the rows' bucket slices stay in this array.
	r.buckets = slices.Grow(r.buckets[:0], n)
	for _, st := range p.targets {
		off := len(r.buckets)
		r.buckets = append(r.buckets, st.rtt.classic...)
		t := TargetResult{
			labels: st.labels, values: st.values, le: st.le, up: st.up, probed: st.probed,
			expected: st.expected, expectedKnown: st.expectedKnown,
			sent: st.sent, received: st.received, count: st.rtt.count, sum: st.rtt.sum,
			buckets: r.buckets[off:len(r.buckets):len(r.buckets)],
		}
		if parts&ResultHistograms != 0 {
			t.histogram = st.rtt.metric(rttFam.desc, st.values...)
		}
		r.Targets = append(r.Targets, t)
	}
}

// resultsPool holds the copies scrapes read from.
var resultsPool = sync.Pool{New: func() any { return new(Results) }}

func getResults() *Results { return resultsPool.Get().(*Results) }

func putResults(r *Results) {
	clear(r.Targets) // drop the labels of targets that may be gone
	r.Targets = r.Targets[:0]
	resultsPool.Put(r)
}
