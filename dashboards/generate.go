//go:build ignore

// generate writes the Grafana dashboards of this folder from the compact
// definitions below: `go generate ./dashboards`. The JSON files are what
// users import; dashboards_test.go checks they are what this program writes.
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

const runbookBase = "https://github.com/openstack-vm-exporter/openstack-vm-exporter/blob/main/docs/runbooks"

// Every query filters with these selectors, so the template variables work
// everywhere; max by (...) folds the duplicates of a server that both its
// hypervisor's exporter and a central one report.
const (
	sel     = `job=~"$job", host=~"$host", project_id=~"$project"`
	hostSel = `job=~"$job", host=~"$host"`
	jobSel  = `job=~"$job"`
	vmSel   = `job=~"$job", host=~"$host", id=~"$vm"`
	// The rules fold job and instance away: ALERTS has neither.
	alertSel   = `host=~"$host"`
	alertVMSel = `host=~"$host", id=~"$vm"`
)

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
	p["fieldConfig"] = map[string]any{"defaults": map[string]any{"unit": unit, "thresholds": th, "color": map[string]string{"mode": "thresholds"}}, "overrides": []any{}}
	p["options"] = map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}}, "colorMode": "background", "graphMode": "none"}
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
	unreachable := `(max by (host, id, address) (openstack_vm_icmp_up{` + sel + `}) == 0)
  and on (id, address) (max by (id, address) (max_over_time(openstack_vm_icmp_up{` + sel + `}[1d])) == 1)`
	loss := `1 - (
    sum by (host, id, name, address) (rate(openstack_vm_icmp_packets_received_total{` + sel + `}[$__rate_interval]))
  /
    sum by (host, id, name, address) (rate(openstack_vm_icmp_packets_sent_total{` + sel + `}[$__rate_interval]))
)`
	panels := []panel{
		row("Fleet", 0),
		stat("Servers", "Servers in the selected hosts and projects.", `count(max by (id) (openstack_vm_status{`+sel+`})) or vector(0)`, "none", 0, 1, thresholds("blue", nil)),
		stat("ACTIVE", "Servers whose Nova status is ACTIVE.", `count(max by (id) (openstack_vm_status{status="ACTIVE", `+sel+`})) or vector(0)`, "none", 4, 1, thresholds("green", nil)),
		stat("ERROR", "Servers in ERROR: see OpenStackVMInError.", `count(max by (id) (openstack_vm_status{status="ERROR", `+sel+`})) or vector(0)`, "none", 8, 1, thresholds("green", nil, "red", 1)),
		stat("Unreachable addresses", "Addresses that answered ICMP in the last day and do not answer now.", `count(`+unreachable+`) or vector(0)`, "none", 12, 1, thresholds("green", nil, "red", 1)),
		stat("Known issues firing", "Alerts of the bundled rules firing now.", `count(ALERTS{alertname=~"OpenStack.*", alertstate="firing", `+alertSel+`}) or vector(0)`, "none", 16, 1, thresholds("green", nil, "orange", 1)),
		stat("Compute hosts down", "Hosts whose nova-compute service Nova reports DOWN or UNKNOWN.", `count(max by (host) (openstack_vm_compute_host_status{host_status=~"DOWN|UNKNOWN", `+hostSel+`})) or vector(0)`, "none", 20, 1, thresholds("green", nil, "red", 1)),
		table("Known issues now", "Every firing alert of the bundled rules; click a row for its runbook.", 0, 5, 24, 8, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{
				"excludeByName": map[string]bool{"Time": true, "Value": true, "__name__": true, "alertstate": true, "job": true, "instance": true},
				"indexByName":   map[string]int{"severity": 0, "alertname": 1, "name": 2, "id": 3, "host": 4, "project_id": 5},
			}}}, runbookLink,
			target{Expr: `ALERTS{alertname=~"OpenStack.*", alertstate="firing", ` + alertSel + `}`}),
		timeseries("Servers by status", "Servers per Nova status over time.", "none", 0, 13, 12, 8, true,
			target{Expr: `count by (status) (max by (id, status) (openstack_vm_status{` + sel + `}))`, LegendFormat: "{{status}}"}),
		table("Servers by host and status", "How many servers each host holds, per status.", 12, 13, 12, 8, "none",
			[]any{map[string]any{"id": "groupingToMatrix", "options": map[string]any{"columnField": "status", "rowField": "host", "valueField": "Value"}}}, nil,
			target{Expr: `count by (host, status) (max by (host, id, status) (openstack_vm_status{` + sel + `}))`}),
		row("Reachability", 21),
		timeseries("Unreachable addresses by host", "Addresses that answered ICMP in the last day and do not now, per host. Many on one host at once: a host or network fault (OpenStackHostVMsUnreachable).", "none", 0, 22, 12, 8, true,
			target{Expr: `count by (host) (` + unreachable + `)`, LegendFormat: "{{host}}"}),
		heatmap("Packet loss distribution", "How the addresses' packet loss is distributed over time.", "percentunit", 12, 22, 12, 8, true,
			target{Expr: loss, LegendFormat: "{{name}} {{address}}"}),
		heatmap("Round-trip time", "RTT of every echo reply, all selected addresses.", "s", 0, 30, 12, 8, false,
			target{Expr: `sum by (le) (rate(openstack_vm_icmp_rtt_seconds_bucket{` + sel + `}[$__rate_interval]))`, LegendFormat: "{{le}}"}),
		timeseries("Worst packet loss", "The ten addresses losing most echo requests.", "percentunit", 12, 30, 12, 8, false,
			target{Expr: `topk(10, ` + loss + ` > 0)`, LegendFormat: "{{name}} {{address}}"}),
		row("Compute hosts and exporters", 38),
		table("Compute host status", "Nova's view of each host's nova-compute service.", 0, 39, 8, 8, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true, "Value": true}}}}, nil,
			target{Expr: `max by (host, host_status) (openstack_vm_compute_host_status{` + hostSel + `})`}),
		timeseries("Inventory refresh", "Whether each exporter's last refresh succeeded, and how old its inventory is.", "s", 8, 39, 8, 8, false,
			target{Expr: `time() - openstack_vm_api_last_success_timestamp_seconds{` + jobSel + `}`, LegendFormat: "age {{instance}}"},
			target{Expr: `openstack_vm_api_refresh_duration_seconds{` + jobSel + `}`, LegendFormat: "took {{instance}}"}),
		timeseries("API errors", "Failed refreshes per second, by cause.", "reqps", 16, 39, 8, 8, true,
			target{Expr: `sum by (reason) (rate(openstack_vm_api_errors_total{` + jobSel + `}[$__rate_interval]))`, LegendFormat: "{{reason}}"}),
		timeseries("Probe cycle vs interval", "A cycle longer than its interval means addresses are probed late (OpenStackVMExporterProbeOverrun).", "s", 0, 47, 12, 8, false,
			target{Expr: `openstack_vm_probe_cycle_duration_seconds{` + jobSel + `}`, LegendFormat: "cycle {{instance}}"},
			target{Expr: `max(openstack_vm_probe_interval_seconds{` + jobSel + `})`, LegendFormat: "interval"}),
		timeseries("Probed addresses and exporter cost", "Addresses per exporter, and the CPU the exporter process uses.", "short", 12, 47, 12, 8, false,
			target{Expr: `openstack_vm_probe_targets{` + jobSel + `}`, LegendFormat: "targets {{instance}}"},
			target{Expr: `rate(process_cpu_seconds_total{` + jobSel + `}[$__rate_interval])`, LegendFormat: "CPU cores {{instance}}"}),
	}
	return dashboard("openstack-vm-fleet", "OpenStack VMs / Fleet", "Nova state and ICMP reachability of every server, from openstack-vm-exporter.", panels,
		variable("job", "Job", `label_values(openstack_vm_exporter_build_info, job)`, true),
		variable("host", "Host", `label_values(openstack_vm_status{job=~"$job"}, host)`, true),
		variable("project", "Project", `label_values(openstack_vm_status{job=~"$job", host=~"$host"}, project_id)`, true))
}

