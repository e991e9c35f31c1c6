// Command bench measures openstack-vm-exporter on this machine, beside the
// tools an operator would otherwise use, in one run on one namespace lab:
// probing cost at N addresses (with fping, smokeping_prober and
// blackbox_exporter), scrape time, inventory refreshes and API load, and
// start-up. Run it through bench/run.sh (as root). It prints a table with the
// goal beside each figure and exits non-zero when a correctness check fails
// (false loss, missing series); timings are reported, never asserted.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

var (
	binary     = flag.String("binary", "", "the exporter binary to measure")
	sizes      = flag.String("n", "1000,10000", "numbers of VM addresses")
	cycles     = flag.Int("cycles", 3, "probe cycles measured per run (15 s each)")
	peers      = flag.Bool("peers", true, "measure fping, smokeping_prober and blackbox_exporter too")
	peerMax    = flag.Int("peer-max", 1000, "largest N for smokeping_prober and blackbox_exporter (they cost a core per ~1,000 targets)")
	engines    = flag.String("engines", "shared,pro-bing", "exporter engines to measure")
	inventoryN = flag.String("inventory-n", "10000,50000", "servers for the inventory refresh rows")
	soak       = flag.Duration("soak", 0, "instead of the table: a soak of this length with fleet churn and API faults")
)

type row struct {
	area, what, value, goal, verdict string
}

var (
	rows   []row
	failed bool
)

func add(area, what, value, goal, verdict string) {
	rows = append(rows, row{area, what, value, goal, verdict})
	if verdict == "FAIL" {
		failed = true
	}
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: run as root (network namespaces, raw sockets)")
		os.Exit(2)
	}
	if *soak > 0 {
		runSoak(*soak)
		printTable()
		if failed {
			os.Exit(1)
		}
		return
	}
	for _, n := range ints(*sizes) {
		for _, engine := range strings.Split(*engines, ",") {
			measureExporter(n, engine)
		}
		if *peers {
			measureFping(n)
			if n <= *peerMax {
				measureSmokeping(n)
				measureBlackbox(n)
			}
		}
	}
	measureInventory(ints(*inventoryN))
	printTable()
	if failed {
		os.Exit(1)
	}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// addresses returns n addresses of 198.18.0.0/15.
func addresses(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		v := uint32(198)<<24 | uint32(18)<<16 | uint32(i+1)
		out[i] = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return out
}

// lab builds a namespace lab with n answering addresses.
func lab(n int) (*netlab.Lab, []netip.Addr) {
	l, err := netlab.Build()
	must(err)
	addrs := addresses(n)
	must(l.Add(netlab.Answer, addrs...))
	return l, addrs
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
}

// procStat reads a process's CPU time (user+system) and resident memory.
func procStat(pid int) (cpu time.Duration, rss int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "VmRSS:") {
				kb, _ := strconv.ParseInt(strings.Fields(sc.Text())[1], 10, 64)
				rss = kb * 1024
			}
		}
		f.Close()
	}
	return
}

// steadyState watches a process over -cycles probe intervals: the CPU it
// used, the time that took, and its largest resident set.
func steadyState(pid int) (cpu, wall time.Duration, maxRSS int64) {
	cpu0, _ := procStat(pid)
	t0 := time.Now()
	for time.Since(t0) < time.Duration(*cycles)*15*time.Second {
		time.Sleep(time.Second)
		_, rss := procStat(pid)
		maxRSS = max(maxRSS, rss)
	}
	cpu1, _ := procStat(pid)
	return cpu1 - cpu0, time.Since(t0), maxRSS
}

func threads(pid int) int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(entries)
}

