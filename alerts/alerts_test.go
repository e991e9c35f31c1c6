package alerts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
	// Every alert is exercised by a unit test that expects it to fire.
	var all []byte
	for _, f := range tests {
		b, _ := os.ReadFile(f)
		all = append(all, b...)
	}
	groups, err := Rules(DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			fires := regexp.MustCompile(`alertname: ` + r.Alert + `\n\s+exp_alerts:\n\s+- exp_labels`)
			if !fires.Match(all) {
				t.Errorf("no unit test expects %s to fire", r.Alert)
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

var runbookSections = []string{"## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## Escalation"}

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
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
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
	groups, _ := Rules(DefaultParams())
	names := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names[r.Alert] = true
			}
		}
	}
	b, _ := os.ReadFile("alertmanager.example.yml")
	var cfg struct {
		Inhibit []struct {
			Source []string `yaml:"source_matchers"`
			Target []string `yaml:"target_matchers"`
		} `yaml:"inhibit_rules"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	alertNames := regexp.MustCompile(`OpenStack[A-Za-z]+`)
	for _, rule := range cfg.Inhibit {
		for _, m := range append(rule.Source, rule.Target...) {
			for _, n := range alertNames.FindAllString(m, -1) {
				if !names[n] {
					t.Errorf("inhibit rule names %s, which is no alert", n)
				}
			}
		}
	}
}
