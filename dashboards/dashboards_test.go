package dashboards

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
)

// Units Grafana knows, of those a dashboard of this kind should use.
var grafanaUnits = map[string]bool{
	"none": true, "short": true, "percentunit": true, "percent": true, "s": true, "ms": true, "reqps": true,
	"bool_yes_no": true, "bytes": true, "dateTimeAsIso": true, "dtdurations": true,
}

// testVars stand in for the variables a user selects: "all".
var testVars = map[string]string{"job": ".*", "host": ".*", "project": ".*", "vm": ".*", "datasource": "prometheus", "runbook_base": "x"}

func TestGeneratedFilesAreCurrent(t *testing.T) {
	dir := t.TempDir()
	// Run here, in the module: generate.go reads the thresholds from the
	// alerts package.
	args := append(append([]string{"run"}, testenv.BuildFlags()...), "generate.go", "-o", dir)
	cmd := exec.Command("go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run generate.go: %v\n%s", err, out)
	}
	for _, name := range []string{"openstack-vm-fleet.json", "openstack-vm-host.json"} {
		want, _ := os.ReadFile(filepath.Join(dir, name))
		got, _ := os.ReadFile(name)
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what generate.go writes: run `go generate ./dashboards`", name)
		}
	}
}

func TestDashboardStructure(t *testing.T) {
	ds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("%d dashboards", len(ds))
	}
	uids := map[string]bool{}
	for _, d := range ds {
		t.Run(d.File, func(t *testing.T) {
			uid, _ := d.JSON["uid"].(string)
			if uid == "" || len(uid) > 40 || uids[uid] {
				t.Errorf("uid %q missing, too long or not unique", uid)
			}
			uids[uid] = true
			if d.JSON["title"] == "" || d.JSON["schemaVersion"] == nil {
				t.Error("no title or schemaVersion")
			}
			vars := strings.Join(d.Variables(), ",")
			for _, want := range []string{"datasource", "job", "host", "project"} {
				if !strings.Contains(","+vars+",", ","+want+",") {
					t.Errorf("no %q variable (have %s)", want, vars)
				}
			}
			ids := map[float64]bool{}
			for _, p := range d.Panels() {
				id, _ := p["id"].(float64)
				if id == 0 || ids[id] {
					t.Errorf("panel %q: id %v missing or not unique", p["title"], p["id"])
				}
				ids[id] = true
				if p["type"] == "row" {
					continue
				}
				if p["title"] == "" || p["description"] == "" {
					t.Errorf("panel %v has no title or description", p["id"])
				}
				if ds, _ := p["datasource"].(map[string]any); ds["uid"] != "${datasource}" {
					t.Errorf("panel %q does not use the datasource variable: %v", p["title"], p["datasource"])
				}
				targets, _ := p["targets"].([]any)
				if len(targets) == 0 {
					t.Errorf("panel %q has no query", p["title"])
				}
				for _, tg := range targets {
					tm, _ := tg.(map[string]any)
					if ds, _ := tm["datasource"].(map[string]any); ds["uid"] != "${datasource}" {
						t.Errorf("panel %q target %v does not use the datasource variable", p["title"], tm["refId"])
					}
				}
				fc, _ := p["fieldConfig"].(map[string]any)
				defaults, _ := fc["defaults"].(map[string]any)
				if unit, ok := defaults["unit"].(string); ok && !grafanaUnits[unit] {
					t.Errorf("panel %q: unit %q is not a Grafana unit", p["title"], unit)
				}
				if gp, _ := p["gridPos"].(map[string]any); gp == nil || gp["w"].(float64)+gp["x"].(float64) > 24 {
					t.Errorf("panel %q: gridPos %v", p["title"], p["gridPos"])
				}
			}
		})
	}
}

func TestQueriesParse(t *testing.T) {
	ds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range ds {
		for _, q := range d.Queries(testVars) {
			n++
			if strings.Contains(q.Expr, "$") {
				t.Errorf("%s: unexpanded variable in %s", q.Where, q.Expr)
			}
			if _, err := parser.NewParser(parser.Options{}).ParseExpr(q.Expr); err != nil {
				t.Errorf("%s: %v\n%s", q.Where, err, q.Expr)
			}
		}
	}
	if n < 30 {
		t.Errorf("only %d queries found", n)
	}
}

func TestRunbookLinks(t *testing.T) {
	ds, _ := Load()
	for _, d := range ds {
		b := fmt.Sprint(d.JSON)
		if !strings.Contains(b, "${runbook_base}/${__data.fields.alertname}.md") {
			t.Errorf("%s has no runbook link", d.File)
		}
	}
}

