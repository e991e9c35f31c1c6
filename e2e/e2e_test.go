//go:build lab

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/syncbuf"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/tied"
)

const hvHost = "hv-e2e"

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// world is the lab, the cloud and the fleet of one test.
type world struct {
	net    *netlab.Lab
	cloud  *openstacklab.Lab
	client *http.Client
	dir    string
	ids    map[string]string // VM name → Nova id
}

// vm is one test server: its Nova state and how its address behaves.
type vm struct {
	name, host, vmState, task string
	power                     int
	addr                      string
	behaviour                 netlab.Behaviour
	updated                   time.Duration // ago; 0 = now
}

func newWorld(t *testing.T, fleet []vm) *world {
	t.Helper()
	openstacklab.Require(t)
	w := &world{net: netlab.New(t), dir: t.TempDir(), ids: map[string]string{}}
	w.client = w.net.HTTPClient()
	var err error
	w.cloud, err = openstacklab.Start(context.Background(), openstacklab.Options{
		Dir: filepath.Join(w.dir, "openstack"), NetNS: w.net.HV(), HTTPClient: w.client,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.cloud.Close() })
	var servers []openstacklab.Server
	byBehaviour := map[netlab.Behaviour][]netip.Addr{}
	for i, v := range fleet {
		s := openstacklab.Server{
			ID: fmt.Sprintf("e2e00000-0000-4000-8000-%012d", i), Name: v.name, ProjectID: "project-e2e",
			Host: v.host, VMState: v.vmState, TaskState: v.task, PowerState: v.power, Flavor: "m1.small",
		}
		if v.updated > 0 {
			s.UpdatedAt = time.Now().Add(-v.updated)
		}
		if v.addr != "" {
			s.Addresses = []openstacklab.Address{{Network: "provider", Address: v.addr, Type: "fixed"}}
			byBehaviour[v.behaviour] = append(byBehaviour[v.behaviour], netip.MustParseAddr(v.addr))
		}
		servers = append(servers, s)
		w.ids[v.name] = s.ID
	}
	if _, err := w.cloud.Seed(context.Background(), servers); err != nil {
		t.Fatal(err)
	}
	for b, addrs := range byBehaviour {
		if err := w.net.Add(b, addrs...); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// exporter is the binary running in the hypervisor namespace.
type exporter struct {
	client *http.Client
	addr   string
	cmd    *exec.Cmd
	output *syncbuf.Buffer
	done   chan struct{} // closed when it exited
}

func (w *world) startExporter(t *testing.T, config string, env map[string]string) *exporter {
	t.Helper()
	return w.startExporterAt(t, "127.0.0.1:19735", "exporter.yaml", config, env)
}

// startExporterAt starts an exporter listening on addr, its configuration
// written to file in the test's directory.
func (w *world) startExporterAt(t *testing.T, addr, file, config string, env map[string]string) *exporter {
	t.Helper()
	return launch(t, launchSpec{
		prefix: w.net.ExecPrefix(), dir: w.dir, file: file, config: config, addr: addr, env: env,
		client: w.client, logs: func() string { return "openstack logs:\n" + w.cloud.Logs() },
	})
}

// launchSpec says how to run the built exporter: in which namespace
// (prefix), with which configuration (written to dir/file), where it
// listens, its environment, and what else to log when the test fails.
type launchSpec struct {
	prefix            []string
	dir, file, config string
	addr              string
	env               map[string]string
	client            *http.Client
	logs              func() string
}

// launch starts the exporter of spec, tied to this test binary, and kills
// it at the test's end, logging its output (and spec.logs) on failure.
func launch(t *testing.T, spec launchSpec) *exporter {
	t.Helper()
	cfgPath := filepath.Join(spec.dir, spec.file)
	if err := os.WriteFile(cfgPath, []byte(spec.config), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &exporter{client: spec.client, addr: spec.addr, output: &syncbuf.Buffer{}, done: make(chan struct{})}
	args := append(append([]string(nil), spec.prefix...), testenv.Binary(t), "--config.file="+cfgPath, "--web.listen-address="+e.addr, "--log.level=debug")
	e.cmd = exec.Command(args[0], args[1:]...)
	e.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + spec.dir}
	for k, v := range spec.env {
		e.cmd.Env = append(e.cmd.Env, k+"="+v)
	}
	e.cmd.Stdout, e.cmd.Stderr = e.output, e.output
	// Tied: killed by the kernel if this test binary dies on its -timeout.
	exited, err := tied.Start(e.cmd)
	if err != nil {
		t.Fatal(err)
	}
	go func() { <-exited; close(e.done) }()
	t.Cleanup(func() {
		e.kill()
		if t.Failed() {
			t.Logf("exporter %s output (last 8000 bytes):\n%s", e.addr, tail(e.output.String(), 8000))
			if spec.logs != nil {
				t.Log(spec.logs())
			}
		}
	})
	return e
}

// exited fails the test at once, with the exporter's last output, if it
// is no longer running.
func (e *exporter) exited(t *testing.T) {
	t.Helper()
	select {
	case <-e.done:
		t.Fatalf("the exporter exited:\n%s", tail(e.output.String(), 4000))
	default:
	}
}

// kill kills the exporter (SIGKILL: a dead host does not shut down
// cleanly) and waits for it to exit.
func (e *exporter) kill() {
	_ = e.cmd.Process.Kill()
	<-e.done
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// scrape returns the exposition and parsed families.
func (e *exporter) scrape(t *testing.T) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := e.client.Get("http://" + e.addr + "/metrics")
	if err != nil {
		return "", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return string(b), fams
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

// byName indexes a family's series by the VM name (and address).
func byName(fams map[string]*dto.MetricFamily, metric string) map[string]*dto.Metric {
	out := map[string]*dto.Metric{}
	for _, m := range fams[metric].GetMetric() {
		l := labels(m)
		key := l["name"]
		if a := l["address"]; a != "" {
			key += "@" + a
		}
		out[key] = m
	}
	return out
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() string) {
	t.Helper()
	begin := time.Now()
	deadline := begin.Add(d)
	var last string
	for time.Now().Before(deadline) {
		if last = cond(); last == "" {
			// Shown with -v or a failure: where a test's time went.
			t.Logf("%s: after %v", what, time.Since(begin).Round(100*time.Millisecond))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: still %s after %v", what, last, d)
}

func promtoolCheckMetrics(t *testing.T, text string) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

var mixedFleet = []vm{
	{name: "web-ok", host: hvHost, vmState: "active", power: 1, addr: "198.18.0.10", behaviour: netlab.Answer},
	{name: "web-ok-2", host: hvHost, vmState: "active", power: 1, addr: "198.18.0.11", behaviour: netlab.Answer},
	{name: "dead", host: hvHost, vmState: "active", power: 1, addr: "198.18.3.10", behaviour: netlab.Dead},
	{name: "lossy", host: hvHost, vmState: "active", power: 1, addr: "198.18.1.10", behaviour: netlab.Lossy},
	{name: "slow", host: hvHost, vmState: "active", power: 1, addr: "198.18.2.10", behaviour: netlab.Slow},
	{name: "broken", host: hvHost, vmState: "error", power: 4, addr: "198.18.0.20", behaviour: netlab.Answer, updated: 3 * time.Hour},
	{name: "stopped", host: hvHost, vmState: "stopped", power: 4, addr: "198.18.0.21", behaviour: netlab.Answer},
	{name: "building", host: hvHost, vmState: "building", power: 0},
	{name: "moving", host: hvHost, vmState: "active", task: "migrating", power: 1, addr: "198.18.0.23", behaviour: netlab.Answer},
	{name: "elsewhere", host: "other-host", vmState: "active", power: 1, addr: "198.18.0.30", behaviour: netlab.Answer},
}

func TestExporterAgainstRealOpenStack(t *testing.T) {
	t.Parallel() // each test has its own namespaces, cloud and ports
	w := newWorld(t, mixedFleet)
	e := w.startExporter(t, `openstack:
  scope: host
  host: `+hvHost+`
  refresh_interval: 5s
  full_refresh_interval: 30s
  timeout: 2m
probe:
  icmp:
    interval: 3s
    count: 4
    timeout: 500ms
    statuses: [ACTIVE]
    vantage: host
`, w.cloud.AdminEnv())

	var text string
	var fams map[string]*dto.MetricFamily
	waitFor(t, 90*time.Second, "inventory and two probe cycles", func() string {
		text, fams = e.scrape(t)
		if fams == nil {
			return "no scrape"
		}
		if m := fams["openstack_vm_probe_last_cycle_timestamp_seconds"].GetMetric(); len(m) == 0 || value(m[0]) == 0 {
			return "no probe cycle"
		}
		sent := byName(fams, "openstack_vm_icmp_packets_sent_total")["web-ok@198.18.0.10"]
		if sent == nil || value(sent) < 8 {
			return "fewer than two cycles"
		}
		return ""
	})

	status := byName(fams, "openstack_vm_status")
	for name, want := range map[string]string{"web-ok": "ACTIVE", "broken": "ERROR", "stopped": "SHUTOFF", "building": "BUILD", "moving": "MIGRATING"} {
		m := status[name]
		if m == nil || labels(m)["status"] != want || labels(m)["host"] != hvHost || labels(m)["id"] != w.ids[name] {
			t.Errorf("status of %s: %v, want %s", name, m, want)
		}
	}
	if status["elsewhere"] != nil {
		t.Error("a server of another host is exported in scope host")
	}
	if m := status["moving"]; m != nil && labels(m)["task_state"] != "migrating" {
		t.Errorf("task_state of moving: %v", labels(m))
	}
	since := byName(fams, "openstack_vm_status_since_timestamp_seconds")["broken"]
	if since == nil || time.Since(time.Unix(int64(value(since)), 0)) < 2*time.Hour {
		t.Errorf("broken's status since: %v", since)
	}

	up := byName(fams, "openstack_vm_icmp_up")
	for key, want := range map[string]float64{"web-ok@198.18.0.10": 1, "web-ok-2@198.18.0.11": 1, "dead@198.18.3.10": 0, "slow@198.18.2.10": 1} {
		if m := up[key]; m == nil || value(m) != want {
			t.Errorf("icmp_up %s = %v, want %v", key, m, want)
		}
	}
	for _, key := range []string{"broken@198.18.0.20", "stopped@198.18.0.21", "elsewhere@198.18.0.30"} {
		if up[key] != nil {
			t.Errorf("%s probed, but only ACTIVE servers are", key)
		}
	}
	sent := byName(fams, "openstack_vm_icmp_packets_sent_total")
	recv := byName(fams, "openstack_vm_icmp_packets_received_total")
	if s, r := value(sent["dead@198.18.3.10"]), value(recv["dead@198.18.3.10"]); s < 8 || r != 0 {
		t.Errorf("dead: sent %v received %v", s, r)
	}
	if s, r := value(sent["web-ok@198.18.0.10"]), value(recv["web-ok@198.18.0.10"]); r != s {
		t.Errorf("web-ok: sent %v received %v: false loss", s, r)
	}
	if s, r := value(sent["lossy@198.18.1.10"]), value(recv["lossy@198.18.1.10"]); r >= s || r == 0 {
		t.Errorf("lossy at 50%%: sent %v received %v", s, r)
	}
	rtt := byName(fams, "openstack_vm_icmp_rtt_seconds")["slow@198.18.2.10"]
	if rtt == nil || rtt.GetHistogram().GetSampleCount() == 0 || rtt.GetHistogram().GetSampleSum()/float64(rtt.GetHistogram().GetSampleCount()) < 0.045 {
		t.Errorf("slow VM's RTT histogram: %v", rtt)
	}
	if m := fams["openstack_vm_api_up"].GetMetric(); len(m) != 1 || value(m[0]) != 1 {
		t.Errorf("api_up %v", m)
	}
	promtoolCheckMetrics(t, text)
}
