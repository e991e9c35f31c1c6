package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
)

// Network is the demo servers' network: network namespaces (internal/netlab)
// in which their addresses, all in 198.18.0.0/15, really answer ICMP echo,
// lose half of it, answer 80 ms late, or stop answering when a server "dies"
// a minute into the demo. The exporter's probe sockets are opened in the
// lab's hypervisor namespace, which has no default route: its echo requests
// can reach nothing but the lab. Close removes the namespaces.
type Network struct {
	lab *netlab.Lab
	// dying answer until Break, then vanish: a guest that crashed, a rack
	// whose switch failed.
	dying []netip.Addr
}

// StartNetwork builds the namespaces and places the fleet's addresses in
// them. It returns nil and the reason when this machine cannot (not root,
// no ip or nft): the demo then keeps its servers on loopback addresses.
func StartNetwork(fleet []Server) (*Network, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the demo's network namespaces need root")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found (apt-get install iproute2 nftables)", bin)
		}
	}
	lab, err := netlab.Build()
	if err != nil {
		return nil, fmt.Errorf("building the demo's network namespaces: %w", err)
	}
	n := &Network{lab: lab}
	byBehaviour := map[netlab.Behaviour][]netip.Addr{}
	for _, s := range fleet {
		for _, a := range s.Net {
			byBehaviour[s.Reach] = append(byBehaviour[s.Reach], a)
			if s.Dies {
				n.dying = append(n.dying, a)
			}
		}
	}
	for b, addrs := range byBehaviour {
		if err := lab.Add(b, addrs...); err != nil {
			lab.Close()
			return nil, err
		}
	}
	lab.SetDelay(80 * time.Millisecond)
	return n, nil
}

// Do runs fn in the hypervisor namespace: sockets it opens (the exporter's
// ICMP sockets) stay there.
func (n *Network) Do(fn func() error) error { return n.lab.Do(fn) }

// BreakAfter makes the dying servers stop answering after d, unless ctx
// ends first. They must answer first: the reachability alerts fire only for
// addresses that answered before.
func (n *Network) BreakAfter(ctx context.Context, d time.Duration, logger *slog.Logger) {
	if !sleep(ctx, d) {
		return
	}
	if err := n.lab.Remove(n.dying...); err != nil {
		logger.Warn("the demo could not cut its dying servers off", "err", err)
		return
	}
	logger.Info("demo: servers stopped answering ping (a crashed guest, a rack cut off)", "addresses", n.dying)
}

// sleep waits d, and is false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Break makes the dying servers stop answering now.
func (n *Network) Break() error { return n.lab.Remove(n.dying...) }

// Close removes the namespaces.
func (n *Network) Close() error { return n.lab.Close() }
