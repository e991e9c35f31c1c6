package exporter

import (
	"slices"
	"strings"
	"testing"
)

// TestFamiliesText checks what the text writer takes from the table as it
// is: help texts that need no escaping, distinct names, label names in the
// order the collectors pass their values.
func TestFamiliesText(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range allFamilies {
		if seen[f.name] {
			t.Errorf("%s is described twice", f.name)
		}
		seen[f.name] = true
		if strings.ContainsAny(f.help, "\\\n") {
			t.Errorf("%s: the help text needs escaping, which the text writer does not do", f.name)
		}
		if f.typ != gauge && f.typ != counter && f.typ != histogram {
			t.Errorf("%s: type %q", f.name, f.typ)
		}
	}
	for _, f := range []*family{icmpUpFam, icmpSentFam, icmpReceivedFam, rttFam} {
		if !slices.Equal(f.labels, targetLabels) {
			t.Errorf("%s has labels %v; the probe loop renders %v for every per-address family", f.name, f.labels, targetLabels)
		}
	}
	if got := string(infoFam.textLabels("i", "n", "p", "h", "az", "f", `im"g`)); got !=
		`availability_zone="az",flavor="f",host="h",id="i",image_id="im\"g",name="n",project_id="p"` {
		t.Errorf("labels rendered as %s", got)
	}
}
