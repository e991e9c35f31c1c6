package exporter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// Help of the per-address families, which the text writer writes too.
const (
	icmpUpHelp = "1 if the last probe cycle got at least one echo reply from the address; " +
		"absent while no echo request to it could be sent."
	icmpSentHelp     = "ICMP echo requests sent to the address."
	icmpReceivedHelp = "Matching ICMP echo replies received in time from the address."
	rttHelp          = "Round-trip time of ICMP echo replies."
)

var (
	serverLabelNames = []string{"id", "name", "project_id", "host"}
	targetLabels     = []string{"id", "name", "project_id", "host", "network", "address"}

	statusDesc = prometheus.NewDesc("openstack_vm_status",
		"Nova state of the server; always 1.",
		append(serverLabelNames[:4:4], "status", "vm_state", "task_state", "power_state"), nil)
	infoDesc = prometheus.NewDesc("openstack_vm_info",
		"Descriptive data of the server; always 1.",
		append(serverLabelNames[:4:4], "availability_zone", "flavor", "image_id"), nil)
	statusSinceDesc = prometheus.NewDesc("openstack_vm_status_since_timestamp_seconds",
		"When the server's current status and task state began, as a Unix time.",
		serverLabelNames, nil)
	hostStatusDesc = prometheus.NewDesc("openstack_vm_compute_host_status",
		"Compute service state Nova reports for the host; always 1.",
		[]string{"host", "host_status"}, nil)
	hostHeartbeatDesc = prometheus.NewDesc("openstack_vm_compute_service_up",
		"1 if Nova's os-services says the host's nova-compute service reports a heartbeat (state up), enabled or not; 0 if not.",
		[]string{"host"}, nil)
	exporterTimeDesc = prometheus.NewDesc("openstack_vm_exporter_time_seconds",
		"The exporter's clock when it was scraped, as a Unix time: ages of its own timestamps need no other clock.", nil, nil)

	apiUpDesc = prometheus.NewDesc("openstack_vm_api_up",
		"1 if the last inventory refresh succeeded.", nil, nil)
	apiLastSuccessDesc = prometheus.NewDesc("openstack_vm_api_last_success_timestamp_seconds",
		"Unix time of the last successful inventory refresh; 0 before the first.", nil, nil)
	apiDurationDesc = prometheus.NewDesc("openstack_vm_api_refresh_duration_seconds",
		"Duration of the last inventory refresh, successful or not.", nil, nil)
	apiIntervalDesc = prometheus.NewDesc("openstack_vm_api_refresh_interval_seconds",
		"Configured interval between inventory refreshes.", nil, nil)
	apiRefreshesDesc = prometheus.NewDesc("openstack_vm_api_refreshes_total",
		"Inventory refreshes attempted, by kind.", []string{"kind"}, nil)
	apiErrorsDesc = prometheus.NewDesc("openstack_vm_api_errors_total",
		"Failed inventory refreshes, by cause.", []string{"reason"}, nil)
	apiRequestsDesc = prometheus.NewDesc("openstack_vm_api_requests_total",
		"HTTP requests sent to Keystone and Nova.", nil, nil)
	apiBytesDesc = prometheus.NewDesc("openstack_vm_api_response_bytes_total",
		"Response body bytes read from Keystone and Nova.", nil, nil)
	inventoryServersDesc = prometheus.NewDesc("openstack_vm_inventory_servers",
		"Servers in the served inventory snapshot.", nil, nil)
	inventoryHostKnownDesc = prometheus.NewDesc("openstack_vm_inventory_host_known",
		"In scope host: 1 if Nova lists a nova-compute service named openstack.host, 0 if not (absent when unknown).", nil, nil)

	icmpUpDesc       = prometheus.NewDesc("openstack_vm_icmp_up", icmpUpHelp, targetLabels, nil)
	icmpSentDesc     = prometheus.NewDesc("openstack_vm_icmp_packets_sent_total", icmpSentHelp, targetLabels, nil)
	icmpReceivedDesc = prometheus.NewDesc("openstack_vm_icmp_packets_received_total", icmpReceivedHelp, targetLabels, nil)
	rttDesc          = prometheus.NewDesc("openstack_vm_icmp_rtt_seconds", rttHelp, targetLabels, nil)

	probeTargetsDesc = prometheus.NewDesc("openstack_vm_probe_targets",
		"Addresses in the last probe cycle.", nil, nil)
	probeIntervalDesc = prometheus.NewDesc("openstack_vm_probe_interval_seconds",
		"Configured interval between probe cycles.", nil, nil)
	probeDurationDesc = prometheus.NewDesc("openstack_vm_probe_cycle_duration_seconds",
		"Duration of the last probe cycle.", nil, nil)
	probeLastCycleDesc = prometheus.NewDesc("openstack_vm_probe_last_cycle_timestamp_seconds",
		"Unix time the last probe cycle ended; 0 before the first.", nil, nil)
	probeOverrunsDesc = prometheus.NewDesc("openstack_vm_probe_overruns_total",
		"Probe cycles that ended after the next one was due.", nil, nil)
	probeErrorsDesc = prometheus.NewDesc("openstack_vm_probe_errors_total",
		"Echo requests that could not be sent, ICMP socket failures, and probe cycles that failed.", []string{"reason"}, nil)
	probeInvalidDesc = prometheus.NewDesc("openstack_vm_probe_invalid_addresses",
		"Addresses of servers in a probed status that cannot be probed (not an IP address, multicast, unspecified).", nil, nil)
	probeDuplicateDesc = prometheus.NewDesc("openstack_vm_probe_duplicate_addresses",
		"Addresses that more than one server has; not probed, because a reply could come from either.", nil, nil)
)