// scrape parses a /metrics page into name → series → value.
func scrape(client *http.Client, url string) (map[string]map[string]float64, time.Duration, error) {
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	took := time.Since(start)
	if err != nil {
		return nil, took, err
	}
	out := map[string]map[string]float64{}
	for name, fam := range fams {
		out[name] = map[string]float64{}
		for _, m := range fam.GetMetric() {
			var key []string
			for _, l := range m.GetLabel() {
				key = append(key, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			if m.Histogram != nil {
				v = float64(m.GetHistogram().GetSampleCount())
			}
			out[name][strings.Join(key, ",")] = v
		}
	}
	return out, took, nil
}

func sum(m map[string]float64) (s float64) {
	for _, v := range m {
		s += v
	}
	return
}

func single(m map[string]map[string]float64, name string) float64 {
	for _, v := range m[name] {
		return v
	}
	return 0
}

func pct(cpu, wall time.Duration) string {
	return fmt.Sprintf("%.2f%% of a core", 100*cpu.Seconds()/wall.Seconds())
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ok(cond bool) string {
	if cond {
		return "ok"
	}
	return "missed"
}

// measureExporter runs the exporter binary in the lab's hypervisor
// namespace against a stand-in Nova with n servers, one address each.
func measureExporter(n int, engine string) {
	l, addrs := lab(n)
	defer l.Close()
	var cloud *standin.Cloud
	must(l.Do(func() (err error) { cloud, err = standin.Start("127.0.0.1:0"); return err }))
	defer cloud.Close()
	servers := make([]standin.Server, n)
	for i, a := range addrs {
		servers[i] = standin.Server{ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), Name: fmt.Sprintf("vm-%d", i),
			ProjectID: "bench", Host: fmt.Sprintf("cmp-%d", i%1000), VMState: "active", PowerState: 1, Flavor: "m1.small",
			Addresses: []standin.Address{{Network: "provider", Addr: a.String(), Type: "fixed"}}}
	}
	cloud.Put(servers...)
	dir, _ := os.MkdirTemp("", "ovmx-bench-")
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "config.yaml")
	must(os.WriteFile(cfgPath, []byte(fmt.Sprintf(`openstack:
  scope: all
  refresh_interval: 60s
  full_refresh_interval: 10m
  timeout: 60s
probe:
  icmp:
    engine: %s
    interval: 15s
    count: 1
    timeout: 1s
`, engine)), 0o644))
	addr := "127.0.0.1:19735"
	args := append(l.ExecPrefix(), *binary, "--config.file="+cfgPath, "--web.listen-address="+addr, "--log.level=warn")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range cloud.Env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	start := time.Now()
	must(cmd.Start())
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	client := l.HTTPClient()
	base := "http://" + addr
	label := fmt.Sprintf("N=%d %s", n, engine)

	var ready, firstCycle time.Duration
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if ready == 0 {
			if resp, err := client.Get(base + "/-/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ready = time.Since(start)
				}
			}
		}
		if ready != 0 {
			m, _, err := scrape(client, base+"/metrics")
			if err == nil && single(m, "openstack_vm_probe_last_cycle_timestamp_seconds") > 0 {
				firstCycle = time.Since(start)
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if firstCycle == 0 {
		add("probing", label, "no probe cycle in 3 minutes", "", "FAIL")
		return
	}
	if engine == "shared" {
		add("start-up", label+": start to ready", firstCycle.Round(10*time.Millisecond).String()+" (ready "+ready.Round(10*time.Millisecond).String()+")", "", "")
	}

	// Steady state over whole cycles.
	time.Sleep(2 * time.Second)
	cpu, wall, maxRSS := steadyState(cmd.Process.Pid)

	m, _, err := scrape(client, base+"/metrics")
	must(err)
	sent, recv := sum(m["openstack_vm_icmp_packets_sent_total"]), sum(m["openstack_vm_icmp_packets_received_total"])
	up := m["openstack_vm_icmp_up"]
	down := 0
	for _, v := range up {
		if v != 1 {
			down++
		}
	}
	cycleDur := single(m, "openstack_vm_probe_cycle_duration_seconds")
	perProbe := time.Duration(float64(cpu) / (wall.Seconds() / 15) / float64(n))
	add("probing", label+": CPU", pct(cpu, wall)+fmt.Sprintf(" (%v per 15 s cycle, %v per probe)", time.Duration(float64(cpu)*15/wall.Seconds()).Round(time.Millisecond), perProbe.Round(100*time.Nanosecond)),
		"≤ 5% of a core at 10,000", ok(n > 10000 || 100*cpu.Seconds()/wall.Seconds() <= 5))
	add("probing", label+": RSS (max)", mib(maxRSS)+fmt.Sprintf(", %d threads", threads(cmd.Process.Pid)), "< 100 MiB at 10,000", ok(n > 10000 || maxRSS < 100<<20))
	add("probing", label+": cycle duration", fmt.Sprintf("%.2f s", cycleDur), "well under 15 s", ok(cycleDur < 10))
	verdict := "ok"
	if len(up) != n || down > 0 || sent != recv {
		verdict = "FAIL"
	}
	add("probing", label+": false loss", fmt.Sprintf("%d series, %d down, %.0f sent, %.0f received", len(up), down, sent, recv), "0 lost, every series", verdict)

	if engine == "shared" {
		var times []time.Duration
		var size int
		for i := 0; i < 10; i++ {
			resp, err := client.Get(base + "/metrics")
			if err != nil {
				continue
			}
			start := time.Now()
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			times = append(times, time.Since(start))
			size = len(b)
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		if len(times) > 0 {
			med := times[len(times)/2]
			add("scrape", fmt.Sprintf("N=%d: /metrics (%.1f MB text)", n, float64(size)/1e6), "median "+med.Round(time.Millisecond).String(), "< 100 ms at 10,000", ok(n > 10000 || med < 100*time.Millisecond))
		}
	}
}

// measureFping times fping doing the same rounds (count 1), for the cost
// of a probe done well.
func measureFping(n int) {
	if _, err := exec.LookPath("fping"); err != nil {
		add("peers", fmt.Sprintf("N=%d fping", n), "not installed (apt-get install fping)", "", "")
		return
	}
	l, addrs := lab(n)
	defer l.Close()
	f, _ := os.CreateTemp("", "fping-targets-")
	defer os.Remove(f.Name())
	for _, a := range addrs {
		fmt.Fprintln(f, a)
	}
	f.Close()
	args := append(l.ExecPrefix(), "fping", "-c", "1", "-i", "1", "-q", "-f", f.Name())
	cmd := exec.Command(args[0], args[1:]...)
	var out strings.Builder
	cmd.Stderr = &out
	start := time.Now()
	_ = cmd.Run()
	wall := time.Since(start)
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	lost := strings.Count(out.String(), "100%")
	usage := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	add("peers", fmt.Sprintf("N=%d fping -c 1 -i 1 (one round)", n),
		fmt.Sprintf("%v CPU (%v per probe), %s RSS, %v wall, %d lost", cpu.Round(time.Millisecond), (cpu/time.Duration(n)).Round(100*time.Nanosecond),
			mib(usage.Maxrss*1024), wall.Round(100*time.Millisecond), lost), "reference", "")
}

// measureSmokeping runs Debian's smokeping_prober (one pinger per target)
// on the same targets at a 15 s interval.
func measureSmokeping(n int) {
	const bin = "/usr/bin/prometheus-smokeping-prober"
	l, _, cfg, ok := peerLab(n, bin, "prometheus-smokeping-prober", func(addrs []netip.Addr) string {
		var b strings.Builder
		b.WriteString("targets:\n- hosts:\n")
		for _, a := range addrs {
			fmt.Fprintf(&b, "  - %s\n", a)
		}
		b.WriteString("  interval: 15s\n  network: ip4\n  protocol: icmp\n")
		return b.String()
	})
	if !ok {
		return
	}
	defer l.Close()
	defer os.Remove(cfg)
	args := append(l.ExecPrefix(), bin, "--config.file="+cfg, "--web.listen-address=127.0.0.1:19374", "--privileged", "--log.level=error")
	measurePeerProcess(l, fmt.Sprintf("N=%d smokeping_prober 0.6.1", n), args, n, func(client *http.Client) (float64, float64) {
		m, _, err := scrape(client, "http://127.0.0.1:19374/metrics")
		if err != nil {
			return 0, 0
		}
		return sum(m["smokeping_requests_total"]), sum(m["smokeping_response_duration_seconds"])
	}, nil)
}

// peerLab prepares a peer's run: checks it is installed, builds the lab and
// writes its configuration file.
func peerLab(n int, bin, pkg string, config func([]netip.Addr) string) (*netlab.Lab, []netip.Addr, string, bool) {
	if _, err := os.Stat(bin); err != nil {
		add("peers", fmt.Sprintf("N=%d %s", n, filepath.Base(bin)), "not installed (apt-get install "+pkg+")", "", "")
		return nil, nil, "", false
	}
	l, addrs := lab(n)
	f, err := os.CreateTemp("", "peer-*.yml")
	must(err)
	_, err = f.WriteString(config(addrs))
	must(err)
	must(f.Close())
	return l, addrs, f.Name(), true
}

// measureBlackbox runs Debian's blackbox_exporter with an ICMP module and
// drives /probe for every target every 15 s, as a Prometheus would.
func measureBlackbox(n int) {
	const bin = "/usr/bin/prometheus-blackbox-exporter"
	l, addrs, cfg, ok := peerLab(n, bin, "prometheus-blackbox-exporter", func([]netip.Addr) string {
		return "modules:\n  icmp:\n    prober: icmp\n    timeout: 1s\n    icmp:\n      preferred_ip_protocol: ip4\n"
	})
	if !ok {
		return
	}
	defer l.Close()
	defer os.Remove(cfg)
	args := append(l.ExecPrefix(), bin, "--config.file="+cfg, "--web.listen-address=127.0.0.1:19115", "--log.level=error")
	var mu sync.Mutex
	var probes, succeeded float64
	driver := func(ctx context.Context, client *http.Client) {
		ticker := time.NewTicker(15 * time.Second)
		defer ticker.Stop()
		for {
			sem := make(chan struct{}, 64)
			var wg sync.WaitGroup
			for _, a := range addrs {
				sem <- struct{}{}
				wg.Add(1)
				go func(a netip.Addr) {
					defer wg.Done()
					defer func() { <-sem }()
					resp, err := client.Get("http://127.0.0.1:19115/probe?module=icmp&target=" + a.String())
					if err != nil {
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					mu.Lock()
					probes++
					if strings.Contains(string(b), "probe_success 1") {
						succeeded++
					}
					mu.Unlock()
				}(a)
			}
			wg.Wait()
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}
	measurePeerProcess(l, fmt.Sprintf("N=%d blackbox_exporter /probe", n), args, n, func(*http.Client) (float64, float64) {
		mu.Lock()
		defer mu.Unlock()
		return probes, succeeded
	}, driver)
}

func measurePeerProcess(l *netlab.Lab, label string, args []string, n int, counts func(*http.Client) (sent, received float64),
	driver func(context.Context, *http.Client)) {
	cmd := exec.Command(args[0], args[1:]...)
	must(cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	client := l.HTTPClient()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.Sleep(3 * time.Second)
	if driver != nil {
		go driver(ctx, client)
	}
	time.Sleep(15 * time.Second) // one interval of warm-up
	s0, r0 := counts(client)
	cpu, wall, maxRSS := steadyState(cmd.Process.Pid)
	s1, r1 := counts(client)
	missing := 0.0
	if s1 > s0 {
		missing = 100 * (1 - (r1-r0)/(s1-s0))
	}
	perProbe := time.Duration(float64(cpu) / (wall.Seconds() / 15) / float64(n))
	add("peers", label, fmt.Sprintf("%s (%v per probe), %s RSS, %d threads, %.1f%% of replies missing", pct(cpu, wall),
		perProbe.Round(100*time.Nanosecond), mib(maxRSS), threads(cmd.Process.Pid), missing), "comparison", "")
}

// measureInventory measures full refreshes from the stand-in, and the API
// load of per-host exporters against one central exporter.
func measureInventory(sizes []int) {
	for _, n := range sizes {
		cloud, err := standin.Start("127.0.0.1:0")
		must(err)
		hosts := max(n/10, 1) // 10 servers a host
		servers := make([]standin.Server, n)
		for i := range servers {
			servers[i] = standin.Server{ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), Name: fmt.Sprintf("vm-%d", i), ProjectID: "bench",
				Host: fmt.Sprintf("cmp-%d", i%hosts), VMState: "active", PowerState: 1, Flavor: "m1.small", Updated: time.Now().Add(-time.Hour),
				Addresses: []standin.Address{{Network: "provider", Addr: addresses(n)[i].String(), Type: "fixed"}}}
		}
		cloud.Put(servers...)
		// Every host has its nova-compute service, as in a real cloud: a
		// per-host exporter checks that its host is known to Nova.
		for h := 0; h < hosts; h++ {
			cloud.SetService(fmt.Sprintf("cmp-%d", h), "UP")
		}
		for k, v := range cloud.Env() {
			os.Setenv(k, v)
		}
		newInv := func(scope, host string) *inventory.Inventory {
			cfg := config.Default().OpenStack
			cfg.Scope, cfg.Host, cfg.Timeout = scope, host, 5*time.Minute
			creds, err := inventory.LoadCredentials(cfg)
			must(err)
			client, err := inventory.NewClient(creds, inventory.ClientOptions{})
			must(err)
			return inventory.New(inventory.Options{OpenStack: cfg, Host: host}, client)
		}
		central := newInv("all", "")
		var memBefore, memAfter runtimeMem
		memBefore.read()
		start := time.Now()
		must(central.Refresh(context.Background()))
		took := time.Since(start)
		memAfter.read()
		h := central.Health()
		add("inventory", fmt.Sprintf("%d servers: full refresh, pages of 1,000", n), fmt.Sprintf("%v, %d requests, %.1f MB read, heap +%s",
			took.Round(10*time.Millisecond), h.Requests, float64(h.Bytes)/1e6, mib(int64(memAfter.heap)-int64(memBefore.heap))), "a few seconds", ok(took < 10*time.Second))
		r0, b0 := h.Requests, h.Bytes
		must(central.Refresh(context.Background()))
		h = central.Health()
		add("inventory", fmt.Sprintf("%d servers: quiet incremental refresh (central)", n), fmt.Sprintf("%d requests, %d bytes", h.Requests-r0, h.Bytes-b0), "almost nothing", "")

		one := newInv("host", "cmp-1")
		must(one.Refresh(context.Background()))
		oh := one.Health()
		must(one.Refresh(context.Background()))
		oh2 := one.Health()
		add("api load", fmt.Sprintf("%d servers on %d hosts: per-host exporters, first refresh (login included)", n, hosts),
			fmt.Sprintf("%d requests, %.1f MB in all (%d and %.1f kB each)", int(oh.Requests)*hosts, float64(oh.Bytes)*float64(hosts)/1e6, oh.Requests, float64(oh.Bytes)/1e3),
			fmt.Sprintf("vs central: %d requests, %.1f MB", r0, float64(b0)/1e6), "")
		// A quiet per-host refresh is changes-since plus the host's id
		// listing (which catches servers that left the host).
		add("api load", fmt.Sprintf("%d servers on %d hosts: per-host exporters, quiet incremental", n, hosts),
			fmt.Sprintf("%d requests, %.1f MB in all (%d and %.1f kB each)", int(oh2.Requests-oh.Requests)*hosts, float64(oh2.Bytes-oh.Bytes)*float64(hosts)/1e6,
				oh2.Requests-oh.Requests, float64(oh2.Bytes-oh.Bytes)/1e3), "ids only, no details", "")
		cloud.Close()
	}
}

func printTable() {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AREA\tWHAT\tMEASURED\tGOAL\tVERDICT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.area, r.what, r.value, r.goal, r.verdict)
	}
	tw.Flush()
}

// runtimeMem reads the live heap after a collection.
type runtimeMem struct{ heap uint64 }

func (m *runtimeMem) read() {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.heap = ms.HeapAlloc
}

// runSoak runs the exporter for d against a fleet that never stops changing
// (servers created, deleted, renamed, addresses moving between servers) and
// an API that fails one request in seven and hangs one in thirteen, and
// checks that memory, goroutines and file descriptors stay flat.
func runSoak(d time.Duration) {
	const n = 2000
	l, addrs := lab(n + 2000)
	defer l.Close()
	var cloud *standin.Cloud
	must(l.Do(func() (err error) { cloud, err = standin.Start("127.0.0.1:0"); return err }))
	defer cloud.Close()
	server := func(i int, a netip.Addr) standin.Server {
		return standin.Server{ID: fmt.Sprintf("soak-%08d", i), Name: fmt.Sprintf("vm-%d", i), ProjectID: "soak",
			Host: fmt.Sprintf("cmp-%d", i%50), VMState: "active", PowerState: 1, Flavor: "m1.small",
			Addresses: []standin.Address{{Network: "provider", Addr: a.String(), Type: "fixed"}}}
	}
	live := map[int]netip.Addr{}
	for i := 0; i < n; i++ {
		cloud.Put(server(i, addrs[i]))
		live[i] = addrs[i]
	}
	var reqs int64
	var reqMu sync.Mutex
	cloud.SetFault(func(r *http.Request) *standin.Failure {
		if !strings.HasSuffix(r.URL.Path, "/servers/detail") {
			return nil
		}
		reqMu.Lock()
		reqs++
		k := reqs
		reqMu.Unlock()
		switch {
		case k%13 == 0:
			return &standin.Failure{Hang: true}
		case k%7 == 0:
			return &standin.Failure{Status: 500}
		}
		return nil
	})
	dir, _ := os.MkdirTemp("", "ovmx-soak-")
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "config.yaml")
	must(os.WriteFile(cfgPath, []byte("openstack:\n  scope: all\n  refresh_interval: 2s\n  full_refresh_interval: 10s\n  timeout: 3s\n"+
		"probe:\n  icmp:\n    interval: 2s\n    count: 1\n    timeout: 500ms\n"), 0o644))
	addr := "127.0.0.1:19735"
	args := append(l.ExecPrefix(), *binary, "--config.file="+cfgPath, "--web.listen-address="+addr, "--log.level=error")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range cloud.Env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	must(cmd.Start())
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	client := l.HTTPClient()

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	go func() { // the churn
		next := n
		for ctx.Err() == nil {
			time.Sleep(500 * time.Millisecond)
			ids := make([]int, 0, len(live))
			for id := range live {
				ids = append(ids, id)
			}
			sort.Ints(ids)
			for k := 0; k < 20 && len(ids) > 0; k++ {
				victim := ids[(next*7+k*13)%len(ids)]
				if _, ok := live[victim]; !ok {
					continue
				}
				cloud.Delete(fmt.Sprintf("soak-%08d", victim))
				a := live[victim]
				delete(live, victim)
				cloud.Put(server(next, a)) // its address moves to a new server
				live[next] = a
				next++
			}
			for k := 0; k < 10 && len(ids) > 0; k++ {
				id := ids[(next+k*31)%len(ids)]
				cloud.Update(fmt.Sprintf("soak-%08d", id), func(s *standin.Server) { s.Name = fmt.Sprintf("renamed-%d-%d", id, next) })
			}
		}
	}()

	type sample struct {
		at                time.Duration
		rss               int64
		goroutines, fds   float64
		series, apiErrors float64
	}
	var samples []sample
	start := time.Now()
	for ctx.Err() == nil {
		time.Sleep(10 * time.Second)
		m, _, err := scrape(client, "http://"+addr+"/metrics")
		if err != nil {
			continue
		}
		_, rss := procStat(cmd.Process.Pid)
		samples = append(samples, sample{at: time.Since(start).Round(time.Second), rss: rss, goroutines: single(m, "go_goroutines"),
			fds: single(m, "process_open_fds"), series: float64(len(m["openstack_vm_icmp_up"])), apiErrors: sum(m["openstack_vm_api_errors_total"])})
	}
	for _, s := range samples {
		add("soak", s.at.String(), fmt.Sprintf("RSS %s, %.0f goroutines, %.0f fds, %.0f address series, %.0f API errors so far",
			mib(s.rss), s.goroutines, s.fds, s.series, s.apiErrors), "", "")
	}
	if len(samples) < 4 {
		add("soak", "verdict", "too few samples", "", "FAIL")
		return
	}
	first, last := samples[1], samples[len(samples)-1]
	flat := last.rss <= first.rss*5/4+(4<<20) && last.goroutines <= first.goroutines+5 && last.fds <= first.fds+3
	verdict := "ok"
	if !flat || last.apiErrors == 0 {
		verdict = "FAIL"
	}
	add("soak", "verdict", fmt.Sprintf("RSS %s → %s, goroutines %.0f → %.0f, fds %.0f → %.0f over %v", mib(first.rss), mib(last.rss),
		first.goroutines, last.goroutines, first.fds, last.fds, d), "flat", verdict)
}
