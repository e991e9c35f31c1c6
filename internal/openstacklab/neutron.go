package openstacklab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// The only range tenant subnets of the lab may use (network safety: the
// benchmarking range, never a private one that could be real).
var labRange = netip.MustParsePrefix("198.18.0.0/15")

// NetworkURL is Neutron's endpoint (the API is under /v2.0).
func (l *Lab) NetworkURL() string { return fmt.Sprintf("http://127.0.0.1:%d", l.ports["neutron"]) }

// Network is a Neutron network.
type Network struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	ProjectID string `json:"project_id"`
	MTU       int    `json:"mtu"`
	Status    string `json:"status"`
}

// Subnet is a Neutron subnet.
type Subnet struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	CIDR      string `json:"cidr"`
	GatewayIP string `json:"gateway_ip"`
	IPVersion int    `json:"ip_version"`
}

// FixedIP is one fixed address of a port.
type FixedIP struct {
	SubnetID  string `json:"subnet_id,omitempty"`
	IPAddress string `json:"ip_address,omitempty"`
}

// Port is a Neutron port as the admin sees it.
type Port struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	NetworkID      string    `json:"network_id"`
	ProjectID      string    `json:"project_id"`
	MAC            string    `json:"mac_address"`
	FixedIPs       []FixedIP `json:"fixed_ips"`
	DeviceID       string    `json:"device_id"`
	DeviceOwner    string    `json:"device_owner"`
	HostID         string    `json:"binding:host_id"`
	VIFType        string    `json:"binding:vif_type"`
	Status         string    `json:"status"`
	SecurityGroups []string  `json:"security_groups"`
	PortSecurity   *bool     `json:"port_security_enabled"`
}

// PortSpec is a VM port to create, as Nova creates one for a server.
type PortSpec struct {
	NetworkID string
	// ServerID becomes device_id (device_owner compute:nova).
	ServerID string
	// Host becomes binding:host_id: the hypervisor (an OVN chassis's
	// hostname) that binds the port.
	Host string
	// ProjectID defaults to the network's project.
	ProjectID string
	// FixedIPs: addresses to ask for (empty: Neutron picks one per subnet).
	FixedIPs []netip.Addr
	// SecurityGroups: group ids (nil: the project's default group).
	SecurityGroups []string
	// NoFixedIPs creates a port without any address.
	NoFixedIPs bool
	Name       string
	// NoPortSecurity creates the port with port_security_enabled false
	// (and no security group, as Neutron requires).
	NoPortSecurity bool
}

// ProjectID is the id of a Keystone project ("lab-project" is the one
// the lab's reader belongs to).
func (l *Lab) ProjectID(ctx context.Context, name string) (string, error) {
	return l.keystoneFind(ctx, "projects", name)
}

// CreateNetwork creates a tenant network (Geneve) owned by a project
// (default: the lab's "lab-project").
func (l *Lab) CreateNetwork(ctx context.Context, name, projectID string) (Network, error) {
	if projectID == "" {
		var err error
		if projectID, err = l.keystoneFind(ctx, "projects", "lab-project"); err != nil {
			return Network{}, err
		}
	}
	var out struct {
		Network Network `json:"network"`
	}
	err := l.Neutron(ctx, http.MethodPost, "/v2.0/networks", map[string]any{"network": map[string]any{
		"name": name, "project_id": projectID, "admin_state_up": true,
	}}, &out)
	return out.Network, err
}

