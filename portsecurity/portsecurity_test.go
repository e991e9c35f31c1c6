package portsecurity

import (
	"net/netip"
	"testing"
)

func ptr[T any](v T) *T { return &v }

// Sources: the OVN metadata port's address, outside and inside prefixes.
var (
	src4 = netip.MustParseAddr("198.18.7.2")
	src6 = netip.MustParseAddr("2001:db8::2")
)

func ingress4(proto string) Rule {
	return Rule{Direction: "ingress", EtherType: "IPv4", Protocol: proto}
}
func ingress6(proto string) Rule {
	return Rule{Direction: "ingress", EtherType: "IPv6", Protocol: proto}
}
func egress4(proto string) Rule { return Rule{Direction: "egress", EtherType: "IPv4", Protocol: proto} }
func egress6(proto string) Rule { return Rule{Direction: "egress", EtherType: "IPv6", Protocol: proto} }

func with(r Rule, f func(*Rule)) Rule { f(&r); return r }

func typeCode(t, c *int) func(*Rule) {
	return func(r *Rule) { r.PortRangeMin, r.PortRangeMax = t, c }
}

// neutronDefault is the rules Neutron gives a new group: egress anywhere,
// both families.
var neutronDefault = []Rule{egress4(""), egress6("")}

// The default security group also admits its own members, nothing else.
var defaultGroup = append([]Rule{
	with(ingress4(""), func(r *Rule) { r.RemoteGroupID = "sg-default" }),
	with(ingress6(""), func(r *Rule) { r.RemoteGroupID = "sg-default" }),
}, neutronDefault...)

