package alerts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: apt-get install -y %s (scripts/setup.sh does)", name, pkg)
	}
	return path
}

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

func TestPromtoolCheckAndUnitTests(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	if out, err := exec.Command(promtool, "check", "rules", "openstack-vm-exporter.rules.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	tests, _ := filepath.Glob("tests/*.test.yml")
	if len(tests) == 0 {
		t.Fatal("no rule unit tests")
	}
	out, err := exec.Command(promtool, append([]string{"test", "rules"}, tests...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	// Every alert is checked by a unit test one evaluation (1m) before it
	// fires, silent, and when it fires.
	groups, err := Rules(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	edges := firingEdges(t, tests)
	for _, g := range groups {
		for _, r := range g.Rules {
			// The Watchdog fires always: it has no edge to check.
			if r.Alert != "" && !edges[r.Alert] && r.Alert != "Watchdog" {
				t.Errorf("no unit test expects %s silent at some eval_time and firing one minute later", r.Alert)
			}
		}
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
		if u.EvaluationInterval != "1m" {
			t.Fatalf("%s: evaluation_interval %q: the checks here assume 1m", f, u.EvaluationInterval)
		}
		out = append(out, u)
	}
	return out
}

// firingEdges lists the alerts that some test group expects silent at T
// and firing at T+1m.
func firingEdges(t *testing.T, files []string) map[string]bool {
	t.Helper()
	edges := map[string]bool{}
	for _, u := range readUnitTests(t, files) {
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

func TestOverrideRenders(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	dir := t.TempDir()
	params := filepath.Join(dir, "p.yaml")
	os.WriteFile(params, []byte("unreachable_for: 30s\nerror_seconds: 10\njob_selector: job=\"e2e\"\n"), 0o644)
	p, err := LoadParams(params)
	if err != nil {
		t.Fatal(err)
	}
	if p.UnreachableFor != "30s" || p.ErrorSeconds != 10 || p.BuildSeconds != DefaultParams().BuildSeconds {
		t.Errorf("overrides: %+v", p)
	}
	b, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`job="e2e"`)) || bytes.Contains(b, []byte(`job="openstack-vm-exporter"`)) {
		t.Error("job selector not applied everywhere")
	}
	rules := filepath.Join(dir, "r.yml")
	os.WriteFile(rules, b, 0o644)
	if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Errorf("overridden rules: %v\n%s", err, out)
	}
	os.WriteFile(params, []byte("unreachable_for: 30s\nunreachabel_for: 1m\n"), 0o644)
	if _, err := LoadParams(params); err == nil || !strings.Contains(err.Error(), "unreachabel_for") {
		t.Errorf("unknown key: %v", err)
	}
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

func TestAlertmanagerExample(t *testing.T) {
	amtool := tool(t, "amtool", "prometheus-alertmanager")
	if out, err := exec.Command(amtool, "check-config", "alertmanager.example.yml").CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	b, err := os.ReadFile("alertmanager.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Route struct {
			Routes []struct {
				Matchers []string `yaml:"matchers"`
				Receiver string   `yaml:"receiver"`
			} `yaml:"routes"`
		} `yaml:"route"`
		Inhibit []struct {
			Source []string `yaml:"source_matchers"`
			Target []string `yaml:"target_matchers"`
			Equal  []string `yaml:"equal"`
		} `yaml:"inhibit_rules"`
		Receivers []struct {
			Name     string `yaml:"name"`
			Webhooks []any  `yaml:"webhook_configs"`
		} `yaml:"receivers"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	// Every severity reaches a receiver that sends somewhere.
	sends := map[string]bool{}
	for _, r := range cfg.Receivers {
		sends[r.Name] = len(r.Webhooks) > 0
	}
	for _, r := range cfg.Route.Routes {
		if !sends[r.Receiver] {
			t.Errorf("route %v goes to %q, which sends nothing", r.Matchers, r.Receiver)
		}
	}

	// The alerts as the rules really label them: every label set a unit
	// test expects (promtool compares them exactly), with the alert name.
	tests, _ := filepath.Glob("tests/*.test.yml")
	var seen []map[string]string
	for _, u := range readUnitTests(t, tests) {
		for _, g := range u.Tests {
			for _, a := range g.AlertRuleTest {
				for _, e := range a.ExpAlerts {
					l := map[string]string{"alertname": a.Alertname}
					for k, v := range e.ExpLabels {
						l[k] = v
					}
					seen = append(seen, l)
				}
			}
		}
	}
	groups, _ := Rules(DefaultParams())
	for _, g := range groups {
		for _, r := range g.Rules {
			found := false
			for _, l := range seen {
				found = found || (l["alertname"] == r.Alert && l["severity"] == r.Labels["severity"])
			}
			if r.Alert != "" && !found {
				t.Errorf("no unit test shows the labels of %s (%s)", r.Alert, r.Labels["severity"])
			}
		}
	}
	rank := map[string]int{"critical": 0, "warning": 1, "info": 2}
	// The one deliberate exception: a host in MAINTENANCE (info) holds back
	// the page of its servers going quiet (planned work).
	crossSeverity := map[[2]string]bool{{"OpenStackComputeHostInMaintenance", "OpenStackHostVMsUnreachable"}: true}
	for i, rule := range cfg.Inhibit {
		sources, targets := matching(t, seen, rule.Source), matching(t, seen, rule.Target)
		if len(sources) == 0 || len(targets) == 0 {
			t.Errorf("inhibit rule %d matches no alert on one side (%d sources, %d targets)", i, len(sources), len(targets))
		}
		// Alertmanager counts a label missing on both sides as equal: the
		// rule would then silence the target everywhere. So every source
		// has each equal label, and every target alert has it too (though
		// it may be empty on some of its alerts, like the host of a server
		// not scheduled yet, which are then never silenced).
		targetHas := map[string]map[string]bool{}
		for _, tg := range targets {
			if targetHas[tg["alertname"]] == nil {
				targetHas[tg["alertname"]] = map[string]bool{}
			}
			for _, e := range rule.Equal {
				targetHas[tg["alertname"]][e] = targetHas[tg["alertname"]][e] || tg[e] != ""
			}
		}
		for name, has := range targetHas {
			for _, e := range rule.Equal {
				if !has[e] {
					t.Errorf("inhibit rule %d: equal label %q is never on target %s", i, e, name)
				}
			}
		}
		for _, s := range sources {
			for _, e := range rule.Equal {
				if s[e] == "" {
					t.Errorf("inhibit rule %d: equal label %q missing on source %s", i, e, s["alertname"])
				}
			}
			for _, tg := range targets {
				if rank[s["severity"]] > rank[tg["severity"]] && !crossSeverity[[2]string{s["alertname"], tg["alertname"]}] {
					t.Errorf("inhibit rule %d: %s (%s) would silence %s (%s)", i, s["alertname"], s["severity"], tg["alertname"], tg["severity"])
				}
			}
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