// CreateSubnet creates an IPv4 subnet (inside 198.18.0.0/15 only) on a
// network, with DHCP enabled as OVN needs it to give its metadata port an
// address on the subnet.
func (l *Lab) CreateSubnet(ctx context.Context, networkID, cidr string) (Subnet, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return Subnet{}, err
	}
	if !p.Addr().Is4() || p.Bits() < labRange.Bits() || !labRange.Contains(p.Addr()) {
		return Subnet{}, fmt.Errorf("subnet %s: the lab's tenant subnets must lie inside %s", cidr, labRange)
	}
	var net struct {
		Network Network `json:"network"`
	}
	if err := l.Neutron(ctx, http.MethodGet, "/v2.0/networks/"+networkID, nil, &net); err != nil {
		return Subnet{}, err
	}
	var out struct {
		Subnet Subnet `json:"subnet"`
	}
	err = l.create(ctx, "/v2.0/subnets", map[string]any{"subnet": map[string]any{
		"network_id": networkID, "project_id": net.Network.ProjectID, "cidr": p.Masked().String(),
		"ip_version": 4, "enable_dhcp": true,
	}}, &out, func() (bool, error) {
		var found struct {
			Subnets []Subnet `json:"subnets"`
		}
		q := url.Values{"network_id": {networkID}, "cidr": {p.Masked().String()}}
		if err := l.Neutron(ctx, http.MethodGet, "/v2.0/subnets?"+q.Encode(), nil, &found); err != nil || len(found.Subnets) == 0 {
			return false, err
		}
		out.Subnet = found.Subnets[0]
		return true, nil
	})
	return out.Subnet, err
}

// CreatePort creates a VM port as Nova does for a server:
// device_owner compute:nova, device_id the server's id, binding:host_id
// the hypervisor.
func (l *Lab) CreatePort(ctx context.Context, spec PortSpec) (Port, error) {
	body, err := l.portBody(ctx, spec)
	if err != nil {
		return Port{}, err
	}
	var out struct {
		Port Port `json:"port"`
	}
	err = l.create(ctx, "/v2.0/ports", map[string]any{"port": body}, &out, func() (found bool, err error) {
		out.Port, found, err = l.findPort(ctx, spec)
		return found, err
	})
	return out.Port, err
}

// create POSTs a new resource. Neutron on sqlite can answer 500 after it
// committed (its workers all write; "database is locked"): a blind retry
// would then make a second one, or fail as a duplicate. Before trying
// again, find looks for what the failed attempt made (and fills the
// answer in when it did).
func (l *Lab) create(ctx context.Context, path string, body, out any, find func() (bool, error)) error {
	for try := 0; ; try++ {
		err := l.neutron(ctx, http.MethodPost, path, body, out, 0)
		var ne *neutronError
		if !errors.As(err, &ne) || ne.code != http.StatusInternalServerError || try == 3 {
			return err
		}
		if found, err := find(); err != nil || found {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(try+1) * 500 * time.Millisecond):
		}
	}
}

// portBody is the request body of a VM port (spec's network's project when
// it names none).
func (l *Lab) portBody(ctx context.Context, spec PortSpec) (map[string]any, error) {
	body := map[string]any{
		"network_id": spec.NetworkID, "device_owner": "compute:nova", "device_id": spec.ServerID,
		"binding:host_id": spec.Host, "admin_state_up": true,
	}
	if spec.Name != "" {
		body["name"] = spec.Name
	}
	if spec.ProjectID != "" {
		body["project_id"] = spec.ProjectID
	} else {
		var net struct {
			Network Network `json:"network"`
		}
		if err := l.Neutron(ctx, http.MethodGet, "/v2.0/networks/"+spec.NetworkID, nil, &net); err != nil {
			return nil, err
		}
		body["project_id"] = net.Network.ProjectID
	}
	switch {
	case spec.NoFixedIPs:
		body["fixed_ips"] = []FixedIP{}
	case len(spec.FixedIPs) > 0:
		var ips []FixedIP
		for _, a := range spec.FixedIPs {
			if !labRange.Contains(a) {
				return nil, fmt.Errorf("port address %s: the lab's addresses must lie inside %s", a, labRange)
			}
			ips = append(ips, FixedIP{IPAddress: a.String()})
		}
		body["fixed_ips"] = ips
	}
	if spec.SecurityGroups != nil {
		body["security_groups"] = spec.SecurityGroups
	}
	if spec.NoPortSecurity {
		body["port_security_enabled"] = false
		body["security_groups"] = []string{}
	}
	return body, nil
}

