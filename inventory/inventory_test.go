package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/syncbuf"
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
	return loggedInventoryFromEnv(t, env, mutate, nil)
}

// loggedInventoryFromEnv is inventoryFromEnv with a logger.
func loggedInventoryFromEnv(t *testing.T, env map[string]string, mutate func(*config.OpenStack), logger *slog.Logger) *Inventory {
	t.Helper()
	cfg := config.Default().OpenStack
	cfg.Scope = "all"
	if mutate != nil {
		mutate(&cfg)
	}
	creds, err := LoadCredentialsFrom(cfg, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(creds, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{OpenStack: cfg, Host: cfg.Host, KeepMetadata: []string{"monitoring_icmp"}, Logger: logger}, client)
}

func newLogger() (*slog.Logger, *syncbuf.Buffer) {
	b := &syncbuf.Buffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
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
	t.Parallel()
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
	// 1 login + 1 version document + 10 pages + 1 service list + 1
	// migration list.
	if !h.Up || !h.Ready || h.Refreshes["full"] != 1 || h.Requests != 14 {
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	if got := cloud.Requests() - before; got != 3 {
		t.Errorf("quiet incremental refresh sent %d requests, want 3 (servers, services, migrations)", got)
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
	t.Parallel()
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
	// The guest shuts itself down: Nova still says ACTIVE, the power state
	// changes, and "ACTIVE but shut down" is timed from then.
	active := s.StatusSince
	time.Sleep(1100 * time.Millisecond)
	cloud.Update("a", func(s *standin.Server) { s.PowerState = 4 })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	s = ids(inv.Snapshot())["a"]
	if s.Status != "ACTIVE" || s.PowerState != "shutdown" || !s.StatusSince.After(active) {
		t.Errorf("after a power state change: %s/%s since %v (was %v)", s.Status, s.PowerState, s.StatusSince, active)
	}
}

// A server that leaves the host no longer matches the host filter, so
// changes-since never reports its departure: the id listing of the host
// does, whether or not the server was ever seen with a task in progress.
func TestDepartureInHostScope(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	cloud.Put(fleet(25, func(int) string { return "cmp-1" })...)
	cloud.SetService("cmp-1", "UP")
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Quiet: the changes-since listing and the id listing (3 pages of 10),
	// no server read one by one, no service list.
	before := cloud.Requests()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cloud.Requests() - before; got != 4 {
		t.Errorf("quiet incremental refresh in host scope sent %d requests, want 4", got)
	}

	// Evacuated and shelve-offloaded between two refreshes, never seen
	// with a task state.
	cloud.Update("srv-00001", func(s *standin.Server) { s.Host = "cmp-2" })
	cloud.Update("srv-00002", func(s *standin.Server) { s.Host, s.VMState = "", "shelved_offloaded" })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	m := ids(inv.Snapshot())
	for _, id := range []string{"srv-00001", "srv-00002"} {
		if _, ok := m[id]; ok {
			t.Errorf("%s left cmp-1 and is still served by its exporter", id)
		}
	}
	if len(m) != 23 {
		t.Errorf("%d servers, want 23", len(m))
	}

	// A server put on this host without a new update time (a database
	// edit during a recovery): changes-since never shows it, the id listing
	// does, and it is read at once.
	cloud.Put(standin.Server{ID: "srv-edited", Name: "edited", Host: "cmp-1", VMState: "active", PowerState: 1,
		Updated: time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Second)})
	before = cloud.Requests()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if s, ok := ids(inv.Snapshot())["srv-edited"]; !ok || s.Status != "ACTIVE" {
		t.Errorf("server that appeared in the id listing: %+v (found %v)", s, ok)
	}
	if got := cloud.Requests() - before; got != 5 {
		t.Errorf("%d requests, want 5 (changes-since, 3 id pages, 1 server)", got)
	}
}

// Nova ignores the host filter for a user who may read the host attribute
// but not filter by it: the ids of other hosts' servers are known from the
// full listing to be elsewhere, and not read one by one every refresh.
func TestIgnoredHostFilterCostsNoReads(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	cloud.Put(fleet(30, func(i int) string { return fmt.Sprintf("cmp-%d", i%3) })...)
	cloud.IgnoreHostFilter.Store(true)
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.Scope, c.Host, c.PageSize = "host", "cmp-1", 100 })
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(inv.Snapshot().Servers); n != 10 {
		t.Fatalf("%d servers, want cmp-1's 10", n)
	}
	before := cloud.Requests()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cloud.Requests() - before; got != 2 {
		t.Errorf("%d requests, want 2 (changes-since, ids)", got)
	}
	if n := len(inv.Snapshot().Servers); n != 10 {
		t.Errorf("%d servers after an incremental refresh, want 10", n)
	}
}

