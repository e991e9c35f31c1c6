// Package demo runs the exporter against a built-in demo cloud: a Keystone,
// Nova and Neutron stand-in on 127.0.0.1 whose servers live in network namespaces
// (or, where the demo cannot build them, on loopback addresses), some
// healthy and some with the known issues the bundled alerts detect.
package demo

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

// Hosts of the demo cloud. demo-hypervisor-2's compute service is down,
// demo-hypervisor-3 is in maintenance, demo-hypervisor-4 rebooted (Nova
// stopped its servers), nova-compute on demo-hypervisor-5 lost libvirt and
// disabled itself (three of its servers went to ERROR),
// demo-hypervisor-6's rack is cut off the network a minute into the demo,
// and demo-hypervisor-8, disabled by an operator for a move, loses power a
// minute in: its heartbeat stops and nothing watches it any more.
// demo-hypervisor-9 lost its OVN chassis (its ovn-controller registers
// under another name): every port bound to it failed to bind.
const (
	hostOK          = "demo-hypervisor-1"
	hostDown        = "demo-hypervisor-2"
	hostMaintenance = "demo-hypervisor-3"
	hostRebooted    = "demo-hypervisor-4"
	hostNoLibvirt   = "demo-hypervisor-5"
	hostCutOff      = "demo-hypervisor-6"
	hostLost        = "demo-hypervisor-8"
	hostNoChassis   = "demo-hypervisor-9"
)

// hostLostAfter is when demo-hypervisor-8 loses power, from the start of
// the demo cloud: its host must have been seen watched first.
const hostLostAfter = time.Minute

// Server is a demo server: its Nova record, and what its addresses do on
// the demo network.
type Server struct {
	standin.Server
	// Reach is what its addresses do with echo requests in the
	// namespaces; Dies: they answer, then stop a minute into the demo.
	Reach netlab.Behaviour
	Dies  bool
	// Net are its addresses placed in the namespaces.
	Net []netip.Addr
	// Actions are its instance actions, oldest first.
	Actions []standin.Action
}

