package exporter

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// family describes one metric family once: its name, help, type and label
// names feed both client_golang's descriptor (the protobuf path and the
// exporter's own small families) and the direct text writer.
type family struct {
	name   string
	typ    familyType
	help   string
	labels []string
	desc   *prometheus.Desc
	// order lists the indices of labels by name, the order client_golang
	// writes them in.
	order []int
	// The sample names of a histogram.
	bucket, sum, count string
}

type familyType string

const (
	gauge     familyType = "gauge"
	counter   familyType = "counter"
	histogram familyType = "histogram"
)

func newFamily(name string, typ familyType, help string, labels ...string) *family {
	f := &family{name: name, typ: typ, help: help, labels: labels}
	f.desc = prometheus.NewDesc(name, help, labels, nil)
	f.order = make([]int, len(labels))
	for i := range f.order {
		f.order[i] = i
	}
	slices.SortFunc(f.order, func(a, b int) int { return cmp.Compare(labels[a], labels[b]) })
	if typ == histogram {
		f.bucket, f.sum, f.count = name+"_bucket", name+"_sum", name+"_count"
	}
	allFamilies = append(allFamilies, f)
	return f
}

// metric returns a sample of a gauge or counter family.
func (f *family) metric(v float64, labelValues ...string) prometheus.Metric {
	vt := prometheus.GaugeValue
	if f.typ == counter {
		vt = prometheus.CounterValue
	}
	return prometheus.MustNewConstMetric(f.desc, vt, v, labelValues...)
}

// textLabels renders label values, given in the family's label order, as
// the inside of the braces of the text format: names sorted, values
// escaped.
func (f *family) textLabels(values ...string) []byte {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("%s: %d label values for %d labels", f.name, len(values), len(f.labels)))
	}
	var b []byte
	for _, i := range f.order {
		b = appendLabel(b, f.labels[i], values[i])
	}
	return b
}

// describe sends the descriptors of fams.
func describe(ch chan<- *prometheus.Desc, fams ...*family) {
	for _, f := range fams {
		ch <- f.desc
	}
}

// allFamilies lists every family of the table below, in its order.
var allFamilies []*family

var (
	serverLabelNames = []string{"id", "name", "project_id", "host"}
	targetLabels     = []string{"id", "name", "project_id", "host", "network", "address", "network_id", "vantage"}
)

func serverLabelsAnd(extra ...string) []string { return append(serverLabelNames[:4:4], extra...) }

