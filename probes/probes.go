package probes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/netns"
)

// Result is what one cycle learned about one address.
type Result struct {
	// Sent counts echo requests that left the socket.
	Sent int
	// Received counts distinct, matching replies that arrived in time.
	Received int
	// RTTs holds one round-trip time per received reply.
	RTTs []time.Duration
	// Unprobed is "" when the target was probed (Sent may still be 0 when
	// the kernel refused every send), else why it could not be: one of
	// UnprobedNoNamespace, UnprobedNoPrivilege, UnprobedEngineUnsupported.
	Unprobed string
}

// Target is one address to probe, and the network namespace to probe it
// from.
type Target struct {
	Addr netip.Addr
	// Namespace is "" for the exporter's own network namespace, else the
	// name of a namespace in Options.NetnsDir (ovnmeta-<network id>, ...).
	Namespace string
}

// Why a target was not probed (Result.Unprobed).
const (
	// UnprobedNoNamespace: the target's namespace does not exist (it
	// vanished, or its name is not one a namespace can have).
	UnprobedNoNamespace = "no_namespace"
	// UnprobedNoPrivilege: entering the namespace or opening a raw socket
	// in it was refused (CAP_SYS_ADMIN, CAP_NET_RAW).
	UnprobedNoPrivilege = "no_privilege"
	// UnprobedEngineUnsupported: the engine cannot probe from namespaces.
	UnprobedEngineUnsupported = "engine_unsupported"
)

// Engine sends echo requests to a set of targets and collects the replies.
// Probe is called by one goroutine at a time; it returns one Result per
// target, in the order given, once every reply arrived or timed out.
type Engine interface {
	Probe(ctx context.Context, targets []Target) ([]Result, error)
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
	// NamespaceErrors counts failures to enter a network namespace or to
	// open a socket inside it (exported as
	// openstack_vm_probe_errors_total{reason="namespace"}). A namespace that
	// does not exist is no error: its targets are UnprobedNoNamespace.
	NamespaceErrors uint64
}

// Options configures an Engine.
type Options struct {
	// Privileged selects raw sockets (CAP_NET_RAW) instead of ICMP datagram
	// sockets (net.ipv4.ping_group_range).
	Privileged bool
	// Auto tries raw sockets first and falls back to datagram sockets when
	// the raw ones are refused for lack of privilege; Privileged is then
	// ignored. The engine logs which it uses.
	Auto bool
	// Count is the number of echo requests per address and cycle.
	Count int
	// Timeout is how long a reply is waited for after its request.
	Timeout time.Duration
	// Spacing is the least time between two requests to the same address,
	// so that one burst of loss does not take every request of a cycle.
	Spacing time.Duration
	// PacketsPerSecond caps the send rate over all addresses.
	PacketsPerSecond int
	// NetnsDir holds the named network namespaces of Target.Namespace;
	// netns.DefaultDir (/run/netns) when empty.
	NetnsDir string
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
	if o.NetnsDir == "" {
		o.NetnsDir = netns.DefaultDir
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrPermission wraps the failure to open an ICMP socket for lack of
// privileges; its message says how to grant them.
var ErrPermission = errors.New("no permission to open ICMP sockets")

type stats struct {
	sendErrors      atomic.Uint64
	socketErrors    atomic.Uint64
	namespaceErrors atomic.Uint64
}

func (s *stats) snapshot() Stats {
	return Stats{SendErrors: s.sendErrors.Load(), SocketErrors: s.socketErrors.Load(),
		NamespaceErrors: s.namespaceErrors.Load()}
}

// permissionError is the refusal of an ICMP socket for lack of privilege;
// its message says how to grant what the mode needs.
type permissionError struct {
	privileged bool
	cause      error
}

func (e *permissionError) Is(target error) bool { return target == ErrPermission }
func (e *permissionError) Unwrap() error        { return e.cause }

func (e *permissionError) Error() string {
	if e.privileged {
		return fmt.Sprintf("%v: mode privileged opens raw ICMP sockets and needs CAP_NET_RAW: %s, "+
			"or use mode: unprivileged with net.ipv4.ping_group_range (%v)", ErrPermission, grantRaw, e.cause)
	}
	return fmt.Sprintf("%v: mode unprivileged opens ICMP datagram sockets, which the kernel allows only to groups in "+
		"net.ipv4.ping_group_range (%s): %s, or use mode: privileged with CAP_NET_RAW (%v)",
		ErrPermission, groupState(), grantDatagram, e.cause)
}

const (
	grantRaw = "run `setcap cap_net_raw+ep <binary>`, set AmbientCapabilities=CAP_NET_RAW in the systemd unit, " +
		"or add NET_RAW to the container's capabilities"
	grantDatagram = "run `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` (persist it in /etc/sysctl.d/)"
)

func groupState() string {
	return fmt.Sprintf("now %q, this process's group is %d", pingGroupRange(), processGID())
}

func permissionErr(privileged bool, cause error) error {
	return &permissionError{privileged: privileged, cause: cause}
}

// openMode opens a socket in the mode opts asks for and says whether it is
// a raw one. In auto mode a raw socket is tried first (it gets the kernel
// filter on the prober's ICMP ID) and a datagram socket only when the raw
// one is refused for lack of privilege; any other failure is returned as is.
func openMode(opts *Options, open func(privileged bool) (*socket, error)) (*socket, bool, error) {
	if !opts.Auto {
		s, err := open(opts.Privileged)
		return s, opts.Privileged, err
	}
	s, rawErr := open(true)
	if rawErr == nil {
		return s, true, nil
	}
	if !errors.Is(rawErr, ErrPermission) {
		return nil, false, rawErr
	}
	s, dgramErr := open(false)
	if dgramErr == nil {
		return s, false, nil
	}
	if !errors.Is(dgramErr, ErrPermission) {
		return nil, false, dgramErr
	}
	return nil, false, fmt.Errorf("%w: mode auto tried both kinds of ICMP socket. Raw sockets need CAP_NET_RAW: %s "+
		"(refused: %v). ICMP datagram sockets need the process's group in net.ipv4.ping_group_range (%s): %s (refused: %v)",
		ErrPermission, grantRaw, causeOf(rawErr), groupState(), grantDatagram, causeOf(dgramErr))
}

// openIPv4 opens the IPv4 socket, with ICMP ID id, in the mode opts asks
// for, and pins opts to the mode it got, so that every later socket is of
// the same kind. auto says whether the mode was chosen, for the engine's log.
func openIPv4(opts *Options, id uint16) (sock *socket, auto bool, err error) {
	auto = opts.Auto
	sock, privileged, err := openMode(opts, func(privileged bool) (*socket, error) {
		return openSocket(false, privileged, id)
	})
	if err != nil {
		return nil, auto, err
	}
	opts.Privileged, opts.Auto = privileged, false
	return sock, auto, nil
}

func causeOf(err error) error {
	var pe *permissionError
	if errors.As(err, &pe) {
		return pe.cause
	}
	return err
}

// modeName names the kind of socket for logs.
func modeName(privileged bool) string {
	if privileged {
		return "privileged (raw sockets)"
	}
	return "unprivileged (ICMP datagram sockets)"
}

// HostTargets returns a target in the exporter's own namespace for every
// address.
func HostTargets(addrs []netip.Addr) []Target {
	out := make([]Target, len(addrs))
	for i, a := range addrs {
		out[i] = Target{Addr: a}
	}
	return out
}
