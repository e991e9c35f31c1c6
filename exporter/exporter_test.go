package exporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// scriptedEngine answers as the test says per address; the real engines are
// tested against real namespaces in package probes and in the end-to-end test.
type scriptedEngine struct {
	mu      sync.Mutex
	answers map[netip.Addr]probes.Result
	probed  [][]netip.Addr
	// fail makes Probe fail with it, returning the results of the first
	// half of the addresses only.
	fail error
}

func (e *scriptedEngine) Probe(_ context.Context, targets []probes.Target) ([]probes.Result, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	addrs := make([]netip.Addr, len(targets))
	for i, t := range targets {
		addrs[i] = t.Addr
	}
	e.probed = append(e.probed, addrs)
	out := make([]probes.Result, len(addrs))
	for i, a := range addrs {
		if r, ok := e.answers[a]; ok {
			out[i] = r
		} else {
			out[i] = probes.Result{Sent: 3}
		}
	}
	if e.fail != nil {
		return out[:len(out)/2], e.fail
	}
	return out, nil
}
func (e *scriptedEngine) Stats() probes.Stats { return probes.Stats{SendErrors: 2} }
func (e *scriptedEngine) Close() error        { return nil }

type fixture struct {
	cloud  *standin.Cloud
	svc    *Service
	engine *scriptedEngine
}

func newFixture(t testing.TB, servers []standin.Server) *fixture {
	t.Helper()
	cloud, err := standin.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cloud.Close() })
	cloud.Put(servers...)
	env := cloud.Env()
	loaded := time.Now()
	d := Deps{Getenv: func(k string) string { return env[k] }, ReloadStatus: func() (bool, time.Time) { return true, loaded }}
	cfg := config.Default()
	cfg.OpenStack.Scope = "all"
	// The machine's /run/netns is shared with other tests (an OVN metadata
	// agent's ovnmeta-* would turn vantage auto to ovn-metadata): none here.
	cfg.Probe.ICMP.NetnsDir = t.TempDir()
	inv, err := NewInventorySection(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	engine := &scriptedEngine{answers: map[netip.Addr]probes.Result{}}
	svc := newService(inv, NewProbeLoop(engine, cfg.Probe.ICMP, inv.Inventory().Snapshot, nil), d)
	return &fixture{cloud: cloud, svc: svc, engine: engine}
}

func (f *fixture) refreshAndProbe(t *testing.T) {
	t.Helper()
	if err := f.svc.inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.svc.loop.Cycle(context.Background())
}

// scrape returns the text exposition and the parsed families.
func (f *fixture) scrape(t *testing.T) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	rec := httptest.NewRecorder()
	f.svc.Handler(promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	text := rec.Body.String()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing exposition: %v\n%s", err, text)
	}
	return text, families
}