func TestFaultsKeepLastInventory(t *testing.T) {
	t.Parallel()
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
			// A refresh the timeout did not cut would hang for good; a
			// loaded machine may take some seconds past the timeout.
			if took := time.Since(start); took > 15*time.Second {
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
	t.Parallel()
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
	t.Parallel()
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

// Run retries after failures and picks up once the API is back.
func TestRunRetriesAndRecovers(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	cloud.Put(fleet(3, func(int) string { return "cmp-1" })...)
	cloud.SetFault(func(r *http.Request) *standin.Failure { return &standin.Failure{Status: 503} })
	// At a 1 s interval the first retries come after 1 to 1.5 s.
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) { c.RefreshInterval = time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); inv.Run(ctx) }()
	for deadline := time.Now().Add(30 * time.Second); inv.Health().Errors[Reason5xx] < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no retry after a failure: %+v", inv.Health())
		}
	}
	cloud.SetFault(nil)
	select {
	case <-inv.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("not ready after the API came back")
	}
	cancel()
	<-done
}

func TestRetryWait(t *testing.T) {
	t.Parallel()
	const s, m = time.Second, time.Minute
	for _, tc := range []struct {
		interval time.Duration
		fails    int
		auth     bool
		r        float64
		want     time.Duration
	}{
		// Not auth: floor min(interval, max(10 s, interval/4)), doubling up
		// to interval, spread over +50%.
		{60 * s, 1, false, 0, 15 * s},
		{60 * s, 1, false, 0.999999, 22499985 * time.Microsecond},
		{60 * s, 2, false, 0, 30 * s},
		{60 * s, 3, false, 0, 60 * s},
		{60 * s, 9, false, 0.5, 75 * s},
		{20 * s, 1, false, 0, 10 * s}, // max(10 s, 5 s)
		{5 * s, 1, false, 0, 5 * s},   // never beyond interval
		{5 * s, 4, false, 0.5, 6250 * time.Millisecond},
		{10 * m, 1, false, 0, 150 * s}, // a quarter of a long interval
		{10 * m, 3, false, 0, 10 * m},
		{10000 * time.Hour, 200, false, 0, 10000 * time.Hour}, // no overflow
		// Auth: 1 s doubling to 5 min (or interval), ±10%.
		{60 * s, 1, true, 0.5, 1 * s},
		{60 * s, 1, true, 0, 900 * time.Millisecond},
		{60 * s, 4, true, 0.5, 8 * s},
		{60 * s, 30, true, 0.5, 5 * m},
		{60 * s, 30, true, 0.999999, 329999982 * time.Microsecond},
		{time.Hour, 30, true, 0.5, time.Hour},
	} {
		got := retryWait(tc.interval, tc.fails, tc.auth, tc.r)
		if diff := got - tc.want; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("retryWait(%v, %d, auth %v, %v) = %v, want %v", tc.interval, tc.fails, tc.auth, tc.r, got, tc.want)
		}
		if !tc.auth && got < min(tc.interval, max(10*s, tc.interval/4)) {
			t.Errorf("retryWait(%v, %d) = %v, sooner than the floor", tc.interval, tc.fails, got)
		}
	}
}

