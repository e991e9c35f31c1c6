//go:build !lab

package exporter

import "testing"

// promtoolCheckMetrics is the lab tier's run of the real promtool; without
// Debian's packages only the in-process linter (lintMetrics) runs.
func promtoolCheckMetrics(*testing.T, string) {}