func metricLabels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func find(fams map[string]*dto.MetricFamily, name string, match map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range fams[name].GetMetric() {
		l := metricLabels(m)
		ok := true
		for k, v := range match {
			if l[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

var hostileName = "evil\"name\\with{braces}\nnewline and \xff invalid"

func mixedFleet() []standin.Server {
	old := time.Now().Add(-5 * time.Hour).UTC().Truncate(time.Second)
	addr := func(a string) []standin.Address {
		return []standin.Address{{Network: "provider", Addr: a, Type: "fixed"}}
	}
	return []standin.Server{
		{ID: "a-active", Name: "web-1", ProjectID: "p1", Host: "cmp-1", VMState: "active", PowerState: 1,
			Flavor: "m1.small", ImageID: "img-1", AvailabilityZone: "nova", Updated: old,
			Addresses: append(addr("198.18.0.1"), standin.Address{Network: "public", Addr: "198.19.0.1", Type: "floating"}, standin.Address{Network: "provider", Addr: "2001:2::1", Type: "fixed"})},
		{ID: "b-error", Name: "db-1", ProjectID: "p2", Host: "cmp-1", VMState: "error", PowerState: 4, Flavor: "m1.large", Updated: old, Addresses: addr("198.18.0.2")},
		{ID: "c-shutoff", Name: "batch", ProjectID: "p1", Host: "cmp-2", VMState: "stopped", PowerState: 4, Flavor: "m1.small", Addresses: addr("198.18.0.3")},
		{ID: "d-build", Name: "new", ProjectID: "p1", VMState: "building", Flavor: "m1.small"},
		{ID: "e-migrating", Name: "moving", ProjectID: "p3", Host: "cmp-2", VMState: "active", TaskState: "migrating", PowerState: 1, Flavor: "m1.small", Addresses: addr("198.18.0.5")},
		{ID: "f-hostile", Name: hostileName, ProjectID: "p1", Host: "cmp-1", VMState: "active", PowerState: 1, Flavor: "m1.small",
			Addresses: []standin.Address{{Network: "net \"q\"", Addr: "198.18.0.6", Type: "fixed"}, {Network: "provider", Addr: "not-an-ip", Type: "fixed"}}},
		{ID: "g-optout", Name: "quiet", ProjectID: "p1", Host: "cmp-1", VMState: "active", PowerState: 1, Flavor: "m1.small",
			Metadata: map[string]string{"monitoring_icmp": "off"}, Addresses: addr("198.18.0.7")},
		{ID: "h-dup", Name: "twin", ProjectID: "p9", Host: "cmp-1", VMState: "active", PowerState: 1, Flavor: "m1.small", Addresses: addr("198.18.0.1")},
	}
}

func TestMetricContract(t *testing.T) {
	f := newFixture(t, mixedFleet())
	f.cloud.SetService("cmp-1", "UP")
	f.cloud.SetService("cmp-2", "DOWN")
	f.engine.answers[netip.MustParseAddr("198.19.0.1")] = probes.Result{Sent: 3, Received: 3,
		RTTs: []time.Duration{300 * time.Microsecond, 400 * time.Microsecond, 2 * time.Millisecond}}
	f.engine.answers[netip.MustParseAddr("2001:2::1")] = probes.Result{Sent: 3, Received: 1, RTTs: []time.Duration{time.Millisecond}}
	// Held by a-active and h-dup: a reply would not tell which answered.
	f.engine.answers[netip.MustParseAddr("198.18.0.1")] = probes.Result{Sent: 3, Received: 3,
		RTTs: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}}
	f.refreshAndProbe(t)
	text, fams := f.scrape(t)

	status := find(fams, "openstack_vm_status", map[string]string{"id": "b-error"})
	if len(status) != 1 {
		t.Fatalf("openstack_vm_status for b-error: %v", status)
	}
	want := map[string]string{"id": "b-error", "name": "db-1", "project_id": "p2", "host": "cmp-1",
		"status": "ERROR", "vm_state": "error", "task_state": "", "power_state": "shutdown"}
	if got := metricLabels(status[0]); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status labels %v, want %v", got, want)
	}
	for id, st := range map[string]string{"a-active": "ACTIVE", "c-shutoff": "SHUTOFF", "d-build": "BUILD", "e-migrating": "MIGRATING"} {
		if len(find(fams, "openstack_vm_status", map[string]string{"id": id, "status": st})) != 1 {
			t.Errorf("%s not %s", id, st)
		}
	}
	if m := find(fams, "openstack_vm_status", map[string]string{"id": "e-migrating"}); len(m) != 1 || metricLabels(m[0])["task_state"] != "migrating" {
		t.Error("task_state of the migrating server")
	}
	info := find(fams, "openstack_vm_info", map[string]string{"id": "a-active"})
	if len(info) != 1 || metricLabels(info[0])["flavor"] != "m1.small" || metricLabels(info[0])["image_id"] != "img-1" || metricLabels(info[0])["availability_zone"] != "nova" {
		t.Errorf("info: %v", info)
	}
	since := find(fams, "openstack_vm_status_since_timestamp_seconds", map[string]string{"id": "b-error"})
	if len(since) != 1 || time.Since(time.Unix(int64(since[0].GetGauge().GetValue()), 0)) < 4*time.Hour {
		t.Errorf("status since of b-error: %v", since)
	}
	if len(find(fams, "openstack_vm_compute_host_status", map[string]string{"host": "cmp-2", "host_status": "DOWN"})) != 1 ||
		len(find(fams, "openstack_vm_compute_host_status", map[string]string{"host": "cmp-1", "host_status": "UP"})) != 1 {
		t.Errorf("host status: %v", fams["openstack_vm_compute_host_status"])
	}
	if hb := find(fams, "openstack_vm_compute_service_up", map[string]string{"host": "cmp-1"}); len(hb) != 1 || hb[0].GetGauge().GetValue() != 1 {
		t.Errorf("heartbeat of cmp-1 (up): %v", hb)
	}
	if hb := find(fams, "openstack_vm_compute_service_up", map[string]string{"host": "cmp-2"}); len(hb) != 1 || hb[0].GetGauge().GetValue() != 0 {
		t.Errorf("heartbeat of cmp-2 (forced down): %v", hb)
	}
	// The exporter's clock at the scrape, which the rules subtract the
	// exporter's own timestamps from.
	if now := find(fams, "openstack_vm_exporter_time_seconds", nil); len(now) != 1 ||
		math.Abs(now[0].GetGauge().GetValue()-float64(time.Now().UnixMilli())/1000) > 60 {
		t.Errorf("exporter time: %v", now)
	}

	// Probed: ACTIVE servers, valid addresses, not opted out.
	up := fams["openstack_vm_icmp_up"].GetMetric()
	got := map[string]float64{}
	for _, m := range up {
		l := metricLabels(m)
		got[l["id"]+"/"+l["network"]+"/"+l["address"]] = m.GetGauge().GetValue()
	}
	wantUp := map[string]float64{
		"a-active/public/198.19.0.1": 1, "a-active/provider/2001:2::1": 1, "f-hostile/net \"q\"/198.18.0.6": 0,
	}
	if fmt.Sprint(got) != fmt.Sprint(wantUp) {
		t.Errorf("icmp_up %v, want %v", got, wantUp)
	}
	// The address two servers hold is neither probed nor reported.
	probed := slices.SortedFunc(slices.Values(f.engine.probed[0]), netip.Addr.Compare)
	if fmt.Sprint(probed) != "[198.18.0.6 198.19.0.1 2001:2::1]" {
		t.Errorf("probed %v", probed)
	}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			if metricLabels(m)["address"] == "198.18.0.1" {
				t.Errorf("%s reported for the ambiguous address: %v", name, m)
			}
		}
	}
	sent := find(fams, "openstack_vm_icmp_packets_sent_total", map[string]string{"id": "a-active", "address": "2001:2::1"})
	recv := find(fams, "openstack_vm_icmp_packets_received_total", map[string]string{"id": "a-active", "address": "2001:2::1"})
	if len(sent) != 1 || sent[0].GetCounter().GetValue() != 3 || len(recv) != 1 || recv[0].GetCounter().GetValue() != 1 {
		t.Errorf("packet counters %v %v", sent, recv)
	}
	rtt := find(fams, "openstack_vm_icmp_rtt_seconds", map[string]string{"id": "a-active", "address": "198.19.0.1"})
	if len(rtt) != 1 || rtt[0].GetHistogram().GetSampleCount() != 3 || len(rtt[0].GetHistogram().GetBucket()) != 13 {
		t.Errorf("rtt histogram %v", rtt)
	}
	for name, want := range map[string]float64{
		"openstack_vm_api_up": 1, "openstack_vm_inventory_servers": 8, "openstack_vm_probe_targets": 3,
		"openstack_vm_probe_invalid_addresses": 1, "openstack_vm_probe_duplicate_addresses": 1,
		"openstack_vm_probe_interval_seconds": 15, "openstack_vm_api_refresh_interval_seconds": 60,
	} {
		if m := fams[name].GetMetric(); len(m) != 1 || m[0].GetGauge().GetValue() != want {
			t.Errorf("%s = %v, want %v", name, m, want)
		}
	}
	if len(find(fams, "openstack_vm_api_errors_total", nil)) != len(inventory.Reasons) {
		t.Error("not every error reason is present from the start")
	}
	if m := find(fams, "openstack_vm_probe_errors_total", map[string]string{"reason": "send"}); len(m) != 1 || m[0].GetCounter().GetValue() != 2 {
		t.Errorf("probe send errors %v", m)
	}
	if m := find(fams, "openstack_vm_probe_errors_total", map[string]string{"reason": "cycle"}); len(m) != 1 || m[0].GetCounter().GetValue() != 0 {
		t.Errorf("failed probe cycles %v", m)
	}
	// The hostile name survives, escaped, as valid UTF-8.
	if len(find(fams, "openstack_vm_status", map[string]string{"name": strings.ToValidUTF8(hostileName, "\uFFFD")})) != 1 {
		t.Error("hostile name not exported faithfully")
	}
	lintMetrics(t, text)
}