// Nova failing at start (its version document answering 503) is retried
// without a new login each time: the token Keystone issued is kept.
func TestNovaDownAtStartLogsInOnce(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	cloud.Put(fleet(3, func(int) string { return "cmp-1" })...)
	const failures = 4
	var versions atomic.Int64
	cloud.SetFault(func(r *http.Request) *standin.Failure {
		if strings.TrimSuffix(r.URL.Path, "/") == "/compute/v2.1" && versions.Add(1) <= failures {
			return &standin.Failure{Status: 503}
		}
		return nil
	})
	inv := newTestInventory(t, cloud, nil)
	ctx := context.Background()
	for i := 0; i < failures; i++ {
		err := inv.Refresh(ctx)
		if Classify(err) != Reason5xx {
			t.Fatalf("refresh %d: %v (reason %q), want http_5xx", i+1, err, Classify(err))
		}
	}
	if err := inv.Refresh(ctx); err != nil {
		t.Fatalf("refresh once Nova is back: %v", err)
	}
	if len(inv.Snapshot().Servers) != 3 {
		t.Errorf("%d servers", len(inv.Snapshot().Servers))
	}
	if n := cloud.Logins(); n != 1 {
		t.Errorf("%d logins for %d failed starts and one success, want 1", n, failures)
	}
}

func TestHostStatusMapping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		state, status string
		forced        bool
		want          string
	}{
		{"up", "enabled", false, "UP"},
		{"down", "enabled", false, "UNKNOWN"}, // heartbeat lost: not known to be down
		{"up", "disabled", false, "MAINTENANCE"},
		{"down", "disabled", false, "MAINTENANCE"},
		{"down", "enabled", true, "DOWN"}, // forced down reads as state down
		{"down", "disabled", true, "DOWN"},
		{"up", "enabled", true, "DOWN"},
		{"", "UNKNOWN", false, "UNKNOWN"}, // a service of a cell Nova cannot reach
	} {
		if got := HostStatus(tc.state, tc.status, tc.forced); got != tc.want {
			t.Errorf("HostStatus(%q, %q, forced_down %v) = %q, want %q", tc.state, tc.status, tc.forced, got, tc.want)
		}
	}
}

// The host states read from os-services are those Nova shows as the
// host_status of the host's servers, for every kind of service record.
func TestHostStatusFromServices(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	records := map[string]standin.Service{
		"up": {}, "dead": {Dead: true}, "disabled": {Disabled: true}, "disabled-dead": {Disabled: true, Dead: true},
		"forced": {ForcedDown: true}, "forced-disabled": {ForcedDown: true, Disabled: true},
	}
	var servers []standin.Server
	for host, rec := range records {
		cloud.PutService(host, rec)
		servers = append(servers, standin.Server{ID: "srv-" + host, Name: host, Host: host, VMState: "active", PowerState: 1})
	}
	cloud.Put(servers...)
	inv := newTestInventory(t, cloud, nil)
	if err := inv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"up": "UP", "dead": "UNKNOWN", "disabled": "MAINTENANCE", "disabled-dead": "MAINTENANCE",
		"forced": "DOWN", "forced-disabled": "DOWN"}
	snap := inv.Snapshot()
	for host, w := range want {
		if snap.HostStatus[host] != w {
			t.Errorf("%s: host status %q, want %q", host, snap.HostStatus[host], w)
		}
	}
	// The heartbeat the host status hides once a service is disabled or
	// forced down: a disabled host that died is told from one that runs.
	for host, rec := range records {
		// Nova reports a forced-down service's state as down too.
		want := !rec.Dead && !rec.ForcedDown
		if hb, ok := snap.HostHeartbeat[host]; !ok || hb != want {
			t.Errorf("%s: heartbeat %v (known %v), want %v", host, hb, ok, want)
		}
	}
	for _, s := range snap.Servers {
		if s.HostStatus != snap.HostStatus[s.Host] {
			t.Errorf("%s: server's host_status %q, services say %q", s.Host, s.HostStatus, snap.HostStatus[s.Host])
		}
	}
}