// findPort looks for a port CreatePort may already have made from spec:
// same server, network, name and (when given) addresses.
func (l *Lab) findPort(ctx context.Context, spec PortSpec) (Port, bool, error) {
	ports, err := l.ListPorts(ctx, url.Values{"device_id": {spec.ServerID}, "network_id": {spec.NetworkID}})
	if err != nil {
		return Port{}, false, err
	}
	for _, p := range ports {
		if p.Name != spec.Name {
			continue
		}
		have := map[string]bool{}
		for _, ip := range p.FixedIPs {
			have[ip.IPAddress] = true
		}
		all := true
		for _, a := range spec.FixedIPs {
			all = all && have[a.String()]
		}
		if all {
			return p, true, nil
		}
	}
	return Port{}, false, nil
}

// GetPort reads a port as the admin.
func (l *Lab) GetPort(ctx context.Context, id string) (Port, error) {
	var out struct {
		Port Port `json:"port"`
	}
	err := l.Neutron(ctx, http.MethodGet, "/v2.0/ports/"+id, nil, &out)
	return out.Port, err
}

// ListPorts lists ports as the admin with query filters
// (e.g. binding:host_id, network_id, device_owner).
func (l *Lab) ListPorts(ctx context.Context, filters url.Values) ([]Port, error) {
	var out struct {
		Ports []Port `json:"ports"`
	}
	err := l.Neutron(ctx, http.MethodGet, "/v2.0/ports?"+filters.Encode(), nil, &out)
	return out.Ports, err
}

// DeletePort deletes a port, as Nova does when a server goes.
func (l *Lab) DeletePort(ctx context.Context, id string) error {
	return l.Neutron(ctx, http.MethodDelete, "/v2.0/ports/"+id, nil, nil)
}

// CreateSecurityGroup creates a security group of a project. With
// allowICMP it admits every ICMPv4 packet from anywhere: the echo requests
// of an OVN metadata namespace come from the metadata port's address,
// which no group covers, so a VM in the project's default group alone
// never answers them. Egress is Neutron's default (everything).
func (l *Lab) CreateSecurityGroup(ctx context.Context, projectID, name string, allowICMP bool) (string, error) {
	var out struct {
		Group struct {
			ID string `json:"id"`
		} `json:"security_group"`
	}
	if err := l.Neutron(ctx, http.MethodPost, "/v2.0/security-groups", map[string]any{"security_group": map[string]any{
		"name": name, "project_id": projectID,
	}}, &out); err != nil {
		return "", err
	}
	if allowICMP {
		if err := l.Neutron(ctx, http.MethodPost, "/v2.0/security-group-rules", map[string]any{"security_group_rule": map[string]any{
			"security_group_id": out.Group.ID, "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp",
			"remote_ip_prefix": "0.0.0.0/0", "project_id": projectID,
		}}, nil); err != nil {
			return "", err
		}
	}
	return out.Group.ID, nil
}