// ServerCollector exports the per-server families of the snapshot. It reads
// only memory: a scrape never waits for the API.
type ServerCollector struct {
	inv *inventory.Inventory
}

// Describe sends the descriptors.
func (c *ServerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{statusDesc, infoDesc, statusSinceDesc, hostStatusDesc, hostHeartbeatDesc} {
		ch <- d
	}
}

// Collect sends the snapshot's series.
func (c *ServerCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.inv.Snapshot()
	for i := range snap.Servers {
		s := &snap.Servers[i]
		ch <- prometheus.MustNewConstMetric(statusDesc, prometheus.GaugeValue, 1,
			s.ID, s.Name, s.ProjectID, s.Host, s.Status, s.VMState, s.TaskState, s.PowerState)
		ch <- prometheus.MustNewConstMetric(infoDesc, prometheus.GaugeValue, 1,
			s.ID, s.Name, s.ProjectID, s.Host, s.AvailabilityZone, s.Flavor, s.ImageID)
		ch <- prometheus.MustNewConstMetric(statusSinceDesc, prometheus.GaugeValue,
			float64(s.StatusSince.UnixMilli())/1000, s.ID, s.Name, s.ProjectID, s.Host)
	}
	for host, st := range snap.HostStatus {
		ch <- prometheus.MustNewConstMetric(hostStatusDesc, prometheus.GaugeValue, 1, host, st)
	}
	for host, hb := range snap.HostHeartbeat {
		ch <- prometheus.MustNewConstMetric(hostHeartbeatDesc, prometheus.GaugeValue, boolFloat(hb), host)
	}
}

// HealthCollector exports the state of the refresh and probe loops.
type HealthCollector struct {
	inv      *inventory.Inventory
	loop     *ProbeLoop
	interval func() float64
}

// Describe sends every descriptor.
func (c *HealthCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{apiUpDesc, apiLastSuccessDesc, apiDurationDesc, apiIntervalDesc, apiRefreshesDesc,
		apiErrorsDesc, apiRequestsDesc, apiBytesDesc, inventoryServersDesc, inventoryHostKnownDesc, probeTargetsDesc,
		probeIntervalDesc, probeDurationDesc, probeLastCycleDesc, probeOverrunsDesc, probeErrorsDesc,
		probeInvalidDesc, probeDuplicateDesc, exporterTimeDesc} {
		ch <- d
	}
}

