// Package exporter ties the inventory and the probes together and turns
// them into Prometheus metrics: Nova → inventory snapshot → targets → probe
// engine → results → collectors → /metrics. Nothing on the scrape path does
// I/O; collectors read the latest snapshot and results from memory.
package exporter

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	dto "github.com/prometheus/client_model/go"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// Service is a running exporter: the inventory loop, the probe loop, and the
// registries that export both.
type Service struct {
	logger *slog.Logger
	// own holds the exporter's own metrics (its loops' health, Go,
	// process, build); fleet the fleet's that the text writer writes
	// itself (per server, per address); signals the fleet's few others
	// (Nova's own signals), which both paths gather.
	own, signals, fleet *prometheus.Registry
	labels              serverLabels
	gzip                gzipCache
	inv                 *inventory.Inventory
	loop                *ProbeLoop
	sections            []config.Subscriber
}

// Deps are what the service takes from its surroundings rather than from
// the process: tests and the demo pass their own, and nothing changes the
// process's environment.
type Deps struct {
	Logger *slog.Logger
	// Getenv reads the OS_* variables (OS_CLOUD, OS_CLIENT_CONFIG_FILE,
	// OS_AUTH_URL ...); nil: the process environment.
	Getenv func(string) string
	// Transport carries the requests to Keystone and Nova; nil: a clone of
	// http.DefaultTransport with the credentials' TLS settings.
	Transport http.RoundTripper
	// ReloadStatus reports the last configuration reload's outcome and
	// the time of the last successful one, exported as
	// openstack_vm_exporter_config_last_reload_*; nil: not exported (the
	// one-shot report).
	ReloadStatus func() (ok bool, lastSuccess time.Time)
}

func (d Deps) withDefaults() Deps {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Getenv == nil {
		d.Getenv = os.Getenv
	}
	return d
}

// New builds the service from a validated configuration, in the order it
// starts: the inventory (credentials, client), the probe engine and loop,
// then the registries. It fails only on what no retry can cure: missing
// credentials, or no permission to open ICMP sockets. An unreachable API is
// not an error here; the loop retries it.
func New(cfg *config.Config, d Deps) (*Service, error) {
	d = d.withDefaults()
	inv, err := NewInventorySection(cfg, d)
	if err != nil {
		return nil, err
	}
	loop, err := NewProbeLoopFromConfig(cfg.Probe.ICMP, inv.Inventory().Snapshot, d)
	if err != nil {
		return nil, err
	}
	return NewService(inv, loop, d), nil
}

