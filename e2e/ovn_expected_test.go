//go:build lab

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/ovnlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/promstack"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/report"
)

const expectedHost = "hv-e2e-expected"

// TestOVNICMPExpected runs the built exporter, a real Prometheus with the
// bundled rules, and the real Neutron and OVN, all in one hypervisor's
// namespace, and shows what the port's security groups change in the
// reachability alerts (openstack_vm_icmp_expected):
//   - "broken", a new VM whose path drops every echo request, in a group
//     that admits ICMP: it never answered (no history at all), and pages;
//   - "closed", in a group without ICMP from the start: OVN drops the echo
//     requests, the exporter says ICMP is not expected, nothing fires;
//   - "closed-later" answered (Prometheus recorded its history), then its
//     owner moved its port to the group without ICMP: it stops answering,
//     and never pages, history or not;
//   - "unplugged" answered, then its VM was unplugged (Neutron sets its port
//     DOWN): OpenStackVMPortDownUnreachable pages for its port;
//   - "answer" answers throughout: nothing.
func TestOVNICMPExpected(t *testing.T) {
	t.Parallel()
	ovnlab.Require(t)
	testenv.RequireRoot(t)
	testenv.Tool(t, "prometheus", "prometheus")
	ctx := context.Background()
	dir := t.TempDir()
	begin := time.Now()
	hv, err := ovnlab.New(ovnlab.Options{Dir: filepath.Join(dir, "hv"), Host: expectedHost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hv.Close() })
	client := hv.HTTPClient()
	cloud, err := openstacklab.Start(ctx, openstacklab.Options{Dir: filepath.Join(dir, "openstack"), NetNS: hv.NetNS(), HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cloud.Close() })
	if err := hv.Start(ctx, cloud); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("hypervisor logs:\n%s", hv.Logs())
		}
	}()
	project, err := cloud.ProjectID(ctx, "lab-project")
	if err != nil {
		t.Fatal(err)
	}
	open, err := cloud.CreateSecurityGroup(ctx, project, "icmp", true)
	if err != nil {
		t.Fatal(err)
	}
	closed, err := cloud.CreateSecurityGroup(ctx, project, "no-icmp", false)
	if err != nil {
		t.Fatal(err)
	}
	network, err := cloud.CreateNetwork(ctx, "tenant-e", project)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cloud.CreateSubnet(ctx, network.ID, "198.18.7.0/24")
	if err != nil {
		t.Fatal(err)
	}
	type vmSpec struct {
		name  string
		octet byte
		group string
	}
	specs := []vmSpec{
		{"answer", 31, open},
		{"broken", 32, open},
		{"closed", 33, closed},
		{"closed-later", 34, open},
		{"unplugged", 35, open},
	}
	ids := map[string]string{}
	ports := map[string]openstacklab.Port{}
	vms := map[string]*ovnlab.VM{}
	var servers []openstacklab.Server
	for i, s := range specs {
		id := fmt.Sprintf("0e2e0000-0000-4000-8000-%012d", 100+i)
		port, err := cloud.CreatePort(ctx, openstacklab.PortSpec{NetworkID: network.ID, ServerID: id, Host: expectedHost,
			FixedIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 7, s.octet})}, SecurityGroups: []string{s.group}, Name: s.name})
		if err != nil {
			t.Fatal(err)
		}
		vm, err := hv.Plug(ctx, port)
		if err != nil {
			t.Fatal(err)
		}
		if s.name == "broken" {
			if err := vm.Silent(); err != nil {
				t.Fatal(err)
			}
		}
		ids[s.name], ports[s.name], vms[s.name] = id, port, vm
		servers = append(servers, openstacklab.Server{ID: id, Name: s.name, ProjectID: project, Host: expectedHost,
			VMState: "active", PowerState: 1, Flavor: "m1.small", Addresses: openstacklab.PortAddresses("tenant-e", port, sub)})
	}
	if _, err := cloud.Seed(ctx, servers); err != nil {
		t.Fatal(err)
	}
	if _, err := hv.WaitMetadataNamespace(ctx, network.ID, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	for name, vm := range vms {
		if err := hv.WaitPortStatus(ctx, vm.Port.ID, "ACTIVE", 3*time.Minute); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	t.Logf("cloud, hypervisor and %d VMs ready after %v", len(vms), time.Since(begin))

	// The bundled rules with the end-to-end windows (seconds). A group
	// change reaches the exporter at its next refresh (5 s here, up to
	// 12 s on a loaded machine): unreachable_for is kept above that, as
	// the default 5m is far above a refresh interval.
	params, err := alerts.LoadParams("testdata/alerts-params.yaml")
	if err != nil {
		t.Fatal(err)
	}
	params.UnreachableFor = "30s"
	params.PortDownUnreachableFor = "10s"
	rulesFile := writeRules(t, dir, params)
	const exporterAddr, promAddr = "127.0.0.1:19738", "127.0.0.1:19092"
	stack := promstack.New(promstack.Options{Dir: dir, Prefix: hv.ExecPrefix(), Client: client})
	t.Cleanup(stack.Close)
	prom, err := stack.StartPrometheus(ctx, promAddr,
		promstack.HostPrometheusConfig(2*time.Second, "openstack-vm-exporter", exporterAddr, expectedHost, rulesFile, ""))
	if err != nil {
		t.Fatal(err)
	}
	exp := launch(t, launchSpec{prefix: hv.ExecPrefix(), dir: dir, file: "exporter.yaml", addr: exporterAddr,
		env: cloud.AdminEnv(), client: client, config: `openstack:
  scope: host
  host: ` + expectedHost + `
  refresh_interval: 5s
  full_refresh_interval: 30s
  timeout: 2m
probe:
  icmp:
    vantage: auto
    # The agent's ovnmeta-* namespaces: the hypervisor's own directory.
    netns_dir: ` + hv.NetnsDir() + `
    interval: 2s
    count: 3
    timeout: 500ms
    statuses: [ACTIVE]
`,
		logs: func() string { return "prometheus log:\n" + prom.Log() + "\nopenstack logs:\n" + cloud.Logs() }})

	prometheus := "http://" + promAddr
	count := func(q string) int {
		t.Helper()
		n, err := promstack.Query(client, prometheus, q)
		if err != nil {
			t.Fatalf("query %s: %v", q, err)
		}
		return n
	}
	// No page may ever come for answer, closed or closed-later: checked at
	// every step of every wait below, and over a hold at the end.
	quiet := func() string {
		exp.exited(t)
		for _, name := range []string{"answer", "closed", "closed-later"} {
			if n := count(fmt.Sprintf(`ALERTS{alertstate="firing", id=%q}`, ids[name])); n != 0 {
				t.Fatalf("%s pages: %d firing alerts", name, n)
			}
		}
		return ""
	}
	wait := func(d time.Duration, what string, cond func() string) {
		t.Helper()
		waitFor(t, d, what, func() string {
			quiet()
			return cond()
		})
	}
	expected := func(name string) string {
		return fmt.Sprintf(`openstack_vm_icmp_expected{id=%q, vantage=%q}`, ids[name], ovnlab.MetadataNamespace(network.ID))
	}

	// 1. The exporter reads the groups: ICMP expected where they admit it,
	// not expected in the closed group; the answering VMs have history.
	wait(3*time.Minute, "the expectations scraped and the answering VMs' history recorded", func() string {
		for name, want := range map[string]string{"answer": "1", "broken": "1", "closed": "0", "closed-later": "1", "unplugged": "1"} {
			if count(expected(name)+" == "+want) != 1 {
				return fmt.Sprintf("%s: no %s == %s", name, expected(name), want)
			}
		}
		for _, name := range []string{"answer", "closed-later", "unplugged"} {
			if count(fmt.Sprintf(`openstack_vm_address:icmp_answered:history{id=%q} == 1`, ids[name])) != 1 {
				return name + " has no history yet"
			}
		}
		return ""
	})

	// 2. broken never answered: it pages on its expectation alone, with
	// no history.
	wait(3*time.Minute, "broken pages without history", func() string {
		if count(fmt.Sprintf(`ALERTS{alertname="OpenStackVMUnreachable", alertstate="firing", id=%q}`, ids["broken"])) != 1 {
			return "broken does not page"
		}
		return ""
	})
	if n := count(fmt.Sprintf(`openstack_vm_address:icmp_answered:history{id=%q} == 1`, ids["broken"])); n != 0 {
		t.Errorf("broken has a history of answering (%d series): the page proves nothing", n)
	}
	if n := count(fmt.Sprintf(`openstack_vm_icmp_up{id=%q} == 1`, ids["broken"])); n != 0 {
		t.Errorf("broken answers")
	}

	// 3. closed-later's owner closes ICMP: it stops answering and the
	// exporter sees the group change; unplugged's VM is unplugged.
	if err := cloud.Neutron(ctx, http.MethodPut, "/v2.0/ports/"+ports["closed-later"].ID,
		map[string]any{"port": map[string]any{"security_groups": []string{closed}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := vms["unplugged"].Unplug(ctx); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	wait(2*time.Minute, "closed-later silent, ICMP not expected", func() string {
		if count(fmt.Sprintf(`openstack_vm_icmp_up{id=%q} == 0`, ids["closed-later"])) != 1 {
			return "closed-later still answers"
		}
		if count(expected("closed-later")+" == 0") != 1 {
			return "closed-later: ICMP still expected"
		}
		return ""
	})
	t.Logf("closed-later silent and not expected %v after its group changed", time.Since(changed))

	// 4. unplugged's port is DOWN and it does not answer: the port's page.
	wait(3*time.Minute, "unplugged's DOWN port pages", func() string {
		if count(fmt.Sprintf(`openstack_vm_port_status{id=%q, status="DOWN"}`, ids["unplugged"])) != 1 {
			return "unplugged's port not DOWN in the exporter"
		}
		if count(fmt.Sprintf(`ALERTS{alertname="OpenStackVMPortDownUnreachable", alertstate="firing", id=%q, port_id=%q}`, ids["unplugged"], ports["unplugged"].ID)) != 1 {
			return "no OpenStackVMPortDownUnreachable for unplugged"
		}
		return ""
	})

	// The one-shot report's engine over two scrapes of the same exporter:
	// the same judgement, with the port's state and the expectation in
	// each mitigation.
	checkReport(t, exp, ids, ports, ovnlab.MetadataNamespace(network.ID))

	// 5. Hold: closed-later, with its day of history, stays out of the
	// reachability rules for longer than unreachable_for, and the answering
	// and closed VMs stay quiet (quiet() at every step).
	hold := time.Now().Add(45 * time.Second)
	wait(2*time.Minute, "the hold", func() string {
		for _, name := range []string{"closed", "closed-later"} {
			if n := count(fmt.Sprintf(`openstack_vm_vantage:icmp_unreachable:bool{id=%q}`, ids[name])); n != 0 {
				t.Fatalf("%s is judged for reachability (%d series) though ICMP is not expected", name, n)
			}
		}
		if time.Now().Before(hold) {
			return "holding"
		}
		return ""
	})
	if n := count(fmt.Sprintf(`openstack_vm_address:icmp_answered:history{id=%q} == 1`, ids["closed-later"])); n != 1 {
		t.Errorf("closed-later lost its history (%d series): the silence proves less", n)
	}
	if n := count(`ALERTS{alertstate="firing", alertname=~"OpenStackVMPortBindingFailed|OpenStackComputeHostPortBindingsFailed|OpenStackHostVMsUnreachable"}`); n != 0 {
		t.Errorf("%d unexpected host or binding alerts firing", n)
	}
	if strings.Contains(exp.output.String(), "panic") {
		t.Errorf("the exporter panicked:\n%s", tail(exp.output.String(), 4000))
	}
	t.Logf("whole test %v", time.Since(begin))
}

// checkReport builds the report from two scrapes of the exporter and
// checks what it says of the VMs of TestOVNICMPExpected.
func checkReport(t *testing.T, exp *exporter, ids map[string]string, ports map[string]openstacklab.Port, vantage string) {
	t.Helper()
	scrape := func() ([]*dto.MetricFamily, time.Time) {
		_, fams := exp.scrape(t)
		if fams == nil {
			t.Fatal("no scrape for the report")
		}
		var out []*dto.MetricFamily
		for _, f := range fams {
			out = append(out, f)
		}
		return out, time.Now()
	}
	before, beforeAt := scrape()
	time.Sleep(time.Second) // two instants for the counters, as report.Collect takes them
	after, afterAt := scrape()
	r, err := report.Build(context.Background(), report.Snapshot{Before: before, After: after, BeforeAt: beforeAt, AfterAt: afterAt},
		alerts.DefaultParams(), os.DirFS("../docs/runbooks"))
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]report.Finding{}
	for _, f := range r.Findings {
		found[f.Alert+" "+f.Labels["id"]] = f
	}
	broken, ok := found["OpenStackVMUnreachable "+ids["broken"]]
	if !ok || broken.ICMPExpected != report.ExpectedYes || broken.Port == nil || broken.Port.Status != "ACTIVE" ||
		!strings.HasPrefix(broken.Mitigation, "Its port is ACTIVE and its security groups admit ICMP from namespace "+vantage) {
		t.Errorf("report: broken %+v (found %v)", broken, ok)
	}
	down, ok := found["OpenStackVMPortDownUnreachable "+ids["unplugged"]]
	if !ok || down.Severity != "critical" || down.Port == nil || down.Port.ID != ports["unplugged"].ID || down.Port.Status != "DOWN" ||
		!strings.HasPrefix(down.Mitigation, "Its port `"+ports["unplugged"].ID+"` is DOWN in Neutron") {
		t.Errorf("report: unplugged %+v (found %v)", down, ok)
	}
	silent := map[string]bool{}
	for _, f := range r.PolicySilent {
		if f.ICMPExpected == report.ExpectedNo && strings.Contains(f.Description, "do not admit ICMP from namespace "+vantage+": not a fault of the VM") {
			silent[f.Labels["id"]] = true
		}
	}
	for _, f := range append(append([]report.Finding{}, r.Findings...), r.Unconfirmed...) {
		switch f.Labels["id"] {
		case ids["answer"], ids["closed"], ids["closed-later"]:
			t.Errorf("report: finding %s for %s", f.Alert, f.Labels["name"])
		}
	}
	if !silent[ids["closed"]] || !silent[ids["closed-later"]] || len(r.PolicySilent) != 2 {
		t.Errorf("report: not expected to answer: %+v", r.PolicySilent)
	}
	if r.ExitStatus() != 2 {
		t.Errorf("report exit status %d, want 2 (a DOWN port of an ACTIVE server that should answer)", r.ExitStatus())
	}
}
