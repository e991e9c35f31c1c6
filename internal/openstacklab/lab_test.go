//go:build lab

package openstacklab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

type listing struct {
	Servers []struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		Host       string `json:"OS-EXT-SRV-ATTR:host"`
		HostStatus string `json:"host_status"`
		Flavor     struct {
			OriginalName string `json:"original_name"`
		} `json:"flavor"`
		Addresses map[string][]struct {
			Addr string `json:"addr"`
			Type string `json:"OS-EXT-IPS:type"`
		} `json:"addresses"`
	} `json:"servers"`
	Links []struct{ Rel, Href string } `json:"servers_links"`
}

func TestRealNova(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lab := StartForTest(t, Options{})
	t.Logf("started in %v (warm cache: %v)", lab.Started, lab.Warm)

	// Every vm_state/task_state pair that maps to a distinct status.
	states := []struct{ vm, task, status string }{
		{"active", "", "ACTIVE"}, {"building", "", "BUILD"}, {"error", "", "ERROR"}, {"stopped", "", "SHUTOFF"},
		{"paused", "", "PAUSED"}, {"suspended", "", "SUSPENDED"}, {"active", "migrating", "MIGRATING"},
		{"resized", "", "VERIFY_RESIZE"}, {"active", "resize_migrating", "RESIZE"}, {"active", "rebooting", "REBOOT"},
		{"active", "rebooting_hard", "HARD_REBOOT"}, {"rescued", "", "RESCUE"}, {"shelved_offloaded", "", "SHELVED_OFFLOADED"},
	}
	var servers []Server
	for i := 0; i < 130; i++ {
		st := states[i%len(states)]
		servers = append(servers, Server{
			ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("vm-%d", i),
			Host: fmt.Sprintf("cmp-%d", i%2), VMState: st.vm, TaskState: st.task, PowerState: 1, Flavor: "m1.small",
			Addresses: []Address{{Network: "provider", Address: fmt.Sprintf("198.18.0.%d", i+1), Type: "fixed"},
				{Network: "provider", Address: fmt.Sprintf("198.19.0.%d", i+1), Type: "floating"}},
		})
	}
	start := time.Now()
	if _, err := lab.Seed(ctx, servers); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d servers in %v", len(servers), time.Since(start))
	if err := lab.SetComputeService(ctx, "cmp-1", "DOWN"); err != nil {
		t.Fatal(err)
	}
	// The helper that runs these commands: a failing command is reported
	// and the helper goes on; a helper that died fails the command it had
	// (never retried: it may have been half done) and the next one gets a
	// new helper.
	if _, err := lab.nova(ctx, nil, "no-such-command", lab.opts.Dir); err == nil || !strings.Contains(err.Error(), "unknown command no-such-command") {
		t.Errorf("a failing command: %v, want lab.py's error", err)
	}
	lab.helper.mu.Lock()
	syscall.Kill(-lab.helper.proc.pid, syscall.SIGKILL)
	lab.helper.mu.Unlock()
	if err := lab.SetComputeService(ctx, "cmp-1", "DOWN"); err == nil || !strings.Contains(err.Error(), "the helper failed") {
		t.Errorf("a command to a helper that died: %v, want it to fail", err)
	}
	if err := lab.SetComputeService(ctx, "cmp-1", "DOWN"); err != nil {
		t.Fatalf("the command after the helper died: %v", err)
	}
	tok, err := lab.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Pagination over several pages, every status as Nova derives it.
	got := map[string]string{}
	path := "/servers/detail?all_tenants=1&limit=50"
	for pages := 0; path != ""; pages++ {
		code, body, err := lab.Get(ctx, tok, "2.69", path)
		if err != nil || code != 200 {
			t.Fatalf("%s: %d %v %s", path, code, err, body)
		}
		var l listing
		if err := json.Unmarshal(body, &l); err != nil {
			t.Fatal(err)
		}
		for _, s := range l.Servers {
			got[s.ID] = s.Status
			// Nova shows no addresses while a server builds.
			if s.Flavor.OriginalName != "m1.small" || (s.Status != "BUILD" && len(s.Addresses["provider"]) != 2) {
				t.Errorf("server %s: flavor %q addresses %v", s.ID, s.Flavor.OriginalName, s.Addresses)
			}
			if s.Host == "cmp-1" && s.HostStatus != "DOWN" {
				t.Errorf("server %s on cmp-1: host_status %q", s.ID, s.HostStatus)
			}
		}
		path = ""
		if len(l.Links) > 0 && len(l.Servers) > 0 {
			path = "/servers/detail?all_tenants=1&limit=50&marker=" + l.Servers[len(l.Servers)-1].ID
		}
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
	}
	for i, s := range servers {
		if want := states[i%len(states)].status; got[s.ID] != want {
			t.Errorf("%s (%s/%s): status %q, want %q", s.ID, s.VMState, s.TaskState, got[s.ID], want)
		}
	}

	if os.Getenv("OPENSTACKLAB_RECORD") != "" {
		record(t, lab, tok, servers[0].ID)
	}

	// The host filter (admin).
	_, body, _ := lab.Get(ctx, tok, "2.69", "/servers/detail?all_tenants=1&host=cmp-0")
	var l listing
	json.Unmarshal(body, &l)
	if len(l.Servers) != 65 {
		t.Errorf("host filter: %d servers, want 65", len(l.Servers))
	}

	// changes-since returns updated and deleted servers.
	since := time.Now().UTC().Add(-time.Second).Format(time.RFC3339)
	time.Sleep(1100 * time.Millisecond)
	error := "error"
	if err := lab.Update(ctx, map[string]Update{servers[0].ID: {VMState: &error}, servers[1].ID: {Delete: true}}); err != nil {
		t.Fatal(err)
	}
	if tok, err = lab.Token(ctx); err != nil {
		t.Fatal(err)
	}
	_, body, _ = lab.Get(ctx, tok, "2.69", "/servers/detail?all_tenants=1&changes-since="+since)
	l = listing{}
	json.Unmarshal(body, &l)
	changed := map[string]string{}
	for _, s := range l.Servers {
		changed[s.ID] = s.Status
	}
	if changed[servers[0].ID] != "ERROR" || changed[servers[1].ID] != "DELETED" || len(changed) != 2 {
		t.Errorf("changes-since %s: %v\n%.2000s", since, changed, body)
	}

	// A short-lived token is refused once expired. Only this token is
	// short-lived: it comes from a Keystone of its own. Its lifetime is read
	// from the login's answer, never by a request that a slow machine could
	// make after the token expired.
	shortURL, err := lab.ShortLivedAuthURL(ctx, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var issued struct {
		Token struct {
			IssuedAt  time.Time `json:"issued_at"`
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"token"`
	}
	short, err := lab.loginAt(ctx, shortURL, passwordAuth("admin", AdminPassword, "admin"), &issued)
	if err != nil {
		t.Fatal(err)
	}
	if life := issued.Token.ExpiresAt.Sub(issued.Token.IssuedAt); life <= 0 || life > 3*time.Second {
		t.Errorf("token of the short-lived Keystone lives %v, want 3s", life)
	}
	if err := lab.WaitTokenExpired(ctx, short); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := lab.Get(ctx, short, "2.69", "/servers/detail?limit=1"); code != 401 {
		t.Errorf("expired token answered %d, want 401", code)
	}
	// Every other token keeps Keystone's default hour.
	if expiry, err := lab.TokenExpiry(ctx, tok); err != nil || time.Until(expiry) < 50*time.Minute {
		t.Errorf("the lab's admin token expires at %v (%v), want about an hour from now", expiry, err)
	}
}

// record saves what the real Nova answered, as fixtures for the HTTP
// stand-in: OPENSTACKLAB_RECORD=1 go test -run TestRealNova ./internal/openstacklab/
func record(t *testing.T, lab *Lab, tok, activeID string) {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join("..", "..", "inventory", "testdata", "nova")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Ports change from run to run; the fixtures say NOVA instead.
	port := regexp.MustCompile(`http://127\.0\.0\.1:\d+`)
	save := func(name, path string) []byte {
		code, body, err := lab.Get(ctx, tok, "2.69", path)
		if err != nil {
			t.Fatal(err)
		}
		var pretty bytes.Buffer
		if json.Indent(&pretty, body, "", "  ") != nil {
			pretty.Reset()
			pretty.Write(body)
		}
		out := port.ReplaceAll(pretty.Bytes(), []byte("http://NOVA"))
		note := fmt.Sprintf("GET %s (microversion 2.69) -> %d\n", path, code)
		if err := os.WriteFile(filepath.Join(dir, name), append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".request"), []byte(note), 0o644); err != nil {
			t.Fatal(err)
		}
		return out
	}
	save("versions.json", "/")
	save("servers_detail_page1.json", "/servers/detail?all_tenants=1&limit=3")
	save("server_show.json", "/servers/"+activeID)
	save("servers_bad_marker.json", "/servers/detail?all_tenants=1&marker=no-such-server")
	code, body, _ := lab.Get(ctx, "", "2.69", "/servers/detail")
	os.WriteFile(filepath.Join(dir, "servers_no_token.json"), append(body, '\n'), 0o644)
	os.WriteFile(filepath.Join(dir, "servers_no_token.json.request"), []byte(fmt.Sprintf("GET /servers/detail without a token -> %d\n", code)), 0o644)
}

// TestLeastPrivilegeRole proves docs/security.md: a user that is not admin,
// holding a dedicated role through a project-scoped application
// credential, reads what the exporter needs once Nova's policy.yaml grants
// the role the rules the document lists; without each rule, Nova behaves as
// the document says. Nova runs with its new policy defaults and scope
// checks, the strictest setting.
func TestLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	policy := docPolicy(t)
	lab := StartForTest(t, Options{NewPolicyDefaults: true})
	defer func() {
		if t.Failed() {
			t.Logf("openstack logs:\n%s", lab.Logs())
		}
	}()
	var servers []Server
	for i := 0; i < 6; i++ {
		servers = append(servers, Server{
			ID: fmt.Sprintf("10000000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("lp-%d", i),
			ProjectID: fmt.Sprintf("tenant-%d", i%3), Host: fmt.Sprintf("cmp-%d", i%2), VMState: "active", PowerState: 1,
			Addresses: []Address{{Network: "provider", Address: fmt.Sprintf("198.18.0.%d", i+1), Type: "fixed"}},
		})
	}
	if _, err := lab.Seed(ctx, servers); err != nil {
		t.Fatal(err)
	}
	for host, state := range map[string]string{"cmp-0": "UP", "cmp-1": "DOWN"} {
		if err := lab.SetComputeService(ctx, host, state); err != nil {
			t.Fatal(err)
		}
	}
	// As docs/security.md creates them.
	if err := lab.CreateUser(ctx, "vm-exporter", "lab-exporter-password", "monitoring", "reader", "vm-exporter"); err != nil {
		t.Fatal(err)
	}
	id, secret, err := lab.CreateApplicationCredential(ctx, "vm-exporter", "lab-exporter-password", "monitoring", "openstack-vm-exporter")
	if err != nil {
		t.Fatal(err)
	}
	token, err := lab.ApplicationCredentialToken(ctx, id, secret)
	if err != nil {
		t.Fatal(err)
	}

	type view struct {
		listCode, servicesCode int
		hosts                  map[string]int // servers listed per OS-EXT-SRV-ATTR:host ("" when absent)
		hostStatus             int            // servers listed with a host_status
	}
	look := func() view {
		t.Helper()
		v := view{hosts: map[string]int{}}
		code, body, err := lab.Get(ctx, token, "2.69", "/servers/detail?all_tenants=1&host=cmp-0")
		if err != nil {
			t.Fatal(err)
		}
		v.listCode = code
		var l struct {
			Servers []map[string]any `json:"servers"`
		}
		if code == 200 {
			if err := json.Unmarshal(body, &l); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range l.Servers {
			h, _ := s["OS-EXT-SRV-ATTR:host"].(string)
			v.hosts[h]++
			if _, ok := s["host_status"]; ok {
				v.hostStatus++
			}
		}
		if v.servicesCode, _, err = lab.Get(ctx, token, "2.69", "/os-services?binary=nova-compute"); err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Nova's defaults: admin only.
	if v := look(); v.listCode != 403 || v.servicesCode != 403 {
		t.Errorf("without the overrides: listing %d, services %d; want 403 and 403", v.listCode, v.servicesCode)
	}

	// With every override: cmp-0's three servers, of every project, with
	// their host and host status, and the compute services.
	if err := lab.SetNovaPolicy(policy); err != nil {
		t.Fatal(err)
	}
	if v := look(); v.listCode != 200 || v.servicesCode != 200 || v.hosts["cmp-0"] != 3 || len(v.hosts) != 1 || v.hostStatus != 3 {
		t.Errorf("with the overrides: %+v; want 3 servers of cmp-0, each with its host_status, and the services", v)
	}

	// Without each rule, what the document says.
	effects := map[string]func(view) bool{
		"os_compute_api:servers:detail:get_all_tenants": func(v view) bool { return v.listCode == 403 && v.servicesCode == 200 },
		// The host filter dropped: every host's servers come back.
		"os_compute_api:servers:allow_all_filters":     func(v view) bool { return v.listCode == 200 && v.hosts["cmp-0"] == 3 && v.hosts["cmp-1"] == 3 },
		"os_compute_api:os-extended-server-attributes": func(v view) bool { return v.listCode == 200 && v.hosts[""] == 3 && len(v.hosts) == 1 },
		"os_compute_api:servers:show:host_status":      func(v view) bool { return v.listCode == 200 && v.hosts["cmp-0"] == 3 && v.hostStatus == 0 },
		"os_compute_api:os-services:list":              func(v view) bool { return v.listCode == 200 && v.hostStatus == 3 && v.servicesCode == 403 },
	}
	rules := map[string]bool{}
	ruleName := regexp.MustCompile(`^"([^"]+)":`)
	for _, line := range strings.Split(policy, "\n") {
		if m := ruleName.FindStringSubmatch(line); m != nil {
			rules[m[1]] = true
			effect, ok := effects[m[1]]
			if !ok {
				t.Errorf("docs/security.md grants %s, whose effect this test does not check", m[1])
				continue
			}
			if err := lab.SetNovaPolicy(strings.ReplaceAll(policy, line+"\n", "")); err != nil {
				t.Fatal(err)
			}
			if v := look(); !effect(v) {
				t.Errorf("without %s: %+v, not what docs/security.md says", m[1], v)
			}
		}
	}
	for rule := range effects {
		if !rules[rule] {
			t.Errorf("docs/security.md does not grant %s", rule)
		}
	}

	// One server of another project: Nova's database layer limits every
	// user but an admin to the token's project, whatever the policy, so
	// GET /servers/{id} answers 404; the listing with the uuid filter (an
	// all_tenants listing, allowed by the overrides) finds it.
	if err := lab.SetNovaPolicy(policy); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := lab.Get(ctx, token, "2.69", "/servers/"+servers[0].ID); code != 404 {
		t.Errorf("GET /servers/{id} of another project: %d %.300s; docs/security.md says 404", code, body)
	}
	code, body, _ := lab.Get(ctx, token, "2.69", "/servers/detail?all_tenants=1&uuid="+servers[0].ID)
	if code != 200 || !strings.Contains(string(body), servers[0].ID) || strings.Contains(string(body), servers[1].ID) {
		t.Errorf("listing with uuid=%s: %d %.300s", servers[0].ID, code, body)
	}
}

// docPolicy is the policy.yaml of docs/security.md: the yaml block after
// the comment that marks it.
func docPolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- nova policy.yaml, tested by internal/openstacklab -->\\s*```yaml\\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("docs/security.md has no marked policy.yaml block")
	}
	// The block is indented in a list item.
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimRight(string(m[1]), " "), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}

// Many logins and token validations at once, the first ones on a fresh
// Keystone among them, must all be answered: on native threads, Keystone
// refused some (403) and wedged for good in other runs (serve_keystone_app).
func TestKeystoneConcurrentLogins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lab := StartForTest(t, Options{})
	// Bounds a wedge only: every login returns long before.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	const clients, logins = 16, 12
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		go func() {
			for i := 0; i < logins; i++ {
				tok, err := lab.Token(ctx)
				if err == nil {
					_, err = lab.TokenExpiry(ctx, tok)
				}
				if err != nil {
					errs <- fmt.Errorf("client %d, login %d: %w", c, i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for c := 0; c < clients; c++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.Log(lab.Logs())
	}
}
