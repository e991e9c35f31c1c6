package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/exporter"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

// hostRemote is the one host of the demo's second region, which only its
// own exporter watches.
const hostRemote = "demo-hypervisor-7"

// SideExporters are more exporters on the demo cloud, each wrong the way
// operators meet it: a per-host exporter configured with a host name Nova
// does not know (the FQDN where Nova has the short name); one whose region
// has no Nova; with the demo's network, one whose packet rate cap is too
// low for its probe count, so its cycles overrun their interval (it probes
// one floating address, from the network's hypervisor namespace); and the
// per-host exporter of demo-hypervisor-7, in a second region that no
// central exporter watches, which dies with its host (KillHost).
// Prometheus scrapes them beside the demo's exporter, so that the
// exporter's own alerts fire too.
type SideExporters struct {
	targets []string
	remote  *standin.Cloud
	dir     string
	mu      sync.Mutex
	side    []*sideExporter
	host    *sideExporter
}

type sideExporter struct {
	srv    *http.Server
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func (e *sideExporter) stop() {
	e.cancel()
	_ = e.srv.Close()
	e.done.Wait()
}

// StartSideExporters starts them with the demo's configuration and
// credentials (the OS_* variables getenv gives, Cloud.Getenv); network may
// be nil.
func StartSideExporters(base *config.Config, getenv func(string) string, network *Network) (s *SideExporters, err error) {
	s = &SideExporters{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	misnamed := *base
	misnamed.OpenStack.Scope, misnamed.OpenStack.Host = "host", hostOK+".demo.example"
	lost := *base
	lost.OpenStack.Region = "demo-region-without-nova"
	misnamed.Probe.ICMP.Enabled, lost.Probe.ICMP.Enabled = false, false
	configs := []config.Config{misnamed, lost}
	if network != nil && base.Probe.ICMP.Enabled {
		overloaded := *base
		overloaded.Probe.ICMP.Networks = []string{"demo-public"}
		overloaded.Probe.ICMP.Count, overloaded.Probe.ICMP.MaxPacketsPerSecond = 20, 1
		configs = append(configs, overloaded)
	}
	for _, cfg := range configs {
		e, err := s.start(cfg, getenv, network)
		if err != nil {
			return s, err
		}
		s.side = append(s.side, e)
	}
	remote, remoteEnv, err := s.startRemote(base, getenv)
	if err != nil {
		return s, err
	}
	s.host, err = s.start(remote, remoteEnv, nil)
	return s, err
}

// startRemote starts the second region, a stand-in found through a
// clouds.yaml of its own (the demo's exporter reads the OS_* variables),
// and returns the configuration of its host's exporter and the variables it
// reads: getenv's, and OS_CLIENT_CONFIG_FILE naming that clouds.yaml.
func (s *SideExporters) startRemote(base *config.Config, getenv func(string) string) (config.Config, func(string) string, error) {
	remote, err := standin.Start("127.0.0.1:0")
	if err != nil {
		return config.Config{}, nil, err
	}
	s.remote = remote
	remote.Password = "demo-remote-password"
	for i := range 2 {
		remote.Put(standin.Server{ID: fmt.Sprintf("00000000-demo-4000-8000-%012d", 70+i), Name: fmt.Sprintf("remote-%d", i+1),
			ProjectID: "demo-project-web", Host: hostRemote, VMState: "active", PowerState: 1, Flavor: "m1.small",
			Updated: time.Now().Add(-24 * time.Hour)})
	}
	remote.SetService(hostRemote, "UP")
	if s.dir, err = os.MkdirTemp("", "openstack-vm-exporter-demo-region-"); err != nil {
		return config.Config{}, nil, err
	}
	path := filepath.Join(s.dir, "clouds.yaml")
	clouds := fmt.Sprintf(`clouds:
  demo-region-2:
    auth:
      auth_url: %q
      username: %q
      password: %q
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
`, remote.AuthURL(), remote.Username, remote.Password)
	if err := os.WriteFile(path, []byte(clouds), 0o600); err != nil {
		return config.Config{}, nil, err
	}
	env := func(name string) string {
		if name == "OS_CLIENT_CONFIG_FILE" {
			return path
		}
		return getenv(name)
	}
	cfg := *base
	cfg.OpenStack.Cloud, cfg.OpenStack.Scope, cfg.OpenStack.Host = "demo-region-2", "host", hostRemote
	cfg.Probe.ICMP.Enabled = false
	return cfg, env, nil
}

// start runs one exporter and serves it on a loopback port.
func (s *SideExporters) start(cfg config.Config, getenv func(string) string, network *Network) (*sideExporter, error) {
	var svc *exporter.Service
	newService := func() (err error) {
		svc, err = exporter.New(&cfg, exporter.Deps{Logger: slog.New(slog.DiscardHandler), Getenv: getenv})
		return err
	}
	var err error
	if cfg.Probe.ICMP.Enabled {
		// Its ICMP sockets in the namespace without a default route.
		err = network.Do(newService)
	} else {
		err = newService()
	}
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &sideExporter{srv: &http.Server{Handler: svc.Handler(promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}, cancel: cancel}
	s.targets = append(s.targets, l.Addr().String())
	e.done.Add(2)
	go func() { defer e.done.Done(); svc.Run(ctx) }()
	go func() {
		defer e.done.Done()
		if err := e.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Default().Warn("a side exporter of the demo stopped serving", "err", err)
		}
	}()
	return e, nil
}

// Targets are their scrape addresses.
func (s *SideExporters) Targets() []string { return s.targets }

// KillHostAfter stops the exporter of demo-hypervisor-7 after d, as if the
// host died with it, unless ctx ends first.
func (s *SideExporters) KillHostAfter(ctx context.Context, d time.Duration, logger *slog.Logger) {
	if !sleep(ctx, d) {
		return
	}
	s.mu.Lock()
	host := s.host
	s.host = nil
	s.mu.Unlock()
	if host != nil {
		host.stop()
		logger.Info("demo: " + hostRemote + " died, and its exporter with it; nothing else watches it")
	}
}

// Close stops them.
func (s *SideExporters) Close() {
	s.mu.Lock()
	all := append(s.side, s.host)
	s.host = nil
	s.mu.Unlock()
	for _, e := range all {
		if e != nil {
			e.stop()
		}
	}
	if s.remote != nil {
		s.remote.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
