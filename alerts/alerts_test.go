package alerts

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

func TestRenderedFileIsCurrent(t *testing.T) {
	want, err := Render(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("openstack-vm-exporter.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(got, want) {
		t.Error("openstack-vm-exporter.rules.yml is not the rendering of params.yaml: run `go generate ./alerts`")
	}
}

// unitTests is the part of promtool's test file format these tests read.
type unitTests struct {
	EvaluationInterval string `yaml:"evaluation_interval"`
	Tests              []struct {
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readUnitTests(t *testing.T, files []string) []unitTests {
	t.Helper()
	var out []unitTests
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var u unitTests
		if err := yaml.Unmarshal(b, &u); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if u.EvaluationInterval == "" {
			t.Fatalf("%s: no evaluation_interval: say it (1m for the alerts' edges)", f)
		}
		out = append(out, u)
	}
	return out
}

// firingEdges lists the alerts that some test group expects silent at T
// and firing at T+1m, one evaluation apart (files evaluated less often,
// for long horizons, check no edge).
func firingEdges(t *testing.T, files []string) map[string]bool {
	t.Helper()
	edges := map[string]bool{}
	for _, u := range readUnitTests(t, files) {
		if u.EvaluationInterval != "1m" {
			continue
		}
		for _, g := range u.Tests {
			silent := map[string]map[time.Duration]bool{}
			for _, a := range g.AlertRuleTest {
				if len(a.ExpAlerts) == 0 {
					if silent[a.Alertname] == nil {
						silent[a.Alertname] = map[time.Duration]bool{}
					}
					silent[a.Alertname][evalTime(t, a.EvalTime)] = true
				}
			}
			for _, a := range g.AlertRuleTest {
				if len(a.ExpAlerts) > 0 && silent[a.Alertname][evalTime(t, a.EvalTime)-time.Minute] {
					edges[a.Alertname] = true
				}
			}
		}
	}
	return edges
}

func evalTime(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := model.ParseDuration(s)
	if err != nil {
		t.Fatalf("eval_time %q: %v", s, err)
	}
	return time.Duration(d)
}

var runbookSections = []string{"## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Escalation", "## Tuning"}

func TestAnnotationsAndRunbooks(t *testing.T) {
	groups, err := Rules(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	base := DefaultParams().RunbookBaseURL
	names := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				if !strings.Contains(r.Record, ":") {
					t.Errorf("recording rule %s does not follow level:metric:operations", r.Record)
				}
				continue
			}
			names[r.Alert] = true
			switch sev := r.Labels["severity"]; {
			case sev == "critical", sev == "warning", sev == "info":
			case sev == "none" && r.Alert == "Watchdog" && r.Expr == "vector(1)":
				// Alertmanager's dead man's switch: routed apart, by name.
			case sev == "none" && r.Alert != "Watchdog":
				// Only inhibits; TestAlertmanagerExample checks that it does.
			default:
				t.Errorf("%s: severity %q", r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s has no %s", r.Alert, a)
				}
			}
			if want := base + "/" + r.Alert + ".md"; r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			rb, err := os.ReadFile(filepath.Join("..", "docs", "runbooks", r.Alert+".md"))
			if err != nil {
				t.Errorf("%s: no runbook: %v", r.Alert, err)
				continue
			}
			if !bytes.HasPrefix(rb, []byte("# "+r.Alert+"\n")) {
				t.Errorf("runbook of %s does not start with its title", r.Alert)
			}
			last := -1
			for _, s := range runbookSections {
				i := bytes.Index(rb, []byte("\n"+s+"\n"))
				if i < 0 || i < last {
					t.Errorf("runbook of %s lacks %q, or it is out of order", r.Alert, s)
				}
				last = i
			}
			// Tuning names the params.yaml keys that change the alert.
			if i := bytes.Index(rb, []byte("\n## Tuning\n")); i >= 0 && r.Alert != "Watchdog" && !regexp.MustCompile("`[a-z_]+`").Match(rb[i:]) {
				t.Errorf("runbook of %s: its Tuning section names no params.yaml key", r.Alert)
			}
			if bytes.Contains(bytes.ToUpper(rb), []byte("TODO")) {
				t.Errorf("runbook of %s has a TODO", r.Alert)
			}
			if !bytes.Contains(rb, []byte("```")) {
				t.Errorf("runbook of %s gives no command", r.Alert)
			}
		}
	}
	if len(names) < 16 {
		t.Errorf("%d alerts", len(names))
	}
	index, err := os.ReadFile(filepath.Join("..", "docs", "runbooks", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for n := range names {
		if !bytes.Contains(index, []byte("("+n+".md)")) {
			t.Errorf("docs/runbooks/README.md does not list %s", n)
		}
	}
	for rec := range HistoryRecordings {
		found := false
		for _, g := range groups {
			for _, r := range g.Rules {
				found = found || r.Record == rec
			}
		}
		if !found {
			t.Errorf("history recording %s is not a rule", rec)
		}
	}
}

// matching returns the label sets that all the matchers (Alertmanager's
// name="v", name=~"re" forms) select.
func matching(t *testing.T, sets []map[string]string, matchers []string) []map[string]string {
	t.Helper()
	parse := regexp.MustCompile(`^(\w+)\s*(=~|!~|!=|=)\s*"(.*)"$`)
	var out []map[string]string
	for _, l := range sets {
		ok := true
		for _, m := range matchers {
			p := parse.FindStringSubmatch(strings.TrimSpace(m))
			if p == nil {
				t.Fatalf("matcher %q: not understood", m)
			}
			re := regexp.MustCompile("^(?:" + p[3] + ")$")
			v := l[p[1]]
			switch p[2] {
			case "=":
				ok = ok && v == p[3]
			case "!=":
				ok = ok && v != p[3]
			case "=~":
				ok = ok && re.MatchString(v)
			case "!~":
				ok = ok && !re.MatchString(v)
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}