// NewService exports the inventory and the probe loop; each applies its own
// section of a reloaded configuration (Sections).
func NewService(inv *InventorySection, loop *ProbeLoop, d Deps) *Service {
	return newService(inv, loop, d,
		versioncollector.NewCollector("openstack_vm_exporter"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// newService is NewService with the exporter's own extra collectors given
// (tests leave out the Go and process ones).
func newService(inv *InventorySection, loop *ProbeLoop, d Deps, extra ...prometheus.Collector) *Service {
	d = d.withDefaults()
	s := &Service{logger: d.Logger, inv: inv.Inventory(), loop: loop, sections: []config.Subscriber{inv, loop}}
	s.registries(d.ReloadStatus, extra...)
	return s
}

// Sections returns the components that apply their own section of a
// reloaded configuration, for a config.Coordinator: the inventory
// (openstack.*, the opt-out key) and the probe loop (probe.icmp.*).
func (s *Service) Sections() []config.Subscriber { return s.sections }

// yamlQuoted is how YAML's errors quote a value of the wrong type: its
// first seven characters, which in clouds.yaml may be those of a password.
var yamlQuoted = regexp.MustCompile("`[^`\n]*`")

// loadCredentials reads the credentials, with no quoted value left in an
// error: the error is logged and answered to a reload request.
func loadCredentials(c config.OpenStack, getenv func(string) string) (*inventory.Credentials, error) {
	creds, err := inventory.LoadCredentialsFrom(c, getenv)
	if err != nil && yamlQuoted.MatchString(err.Error()) {
		return nil, errors.New(yamlQuoted.ReplaceAllString(err.Error(), "(a value, not shown)"))
	}
	return creds, err
}

func inventoryOptions(cfg *config.Config, logger *slog.Logger) (inventory.Options, error) {
	opts := inventory.Options{OpenStack: cfg.OpenStack, Logger: logger}
	if cfg.Probe.ICMP.OptOutMetadataKey != "" {
		opts.KeepMetadata = []string{cfg.Probe.ICMP.OptOutMetadataKey}
	}
	if cfg.OpenStack.Scope == "host" {
		opts.Host = cfg.OpenStack.Host
		if opts.Host == "" {
			h, err := os.Hostname()
			if err != nil {
				return opts, fmt.Errorf("openstack.host is empty and the hostname cannot be read: %w", err)
			}
			opts.Host = h
		}
	}
	return opts, nil
}

func inventoryClient(opts inventory.Options, creds *inventory.Credentials, transport http.RoundTripper, logger *slog.Logger) (*inventory.Client, error) {
	// The inventory warns when TLS verification is off (insecure).
	client, err := inventory.NewClient(creds, inventory.ClientOptions{UserAgent: "openstack-vm-exporter", Transport: transport})
	if err != nil {
		return nil, err
	}
	logger.Info("inventory configured", "credentials", creds.Source, "auth_url", creds.Auth.IdentityEndpoint,
		"scope", opts.OpenStack.Scope, "host", opts.Host, "refresh_interval", opts.OpenStack.RefreshInterval)
	return client, nil
}

// sameCredentials tells whether a and b log in as the same user to the same
// API: every field but Source (a label for logs).
func sameCredentials(a, b *inventory.Credentials) bool {
	aa, ba := a.Auth, b.Auth
	if (aa.Scope == nil) != (ba.Scope == nil) || (aa.Scope != nil && *aa.Scope != *ba.Scope) {
		return false
	}
	aa.Scope, ba.Scope = nil, nil
	ae, be := a.Endpoint, b.Endpoint
	return aa == ba && ae.Type == be.Type && ae.Name == be.Name && slices.Equal(ae.Aliases, be.Aliases) &&
		ae.Region == be.Region && ae.Version == be.Version && ae.Availability == be.Availability && sameTLS(a.TLS, b.TLS)
}

// sameTLS compares what the credentials set in a TLS configuration, not
// what the HTTP transport adds to it once in use (NextProtos).
func sameTLS(a, b *tls.Config) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.InsecureSkipVerify == b.InsecureSkipVerify && a.ServerName == b.ServerName && a.RootCAs.Equal(b.RootCAs) &&
		slices.EqualFunc(a.Certificates, b.Certificates, func(x, y tls.Certificate) bool {
			return slices.EqualFunc(x.Certificate, y.Certificate, bytes.Equal)
		})
}

// registries builds the registries with the service's collectors and the
// extra ones (the exporter's own: Go, process, build) given.
func (s *Service) registries(reload func() (bool, time.Time), extra ...prometheus.Collector) {
	s.own = prometheus.NewRegistry()
	s.own.MustRegister(append([]prometheus.Collector{&healthCollector{inv: s.inv, loop: s.loop, reload: reload}}, extra...)...)
	s.signals = prometheus.NewRegistry()
	s.signals.MustRegister(&signalCollector{inv: s.inv})
	s.fleet = prometheus.NewRegistry()
	s.fleet.MustRegister(&serverCollector{inv: s.inv}, &targetCollector{loop: s.loop}, &rttCollector{loop: s.loop})
}

// Gatherer gathers every family of the service, through client_golang.
func (s *Service) Gatherer() prometheus.Gatherer {
	return prometheus.Gatherers{s.own, s.signals, s.fleet}
}

// gatherSmall gathers the families the text writer does not write itself,
// sorted by name. The registries hold distinct families (each collector is
// in one), so a merge of their sorted lists does; prometheus.Gatherers would
// also hash every sample to look for duplicates across them (170
// allocations a scrape).
func (s *Service) gatherSmall() ([]*dto.MetricFamily, error) {
	own, err := s.own.Gather()
	signals, serr := s.signals.Gather()
	families := append(own, signals...)
	slices.SortFunc(families, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return families, errors.Join(err, serr)
}

// engineOptions derives the probe engine's options from the configuration.
// Requests to one address are spaced by up to a second, but never so much
// that a cycle could outlast its interval.
func engineOptions(c config.ICMP, logger *slog.Logger) probes.Options {
	spacing := time.Second
	if c.Count > 1 {
		spacing = min(spacing, (c.Interval-c.Timeout)/time.Duration(2*c.Count))
	}
	return probes.Options{
		Privileged:       c.Mode == "privileged",
		Auto:             c.Mode == "auto",
		Count:            c.Count,
		Timeout:          c.Timeout,
		Spacing:          spacing,
		PacketsPerSecond: c.MaxPacketsPerSecond,
		NetnsDir:         c.NetnsDir,
		Logger:           logger,
	}
}

func newEngine(c config.ICMP, logger *slog.Logger) (probes.Engine, error) {
	opts := engineOptions(c, logger)
	if c.Engine == "pro-bing" {
		return probes.NewProBing(opts)
	}
	return probes.NewShared(opts)
}

// Inventory returns the inventory.
func (s *Service) Inventory() *inventory.Inventory { return s.inv }

// ProbeLoop returns the probe loop.
func (s *Service) ProbeLoop() *ProbeLoop { return s.loop }

// Ready reports whether the first inventory refresh succeeded.
func (s *Service) Ready() bool {
	select {
	case <-s.inv.Ready():
		return true
	default:
		return false
	}
}

// Run runs the inventory and probe loops until ctx ends. Probing starts
// after the first successful refresh: before it there is nothing to probe.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); s.inv.Run(ctx) }()
	go func() { defer wg.Done(); s.keepGzipWarm(ctx) }()
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			return
		case <-s.inv.Ready():
		}
		s.loop.Run(ctx)
	}()
	wg.Wait()
	if _, engine := s.loop.current(); engine != nil {
		_ = engine.Close()
	}
}
