package inventory

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

func TestShutoffCause(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	for _, tc := range []struct {
		name    string
		actions []InstanceAction
		cause   string
		stopped time.Time
	}{
		{"power sync", []InstanceAction{{"stop", "", at(5)}, {"start", "u1", at(3)}, {"create", "u1", at(0)}}, causeNovaPowerSync, at(5)},
		{"user", []InstanceAction{{"stop", "u1", at(5)}, {"create", "u1", at(0)}}, causeUser, at(5)},
		{"older stop, started since", []InstanceAction{{"start", "u1", at(6)}, {"stop", "", at(5)}}, causeUnknown, time.Time{}},
		{"rebooted since", []InstanceAction{{"reboot", "u1", at(6)}, {"stop", "", at(5)}}, causeUnknown, time.Time{}},
		{"other actions after the stop", []InstanceAction{{"createImage", "u1", at(7)}, {"stop", "", at(5)}}, causeNovaPowerSync, at(5)},
		{"no stop", []InstanceAction{{"create", "u1", at(0)}}, causeUnknown, time.Time{}},
		{"none", nil, causeUnknown, time.Time{}},
	} {
		cause, stopped := ShutoffCause(tc.actions)
		if cause != tc.cause || !stopped.Equal(tc.stopped) {
			t.Errorf("%s: %s %v, want %s %v", tc.name, cause, stopped, tc.cause, tc.stopped)
		}
	}
}

func TestDisabledClass(t *testing.T) {
	for _, tc := range []struct{ status, reason, want string }{
		{"enabled", "", disabledNone},
		{"enabled", "AUTO: Connection to libvirt lost: 1", disabledNone},
		{"disabled", "AUTO: Connection to libvirt lost: 1", disabledAutomatic},
		{"disabled", "AUTO:", disabledAutomatic},
		{"disabled", "", disabledOperator},
		{"disabled", "auto: lowercase is a person's", disabledOperator},
	} {
		if got := disabledClass(tc.status, tc.reason); got != tc.want {
			t.Errorf("%s %q: %s, want %s", tc.status, tc.reason, got, tc.want)
		}
	}
}

func TestParseNovaTime(t *testing.T) {
	want := time.Date(2026, 11, 30, 12, 1, 2, 345678000, time.UTC)
	for _, s := range []string{"2026-11-30T12:01:02.345678", "2026-11-30T12:01:02.345678Z", "2026-11-30T13:01:02.345678+01:00"} {
		if got := parseNovaTime(s); !got.Equal(want) {
			t.Errorf("%s: %v", s, got)
		}
	}
	if got := parseNovaTime("2026-11-30T12:01:02"); !got.Equal(want.Truncate(time.Second)) {
		t.Errorf("no fraction: %v", got)
	}
}

func TestMigrationsToWatch(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ago := func(h int) time.Time { return now.Add(-time.Duration(h) * time.Hour) }
	all := []Migration{
		{ID: "m1", ServerID: "a", Status: "failed", Created: ago(5)},
		{ID: "m2", ServerID: "a", Status: "completed", Created: ago(2)}, // a retry that worked
		{ID: "m3", ServerID: "b", Status: "running", Created: ago(8)},
		{ID: "m4", ServerID: "c", Status: "error", Created: ago(1)},
		{ID: "m5", ServerID: "d", Status: "finished", Created: ago(1)}, // resize awaiting confirmation
		{ID: "m6", ServerID: "e", Status: "confirmed", Created: ago(1)},
		{ID: "m7", ServerID: "f", Status: "done", Created: ago(1)}, // evacuation
		{ID: "m8", ServerID: "", Status: "error", Created: ago(1)},
	}
	got := fmt.Sprint(migrationsToWatch(all, now))
	var want []Migration
	for _, m := range []Migration{all[2], all[3]} {
		m.Age = now.Sub(m.Created)
		want = append(want, m)
	}
	if got != fmt.Sprint(want) {
		t.Errorf("got %s\nwant %s", got, fmt.Sprint(want))
	}
}

