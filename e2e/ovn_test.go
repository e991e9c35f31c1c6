//go:build lab

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/ovnlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
)

const ovnHost = "hv-e2e-ovn"

// ovnVM is one VM of the OVN test: its address's last byte on every
// tenant network, and what it does with echo requests.
type ovnVM struct {
	name  string
	octet int
	fault string // "", silent, lossy, slow
}

var ovnFleet = []ovnVM{
	{name: "answer", octet: 11},
	{name: "silent", octet: 12, fault: "silent"},
	{name: "lossy", octet: 13, fault: "lossy"},
	{name: "slow", octet: 14, fault: "slow"},
}

const slowDelay = 80 * time.Millisecond

// TestOVN runs the built exporter on a real OVN hypervisor, vantage auto:
// two tenant networks with the same CIDR carry the same four addresses
// (answering, silent, lossy, slow VMs), each probed from its own network's
// ovnmeta-<network> namespace, which the real metadata agent created; a
// third network's VM port is bound to this host but not plugged (Neutron
// shows it DOWN, OVN claims nothing, so the agent keeps no namespace for
// it): its address is counted as unprobed for lack of a namespace, never
// reported down.
func TestOVN(t *testing.T) {
	// Beside the other end-to-end tests: each OVN hypervisor's agent keeps
	// its ovnmeta-* namespaces in a directory of its own (hv.NetnsDir).
	t.Parallel()
	ovnlab.Require(t)
	testenv.RequireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	begin := time.Now()
	hv, err := ovnlab.New(ovnlab.Options{Dir: filepath.Join(dir, "hv"), Host: ovnHost})
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
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("openstack logs:\n%s", cloud.Logs())
		}
	})
	if err := hv.Start(ctx, cloud); err != nil {
		t.Fatal(err)
	}
	t.Logf("cloud started in %v (warm %v), hypervisor in %v", cloud.Started, cloud.Warm, hv.Started)
	defer func() {
		if t.Failed() {
			t.Logf("hypervisor logs:\n%s", hv.Logs())
		}
	}()

	project, err := cloud.ProjectID(ctx, "lab-project")
	if err != nil {
		t.Fatal(err)
	}
	// One security group admitting ICMP (the metadata port's echo
	// requests come from an address no group covers).
	sg, err := cloud.CreateSecurityGroup(ctx, project, "icmp", true)
	if err != nil {
		t.Fatal(err)
	}

	type key struct{ network, addr string }
	type expect struct {
		vm      ovnVM
		network string
	}
	want := map[key]expect{}
	var servers []openstacklab.Server
	var networks []openstacklab.Network
	var plugged []*ovnlab.VM
	serverSeq := 0
	newServer := func(name, network string, port openstacklab.Port, sub openstacklab.Subnet) {
		servers = append(servers, openstacklab.Server{
			ID: port.DeviceID, Name: name, ProjectID: project, Host: ovnHost, VMState: "active", PowerState: 1,
			Flavor: "m1.small", Addresses: openstacklab.PortAddresses(network, port, sub),
		})
	}
	serverID := func() string {
		serverSeq++
		return fmt.Sprintf("0e2e0000-0000-4000-8000-%012d", serverSeq)
	}
	for _, name := range []string{"tenant-a", "tenant-b"} {
		n, err := cloud.CreateNetwork(ctx, name, project)
		if err != nil {
			t.Fatal(err)
		}
		networks = append(networks, n)
		sub, err := cloud.CreateSubnet(ctx, n.ID, "198.18.7.0/24")
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range ovnFleet {
			addr := netip.AddrFrom4([4]byte{198, 18, 7, byte(v.octet)})
			port, err := cloud.CreatePort(ctx, openstacklab.PortSpec{NetworkID: n.ID, ServerID: serverID(), Host: ovnHost,
				FixedIPs: []netip.Addr{addr}, SecurityGroups: []string{sg}, Name: name + "-" + v.name})
			if err != nil {
				t.Fatal(err)
			}
			vm, err := hv.Plug(ctx, port)
			if err != nil {
				t.Fatal(err)
			}
			switch v.fault {
			case "silent":
				err = vm.Silent()
			case "lossy":
				err = vm.Lossy()
			case "slow":
				err = vm.Slow(slowDelay)
			}
			if err != nil {
				t.Fatal(err)
			}
			plugged = append(plugged, vm)
			newServer(name+"-"+v.name, name, port, sub)
			want[key{n.ID, addr.String()}] = expect{vm: v, network: name}
		}
	}
	// The third network: a port bound here, never plugged.
	orphanNet, err := cloud.CreateNetwork(ctx, "tenant-c", project)
	if err != nil {
		t.Fatal(err)
	}
	orphanSub, err := cloud.CreateSubnet(ctx, orphanNet.ID, "198.18.7.0/24")
	if err != nil {
		t.Fatal(err)
	}
	orphanAddr := netip.MustParseAddr("198.18.7.21")
	orphan, err := cloud.CreatePort(ctx, openstacklab.PortSpec{NetworkID: orphanNet.ID, ServerID: serverID(), Host: ovnHost,
		FixedIPs: []netip.Addr{orphanAddr}, SecurityGroups: []string{sg}, Name: "tenant-c-unplugged"})
	if err != nil {
		t.Fatal(err)
	}
	newServer("unplugged", "tenant-c", orphan, orphanSub)
	if _, err := cloud.Seed(ctx, servers); err != nil {
		t.Fatal(err)
	}

	// The agent's namespaces, and every plugged port ACTIVE.
	for _, n := range networks {
		if _, err := hv.WaitMetadataNamespace(ctx, n.ID, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, vm := range plugged {
		if err := hv.WaitPortStatus(ctx, vm.Port.ID, "ACTIVE", 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := cloud.GetPort(ctx, orphan.ID); err != nil || p.Status != "DOWN" {
		t.Fatalf("the unplugged port: status %q (%v), want DOWN", p.Status, err)
	}
	if hv.MetadataNamespaceExists(orphanNet.ID) {
		t.Fatal("the unplugged port's network has a namespace")
	}
	t.Logf("%d VMs plugged, namespaces and ACTIVE ports %v after the start", len(plugged), time.Since(begin))

	// The exporter, in the hypervisor's namespace, as on a compute node.
	const listen = "127.0.0.1:19736"
	exp := launch(t, launchSpec{prefix: hv.ExecPrefix(), dir: dir, file: "exporter.yaml", addr: listen,
		env: cloud.AdminEnv(), client: client, config: `openstack:
  scope: host
  host: ` + ovnHost + `
  refresh_interval: 5s
  full_refresh_interval: 30s
  timeout: 2m
probe:
  icmp:
    vantage: auto
    # The agent's ovnmeta-* namespaces: the hypervisor's own directory.
    netns_dir: ` + hv.NetnsDir() + `
    interval: 3s
    count: 4
    timeout: 2s
    statuses: [ACTIVE]
`})

	// series by (network_id, vantage, address)
	type series struct{ network, vantage, addr string }
	index := func(fams map[string]*dto.MetricFamily, metric string) map[series]*dto.Metric {
		out := map[series]*dto.Metric{}
		for _, m := range fams[metric].GetMetric() {
			l := labels(m)
			out[series{l["network_id"], l["vantage"], l["address"]}] = m
		}
		return out
	}
	var text string
	var fams map[string]*dto.MetricFamily
	waitFor(t, 3*time.Minute, "every tenant address probed from its network's namespace, three cycles", func() string {
		exp.exited(t)
		text, fams = exp.scrape(t)
		if fams == nil {
			return "no scrape"
		}
		sent := index(fams, "openstack_vm_icmp_packets_sent_total")
		for k := range want {
			m := sent[series{k.network, ovnlab.MetadataNamespace(k.network), k.addr}]
			if m == nil {
				return fmt.Sprintf("no series for %s on %s", k.addr, k.network)
			}
			if value(m) < 12 {
				return fmt.Sprintf("%s on %s: %v packets sent", k.addr, k.network, value(m))
			}
		}
		return ""
	})

	up := index(fams, "openstack_vm_icmp_up")
	sent := index(fams, "openstack_vm_icmp_packets_sent_total")
	recv := index(fams, "openstack_vm_icmp_packets_received_total")
	rtt := index(fams, "openstack_vm_icmp_rtt_seconds")
	for k, e := range want {
		s := series{k.network, ovnlab.MetadataNamespace(k.network), k.addr}
		u, snt, rcv := value(up[s]), value(sent[s]), value(recv[s])
		what := fmt.Sprintf("%s (%s on %s, network %s)", e.vm.name, k.addr, e.network, k.network)
		switch e.vm.fault {
		case "":
			if u != 1 || rcv != snt {
				t.Errorf("%s: up %v, sent %v, received %v; want up and no loss", what, u, snt, rcv)
			}
		case "silent":
			if u != 0 || rcv != 0 {
				t.Errorf("%s: up %v, received %v; want down, nothing received", what, u, rcv)
			}
		case "lossy":
			if rcv == 0 || rcv >= snt {
				t.Errorf("%s at 50%% loss: sent %v, received %v", what, snt, rcv)
			}
		case "slow":
			h := rtt[s].GetHistogram()
			if u != 1 || h.GetSampleCount() == 0 || h.GetSampleSum()/float64(h.GetSampleCount()) < 0.9*slowDelay.Seconds() {
				t.Errorf("%s: up %v, RTT histogram %v; want up, mean RTT at least %v", what, u, h, slowDelay)
			}
		}
	}
	// No tenant address is probed from the host, and nothing else is.
	for s := range sent {
		if _, ok := want[key{s.network, s.addr}]; !ok || s.vantage == "host" {
			t.Errorf("unexpected probe series %+v", s)
		}
	}
	// The unplugged port's address: counted, no series, not down.
	for _, metric := range []string{"openstack_vm_icmp_up", "openstack_vm_icmp_packets_sent_total"} {
		for _, m := range fams[metric].GetMetric() {
			if labels(m)["address"] == orphanAddr.String() {
				t.Errorf("%s has a series for the address without a namespace: %v", metric, labels(m))
			}
		}
	}
	unprobed := map[string]float64{}
	for _, m := range fams["openstack_vm_probe_unprobed_addresses"].GetMetric() {
		unprobed[labels(m)["reason"]] = value(m)
	}
	for _, reason := range []string{"no_namespace", "no_source_address", "unknown_network", "no_privilege", "engine_unsupported"} {
		if _, ok := unprobed[reason]; !ok {
			t.Errorf("openstack_vm_probe_unprobed_addresses has no reason %q: %v", reason, unprobed)
		}
	}
	if unprobed["no_namespace"] != 1 {
		t.Errorf("unprobed no_namespace = %v, want 1 (the unplugged port's address)", unprobed["no_namespace"])
	}
	for reason, n := range unprobed {
		if reason != "no_namespace" && n != 0 {
			t.Errorf("unprobed %s = %v, want 0", reason, n)
		}
	}
	// Both plugged networks have their namespace here.
	present := map[string]float64{}
	for _, m := range fams["openstack_vm_network_namespace_present"].GetMetric() {
		present[labels(m)["network_id"]] = value(m)
	}
	for _, n := range networks {
		if present[n.ID] != 1 {
			t.Errorf("openstack_vm_network_namespace_present{network_id=%s} = %v, want 1", n.ID, present[n.ID])
		}
	}
	promtoolCheckMetrics(t, text)
	t.Logf("first phase done %v after the start", time.Since(begin))

	// The metadata agent stops and tenant-b's namespace goes, as on a node
	// whose agent is down (or stuck) when a namespace is missing: tenant-b's
	// four ACTIVE ports are bound here with no namespace. Their addresses
	// become unprobed (no_namespace), never down, and the network's
	// namespace_present says 0 (what OpenStackNetworkNamespaceMissing
	// watches). tenant-a goes on being probed.
	netA, netB := networks[0], networks[1]
	check := func(fams map[string]*dto.MetricFamily, bProbed bool) string {
		unprobed, present := map[string]float64{}, map[string]float64{}
		for _, m := range fams["openstack_vm_probe_unprobed_addresses"].GetMetric() {
			unprobed[labels(m)["reason"]] = value(m)
		}
		for _, m := range fams["openstack_vm_network_namespace_present"].GetMetric() {
			present[labels(m)["network_id"]] = value(m)
		}
		up := index(fams, "openstack_vm_icmp_up")
		answerA := up[series{netA.ID, ovnlab.MetadataNamespace(netA.ID), "198.18.7.11"}]
		if answerA == nil || value(answerA) != 1 {
			return fmt.Sprintf("tenant-a's answering VM: %v", answerA)
		}
		var bSeries int
		for s := range up {
			if s.network == netB.ID {
				bSeries++
			}
		}
		answerB := up[series{netB.ID, ovnlab.MetadataNamespace(netB.ID), "198.18.7.11"}]
		switch {
		case !bProbed && (unprobed["no_namespace"] != 5 || present[netB.ID] != 0 || bSeries != 0):
			return fmt.Sprintf("no_namespace %v (want 5), namespace_present of tenant-b %v (want 0), %d tenant-b series (want 0)",
				unprobed["no_namespace"], present[netB.ID], bSeries)
		case bProbed && (unprobed["no_namespace"] != 1 || present[netB.ID] != 1 || answerB == nil || value(answerB) != 1):
			return fmt.Sprintf("no_namespace %v (want 1), namespace_present of tenant-b %v (want 1), tenant-b's answering VM %v",
				unprobed["no_namespace"], present[netB.ID], answerB)
		}
		return ""
	}
	scrapeCheck := func(bProbed bool) func() string {
		return func() string {
			exp.exited(t)
			_, fams := exp.scrape(t)
			if fams == nil {
				return "no scrape"
			}
			return check(fams, bProbed)
		}
	}
	if err := hv.StopAgent(); err != nil {
		t.Fatal(err)
	}
	if err := hv.DeleteMetadataNamespace(ctx, netB.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "tenant-b's addresses unprobed for lack of its namespace", scrapeCheck(false))
	t.Logf("namespace gone, addresses unprobed %v after the start", time.Since(begin))

	// The agent back: it recreates the namespace (a new one under the same
	// name), and the exporter probes tenant-b from it again.
	if err := hv.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := hv.WaitMetadataNamespace(ctx, netB.ID, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "tenant-b probed again from its recreated namespace", scrapeCheck(true))
	t.Logf("whole test %v", time.Since(begin))
}
