package exporter

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/netns"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

// Target is one address of one server selected for probing, with its
// vantage (package targets does all of the selection).
type Target = targets.Target

// key identifies a target's series: any label change makes a new series,
// so that counters never continue under different labels.
type key struct {
	serverID, name, projectID, host, network, networkID, vantage string
	addr                                                         netip.Addr
}

func keyOf(t *Target) key {
	return key{t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, t.NetworkID, t.Vantage, t.Addr}
}

// netnsDir reads the named network namespaces of a directory (netns_dir)
// for target selection.
type netnsDir string

func (d netnsDir) List() ([]string, error) { return netns.List(string(d)) }

func (d netnsDir) Addrs(name string) ([]netip.Prefix, error) {
	p, err := netns.Addrs(string(d), name)
	if errors.Is(err, netns.ErrNotExist) {
		// targets tells a vanished namespace by fs.ErrNotExist.
		err = fmt.Errorf("%w (%w)", err, fs.ErrNotExist)
	}
	return p, err
}
