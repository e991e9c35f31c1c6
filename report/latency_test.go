package report

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
)

// hsample is a native histogram sample.
type hsample struct {
	t  int64
	fh *histogram.FloatHistogram
}

func (s hsample) T() int64                      { return s.t }
func (s hsample) ST() int64                     { return 0 }
func (s hsample) F() float64                    { return 0 }
func (s hsample) H() *histogram.Histogram       { return nil }
func (s hsample) FH() *histogram.FloatHistogram { return s.fh }
func (s hsample) Type() chunkenc.ValueType      { return chunkenc.ValFloatHistogram }
func (s hsample) Copy() chunks.Sample           { return hsample{s.t, s.fh.Copy()} }

// OpenStackVMHighLatency, rendered with rtt_native_histogram, reads the
// native histogram when Prometheus scrapes one (then there are no _sum and
// _count series) and the classic one otherwise. promtool 2.42 cannot write
// native histogram samples in a test file, so this evaluates the rendered
// rule with Prometheus's own engine. (The default rules read the classic
// histogram only: vmalert has no histogram_sum; docs/scaling.md.)
func TestHighLatencyNativeAndClassicHistograms(t *testing.T) {
	var expr string
	params := alerts.DefaultParams()
	params.RTTNativeHistogram = true
	groups, err := alerts.Rules(params)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == "OpenStackVMHighLatency" {
				expr = r.Expr
			}
		}
	}
	st := newMemStorage()
	p := parser.NewParser(parser.Options{})
	load := func(desc string) {
		t.Helper()
		lset, values, err := p.ParseSeriesDesc(desc)
		if err != nil {
			t.Fatalf("%s: %v", desc, err)
		}
		for i, v := range values {
			at := int64(i) * time.Minute.Milliseconds()
			if v.Histogram != nil {
				st.addSample(lset, hsample{at, v.Histogram})
			} else {
				st.addSample(lset, fsample{at, v.Value})
			}
		}
	}
	const labels = `job="openstack-vm-exporter", instance="cmp-1:9735", project_id="p1", host="cmp-1", network="provider"`
	// A fresh exporter that lists the servers ACTIVE with no task: the rule
	// judges only such vantages.
	load(`openstack_vm_exporter_time_seconds{job="openstack-vm-exporter", instance="cmp-1:9735"} 0+60x20`)
	load(`openstack_vm_api_last_success_timestamp_seconds{job="openstack-vm-exporter", instance="cmp-1:9735"} 0+60x20`)
	load(`openstack_vm_api_refresh_interval_seconds{job="openstack-vm-exporter", instance="cmp-1:9735"} 60x20`)
	for _, id := range []string{"native", "classic", "both", "fast"} {
		load(`openstack_vm_status{job="openstack-vm-exporter", instance="cmp-1:9735", project_id="p1", host="cmp-1", id="` + id + `", name="` + id + `", status="ACTIVE", vm_state="active", task_state="", power_state="running"} 1x20`)
	}
	// 100 ms on average, native only.
	load(`openstack_vm_icmp_rtt_seconds{` + labels + `, id="native", name="native", address="198.18.0.1"} {{schema:0 sum:0 count:0}}+{{schema:0 sum:0.3 count:3}}x20`)
	// 100 ms, classic only.
	load(`openstack_vm_icmp_rtt_seconds_sum{` + labels + `, id="classic", name="classic", address="198.18.0.2"} 0+0.3x20`)
	load(`openstack_vm_icmp_rtt_seconds_count{` + labels + `, id="classic", name="classic", address="198.18.0.2"} 0+3x20`)
	// 100 ms, both (Prometheus keeping the classic histogram too): one result.
	load(`openstack_vm_icmp_rtt_seconds{` + labels + `, id="both", name="both", address="198.18.0.3"} {{schema:0 sum:0 count:0}}+{{schema:0 sum:0.3 count:3}}x20`)
	load(`openstack_vm_icmp_rtt_seconds_sum{` + labels + `, id="both", name="both", address="198.18.0.3"} 0+0.3x20`)
	load(`openstack_vm_icmp_rtt_seconds_count{` + labels + `, id="both", name="both", address="198.18.0.3"} 0+3x20`)
	// 10 ms, native: below the threshold.
	load(`openstack_vm_icmp_rtt_seconds{` + labels + `, id="fast", name="fast", address="198.18.0.4"} {{schema:0 sum:0 count:0}}+{{schema:0 sum:0.03 count:3}}x20`)

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	q, err := engine.NewInstantQuery(context.Background(), st, nil, expr, time.UnixMilli(15*time.Minute.Milliseconds()))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	vec, err := res.Vector()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range vec {
		if s.F < 0.0999 || s.F > 0.1001 {
			t.Errorf("%s: mean RTT %g, want 0.1", s.Metric, s.F)
		}
		got = append(got, s.Metric.Get("id"))
	}
	sort.Strings(got)
	if len(got) != 3 || got[0] != "both" || got[1] != "classic" || got[2] != "native" {
		t.Errorf("fired for %v, want both, classic, native", got)
	}
}
