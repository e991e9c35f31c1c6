package standin

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
)

// The Neutron part of the stand-in, served only once EnableNeutron was
// called (the catalog then lists a network endpoint): the servers' ports
// and their security group, derived from the servers, in the shape the
// real neutron-server (Zed, ML2/OVN) answers the exporter's queries
// (inventory/testdata/neutron/real_ports_page1.json). Every fixed address
// of a server with a host is one port: device_id the server's id,
// device_owner compute:<availability zone>, network_id a stable UUID per
// network name, bound to the server's host with binding:vif_type ovs,
// status ACTIVE (PortStatus and VIFType override those), in one security
// group that admits ICMP echo from anywhere.

// DemoSecurityGroupID is the security group of every port.
var DemoSecurityGroupID = stableUUID("security-group", "default")

// NetworkID is the stable network id of a network name.
func NetworkID(name string) string { return stableUUID("network", name) }

// stableUUID is a UUID (version 5 layout) derived from kind and name.
func stableUUID(kind, name string) string {
	h := sha1.Sum([]byte("openstack-vm-exporter standin " + kind + "\x00" + name))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// EnableNeutron lists a network endpoint in the tokens' catalog from now
// on and answers its port, security group and address group listings.
func (c *Cloud) EnableNeutron() { c.neutron.Store(true) }

func (c *Cloud) neutronOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !c.neutron.Load() {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}
}

// networkVersions is neutron-server's version document.
func (c *Cloud) networkVersions(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"versions": []map[string]any{{"id": "v2.0", "status": "CURRENT",
		"links": []map[string]string{{"rel": "self", "href": c.URL + "/networking/v2.0/"}}}}})
}

// neutronError writes an error the way neutron-server does.
func neutronError(w http.ResponseWriter, status int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"NeutronError": map[string]any{"type": kind, "message": msg, "detail": ""}})
}

// portsOf derives a server's ports.
func portsOf(s *Server) []map[string]any {
	if s.Deleted || s.Host == "" {
		return nil
	}
	status, vif := "ACTIVE", "ovs"
	if s.PortStatus != "" {
		status = s.PortStatus
	}
	if s.VIFType != "" {
		vif = s.VIFType
	}
	owner := "compute:" + s.AvailabilityZone
	if s.AvailabilityZone == "" {
		owner = "compute:nova"
	}
	var out []map[string]any
	for i, a := range s.Addresses {
		addr, err := netip.ParseAddr(a.Addr)
		if a.Type != "fixed" || err != nil {
			continue
		}
		version := "4"
		if addr.Is6() {
			version = "6"
		}
		out = append(out, map[string]any{
			"id":                    stableUUID("port", s.ID+"/"+strconv.Itoa(i)),
			"network_id":            NetworkID(a.Network),
			"status":                status,
			"device_id":             s.ID,
			"device_owner":          owner,
			"fixed_ips":             []map[string]any{{"subnet_id": stableUUID("subnet", a.Network+"/"+version), "ip_address": addr.String()}},
			"security_groups":       []string{DemoSecurityGroupID},
			"binding:host_id":       s.Host,
			"binding:vif_type":      vif,
			"port_security_enabled": true,
			"tenant_id":             s.ProjectID,
			"project_id":            s.ProjectID,
			"admin_state_up":        true,
			"name":                  "",
		})
	}
	return out
}

// selectFields keeps the fields asked for (all without fields=), as
// Neutron does.
func selectFields(obj map[string]any, fields []string) map[string]any {
	if len(fields) == 0 {
		return obj
	}
	out := make(map[string]any, len(fields))
	for _, f := range fields {
		if v, ok := obj[f]; ok {
			out[f] = v
		}
	}
	return out
}

// matches is Neutron's filter: a repeated filter is any of its values.
func matches(obj map[string]any, q url.Values, keys ...string) bool {
	for _, k := range keys {
		vs, ok := q[k]
		if !ok {
			continue
		}
		v, _ := obj[k].(string)
		if !slices.Contains(vs, v) {
			return false
		}
	}
	return true
}

// listPorts answers GET /v2.0/ports: filters binding:host_id,
// device_owner, device_id, network_id, id, status; fields; limit and
// marker, sorted by id, with ports_links.
func (c *Cloud) listPorts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			neutronError(w, 400, "HTTPBadRequest", "Bad limit request: Limit must be an integer 0 or greater and not '"+l+"'.")
			return
		}
		limit = n
	}
	c.mu.Lock()
	var all []map[string]any
	for _, s := range c.servers {
		for _, p := range portsOf(s) {
			if matches(p, q, "binding:host_id", "device_owner", "device_id", "network_id", "id", "status") {
				all = append(all, p)
			}
		}
	}
	c.mu.Unlock()
	slices.SortFunc(all, func(a, b map[string]any) int {
		switch x, y := a["id"].(string), b["id"].(string); {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	start := 0
	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(all, func(p map[string]any) bool { return p["id"] == m })
		if i < 0 {
			neutronError(w, 404, "PortNotFound", "Port "+m+" could not be found.")
			return
		}
		start = i + 1
	}
	end := len(all)
	if limit > 0 {
		end = min(end, start+limit)
	}
	page := []map[string]any{}
	for _, p := range all[start:end] {
		page = append(page, selectFields(p, q["fields"]))
	}
	body := map[string]any{"ports": page}
	if limit > 0 && end < len(all) && len(page) > 0 {
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("marker", all[end-1]["id"].(string))
		body["ports_links"] = []map[string]string{{"rel": "next", "href": c.URL + "/networking/v2.0/ports?" + next.Encode()}}
	}
	writeJSON(w, body)
}

// securityGroups are the stand-in's groups: the one of every port, which
// admits ICMP (IPv4 and IPv6) from anywhere, as an operator's "allow ping"
// rules do, and every egress.
func securityGroups() []map[string]any {
	rule := func(n int, direction, ethertype string, protocol any, prefix any) map[string]any {
		return map[string]any{"id": stableUUID("rule", strconv.Itoa(n)), "security_group_id": DemoSecurityGroupID,
			"direction": direction, "ethertype": ethertype, "protocol": protocol, "port_range_min": nil, "port_range_max": nil,
			"remote_ip_prefix": prefix, "remote_group_id": nil, "remote_address_group_id": nil, "normalized_cidr": prefix,
			"description": "", "tenant_id": "demo-project-web", "project_id": "demo-project-web"}
	}
	return []map[string]any{{
		"id": DemoSecurityGroupID, "name": "default", "description": "Default security group", "stateful": true,
		"tenant_id": "demo-project-web", "project_id": "demo-project-web",
		"security_group_rules": []map[string]any{
			rule(1, "egress", "IPv4", nil, nil), rule(2, "egress", "IPv6", nil, nil),
			rule(3, "ingress", "IPv4", "icmp", "0.0.0.0/0"), rule(4, "ingress", "IPv6", "ipv6-icmp", "::/0"),
		},
	}}
}

// listSecurityGroups answers GET /v2.0/security-groups: filter id
// (repeated), fields.
func (c *Cloud) listSecurityGroups(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	out := []map[string]any{}
	for _, g := range securityGroups() {
		if matches(g, q, "id", "name") {
			out = append(out, selectFields(g, q["fields"]))
		}
	}
	writeJSON(w, map[string]any{"security_groups": out})
}

// listAddressGroups answers GET /v2.0/address-groups: there are none.
func (c *Cloud) listAddressGroups(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"address_groups": []any{}})
}

func writeJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}
