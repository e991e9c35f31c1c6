//go:build lab

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

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/exporter"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

// scenario is a stand-in cloud and where its addresses live in a namespace
// lab.
type scenario struct {
	servers  []standin.Server
	services map[string]string
	lab      map[netlab.Behaviour][]string
}

// collect starts the scenario's cloud and lab and takes a report snapshot;
// the exporter's sockets are opened in the lab's hypervisor namespace. The
// Lossy namespace drops every other echo request (the first of each pair),
// so that loss is exact; the Slow one answers after 100 ms.
func collect(t *testing.T, sc scenario) Snapshot {
	t.Helper()
	lab := netlab.New(t)
	cloud, err := standin.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cloud.Close() })
	for i := range sc.servers {
		sc.servers[i].ProjectID, sc.servers[i].Flavor = "p1", "m1.small"
	}
	cloud.Put(sc.servers...)
	for host, state := range sc.services {
		cloud.SetService(host, state)
	}
	for b, addrs := range sc.lab {
		for _, a := range addrs {
			if err := lab.Add(b, netip.MustParseAddr(a)); err != nil {
				t.Fatal(err)
			}
		}
	}
	everyOther := exec.Command("ip", "netns", "exec", lab.Namespace(netlab.Lossy), "nft", "-f", "-")
	everyOther.Stdin = strings.NewReader(`delete table inet netlab
table inet netlab {
	chain input {
		type filter hook input priority 0; policy accept;
		icmp type echo-request numgen inc mod 2 == 0 drop
	}
}
`)
	if out, err := everyOther.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	lab.SetDelay(100 * time.Millisecond)
	env := cloud.Env()
	cfg := config.Default()
	cfg.OpenStack.Scope = "all"
	// 2 s: the slow VM's userspace responder (100 ms) answered after more
	// than 500 ms with the whole suite running, and counted as loss.
	cfg.Probe.ICMP.Count, cfg.Probe.ICMP.Timeout = 2, 2*time.Second
	// The stand-in has no Neutron: probe from the lab's host namespace,
	// whatever ovnmeta-* namespaces the machine has in /run/netns (vantage
	// auto would turn to them).
	cfg.Probe.ICMP.Vantage = config.VantageHost
	var svc *exporter.Service
	if err := lab.Do(func() (err error) {
		svc, err = exporter.New(cfg, exporter.Deps{Getenv: func(k string) string { return env[k] }})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The probe sockets were opened in the lab; the API is reached from here.
	snap, err := Collect(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// knownIssues has one server per known issue, and near misses.
func knownIssues() scenario {
	now := time.Now().UTC().Truncate(time.Second)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	addr := func(a string) []standin.Address {
		return []standin.Address{{Network: "provider", Addr: a, Type: "fixed"}}
	}
	return scenario{
		servers: []standin.Server{
			{ID: "s-error", Name: "broken", Host: "cmp-1", VMState: "error", PowerState: 4, Updated: ago(3 * time.Hour)},
			{ID: "s-error-new", Name: "just-broken", Host: "cmp-1", VMState: "error", PowerState: 4, Updated: ago(time.Minute)},
			{ID: "s-build", Name: "stuck", VMState: "building", TaskState: "scheduling", Updated: ago(3 * time.Hour)},
			{ID: "s-build-new", Name: "booting", Host: "cmp-1", VMState: "building", TaskState: "spawning", Updated: ago(5 * time.Minute)},
			{ID: "s-migrating", Name: "moving", Host: "cmp-1", VMState: "active", TaskState: "migrating", PowerState: 1, Updated: ago(9 * time.Hour)}, // past the 8 h a live migration may take
			{ID: "s-resize", Name: "resized", Host: "cmp-1", VMState: "resized", PowerState: 1, Updated: ago(50 * time.Hour)},
			{ID: "s-ghost", Name: "ghost", Host: "cmp-1", VMState: "active", PowerState: 4, Updated: ago(2 * time.Hour)},
			{ID: "s-paused", Name: "frozen", Host: "cmp-1", VMState: "active", PowerState: 3, Updated: ago(2 * time.Hour)},
			{ID: "s-ok", Name: hostileName, Host: "cmp-1", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.0.1")},
			{ID: "s-lossy", Name: "lossy", Host: "cmp-1", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.1.1")},
			{ID: "s-slow", Name: "slow", Host: "cmp-1", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.2.1")},
			{ID: "s-dead", Name: "silent", Host: "cmp-1", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.3.1")},
			// cmp-2's nova-compute is DOWN with a server ACTIVE on it: critical.
			{ID: "s-down-host", Name: "orphan", Host: "cmp-2", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour)},
			{ID: "s-maint", Name: "parked", Host: "cmp-3", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour)},
			// cmp-4: three servers that do not answer ping, as with a
			// security group that drops ICMP.
			{ID: "s-quiet-1", Name: "quiet-1", Host: "cmp-4", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.3.2")},
			{ID: "s-quiet-2", Name: "quiet-2", Host: "cmp-4", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.3.3")},
			{ID: "s-quiet-3", Name: "quiet-3", Host: "cmp-4", VMState: "active", PowerState: 1, Updated: ago(9 * time.Hour), Addresses: addr("198.18.3.4")},
		},
		services: map[string]string{"cmp-1": "UP", "cmp-2": "DOWN", "cmp-3": "MAINTENANCE", "cmp-4": "UP"},
		lab: map[netlab.Behaviour][]string{
			netlab.Answer: {"198.18.0.1"},
			netlab.Lossy:  {"198.18.1.1"},
			netlab.Slow:   {"198.18.2.1"},
			netlab.Dead:   {"198.18.3.1", "198.18.3.2", "198.18.3.3", "198.18.3.4"},
		},
	}
}

var testRunbooks = fstest.MapFS{
	"OpenStackVMInError.md": {Data: []byte("# OpenStackVMInError\n## Meaning\nx\n## Mitigation\nopenstack server set --state active <id>\n## Escalation\ny\n")},
}

func TestReportFindsTheKnownIssues(t *testing.T) {
	snap := collect(t, knownIssues())
	r, err := Build(context.Background(), snap, alerts.DefaultParams(), testRunbooks)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"OpenStackVMInError":                {"s-error"},
		"OpenStackVMStuckBuilding":          {"s-build"},
		"OpenStackVMStuckInTaskState":       {"s-migrating"},
		"OpenStackVMResizeNotConfirmed":     {"s-resize"},
		"OpenStackVMPowerStateMismatch":     {"s-ghost"},
		"OpenStackVMPausedUnexpectedly":     {"s-paused"},
		"OpenStackComputeHostDown":          {"cmp-2"},
		"OpenStackComputeHostInMaintenance": {"cmp-3"},
		"OpenStackVMPacketLoss":             {"s-lossy@198.18.1.1"},
		"OpenStackVMHighLatency":            {"s-slow@198.18.2.1"},
	}
	if got := findingsByAlert(r.Findings); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("findings\n got %v\nwant %v", got, want)
	}
	// The servers that do not answer now are listed apart, cmp-4's as a
	// host where most do not, and none of it counts as critical.
	wantUnconfirmed := map[string][]string{
		"OpenStackVMUnreachable":      {"s-dead@198.18.3.1", "s-quiet-1@198.18.3.2", "s-quiet-2@198.18.3.3", "s-quiet-3@198.18.3.4"},
		"OpenStackHostVMsUnreachable": {"cmp-4"},
	}
	if got := findingsByAlert(r.Unconfirmed); fmt.Sprint(got) != fmt.Sprint(wantUnconfirmed) {
		t.Errorf("unconfirmed\n got %v\nwant %v", got, wantUnconfirmed)
	}
	// The one critical issue is real: a down compute service with an
	// ACTIVE server on it. The command exits 2.
	if r.Servers != 17 || r.Probed != 7 || r.Critical != 1 || r.ExitStatus() != 2 {
		t.Errorf("report counts: %d servers, %d probed, %d critical, exit status %d", r.Servers, r.Probed, r.Critical, r.ExitStatus())
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
		case "OpenStackComputeHostDown":
			if f.Severity != "critical" || f.Value != 1 {
				t.Errorf("compute host finding: %s, value %g", f.Severity, f.Value)
			}
		case "OpenStackVMPacketLoss":
			if f.Value != 0.5 {
				t.Errorf("loss %g, want 0.5 (every other request dropped)", f.Value)
			}
		}
	}
	for _, f := range r.Unconfirmed {
		if f.Severity != "" || f.Labels["severity"] != "" || len(f.Notes) != 1 || f.Notes[0] != UnconfirmedNote ||
			!strings.Contains(f.Summary, "do") || strings.Contains(f.Summary, "stopped") {
			t.Errorf("unconfirmed finding %s: severity %q, labels %v, summary %q, notes %v", f.Alert, f.Severity, f.Labels, f.Summary, f.Notes)
		}
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	i := strings.Index(table.String(), "== Unconfirmed (5): not answering ping now")
	if i < 0 || strings.Contains(table.String()[i:], "critical") || !strings.Contains(table.String()[i:], "100% of the probed servers of host cmp-4") {
		t.Errorf("table:\n%s", table.String())
	}
}

// Servers that merely drop ICMP, most of a host's, are no critical issue:
// the report lists them apart and exits 0.
func TestReportICMPBlockingIsNotCritical(t *testing.T) {
	addr := func(a string) []standin.Address {
		return []standin.Address{{Network: "provider", Addr: a, Type: "fixed"}}
	}
	updated := time.Now().Add(-time.Hour)
	snap := collect(t, scenario{
		servers: []standin.Server{
			{ID: "a", Name: "a", Host: "cmp-1", VMState: "active", PowerState: 1, Updated: updated, Addresses: addr("198.18.0.1")},
			{ID: "b", Name: "b", Host: "cmp-1", VMState: "active", PowerState: 1, Updated: updated, Addresses: addr("198.18.3.1")},
			{ID: "c", Name: "c", Host: "cmp-1", VMState: "active", PowerState: 1, Updated: updated, Addresses: addr("198.18.3.2")},
			{ID: "d", Name: "d", Host: "cmp-1", VMState: "active", PowerState: 1, Updated: updated, Addresses: addr("198.18.3.3")},
		},
		services: map[string]string{"cmp-1": "UP"},
		lab:      map[netlab.Behaviour][]string{netlab.Answer: {"198.18.0.1"}, netlab.Dead: {"198.18.3.1", "198.18.3.2", "198.18.3.3"}},
	})
	r, err := Build(context.Background(), snap, alerts.DefaultParams(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := findingsByAlert(r.Unconfirmed)
	if len(r.Findings) != 0 || r.Critical != 0 || r.ExitStatus() != 0 ||
		fmt.Sprint(got["OpenStackHostVMsUnreachable"]) != "[cmp-1]" || len(got["OpenStackVMUnreachable"]) != 3 {
		t.Errorf("findings %v, unconfirmed %v, critical %d, exit status %d", findingsByAlert(r.Findings), got, r.Critical, r.ExitStatus())
	}
}

// The report and the alert rules must not disagree. The snapshot becomes a
// promtool rule unit test: the same series, held for three hours (shifted so
// that every time in state stays as it was). Two histories are given to the
// addresses that do not answer now: never answered (a security group that
// drops ICMP), where the rules must fire exactly the report's findings; and
// answered until 30 minutes ago, where they must also fire its unconfirmed
// findings, with the severity the rules give them.
func TestReportAgreesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: apt-get install -y prometheus")
	}
	snap := collect(t, knownIssues())
	params := alerts.DefaultParams()
	r, err := Build(context.Background(), snap, params, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) < 10 || len(r.Unconfirmed) < 5 {
		t.Fatalf("%d findings, %d unconfirmed: the comparison would prove little", len(r.Findings), len(r.Unconfirmed))
	}
	groups, err := alerts.Rules(params)
	if err != nil {
		t.Fatal(err)
	}
	severity := map[string]string{}
	for _, g := range groups {
		for _, rule := range g.Rules {
			severity[rule.Alert] = rule.Labels["severity"]
		}
	}
	dir := t.TempDir()
	rules, _ := alerts.Render(params)
	os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644)

	for _, tc := range []struct {
		name     string
		silent   string // values of openstack_vm_icmp_up for an address that does not answer now
		expected []Finding
	}{
		{"never-answered", "0x180", r.Findings},
		{"answered-before", "1x149 0x30", append(append([]Finding{}, r.Findings...), r.Unconfirmed...)},
	} {
		test := agreementTest(snap, tc.silent, tc.expected, severity)
		path := filepath.Join(dir, tc.name+".test.yml")
		os.WriteFile(path, []byte(test), 0o644)
		out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput()
		if err != nil {
			t.Errorf("%s: promtool and the report disagree: %v\n%s", tc.name, err, out)
		}
	}
}

// The report's findings with Neutron's ports and security groups agree with
// the rules too: with no history, the rules fire exactly its findings (the
// addresses whose groups admit ICMP, confirmed); with history, also its
// unconfirmed ones; never for the address whose groups close ICMP.
func TestReportReachAgreesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: apt-get install -y prometheus")
	}
	now := time.Now().Truncate(time.Second)
	fams := parseExposition(t, reachExposition(now))
	snap := Snapshot{Before: fams, After: fams, BeforeAt: now.Add(-time.Second), AfterAt: now}
	params := alerts.DefaultParams()
	r, err := Build(context.Background(), snap, params, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != 3 || len(r.Unconfirmed) != 2 || len(r.PolicySilent) != 1 {
		t.Fatalf("%d findings, %d unconfirmed, %d policy silent", len(r.Findings), len(r.Unconfirmed), len(r.PolicySilent))
	}
	groups, err := alerts.Rules(params)
	if err != nil {
		t.Fatal(err)
	}
	severity := map[string]string{}
	for _, g := range groups {
		for _, rule := range g.Rules {
			severity[rule.Alert] = rule.Labels["severity"]
		}
	}
	dir := t.TempDir()
	rules, _ := alerts.Render(params)
	os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644)
	for _, tc := range []struct {
		name, silent string
		expected     []Finding
	}{
		{"never-answered", "0x180", r.Findings},
		{"answered-before", "1x149 0x30", append(append([]Finding{}, r.Findings...), r.Unconfirmed...)},
	} {
		path := filepath.Join(dir, tc.name+".test.yml")
		os.WriteFile(path, []byte(agreementTest(snap, tc.silent, tc.expected, severity)), 0o644)
		if out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput(); err != nil {
			t.Errorf("%s: promtool and the report disagree: %v\n%s", tc.name, err, out)
		}
	}
}

// agreementTest writes a promtool test of the snapshot's series over three
// hours, expecting exactly these findings to fire at the end.
func agreementTest(snap Snapshot, silent string, expected []Finding, severity map[string]string) string {
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
	with := func(l map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range l {
			out[a] = b
		}
		return out
	}
	// A counter that grew by v in the snapshot grows by v every minute.
	perMinute := func(v float64) string { return fmt.Sprintf("0+%gx%d", v, minutes) }
	series("up", map[string]string{"job": "openstack-vm-exporter", "instance": "report"}, fmt.Sprintf("1x%d", minutes))
	for _, fam := range snap.After {
		name := fam.GetName()
		for _, m := range fam.GetMetric() {
			l := base(m)
			switch {
			case name == "openstack_vm_status_since_timestamp_seconds" || name == "process_start_time_seconds" ||
				name == "openstack_vm_api_last_success_timestamp_seconds" || name == "openstack_vm_probe_last_cycle_timestamp_seconds" ||
				name == "openstack_vm_api_ports_last_success_timestamp_seconds":
				// Times move with the test's clock.
				series(name, l, fmt.Sprintf("%gx%d", m.GetGauge().GetValue()-offset, minutes))
			case name == "openstack_vm_exporter_time_seconds":
				// The exporter's clock moves with the test's, and reads the
				// snapshot's time (shifted) at the evaluation.
				series(name, l, fmt.Sprintf("%g+60x%d", m.GetGauge().GetValue()-offset-evalAt.Seconds(), minutes))
			case name == "openstack_vm_icmp_up" && m.GetGauge().GetValue() == 0:
				series(name, l, silent)
			case m.Gauge != nil:
				series(name, l, fmt.Sprintf("%gx%d", m.GetGauge().GetValue(), minutes))
			case m.Counter != nil && strings.HasPrefix(name, "openstack_vm_icmp_"):
				series(name, l, perMinute(m.GetCounter().GetValue()))
			case m.Counter != nil:
				series(name, l, fmt.Sprintf("%gx%d", m.GetCounter().GetValue(), minutes))
			case m.Histogram != nil:
				h := m.GetHistogram()
				series(name+"_sum", l, perMinute(h.GetSampleSum()))
				series(name+"_count", l, perMinute(float64(h.GetSampleCount())))
				for _, b := range h.GetBucket() {
					series(name+"_bucket", with(l, "le", formatLe(b.GetUpperBound())), perMinute(float64(b.GetCumulativeCount())))
				}
				series(name+"_bucket", with(l, "le", "+Inf"), perMinute(float64(h.GetSampleCount())))
			}
		}
	}
	var exp strings.Builder
	for _, f := range expected {
		l := map[string]string{"alertname": f.Alert, "alertstate": "firing", "severity": severity[f.Alert]}
		for k, v := range f.Labels {
			if v != "" {
				l[k] = v
			}
		}
		var parts []string
		for k, v := range l {
			parts = append(parts, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(parts)
		js, _ := json.Marshal("ALERTS{" + strings.Join(parts, ", ") + "}")
		fmt.Fprintf(&exp, "          - labels: %s\n            value: 1\n", js)
	}
	return fmt.Sprintf(`rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
%s    promql_expr_test:
      - expr: 'ALERTS{alertstate="firing", severity!="none"}'
        eval_time: %dm
        exp_samples:
%s`, in.String(), minutes, exp.String())
}
