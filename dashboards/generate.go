//go:build ignore

// generate writes the Grafana dashboards of this folder from the compact
// definitions below: `go generate ./dashboards`. The JSON files are what
// users import; dashboards_test.go checks they are what this program writes.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
)

const runbookBase = "https://github.com/openstack-vm-exporter/openstack-vm-exporter/blob/main/docs/runbooks"

// Thresholds of the bundled alerts, read from alerts/params.yaml (the
// values the rules are rendered with), drawn on the panels that show what
// the alerts measure.
var (
	params           = alerts.DefaultParams()
	lossThreshold    = params.LossThreshold
	latencyThreshold = params.LatencyThresholdSeconds
	staleIntervals   = params.StaleIntervals
)

// Every query filters with these selectors, so the template variables work
// everywhere; max by (...) folds the duplicates of a server that both its
// hypervisor's exporter and a central one report.
const (
	sel     = `job=~"$job", host=~"$host", project_id=~"$project"`
	hostSel = `job=~"$job", host=~"$host"`
	jobSel  = `job=~"$job"`
	vmSel   = `job=~"$job", host=~"$host", project_id=~"$project", id=~"$vm"`
	// The rules fold job and instance away: ALERTS and the recorded series
	// have neither. Alerts of severity none are no issue: they only
	// inhibit (a maintenance window).
	recSel     = `host=~"$host", project_id=~"$project"`
	alertSel   = `severity!="none", host=~"$host"`
	alertVMSel = `severity!="none", host=~"$host", id=~"$vm"`
)

// zeroIfReported is expr, or 0 when expr finds nothing but the exporters
// report (base is not empty): a count of nothing is 0, while a panel
// without data shows "No data", never a reassuring 0. dashboards.Fallback
// splits it again, so the end-to-end test can require data of expr itself.
func zeroIfReported(expr, base string) string {
	return expr + " or on () (0 * " + base + ")"
}

// countWhere counts the series that pass a filter (" == 0"), 0 when none do
// but the series exist.
func countWhere(series, filter string) string {
	return zeroIfReported("count("+series+filter+")", "count("+series+")")
}

// lossRatio is the share of echo requests unanswered per address, by the labels
// of by, over the panel's rate interval.
func lossRatio(by, sel string) string {
	return `1 - (
    sum by (` + by + `) (rate(openstack_vm_icmp_packets_received_total{` + sel + `}[$__rate_interval]))
  /
    sum by (` + by + `) (rate(openstack_vm_icmp_packets_sent_total{` + sel + `}[$__rate_interval]))
)`
}

type target struct {
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat,omitempty"`
	RefID        string `json:"refId"`
	Instant      bool   `json:"instant,omitempty"`
	Range        bool   `json:"range,omitempty"`
	Format       string `json:"format,omitempty"`
	Datasource   ds     `json:"datasource"`
}

type ds struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

var promDS = ds{Type: "prometheus", UID: "${datasource}"}

type panel map[string]any

var nextID int

func base(kind, title, description string, x, y, w, h int, targets ...target) panel {
	nextID++
	for i := range targets {
		targets[i].RefID = string(rune('A' + i))
		targets[i].Datasource = promDS
	}
	return panel{
		"id": nextID, "type": kind, "title": title, "description": description,
		"gridPos":    map[string]int{"x": x, "y": y, "w": w, "h": h},
		"datasource": promDS, "targets": targets,
	}
}

func thresholds(steps ...any) map[string]any {
	var s []map[string]any
	for i := 0; i+1 < len(steps); i += 2 {
		s = append(s, map[string]any{"color": steps[i], "value": steps[i+1]})
	}
	return map[string]any{"mode": "absolute", "steps": s}
}

func stat(title, desc, expr, unit string, x, y int, th map[string]any) panel {
	p := base("stat", title, desc, x, y, 4, 4, target{Expr: expr, Instant: true})
	p["fieldConfig"] = map[string]any{"defaults": map[string]any{"unit": unit, "thresholds": th, "color": map[string]string{"mode": "thresholds"}, "noValue": "No data"}, "overrides": []any{}}
	p["options"] = map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}}, "colorMode": "background", "graphMode": "none"}
	return p
}

// fieldDefaults is the panel's fieldConfig.defaults, to amend.
func fieldDefaults(p panel) map[string]any {
	return p["fieldConfig"].(map[string]any)["defaults"].(map[string]any)
}

