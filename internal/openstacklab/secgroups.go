package openstacklab

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
)

// SecurityGroupRule is a rule to add to a security group, as Neutron's API
// takes it; nil and "" fields are left out (null).
type SecurityGroupRule struct {
	// Direction is "ingress" or "egress".
	Direction string
	// EtherType is "IPv4" (default) or "IPv6".
	EtherType string
	// Protocol: "" is any.
	Protocol string
	// PortRangeMin and PortRangeMax: for ICMP, the type and the code.
	PortRangeMin, PortRangeMax *int
	RemoteIPPrefix             string
	RemoteGroupID              string
	RemoteAddressGroupID       string
}

// CreateGroup creates a security group of a project, stateful or not;
// Neutron gives it its default egress rules (IPv4 and IPv6, anywhere).
func (l *Lab) CreateGroup(ctx context.Context, projectID, name string, stateful bool) (string, error) {
	var out struct {
		Group struct {
			ID string `json:"id"`
		} `json:"security_group"`
	}
	err := l.Neutron(ctx, http.MethodPost, "/v2.0/security-groups", map[string]any{"security_group": map[string]any{
		"name": name, "project_id": projectID, "stateful": stateful,
	}}, &out)
	return out.Group.ID, err
}

// AddRule adds a rule to a security group of a project and returns its id.
func (l *Lab) AddRule(ctx context.Context, projectID, groupID string, r SecurityGroupRule) (string, error) {
	body := map[string]any{"security_group_id": groupID, "project_id": projectID, "direction": r.Direction, "ethertype": "IPv4"}
	if r.EtherType != "" {
		body["ethertype"] = r.EtherType
	}
	if r.Protocol != "" {
		body["protocol"] = r.Protocol
	}
	if r.PortRangeMin != nil {
		body["port_range_min"] = *r.PortRangeMin
	}
	if r.PortRangeMax != nil {
		body["port_range_max"] = *r.PortRangeMax
	}
	if r.RemoteIPPrefix != "" {
		body["remote_ip_prefix"] = r.RemoteIPPrefix
	}
	if r.RemoteGroupID != "" {
		body["remote_group_id"] = r.RemoteGroupID
	}
	if r.RemoteAddressGroupID != "" {
		body["remote_address_group_id"] = r.RemoteAddressGroupID
	}
	var out struct {
		Rule struct {
			ID string `json:"id"`
		} `json:"security_group_rule"`
	}
	err := l.create(ctx, "/v2.0/security-group-rules", map[string]any{"security_group_rule": body}, &out, func() (bool, error) {
		var rules struct {
			Rules []map[string]any `json:"security_group_rules"`
		}
		if err := l.Neutron(ctx, http.MethodGet, "/v2.0/security-group-rules?security_group_id="+url.QueryEscape(groupID), nil, &rules); err != nil {
			return false, err
		}
		for _, rule := range rules.Rules {
			same := true
			for k, v := range body {
				same = same && fmt.Sprint(rule[k]) == fmt.Sprint(v)
			}
			if same {
				out.Rule.ID, _ = rule["id"].(string)
				return true, nil
			}
		}
		return false, nil
	})
	return out.Rule.ID, err
}

// DeleteRules deletes the rules of a security group in one direction
// ("egress": Neutron's default rules, to make a stateless group drop
// replies).
func (l *Lab) DeleteRules(ctx context.Context, groupID, direction string) error {
	var out struct {
		Rules []struct {
			ID string `json:"id"`
		} `json:"security_group_rules"`
	}
	q := url.Values{"security_group_id": {groupID}, "direction": {direction}}
	if err := l.Neutron(ctx, http.MethodGet, "/v2.0/security-group-rules?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	for _, r := range out.Rules {
		if err := l.Neutron(ctx, http.MethodDelete, "/v2.0/security-group-rules/"+r.ID, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

// CreateAddressGroup creates an address group of a project holding the
// given prefixes (inside 198.18.0.0/15 only).
func (l *Lab) CreateAddressGroup(ctx context.Context, projectID, name string, prefixes ...string) (string, error) {
	for _, p := range prefixes {
		pr, err := netip.ParsePrefix(p)
		if err != nil {
			return "", err
		}
		if !labRange.Contains(pr.Addr()) || pr.Bits() < labRange.Bits() {
			return "", fmt.Errorf("address group prefix %s: the lab's addresses must lie inside %s", p, labRange)
		}
	}
	var out struct {
		Group struct {
			ID string `json:"id"`
		} `json:"address_group"`
	}
	err := l.Neutron(ctx, http.MethodPost, "/v2.0/address-groups", map[string]any{"address_group": map[string]any{
		"name": name, "project_id": projectID, "addresses": prefixes,
	}}, &out)
	return out.Group.ID, err
}
