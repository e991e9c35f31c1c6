package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

var (
	serverLabels = []string{"id", "name", "project_id", "host"}
	targetLabels = []string{"id", "name", "project_id", "host", "network", "address"}

	statusDesc = prometheus.NewDesc("openstack_vm_status",
		"Nova state of the server; always 1.",
		append(serverLabels[:4:4], "status", "vm_state", "task_state", "power_state"), nil)
	infoDesc = prometheus.NewDesc("openstack_vm_info",
		"Descriptive data of the server; always 1.",
		append(serverLabels[:4:4], "availability_zone", "flavor", "image_id"), nil)
	statusSinceDesc = prometheus.NewDesc("openstack_vm_status_since_timestamp_seconds",
		"When the server's current status and task state began, as a Unix time.",
		serverLabels, nil)
	hostStatusDesc = prometheus.NewDesc("openstack_vm_compute_host_status",
		"Compute service state Nova reports for the host; always 1.",
		[]string{"host", "host_status"}, nil)

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

	icmpUpDesc = prometheus.NewDesc("openstack_vm_icmp_up",
		"1 if the last probe cycle got at least one echo reply from the address.", targetLabels, nil)
	icmpSentDesc = prometheus.NewDesc("openstack_vm_icmp_packets_sent_total",
		"ICMP echo requests sent to the address.", targetLabels, nil)
	icmpReceivedDesc = prometheus.NewDesc("openstack_vm_icmp_packets_received_total",
		"Matching ICMP echo replies received in time from the address.", targetLabels, nil)

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
		"Echo requests that could not be sent, and ICMP socket failures.", []string{"reason"}, nil)
	probeInvalidDesc = prometheus.NewDesc("openstack_vm_probe_invalid_addresses",
		"Addresses of servers in a probed status that cannot be probed (not an IP address, multicast, unspecified).", nil, nil)
	probeDuplicateDesc = prometheus.NewDesc("openstack_vm_probe_duplicate_addresses",
		"Probed addresses that more than one server has; each is probed once and reported for every server.", nil, nil)
)

// InventoryCollector exports the snapshot and the refresh loop's health.
// It reads only memory: a scrape never waits for the API.
type InventoryCollector struct {
	inv      *inventory.Inventory
	interval func() float64
}

// NewInventoryCollector exports inv; interval returns the configured
// refresh interval in seconds.
func NewInventoryCollector(inv *inventory.Inventory, interval func() float64) *InventoryCollector {
	return &InventoryCollector{inv: inv, interval: interval}
}

// Describe sends every descriptor.
func (c *InventoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{statusDesc, infoDesc, statusSinceDesc, hostStatusDesc,
		apiUpDesc, apiLastSuccessDesc, apiDurationDesc, apiIntervalDesc, apiRefreshesDesc,
		apiErrorsDesc, apiRequestsDesc, apiBytesDesc, inventoryServersDesc} {
		ch <- d
	}
}

// Collect sends the snapshot's series.
func (c *InventoryCollector) Collect(ch chan<- prometheus.Metric) {
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
	ch <- prometheus.MustNewConstMetric(inventoryServersDesc, prometheus.GaugeValue, float64(len(snap.Servers)))

	h := c.inv.Health()
	ch <- prometheus.MustNewConstMetric(apiUpDesc, prometheus.GaugeValue, boolFloat(h.Up))
	last := 0.0
	if !h.LastSuccess.IsZero() {
		last = float64(h.LastSuccess.UnixMilli()) / 1000
	}
	ch <- prometheus.MustNewConstMetric(apiLastSuccessDesc, prometheus.GaugeValue, last)
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
}

// ProbeCollector exports the per-address probe results and the probe
// loop's health.
type ProbeCollector struct {
	p *Prober
}

// NewProbeCollector exports p.
func NewProbeCollector(p *Prober) *ProbeCollector { return &ProbeCollector{p: p} }

// Describe sends every descriptor.
func (c *ProbeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{icmpUpDesc, icmpSentDesc, icmpReceivedDesc, probeTargetsDesc,
		probeIntervalDesc, probeDurationDesc, probeLastCycleDesc, probeOverrunsDesc, probeErrorsDesc,
		probeInvalidDesc, probeDuplicateDesc} {
		ch <- d
	}
}

// Collect sends the probe series.
func (c *ProbeCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	p.mu.RLock()
	for _, st := range p.targets {
		t := &st.target
		addr := t.Addr.String()
		ch <- prometheus.MustNewConstMetric(icmpUpDesc, prometheus.GaugeValue, st.up,
			t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, addr)
		ch <- prometheus.MustNewConstMetric(icmpSentDesc, prometheus.CounterValue, float64(st.sent),
			t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, addr)
		ch <- prometheus.MustNewConstMetric(icmpReceivedDesc, prometheus.CounterValue, float64(st.received),
			t.ServerID, t.Name, t.ProjectID, t.Host, t.Network, addr)
	}
	h := p.health
	p.mu.RUnlock()

	ch <- prometheus.MustNewConstMetric(probeTargetsDesc, prometheus.GaugeValue, float64(h.Targets))
	cfg, _ := p.current()
	ch <- prometheus.MustNewConstMetric(probeIntervalDesc, prometheus.GaugeValue, cfg.Interval.Seconds())
	ch <- prometheus.MustNewConstMetric(probeDurationDesc, prometheus.GaugeValue, h.LastDuration.Seconds())
	last := 0.0
	if !h.LastCycleEnd.IsZero() {
		last = float64(h.LastCycleEnd.UnixMilli()) / 1000
	}
	ch <- prometheus.MustNewConstMetric(probeLastCycleDesc, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(probeOverrunsDesc, prometheus.CounterValue, float64(h.Overruns))
	st := p.EngineStats()
	ch <- prometheus.MustNewConstMetric(probeErrorsDesc, prometheus.CounterValue, float64(st.SendErrors), "send")
	ch <- prometheus.MustNewConstMetric(probeErrorsDesc, prometheus.CounterValue, float64(st.SocketErrors), "socket")
	ch <- prometheus.MustNewConstMetric(probeInvalidDesc, prometheus.GaugeValue, float64(h.InvalidAddrs))
	ch <- prometheus.MustNewConstMetric(probeDuplicateDesc, prometheus.GaugeValue, float64(h.DuplicateAddr))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// RTTCollector exports the per-address RTT histograms. Each histogram is a
// live client_golang histogram with its labels as constant labels (so native
// histograms come for free), which makes this collector unchecked: it
// describes nothing.
type RTTCollector struct {
	p *Prober
}

// NewRTTCollector exports p's histograms.
func NewRTTCollector(p *Prober) *RTTCollector { return &RTTCollector{p: p} }

// Describe sends nothing: the descriptors vary with the targets.
func (c *RTTCollector) Describe(chan<- *prometheus.Desc) {}

// Collect sends one histogram per target.
func (c *RTTCollector) Collect(ch chan<- prometheus.Metric) {
	c.p.mu.RLock()
	defer c.p.mu.RUnlock()
	for _, st := range c.p.targets {
		ch <- st.rtt
	}
}
