package alerts

import (
	"sort"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// bothDialects are the PromQL functions the rules may use: each is in
// Prometheus 2.42 and in the MetricsQL of VictoriaMetrics 1.79 (vmalert),
// with the same meaning for the way the rules use it. vmalert -dryRun
// accepts any function name; an unknown one fails only when evaluated, at
// every evaluation, so the lab test (dialect_lab_test.go) evaluates every
// rule against a real VictoriaMetrics. Notably absent: histogram_sum and
// histogram_count (native histograms; rtt_native_histogram).
var bothDialects = map[string]bool{
	"time": true, "rate": true, "increase": true, "max_over_time": true,
	"last_over_time": true, "absent": true, "abs": true, "label_replace": true,
	"vector": true,
	// The timestamp of the sample, not of the evaluation, in both: checked
	// against victoria-metrics 1.79 with a sample imported 100 s in the past.
	"timestamp": true,
}

// ruleFunctions lists the functions each rule's expression calls.
func ruleFunctions(t *testing.T, p Params) map[string][]string {
	t.Helper()
	groups, err := Rules(p)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, g := range groups {
		for _, r := range g.Rules {
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s%s: %v", r.Alert, r.Record, err)
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if c, ok := n.(*parser.Call); ok {
					out[c.Func.Name] = append(out[c.Func.Name], r.Alert+r.Record)
				}
				return nil
			})
		}
	}
	return out
}

// The default rules call only functions both dialects have.
func TestRulesUseFunctionsOfBothDialects(t *testing.T) {
	used := ruleFunctions(t, DefaultParams())
	var names []string
	for name := range used {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !bothDialects[name] {
			t.Errorf("%s (in %v) is not known to be in both Prometheus 2.42 and vmalert 1.79's MetricsQL: check it with the lab test and add it to bothDialects, or avoid it", name, used[name])
		}
	}
	// The opt-in native half is the one exception, and stays opt-in.
	p := DefaultParams()
	p.RTTNativeHistogram = true
	if native := ruleFunctions(t, p); len(native["histogram_sum"]) == 0 || len(native["histogram_count"]) == 0 {
		t.Error("rtt_native_histogram: true does not add the native histogram half of OpenStackVMHighLatency")
	}
}
