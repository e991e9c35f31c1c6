//go:build lab

package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
)

// These tests run the inventory against the real Keystone and Nova API.

func startLab(t *testing.T) *openstacklab.Lab {
	t.Helper()
	lab, _ := startLabIn(t)
	return lab
}

// startLabIn also returns the lab's directory, which holds its databases.
func startLabIn(t *testing.T) (*openstacklab.Lab, string) {
	t.Helper()
	dir := t.TempDir()
	return openstacklab.StartForTest(t, openstacklab.Options{Dir: dir}), dir
}

func labInventory(t *testing.T, env map[string]string, mutate func(*config.OpenStack)) *Inventory {
	t.Helper()
	return inventoryFromEnv(t, env, func(c *config.OpenStack) {
		c.PageSize = 25
		// The lab's Nova answers a page in seconds on a loaded machine;
		// no test here is about the refresh's time limit.
		c.Timeout = 5 * time.Minute
		if mutate != nil {
			mutate(c)
		}
	})
}

func labFleet() []openstacklab.Server {
	var out []openstacklab.Server
	states := []struct {
		vm, task string
		power    int
	}{{"active", "", 1}, {"error", "", 4}, {"stopped", "", 4}, {"building", "", 0}, {"active", "migrating", 1}, {"resized", "", 1}}
	for i := 0; i < 120; i++ {
		st := states[i%len(states)]
		s := openstacklab.Server{
			ID:   fmt.Sprintf("10000000-0000-4000-8000-%012d", i),
			Name: fmt.Sprintf("vm-%03d", i), ProjectID: fmt.Sprintf("project-%d", i%3),
			Host: fmt.Sprintf("cmp-%d", i%3), VMState: st.vm, TaskState: st.task, PowerState: st.power, Flavor: "m1.small",
			Addresses: []openstacklab.Address{
				{Network: "provider", Address: fmt.Sprintf("198.18.1.%d", i+1), Type: "fixed"},
				{Network: "provider", Address: fmt.Sprintf("198.19.1.%d", i+1), Type: "floating"},
				{Network: "v6-provider", Address: fmt.Sprintf("2001:2::1:%x", i+1), Type: "fixed"},
			},
		}
		if i == 7 {
			s.Name = `odd "name" \ {x}`
			s.Metadata = map[string]string{"monitoring_icmp": "off"}
		}
		out = append(out, s)
	}
	return out
}

