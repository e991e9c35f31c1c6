//go:build lab

package exporter

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
)

// labService is an exporter (no probing) against the real Keystone and Nova
// of lab, as the lab's admin.
func labService(t *testing.T, lab *openstacklab.Lab, scope, host string) *Service {
	t.Helper()
	env := lab.AdminEnv()
	cfg := config.Default()
	cfg.OpenStack.Scope, cfg.OpenStack.Host = scope, host
	cfg.Probe.ICMP.Enabled = false
	// A loaded machine answers slowly; the refresh must not run out of time.
	cfg.OpenStack.Timeout = 5 * time.Minute
	svc, err := New(cfg, Deps{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// gather refreshes the inventory and returns the
// registry's families.
func gather(t *testing.T, lab *openstacklab.Lab, svc *Service) map[string]*dto.MetricFamily {
	t.Helper()
	if err := svc.inv.Refresh(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, lab.Logs())
	}
	fams, err := svc.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func value(fams map[string]*dto.MetricFamily, name string, match map[string]string) (float64, bool) {
	m := find(fams, name, match)
	if len(m) != 1 {
		return 0, false
	}
	if m[0].GetCounter() != nil {
		return m[0].GetCounter().GetValue(), true
	}
	return m[0].GetGauge().GetValue(), true
}

// causes maps server id to its openstack_vm_shutoff_cause.
func causes(fams map[string]*dto.MetricFamily) map[string]string {
	out := map[string]string{}
	for _, m := range fams["openstack_vm_shutoff_cause"].GetMetric() {
		l := metricLabels(m)
		out[l["id"]] = l["cause"]
	}
	return out
}

// TestRealNovaSignals runs the exporter against the real Nova API with
// instance actions, compute services and migrations written by Nova's own
// object layer, as nova-compute and the conductor write them.
func TestRealNovaSignals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lab := openstacklab.StartForTest(t, openstacklab.Options{})

	id := func(i int) string { return fmt.Sprintf("20000000-0000-4000-8000-%012d", i) }
	crashedID := id(1)
	const (
		crashFirst = 0  // 0..11 stopped by Nova's power sync, on cmp-a
		crashN     = 12 // more than one refresh reads
		userStop   = 20 // stopped by its user
		oldOff     = 21 // SHUTOFF for days before the exporter started
		restarted  = 22 // stopped by Nova, then started, then stopped again outside Nova's API
		migRunning = 30 // live migration running for 8 h
		migFailed  = 31 // newest migration failed
		migRetried = 32 // a failed migration, then a completed one
		migOld     = 33 // failed two days ago: outside the window
		migOnB     = 34 // on cmp-b, migration to cmp-c failed
	)
	var fleet []openstacklab.Server
	add := func(i int, host, vm string, power int, updated time.Time) {
		fleet = append(fleet, openstacklab.Server{ID: id(i), Name: fmt.Sprintf("vm-%d", i), ProjectID: "p1", UserID: "lab-user",
			Host: host, VMState: vm, PowerState: power, UpdatedAt: updated})
	}
	for i := crashFirst; i < crashFirst+crashN; i++ {
		add(i, "cmp-a", "active", 1, time.Time{})
	}
	add(userStop, "cmp-a", "active", 1, time.Time{})
	add(oldOff, "cmp-a", "stopped", 4, time.Now().Add(-72*time.Hour))
	add(restarted, "cmp-a", "active", 1, time.Time{})
	for _, i := range []int{migRunning, migFailed, migRetried, migOld} {
		add(i, "cmp-a", "active", 1, time.Time{})
	}
	add(migOnB, "cmp-b", "active", 1, time.Time{})
	if _, err := lab.Seed(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	for host, reason := range map[string]string{"cmp-a": "AUTO: Connection to libvirt lost: 1", "cmp-b": "kernel upgrade"} {
		if err := lab.DisableComputeService(ctx, host, reason); err != nil {
			t.Fatal(err)
		}
	}
	if err := lab.SetComputeService(ctx, "cmp-c", "UP"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := lab.SeedMigrations(ctx, []openstacklab.Migration{
		{ServerID: id(migRunning), Dest: "cmp-c", Status: "running", CreatedAt: now.Add(-8 * time.Hour), UpdatedAt: now.Add(-time.Minute)},
		{ServerID: id(migFailed), Dest: "cmp-c", Status: "error", CreatedAt: now.Add(-2 * time.Hour)},
		{ServerID: id(migRetried), Dest: "cmp-c", Status: "failed", CreatedAt: now.Add(-3 * time.Hour)},
		{ServerID: id(migRetried), Dest: "cmp-c", Status: "completed", CreatedAt: now.Add(-time.Hour)},
		{ServerID: id(migOld), Dest: "cmp-c", Status: "failed", CreatedAt: now.Add(-50 * time.Hour)},
		{ServerID: id(migOnB), Dest: "cmp-c", Status: "failed", Type: "migration", CreatedAt: now.Add(-time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}

	svc := labService(t, lab, "all", "")
	fams := gather(t, lab, svc)
	if c := causes(fams); len(c) != 0 {
		t.Errorf("causes before any stop: %v (a server off for days is not read)", c)
	}
	if n, _ := value(fams, "openstack_vm_api_signal_requests_total", map[string]string{"api": "instance_actions"}); n != 0 {
		t.Errorf("%v instance-action reads before any stop", n)
	}

	t.Run("compute service disabled reason", func(t *testing.T) {
		for host, class := range map[string]string{"cmp-a": "automatic", "cmp-b": "operator", "cmp-c": "none"} {
			if v, ok := value(fams, "openstack_vm_compute_host_disabled_reason", map[string]string{"host": host, "class": class}); !ok || v != 1 {
				t.Errorf("%s: no disabled reason %s: %v", host, class, find(fams, "openstack_vm_compute_host_disabled_reason", map[string]string{"host": host}))
			}
		}
	})

	t.Run("migrations", func(t *testing.T) {
		got := map[string]string{}
		for _, m := range fams["openstack_vm_migration_age_seconds"].GetMetric() {
			l := metricLabels(m)
			got[l["id"]] = l["status"] + " " + l["host"] + ">" + l["dest_host"] + " " + l["migration_type"]
		}
		want := map[string]string{
			id(migRunning): "running cmp-a>cmp-c live-migration",
			id(migFailed):  "error cmp-a>cmp-c live-migration",
			id(migOnB):     "failed cmp-b>cmp-c migration",
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("migrations %v, want %v", got, want)
		}
		age, ok := value(fams, "openstack_vm_migration_age_seconds", map[string]string{"id": id(migRunning)})
		if !ok || age < 8*3600-120 || age > 8*3600+600 {
			t.Errorf("age of the 8 h migration: %v %v", age, ok)
		}
		// Scope host: the migrations from or to that host only.
		b := gather(t, lab, labService(t, lab, "host", "cmp-b"))
		if m := b["openstack_vm_migration_age_seconds"].GetMetric(); len(m) != 1 || metricLabels(m[0])["id"] != id(migOnB) {
			t.Errorf("scope host cmp-b: %v", m)
		}
	})

	t.Run("shutoff causes", func(t *testing.T) {
		var crashed []string
		for i := crashFirst; i < crashFirst+crashN; i++ {
			crashed = append(crashed, id(i))
		}
		// Stopped by Nova; then started outside Nova's API (no action),
		// then its user starts it and it goes off again with no stop
		// recorded (a direct database repair): the old stop, older than
		// the start, does not explain it.
		if err := lab.StopServers(ctx, openstacklab.StopByNova, id(restarted)); err != nil {
			t.Fatal(err)
		}
		fams = gather(t, lab, svc)
		if c := causes(fams); c[id(restarted)] != "nova_power_sync" || len(c) != 1 {
			t.Errorf("after the first stop: %v", c)
		}
		vm, power := "active", 1
		if err := lab.Update(ctx, map[string]openstacklab.Update{id(restarted): {VMState: &vm, PowerState: &power}}); err != nil {
			t.Fatal(err)
		}
		fams = gather(t, lab, svc)
		if c := causes(fams); len(c) != 0 {
			t.Errorf("after the start: %v", c)
		}
		if err := lab.RecordAction(ctx, id(restarted), "start", "lab-user"); err != nil {
			t.Fatal(err)
		}
		vm, power = "stopped", 4
		if err := lab.Update(ctx, map[string]openstacklab.Update{id(restarted): {VMState: &vm, PowerState: &power}}); err != nil {
			t.Fatal(err)
		}
		if err := lab.StopServers(ctx, openstacklab.StopByNova, crashed...); err != nil {
			t.Fatal(err)
		}
		if err := lab.StopServers(ctx, "lab-user", id(userStop)); err != nil {
			t.Fatal(err)
		}

		// 14 servers became SHUTOFF: at most 10 reads a refresh.
		reads := func() float64 {
			n, _ := value(fams, "openstack_vm_api_signal_requests_total", map[string]string{"api": "instance_actions"})
			return n
		}
		fams = gather(t, lab, svc)
		if n, _ := value(fams, "openstack_vm_shutoff_cause_pending", nil); reads() != 11 || n != 4 {
			t.Errorf("first refresh after 14 stops: %v reads in all, %v pending; want 11 (1 before, then 10) and 4", reads(), n)
		}
		var seen map[string]string
		for round := 0; round < 3; round++ {
			fams = gather(t, lab, svc)
			seen = causes(fams)
		}
		for _, sid := range crashed {
			if seen[sid] != "nova_power_sync" {
				t.Errorf("%s: cause %q, want nova_power_sync", sid, seen[sid])
			}
			if ts, ok := value(fams, "openstack_vm_shutoff_stop_timestamp_seconds", map[string]string{"id": sid}); !ok || ts < float64(now.Add(-time.Minute).Unix()) {
				t.Errorf("%s: stop time %v %v", sid, ts, ok)
			}
		}
		if seen[id(userStop)] != "user" || seen[id(restarted)] != "unknown" || seen[id(oldOff)] != "" {
			t.Errorf("causes %v", seen)
		}
		if v, ok := value(fams, "openstack_vm_shutoff_cause", map[string]string{"id": crashed[0], "host": "cmp-a", "name": "vm-0"}); !ok || v != 1 {
			t.Errorf("labels of the cause: %v", find(fams, "openstack_vm_shutoff_cause", map[string]string{"id": crashed[0]}))
		}
		// Each server read once per transition: 12 + 1 (the user's) + 2
		// (the restarted one, once per SHUTOFF), however many refreshes.
		if n := reads(); n != 15 {
			t.Errorf("%v instance-action reads, want 15", n)
		}
		if n, _ := value(fams, "openstack_vm_shutoff_cause_pending", nil); n != 0 {
			t.Errorf("%v still pending", n)
		}
		for _, m := range fams["openstack_vm_api_signal_errors_total"].GetMetric() {
			if m.GetCounter().GetValue() != 0 {
				t.Errorf("signal errors: %v", metricLabels(m))
			}
		}
		// Started again: the cause goes.
		vm, power = "active", 1
		if err := lab.Update(ctx, map[string]openstacklab.Update{crashed[0]: {VMState: &vm, PowerState: &power}}); err != nil {
			t.Fatal(err)
		}
		fams = gather(t, lab, svc)
		if c := causes(fams); c[crashed[0]] != "" || c[crashed[1]] != "nova_power_sync" {
			t.Errorf("after a start: %v", c)
		}
		if t.Failed() {
			t.Log(lab.Logs())
		}
	})
	// docs/security.md: the policy rule alone does not open the actions of
	// another project's servers to a user without the admin role; Nova
	// looks the server up in the token's project and answers 404.
	t.Run("instance actions of another project", func(t *testing.T) {
		if err := lab.SetNovaPolicy(`"os_compute_api:os-instance-actions:list": "role:reader"` + "\n"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lab.SetNovaPolicy("") })
		id, secret, err := lab.CreateApplicationCredential(ctx, "lab-reader", openstacklab.ReaderPassword, "lab-project", "signals")
		if err != nil {
			t.Fatal(err)
		}
		token, err := lab.ApplicationCredentialToken(ctx, id, secret)
		if err != nil {
			t.Fatal(err)
		}
		code, body, err := lab.Get(ctx, token, "2.69", "/servers/"+crashedID+"/os-instance-actions")
		if err != nil || code != 404 {
			t.Errorf("a reader of another project: %d %s %v, want 404", code, body, err)
		}
		admin, err := lab.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if code, body, err := lab.Get(ctx, admin, "2.69", "/servers/"+crashedID+"/os-instance-actions"); err != nil || code != 200 ||
			!strings.Contains(string(body), `"user_id": null`) {
			t.Errorf("the admin: %d %s %v, want 200 with the power sync's stop (user_id null)", code, body, err)
		}
	})

	// The reads Nova's policy refuses: counted once, then not tried again;
	// the causes unknown, no migrations, and the refresh still succeeds.
	t.Run("denied by policy", func(t *testing.T) {
		if err := lab.SetNovaPolicy(`"os_compute_api:os-migrations:index": "!"
"os_compute_api:os-instance-actions:list": "!"
`); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lab.SetNovaPolicy("") })
		fresh := labService(t, lab, "all", "")
		var f map[string]*dto.MetricFamily
		for range 2 {
			f = gather(t, lab, fresh)
		}
		if m := f["openstack_vm_migration_age_seconds"].GetMetric(); len(m) != 0 {
			t.Errorf("migrations listed against the policy: %v", m)
		}
		for _, api := range []string{"migrations", "instance_actions"} {
			reads, _ := value(f, "openstack_vm_api_signal_requests_total", map[string]string{"api": api})
			errs, _ := value(f, "openstack_vm_api_signal_errors_total", map[string]string{"api": api, "reason": "auth"})
			if reads != 1 || errs != 1 {
				t.Errorf("%s: %v reads, %v auth errors; want 1 and 1 (not tried again)", api, reads, errs)
			}
		}
		// The servers Nova stopped minutes ago, first seen now: unknown.
		if c := causes(f); c[id(crashFirst+1)] != "unknown" {
			t.Errorf("causes without the actions: %v", c)
		}
	})
}