// withThreshold draws a dashed line at an alert's threshold.
func withThreshold(p panel, v float64) panel {
	defaults := fieldDefaults(p)
	defaults["thresholds"] = thresholds("transparent", nil, "red", v)
	defaults["custom"].(map[string]any)["thresholdsStyle"] = map[string]string{"mode": "dashed"}
	return p
}

func timeseries(title, desc, unit string, x, y, w, h int, stack bool, targets ...target) panel {
	p := base("timeseries", title, desc, x, y, w, h, targets...)
	custom := map[string]any{"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
	if stack {
		custom["stacking"] = map[string]string{"mode": "normal", "group": "A"}
		custom["fillOpacity"] = 60
	}
	p["fieldConfig"] = map[string]any{"defaults": map[string]any{"unit": unit, "custom": custom}, "overrides": []any{}}
	p["options"] = map[string]any{"legend": map[string]any{"displayMode": "table", "placement": "right", "calcs": []string{"lastNotNull"}}, "tooltip": map[string]string{"mode": "multi"}}
	return p
}

func table(title, desc string, x, y, w, h int, unit string, transformations []any, links []any, targets ...target) panel {
	for i := range targets {
		targets[i].Instant, targets[i].Format = true, "table"
	}
	p := base("table", title, desc, x, y, w, h, targets...)
	p["fieldConfig"] = map[string]any{"defaults": map[string]any{"unit": unit, "links": links}, "overrides": []any{}}
	p["transformations"] = transformations
	p["options"] = map[string]any{"showHeader": true}
	return p
}

func heatmap(title, desc, unit string, x, y, w, h int, calculate bool, t target) panel {
	if !calculate {
		t.Format = "heatmap"
	}
	p := base("heatmap", title, desc, x, y, w, h, t)
	p["options"] = map[string]any{
		"calculate": calculate, "yAxis": map[string]any{"unit": unit},
		"color": map[string]any{"mode": "scheme", "scheme": "Oranges"}, "cellGap": 1,
	}
	p["fieldConfig"] = map[string]any{"defaults": map[string]any{"unit": unit}, "overrides": []any{}}
	return p
}

func row(title string, y int) panel {
	nextID++
	return panel{"id": nextID, "type": "row", "title": title, "collapsed": false, "gridPos": map[string]int{"x": 0, "y": y, "w": 24, "h": 1}, "panels": []any{}}
}

func variable(name, label, query string, multi bool) map[string]any {
	v := map[string]any{
		"name": name, "label": label, "type": "query", "datasource": promDS,
		"query": map[string]string{"query": query, "refId": name}, "definition": query,
		"refresh": 2, "sort": 1, "multi": multi, "includeAll": multi,
		"current": map[string]any{"selected": true, "text": "All", "value": "$__all"},
	}
	if multi {
		v["allValue"] = ".*"
	}
	return v
}

func dashboard(uid, title, desc string, panels []panel, vars ...map[string]any) map[string]any {
	list := []any{map[string]any{
		"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
		"current": map[string]any{"selected": true, "text": "default", "value": "default"},
	}}
	for _, v := range vars {
		list = append(list, v)
	}
	list = append(list, map[string]any{
		"name": "runbook_base", "type": "constant", "hide": 2, "query": runbookBase,
		"current": map[string]any{"text": runbookBase, "value": runbookBase},
	})
	return map[string]any{
		"uid": uid, "title": title, "description": desc, "tags": []string{"openstack", "openstack-vm-exporter"},
		"editable": true, "schemaVersion": 39, "version": 1, "timezone": "browser", "refresh": "30s",
		"time": map[string]string{"from": "now-6h", "to": "now"}, "graphTooltip": 1,
		"templating": map[string]any{"list": list},
		"annotations": map[string]any{"list": []any{map[string]any{
			"name": "Known issues", "datasource": promDS, "enable": true, "iconColor": "red",
			"expr": `ALERTS{alertname=~"OpenStack.*", alertstate="firing", ` + alertSel + `}`, "step": "60s",
			"titleFormat": "{{alertname}}", "textFormat": "{{name}} {{id}} on {{host}}", "useValueForTime": false,
		}}},
		"links": []any{
			map[string]any{"title": "Runbooks", "type": "link", "url": runbookBase, "targetBlank": true, "icon": "doc"},
			map[string]any{"title": "OpenStack VM dashboards", "type": "dashboards", "tags": []string{"openstack-vm-exporter"}, "asDropdown": true},
		},
		"panels": panels,
	}
}

var runbookLink = []any{map[string]any{"title": "Runbook", "url": "${runbook_base}/${__data.fields.alertname}.md", "targetBlank": true}}

func vmLink(field string) []any {
	return []any{map[string]any{"title": "VM drill-down", "url": "/d/openstack-vm-host?var-datasource=${datasource}&var-job=${job}&var-host=${__data.fields.host}&var-vm=${__data.fields." + field + "}"}}
}

func fleet() map[string]any {
	nextID = 0
	// Per-address loss over the panel's rate interval, for the addresses
	// that lose some but not all requests, as the packet-loss alert reads it
	// (total loss is unreachability, shown apart).
	loss := lossRatio("host, id, name, address", sel)
	meanRTT := `sum by (host, id, name, address) (rate(openstack_vm_icmp_rtt_seconds_sum{` + sel + `}[$__rate_interval]))
  /
sum by (host, id, name, address) (rate(openstack_vm_icmp_rtt_seconds_count{` + sel + `}[$__rate_interval]))`
	unreachable := `openstack_vm_address:icmp_unreachable:bool{` + recSel + `}`
	servers := `count(openstack_vm_status{` + sel + `})`
	exporters := `count(up{` + jobSel + `})`
	// The stale rule of OpenStackVMExporterStale: no refresh for
	// staleIntervals refresh intervals, counted from the start when the
	// exporter never had one. On the exporter's own clock, as the rules.
	inventoryAge := `openstack_vm_exporter_time_seconds{` + jobSel + `} - on (instance, job) (openstack_vm_api_last_success_timestamp_seconds{` + jobSel + `} > 0 or process_start_time_seconds{` + jobSel + `})`
	panels := []panel{
		row("Fleet", 0),
		stat("Servers", "Servers in the selected hosts and projects.", `count(max by (id) (openstack_vm_status{`+sel+`}))`, "none", 0, 1, thresholds("blue", nil)),
		stat("ACTIVE", "Servers whose Nova status is ACTIVE.", zeroIfReported(`count(max by (id) (openstack_vm_status{status="ACTIVE", `+sel+`}))`, servers), "none", 4, 1, thresholds("green", nil)),
		stat("ERROR", "Servers in ERROR: see OpenStackVMInError.", zeroIfReported(`count(max by (id) (openstack_vm_status{status="ERROR", `+sel+`}))`, servers), "none", 8, 1, thresholds("green", nil, "red", 1)),
		stat("Unreachable addresses", "Addresses that answered ICMP in the last day and do not answer now (the rules' openstack_vm_address:icmp_unreachable:bool). No data: no address answered in the last day, or the rules are not loaded.",
			countWhere(unreachable, ` == 1`), "none", 12, 1, thresholds("green", nil, "red", 1)),
		stat("Known issues firing", "Alerts of the bundled rules firing now.", zeroIfReported(`count(ALERTS{alertname=~"OpenStack.*", alertstate="firing", `+alertSel+`})`, exporters), "none", 16, 1, thresholds("green", nil, "orange", 1)),
		stat("Compute hosts down", "Hosts whose nova-compute service Nova reports DOWN or UNKNOWN.",
			zeroIfReported(`count(max by (host) (openstack_vm_compute_host_status{host_status=~"DOWN|UNKNOWN", `+hostSel+`}))`, `count(openstack_vm_compute_host_status{`+hostSel+`})`), "none", 20, 1, thresholds("green", nil, "red", 1)),
		table("Known issues now", "Every firing alert of the bundled rules; click a row for its runbook.", 0, 5, 24, 8, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{
				"excludeByName": map[string]bool{"Time": true, "Value": true, "__name__": true, "alertstate": true, "job": true, "instance": true},
				"indexByName":   map[string]int{"severity": 0, "alertname": 1, "name": 2, "id": 3, "host": 4, "project_id": 5},
			}}}, runbookLink,
			target{Expr: `ALERTS{alertname=~"OpenStack.*", alertstate="firing", ` + alertSel + `}`}),
		timeseries("Servers by status", "Servers per Nova status over time.", "none", 0, 13, 12, 8, true,
			target{Expr: `count by (status) (max by (id, status) (openstack_vm_status{` + sel + `}))`, LegendFormat: "{{status}}"}),
		table("Servers by host and status", "How many servers each host holds, per status (one row per host).", 12, 13, 12, 8, "none",
			[]any{map[string]any{"id": "groupingToMatrix", "options": map[string]any{"columnField": "status", "rowField": "host", "valueField": "Value"}}}, nil,
			target{Expr: `count by (host, status) (max by (host, id, status) (openstack_vm_status{` + sel + `}))`}),

		row("Reachability", 21),
		timeseries("Unreachable addresses, top 10 hosts", "Addresses that answered ICMP in the last day and do not now, on the ten hosts with most. Many on one host at once: a host or network fault (OpenStackHostVMsUnreachable).", "none", 0, 22, 12, 8, false,
			target{Expr: `topk(10, count by (host) (` + unreachable + ` == 1))`, LegendFormat: "{{host}}"}),
		table("Unreachable servers", "Every address that answered in the last day and does not now. Click a row to drill down.", 12, 22, 12, 8, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{
				"excludeByName": map[string]bool{"Time": true, "Value": true, "__name__": true},
				"indexByName":   map[string]int{"host": 0, "name": 1, "address": 2, "network": 3, "id": 4, "project_id": 5},
			}}}, vmLink("id"),
			target{Expr: unreachable + ` == 1`}),
		timeseries("Addresses losing packets", fmt.Sprintf("How many addresses lose some echo requests, below and above the %g share at which OpenStackVMPacketLoss fires (total loss counts as unreachable, not here).", lossThreshold), "none", 0, 30, 12, 8, true,
			target{Expr: fmt.Sprintf(`count((%s) >= %g < 1)`, loss, lossThreshold), LegendFormat: fmt.Sprintf("losing %g or more", lossThreshold)},
			target{Expr: fmt.Sprintf(`count((%s) > 0 < %g)`, loss, lossThreshold), LegendFormat: fmt.Sprintf("losing less than %g", lossThreshold)}),
		withThreshold(timeseries("Worst packet loss", fmt.Sprintf("The ten addresses losing most echo requests (not all of them). The line: OpenStackVMPacketLoss's threshold, %g.", lossThreshold), "percentunit", 12, 30, 12, 8, false,
			target{Expr: `topk(10, (` + loss + `) > 0 < 1)`, LegendFormat: "{{name}} {{address}}"}), lossThreshold),
		heatmap("Round-trip time", "RTT of every echo reply of the selected addresses, as one histogram summed in Prometheus.", "s", 0, 38, 12, 8, false,
			target{Expr: `sum by (le) (rate(openstack_vm_icmp_rtt_seconds_bucket{` + sel + `}[$__rate_interval]))`, LegendFormat: "{{le}}"}),
		withThreshold(timeseries("Slowest addresses", fmt.Sprintf("The ten addresses with the highest mean RTT. The line: OpenStackVMHighLatency's threshold, %g s.", latencyThreshold), "s", 12, 38, 12, 8, false,
			target{Expr: `topk(10, ` + meanRTT + `)`, LegendFormat: "{{name}} {{address}}"}), latencyThreshold),

		row("Compute hosts", 46),
		table("Compute hosts by service state", "How many hosts Nova reports in each nova-compute service state.", 0, 47, 8, 7, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true}, "renameByName": map[string]string{"Value": "hosts"}}}}, nil,
			target{Expr: `count by (host_status) (max by (host, host_status) (openstack_vm_compute_host_status{` + hostSel + `}))`}),
		table("Compute hosts not UP", "Hosts whose nova-compute service is DOWN, UNKNOWN or disabled (MAINTENANCE).", 8, 47, 16, 7, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true, "Value": true}}}}, nil,
			target{Expr: `max by (host, host_status) (openstack_vm_compute_host_status{host_status!="UP", ` + hostSel + `})`}),

		row("Exporters", 54),
		stat("Exporters up", "Exporter targets Prometheus scrapes successfully.", `sum(up{`+jobSel+`})`, "none", 0, 55, thresholds("green", nil)),
		stat("Exporters down", "Exporter targets Prometheus cannot scrape (OpenStackVMExporterDown): their servers' alerts cannot fire.",
			countWhere(`up{`+jobSel+`}`, ` == 0`), "none", 4, 55, thresholds("green", nil, "red", 1)),
		stat("Refresh failing", "Exporters whose last inventory refresh failed (OpenStackVMExporterAPIDown once it lasts).",
			countWhere(`openstack_vm_api_up{`+jobSel+`}`, ` == 0`), "none", 8, 55, thresholds("green", nil, "orange", 1)),
		stat("Stale inventories", fmt.Sprintf("Exporters with no successful refresh for %d refresh intervals (OpenStackVMExporterStale): their servers' state alerts are off.", staleIntervals),
			zeroIfReported(fmt.Sprintf(`count((%s) > %d * openstack_vm_api_refresh_interval_seconds{%s})`, inventoryAge, staleIntervals, jobSel), `count(openstack_vm_api_last_success_timestamp_seconds{`+jobSel+`})`), "none", 12, 55, thresholds("green", nil, "red", 1)),
		stat("Host unknown to Nova", "Exporters whose configured host matches no nova-compute service (OpenStackVMExporterHostUnknown): they watch nothing.",
			countWhere(`openstack_vm_inventory_host_known{`+jobSel+`}`, ` == 0`), "none", 16, 55, thresholds("green", nil, "red", 1)),
		stat("Probe errors", "Echo requests the exporters could not send, and socket failures, per second (OpenStackVMExporterProbeErrors).",
			`sum(rate(openstack_vm_probe_errors_total{`+jobSel+`}[$__rate_interval]))`, "reqps", 20, 55, thresholds("green", nil, "red", 0.001)),
		table("Exporters down", "Every exporter target Prometheus cannot scrape, with the host it watches (the host target label, when the scrape configuration sets it).", 0, 59, 12, 8, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true, "Value": true, "__name__": true}}}}, nil,
			target{Expr: `up{` + jobSel + `} == 0`}),
		table("Exporter versions", "How many exporters run each build.", 12, 59, 12, 8, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true}, "renameByName": map[string]string{"Value": "exporters"}}}}, nil,
			target{Expr: `count by (version, revision, goversion) (openstack_vm_exporter_build_info{` + jobSel + `})`}),
		timeseries("Inventory age", fmt.Sprintf("Age of the exporters' inventories: the oldest, the 90th percentile and the median. Past %d refresh intervals an exporter is stale.", staleIntervals), "s", 0, 67, 8, 8, false,
			target{Expr: `max(` + inventoryAge + `)`, LegendFormat: "oldest"},
			target{Expr: `quantile(0.9, ` + inventoryAge + `)`, LegendFormat: "p90"},
			target{Expr: `quantile(0.5, ` + inventoryAge + `)`, LegendFormat: "median"}),
		timeseries("Refresh failures by cause", "Failed inventory refreshes per second, all exporters, by cause.", "reqps", 8, 67, 8, 8, true,
			target{Expr: `sum by (reason) (rate(openstack_vm_api_errors_total{` + jobSel + `}[$__rate_interval]))`, LegendFormat: "{{reason}}"}),
		timeseries("Probe errors by reason", "Probe errors per second, all exporters, by reason.", "reqps", 16, 67, 8, 8, true,
			target{Expr: `sum by (reason) (rate(openstack_vm_probe_errors_total{` + jobSel + `}[$__rate_interval]))`, LegendFormat: "{{reason}}"}),
		timeseries("Probe cycle vs interval", "The longest and the median probe cycle of the exporters, against the longest interval: a cycle longer than its interval probes addresses late (OpenStackVMExporterProbeOverrun).", "s", 0, 75, 8, 8, false,
			target{Expr: `max(openstack_vm_probe_cycle_duration_seconds{` + jobSel + `})`, LegendFormat: "longest cycle"},
			target{Expr: `quantile(0.5, openstack_vm_probe_cycle_duration_seconds{` + jobSel + `})`, LegendFormat: "median cycle"},
			target{Expr: `max(openstack_vm_probe_interval_seconds{` + jobSel + `})`, LegendFormat: "interval"}),
		timeseries("Probed addresses", "Addresses probed by all exporters, and by the busiest one.", "short", 8, 75, 8, 8, false,
			target{Expr: `sum(openstack_vm_probe_targets{` + jobSel + `})`, LegendFormat: "all exporters"},
			target{Expr: `max(openstack_vm_probe_targets{` + jobSel + `})`, LegendFormat: "busiest exporter"}),
		timeseries("Exporter CPU", "CPU the exporter processes use, in cores: the busiest, the median, and all together.", "short", 16, 75, 8, 8, false,
			target{Expr: `max(rate(process_cpu_seconds_total{` + jobSel + `}[$__rate_interval]))`, LegendFormat: "busiest"},
			target{Expr: `quantile(0.5, rate(process_cpu_seconds_total{` + jobSel + `}[$__rate_interval]))`, LegendFormat: "median"},
			target{Expr: `sum(rate(process_cpu_seconds_total{` + jobSel + `}[$__rate_interval]))`, LegendFormat: "all"}),
	}
	return dashboard("openstack-vm-fleet", "OpenStack VMs / Fleet", "Nova state and ICMP reachability of every server, and the health of every exporter, from openstack-vm-exporter.", panels,
		variable("job", "Job", `label_values(openstack_vm_exporter_build_info, job)`, true),
		variable("host", "Host", `label_values(openstack_vm_status{job=~"$job"}, host)`, true),
		variable("project", "Project", `label_values(openstack_vm_status{job=~"$job", host=~"$host"}, project_id)`, true))
}