// The families, each described once.
var (
	// Per server, from the inventory snapshot (the text writer writes them).
	statusFam = newFamily("openstack_vm_status", gauge,
		"Nova state of the server; always 1.",
		serverLabelsAnd("status", "vm_state", "task_state", "power_state")...)
	infoFam = newFamily("openstack_vm_info", gauge,
		"Descriptive data of the server; always 1.",
		serverLabelsAnd("availability_zone", "flavor", "image_id")...)
	statusSinceFam = newFamily("openstack_vm_status_since_timestamp_seconds", gauge,
		"When the server's current status and task state began, as a Unix time.",
		serverLabelNames...)
	hostStatusFam = newFamily("openstack_vm_compute_host_status", gauge,
		"Compute service state Nova reports for the host; always 1.",
		"host", "host_status")
	hostHeartbeatFam = newFamily("openstack_vm_compute_service_up", gauge,
		"1 if Nova's os-services says the host's nova-compute service reports a heartbeat (state up), enabled or not; 0 if not.",
		"host")

	// Per port, from Neutron's listing of the host's ports in the snapshot
	// (the text writer writes them).
	portStatusFam = newFamily("openstack_vm_port_status", gauge,
		"Neutron state of a port bound to this host (every compute port in scope all): its status and binding:vif_type "+
			"(\"\" when Neutron's policy hides it); always 1.",
		serverLabelsAnd("port_id", "network_id", "status", "vif_type")...)
	portFixedIPsFam = newFamily("openstack_vm_port_fixed_ips", gauge,
		"Fixed IP addresses of a port bound to this host (0: a port without an address).",
		serverLabelsAnd("port_id", "network_id")...)

	// Per address, from the probe loop (the text writer writes them).
	icmpUpFam = newFamily("openstack_vm_icmp_up", gauge,
		"1 if the last probe cycle got at least one echo reply from the address; "+
			"absent while no echo request to it could be sent.",
		targetLabels...)
	icmpSentFam = newFamily("openstack_vm_icmp_packets_sent_total", counter,
		"ICMP echo requests sent to the address.", targetLabels...)
	icmpReceivedFam = newFamily("openstack_vm_icmp_packets_received_total", counter,
		"Matching ICMP echo replies received in time from the address.", targetLabels...)
	rttFam = newFamily("openstack_vm_icmp_rtt_seconds", histogram,
		"Round-trip time of ICMP echo replies.", targetLabels...)
	icmpExpectedFam = newFamily("openstack_vm_icmp_expected", gauge,
		"1 if the security groups of the address's port admit an ICMP echo request from the vantage's source address "+
			"(port security disabled included), 0 if they do not; absent when unknown.",
		targetLabels...)

	// Nova's own signals (inventory/signals.go): few series, so they go
	// through the registry on both exposition paths.
	shutoffCauseFam = newFamily("openstack_vm_shutoff_cause", gauge,
		"Why a server the exporter saw become SHUTOFF is off, from its instance actions; always 1.",
		serverLabelsAnd("cause")...)
	shutoffStoppedFam = newFamily("openstack_vm_shutoff_stop_timestamp_seconds", gauge,
		"When the stop that explains a server's SHUTOFF began, by Nova's clock, as a Unix time.",
		serverLabelNames...)
	shutoffPendingFam = newFamily("openstack_vm_shutoff_cause_pending", gauge,
		"Servers that just became SHUTOFF whose instance actions are still to be read.")
	hostDisabledFam = newFamily("openstack_vm_compute_host_disabled_reason", gauge,
		"Class of the compute service's disabled reason: none, operator, or automatic (set by nova-compute, \"AUTO: \"); always 1.",
		"host", "class")
	migrationAgeFam = newFamily("openstack_vm_migration_age_seconds", gauge,
		"A server's newest migration, when it failed or is still in progress: its age when last listed, by Nova's clock.",
		"id", "migration_id", "host", "dest_host", "migration_type", "status")
	signalReadsFam = newFamily("openstack_vm_api_signal_requests_total", counter,
		"Reads of Nova's own signals (instance actions of servers that became SHUTOFF, migration listings) and of Neutron's port listing (api ports).", "api")
	signalErrorsFam = newFamily("openstack_vm_api_signal_errors_total", counter,
		"Failed reads of Nova's own signals and of Neutron's port listing, by API and cause.", "api", "reason")
	portsUpFam = newFamily("openstack_vm_api_ports_up", gauge,
		"Whether the last listing of the host's ports from Neutron succeeded (1) or failed (0); the last good ports are kept.")
	portsLastSuccessFam = newFamily("openstack_vm_api_ports_last_success_timestamp_seconds", gauge,
		"When the host's ports were last listed from Neutron successfully, as a Unix time; 0 before the first success.")

	// The exporter's own health.
	exporterTimeFam = newFamily("openstack_vm_exporter_time_seconds", gauge,
		"The exporter's clock when it was scraped, as a Unix time: ages of its own timestamps need no other clock.")
	apiUpFam = newFamily("openstack_vm_api_up", gauge,
		"1 if the last inventory refresh succeeded.")
	apiLastSuccessFam = newFamily("openstack_vm_api_last_success_timestamp_seconds", gauge,
		"Unix time of the last successful inventory refresh; 0 before the first.")
	apiDurationFam = newFamily("openstack_vm_api_refresh_duration_seconds", gauge,
		"Duration of the last inventory refresh, successful or not.")
	apiIntervalFam = newFamily("openstack_vm_api_refresh_interval_seconds", gauge,
		"Configured interval between inventory refreshes.")
	apiRefreshesFam = newFamily("openstack_vm_api_refreshes_total", counter,
		"Inventory refreshes attempted, by kind.", "kind")
	apiErrorsFam = newFamily("openstack_vm_api_errors_total", counter,
		"Failed inventory refreshes, by cause.", "reason")
	apiRequestsFam = newFamily("openstack_vm_api_requests_total", counter,
		"HTTP requests sent to Keystone and Nova.")
	apiBytesFam = newFamily("openstack_vm_api_response_bytes_total", counter,
		"Response body bytes read from Keystone and Nova.")
	inventoryServersFam = newFamily("openstack_vm_inventory_servers", gauge,
		"Servers in the served inventory snapshot.")
	inventoryHostKnownFam = newFamily("openstack_vm_inventory_host_known", gauge,
		"In scope host: 1 if Nova lists a nova-compute service named openstack.host, 0 if not (absent when unknown).")
	probeTargetsFam = newFamily("openstack_vm_probe_targets", gauge,
		"Addresses in the last probe cycle.")
	probeIntervalFam = newFamily("openstack_vm_probe_interval_seconds", gauge,
		"Configured interval between probe cycles.")
	probeDurationFam = newFamily("openstack_vm_probe_cycle_duration_seconds", gauge,
		"Duration of the last probe cycle.")
	probeLastCycleFam = newFamily("openstack_vm_probe_last_cycle_timestamp_seconds", gauge,
		"Unix time the last probe cycle ended; 0 before the first.")
	probeOverrunsFam = newFamily("openstack_vm_probe_overruns_total", counter,
		"Probe cycles that ended after the next one was due.")
	probeErrorsFam = newFamily("openstack_vm_probe_errors_total", counter,
		"Echo requests that could not be sent, ICMP socket failures, probe cycles that failed, "+
			"and failures to enter a network namespace or open a socket in it (namespace).", "reason")
	probeUnprobedFam = newFamily("openstack_vm_probe_unprobed_addresses", gauge,
		"Addresses selected for probing with no usable vantage in the last cycle (no openstack_vm_icmp_* series), by reason.", "reason")
	probeVantageModeFam = newFamily("openstack_vm_probe_vantage_mode", gauge,
		"The vantage mode of the last probe cycle (probe.icmp.vantage, auto resolved); always 1.", "mode")
	namespacePresentFam = newFamily("openstack_vm_network_namespace_present", gauge,
		"In the namespace vantage modes: per network with ACTIVE compute ports bound to this host, 1 if its namespace exists here, 0 if not.",
		"network_id", "namespace")
	probeInvalidFam = newFamily("openstack_vm_probe_invalid_addresses", gauge,
		"Addresses of servers in a probed status that cannot be probed (not an IP address, multicast, unspecified).")
	configReloadOKFam = newFamily("openstack_vm_exporter_config_last_reload_successful", gauge,
		"1 if the last reload of the configuration succeeded (or, before any, the start), 0 if it was rejected.")
	configReloadTimeFam = newFamily("openstack_vm_exporter_config_last_reload_success_timestamp_seconds", gauge,
		"Unix time of the last successful configuration load, the start's included.")
	probeDuplicateFam = newFamily("openstack_vm_probe_duplicate_addresses", gauge,
		"Addresses that more than one server has within one vantage; not probed, because a reply could come from either.")
)