// lintMetrics runs the linter of `promtool check metrics` (client_golang's
// promlint) over the exposition in process; the lab tier runs the real
// promtool too (promtoolCheckMetrics).
func lintMetrics(t *testing.T, text string) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	promtoolCheckMetrics(t, text)
}

func TestSeriesDisappear(t *testing.T) {
	f := newFixture(t, mixedFleet())
	f.refreshAndProbe(t)
	_, fams := f.scrape(t)
	// 198.18.0.1, which h-dup holds too, is not probed.
	if len(find(fams, "openstack_vm_icmp_up", map[string]string{"id": "a-active"})) != 2 ||
		len(find(fams, "openstack_vm_icmp_up", map[string]string{"id": "h-dup"})) != 0 {
		t.Fatal("setup: a-active not probed, or h-dup probed")
	}
	f.cloud.Delete("a-active")
	f.cloud.Update("f-hostile", func(s *standin.Server) { s.Addresses = s.Addresses[1:] })
	f.cloud.Update("h-dup", func(s *standin.Server) { s.Name = "renamed" })
	f.refreshAndProbe(t)
	_, fams = f.scrape(t)
	for _, name := range []string{"openstack_vm_status", "openstack_vm_info", "openstack_vm_status_since_timestamp_seconds",
		"openstack_vm_icmp_up", "openstack_vm_icmp_packets_sent_total", "openstack_vm_icmp_rtt_seconds"} {
		if m := find(fams, name, map[string]string{"id": "a-active"}); len(m) != 0 {
			t.Errorf("%s of the deleted server still served: %v", name, m)
		}
	}
	if m := find(fams, "openstack_vm_icmp_up", map[string]string{"id": "f-hostile"}); len(m) != 0 {
		t.Errorf("removed address still served: %v", m)
	}
	// With a-active gone, 198.18.0.1 is h-dup's alone and probed.
	if len(find(fams, "openstack_vm_icmp_up", map[string]string{"id": "h-dup", "name": "twin"})) != 0 ||
		len(find(fams, "openstack_vm_icmp_up", map[string]string{"id": "h-dup", "name": "renamed"})) != 1 {
		t.Error("renamed server's series not replaced")
	}
}

