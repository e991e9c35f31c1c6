// Package netlab builds a lab of network namespaces in which test "VMs"
// really answer ICMP echo, really do not, lose a share of it, or answer late.
// Tests and benchmarks probe from the lab's hypervisor namespace, which has
// no default route: packets can only reach addresses inside the lab.
//
// Topology: one hypervisor namespace, and one namespace per behaviour joined
// to it by a veth pair. VM addresses live on the behaviour namespace's lo, and
// the hypervisor routes each to that namespace's end of the veth, so thousands
// of addresses need only one neighbour entry per behaviour (a flat link
// overflows the neighbour table near 1,024 entries). This kernel has no netem:
// loss is an nftables rule (`numgen random`), delay a userspace echo responder
// with the namespace's own echo replies turned off.
//
// Addresses come from the benchmarking ranges 198.18.0.0/15 and 2001:2::/48.
//
// The lab starts no long-lived process (the delay responder is a goroutine
// of the caller; ip and nft run to completion), so a test that dies on its
// -timeout leaves only namespaces behind: the next Build removes those of
// processes that no longer run.
package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Behaviour is what a VM address does with echo requests.
type Behaviour int

const (
	// Answer: the kernel answers.
	Answer Behaviour = iota
	// Lossy: the kernel answers, after nftables dropped a share of requests.
	Lossy
	// Slow: a userspace responder answers after a delay.
	Slow
	// Dead: routed, but nothing is there; requests vanish silently.
	Dead
	behaviours
)

func (b Behaviour) String() string {
	return [...]string{"answer", "lossy", "slow", "dead"}[b]
}

const namePrefix = "ovmx-"

var labSeq atomic.Int64

// Lab is a set of namespaces; Close removes them.
type Lab struct {
	prefix string
	hv     string
	vm     [behaviours]string

	mu        sync.Mutex
	placed    map[netip.Addr]Behaviour
	responder *Responder
	closed    bool
}

// TB is what the lab needs of a test (testing.TB has it): the package does
// not import testing, because the demo links it into the binary.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Require fails the test (never skips: CI must not pass without its ICMP
// tests) when the lab cannot be built here.
func Require(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the namespace lab needs root (ip netns, raw sockets); run the test suite as root, as CI does")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: apt-get install -y iproute2 nftables (scripts/setup.sh does)", bin)
		}
	}
}

