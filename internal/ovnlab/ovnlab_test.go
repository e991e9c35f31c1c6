//go:build lab

package ovnlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
)

// TestHypervisor binds ports of two networks with the same CIDR to a real
// OVN chassis, and checks what the real metadata agent builds: one
// ovnmeta-<network> namespace per network with a local port, from which
// each network's VM answers (and only that network's), a VM whose security
// group admits no ICMP does not, and the namespace goes with the last
// port. The agent's namespaces are in the hypervisor's NetnsDir, never in
// the machine's /run/netns, and it deletes a stale one it finds there at
// start. Close leaves nothing behind.
func TestHypervisor(t *testing.T) {
	Require(t)
	ctx := context.Background()
	dir := t.TempDir()
	begin := time.Now()
	hv, err := New(Options{Dir: filepath.Join(dir, "hv"), Host: "hv-ovnlab"})
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
	cloud, err := openstacklab.Start(ctx, openstacklab.Options{Dir: filepath.Join(dir, "cloud"), NetNS: hv.NetNS(), HTTPClient: hv.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Close()
	defer func() {
		if t.Failed() {
			t.Logf("hypervisor logs:\n%s\nopenstack logs:\n%s", hv.Logs(), cloud.Logs())
		}
	}()
	// A namespace a crashed agent left for a network OVN does not know.
	stale := MetadataNamespace("0b6c4e8e-54c8-4b7d-9b0e-2f1b6f0b7a11")
	addNamespace(t, hv.NetnsDir(), stale)
	if err := hv.Start(ctx, cloud); err != nil {
		t.Fatal(err)
	}
	t.Logf("cloud started in %v (warm %v), hypervisor in %v; %v in all", cloud.Started, cloud.Warm, hv.Started, time.Since(begin))

	type netw struct {
		id, meta string
		vm       *VM
	}
	var nets []netw
	vmAddr := netip.MustParseAddr("198.18.7.11")
	var blocked *VM
	for i, name := range []string{"tenant-a", "tenant-b"} {
		n, err := cloud.CreateNetwork(ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cloud.CreateSubnet(ctx, n.ID, "198.18.7.0/24"); err != nil {
			t.Fatal(err)
		}
		sg, err := cloud.CreateSecurityGroup(ctx, n.ProjectID, "icmp-"+name, true)
		if err != nil {
			t.Fatal(err)
		}
		port, err := cloud.CreatePort(ctx, openstacklab.PortSpec{NetworkID: n.ID, ServerID: "30000000-0000-4000-8000-00000000000" + string(rune('1'+i)),
			Host: "hv-ovnlab", FixedIPs: []netip.Addr{vmAddr}, SecurityGroups: []string{sg}})
		if err != nil {
			t.Fatal(err)
		}
		if port.VIFType != "ovs" {
			t.Errorf("port on the chassis's host: vif_type %q, want ovs", port.VIFType)
		}
		vm, err := hv.Plug(ctx, port)
		if err != nil {
			t.Fatal(err)
		}
		nets = append(nets, netw{id: n.ID, vm: vm})
		if i == 0 {
			// Same network, the project's default group only: no ICMP.
			p, err := cloud.CreatePort(ctx, openstacklab.PortSpec{NetworkID: n.ID, ServerID: "30000000-0000-4000-8000-000000000009",
				Host: "hv-ovnlab", FixedIPs: []netip.Addr{netip.MustParseAddr("198.18.7.12")}})
			if err != nil {
				t.Fatal(err)
			}
			if blocked, err = hv.Plug(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("networks and ports created and plugged %v after start", time.Since(begin))
	for i := range nets {
		if err := hv.WaitPortStatus(ctx, nets[i].vm.Port.ID, "ACTIVE", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		t.Logf("port %d ACTIVE %v after start", i, time.Since(begin))
		meta, err := hv.WaitMetadataNamespace(ctx, nets[i].id, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("namespace %d %v after start", i, time.Since(begin))
		if !netip.MustParsePrefix("198.18.7.0/24").Contains(meta.Addr()) {
			t.Errorf("ovnmeta-%s: address %v, want one on 198.18.7.0/24", nets[i].id, meta)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", MetadataNamespace(nets[i].id))); !os.IsNotExist(err) {
			t.Errorf("%s is in the machine's /run/netns (%v), want it in %s alone", MetadataNamespace(nets[i].id), err, hv.NetnsDir())
		}
	}
	// The agent's sync provisions the networks it needs first and deletes
	// the namespaces it does not need after: the stale one may still be
	// there when the others are ready.
	for staleUntil := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		_, err := os.Stat(filepath.Join(hv.NetnsDir(), stale))
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(staleUntil) {
			t.Errorf("the agent kept the stale %s (%v)", stale, err)
			break
		}
	}
	t.Logf("ports ACTIVE and namespaces ready %v after start", time.Since(begin))
	cloudMem, cloudProcs := Memory(filepath.Join(dir, "cloud"))
	hvMem, hvProcs := Memory(filepath.Join(dir, "hv"))
	t.Logf("memory (PSS): cloud %d MB in %d processes, hypervisor %d MB in %d processes", cloudMem>>20, cloudProcs, hvMem>>20, hvProcs)

	ping := func(network, addr string) bool {
		out, err := hv.InMetadataNamespace(ctx, network, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", addr).CombinedOutput()
		t.Logf("ping %s from ovnmeta-%s: %v\n%s", addr, network, err, out)
		return err == nil
	}
	// Each network's namespace reaches its own VM at the shared address:
	// the MAC that answers is that network's port's.
	for _, n := range nets {
		if !ping(n.id, vmAddr.String()) {
			t.Errorf("the VM of network %s does not answer from its namespace", n.id)
		}
		out, _ := hv.InMetadataNamespace(ctx, n.id, "ip", "neigh", "show", vmAddr.String()).CombinedOutput()
		if !strings.Contains(string(out), n.vm.Port.MAC) {
			t.Errorf("network %s: neighbour %s is %q, want the port's MAC %s", n.id, vmAddr, out, n.vm.Port.MAC)
		}
	}
	if ping(nets[0].id, "198.18.7.12") {
		t.Error("a VM in the default security group answered the metadata namespace's pings")
	}

	// The namespace goes with the network's last local port.
	if err := nets[1].vm.Unplug(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if !hv.MetadataNamespaceExists(nets[1].id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ovnmeta-%s still exists after its last port left", nets[1].id)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = blocked

	if err := hv.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, ns := range []string{hv.NetNS(), nets[0].vm.Namespace} {
		if strings.Contains(string(out), ns) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	if left, _ := os.ReadDir(hv.NetnsDir()); len(left) > 0 {
		t.Errorf("namespaces left behind in %s: %v", hv.NetnsDir(), left)
	}
	if mounted(hv.NetnsDir()) {
		t.Errorf("%s is still mounted", hv.NetnsDir())
	}
	if pids := killUnder(hv.opts.Dir); len(pids) > 0 {
		t.Errorf("processes of the hypervisor left behind: %v", pids)
	}
}

// TestCleanStale: what a test process that died without Close left (its
// hypervisor's namespace, the agent's namespaces in its NetnsDir and that
// directory's mount) is gone when the next hypervisor starts; a running
// process's hypervisor is left alone.
func TestCleanStale(t *testing.T) {
	testenv.RequireRoot(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	leave := func(pid int) (ns, netnsDir, stateFile string) {
		id := fmt.Sprintf("%d-cleanstale", pid) // never a real hypervisor's id
		ns = "ovnlab-" + id + "-hv"
		netnsDir = filepath.Join(t.TempDir(), "netns")
		if err := os.MkdirAll(netnsDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"ip", "netns", "add", ns}, {"mount", "--bind", netnsDir, netnsDir}, {"mount", "--make-shared", netnsDir}} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out)
			}
		}
		addNamespace(t, netnsDir, MetadataNamespace("0b6c4e8e-54c8-4b7d-9b0e-2f1b6f0b7a11"))
		b, _ := json.Marshal(state{Dir: filepath.Dir(netnsDir), Namespaces: []string{ns}, NetnsDir: netnsDir})
		stateFile = filepath.Join(stateDir, id+".json")
		if err := os.MkdirAll(stateDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(stateFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = unmountDir(netnsDir)
			_ = run("ip", "netns", "delete", ns)
			os.Remove(stateFile)
		})
		return ns, netnsDir, stateFile
	}
	deadNS, deadDir, deadState := leave(dead.Process.Pid)
	liveNS, liveDir, liveState := leave(os.Getpid())

	cleanStale()

	if _, err := os.Stat(filepath.Join("/run/netns", deadNS)); !os.IsNotExist(err) {
		t.Errorf("the dead process's namespace %s is still there (%v)", deadNS, err)
	}
	if left, _ := os.ReadDir(deadDir); len(left) > 0 || mounted(deadDir) {
		t.Errorf("the dead process's %s: %v left, mounted %v", deadDir, left, mounted(deadDir))
	}
	if _, err := os.Stat(deadState); !os.IsNotExist(err) {
		t.Errorf("the dead process's state file is still there (%v)", err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", liveNS)); err != nil {
		t.Errorf("a running process's namespace %s went: %v", liveNS, err)
	}
	if left, _ := os.ReadDir(liveDir); len(left) != 1 || !mounted(liveDir) {
		t.Errorf("a running process's %s: %v left, mounted %v", liveDir, left, mounted(liveDir))
	}
	if _, err := os.Stat(liveState); err != nil {
		t.Errorf("a running process's state file went: %v", err)
	}
}

// addNamespace creates a named network namespace in dir, as `ip netns add`
// does in /run/netns.
func addNamespace(t *testing.T, dir, name string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unshare", "--net="+path, "true").CombinedOutput(); err != nil {
		t.Fatalf("creating %s: %v: %s", path, err, out)
	}
}

// mounted tells whether dir is a mount point of this mount namespace.
func mounted(dir string) bool {
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	return strings.Contains(string(mounts), " "+dir+" ")
}
