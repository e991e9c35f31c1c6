//go:build lab

package probes

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/netns"
)

// nsLab is a set of namespaces under /run/netns named ovmxt-<pid>-<rand>-*
// (never ovnmeta-* or qdhcp-*: a real OVN metadata agent deletes those): a
// namespace "hv" with nothing but lo, where the prober's own sockets live,
// and per network i a namespace "net<i>" (the vantage: the OVN metadata
// namespace's stand-in) joined by a veth pair to a namespace "vm<i>" holding
// the VMs' addresses on 198.18.7.0/24 — the same addresses on every network.
type nsLab struct {
	t      *testing.T
	prefix string
}

const (
	nsVM11 = "198.18.7.11"
	nsVM12 = "198.18.7.12"
	nsVM6  = "2001:2:7::11"
)

func newNSLab(t *testing.T) *nsLab {
	t.Helper()
	netlab.Require(t)
	l := &nsLab{t: t, prefix: fmt.Sprintf("ovmxt-%d-%x-", os.Getpid(), rand.Uint32())}
	t.Cleanup(func() {
		out, _ := exec.Command("ip", "netns", "list").Output()
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], l.prefix) {
				_ = exec.Command("ip", "netns", "delete", f[0]).Run()
			}
		}
	})
	l.ip("netns", "add", l.name("hv"))
	l.ip("-n", l.name("hv"), "link", "set", "lo", "up")
	return l
}

func (l *nsLab) name(s string) string { return l.prefix + s }

func (l *nsLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
	}
}

func (l *nsLab) batch(ns string, cmds ...string) {
	l.t.Helper()
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("ip -n %s -batch: %v %s", ns, err, out)
	}
}

