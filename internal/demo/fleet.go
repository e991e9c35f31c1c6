// Package demo runs the exporter against a built-in demo cloud: a Keystone
// and Nova stand-in on 127.0.0.1 whose servers live on loopback addresses,
// some healthy and some with the known issues the bundled alerts detect.
package demo

import (
	"fmt"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

// Hosts of the demo cloud. demo-hypervisor-2's compute service is down, and
// demo-hypervisor-3 is in maintenance.
const (
	hostOK          = "demo-hypervisor-1"
	hostDown        = "demo-hypervisor-2"
	hostMaintenance = "demo-hypervisor-3"
)

// Fleet returns the demo servers. Every address is on the loopback network
// (127.0.0.0/8), which the local kernel answers: nothing leaves the machine.
func Fleet(now time.Time) []standin.Server {
	ago := func(d time.Duration) time.Time { return now.Add(-d).UTC().Truncate(time.Second) }
	addr := func(last int) []standin.Address {
		return []standin.Address{{Network: "demo-provider", Addr: fmt.Sprintf("127.0.100.%d", last), Type: "fixed"}}
	}
	vm := func(id int, name, host, vmState, task string, power int, since time.Duration) standin.Server {
		return standin.Server{
			ID:        fmt.Sprintf("00000000-demo-4000-8000-%012d", id),
			Name:      name,
			ProjectID: "demo-project-" + []string{"web", "data", "batch"}[id%3],
			Host:      host, VMState: vmState, TaskState: task, PowerState: power,
			AvailabilityZone: "nova", Flavor: "m1.small", ImageID: "demo-image-debian-12",
			Addresses: addr(id), Updated: ago(since),
		}
	}
	fleet := []standin.Server{
		vm(1, "web-1", hostOK, "active", "", 1, 48*time.Hour),
		vm(2, "web-2", hostOK, "active", "", 1, 30*time.Hour),
		vm(3, "db-1", hostOK, "active", "", 1, 72*time.Hour),
		vm(4, "batch-1", hostOK, "stopped", "", 4, 5*time.Hour),
		// Known issues.
		vm(10, "broken-after-resize", hostOK, "error", "", 4, 2*time.Hour),
		vm(11, "stuck-building", hostOK, "building", "spawning", 0, 3*time.Hour),
		vm(12, "stuck-migrating", hostOK, "active", "migrating", 1, 4*time.Hour),
		vm(13, "resize-not-confirmed", hostOK, "resized", "", 1, 50*time.Hour),
		vm(14, "dead-but-active", hostOK, "active", "", 4, 2*time.Hour),
		vm(15, "paused-by-someone", hostOK, "paused", "", 3, 6*time.Hour),
		vm(20, "on-down-host", hostDown, "active", "", 1, 24*time.Hour),
		vm(30, "on-maintenance-host", hostMaintenance, "active", "", 1, 24*time.Hour),
	}
	// ACTIVE with power state paused: vm_state stays active when the domain
	// is paused behind Nova's back.
	fleet[9].VMState = "active"
	odd := vm(40, `odd "name" \ with {braces} and ünïcödé`, hostOK, "active", "", 1, 12*time.Hour)
	odd.Addresses = append(odd.Addresses, standin.Address{Network: "demo-provider", Addr: "::1", Type: "fixed"},
		standin.Address{Network: "demo-provider", Addr: "not-an-address", Type: "fixed"})
	quiet := vm(41, "icmp-opted-out", hostOK, "active", "", 1, 12*time.Hour)
	quiet.Metadata = map[string]string{"monitoring_icmp": "off"}
	floating := vm(42, "with-floating-ip", hostOK, "active", "", 1, 12*time.Hour)
	floating.Addresses = append(floating.Addresses, standin.Address{Network: "demo-public", Addr: "127.0.101.42", Type: "floating"})
	return append(fleet, odd, quiet, floating)
}

// ServiceStates are the demo hosts' compute service states.
func ServiceStates() map[string]string {
	return map[string]string{hostOK: "UP", hostDown: "DOWN", hostMaintenance: "MAINTENANCE"}
}
