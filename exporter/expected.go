package exporter

import (
	"net"
	"net/netip"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/portsecurity"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/targets"
)

// icmpExpected decides openstack_vm_icmp_expected for a target: whether its
// port's security groups admit an echo request from the vantage's source
// address. Unknown without a port (floating addresses, ports not known) and
// without a source address.
func icmpExpected(t *Target, known *portsecurity.Known, routes routeSources) portsecurity.Verdict {
	if t.Port == nil {
		return portsecurity.Unknown
	}
	src := t.Source
	if t.Vantage == targets.VantageHost {
		src = routes.source(t.Addr)
	}
	return portsecurity.EchoAdmitted(t.Port.PortSecurityEnabled, t.Port.SecurityGroups, known, src)
}

// routeSources finds, once a cycle per address, the source address the
// exporter's own network namespace would send a packet to an address from:
// the route's preferred source, as the kernel picks it when a UDP socket is
// connected (connect sends nothing). Invalid when there is no route.
type routeSources map[netip.Addr]netip.Addr

func (r routeSources) source(dst netip.Addr) netip.Addr {
	if src, ok := r[dst]; ok {
		return src
	}
	var src netip.Addr
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err == nil {
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
			src = a.AddrPort().Addr().Unmap()
		}
		c.Close()
	}
	r[dst] = src
	return src
}
