// Package report evaluates the bundled alert rules over one snapshot of the
// exporter's metrics, with Prometheus's own PromQL engine, and renders the
// known issues found as a table, JSON or HTML: the same definitions as the
// alerts, for a person without Prometheus at hand.
package report

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/template"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
)

// Finding is one known issue found: one alert that would fire, with the
// labels and value Prometheus would give it.
type Finding struct {
	Alert       string            `json:"alert"`
	Severity    string            `json:"severity,omitempty"`
	Labels      map[string]string `json:"labels"`
	Value       float64           `json:"value"`
	Summary     string            `json:"summary"`
	Description string            `json:"description"`
	RunbookURL  string            `json:"runbook_url"`
	Mitigation  string            `json:"mitigation,omitempty"`
	// Notes say what the one snapshot could not show.
	Notes []string `json:"notes,omitempty"`
	// Port, ICMPExpected, Vantage and Address say, for a server that does
	// not answer (or whose port is the finding), Neutron's state of the
	// port, whether its security groups admit ICMP from the vantage
	// (ExpectedYes, ExpectedNo, ExpectedUnknown; "" when not probed) and
	// from where the echo requests left; Address when the alert's labels
	// have none.
	Port         *Port  `json:"port,omitempty"`
	ICMPExpected string `json:"icmp_expected,omitempty"`
	Vantage      string `json:"vantage,omitempty"`
	Address      string `json:"address,omitempty"`
	// Unconfirmed marks a finding of an alert that reads Prometheus's
	// history, which one snapshot cannot show (see
	// alerts.HistoryRecordings): Build lists it apart, never as critical.
	// One whose address's security groups admit ICMP (ICMPExpected yes) is
	// confirmed: the rules fire for it without history too.
	Unconfirmed bool `json:"-"`
	// policySilent marks an address that does not answer because its
	// security groups do not admit ICMP: no issue, listed apart.
	policySilent bool
}

// ConfirmedNote says why a finding of a history alert is confirmed.
const ConfirmedNote = "Its security groups admit ICMP from the exporter, so it should answer: the rules fire for it without history."

// Snapshot is the exporter's metrics gathered twice: before and after one
// probe cycle, so that counters have a rate.
type Snapshot struct {
	Before, After     []*dto.MetricFamily
	BeforeAt, AfterAt time.Time
}

// Evaluate runs every alerting rule of the rule groups over the snapshot,
// in order, recording rules first (history recordings substituted), and
// returns what would fire. `for:` durations are not applied: a condition
// true now is reported, with a note. Findings of alerts that read history
// are marked Unconfirmed.
func Evaluate(ctx context.Context, snap Snapshot, params alerts.Params) ([]Finding, error) {
	groups, err := alerts.Rules(params)
	if err != nil {
		return nil, err
	}
	job := jobOf(params.JobSelector)
	st := newMemStorage()
	st.addFamilies(snap.Before, snap.BeforeAt, job)
	st.addFamilies(snap.After, snap.AfterAt, job)
	st.zeroCountersBefore(snap.BeforeAt)
	// The exporter is up: the report is it.
	for _, at := range []time.Time{snap.BeforeAt, snap.AfterAt} {
		st.add(labels.FromStrings("__name__", "up", "job", job, "instance", "report"), at, 1)
	}

	engine := promql.NewEngine(promql.EngineOpts{
		MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute,
		EnableAtModifier: true, EnableNegativeOffset: true,
	})
	query := func(expr string) (promql.Vector, error) {
		q, err := engine.NewInstantQuery(ctx, st, nil, expr, snap.AfterAt)
		if err != nil {
			return nil, err
		}
		defer q.Close()
		res := q.Exec(ctx)
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Vector()
	}

	historic := historyDependent(groups)
	var findings []Finding
	for _, g := range groups {
		for _, r := range g.Rules {
			expr := r.Expr
			if sub, ok := alerts.HistoryRecordings[r.Record]; ok {
				expr = sub
			}
			vec, err := query(expr)
			if err != nil {
				return nil, fmt.Errorf("rule %s%s: %w", r.Record, r.Alert, err)
			}
			if r.Record != "" {
				for _, s := range vec {
					b := labels.NewBuilder(s.Metric)
					b.Set("__name__", r.Record)
					st.add(b.Labels(), snap.AfterAt, s.F)
				}
				continue
			}
			// The Watchdog (severity none) always fires: it tests the
			// alerting pipeline, which the report has none of.
			if r.Labels["severity"] == "none" {
				continue
			}
			for _, s := range vec {
				f := newFinding(ctx, r, s, snap.AfterAt, query)
				f.Unconfirmed = historic[r.Alert]
				if reachAlerts[r.Alert] {
					addReach(&f, query)
					if f.Unconfirmed && f.ICMPExpected == ExpectedYes {
						f.Unconfirmed = false
						f.Notes = append(f.Notes, ConfirmedNote)
					}
				}
				findings = append(findings, f)
			}
		}
	}
	silent, err := query(policySilentExpr(params.JobSelector))
	if err != nil {
		return nil, fmt.Errorf("addresses silent by their security groups: %w", err)
	}
	for _, s := range silent {
		f := Finding{Labels: map[string]string{}, policySilent: true}
		s.Metric.Range(func(l labels.Label) {
			if l.Name != "__name__" && l.Name != "instance" && l.Name != "job" {
				f.Labels[l.Name] = l.Value
			}
		})
		addReach(&f, query)
		f.Summary = fmt.Sprintf("Server %s does not answer ping at %s, as its security groups say.", f.Labels["name"], f.Labels["address"])
		f.Description = reachAdvice(f)
		findings = append(findings, f)
	}
	sort.SliceStable(findings, func(i, j int) bool {
		if a, b := severityRank(findings[i].Severity), severityRank(findings[j].Severity); a != b {
			return a < b
		}
		if findings[i].Alert != findings[j].Alert {
			return findings[i].Alert < findings[j].Alert
		}
		return fmt.Sprint(findings[i].Labels) < fmt.Sprint(findings[j].Labels)
	})
	return findings, nil
}

