package report

import (
	"fmt"
	"strings"

	"github.com/prometheus/prometheus/promql"
)

// Port is Neutron's view of the port a finding's address is on (or of the
// finding's own port), from openstack_vm_port_status and
// openstack_vm_port_fixed_ips.
type Port struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	Status    string `json:"status"`
	VIFType   string `json:"vif_type"`
	// FixedIPs is the number of fixed IPs of the port, when exported.
	FixedIPs *int `json:"fixed_ips,omitempty"`
}

// What openstack_vm_icmp_expected says of an address from a vantage.
const (
	ExpectedYes     = "yes"     // its security groups admit an echo request from the vantage
	ExpectedNo      = "no"      // they do not
	ExpectedUnknown = "unknown" // no port known, groups not readable, a floating IP...
)

// reachAlerts are the alerts whose findings get the port's state and the
// ICMP expectation of the address: a server that does not answer, or whose
// port is the finding.
var reachAlerts = map[string]bool{
	"OpenStackVMUnreachable":         true,
	"OpenStackVMPortDownUnreachable": true,
	"OpenStackVMPortDown":            true,
	"OpenStackVMPortBindingFailed":   true,
	"OpenStackVMPacketLoss":          true,
}

// selector writes name{k="v", ...} for the label pairs whose value is set.
func selector(name string, kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			parts = append(parts, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
		}
	}
	return name + "{" + strings.Join(parts, ", ") + "}"
}

// addReach fills the finding's Port, ICMPExpected and Vantage from the
// snapshot: the address (its label, or the first unanswered address of the
// server on the finding's network), the vantage that probes it (one that
// gets no reply first), what the port's security groups say of ICMP from
// that vantage, and the port (the finding's port_id, or the server's port
// on the address's network).
func addReach(f *Finding, query func(string) (promql.Vector, error)) {
	id := f.Labels["id"]
	if id == "" {
		return
	}
	addr, netID, portID := f.Labels["address"], f.Labels["network_id"], f.Labels["port_id"]
	if addr != "" || netID != "" {
		if vec, err := query(selector("openstack_vm_icmp_up", "id", id, "address", addr, "network_id", netID)); err == nil && len(vec) > 0 {
			pick := vec[0]
			for _, s := range vec {
				if s.F == 0 {
					pick = s
					break
				}
			}
			f.Vantage = pick.Metric.Get("vantage")
			if addr == "" {
				addr = pick.Metric.Get("address")
				f.Address = addr
			}
			if netID == "" {
				netID = pick.Metric.Get("network_id")
			}
			f.ICMPExpected = ExpectedUnknown
			if exp, err := query(selector("openstack_vm_icmp_expected", "id", id, "address", addr, "vantage", f.Vantage)); err == nil && len(exp) > 0 {
				if exp[0].F == 1 {
					f.ICMPExpected = ExpectedYes
				} else {
					f.ICMPExpected = ExpectedNo
				}
			}
		}
	}
	var sel string
	switch {
	case portID != "":
		sel = selector("openstack_vm_port_status", "port_id", portID)
	case netID != "":
		sel = selector("openstack_vm_port_status", "id", id, "network_id", netID)
	default:
		return
	}
	vec, err := query(sel)
	if err != nil || len(vec) == 0 {
		return
	}
	m := vec[0].Metric
	p := &Port{ID: m.Get("port_id"), NetworkID: m.Get("network_id"), Status: m.Get("status"), VIFType: m.Get("vif_type")}
	if ips, err := query(selector("openstack_vm_port_fixed_ips", "port_id", p.ID)); err == nil && len(ips) > 0 {
		n := int(ips[0].F)
		p.FixedIPs = &n
	}
	f.Port = p
}

// vantageName says where the echo requests left from.
func vantageName(v string) string {
	switch v {
	case "", "host":
		return "the hypervisor (host vantage)"
	}
	return "namespace " + v
}

// reachAdvice is what the port's state and the ICMP expectation say of a
// server that does not answer, as Markdown (the first lines of the
// finding's mitigation); "" when nothing is known.
func reachAdvice(f Finding) string {
	var lines []string
	if p := f.Port; p != nil {
		switch {
		case p.VIFType == "binding_failed":
			lines = append(lines, fmt.Sprintf("Its port `%s` failed to bind on host %s (`binding_failed`): no network on that port until the host's L2 agent or OVN chassis is repaired and the port bound again (runbook OpenStackVMPortBindingFailed).", p.ID, f.Labels["host"]))
		case p.Status == "DOWN":
			lines = append(lines, fmt.Sprintf("Its port `%s` is DOWN in Neutron: the port's data path on host %s is broken (the tap interface, its OVS or OVN port, ovn-controller or the L2 agent); look there before the guest (runbook OpenStackVMPortDownUnreachable).", p.ID, f.Labels["host"]))
		case p.Status != "" && p.Status != "ACTIVE":
			lines = append(lines, fmt.Sprintf("Its port `%s` is %s in Neutron, not ACTIVE.", p.ID, p.Status))
		}
		if p.FixedIPs != nil && *p.FixedIPs == 0 {
			lines = append(lines, fmt.Sprintf("Its port `%s` has no fixed IP.", p.ID))
		}
	}
	from := vantageName(f.Vantage)
	switch f.ICMPExpected {
	case ExpectedNo:
		lines = append(lines, fmt.Sprintf("Its security groups do not admit ICMP from %s: not a fault of the VM.", from))
	case ExpectedYes:
		if f.Port != nil && f.Port.Status == "ACTIVE" && f.Port.VIFType != "binding_failed" {
			lines = append(lines, fmt.Sprintf("Its port is ACTIVE and its security groups admit ICMP from %s: the guest itself (crashed, hung, its own firewall) or the path between the port and the guest.", from))
		} else {
			lines = append(lines, fmt.Sprintf("Its security groups admit ICMP from %s: it should answer.", from))
		}
	case ExpectedUnknown:
		lines = append(lines, fmt.Sprintf("Whether its security groups admit ICMP from %s is unknown: check them first (`openstack security group rule list <group> --protocol icmp`).", from))
	}
	return strings.Join(lines, "\n\n")
}

// policySilentExpr selects the addresses of ACTIVE servers with no task
// that do not answer and whose security groups do not admit ICMP from the
// vantage: never an issue, listed so that nobody looks for them.
func policySilentExpr(jobSelector string) string {
	return fmt.Sprintf(`openstack_vm_icmp_up{%[1]s} == 0
  and on (instance, job, vantage, id, address) (openstack_vm_icmp_expected{%[1]s} == 0)
  and on (instance, job, id) (openstack_vm_status{%[1]s, status="ACTIVE", task_state=""} == 1)`, jobSelector)
}
