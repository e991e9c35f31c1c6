//go:build lab

package alerts

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/promstack"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
)

// TestRulesInBothDialects proves every bundled rule valid for both engines
// it is meant for: promtool check rules (Prometheus 2.42), vmalert -dryRun
// (VictoriaMetrics 1.79: the file, the MetricsQL syntax, the annotation
// templates), and, since vmalert's check accepts unknown functions, every
// expression evaluated by a real VictoriaMetrics over series of every
// metric the rules read.
func TestRulesInBothDialects(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	vmalert := tool(t, "vmalert", "victoria-metrics")
	dir := t.TempDir()

	defaults, err := Render(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	native := DefaultParams()
	native.RTTNativeHistogram = true
	nativeRules, err := Render(native)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"default.yml": defaults, "native.yml": nativeRules}
	for name, b := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", name, err, out)
		}
		if out, err := exec.Command(vmalert, "-dryRun", "-rule="+path, "-loggerLevel=ERROR").CombinedOutput(); err != nil {
			t.Errorf("vmalert -dryRun %s: %v\n%s", name, err, out)
		}
	}

	// A real VictoriaMetrics with a few minutes of every metric the rules
	// read.
	stack := promstack.New(promstack.Options{Dir: dir})
	t.Cleanup(stack.Close)
	vm, err := stack.StartVictoriaMetrics(context.Background(), testenv.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defaultGroups, err := Rules(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	importSeries(t, vm.URL, metricNames(t, defaultGroups))

	for _, g := range defaultGroups {
		for _, r := range g.Rules {
			if _, err := promstack.Query(http.DefaultClient, vm.URL, r.Expr, "nocache=1"); err != nil {
				t.Errorf("VictoriaMetrics cannot evaluate %s%s: %v", r.Alert, r.Record, err)
			}
		}
	}
	// The series are there: the per-server alert expressions see them.
	if n, err := promstack.Query(http.DefaultClient, vm.URL, `max without (instance, job) (openstack_vm_status{job="openstack-vm-exporter"})`, "nocache=1"); err != nil || n == 0 {
		t.Errorf("imported series not found: %d, %v", n, err)
	}

	// Why rtt_native_histogram is off by default: its half of
	// OpenStackVMHighLatency fails the whole expression in MetricsQL.
	nativeGroups, err := Rules(native)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range nativeGroups {
		for _, r := range g.Rules {
			if r.Alert != "OpenStackVMHighLatency" {
				continue
			}
			if _, err := promstack.Query(http.DefaultClient, vm.URL, r.Expr, "nocache=1"); err == nil || !strings.Contains(err.Error(), "histogram_sum") {
				t.Errorf("the native histogram half of OpenStackVMHighLatency evaluates in VictoriaMetrics 1.79 (%v): rtt_native_histogram could default to true", err)
			}
		}
	}
}

// metricNames lists the metrics the rules' selectors name.
func metricNames(t *testing.T, groups []Group) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Rules {
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
			if err != nil {
				t.Fatal(err)
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if v, ok := n.(*parser.VectorSelector); ok && v.Name != "" {
					seen[v.Name] = true
				}
				return nil
			})
		}
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// importSeries writes five minutes of each metric, one sample every 15s,
// with the labels the rules join on, through VictoriaMetrics' import of
// the Prometheus text format.
func importSeries(t *testing.T, base string, names []string) {
	t.Helper()
	const labels = `job="openstack-vm-exporter",instance="cmp-1:9735",host="cmp-1",id="vm-1",name="vm",project_id="p",address="198.18.0.1",network="provider",status="ACTIVE",host_status="UP"`
	now := time.Now().Add(-2 * time.Second)
	var b strings.Builder
	for i := 20; i >= 0; i-- {
		ts := now.Add(-time.Duration(i) * 15 * time.Second).UnixMilli()
		for _, n := range names {
			v := float64(20 - i)
			switch {
			case strings.HasSuffix(n, "_timestamp_seconds"), n == "process_start_time_seconds":
				v = float64(now.Unix() - 30)
			case n == "up":
				v = 1
			}
			fmt.Fprintf(&b, "%s{%s} %g %d\n", n, labels, v, ts)
		}
	}
	resp, err := http.Post(base+"/api/v1/import/prometheus", "text/plain", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("import: %s", resp.Status)
	}
	// Imported samples become searchable within a few seconds.
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err := promstack.Query(http.DefaultClient, base, `count(up{job="openstack-vm-exporter"})`, "nocache=1")
		if err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("imported series not searchable after 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