// A query that falls back to vector(0) has data whatever its left side
// finds, even nothing at all because a metric was renamed: the fallback is
// 0 only where the exporters report (dashboards.Fallback).
func TestFallbacks(t *testing.T) {
	ds, _ := Load()
	n := 0
	for _, d := range ds {
		for _, q := range d.Queries(testVars) {
			if strings.Contains(q.Expr, "vector(0)") {
				t.Errorf("%s falls back to vector(0): %s", q.Where, q.Expr)
			}
			if strings.Contains(q.Expr, "or on () (0 *") {
				n++
				expr, base, ok := Fallback(q.Expr)
				if !ok || expr == "" || base == "" {
					t.Errorf("%s: Fallback cannot split %s", q.Where, q.Expr)
				}
			}
		}
	}
	if n < 5 {
		t.Errorf("only %d queries with a fallback", n)
	}
	for _, c := range []struct{ q, expr, base string }{
		{`count(a == 1) or on () (0 * count(a))`, `count(a == 1)`, `count(a)`},
		{`count(a) or on () ((0 * count(b)))`, `count(a)`, `count(b)`},
		{`count(a) or (0 * count(b))`, "", ""},
		{`count(a) or on () (1 * count(b))`, "", ""},
		{`count(a)`, "", ""},
	} {
		expr, base, _ := Fallback(c.q)
		if expr != c.expr || base != c.base {
			t.Errorf("Fallback(%q) = %q, %q; want %q, %q", c.q, expr, base, c.expr, c.base)
		}
	}
}

// The lines drawn on the loss and RTT panels, and the bands and counts that
// stand for alerts, use the values the bundled rules fire at.
func TestThresholdsMatchAlerts(t *testing.T) {
	p := alerts.DefaultParams()
	ds, _ := Load()
	want := map[string]map[string]float64{
		"openstack-vm-fleet.json": {"Worst packet loss": p.LossThreshold, "Slowest addresses": p.LatencyThresholdSeconds},
		"openstack-vm-host.json":  {"Packet loss": p.LossThreshold, "Round-trip time": p.LatencyThresholdSeconds},
	}
	for _, d := range ds {
		lines := map[string]float64{}
		for _, panel := range d.Panels() {
			fc, _ := panel["fieldConfig"].(map[string]any)
			defaults, _ := fc["defaults"].(map[string]any)
			custom, _ := defaults["custom"].(map[string]any)
			if style, _ := custom["thresholdsStyle"].(map[string]any); style == nil || style["mode"] == "off" {
				continue
			}
			th, _ := defaults["thresholds"].(map[string]any)
			steps, _ := th["steps"].([]any)
			last, _ := steps[len(steps)-1].(map[string]any)
			v, _ := last["value"].(float64)
			lines[fmt.Sprint(panel["title"])] = v
		}
		for title, v := range want[d.File] {
			if got, ok := lines[title]; !ok || got != v {
				t.Errorf("%s: panel %q draws its threshold at %v (drawn: %v), the rules fire at %v", d.File, title, got, ok, v)
			}
		}
		for title, got := range lines {
			if _, ok := want[d.File][title]; !ok {
				t.Errorf("%s: panel %q draws a threshold this test does not check (%v)", d.File, title, got)
			}
		}
		for _, q := range d.Queries(testVars) {
			switch {
			case strings.Contains(q.Where, `"Addresses losing packets"`) && !strings.Contains(q.Expr, fmt.Sprint(p.LossThreshold)):
				t.Errorf("%s does not split at the loss threshold %v: %s", q.Where, p.LossThreshold, q.Expr)
			case strings.Contains(q.Where, `"Stale inventories"`) && !strings.Contains(q.Expr, fmt.Sprintf("> %d *", p.StaleIntervals)):
				t.Errorf("%s does not count %d refresh intervals as stale: %s", q.Where, p.StaleIntervals, q.Expr)
			}
		}
	}
}

// The fleet dashboard must stay readable with thousands of hosts: no graph
// draws one series per exporter, host or address, only aggregates, the top
// ten, or groups of few values.
func TestFleetGraphsAreBounded(t *testing.T) {
	bounded := map[string]bool{"status": true, "reason": true, "le": true, "host_status": true}
	ds, _ := Load()
	for _, d := range ds {
		if d.File != "openstack-vm-fleet.json" {
			continue
		}
		for _, panel := range d.Panels() {
			if panel["type"] != "timeseries" && panel["type"] != "heatmap" {
				continue
			}
			targets, _ := panel["targets"].([]any)
			for _, tg := range targets {
				expr := expand(tg.(map[string]any)["expr"].(string), testVars)
				e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
				if err != nil {
					t.Fatal(err)
				}
				// Look through comparisons and parentheses to what is drawn.
				for {
					if p, ok := e.(*parser.ParenExpr); ok {
						e = p.Expr
						continue
					}
					if b, ok := e.(*parser.BinaryExpr); ok && b.Op.IsComparisonOperator() {
						e = b.LHS
						continue
					}
					break
				}
				agg, ok := e.(*parser.AggregateExpr)
				okGroups := ok && !agg.Without
				for _, l := range agg.Grouping {
					okGroups = okGroups && bounded[l]
				}
				if !ok || !(agg.Op == parser.TOPK || agg.Op == parser.BOTTOMK || okGroups) {
					t.Errorf("panel %q draws a series per exporter, host or address: %s", panel["title"], expr)
				}
			}
		}
	}
}
