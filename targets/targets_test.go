package targets

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// fakeNamespaces is a node's namespaces without root: names and their
// addresses, or an error per namespace.
type fakeNamespaces struct {
	addrs   map[string][]string
	errs    map[string]error
	listErr error
	reads   map[string]int
}

func (f *fakeNamespaces) List() ([]string, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	return slices.Sorted(maps.Keys(f.addrs)), nil
}

func (f *fakeNamespaces) Addrs(name string) ([]netip.Prefix, error) {
	if f.reads == nil {
		f.reads = map[string]int{}
	}
	f.reads[name]++
	if err := f.errs[name]; err != nil {
		return nil, err
	}
	a, ok := f.addrs[name]
	if !ok {
		return nil, fmt.Errorf("namespace %s: %w", name, fs.ErrNotExist)
	}
	var out []netip.Prefix
	for _, s := range a {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out, nil
}

const (
	netA = "7d3c5b6e-1a2f-4e8d-9c0b-a1b2c3d4e5f6" // tenant, 198.18.7.0/24, namespace here
	netB = "8e4d6c7f-2b3a-4f9e-8d1c-b2c3d4e5f6a7" // tenant, the same CIDR, namespace here
	netC = "9f5e7d80-3c4b-4a0f-9e2d-c3d4e5f6a7b8" // tenant, no namespace here
	netP = "a0f68e91-4d5c-4b1a-8f3e-d4e5f6a7b8c9" // provider, routable from the host
	netE = "b1a79fa2-5e6d-4c2b-9a4f-e5f6a7b8c9d0" // namespace that cannot be entered
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func port(id, server, network, status string, ips ...string) inventory.Port {
	p := inventory.Port{ID: id, DeviceID: server, DeviceOwner: "compute:nova", NetworkID: network, Status: status}
	for _, ip := range ips {
		p.FixedIPs = append(p.FixedIPs, inventory.FixedIP{SubnetID: "sub", Addr: addr(ip)})
	}
	return p
}

func server(id string, addrs ...inventory.Address) inventory.Server {
	return inventory.Server{ID: id, Name: "vm-" + id, ProjectID: "p1", Host: "cmp-1", Status: "ACTIVE", Addresses: addrs}
}

func fixed(network, ip string) inventory.Address {
	return inventory.Address{Network: network, Addr: addr(ip), Raw: ip, Type: "fixed"}
}

// cloud is a host with two tenant networks of the same CIDR and the same
// VM address on each, a tenant network without namespace, a provider
// network, a floating address, IPv6 on a tenant network, a fixed address
// without a port, a port on a network id that is not a UUID, and a
// namespace that cannot be entered.
func cloud() (*inventory.Snapshot, *fakeNamespaces) {
	snap := &inventory.Snapshot{
		Servers: []inventory.Server{
			server("s1", fixed("net-a", "198.18.7.11"), fixed("net-a", "2001:db8:7::11"),
				inventory.Address{Network: "net-a", Addr: addr("198.19.0.5"), Raw: "198.19.0.5", Type: "floating"}),
			server("s2", fixed("net-b", "198.18.7.11")),
			server("s3", fixed("net-c", "198.18.9.3")),
			server("s4", fixed("provider", "198.18.200.4")),
			server("s5", fixed("net-x", "198.18.10.5")), // no port
			server("s6", fixed("odd", "198.18.11.6")),   // network id not a UUID
			server("s7", fixed("net-e", "198.18.12.7")), // namespace cannot be entered
			server("s8", fixed("net-a", "198.18.77.8")), // on net-a, outside the namespace's subnet
			server("s9", fixed("net-a", "198.18.7.12")), // DOWN port (still probed: Nova says ACTIVE)
		},
		Ports: []inventory.Port{
			port("p1", "s1", netA, "ACTIVE", "198.18.7.11", "2001:db8:7::11"),
			port("p2", "s2", netB, "ACTIVE", "198.18.7.11"),
			port("p3", "s3", netC, "ACTIVE", "198.18.9.3"),
			port("p4", "s4", netP, "ACTIVE", "198.18.200.4"),
			port("p6", "s6", "not-a-uuid", "ACTIVE", "198.18.11.6"),
			port("p7", "s7", netE, "ACTIVE", "198.18.12.7"),
			port("p8", "s8", netA, "ACTIVE", "198.18.77.8"),
			port("p9", "s9", netA, "DOWN", "198.18.7.12"),
			port("pd", "s-off", "c2b8a0b3-6f7e-4d3c-8b5a-f6a7b8c9d0e1", "DOWN", "198.18.13.1"), // server off: no namespace needed
			port("pn", "s-noip", "d3c9b1c4-7a8f-4e4d-9c6b-a7b8c9d0e1f2", "ACTIVE"),             // no fixed IP
		},
		PortsRead: true,
	}
	ns := &fakeNamespaces{
		addrs: map[string][]string{
			PrefixOVNMetadata + netA: {"169.254.169.254/32", "198.18.7.2/24"},
			PrefixOVNMetadata + netB: {"169.254.169.254/32", "198.18.7.2/24"},
			PrefixOVNMetadata + netE: {"198.18.12.2/24"},
			"ovmxt-unrelated":        {"198.18.9.2/24"},
		},
		errs: map[string]error{PrefixOVNMetadata + netE: fmt.Errorf("setns: %w", fs.ErrPermission)},
	}
	return snap, ns
}

func icmp(mut func(*config.ICMP)) *config.ICMP {
	c := config.Default().Probe.ICMP
	if mut != nil {
		mut(&c)
	}
	return &c
}

type got struct{ vantage, networkID string }

func byTarget(sel Selection) map[string]got {
	m := map[string]got{}
	for _, t := range sel.Targets {
		m[t.ServerID+" "+t.Addr.String()] = got{t.Vantage, t.NetworkID}
		if t.Vantage != VantageHost && t.Namespace != t.Vantage || t.Vantage == VantageHost && t.Namespace != "" {
			panic(fmt.Sprintf("vantage %q namespace %q", t.Vantage, t.Namespace))
		}
	}
	return m
}

func byUnprobed(sel Selection) map[string]string {
	m := map[string]string{}
	for _, u := range sel.Unprobed {
		m[u.ServerID+" "+u.Addr.String()] = u.Reason
	}
	return m
}

func TestSelectOVNMetadata(t *testing.T) {
	snap, ns := cloud()
	sel := Select(snap, icmp(func(c *config.ICMP) { c.HostRoutableNetworks = []string{"provider"} }), Options{Engine: "shared", Namespaces: ns})
	if sel.Mode != config.VantageOVNMetadata {
		t.Fatalf("mode %s", sel.Mode)
	}
	wantTargets := map[string]got{
		"s1 198.18.7.11":  {PrefixOVNMetadata + netA, netA},
		"s1 198.19.0.5":   {VantageHost, ""}, // floating: host
		"s2 198.18.7.11":  {PrefixOVNMetadata + netB, netB},
		"s4 198.18.200.4": {VantageHost, netP}, // routable by name
		"s9 198.18.7.12":  {PrefixOVNMetadata + netA, netA},
	}
	if g := byTarget(sel); !maps.Equal(g, wantTargets) {
		t.Errorf("targets\n got %v\nwant %v", g, wantTargets)
	}
	wantUnprobed := map[string]string{
		"s1 2001:db8:7::11": ReasonNoSourceAddress, // IPv6: the OVN namespace has none
		"s3 198.18.9.3":     ReasonNoNamespace,
		"s5 198.18.10.5":    ReasonUnknownNetwork,
		"s6 198.18.11.6":    ReasonUnknownNetwork,
		"s7 198.18.12.7":    ReasonNoPrivilege,
		"s8 198.18.77.8":    ReasonNoSourceAddress,
	}
	if g := byUnprobed(sel); !maps.Equal(g, wantUnprobed) {
		t.Errorf("unprobed\n got %v\nwant %v", g, wantUnprobed)
	}
	if sel.EnterErrors != 1 {
		t.Errorf("%d namespaces could not be entered, want 1", sel.EnterErrors)
	}
	counts := sel.UnprobedCounts()
	if len(counts) != len(Reasons) || counts[ReasonUnknownNetwork] != 2 || counts[ReasonEngineUnsupported] != 0 {
		t.Errorf("counts %v", counts)
	}
	// Each namespace's addresses read once per selection.
	for n, r := range ns.reads {
		if r != 1 {
			t.Errorf("%s read %d times", n, r)
		}
	}
	// The networks with ACTIVE ports with addresses here, but the
	// routable one; the DOWN-only network and the port without IP none.
	wantNS := []NamespaceState{
		{netA, PrefixOVNMetadata + netA, true},
		{netB, PrefixOVNMetadata + netB, true},
		{netC, PrefixOVNMetadata + netC, false},
		{netE, PrefixOVNMetadata + netE, true},
	}
	if !slices.Equal(sel.Namespaces, wantNS) {
		t.Errorf("namespaces\n got %v\nwant %v", sel.Namespaces, wantNS)
	}

	// Each target carries its port (none for the floating address) and the
	// namespace's address it is probed from (none from the host).
	for _, tg := range sel.Targets {
		wantPort, wantSrc := "", ""
		switch tg.ServerID + " " + tg.Addr.String() {
		case "s1 198.18.7.11":
			wantPort, wantSrc = "p1", "198.18.7.2"
		case "s2 198.18.7.11":
			wantPort, wantSrc = "p2", "198.18.7.2"
		case "s9 198.18.7.12":
			wantPort, wantSrc = "p9", "198.18.7.2"
		case "s4 198.18.200.4":
			wantPort = "p4"
		}
		gotPort, gotSrc := "", ""
		if tg.Port != nil {
			gotPort = tg.Port.ID
		}
		if tg.Source.IsValid() {
			gotSrc = tg.Source.String()
		}
		if gotPort != wantPort || gotSrc != wantSrc {
			t.Errorf("%s %s: port %q source %q, want %q %q", tg.ServerID, tg.Addr, gotPort, gotSrc, wantPort, wantSrc)
		}
	}

	// The same address on two networks is two probes: the duplicate rule
	// holds within one vantage only.
	plan := PlanCycle(sel.Targets)
	if len(plan.Ambiguous) != 0 || len(plan.Probes) != len(sel.Targets) {
		t.Errorf("plan %+v", plan)
	}
}

// A provider network named by its Neutron id stays on the host too, and
// is left out of the namespace states.
func TestRoutableByNetworkID(t *testing.T) {
	snap, ns := cloud()
	sel := Select(snap, icmp(func(c *config.ICMP) { c.HostRoutableNetworks = []string{netP, netC} }), Options{Namespaces: ns})
	g := byTarget(sel)
	if g["s4 198.18.200.4"] != (got{VantageHost, netP}) || g["s3 198.18.9.3"] != (got{VantageHost, netC}) {
		t.Errorf("targets %v", g)
	}
	for _, st := range sel.Namespaces {
		if st.NetworkID == netC || st.NetworkID == netP {
			t.Errorf("routable network in the namespace states: %v", st)
		}
	}
}

func TestModes(t *testing.T) {
	uuid := "7d3c5b6e-1a2f-4e8d-9c0b-a1b2c3d4e5f6"
	for _, tc := range []struct {
		vantage string
		names   []string
		want    string
	}{
		{"auto", nil, "host"},
		{"auto", []string{"qrouter-" + uuid, "ovmxt-1"}, "host"},
		{"auto", []string{"qdhcp-" + uuid}, "dhcp"},
		{"auto", []string{"qdhcp-" + uuid, "ovnmeta-" + uuid}, "ovn-metadata"},
		{"auto", []string{"ovnmeta-not-a-uuid"}, "host"},
		{"host", []string{"ovnmeta-" + uuid}, "host"},
		{"dhcp", nil, "dhcp"},
		{"ovn-metadata", nil, "ovn-metadata"},
	} {
		if got := Mode(tc.vantage, tc.names); got != tc.want {
			t.Errorf("Mode(%s, %v) = %s, want %s", tc.vantage, tc.names, got, tc.want)
		}
	}
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{uuid, true}, {"7D3C5B6E-1A2F-4E8D-9C0B-A1B2C3D4E5F6", true}, {"", false}, {"not-a-uuid", false},
		{"7d3c5b6e1a2f4e8d9c0ba1b2c3d4e5f6", false}, {"../../../etc/passwd-aaaa-bbbb-cccccccccccc", false},
		{"7d3c5b6e-1a2f-4e8d-9c0b-a1b2c3d4e5fg", false}, {"7d3c5b6e-1a2f-4e8d-9c0b/a1b2c3d4e5f6", false},
	} {
		if IsUUID(tc.id) != tc.ok {
			t.Errorf("IsUUID(%q) = %v", tc.id, !tc.ok)
		}
		if ns := NamespaceFor("ovn-metadata", tc.id); (ns != "") != tc.ok {
			t.Errorf("NamespaceFor(%q) = %q", tc.id, ns)
		}
	}
}

// Mode host (and auto on a node without namespaces) is today's behaviour:
// every address from the host, with its network id when a port has it,
// and no namespace state.
func TestSelectHost(t *testing.T) {
	snap, ns := cloud()
	for _, sel := range []Selection{
		Select(snap, icmp(func(c *config.ICMP) { c.Vantage = "host" }), Options{Namespaces: ns}),
		Select(snap, icmp(nil), Options{Namespaces: &fakeNamespaces{}}),
		Select(snap, icmp(nil), Options{}),
	} {
		if sel.Mode != "host" || len(sel.Unprobed) != 0 || sel.Namespaces != nil {
			t.Errorf("mode %s, unprobed %v, namespaces %v", sel.Mode, sel.Unprobed, sel.Namespaces)
		}
		g := byTarget(sel)
		if len(g) != 11 || g["s1 198.18.7.11"] != (got{VantageHost, netA}) || g["s5 198.18.10.5"] != (got{VantageHost, ""}) {
			t.Errorf("targets %v", g)
		}
		// The same address of two servers seen from the host: ambiguous.
		plan := PlanCycle(sel.Targets)
		if ids := plan.Ambiguous[Probe{"", addr("198.18.7.11")}]; !slices.Equal(ids, []string{"s1", "s2"}) {
			t.Errorf("ambiguous %v", plan.Ambiguous)
		}
	}
	// A failure to list the namespaces: auto falls back to host, and says so.
	sel := Select(snap, icmp(nil), Options{Namespaces: &fakeNamespaces{listErr: fs.ErrPermission}})
	if sel.Mode != "host" || !errors.Is(sel.NamespaceErr, fs.ErrPermission) {
		t.Errorf("mode %s err %v", sel.Mode, sel.NamespaceErr)
	}
}

// dhcp mode uses qdhcp-<network id>; pro-bing cannot probe from a
// namespace; ports never read make every fixed address unknown_network.
func TestSelectDHCPAndEngine(t *testing.T) {
	snap, _ := cloud()
	ns := &fakeNamespaces{addrs: map[string][]string{PrefixDHCP + netA: {"198.18.7.3/24", "fe80::1/64"}}}
	sel := Select(snap, icmp(nil), Options{Engine: "shared", Namespaces: ns})
	if sel.Mode != "dhcp" || byTarget(sel)["s1 198.18.7.11"] != (got{PrefixDHCP + netA, netA}) || byUnprobed(sel)["s2 198.18.7.11"] != ReasonNoNamespace {
		t.Errorf("dhcp: %v %v", byTarget(sel), byUnprobed(sel))
	}
	sel = Select(snap, icmp(nil), Options{Engine: "pro-bing", Namespaces: ns})
	if byUnprobed(sel)["s1 198.18.7.11"] != ReasonEngineUnsupported || byTarget(sel)["s1 198.19.0.5"].vantage != VantageHost {
		t.Errorf("pro-bing: %v %v", byTarget(sel), byUnprobed(sel))
	}
	snap.Ports, snap.PortsRead = nil, false
	sel = Select(snap, icmp(nil), Options{Engine: "shared", Namespaces: ns})
	if c := sel.UnprobedCounts(); c[ReasonUnknownNetwork] != 10 || len(sel.Targets) != 1 || len(sel.Namespaces) != 0 {
		t.Errorf("without ports: %v, %d targets, namespaces %v", c, len(sel.Targets), sel.Namespaces)
	}
}

func TestAddressSelection(t *testing.T) {
	p := icmp(func(p *config.ICMP) {
		p.Networks = []string{"provider", "public"}
		p.AddressTypes = []string{"floating", "fixed"}
		p.IPVersions = []int{4}
	})
	for _, tc := range []struct {
		addr, typ, network string
		want               bool
	}{
		{"198.18.0.1", "fixed", "provider", true},
		{"198.18.0.1", "floating", "public", true},
		{"198.18.0.1", "fixed", "tenant-net", false},
		{"2001:2::1", "fixed", "provider", false},
		{"::ffff:198.18.0.1", "fixed", "provider", true},
		{"198.18.0.1", "other", "provider", false},
	} {
		if got := WantsAddress(p, netip.MustParseAddr(tc.addr), tc.typ, tc.network); got != tc.want {
			t.Errorf("WantsAddress(%s, %s, %s) = %v, want %v", tc.addr, tc.typ, tc.network, got, tc.want)
		}
	}
	p.IPVersions = []int{6}
	if !WantsAddress(p, netip.MustParseAddr("2001:2::1"), "fixed", "public") {
		t.Error("IPv6 address not wanted with ip_versions [6]")
	}
	if !WantsStatus(p, "ACTIVE") || WantsStatus(p, "SHUTOFF") {
		t.Error("status selection")
	}
}

func TestOptOut(t *testing.T) {
	p := icmp(nil)
	for _, tc := range []struct {
		meta map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"monitoring_icmp": "off"}, true},
		{map[string]string{"monitoring_icmp": " Disabled "}, true},
		{map[string]string{"monitoring_icmp": "false"}, true},
		{map[string]string{"monitoring_icmp": "0"}, true},
		{map[string]string{"monitoring_icmp": "on"}, false},
		{map[string]string{"other": "off"}, false},
	} {
		if got := OptedOut(p, tc.meta); got != tc.want {
			t.Errorf("OptedOut(%v) = %v, want %v", tc.meta, got, tc.want)
		}
	}
	p.OptOutMetadataKey = ""
	if OptedOut(p, map[string]string{"monitoring_icmp": "off"}) {
		t.Error("opt-out with an empty key")
	}
}

// Invalid addresses are counted, not probed; a server out of the probed
// statuses or opted out contributes nothing.
func TestInvalidAndFiltered(t *testing.T) {
	snap := &inventory.Snapshot{Servers: []inventory.Server{
		server("a", inventory.Address{Network: "n", Raw: "garbage"}, fixed("n", "224.0.0.1"), fixed("n", "0.0.0.0"),
			fixed("n", "255.255.255.255"), fixed("n", "fe80::1"), fixed("n", "198.18.0.1")),
		{ID: "b", Status: "SHUTOFF", Addresses: []inventory.Address{fixed("n", "198.18.0.2")}},
		{ID: "c", Status: "ACTIVE", Metadata: map[string]string{"monitoring_icmp": "off"}, Addresses: []inventory.Address{fixed("n", "198.18.0.3")}},
	}}
	sel := Select(snap, icmp(nil), Options{})
	if sel.Invalid != 5 || len(sel.Targets) != 1 || sel.Targets[0].Addr != addr("198.18.0.1") {
		t.Errorf("invalid %d, targets %+v", sel.Invalid, sel.Targets)
	}
}