func TestEchoAdmittedOneStatefulGroup(t *testing.T) {
	cases := []struct {
		name  string
		rules []Rule
		src   netip.Addr
		want  Verdict
	}{
		{"no rule", nil, src4, Denied},
		{"egress only (a new group)", neutronDefault, src4, Denied},
		{"default group: remote group only", defaultGroup, src4, Denied},
		{"any protocol from anywhere", []Rule{ingress4("")}, src4, Admitted},
		{"any protocol, spelled any", []Rule{ingress4("any")}, src4, Admitted},
		{"icmp from anywhere", []Rule{ingress4("icmp")}, src4, Admitted},
		{"ICMP in capitals", []Rule{ingress4("ICMP")}, src4, Admitted},
		{"protocol 1", []Rule{ingress4("1")}, src4, Admitted},
		{"protocol 01", []Rule{ingress4("01")}, src4, Admitted},
		{"tcp only", []Rule{ingress4("tcp")}, src4, Denied},
		{"udp only", []Rule{ingress4("udp")}, src4, Denied},
		{"protocol 6", []Rule{ingress4("6")}, src4, Denied},
		{"protocol 0 is not any", []Rule{ingress4("0")}, src4, Denied},
		{"icmp IPv4 rule, IPv6 source", []Rule{ingress4("icmp")}, src6, Denied},
		{"any protocol IPv4 rule, IPv6 source", []Rule{ingress4("")}, src6, Denied},
		{"icmp IPv6 rule, IPv4 source", []Rule{ingress6("ipv6-icmp")}, src4, Denied},
		{"ipv6-icmp, IPv6 source", []Rule{ingress6("ipv6-icmp")}, src6, Admitted},
		{"icmpv6 (legacy), IPv6 source", []Rule{ingress6("icmpv6")}, src6, Admitted},
		{"icmp with ethertype IPv6", []Rule{ingress6("icmp")}, src6, Admitted},
		{"protocol 58", []Rule{ingress6("58")}, src6, Admitted},
		{"protocol 1 with ethertype IPv6", []Rule{ingress6("1")}, src6, Admitted},
		{"any protocol IPv6", []Rule{ingress6("")}, src6, Admitted},
		{"ethertype in lower case", []Rule{{Direction: "ingress", EtherType: "ipv4", Protocol: "icmp"}}, src4, Admitted},
		{"egress rule does not admit", []Rule{egress4("icmp")}, src4, Denied},
		{"unknown direction", []Rule{{Direction: "both", EtherType: "IPv4"}}, src4, Denied},

		{"type 8 any code", []Rule{with(ingress4("icmp"), typeCode(ptr(8), nil))}, src4, Admitted},
		{"type 8 code 0", []Rule{with(ingress4("icmp"), typeCode(ptr(8), ptr(0)))}, src4, Admitted},
		{"type 8 code 1", []Rule{with(ingress4("icmp"), typeCode(ptr(8), ptr(1)))}, src4, Denied},
		{"type 0 (echo reply) only", []Rule{with(ingress4("icmp"), typeCode(ptr(0), nil))}, src4, Denied},
		{"type 3 only", []Rule{with(ingress4("icmp"), typeCode(ptr(3), ptr(0)))}, src4, Denied},
		{"type 128 is IPv6's, not IPv4's", []Rule{with(ingress4("icmp"), typeCode(ptr(128), nil))}, src4, Denied},
		{"IPv6 type 128", []Rule{with(ingress6("ipv6-icmp"), typeCode(ptr(128), nil))}, src6, Admitted},
		{"IPv6 type 128 code 0", []Rule{with(ingress6("ipv6-icmp"), typeCode(ptr(128), ptr(0)))}, src6, Admitted},
		{"IPv6 type 8 is IPv4's", []Rule{with(ingress6("ipv6-icmp"), typeCode(ptr(8), nil))}, src6, Denied},
		{"IPv6 type 135 (neighbour solicitation)", []Rule{with(ingress6("ipv6-icmp"), typeCode(ptr(135), nil))}, src6, Denied},

		{"prefix containing the source", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "198.18.7.0/24" })}, src4, Admitted},
		{"0.0.0.0/0", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "0.0.0.0/0" })}, src4, Admitted},
		{"host prefix of the source", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "198.18.7.2/32" })}, src4, Admitted},
		{"bare address of the source", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "198.18.7.2" })}, src4, Admitted},
		{"unmasked prefix", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "198.18.7.99/24" })}, src4, Admitted},
		{"prefix not containing the source", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "198.18.8.0/24" })}, src4, Denied},
		{"another host", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "198.18.7.3/32" })}, src4, Denied},
		{"IPv6 prefix containing the source", []Rule{with(ingress6("ipv6-icmp"), func(r *Rule) { r.RemoteIPPrefix = "2001:db8::/64" })}, src6, Admitted},
		{"::/0", []Rule{with(ingress6(""), func(r *Rule) { r.RemoteIPPrefix = "::/0" })}, src6, Admitted},
		{"IPv6 prefix not containing the source", []Rule{with(ingress6("ipv6-icmp"), func(r *Rule) { r.RemoteIPPrefix = "2001:db9::/64" })}, src6, Denied},
		{"unreadable prefix", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "not-a-prefix" })}, src4, Unknown},
		{"unreadable prefix, another rule admits", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "x" }), ingress4("")}, src4, Admitted},
		{"remote group never holds the source", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteGroupID = "sg-web" })}, src4, Denied},
		{"remote group of itself", []Rule{with(ingress4(""), func(r *Rule) { r.RemoteGroupID = "sg-1" })}, src4, Denied},

		{"address group holding the source", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteAddressGroupID = "ag-meta" })}, src4, Admitted},
		{"address group not holding it", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteAddressGroupID = "ag-other" })}, src4, Denied},
		{"empty address group", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteAddressGroupID = "ag-empty" })}, src4, Denied},
		{"address group not known", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteAddressGroupID = "ag-unknown" })}, src4, Unknown},
		{"address group not known, but tcp", []Rule{with(ingress4("tcp"), func(r *Rule) { r.RemoteAddressGroupID = "ag-unknown" })}, src4, Denied},
		{"address group not known, another rule admits", []Rule{with(ingress4("icmp"), func(r *Rule) { r.RemoteAddressGroupID = "ag-unknown" }), ingress4("icmp")}, src4, Admitted},
		{"IPv6 address group", []Rule{with(ingress6(""), func(r *Rule) { r.RemoteAddressGroupID = "ag-meta" })}, src6, Admitted},
	}
	known := func(rules []Rule) *Known {
		return &Known{
			Groups: map[string]*Group{"sg-1": {ID: "sg-1", Stateful: true, Rules: rules}},
			AddressGroups: map[string][]netip.Prefix{
				"ag-meta":  {netip.MustParsePrefix("198.18.7.2/32"), netip.MustParsePrefix("2001:db8::/120")},
				"ag-other": {netip.MustParsePrefix("198.18.9.0/24"), netip.MustParsePrefix("2001:db9::/64")},
				"ag-empty": nil,
			},
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, enabled := range []*bool{ptr(true), nil} {
				if got := EchoAdmitted(enabled, []string{"sg-1"}, known(c.rules), c.src); got != c.want {
					t.Errorf("port security %v: %v, want %v", enabled, got, c.want)
				}
			}
			// Port security off admits whatever the groups say.
			if got := EchoAdmitted(ptr(false), []string{"sg-1"}, known(c.rules), c.src); got != Admitted {
				t.Errorf("port security disabled: %v, want admitted", got)
			}
		})
	}
}

