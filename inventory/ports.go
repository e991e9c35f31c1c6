package inventory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Neutron's view of the servers' ports. Nova names the networks a server's
// addresses are on, not their ids, and tenant CIDRs overlap between
// projects: which network (and so which namespace) an address is on comes
// from its port. The ports are listed in the same background refresh as
// Nova's servers, one filtered listing a refresh, and a failure there never
// fails the refresh: the last good ports stay (Health.PortsUp says so).

// SignalPorts is the port listing, as in openstack_vm_api_signal_*{api}.
const SignalPorts = "ports"

// ComputeOwnerPrefix starts the device_owner of every port Nova plugs into
// a server ("compute:nova", "compute:<availability zone>").
const ComputeOwnerPrefix = "compute:"

// Port is what the exporter keeps of a Neutron port. Every string is
// cleaned as the servers' are (Clean).
type Port struct {
	ID string
	// DeviceID is the server's id for a compute port.
	DeviceID    string
	DeviceOwner string
	NetworkID   string
	// Status is Neutron's: ACTIVE, DOWN, BUILD, ERROR.
	Status string
	// HostID is binding:host_id, "" when Neutron's policy hides it from
	// this user (a reader gets null: see docs/security.md).
	HostID string
	// VIFType is binding:vif_type ("ovs", "binding_failed", "unbound"...),
	// "" when hidden by policy.
	VIFType  string
	FixedIPs []FixedIP
	// SecurityGroups are the ids of the port's security groups.
	SecurityGroups []string
	// PortSecurityEnabled is nil when Neutron does not say (the
	// port_security extension is off).
	PortSecurityEnabled *bool
}

// FixedIP is one fixed address of a port.
type FixedIP struct {
	SubnetID string
	// Addr is invalid when Neutron's text is not an address.
	Addr netip.Addr
}

// portFields are the fields asked of Neutron (fields=...): about 500 bytes
// a port instead of 1.5 kB.
var portFields = []string{"id", "device_id", "device_owner", "network_id", "fixed_ips", "status",
	"binding:host_id", "binding:vif_type", "security_groups", "port_security_enabled"}

// portQuery builds the port listing's query: gophercloud's ports.ListOpts
// has neither the binding:host_id filter nor fields.
type portQuery struct {
	host  string
	limit int
}

// ToPortListQuery implements ports.ListOptsBuilder.
func (q portQuery) ToPortListQuery() (string, error) {
	v := url.Values{}
	if q.host != "" {
		v.Set("binding:host_id", q.host)
	}
	v["fields"] = portFields
	if q.limit > 0 {
		v.Set("limit", strconv.Itoa(q.limit))
	}
	return "?" + v.Encode(), nil
}

// neutronPort is a port as Neutron returns it with portFields.
type neutronPort struct {
	ID          string `json:"id"`
	DeviceID    string `json:"device_id"`
	DeviceOwner string `json:"device_owner"`
	NetworkID   string `json:"network_id"`
	Status      string `json:"status"`
	HostID      string `json:"binding:host_id"`
	VIFType     string `json:"binding:vif_type"`
	FixedIPs    []struct {
		SubnetID  string `json:"subnet_id"`
		IPAddress string `json:"ip_address"`
	} `json:"fixed_ips"`
	SecurityGroups      []string `json:"security_groups"`
	PortSecurityEnabled *bool    `json:"port_security_enabled"`
}

func (n *neutronPort) toPort() Port {
	p := Port{
		ID:                  Clean(n.ID),
		DeviceID:            Clean(n.DeviceID),
		DeviceOwner:         Clean(n.DeviceOwner),
		NetworkID:           Clean(n.NetworkID),
		Status:              Clean(strings.ToUpper(n.Status)),
		HostID:              Clean(n.HostID),
		VIFType:             Clean(n.VIFType),
		PortSecurityEnabled: n.PortSecurityEnabled,
	}
	for _, ip := range n.FixedIPs {
		f := FixedIP{SubnetID: Clean(ip.SubnetID)}
		if a, err := netip.ParseAddr(strings.TrimSpace(ip.IPAddress)); err == nil {
			f.Addr = a.Unmap()
		}
		p.FixedIPs = append(p.FixedIPs, f)
	}
	for _, g := range n.SecurityGroups {
		p.SecurityGroups = append(p.SecurityGroups, Clean(g))
	}
	slices.Sort(p.SecurityGroups)
	return p
}

// network returns the networking client, found in the service catalog
// once: the login is Connect's.
func (c *Client) network() (*gophercloud.ServiceClient, error) {
	if c.networking != nil {
		return c.networking, nil
	}
	if !c.loggedIn {
		return nil, &authError{err: errors.New("not logged in")}
	}
	nc, err := openstack.NewNetworkV2(c.provider, c.creds.Endpoint)
	if err != nil {
		return nil, &authError{err: fmt.Errorf("finding the network endpoint in the service catalog (region %q, interface %q): %w",
			c.creds.Endpoint.Region, c.creds.Endpoint.Availability, err)}
	}
	c.networking = nc
	return nc, nil
}

