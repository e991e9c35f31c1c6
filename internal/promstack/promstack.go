// Package promstack starts Debian's Prometheus and Alertmanager with the
// bundled rules, for the demo and the end-to-end test, and the sharded
// layout of docs/scaling.md (vmagent scrapers remote-writing into
// VictoriaMetrics, vmalert evaluating the rules): configuration files
// written into a directory of the caller, loopback ports, and processes
// stopped by Close, or killed by the kernel when the process that started
// them dies (package tied).
package promstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/tied"
)

// Binaries as Debian installs them (packages prometheus,
// prometheus-alertmanager, victoria-metrics).
const (
	PrometheusBinary      = "/usr/bin/prometheus"
	AlertmanagerBinary    = "/usr/bin/prometheus-alertmanager"
	VictoriaMetricsBinary = "/usr/bin/victoria-metrics"
	VMAgentBinary         = "/usr/bin/vmagent"
	VMAlertBinary         = "/usr/bin/vmalert"
)

// debianPackage names the package of each binary, for the error a missing
// one gives.
var debianPackage = map[string]string{
	PrometheusBinary:      "prometheus",
	AlertmanagerBinary:    "prometheus-alertmanager",
	VictoriaMetricsBinary: "victoria-metrics",
	VMAgentBinary:         "victoria-metrics",
	VMAlertBinary:         "victoria-metrics",
}

// Options says where and how to run.
type Options struct {
	Dir string
	// Prefix runs the programs through a command (e.g. ip netns exec NS).
	Prefix []string
	// Client reaches the programs' HTTP (from inside a namespace if need be).
	Client *http.Client
}

// Process is a running program.
type Process struct {
	Name string
	URL  string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Stack is what was started.
type Stack struct {
	opts    Options
	mu      sync.Mutex
	started []*Process
}

// New prepares a stack.
func New(opts Options) *Stack {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	return &Stack{opts: opts}
}

// PrometheusConfig is the configuration of a Prometheus scraping one
// exporter, evaluating the rules, and sending alerts to an Alertmanager
// (alertmanager may be empty).
func PrometheusConfig(interval time.Duration, job, exporter, rulesFile, alertmanager string) string {
	return HostPrometheusConfig(interval, job, exporter, "", rulesFile, alertmanager)
}

// HostPrometheusConfig is PrometheusConfig for an exporter of one
// hypervisor, scraped as deploy/prometheus/prometheus.yml advises: a host
// target label naming the Nova host (so that up and the exporter's own
// series say which hypervisor they watch), and honor_labels, so that the
// servers' own host label is kept rather than renamed exported_host. An
// empty host gives PrometheusConfig's.
func HostPrometheusConfig(interval time.Duration, job, exporter, host, rulesFile, alertmanager string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", interval, interval)
	fmt.Fprintf(&b, "rule_files:\n  - %s\n", rulesFile)
	if alertmanager != "" {
		fmt.Fprintf(&b, "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [%q]\n", alertmanager)
	}
	fmt.Fprintf(&b, "scrape_configs:\n  - job_name: %s\n", job)
	if host != "" {
		b.WriteString("    honor_labels: true\n")
	}
	fmt.Fprintf(&b, "    static_configs:\n      - targets: [%q]\n", exporter)
	if host != "" {
		fmt.Fprintf(&b, "        labels:\n          host: %q\n", host)
	}
	return b.String()
}

// StartPrometheus writes prometheus.yml and starts Prometheus on listen,
// with any extra flags (e.g. --enable-feature=native-histograms).
func (s *Stack) StartPrometheus(ctx context.Context, listen, config string, extra ...string) (*Process, error) {
	dir := filepath.Join(s.opts.Dir, "prometheus")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return nil, err
	}
	return s.start(ctx, "prometheus", "http://"+listen, "/-/ready", PrometheusBinary,
		append([]string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + listen, "--web.enable-lifecycle", "--storage.tsdb.retention.time=1d"}, extra...)...)
}

// StartAlertmanager writes alertmanager.yml and starts Alertmanager on listen.
func (s *Stack) StartAlertmanager(ctx context.Context, listen, config string) (*Process, error) {
	dir := filepath.Join(s.opts.Dir, "alertmanager")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return nil, err
	}
	// A lone Alertmanager: no cluster port to bind or gossip on.
	return s.start(ctx, "alertmanager", "http://"+listen, "/-/ready", AlertmanagerBinary,
		"--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--cluster.listen-address=")
}

// FleetPrometheusConfig is HostPrometheusConfig for several hypervisors'
// exporters (Nova host → address), the single Prometheus that the sharded
// layout of docs/scaling.md replaces.
func FleetPrometheusConfig(interval time.Duration, job string, exporters map[string]string, rulesFile, alertmanager string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", interval, interval)
	fmt.Fprintf(&b, "rule_files:\n  - %s\n", rulesFile)
	if alertmanager != "" {
		fmt.Fprintf(&b, "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [%q]\n", alertmanager)
	}
	writeScrapeConfigs(&b, job, exporters, 0, 1)
	return b.String()
}

// ShardScrapeConfig is the scrape configuration of scraper shard of
// shards: the exporters (Nova host → address) scraped as
// HostPrometheusConfig does, and kept only if the hash of their host label
// falls on this shard (hashmod relabelling, which Prometheus and vmagent
// both have). Sharding by host keeps
// every series of one host, a host exporter's and any other exporter's
// given the same host target label, on one scraper.
func ShardScrapeConfig(interval time.Duration, job string, shard, shards int, exporters map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n", interval)
	writeScrapeConfigs(&b, job, exporters, shard, shards)
	return b.String()
}