// Until the first refresh ends, openstack_vm_api_up is absent, not 0: an
// exporter still reading its first full listing has not failed to read Nova.
func TestAPIUpAbsentUntilFirstRefreshEnds(t *testing.T) {
	f := newFixture(t, mixedFleet())
	if _, fams := f.scrape(t); fams["openstack_vm_api_up"] != nil {
		t.Errorf("openstack_vm_api_up before any refresh: %v", fams["openstack_vm_api_up"].GetMetric())
	}
	f.cloud.SetFault(func(*http.Request) *standin.Failure { return &standin.Failure{Status: http.StatusServiceUnavailable} })
	f.svc.inv.Refresh(context.Background())
	_, fams := f.scrape(t)
	if m := fams["openstack_vm_api_up"].GetMetric(); len(m) != 1 || m[0].GetGauge().GetValue() != 0 {
		t.Errorf("openstack_vm_api_up after a failed refresh: %v, want 0", m)
	}
	f.cloud.SetFault(nil)
	f.svc.inv.Refresh(context.Background())
	_, fams = f.scrape(t)
	if m := fams["openstack_vm_api_up"].GetMetric(); len(m) != 1 || m[0].GetGauge().GetValue() != 1 {
		t.Errorf("openstack_vm_api_up after a good refresh: %v, want 1", m)
	}
}

