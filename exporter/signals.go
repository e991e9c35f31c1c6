package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// signalCollector exports Nova's own signals and the cost of reading them.
type signalCollector struct {
	inv *inventory.Inventory
}

// Describe sends the descriptors.
func (c *signalCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, shutoffCauseFam, shutoffStoppedFam, shutoffPendingFam, hostDisabledFam,
		migrationAgeFam, signalReadsFam, signalErrorsFam, portsUpFam, portsLastSuccessFam)
}

// Collect sends the snapshot's signals.
func (c *signalCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.inv.Snapshot()
	for i := range snap.Servers {
		s := &snap.Servers[i]
		if s.ShutoffCause == "" {
			continue
		}
		ch <- shutoffCauseFam.metric(1,
			s.ID, s.Name, s.ProjectID, s.Host, s.ShutoffCause)
		if !s.ShutoffStopped.IsZero() {
			ch <- shutoffStoppedFam.metric(float64(s.ShutoffStopped.UnixMilli())/1000, s.ID, s.Name, s.ProjectID, s.Host)
		}
	}
	for host, class := range snap.HostDisabled {
		ch <- hostDisabledFam.metric(1, host, class)
	}
	for _, m := range snap.Migrations {
		ch <- migrationAgeFam.metric(m.Age.Seconds(),
			m.ServerID, m.ID, m.Source, m.Dest, m.Type, m.Status)
	}
	h := c.inv.Health()
	ch <- shutoffPendingFam.metric(float64(h.ShutoffPending))
	for api, n := range h.SignalReads {
		ch <- signalReadsFam.metric(float64(n), api)
	}
	for k, n := range h.SignalErrors {
		ch <- signalErrorsFam.metric(float64(n), k.API, k.Reason)
	}
	up, last := 0.0, 0.0
	if h.PortsUp {
		up = 1
	}
	if !h.PortsLastSuccess.IsZero() {
		last = float64(h.PortsLastSuccess.UnixMilli()) / 1000
	}
	ch <- portsUpFam.metric(up)
	ch <- portsLastSuccessFam.metric(last)
}