func TestRealNovaInventory(t *testing.T) {
	t.Parallel()
	lab, labDir := startLabIn(t)
	ctx := context.Background()
	fleet := labFleet()
	if _, err := lab.Seed(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	if err := lab.SetComputeService(ctx, "cmp-0", "UP"); err != nil {
		t.Fatal(err)
	}
	if err := lab.SetComputeService(ctx, "cmp-1", "MAINTENANCE"); err != nil {
		t.Fatal(err)
	}
	if err := lab.SetComputeService(ctx, "cmp-2", "DOWN"); err != nil {
		t.Fatal(err)
	}

	t.Run("scope all, several pages", func(t *testing.T) {
		inv := labInventory(t, lab.AdminEnv(), nil)
		if err := inv.Refresh(ctx); err != nil {
			t.Fatalf("%v\n%s", err, lab.Logs())
		}
		if inv.client.Microversion() != "2.69" {
			t.Errorf("microversion %q", inv.client.Microversion())
		}
		m := ids(inv.Snapshot())
		if len(m) != 120 {
			t.Fatalf("%d servers, want 120", len(m))
		}
		want := map[int]string{0: "ACTIVE", 1: "ERROR", 2: "SHUTOFF", 3: "BUILD", 4: "MIGRATING", 5: "VERIFY_RESIZE"}
		for i, s := range fleet {
			got := m[s.ID]
			if got.Status != want[i%6] || got.Host != s.Host || got.ProjectID != s.ProjectID || got.Flavor != "m1.small" {
				t.Errorf("%s: %+v", s.ID, got)
			}
			if got.Status != "BUILD" && len(got.Addresses) != 3 {
				t.Errorf("%s: addresses %+v", s.ID, got.Addresses)
			}
		}
		odd := m[fleet[7].ID]
		if odd.Name != fleet[7].Name || odd.Metadata["monitoring_icmp"] != "off" {
			t.Errorf("odd server %+v", odd)
		}
		if a := m[fleet[0].ID].Addresses; a[0].Type != "fixed" || a[1].Type != "floating" || a[2].Network != "v6-provider" || !a[2].Addr.Is6() {
			t.Errorf("addresses %+v", a)
		}
		hs := inv.Snapshot().HostStatus
		if hs["cmp-0"] != "UP" || hs["cmp-1"] != "MAINTENANCE" || hs["cmp-2"] != "DOWN" {
			t.Errorf("host status %v", hs)
		}
		// 120 servers at 25 a page: 5 pages. Nova's own signals come on
		// top: the migration listing, and the actions of at most 10 of the
		// 20 SHUTOFF servers, which Nova updated within the hour (the
		// fleet was just seeded), as many as the refresh's timeout leaves
		// time for.
		h := inv.Health()
		actions, migrations := h.SignalReads[SignalInstanceActions], h.SignalReads[SignalMigrations]
		if h.Requests-actions-migrations > 10 || actions > maxActionReads || migrations != 1 {
			t.Errorf("%d requests for one full refresh, of which %d action reads and %d migration listings", h.Requests, actions, migrations)
		}
	})

	t.Run("scope host", func(t *testing.T) {
		inv := labInventory(t, lab.AdminEnv(), func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		snap := inv.Snapshot()
		if len(snap.Servers) != 40 {
			t.Fatalf("%d servers, want cmp-1's 40", len(snap.Servers))
		}
		for _, s := range snap.Servers {
			if s.Host != "cmp-1" {
				t.Errorf("%s on %s", s.ID, s.Host)
			}
		}
		if len(snap.HostStatus) != 1 || snap.HostStatus["cmp-1"] != "MAINTENANCE" {
			t.Errorf("host status %v", snap.HostStatus)
		}
	})

	// openstack-helm names hosts by FQDN, Nova may know the short name:
	// zero servers and every refresh fine, unless the exporter says so.
	t.Run("scope host, a name nova does not know", func(t *testing.T) {
		logger, logs := newLogger()
		inv := loggedInventoryFromEnv(t, lab.AdminEnv(), func(c *config.OpenStack) {
			c.PageSize, c.Scope, c.Host = 25, "host", "cmp-1.lab.example.org"
		}, logger)
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		h := inv.Health()
		if h.HostKnown == nil || *h.HostKnown || len(inv.Snapshot().Servers) != 0 {
			t.Errorf("host known %v, %d servers", h.HostKnown, len(inv.Snapshot().Servers))
		}
		if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, `similar="[cmp-1 cmp-0 cmp-2]"`) {
			t.Errorf("log:\n%s", out)
		}
		inv = labInventory(t, lab.AdminEnv(), func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-2" })
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if h := inv.Health(); h.HostKnown == nil || !*h.HostKnown {
			t.Errorf("cmp-2: host known %v", h.HostKnown)
		}
	})

	t.Run("clouds.yaml", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "clouds.yaml")
		if err := lab.WriteCloudsYAML(path); err != nil {
			t.Fatal(err)
		}
		inv := labInventory(t, map[string]string{"OS_CLIENT_CONFIG_FILE": path, "OS_CLOUD": "lab-admin"}, nil)
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if len(inv.Snapshot().Servers) != 120 {
			t.Errorf("%d servers", len(inv.Snapshot().Servers))
		}
	})

	t.Run("non-admin user in host scope", func(t *testing.T) {
		inv := labInventory(t, lab.ReaderEnv(), func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-1" })
		err := inv.Refresh(ctx)
		// The reader's project has no servers, so Nova's answer is empty
		// whatever it did with the host filter; what matters is that no
		// other host's servers are exported and no secret leaks.
		if err != nil && strings.Contains(err.Error(), openstacklab.ReaderPassword) {
			t.Error("password in the error")
		}
		for _, s := range inv.Snapshot().Servers {
			if s.Host != "cmp-1" {
				t.Errorf("server of %q exported in host scope", s.Host)
			}
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		env := lab.AdminEnv()
		env["OS_PASSWORD"] = "wrong-password-123"
		inv := labInventory(t, env, nil)
		err := inv.Refresh(ctx)
		if Classify(err) != ReasonAuth || strings.Contains(err.Error(), "wrong-password-123") {
			t.Errorf("err %v (reason %s)", err, Classify(err))
		}
	})

	// A user disabled mid-run (`openstack user set --disable`): Keystone
	// rejects its token and its next login; the exporter says "auth", keeps
	// the last good inventory, and backs off instead of logging in again
	// and again.
	t.Run("user disabled mid-run", func(t *testing.T) {
		const name, password = "lab-operator", "lab-operator-password"
		if err := lab.CreateAdminUser(ctx, name, password); err != nil {
			t.Fatal(err)
		}
		inv := labInventory(t, lab.AdminEnvFor(name, password), func(c *config.OpenStack) {
			c.Scope, c.Host, c.RefreshInterval = "host", "cmp-0", time.Second
		})
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if err := lab.SetUserEnabled(ctx, name, false); err != nil {
			t.Fatal(err)
		}
		err := inv.Refresh(ctx)
		if Classify(err) != ReasonAuth {
			t.Fatalf("refresh as a disabled user: %v (reason %s), want auth", err, Classify(err))
		}
		if strings.Contains(err.Error(), password) {
			t.Error("password in the error")
		}
		if n := len(inv.Snapshot().Servers); n != 40 {
			t.Errorf("%d servers served after the failure, want the last good 40", n)
		}
		// The loop backs off: attempts at about 0, 1, 3 and 7 s, not every
		// second.
		before := inv.Health().Refreshes
		runCtx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		inv.Run(runCtx)
		after := inv.Health()
		attempts := after.Refreshes["full"] + after.Refreshes["incremental"] - before["full"] - before["incremental"]
		if attempts < 2 || attempts > 5 {
			t.Errorf("%d refresh attempts in 8 s as a disabled user; want backoff (about 4)", attempts)
		}
		if after.Up || after.Errors[ReasonAuth] < attempts {
			t.Errorf("health after the run: %+v", after)
		}
	})

	// The host states read from os-services must be those Nova itself
	// shows on the host's servers, for every kind of service record.
	t.Run("host status as nova derives it", func(t *testing.T) {
		want := map[string]string{"hs-up": "UP", "hs-disabled": "MAINTENANCE", "hs-forced": "DOWN",
			"hs-forced-disabled": "DOWN", "hs-dead": "UNKNOWN", "hs-dead-disabled": "MAINTENANCE"}
		var servers []openstacklab.Server
		for host := range want {
			servers = append(servers, openstacklab.Server{Name: "on-" + host, Host: host, VMState: "active", PowerState: 1, Flavor: "m1.small"})
			state := "UP"
			if strings.HasSuffix(host, "disabled") {
				state = "MAINTENANCE"
			}
			if err := lab.SetComputeService(ctx, host, state); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := lab.Seed(ctx, servers); err != nil {
			t.Fatal(err)
		}
		for _, host := range []string{"hs-forced", "hs-forced-disabled"} {
			forceDown(t, lab, host)
		}
		stopHeartbeat(t, labDir, "hs-dead", "hs-dead-disabled")

		inv := labInventory(t, lab.AdminEnv(), nil)
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		states, err := inv.client.ComputeServiceStates(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, s := range inv.Snapshot().Servers {
			w, ok := want[s.Host]
			if !ok {
				continue
			}
			seen[s.Host] = true
			if s.HostStatus != w || states[s.Host] != w {
				t.Errorf("%s: nova's host_status %q, from os-services %q, want %q", s.Host, s.HostStatus, states[s.Host], w)
			}
		}
		if len(seen) != len(want) {
			t.Errorf("servers seen on %v", seen)
		}
	})
}

// forceDown marks a host's compute service forced down through Nova's API,
// as `openstack compute service set --down` does (microversion 2.53).
func forceDown(t *testing.T, lab *openstacklab.Lab, host string) {
	t.Helper()
	ctx := context.Background()
	tok, err := lab.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := lab.Get(ctx, tok, "2.53", "/os-services?binary=nova-compute&host="+host)
	var list struct {
		Services []struct {
			ID string `json:"id"`
		} `json:"services"`
	}
	if err != nil || code != 200 || json.Unmarshal(body, &list) != nil || len(list.Services) != 1 {
		t.Fatalf("services of %s: %d %v %s", host, code, err, body)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, lab.ComputeURL()+"/os-services/"+list.Services[0].ID,
		strings.NewReader(`{"forced_down": true}`))
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("OpenStack-API-Version", "compute 2.53")
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("forcing %s down: %s", host, resp.Status)
	}
}

// stopHeartbeat makes the hosts' compute services look dead to Nova (state
// "down" without forced_down): their last heartbeat goes back to 2000,
// beyond any service_down_time. Nova's API cannot do that; a service that
// stops reporting does.
func stopHeartbeat(t *testing.T, labDir string, hosts ...string) {
	t.Helper()
	script := `import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
for h in sys.argv[2:]:
    n = c.execute("UPDATE services SET last_seen_up = '2000-01-01 00:00:00.000000' WHERE host = ? AND topic = 'compute'", (h,)).rowcount
    if n != 1:
        raise SystemExit("no compute service on " + h)
c.commit()
`
	args := append([]string{"-c", script, filepath.Join(labDir, "nova_cell1.db")}, hosts...)
	if out, err := exec.Command(openstacklab.Python, args...).CombinedOutput(); err != nil {
		t.Fatalf("stopping the heartbeat of %v: %v\n%s", hosts, err, out)
	}
}

// updateAndRefresh changes servers in Nova and refreshes the inventory once.
func updateAndRefresh(t *testing.T, lab *openstacklab.Lab, inv *Inventory, updates map[string]openstacklab.Update) {
	t.Helper()
	ctx := context.Background()
	if err := lab.Update(ctx, updates); err != nil {
		t.Fatal(err)
	}
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
}

// Changes made through Nova's object layer reach the inventory by
// changes-since, and a token that expires or is revoked is renewed once.
func TestRealNovaIncrementalAndReauth(t *testing.T) {
	t.Parallel()
	lab := startLab(t)
	ctx := context.Background()
	fleet := labFleet()[:30]
	if _, err := lab.Seed(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	inv := labInventory(t, lab.AdminEnv(), func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-0" })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(inv.Snapshot().Servers); n != 10 {
		t.Fatalf("%d servers on cmp-0", n)
	}
	// Revocation: the next request gets 401 and the client logs in again.
	if err := lab.RevokeToken(ctx, inv.client.provider.Token()); err != nil {
		t.Fatal(err)
	}
	before := inv.client.provider.Token()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatalf("refresh after revocation: %v", err)
	}
	if inv.client.provider.Token() == before {
		t.Error("token not renewed after revocation")
	}
	// Nova's changes-since compares with second resolution.
	time.Sleep(2 * time.Second)
	errorState, cmp2, migrating, empty := "error", "cmp-2", "migrating", ""
	updateAndRefresh(t, lab, inv, map[string]openstacklab.Update{
		fleet[0].ID: {VMState: &errorState},
		fleet[3].ID: {Delete: true},
		fleet[6].ID: {TaskState: &migrating},
	})
	if h := inv.Health(); h.Refreshes["incremental"] != 2 {
		t.Fatalf("refreshes %v", h.Refreshes)
	}
	m := ids(inv.Snapshot())
	if m[fleet[0].ID].Status != "ERROR" || m[fleet[6].ID].Status != "MIGRATING" {
		t.Errorf("after changes: %s %s", m[fleet[0].ID].Status, m[fleet[6].ID].Status)
	}
	if _, ok := m[fleet[3].ID]; ok {
		t.Error("deleted server still served")
	}
	// The migration ends on another host: the host filter hides it from
	// changes-since, the id listing of the host finds it gone.
	time.Sleep(2 * time.Second)
	updateAndRefresh(t, lab, inv, map[string]openstacklab.Update{fleet[6].ID: {TaskState: &empty, Host: &cmp2}})
	if _, ok := ids(inv.Snapshot())[fleet[6].ID]; ok {
		t.Error("server that migrated to cmp-2 still served by cmp-0's inventory")
	}
	if n := len(inv.Snapshot().Servers); n != 8 {
		t.Errorf("%d servers on cmp-0, want 8", n)
	}

	// A quiet incremental refresh: changes-since and the id listing from
	// Nova, and the port listing from Neutron (cmp-0 has no port in a
	// security group here, so no group listing follows).
	r0, _ := inv.client.Traffic()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if r1, _ := inv.client.Traffic(); r1-r0 != 3 {
		t.Errorf("quiet incremental refresh in host scope: %d requests, want 3 (2 Nova, 1 Neutron)", r1-r0)
	}

	// Evacuated, and shelved and offloaded (host null), between two
	// incremental refreshes, never seen with a task state; and a server
	// put on this host with its update time left in the past (a database
	// edit during a recovery), which changes-since never shows.
	shelved, cmp0 := "shelved_offloaded", "cmp-0"
	updateAndRefresh(t, lab, inv, map[string]openstacklab.Update{
		fleet[12].ID: {Host: &cmp2},
		fleet[18].ID: {VMState: &shelved, Host: &empty},
		fleet[1].ID:  {Host: &cmp0, UpdatedAt: time.Now().Add(-48 * time.Hour)},
	})
	if h := inv.Health(); h.Refreshes["incremental"] != 5 {
		t.Fatalf("refreshes %v", h.Refreshes)
	}
	m = ids(inv.Snapshot())
	for _, id := range []string{fleet[12].ID, fleet[18].ID} {
		if _, ok := m[id]; ok {
			t.Errorf("%s left cmp-0 and is still served by its inventory", id)
		}
	}
	if s, ok := m[fleet[1].ID]; !ok || s.Host != "cmp-0" {
		t.Errorf("server moved onto cmp-0 in the database: %+v (found %v)", s, ok)
	}
	if n := len(m); n != 7 {
		t.Errorf("%d servers on cmp-0, want 7", n)
	}

	// Expiry: an inventory whose first token lives seconds renews it once
	// it expired. Only that token is short: the renewed one lives the usual
	// hour, so nothing after the expiry is bounded by the short lifetime.
	expiring, err := lab.ExpiringFirstLogin(ctx, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	env := lab.AdminEnv()
	env["OS_AUTH_URL"] = expiring.URL
	short := labInventory(t, env, func(c *config.OpenStack) { c.Scope, c.Host = "host", "cmp-0" })
	if err := short.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	first := expiring.FirstToken()
	if first == "" {
		t.Fatal("the inventory did not log in through the expiring endpoint")
	}
	if err := lab.WaitTokenExpired(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := short.Refresh(ctx); err != nil {
		t.Fatalf("refresh after expiry: %v", err)
	}
	if short.client.provider.Token() == first || expiring.Logins() < 2 {
		t.Errorf("token not renewed after expiry (%d logins)", expiring.Logins())
	}
	if n := len(short.Snapshot().Servers); n != 7 {
		t.Errorf("%d servers on cmp-0 after expiry, want 7", n)
	}
	if os.Getenv("CI") == "" {
		t.Logf("health after the run: %+v", inv.Health())
	}
}