func writeScrapeConfigs(b *strings.Builder, job string, exporters map[string]string, shard, shards int) {
	fmt.Fprintf(b, "scrape_configs:\n  - job_name: %s\n    honor_labels: true\n    static_configs:\n", job)
	hosts := make([]string, 0, len(exporters))
	for h := range exporters {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		fmt.Fprintf(b, "      - targets: [%q]\n        labels:\n          host: %q\n", exporters[h], h)
	}
	if shards > 1 {
		fmt.Fprintf(b, "    relabel_configs:\n")
		fmt.Fprintf(b, "      - {source_labels: [host], modulus: %d, target_label: __tmp_shard, action: hashmod}\n", shards)
		fmt.Fprintf(b, "      - {source_labels: [__tmp_shard], regex: %q, action: keep}\n", fmt.Sprint(shard))
	}
}

// StartVictoriaMetrics starts single-node VictoriaMetrics on listen, taking
// remote writes at /api/v1/write and answering PromQL/MetricsQL queries at
// /api/v1/query. Queries see samples up to one second old: the default
// -search.latencyOffset of 30s would hide the newest 30 seconds from
// instant queries at "now", as vmalert's are (docs/scaling.md).
func (s *Stack) StartVictoriaMetrics(ctx context.Context, listen string, extra ...string) (*Process, error) {
	dir := filepath.Join(s.opts.Dir, "victoria-metrics")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	args := append([]string{"-storageDataPath=" + dir, "-httpListenAddr=" + listen,
		"-retentionPeriod=1d", "-search.latencyOffset=1s"}, extra...)
	return s.start(ctx, "victoria-metrics", "http://"+listen, "/health", VictoriaMetricsBinary, args...)
}

// StartVMAgent writes name.yml (a Prometheus scrape configuration) and
// starts vmagent on listen, scraping it and remote-writing to remoteWrite
// (a URL such as http://127.0.0.1:8428/api/v1/write).
func (s *Stack) StartVMAgent(ctx context.Context, name, listen, config, remoteWrite string, extra ...string) (*Process, error) {
	dir := filepath.Join(s.opts.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "scrape.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return nil, err
	}
	args := append([]string{"-promscrape.config=" + cfg, "-promscrape.config.strictParse",
		"-remoteWrite.url=" + remoteWrite, "-remoteWrite.tmpDataPath=" + filepath.Join(dir, "queue"),
		"-remoteWrite.flushInterval=500ms", "-httpListenAddr=" + listen}, extra...)
	return s.start(ctx, name, "http://"+listen, "/health", VMAgentBinary, args...)
}

// StartVMAlert starts vmalert on listen, evaluating rulesFile every
// interval against datasource (VictoriaMetrics' URL), writing recording
// rules and alert state back to it, and sending alerts to alertmanager
// (a URL). Unlike Prometheus, vmalert hands a recording rule's result to
// the next rules only through the storage: they see it once it is written
// back (flushed every 500ms here, 5s by default) and searchable, so a chain
// of recording rules lags an evaluation or two (docs/scaling.md).
func (s *Stack) StartVMAlert(ctx context.Context, listen, rulesFile, datasource, alertmanager string, interval time.Duration, extra ...string) (*Process, error) {
	args := append([]string{"-rule=" + rulesFile, "-datasource.url=" + datasource,
		"-remoteWrite.url=" + datasource, "-remoteRead.url=" + datasource, "-notifier.url=" + alertmanager,
		"-evaluationInterval=" + interval.String(), "-remoteWrite.flushInterval=500ms",
		"-httpListenAddr=" + listen}, extra...)
	return s.start(ctx, "vmalert", "http://"+listen, "/health", VMAlertBinary, args...)
}

func (s *Stack) start(ctx context.Context, name, url, readyPath, binary string, args ...string) (*Process, error) {
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("%s is not installed (%s): apt-get install -y %s", name, binary, debianPackage[binary])
	}
	argv := append(append(append([]string{}, s.opts.Prefix...), binary), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	logPath := filepath.Join(s.opts.Dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	exited, err := tied.Start(cmd)
	logFile.Close()
	if err != nil {
		return nil, err
	}
	p := &Process{Name: name, URL: url, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { <-exited; close(p.done) }()
	s.mu.Lock()
	s.started = append(s.started, p)
	s.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+readyPath, nil)
		if resp, err := s.opts.Client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited at start:\n%s", name, p.Log())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s not ready within 60s:\n%s", name, p.Log())
		}
	}
}

// Log returns the end of the program's log.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// Close stops every program started: all asked at once, each killed if
// it has not exited 5 seconds later.
func (s *Stack) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.started {
		if p.cmd.Process != nil {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	expired := false
	for _, p := range s.started {
		if p.cmd.Process == nil {
			continue
		}
		if !expired {
			select {
			case <-p.done:
				continue
			case <-timer.C:
				expired = true
			}
		}
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	s.started = nil
}

// Query runs an instant PromQL query against a Prometheus or
// VictoriaMetrics at base and returns the number of series it gives; extra
// are more URL parameters ("nocache=1" makes VictoriaMetrics read what was
// just written).
func Query(client *http.Client, base, q string, extra ...string) (int, error) {
	u := base + "/api/v1/query?query=" + url.QueryEscape(q)
	for _, e := range extra {
		u += "&" + e
	}
	resp, err := client.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s", r.Error)
	}
	return len(r.Data.Result), nil
}
