package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

// fakeNeutron answers GET /network/v2.0/ports in process, from the
// recorded-shape pages in testdata/neutron, or with a fault.
type fakeNeutron struct {
	t  *testing.T
	mu sync.Mutex
	// pages are served in order by marker: the first without one.
	pages []string
	fault func(r *http.Request) (status int, body string)
	reqs  []*http.Request
}

func (f *fakeNeutron) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	fault, pages := f.fault, f.pages
	f.mu.Unlock()
	if r.Header.Get("X-Auth-Token") == "" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if fault != nil {
		if status, body := fault(r); status != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
			return
		}
	}
	if r.URL.Path == "/network/" {
		// Neutron's version document, which gophercloud reads to find v2.0.
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"href": "http://`+r.Host+`/network/v2.0/", "rel": "self"}]}]}`)
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/v2.0/ports") {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	i := 0
	if r.URL.Query().Get("marker") != "" {
		i = 1
	}
	if i >= len(pages) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ports": [], "ports_links": []}`)
		return
	}
	raw, err := os.ReadFile("testdata/neutron/" + pages[i])
	if err != nil {
		f.t.Error(err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(bytes.ReplaceAll(raw, []byte("{{base}}"), []byte("http://"+r.Host+"/network")))
}

func (f *fakeNeutron) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// withNeutron is a transport that serves /network/ from neutron in
// process and everything else through next, adding a network endpoint to
// the catalogs Keystone (the stand-in) issues.
type withNeutron struct {
	next    http.RoundTripper
	neutron http.Handler
}

func (w *withNeutron) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, "/network/") {
		rec := httptest.NewRecorder()
		w.neutron.ServeHTTP(rec, req)
		resp := rec.Result()
		resp.Request = req
		return resp, nil
	}
	resp, err := w.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/auth/tokens") || resp.StatusCode != http.StatusCreated {
		return resp, err
	}
	defer resp.Body.Close()
	var body map[string]map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	base := "http://" + req.URL.Host + "/network/"
	var eps []map[string]any
	for _, iface := range []string{"public", "internal", "admin"} {
		eps = append(eps, map[string]any{"id": "network" + iface, "interface": iface, "region": "RegionOne", "region_id": "RegionOne", "url": base})
	}
	body["token"]["catalog"] = append(body["token"]["catalog"].([]any), map[string]any{"id": "network", "type": "network", "name": "neutron", "endpoints": eps})
	b, _ := json.Marshal(body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return resp, nil
}

func neutronInventory(t *testing.T, cloud *standin.Cloud, neutron *fakeNeutron, mutate func(*config.OpenStack)) *Inventory {
	t.Helper()
	cfg := config.Default().OpenStack
	cfg.Scope, cfg.Timeout, cfg.PageSize = "all", 5*time.Second, 2
	if mutate != nil {
		mutate(&cfg)
	}
	env := cloud.Env()
	creds, err := LoadCredentialsFrom(cfg, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(creds, ClientOptions{Transport: &withNeutron{next: http.DefaultTransport, neutron: neutron}})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{OpenStack: cfg, Host: cfg.Host}, client)
}