// network builds net<i> and vm<i>; the VM answers for both addresses but
// the one named silent, whose echo requests it drops.
func (l *nsLab) network(i int, silent string) {
	l.t.Helper()
	net, vm := l.name(fmt.Sprintf("net%d", i)), l.name(fmt.Sprintf("vm%d", i))
	l.ip("netns", "add", net)
	l.ip("netns", "add", vm)
	l.ip("-n", net, "link", "add", "n0", "type", "veth", "peer", "name", "e0", "netns", vm)
	l.batch(net, "link set lo up", "addr add 198.18.7.2/24 dev n0", "addr add 2001:2:7::2/64 dev n0 nodad", "link set n0 up")
	l.batch(vm, "link set lo up", "addr add "+nsVM11+"/24 dev e0", "addr add "+nsVM12+"/24 dev e0",
		"addr add "+nsVM6+"/64 dev e0 nodad", "link set e0 up")
	rules := fmt.Sprintf("table inet t {\n chain in {\n type filter hook input priority 0; policy accept;\n ip daddr %s icmp type echo-request drop\n }\n}\n", silent)
	nft := exec.Command("ip", "netns", "exec", vm, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(rules)
	if out, err := nft.CombinedOutput(); err != nil {
		l.t.Fatalf("nft in %s: %v %s", vm, err, out)
	}
	for _, end := range [][2]string{{net, "n0"}, {vm, "e0"}} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := exec.Command("ip", "-n", end[0], "-o", "link", "show", "dev", end[1]).CombinedOutput()
			if err == nil && strings.Contains(string(out), "state UP") {
				break
			}
			if time.Now().After(deadline) {
				l.t.Fatalf("%s in %s has no carrier: %s", end[1], end[0], out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (l *nsLab) remove(names ...string) {
	l.t.Helper()
	for _, n := range names {
		l.ip("netns", "delete", l.name(n))
	}
}

func (l *nsLab) identity(name string) netns.ID {
	l.t.Helper()
	id, err := netns.Identity(netns.DefaultDir, l.name(name))
	if err != nil {
		l.t.Fatal(err)
	}
	return id
}

// processState is what the process holds that a namespace's sockets could
// leak: goroutines, file descriptors, the namespaces its sockets and open
// namespace files refer to, and the namespaces its threads are in.
type processState struct {
	goroutines int
	fds        int
	socketNS   map[netns.ID]int // namespace of each socket fd
	nsFiles    []string         // fds that are namespace files (net:[...])
	threadNS   map[netns.ID]int
}

func snapshotProcess(t *testing.T) processState {
	t.Helper()
	st := processState{goroutines: runtime.NumGoroutine(), socketNS: map[netns.ID]int{}, threadNS: map[netns.ID]int{}}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the fd of ReadDir itself, closed meanwhile
		}
		st.fds++
		switch {
		case strings.HasPrefix(link, "socket:"):
			var fd int
			fmt.Sscan(e.Name(), &fd)
			if id, err := netns.SocketIdentity(fd); err == nil {
				st.socketNS[id]++
			}
		case strings.HasPrefix(link, "net:["):
			st.nsFiles = append(st.nsFiles, link)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if id, err := netns.PathIdentity("/proc/self/task/" + task.Name() + "/ns/net"); err == nil {
			st.threadNS[id]++
		}
	}
	return st
}

func nsTargets(l *nsLab, nets ...string) []Target {
	var out []Target
	for _, n := range nets {
		for _, a := range []string{nsVM11, nsVM12} {
			out = append(out, Target{Addr: netip.MustParseAddr(a), Namespace: l.name(n)})
		}
	}
	return out
}

// wantNS checks the results of nsTargets(net1, net2, ...): on each network
// the address named answering answers every request, the other none.
func wantNS(t *testing.T, step string, res []Result, count int, answering ...string) {
	t.Helper()
	for i, r := range res {
		want := 0
		if []string{nsVM11, nsVM12}[i%2] == answering[i/2] {
			want = count
		}
		if r.Unprobed != "" || r.Sent != count || r.Received != want {
			t.Errorf("%s: target %d (%s on network %d): %+v, want sent %d received %d", step, i,
				[]string{nsVM11, nsVM12}[i%2], i/2+1, r, count, want)
		}
	}
}

// The same addresses on two networks, answering on one and silent on the
// other, told apart; a namespace deleted and recreated between cycles gets
// its socket reopened; a namespace no longer targeted, or gone, has its
// sockets closed; and nothing is left behind: goroutines, fds, sockets or
// namespace files referring to a lab namespace, threads outside the
// process's namespace.
func TestNamespaceVantages(t *testing.T) {
	if os.Getenv("PROBES_NS_CHILD") != "" {
		return
	}
	l := newNSLab(t)
	l.network(1, nsVM12) // net1: .11 answers, .12 silent
	l.network(2, nsVM11) // net2: .12 answers, .11 silent
	origNS, err := netns.PathIdentity("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}

	// The prober's own sockets are opened in hv, which routes nowhere: no
	// packet of this test can leave the lab.
	const count = 2
	opts := Options{Privileged: true, Count: count, Timeout: 2 * time.Second, Spacing: 10 * time.Millisecond}
	var p *Shared
	if err := netns.Do(netns.DefaultDir, l.name("hv"), func() error {
		var err error
		p, err = NewShared(opts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	hvID := l.identity("hv")
	probe := func(targets []Target) []Result {
		t.Helper()
		res, err := p.Probe(context.Background(), targets)
		if err != nil || len(res) != len(targets) {
			t.Fatalf("Probe: %d results for %d targets, %v", len(res), len(targets), err)
		}
		return res
	}
	if _, err := p.Probe(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	base := settle(t, snapshotProcess(t))
	if base.socketNS[hvID] != 2 {
		t.Fatalf("the prober's own sockets: %v, want 2 in hv %v", base.socketNS, hvID)
	}

	// 1. Both networks in one cycle.
	both := nsTargets(l, "net1", "net2")
	wantNS(t, "two networks", probe(both), count, nsVM11, nsVM12)
	net1, net2 := l.identity("net1"), l.identity("net2")
	if st := snapshotProcess(t); st.socketNS[net1] != 1 || st.socketNS[net2] != 1 {
		t.Errorf("sockets per namespace %v, want one in net1 %v and one in net2 %v", st.socketNS, net1, net2)
	}

	// 1b. IPv6 from a namespace: a second socket there, closed again when
	// the namespace has no IPv6 target any more (step 3 checks).
	withV6 := append(append([]Target(nil), both...), Target{Addr: netip.MustParseAddr(nsVM6), Namespace: l.name("net1")})
	res := probe(withV6)
	wantNS(t, "with IPv6", res[:4], count, nsVM11, nsVM12)
	if r := res[4]; r.Unprobed != "" || r.Sent != count || r.Received != count {
		t.Errorf("IPv6 from net1: %+v, want every request answered", r)
	}
	if st := snapshotProcess(t); st.socketNS[net1] != 2 || st.socketNS[net2] != 1 {
		t.Errorf("sockets per namespace %v, want two in net1 %v (IPv4, IPv6), one in net2 %v", st.socketNS, net1, net2)
	}

	// 2. No privilege to enter: a process without CAP_SYS_ADMIN.
	t.Run("no_privilege", func(t *testing.T) {
		cmd := exec.Command("ip", "netns", "exec", l.name("hv"), "setpriv", "--bounding-set=-sys_admin",
			"--inh-caps=-sys_admin", "--", os.Args[0], "-test.run=^TestNamespaceChild$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "PROBES_NS_CHILD="+l.name("net1"))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestNamespaceChild") {
			t.Errorf("prober without CAP_SYS_ADMIN: %v\n%s", err, out)
		}
	})

	// 3. net2 deleted and recreated (an agent restart) between two cycles:
	// its socket is reopened in the new namespace, and the old one is no
	// longer referenced.
	l.remove("net2", "vm2")
	l.network(2, nsVM11)
	net2b := l.identity("net2")
	if net2b == net2 {
		t.Fatal("the recreated namespace has the old identity")
	}
	wantNS(t, "net2 recreated", probe(both), count, nsVM11, nsVM12)
	if st := snapshotProcess(t); st.socketNS[net2] != 0 || st.socketNS[net2b] != 1 || st.socketNS[net1] != 1 {
		t.Errorf("after net2 was recreated: sockets per namespace %v, want none in the old %v, one in the new %v, "+
			"one (IPv4) in net1", st.socketNS, net2, net2b)
	}

	// 4. net2 no longer targeted: its socket is closed.
	wantNS(t, "net1 only", probe(nsTargets(l, "net1")), count, nsVM11)
	if st := snapshotProcess(t); st.socketNS[net2b] != 0 || st.socketNS[net1] != 1 {
		t.Errorf("net2 untargeted: sockets per namespace %v, want none in net2 %v", st.socketNS, net2b)
	}

	// 5. Both targeted again, then both gone: no_namespace, nothing sent,
	// and the process back to where it was before any namespace.
	wantNS(t, "both again", probe(both), count, nsVM11, nsVM12)
	errs := p.Stats().NamespaceErrors
	l.remove("net1", "vm1", "net2", "vm2")
	for i, r := range probe(both) {
		if r.Unprobed != UnprobedNoNamespace || r.Sent != 0 || r.Received != 0 {
			t.Errorf("vanished namespaces: target %d: %+v, want unprobed %s", i, r, UnprobedNoNamespace)
		}
	}
	if p.Stats().NamespaceErrors != errs {
		t.Errorf("a vanished namespace counted as a namespace error: %d, before %d", p.Stats().NamespaceErrors, errs)
	}
	after := settle(t, snapshotProcess(t), base.goroutines)
	if after.goroutines > base.goroutines {
		t.Errorf("%d goroutines, %d before any namespace was probed", after.goroutines, base.goroutines)
	}
	if after.fds != base.fds {
		t.Errorf("%d open fds, %d before any namespace was probed", after.fds, base.fds)
	}
	if len(after.socketNS) != 1 || after.socketNS[hvID] != 2 {
		t.Errorf("sockets per namespace %v, want only the 2 of hv %v", after.socketNS, hvID)
	}
	if len(after.nsFiles) != len(base.nsFiles) {
		t.Errorf("namespace files open: %v, before %v", after.nsFiles, base.nsFiles)
	}
	if len(after.threadNS) != 1 || after.threadNS[origNS] == 0 {
		t.Errorf("threads per namespace %v, want all in the process's own %v", after.threadNS, origNS)
	}

	// 6. Closing the prober leaves only what was there before it.
	p.Close()
	final := settle(t, snapshotProcess(t), base.goroutines-2)
	if len(final.socketNS) != 0 {
		t.Errorf("sockets left after Close: %v", final.socketNS)
	}
}

// settle waits (generously) until the goroutine count falls to the most
// given, as goroutines that were told to end take a moment to do so, and
// returns the state then; with no limit it waits for the count to stop
// changing.
func settle(t *testing.T, st processState, most ...int) processState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		next := snapshotProcess(t)
		if len(most) > 0 && next.goroutines <= most[0] {
			return next
		}
		if len(most) == 0 && next.goroutines == st.goroutines {
			return next
		}
		st = next
	}
	return st
}

// TestNamespaceChild runs in a process without CAP_SYS_ADMIN (started by
// TestNamespaceVantages): the engine warns at start what it lacks, the
// namespace target is unprobed no_privilege, counted, and logged once.
func TestNamespaceChild(t *testing.T) {
	ns := os.Getenv("PROBES_NS_CHILD")
	if ns == "" {
		return
	}
	var logs lockedBuffer
	p, err := NewShared(Options{Privileged: true, Count: 1, Timeout: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for cycle := 1; cycle <= 2; cycle++ {
		res, err := p.Probe(context.Background(), []Target{{Addr: netip.MustParseAddr(nsVM11), Namespace: ns}})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Unprobed != UnprobedNoPrivilege || res[0].Sent != 0 {
			t.Errorf("cycle %d without CAP_SYS_ADMIN: %+v, want unprobed %s", cycle, res[0], UnprobedNoPrivilege)
		}
		if got := p.Stats().NamespaceErrors; got != uint64(cycle) {
			t.Errorf("cycle %d: %d namespace errors counted", cycle, got)
		}
	}
	if n := strings.Count(logs.String(), "cannot probe from network namespace"); n != 1 || !strings.Contains(logs.String(), "CAP_SYS_ADMIN") {
		t.Errorf("logged %d times, want once naming CAP_SYS_ADMIN:\n%s", n, logs.String())
	}
	// At start, the engine said what it lacks (a warning: namespaces exist).
	if !strings.Contains(logs.String(), `level=WARN msg="probing from network namespaces is not possible"`) ||
		!strings.Contains(logs.String(), "AmbientCapabilities") {
		t.Errorf("the start did not warn about the missing capability with how to grant it:\n%s", logs.String())
	}
	priv, msg := netns.CheckPrivileges()
	if priv.SysAdmin || !priv.NetRaw || !strings.Contains(msg, "CAP_SYS_ADMIN") || strings.Contains(msg, "CAP_NET_RAW (for") {
		t.Errorf("CheckPrivileges = %+v, %q", priv, msg)
	}
}

// lockedBuffer is a log sink safe for the readers' goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