func host() map[string]any {
	nextID = 0
	vmLoss := `1 - (
    sum by (name, address) (rate(openstack_vm_icmp_packets_received_total{` + vmSel + `}[$__rate_interval]))
  /
    sum by (name, address) (rate(openstack_vm_icmp_packets_sent_total{` + vmSel + `}[$__rate_interval]))
)`
	panels := []panel{
		row("Hypervisor", 0),
		stat("Servers on the host", "Servers Nova places on the selected hosts.", `count(max by (id) (openstack_vm_status{`+hostSel+`})) or vector(0)`, "none", 0, 1, thresholds("blue", nil)),
		stat("Compute service", "1 when Nova reports the host's nova-compute UP.", `max(openstack_vm_compute_host_status{host_status="UP", `+hostSel+`}) or vector(0)`, "bool_yes_no", 4, 1, thresholds("red", nil, "green", 1)),
		stat("Addresses answering", "Share of the host's probed addresses that answered in the last cycle.", `avg(max by (id, address) (openstack_vm_icmp_up{`+hostSel+`}))`, "percentunit", 8, 1, thresholds("red", nil, "orange", 0.5, "green", 0.99)),
		stat("Known issues firing", "Alerts of the bundled rules firing for these hosts.", `count(ALERTS{alertname=~"OpenStack.*", alertstate="firing", `+alertSel+`}) or vector(0)`, "none", 12, 1, thresholds("green", nil, "orange", 1)),
		stat("Probe cycle", "Duration of the last probe cycle of the hosts' exporters.", `max(openstack_vm_probe_cycle_duration_seconds{`+jobSel+`})`, "s", 16, 1, thresholds("green", nil)),
		stat("Inventory age", "Seconds since the last successful inventory refresh.", `max(time() - openstack_vm_api_last_success_timestamp_seconds{`+jobSel+`})`, "s", 20, 1, thresholds("green", nil, "orange", 300, "red", 900)),
		table("Servers on the host", "Every server of the selected hosts: state, time in state, reachability. Click a row to drill down.", 0, 5, 24, 10, "none",
			[]any{
				map[string]any{"id": "merge", "options": map[string]any{}},
				map[string]any{"id": "organize", "options": map[string]any{
					"excludeByName": map[string]bool{"Time": true, "Value #A": true},
					"renameByName":  map[string]string{"Value #B": "seconds in state", "Value #C": "answers ICMP"},
				}},
			}, vmLink("id"),
			target{Expr: `max by (host, id, name, project_id, status, vm_state, task_state, power_state) (openstack_vm_status{` + hostSel + `})`},
			target{Expr: `max by (host, id, name, project_id) (time() - openstack_vm_status_since_timestamp_seconds{` + hostSel + `})`},
			target{Expr: `min by (host, id, name, project_id) (openstack_vm_icmp_up{` + hostSel + `})`}),
		row("Server", 15),
		base("state-timeline", "Status over time", "The selected servers' Nova status and task state, as the exporter saw them.", 0, 16, 24, 6,
			target{Expr: `max by (name, status, task_state) (openstack_vm_status{` + vmSel + `})`, LegendFormat: "{{name}} {{status}} {{task_state}}"}),
		timeseries("Reachability", "1 when the address answered in the cycle.", "bool_yes_no", 0, 22, 12, 8, false,
			target{Expr: `max by (name, address) (openstack_vm_icmp_up{` + vmSel + `})`, LegendFormat: "{{name}} {{address}}"}),
		timeseries("Packet loss", "Share of echo requests unanswered.", "percentunit", 12, 22, 12, 8, false,
			target{Expr: vmLoss, LegendFormat: "{{name}} {{address}}"}),
		timeseries("Round-trip time", "Mean and 95th percentile RTT per address.", "s", 0, 30, 24, 8, false,
			target{Expr: `sum by (name, address) (rate(openstack_vm_icmp_rtt_seconds_sum{` + vmSel + `}[$__rate_interval])) / sum by (name, address) (rate(openstack_vm_icmp_rtt_seconds_count{` + vmSel + `}[$__rate_interval]))`, LegendFormat: "mean {{name}} {{address}}"},
			target{Expr: `histogram_quantile(0.95, sum by (name, address, le) (rate(openstack_vm_icmp_rtt_seconds_bucket{` + vmSel + `}[$__rate_interval])))`, LegendFormat: "p95 {{name}} {{address}}"}),
		table("Known issues of the server", "Firing alerts for the selected servers; click for the runbook.", 0, 38, 24, 6, "none",
			[]any{map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true, "Value": true, "__name__": true, "alertstate": true}}}}, runbookLink,
			target{Expr: `ALERTS{alertname=~"OpenStack.*", alertstate="firing", ` + alertVMSel + `}`}),
	}
	vm := variable("vm", "Server", `query_result(max by (id, name) (openstack_vm_status{job=~"$job", host=~"$host"}))`, true)
	vm["regex"] = `/id="(?<value>[^"]+)".*name="(?<text>[^"]*)"/`
	return dashboard("openstack-vm-host", "OpenStack VMs / Host and server", "One hypervisor's servers, and one server's state and reachability history.", panels,
		variable("job", "Job", `label_values(openstack_vm_exporter_build_info, job)`, true),
		variable("host", "Host", `label_values(openstack_vm_status{job=~"$job"}, host)`, false),
		vm)
}

func main() {
	for name, d := range map[string]map[string]any{"openstack-vm-fleet.json": fleet(), "openstack-vm-host.json": host()} {
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			panic(err)
		}
		if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
