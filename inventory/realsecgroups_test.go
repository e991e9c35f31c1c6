//go:build lab

package inventory

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/portsecurity"
)

// TestRealNeutronSecurityGroups reads a host's 30 ports in 10 security
// groups (one naming an address group) from the real neutron-server (Zed,
// ML2/OVN): one listing of the groups and one of the address groups a
// refresh, whatever the number of ports; the API cost of a refresh is
// logged (OVE_COST=1 go test -tags lab -run TestRealNeutronSecurityGroups
// -v ./inventory/ prints it). Then the least privilege: the dedicated role
// of docs/security.md sees no group of another project by default, and
// every group and address group of the host's ports with the Neutron
// policy block of docs/security.md.
func TestRealNeutronSecurityGroups(t *testing.T) {
	t.Parallel()
	lab := startLab(t)
	ctx := context.Background()
	defer func() {
		if t.Failed() {
			t.Logf("openstack logs:\n%s", lab.Logs())
		}
	}()
	net, err := lab.CreateNetwork(ctx, "tenant-a", "")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := lab.CreateSubnet(ctx, net.ID, "198.18.7.0/24")
	if err != nil {
		t.Fatal(err)
	}
	p := net.ProjectID
	if err := lab.Neutron(ctx, http.MethodPut, "/v2.0/quotas/"+p, map[string]any{"quota": map[string]any{
		"security_group": 100, "security_group_rule": 1000, "port": 1000}}, nil); err != nil {
		t.Fatal(err)
	}
	ag, err := lab.CreateAddressGroup(ctx, p, "meta", "198.18.7.2/32")
	if err != nil {
		t.Fatal(err)
	}
	// Three ports a group: enough to show one listing serves them all (each
	// port costs the lab's Neutron about half a second of CPU to make).
	const nGroups, nPorts = 10, 30
	var groups []string
	for i := range nGroups {
		g, err := lab.CreateGroup(ctx, p, fmt.Sprintf("g%d", i), true)
		if err != nil {
			t.Fatal(err)
		}
		r := openstacklab.SecurityGroupRule{Direction: "ingress", Protocol: "icmp", RemoteIPPrefix: fmt.Sprintf("198.18.%d.0/24", i)}
		if i == 0 {
			r.RemoteIPPrefix, r.RemoteAddressGroupID = "", ag
		}
		if _, err := lab.AddRule(ctx, p, g, r); err != nil {
			t.Fatal(err)
		}
		if _, err := lab.AddRule(ctx, p, g, openstacklab.SecurityGroupRule{Direction: "ingress", Protocol: "tcp",
			PortRangeMin: ptrInt(22), PortRangeMax: ptrInt(22)}); err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	// One port a request, as Nova makes them: Neutron's bulk create, on
	// sqlite under load, answered 500 and left addresses allocated.
	var servers []openstacklab.Server
	for i := range nPorts {
		id := fmt.Sprintf("40000000-0000-4000-8000-%012d", i)
		spec := openstacklab.PortSpec{NetworkID: net.ID, ServerID: id, Host: "cmp-1", ProjectID: p,
			FixedIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 7, byte(10 + i)})}, SecurityGroups: []string{groups[i%nGroups]}}
		port, err := lab.CreatePort(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, openstacklab.Server{ID: id, Name: fmt.Sprintf("vm-%03d", i), Host: "cmp-1", VMState: "active",
			PowerState: 1, ProjectID: p, Addresses: openstacklab.PortAddresses("tenant-a", port, sub)})
	}
	if _, err := lab.Seed(ctx, servers); err != nil {
		t.Fatal(err)
	}

	inv := labInventory(t, lab.AdminEnv(), func(c *config.OpenStack) { c.Scope, c.Host, c.PageSize = "host", "cmp-1", 1000 })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, inv *Inventory, wantGroups int) {
		t.Helper()
		snap := inv.Snapshot()
		if len(snap.Ports) != nPorts {
			t.Fatalf("%d ports", len(snap.Ports))
		}
		known := snap.SecurityGroups
		if known == nil || len(known.Groups) != wantGroups {
			t.Fatalf("groups: %+v", known)
		}
		if wantGroups == 0 {
			return
		}
		for _, g := range groups {
			if k := known.Groups[g]; k == nil || !k.Stateful || len(k.Rules) != 4 { // 2 egress by default, icmp, tcp
				t.Errorf("group %s: %+v", g, k)
			}
		}
		if a := known.AddressGroups[ag]; len(a) != 1 || a[0] != netip.MustParsePrefix("198.18.7.2/32") {
			t.Errorf("address group %v", known.AddressGroups)
		}
	}
	check(t, inv, nGroups)

	// The cost of one refresh (incremental: Nova's changes, the ports, the
	// groups), and of the groups' listings alone.
	h0 := inv.Health()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	h1 := inv.Health()
	if got := h1.SignalReads[SignalSecurityGroups] - h0.SignalReads[SignalSecurityGroups]; got != 2 {
		t.Errorf("%d security group listings in a refresh, want 2 (groups, address groups)", got)
	}
	if got := h1.SignalReads[SignalPorts] - h0.SignalReads[SignalPorts]; got != 1 {
		t.Errorf("%d port listings in a refresh, want 1", got)
	}
	ids := portGroupIDs(inv.Snapshot().Ports)
	before := inv.Health()
	gs, err := inv.client.ListSecurityGroups(ctx, ids)
	if err != nil || len(gs) != nGroups {
		t.Fatalf("%d groups, %v", len(gs), err)
	}
	mid := inv.Health()
	if _, err := inv.client.ListAddressGroups(ctx, addressGroupIDs(gs)); err != nil {
		t.Fatal(err)
	}
	after := inv.Health()
	if _, err := inv.client.ListPorts(ctx, "cmp-1", 1000); err != nil {
		t.Fatal(err)
	}
	ports := inv.Health()
	if n := mid.Requests - before.Requests; n != 1 {
		t.Errorf("%d requests for the groups of %d ports, want 1", n, nPorts)
	}
	t.Logf("a refresh of a host with %d ports in %d groups: %d requests, %d response bytes (all of it: Nova, Neutron)",
		nPorts, nGroups, h1.Requests-h0.Requests, h1.Bytes-h0.Bytes)
	t.Logf("of which the port listing: %d request(s), %d bytes; the groups: %d request(s), %d bytes; the address groups: %d request(s), %d bytes",
		ports.Requests-after.Requests, ports.Bytes-after.Bytes, mid.Requests-before.Requests, mid.Bytes-before.Bytes,
		after.Requests-mid.Requests, after.Bytes-mid.Bytes)

	// Least privilege: the dedicated role in a project of its own.
	const user, password = "vm-exporter", "vm-exporter-password"
	if err := lab.CreateUser(ctx, user, password, "monitoring", "reader", "vm-exporter"); err != nil {
		t.Fatal(err)
	}
	env := lab.AdminEnv()
	env["OS_USERNAME"], env["OS_PASSWORD"], env["OS_PROJECT_NAME"] = user, password, "monitoring"
	var seen map[string]*portsecurity.Group
	var seenAG map[string][]netip.Prefix
	role := func() (int, int) {
		t.Helper()
		creds, err := LoadCredentialsFrom(config.OpenStack{}, func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(creds, ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if seen, err = c.ListSecurityGroups(ctx, groups); err != nil {
			t.Fatal(err)
		}
		if seenAG, err = c.ListAddressGroups(ctx, []string{ag}); err != nil {
			t.Fatal(err)
		}
		return len(seen), len(seenAG)
	}
	g, a := role()
	t.Logf("the role without policy: %d groups, %d address groups", g, a)
	if g != 0 || a != 0 {
		t.Errorf("without the policy, the role sees %d groups and %d address groups of another project", g, a)
	}
	if err := lab.SetNeutronPolicy(securityDocNeutronPolicy(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.SetNeutronPolicy("") })
	deadline := time.Now().Add(time.Minute)
	for {
		g, a = role()
		if g == nGroups && a == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the documented policy, the role sees %d groups and %d address groups", g, a)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, id := range groups {
		if k := seen[id]; k == nil || !k.Stateful || len(k.Rules) != 4 {
			t.Errorf("the role's view of group %s: %+v", id, k)
		}
	}
	if a := seenAG[ag]; len(a) != 1 || a[0] != netip.MustParsePrefix("198.18.7.2/32") {
		t.Errorf("the role's view of the address group: %v", seenAG)
	}
}

func ptrInt(v int) *int { return &v }