// A scrape never waits for the API, even when it hangs.
func TestScrapeDoesNotWaitForAPI(t *testing.T) {
	f := newFixture(t, mixedFleet())
	f.refreshAndProbe(t)
	f.cloud.SetFault(func(*http.Request) *standin.Failure { return &standin.Failure{Hang: true} })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.svc.inv.Refresh(ctx)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	_, fams := f.scrape(t)
	// The API hangs for good: a scrape that waited for it would not end.
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("scrape took %v while the API hangs", took)
	}
	if len(fams["openstack_vm_status"].GetMetric()) != 8 {
		t.Error("last inventory not served while the API hangs")
	}
}

func TestDisabledProbing(t *testing.T) {
	f := newFixture(t, mixedFleet())
	f.refreshAndProbe(t)
	cfg := config.Default().Probe.ICMP
	cfg.Enabled = false
	f.svc.loop.SetConfig(cfg, nil)
	f.svc.loop.Cycle(context.Background())
	_, fams := f.scrape(t)
	if len(fams["openstack_vm_icmp_up"].GetMetric()) != 0 {
		t.Error("probe series with probing disabled")
	}
	// Alerts on probe results are silenced by this.
	if m := fams["openstack_vm_probe_targets"].GetMetric(); len(m) != 1 || m[0].GetGauge().GetValue() != 0 {
		t.Errorf("probe targets with probing disabled: %v", m)
	}
}

func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, mixedFleet())
	f.refreshAndProbe(t)
	_, fams := f.scrape(t)
	for name := range fams {
		if !bytes.Contains(doc, []byte("`"+name+"`")) {
			t.Errorf("%s is not documented in docs/metrics.md", name)
		}
	}
}

