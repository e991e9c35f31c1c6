package inventory

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

// These tests drive the inventory against the HTTP stand-in, for the faults
// and fleet sizes the real Nova cannot produce on demand; realnova_test.go
// covers the same paths against the real Keystone and Nova.

func startStandin(t *testing.T) *standin.Cloud {
	t.Helper()
	c, err := standin.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newTestInventory(t *testing.T, cloud *standin.Cloud, mutate func(*config.OpenStack)) *Inventory {
	t.Helper()
	return inventoryFromEnv(t, cloud.Env(), func(c *config.OpenStack) {
		c.Timeout, c.PageSize = 5*time.Second, 10
		if mutate != nil {
			mutate(c)
		}
	})
}

// inventoryFromEnv builds an inventory the way the exporter does, from OS_*
// variables (only those given) and the default configuration in scope all.
func inventoryFromEnv(t *testing.T, env map[string]string, mutate func(*config.OpenStack)) *Inventory {
	t.Helper()
	clearOSEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg := config.Default().OpenStack
	cfg.Scope = "all"
	if mutate != nil {
		mutate(&cfg)
	}
	creds, err := LoadCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(creds, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{OpenStack: cfg, Host: cfg.Host, KeepMetadata: []string{"monitoring_icmp"}}, client)
}

func fleet(n int, host func(i int) string) []standin.Server {
	out := make([]standin.Server, n)
	for i := range out {
		out[i] = standin.Server{
			ID: fmt.Sprintf("srv-%05d", i), Name: fmt.Sprintf("vm-%d", i), ProjectID: "p1",
			Host: host(i), VMState: "active", PowerState: 1, Flavor: "m1.small", AvailabilityZone: "nova",
			Addresses: []standin.Address{{Network: "provider", Addr: fmt.Sprintf("198.18.%d.%d", i/250, i%250+1), Type: "fixed"}},
			Updated:   time.Now().Add(-time.Hour).UTC().Truncate(time.Second),
		}
	}
	return out
}

func ids(s *Snapshot) map[string]Server {
	m := map[string]Server{}
	for _, srv := range s.Servers {
		m[srv.ID] = srv
	}
	return m
}

func TestFullRefreshPaginates(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(fleet(95, func(int) string { return "cmp-1" })...)
	inv := newTestInventory(t, cloud, nil)
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := inv.Snapshot()
	if len(snap.Servers) != 95 {
		t.Fatalf("%d servers, want 95", len(snap.Servers))
	}
	for i := 1; i < len(snap.Servers); i++ {
		if snap.Servers[i-1].ID >= snap.Servers[i].ID {
			t.Fatal("snapshot not sorted by ID")
		}
	}
	h := inv.Health()
	// 1 login + 1 version document + 10 pages + 1 service list.
	if !h.Up || !h.Ready || h.Refreshes["full"] != 1 || h.Requests != 13 {
		t.Errorf("health %+v", h)
	}
	if cloud.Logins() != 1 {
		t.Errorf("%d logins", cloud.Logins())
	}
	select {
	case <-inv.Ready():
	default:
		t.Error("not ready after a successful refresh")
	}
}

func TestHostScope(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(fleet(40, func(i int) string { return fmt.Sprintf("cmp-%d", i%4) })...)
	cloud.SetService("cmp-1", "MAINTENANCE")
	cloud.SetService("cmp-2", "DOWN")
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := inv.Snapshot()
	if len(snap.Servers) != 10 {
		t.Fatalf("%d servers, want the 10 of cmp-1", len(snap.Servers))
	}
	for _, s := range snap.Servers {
		if s.Host != "cmp-1" {
			t.Errorf("server %s of host %s in host scope", s.ID, s.Host)
		}
	}
	if snap.HostStatus["cmp-1"] != "MAINTENANCE" || len(snap.HostStatus) != 1 {
		t.Errorf("host status %v", snap.HostStatus)
	}
}

// A non-admin user gets every server back whatever the host filter says,
// without the host attribute: the exporter must say so, not export them all.
func TestHostScopeNonAdmin(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(fleet(12, func(i int) string { return fmt.Sprintf("cmp-%d", i%3) })...)
	cloud.AsNonAdmin.Store(true)
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	err := inv.Refresh(context.Background())
	if err == nil || Classify(err) != ReasonAuth || !strings.Contains(err.Error(), "os-extended-server-attributes") {
		t.Fatalf("err %v (reason %s)", err, Classify(err))
	}
	if len(inv.Snapshot().Servers) != 0 {
		t.Error("servers of unknown hosts exported")
	}
}

func TestIncrementalRefresh(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(fleet(30, func(int) string { return "cmp-1" })...)
	inv := newTestInventory(t, cloud, nil)
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	before := cloud.Requests()
	// Nothing changed: one small page, no server transferred.
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if h := inv.Health(); h.Refreshes["incremental"] != 1 {
		t.Fatalf("second refresh not incremental: %+v", h.Refreshes)
	}
	if got := cloud.Requests() - before; got != 2 {
		t.Errorf("quiet incremental refresh sent %d requests, want 2 (servers, services)", got)
	}
	if len(inv.Snapshot().Servers) != 30 {
		t.Fatal("servers lost by an incremental refresh")
	}

	cloud.Update("srv-00003", func(s *standin.Server) { s.VMState = "error" })
	cloud.Delete("srv-00004")
	cloud.Put(standin.Server{ID: "srv-new", Name: "new", Host: "cmp-1", VMState: "building"})
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	m := ids(inv.Snapshot())
	if m["srv-00003"].Status != "ERROR" {
		t.Errorf("srv-00003 status %q", m["srv-00003"].Status)
	}
	if _, ok := m["srv-00004"]; ok {
		t.Error("deleted server still served")
	}
	if m["srv-new"].Status != "BUILD" {
		t.Errorf("new server: %+v", m["srv-new"])
	}
	if len(m) != 30 {
		t.Errorf("%d servers, want 30", len(m))
	}
}

func TestStatusSince(t *testing.T) {
	cloud := startStandin(t)
	updated := time.Now().Add(-3 * time.Hour).UTC().Truncate(time.Second)
	cloud.Put(standin.Server{ID: "a", Name: "a", Host: "h", VMState: "building", Updated: updated})
	inv := newTestInventory(t, cloud, nil)
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(inv.Snapshot())["a"].StatusSince; !got.Equal(updated) {
		t.Errorf("first sighting: since %v, want Nova's updated %v", got, updated)
	}
	// Metadata changes bump Nova's updated but not the state.
	cloud.Update("a", func(s *standin.Server) { s.Metadata = map[string]string{"k": "v"} })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(inv.Snapshot())["a"].StatusSince; !got.Equal(updated) {
		t.Errorf("unchanged state: since moved to %v", got)
	}
	time.Sleep(1100 * time.Millisecond)
	cloud.Update("a", func(s *standin.Server) { s.VMState = "active" })
	before := time.Now().Add(-2 * time.Second)
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	s := ids(inv.Snapshot())["a"]
	if s.Status != "ACTIVE" || s.StatusSince.Before(before) || s.StatusSince.After(time.Now()) {
		t.Errorf("after a seen transition: %s since %v", s.Status, s.StatusSince)
	}
}

// A server that migrates away leaves the host filter: changes-since never
// reports it, so the inventory must read in-flight servers one by one.
func TestMigrationAwayInHostScope(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(fleet(5, func(int) string { return "cmp-1" })...)
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	cloud.Update("srv-00001", func(s *standin.Server) { s.TaskState = "migrating" })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if ids(inv.Snapshot())["srv-00001"].Status != "MIGRATING" {
		t.Fatal("migration not seen")
	}
	cloud.Update("srv-00001", func(s *standin.Server) { s.TaskState, s.Host = "", "cmp-2" })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := ids(inv.Snapshot())["srv-00001"]; ok {
		t.Error("server that moved to cmp-2 still served by cmp-1's exporter")
	}
	if len(inv.Snapshot().Servers) != 4 {
		t.Errorf("%d servers, want 4", len(inv.Snapshot().Servers))
	}
}

func TestFaultsKeepLastInventory(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fault  standin.Fault
		reason string
	}{
		{"500 mid-pagination", pageFault(3, &standin.Failure{Status: 500}), Reason5xx},
		{"404", pageFault(1, &standin.Failure{Status: 404}), Reason4xx},
		{"malformed JSON", pageFault(2, &standin.Failure{Body: []byte(`{"servers": [{"id": "x",`)}), ReasonDecode},
		{"wrong shape", pageFault(1, &standin.Failure{Body: []byte(`{"servers": {"id": 3}}`)}), ReasonDecode},
		{"hang past timeout", pageFault(2, &standin.Failure{Hang: true}), ReasonTimeout},
		{"huge body", pageFault(1, &standin.Failure{Body: append([]byte(`{"servers": [], "x": "`), make([]byte, 3<<20)...)}), ReasonDecode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cloud := startStandin(t)
			cloud.Put(fleet(35, func(int) string { return "cmp-1" })...)
			inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.Timeout = 2 * time.Second })
			inv.client.transport.maxBody = 2 << 20
			ctx := context.Background()
			if err := inv.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			good := inv.Snapshot()
			cloud.SetFault(tc.fault)
			// Force a full listing so every page is asked for again.
			inv.mu.Lock()
			inv.forceFull = true
			inv.mu.Unlock()
			start := time.Now()
			err := inv.Refresh(ctx)
			if err == nil {
				t.Fatal("refresh succeeded through the fault")
			}
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("refresh took %v, beyond its 2s timeout", took)
			}
			if got := Classify(err); got != tc.reason {
				t.Errorf("reason %q, want %q (%v)", got, tc.reason, err)
			}
			h := inv.Health()
			if h.Up || h.Errors[tc.reason] != 1 || h.LastError == "" {
				t.Errorf("health %+v", h)
			}
			if inv.Snapshot() != good {
				t.Error("the last good snapshot was replaced by a failed refresh")
			}
			cloud.SetFault(nil)
			if err := inv.Refresh(ctx); err != nil {
				t.Fatalf("no recovery: %v", err)
			}
			if !inv.Health().Up || len(inv.Snapshot().Servers) != 35 {
				t.Error("not recovered")
			}
		})
	}
}

