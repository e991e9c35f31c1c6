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

// writeRules renders the bundled rules with params into dir and returns
// the file's path.
func writeRules(t *testing.T, dir string, params alerts.Params) string {
	t.Helper()
	rules, err := alerts.Render(params)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(path, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
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

// promChain is the whole alerting chain, for real, in one world: the exporter
// in the hypervisor namespace, Prometheus scraping it with the bundled
// rules, Alertmanager with the example configuration, and a webhook
// receiver that records every notification.
type promChain struct {
	*world
	params alerts.Params
	hook   *webhook
	am     *promstack.Process
	prom   *promstack.Process
}

// startPromChain starts the chain over fleet, its host's compute service UP.
// A per-host exporter reads its compute service's state with full listings
// only, every fullRefresh.
func startPromChain(t *testing.T, fleet []vm, fullRefresh time.Duration) *promChain {
	t.Helper()
	c := &promChain{world: newWorld(t, fleet)}
	ctx := context.Background()
	if err := c.cloud.SetComputeService(ctx, hvHost, "UP"); err != nil {
		t.Fatal(err)
	}
	c.net.SetDelay(80 * time.Millisecond)

	// Rules rendered with the documented test overrides.
	var err error
	if c.params, err = alerts.LoadParams("testdata/alerts-params.yaml"); err != nil {
		t.Fatal(err)
	}
	rulesFile := writeRules(t, c.dir, c.params)

	c.hook = startWebhook(t, c.net)
	stack := promstack.New(promstack.Options{Dir: c.dir, Prefix: c.net.ExecPrefix(), Client: c.client})
	t.Cleanup(stack.Close)
	if c.am, err = stack.StartAlertmanager(ctx, "127.0.0.1:19093", alertmanagerConfig(t, c.hook.addr)); err != nil {
		t.Fatal(err)
	}
	// Scraped as deploy/prometheus/prometheus.yml advises for a hypervisor's
	// exporter: with the host target label and honor_labels.
	if c.prom, err = stack.StartPrometheus(ctx, "127.0.0.1:19090",
		promstack.HostPrometheusConfig(2*time.Second, "openstack-vm-exporter", "127.0.0.1:19735", hvHost, rulesFile, "127.0.0.1:19093")); err != nil {
		t.Fatal(err)
	}
	c.startExporter(t, `openstack:
  scope: host
  host: `+hvHost+`
  refresh_interval: 3s
  full_refresh_interval: `+fullRefresh.String()+`
  timeout: 2m
probe:
  icmp:
    interval: 2s
    count: 3
    timeout: 500ms
    vantage: host
`, c.cloud.AdminEnv())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("delivered: %v", c.hook.delivered())
			t.Logf("prometheus log:\n%s\nalertmanager log:\n%s", c.prom.Log(), c.am.Log())
		}
	})
	return c
}

// waitDelivered waits until every notification of want ("receiver status
// alertname id-or-host") has been delivered.
func (c *promChain) waitDelivered(t *testing.T, d time.Duration, what string, want ...string) {
	t.Helper()
	waitFor(t, d, what, func() string {
		got := map[string]bool{}
		for _, line := range c.hook.delivered() {
			got[line] = true
		}
		for _, r := range want {
			if !got[r] {
				return "missing " + c.named(r)
			}
		}
		return ""
	})
}

// waitAnsweredBefore waits until Prometheus's own history records that the
// addresses matched by re answered, as n addresses: the host-wide rules
// count only servers that did.
func (c *promChain) waitAnsweredBefore(t *testing.T, re string, n int) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d addresses %s \"answered before\" in Prometheus", n, re), func() string {
		got, err := promstack.Query(c.client, c.prom.URL, `openstack_vm_address:icmp_answered:history{address=~"`+re+`"} == 1`)
		if err != nil || got != n {
			return fmt.Sprintf("%d addresses (%v)", got, err)
		}
		return ""
	})
}

