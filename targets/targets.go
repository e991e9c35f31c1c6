// Package targets is all of target selection: which servers and addresses
// are probed (status, opt-out, address type, network, IP version), and from
// where (the vantage: the exporter's own network namespace, or the
// namespace OpenStack keeps on this node for the address's network), and
// which addresses are left unprobed, with the reason.
//
// It reads namespaces through a small interface (names, and each one's
// addresses), so that it is tested without root; the exporter wires the
// netns package into it.
package targets

import (
	"cmp"
	"errors"
	"io/fs"
	"net/netip"
	"slices"
	"strings"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// VantageHost is the vantage label of an address probed from the
// exporter's own network namespace; any other vantage is a namespace name.
const VantageHost = "host"

// Namespace name prefixes, followed by a Neutron network id.
const (
	PrefixOVNMetadata = "ovnmeta-"
	PrefixDHCP        = "qdhcp-"
)

// Reasons an address selected for probing is not probed, as in
// openstack_vm_probe_unprobed_addresses{reason}.
const (
	// ReasonNoNamespace: the network's namespace does not exist on this
	// node (or vanished during the cycle).
	ReasonNoNamespace = "no_namespace"
	// ReasonNoSourceAddress: the namespace has no address of the address's
	// family on a subnet containing it (IPv6 on an OVN metadata namespace).
	ReasonNoSourceAddress = "no_source_address"
	// ReasonUnknownNetwork: in a namespace mode, a fixed address with no
	// Neutron port known on this host, or a network id that is not a UUID.
	ReasonUnknownNetwork = "unknown_network"
	// ReasonNoPrivilege: the namespace cannot be entered, or no raw socket
	// opened inside it.
	ReasonNoPrivilege = "no_privilege"
	// ReasonEngineUnsupported: the engine cannot probe from a namespace
	// (pro-bing).
	ReasonEngineUnsupported = "engine_unsupported"
)

// Reasons lists every reason, so the gauge starts with all of them at 0.
var Reasons = []string{ReasonNoNamespace, ReasonNoSourceAddress, ReasonUnknownNetwork, ReasonNoPrivilege, ReasonEngineUnsupported}

// Namespaces is what selection needs of the node's named network
// namespaces.
type Namespaces interface {
	// List returns the names of the namespaces. A directory that does not
	// exist is no namespace, not an error.
	List() ([]string, error)
	// Addrs returns the interface addresses inside the namespace. An error
	// matching fs.ErrNotExist means the namespace is gone; any other means
	// it cannot be entered.
	Addrs(name string) ([]netip.Prefix, error)
}

// Target is one address of one server selected for probing, with where it
// is probed from.
type Target struct {
	ServerID  string
	Name      string
	ProjectID string
	Host      string
	// Network is Nova's name of the address's network.
	Network string
	Addr    netip.Addr
	// NetworkID is the Neutron network id of the address's port, "" when
	// no port of this host has it (floating addresses, ports unknown).
	NetworkID string
	// Vantage is VantageHost or the namespace's name.
	Vantage string
	// Namespace is "" for the host vantage, else the namespace's name
	// under the netns directory (the same as Vantage).
	Namespace string
	// Port is the address's Neutron port bound here (nil: none known), in
	// the snapshot selection read; never modify it.
	Port *inventory.Port
	// Source is the namespace's address on the address's subnet, which
	// the echo requests leave from; invalid for the host vantage.
	Source netip.Addr
}

// Unprobed is a selected address that has no usable vantage.
type Unprobed struct {
	Target
	Reason string
}

// NamespaceState says whether the namespace of a network with at least one
// ACTIVE compute port on this node exists (namespace modes only).
type NamespaceState struct {
	NetworkID string
	Namespace string
	Present   bool
}

// Selection is the outcome of choosing targets from a snapshot.
type Selection struct {
	// Mode is the vantage mode in effect: host, ovn-metadata or dhcp
	// (auto resolved).
	Mode    string
	Targets []Target
	// Unprobed are the selected addresses with no usable vantage.
	Unprobed []Unprobed
	// Invalid counts addresses Nova gave that are not IP addresses or
	// cannot be probed (multicast, unspecified, link-local without zone).
	Invalid int
	// Namespaces are, in the namespace modes, the networks with ACTIVE
	// compute ports here and whether their namespace exists, sorted by
	// network id.
	Namespaces []NamespaceState
	// NamespaceErr is the failure to list the namespaces (the mode then
	// falls back as if there were none); nil otherwise.
	NamespaceErr error
	// EnterErrors counts the namespaces whose addresses could not be read
	// (entering refused: their addresses are no_privilege), for
	// openstack_vm_probe_errors_total{reason="namespace"}.
	EnterErrors int
}

// UnprobedCounts counts the unprobed addresses by reason, every reason
// present.
func (s *Selection) UnprobedCounts() map[string]int {
	m := make(map[string]int, len(Reasons))
	for _, r := range Reasons {
		m[r] = 0
	}
	for _, u := range s.Unprobed {
		m[u.Reason]++
	}
	return m
}

// Options are what selection needs besides the configuration.
type Options struct {
	// Engine is probe.icmp.engine: pro-bing cannot probe from namespaces.
	Engine string
	// Namespaces reads the node's namespaces; nil is a node without any.
	Namespaces Namespaces
}

// Mode resolves probe.icmp.vantage against the namespaces that exist:
// auto is ovn-metadata when any ovnmeta-<uuid> namespace exists, else dhcp
// when any qdhcp-<uuid> does, else host.
func Mode(vantage string, names []string) string {
	if vantage != config.VantageAuto {
		return vantage
	}
	dhcp := false
	for _, n := range names {
		if id, ok := strings.CutPrefix(n, PrefixOVNMetadata); ok && IsUUID(id) {
			return config.VantageOVNMetadata
		}
		if id, ok := strings.CutPrefix(n, PrefixDHCP); ok && IsUUID(id) {
			dhcp = true
		}
	}
	if dhcp {
		return config.VantageDHCP
	}
	return config.VantageHost
}

// NamespaceFor returns the namespace of a network in a namespace mode, ""
// when the mode has none or the network id is not a UUID (a name is never
// built from anything else: it is a path under the netns directory).
func NamespaceFor(mode, networkID string) string {
	if !IsUUID(networkID) {
		return ""
	}
	switch mode {
	case config.VantageOVNMetadata:
		return PrefixOVNMetadata + networkID
	case config.VantageDHCP:
		return PrefixDHCP + networkID
	}
	return ""
}

// IsUUID reports whether s is a UUID in its canonical text form
// (8-4-4-4-12 hexadecimal digits), as Neutron's ids are.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// portKey finds an address's port: the server (device_id) and the fixed IP.
type portKey struct {
	serverID string
	addr     netip.Addr
}

// Select picks the addresses to probe and their vantage: servers in a
// probed status that did not opt out, addresses of the wanted type, network
// and version; then, in the namespace modes, each fixed address of a port
// bound here goes to its network's namespace when it has a source address
// on the address's subnet, and otherwise is unprobed, never sent through
// the host's routes. Floating addresses, the host_routable_networks and
// mode host stay on the host vantage.
func Select(snap *inventory.Snapshot, cfg *config.ICMP, opts Options) Selection {
	var sel Selection
	var names []string
	if opts.Namespaces != nil {
		var err error
		if names, err = opts.Namespaces.List(); err != nil {
			sel.NamespaceErr = err
			names = nil
		}
	}
	sel.Mode = Mode(cfg.Vantage, names)
	nsMode := sel.Mode == config.VantageOVNMetadata || sel.Mode == config.VantageDHCP
	present := make(map[string]bool, len(names))
	for _, n := range names {
		present[n] = true
	}
	routable := make(map[string]bool, len(cfg.HostRoutableNetworks))
	for _, n := range cfg.HostRoutableNetworks {
		routable[n] = true
	}
	// The ports of this host by (server, fixed IP).
	ports := make(map[portKey]*inventory.Port, len(snap.Ports))
	for i := range snap.Ports {
		p := &snap.Ports[i]
		for _, f := range p.FixedIPs {
			if f.Addr.IsValid() {
				ports[portKey{p.DeviceID, f.Addr}] = p
			}
		}
	}
	addrs := namespaceAddrs{ns: opts.Namespaces, cache: map[string]nsAddrs{}}
	routableIDs := map[string]bool{}

	for i := range snap.Servers {
		s := &snap.Servers[i]
		if !WantsStatus(cfg, s.Status) || OptedOut(cfg, s.Metadata) {
			continue
		}
		for _, a := range s.Addresses {
			if !probeable(a.Addr) {
				sel.Invalid++
				continue
			}
			addrType := a.Type
			if addrType == "" {
				// Without OS-EXT-IPS:type (nova-network, very old Nova)
				// an address is the server's own: a fixed one.
				addrType = "fixed"
			}
			if !WantsAddress(cfg, a.Addr, addrType, a.Network) {
				continue
			}
			t := Target{ServerID: s.ID, Name: s.Name, ProjectID: s.ProjectID, Host: s.Host,
				Network: a.Network, Addr: a.Addr, Vantage: VantageHost}
			port := ports[portKey{s.ID, a.Addr}]
			if port != nil {
				t.NetworkID = port.NetworkID
				if addrType != "floating" {
					t.Port = port
				}
			}
			if routable[a.Network] || (t.NetworkID != "" && routable[t.NetworkID]) {
				if t.NetworkID != "" {
					routableIDs[t.NetworkID] = true
				}
				sel.Targets = append(sel.Targets, t)
				continue
			}
			if !nsMode || addrType == "floating" {
				sel.Targets = append(sel.Targets, t)
				continue
			}
			reason := ""
			var src netip.Addr
			ns := NamespaceFor(sel.Mode, t.NetworkID)
			switch {
			case port == nil || ns == "":
				reason = ReasonUnknownNetwork
			case !present[ns]:
				reason = ReasonNoNamespace
			case opts.Engine == "pro-bing":
				reason = ReasonEngineUnsupported
			default:
				src, reason = addrs.source(ns, a.Addr)
			}
			if reason != "" {
				sel.Unprobed = append(sel.Unprobed, Unprobed{Target: t, Reason: reason})
				continue
			}
			t.Vantage, t.Namespace, t.Source = ns, ns, src
			sel.Targets = append(sel.Targets, t)
		}
	}
	if nsMode {
		sel.Namespaces = namespaceStates(snap.Ports, sel.Mode, present, routable, routableIDs)
	}
	for _, e := range addrs.cache {
		if e.reason == ReasonNoPrivilege {
			sel.EnterErrors++
		}
	}
	return sel
}

// namespaceStates lists the networks with at least one ACTIVE compute port
// with a fixed IP on this node (a DOWN port, of a server that is off, rightly
// has no namespace), but for the networks probed from the host.
func namespaceStates(ports []inventory.Port, mode string, present, routable, routableIDs map[string]bool) []NamespaceState {
	seen := map[string]bool{}
	var out []NamespaceState
	for i := range ports {
		p := &ports[i]
		if p.Status != "ACTIVE" || len(p.FixedIPs) == 0 || seen[p.NetworkID] || routable[p.NetworkID] || routableIDs[p.NetworkID] {
			continue
		}
		ns := NamespaceFor(mode, p.NetworkID)
		if ns == "" {
			continue
		}
		seen[p.NetworkID] = true
		out = append(out, NamespaceState{NetworkID: p.NetworkID, Namespace: ns, Present: present[ns]})
	}
	slices.SortFunc(out, func(a, b NamespaceState) int { return cmp.Compare(a.NetworkID, b.NetworkID) })
	return out
}

// nsAddrs is a namespace's addresses, or why they could not be read.
type nsAddrs struct {
	prefixes []netip.Prefix
	reason   string
}

// namespaceAddrs reads each namespace's addresses once per selection.
type namespaceAddrs struct {
	ns    Namespaces
	cache map[string]nsAddrs
}

// source returns the namespace's address of addr's family on a subnet
// containing addr (link-local addresses, such as the OVN metadata
// namespace's 169.254.169.254/32, do not count), which the echo requests
// leave from, and ""; else the reason why there is none.
func (n *namespaceAddrs) source(ns string, addr netip.Addr) (netip.Addr, string) {
	e, ok := n.cache[ns]
	if !ok {
		prefixes, err := n.ns.Addrs(ns)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			e.reason = ReasonNoNamespace
		case err != nil:
			e.reason = ReasonNoPrivilege
		}
		e.prefixes = prefixes
		n.cache[ns] = e
	}
	if e.reason != "" {
		return netip.Addr{}, e.reason
	}
	for _, p := range e.prefixes {
		a := p.Addr().Unmap()
		if a.IsLinkLocalUnicast() || a.IsLoopback() || a.Is4() != addr.Is4() || a == addr {
			continue
		}
		if netip.PrefixFrom(a, p.Bits()).Masked().Contains(addr) {
			return a, ""
		}
	}
	return netip.Addr{}, ReasonNoSourceAddress
}

