//go:build lab

package openstacklab

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestRealNeutron creates a network, a subnet and a VM port through the real
// Neutron as Nova does, seeds a Nova server with the port's address, and
// checks what Nova and Neutron then answer, and what a policy override
// changes for a reader.
func TestRealNeutron(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lab := StartForTest(t, Options{})
	defer func() {
		if t.Failed() {
			t.Logf("openstack logs:\n%s", lab.Logs())
		}
	}()
	t.Logf("started in %v (warm cache: %v)", lab.Started, lab.Warm)
	last := time.Now()
	step := func(name string) { t.Logf("%s: %v", name, time.Since(last)); last = time.Now() }

	if _, err := lab.CreateSubnet(ctx, "00000000-0000-4000-8000-000000000000", "10.0.0.0/24"); err == nil || !strings.Contains(err.Error(), "198.18.0.0/15") {
		t.Errorf("a subnet outside 198.18.0.0/15: %v, want refused", err)
	}
	net, err := lab.CreateNetwork(ctx, "tenant-a", "")
	if err != nil {
		t.Fatal(err)
	}
	step("network")
	sub, err := lab.CreateSubnet(ctx, net.ID, "198.18.7.0/24")
	if err != nil {
		t.Fatal(err)
	}
	step("subnet")
	sg, err := lab.CreateSecurityGroup(ctx, net.ProjectID, "icmp", true)
	if err != nil {
		t.Fatal(err)
	}
	step("security group")
	const server = "20000000-0000-4000-8000-000000000001"
	port, err := lab.CreatePort(ctx, PortSpec{NetworkID: net.ID, ServerID: server, Host: "cmp-0",
		FixedIPs: []netip.Addr{netip.MustParseAddr("198.18.7.11")}, SecurityGroups: []string{sg}})
	if err != nil {
		t.Fatal(err)
	}
	if port.HostID != "cmp-0" || port.DeviceOwner != "compute:nova" || port.DeviceID != server ||
		len(port.FixedIPs) != 1 || port.FixedIPs[0].IPAddress != "198.18.7.11" || port.MAC == "" {
		t.Errorf("port as created: %+v", port)
	}
	step("port")
	// No chassis is named cmp-0: Neutron could not bind the port.
	if port.VIFType != "binding_failed" {
		t.Errorf("port bound to a host without an OVN controller: vif_type %q, want binding_failed", port.VIFType)
	}
	// OVN's metadata port of the network, with an address on the subnet.
	meta, err := lab.ListPorts(ctx, url.Values{"network_id": {net.ID}, "device_owner": {"network:distributed"}})
	if err != nil || len(meta) != 1 || meta[0].DeviceID != "ovnmeta-"+net.ID || len(meta[0].FixedIPs) != 1 {
		t.Errorf("metadata port: %+v %v", meta, err)
	}
	// Neutron wrote the port into OVN's northbound database.
	if out, err := lab.OVNCtl(ctx, "ovn-nbctl", "--bare", "--columns=name", "find", "Logical_Switch_Port", "name="+port.ID); err != nil || strings.TrimSpace(out) != port.ID {
		t.Errorf("the port in OVN's northbound database: %q %v", out, err)
	}
	listed, err := lab.ListPorts(ctx, url.Values{"binding:host_id": {"cmp-0"}})
	if err != nil || len(listed) != 1 || listed[0].ID != port.ID {
		t.Errorf("ports of cmp-0: %+v %v", listed, err)
	}

	step("lists")
	// Nova's server, with the port's address, MAC and security group.
	if _, err := lab.Seed(ctx, []Server{{ID: server, Name: "vm-a", Host: "cmp-0", VMState: "active", PowerState: 1,
		ProjectID: net.ProjectID, Addresses: PortAddresses("tenant-a", port, sub)}}); err != nil {
		t.Fatal(err)
	}
	step("seed")
	tok, err := lab.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := lab.Get(ctx, tok, "2.69", "/servers/"+server)
	if err != nil || code != 200 {
		t.Fatalf("server: %d %v %s", code, err, body)
	}
	var shown struct {
		Server struct {
			Addresses map[string][]struct {
				Addr string `json:"addr"`
				MAC  string `json:"OS-EXT-IPS-MAC:mac_addr"`
			} `json:"addresses"`
			SecurityGroups []struct {
				Name string `json:"name"`
			} `json:"security_groups"`
		} `json:"server"`
	}
	if err := json.Unmarshal(body, &shown); err != nil {
		t.Fatal(err)
	}
	a := shown.Server.Addresses["tenant-a"]
	if len(a) != 1 || a[0].Addr != "198.18.7.11" || a[0].MAC != port.MAC {
		t.Errorf("server addresses: %s", body)
	}
	if len(shown.Server.SecurityGroups) != 1 || shown.Server.SecurityGroups[0].Name != "icmp" {
		t.Errorf("server security groups (from Neutron): %s", body)
	}

	step("nova show")
	// A reader of the owning project sees the port without its binding; a
	// policy override shows it.
	reader, err := lab.UserToken(ctx, "lab-reader", ReaderPassword, "lab-project")
	if err != nil {
		t.Fatal(err)
	}
	readerView := func() map[string]any {
		t.Helper()
		code, body, err := lab.NeutronAs(ctx, reader, http.MethodGet, "/v2.0/ports?binding:host_id=cmp-0", nil)
		if err != nil || code != 200 {
			t.Fatalf("reader's ports: %d %v %s", code, err, body)
		}
		var out struct {
			Ports []map[string]any `json:"ports"`
		}
		json.Unmarshal(body, &out)
		if len(out.Ports) != 1 {
			t.Fatalf("reader's ports of cmp-0: %s", body)
		}
		return out.Ports[0]
	}
	if p := readerView(); p["binding:host_id"] != nil || p["binding:vif_type"] != nil {
		t.Errorf("reader sees binding:host_id %v, binding:vif_type %v; want null", p["binding:host_id"], p["binding:vif_type"])
	}
	if err := lab.SetNeutronPolicy(`"get_port:binding:host_id": "role:admin or role:reader"
"get_port:binding:vif_type": "role:admin or role:reader"
`); err != nil {
		t.Fatal(err)
	}
	if p := readerView(); p["binding:host_id"] != "cmp-0" || p["binding:vif_type"] != "binding_failed" {
		t.Errorf("with the override, reader sees binding:host_id %v, binding:vif_type %v", p["binding:host_id"], p["binding:vif_type"])
	}
}
