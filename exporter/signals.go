package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// Nova's own signals (inventory/signals.go): few series, so they go
// through the registry on both exposition paths.
var (
	shutoffCauseDesc = prometheus.NewDesc("openstack_vm_shutoff_cause",
		"Why a server the exporter saw become SHUTOFF is off, from its instance actions; always 1.",
		append(serverLabelNames[:4:4], "cause"), nil)
	shutoffStoppedDesc = prometheus.NewDesc("openstack_vm_shutoff_stop_timestamp_seconds",
		"When the stop that explains a server's SHUTOFF began, by Nova's clock, as a Unix time.",
		serverLabelNames, nil)
	shutoffPendingDesc = prometheus.NewDesc("openstack_vm_shutoff_cause_pending",
		"Servers that just became SHUTOFF whose instance actions are still to be read.", nil, nil)
	hostDisabledDesc = prometheus.NewDesc("openstack_vm_compute_host_disabled_reason",
		"Class of the compute service's disabled reason: none, operator, or automatic (set by nova-compute, \"AUTO: \"); always 1.",
		[]string{"host", "class"}, nil)
	migrationAgeDesc = prometheus.NewDesc("openstack_vm_migration_age_seconds",
		"A server's newest migration, when it failed or is still in progress: its age when last listed, by Nova's clock.",
		[]string{"id", "migration_id", "host", "dest_host", "migration_type", "status"}, nil)
	signalReadsDesc = prometheus.NewDesc("openstack_vm_api_signal_requests_total",
		"Reads of Nova's own signals (instance actions of servers that became SHUTOFF, migration listings) and of Neutron's port listing (api ports).", []string{"api"}, nil)
	signalErrorsDesc = prometheus.NewDesc("openstack_vm_api_signal_errors_total",
		"Failed reads of Nova's own signals and of Neutron's port listing, by API and cause.", []string{"api", "reason"}, nil)
	portsUpDesc = prometheus.NewDesc("openstack_vm_api_ports_up",
		"Whether the last listing of the host's ports from Neutron succeeded (1) or failed (0); the last good ports are kept.", nil, nil)
	portsLastSuccessDesc = prometheus.NewDesc("openstack_vm_api_ports_last_success_timestamp_seconds",
		"When the host's ports were last listed from Neutron successfully, as a Unix time; 0 before the first success.", nil, nil)
)

// SignalCollector exports Nova's own signals and the cost of reading them.
type SignalCollector struct {
	inv *inventory.Inventory
}

// Describe sends the descriptors.
func (c *SignalCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{shutoffCauseDesc, shutoffStoppedDesc, shutoffPendingDesc, hostDisabledDesc,
		migrationAgeDesc, signalReadsDesc, signalErrorsDesc, portsUpDesc, portsLastSuccessDesc} {
		ch <- d
	}
}

// Collect sends the snapshot's signals.
func (c *SignalCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.inv.Snapshot()
	for i := range snap.Servers {
		s := &snap.Servers[i]
		if s.ShutoffCause == "" {
			continue
		}
		ch <- prometheus.MustNewConstMetric(shutoffCauseDesc, prometheus.GaugeValue, 1,
			s.ID, s.Name, s.ProjectID, s.Host, s.ShutoffCause)
		if !s.ShutoffStopped.IsZero() {
			ch <- prometheus.MustNewConstMetric(shutoffStoppedDesc, prometheus.GaugeValue,
				float64(s.ShutoffStopped.UnixMilli())/1000, s.ID, s.Name, s.ProjectID, s.Host)
		}
	}
	for host, class := range snap.HostDisabled {
		ch <- prometheus.MustNewConstMetric(hostDisabledDesc, prometheus.GaugeValue, 1, host, class)
	}
	for _, m := range snap.Migrations {
		ch <- prometheus.MustNewConstMetric(migrationAgeDesc, prometheus.GaugeValue, m.Age.Seconds(),
			m.ServerID, m.ID, m.Source, m.Dest, m.Type, m.Status)
	}
	h := c.inv.Health()
	ch <- prometheus.MustNewConstMetric(shutoffPendingDesc, prometheus.GaugeValue, float64(h.ShutoffPending))
	for api, n := range h.SignalReads {
		ch <- prometheus.MustNewConstMetric(signalReadsDesc, prometheus.CounterValue, float64(n), api)
	}
	for k, n := range h.SignalErrors {
		ch <- prometheus.MustNewConstMetric(signalErrorsDesc, prometheus.CounterValue, float64(n), k.API, k.Reason)
	}
	up, last := 0.0, 0.0
	if h.PortsUp {
		up = 1
	}
	if !h.PortsLastSuccess.IsZero() {
		last = float64(h.PortsLastSuccess.UnixMilli()) / 1000
	}
	ch <- prometheus.MustNewConstMetric(portsUpDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(portsLastSuccessDesc, prometheus.GaugeValue, last)
}
