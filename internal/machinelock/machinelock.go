// Package machinelock takes locks that every process of the machine sees
// and that vanish with the process holding them: abstract unix sockets,
// which need no file, so a test process killed mid-run leaves nothing to
// clean up. Strictly they are per network namespace, as are the loopback
// ports and the CPUs' users the tests share.
package machinelock

import (
	"io"
	"net"
)

// Supported says whether the system has abstract unix sockets (Linux).
// Where it has not, TryLock always succeeds and locks nothing.
const Supported = abstractSockets

// TryLock takes the lock called name, or fails at once if another holder
// (in this process or another) has it. Close releases it.
func TryLock(name string) (io.Closer, error) {
	if !abstractSockets {
		return nopLock{}, nil
	}
	return net.Listen("unix", "@"+name)
}

type nopLock struct{}

func (nopLock) Close() error { return nil }
