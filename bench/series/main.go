// Command series measures what the exporter costs a Prometheus: the
// series and exposition bytes per VM, per address, per host and per
// exporter, read from a real /metrics of the exporter probing a namespace
// lab, against a stand-in Nova with N servers; and the same under the
// knobs that cut it (fewer RTT buckets, native instead of classic RTT
// histograms, fewer address types). A real Prometheus 2.42 scrapes each
// variant once to confirm the count (scrape_samples_scraped). Run it
// through bench/series.sh (as root); docs/scaling.md quotes its output.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/promstack"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

var (
	binary  = flag.String("binary", "", "the exporter binary to measure")
	sizes   = flag.String("n", "1000,10000", "numbers of VMs")
	perHost = flag.Int("per-host", 40, "VMs per compute host")
	proMax  = flag.Int("prometheus-max", 1000, "up to this many VMs, confirm each count with a real Prometheus scrape (scrape_samples_scraped)")
)

// variant is one exporter configuration measured.
type variant struct {
	name    string
	probe   string // the probe.icmp block's extra lines
	native  bool   // scraped as a Prometheus with native histograms does
	addrsVM int    // addresses probed per VM
}

var variants = []variant{
	{name: "default: 12 classic buckets, fixed+floating", addrsVM: 2},
	{name: "address_types: [fixed]", probe: "    address_types: [fixed]\n", addrsVM: 1},
	{name: "rtt_buckets: 4 (1 ms, 10 ms, 100 ms, 1 s)", probe: "    rtt_buckets: [0.001, 0.01, 0.1, 1]\n", addrsVM: 2},
	{name: "native RTT histogram (Prometheus --enable-feature=native-histograms)", native: true, addrsVM: 2},
}

// count is what one exposition holds, by what the series scale with.
type count struct {
	series, bytes     map[string]int // by scope: vm, address, host, exporter
	total, totalBytes int            // series, and bytes of the whole exposition
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 || *binary == "" {
		fmt.Fprintln(os.Stderr, "series: run as root with -binary (bench/series.sh does)")
		os.Exit(2)
	}
	fmt.Println("| VMs | variant | series | per VM | per address | per host | per exporter | exposition bytes per VM | Prometheus scrape_samples_scraped |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			continue
		}
		for _, v := range variants {
			c, samples := measure(n, v)
			hosts := (n + *perHost - 1) / *perHost
			perVM := float64(c.series["vm"]+c.series["address"]) / float64(n)
			perAddr := float64(c.series["address"]) / float64(n*v.addrsVM)
			fmt.Printf("| %d | %s | %d | %.2f | %.2f | %.2f | %d | %.0f | %s |\n", n, v.name, c.total, perVM, perAddr,
				float64(c.series["host"])/float64(hosts), c.series["exporter"], float64(c.totalBytes)/float64(n), samples)
		}
	}
}

// measure runs the exporter in scope all (one exporter reporting every
// host, so per-host series show) against n servers of *perHost per host,
// each with a fixed and a floating address that answer in the lab.
func measure(n int, v variant) (count, string) {
	l, err := netlab.Build()
	must(err)
	defer l.Close()
	addrs := make([]netip.Addr, 2*n)
	for i := range addrs {
		x := uint32(198)<<24 | uint32(18)<<16 | uint32(i+1)
		addrs[i] = netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	must(l.Add(netlab.Answer, addrs...))
	var cloud *standin.Cloud
	must(l.Do(func() (err error) { cloud, err = standin.Start("127.0.0.1:0"); return err }))
	defer cloud.Close()
	servers := make([]standin.Server, n)
	for i := range servers {
		host := fmt.Sprintf("cmp-%04d", i / *perHost)
		servers[i] = standin.Server{ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), Name: fmt.Sprintf("vm-%d", i),
			ProjectID: fmt.Sprintf("project-%03d", i%200), Host: host, VMState: "active", PowerState: 1, Flavor: "m1.small",
			Addresses: []standin.Address{
				{Network: "provider", Addr: addrs[2*i].String(), Type: "fixed"},
				{Network: "provider", Addr: addrs[2*i+1].String(), Type: "floating"},
			}}
		cloud.SetService(host, "UP")
	}
	cloud.Put(servers...)

	dir, _ := os.MkdirTemp("", "ovmx-series-")
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "config.yaml")
	must(os.WriteFile(cfgPath, []byte(`openstack:
  scope: all
  refresh_interval: 60s
  full_refresh_interval: 10m
  timeout: 60s
probe:
  icmp:
    interval: 15s
    count: 1
    timeout: 1s
`+v.probe), 0o644))
	const addr = "127.0.0.1:19735"
	args := append(l.ExecPrefix(), *binary, "--config.file="+cfgPath, "--web.listen-address="+addr, "--log.level=warn")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, val := range cloud.Env() {
		cmd.Env = append(cmd.Env, k+"="+val)
	}
	cmd.Stderr = os.Stderr
	must(cmd.Start())
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	client := l.HTTPClient()
	base := "http://" + addr

	// Wait for every probed address to have answered: then every series
	// of the address exists (the RTT histogram has its buckets).
	want := n * v.addrsVM
	deadline := time.Now().Add(5 * time.Minute)
	var text []byte
	for {
		text, err = get(client, base+"/metrics", "")
		if err == nil {
			parser := expfmt.NewTextParser(model.UTF8Validation)
			if fams, err := parser.TextToMetricFamilies(bytes.NewReader(text)); err == nil &&
				answered(fams["openstack_vm_icmp_up"]) == want {
				break
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "series: N=%d %s: not every address answered in 5 minutes\n", n, v.name)
			os.Exit(1)
		}
		time.Sleep(time.Second)
	}
	var c count
	if v.native {
		body, err := get(client, base+"/metrics", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
		must(err)
		c = countProto(body)
	} else {
		c = countText(text)
	}
	samples := "-"
	if n <= *proMax {
		samples = prometheusCount(l, dir, addr, v.native)
	}
	return c, samples
}