func TestEchoAdmittedPorts(t *testing.T) {
	allowICMP := &Group{ID: "sg-icmp", Stateful: true, Rules: append([]Rule{ingress4("icmp")}, neutronDefault...)}
	web := &Group{ID: "sg-web", Stateful: true, Rules: append([]Rule{with(ingress4("tcp"), typeCode(ptr(80), ptr(80)))}, neutronDefault...)}
	def := &Group{ID: "sg-default", Stateful: true, Rules: defaultGroup}
	// Stateless groups: with and without an egress rule for the reply.
	slIn := &Group{ID: "sl-in", Rules: []Rule{ingress4("icmp"), ingress6("ipv6-icmp")}}
	slBoth := &Group{ID: "sl-both", Rules: []Rule{ingress4("icmp"), egress4("icmp")}}
	slOut := &Group{ID: "sl-out", Rules: []Rule{egress4("")}}
	slReply := &Group{ID: "sl-reply", Rules: []Rule{
		with(ingress4("icmp"), typeCode(ptr(8), nil)), with(egress4("icmp"), typeCode(ptr(0), ptr(0))),
		with(ingress6("ipv6-icmp"), typeCode(ptr(128), nil)), with(egress6("ipv6-icmp"), typeCode(ptr(129), nil)),
	}}
	slWrongReply := &Group{ID: "sl-wrong", Rules: []Rule{
		with(ingress4("icmp"), typeCode(ptr(8), nil)), with(egress4("icmp"), typeCode(ptr(8), nil)),
	}}
	slReplyElsewhere := &Group{ID: "sl-elsewhere", Rules: []Rule{
		ingress4("icmp"), with(egress4("icmp"), func(r *Rule) { r.RemoteIPPrefix = "198.18.9.0/24" }),
	}}
	slReplyPrefix := &Group{ID: "sl-prefix", Rules: []Rule{
		ingress4("icmp"), with(egress4(""), func(r *Rule) { r.RemoteIPPrefix = "198.18.7.0/24" }),
	}}
	slReplyGroup := &Group{ID: "sl-rg", Rules: []Rule{
		ingress4("icmp"), with(egress4(""), func(r *Rule) { r.RemoteGroupID = "sl-rg" }),
	}}
	slReplyAG := &Group{ID: "sl-ag", Rules: []Rule{
		ingress4("icmp"), with(egress4(""), func(r *Rule) { r.RemoteAddressGroupID = "ag-unknown" }),
	}}
	slTCP := &Group{ID: "sl-tcp", Rules: []Rule{ingress4("tcp"), egress4("")}}
	known := &Known{Groups: map[string]*Group{}}
	for _, g := range []*Group{allowICMP, web, def, slIn, slBoth, slOut, slReply, slWrongReply, slReplyElsewhere, slReplyPrefix, slReplyGroup, slReplyAG, slTCP} {
		known.Groups[g.ID] = g
	}
	cases := []struct {
		name    string
		enabled *bool
		groups  []string
		known   *Known
		src     netip.Addr
		want    Verdict
	}{
		{"port security disabled, no group", ptr(false), nil, known, src4, Admitted},
		{"port security disabled, groups unknown", ptr(false), []string{"nope"}, nil, src4, Admitted},
		{"port security disabled, no source known", ptr(false), nil, nil, netip.Addr{}, Admitted},
		{"port security on, no group: dropped", ptr(true), nil, known, src4, Denied},
		{"port security not said, no group", nil, nil, known, src4, Denied},
		{"default group only", ptr(true), []string{"sg-default"}, known, src4, Denied},
		{"default and icmp", ptr(true), []string{"sg-default", "sg-icmp"}, known, src4, Admitted},
		{"web only", ptr(true), []string{"sg-web"}, known, src4, Denied},
		{"web and an unknown group", ptr(true), []string{"sg-web", "sg-gone"}, known, src4, Unknown},
		{"icmp and an unknown group", ptr(true), []string{"sg-gone", "sg-icmp"}, known, src4, Admitted},
		{"nothing known", ptr(true), []string{"sg-icmp"}, nil, src4, Unknown},
		{"no source address", ptr(true), []string{"sg-icmp"}, known, netip.Addr{}, Unknown},
		{"IPv4-mapped source", ptr(true), []string{"sg-icmp"}, known, netip.MustParseAddr("::ffff:198.18.7.2"), Admitted},
		{"icmp group, IPv6 source", ptr(true), []string{"sg-icmp"}, known, src6, Denied},

		{"stateless ingress, no egress rule", ptr(true), []string{"sl-in"}, known, src4, Denied},
		{"stateless ingress and egress icmp", ptr(true), []string{"sl-both"}, known, src4, Admitted},
		{"stateless ingress, egress in another stateless group", ptr(true), []string{"sl-in", "sl-out"}, known, src4, Admitted},
		{"stateless egress only", ptr(true), []string{"sl-out"}, known, src4, Denied},
		{"stateless, echo reply type and code", ptr(true), []string{"sl-reply"}, known, src4, Admitted},
		{"stateless IPv6, echo reply type 129", ptr(true), []string{"sl-reply"}, known, src6, Admitted},
		{"stateless IPv6 without IPv6 egress", ptr(true), []string{"sl-in", "sl-out"}, known, src6, Denied},
		{"stateless, egress of the request type", ptr(true), []string{"sl-wrong"}, known, src4, Denied},
		{"stateless, egress to another prefix", ptr(true), []string{"sl-elsewhere"}, known, src4, Denied},
		{"stateless, egress to the source's prefix", ptr(true), []string{"sl-prefix"}, known, src4, Admitted},
		{"stateless, egress to a remote group", ptr(true), []string{"sl-rg"}, known, src4, Denied},
		{"stateless, egress to an unknown address group", ptr(true), []string{"sl-ag"}, known, src4, Unknown},
		{"stateless, egress in an unknown group", ptr(true), []string{"sl-in", "sg-gone"}, known, src4, Unknown},
		{"stateless tcp, unknown group", ptr(true), []string{"sl-tcp", "sg-gone"}, known, src4, Unknown},
		{"stateless tcp only", ptr(true), []string{"sl-tcp"}, known, src4, Denied},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := EchoAdmitted(c.enabled, c.groups, c.known, c.src); got != c.want {
				t.Errorf("%v, want %v", got, c.want)
			}
		})
	}
}

