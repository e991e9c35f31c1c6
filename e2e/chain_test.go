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

// webhook records notifications; it listens in the hypervisor namespace,
// where Alertmanager runs.
type webhook struct {
	mu    sync.Mutex
	got   []notification
	addr  string
	close func()
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
		if err := json.Unmarshal(b, &n); err == nil {
			n.Receiver = strings.TrimPrefix(r.URL.Path, "/")
			w.mu.Lock()
			w.got = append(w.got, n)
			w.mu.Unlock()
		}
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

func (w *webhook) has(substr string) bool {
	for _, d := range w.delivered() {
		if strings.Contains(d, substr) {
			return true
		}
	}
	return false
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

// promQuery runs an instant query against the test's Prometheus.
func promQuery(client *http.Client, base, q string) (int, error) {
	resp, err := client.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s", r.Error)
	}
	return len(r.Data.Result), nil
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
	prom, err := stack.StartPrometheus(ctx, "127.0.0.1:19090",
		promstack.PrometheusConfig(2*time.Second, "openstack-vm-exporter", "127.0.0.1:19735", rulesFile, "127.0.0.1:19093"))
	if err != nil {
		t.Fatal(err)
	}
	w.startExporter(t, `openstack:
  scope: host
  host: `+hvHost+`
  refresh_interval: 3s
  full_refresh_interval: 30s
  timeout: 20s
probe:
  icmp:
    interval: 2s
    count: 3
    timeout: 500ms
`, w.cloud.AdminEnv())
	defer func() {
		if t.Failed() {
			t.Logf("delivered: %v", hook.delivered())
			t.Logf("prometheus log:\n%s\nalertmanager log:\n%s", prom.Log(), am.Log())
		}
	}()

	// Phase 1: the fleet's standing issue pages the ticket queue; healthy
	// servers page nobody.
	waitFor(t, 90*time.Second, "OpenStackVMInError of broken delivered", func() string {
		if !hook.has("ticket firing OpenStackVMInError " + w.ids["broken"]) {
			return fmt.Sprint(hook.delivered())
		}
		return ""
	})
	// Let Prometheus see every address answer for a while: "answered before".
	time.Sleep(10 * time.Second)

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
	waitFor(t, 90*time.Second, "per-server alerts delivered", func() string {
		for _, want := range []string{
			"ticket firing OpenStackVMInError " + w.ids["later-broken"],
			"ticket firing OpenStackVMStuckInTaskState " + w.ids["will-stick"],
			"ticket firing OpenStackVMUnreachable " + w.ids["a"],
			"ticket firing OpenStackVMPacketLoss " + w.ids["lossy"],
			"ticket firing OpenStackVMHighLatency " + w.ids["slow"],
		} {
			if !hook.has(want) {
				return "missing " + want
			}
		}
		return ""
	})

	// Phase 3: the host's network fails for most servers: one critical
	// page for the host, and the per-server pages of b, c, d inhibited.
	for _, a := range []string{"198.18.0.2", "198.18.0.3", "198.18.0.4"} {
		if err := w.net.Remove(netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "host-wide page", func() string {
		if !hook.has("pager firing OpenStackHostVMsUnreachable " + hvHost) {
			return fmt.Sprint(hook.delivered())
		}
		return ""
	})
	// Give the per-server alerts of b, c, d time to fire in Prometheus
	// (unreachable_for 12s): Alertmanager must hold them back.
	waitFor(t, 60*time.Second, "per-server alerts of b, c, d firing and inhibited in Alertmanager", func() string {
		resp, err := w.client.Get(am.URL + "/api/v2/alerts?filter=alertname%3D%22OpenStackVMUnreachable%22")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		var list []struct {
			Labels map[string]string `json:"labels"`
			Status struct {
				State       string   `json:"state"`
				InhibitedBy []string `json:"inhibitedBy"`
			} `json:"status"`
		}
		json.NewDecoder(resp.Body).Decode(&list)
		inhibited := 0
		for _, a := range list {
			if a.Status.State == "suppressed" && len(a.Status.InhibitedBy) > 0 {
				inhibited++
			}
		}
		if inhibited < 3 {
			return fmt.Sprintf("%d inhibited of %d", inhibited, len(list))
		}
		return ""
	})
	for _, name := range []string{"b", "c", "d"} {
		if hook.has("firing OpenStackVMUnreachable " + w.ids[name]) {
			t.Errorf("server %s paged on its own during the host-wide outage", name)
		}
	}

	// The dashboards' queries all return data from this Prometheus.
	ds, err := dashboards.Load()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"job": "openstack-vm-exporter", "host": hvHost, "project": ".*", "vm": ".*"}
	var empty []string
	for _, d := range ds {
		for _, q := range d.Queries(vars) {
			n, err := promQuery(w.client, prom.URL, q.Expr)
			if err != nil {
				t.Errorf("%s: %v\n%s", q.Where, err, q.Expr)
			} else if n == 0 {
				empty = append(empty, q.Where)
			}
		}
	}
	if len(empty) > 0 {
		sort.Strings(empty)
		t.Errorf("dashboard queries without data:\n%s", strings.Join(empty, "\n"))
	}

	// Phase 4: repairs resolve the alerts.
	for _, a := range []string{"198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"} {
		if err := w.net.Restore(netlab.Answer, netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	active := "active"
	if err := w.cloud.Update(ctx, map[string]openstacklab.Update{w.ids["later-broken"]: {VMState: &active}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "resolutions delivered", func() string {
		for _, want := range []string{
			"pager resolved OpenStackHostVMsUnreachable " + hvHost,
			"ticket resolved OpenStackVMInError " + w.ids["later-broken"],
			"ticket resolved OpenStackVMUnreachable " + w.ids["a"],
		} {
			if !hook.has(want) {
				return "missing " + want
			}
		}
		return ""
	})

	// Nobody was paged for the healthy server, and every delivered alert
	// carried its runbook.
	for _, d := range hook.delivered() {
		if strings.Contains(d, w.ids["healthy"]) {
			t.Errorf("the healthy server was paged: %s", d)
		}
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
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
		}
	}
}