func answered(f *dto.MetricFamily) int {
	k := 0
	for _, m := range f.GetMetric() {
		if m.GetGauge().GetValue() == 1 {
			k++
		}
	}
	return k
}

func get(client *http.Client, u, accept string) ([]byte, error) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// scope says what a series scales with, from its labels.
func scope(labels map[string]bool) string {
	switch {
	case labels["address"]:
		return "address"
	case labels["id"]:
		return "vm"
	case labels["host"]:
		return "host"
	}
	return "exporter"
}

// countText counts the series of a text exposition as Prometheus stores
// them: a classic histogram is a series per bucket, _sum and _count. Each
// exposition line is one series; its bytes are the line's.
func countText(text []byte) count {
	c := count{series: map[string]int{}, bytes: map[string]int{}, totalBytes: len(text)}
	for _, line := range bytes.Split(text, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		labels := map[string]bool{}
		if i := bytes.IndexByte(line, '{'); i >= 0 {
			for _, l := range []string{"address", "id", "host"} {
				if bytes.Contains(line[i:], []byte(","+l+"=\"")) || bytes.Contains(line[i:], []byte("{"+l+"=\"")) {
					labels[l] = true
				}
			}
		}
		s := scope(labels)
		c.series[s]++
		c.bytes[s] += len(line) + 1
		c.total++
	}
	return c
}

// countProto counts the series of a protobuf exposition as Prometheus 2.42
// with native histograms stores them: a histogram with native buckets is
// one series (its classic buckets are not kept), any other histogram a
// series per bucket, _sum and _count.
func countProto(body []byte) count {
	c := count{series: map[string]int{}, bytes: map[string]int{}}
	dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.NewFormat(expfmt.TypeProtoDelim))
	for {
		var f dto.MetricFamily
		if err := dec.Decode(&f); err != nil {
			break
		}
		for _, m := range f.GetMetric() {
			labels := map[string]bool{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
			k := 1
			if h := m.GetHistogram(); h != nil {
				if len(h.GetPositiveSpan()) == 0 && h.GetZeroThreshold() == 0 {
					k = len(h.GetBucket()) + 3 // classic only
				}
			} else if s := m.GetSummary(); s != nil {
				k = len(s.GetQuantile()) + 2
			}
			c.series[scope(labels)] += k
			c.total += k
		}
	}
	c.totalBytes = len(body)
	return c
}

// prometheusCount scrapes the exporter with Debian's Prometheus and returns
// its scrape_samples_scraped.
func prometheusCount(l *netlab.Lab, dir, exporter string, native bool) string {
	stack := promstack.New(promstack.Options{Dir: filepath.Join(dir, "prom"), Prefix: l.ExecPrefix(), Client: l.HTTPClient()})
	defer stack.Close()
	var extra []string
	if native {
		extra = append(extra, "--enable-feature=native-histograms")
	}
	cfg := fmt.Sprintf("global:\n  scrape_interval: 5s\n  scrape_timeout: 5s\nscrape_configs:\n  - job_name: openstack-vm-exporter\n    static_configs:\n      - targets: [%q]\n", exporter)
	p, err := stack.StartPrometheus(context.Background(), "127.0.0.1:19090", cfg, extra...)
	if err != nil {
		return "error: " + err.Error()
	}
	client := l.HTTPClient()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if scraped := query(client, p.URL, `scrape_samples_scraped`); scraped != "" {
			return scraped
		}
		time.Sleep(time.Second)
	}
	return "no scrape"
}

// query returns the value of a one-series instant query, or "".
func query(client *http.Client, base, q string) string {
	body, err := get(client, base+"/api/v1/query?query="+url.QueryEscape(q), "")
	if err != nil {
		return ""
	}
	var r struct {
		Data struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &r) != nil || len(r.Data.Result) != 1 || len(r.Data.Result[0].Value) != 2 {
		return ""
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return s
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "series:", err)
		os.Exit(2)
	}
}
