package exporter

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

const (
	vnetA = "7d3c5b6e-1a2f-4e8d-9c0b-a1b2c3d4e5f6"
	vnetB = "8e4d6c7f-2b3a-4f9e-8d1c-b2c3d4e5f6a7"
	vnetC = "9f5e7d80-3c4b-4a0f-9e2d-c3d4e5f6a7b8"
)

// vantageFixture is a probe loop over a hand-made snapshot (servers and
// Neutron ports) with a netns directory the test fills: files named as the
// OVN metadata agent names its namespaces turn vantage auto to
// ovn-metadata without root (entering them fails: they are not
// namespaces, so their addresses are unprobed with no_privilege).
func vantageFixture(t *testing.T, snap *inventory.Snapshot, namespaces ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	for _, n := range namespaces {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	engine := &scriptedEngine{answers: map[netip.Addr]probes.Result{}}
	f := vantageService(t, snap, dir, func(config.ICMP) probes.Engine { return engine })
	f.engine = engine
	return f
}

// vantageService is a service whose probe loop reads snap, with netns_dir
// dir and the engine newEngine returns for the probe configuration.
func vantageService(t *testing.T, snap *inventory.Snapshot, dir string, newEngine func(config.ICMP) probes.Engine) *fixture {
	t.Helper()
	cloud, err := standin.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cloud.Close() })
	env := cloud.Env()
	d := Deps{Getenv: func(k string) string { return env[k] }}
	cfg := config.Default()
	cfg.OpenStack.Scope = "all"
	cfg.Probe.ICMP.NetnsDir = dir
	inv, err := NewInventorySection(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	loop := NewProbeLoop(newEngine(cfg.Probe.ICMP), cfg.Probe.ICMP, func() *inventory.Snapshot { return snap }, nil)
	return &fixture{cloud: cloud, svc: newService(inv, loop, d)}
}

func vSnapshot() *inventory.Snapshot {
	addr := func(network, ip, typ string) inventory.Address {
		return inventory.Address{Network: network, Addr: netip.MustParseAddr(ip), Raw: ip, Type: typ}
	}
	srv := func(id string, a ...inventory.Address) inventory.Server {
		return inventory.Server{ID: id, Name: "vm-" + id, ProjectID: "p1", Host: "cmp-1", Status: "ACTIVE", Addresses: a}
	}
	port := func(server, network, status, ip string) inventory.Port {
		return inventory.Port{ID: "port-" + server, DeviceID: server, DeviceOwner: "compute:nova", NetworkID: network, Status: status,
			FixedIPs: []inventory.FixedIP{{SubnetID: "sub", Addr: netip.MustParseAddr(ip)}}}
	}
	return &inventory.Snapshot{
		Servers: []inventory.Server{
			srv("s1", addr("net-a", "198.18.7.11", "fixed"), addr("net-a", "198.19.0.5", "floating")),
			srv("s2", addr("net-b", "198.18.7.11", "fixed")),
			srv("s3", addr("net-c", "198.18.9.3", "fixed")),
			srv("s4", addr("net-x", "198.18.10.4", "fixed")),
		},
		Ports: []inventory.Port{
			port("s1", vnetA, "ACTIVE", "198.18.7.11"),
			port("s2", vnetB, "ACTIVE", "198.18.7.11"),
			port("s3", vnetC, "ACTIVE", "198.18.9.3"),
		},
		PortsRead: true,
	}
}

// In ovn-metadata mode (auto, with ovnmeta-* namespaces): the floating
// address keeps the host vantage with its labels; the same fixed address on
// two networks is two targets, not a duplicate; a network without namespace
// and an address without port are unprobed with their reason, with no
// icmp series; the namespace states and the mode are exported.
func TestVantageSeries(t *testing.T) {
	f := vantageFixture(t, vSnapshot(), targets.PrefixOVNMetadata+vnetA, targets.PrefixOVNMetadata+vnetB, "ovmxt-other")
	f.svc.loop.Cycle(context.Background())
	text, fams := f.scrape(t)
	lintMetrics(t, text)

	up := fams["openstack_vm_icmp_up"].GetMetric()
	if len(up) != 1 {
		t.Fatalf("icmp_up series: %v", up)
	}
	if l := metricLabels(up[0]); l["address"] != "198.19.0.5" || l["vantage"] != "host" || l["network_id"] != "" || l["id"] != "s1" {
		t.Errorf("floating address labels %v", l)
	}
	for reason, want := range map[string]float64{
		targets.ReasonNoPrivilege: 2, targets.ReasonNoNamespace: 1, targets.ReasonUnknownNetwork: 1,
		targets.ReasonNoSourceAddress: 0, targets.ReasonEngineUnsupported: 0,
	} {
		if v, ok := vvalue(fams, "openstack_vm_probe_unprobed_addresses", map[string]string{"reason": reason}); !ok || v != want {
			t.Errorf("unprobed %s: %v (present %v), want %v", reason, v, ok, want)
		}
	}
	for net, want := range map[string]float64{vnetA: 1, vnetB: 1, vnetC: 0} {
		if v, ok := vvalue(fams, "openstack_vm_network_namespace_present",
			map[string]string{"network_id": net, "namespace": targets.PrefixOVNMetadata + net}); !ok || v != want {
			t.Errorf("namespace of %s: %v (present %v), want %v", net, v, ok, want)
		}
	}
	if v, ok := vvalue(fams, "openstack_vm_probe_vantage_mode", map[string]string{"mode": "ovn-metadata"}); !ok || v != 1 {
		t.Errorf("mode: %v %v", v, ok)
	}
	// Both files that are no namespace could not be entered.
	if v, ok := vvalue(fams, "openstack_vm_probe_errors_total", map[string]string{"reason": "namespace"}); !ok || v != 2 {
		t.Errorf("namespace errors: %v %v", v, ok)
	}
}

