package targets

import (
	"net/netip"
	"slices"
)

// Probe is one echo target of a cycle: an address in a namespace ("" for
// the host vantage).
type Probe struct {
	Namespace string
	Addr      netip.Addr
}

// Plan is what one cycle probes: each (vantage, address) once, however many
// of a server's addresses share it.
type Plan struct {
	Probes []Probe
	Index  map[Probe]int
	// Targets are those reported, in selection order.
	Targets []Target
	// Ambiguous holds the (vantage, address) pairs that distinct servers
	// have, with the ids of those servers, sorted.
	Ambiguous map[Probe][]string
}

// ProbeOf is the probe that measures t.
func ProbeOf(t *Target) Probe { return Probe{Namespace: t.Namespace, Addr: t.Addr} }

// PlanCycle leaves out every address that more than one server has within
// one vantage (overlapping networks seen from the host, a floating IP in
// transit): a reply proves nothing about which of them answered. The same
// address in two namespaces (two tenant networks with the same CIDR) is two
// probes. An address a server lists twice is probed once and reported for
// each.
func PlanCycle(targets []Target) Plan {
	owner := make(map[Probe]string, len(targets))
	var ambiguous map[Probe][]string
	for i := range targets {
		t := &targets[i]
		k := ProbeOf(t)
		id, ok := owner[k]
		switch {
		case !ok:
			owner[k] = t.ServerID
		case id != t.ServerID:
			if ambiguous == nil {
				ambiguous = map[Probe][]string{}
			}
			ids := ambiguous[k]
			if ids == nil {
				ids = []string{id}
			}
			if !slices.Contains(ids, t.ServerID) {
				ids = append(ids, t.ServerID)
			}
			ambiguous[k] = ids
		}
	}
	plan := Plan{
		Probes:    make([]Probe, 0, len(owner)-len(ambiguous)),
		Index:     make(map[Probe]int, len(owner)-len(ambiguous)),
		Targets:   make([]Target, 0, len(targets)),
		Ambiguous: ambiguous,
	}
	for _, ids := range ambiguous {
		slices.Sort(ids)
	}
	for i := range targets {
		t := &targets[i]
		k := ProbeOf(t)
		if _, ok := ambiguous[k]; ok {
			continue
		}
		plan.Targets = append(plan.Targets, *t)
		if _, ok := plan.Index[k]; !ok {
			plan.Index[k] = len(plan.Probes)
			plan.Probes = append(plan.Probes, k)
		}
	}
	return plan
}
