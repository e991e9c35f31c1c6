package freeport

import (
	"net"
	"slices"
	"testing"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/machinelock"
)

func TestReservedPortsAreFreeDistinctAndOutsideTheEphemeralRange(t *testing.T) {
	t.Parallel()
	low, high := candidateRange()
	a, err := Reserve(3)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	b, err := Reserve(3)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	all := append(slices.Clone(a.Ports), b.Ports...)
	slices.Sort(all)
	if len(slices.Compact(all)) != 6 {
		t.Fatalf("a port was handed out twice: %v %v", a.Ports, b.Ports)
	}
	for _, p := range all {
		if p < low || p >= high {
			t.Errorf("port %d outside %d-%d", p, low, high-1)
		}
	}
	// The reserved port is free for the server the test starts on it.
	l, err := net.Listen("tcp", a.Addr(0))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

func TestReservationHeldUntilReleased(t *testing.T) {
	t.Parallel()
	r, err := Reserve(1)
	if err != nil {
		t.Fatal(err)
	}
	if machinelock.Supported {
		if _, err := lock(r.Ports[0]); err == nil {
			t.Fatal("a held port could be reserved again")
		}
	}
	r.Release()
	l, err := lock(r.Ports[0])
	if err != nil {
		t.Fatalf("a released port stays reserved: %v", err)
	}
	l.Close()
}