// Servers returns the demo fleet. With namespaces, every address is in
// 198.18.0.0/15 and lives in the demo's network namespaces; without, on
// the loopback network (127.0.0.0/8), which the local kernel answers, so
// that no reachability alert can fire. Nothing leaves the machine either
// way.
func Servers(now time.Time, namespaces bool) []Server {
	ago := func(d time.Duration) time.Time { return now.Add(-d).UTC().Truncate(time.Second) }
	vm := func(id int, name, host, vmState, task string, power int, since time.Duration) Server {
		s := Server{Server: standin.Server{
			ID:        fmt.Sprintf("00000000-demo-4000-8000-%012d", id),
			Name:      name,
			ProjectID: "demo-project-" + []string{"web", "data", "batch"}[id%3],
			Host:      host, VMState: vmState, TaskState: task, PowerState: power,
			AvailabilityZone: "nova", Flavor: "m1.small", ImageID: "demo-image-debian-12",
			Updated: ago(since),
		}}
		a := netip.AddrFrom4([4]byte{127, 0, 100, byte(id)})
		if namespaces {
			a = netip.AddrFrom4([4]byte{198, 18, 100, byte(id)})
			s.Net = []netip.Addr{a}
		}
		s.Addresses = []standin.Address{{Network: "demo-provider", Addr: a.String(), Type: "fixed"}}
		return s
	}
	stoppedByNova := func(s Server, at time.Duration) Server {
		s.Actions = []standin.Action{{Action: "create", UserID: "demo-user", Start: ago(30 * 24 * time.Hour)},
			{Action: "stop", Start: ago(at)}}
		return s
	}
	fleet := []Server{
		vm(1, "web-1", hostOK, "active", "", 1, 48*time.Hour),
		vm(2, "web-2", hostOK, "active", "", 1, 30*time.Hour),
		vm(3, "db-1", hostOK, "active", "", 1, 72*time.Hour),
		vm(4, "batch-1", hostOK, "stopped", "", 4, 5*time.Hour),
		// Known issues.
		vm(10, "broken-after-resize", hostOK, "error", "", 4, 2*time.Hour),
		vm(11, "stuck-building", hostOK, "building", "spawning", 0, 3*time.Hour),
		// Longer than the 8 h Nova's live-migration timeout allows a large
		// server (task_state_seconds_by_task).
		vm(12, "stuck-migrating", hostOK, "active", "migrating", 1, 10*time.Hour),
		vm(13, "resize-not-confirmed", hostOK, "resized", "", 1, 50*time.Hour),
		vm(14, "dead-but-active", hostOK, "active", "", 4, 2*time.Hour),
		vm(15, "paused-by-someone", hostOK, "active", "", 3, 6*time.Hour),
		vm(16, "migration-failed", hostOK, "active", "", 1, 2*time.Hour),
		vm(20, "on-down-host", hostDown, "active", "", 1, 24*time.Hour),
		vm(30, "on-maintenance-host", hostMaintenance, "active", "", 1, 24*time.Hour),
		stoppedByNova(vm(31, "oom-killed", hostOK, "stopped", "", 4, 20*time.Minute), 20*time.Minute),
		stoppedByNova(vm(32, "rebooted-1", hostRebooted, "stopped", "", 4, 30*time.Minute), 30*time.Minute),
		stoppedByNova(vm(33, "rebooted-2", hostRebooted, "stopped", "", 4, 29*time.Minute), 29*time.Minute),
		stoppedByNova(vm(34, "rebooted-3", hostRebooted, "stopped", "", 4, 28*time.Minute), 28*time.Minute),
		vm(35, "on-host-without-libvirt", hostNoLibvirt, "active", "", 1, 24*time.Hour),
		// Their reboots failed when libvirt went away: the host's fault.
		vm(36, "libvirt-lost-1", hostNoLibvirt, "error", "", 1, 3*time.Hour),
		vm(37, "libvirt-lost-2", hostNoLibvirt, "error", "", 1, 3*time.Hour),
		vm(38, "libvirt-lost-3", hostNoLibvirt, "error", "", 1, 3*time.Hour),
	}
	// A build that failed (no valid host): Nova leaves it in ERROR with no
	// host, no power state and no port.
	failed := vm(17, "build-failed", "", "error", "", 0, time.Hour)
	failed.Addresses, failed.Net = nil, nil
	fleet = append(fleet, failed)
	// Reachability, seen only with namespaces.
	guest := vm(50, "guest-crashes", hostOK, "active", "", 1, 24*time.Hour)
	guest.Dies = true
	lossy := vm(51, "lossy-link", hostOK, "active", "", 1, 24*time.Hour)
	lossy.Reach = netlab.Lossy
	slow := vm(52, "slow-link", hostOK, "active", "", 1, 24*time.Hour)
	slow.Reach = netlab.Slow
	fleet = append(fleet, guest, lossy, slow)
	if namespaces {
		// An address the hypervisor has no route to (its network is not
		// plugged on this host): the kernel refuses the echo requests, and
		// the exporter counts send errors.
		unrouted := vm(53, "on-unplugged-network", hostOK, "active", "", 1, 24*time.Hour)
		unrouted.Net = nil
		unrouted.Addresses = []standin.Address{{Network: "demo-provider", Addr: "198.18.200.53", Type: "fixed"}}
		fleet = append(fleet, unrouted)
	}
	for i := range 3 {
		s := vm(60+i, fmt.Sprintf("rack-b-%d", i+1), hostCutOff, "active", "", 1, 24*time.Hour)
		s.Dies = true
		fleet = append(fleet, s)
	}

	// The servers of demo-hypervisor-8 die with it (hostLostAfter).
	for i := range 2 {
		s := vm(80+i, fmt.Sprintf("on-lost-host-%d", i+1), hostLost, "active", "", 1, 24*time.Hour)
		s.Dies = true
		fleet = append(fleet, s)
	}

	// Neutron's view of the ports (the stand-in derives one port per fixed
	// address, ACTIVE and bound with vif_type ovs, unless told otherwise).
	// A port no mechanism driver could bind on a healthy host; its server
	// was stopped since.
	unbound := vm(43, "port-binding-failed", hostOK, "stopped", "", 4, 3*time.Hour)
	unbound.VIFType = "binding_failed"
	// Every port of demo-hypervisor-9 failed to bind: the host's, not the
	// ports'. Its servers were stopped for the repair.
	for i := range 3 {
		s := vm(90+i, fmt.Sprintf("on-host-without-chassis-%d", i+1), hostNoChassis, "stopped", "", 4, 2*time.Hour)
		s.VIFType = "binding_failed"
		fleet = append(fleet, s)
	}
	// ACTIVE servers whose port Neutron says is DOWN: one whose data path
	// broke (it answers, then stops a minute in), one that answers all
	// along (Neutron's status drifted).
	downSilent := vm(44, "port-down-silent", hostOK, "active", "", 1, 24*time.Hour)
	downSilent.PortStatus, downSilent.Dies = "DOWN", true
	downAnswers := vm(45, "port-down-answers", hostOK, "active", "", 1, 24*time.Hour)
	downAnswers.PortStatus = "DOWN"
	fleet = append(fleet, unbound, downSilent, downAnswers)

	odd := vm(40, `odd "name" \ with {braces} and ünïcödé`, hostOK, "active", "", 1, 12*time.Hour)
	odd.Addresses = append(odd.Addresses, standin.Address{Network: "demo-provider", Addr: "::1", Type: "fixed"},
		standin.Address{Network: "demo-provider", Addr: "not-an-address", Type: "fixed"})
	quiet := vm(41, "icmp-opted-out", hostOK, "active", "", 1, 12*time.Hour)
	quiet.Metadata = map[string]string{"monitoring_icmp": "off"}
	floating := vm(42, "with-floating-ip", hostOK, "active", "", 1, 12*time.Hour)
	fip := netip.AddrFrom4([4]byte{127, 0, 101, 42})
	if namespaces {
		fip = netip.AddrFrom4([4]byte{198, 19, 101, 42})
		floating.Net = append(floating.Net, fip)
	}
	floating.Addresses = append(floating.Addresses, standin.Address{Network: "demo-public", Addr: fip.String(), Type: "floating"})
	return append(fleet, odd, quiet, floating)
}

