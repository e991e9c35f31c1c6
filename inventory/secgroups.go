package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/addressgroups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/portsecurity"
)

// The security groups of the host's ports decide whether a VM should
// answer an echo request at all (package portsecurity). They are read once a
// refresh, after the ports, and only those the ports use: one listing of
// the groups by id, with their rules, in batches of securityGroupBatch ids
// (GET /v2.0/security-groups?id=..&id=..&fields=..), then one of the
// address groups their rules name. The groups' listing rather than the
// rules' (GET /v2.0/security-group-rules?security_group_id=..) because it
// is as many requests and it also says whether each group is stateful, and
// that a group with no rule exists (a rule listing cannot tell a group
// without rules from one this user may not read). A failure keeps the last
// good groups, counts under api "security_groups" and never fails the
// refresh.

// SignalSecurityGroups is the security group (and address group) listing,
// as in openstack_vm_api_signal_*{api}.
const SignalSecurityGroups = "security_groups"

// securityGroupBatch bounds the ids of one listing: 100 ids are a query
// of about 4 kB, within every proxy's and Neutron's (8 kB) line limit.
const securityGroupBatch = 100

// securityGroupFields are the fields asked of Neutron: a rule is then about
// 300 bytes instead of 600.
var securityGroupFields = []string{"id", "stateful", "security_group_rules"}

// neutronRule is a rule as Neutron returns it. gophercloud's rules.SecGroupRule
// reads port_range_min and port_range_max as int, which loses null (any
// ICMP type) against 0 (echo reply): the page is decoded into this instead.
type neutronRule struct {
	Direction            string `json:"direction"`
	EtherType            string `json:"ethertype"`
	Protocol             any    `json:"protocol"`
	PortRangeMin         *int   `json:"port_range_min"`
	PortRangeMax         *int   `json:"port_range_max"`
	RemoteIPPrefix       string `json:"remote_ip_prefix"`
	RemoteGroupID        string `json:"remote_group_id"`
	RemoteAddressGroupID string `json:"remote_address_group_id"`
}

type neutronGroup struct {
	ID string `json:"id"`
	// Stateful is nil when the stateful extension is off: every group is
	// stateful then.
	Stateful *bool         `json:"stateful"`
	Rules    []neutronRule `json:"security_group_rules"`
}

func (g *neutronGroup) toGroup() *portsecurity.Group {
	out := &portsecurity.Group{ID: Clean(g.ID), Stateful: g.Stateful == nil || *g.Stateful}
	for _, r := range g.Rules {
		proto := ""
		switch p := r.Protocol.(type) {
		case string:
			proto = p
		case float64:
			proto = fmt.Sprint(int(p))
		}
		out.Rules = append(out.Rules, portsecurity.Rule{
			Direction: Clean(r.Direction), EtherType: Clean(r.EtherType), Protocol: Clean(proto),
			PortRangeMin: r.PortRangeMin, PortRangeMax: r.PortRangeMax,
			RemoteIPPrefix: Clean(r.RemoteIPPrefix), RemoteGroupID: Clean(r.RemoteGroupID),
			RemoteAddressGroupID: Clean(r.RemoteAddressGroupID),
		})
	}
	return out
}

// idQuery is a listing query of ids with fields.
type idQuery struct {
	ids    []string
	fields []string
}

func (q idQuery) encode() string {
	v := url.Values{"id": q.ids, "fields": q.fields}
	return "?" + v.Encode()
}

// ToAddressGroupListQuery implements addressgroups.ListOptsBuilder.
func (q idQuery) ToAddressGroupListQuery() (string, error) { return q.encode(), nil }

// listPage wraps a gophercloud page so that an answer without the listing's
// key (a proxy's page, a wrong endpoint) is a decode error, not "none".
func checkListing(body any, key string) error {
	if m, ok := body.(map[string]any); !ok || m[key] == nil {
		return &decodeError{fmt.Errorf("neutron's answer is not a listing of %s (no %q list)", strings.ReplaceAll(key, "_", " "), key)}
	}
	return nil
}

type groupPage struct{ groups.SecGroupPage }

func (p groupPage) IsEmpty() (bool, error) {
	if p.StatusCode == http.StatusNoContent {
		return true, nil
	}
	if err := checkListing(p.Body, "security_groups"); err != nil {
		return false, err
	}
	// Not SecGroupPage.IsEmpty: it decodes the rules into gophercloud's
	// types, which this listing does not need to fit.
	list, ok := p.Body.(map[string]any)["security_groups"].([]any)
	if !ok {
		return false, &decodeError{errors.New("neutron's \"security_groups\" is not a list")}
	}
	return len(list) == 0, nil
}

type addressGroupPage struct{ addressgroups.AddressGroupPage }

func (p addressGroupPage) IsEmpty() (bool, error) {
	if p.StatusCode == http.StatusNoContent {
		return true, nil
	}
	if err := checkListing(p.Body, "address_groups"); err != nil {
		return false, err
	}
	return p.AddressGroupPage.IsEmpty()
}