func severityRank(s string) int {
	switch s {
	case "critical":
		return 0
	case "warning":
		return 1
	}
	return 2
}

// jobOf reads the job name out of a selector like job="x".
func jobOf(selector string) string {
	if m := regexp.MustCompile(`job\s*=~?\s*"([^"]*)"`).FindStringSubmatch(selector); m != nil {
		return m[1]
	}
	return "openstack-vm-exporter"
}

// historyDependent returns the alerts that read a history recording
// (alerts.HistoryRecordings), directly or through other recordings.
func historyDependent(groups []alerts.Group) map[string]bool {
	tainted := map[string]bool{}
	for rec := range alerts.HistoryRecordings {
		tainted[rec] = true
	}
	out := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Rules {
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
			if err != nil {
				continue // Evaluate reports it
			}
			reads := false
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok && tainted[vs.Name] {
					reads = true
				}
				return nil
			})
			if !reads {
				continue
			}
			if r.Record != "" {
				tainted[r.Record] = true
			} else {
				out[r.Alert] = true
			}
		}
	}
	return out
}

func newFinding(ctx context.Context, r alerts.Rule, s promql.Sample, at time.Time, query func(string) (promql.Vector, error)) Finding {
	lbls := map[string]string{}
	s.Metric.Range(func(l labels.Label) {
		if l.Name != "__name__" {
			lbls[l.Name] = l.Value
		}
	})
	for k, v := range r.Labels {
		lbls[k] = v
	}
	f := Finding{Alert: r.Alert, Severity: r.Labels["severity"], Labels: lbls, Value: s.F}
	expand := func(text string) string {
		defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
		e := template.NewTemplateExpander(ctx, defs+text, "__alert_"+r.Alert, template.AlertTemplateData(lbls, nil, "", s),
			model.TimeFromUnixNano(at.UnixNano()), func(ctx context.Context, q string, ts time.Time) (promql.Vector, error) { return query(q) },
			&url.URL{}, nil)
		out, err := e.Expand()
		if err != nil {
			return text
		}
		return strings.TrimSpace(out)
	}
	f.Summary = expand(r.Annotations["summary"])
	f.Description = expand(r.Annotations["description"])
	f.RunbookURL = r.Annotations["runbook_url"]
	if r.For != "" && r.For != "0s" {
		f.Notes = append(f.Notes, fmt.Sprintf("The alert waits %s before it fires; the report shows the condition as it is now.", r.For))
	}
	return f
}

// memStorage is an in-memory storage.Queryable over the snapshot's samples.
type memStorage struct {
	series map[string]*memSeries
}

type memSeries struct {
	lset    labels.Labels
	samples []chunks.Sample
}

func newMemStorage() *memStorage { return &memStorage{series: map[string]*memSeries{}} }

func (m *memStorage) add(lset labels.Labels, at time.Time, v float64) {
	m.addSample(lset, fsample{t: at.UnixMilli(), f: v})
}

