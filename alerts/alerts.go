// Package alerts holds the known issues of OpenStack VMs as Prometheus
// rules: one template (rules.yml.tmpl) and one file of thresholds
// (params.yaml). Render writes the rules users load; Rules gives the same
// rules to the one-shot report, so that both always detect the same issues.
package alerts

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/template"

	"gopkg.in/yaml.v3"
)

//go:generate go run ./gen -o openstack-vm-exporter.rules.yml
//go:generate go run ./gen -prometheusrule -o ../deploy/kubernetes/prometheusrule.yaml

var (
	//go:embed rules.yml.tmpl
	rulesTemplate string
	//go:embed params.yaml
	defaultParams []byte
)

// Params are the thresholds, windows and selectors of the rules; params.yaml
// documents each.
type Params struct {
	RunbookBaseURL    string `yaml:"runbook_base_url"`
	JobSelector       string `yaml:"job_selector"`
	ICMPExtraSelector string `yaml:"icmp_extra_selector"`

	StateFor             string `yaml:"state_for"`
	ErrorSeconds         int    `yaml:"error_seconds"`
	HostErrorsMinServers int    `yaml:"host_errors_min_servers"`
	BuildSeconds         int    `yaml:"build_seconds"`
	TaskStateSeconds     int    `yaml:"task_state_seconds"`
	// TaskStateSecondsByTask overrides TaskStateSeconds per task state;
	// an override file adds to these tasks or changes them.
	TaskStateSecondsByTask map[string]int `yaml:"task_state_seconds_by_task"`
	ResizeConfirmSeconds   int            `yaml:"resize_confirm_seconds"`
	PowerMismatchSeconds   int            `yaml:"power_mismatch_seconds"`
	PausedSeconds          int            `yaml:"paused_seconds"`

	ICMPHistoryWindow       string  `yaml:"icmp_history_window"`
	HistoryInterval         string  `yaml:"history_interval"`
	ICMPHoldWindow          string  `yaml:"icmp_hold_window"`
	UnreachableFor          string  `yaml:"unreachable_for"`
	LossThreshold           float64 `yaml:"loss_threshold"`
	LossWindow              string  `yaml:"loss_window"`
	LossFor                 string  `yaml:"loss_for"`
	LatencyThresholdSeconds float64 `yaml:"latency_threshold_seconds"`
	LatencyWindow           string  `yaml:"latency_window"`
	LatencyFor              string  `yaml:"latency_for"`
	RTTNativeHistogram      bool    `yaml:"rtt_native_histogram"`
	HostUnreachableShare    float64 `yaml:"host_unreachable_share"`
	HostUnreachableMinVMs   int     `yaml:"host_unreachable_min_vms"`
	HostUnreachableFor      string  `yaml:"host_unreachable_for"`
	NamespaceMissingFor     string  `yaml:"namespace_missing_for"`

	PortBindingFailedFor           string  `yaml:"port_binding_failed_for"`
	HostPortBindingsFailedShare    float64 `yaml:"host_port_bindings_failed_share"`
	HostPortBindingsFailedMinPorts int     `yaml:"host_port_bindings_failed_min_ports"`
	HostPortBindingsFailedFor      string  `yaml:"host_port_bindings_failed_for"`
	PortDownUnreachableFor         string  `yaml:"port_down_unreachable_for"`
	PortDownFor                    string  `yaml:"port_down_for"`

	HostDownFor          string `yaml:"host_down_for"`
	HostMaintenanceFor   string `yaml:"host_maintenance_for"`
	HostMaintenanceGrace string `yaml:"host_maintenance_grace"`

	FleetShare         float64 `yaml:"fleet_share"`
	FleetMinHosts      int     `yaml:"fleet_min_hosts"`
	FleetMinExporters  int     `yaml:"fleet_min_exporters"`
	FleetFor           string  `yaml:"fleet_for"`
	FleetKeepFiringFor string  `yaml:"fleet_keep_firing_for"`

	APIDownFor          string `yaml:"api_down_for"`
	StaleIntervals      int    `yaml:"stale_intervals"`
	ProbeOverrunFor     string `yaml:"probe_overrun_for"`
	ProbeStallIntervals int    `yaml:"probe_stall_intervals"`
	ProbeErrorsWindow   string `yaml:"probe_errors_window"`
	ProbeErrorsFor      string `yaml:"probe_errors_for"`
	ClockSkewSeconds    int    `yaml:"clock_skew_seconds"`
	ClockSkewFor        string `yaml:"clock_skew_for"`
	HostUnknownFor      string `yaml:"host_unknown_for"`
	ExporterDownFor     string `yaml:"exporter_down_for"`

	// Nova's own signals.
	StoppedByNovaFor               string `yaml:"stopped_by_nova_for"`
	HostStoppedByNovaMinVMs        int    `yaml:"host_stopped_by_nova_min_vms"`
	HostStoppedByNovaSpreadSeconds int    `yaml:"host_stopped_by_nova_spread_seconds"`
	HostStoppedByNovaFor           string `yaml:"host_stopped_by_nova_for"`
	HostAutoDisabledFor            string `yaml:"host_auto_disabled_for"`
	MigrationFailedFor             string `yaml:"migration_failed_for"`
	MigrationRunningSeconds        int    `yaml:"migration_running_seconds"`
}