// ListSecurityGroups lists the security groups with the given ids (in
// batches of securityGroupBatch), with their rules. Groups this user may
// not read are simply not returned.
func (c *Client) ListSecurityGroups(ctx context.Context, ids []string) (map[string]*portsecurity.Group, error) {
	nc, err := c.network()
	if err != nil {
		return nil, err
	}
	out := make(map[string]*portsecurity.Group, len(ids))
	for batch := range slices.Chunk(ids, securityGroupBatch) {
		u := nc.ServiceURL("security-groups") + idQuery{ids: batch, fields: securityGroupFields}.encode()
		pager := pagination.NewPager(nc, u, func(r pagination.PageResult) pagination.Page {
			return groupPage{groups.SecGroupPage{LinkedPageBase: pagination.LinkedPageBase{PageResult: r}}}
		})
		err := pager.EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
			var gs []neutronGroup
			if err := page.(groupPage).ExtractIntoSlicePtr(&gs, "security_groups"); err != nil {
				return false, &decodeError{fmt.Errorf("decoding the security groups: %w", err)}
			}
			for i := range gs {
				g := gs[i].toGroup()
				if g.ID != "" {
					out[g.ID] = g
				}
			}
			return true, nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing security groups: %w", err)
		}
	}
	return out, nil
}

// ListAddressGroups lists the address groups with the given ids, as their
// addresses (entries that are not CIDRs are left out).
func (c *Client) ListAddressGroups(ctx context.Context, ids []string) (map[string][]netip.Prefix, error) {
	nc, err := c.network()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]netip.Prefix, len(ids))
	for batch := range slices.Chunk(ids, securityGroupBatch) {
		pager := addressgroups.List(nc, idQuery{ids: batch, fields: []string{"id", "addresses"}}).
			WithPageCreator(func(r pagination.PageResult) pagination.Page {
				return addressGroupPage{addressgroups.AddressGroupPage{LinkedPageBase: pagination.LinkedPageBase{PageResult: r}}}
			})
		err := pager.EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
			ags, err := addressgroups.ExtractGroups(page.(addressGroupPage).AddressGroupPage)
			if err != nil {
				return false, &decodeError{fmt.Errorf("decoding the address groups: %w", err)}
			}
			for _, ag := range ags {
				id := Clean(ag.ID)
				if id == "" {
					continue
				}
				prefixes := []netip.Prefix{}
				for _, a := range ag.Addresses {
					if p, ok := portsecurity.ParsePrefix(a); ok {
						prefixes = append(prefixes, p)
					}
				}
				out[id] = prefixes
			}
			return true, nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing address groups: %w", err)
		}
	}
	return out, nil
}

// portGroupIDs are the sorted distinct security groups of the ports.
func portGroupIDs(ps []Port) []string {
	var ids []string
	for i := range ps {
		ids = append(ids, ps[i].SecurityGroups...)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// addressGroupIDs are the sorted distinct address groups the groups' rules
// name.
func addressGroupIDs(gs map[string]*portsecurity.Group) []string {
	var ids []string
	for _, g := range gs {
		for _, r := range g.Rules {
			if r.RemoteAddressGroupID != "" {
				ids = append(ids, r.RemoteAddressGroupID)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// refreshSecurityGroups reads the groups of the host's ports and the
// address groups their rules name. It never fails the refresh: on failure
// the last good groups stay (a group no listing returned yet is unknown),
// the failure is counted under api "security_groups" and logged once a
// streak.
func (inv *Inventory) refreshSecurityGroups(ctx context.Context, logger *slog.Logger, client *Client) {
	ids := portGroupIDs(inv.ports)
	if len(ids) == 0 {
		inv.secGroups = &portsecurity.Known{Groups: map[string]*portsecurity.Group{}, AddressGroups: map[string][]netip.Prefix{}}
		return
	}
	gs, err := client.ListSecurityGroups(ctx, ids)
	inv.countSignal(SignalSecurityGroups, err)
	if err != nil {
		inv.securityGroupsFailed(logger, client, err)
		return
	}
	// The address groups: on failure, the last good ones (a rule naming
	// one never read is unknown).
	ags := map[string][]netip.Prefix{}
	if inv.secGroups != nil {
		ags = inv.secGroups.AddressGroups
	}
	if agIDs := addressGroupIDs(gs); len(agIDs) > 0 {
		read, err := client.ListAddressGroups(ctx, agIDs)
		inv.countSignal(SignalSecurityGroups, err)
		if err != nil {
			inv.securityGroupsFailed(logger, client, err)
		} else {
			ags = read
		}
		if err == nil && inv.secGroupsFailing {
			inv.secGroupsFailing = false
			logger.Info("the security groups are readable again", "groups", len(gs))
		}
	} else if inv.secGroupsFailing {
		inv.secGroupsFailing = false
		logger.Info("the security groups are readable again", "groups", len(gs))
	}
	if missing := len(ids) - len(gs); missing > 0 && !inv.warnedGroupsHidden {
		inv.warnedGroupsHidden = true
		logger.Info("neutron does not show every security group of the host's ports to this user (policy): "+
			"whether their VMs should answer ICMP is unknown (see docs/security.md)", "groups", len(ids), "hidden", missing)
	}
	inv.secGroups = &portsecurity.Known{Groups: gs, AddressGroups: ags}
}

// securityGroupsFailed logs the first failure of a streak.
func (inv *Inventory) securityGroupsFailed(logger *slog.Logger, client *Client, err error) {
	if inv.secGroupsFailing {
		return
	}
	inv.secGroupsFailing = true
	hint := ""
	if code := statusCode(err); code == http.StatusForbidden || code == http.StatusUnauthorized || code == http.StatusNotFound {
		hint = "; the user needs to read security groups and address groups (see docs/security.md, Neutron policy)"
	}
	logger.Warn("listing the security groups from Neutron failed; whether VMs should answer ICMP is from the last good groups"+hint,
		"reason", Classify(err), "err", client.Redactor().Message(err))
}
