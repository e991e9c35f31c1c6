//go:build lab

package exporter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

// TestRealNeutronPortSecurity runs the exporter against the real
// neutron-server (Zed, ML2/OVN) with ports in every kind of security group,
// and checks what it serves: openstack_vm_icmp_expected per address, from
// the network's OVN metadata port's address (the namespace holding it is
// made by the test: a namespace of its own, ovmxt-*, with a veth
// holding the metadata port's address, mounted as ovnmeta-<network id> in
// a private netns_dir: the echo requests go nowhere); and
// openstack_vm_port_status / openstack_vm_port_fixed_ips for every port,
// all in binding_failed (cmp-1 has no OVN chassis, so ML2 binds nothing).
func TestRealNeutronPortSecurity(t *testing.T) {
	t.Parallel()
	netlab.Require(t)
	ctx := context.Background()
	lab := openstacklab.StartForTest(t, openstacklab.Options{})
	defer func() {
		if t.Failed() {
			t.Logf("openstack logs:\n%s", lab.Logs())
		}
	}()
	must := func(id string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	net, err := lab.CreateNetwork(ctx, "tenant-a", "")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := lab.CreateSubnet(ctx, net.ID, "198.18.7.0/24")
	if err != nil {
		t.Fatal(err)
	}
	// The source of the echo requests: OVN's metadata port of the network.
	meta, err := lab.ListPorts(ctx, url.Values{"network_id": {net.ID}, "device_owner": {"network:distributed"}})
	if err != nil || len(meta) != 1 || len(meta[0].FixedIPs) != 1 {
		t.Fatalf("metadata port: %+v %v", meta, err)
	}
	src := netip.MustParseAddr(meta[0].FixedIPs[0].IPAddress)
	// A /28 around the source and a /25 without it.
	srcNet := netip.PrefixFrom(src, 28).Masked().String()
	otherNet := "198.18.7.128/25"
	if netip.MustParsePrefix(otherNet).Contains(src) {
		t.Fatalf("metadata port address %s inside %s", src, otherNet)
	}

	p := net.ProjectID
	// Neutron's default quota is 10 groups a project.
	if err := lab.Neutron(ctx, http.MethodPut, "/v2.0/quotas/"+p, map[string]any{"quota": map[string]any{
		"security_group": 100, "security_group_rule": 1000}}, nil); err != nil {
		t.Fatal(err)
	}
	icmpIn := func(g string, r openstacklab.SecurityGroupRule) {
		t.Helper()
		r.Direction = "ingress"
		if r.Protocol == "" {
			r.Protocol = "icmp"
		}
		must(lab.AddRule(ctx, p, g, r))
	}
	ptr := func(v int) *int { return &v }
	agIn := must(lab.CreateAddressGroup(ctx, p, "ag-meta", src.String()+"/32"))
	agOut := must(lab.CreateAddressGroup(ctx, p, "ag-other", "198.18.9.0/24"))
	groups := map[string]string{}
	group := func(name string, stateful bool, rules ...openstacklab.SecurityGroupRule) {
		t.Helper()
		g := must(lab.CreateGroup(ctx, p, name, stateful))
		for _, r := range rules {
			icmpIn(g, r)
		}
		groups[name] = g
	}
	group("any", true, openstacklab.SecurityGroupRule{RemoteIPPrefix: "0.0.0.0/0"})
	group("echo-only", true, openstacklab.SecurityGroupRule{PortRangeMin: ptr(8), PortRangeMax: ptr(0)})
	group("reply-only", true, openstacklab.SecurityGroupRule{PortRangeMin: ptr(0)})
	group("prefix-in", true, openstacklab.SecurityGroupRule{RemoteIPPrefix: srcNet})
	group("prefix-out", true, openstacklab.SecurityGroupRule{RemoteIPPrefix: otherNet})
	group("remote-group", true)
	icmpIn(groups["remote-group"], openstacklab.SecurityGroupRule{RemoteGroupID: groups["remote-group"]})
	group("ag-in", true, openstacklab.SecurityGroupRule{RemoteAddressGroupID: agIn})
	group("ag-out", true, openstacklab.SecurityGroupRule{RemoteAddressGroupID: agOut})
	group("tcp", true, openstacklab.SecurityGroupRule{Protocol: "tcp", PortRangeMin: ptr(22), PortRangeMax: ptr(22)})
	group("ipv6-only", true, openstacklab.SecurityGroupRule{EtherType: "IPv6", Protocol: "icmp"})
	group("stateless-egress", false, openstacklab.SecurityGroupRule{})
	group("stateless-no-egress", false, openstacklab.SecurityGroupRule{})
	if err := lab.DeleteRules(ctx, groups["stateless-no-egress"], "egress"); err != nil {
		t.Fatal(err)
	}

	// One server a case, each with one port on cmp-1, and what the
	// exporter must say of it.
	cases := []struct {
		name     string
		spec     openstacklab.PortSpec
		expected string // "1", "0", "" (absent)
	}{
		{"any", openstacklab.PortSpec{SecurityGroups: []string{groups["any"]}}, "1"},
		{"echo-only", openstacklab.PortSpec{SecurityGroups: []string{groups["echo-only"]}}, "1"},
		{"reply-only", openstacklab.PortSpec{SecurityGroups: []string{groups["reply-only"]}}, "0"},
		{"no-port-security", openstacklab.PortSpec{NoPortSecurity: true}, "1"},
		{"project-default", openstacklab.PortSpec{}, "0"},
		{"no-group", openstacklab.PortSpec{SecurityGroups: []string{}}, "0"},
		{"prefix-in", openstacklab.PortSpec{SecurityGroups: []string{groups["prefix-in"]}}, "1"},
		{"prefix-out", openstacklab.PortSpec{SecurityGroups: []string{groups["prefix-out"]}}, "0"},
		{"remote-group", openstacklab.PortSpec{SecurityGroups: []string{groups["remote-group"]}}, "0"},
		{"ag-in", openstacklab.PortSpec{SecurityGroups: []string{groups["ag-in"]}}, "1"},
		{"ag-out", openstacklab.PortSpec{SecurityGroups: []string{groups["ag-out"]}}, "0"},
		{"tcp-and-prefix-out", openstacklab.PortSpec{SecurityGroups: []string{groups["tcp"], groups["prefix-out"]}}, "0"},
		{"tcp-and-any", openstacklab.PortSpec{SecurityGroups: []string{groups["tcp"], groups["any"]}}, "1"},
		{"ipv6-only", openstacklab.PortSpec{SecurityGroups: []string{groups["ipv6-only"]}}, "0"},
		{"stateless-egress", openstacklab.PortSpec{SecurityGroups: []string{groups["stateless-egress"]}}, "1"},
		{"stateless-no-egress", openstacklab.PortSpec{SecurityGroups: []string{groups["stateless-no-egress"]}}, "0"},
	}
	var servers []openstacklab.Server
	portOf := map[string]openstacklab.Port{} // server name → port
	for i, c := range cases {
		id := fmt.Sprintf("30000000-0000-4000-8000-%012d", i)
		spec := c.spec
		spec.NetworkID, spec.ServerID, spec.Host = net.ID, id, "cmp-1"
		spec.FixedIPs = []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 7, byte(20 + i)})}
		port, err := lab.CreatePort(ctx, spec)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		portOf[c.name] = port
		servers = append(servers, openstacklab.Server{ID: id, Name: c.name, Host: "cmp-1", VMState: "active", PowerState: 1,
			ProjectID: p, Addresses: openstacklab.PortAddresses("tenant-a", port, sub)})
	}
	// A port without fixed IP, of a server Nova does not list.
	noIP, err := lab.CreatePort(ctx, openstacklab.PortSpec{NetworkID: net.ID, ServerID: "30000000-0000-4000-8000-999999999999", Host: "cmp-1", NoFixedIPs: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Seed(ctx, servers); err != nil {
		t.Fatal(err)
	}

	dir := metadataNamespace(t, net.ID, src)
	env := lab.AdminEnv()
	cfg := config.Default()
	cfg.OpenStack.Scope, cfg.OpenStack.Host = "host", "cmp-1"
	cfg.OpenStack.Timeout = 5 * time.Minute
	cfg.Probe.ICMP.NetnsDir = dir
	cfg.Probe.ICMP.Mode, cfg.Probe.ICMP.Count, cfg.Probe.ICMP.Timeout = "privileged", 1, 200*time.Millisecond
	svc, err := New(cfg, Deps{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, e := svc.loop.current(); e != nil {
			e.Close()
		}
	})
	if err := svc.inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	svc.loop.Cycle(ctx)
	f := &fixture{svc: svc}
	text, fams := f.scrape(t)
	lintMetrics(t, text)

	vantage := targets.PrefixOVNMetadata + net.ID
	for _, c := range cases {
		l := map[string]string{"name": c.name, "vantage": vantage, "network_id": net.ID}
		if len(find(fams, "openstack_vm_icmp_up", l)) != 1 {
			t.Errorf("%s: no icmp_up series from %s", c.name, vantage)
			continue
		}
		v, ok := value(fams, "openstack_vm_icmp_expected", l)
		got := ""
		if ok {
			got = fmt.Sprint(v)
		}
		if got != c.expected {
			t.Errorf("%s: openstack_vm_icmp_expected %q, want %q", c.name, got, c.expected)
		}
	}
	// Every port: binding_failed (no chassis), DOWN, one fixed IP; the
	// port without one: 0, under its device id.
	for name, port := range portOf {
		l := map[string]string{"port_id": port.ID, "network_id": net.ID, "id": port.DeviceID, "name": name, "host": "cmp-1", "project_id": p}
		st := find(fams, "openstack_vm_port_status", l)
		if len(st) != 1 || metricLabels(st[0])["vif_type"] != "binding_failed" || metricLabels(st[0])["status"] != port.Status || port.Status != "DOWN" {
			t.Errorf("%s: port status %v (Neutron: %s %s)", name, st, port.Status, port.VIFType)
		}
		if v, ok := value(fams, "openstack_vm_port_fixed_ips", l); !ok || v != 1 {
			t.Errorf("%s: fixed IPs %v %v", name, v, ok)
		}
	}
	if v, ok := value(fams, "openstack_vm_port_fixed_ips", map[string]string{"port_id": noIP.ID, "id": noIP.DeviceID, "name": "", "host": "cmp-1"}); !ok || v != 0 {
		t.Errorf("port without fixed IP: %v %v\n%s", v, ok, text)
	}
	if n := len(fams["openstack_vm_port_status"].GetMetric()); n != len(cases)+1 {
		t.Errorf("%d port series, want %d", n, len(cases)+1)
	}
	// The groups and the address groups: one listing each.
	if v, _ := value(fams, "openstack_vm_api_signal_requests_total", map[string]string{"api": "security_groups"}); v != 2 {
		t.Errorf("security group listings: %v, want 2", v)
	}
	for _, m := range find(fams, "openstack_vm_api_signal_errors_total", map[string]string{"api": "security_groups"}) {
		if m.GetCounter().GetValue() != 0 {
			t.Errorf("security group errors: %v", m)
		}
	}
}

// metadataNamespace makes a namespace holding src/24 on a veth, as
// an OVN metadata namespace holds its port's address (and
// 169.254.169.254/32), and mounts it as ovnmeta-<networkID> in a private
// netns_dir, which it returns.
func metadataNamespace(t *testing.T, networkID string, src netip.Addr) string {
	t.Helper()
	name := fmt.Sprintf("ovmxt-%d-%x-meta", os.Getpid(), rand.Uint32())
	dir := t.TempDir()
	mount := filepath.Join(dir, targets.PrefixOVNMetadata+networkID)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("umount", mount).Run()
		_ = exec.Command("ip", "netns", "delete", name).Run()
	})
	run("ip", "netns", "add", name)
	// A veth pair inside the namespace (no dummy module on every kernel):
	// requests to the VMs' addresses go out d0 to d1 and no further.
	run("ip", "-n", name, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	run("ip", "-n", name, "link", "set", "d1", "up")
	run("ip", "-n", name, "addr", "add", netip.PrefixFrom(src, 24).String(), "dev", "d0")
	run("ip", "-n", name, "addr", "add", "169.254.169.254/32", "dev", "lo")
	run("ip", "-n", name, "link", "set", "lo", "up")
	run("ip", "-n", name, "link", "set", "d0", "up")
	if err := os.WriteFile(mount, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	run("mount", "--bind", filepath.Join("/run/netns", name), mount)
	return dir
}