// pageFault fails the n-th request for a servers page (1-based), counted
// from the time it is installed.
func pageFault(n int, f *standin.Failure) standin.Fault {
	var seen atomic.Int64
	return func(r *http.Request) *standin.Failure {
		if !strings.HasSuffix(r.URL.Path, "/servers/detail") {
			return nil
		}
		if seen.Add(1) == int64(n) {
			return f
		}
		return nil
	}
}

func TestReauthentication(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(fleet(3, func(int) string { return "cmp-1" })...)
	inv := newTestInventory(t, cloud, nil)
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if cloud.Logins() != 1 {
		t.Fatalf("%d logins for 4 refreshes; the token must be reused", cloud.Logins())
	}
	cloud.RevokeTokens()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatalf("refresh after revocation: %v", err)
	}
	if cloud.Logins() != 2 {
		t.Errorf("%d logins after one revocation, want 2", cloud.Logins())
	}
}

func TestWrongCredentials(t *testing.T) {
	cloud := startStandin(t)
	inv := newTestInventory(t, cloud, nil) // logs in with "standin-password"
	cloud.Password = "the-real-one"
	err := inv.Refresh(context.Background())
	if Classify(err) != ReasonAuth {
		t.Fatalf("reason %q for %v", Classify(err), err)
	}
	if strings.Contains(err.Error(), "standin-password") || strings.Contains(inv.Health().LastError, "standin-password") {
		t.Error("the password leaks into the error")
	}
}

// Run must back off after failures instead of hammering Keystone, and pick up
// as soon as the API is back.
func TestRunBacksOffAndRecovers(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(fleet(3, func(int) string { return "cmp-1" })...)
	cloud.SetFault(func(r *http.Request) *standin.Failure { return &standin.Failure{Status: 503} })
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.RefreshInterval = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); inv.Run(ctx) }()
	time.Sleep(2500 * time.Millisecond)
	failures := inv.Health().Errors[Reason5xx]
	if failures < 2 || failures > 3 {
		t.Errorf("%d attempts in 2.5s; want backoff 1s, 2s, ...", failures)
	}
	cloud.SetFault(nil)
	select {
	case <-inv.Ready():
	case <-time.After(6 * time.Second):
		t.Fatal("not ready after the API came back")
	}
	cancel()
	<-done
}