// WantsStatus reports whether servers in this Nova status are probed.
func WantsStatus(cfg *config.ICMP, status string) bool {
	return slices.Contains(cfg.Statuses, status)
}

// WantsAddress reports whether an address of the given type and Nova
// network is selected for probing.
func WantsAddress(cfg *config.ICMP, addr netip.Addr, addrType, network string) bool {
	if !slices.Contains(cfg.AddressTypes, addrType) {
		return false
	}
	if len(cfg.Networks) > 0 && !slices.Contains(cfg.Networks, network) {
		return false
	}
	version := 4
	if addr.Is6() && !addr.Is4In6() {
		version = 6
	}
	return slices.Contains(cfg.IPVersions, version)
}

// OptedOut reports whether server metadata asks not to be probed: the
// opt-out key set to false, off, no, disabled or 0.
func OptedOut(cfg *config.ICMP, metadata map[string]string) bool {
	if cfg.OptOutMetadataKey == "" {
		return false
	}
	v, ok := metadata[cfg.OptOutMetadataKey]
	if !ok {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "false", "off", "no", "disabled", "0":
		return true
	}
	return false
}

func probeable(a netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	if a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	if a.Is6() && (a.IsLinkLocalUnicast() || a.IsInterfaceLocalMulticast()) && a.Zone() == "" {
		return false
	}
	return true
}