// Migrations are the demo cloud's migration records: the stuck migration
// of stuck-migrating, and the failed one of migration-failed.
func Migrations(now time.Time) []standin.Migration {
	id := func(n int) string { return fmt.Sprintf("00000000-demo-4000-8000-%012d", n) }
	return []standin.Migration{
		{UUID: "00000000-demo-4000-9000-000000000012", ServerID: id(12), Source: hostOK, Dest: hostMaintenance,
			Status: "running", Type: "live-migration", Created: now.Add(-10 * time.Hour), Updated: now.Add(-time.Minute)},
		{UUID: "00000000-demo-4000-9000-000000000016", ServerID: id(16), Source: hostOK, Dest: hostDown,
			Status: "error", Type: "live-migration", Created: now.Add(-2 * time.Hour), Updated: now.Add(-110 * time.Minute)},
	}
}

// Services are the demo hosts' compute service records.
func Services() map[string]standin.Service {
	return map[string]standin.Service{
		hostOK:          {},
		hostDown:        {ForcedDown: true},
		hostMaintenance: {Disabled: true, DisabledReason: "demo: kernel upgrade"},
		hostRebooted:    {},
		hostNoLibvirt:   {Disabled: true, DisabledReason: "AUTO: Connection to libvirt lost: 1"},
		hostCutOff:      {},
		hostLost:        {Disabled: true, DisabledReason: "demo: moving to rack C"},
		hostNoChassis:   {},
	}
}

// lostService is demo-hypervisor-8's compute service once the host lost
// power: still disabled, and its heartbeat stopped.
var lostService = standin.Service{Disabled: true, Dead: true, DisabledReason: "demo: moving to rack C"}