// A failing os-services call does not throw the server listing away: the
// servers are published, the host states stay the last known, the failure
// is counted and logged once a streak.
func TestServicesFailureKeepsServers(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	cloud.Put(fleet(12, func(i int) string { return fmt.Sprintf("cmp-%d", i%2) })...)
	cloud.SetService("cmp-0", "UP")
	cloud.SetService("cmp-1", "MAINTENANCE")
	logger, logs := newLogger()
	inv := loggedInventoryFromEnv(t, cloud.Env(), func(c *config.OpenStack) { c.Timeout, c.PageSize = 5*time.Second, 10 }, logger)
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	cloud.SetFault(func(r *http.Request) *standin.Failure {
		if strings.HasSuffix(r.URL.Path, "/os-services") {
			return &standin.Failure{Status: 500}
		}
		return nil
	})
	cloud.SetService("cmp-1", "UP")
	for i := 0; i < 2; i++ {
		cloud.Update("srv-00003", func(s *standin.Server) { s.Name = fmt.Sprintf("renamed-%d", i) })
		if err := inv.Refresh(ctx); err != nil {
			t.Fatalf("refresh %d with os-services failing: %v", i+1, err)
		}
		if got := ids(inv.Snapshot())["srv-00003"].Name; got != fmt.Sprintf("renamed-%d", i) {
			t.Errorf("refresh %d: server not updated (%q)", i+1, got)
		}
	}
	h := inv.Health()
	if !h.Up || h.Errors[Reason5xx] != 2 || h.LastError != "" {
		t.Errorf("health %+v", h)
	}
	if st := inv.Snapshot().HostStatus["cmp-1"]; st != "MAINTENANCE" {
		t.Errorf("host status %q, want the last known MAINTENANCE", st)
	}
	if n := strings.Count(logs.String(), "reading the compute services failed"); n != 1 {
		t.Errorf("failure logged %d times in a streak of 2, want once:\n%s", n, logs)
	}
	cloud.SetFault(nil)
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if st := inv.Snapshot().HostStatus["cmp-1"]; st != "UP" || !strings.Contains(logs.String(), "readable again") {
		t.Errorf("after recovery: host status %q; logs:\n%s", st, logs)
	}
}

// A proxy's 20 MB error page, at the default limits: read no further than
// 64 KiB, and kept and logged cut to about 2 KiB.
func TestHugeErrorPage(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	cloud.Put(fleet(3, func(int) string { return "cmp-1" })...)
	page := []byte("<html><body>" + strings.Repeat("Überlastet – ", 20<<20/len("Überlastet – ")) + "</body></html>")
	logger, logs := newLogger()
	inv := loggedInventoryFromEnv(t, cloud.Env(), nil, logger)
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	cloud.SetFault(pageFault(1, &standin.Failure{Status: 500, Body: page}))
	_, b0 := inv.client.Traffic()
	inv.mu.Lock()
	inv.forceFull = true
	inv.mu.Unlock()
	err := inv.Refresh(ctx)
	if Classify(err) != Reason5xx {
		t.Fatalf("err %.300v (reason %q)", err, Classify(err))
	}
	_, b1 := inv.client.Traffic()
	if read := b1 - b0; read > 1<<20 {
		t.Errorf("%d bytes of the error page read", read)
	}
	h := inv.Health()
	if len(h.LastError) > MaxErrorBytes+100 || !utf8.ValidString(h.LastError) || !strings.Contains(h.LastError, "bytes cut)") ||
		!strings.Contains(h.LastError, "500") {
		t.Errorf("last error (%d bytes): %q", len(h.LastError), h.LastError)
	}
	if err.Error() != h.LastError {
		t.Error("the error returned is not the one kept")
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if len(line) > 2*MaxErrorBytes+1000 {
			t.Errorf("a log line of %d bytes", len(line))
		}
	}
}

func TestMaxResponseBytesFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pageSize int
		want     int64
	}{{1, 16 << 20}, {100, 16 << 20}, {256, 16 << 20}, {1000, 1000 * 64 << 10}, {4096, 256 << 20}, {10000, 256 << 20}} {
		if got := MaxResponseBytesFor(tc.pageSize); got != tc.want {
			t.Errorf("MaxResponseBytesFor(%d) = %d, want %d", tc.pageSize, got, tc.want)
		}
	}
}

