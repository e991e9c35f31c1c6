//go:build lab

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/dashboards"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/promstack"
)

// Two hypervisors, each with its own exporter. Scraped by two vmagents
// sharding by hash of the host label, hv-a and hv-b fall on different
// shards (the test checks it).
const (
	hostA, hostB         = "hv-a", "hv-b"
	exporterA, exporterB = "127.0.0.1:19735", "127.0.0.1:19736"
)

var shardedFleet = []vm{
	{name: "a", host: hostA, vmState: "active", power: 1, addr: "198.18.0.1", behaviour: netlab.Answer},
	{name: "b", host: hostA, vmState: "active", power: 1, addr: "198.18.0.2", behaviour: netlab.Answer},
	{name: "c", host: hostA, vmState: "active", power: 1, addr: "198.18.0.3", behaviour: netlab.Answer},
	{name: "d", host: hostA, vmState: "active", power: 1, addr: "198.18.0.4", behaviour: netlab.Answer},
	{name: "broken", host: hostA, vmState: "error", power: 4, updated: 3 * time.Hour},
	{name: "e", host: hostB, vmState: "active", power: 1, addr: "198.18.0.5", behaviour: netlab.Answer},
	{name: "slow", host: hostB, vmState: "active", power: 1, addr: "198.18.2.1", behaviour: netlab.Slow},
}

// chain is one rule evaluator and the Alertmanager it sends to.
type chain struct {
	name  string
	query string // a Prometheus-compatible query API holding the rules' results
	am    *promstack.Process
	hook  *webhook
	logs  func() string
}