// The listing asks for the host's ports with the fields it needs, follows
// Neutron's next links, keeps compute ports only, and reads every field,
// odd ones included (no fixed IP, a network id that is not a UUID, no
// port_security_enabled).
func TestListPorts(t *testing.T) {
	cloud := startStandin(t)
	neutron := &fakeNeutron{t: t, pages: []string{"ports_page1.json", "ports_page2.json"}}
	inv := neutronInventory(t, cloud, neutron, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	var reqs []*http.Request
	for _, r := range neutron.requests() {
		if strings.HasSuffix(r.URL.Path, "/ports") {
			reqs = append(reqs, r)
		}
	}
	if len(reqs) != 2 {
		t.Fatalf("%d requests to Neutron, want 2 (two pages)", len(reqs))
	}
	q := reqs[0].URL.Query()
	if q.Get("binding:host_id") != "cmp-1" || q.Get("limit") != "2" || !slices.Equal(q["fields"], portFields) {
		t.Errorf("query %s", reqs[0].URL.RawQuery)
	}
	if reqs[1].URL.Query().Get("marker") != "1b9b7b5d-4d2a-4c68-8b4f-7a2c3d4e5f02" {
		t.Errorf("second page %s", reqs[1].URL.RawQuery)
	}
	snap := inv.Snapshot()
	if !snap.PortsRead || len(snap.Ports) != 3 {
		t.Fatalf("ports %+v (read %v)", snap.Ports, snap.PortsRead)
	}
	p := snap.Ports[0]
	yes := true
	want := Port{ID: "0a8a6a4c-3c1f-4b57-9a3e-6f1b2c3d4e01", DeviceID: "5e6b4c1a-8f0d-4d3b-9a7e-2c1f0e9d8b01", DeviceOwner: "compute:nova",
		NetworkID: "7d3c5b6e-1a2f-4e8d-9c0b-a1b2c3d4e5f6", Status: "ACTIVE", HostID: "cmp-1", VIFType: "ovs",
		FixedIPs: []FixedIP{{"b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e", netip.MustParseAddr("198.18.7.11")},
			{"c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f", netip.MustParseAddr("2001:db8:7::11")}},
		SecurityGroups: []string{"f0e1d2c3-b4a5-4968-8776-5a4b3c2d1e0f"}, PortSecurityEnabled: &yes}
	if p.ID != want.ID || p.DeviceID != want.DeviceID || p.NetworkID != want.NetworkID || p.Status != want.Status ||
		p.HostID != want.HostID || p.VIFType != want.VIFType || !slices.Equal(p.FixedIPs, want.FixedIPs) ||
		!slices.Equal(p.SecurityGroups, want.SecurityGroups) || p.PortSecurityEnabled == nil || !*p.PortSecurityEnabled {
		t.Errorf("port %+v\nwant %+v", p, want)
	}
	if f := snap.Ports[1]; len(f.FixedIPs) != 0 || f.VIFType != "binding_failed" || f.Status != "DOWN" {
		t.Errorf("port without fixed IPs: %+v", f)
	}
	if o := snap.Ports[2]; o.NetworkID != "not-a-uuid" || o.PortSecurityEnabled != nil || len(o.SecurityGroups) != 2 {
		t.Errorf("odd port: %+v", o)
	}
	h := inv.Health()
	if !h.PortsUp || h.PortsLastSuccess.IsZero() || h.SignalReads[SignalPorts] != 1 {
		t.Errorf("health %+v", h)
	}
}

// The page the real neutron-server returned (recorded in the lab): a port
// with a fixed IP, one without, both bound to a host without a chassis.
func TestListPortsRealPage(t *testing.T) {
	cloud := startStandin(t)
	neutron := &fakeNeutron{t: t, pages: []string{"real_ports_page1.json"}}
	inv := neutronInventory(t, cloud, neutron, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	ps := inv.Snapshot().Ports
	if len(ps) != 2 {
		t.Fatalf("ports %+v", ps)
	}
	a, b := ps[0], ps[1]
	if a.DeviceID != "20000000-0000-4000-8000-000000000002" || a.NetworkID != "b134243d-86a3-4f02-af93-d57cacbcdb30" ||
		len(a.FixedIPs) != 1 || a.FixedIPs[0].Addr != netip.MustParseAddr("198.18.7.11") || a.Status != "DOWN" ||
		a.HostID != "cmp-1" || a.VIFType != "binding_failed" || len(a.SecurityGroups) != 1 || a.PortSecurityEnabled == nil {
		t.Errorf("first port %+v", a)
	}
	if len(b.FixedIPs) != 0 || b.DeviceOwner != "compute:nova" {
		t.Errorf("port without fixed IPs %+v", b)
	}
	var marked bool
	for _, r := range neutron.requests() {
		marked = marked || r.URL.Query().Get("marker") == "51721ec4-da63-4950-8908-e26a5e983987"
	}
	if !marked {
		t.Error("the next link of the real page was not followed")
	}
}

// A reader of the project gets binding:host_id and binding:vif_type as
// null: the ports are kept, with those fields empty.
func TestListPortsAsReader(t *testing.T) {
	cloud := startStandin(t)
	neutron := &fakeNeutron{t: t, pages: []string{"ports_reader.json"}}
	inv := neutronInventory(t, cloud, neutron, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	ps := inv.Snapshot().Ports
	if len(ps) != 1 || ps[0].HostID != "" || ps[0].VIFType != "" || len(ps[0].FixedIPs) != 1 {
		t.Errorf("ports %+v", ps)
	}
}

// Neutron failing in any way (5xx, 403 from policy, garbage, a body that
// is not a port listing, a page served twice) fails neither the refresh
// nor Nova's data, keeps the last good ports, and is counted with its
// reason; Nova failing keeps the ports too.
func TestPortsFailureKeepsLastGood(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(standin.Server{ID: "s1", Name: "vm", Host: "cmp-1", VMState: "active", PowerState: 1})
	neutron := &fakeNeutron{t: t, pages: []string{"ports_page1.json", "ports_page2.json"}}
	inv := neutronInventory(t, cloud, neutron, nil)
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	good := inv.Snapshot().Ports
	if len(good) != 3 {
		t.Fatalf("ports %+v", good)
	}
	for i, tc := range []struct {
		name   string
		status int
		body   string
		pages  []string
		reason string
	}{
		{"5xx", 503, `{"NeutronError": {"type": "ServiceUnavailable", "message": "down", "detail": ""}}`, nil, Reason5xx},
		{"403 policy", 403, `{"NeutronError": {"type": "PolicyNotAuthorized", "message": "rule:get_port is disallowed by policy", "detail": ""}}`, nil, ReasonAuth},
		{"garbage", 200, `<html>proxy error</html>`, nil, ReasonDecode},
		{"not a listing", 200, `{"networks": []}`, nil, ReasonDecode},
		{"wrong type", 200, `{"ports": {"id": 1}}`, nil, ReasonDecode},
		{"same page twice", 0, "", []string{"ports_page1.json", "ports_page1.json"}, ReasonDecode},
	} {
		neutron.mu.Lock()
		neutron.fault = func(*http.Request) (int, string) { return tc.status, tc.body }
		if tc.pages != nil {
			neutron.pages = tc.pages
		}
		neutron.mu.Unlock()
		cloud.Update("s1", func(s *standin.Server) { s.Name = "vm-" + tc.name })
		if err := inv.Refresh(ctx); err != nil {
			t.Fatalf("%s: the refresh failed: %v", tc.name, err)
		}
		snap, h := inv.Snapshot(), inv.Health()
		if len(snap.Servers) != 1 || snap.Servers[0].Name != "vm-"+tc.name {
			t.Errorf("%s: servers %+v", tc.name, snap.Servers)
		}
		if !slices.EqualFunc(snap.Ports, good, func(a, b Port) bool { return a.ID == b.ID }) || !snap.PortsRead {
			t.Errorf("%s: ports %+v", tc.name, snap.Ports)
		}
		var failures uint64
		for k, n := range h.SignalErrors {
			if k.API == SignalPorts {
				failures += n
			}
		}
		if h.PortsUp || h.PortsLastError == "" || h.SignalErrors[SignalKey{SignalPorts, tc.reason}] == 0 || !h.Up || failures != uint64(i+1) {
			t.Errorf("%s: health %+v", tc.name, h)
		}
		if tc.reason == ReasonDecode && h.SignalErrors[SignalKey{SignalPorts, ReasonDecode}] != uint64(i-1) {
			t.Errorf("%s: %d decode errors", tc.name, h.SignalErrors[SignalKey{SignalPorts, ReasonDecode}])
		}
		neutron.mu.Lock()
		neutron.pages = []string{"ports_page1.json", "ports_page2.json"}
		neutron.mu.Unlock()
	}

	// Nova down, Neutron back: the refresh fails, the ports stay.
	neutron.mu.Lock()
	neutron.fault = nil
	neutron.pages = []string{"ports_reader.json"}
	neutron.mu.Unlock()
	cloud.SetFault(func(r *http.Request) *standin.Failure {
		if strings.Contains(r.URL.Path, "/servers") {
			return &standin.Failure{Status: 500}
		}
		return nil
	})
	if err := inv.Refresh(ctx); err == nil {
		t.Fatal("the refresh succeeded with Nova failing")
	}
	if snap := inv.Snapshot(); len(snap.Ports) != 3 || len(snap.Servers) != 1 {
		t.Errorf("after Nova failed: %d ports, %d servers", len(snap.Ports), len(snap.Servers))
	}
	// Both back: the new listing replaces the ports.
	cloud.SetFault(nil)
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if snap, h := inv.Snapshot(), inv.Health(); len(snap.Ports) != 1 || !h.PortsUp || h.PortsLastError != "" {
		t.Errorf("recovered: ports %+v, health %+v", snap.Ports, h)
	}
}

// A catalog without Neutron: the servers are listed, the ports are an
// error of reason auth, counted, not a failed refresh.
func TestPortsWithoutNetworkEndpoint(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(standin.Server{ID: "s1", Name: "vm", Host: "cmp-1", VMState: "active", PowerState: 1})
	inv := newTestInventory(t, cloud, nil)
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap, h := inv.Snapshot(), inv.Health()
	if len(snap.Servers) != 1 || snap.PortsRead || h.PortsUp || h.SignalErrors[SignalKey{SignalPorts, ReasonAuth}] != 1 ||
		!strings.Contains(h.PortsLastError, "network endpoint") {
		t.Errorf("snapshot %+v health %+v", snap, h)
	}
}
