package exporter

import (
	"slices"
	"sync"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// InventorySection is the inventory with what it applies of a reloaded
// configuration: openstack.* and probe.icmp.opt_out_metadata_key (the
// metadata key the inventory keeps), and the credentials.
type InventorySection struct {
	inv *inventory.Inventory
	d   Deps

	mu sync.Mutex
	// section and optOutKey are the parts of the configuration in effect.
	section   config.OpenStack
	optOutKey string
	// creds are the credentials in use (the client holds them too), so
	// that a reload sees a rotated password or secret even when the
	// configuration is unchanged.
	creds *inventory.Credentials
}

// NewInventorySection reads the credentials and builds the inventory.
func NewInventorySection(cfg *config.Config, d Deps) (*InventorySection, error) {
	d = d.withDefaults()
	opts, err := inventoryOptions(cfg, d.Logger)
	if err != nil {
		return nil, err
	}
	creds, err := loadCredentials(cfg.OpenStack, d.Getenv)
	if err != nil {
		return nil, err
	}
	client, err := inventoryClient(opts, creds, d.Transport, d.Logger)
	if err != nil {
		return nil, err
	}
	return &InventorySection{inv: inventory.New(opts, client), d: d, section: cfg.OpenStack,
		optOutKey: cfg.Probe.ICMP.OptOutMetadataKey, creds: creds}, nil
}

// Inventory returns the inventory.
func (s *InventorySection) Inventory() *inventory.Inventory { return s.inv }

// Prepare reads the credentials again every time: clouds.yaml (or
// secure.yaml) may hold a rotated password or application credential while
// the configuration file is unchanged. (OS_* variables cannot change under a
// running process; rotating them takes a restart.) A new client, which logs
// in again, is built only when something it uses changed.
func (s *InventorySection) Prepare(cfg *config.Config) (config.Change, error) {
	opts, err := inventoryOptions(cfg, s.d.Logger)
	if err != nil {
		return config.Change{}, err
	}
	creds, err := loadCredentials(cfg.OpenStack, s.d.Getenv)
	if err != nil {
		return config.Change{}, err
	}
	s.mu.Lock()
	credsChanged := !sameCredentials(creds, s.creds)
	changed := credsChanged || cfg.OpenStack != s.section || cfg.Probe.ICMP.OptOutMetadataKey != s.optOutKey
	s.mu.Unlock()
	logChange := func() {
		s.d.Logger.Info("inventory configuration applied", "inventory_changed", changed, "credentials_changed", credsChanged)
	}
	if !changed {
		return config.Change{Apply: logChange}, nil
	}
	client, err := inventoryClient(opts, creds, s.d.Transport, s.d.Logger)
	if err != nil {
		return config.Change{}, err
	}
	return config.Change{Apply: func() {
		s.mu.Lock()
		s.section, s.optOutKey, s.creds = cfg.OpenStack, cfg.Probe.ICMP.OptOutMetadataKey, creds
		s.mu.Unlock()
		s.inv.Reconfigure(opts, client)
		logChange()
	}}, nil
}

// NewProbeLoopFromConfig opens the probe engine the configuration asks for
// (none when probing is off) and returns the loop over the snapshots inv
// returns.
func NewProbeLoopFromConfig(cfg config.ICMP, inv func() *inventory.Snapshot, d Deps) (*ProbeLoop, error) {
	d = d.withDefaults()
	var engine probes.Engine
	if cfg.Enabled {
		var err error
		if engine, err = newEngine(cfg, d.Logger); err != nil {
			return nil, err
		}
	}
	return NewProbeLoop(engine, cfg, inv, d.Logger), nil
}

// Prepare opens a new engine when probing is turned on or the engine's
// options changed; the loop takes the rest of probe.icmp as it is.
func (p *ProbeLoop) Prepare(cfg *config.Config) (config.Change, error) {
	next := cfg.Probe.ICMP
	next.RTTBuckets = slices.Clone(next.RTTBuckets)
	old, running := p.current()
	var engine probes.Engine
	if next.Enabled && (running == nil || old.Engine != next.Engine || engineOptions(old, nil) != engineOptions(next, nil)) {
		var err error
		if engine, err = newEngine(next, p.logger); err != nil {
			return config.Change{}, err
		}
	}
	apply := func() {
		if replaced := p.SetConfig(next, engine); replaced != nil {
			// Closing waits for a running cycle to end; do not hold the reload.
			go replaced.Close()
		}
		p.logger.Info("probe configuration applied", "engine_changed", engine != nil)
	}
	var discard func()
	if engine != nil {
		discard = func() { _ = engine.Close() }
	}
	return config.Change{Apply: apply, Discard: discard}, nil
}