// A host name Nova does not know exports no server while every refresh
// succeeds: the inventory says so, with the names Nova knows that look
// like it.
func TestUnknownHost(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	cloud.Put(fleet(6, func(i int) string { return fmt.Sprintf("cmp-%d", i%2) })...)
	for _, h := range []string{"cmp-0", "cmp-1", "cmp-10", "storage-1"} {
		cloud.SetService(h, "UP")
	}
	ctx := context.Background()
	known := func(inv *Inventory) string {
		switch k := inv.Health().HostKnown; {
		case k == nil:
			return "absent"
		case *k:
			return "known"
		}
		return "unknown"
	}

	logger, logs := newLogger()
	inv := loggedInventoryFromEnv(t, cloud.Env(), func(c *config.OpenStack) {
		c.Timeout, c.PageSize, c.Scope, c.Host = 5*time.Second, 10, "host", "cmp-1.cloud.example.org"
	}, logger)
	if known(inv) != "absent" {
		t.Errorf("before any refresh: %s", known(inv))
	}
	for i := 0; i < 2; i++ {
		inv.mu.Lock()
		inv.forceFull = true
		inv.mu.Unlock()
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if known(inv) != "unknown" || len(inv.Snapshot().Servers) != 0 {
		t.Errorf("host %s, %d servers", known(inv), len(inv.Snapshot().Servers))
	}
	out := logs.String()
	if strings.Count(out, "level=ERROR") != 1 || !strings.Contains(out, "host=cmp-1.cloud.example.org") ||
		!strings.Contains(out, "similar=\"[cmp-1 cmp-10 cmp-0]\"") {
		t.Errorf("log:\n%s", out)
	}
	// Reloaded with another wrong name: said again, for that name.
	inv.mu.Lock()
	opts := inv.opts
	inv.mu.Unlock()
	opts.Host, opts.OpenStack.Host = "STORAGE-1.cloud.example.org", "STORAGE-1.cloud.example.org"
	inv.Reconfigure(opts, inv.client)
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); strings.Count(out, "level=ERROR") != 2 || !strings.Contains(out, "similar=[storage-1]") || known(inv) != "unknown" {
		t.Errorf("host %s after a reload; log:\n%s", known(inv), out)
	}

	inv = newTestInventory(t, cloud, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if known(inv) != "known" || len(inv.Snapshot().Servers) != 3 {
		t.Errorf("host %s, %d servers", known(inv), len(inv.Snapshot().Servers))
	}
	inv = newTestInventory(t, cloud, nil)
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if known(inv) != "absent" {
		t.Errorf("scope all: host %s", known(inv))
	}
}

func TestSimilarHosts(t *testing.T) {
	t.Parallel()
	hosts := []string{"cmp-1", "CMP-1.example.org", "cmp-10", "cmp-2", "ctl-1", "storage-1", "cm"}
	for _, tc := range []struct {
		host string
		want string
	}{
		{"cmp-1.example.org", "[CMP-1.example.org cmp-1 cmp-10 cmp-2]"},
		{"cmp-1", "[cmp-1 CMP-1.example.org cmp-10 cmp-2]"},
		{"xyz", "[]"},
	} {
		if got := fmt.Sprint(similarHosts(tc.host, hosts, 5)); got != tc.want {
			t.Errorf("similarHosts(%q) = %s, want %s", tc.host, got, tc.want)
		}
	}
	if got := similarHosts("cmp-1", hosts, 2); len(got) != 2 {
		t.Errorf("limit: %v", got)
	}
}

// Refresh called while Run refreshes (the report, a test) waits for Run's
// refresh instead of racing it: every refresh's state is the refreshing
// goroutine's alone (go test -race checks it), and each call's snapshot is
// complete.
func TestRefreshWhileRunning(t *testing.T) {
	t.Parallel()
	cloud := startStandin(t)
	cloud.Put(fleet(30, func(i int) string { return fmt.Sprintf("cmp-%d", i%3) })...)
	inv := newTestInventory(t, cloud, func(c *config.OpenStack) {
		c.RefreshInterval, c.FullRefreshInterval = time.Millisecond, 5*time.Millisecond
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); inv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var wg sync.WaitGroup
	errs := make(chan error, 4*10)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := inv.Refresh(context.Background()); err != nil {
					errs <- err
					return
				}
				if n := len(inv.Snapshot().Servers); n != 30 {
					errs <- fmt.Errorf("a snapshot of %d servers, want 30", n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
