package inventory

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/portsecurity"
)

const (
	sgA = "a0e1d2c3-b4a5-4968-8776-5a4b3c2d1e0f"
	sgF = "f0e1d2c3-b4a5-4968-8776-5a4b3c2d1e0f"
	agM = "c0ffee00-0000-4000-8000-000000000001"
)

// groupsBody is a listing of the two groups of the port fixtures, in
// Neutron's shape with fields=id,stateful,security_group_rules: null port
// ranges (any type) beside 0 (echo reply), a protocol given as a number, a
// rule naming an address group, a stateless group.
const groupsBody = `{"security_groups": [
 {"id": "` + sgF + `", "stateful": true, "security_group_rules": [
  {"id": "r1", "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp", "port_range_min": null, "port_range_max": null,
   "remote_ip_prefix": "198.18.7.0/24", "remote_group_id": null, "remote_address_group_id": null},
  {"id": "r2", "direction": "ingress", "ethertype": "IPv4", "protocol": 1, "port_range_min": 0, "port_range_max": null,
   "remote_ip_prefix": null, "remote_group_id": null, "remote_address_group_id": "` + agM + `"},
  {"id": "r3", "direction": "egress", "ethertype": "IPv6", "protocol": null, "port_range_min": null, "port_range_max": null,
   "remote_ip_prefix": null, "remote_group_id": "` + sgF + `", "remote_address_group_id": null}]},
 {"id": "` + sgA + `", "stateful": false, "security_group_rules": []}]}`

const addressGroupsBody = `{"address_groups": [{"id": "` + agM + `", "addresses": ["198.18.7.2/32", "2001:db8::/64", "garbage"]}]}`

// neutronGroups serves the groups' and address groups' listings as the
// test sets them; the ports come from the fixtures.
type neutronGroups struct {
	mu                    sync.Mutex
	groups, addressGroups func() (int, string)
}

func (n *neutronGroups) fault(r *http.Request) (int, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case strings.HasSuffix(r.URL.Path, "/v2.0/security-groups"):
		return n.groups()
	case strings.HasSuffix(r.URL.Path, "/v2.0/address-groups"):
		return n.addressGroups()
	}
	return 0, ""
}

func (n *neutronGroups) set(groups, addressGroups func() (int, string)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.groups, n.addressGroups = groups, addressGroups
}

func answer(code int, body string) func() (int, string) {
	return func() (int, string) { return code, body }
}

