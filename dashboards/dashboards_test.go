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
	src, err := os.ReadFile("generate.go")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "generate.go"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "generate.go")
	cmd.Dir = dir
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
			for _, want := range []string{"datasource", "job", "host"} {
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
