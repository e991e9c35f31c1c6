package netns

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Capability numbers (linux/capability.h).
const (
	capNetRaw   = 13
	capSysAdmin = 21
)

// Privileges says which of the capabilities that namespace vantages need the
// process holds in its effective set.
type Privileges struct {
	// SysAdmin (CAP_SYS_ADMIN) lets the process enter a network namespace.
	SysAdmin bool
	// NetRaw (CAP_NET_RAW) lets it open raw ICMP sockets; ICMP datagram
	// sockets do not work inside the Neutron namespaces, whose
	// net.ipv4.ping_group_range is "1 0".
	NetRaw bool
}

// GrantHint says how to grant the capabilities namespace vantages need.
const GrantHint = "grant CAP_SYS_ADMIN and CAP_NET_RAW: in the systemd unit " +
	"AmbientCapabilities=CAP_NET_RAW CAP_SYS_ADMIN (and the same in CapabilityBoundingSet), " +
	"in Kubernetes securityContext.capabilities.add [NET_RAW, SYS_ADMIN] with hostNetwork and /run/netns " +
	"mounted with mountPropagation HostToContainer, or run the binary as root; " +
	"see docs/security.md"

// CheckPrivileges reads the process's effective capabilities and returns
// them with a message naming what is missing for probing from network
// namespaces and how to grant it; the message is "" when nothing is
// missing. The exporter logs it at start and keeps running: addresses
// that need a namespace are then unprobed with reason no_privilege.
func CheckPrivileges() (Privileges, string) {
	eff, err := effectiveCaps()
	if err != nil {
		return Privileges{}, fmt.Sprintf("cannot read this process's capabilities (%v); probing from network "+
			"namespaces needs CAP_SYS_ADMIN and CAP_NET_RAW: %s", err, GrantHint)
	}
	p := Privileges{SysAdmin: eff&(1<<capSysAdmin) != 0, NetRaw: eff&(1<<capNetRaw) != 0}
	return p, p.Message()
}

// Message names what is missing and how to grant it; "" when nothing is.
func (p Privileges) Message() string {
	var missing []string
	if !p.SysAdmin {
		missing = append(missing, "CAP_SYS_ADMIN (to enter network namespaces)")
	}
	if !p.NetRaw {
		missing = append(missing, "CAP_NET_RAW (for raw ICMP sockets, the only kind that works inside the "+
			"Neutron namespaces, whose ping_group_range is \"1 0\")")
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("this process lacks %s: addresses probed from ovnmeta-/qdhcp- namespaces are unprobed "+
		"(reason no_privilege) and only the host vantage works; %s", strings.Join(missing, " and "), GrantHint)
}

func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	return parseCapEff(string(b))
}

func parseCapEff(status string) (uint64, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapEff line in /proc/self/status")
}