// ListPorts lists the compute ports bound to host (every compute port of
// the cloud when host is ""), page by page as Neutron links them (marker
// and limit), and returns them sorted by id. Ports of other owners (router,
// DHCP, metadata ports) are left out.
func (c *Client) ListPorts(ctx context.Context, host string, pageSize int) ([]Port, error) {
	nc, err := c.network()
	if err != nil {
		return nil, err
	}
	if c.transport.maxBody == 0 {
		ctx = context.WithValue(ctx, bodyLimitKey{}, MaxResponseBytesFor(pageSize))
	}
	return listPorts(ctx, nc, host, pageSize)
}

// portPage is gophercloud's page of ports that refuses, as a decode error,
// an answer that is not a port listing: a body without "ports" (a proxy's
// page, a wrong endpoint) would otherwise read as "no ports", and drop them
// all.
type portPage struct{ ports.PortPage }

func (p portPage) IsEmpty() (bool, error) {
	if p.StatusCode == http.StatusNoContent {
		return true, nil
	}
	if m, ok := p.Body.(map[string]any); !ok || m["ports"] == nil {
		return false, &decodeError{errors.New("neutron's answer is not a port listing (no \"ports\" list)")}
	}
	empty, err := p.PortPage.IsEmpty()
	if err != nil {
		return false, &decodeError{fmt.Errorf("decoding the ports: %w", err)}
	}
	return empty, nil
}

func listPorts(ctx context.Context, nc *gophercloud.ServiceClient, host string, pageSize int) ([]Port, error) {
	var out []Port
	pages, lastID := 0, ""
	pager := ports.List(nc, portQuery{host: host, limit: pageSize}).WithPageCreator(func(r pagination.PageResult) pagination.Page {
		return portPage{ports.PortPage{LinkedPageBase: pagination.LinkedPageBase{PageResult: r}}}
	})
	err := pager.EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		pages++
		var batch []neutronPort
		if err := ports.ExtractPortsInto(page.(portPage).PortPage, &batch); err != nil {
			return false, &decodeError{fmt.Errorf("decoding the ports (page %d): %w", pages, err)}
		}
		if len(batch) > 0 {
			if batch[len(batch)-1].ID == lastID {
				return false, &decodeError{fmt.Errorf("neutron returned the same page of ports twice (marker %s)", lastID)}
			}
			lastID = batch[len(batch)-1].ID
		}
		for i := range batch {
			p := batch[i].toPort()
			if !strings.HasPrefix(p.DeviceOwner, ComputeOwnerPrefix) {
				continue
			}
			// Neutron honours the host filter for every user who sees
			// the ports; a host shown and different is dropped all the
			// same.
			if host != "" && p.HostID != "" && p.HostID != host {
				continue
			}
			out = append(out, p)
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing ports (page %d): %w", pages+1, err)
	}
	slices.SortFunc(out, func(a, b Port) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// refreshPorts lists the host's ports. It never fails the refresh: on
// failure the last good ports stay, the failure is counted under api
// "ports" and logged once a streak.
func (inv *Inventory) refreshPorts(ctx context.Context, logger *slog.Logger, client *Client, host string, pageSize int) {
	ps, err := client.ListPorts(ctx, host, pageSize)
	inv.countSignal(SignalPorts, err)
	if err != nil {
		reason := Classify(err)
		msg := client.Redactor().Message(err)
		inv.mu.Lock()
		inv.health.PortsUp = false
		inv.health.PortsLastError = msg
		inv.mu.Unlock()
		if !inv.portsFailing {
			inv.portsFailing = true
			hint := ""
			if code := statusCode(err); code == http.StatusForbidden || code == http.StatusUnauthorized {
				hint = "; the user needs to list ports (see docs/security.md, Neutron policy)"
			}
			logger.Warn("listing the ports from Neutron failed; the servers are refreshed, the ports are the last good ones"+hint,
				"reason", reason, "err", msg, "ports_kept", len(inv.ports))
		}
		return
	}
	if inv.portsFailing {
		inv.portsFailing = false
		logger.Info("the ports are readable again", "ports", len(ps))
	}
	if host != "" && len(ps) > 0 && !inv.warnedHostless && !slices.ContainsFunc(ps, func(p Port) bool { return p.HostID != "" }) {
		inv.warnedHostless = true
		logger.Info("neutron hides binding:host_id and binding:vif_type from this user (policy): the ports are listed, "+
			"binding failures cannot be seen (see docs/security.md)", "ports", len(ps))
	}
	inv.ports = ps
	inv.portsRead = true
	inv.mu.Lock()
	inv.health.PortsUp = true
	inv.health.PortsLastSuccess = time.Now()
	inv.health.PortsLastError = ""
	inv.mu.Unlock()
}

// PortsByServer indexes ports by server (device_id).
func PortsByServer(ps []Port) map[string][]*Port {
	m := make(map[string][]*Port, len(ps))
	for i := range ps {
		p := &ps[i]
		m[p.DeviceID] = append(m[p.DeviceID], p)
	}
	return m
}
