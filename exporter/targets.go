package exporter

import (
	"net/netip"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

// Target is one address of one server selected for probing (package
// targets does all of the selection).
type Target = targets.Target

// key identifies a target's series: any label change makes a new series,
// so that counters never continue under different labels.
type key struct {
	serverID, name, projectID, host, network string
	addr                                     netip.Addr
}

func keyOf(t *Target) key {
	return key{t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, t.Addr}
}

// SelectTargets picks the addresses to probe (host vantage only, for now).
func SelectTargets(snap *inventory.Snapshot, cfg *config.ICMP) targets.Selection {
	return targets.Select(snap, cfg, targets.Options{Engine: cfg.Engine})
}
