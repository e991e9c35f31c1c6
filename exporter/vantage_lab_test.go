//go:build lab

package exporter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

// TestVantageRealNamespaces runs the probe loop with the shared engine over
// real network namespaces: two networks with the same CIDR and the same VM
// address, each reached from its own "metadata" namespace. The namespaces
// live under /run/netns as ovmxt-* (never ovnmeta-*: a real OVN metadata
// agent deletes those) and are bind-mounted into a private netns_dir under
// the names the OVN metadata agent gives them, so vantage auto resolves to
// ovn-metadata. No echo request leaves those namespaces: every selected
// address has a namespace vantage or none.
func TestVantageRealNamespaces(t *testing.T) {
	netlab.Require(t)
	prefix := fmt.Sprintf("ovmxt-%d-%x-", os.Getpid(), rand.Uint32())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	dir := t.TempDir()
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			_ = exec.Command("umount", filepath.Join(dir, e.Name())).Run()
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
				_ = exec.Command("ip", "netns", "delete", f[0]).Run()
			}
		}
	})
	// network builds a metadata namespace (198.18.7.2/24 and
	// 169.254.169.254/32, as OVN's) joined to a VM namespace holding
	// 198.18.7.11 (answers) and 198.18.7.12 (drops echo requests), and
	// mounts the first as ovnmeta-<id> in dir.
	network := func(i int, id string) {
		meta, vm := fmt.Sprintf("%smeta%d", prefix, i), fmt.Sprintf("%svm%d", prefix, i)
		run("ip", "netns", "add", meta)
		run("ip", "netns", "add", vm)
		run("ip", "-n", meta, "link", "add", "n0", "type", "veth", "peer", "name", "e0", "netns", vm)
		run("ip", "-n", meta, "addr", "add", "198.18.7.2/24", "dev", "n0")
		run("ip", "-n", meta, "addr", "add", "169.254.169.254/32", "dev", "lo")
		run("ip", "-n", meta, "link", "set", "lo", "up")
		run("ip", "-n", meta, "link", "set", "n0", "up")
		run("ip", "-n", vm, "addr", "add", "198.18.7.11/24", "dev", "e0")
		run("ip", "-n", vm, "addr", "add", "198.18.7.12/24", "dev", "e0")
		run("ip", "-n", vm, "link", "set", "lo", "up")
		run("ip", "-n", vm, "link", "set", "e0", "up")
		nft := exec.Command("ip", "netns", "exec", vm, "nft", "-f", "-")
		nft.Stdin = strings.NewReader("table inet t {\n chain in {\n type filter hook input priority 0; policy accept;\n ip daddr 198.18.7.12 icmp type echo-request drop\n }\n}\n")
		if out, err := nft.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v %s", err, out)
		}
		for _, end := range [][2]string{{meta, "n0"}, {vm, "e0"}} {
			deadline := time.Now().Add(30 * time.Second)
			for {
				out, _ := exec.Command("ip", "-n", end[0], "-o", "link", "show", "dev", end[1]).CombinedOutput()
				if strings.Contains(string(out), "state UP") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s in %s has no carrier: %s", end[1], end[0], out)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		mount := filepath.Join(dir, targets.PrefixOVNMetadata+id)
		if err := os.WriteFile(mount, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		run("mount", "--bind", filepath.Join("/run/netns", meta), mount)
	}
	network(0, vnetA)
	network(1, vnetB)

	snap := vSnapshot()
	// s1 and s2 hold 198.18.7.11 on net-a and net-b; s3 has net-c's port,
	// whose network has no namespace here; s5 holds the silent address.
	snap.Servers = snap.Servers[:3]
	snap.Servers = append(snap.Servers, inventory.Server{ID: "s5", Name: "vm-s5", ProjectID: "p1", Host: "cmp-1", Status: "ACTIVE",
		Addresses: []inventory.Address{{Network: "net-a", Addr: netip.MustParseAddr("198.18.7.12"), Raw: "198.18.7.12", Type: "fixed"}}})
	snap.Ports = append(snap.Ports, inventory.Port{ID: "port-s5", DeviceID: "s5", DeviceOwner: "compute:nova", NetworkID: vnetA, Status: "ACTIVE",
		FixedIPs: []inventory.FixedIP{{SubnetID: "sub", Addr: netip.MustParseAddr("198.18.7.12")}}})
	// Not s1's floating address: it would be probed from this host.
	snap.Servers[0].Addresses = snap.Servers[0].Addresses[:1]

	f := vantageService(t, snap, dir, func(c config.ICMP) probes.Engine {
		c.Mode, c.Count, c.Timeout = "privileged", 2, 500*time.Millisecond
		e, err := probes.NewShared(engineOptions(c, nil))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	})
	f.svc.loop.Cycle(context.Background())
	text, fams := f.scrape(t)
	lintMetrics(t, text)

	want := map[string]float64{
		"s1 " + targets.PrefixOVNMetadata + vnetA: 1,
		"s2 " + targets.PrefixOVNMetadata + vnetB: 1,
		"s5 " + targets.PrefixOVNMetadata + vnetA: 0,
	}
	got := map[string]float64{}
	for _, m := range fams["openstack_vm_icmp_up"].GetMetric() {
		l := metricLabels(m)
		got[l["id"]+" "+l["vantage"]] = m.GetGauge().GetValue()
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("icmp_up by server and vantage: %v, want %v\n%s", got, want, text)
	}
	if v, _ := vvalue(fams, "openstack_vm_probe_unprobed_addresses", map[string]string{"reason": targets.ReasonNoNamespace}); v != 1 {
		t.Errorf("no_namespace %v, want 1 (net-c)", v)
	}
	for net, want := range map[string]float64{vnetA: 1, vnetB: 1, vnetC: 0} {
		if v, ok := vvalue(fams, "openstack_vm_network_namespace_present", map[string]string{"network_id": net}); !ok || v != want {
			t.Errorf("namespace of %s: %v %v", net, v, ok)
		}
	}
	if v, _ := vvalue(fams, "openstack_vm_probe_errors_total", map[string]string{"reason": "namespace"}); v != 0 {
		t.Errorf("namespace errors %v", v)
	}
}