// New builds a lab and removes it when the test ends.
func New(t TB) *Lab {
	t.Helper()
	Require(t)
	l, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Build builds a lab; the caller must Close it.
func Build() (*Lab, error) {
	removeStale()
	l := &Lab{
		prefix: fmt.Sprintf("%s%d-%d-", namePrefix, os.Getpid(), labSeq.Add(1)),
		placed: map[netip.Addr]Behaviour{},
	}
	l.hv = l.prefix + "hv"
	for b := Behaviour(0); b < behaviours; b++ {
		l.vm[b] = l.prefix + b.String()
	}
	if err := l.build(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// HV is the hypervisor namespace's name.
func (l *Lab) HV() string { return l.hv }

// Namespace is the name of the namespace holding a behaviour's addresses.
func (l *Lab) Namespace(b Behaviour) string { return l.vm[b] }

// ExecPrefix runs a command in the hypervisor namespace: append the command.
func (l *Lab) ExecPrefix() []string { return []string{"ip", "netns", "exec", l.hv} }

// linkAddrs are the two ends of behaviour b's veth pair, hypervisor side first.
func linkAddrs(b Behaviour) (hv4, vm4, hv6, vm6 netip.Addr) {
	o := byte(4 * int(b))
	hv4 = netip.AddrFrom4([4]byte{198, 19, 255, o + 1})
	vm4 = netip.AddrFrom4([4]byte{198, 19, 255, o + 2})
	hv6 = netip.MustParseAddr(fmt.Sprintf("2001:2:0:ff0%x::1", int(b)))
	vm6 = netip.MustParseAddr(fmt.Sprintf("2001:2:0:ff0%x::2", int(b)))
	return
}

func (l *Lab) build() error {
	all := append([]string{l.hv}, l.vm[:]...)
	for _, ns := range all {
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
		if err := batch(ns,
			"link set lo up",
		); err != nil {
			return err
		}
		// Addresses must work at once: no duplicate address detection.
		if err := sysctl(ns, "net.ipv6.conf.all.accept_dad", "0", "net.ipv6.conf.default.accept_dad", "0"); err != nil {
			return err
		}
	}
	for b := Behaviour(0); b < behaviours; b++ {
		hvIf, vmIf := fmt.Sprintf("h%d", b), fmt.Sprintf("v%d", b)
		// Both ends are created inside the namespaces: nothing is ever
		// configured in the machine's own namespace.
		if err := run("ip", "-n", l.hv, "link", "add", hvIf, "type", "veth", "peer", "name", vmIf, "netns", l.vm[b]); err != nil {
			return err
		}
		hv4, vm4, hv6, vm6 := linkAddrs(b)
		if err := batch(l.hv,
			fmt.Sprintf("addr add %s/30 dev %s", hv4, hvIf),
			fmt.Sprintf("addr add %s/64 dev %s nodad", hv6, hvIf),
			fmt.Sprintf("link set %s up", hvIf),
		); err != nil {
			return err
		}
		if err := batch(l.vm[b],
			fmt.Sprintf("addr add %s/30 dev %s", vm4, vmIf),
			fmt.Sprintf("addr add %s/64 dev %s nodad", vm6, vmIf),
			fmt.Sprintf("link set %s up", vmIf),
			fmt.Sprintf("route add default via %s", hv4),
			fmt.Sprintf("route add ::/0 via %s", hv6),
		); err != nil {
			return err
		}
	}
	// A new veth pair takes a moment to get its carrier, and until then
	// IPv6 drops what arrives on it: wait for every end to be up.
	for b := Behaviour(0); b < behaviours; b++ {
		if err := waitUp(l.hv, fmt.Sprintf("h%d", b)); err != nil {
			return err
		}
		if err := waitUp(l.vm[b], fmt.Sprintf("v%d", b)); err != nil {
			return err
		}
	}
	if err := l.SetLoss(50); err != nil {
		return err
	}
	if err := sysctl(l.vm[Slow], "net.ipv4.icmp_echo_ignore_all", "1", "net.ipv6.icmp.echo_ignore_all", "1"); err != nil {
		return err
	}
	r, err := StartResponder(l.vm[Slow], 50*time.Millisecond)
	if err != nil {
		return err
	}
	l.responder = r
	return nil
}

func waitUp(ns, dev string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", "dev", dev).CombinedOutput()
		if err == nil && strings.Contains(string(out), "state UP") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s in %s has no carrier after 5s: %s", dev, ns, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Add places VM addresses of a behaviour, in bulk (one `ip -batch` per
// namespace, so tens of thousands of addresses take seconds).
func (l *Lab) Add(b Behaviour, addrs ...netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var vmCmds, hvCmds []string
	for _, a := range addrs {
		if !inBenchRange(a) {
			return fmt.Errorf("netlab: %s is outside 198.18.0.0/15 and 2001:2::/48", a)
		}
		if _, ok := l.placed[a]; ok {
			return fmt.Errorf("netlab: %s is already in the lab", a)
		}
		_, vm4, _, vm6 := linkAddrs(b)
		if b != Dead {
			// nodad: a tentative address drops what it receives for a second.
			nodad := ""
			if a.Is6() {
				nodad = " nodad"
			}
			vmCmds = append(vmCmds, fmt.Sprintf("addr add %s dev lo%s", hostPrefix(a), nodad))
		}
		via := vm4
		if a.Is6() {
			via = vm6
		}
		hvCmds = append(hvCmds, fmt.Sprintf("route add %s via %s", hostPrefix(a), via))
	}
	if err := batch(l.vm[b], vmCmds...); err != nil {
		return err
	}
	if err := batch(l.hv, hvCmds...); err != nil {
		return err
	}
	for _, a := range addrs {
		l.placed[a] = b
	}
	return nil
}

// Remove makes addresses stop answering, like VMs that died: the address
// goes, the route stays, so requests vanish silently.
func (l *Lab) Remove(addrs ...netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	byNS := map[Behaviour][]string{}
	for _, a := range addrs {
		b, ok := l.placed[a]
		if !ok {
			return fmt.Errorf("netlab: %s is not in the lab", a)
		}
		if b != Dead {
			byNS[b] = append(byNS[b], fmt.Sprintf("addr del %s dev lo", hostPrefix(a)))
		}
		l.placed[a] = Dead
	}
	for b, cmds := range byNS {
		if err := batch(l.vm[b], cmds...); err != nil {
			return err
		}
	}
	return nil
}

// Restore makes removed addresses answer again with the behaviour given.
func (l *Lab) Restore(b Behaviour, addrs ...netip.Addr) error {
	l.mu.Lock()
	for _, a := range addrs {
		delete(l.placed, a)
	}
	l.mu.Unlock()
	var cmds []string
	for _, a := range addrs {
		cmds = append(cmds, fmt.Sprintf("route del %s", hostPrefix(a)))
	}
	if err := batch(l.hv, cmds...); err != nil {
		return err
	}
	return l.Add(b, addrs...)
}

// SetLoss sets the share of echo requests the Lossy namespace drops.
func (l *Lab) SetLoss(percent int) error {
	rules := fmt.Sprintf(`table inet netlab {
	chain input {
		type filter hook input priority 0; policy accept;
		icmp type echo-request numgen random mod 100 < %d drop
		icmpv6 type echo-request numgen random mod 100 < %d drop
	}
}
`, percent, percent)
	_ = run("ip", "netns", "exec", l.vm[Lossy], "nft", "delete", "table", "inet", "netlab")
	cmd := exec.Command("ip", "netns", "exec", l.vm[Lossy], "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", l.vm[Lossy], err, out)
	}
	return nil
}

// SetDelay sets how late the Slow namespace's responder answers.
func (l *Lab) SetDelay(d time.Duration) { l.responder.SetDelay(d) }

// EnableUnprivilegedPing allows ICMP datagram sockets to every group in the
// hypervisor namespace (the sysctl is per namespace; it is off by default).
func (l *Lab) EnableUnprivilegedPing() error {
	return sysctl(l.hv, "net.ipv4.ping_group_range", "0 2147483647")
}

// Close removes the lab; safe to call twice.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.responder != nil {
		l.responder.Stop()
	}
	var errs []error
	for _, ns := range append([]string{l.hv}, l.vm[:]...) {
		if err := run("ip", "netns", "delete", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeStale deletes namespaces that crashed runs of this package left,
// never those of a process that still runs (packages test in parallel).
func removeStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], namePrefix) {
			continue
		}
		name := fields[0]
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, namePrefix), "-", 2)[0])
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		_ = run("ip", "netns", "delete", name)
	}
}

func inBenchRange(a netip.Addr) bool {
	return netip.MustParsePrefix("198.18.0.0/15").Contains(a) || netip.MustParsePrefix("2001:2::/48").Contains(a)
}

func hostPrefix(a netip.Addr) string {
	if a.Is4() {
		return a.String() + "/32"
	}
	return a.String() + "/128"
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// batch runs ip commands in a namespace with one process.
func batch(ns string, cmds ...string) error {
	if len(cmds) == 0 {
		return nil
	}
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		first := cmds[0]
		return fmt.Errorf("ip -n %s -batch (%d commands, first %q): %v: %s", ns, len(cmds), first, err, bytes.TrimSpace(out))
	}
	return nil
}

func sysctl(ns string, kv ...string) error {
	args := []string{"netns", "exec", ns, "sysctl", "-q"}
	for i := 0; i+1 < len(kv); i += 2 {
		args = append(args, "-w", kv[i]+"="+kv[i+1])
	}
	return run(append([]string{"ip"}, args...)...)
}