func host() map[string]any {
	nextID = 0
	vmLoss := lossRatio("name, address", vmSel)
	// The exporters that report the host's servers: its own, and a central
	// one if any. Their health series carry no server labels.
	reporting := `and on (instance, job) count by (instance, job) (openstack_vm_status{` + hostSel + `})`
	panels := []panel{
		row("Hypervisor", 0),
		stat("Servers on the host", "Servers Nova places on the selected host, of the selected projects.", `count(max by (id) (openstack_vm_status{`+sel+`}))`, "none", 0, 1, thresholds("blue", nil)),
		hostStatus(4, 1),
		stat("Addresses answering", "Share of the addresses that answered ICMP in the last day that answer now (servers that never answer, e.g. behind a security group that drops ICMP, are left out, as the alerts leave them out). No data: no address answered in the last day.",
			`avg(1 - openstack_vm_address:icmp_unreachable:bool{`+recSel+`})`, "percentunit", 8, 1, thresholds("red", nil, "orange", 0.5, "green", 0.99)),
		stat("Known issues firing", "Alerts of the bundled rules firing for this host.", zeroIfReported(`count(ALERTS{alertname=~"OpenStack.*", alertstate="firing", `+alertSel+`})`, `count(openstack_vm_status{`+hostSel+`})`), "none", 12, 1, thresholds("green", nil, "orange", 1)),
		stat("Probe cycle", "Duration of the last probe cycle of the exporters that report this host's servers.", `max(openstack_vm_probe_cycle_duration_seconds{`+jobSel+`} `+reporting+`)`, "s", 16, 1, thresholds("green", nil)),
		stat("Inventory age", "Seconds since the last successful inventory refresh of the exporters that report this host's servers.", `max((openstack_vm_exporter_time_seconds{`+jobSel+`} - on (instance, job) openstack_vm_api_last_success_timestamp_seconds{`+jobSel+`}) `+reporting+`)`, "s", 20, 1, thresholds("green", nil, "orange", 300, "red", 900)),
		table("Servers on the host", "Every server of the selected host and projects: state, time in state, reachability. Click a row to drill down.", 0, 5, 24, 10, "none",
			[]any{
				map[string]any{"id": "merge", "options": map[string]any{}},
				map[string]any{"id": "organize", "options": map[string]any{
					"excludeByName": map[string]bool{"Time": true, "Value #A": true},
					"renameByName":  map[string]string{"Value #B": "seconds in state", "Value #C": "answers ICMP"},
				}},
			}, vmLink("id"),
			target{Expr: `max by (host, id, name, project_id, status, vm_state, task_state, power_state) (openstack_vm_status{` + sel + `})`},
			target{Expr: `max by (host, id, name, project_id) (openstack_vm_exporter_time_seconds{` + jobSel + `} - on (instance, job) group_right () openstack_vm_status_since_timestamp_seconds{` + sel + `})`},
			target{Expr: `min by (host, id, name, project_id) (openstack_vm_icmp_up{` + sel + `})`}),
		row("Server", 15),
		base("state-timeline", "Status over time", "The selected servers' Nova status and task state, as the exporter saw them.", 0, 16, 24, 6,
			target{Expr: `max by (name, status, task_state) (openstack_vm_status{` + vmSel + `})`, LegendFormat: "{{name}} {{status}} {{task_state}}"}),
		timeseries("Reachability", "1 when the address answered in the cycle; a gap when no echo request could be sent.", "bool_yes_no", 0, 22, 12, 8, false,
			target{Expr: `max by (name, address) (openstack_vm_icmp_up{` + vmSel + `})`, LegendFormat: "{{name}} {{address}}"}),
		withThreshold(timeseries("Packet loss", fmt.Sprintf("Share of echo requests unanswered. The line: OpenStackVMPacketLoss's threshold, %g.", lossThreshold), "percentunit", 12, 22, 12, 8, false,
			target{Expr: vmLoss, LegendFormat: "{{name}} {{address}}"}), lossThreshold),
		withThreshold(timeseries("Round-trip time", fmt.Sprintf("Mean and 95th percentile RTT per address. The line: OpenStackVMHighLatency's threshold on the mean, %g s.", latencyThreshold), "s", 0, 30, 24, 8, false,
			target{Expr: `sum by (name, address) (rate(openstack_vm_icmp_rtt_seconds_sum{` + vmSel + `}[$__rate_interval])) / sum by (name, address) (rate(openstack_vm_icmp_rtt_seconds_count{` + vmSel + `}[$__rate_interval]))`, LegendFormat: "mean {{name}} {{address}}"},
			target{Expr: `histogram_quantile(0.95, sum by (name, address, le) (rate(openstack_vm_icmp_rtt_seconds_bucket{` + vmSel + `}[$__rate_interval])))`, LegendFormat: "p95 {{name}} {{address}}"}), latencyThreshold),
		table("Known issues of the server", "Firing alerts for the selected servers; click for the runbook.", 0, 38, 24, 6, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true, "Value": true, "__name__": true, "alertstate": true}}}}, runbookLink,
			target{Expr: `ALERTS{alertname=~"OpenStack.*", alertstate="firing", ` + alertVMSel + `}`}),
	}
	vm := variable("vm", "Server", `query_result(max by (id, name) (openstack_vm_status{job=~"$job", host=~"$host", project_id=~"$project"}))`, true)
	vm["regex"] = `/id="(?<value>[^"]+)".*name="(?<text>[^"]*)"/`
	return dashboard("openstack-vm-host", "OpenStack VMs / Host and server", "One hypervisor's servers, and one server's state and reachability history.", panels,
		variable("job", "Job", `label_values(openstack_vm_exporter_build_info, job)`, true),
		variable("host", "Host", `label_values(openstack_vm_status{job=~"$job"}, host)`, false),
		variable("project", "Project", `label_values(openstack_vm_status{job=~"$job", host=~"$host"}, project_id)`, true),
		vm)
}

