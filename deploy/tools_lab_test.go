//go:build lab

package deploy

// The deployment files checked by Debian's own tools: systemd-analyze and
// promtool.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
	"sigs.k8s.io/yaml"
)

func TestSystemdUnit(t *testing.T) {
	analyze := testenv.Tool(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile("systemd/openstack-vm-exporter.service")
	if err != nil {
		t.Fatal(err)
	}
	// CAP_NET_RAW for raw sockets, CAP_SYS_ADMIN and the net namespace
	// type allowed by RestrictNamespaces for setns() into the Neutron
	// namespaces.
	for _, want := range []string{"DynamicUser=yes", "AmbientCapabilities=CAP_NET_RAW CAP_SYS_ADMIN\n",
		"CapabilityBoundingSet=CAP_NET_RAW CAP_SYS_ADMIN\n", "RestrictNamespaces=net\n",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "Restart=on-failure", "ExecReload=", "EnvironmentFile="} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %s", strings.TrimSpace(want))
		}
	}
	// Settings that would keep the exporter out of the host's namespaces.
	for _, bad := range []string{"PrivateNetwork=yes", "PrivateUsers=yes", "RestrictNamespaces=yes", "PrivateMounts=yes"} {
		if regexp.MustCompile(`(?m)^` + bad + `$`).Match(unit) {
			t.Errorf("unit has %s, which keeps the exporter from probing from the Neutron namespaces", bad)
		}
	}
	bin := binary(t)
	var args []string
	for _, l := range strings.Split(strings.ReplaceAll(string(unit), "\\\n", " "), "\n") {
		if strings.HasPrefix(l, "ExecStart=") {
			args = strings.Fields(strings.TrimPrefix(l, "ExecStart="))
		}
	}
	checkFlags(t, "ExecStart", args, flagsOf(t, bin))
	dir := t.TempDir()
	patched := strings.ReplaceAll(string(unit), "/usr/local/bin/openstack-vm-exporter", bin)
	path := filepath.Join(dir, "openstack-vm-exporter.service")
	if err := os.WriteFile(path, []byte(patched), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestPrometheusScrapeConfig(t *testing.T) {
	promtool := testenv.Tool(t, "promtool", "prometheus")
	b, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := filepath.Abs(filepath.Join(root, "alerts", "openstack-vm-exporter.rules.yml"))
	dir := t.TempDir()
	cfg := strings.ReplaceAll(string(b), "/etc/prometheus/rules/openstack-vm-exporter.rules.yml", rules)
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", path).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check config: %v\n%s", err, out)
	}
	for _, want := range []string{"static_configs", "file_sd_configs", "openstack_sd_configs", "role: hypervisor"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("scrape examples lack %s", want)
		}
	}

	// Every hypervisor's exporter gets a host target label, and keeps the
	// servers' host label (honor_labels) rather than renaming it.
	var parsed struct {
		ScrapeConfigs []struct {
			JobName        string `yaml:"job_name"`
			HonorLabels    bool   `yaml:"honor_labels"`
			FileSD         []any  `yaml:"file_sd_configs"`
			RelabelConfigs []struct {
				TargetLabel string `yaml:"target_label"`
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &parsed); err != nil {
		t.Fatal(err)
	}
	for _, sc := range parsed.ScrapeConfigs {
		if strings.HasSuffix(sc.JobName, "-central") {
			continue
		}
		host := len(sc.FileSD) > 0 // the target files carry it
		for _, r := range sc.RelabelConfigs {
			host = host || r.TargetLabel == "host"
		}
		if !host || !sc.HonorLabels {
			t.Errorf("job %s: host label %v, honor_labels %v; want both", sc.JobName, host, sc.HonorLabels)
		}
	}
	var groups []struct {
		Targets []string          `yaml:"targets"`
		Labels  map[string]string `yaml:"labels"`
	}
	fsd, err := os.ReadFile("prometheus/file_sd.example.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(fsd, &groups); err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if len(g.Targets) != 1 || g.Labels["host"] == "" {
			t.Errorf("file_sd.example.yml: %v: want one target per group, with its host label", g)
		}
	}
}
