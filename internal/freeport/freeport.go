// Package freeport hands out loopback TCP ports for the servers tests start
// (Keystone, Nova, Prometheus, the exporter...), without the race of "listen
// on port 0, close, and pass the number on": in the moment between, another
// test process, or any outgoing connection's ephemeral port, could take the
// port, and the server then fails with "address already in use".
//
// Ports come from below the kernel's ephemeral range, so no outgoing
// connection is ever given one, and each is reserved across processes by a
// machine-wide lock (internal/machinelock) named after it for as long as the
// reservation is held. Processes of one test run thus never get the same
// port.
package freeport

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/machinelock"
)

// Reservation holds ports until Release.
type Reservation struct {
	Ports []int
	mu    sync.Mutex
	locks []io.Closer
}

// Release frees the reservation's ports for other tests; the servers
// already listening on them keep their sockets.
func (r *Reservation) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.locks {
		l.Close()
	}
	r.locks = nil
}

// Addr is the reservation's i-th port on 127.0.0.1.
func (r *Reservation) Addr(i int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Ports[i]))
}

// Reserve reserves n ports that are free on 127.0.0.1 now.
func Reserve(n int) (*Reservation, error) {
	low, high := candidateRange()
	r := &Reservation{}
	span := high - low
	start := rand.IntN(span)
	for i := 0; i < span && len(r.Ports) < n; i++ {
		port := low + (start+i)%span
		lock, err := lock(port)
		if err != nil {
			continue // another test process holds it
		}
		// Anything else on the machine may listen there.
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			lock.Close()
			continue
		}
		l.Close()
		r.locks = append(r.locks, lock)
		r.Ports = append(r.Ports, port)
	}
	if len(r.Ports) < n {
		r.Release()
		return nil, fmt.Errorf("freeport: only %d of %d ports free in %d-%d", len(r.Ports), n, low, high-1)
	}
	return r, nil
}

// lock takes the machine-wide reservation of port.
func lock(port int) (io.Closer, error) {
	return machinelock.TryLock("openstack-vm-exporter-test-port-" + strconv.Itoa(port))
}

// candidateRange is the 8192 ports below the ephemeral range (or above it,
// where it starts too low to leave room), as [low, high).
func candidateRange() (low, high int) {
	ephemeralLow, ephemeralHigh := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err := errors.Join(err1, err2); err == nil {
				ephemeralLow, ephemeralHigh = l, h
			}
		}
	}
	const size = 8192
	switch {
	case ephemeralLow-size >= 1024:
		return ephemeralLow - size, ephemeralLow
	case ephemeralHigh+1+size <= 65536:
		return ephemeralHigh + 1, ephemeralHigh + 1 + size
	default: // an ephemeral range over nearly everything: take what is left below it
		return 1024, max(ephemeralLow, 1025)
	}
}
