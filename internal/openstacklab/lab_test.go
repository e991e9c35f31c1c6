package openstacklab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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
	Require(t)
	ctx := context.Background()
	lab, err := Start(ctx, Options{Dir: t.TempDir(), TokenExpiration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
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

	// A short-lived token is refused once expired.
	if code, _, _ := lab.Get(ctx, tok, "2.69", "/servers/detail?limit=1"); code != 200 {
		t.Errorf("fresh token answered %d", code)
	}
	time.Sleep(11 * time.Second)
	if code, _, _ := lab.Get(ctx, tok, "2.69", "/servers/detail?limit=1"); code != 401 {
		t.Errorf("expired token answered %d, want 401", code)
	}
}

// record saves what the real Nova answered, as fixtures for the HTTP
// stand-in: OPENSTACKLAB_RECORD=1 go test -run TestRealNova ./internal/openstacklab/
func record(t *testing.T, lab *Lab, tok, activeID string) {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join("..", "..", "testdata", "nova")
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
