package exporter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/portsecurity"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

// portsSnapshot is vSnapshot with the ports' states and security groups:
// s1's group admits ICMP from anywhere, s2's only TCP, s3's group is not
// known; s5's port has port security disabled and no group; a port
// without fixed IP of s1, and a port whose server Nova does not list here
// (a failed build bound to this host).
func portsSnapshot() *inventory.Snapshot {
	snap := vSnapshot()
	off := false
	set := func(i int, status, vif string, groups ...string) {
		p := &snap.Ports[i]
		p.Status, p.VIFType, p.HostID, p.SecurityGroups = status, vif, "cmp-1", groups
		on := true
		p.PortSecurityEnabled = &on
	}
	set(0, "ACTIVE", "ovs", "sg-icmp")
	set(1, "DOWN", "ovs", "sg-web")
	set(2, "ACTIVE", "ovs", "sg-hidden")
	snap.Servers = append(snap.Servers, inventory.Server{ID: "s5", Name: "vm-s5", ProjectID: "p1", Host: "cmp-1", Status: "ACTIVE",
		Addresses: []inventory.Address{{Network: "net-a", Addr: netip.MustParseAddr("198.18.7.15"), Raw: "198.18.7.15", Type: "fixed"}}})
	snap.Ports = append(snap.Ports,
		inventory.Port{ID: "port-s5", DeviceID: "s5", DeviceOwner: "compute:nova", NetworkID: vnetA, Status: "ACTIVE", HostID: "cmp-1",
			VIFType: "ovs", PortSecurityEnabled: &off, FixedIPs: []inventory.FixedIP{{SubnetID: "sub", Addr: netip.MustParseAddr("198.18.7.15")}}},
		inventory.Port{ID: "port-s1-noip", DeviceID: "s1", DeviceOwner: "compute:nova", NetworkID: vnetA, Status: "DOWN", HostID: "cmp-1", VIFType: "unbound"},
		inventory.Port{ID: "port-failed", DeviceID: "s9-failed", DeviceOwner: "compute:nova", NetworkID: vnetA, Status: "DOWN", HostID: "cmp-1",
			VIFType: "binding_failed", FixedIPs: []inventory.FixedIP{{SubnetID: "sub", Addr: netip.MustParseAddr("198.18.7.19")}}},
	)
	egress := portsecurity.Rule{Direction: "egress", EtherType: "IPv4"}
	snap.SecurityGroups = &portsecurity.Known{Groups: map[string]*portsecurity.Group{
		"sg-icmp": {ID: "sg-icmp", Stateful: true, Rules: []portsecurity.Rule{{Direction: "ingress", EtherType: "IPv4", Protocol: "icmp"}, egress}},
		"sg-web":  {ID: "sg-web", Stateful: true, Rules: []portsecurity.Rule{{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp"}, egress}},
	}}
	return snap
}

// The per-port families: one series per port with the server's labels
// (the device id alone for a server not listed here), its status and
// vif_type, and its count of fixed IPs.
func TestPortMetrics(t *testing.T) {
	snap := portsSnapshot()
	f := vantageFixture(t, snap)
	f.svc.inv.SetSnapshot(snap)
	text, fams := f.scrape(t)
	lintMetrics(t, text)
	want := map[string][2]string{ // port → labels, fixed IPs
		"port-s1":      {`host=cmp-1 id=s1 name=vm-s1 network_id=` + vnetA + ` port_id=port-s1 project_id=p1 status=ACTIVE vif_type=ovs`, "1"},
		"port-s2":      {`host=cmp-1 id=s2 name=vm-s2 network_id=` + vnetB + ` port_id=port-s2 project_id=p1 status=DOWN vif_type=ovs`, "1"},
		"port-s3":      {`host=cmp-1 id=s3 name=vm-s3 network_id=` + vnetC + ` port_id=port-s3 project_id=p1 status=ACTIVE vif_type=ovs`, "1"},
		"port-s5":      {`host=cmp-1 id=s5 name=vm-s5 network_id=` + vnetA + ` port_id=port-s5 project_id=p1 status=ACTIVE vif_type=ovs`, "1"},
		"port-s1-noip": {`host=cmp-1 id=s1 name=vm-s1 network_id=` + vnetA + ` port_id=port-s1-noip project_id=p1 status=DOWN vif_type=unbound`, "0"},
		"port-failed":  {`host=cmp-1 id=s9-failed name= network_id=` + vnetA + ` port_id=port-failed project_id= status=DOWN vif_type=binding_failed`, "1"},
	}
	status := fams["openstack_vm_port_status"].GetMetric()
	fixed := fams["openstack_vm_port_fixed_ips"].GetMetric()
	if len(status) != len(want) || len(fixed) != len(want) {
		t.Fatalf("%d status and %d fixed_ips series, want %d each:\n%s", len(status), len(fixed), len(want), text)
	}
	for _, m := range status {
		l := metricLabels(m)
		if got := labelString(l); got != want[l["port_id"]][0] || m.GetGauge().GetValue() != 1 {
			t.Errorf("port status %s = %v\nwant %s", got, m.GetGauge().GetValue(), want[l["port_id"]][0])
		}
	}
	for _, m := range fixed {
		l := metricLabels(m)
		w := want[l["port_id"]]
		l["status"], l["vif_type"] = "", ""
		if got := labelString(l); !strings.HasPrefix(w[0], strings.Fields(got)[0]) || model.SampleValue(m.GetGauge().GetValue()).String() != w[1] {
			t.Errorf("fixed IPs of %s: %v, want %s", l["port_id"], m.GetGauge().GetValue(), w[1])
		}
		if _, ok := l["network_id"]; !ok || len(m.GetLabel()) != 6 {
			t.Errorf("fixed IPs labels %v", m.GetLabel())
		}
	}
}

func labelString(l map[string]string) string {
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// openstack_vm_icmp_expected, per address and vantage with the labels of
// openstack_vm_icmp_up: 1 where the port's groups admit ICMP from the
// namespace's address, or port security is off; 0 where they do not;
// absent where a group is not known, for a floating address (no port),
// and where no series exists (unprobed addresses). Both exposition paths
// agree.
func TestICMPExpected(t *testing.T) {
	snap := portsSnapshot()
	f := vantageFixture(t, snap)
	f.svc.inv.SetSnapshot(snap)
	f.svc.loop.namespaces = func(string) targets.Namespaces {
		return fakeNS{targets.PrefixOVNMetadata + vnetA: "198.18.7.2/24", targets.PrefixOVNMetadata + vnetB: "198.18.7.2/24",
			targets.PrefixOVNMetadata + vnetC: "198.18.9.2/24"}
	}
	f.svc.loop.Cycle(context.Background())
	text, fams := f.scrape(t)
	lintMetrics(t, text)
	exp := fams["openstack_vm_icmp_expected"].GetMetric()
	got := map[string]float64{}
	for _, m := range exp {
		l := metricLabels(m)
		if len(l) != len(targetLabels) {
			t.Errorf("labels %v", l)
		}
		if len(find(fams, "openstack_vm_icmp_up", l)) != 1 {
			t.Errorf("icmp_expected %v without its icmp_up series", l)
		}
		got[l["id"]+" "+l["address"]+" "+l["vantage"]] = m.GetGauge().GetValue()
	}
	want := map[string]float64{
		"s1 198.18.7.11 " + targets.PrefixOVNMetadata + vnetA: 1,
		"s2 198.18.7.11 " + targets.PrefixOVNMetadata + vnetB: 0,
		"s5 198.18.7.15 " + targets.PrefixOVNMetadata + vnetA: 1,
	}
	if len(got) != len(want) {
		t.Errorf("icmp_expected %v, want %v", got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: %v (present %v), want %v", k, g, ok, v)
		}
	}
	// The metadata namespace's address is outside the prefix a rule
	// admits: 0; inside: 1.
	prefix := func(p string) {
		s := portsSnapshot()
		s.SecurityGroups.Groups["sg-icmp"].Rules[0].RemoteIPPrefix = p
		f.svc.loop.inv = func() *inventory.Snapshot { return s }
		f.svc.loop.Cycle(context.Background())
	}
	for p, v := range map[string]float64{"198.18.7.0/28": 1, "198.18.7.128/25": 0} {
		prefix(p)
		_, fams = f.scrape(t)
		if g, ok := vvalue(fams, "openstack_vm_icmp_expected", map[string]string{"id": "s1", "address": "198.18.7.11"}); !ok || g != v {
			t.Errorf("rule from %s: %v (present %v), want %v", p, g, ok, v)
		}
	}
	// Before the groups are read: absent but where port security is off.
	s := portsSnapshot()
	s.SecurityGroups = nil
	f.svc.loop.inv = func() *inventory.Snapshot { return s }
	f.svc.loop.Cycle(context.Background())
	_, fams = f.scrape(t)
	if m := fams["openstack_vm_icmp_expected"].GetMetric(); len(m) != 1 || metricLabels(m[0])["id"] != "s5" {
		t.Errorf("groups unknown: %v", m)
	}
}

// Both exposition paths agree on the per-port and expected families.
func TestPortFamiliesBothPaths(t *testing.T) {
	snap := portsSnapshot()
	f := vantageFixture(t, snap)
	f.svc.inv.SetSnapshot(snap)
	f.svc.loop.namespaces = func(string) targets.Namespaces {
		return fakeNS{targets.PrefixOVNMetadata + vnetA: "198.18.7.2/24", targets.PrefixOVNMetadata + vnetB: "198.18.7.2/24"}
	}
	f.svc.loop.Cycle(context.Background())
	parse := func(h http.Handler) map[string]string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, name := range []string{"openstack_vm_port_status", "openstack_vm_port_fixed_ips", "openstack_vm_icmp_expected"} {
			var ms []string
			for _, m := range fams[name].GetMetric() {
				ms = append(ms, m.String())
			}
			sort.Strings(ms)
			out[name] = strings.Join(ms, "\n")
			if len(ms) == 0 {
				t.Errorf("%s: no series", name)
			}
		}
		return out
	}
	fast := parse(f.svc.Handler(promhttp.HandlerOpts{}))
	generic := parse(promhttp.HandlerFor(f.svc.Gatherer(), promhttp.HandlerOpts{}))
	for name := range fast {
		if fast[name] != generic[name] {
			t.Errorf("%s differs:\ntext writer: %s\ngeneric:     %s", name, fast[name], generic[name])
		}
	}
}

// From the host vantage the source is the address the exporter's network
// namespace routes from toward the VM's address (a loopback address here,
// so that the route is known on any machine: 127.0.0.1): a rule admitting
// 127.0.0.0/8 says 1, one admitting only 198.18.0.0/15 says 0.
func TestICMPExpectedHostVantage(t *testing.T) {
	for prefix, want := range map[string]float64{"127.0.0.0/8": 1, "198.18.0.0/15": 0} {
		on := true
		snap := &inventory.Snapshot{
			Servers: []inventory.Server{{ID: "s1", Name: "vm-s1", ProjectID: "p1", Host: "cmp-1", Status: "ACTIVE",
				Addresses: []inventory.Address{{Network: "provider", Addr: netip.MustParseAddr("127.0.0.5"), Raw: "127.0.0.5", Type: "fixed"}}}},
			Ports: []inventory.Port{{ID: "port-s1", DeviceID: "s1", DeviceOwner: "compute:nova", NetworkID: vnetA, Status: "ACTIVE",
				PortSecurityEnabled: &on, SecurityGroups: []string{"sg"},
				FixedIPs: []inventory.FixedIP{{SubnetID: "sub", Addr: netip.MustParseAddr("127.0.0.5")}}}},
			PortsRead: true,
			SecurityGroups: &portsecurity.Known{Groups: map[string]*portsecurity.Group{"sg": {ID: "sg", Stateful: true, Rules: []portsecurity.Rule{
				{Direction: "ingress", EtherType: "IPv4", Protocol: "icmp", RemoteIPPrefix: prefix}}}}},
		}
		f := vantageFixture(t, snap)
		f.svc.loop.Cycle(context.Background())
		_, fams := f.scrape(t)
		if v, ok := vvalue(fams, "openstack_vm_icmp_expected", map[string]string{"id": "s1", "vantage": "host", "network_id": vnetA}); !ok || v != want {
			t.Errorf("rule from %s: %v (present %v), want %v", prefix, v, ok, want)
		}
	}
}
