// Command netns measures what probing from network namespaces costs the
// shared ICMP engine: 10,000 targets spread over 200 namespaces of 50
// addresses (the OVN metadata vantage of a busy hypervisor) against 10,000
// targets in one namespace, every target answering. Run it through
// bench/netns.sh (as root).
//
// The lab: a prober namespace without a default route and with nothing but
// lo; a namespace "one" with the 10,000 addresses on its lo; 200 namespaces
// with the same 50 addresses each on their lo (tenant networks overlap).
// The namespaces' own kernels answer the echo requests, so every packet
// stays inside the lab, in 198.18.0.0/15. The same 10,000 addresses are also
// put on the prober namespace's own lo, for today's host vantage.
//
// Each scenario runs in a process of its own (started in the prober
// namespace with ip netns exec), so that its CPU time (getrusage) and memory
// (VmRSS, VmHWM, the Go heap) are its alone: the engine, its sockets and
// readers, and the cycle's targets and results, nothing of the exporter's
// inventory or /metrics. It prints a table and exits non-zero when a reply
// is missing (false loss) or a target is left unprobed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

var (
	namespaces = flag.Int("namespaces", 200, "namespaces of the spread scenario")
	perNS      = flag.Int("per-namespace", 50, "addresses in each of them")
	cycles     = flag.Int("cycles", 5, "probe cycles measured per scenario, after two warm-up cycles")
	rounds     = flag.Int("rounds", 2, "times each scenario is measured, interleaved")
	count      = flag.Int("count", 1, "echo requests per address and cycle (the table of docs/performance.md uses 1)")
	child      = flag.String("child", "", "internal: run one scenario in this process")
	prefix     = flag.String("prefix", "", "internal: the lab's namespace name prefix")
	memProfile = flag.String("memprofile", "", "write each child's heap profile to this path, suffixed by the scenario")
)

// measurement is what a child reports.
type measurement struct {
	Scenario     string
	Targets      int
	Namespaces   int
	FirstCycle   time.Duration // opens the namespaces' sockets
	CPUPerCycle  time.Duration
	WallPerCycle time.Duration
	RSS, HWM     int64
	HeapInuse    uint64
	StackInuse   uint64
	Goroutines   int
	FDs          int
	Probes       int
	Lost         int
	Unprobed     int
}

func main() {
	flag.Parse()
	if *child != "" {
		m, err := runChild(*child, *prefix)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/netns child:", err)
			os.Exit(2)
		}
		must(json.NewEncoder(os.Stdout).Encode(m))
		return
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/netns: run as root (network namespaces, raw sockets)")
		os.Exit(2)
	}
	total := *namespaces * *perNS
	pfx := fmt.Sprintf("ovmxt-bench%d-", os.Getpid())
	start := time.Now()
	err := buildLab(pfx, *namespaces, *perNS, total)
	defer removeLab(pfx)
	must(err)
	fmt.Printf("lab: %d namespaces, %d addresses, built in %v\n", *namespaces+2, 2*total+*namespaces**perNS,
		time.Since(start).Round(10*time.Millisecond))

	self, err := os.Executable()
	must(err)
	results := map[string][]measurement{}
	scenarios := []string{"own", "one", "spread"}
	for r := 0; r < *rounds; r++ {
		for _, sc := range scenarios {
			cmd := exec.Command("ip", "netns", "exec", pfx+"prober", self, "-child", sc, "-prefix", pfx,
				"-namespaces", strconv.Itoa(*namespaces), "-per-namespace", strconv.Itoa(*perNS),
				"-cycles", strconv.Itoa(*cycles), "-count", strconv.Itoa(*count), "-memprofile", *memProfile)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			must(err)
			var m measurement
			must(json.Unmarshal(out, &m))
			results[sc] = append(results[sc], m)
		}
	}
	failed := report(scenarios, results)
	if failed {
		os.Exit(1)
	}
}