// Collect sends the loops' state.
func (c *HealthCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(exporterTimeDesc, prometheus.GaugeValue, unixOrZero(time.Now()))
	ch <- prometheus.MustNewConstMetric(inventoryServersDesc, prometheus.GaugeValue, float64(len(c.inv.Snapshot().Servers)))
	h := c.inv.Health()
	ch <- prometheus.MustNewConstMetric(apiUpDesc, prometheus.GaugeValue, boolFloat(h.Up))
	ch <- prometheus.MustNewConstMetric(apiLastSuccessDesc, prometheus.GaugeValue, unixOrZero(h.LastSuccess))
	ch <- prometheus.MustNewConstMetric(apiDurationDesc, prometheus.GaugeValue, h.LastDuration.Seconds())
	ch <- prometheus.MustNewConstMetric(apiIntervalDesc, prometheus.GaugeValue, c.interval())
	for kind, n := range h.Refreshes {
		ch <- prometheus.MustNewConstMetric(apiRefreshesDesc, prometheus.CounterValue, float64(n), kind)
	}
	for reason, n := range h.Errors {
		ch <- prometheus.MustNewConstMetric(apiErrorsDesc, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(apiRequestsDesc, prometheus.CounterValue, float64(h.Requests))
	ch <- prometheus.MustNewConstMetric(apiBytesDesc, prometheus.CounterValue, float64(h.Bytes))
	// Absent in scope all, and while Nova's service list cannot tell.
	if h.HostKnown != nil {
		ch <- prometheus.MustNewConstMetric(inventoryHostKnownDesc, prometheus.GaugeValue, boolFloat(*h.HostKnown))
	}

	var r Results
	c.loop.Results(&r, 0)
	ph := r.Health
	ch <- prometheus.MustNewConstMetric(probeTargetsDesc, prometheus.GaugeValue, float64(ph.Targets))
	ch <- prometheus.MustNewConstMetric(probeIntervalDesc, prometheus.GaugeValue, r.Interval.Seconds())
	ch <- prometheus.MustNewConstMetric(probeDurationDesc, prometheus.GaugeValue, ph.LastDuration.Seconds())
	ch <- prometheus.MustNewConstMetric(probeLastCycleDesc, prometheus.GaugeValue, unixOrZero(ph.LastCycleEnd))
	ch <- prometheus.MustNewConstMetric(probeOverrunsDesc, prometheus.CounterValue, float64(ph.Overruns))
	st := r.Engine
	ch <- prometheus.MustNewConstMetric(probeErrorsDesc, prometheus.CounterValue, float64(st.SendErrors), "send")
	ch <- prometheus.MustNewConstMetric(probeErrorsDesc, prometheus.CounterValue, float64(st.SocketErrors), "socket")
	ch <- prometheus.MustNewConstMetric(probeErrorsDesc, prometheus.CounterValue, float64(ph.CycleErrors), "cycle")
	ch <- prometheus.MustNewConstMetric(probeInvalidDesc, prometheus.GaugeValue, float64(ph.InvalidAddrs))
	ch <- prometheus.MustNewConstMetric(probeDuplicateDesc, prometheus.GaugeValue, float64(ph.DuplicateAddr))
}

func unixOrZero(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMilli()) / 1000
}

// TargetCollector exports the per-address families (the RTT histograms are
// the RTTCollector's).
type TargetCollector struct {
	loop *ProbeLoop
}

// Describe sends the descriptors.
func (c *TargetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{icmpUpDesc, icmpSentDesc, icmpReceivedDesc} {
		ch <- d
	}
}

// Collect sends the per-address series.
func (c *TargetCollector) Collect(ch chan<- prometheus.Metric) {
	r := getResults()
	defer putResults(r)
	c.loop.Results(r, ResultTargets)
	for i := range r.Targets {
		st := &r.Targets[i]
		if st.probed {
			ch <- prometheus.MustNewConstMetric(icmpUpDesc, prometheus.GaugeValue, st.up, st.values...)
		}
		ch <- prometheus.MustNewConstMetric(icmpSentDesc, prometheus.CounterValue, float64(st.sent), st.values...)
		ch <- prometheus.MustNewConstMetric(icmpReceivedDesc, prometheus.CounterValue, float64(st.received), st.values...)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// RTTCollector exports the per-address RTT histograms, classic and native
// buckets both.
type RTTCollector struct {
	loop *ProbeLoop
}

// Describe sends the descriptor.
func (c *RTTCollector) Describe(ch chan<- *prometheus.Desc) { ch <- rttDesc }

// Collect sends one histogram per address.
func (c *RTTCollector) Collect(ch chan<- prometheus.Metric) {
	var r Results
	c.loop.Results(&r, ResultHistograms)
	for i := range r.Targets {
		ch <- r.Targets[i].histogram
	}
}
