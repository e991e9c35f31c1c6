package exporter

import "testing"

// promtoolCheckMetrics checks an exposition with Debian's promtool in the
// lab tier (promtool_lab_test.go sets it); without Debian's packages only
// the in-process linter (lintMetrics) runs. A variable, not a function
// defined twice under lab and !lab: then every file builds under the lab
// tag, and one go vet run sees them all (scripts/side-checks.sh).
var promtoolCheckMetrics = func(*testing.T, string) {}