// The text writer and client_golang's generic path must expose exactly the
// same series and values.
func TestTextWriterMatchesGenericPath(t *testing.T) {
	f := newFixture(t, mixedFleet())
	f.cloud.SetService("cmp-2", "DOWN")
	f.engine.answers[netip.MustParseAddr("198.19.0.1")] = probes.Result{Sent: 3, Received: 2,
		RTTs: []time.Duration{300 * time.Microsecond, 40 * time.Millisecond}}
	f.engine.answers[netip.MustParseAddr("198.18.0.6")] = probes.Result{Sent: 0}
	f.refreshAndProbe(t)
	f.refreshAndProbe(t)
	parse := func(req *http.Request, h http.Handler) map[string][]string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for name, fam := range fams {
			// The clock moves between the two scrapes.
			if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || name == "openstack_vm_exporter_time_seconds" {
				continue
			}
			for _, m := range fam.GetMetric() {
				m.TimestampMs = nil
				out[name] = append(out[name], m.String())
			}
			sort.Strings(out[name])
		}
		return out
	}
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	fast := parse(req, f.svc.Handler(promhttp.HandlerOpts{}))
	generic := parse(req, promhttp.HandlerFor(f.svc.Gatherer(), promhttp.HandlerOpts{}))
	if len(fast) < 20 {
		t.Fatalf("only %d families", len(fast))
	}
	for name := range generic {
		if strings.Join(fast[name], "\n") != strings.Join(generic[name], "\n") {
			t.Errorf("%s differs:\ntext writer: %v\ngeneric:     %v", name, fast[name], generic[name])
		}
	}
	for name := range fast {
		if _, ok := generic[name]; !ok {
			t.Errorf("%s only in the text writer's output", name)
		}
	}
	// Gzip is honoured.
	gz := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	gz.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	f.svc.Handler(promhttp.HandlerOpts{}).ServeHTTP(rec, gz)
	if rec.Header().Get("Content-Encoding") != "gzip" || !bytes.HasPrefix(rec.Body.Bytes(), []byte{0x1f, 0x8b}) {
		t.Error("gzip not honoured")
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, _ := io.ReadAll(zr)
	plain := httptest.NewRecorder()
	f.svc.Handler(promhttp.HandlerOpts{}).ServeHTTP(plain, req)
	if got, want := familyNames(t, unzipped), familyNames(t, plain.Body.Bytes()); got != want {
		t.Errorf("gzip body holds %s, plain %s", got, want)
	}
	// A scraper asking for protobuf gets the native histogram.
	pb := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	pb.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
	rec = httptest.NewRecorder()
	f.svc.Handler(promhttp.HandlerOpts{}).ServeHTTP(rec, pb)
	if !strings.Contains(rec.Header().Get("Content-Type"), "protobuf") {
		t.Errorf("protobuf not served: %s", rec.Header().Get("Content-Type"))
	}
	dec := expfmt.NewDecoder(rec.Body, expfmt.NewFormat(expfmt.TypeProtoDelim))
	native := false
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			break
		}
		if mf.GetName() != "openstack_vm_icmp_rtt_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			// Two cycles of two replies each: 300µs and 40ms, twice.
			if h.GetSampleCount() == 4 && h.GetSchema() == 3 && len(h.GetPositiveSpan()) == 2 && len(h.GetBucket()) == 12 {
				native = true
			}
		}
	}
	if !native {
		t.Error("no native histogram with classic buckets in the protobuf exposition")
	}
}

func familyNames(t *testing.T, text []byte) string {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("parsing: %v", err)
	}
	var names []string
	for n, f := range fams {
		names = append(names, fmt.Sprintf("%s:%d", n, len(f.GetMetric())))
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// An address that moves to another server (a floating IP reassigned, a
// port moved) starts a new series under the new server; the old one goes.
func TestAddressMovesToAnotherServer(t *testing.T) {
	f := newFixture(t, []standin.Server{
		{ID: "s-a", Name: "a", Host: "cmp-1", VMState: "active", PowerState: 1,
			Addresses: []standin.Address{{Network: "public", Addr: "198.19.0.9", Type: "floating"}}},
		{ID: "s-b", Name: "b", Host: "cmp-1", VMState: "active", PowerState: 1},
	})
	f.engine.answers[netip.MustParseAddr("198.19.0.9")] = probes.Result{Sent: 3, Received: 3, RTTs: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}}
	f.refreshAndProbe(t)
	f.refreshAndProbe(t)
	f.cloud.Update("s-a", func(s *standin.Server) { s.Addresses = nil })
	f.cloud.Update("s-b", func(s *standin.Server) {
		s.Addresses = []standin.Address{{Network: "public", Addr: "198.19.0.9", Type: "floating"}}
	})
	f.refreshAndProbe(t)
	_, fams := f.scrape(t)
	if m := find(fams, "openstack_vm_icmp_packets_sent_total", map[string]string{"address": "198.19.0.9"}); len(m) != 1 ||
		metricLabels(m[0])["id"] != "s-b" || m[0].GetCounter().GetValue() != 3 {
		t.Errorf("after the move: %v", m)
	}
}