// What the engine reports unprobed (a namespace that vanished during the
// cycle, no privilege inside it) has no series and is counted; the rest
// of the cycle keeps its series with the namespace as vantage. The engine
// is given each namespace's targets with their namespace.
func TestVantageEngineUnprobed(t *testing.T) {
	snap := vSnapshot()
	f := vantageFixture(t, snap)
	// No namespace here: mode host, both 198.18.7.11 are one ambiguous
	// address, the rest from the host.
	f.svc.loop.Cycle(context.Background())
	_, fams := f.scrape(t)
	if v, _ := vvalue(fams, "openstack_vm_probe_duplicate_addresses", nil); v != 1 {
		t.Errorf("duplicates from the host: %v", v)
	}
	if n := len(find(fams, "openstack_vm_icmp_up", map[string]string{"vantage": "host"})); n != 3 {
		t.Errorf("%d host series, want 3", n)
	}
	if m := fams["openstack_vm_network_namespace_present"].GetMetric(); len(m) != 0 {
		t.Errorf("namespace states in host mode: %v", m)
	}

	// The namespaces of net-a and net-b appear, with an address on the
	// VMs' subnet; the engine finds net-b's gone during the cycle.
	f.svc.loop.namespaces = func(string) targets.Namespaces {
		return fakeNS{targets.PrefixOVNMetadata + vnetA: "198.18.7.2/24", targets.PrefixOVNMetadata + vnetB: "198.18.7.2/24"}
	}
	eng := &vanishingEngine{gone: targets.PrefixOVNMetadata + vnetB}
	cfg, _ := f.svc.loop.current()
	f.svc.loop.SetConfig(cfg, eng)
	f.svc.loop.Cycle(context.Background())
	_, fams = f.scrape(t)
	for reason, want := range map[string]float64{targets.ReasonNoNamespace: 2, targets.ReasonUnknownNetwork: 1} {
		if v, _ := vvalue(fams, "openstack_vm_probe_unprobed_addresses", map[string]string{"reason": reason}); v != want {
			t.Errorf("%s: %v, want %v (net-c by selection, net-b by the engine)", reason, v, want)
		}
	}
	want := []probes.Target{{Addr: netip.MustParseAddr("198.18.7.11"), Namespace: targets.PrefixOVNMetadata + vnetA},
		{Addr: netip.MustParseAddr("198.19.0.5")}, {Addr: netip.MustParseAddr("198.18.7.11"), Namespace: targets.PrefixOVNMetadata + vnetB}}
	if !slices.Equal(eng.got, want) {
		t.Errorf("engine got %v\nwant %v", eng.got, want)
	}
	ups := find(fams, "openstack_vm_icmp_up", nil)
	if len(ups) != 2 {
		t.Fatalf("icmp_up %v", ups)
	}
	if l := find(fams, "openstack_vm_icmp_up", map[string]string{"id": "s1", "address": "198.18.7.11"}); len(l) != 1 ||
		metricLabels(l[0])["vantage"] != targets.PrefixOVNMetadata+vnetA || metricLabels(l[0])["network_id"] != vnetA {
		t.Errorf("namespace series %v", l)
	}
	if v, _ := vvalue(fams, "openstack_vm_probe_errors_total", map[string]string{"reason": "namespace"}); v != 1 {
		t.Errorf("namespace errors %v", v)
	}
	if v, _ := vvalue(fams, "openstack_vm_probe_duplicate_addresses", nil); v != 0 {
		t.Errorf("duplicates across namespaces: %v", v)
	}
}

// fakeNS is a node's namespaces, each with one address.
type fakeNS map[string]string

func (f fakeNS) List() ([]string, error) { return slices.Sorted(maps.Keys(f)), nil }
func (f fakeNS) Addrs(name string) ([]netip.Prefix, error) {
	return []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix(f[name])}, nil
}

type vanishingEngine struct {
	gone string
	got  []probes.Target
}

func (e *vanishingEngine) Probe(_ context.Context, ts []probes.Target) ([]probes.Result, error) {
	e.got = append([]probes.Target(nil), ts...)
	out := make([]probes.Result, len(ts))
	for i, t := range ts {
		out[i] = probes.Result{Sent: 1, Received: 1}
		if t.Namespace == e.gone {
			out[i] = probes.Result{Unprobed: probes.UnprobedNoNamespace}
		}
	}
	return out, nil
}
func (e *vanishingEngine) Stats() probes.Stats { return probes.Stats{NamespaceErrors: 1} }
func (e *vanishingEngine) Close() error        { return nil }

// vvalue is the value of the one series of name with labels match.
func vvalue(fams map[string]*dto.MetricFamily, name string, match map[string]string) (float64, bool) {
	ms := find(fams, name, match)
	if len(ms) != 1 {
		return 0, false
	}
	if g := ms[0].GetGauge(); g != nil {
		return g.GetValue(), true
	}
	return ms[0].GetCounter().GetValue(), true
}