func TestVerdictLogic(t *testing.T) {
	all := []Verdict{Unknown, Denied, Admitted}
	for _, a := range all {
		for _, b := range all {
			o, n := or(a, b), and(a, b)
			if o != or(b, a) || n != and(b, a) {
				t.Errorf("not commutative: %v %v", a, b)
			}
			wantOr := max(a, b) // Unknown < Denied < Admitted, but Unknown beats Denied
			if (a == Unknown && b != Admitted) || (b == Unknown && a != Admitted) {
				wantOr = Unknown
			}
			if o != wantOr {
				t.Errorf("%v or %v = %v, want %v", a, b, o, wantOr)
			}
			wantAnd := Admitted
			switch {
			case a == Denied || b == Denied:
				wantAnd = Denied
			case a == Unknown || b == Unknown:
				wantAnd = Unknown
			}
			if n != wantAnd {
				t.Errorf("%v and %v = %v, want %v", a, b, n, wantAnd)
			}
		}
		if a.String() == "" {
			t.Error("no name")
		}
	}
}

func TestParsePrefix(t *testing.T) {
	cases := []struct {
		in   string
		want string
		ok   bool
	}{
		{"198.18.0.0/15", "198.18.0.0/15", true},
		{" 198.18.7.9/24 ", "198.18.7.0/24", true},
		{"198.18.7.9", "198.18.7.9/32", true},
		{"2001:db8::1/64", "2001:db8::/64", true},
		{"2001:db8::1", "2001:db8::1/128", true},
		{"::ffff:198.18.7.0/120", "198.18.7.0/24", true},
		{"::ffff:198.18.7.9", "198.18.7.9/32", true},
		{"::ffff:0:0/90", "", false},
		{"", "", false},
		{"198.18.7.0/33", "", false},
		{"fe80::1%eth0", "fe80::1/128", true},
	}
	for _, c := range cases {
		p, ok := ParsePrefix(c.in)
		if ok != c.ok || (ok && p.String() != c.want) {
			t.Errorf("ParsePrefix(%q) = %v %v, want %s %v", c.in, p, ok, c.want, c.ok)
		}
	}
}
