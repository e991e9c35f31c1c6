package inventory

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func decodeServer(t *testing.T, js string, keep ...string) Server {
	t.Helper()
	var n novaServer
	if err := json.Unmarshal([]byte(js), &n); err != nil {
		t.Fatalf("decoding: %v", err)
	}
	return n.toServer(keep)
}

func TestToServer(t *testing.T) {
	s := decodeServer(t, `{
		"id": "8c0b5bb4-aaaa-4a5e-9d1e-0123456789ab", "name": "web-1", "tenant_id": "p1", "status": "ACTIVE",
		"updated": "2026-11-24T10:00:00Z",
		"OS-EXT-SRV-ATTR:host": "cmp-1", "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:task_state": null,
		"OS-EXT-STS:power_state": 1, "OS-EXT-AZ:availability_zone": "nova", "host_status": "UP",
		"flavor": {"original_name": "m1.small", "vcpus": 1}, "image": {"id": "img-1"},
		"metadata": {"monitoring_icmp": "off", "owner": "x"},
		"addresses": {
			"provider": [
				{"version": 4, "addr": "198.18.0.10", "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"},
				{"version": 6, "addr": "2001:2::10", "OS-EXT-IPS:type": "fixed"}
			],
			"private": [
				{"version": 4, "addr": "10.0.0.5", "OS-EXT-IPS:type": "fixed"},
				{"version": 4, "addr": "198.19.0.10", "OS-EXT-IPS:type": "floating"}
			]
		}
	}`, "monitoring_icmp")
	if s.ID != "8c0b5bb4-aaaa-4a5e-9d1e-0123456789ab" || s.Name != "web-1" || s.ProjectID != "p1" || s.Host != "cmp-1" {
		t.Errorf("identity: %+v", s)
	}
	if s.Status != "ACTIVE" || s.VMState != "active" || s.TaskState != "" || s.PowerState != "running" {
		t.Errorf("state: %+v", s)
	}
	if s.Flavor != "m1.small" || s.ImageID != "img-1" || s.AvailabilityZone != "nova" || s.HostStatus != "UP" {
		t.Errorf("info: %+v", s)
	}
	if s.Updated.IsZero() {
		t.Error("updated not parsed")
	}
	if len(s.Metadata) != 1 || s.Metadata["monitoring_icmp"] != "off" {
		t.Errorf("metadata kept: %v", s.Metadata)
	}
	want := []string{"private/10.0.0.5/fixed", "private/198.19.0.10/floating", "provider/198.18.0.10/fixed", "provider/2001:2::10/fixed"}
	if len(s.Addresses) != len(want) {
		t.Fatalf("addresses: %+v", s.Addresses)
	}
	for i, a := range s.Addresses {
		if got := a.Network + "/" + a.Addr.String() + "/" + a.Type; got != want[i] {
			t.Errorf("address %d = %s, want %s", i, got, want[i])
		}
	}
}

func TestToServerOddInput(t *testing.T) {
	long := strings.Repeat("é", 2000)
	s := decodeServer(t, `{
		"id": "x", "name": "`+long+`", "status": "error",
		"OS-EXT-STS:power_state": "4", "OS-EXT-STS:task_state": "deleting",
		"flavor": {"id": "1"}, "image": "",
		"addresses": {
			"net": [
				{"addr": "not-an-ip", "OS-EXT-IPS:type": "fixed"},
				{"addr": " 198.18.0.7 "},
				{"addr": "::ffff:198.18.0.8", "OS-EXT-IPS:type": "fixed"},
				"garbage",
				{"addr": 42}
			]
		},
		"metadata": ["not", "a", "map"]
	}`, "monitoring_icmp")
	if s.Status != "ERROR" || s.PowerState != "shutdown" || s.TaskState != "deleting" {
		t.Errorf("state: %+v", s)
	}
	if s.Flavor != "1" || s.ImageID != "" {
		t.Errorf("flavor/image: %q %q", s.Flavor, s.ImageID)
	}
	if len(s.Name) > maxLabelBytes || !utf8.ValidString(s.Name) {
		t.Errorf("name not cut at a rune boundary: %d bytes", len(s.Name))
	}
	if len(s.Addresses) != 3 {
		t.Fatalf("addresses: %+v", s.Addresses)
	}
	byRaw := map[string]Address{}
	for _, a := range s.Addresses {
		byRaw[strings.TrimSpace(a.Raw)] = a
	}
	if a := byRaw["not-an-ip"]; a.Addr.IsValid() {
		t.Errorf("not-an-ip parsed as %v", a.Addr)
	}
	if a := byRaw["198.18.0.7"]; a.Addr != netip.MustParseAddr("198.18.0.7") || a.Type != "" {
		t.Errorf("untyped address: %+v", a)
	}
	if a := byRaw["::ffff:198.18.0.8"]; a.Addr != netip.MustParseAddr("198.18.0.8") {
		t.Errorf("mapped address not unmapped: %+v", a)
	}
	if s.Metadata != nil {
		t.Errorf("metadata from a list: %v", s.Metadata)
	}
}

func TestClean(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"quote\" back\\slash {brace} \n newline", "quote\" back\\slash {brace} \n newline"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
	} {
		if got := Clean(tc.in); got != tc.want {
			t.Errorf("Clean(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := Clean(strings.Repeat("a", 5000)); len(got) != maxLabelBytes {
		t.Errorf("long string cut to %d bytes", len(got))
	}
}

func TestPowerStateName(t *testing.T) {
	for code, want := range map[int]string{0: "nostate", 1: "running", 3: "paused", 4: "shutdown", 6: "crashed", 7: "suspended", 2: "unknown", 99: "unknown"} {
		if got := powerStateName(code); got != want {
			t.Errorf("powerStateName(%d) = %q, want %q", code, got, want)
		}
	}
}

// FuzzServer: whatever Nova sends for a server, decoding it gives clean
// label values and never panics.
func FuzzServer(f *testing.F) {
	seed, _ := os.ReadFile("testdata/nova/server_show.json")
	f.Add(seed)
	f.Add([]byte(`{"server": {"id": "x", "addresses": {"n": [{"addr": "::ffff:1.2.3.4"}, "x", {"addr": 3}]}, "OS-EXT-STS:power_state": "7"}}`))
	f.Add([]byte(`{"server": {"name": "\xff\xfe", "addresses": [], "metadata": {"monitoring_icmp": 0}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var body struct {
			Server novaServer `json:"server"`
		}
		if json.Unmarshal(data, &body) != nil {
			return
		}
		s := body.Server.toServer([]string{"monitoring_icmp"})
		for _, v := range []string{s.ID, s.Name, s.ProjectID, s.Host, s.Status, s.VMState, s.TaskState, s.PowerState, s.Flavor, s.ImageID} {
			if !utf8.ValidString(v) || len(v) > maxLabelBytes {
				t.Fatalf("unclean label value %q", v)
			}
		}
		for _, a := range s.Addresses {
			if a.Addr.IsValid() && a.Addr.Is4In6() {
				t.Fatalf("mapped address kept: %v", a.Addr)
			}
		}
	})
}
