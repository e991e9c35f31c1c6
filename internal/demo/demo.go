package demo

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/promstack"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// Config is the exporter configuration of the demo: the whole demo cloud,
// refreshed and probed often so that something happens while you watch.
//
//go:embed demo.yaml
var Config []byte

// AlertParams shortens the rules' waits for the demo's Prometheus.
//
//go:embed alerts-params.yaml
var AlertParams []byte

// Cloud is a running demo cloud.
type Cloud struct {
	*standin.Cloud
	lost *time.Timer
}

// Getenv reads the OS_* variables that point at the demo cloud; every
// other variable, OS_CLOUD included, is empty.
func (c *Cloud) Getenv(name string) string { return c.Env()[name] }

// Close stops the demo cloud.
func (c *Cloud) Close() error {
	c.lost.Stop()
	return c.Cloud.Close()
}

// StartCloud serves the demo cloud with these servers on 127.0.0.1; its
// Getenv gives the OS_* variables that point at it, so the exporter finds it
// the way it finds a real cloud (the process's environment is left alone).
func StartCloud(fleet []Server) (*Cloud, *config.Config, error) {
	sc, err := standin.Start("127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("starting the demo cloud: %w", err)
	}
	sc.Password = "demo-password"
	sc.EnableNeutron()
	now := time.Now()
	for _, s := range fleet {
		sc.Put(s.Server)
		for _, a := range s.Actions {
			sc.AddAction(s.ID, a)
		}
	}
	sc.PutMigrations(Migrations(now)...)
	for host, svc := range Services() {
		sc.PutService(host, svc)
	}
	cfg, err := config.Parse(Config)
	if err != nil {
		sc.Close()
		return nil, nil, fmt.Errorf("demo configuration: %w", err)
	}
	// demo-hypervisor-8 loses power: its heartbeat stops.
	lost := time.AfterFunc(hostLostAfter, func() { sc.PutService(hostLost, lostService) })
	return &Cloud{Cloud: sc, lost: lost}, cfg, nil
}

// ChooseICMPMode sets mode auto (raw sockets as root, datagram sockets
// where ping_group_range allows) and, where neither can be opened, turns
// probing off with the reason, so the demo still shows the inventory.
func ChooseICMPMode(cfg *config.Config, logger *slog.Logger) {
	cfg.Probe.ICMP.Mode = "auto"
	p, err := probes.NewShared(probes.Options{Auto: true})
	if err == nil {
		p.Close()
		return
	}
	cfg.Probe.ICMP.Enabled = false
	if !errors.Is(err, probes.ErrPermission) {
		logger.Warn("ICMP probing is off in this demo", "err", err)
		return
	}
	logger.Warn("ICMP probing is off in this demo: run it as root, or allow ICMP datagram sockets with " +
		"`sudo sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`")
}

// StartPrometheus starts Debian's Prometheus, if installed, scraping the
// demo exporter (and the others given) with the bundled rules (their waits shortened): the demo's
// known issues then show as firing alerts. It returns nil, nil when
// Prometheus is not installed.
func StartPrometheus(ctx context.Context, dir, listen, exporter string, others ...string) (*promstack.Stack, error) {
	if _, err := os.Stat(promstack.PrometheusBinary); err != nil {
		return nil, nil
	}
	path := filepath.Join(dir, "demo-alerts-params.yaml")
	if err := os.WriteFile(path, AlertParams, 0o644); err != nil {
		return nil, err
	}
	params, err := alerts.LoadParams(path)
	if err != nil {
		return nil, err
	}
	rules, err := alerts.Render(params)
	if err != nil {
		return nil, err
	}
	rulesFile := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(rulesFile, rules, 0o644); err != nil {
		return nil, err
	}
	// A second target, the exporter of the host whose nova-compute is
	// down, which died with it: nothing listens there.
	dead, err := closedAddr()
	if err != nil {
		return nil, err
	}
	cfg := promstack.PrometheusConfig(5*time.Second, "openstack-vm-exporter", exporter, rulesFile, "") +
		fmt.Sprintf("      - targets: [%q]\n        labels:\n          host: %q\n", dead, hostDown)
	for _, o := range others {
		cfg += fmt.Sprintf("      - targets: [%q]\n", o)
	}
	stack := promstack.New(promstack.Options{Dir: dir})
	if _, err := stack.StartPrometheus(ctx, listen, cfg); err != nil {
		stack.Close()
		return nil, err
	}
	return stack, nil
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}
