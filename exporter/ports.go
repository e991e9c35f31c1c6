package exporter

import (
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// portRow is one port of the snapshot as the per-port families export it.
type portRow struct {
	// status and fixedIPs are the label values of openstack_vm_port_status
	// and openstack_vm_port_fixed_ips.
	status, fixedIPs []string
	nFixed           int
}

// portRows joins the snapshot's ports to their servers. A port whose server
// the snapshot does not hold (Nova has it on no host, or elsewhere: a
// failed build whose port stays bound here) keeps its device_id as id and
// Neutron's binding host as host, with no name or project.
func portRows(snap *inventory.Snapshot) []portRow {
	if len(snap.Ports) == 0 {
		return nil
	}
	servers := make(map[string]*inventory.Server, len(snap.Servers))
	for i := range snap.Servers {
		servers[snap.Servers[i].ID] = &snap.Servers[i]
	}
	rows := make([]portRow, len(snap.Ports))
	for i := range snap.Ports {
		p := &snap.Ports[i]
		id, name, project, host := p.DeviceID, "", "", p.HostID
		if s := servers[p.DeviceID]; s != nil {
			name, project, host = s.Name, s.ProjectID, s.Host
		}
		rows[i] = portRow{
			status:   []string{id, name, project, host, p.ID, p.NetworkID, p.Status, p.VIFType},
			fixedIPs: []string{id, name, project, host, p.ID, p.NetworkID},
			nFixed:   len(p.FixedIPs),
		}
	}
	return rows
}
