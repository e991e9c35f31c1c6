package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/html"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/exporter"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

const hostileName = `<script>alert("x")</script> & "quotes" \ {braces}`

// fixture builds a stand-in cloud with one server per known issue, and
// near misses, whose addresses live in a namespace lab; the exporter's
// sockets are opened in the lab's hypervisor namespace.
func collect(t *testing.T) (Snapshot, map[string]string) {
	t.Helper()
	lab := netlab.New(t)
	cloud, err := standin.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cloud.Close() })
	now := time.Now().UTC().Truncate(time.Second)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	addr := func(a string) []standin.Address {
		return []standin.Address{{Network: "provider", Addr: a, Type: "fixed"}}
	}
	servers := []standin.Server{
		{ID: "s-error", Name: "broken", Host: "cmp-1", VMState: "error", PowerState: 4, Updated: ago(3 * time.Hour)},
		{ID: "s-error-new", Name: "just-broken", Host: "cmp-1", VMState: "error", PowerState: 4, Updated: ago(time.Minute)},
		{ID: "s-build", Name: "stuck", VMState: "building", TaskState: "scheduling", Updated: ago(3 * time.Hour)},
		{ID: "s-build-new", Name: "booting", Host: "cmp-1", VMState: "building", TaskState: "spawning", Updated: ago(5 * time.Minute)},
		{ID: "s-migrating", Name: "moving", Host: "cmp-1", VMState: "active", TaskState: "migrating", PowerState: 1, Updated: ago(2 * time.Hour)},
		{ID: "s-resize", Name: "resized", Host: "cmp-1", VMState: "resized", PowerState: 1, Updated: ago(50 * time.Hour)},
		{ID: "s-ghost", Name: "ghost", Host: "cmp-1", VMState: "active", PowerState: 4, Updated: ago(2 * time.Hour)},
		{ID: "s-paused", Name: "frozen", Host: "cmp-1", VMState: "active", PowerState: 3, Updated: ago(2 * time.Hour)},
		{ID: "s-ok", Name: hostileName, Host: "cmp-1", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.0.1")},
		{ID: "s-dead", Name: "silent", Host: "cmp-1", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.3.1")},
		{ID: "s-down-host", Name: "orphan", Host: "cmp-2", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour)},
		{ID: "s-maint", Name: "parked", Host: "cmp-3", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour)},
	}
	for i := range servers {
		servers[i].ProjectID, servers[i].Flavor = "p1", "m1.small"
	}
	cloud.Put(servers...)
	cloud.SetService("cmp-1", "UP")
	cloud.SetService("cmp-2", "DOWN")
	cloud.SetService("cmp-3", "MAINTENANCE")
	if err := lab.Add(netlab.Answer, netipOf("198.18.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := lab.Add(netlab.Dead, netipOf("198.18.3.1")); err != nil {
		t.Fatal(err)
	}
	for k, v := range cloud.Env() {
		t.Setenv(k, v)
	}
	t.Setenv("OS_CLOUD", "")
	cfg := config.Default()
	cfg.OpenStack.Scope = "all"
	cfg.Probe.ICMP.Count, cfg.Probe.ICMP.Timeout = 2, 500*time.Millisecond
	var svc *exporter.Service
	if err := lab.Do(func() (err error) { svc, err = exporter.New(cfg, nil); return err }); err != nil {
		t.Fatal(err)
	}
	// The probe sockets were opened in the lab; the API is reached from here.
	snap, err := Collect(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, s := range servers {
		ids[s.ID] = s.Name
	}
	return snap, ids
}

func findingsByAlert(fs []Finding) map[string][]string {
	out := map[string][]string{}
	for _, f := range fs {
		key := f.Labels["id"]
		if key == "" {
			key = f.Labels["host"]
		}
		if a := f.Labels["address"]; a != "" {
			key += "@" + a
		}
		out[f.Alert] = append(out[f.Alert], key)
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

var testRunbooks = fstest.MapFS{
	"OpenStackVMInError.md": {Data: []byte("# OpenStackVMInError\n## Meaning\nx\n## Mitigation\nopenstack server set --state active <id>\n## Escalation\ny\n")},
}

func TestReportFindsTheKnownIssues(t *testing.T) {
	snap, _ := collect(t)
	r, err := Build(context.Background(), snap, alerts.DefaultParams(), testRunbooks)
	if err != nil {
		t.Fatal(err)
	}
	got := findingsByAlert(r.Findings)
	want := map[string][]string{
		"OpenStackVMInError":                {"s-error"},
		"OpenStackVMStuckBuilding":          {"s-build"},
		"OpenStackVMStuckInTaskState":       {"s-migrating"},
		"OpenStackVMResizeNotConfirmed":     {"s-resize"},
		"OpenStackVMPowerStateMismatch":     {"s-ghost"},
		"OpenStackVMPausedUnexpectedly":     {"s-paused"},
		"OpenStackComputeHostDown":          {"cmp-2"},
		"OpenStackComputeHostInMaintenance": {"cmp-3"},
		"OpenStackVMUnreachable":            {"s-dead@198.18.3.1"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("findings\n got %v\nwant %v", got, want)
	}
	if r.Servers != 12 || r.Probed != 2 || r.Critical != 0 {
		t.Errorf("report counts: %d servers, %d probed, %d critical", r.Servers, r.Probed, r.Critical)
	}
	for _, f := range r.Findings {
		if f.Summary == "" || strings.Contains(f.Summary, "{{") || f.RunbookURL == "" {
			t.Errorf("%s: summary %q runbook %q", f.Alert, f.Summary, f.RunbookURL)
		}
		switch f.Alert {
		case "OpenStackVMInError":
			if !strings.Contains(f.Description, "3h 0m") || !strings.Contains(f.Mitigation, "openstack server set --state active") {
				t.Errorf("ERROR finding: %q / %q", f.Description, f.Mitigation)
			}
		case "OpenStackVMUnreachable":
			if len(f.Notes) < 2 || !strings.Contains(strings.Join(f.Notes, " "), "no history") {
				t.Errorf("unreachable finding does not say the report has no history: %v", f.Notes)
			}
		}
	}
}

// The report and the alert rules must not disagree. The snapshot becomes a
// promtool rule unit test: the same series, held for three hours (shifted so
// that every time in state stays as it was), and the test expects exactly
// the alerts the report found to fire.
func TestReportAgreesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: apt-get install -y prometheus")
	}
	snap, _ := collect(t)
	params := alerts.DefaultParams()
	r, err := Build(context.Background(), snap, params, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rules, _ := alerts.Render(params)
	os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644)

	const minutes = 180
	evalAt := time.Duration(minutes) * time.Minute
	offset := float64(snap.AfterAt.Unix()) - evalAt.Seconds()
	var in strings.Builder
	series := func(name string, lbls map[string]string, values string) {
		var parts []string
		for k, v := range lbls {
			parts = append(parts, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(parts)
		sel := name + "{" + strings.Join(parts, ", ") + "}"
		js, _ := json.Marshal(sel)
		fmt.Fprintf(&in, "      - series: %s\n        values: '%s'\n", js, values)
	}
	base := func(m *dto.Metric) map[string]string {
		l := map[string]string{"job": "openstack-vm-exporter", "instance": "report"}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		return l
	}
	series("up", map[string]string{"job": "openstack-vm-exporter", "instance": "report"}, fmt.Sprintf("1x%d", minutes))
	for _, fam := range snap.After {
		name := fam.GetName()
		for _, m := range fam.GetMetric() {
			l := base(m)
			switch {
			case name == "openstack_vm_status_since_timestamp_seconds" || name == "process_start_time_seconds" ||
				name == "openstack_vm_api_last_success_timestamp_seconds" || name == "openstack_vm_probe_last_cycle_timestamp_seconds":
				// Times move with the test's clock.
				series(name, l, fmt.Sprintf("%gx%d", m.GetGauge().GetValue()-offset, minutes))
			case name == "openstack_vm_icmp_up" && m.GetGauge().GetValue() == 0:
				// The report assumes an unanswering address answered
				// before; so does this history.
				series(name, l, fmt.Sprintf("1x%d 0x30", minutes-31))
			case m.Gauge != nil:
				series(name, l, fmt.Sprintf("%gx%d", m.GetGauge().GetValue(), minutes))
			case m.Counter != nil && strings.HasPrefix(name, "openstack_vm_icmp_"):
				series(name, l, fmt.Sprintf("0+%gx%d", m.GetCounter().GetValue(), minutes))
			case m.Counter != nil:
				series(name, l, fmt.Sprintf("%gx%d", m.GetCounter().GetValue(), minutes))
			}
		}
	}
	var exp strings.Builder
	for _, f := range r.Findings {
		l := map[string]string{"__name__": "ALERTS", "alertname": f.Alert, "alertstate": "firing"}
		for k, v := range f.Labels {
			if v != "" {
				l[k] = v
			}
		}
		var parts []string
		for k, v := range l {
			if k != "__name__" {
				parts = append(parts, fmt.Sprintf("%s=%q", k, v))
			}
		}
		sort.Strings(parts)
		js, _ := json.Marshal("ALERTS{" + strings.Join(parts, ", ") + "}")
		fmt.Fprintf(&exp, "          - labels: %s\n            value: 1\n", js)
	}
	test := fmt.Sprintf(`rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
%s    promql_expr_test:
      - expr: 'ALERTS{alertstate="firing"}'
        eval_time: %dm
        exp_samples:
%s`, in.String(), minutes, exp.String())
	path := filepath.Join(dir, "agree.test.yml")
	os.WriteFile(path, []byte(test), 0o644)
	out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput()
	if err != nil {
		t.Errorf("promtool and the report disagree: %v\n%s", err, out)
	}
	if len(r.Findings) < 8 {
		t.Errorf("only %d findings: the comparison would prove little", len(r.Findings))
	}
}

func TestFormats(t *testing.T) {
	r := &Report{Generated: time.Now(), Servers: 3, Probed: 2, Critical: 1, Findings: []Finding{
		{Alert: "OpenStackHostVMsUnreachable", Severity: "critical", Labels: map[string]string{"host": "cmp-1"}, Summary: "Most servers of host cmp-1 stopped answering ping.", RunbookURL: "https://example.invalid/rb.md", Mitigation: "systemctl restart x"},
		{Alert: "OpenStackVMInError", Severity: "warning", Labels: map[string]string{"id": "s1", "name": hostileName + "\nsecond line", "host": "cmp-1"},
			Summary: "Server " + hostileName + " is in ERROR.", Description: "desc " + hostileName, RunbookURL: "https://example.invalid/e.md", Notes: []string{"a note"}},
	}}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(table.String(), "\n")
	rows := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "critical ") || strings.HasPrefix(l, "warning ") {
			rows++
		}
	}
	if rows != 2 || !strings.Contains(table.String(), "Mitigation:\n  systemctl restart x") {
		t.Errorf("table:\n%s", table.String())
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Findings) != 2 || back.Findings[1].Labels["name"] != hostileName+"\nsecond line" {
		t.Errorf("json round trip: %v %+v", err, back)
	}

	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(page.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var scripts, rowsHTML int
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script":
				scripts++
			case "tr":
				rowsHTML++
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if scripts != 0 {
		t.Error("a server name became a <script> element")
	}
	if rowsHTML != 3 { // header and two findings
		t.Errorf("%d table rows", rowsHTML)
	}
	if !strings.Contains(page.String(), "&lt;script&gt;") {
		t.Error("hostile name not escaped")
	}
}

func TestCatalogue(t *testing.T) {
	rb := fstest.MapFS{"README.md": {Data: []byte("| [OpenStackVMInError](OpenStackVMInError.md) | warning | A server in ERROR. |\n")}}
	checks, err := Catalogue(alerts.DefaultParams(), rb)
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) < 16 || checks[0].Severity != "critical" {
		t.Errorf("catalogue %+v", checks)
	}
	for _, c := range checks {
		if c.Alert == "OpenStackVMInError" && c.Detects != "A server in ERROR." {
			t.Errorf("detects %q", c.Detects)
		}
	}
}

func netipOf(s string) netip.Addr { return netip.MustParseAddr(s) }
