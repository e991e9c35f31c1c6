package exporter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

// serverCollector exports the per-server families of the snapshot. It reads
// only memory: a scrape never waits for the API.
type serverCollector struct {
	inv *inventory.Inventory
}

// Describe sends the descriptors.
func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, statusFam, infoFam, statusSinceFam, hostStatusFam, hostHeartbeatFam, portStatusFam, portFixedIPsFam)
}

// Collect sends the snapshot's series.
func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.inv.Snapshot()
	for i := range snap.Servers {
		s := &snap.Servers[i]
		ch <- statusFam.metric(1,
			s.ID, s.Name, s.ProjectID, s.Host, s.Status, s.VMState, s.TaskState, s.PowerState)
		ch <- infoFam.metric(1,
			s.ID, s.Name, s.ProjectID, s.Host, s.AvailabilityZone, s.Flavor, s.ImageID)
		ch <- statusSinceFam.metric(float64(s.StatusSince.UnixMilli())/1000, s.ID, s.Name, s.ProjectID, s.Host)
	}
	for host, st := range snap.HostStatus {
		ch <- hostStatusFam.metric(1, host, st)
	}
	for host, hb := range snap.HostHeartbeat {
		ch <- hostHeartbeatFam.metric(boolFloat(hb), host)
	}
	for _, r := range portRows(snap) {
		ch <- portStatusFam.metric(1, r.status...)
		ch <- portFixedIPsFam.metric(float64(r.nFixed), r.fixedIPs...)
	}
}

// healthCollector exports the state of the refresh and probe loops.
type healthCollector struct {
	inv  *inventory.Inventory
	loop *ProbeLoop
	// reload reports the configuration reloads; nil: not exported.
	reload func() (ok bool, lastSuccess time.Time)
}

// Describe sends every descriptor.
func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, apiUpFam, apiLastSuccessFam, apiDurationFam, apiIntervalFam, apiRefreshesFam,
		apiErrorsFam, apiRequestsFam, apiBytesFam, inventoryServersFam, inventoryHostKnownFam, probeTargetsFam,
		probeIntervalFam, probeDurationFam, probeLastCycleFam, probeOverrunsFam, probeErrorsFam,
		probeInvalidFam, probeDuplicateFam, probeUnprobedFam, probeVantageModeFam, namespacePresentFam, exporterTimeFam,
		configReloadOKFam, configReloadTimeFam)
}

// Collect sends the loops' state.
func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- exporterTimeFam.metric(unixOrZero(time.Now()))
	ch <- inventoryServersFam.metric(float64(len(c.inv.Snapshot().Servers)))
	h := c.inv.Health()
	ch <- apiUpFam.metric(boolFloat(h.Up))
	ch <- apiLastSuccessFam.metric(unixOrZero(h.LastSuccess))
	ch <- apiDurationFam.metric(h.LastDuration.Seconds())
	ch <- apiIntervalFam.metric(c.inv.RefreshInterval().Seconds())
	for kind, n := range h.Refreshes {
		ch <- apiRefreshesFam.metric(float64(n), kind)
	}
	for reason, n := range h.Errors {
		ch <- apiErrorsFam.metric(float64(n), reason)
	}
	ch <- apiRequestsFam.metric(float64(h.Requests))
	ch <- apiBytesFam.metric(float64(h.Bytes))
	// Absent in scope all, and while Nova's service list cannot tell.
	if h.HostKnown != nil {
		ch <- inventoryHostKnownFam.metric(boolFloat(*h.HostKnown))
	}

	var r Results
	c.loop.Results(&r, 0)
	ph := r.Health
	ch <- probeTargetsFam.metric(float64(ph.Targets))
	ch <- probeIntervalFam.metric(r.Interval.Seconds())
	ch <- probeDurationFam.metric(ph.LastDuration.Seconds())
	ch <- probeLastCycleFam.metric(unixOrZero(ph.LastCycleEnd))
	ch <- probeOverrunsFam.metric(float64(ph.Overruns))
	st := r.Engine
	ch <- probeErrorsFam.metric(float64(st.SendErrors), "send")
	ch <- probeErrorsFam.metric(float64(st.SocketErrors), "socket")
	ch <- probeErrorsFam.metric(float64(ph.CycleErrors), "cycle")
	ch <- probeErrorsFam.metric(float64(st.NamespaceErrors+ph.NamespaceErrors), "namespace")
	ch <- probeInvalidFam.metric(float64(ph.InvalidAddrs))
	ch <- probeDuplicateFam.metric(float64(ph.DuplicateAddr))
	for _, reason := range targets.Reasons {
		ch <- probeUnprobedFam.metric(float64(ph.Unprobed[reason]), reason)
	}
	if ph.Mode != "" {
		ch <- probeVantageModeFam.metric(1, ph.Mode)
	}
	for _, ns := range ph.Namespaces {
		ch <- namespacePresentFam.metric(boolFloat(ns.Present), ns.NetworkID, ns.Namespace)
	}
	if c.reload != nil {
		ok, at := c.reload()
		ch <- configReloadOKFam.metric(boolFloat(ok))
		ch <- configReloadTimeFam.metric(unixOrZero(at))
	}
}

func unixOrZero(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMilli()) / 1000
}

// targetCollector exports the per-address families (the RTT histograms are
// the rttCollector's).
type targetCollector struct {
	loop *ProbeLoop
}

// Describe sends the descriptors.
func (c *targetCollector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, icmpUpFam, icmpSentFam, icmpReceivedFam, icmpExpectedFam)
}

// Collect sends the per-address series.
func (c *targetCollector) Collect(ch chan<- prometheus.Metric) {
	r := getResults()
	defer putResults(r)
	c.loop.Results(r, ResultTargets)
	for i := range r.Targets {
		st := &r.Targets[i]
		if st.probed {
			ch <- icmpUpFam.metric(st.up, st.values...)
		}
		ch <- icmpSentFam.metric(float64(st.sent), st.values...)
		ch <- icmpReceivedFam.metric(float64(st.received), st.values...)
		if st.expectedKnown {
			ch <- icmpExpectedFam.metric(st.expected, st.values...)
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// rttCollector exports the per-address RTT histograms, classic and native
// buckets both.
type rttCollector struct {
	loop *ProbeLoop
}

// Describe sends the descriptor.
func (c *rttCollector) Describe(ch chan<- *prometheus.Desc) { ch <- rttFam.desc }

// Collect sends one histogram per address.
func (c *rttCollector) Collect(ch chan<- prometheus.Metric) {
	var r Results
	c.loop.Results(&r, ResultHistograms)
	for i := range r.Targets {
		ch <- r.Targets[i].histogram
	}
}