// deliveredTimes counts the deliveries of one notification.
func (c *promChain) deliveredTimes(what string) int {
	n := 0
	for _, d := range c.hook.delivered() {
		if d == what {
			n++
		}
	}
	return n
}

// checkDeliveries checks the whole test's deliveries, once its last one is
// due: each was allowed, each was a notification, and each alert carried
// its runbook, severity and labels.
func (c *promChain) checkDeliveries(t *testing.T, allowed map[string]bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, d := range c.hook.delivered() {
		if !allowed[d] && !seen[d] {
			t.Errorf("unexpected notification: %s", c.named(d))
		}
		seen[d] = true
	}
	c.hook.mu.Lock()
	defer c.hook.mu.Unlock()
	for _, b := range c.hook.bad {
		t.Errorf("a webhook body that is not a notification: %.500s", b)
	}
	for _, n := range c.hook.got {
		for _, a := range n.Alerts {
			name := a.Labels["alertname"]
			if a.Annotations["runbook_url"] != c.params.RunbookBaseURL+"/"+name+".md" || a.Labels["severity"] == "" {
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

// heartbeat is Alertmanager's dead man's switch, on its own receiver (its
// path): delivered in every chain.
const heartbeat = "heartbeat firing Watchdog "

// TestAlertChain: a fleet's standing issues, faults made mid-run in Nova
// and on the network, a host-wide network fault and the repairs, each
// delivered to the receiver it is routed to, or held back.
func TestAlertChain(t *testing.T) {
	t.Parallel() // each test has its own namespaces, cloud and ports
	c := startPromChain(t, chainFleet, 30*time.Second)
	ctx := context.Background()

	// What Alertmanager may deliver in the whole test, "receiver status
	// alertname id-or-host": the required ones must all come, nothing else
	// may (checked at the end, over every delivery). Nothing at all for the
	// healthy servers, no firing per-server alert of b, c, d (inhibited by
	// the host-wide page), no exporter or compute-host alert.
	required := []string{
		"ticket firing OpenStackVMInError " + c.ids["broken"],
		"ticket firing OpenStackVMInError " + c.ids["later-broken"],
		"ticket resolved OpenStackVMInError " + c.ids["later-broken"],
		"ticket firing OpenStackVMStuckInTaskState " + c.ids["will-stick"],
		"ticket firing OpenStackVMUnreachable " + c.ids["a"],
		"ticket resolved OpenStackVMUnreachable " + c.ids["a"],
		"ticket firing OpenStackVMPacketLoss " + c.ids["lossy"],
		"ticket firing OpenStackVMHighLatency " + c.ids["slow"],
		"pager firing OpenStackHostVMsUnreachable " + hvHost,
		"pager resolved OpenStackHostVMsUnreachable " + hvHost,
		heartbeat,
	}
	allowed := map[string]bool{
		// The group of a's alert also carries b, c and d: when they
		// recover, Alertmanager may tell the receiver they are resolved
		// (it never saw them fire; that is harmless).
		"ticket resolved OpenStackVMUnreachable " + c.ids["b"]: true,
		"ticket resolved OpenStackVMUnreachable " + c.ids["c"]: true,
		"ticket resolved OpenStackVMUnreachable " + c.ids["d"]: true,
		// 50% random loss, measured over 30 requests, dips under 20% about
		// once in a thousand windows: a true flap, not a false alert.
		"ticket resolved OpenStackVMPacketLoss " + c.ids["lossy"]: true,
	}
	for _, r := range required {
		allowed[r] = true
	}

	// Phase 1: the fleet's standing issues open tickets; healthy servers
	// page nobody. The addresses taken down below must have answered
	// before, in Prometheus's own history.
	c.waitDelivered(t, 90*time.Second, "standing issues delivered", required[0])
	c.waitAnsweredBefore(t, `198\\.18\\.0\\.[1-4]`, 4)

	// Phase 2: faults made mid-run, in Nova and on the network.
	errState, task := "error", "migrating"
	if err := c.cloud.Update(ctx, map[string]openstacklab.Update{
		c.ids["later-broken"]: {VMState: &errState},
		c.ids["will-stick"]:   {TaskState: &task, UpdatedAt: time.Now().Add(-2 * time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.net.Remove(netip.MustParseAddr("198.18.0.1")); err != nil {
		t.Fatal(err)
	}
	c.waitDelivered(t, 90*time.Second, "per-server alerts delivered",
		"ticket firing OpenStackVMInError "+c.ids["later-broken"],
		"ticket firing OpenStackVMStuckInTaskState "+c.ids["will-stick"],
		"ticket firing OpenStackVMUnreachable "+c.ids["a"],
		"ticket firing OpenStackVMPacketLoss "+c.ids["lossy"],
		"ticket firing OpenStackVMHighLatency "+c.ids["slow"])

	// Phase 3: the host's network fails for most servers: one critical
	// page for the host, and every per-server reachability alert of the
	// host held back by Alertmanager.
	// At once, as a failed uplink does: removed one by one (an ip command
	// each, seconds apart on a loaded machine), the first one's own alert
	// (unreachable_for) could fire before the later ones made up the
	// host-wide share (host_unreachable_for), and was rightly delivered.
	if err := c.net.Remove(netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"),
		netip.MustParseAddr("198.18.0.4")); err != nil {
		t.Fatal(err)
	}
	c.waitDelivered(t, 60*time.Second, "host-wide page", "pager firing OpenStackHostVMsUnreachable "+hvHost)
	// The per-server alerts of b, c, d fire in Prometheus after
	// unreachable_for (12s); Alertmanager must hold back each of them, and
	// those of a, lossy and slow, which fired before.
	wantInhibited := []string{
		"OpenStackVMUnreachable " + c.ids["a"], "OpenStackVMUnreachable " + c.ids["b"],
		"OpenStackVMUnreachable " + c.ids["c"], "OpenStackVMUnreachable " + c.ids["d"],
		"OpenStackVMPacketLoss " + c.ids["lossy"], "OpenStackVMHighLatency " + c.ids["slow"],
	}
	c.waitInhibited(t, c.am.URL, "per-server reachability alerts of the host inhibited in Alertmanager", wantInhibited...)

	// The dashboards' queries all return data from this Prometheus.
	checkDashboards(t, c.client, c.prom.URL)

	// Phase 4: repairs resolve the alerts.
	// The host's network comes back for all four at once, as a repaired
	// uplink does. Restored one by one on a loaded machine, the last one
	// can still be down when the host-wide page resolves: its own alert is
	// then no longer held back and rightly delivered (a straggler after a
	// host-wide recovery is a server of its own to look at).
	if err := c.net.Restore(netlab.Answer, netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"),
		netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.4")); err != nil {
		t.Fatal(err)
	}
	active := "active"
	if err := c.cloud.Update(ctx, map[string]openstacklab.Update{c.ids["later-broken"]: {VMState: &active}}); err != nil {
		t.Fatal(err)
	}
	c.waitDelivered(t, 90*time.Second, "every expected notification delivered", required...)
	// A late notification would come within a few group intervals (2s).
	time.Sleep(6 * time.Second)
	if n := c.deliveredTimes("pager firing OpenStackHostVMsUnreachable " + hvHost); n != 1 {
		t.Errorf("the host-wide reachability page came %d times, want once", n)
	}
	c.checkDeliveries(t, allowed)
}

// TestAlertChainComputeService: the compute service's states, through the
// same chain. A fleet-wide outage of compute services pages once for the
// fleet, not for each host; a host in maintenance opens a ticket, and its
// servers going silent then pages nobody, nor their booting after it.
func TestAlertChainComputeService(t *testing.T) {
	t.Parallel()
	// a, b, c, d and healthy: all answer. Full listings often, as the
	// service states come with them.
	c := startPromChain(t, chainFleet[:5], 6*time.Second)
	ctx := context.Background()
	fleetPage := []string{"pager firing OpenStackComputeFleetDown ", "pager resolved OpenStackComputeFleetDown "}
	maintenance := []string{
		"ticket firing OpenStackComputeHostInMaintenance " + hvHost,
		"ticket resolved OpenStackComputeHostInMaintenance " + hvHost,
	}
	allowed := map[string]bool{heartbeat: true}
	for _, r := range append(fleetPage, maintenance...) {
		allowed[r] = true
	}
	c.waitAnsweredBefore(t, `198\\.18\\.0\\.[1-4]`, 4)

	// A fleet-level fault: every compute service of the fleet (here its
	// one host) goes DOWN at once, as in a message queue outage. One fleet
	// page; the host's own OpenStackComputeHostDown fires too, and is held
	// back by Alertmanager.
	if err := c.cloud.SetComputeService(ctx, hvHost, "DOWN"); err != nil {
		t.Fatal(err)
	}
	c.waitDelivered(t, 90*time.Second, "fleet-level page", fleetPage[0])
	c.waitInhibited(t, c.am.URL, "the host's page inhibited by the fleet's", "OpenStackComputeHostDown "+hvHost)
	// The fleet comes back. The host's own page resolves in Prometheus at
	// the same evaluation as the fleet condition ends, or at the next one
	// (a scrape can land between the two rules); the fleet page fires on
	// for fleet_keep_firing_for, so the host's page is never delivered.
	if err := c.cloud.SetComputeService(ctx, hvHost, "UP"); err != nil {
		t.Fatal(err)
	}
	c.waitDelivered(t, 90*time.Second, "fleet-level page resolved", fleetPage[1])

	// Planned work. An operator disables the host, then most of its
	// servers stop answering: OpenStackHostVMsUnreachable fires in
	// Prometheus, but the maintenance window holds its page back in
	// Alertmanager.
	if err := c.cloud.DisableComputeService(ctx, hvHost, "OPS-1234: kernel upgrade"); err != nil {
		t.Fatal(err)
	}
	c.waitDelivered(t, 90*time.Second, "maintenance ticket", maintenance[0])
	down := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"),
		netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.4")}
	for _, a := range down {
		if err := c.net.Remove(a); err != nil {
			t.Fatal(err)
		}
	}
	c.waitInhibited(t, c.am.URL, "the host-wide page held back by the maintenance", "OpenStackHostVMsUnreachable "+hvHost)
	// The host is enabled again before its servers answer, as after a
	// reboot: they boot. The host-wide alert still fires in Prometheus
	// once the maintenance is over; host_maintenance_grace holds its page
	// back until they answer.
	if err := c.cloud.SetComputeService(ctx, hvHost, "UP"); err != nil {
		t.Fatal(err)
	}
	c.waitDelivered(t, 90*time.Second, "maintenance over", maintenance[1])
	if n, err := promstack.Query(c.client, c.prom.URL, `ALERTS{alertname="OpenStackHostVMsUnreachable", alertstate="firing"}`); err != nil || n != 1 {
		t.Errorf("the host-wide alert as the maintenance ended: %d firing (%v), want 1", n, err)
	}
	if err := c.net.Restore(netlab.Answer, down...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the maintenance window closed, the host-wide alert resolved", func() string {
		n, err := promstack.Query(c.client, c.prom.URL, `ALERTS{alertname=~"OpenStackComputeHostMaintenanceWindow|OpenStackHostVMsUnreachable"}`)
		if err != nil || n != 0 {
			return fmt.Sprintf("%d still firing or pending (%v)", n, err)
		}
		return ""
	})
	// A late notification would come within a few group intervals (2s).
	time.Sleep(6 * time.Second)
	c.checkDeliveries(t, allowed)
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