func report(scenarios []string, results map[string][]measurement) (failed bool) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\ttargets\tnamespaces\tfirst cycle\tCPU a cycle\t% of a core at 15 s\tcycle\tRSS\tpeak RSS\tGo heap\tGo stacks\tgoroutines\tfds\tlost\tunprobed")
	desc := map[string]string{"own": "own namespace (host vantage)", "one": "one other namespace", "spread": "spread over namespaces"}
	for _, sc := range scenarios {
		for _, m := range results[sc] {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%v\t%.2f%%\t%v\t%s\t%s\t%s\t%s\t%d\t%d\t%d of %d\t%d\n", desc[sc], m.Targets, m.Namespaces,
				m.FirstCycle.Round(time.Millisecond), m.CPUPerCycle.Round(time.Millisecond),
				100*m.CPUPerCycle.Seconds()/15, m.WallPerCycle.Round(10*time.Millisecond),
				mib(m.RSS), mib(m.HWM), mib(int64(m.HeapInuse)), mib(int64(m.StackInuse)), m.Goroutines, m.FDs, m.Lost, m.Probes, m.Unprobed)
			if m.Lost > 0 || m.Unprobed > 0 {
				failed = true
			}
		}
	}
	tw.Flush()
	// Medians over the rounds: the machine is shared, and one round's
	// figure moves by ±20%.
	median := func(sc string, f func(measurement) float64) float64 {
		var v []float64
		for _, m := range results[sc] {
			v = append(v, f(m))
		}
		sort.Float64s(v)
		if len(v) == 0 {
			return 0
		}
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	cpu := func(m measurement) float64 { return m.CPUPerCycle.Seconds() }
	rss := func(m measurement) float64 { return float64(m.HWM) }
	for _, base := range []string{"own", "one"} {
		rc, rm := median("spread", cpu)/median(base, cpu), median("spread", rss)/median(base, rss)
		verdict := "within the 1.2x goal"
		if rc > 1.2 || rm > 1.2 {
			verdict = "over the 1.2x goal"
		}
		fmt.Printf("spread / %s (medians of %d rounds): CPU %.2fx, peak RSS %.2fx (%+.1f MiB): %s\n", desc[base],
			len(results[base]), rc, rm, (median("spread", rss)-median(base, rss))/(1<<20), verdict)
	}
	if failed {
		fmt.Println("FAIL: false loss or unprobed targets")
	}
	return failed
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// addresses returns n distinct addresses from 198.18.0.1 on.
func addresses(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		v := uint32(198)<<24 | uint32(18)<<16 | uint32(i+1)
		out[i] = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return out
}

func buildLab(pfx string, nsCount, per, total int) error {
	names := []string{pfx + "prober", pfx + "one"}
	for i := 0; i < nsCount; i++ {
		names = append(names, fmt.Sprintf("%sn%d", pfx, i))
	}
	var add []string
	for _, n := range names {
		add = append(add, "netns add "+n)
	}
	if err := ipBatch("", add); err != nil {
		return err
	}
	addrCmds := func(n int) []string {
		cmds := []string{"link set lo up"}
		for _, a := range addresses(n) {
			cmds = append(cmds, "addr add "+a.String()+"/32 dev lo")
		}
		return cmds
	}
	big, small := addrCmds(total), addrCmds(per)
	// A few ip processes at a time: one batch a namespace.
	sem := make(chan struct{}, 8)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for i, n := range names {
		cmds := small
		if i < 2 {
			cmds = big
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := ipBatch(n, cmds); err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func removeLab(pfx string) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var del []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], pfx) {
			del = append(del, "netns delete "+f[0])
		}
	}
	_ = ipBatch("", del)
}

func ipBatch(ns string, cmds []string) error {
	if len(cmds) == 0 {
		return nil
	}
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s (%d commands, first %q): %v: %s", strings.Join(args, " "), len(cmds), cmds[0], err, out)
	}
	return nil
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/netns:", err)
		os.Exit(2)
	}
}

func runChild(scenario, pfx string) (measurement, error) {
	total := *namespaces * *perNS
	var targets []probes.Target
	nsCount := 0
	switch scenario {
	case "own":
		targets = probes.HostTargets(addresses(total))
	case "one":
		for _, a := range addresses(total) {
			targets = append(targets, probes.Target{Addr: a, Namespace: pfx + "one"})
		}
		nsCount = 1
	case "spread":
		small := addresses(*perNS)
		for i := 0; i < *namespaces; i++ {
			for _, a := range small {
				targets = append(targets, probes.Target{Addr: a, Namespace: fmt.Sprintf("%sn%d", pfx, i)})
			}
		}
		nsCount = *namespaces
	default:
		return measurement{}, fmt.Errorf("unknown scenario %q", scenario)
	}
	// The exporter's defaults (config/defaults.yaml), with the exporter's
	// spacing of the rounds of a cycle.
	icmp := config.Default().Probe.ICMP
	spacing := time.Second
	if *count > 1 {
		spacing = min(spacing, (icmp.Interval-icmp.Timeout)/time.Duration(2**count))
	}
	e, err := probes.NewShared(probes.Options{Privileged: true, Count: *count, Timeout: icmp.Timeout,
		Spacing: spacing, PacketsPerSecond: icmp.MaxPacketsPerSecond})
	if err != nil {
		return measurement{}, err
	}
	defer e.Close()
	m := measurement{Scenario: scenario, Targets: len(targets), Namespaces: nsCount}
	ctx := context.Background()
	for w := 0; w < 2; w++ {
		t0 := time.Now()
		if _, err := e.Probe(ctx, targets); err != nil {
			return m, err
		}
		if w == 0 {
			m.FirstCycle = time.Since(t0)
		}
	}
	cpu0, wall0 := cpuTime(), time.Now()
	for c := 0; c < *cycles; c++ {
		res, err := e.Probe(ctx, targets)
		if err != nil {
			return m, err
		}
		for _, r := range res {
			m.Probes += r.Sent
			if r.Unprobed != "" {
				m.Unprobed++
			} else if r.Sent != *count || r.Received != r.Sent {
				m.Lost += *count - r.Received
			}
		}
	}
	m.CPUPerCycle = (cpuTime() - cpu0) / time.Duration(*cycles)
	m.WallPerCycle = time.Since(wall0) / time.Duration(*cycles)
	m.RSS, m.HWM = memory()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.HeapInuse = ms.HeapInuse
	m.StackInuse = ms.StackInuse
	if *memProfile != "" {
		f, err := os.Create(*memProfile + "." + scenario)
		if err != nil {
			return m, err
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return m, err
		}
	}
	m.Goroutines = runtime.NumGoroutine()
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		m.FDs = len(fds)
	}
	return m, nil
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memory returns VmRSS and VmHWM in bytes.
func memory() (rss, hwm int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm
}
