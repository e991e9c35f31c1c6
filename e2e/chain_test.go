//go:build lab

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/dashboards"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/promstack"
)

// notification is what Alertmanager posts to a webhook.
type notification struct {
	Receiver string `json:"receiver"`
	Status   string `json:"status"`
	Alerts   []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
}

// webhook records every notification of the whole test; it listens in the
// hypervisor namespace, where Alertmanager runs.
type webhook struct {
	mu   sync.Mutex
	got  []notification
	bad  []string // bodies that were not a notification
	addr string
}

func startWebhook(t *testing.T, lab *netlab.Lab) *webhook {
	t.Helper()
	w := &webhook{}
	var l net.Listener
	if err := lab.Do(func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	w.addr = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var n notification
		b, _ := io.ReadAll(r.Body)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err := json.Unmarshal(b, &n); err != nil {
			w.bad = append(w.bad, string(b))
			return
		}
		n.Receiver = strings.TrimPrefix(r.URL.Path, "/")
		w.got = append(w.got, n)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return w
}

// delivered lists "receiver status alertname key" for every alert delivered.
func (w *webhook) delivered() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, n := range w.got {
		for _, a := range n.Alerts {
			key := a.Labels["id"]
			if key == "" {
				key = a.Labels["host"]
			}
			out = append(out, fmt.Sprintf("%s %s %s %s", n.Receiver, a.Status, a.Labels["alertname"], key))
		}
	}
	return out
}