// hostStatus shows the host's nova-compute state by name; no data when the
// exporter does not report it (never "DOWN" for a host it knows nothing of).
func hostStatus(x, y int) panel {
	states := []struct {
		name, color string
	}{{"UP", "green"}, {"MAINTENANCE", "blue"}, {"DOWN", "red"}, {"UNKNOWN", "red"}}
	var terms []string
	mappings := map[string]any{}
	for i, s := range states {
		terms = append(terms, fmt.Sprintf(`%d * openstack_vm_compute_host_status{host_status="%s", %s}`, i+1, s.name, hostSel))
		mappings[fmt.Sprint(i+1)] = map[string]any{"text": s.name, "color": s.color, "index": i}
	}
	// The worst state if several exporters disagree.
	p := stat("Compute service", "The state Nova reports for the host's nova-compute service (OpenStackComputeHostDown, OpenStackComputeHostInMaintenance).",
		"max(\n  "+strings.Join(terms, "\n  or\n  ")+"\n)", "none", x, y, thresholds("text", nil))
	fieldDefaults(p)["mappings"] = []any{map[string]any{"type": "value", "options": mappings}}
	return p
}

func main() {
	out := flag.String("o", ".", "folder to write the dashboards to")
	flag.Parse()
	for name, d := range map[string]map[string]any{"openstack-vm-fleet.json": fleet(), "openstack-vm-host.json": host()} {
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			panic(err)
		}
		if err := os.WriteFile(filepath.Join(*out, name), append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
