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
	"os"
	"reflect"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// Service is a running exporter: the inventory loop, the probe loop, and the
// registry that exports both.
type Service struct {
	logger *slog.Logger
	// registry holds every collector; small only those the text writer
	// does not write itself (the exporter's health, Go, process, build).
	registry *prometheus.Registry
	small    *prometheus.Registry
	labels   serverLabels
	gzip     gzipCache
	inv      *inventory.Inventory
	prober   *Prober

	mu  sync.Mutex
	cfg *config.Config
	// creds are the credentials in use (the client holds them too), so
	// that a reload sees a rotated password or secret even when the
	// configuration is unchanged.
	creds *inventory.Credentials
}

// New builds the service from a validated configuration. It fails only on
// what no retry can cure: missing credentials, or no permission to open ICMP
// sockets. An unreachable API is not an error here; the loop retries it.
func New(cfg *config.Config, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	invOpts, err := inventoryOptions(cfg, logger)
	if err != nil {
		return nil, err
	}
	creds, err := loadCredentials(cfg.OpenStack)
	if err != nil {
		return nil, err
	}
	client, err := inventoryClient(invOpts, creds, logger)
	if err != nil {
		return nil, err
	}
	s := &Service{logger: logger, cfg: cfg, inv: inventory.New(invOpts, client), creds: creds}
	var engine probes.Engine
	if cfg.Probe.ICMP.Enabled {
		if engine, err = newEngine(cfg.Probe.ICMP, logger); err != nil {
			return nil, err
		}
	}
	s.prober = NewProber(engine, cfg.Probe.ICMP, s.inv.Snapshot, logger)

	s.registries(
		versioncollector.NewCollector("openstack_vm_exporter"),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return s, nil
}

// inventorySetup derives the inventory's options and client from the
// configuration, credentials included.
func inventorySetup(cfg *config.Config, logger *slog.Logger) (inventory.Options, *inventory.Client, error) {
	opts, err := inventoryOptions(cfg, logger)
	if err != nil {
		return opts, nil, err
	}
	creds, err := loadCredentials(cfg.OpenStack)
	if err != nil {
		return opts, nil, err
	}
	client, err := inventoryClient(opts, creds, logger)
	return opts, client, err
}

// yamlQuoted is how YAML's errors quote a value of the wrong type: its
// first seven characters, which in clouds.yaml may be those of a password.
var yamlQuoted = regexp.MustCompile("`[^`\n]*`")

// loadCredentials reads the credentials, with no quoted value left in an
// error: the error is logged and answered to a reload request.
func loadCredentials(c config.OpenStack) (*inventory.Credentials, error) {
	creds, err := inventory.LoadCredentials(c)
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

func inventoryClient(opts inventory.Options, creds *inventory.Credentials, logger *slog.Logger) (*inventory.Client, error) {
	// The inventory warns when TLS verification is off (insecure).
	client, err := inventory.NewClient(creds, inventory.ClientOptions{UserAgent: "openstack-vm-exporter"})
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
	return reflect.DeepEqual(a.Auth, b.Auth) && reflect.DeepEqual(a.Endpoint, b.Endpoint) && sameTLS(a.TLS, b.TLS)
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

// registries builds both registries with the service's collectors and the
// extra ones given.
func (s *Service) registries(extra ...prometheus.Collector) {
	health := &HealthCollector{inv: s.inv, prober: s.prober, interval: s.refreshInterval}
	signals := &SignalCollector{inv: s.inv}
	s.small = prometheus.NewRegistry()
	s.small.MustRegister(append([]prometheus.Collector{health, signals}, extra...)...)
	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(append([]prometheus.Collector{
		health, signals, &ServerCollector{inv: s.inv}, &TargetCollector{p: s.prober}, &RTTCollector{p: s.prober},
	}, extra...)...)
}

// EngineOptions derives the probe engine's options from the configuration.
// Requests to one address are spaced by up to a second, but never so much
// that a cycle could outlast its interval.
func EngineOptions(c config.ICMP, logger *slog.Logger) probes.Options {
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
		Logger:           logger,
	}
}

func newEngine(c config.ICMP, logger *slog.Logger) (probes.Engine, error) {
	opts := EngineOptions(c, logger)
	if c.Engine == "pro-bing" {
		return probes.NewProBing(opts)
	}
	return probes.NewShared(opts)
}

func (s *Service) refreshInterval() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.OpenStack.RefreshInterval.Seconds()
}

// Registry holds every collector of the service.
func (s *Service) Registry() *prometheus.Registry { return s.registry }

// Inventory returns the inventory.
func (s *Service) Inventory() *inventory.Inventory { return s.inv }

// Prober returns the prober.
func (s *Service) Prober() *Prober { return s.prober }

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
		s.prober.Run(ctx)
	}()
	wg.Wait()
	if _, engine := s.prober.current(); engine != nil {
		_ = engine.Close()
	}
}

// Reload applies a new configuration without a restart. Everything that can
// fail (credentials, sockets) is prepared first; on failure nothing changes
// and the error says why. The credentials are read again every time:
// clouds.yaml (or secure.yaml) may hold a rotated password or application
// credential while the configuration file is unchanged. (OS_* variables
// cannot change under a running process; rotating them takes a restart.)
func (s *Service) Reload(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	invOpts, err := inventoryOptions(cfg, s.logger)
	if err != nil {
		return err
	}
	creds, err := loadCredentials(cfg.OpenStack)
	if err != nil {
		return err
	}
	credsChanged := !sameCredentials(creds, s.creds)
	invChanged := credsChanged || !reflect.DeepEqual(cfg.OpenStack, s.cfg.OpenStack) ||
		cfg.Probe.ICMP.OptOutMetadataKey != s.cfg.Probe.ICMP.OptOutMetadataKey
	var client *inventory.Client
	if invChanged {
		if client, err = inventoryClient(invOpts, creds, s.logger); err != nil {
			return err
		}
	}
	var engine probes.Engine
	old, cur := s.cfg.Probe.ICMP, cfg.Probe.ICMP
	_, running := s.prober.current()
	if cur.Enabled && (running == nil || old.Engine != cur.Engine || EngineOptions(old, nil) != EngineOptions(cur, nil)) {
		if engine, err = newEngine(cur, s.logger); err != nil {
			return err
		}
	}
	if invChanged {
		s.inv.Reconfigure(invOpts, client)
		s.creds = creds
	}
	if replaced := s.prober.SetConfig(cur, engine); replaced != nil {
		// Closing waits for a running cycle to end; do not hold the reload.
		go replaced.Close()
	}
	s.cfg = cfg
	s.logger.Info("configuration reloaded", "inventory_changed", invChanged, "credentials_changed", credsChanged, "engine_changed", engine != nil)
	return nil
}

// Config returns the configuration in effect.
func (s *Service) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}