func (m *memStorage) addSample(lset labels.Labels, s chunks.Sample) {
	key := lset.String()
	ms := m.series[key]
	if ms == nil {
		ms = &memSeries{lset: lset}
		m.series[key] = ms
	}
	// Keep samples in time order, one per timestamp.
	i := sort.Search(len(ms.samples), func(i int) bool { return ms.samples[i].T() >= s.T() })
	if i < len(ms.samples) && ms.samples[i].T() == s.T() {
		ms.samples[i] = s
		return
	}
	ms.samples = append(ms.samples, nil)
	copy(ms.samples[i+1:], ms.samples[i:])
	ms.samples[i] = s
}

// addFamilies adds the gathered metrics as Prometheus would scrape them,
// with the job and instance labels.
func (m *memStorage) addFamilies(fams []*dto.MetricFamily, at time.Time, job string) {
	for _, fam := range fams {
		name := fam.GetName()
		for _, met := range fam.GetMetric() {
			base := labels.NewBuilder(labels.EmptyLabels())
			for _, l := range met.GetLabel() {
				base.Set(l.GetName(), l.GetValue())
			}
			base.Set("job", job)
			base.Set("instance", "report")
			with := func(metric string, extra ...string) labels.Labels {
				b := labels.NewBuilder(base.Labels())
				b.Set("__name__", metric)
				for i := 0; i+1 < len(extra); i += 2 {
					b.Set(extra[i], extra[i+1])
				}
				return b.Labels()
			}
			switch {
			case met.Gauge != nil:
				m.add(with(name), at, met.GetGauge().GetValue())
			case met.Counter != nil:
				m.add(with(name), at, met.GetCounter().GetValue())
			case met.Untyped != nil:
				m.add(with(name), at, met.GetUntyped().GetValue())
			case met.Histogram != nil:
				h := met.GetHistogram()
				m.add(with(name+"_sum"), at, h.GetSampleSum())
				m.add(with(name+"_count"), at, float64(h.GetSampleCount()))
				for _, b := range h.GetBucket() {
					m.add(with(name+"_bucket", "le", formatLe(b.GetUpperBound())), at, float64(b.GetCumulativeCount()))
				}
				m.add(with(name+"_bucket", "le", "+Inf"), at, float64(h.GetSampleCount()))
			case met.Summary != nil:
				m.add(with(name+"_sum"), at, met.GetSummary().GetSampleSum())
				m.add(with(name+"_count"), at, float64(met.GetSummary().GetSampleCount()))
			}
		}
	}
}

func formatLe(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return model.SampleValue(v).String()
}

// zeroCountersBefore gives every counter-like series that first appears
// after the probe cycle a zero at the first gathering: the targets' counters
// started at zero with that cycle.
func (m *memStorage) zeroCountersBefore(before time.Time) {
	t := before.UnixMilli()
	for _, s := range m.series {
		name := s.lset.Get("__name__")
		counterLike := strings.HasSuffix(name, "_total") || strings.HasSuffix(name, "_bucket") ||
			strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count")
		if counterLike && len(s.samples) > 0 && s.samples[0].T() > t {
			s.samples = append([]chunks.Sample{fsample{t: t}}, s.samples...)
		}
	}
}

func (m *memStorage) Querier(_, _ int64) (storage.Querier, error) { return memQuerier{m}, nil }

type memQuerier struct{ m *memStorage }

func (q memQuerier) Select(_ context.Context, _ bool, hints *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range q.m.series {
		ok := true
		for _, mt := range matchers {
			if !mt.Matches(s.lset.Get(mt.Name)) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, storage.NewListSeries(s.lset, s.samples))
		}
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
	return &seriesSet{list: out, i: -1}
}

func (q memQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (q memQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (q memQuerier) Close() error { return nil }

type seriesSet struct {
	list []storage.Series
	i    int
}

func (s *seriesSet) Next() bool                        { s.i++; return s.i < len(s.list) }
func (s *seriesSet) At() storage.Series                { return s.list[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// fsample is a float sample.
type fsample struct {
	t int64
	f float64
}

func (s fsample) T() int64                      { return s.t }
func (s fsample) ST() int64                     { return 0 }
func (s fsample) F() float64                    { return s.f }
func (s fsample) H() *histogram.Histogram       { return nil }
func (s fsample) FH() *histogram.FloatHistogram { return nil }
func (s fsample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fsample) Copy() chunks.Sample           { return s }
