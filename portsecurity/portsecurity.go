// Package portsecurity decides, from a Neutron port's security groups,
// whether the port admits an ICMP echo request from a source address (and,
// for a stateless group, lets the echo reply out). It is pure: the groups
// and address groups are given, nothing is read.
//
// The decision follows what Neutron's OVN driver writes into OVN's ACLs
// (neutron/common/ovn/acl.py): a port with port security disabled is in no
// port group and passes everything; a port with port security enabled is in
// the drop port group, and only its groups' rules let traffic through. A
// rule's protocol any of icmp, ipv6-icmp, icmpv6, 1 or 58 is ICMP of the
// rule's ethertype (Neutron's API stores icmp and 1 with ethertype IPv6 as
// ipv6-icmp and 58; older rules may still carry the legacy names);
// port_range_min is the ICMP type and port_range_max the code, each null for
// any. A rule whose remote is another security group admits only that
// group's ports: the sources the exporter probes from (an OVN metadata port,
// a DHCP port, the hypervisor's own address) are in no group, so such a rule
// never admits them.
package portsecurity

import (
	"net/netip"
	"strconv"
	"strings"
)

// Verdict is a three-valued answer.
type Verdict int8

const (
	// Unknown: a group or address group the decision depends on is not
	// known, or a rule cannot be read.
	Unknown Verdict = iota
	// Denied: the groups known do not admit it.
	Denied
	// Admitted: a rule admits it (or port security is disabled).
	Admitted
)

func (v Verdict) String() string {
	switch v {
	case Admitted:
		return "admitted"
	case Denied:
		return "denied"
	}
	return "unknown"
}

// or is Kleene's disjunction: Admitted wins, then Unknown.
func or(a, b Verdict) Verdict {
	switch {
	case a == Admitted || b == Admitted:
		return Admitted
	case a == Unknown || b == Unknown:
		return Unknown
	}
	return Denied
}

// and is Kleene's conjunction: Denied wins, then Unknown.
func and(a, b Verdict) Verdict {
	switch {
	case a == Denied || b == Denied:
		return Denied
	case a == Unknown || b == Unknown:
		return Unknown
	}
	return Admitted
}

// Rule is a Neutron security group rule, as the API gives it.
type Rule struct {
	// Direction is "ingress" or "egress".
	Direction string
	// EtherType is "IPv4" or "IPv6".
	EtherType string
	// Protocol is a name or a number as text; "" (null) is any.
	Protocol string
	// PortRangeMin and PortRangeMax are, for ICMP, the type and the code;
	// nil (null) is any.
	PortRangeMin, PortRangeMax *int
	// RemoteIPPrefix is a CIDR; "" is no prefix.
	RemoteIPPrefix string
	// RemoteGroupID is a security group whose ports the rule admits.
	RemoteGroupID string
	// RemoteAddressGroupID is an address group whose addresses the rule
	// admits.
	RemoteAddressGroupID string
}

// Group is a security group.
type Group struct {
	ID string
	// Stateful is Neutron's default (true); a stateless group lets a reply
	// out only through an egress rule of its own.
	Stateful bool
	Rules    []Rule
}

// Known is what is known of the groups: those read, by id, and the address
// groups read, by id, as their addresses.
type Known struct {
	Groups        map[string]*Group
	AddressGroups map[string][]netip.Prefix
}

// ICMP types of the echo request and the echo reply.
const (
	echoRequest4, echoReply4 = 8, 0
	echoRequest6, echoReply6 = 128, 129
)

// EchoAdmitted decides whether a port admits an ICMP echo request from src
// and lets its reply back: securityEnabled is the port's
// port_security_enabled (nil: Neutron does not say, the groups decide),
// groups its security group ids.
//
// A stateful group admits the request with one ingress rule (connection
// tracking lets the reply out). A stateless group needs an egress rule for
// the reply too: Neutron refuses ports in both kinds of group, and every
// egress rule of the port's groups applies to the reply.
func EchoAdmitted(securityEnabled *bool, groups []string, known *Known, src netip.Addr) Verdict {
	if securityEnabled != nil && !*securityEnabled {
		return Admitted
	}
	if !src.IsValid() {
		return Unknown
	}
	src = src.Unmap()
	if len(groups) == 0 {
		// Port security on and no group: the drop port group only.
		return Denied
	}
	stateful, stateless, egress := Denied, Denied, Denied
	for _, id := range groups {
		g := known.group(id)
		if g == nil {
			stateful, stateless, egress = or(stateful, Unknown), or(stateless, Unknown), or(egress, Unknown)
			continue
		}
		for i := range g.Rules {
			r := &g.Rules[i]
			switch r.Direction {
			case "ingress":
				v := known.matches(r, src, true)
				if g.Stateful {
					stateful = or(stateful, v)
				} else {
					stateless = or(stateless, v)
				}
			case "egress":
				egress = or(egress, known.matches(r, src, false))
			}
		}
	}
	return or(stateful, and(stateless, egress))
}

func (k *Known) group(id string) *Group {
	if k == nil {
		return nil
	}
	return k.Groups[id]
}

// matches says whether r admits the echo request from src (request) or
// the echo reply to src (!request).
func (k *Known) matches(r *Rule, src netip.Addr, request bool) Verdict {
	v6 := src.Is6()
	switch {
	case strings.EqualFold(r.EtherType, "IPv4") && !v6, strings.EqualFold(r.EtherType, "IPv6") && v6:
	default:
		return Denied
	}
	proto := strings.ToLower(strings.TrimSpace(r.Protocol))
	if n, err := strconv.Atoi(proto); err == nil {
		proto = strconv.Itoa(n) // "01" is 1, as OVN reads it
	}
	switch proto {
	case "", "any":
		// Every protocol; Neutron allows no port range then.
	case "icmp", "ipv6-icmp", "icmpv6", "1", "58":
		wantType := echoRequest4
		switch {
		case v6 && request:
			wantType = echoRequest6
		case v6:
			wantType = echoReply6
		case !request:
			wantType = echoReply4
		}
		if r.PortRangeMin != nil && *r.PortRangeMin != wantType {
			return Denied
		}
		if r.PortRangeMax != nil && *r.PortRangeMax != 0 {
			return Denied
		}
	default:
		return Denied
	}
	switch {
	case r.RemoteGroupID != "":
		// The probe's source is in no security group.
		return Denied
	case r.RemoteAddressGroupID != "":
		if k == nil {
			return Unknown
		}
		addrs, ok := k.AddressGroups[r.RemoteAddressGroupID]
		if !ok {
			return Unknown
		}
		for _, p := range addrs {
			if p.Contains(src) {
				return Admitted
			}
		}
		return Denied
	case r.RemoteIPPrefix != "":
		p, ok := ParsePrefix(r.RemoteIPPrefix)
		if !ok {
			return Unknown
		}
		if p.Contains(src) {
			return Admitted
		}
		return Denied
	}
	return Admitted
}

// ParsePrefix reads a CIDR as Neutron gives it (remote_ip_prefix, an
// address group's addresses); a bare address is a host prefix. The prefix
// is masked and unmapped.
func ParsePrefix(s string) (netip.Prefix, bool) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return netip.Prefix{}, false
			}
			a, bits = a.Unmap(), bits-96
		}
		return netip.PrefixFrom(a, bits).Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}