// After the ports: one listing of their groups by id with the fields it
// needs, one of the address groups their rules name; each read as Neutron
// gives it (null against 0, numbers, stateless). A failure of either keeps
// the last good, counts under security_groups with its reason, and does
// not fail the refresh.
func TestSecurityGroups(t *testing.T) {
	cloud := startStandin(t)
	groups := &neutronGroups{}
	groups.set(answer(http.StatusOK, groupsBody), answer(http.StatusOK, addressGroupsBody))
	neutron := &fakeNeutron{t: t, pages: []string{"ports_page1.json", "ports_page2.json"}, fault: groups.fault}
	inv := neutronInventory(t, cloud, neutron, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	var sgReqs, agReqs []string
	for _, r := range neutron.requests() {
		switch {
		case strings.HasSuffix(r.URL.Path, "/security-groups"):
			q := r.URL.Query()
			if !slices.Equal(q["id"], []string{sgA, sgF}) || !slices.Equal(q["fields"], securityGroupFields) {
				t.Errorf("groups query %s", r.URL.RawQuery)
			}
			sgReqs = append(sgReqs, r.URL.RawQuery)
		case strings.HasSuffix(r.URL.Path, "/address-groups"):
			q := r.URL.Query()
			if !slices.Equal(q["id"], []string{agM}) || !slices.Equal(q["fields"], []string{"id", "addresses"}) {
				t.Errorf("address groups query %s", r.URL.RawQuery)
			}
			agReqs = append(agReqs, r.URL.RawQuery)
		}
	}
	if len(sgReqs) != 1 || len(agReqs) != 1 {
		t.Fatalf("%d group and %d address group requests, want 1 each; health %+v", len(sgReqs), len(agReqs), inv.Health().SignalErrors)
	}
	snap := inv.Snapshot()
	known := snap.SecurityGroups
	if known == nil || len(known.Groups) != 2 {
		t.Fatalf("groups %+v", known)
	}
	f, a := known.Groups[sgF], known.Groups[sgA]
	if !f.Stateful || a.Stateful || len(f.Rules) != 3 || len(a.Rules) != 0 {
		t.Fatalf("groups %+v %+v", f, a)
	}
	zero := 0
	want := []portsecurity.Rule{
		{Direction: "ingress", EtherType: "IPv4", Protocol: "icmp", RemoteIPPrefix: "198.18.7.0/24"},
		{Direction: "ingress", EtherType: "IPv4", Protocol: "1", PortRangeMin: &zero, RemoteAddressGroupID: agM},
		{Direction: "egress", EtherType: "IPv6", RemoteGroupID: sgF},
	}
	for i, r := range f.Rules {
		w := want[i]
		if fmt.Sprint(r.Direction, r.EtherType, r.Protocol, r.RemoteIPPrefix, r.RemoteGroupID, r.RemoteAddressGroupID) !=
			fmt.Sprint(w.Direction, w.EtherType, w.Protocol, w.RemoteIPPrefix, w.RemoteGroupID, w.RemoteAddressGroupID) ||
			(r.PortRangeMin == nil) != (w.PortRangeMin == nil) || (r.PortRangeMin != nil && *r.PortRangeMin != *w.PortRangeMin) || r.PortRangeMax != nil {
			t.Errorf("rule %d: %+v, want %+v", i, r, w)
		}
	}
	if got := known.AddressGroups[agM]; !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("198.18.7.2/32"), netip.MustParsePrefix("2001:db8::/64")}) {
		t.Errorf("address group %v", got)
	}
	if n := inv.Health().SignalReads[SignalSecurityGroups]; n != 2 {
		t.Errorf("security_groups reads %d, want 2", n)
	}

	// Neutron fails (5xx), then answers garbage: the last good groups stay.
	for _, c := range []struct {
		name, reason string
		groups       func() (int, string)
	}{
		{"5xx", Reason5xx, answer(http.StatusServiceUnavailable, `{"NeutronError": {"message": "down"}}`)},
		{"garbage", ReasonDecode, answer(http.StatusOK, `<html>proxy</html>`)},
		{"no list", ReasonDecode, answer(http.StatusOK, `{"networks": []}`)},
		{"forbidden", ReasonAuth, answer(http.StatusForbidden, `{"NeutronError": {"message": "policy"}}`)},
	} {
		groups.set(c.groups, answer(http.StatusOK, addressGroupsBody))
		before := inv.Health().SignalErrors[SignalKey{SignalSecurityGroups, c.reason}]
		if err := inv.Refresh(ctx); err != nil {
			t.Fatalf("%s: the refresh failed: %v", c.name, err)
		}
		if got := inv.Snapshot().SecurityGroups; got != known {
			t.Errorf("%s: groups not kept: %+v", c.name, got)
		}
		if after := inv.Health().SignalErrors[SignalKey{SignalSecurityGroups, c.reason}]; after != before+1 {
			t.Errorf("%s: errors{%s} %d → %d", c.name, c.reason, before, after)
		}
	}

	// The address groups fail alone: the groups are new, the address
	// groups the last good.
	groups.set(answer(http.StatusOK, strings.Replace(groupsBody, `"stateful": false`, `"stateful": true`, 1)), answer(http.StatusNotFound, `{}`))
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got := inv.Snapshot().SecurityGroups
	if !got.Groups[sgA].Stateful || len(got.AddressGroups[agM]) != 2 {
		t.Errorf("after the address groups failed: %+v", got)
	}
	// Back: everything new.
	groups.set(answer(http.StatusOK, groupsBody), answer(http.StatusOK, `{"address_groups": []}`))
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := inv.Snapshot().SecurityGroups; got.Groups[sgA].Stateful || len(got.AddressGroups) != 0 {
		t.Errorf("after recovery: %+v", got)
	}
}

// More groups than a batch: one request per batch of securityGroupBatch
// ids, each id asked once.
func TestSecurityGroupsBatched(t *testing.T) {
	cloud := startStandin(t)
	var mu sync.Mutex
	var asked [][]string
	neutron := &fakeNeutron{t: t, fault: func(r *http.Request) (int, string) {
		if !strings.HasSuffix(r.URL.Path, "/v2.0/security-groups") {
			return 0, ""
		}
		ids := r.URL.Query()["id"]
		mu.Lock()
		asked = append(asked, ids)
		mu.Unlock()
		var parts []string
		for _, id := range ids {
			parts = append(parts, `{"id": "`+id+`", "stateful": true, "security_group_rules": []}`)
		}
		return http.StatusOK, `{"security_groups": [` + strings.Join(parts, ",") + `]}`
	}}
	inv := neutronInventory(t, cloud, neutron, nil)
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 250 {
		ids = append(ids, fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
	}
	gs, err := inv.client.ListSecurityGroups(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 250 || len(asked) != 3 || len(asked[0]) != securityGroupBatch || len(asked[2]) != 50 {
		t.Errorf("%d groups in %d requests (%d, ...)", len(gs), len(asked), len(asked[0]))
	}
	for _, r := range asked {
		if len(strings.Join(r, "&id=")) > 4000 {
			t.Errorf("a query of %d bytes", len(strings.Join(r, "&id=")))
		}
	}
}