// alertmanagerConfig is the shipped example with its webhooks pointed at the
// test's receiver and its waits shortened (the documented test override).
func alertmanagerConfig(t *testing.T, hook string) string {
	t.Helper()
	b, err := os.ReadFile("../alerts/alertmanager.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	route := cfg["route"].(map[string]any)
	route["group_wait"], route["group_interval"], route["repeat_interval"] = "1s", "2s", "1h"
	for _, r := range route["routes"].([]any) {
		rm := r.(map[string]any)
		if _, ok := rm["group_wait"]; ok {
			rm["group_wait"] = "1s"
		}
	}
	for _, r := range cfg["receivers"].([]any) {
		rm := r.(map[string]any)
		for _, wc := range asList(rm["webhook_configs"]) {
			wm := wc.(map[string]any)
			u, _ := url.Parse(wm["url"].(string))
			wm["url"] = "http://" + hook + u.Path
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

var chainFleet = []vm{
	{name: "a", host: hvHost, vmState: "active", power: 1, addr: "198.18.0.1", behaviour: netlab.Answer},
	{name: "b", host: hvHost, vmState: "active", power: 1, addr: "198.18.0.2", behaviour: netlab.Answer},
	{name: "c", host: hvHost, vmState: "active", power: 1, addr: "198.18.0.3", behaviour: netlab.Answer},
	{name: "d", host: hvHost, vmState: "active", power: 1, addr: "198.18.0.4", behaviour: netlab.Answer},
	{name: "healthy", host: hvHost, vmState: "active", power: 1, addr: "198.18.0.5", behaviour: netlab.Answer},
	{name: "lossy", host: hvHost, vmState: "active", power: 1, addr: "198.18.1.1", behaviour: netlab.Lossy},
	{name: "slow", host: hvHost, vmState: "active", power: 1, addr: "198.18.2.1", behaviour: netlab.Slow},
	{name: "broken", host: hvHost, vmState: "error", power: 4, updated: 3 * time.Hour},
	{name: "later-broken", host: hvHost, vmState: "active", power: 1, updated: 3 * time.Hour},
	{name: "will-stick", host: hvHost, vmState: "active", power: 1, updated: 3 * time.Hour},
}

// TestAlertChain runs the whole chain for real: the exporter in the
// hypervisor namespace, Prometheus scraping it with the bundled rules,
// Alertmanager with the example configuration, and a webhook receiver.
func TestAlertChain(t *testing.T) {
	t.Parallel() // each test has its own namespaces, cloud and ports
	w := newWorld(t, chainFleet)
	ctx := context.Background()
	if err := w.cloud.SetComputeService(ctx, hvHost, "UP"); err != nil {
		t.Fatal(err)
	}
	w.net.SetDelay(80 * time.Millisecond)

	// Rules rendered with the documented test overrides.
	params, err := alerts.LoadParams("testdata/alerts-params.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := alerts.Render(params)
	if err != nil {
		t.Fatal(err)
	}
	rulesFile := filepath.Join(w.dir, "rules.yml")
	if err := os.WriteFile(rulesFile, rules, 0o644); err != nil {
		t.Fatal(err)
	}

	hook := startWebhook(t, w.net)
	stack := promstack.New(promstack.Options{Dir: w.dir, Prefix: w.net.ExecPrefix(), Client: w.client})
	t.Cleanup(stack.Close)
	am, err := stack.StartAlertmanager(ctx, "127.0.0.1:19093", alertmanagerConfig(t, hook.addr))
	if err != nil {
		t.Fatal(err)
	}
	// Scraped as deploy/prometheus/prometheus.yml advises for a hypervisor's
	// exporter: with the host target label and honor_labels.
	prom, err := stack.StartPrometheus(ctx, "127.0.0.1:19090",
		promstack.HostPrometheusConfig(2*time.Second, "openstack-vm-exporter", "127.0.0.1:19735", hvHost, rulesFile, "127.0.0.1:19093"))
	if err != nil {
		t.Fatal(err)
	}
	w.startExporter(t, `openstack:
  scope: host
  host: `+hvHost+`
  refresh_interval: 3s
  full_refresh_interval: 30s
  timeout: 2m
probe:
  icmp:
    interval: 2s
    count: 3
    timeout: 500ms
    vantage: host
`, w.cloud.AdminEnv())
	defer func() {
		if t.Failed() {
			t.Logf("delivered: %v", hook.delivered())
			t.Logf("prometheus log:\n%s\nalertmanager log:\n%s", prom.Log(), am.Log())
		}
	}()

	// What Alertmanager may deliver in the whole test, "receiver status
	// alertname id-or-host": the required ones must all come, nothing else
	// may (checked at the end, over every delivery). Nothing at all for the
	// healthy servers, no firing per-server alert of b, c, d (inhibited by
	// the host-wide page), no exporter or compute-host alert.
	required := []string{
		"ticket firing OpenStackVMInError " + w.ids["broken"],
		"ticket firing OpenStackVMInError " + w.ids["later-broken"],
		"ticket resolved OpenStackVMInError " + w.ids["later-broken"],
		"ticket firing OpenStackVMStuckInTaskState " + w.ids["will-stick"],
		"ticket firing OpenStackVMUnreachable " + w.ids["a"],
		"ticket resolved OpenStackVMUnreachable " + w.ids["a"],
		"ticket firing OpenStackVMPacketLoss " + w.ids["lossy"],
		"ticket firing OpenStackVMHighLatency " + w.ids["slow"],
		"pager firing OpenStackHostVMsUnreachable " + hvHost,
		"pager resolved OpenStackHostVMsUnreachable " + hvHost,
		// Alertmanager's dead man's switch, on its own receiver (its path).
		"heartbeat firing Watchdog ",
	}
	// Phase 5's: the fleet-level page, and nothing for the host itself.
	fleetRequired := []string{
		"pager firing OpenStackComputeFleetDown ",
		"pager resolved OpenStackComputeFleetDown ",
	}
	// Phase 6's: the maintenance ticket, and no second host-wide page.
	maintenanceRequired := []string{
		"ticket firing OpenStackComputeHostInMaintenance " + hvHost,
		"ticket resolved OpenStackComputeHostInMaintenance " + hvHost,
	}
	allowed := map[string]bool{
		// The group of a's alert also carries b, c and d: when they
		// recover, Alertmanager may tell the receiver they are resolved
		// (it never saw them fire; that is harmless).
		"ticket resolved OpenStackVMUnreachable " + w.ids["b"]: true,
		"ticket resolved OpenStackVMUnreachable " + w.ids["c"]: true,
		"ticket resolved OpenStackVMUnreachable " + w.ids["d"]: true,
		// 50% random loss, measured over 30 requests, dips under 20% about
		// once in a thousand windows: a true flap, not a false alert.
		"ticket resolved OpenStackVMPacketLoss " + w.ids["lossy"]: true,
	}
	for _, r := range append(append(required, fleetRequired...), maintenanceRequired...) {
		allowed[r] = true
	}
	waitDelivered := func(d time.Duration, what string, want ...string) {
		t.Helper()
		waitFor(t, d, what, func() string {
			got := map[string]bool{}
			for _, line := range hook.delivered() {
				got[line] = true
			}
			for _, r := range want {
				if !got[r] {
					return "missing " + w.named(r)
				}
			}
			return ""
		})
	}

	// Phase 1: the fleet's standing issues open tickets; healthy servers
	// page nobody.
	waitDelivered(90*time.Second, "standing issues delivered", required[0])
	// The addresses taken down below must have answered before, in
	// Prometheus's own history: wait until its rules recorded that.
	waitFor(t, 60*time.Second, `a, b, c and d "answered before" in Prometheus`, func() string {
		n, err := promstack.Query(w.client, "http://127.0.0.1:19090", `openstack_vm_address:icmp_answered:history{address=~"198\\.18\\.0\\.[1-4]"} == 1`)
		if err != nil || n != 4 {
			return fmt.Sprintf("%d addresses (%v)", n, err)
		}
		return ""
	})

	// Phase 2: faults made mid-run, in Nova and on the network.
	errState, task := "error", "migrating"
	if err := w.cloud.Update(ctx, map[string]openstacklab.Update{
		w.ids["later-broken"]: {VMState: &errState},
		w.ids["will-stick"]:   {TaskState: &task, UpdatedAt: time.Now().Add(-2 * time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.net.Remove(netip.MustParseAddr("198.18.0.1")); err != nil {
		t.Fatal(err)
	}
	waitDelivered(90*time.Second, "per-server alerts delivered",
		"ticket firing OpenStackVMInError "+w.ids["later-broken"],
		"ticket firing OpenStackVMStuckInTaskState "+w.ids["will-stick"],
		"ticket firing OpenStackVMUnreachable "+w.ids["a"],
		"ticket firing OpenStackVMPacketLoss "+w.ids["lossy"],
		"ticket firing OpenStackVMHighLatency "+w.ids["slow"])

	// Phase 3: the host's network fails for most servers: one critical
	// page for the host, and every per-server reachability alert of the
	// host held back by Alertmanager.
	for _, a := range []string{"198.18.0.2", "198.18.0.3", "198.18.0.4"} {
		if err := w.net.Remove(netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	waitDelivered(60*time.Second, "host-wide page", "pager firing OpenStackHostVMsUnreachable "+hvHost)
	// The per-server alerts of b, c, d fire in Prometheus after
	// unreachable_for (12s); Alertmanager must hold back each of them, and
	// those of a, lossy and slow, which fired before.
	wantInhibited := []string{
		"OpenStackVMUnreachable " + w.ids["a"], "OpenStackVMUnreachable " + w.ids["b"],
		"OpenStackVMUnreachable " + w.ids["c"], "OpenStackVMUnreachable " + w.ids["d"],
		"OpenStackVMPacketLoss " + w.ids["lossy"], "OpenStackVMHighLatency " + w.ids["slow"],
	}
	w.waitInhibited(t, am.URL, "per-server reachability alerts of the host inhibited in Alertmanager", wantInhibited...)

	// The dashboards' queries all return data from this Prometheus.
	checkDashboards(t, w.client, prom.URL)

	// Phase 4: repairs resolve the alerts.
	// The host's network comes back for all four at once, as a repaired
	// uplink does. Restored one by one on a loaded machine, the last one
	// can still be down when the host-wide page resolves: its own alert is
	// then no longer held back and rightly delivered (a straggler after a
	// host-wide recovery is a server of its own to look at).
	if err := w.net.Restore(netlab.Answer, netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"),
		netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.4")); err != nil {
		t.Fatal(err)
	}
	active := "active"
	if err := w.cloud.Update(ctx, map[string]openstacklab.Update{w.ids["later-broken"]: {VMState: &active}}); err != nil {
		t.Fatal(err)
	}
	waitDelivered(90*time.Second, "every expected notification delivered", required...)

	// Phase 5: a fleet-level fault. Every compute service of the fleet
	// (here its one host) goes DOWN at once, as in a message queue outage:
	// one fleet page, and the host's own OpenStackComputeHostDown, which
	// fires too, held back by Alertmanager.
	if err := w.cloud.SetComputeService(ctx, hvHost, "DOWN"); err != nil {
		t.Fatal(err)
	}
	waitDelivered(90*time.Second, "fleet-level page", fleetRequired[0])
	w.waitInhibited(t, am.URL, "the host's page inhibited by the fleet's", "OpenStackComputeHostDown "+hvHost)
	if err := w.cloud.SetComputeService(ctx, hvHost, "UP"); err != nil {
		t.Fatal(err)
	}
	waitDelivered(90*time.Second, "fleet-level page resolved", fleetRequired[1])

	// Phase 6: planned work. The host is disabled (MAINTENANCE), then most
	// of its servers stop answering: OpenStackHostVMsUnreachable fires in
	// Prometheus, but the maintenance holds its page back in Alertmanager.
	if err := w.cloud.SetComputeService(ctx, hvHost, "MAINTENANCE"); err != nil {
		t.Fatal(err)
	}
	waitDelivered(90*time.Second, "maintenance ticket", maintenanceRequired[0])
	for _, a := range []string{"198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"} {
		if err := w.net.Remove(netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	w.waitInhibited(t, am.URL, "the host-wide page held back by the maintenance", "OpenStackHostVMsUnreachable "+hvHost)
	for _, a := range []string{"198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"} {
		if err := w.net.Restore(netlab.Answer, netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.cloud.SetComputeService(ctx, hvHost, "UP"); err != nil {
		t.Fatal(err)
	}
	waitDelivered(90*time.Second, "maintenance over", maintenanceRequired[1])
	// A late notification would come within a few group intervals (2s).
	time.Sleep(6 * time.Second)
	pages := 0
	for _, d := range hook.delivered() {
		if d == "pager firing OpenStackHostVMsUnreachable "+hvHost {
			pages++
		}
	}
	if pages != 1 {
		t.Errorf("the host-wide reachability page came %d times, want once (phase 3; not in maintenance)", pages)
	}

	// Every delivery of the whole test was expected.
	seen := map[string]bool{}
	for _, d := range hook.delivered() {
		if !allowed[d] && !seen[d] {
			t.Errorf("unexpected notification: %s", w.named(d))
		}
		seen[d] = true
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	for _, b := range hook.bad {
		t.Errorf("a webhook body that is not a notification: %.500s", b)
	}
	// Every delivered alert carried its runbook, severity and labels.
	for _, n := range hook.got {
		for _, a := range n.Alerts {
			name := a.Labels["alertname"]
			if a.Annotations["runbook_url"] != params.RunbookBaseURL+"/"+name+".md" || a.Labels["severity"] == "" {
				t.Errorf("%s delivered without its runbook or severity: %v %v", name, a.Labels, a.Annotations)
			}
			if strings.HasPrefix(name, "OpenStackVM") && !strings.HasPrefix(name, "OpenStackVMExporter") &&
				(a.Labels["id"] == "" || a.Labels["name"] == "" || a.Labels["host"] != hvHost || a.Labels["project_id"] == "") {
				t.Errorf("%s delivered without the server's labels: %v", name, a.Labels)
			}
			if _, ok := a.Labels["exported_host"]; ok {
				t.Errorf("%s delivered with exported_host: the scrape renamed the servers' host label: %v", name, a.Labels)
			}
		}
	}
}

// waitInhibited waits until Alertmanager at amURL holds back every alert
// of want ("alertname id-or-host") because another alert inhibits it.
func (w *world) waitInhibited(t *testing.T, amURL, what string, want ...string) {
	t.Helper()
	waitFor(t, 60*time.Second, what, func() string {
		inhibited, err := inhibitedByKey(w.client, amURL)
		if err != nil {
			return err.Error()
		}
		var missing []string
		for _, k := range want {
			if !inhibited[k] {
				missing = append(missing, w.named(k))
			}
		}
		if len(missing) > 0 {
			return fmt.Sprintf("not inhibited: %v", missing)
		}
		return ""
	})
}

// named replaces the server ids in s by the test's server names.
func (w *world) named(s string) string {
	for name, id := range w.ids {
		s = strings.ReplaceAll(s, id, name)
	}
	return s
}

// emptyHere are the dashboard queries this world cannot give data, and why.
// The rest must: a query of the form `expr or on () (0 * base)` needs data
// from expr itself, not only from its fallback to 0.
var emptyHere = map[string]string{
	`"Compute hosts down" target A`:       "the host stays UP: a DOWN host would inhibit the alerts this test checks",
	`"Compute hosts not UP" target A`:     "the host stays UP",
	`"Exporters down" target A`:           "the one exporter is up",
	`"Refresh failing" target A`:          "every refresh succeeds",
	`"Stale inventories" target A`:        "the inventory is fresh",
	`"Host unknown to Nova" target A`:     "Nova knows the host",
	`"Addresses losing packets" target B`: "the lossy server loses 50%, above the threshold; no server loses less",
}

func checkDashboards(t *testing.T, client *http.Client, promURL string) {
	t.Helper()
	ds, err := dashboards.Load()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"job": "openstack-vm-exporter", "host": hvHost, "project": ".*", "vm": ".*"}
	var empty []string
	exempted := map[string]bool{}
	for _, d := range ds {
		for _, q := range d.Queries(vars) {
			exempt := ""
			for where := range emptyHere {
				if strings.HasSuffix(q.Where, where) {
					exempt = where
				}
			}
			exprs := map[string]string{"": q.Expr}
			if expr, base, ok := dashboards.Fallback(q.Expr); ok {
				exprs[""], exprs[" (its fallback's base)"] = expr, base
			}
			for part, expr := range exprs {
				n, err := promstack.Query(client, promURL, expr)
				switch {
				case err != nil:
					t.Errorf("%s%s: %v\n%s", q.Where, part, err, expr)
				case part == "" && exempt != "":
					exempted[exempt] = true
				case n == 0:
					empty = append(empty, q.Where+part)
				}
			}
		}
	}
	if len(empty) > 0 {
		sort.Strings(empty)
		t.Errorf("dashboard queries without data:\n%s", strings.Join(empty, "\n"))
	}
	for where := range emptyHere {
		if !exempted[where] {
			t.Errorf("no dashboard query ends in %s: update emptyHere", where)
		}
	}
}
