package netlab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Do runs fn with its goroutine's OS thread switched into network namespace
// ns. Sockets fn opens belong to ns for their whole life, whichever thread
// uses them later: a test opens its prober's sockets here and then probes
// from anywhere.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread returns to the scheduler only if it is back in its
		// own namespace; otherwise it exits with the goroutine.
		back, err := enter(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if back() == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Do runs fn in the lab's hypervisor namespace.
func (l *Lab) Do(fn func() error) error { return Do(l.hv, fn) }

func enter(ns string) (back func() error, err error) {
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, fmt.Errorf("opening this thread's namespace: %w", err)
	}
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		orig.Close()
		return nil, fmt.Errorf("opening namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		orig.Close()
		return nil, fmt.Errorf("entering namespace %s: %w", ns, err)
	}
	return func() error {
		defer orig.Close()
		return unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET)
	}, nil
}

// ServiceTimeout bounds one request of the labs' HTTP clients to their
// services: a bound for a hung service, not a budget (Neutron took more
// than 60 s to create a port with the whole suite running).
const ServiceTimeout = 5 * time.Minute

// HTTPClient returns a client whose connections are opened inside the
// hypervisor namespace: it reaches services on that namespace's loopback.
func (l *Lab) HTTPClient() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := l.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: ServiceTimeout}
}