// A server read once per SHUTOFF transition, its cause carried over while
// it stays SHUTOFF and dropped when it leaves; a server first seen SHUTOFF
// long after its last update is never read.
func TestNoteShutoffs(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	inv := New(Options{}, nil)
	srv := func(id, status string, updated time.Time) *Server {
		return &Server{ID: id, Status: status, Updated: updated, StatusSince: updated}
	}
	next := map[string]*Server{
		"on":     srv("on", "ACTIVE", now),
		"old":    srv("old", "SHUTOFF", now.Add(-48*time.Hour)),
		"recent": srv("recent", "SHUTOFF", now.Add(-10*time.Minute)),
	}
	inv.noteShutoffs(next, now)
	inv.servers = next
	if fmt.Sprint(inv.actionsPending) != "map[recent:0]" {
		t.Fatalf("pending at start: %v", inv.actionsPending)
	}
	// "recent" read: cause known. "on" stops.
	next["recent"].ShutoffCause = causeUser
	delete(inv.actionsPending, "recent")
	next2 := map[string]*Server{
		"on":     srv("on", "SHUTOFF", now),
		"old":    srv("old", "SHUTOFF", now.Add(-48*time.Hour)),
		"recent": srv("recent", "SHUTOFF", now.Add(-10*time.Minute)),
	}
	inv.noteShutoffs(next2, now)
	inv.servers = next2
	if fmt.Sprint(inv.actionsPending) != "map[on:0]" || next2["recent"].ShutoffCause != causeUser || next2["old"].ShutoffCause != "" {
		t.Fatalf("after a stop: pending %v, causes %+v", inv.actionsPending, next2)
	}
	// "on" starts again before its actions were read: no longer pending.
	next3 := map[string]*Server{"on": srv("on", "ACTIVE", now), "recent": srv("recent", "ACTIVE", now)}
	inv.noteShutoffs(next3, now)
	if len(inv.actionsPending) != 0 || next3["recent"].ShutoffCause != "" {
		t.Fatalf("after a start: pending %v", inv.actionsPending)
	}
}

// A failing instance-action read is tried at the next refreshes, at most
// maxActionAttempts times, then the cause is unknown and the server is not
// read again while it stays SHUTOFF. (Nova cannot be made to fail one call
// on demand: a stand-in answers 500.)
func TestShutoffCauseReadsGiveUp(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(standin.Server{ID: "s1", Name: "vm", Host: "cmp-1", VMState: "active", PowerState: 1},
		standin.Server{ID: "s2", Name: "vm2", Host: "cmp-1", VMState: "active", PowerState: 1})
	inv := newTestInventory(t, cloud, nil)
	ctx := context.Background()
	if err := inv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	var actionReads atomic.Int64
	cloud.SetFault(func(r *http.Request) *standin.Failure {
		if strings.HasSuffix(r.URL.Path, "/servers/s1/os-instance-actions") {
			actionReads.Add(1)
			return &standin.Failure{Status: 500}
		}
		return nil
	})
	cloud.AddAction("s2", standin.Action{Action: "stop", UserID: "", Start: time.Now()})
	for _, id := range []string{"s1", "s2"} {
		cloud.Update(id, func(s *standin.Server) { s.VMState, s.PowerState = "stopped", 4 })
	}
	cause := func(id string) string {
		for _, s := range inv.Snapshot().Servers {
			if s.ID == id {
				return s.ShutoffCause
			}
		}
		return "gone"
	}
	for i := 1; i <= 5; i++ {
		if err := inv.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		want := ""
		if i >= maxActionAttempts {
			want = causeUnknown
		}
		if got := cause("s1"); got != want || cause("s2") != causeNovaPowerSync {
			t.Errorf("refresh %d: causes %q %q, want %q and %q", i, got, cause("s2"), want, causeNovaPowerSync)
		}
	}
	h := inv.Health()
	if actionReads.Load() != maxActionAttempts || h.SignalErrors[SignalKey{SignalInstanceActions, Reason5xx}] != maxActionAttempts ||
		h.SignalReads[SignalInstanceActions] != maxActionAttempts+1 || h.ShutoffPending != 0 {
		t.Errorf("%d reads of s1, health %+v", actionReads.Load(), h)
	}
}
