// Package promstack starts Debian's Prometheus and Alertmanager with the
// bundled rules, for the demo and the end-to-end test: configuration files
// written into a directory of the caller, loopback ports, and processes
// stopped by Close, or killed by the kernel when the process that started
// them dies (package tied).
package promstack

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/tied"
)

// Binaries as Debian installs them (packages prometheus, prometheus-alertmanager).
const (
	PrometheusBinary   = "/usr/bin/prometheus"
	AlertmanagerBinary = "/usr/bin/prometheus-alertmanager"
)

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

// StartPrometheus writes prometheus.yml and starts Prometheus on listen.
func (s *Stack) StartPrometheus(ctx context.Context, listen, config string) (*Process, error) {
	dir := filepath.Join(s.opts.Dir, "prometheus")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return nil, err
	}
	return s.start(ctx, "prometheus", "http://"+listen, "/-/ready", PrometheusBinary,
		"--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--web.enable-lifecycle", "--storage.tsdb.retention.time=1d")
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

func (s *Stack) start(ctx context.Context, name, url, readyPath, binary string, args ...string) (*Process, error) {
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("%s is not installed (%s): apt-get install -y %s", name, binary,
			map[string]string{"prometheus": "prometheus", "alertmanager": "prometheus-alertmanager"}[name])
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

// Close stops every program started.
func (s *Stack) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.started {
		if p.cmd.Process != nil {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
				<-p.done
			}
		}
	}
	s.started = nil
}