// TestShardedChain runs the bundled rules on a sharded, remote-write
// backend built from Debian's packages: two vmagents, each scraping the
// exporters whose host hashes to it, remote-write into one VictoriaMetrics;
// vmalert evaluates the rules over the whole fleet's data and sends to
// Alertmanager with the example configuration. Beside it, on the same
// exporters and the same faults at the same moments, the single-Prometheus
// chain of TestAlertChain. Both must deliver the pages and tickets the
// faults call for, nothing else, and hold back the same alerts.
//
// The faults are those of docs/scaling.md: a server in ERROR, a slow
// server, a server that stops answering, then most of hv-a's servers (one
// host-wide page)
// and, at the same moment, hv-b's exporter killed with its servers last
// seen ACTIVE (the rules that join up with the last-seen servers of a
// host, across exporters).
func TestShardedChain(t *testing.T) {
	t.Parallel() // its own namespaces, cloud and ports
	start := time.Now()
	phase := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }
	w := newWorld(t, shardedFleet)
	phase("lab and cloud up")
	ctx := context.Background()
	for _, h := range []string{hostA, hostB} {
		if err := w.cloud.SetComputeService(ctx, h, "UP"); err != nil {
			t.Fatal(err)
		}
	}
	w.net.SetDelay(80 * time.Millisecond)
	hostOf := map[string]string{}
	for _, v := range shardedFleet {
		hostOf[w.ids[v.name]] = v.host
	}

	params, err := alerts.LoadParams("testdata/alerts-params.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Shorter still than TestAlertChain's: the faults here are clear-cut
	// (no random loss to ride out), and each for: still spans three
	// evaluations or more.
	params.UnreachableFor, params.LatencyFor, params.ExporterDownFor = "6s", "6s", "6s"
	// Two hosts are no fleet: here one host's outage and one dead exporter
	// page per host (TestAlertChain covers the fleet-level pages).
	params.FleetMinHosts, params.FleetMinExporters = 3, 3
	rulesFile := writeRules(t, w.dir, params)
	const interval = 2 * time.Second
	const job = "openstack-vm-exporter"
	exporters := map[string]string{hostA: exporterA, hostB: exporterB}

	// The exporters first: their first inventory and probes overlap the
	// start of both chains.
	exporterConfig := func(host string) string {
		return `openstack:
  scope: host
  host: ` + host + `
  refresh_interval: 3s
  full_refresh_interval: 30s
  timeout: 20s
probe:
  icmp:
    interval: 2s
    count: 3
    timeout: 500ms
    vantage: host
`
	}
	w.startExporterAt(t, exporterA, "exporter-a.yaml", exporterConfig(hostA), w.cloud.AdminEnv())
	deadB := w.startExporterAt(t, exporterB, "exporter-b.yaml", exporterConfig(hostB), w.cloud.AdminEnv())

	var chains []*chain
	defer func() {
		if t.Failed() {
			for _, c := range chains {
				t.Logf("%s chain: delivered %v\n%s", c.name, w.named(strings.Join(c.hook.delivered(), "; ")), c.logs())
			}
		}
	}()

	// The single Prometheus, as in TestAlertChain.
	single := promstack.New(promstack.Options{Dir: filepath.Join(w.dir, "single"), Prefix: w.net.ExecPrefix(), Client: w.client})
	t.Cleanup(single.Close)
	singleHook := startWebhook(t, w.net)
	singleAM, err := single.StartAlertmanager(ctx, "127.0.0.1:19093", shardedAlertmanagerConfig(t, singleHook.addr))
	if err != nil {
		t.Fatal(err)
	}
	prom, err := single.StartPrometheus(ctx, "127.0.0.1:19090",
		promstack.FleetPrometheusConfig(interval, job, exporters, rulesFile, "127.0.0.1:19093"))
	if err != nil {
		t.Fatal(err)
	}
	chains = append(chains, &chain{name: "single Prometheus", query: prom.URL, am: singleAM, hook: singleHook,
		logs: func() string { return "prometheus:\n" + prom.Log() + "\nalertmanager:\n" + singleAM.Log() }})

	// The sharded layout.
	sharded := promstack.New(promstack.Options{Dir: filepath.Join(w.dir, "sharded"), Prefix: w.net.ExecPrefix(), Client: w.client})
	t.Cleanup(sharded.Close)
	shardedHook := startWebhook(t, w.net)
	shardedAM, err := sharded.StartAlertmanager(ctx, "127.0.0.1:19193", shardedAlertmanagerConfig(t, shardedHook.addr))
	if err != nil {
		t.Fatal(err)
	}
	vmdb, err := sharded.StartVictoriaMetrics(ctx, "127.0.0.1:18428")
	if err != nil {
		t.Fatal(err)
	}
	var agents []*promstack.Process
	for shard := 0; shard < 2; shard++ {
		a, err := sharded.StartVMAgent(ctx, fmt.Sprintf("vmagent-%d", shard), fmt.Sprintf("127.0.0.1:%d", 18430+shard),
			promstack.ShardScrapeConfig(interval, job, shard, 2, exporters), vmdb.URL+"/api/v1/write")
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	vmalert, err := sharded.StartVMAlert(ctx, "127.0.0.1:18880", rulesFile, vmdb.URL, shardedAM.URL, interval)
	if err != nil {
		t.Fatal(err)
	}
	chains = append(chains, &chain{name: "sharded vmagent+VictoriaMetrics+vmalert", query: vmdb.URL, am: shardedAM, hook: shardedHook,
		logs: func() string {
			s := "vmalert:\n" + vmalert.Log() + "\nvictoria-metrics:\n" + vmdb.Log() + "\nalertmanager:\n" + shardedAM.Log()
			for _, a := range agents {
				s += "\n" + a.Name + ":\n" + a.Log()
			}
			return s
		}})

	phase("both chains and exporters started")
	// Each vmagent scrapes one of the two exporters: the sharding is real.
	waitFor(t, 30*time.Second, "each vmagent scraping one host", func() string {
		var got []string
		for _, a := range agents {
			hosts, err := scrapedHosts(w.client, a.URL)
			if err != nil {
				return err.Error()
			}
			got = append(got, strings.Join(hosts, ","))
		}
		sort.Strings(got)
		if strings.Join(got, " ") != hostA+" "+hostB {
			return fmt.Sprintf("shards scrape %q", got)
		}
		return ""
	})

	// What may be delivered in the whole test, as in TestAlertChain.
	hostUnwatched := "pager firing OpenStackComputeHostUnwatched " + hostB
	required := []string{
		"ticket firing OpenStackVMInError " + w.ids["broken"],
		"ticket firing OpenStackVMHighLatency " + w.ids["slow"],
		"ticket firing OpenStackVMUnreachable " + w.ids["a"],
		"ticket resolved OpenStackVMUnreachable " + w.ids["a"],
		"pager firing OpenStackHostVMsUnreachable " + hostA,
		"pager resolved OpenStackHostVMsUnreachable " + hostA,
		hostUnwatched,
		// The always-firing Watchdog reaches the dead man's switch.
		"heartbeat firing Watchdog ",
	}
	allowed := map[string]bool{
		// Group mates of a's alert (see TestAlertChain).
		"ticket resolved OpenStackVMUnreachable " + w.ids["b"]: true,
		"ticket resolved OpenStackVMUnreachable " + w.ids["c"]: true,
		"ticket resolved OpenStackVMUnreachable " + w.ids["d"]: true,
		// slow's latency alert ends when its exporter dies, once the rate
		// window has no samples left; whether before the test ends
		// depends on the window.
		"ticket resolved OpenStackVMHighLatency " + w.ids["slow"]: true,
	}
	for _, r := range required {
		allowed[r] = true
	}
	waitDelivered := func(d time.Duration, what string, want ...string) {
		t.Helper()
		waitFor(t, d, what, func() string {
			for _, c := range chains {
				got := map[string]bool{}
				for _, line := range c.hook.delivered() {
					got[line] = true
				}
				for _, r := range want {
					if !got[r] {
						return c.name + ": missing " + w.named(r)
					}
				}
			}
			return ""
		})
	}

	// Phase 1: every address has answered, in both backends' view (the
	// recording rules' "answered before"); the standing issues open
	// tickets.
	ready := map[string]bool{}
	waitFor(t, 90*time.Second, "every address answered before, in both chains", func() string {
		for _, c := range chains {
			if ready[c.name] {
				continue
			}
			n, err := promstack.Query(w.client, c.query, `openstack_vm_address:icmp_answered:history == 1`)
			if err != nil {
				return c.name + ": " + err.Error()
			}
			if n != 6 {
				return fmt.Sprintf("%s: %d of 6 addresses", c.name, n)
			}
			ready[c.name] = true
			phase(c.name + ": every address answered")
		}
		return ""
	})

	phase("every address answered, in both chains")
	// Phase 2: one server stops answering.
	if err := w.net.Remove(netip.MustParseAddr("198.18.0.1")); err != nil {
		t.Fatal(err)
	}
	waitDelivered(90*time.Second, "per-server alerts delivered",
		"ticket firing OpenStackVMInError "+w.ids["broken"],
		"ticket firing OpenStackVMHighLatency "+w.ids["slow"],
		"ticket firing OpenStackVMUnreachable "+w.ids["a"])

	phase("per-server alerts delivered")
	// Phase 3: hv-a's network fails for most servers, and hv-b dies with
	// its exporter.
	// At once, as a failed uplink does: removed one by one (an ip command
	// each, seconds apart on a loaded machine), the first one's own alert
	// (unreachable_for) could fire before the later ones made up the
	// host-wide share (host_unreachable_for), and was rightly delivered.
	if err := w.net.Remove(netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"),
		netip.MustParseAddr("198.18.0.4")); err != nil {
		t.Fatal(err)
	}
	deadB.kill()
	waitDelivered(90*time.Second, "host-wide pages", "pager firing OpenStackHostVMsUnreachable "+hostA, hostUnwatched)
	wantInhibited := []string{
		"OpenStackVMUnreachable " + w.ids["a"], "OpenStackVMUnreachable " + w.ids["b"],
		"OpenStackVMUnreachable " + w.ids["c"], "OpenStackVMUnreachable " + w.ids["d"],
		"OpenStackVMExporterDown " + hostB,
	}
	for _, c := range chains {
		w.waitInhibited(t, c.am.URL, c.name+": the host's per-server and exporter alerts inhibited", wantInhibited...)
	}

	phase("host-wide pages delivered, the rest inhibited")
	// Grafana on VictoriaMetrics: every dashboard query is valid MetricsQL,
	// and answers where the single Prometheus answers.
	checkDashboardsAlike(t, w.client, prom.URL, vmdb.URL)

	// Phase 4: the network is repaired, for all four at once, as in
	// TestAlertChain: restored one by one on a loaded machine, the last one
	// was still down when the host-wide page resolved, and its own alert
	// was then rightly delivered.
	if err := w.net.Restore(netlab.Answer, netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"),
		netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.4")); err != nil {
		t.Fatal(err)
	}
	waitDelivered(90*time.Second, "every expected notification delivered", required...)
	phase("resolutions delivered")
	// A late notification would come within a few group intervals (2s).
	time.Sleep(6 * time.Second)

	for _, c := range chains {
		seen := map[string]bool{}
		for _, d := range c.hook.delivered() {
			if !allowed[d] && !seen[d] {
				t.Errorf("%s: unexpected notification: %s", c.name, w.named(d))
			}
			seen[d] = true
		}
		c.hook.mu.Lock()
		for _, b := range c.hook.bad {
			t.Errorf("%s: a webhook body that is not a notification: %.500s", c.name, b)
		}
		for _, n := range c.hook.got {
			for _, a := range n.Alerts {
				name := a.Labels["alertname"]
				if a.Annotations["runbook_url"] != params.RunbookBaseURL+"/"+name+".md" || a.Labels["severity"] == "" {
					t.Errorf("%s: %s delivered without its runbook or severity: %v %v", c.name, name, a.Labels, a.Annotations)
				}
				if id := a.Labels["id"]; id != "" && (a.Labels["host"] != hostOf[id] || a.Labels["name"] == "" || a.Labels["project_id"] == "") {
					t.Errorf("%s: %s delivered without the server's labels: %v", c.name, name, a.Labels)
				}
				if _, ok := a.Labels["exported_host"]; ok {
					t.Errorf("%s: %s delivered with exported_host: %v", c.name, name, a.Labels)
				}
			}
		}
		c.hook.mu.Unlock()
		t.Logf("%s delivered: %s", c.name, w.named(strings.Join(uniqueSorted(c.hook.delivered()), "; ")))
	}
}

// shardedAlertmanagerConfig is alertmanagerConfig with the default route's
// group_wait (tickets) at three rule evaluations, as in the example (30s
// against Prometheus's default 1m evaluation interval): an alert and the
// one that inhibits it may become firing in different rule groups, an
// evaluation apart (OpenStackVMExporterDown and
// OpenStackComputeHostUnwatched here), and the inhibited one must not go
// out first.
func shardedAlertmanagerConfig(t *testing.T, hook string) string {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(alertmanagerConfig(t, hook)), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["route"].(map[string]any)["group_wait"] = "6s"
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// checkDashboardsAlike runs every dashboard query on the Prometheus and on
// VictoriaMetrics: none may fail on either, and each that returns data from
// Prometheus must return data from VictoriaMetrics.
func checkDashboardsAlike(t *testing.T, client *http.Client, promURL, vmURL string) {
	t.Helper()
	ds, err := dashboards.Load()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"job": "openstack-vm-exporter", "host": hostA, "project": ".*", "vm": ".*"}
	both := 0
	for _, d := range ds {
		for _, q := range d.Queries(vars) {
			np, perr := promstack.Query(client, promURL, q.Expr)
			nv, verr := promstack.Query(client, vmURL, q.Expr)
			switch {
			case perr != nil:
				t.Errorf("%s: Prometheus: %v\n%s", q.Where, perr, q.Expr)
			case verr != nil:
				t.Errorf("%s: VictoriaMetrics: %v\n%s", q.Where, verr, q.Expr)
			case np > 0 && nv == 0:
				t.Errorf("%s: data from Prometheus (%d series), none from VictoriaMetrics\n%s", q.Where, np, q.Expr)
			case np > 0:
				both++
			}
		}
	}
	t.Logf("%d dashboard queries return data from both", both)
}

// scrapedHosts lists the host labels of a vmagent's active targets.
func scrapedHosts(client *http.Client, base string) ([]string, error) {
	resp, err := client.Get(base + "/api/v1/targets")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			ActiveTargets []struct {
				Labels map[string]string `json:"labels"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	var hosts []string
	for _, t := range r.Data.ActiveTargets {
		hosts = append(hosts, t.Labels["host"])
	}
	sort.Strings(hosts)
	return hosts, nil
}

// inhibitedByKey lists "alertname id-or-host" of every alert Alertmanager
// holds back because another alert inhibits it.
func inhibitedByKey(client *http.Client, amURL string) (map[string]bool, error) {
	resp, err := client.Get(amURL + "/api/v2/alerts")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var list []struct {
		Labels map[string]string `json:"labels"`
		Status struct {
			State       string   `json:"state"`
			InhibitedBy []string `json:"inhibitedBy"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, a := range list {
		if a.Status.State == "suppressed" && len(a.Status.InhibitedBy) > 0 {
			key := a.Labels["id"]
			if key == "" {
				key = a.Labels["host"]
			}
			out[a.Labels["alertname"]+" "+key] = true
		}
	}
	return out, nil
}

func uniqueSorted(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
