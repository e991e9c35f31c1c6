package inventory

import (
	"context"
	"net/netip"
	"testing"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

// The stand-in's Neutron (the demo's) answers the exporter's own port and
// security group listings: the host filter, pages linked by marker, the
// ports derived from the servers' fixed addresses with their overrides,
// and a group that admits ICMP.
func TestStandinNeutron(t *testing.T) {
	cloud := startStandin(t)
	cloud.EnableNeutron()
	addrs := func(a ...string) []standin.Address {
		var out []standin.Address
		for _, s := range a {
			out = append(out, standin.Address{Network: "net-a", Addr: s, Type: "fixed"})
		}
		return out
	}
	cloud.Put(
		standin.Server{ID: "s1", Host: "h1", VMState: "active", PowerState: 1, Addresses: append(addrs("198.18.0.1", "2001:db8::1", "not-an-address"),
			standin.Address{Network: "public", Addr: "198.19.0.1", Type: "floating"})},
		standin.Server{ID: "s2", Host: "h1", VMState: "active", PowerState: 1, Addresses: addrs("198.18.0.2"), PortStatus: "DOWN", VIFType: "binding_failed"},
		standin.Server{ID: "s3", Host: "h2", VMState: "active", PowerState: 1, Addresses: addrs("198.18.0.3")},
		standin.Server{ID: "s4", VMState: "error", Addresses: addrs("198.18.0.4")},
	)
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.Scope, c.Host, c.PageSize = "host", "h1", 1 })
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := inv.Snapshot()
	if !snap.PortsRead || len(snap.Ports) != 3 {
		t.Fatalf("ports of h1: %+v", snap.Ports)
	}
	byAddr := map[netip.Addr]Port{}
	for _, p := range snap.Ports {
		if p.HostID != "h1" || p.NetworkID != standin.NetworkID("net-a") || len(p.FixedIPs) != 1 ||
			p.DeviceOwner != "compute:nova" || len(p.SecurityGroups) != 1 || p.PortSecurityEnabled == nil {
			t.Errorf("port %+v", p)
		}
		if len(p.FixedIPs) == 1 {
			byAddr[p.FixedIPs[0].Addr] = p
		}
	}
	if p := byAddr[netip.MustParseAddr("198.18.0.1")]; p.DeviceID != "s1" || p.Status != "ACTIVE" || p.VIFType != "ovs" {
		t.Errorf("s1's port %+v", p)
	}
	if p := byAddr[netip.MustParseAddr("198.18.0.2")]; p.DeviceID != "s2" || p.Status != "DOWN" || p.VIFType != "binding_failed" {
		t.Errorf("s2's port %+v", p)
	}
	if _, ok := byAddr[netip.MustParseAddr("2001:db8::1")]; !ok {
		t.Errorf("no port of s1's IPv6 address")
	}
	if h := inv.Health(); !h.PortsUp || h.SignalReads[SignalPorts] != 1 {
		t.Errorf("health %+v", h)
	}
	known := inv.secGroups
	g := known.Groups[standin.DemoSecurityGroupID]
	if g == nil || !g.Stateful || len(g.Rules) != 4 {
		t.Fatalf("security groups %+v", known.Groups)
	}
}
