//go:build lab

package exporter

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
)

func init() { promtoolCheckMetrics = promtoolCheckMetricsReal }

// promtoolCheckMetricsReal runs the real promtool over the exposition.
func promtoolCheckMetricsReal(t *testing.T, text string) {
	t.Helper()
	cmd := exec.Command(testenv.Tool(t, "promtool", "prometheus"), "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