// TaskThreshold is one task state's StuckInTaskState threshold.
type TaskThreshold struct {
	Task    string
	Seconds int
}

// TaskStates lists TaskStateSecondsByTask sorted by task, for the template.
func (p Params) TaskStates() []TaskThreshold {
	out := make([]TaskThreshold, 0, len(p.TaskStateSecondsByTask))
	for task, sec := range p.TaskStateSecondsByTask {
		out = append(out, TaskThreshold{task, sec})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Task < out[j].Task })
	return out
}

// DefaultParams returns the values of params.yaml.
func DefaultParams() Params {
	var p Params
	if err := decodeStrict(defaultParams, &p); err != nil {
		panic("alerts: params.yaml: " + err.Error())
	}
	return p
}

// LoadParams reads a file of overrides: the keys it names replace the
// defaults; an unknown key is an error.
func LoadParams(path string) (Params, error) {
	p := DefaultParams()
	b, err := os.ReadFile(path)
	if err != nil {
		return p, err
	}
	if err := decodeStrict(b, &p); err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Render writes the rule file for these parameters.
func Render(p Params) ([]byte, error) {
	t, err := template.New("rules").Delims("[[", "]]").Funcs(template.FuncMap{
		"inState": func(p Params, sel string) any {
			return struct {
				P   Params
				Sel string
			}{p, sel}
		},
		"keepFiring": func(p Params, alert, record string) any {
			return struct {
				P             Params
				Alert, Record string
			}{p, alert, record}
		},
		// window writes a range selector: "[[[" would not lex.
		"window": func(d string) string { return "[" + d + "]" },
	}).Parse(rulesTemplate)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Group is a rule group.
type Group struct {
	Name string `yaml:"name"`
	// Interval is the group's own evaluation interval, if it has one.
	Interval string `yaml:"interval,omitempty"`
	Rules    []Rule `yaml:"rules"`
}

// Rule is a recording rule (Record set) or an alerting rule (Alert set).
type Rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// Rules renders and parses the rules.
func Rules(p Params) ([]Group, error) {
	b, err := Render(p)
	if err != nil {
		return nil, err
	}
	var f struct {
		Groups []Group `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	for gi := range f.Groups {
		for ri := range f.Groups[gi].Rules {
			r := &f.Groups[gi].Rules[ri]
			r.Expr = strings.TrimSpace(r.Expr)
		}
	}
	return f.Groups, nil
}

// PrometheusRule wraps the rules in a Prometheus Operator PrometheusRule
// manifest, for Kubernetes deployments (deploy/kubernetes/prometheusrule.yaml).
func PrometheusRule(p Params) ([]byte, error) {
	groups, err := Rules(p)
	if err != nil {
		return nil, err
	}
	manifest := map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata": map[string]any{
			"name":      "openstack-vm-exporter",
			"namespace": "openstack",
			"labels":    map[string]string{"app.kubernetes.io/name": "openstack-vm-exporter"},
		},
		"spec": map[string]any{"groups": groups},
	}
	var b bytes.Buffer
	b.WriteString("# Generated by `go generate ./alerts` from alerts/rules.yml.tmpl and alerts/params.yaml; do not edit.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(manifest); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// HistoryRecordings are the recording rules that need Prometheus's history
// ("answered ICMP before"), with what the one-shot report, which has one
// snapshot and no history, uses instead: every address it probed counts as
// one that answered before, from the vantage that probed it. The findings of every alert that reads such a
// recording are therefore unconfirmed: the report lists them apart ("does
// not answer ping now; whether it answered before cannot be told"), never
// as critical, because a server whose security group drops ICMP (Nova's
// default group does) looks the same in one snapshot.
var HistoryRecordings = map[string]string{
	"openstack_vm_address:icmp_answered:history": "openstack_vm_icmp_up * 0 + 1",
}
