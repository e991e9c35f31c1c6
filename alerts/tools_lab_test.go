//go:build lab

package alerts

// The rules and the Alertmanager example checked by Debian's promtool and
// amtool: rule syntax, every promtool unit test, and the routing and
// inhibitions of the alerts as the unit tests label them.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
)

// tool is the path of one of Debian's tools, or the test fails naming the
// package to install.
func tool(t *testing.T, name, pkg string) string { return testenv.Tool(t, name, pkg) }

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
	// The one route to a receiver that sends nothing takes the alerts that
	// only inhibit (severity none; the Watchdog is routed before it).
	for _, r := range cfg.Route.Routes {
		inhibitOnly := len(r.Matchers) == 1 && r.Matchers[0] == `severity="none"`
		switch {
		case inhibitOnly && sends[r.Receiver]:
			t.Errorf("route %v of the alerts that only inhibit goes to %q, which notifies", r.Matchers, r.Receiver)
		case !inhibitOnly && !sends[r.Receiver]:
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
	rank := map[string]int{"critical": 0, "warning": 1, "info": 2, "none": 3}
	// The one deliberate exception: a host an operator disabled, or enabled
	// again a short while ago, holds back the page of its servers going
	// quiet (planned work).
	crossSeverity := map[[2]string]bool{{"OpenStackComputeHostMaintenanceWindow", "OpenStackHostVMsUnreachable"}: true}
	// An alert of severity none other than the Watchdog exists to inhibit:
	// each is the source of an inhibit rule.
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Alert == "Watchdog" || r.Labels["severity"] != "none" {
				continue
			}
			source := false
			for _, rule := range cfg.Inhibit {
				source = source || len(matching(t, []map[string]string{{"alertname": r.Alert, "severity": "none"}}, rule.Source)) > 0
			}
			if !source {
				t.Errorf("%s (severity none) inhibits nothing", r.Alert)
			}
		}
	}
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