// WaitOVNController waits until Neutron lists an alive "OVN Controller
// agent" for host: ports bound to host bind (rather than fail) only then.
func (l *Lab) WaitOVNController(ctx context.Context, host string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var out struct {
			Agents []struct {
				Alive bool   `json:"alive"`
				Type  string `json:"agent_type"`
			} `json:"agents"`
		}
		err := l.Neutron(ctx, http.MethodGet, "/v2.0/agents?"+url.Values{"host": {host}}.Encode(), nil, &out)
		if err == nil {
			for _, a := range out.Agents {
				if a.Alive && a.Type == "OVN Controller agent" {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("neutron lists no alive OVN controller agent on %s after %v (last error %v; agents %+v)", host, timeout, err, out.Agents)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// PortAddresses are a port's fixed addresses as Seed gives them to a
// server: on Nova's network named network, with the port's id, network
// id, MAC and subnet, so that Nova's network_info describes that port.
func PortAddresses(network string, p Port, subnets ...Subnet) []Address {
	cidr := map[string]string{}
	for _, s := range subnets {
		cidr[s.ID] = s.CIDR
	}
	var as []Address
	for _, ip := range p.FixedIPs {
		as = append(as, Address{Network: network, Address: ip.IPAddress, Type: "fixed", MAC: p.MAC,
			PortID: p.ID, NetworkID: p.NetworkID, CIDR: cidr[ip.SubnetID]})
	}
	return as
}

// SetNeutronPolicy replaces the overrides of Neutron's policy
// (neutron-policy.yaml, YAML or JSON rules), e.g. for a reader role:
//
//	"get_port:binding:host_id": "role:admin or role:vm-exporter"
//
// Neutron reads the file again at its next policy check.
func (l *Lab) SetNeutronPolicy(rules string) error {
	path := filepath.Join(l.opts.Dir, "neutron-policy.yaml")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(rules), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Neutron makes one call to Neutron's API as the lab's admin; out, if not
// nil, receives the decoded answer.
func (l *Lab) Neutron(ctx context.Context, method, path string, body, out any) error {
	return l.neutron(ctx, method, path, body, out, 3)
}

// neutronError is Neutron's refusal of a call, with its status code.
type neutronError struct {
	method, path string
	code         int
	body         []byte
}

func (e *neutronError) Error() string {
	return fmt.Sprintf("neutron %s %s: %d: %s", e.method, e.path, e.code, e.body)
}

// neutron is Neutron with the number of times a 500 is tried again.
func (l *Lab) neutron(ctx context.Context, method, path string, body, out any, retries500 int) error {
	token, err := l.adminToken(ctx, false)
	if err != nil {
		return err
	}
	code, data, err := l.NeutronAs(ctx, token, method, path, body)
	// Neutron on sqlite sometimes fails a write with "database is locked"
	// (its worker processes all write): usually a 500 whose transaction
	// rolled back. Tried again a few times (CreatePort, whose 500 can come
	// after the port was made, checks first instead).
	for try := 0; err == nil && code == http.StatusInternalServerError && try < retries500; try++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(try+1) * 500 * time.Millisecond):
		}
		code, data, err = l.NeutronAs(ctx, token, method, path, body)
	}
	if err == nil && code == http.StatusUnauthorized {
		// Revoked or expired: log in again, once.
		if token, err = l.adminToken(ctx, true); err != nil {
			return err
		}
		code, data, err = l.NeutronAs(ctx, token, method, path, body)
	}
	if err != nil {
		return err
	}
	if code >= 300 {
		return &neutronError{method: method, path: path, code: code, body: bytes.TrimSpace(data)}
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	return json.Unmarshal(data, out)
}

// NeutronAs makes one call to Neutron's API with a token and returns the
// status code and body, for tests that look at the API themselves (a
// reader's view, a policy's effect).
func (l *Lab) NeutronAs(ctx context.Context, token, method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.NetworkURL()+path, r)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, data, err
}

// UserToken logs in as a user scoped to a project (password auth, default
// domain), e.g. a reader for a least-privilege test.
func (l *Lab) UserToken(ctx context.Context, user, password, project string) (string, error) {
	return l.login(ctx, passwordAuth(user, password, project), nil)
}

// adminToken is an admin token kept for the lab's own Neutron calls (a
// login per call costs Keystone a password check each time).
func (l *Lab) adminToken(ctx context.Context, renew bool) (string, error) {
	l.mu.Lock()
	tok, at := l.neutronToken, l.neutronTokenAt
	l.mu.Unlock()
	if !renew && tok != "" && time.Since(at) < 30*time.Minute {
		return tok, nil
	}
	tok, err := l.Token(ctx)
	if err != nil {
		return "", err
	}
	l.mu.Lock()
	l.neutronToken, l.neutronTokenAt = tok, time.Now()
	l.mu.Unlock()
	return tok, nil
}
