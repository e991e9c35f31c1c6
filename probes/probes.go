package probes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"
)

// Result is what one cycle learned about one address.
type Result struct {
	// Sent counts echo requests that left the socket.
	Sent int
	// Received counts distinct, matching replies that arrived in time.
	Received int
	// RTTs holds one round-trip time per received reply.
	RTTs []time.Duration
}

// Prober sends echo requests to a set of addresses and collects the replies.
// Probe is called by one goroutine at a time; it returns one Result per
// address, in the order given, once every reply arrived or timed out.
type Prober interface {
	Probe(ctx context.Context, addrs []netip.Addr) ([]Result, error)
	// Stats returns counters of failures that are not any one target's.
	Stats() Stats
	Close() error
}

// Stats counts failures of the prober itself.
type Stats struct {
	// SendErrors counts echo requests the kernel refused to send.
	SendErrors uint64
	// SocketErrors counts sockets that failed and were reopened.
	SocketErrors uint64
}

// Options configures a Prober.
type Options struct {
	// Privileged selects raw sockets (CAP_NET_RAW) instead of ICMP datagram
	// sockets (net.ipv4.ping_group_range).
	Privileged bool
	// Count is the number of echo requests per address and cycle.
	Count int
	// Timeout is how long a reply is waited for after its request.
	Timeout time.Duration
	// Spacing is the least time between two requests to the same address,
	// so that one burst of loss does not take every request of a cycle.
	Spacing time.Duration
	// PacketsPerSecond caps the send rate over all addresses.
	PacketsPerSecond int
	// Logger receives socket failures; nil discards them.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Count < 1 {
		o.Count = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.PacketsPerSecond < 1 {
		o.PacketsPerSecond = 5000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrPermission wraps the failure to open an ICMP socket for lack of
// privileges; its message says how to grant them.
var ErrPermission = errors.New("no permission to open ICMP sockets")

type stats struct {
	sendErrors   atomic.Uint64
	socketErrors atomic.Uint64
}

func (s *stats) snapshot() Stats {
	return Stats{SendErrors: s.sendErrors.Load(), SocketErrors: s.socketErrors.Load()}
}

// permissionError explains how to grant what the mode needs.
func permissionError(privileged bool, cause error) error {
	if privileged {
		return fmt.Errorf("%w: mode privileged opens raw ICMP sockets and needs CAP_NET_RAW: "+
			"run `setcap cap_net_raw+ep <binary>`, set AmbientCapabilities=CAP_NET_RAW in the systemd unit, "+
			"add NET_RAW to the container's capabilities, or use mode: unprivileged with net.ipv4.ping_group_range (%v)",
			ErrPermission, cause)
	}
	return fmt.Errorf("%w: mode unprivileged opens ICMP datagram sockets, which the kernel allows only to groups in "+
		"net.ipv4.ping_group_range (now %q, this process's group is %d): run `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` "+
		"(persist it in /etc/sysctl.d/), or use mode: privileged with CAP_NET_RAW (%v)",
		ErrPermission, pingGroupRange(), processGID(), cause)
}
