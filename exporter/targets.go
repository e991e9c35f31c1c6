package exporter

import (
	"net/netip"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// Target is one address of one server selected for probing.
type Target struct {
	ServerID  string
	Name      string
	ProjectID string
	Host      string
	Network   string
	Addr      netip.Addr
}

// key identifies a target's series: any label change makes a new series,
// so that counters never continue under different labels.
type key struct {
	serverID, name, projectID, host, network string
	addr                                     netip.Addr
}

func (t Target) key() key {
	return key{t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, t.Addr}
}

// Selection is the outcome of choosing targets from a snapshot.
type Selection struct {
	Targets []Target
	// Invalid counts addresses Nova gave that are not IP addresses or
	// cannot be probed (multicast, unspecified, link-local without zone).
	Invalid int
}

// SelectTargets picks the addresses to probe: servers in a probed status
// that did not opt out, addresses of the wanted type, network and version.
func SelectTargets(snap *inventory.Snapshot, cfg *config.ICMP) Selection {
	var sel Selection
	for i := range snap.Servers {
		s := &snap.Servers[i]
		if !cfg.WantsStatus(s.Status) || cfg.OptedOut(s.Metadata) {
			continue
		}
		for _, a := range s.Addresses {
			if !probeable(a.Addr) {
				sel.Invalid++
				continue
			}
			addrType := a.Type
			if addrType == "" {
				// Without OS-EXT-IPS:type (nova-network, very old Nova)
				// an address is the server's own: a fixed one.
				addrType = "fixed"
			}
			if !cfg.WantsAddress(a.Addr, addrType, a.Network) {
				continue
			}
			sel.Targets = append(sel.Targets, Target{
				ServerID:  s.ID,
				Name:      s.Name,
				ProjectID: s.ProjectID,
				Host:      s.Host,
				Network:   a.Network,
				Addr:      a.Addr,
			})
		}
	}
	return sel
}

func probeable(a netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	if a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	if a.Is6() && (a.IsLinkLocalUnicast() || a.IsInterfaceLocalMulticast()) && a.Zone() == "" {
		return false
	}
	return true
}
