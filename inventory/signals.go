package inventory

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Nova's own signals: what Nova records about the servers and hosts it
// manages that no server listing shows. Why a server went SHUTOFF (its
// instance actions), why a compute service is disabled (os-services'
// disabled_reason), and migrations that failed or never end (os-migrations).
// Each is read at a bounded cost, and a failure to read one never fails the
// refresh: it is counted in Health.SignalErrors and the rest goes on.

// Causes of a SHUTOFF, as in openstack_vm_shutoff_cause{cause}.
const (
	// causeNovaPowerSync: the newest stop was recorded with no user, as
	// nova-compute's power sync records the stop it calls on a guest that
	// stopped by itself (crash, qemu killed, host reboot).
	causeNovaPowerSync = "nova_power_sync"
	// causeUser: a person (or a tool with a user's token) stopped it.
	causeUser = "user"
	// causeUnknown: no stop action explains it, or the actions could not
	// be read.
	causeUnknown = "unknown"
)

// Disabled reason classes of a compute service, as in
// openstack_vm_compute_host_disabled_reason{class}.
const (
	disabledNone      = "none"
	disabledOperator  = "operator"
	disabledAutomatic = "automatic"
)

// Signal APIs, as in openstack_vm_api_signal_*{api}.
const (
	SignalInstanceActions = "instance_actions"
	SignalMigrations      = "migrations"
)

// SignalAPIs lists every signal API, so counters can start at zero.
var SignalAPIs = []string{SignalInstanceActions, SignalMigrations, SignalPorts, SignalSecurityGroups}

// SignalKey names a counter of Health.SignalErrors.
type SignalKey struct{ API, Reason string }

// Bounds of the instance-action reads.
const (
	// maxActionReads bounds the servers whose actions are read in one
	// refresh; the rest wait for the next one, oldest SHUTOFF first. A host
	// that rebooted stops all its servers at once: its exporter learns
	// their causes over a few refreshes instead of hitting Nova with a
	// burst.
	maxActionReads = 10
	// maxActionAttempts bounds the reads of one server's actions that
	// fail; its cause is then unknown, and is not read again until it
	// leaves SHUTOFF and comes back.
	maxActionAttempts = 3
	// actionsLimit is the newest actions read per server (microversion
	// 2.58 and later; older ones return every action).
	actionsLimit = 10
	// shutoffLookback: a server the exporter has not seen before (at
	// start, or arriving on its host) that is SHUTOFF is read only if Nova
	// updated it this recently, by Nova's clock: a stop the exporter could
	// not have seen happen, not the many servers that are off for months.
	shutoffLookback = time.Hour
)

// Bounds of the migration listing.
const (
	// migrationWindow: migrations updated this recently, by Nova's clock
	// (changes-since), are listed. A failed migration older than this is
	// history; one in progress with no update for this long is dropped too
	// (its server's task state stays, see OpenStackVMStuckInTaskState).
	migrationWindow = 24 * time.Hour
	// maxMigrationPages bounds one listing; the newest come first.
	maxMigrationPages = 10
)

// InstanceAction is one of a server's instance actions.
type InstanceAction struct {
	Action string
	// UserID is "" when Nova recorded none: an action Nova started itself
	// (its periodic tasks run with an admin context without a user).
	UserID string
	Start  time.Time
}

// InstanceActions reads a server's newest instance actions, newest first:
// GET /servers/{id}/os-instance-actions. found is false when Nova answers
// 404: the server is gone, or belongs to another project and the user is
// not admin (Nova looks the server up in the caller's project).
func (c *Client) InstanceActions(ctx context.Context, id string, limit int) (actions []InstanceAction, found bool, err error) {
	var body struct {
		Actions []struct {
			Action    string  `json:"action"`
			UserID    *string `json:"user_id"`
			StartTime string  `json:"start_time"`
		} `json:"instanceActions"`
	}
	values := url.Values{}
	if limit > 0 {
		values.Set("limit", strconv.Itoa(limit))
	}
	u := c.compute.ServiceURL("servers", url.PathEscape(id), "os-instance-actions")
	if len(values) > 0 {
		u += "?" + values.Encode()
	}
	if _, err := c.getJSON(ctx, u, &body); err != nil {
		if statusCode(err) == http.StatusNotFound {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("reading the instance actions of server %s: %w", id, err)
	}
	for _, a := range body.Actions {
		ia := InstanceAction{Action: Clean(a.Action), Start: parseNovaTime(a.StartTime)}
		if a.UserID != nil {
			ia.UserID = Clean(*a.UserID)
		}
		actions = append(actions, ia)
	}
	// Nova lists the newest first; do not rely on it.
	slices.SortStableFunc(actions, func(a, b InstanceAction) int { return b.Start.Compare(a.Start) })
	return actions, true, nil
}

// ShutoffCause tells from a server's actions (newest first) why it is
// SHUTOFF: the newest "stop", unless a "start" or "reboot" came after it,
// and who recorded it. stopped is the stop's start time (Nova's clock),
// zero when the cause is unknown.
func ShutoffCause(actions []InstanceAction) (cause string, stopped time.Time) {
	for _, a := range actions {
		switch a.Action {
		case "stop":
			if a.UserID == "" {
				return causeNovaPowerSync, a.Start
			}
			return causeUser, a.Start
		case "start", "reboot":
			return causeUnknown, time.Time{}
		}
	}
	return causeUnknown, time.Time{}
}

// parseNovaTime reads Nova's timestamps, which come with or without a zone
// and with or without microseconds; without a zone they are UTC.
func parseNovaTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02 15:04:05.999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// disabledClass classes a compute service's disabled_reason: nova-compute
// disables its own service when it loses libvirt's connection, with a
// reason that starts "AUTO: " (nova/virt/libvirt/driver.py,
// DISABLE_PREFIX), and enables it again only if it disabled it itself.
// Any other disabled service was disabled by an operator.
func disabledClass(status, reason string) string {
	switch {
	case status != "disabled":
		return disabledNone
	case strings.HasPrefix(reason, "AUTO:"):
		return disabledAutomatic
	}
	return disabledOperator
}

// Migration is a server's newest migration that needs a look: failed, or
// still in progress.
type Migration struct {
	// ID is the migration's uuid (microversion 2.59 and later), else its
	// number.
	ID       string
	ServerID string
	Source   string
	Dest     string
	Status   string
	Type     string
	Created  time.Time
	Updated  time.Time
	// Age is how long ago it was created, by Nova's clock, when listed.
	Age time.Duration
}

// Failed tells whether a migration status is a failure.
func migrationFailed(status string) bool { return status == "error" || status == "failed" }

// migrationDone tells whether a migration status is final and fine: the
// move completed (confirmed, or "finished" and waiting for the resize to
// be confirmed, which OpenStackVMResizeNotConfirmed covers), was reverted
// or cancelled.
func migrationDone(status string) bool {
	switch status {
	case "completed", "confirmed", "finished", "reverted", "cancelled", "done":
		return true
	}
	return false
}

// ListMigrations reads the migrations updated since then (admin only: GET
// /os-migrations, microversion 2.59 and later honour changes-since), of one
// host (source or destination) or all, newest first, at most maxPages pages
// of pageSize.
func (c *Client) ListMigrations(ctx context.Context, host string, since time.Time, pageSize, maxPages int) ([]Migration, error) {
	type novaMigration struct {
		ID           any    `json:"id"`
		UUID         string `json:"uuid"`
		InstanceUUID string `json:"instance_uuid"`
		Source       string `json:"source_compute"`
		Dest         string `json:"dest_compute"`
		Status       string `json:"status"`
		Type         string `json:"migration_type"`
		Created      string `json:"created_at"`
		Updated      string `json:"updated_at"`
	}
	values := url.Values{}
	if host != "" {
		values.Set("host", host)
	}
	if !since.IsZero() {
		values.Set("changes-since", since.UTC().Format(time.RFC3339))
	}
	if pageSize > 0 {
		values.Set("limit", strconv.Itoa(pageSize))
	}
	var out []Migration
	for page := 1; page <= maxPages; page++ {
		var body struct {
			Migrations []novaMigration `json:"migrations"`
			Links      []struct {
				Rel string `json:"rel"`
			} `json:"migrations_links"`
		}
		if _, err := c.getJSON(ctx, c.compute.ServiceURL("os-migrations")+"?"+values.Encode(), &body); err != nil {
			return nil, fmt.Errorf("listing migrations (page %d): %w", page, err)
		}
		for _, m := range body.Migrations {
			id := m.UUID
			if id == "" {
				id = fmt.Sprint(m.ID)
			}
			out = append(out, Migration{
				ID: Clean(id), ServerID: Clean(m.InstanceUUID), Source: Clean(m.Source), Dest: Clean(m.Dest),
				Status: Clean(m.Status), Type: Clean(m.Type), Created: parseNovaTime(m.Created), Updated: parseNovaTime(m.Updated),
			})
		}
		next := false
		for _, l := range body.Links {
			next = next || l.Rel == "next"
		}
		last := len(body.Migrations) - 1
		if !next || last < 0 || body.Migrations[last].UUID == "" {
			break
		}
		values.Set("marker", body.Migrations[last].UUID)
	}
	return out, nil
}

// migrationsToWatch keeps, of each server, its newest migration, and of
// those the ones that failed or are in progress, sorted by server id. now
// is Nova's clock.
func migrationsToWatch(all []Migration, now time.Time) []Migration {
	newest := map[string]Migration{}
	for _, m := range all {
		if m.ServerID == "" {
			continue
		}
		cur, ok := newest[m.ServerID]
		if !ok || m.Created.After(cur.Created) || (m.Created.Equal(cur.Created) && m.ID > cur.ID) {
			newest[m.ServerID] = m
		}
	}
	var out []Migration
	for _, m := range newest {
		if migrationDone(m.Status) {
			continue
		}
		if !m.Created.IsZero() {
			m.Age = max(now.Sub(m.Created), 0)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Migration) int { return cmp.Compare(a.ServerID, b.ServerID) })
	return out
}

// noteShutoffs carries each SHUTOFF server's cause over from the last
// refresh, and queues the servers that just became SHUTOFF for a read of
// their actions: a transition seen between two refreshes, or a server
// first seen SHUTOFF that Nova updated within shutoffLookback. now is
// Nova's clock.
func (inv *Inventory) noteShutoffs(next map[string]*Server, now time.Time) {
	if inv.actionsPending == nil {
		inv.actionsPending = map[string]int{}
	}
	for id, s := range next {
		if s.Status != "SHUTOFF" {
			delete(inv.actionsPending, id)
			continue
		}
		prev := inv.servers[id]
		switch {
		case prev != nil && prev.Status == "SHUTOFF":
			s.ShutoffCause, s.ShutoffStopped = prev.ShutoffCause, prev.ShutoffStopped
		case prev != nil || (!s.Updated.IsZero() && now.Sub(s.Updated) <= shutoffLookback):
			s.ShutoffCause, s.ShutoffStopped = "", time.Time{}
			if inv.actionsDenied {
				s.ShutoffCause = causeUnknown
			} else {
				inv.actionsPending[id] = 0
			}
		}
	}
	for id := range inv.actionsPending {
		if next[id] == nil {
			delete(inv.actionsPending, id)
		}
	}
}

// readShutoffCauses reads the actions of at most maxActionReads queued
// servers, those SHUTOFF the longest first.
func (inv *Inventory) readShutoffCauses(ctx context.Context, logger *slog.Logger, client *Client, next map[string]*Server) {
	if len(inv.actionsPending) == 0 {
		return
	}
	ids := make([]string, 0, len(inv.actionsPending))
	for id := range inv.actionsPending {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(next[a].StatusSince.Compare(next[b].StatusSince), cmp.Compare(a, b))
	})
	for _, id := range ids[:min(len(ids), maxActionReads)] {
		if ctx.Err() != nil {
			return
		}
		s := next[id]
		inv.countSignal(SignalInstanceActions, nil)
		actions, found, err := client.InstanceActions(ctx, id, actionsLimit)
		if code := statusCode(err); code == http.StatusForbidden {
			inv.countSignal(SignalInstanceActions, err)
			inv.actionsDenied = true
			logger.Info("nova does not let this user read instance actions; the cause of a SHUTOFF is unknown "+
				"(policy os_compute_api:os-instance-actions:list)", "status", code)
			for pid := range inv.actionsPending {
				next[pid].ShutoffCause = causeUnknown
			}
			clear(inv.actionsPending)
			return
		}
		if err != nil {
			inv.countSignal(SignalInstanceActions, err)
			if ctx.Err() != nil {
				// The refresh ran out of time: not this server's fault.
				return
			}
			inv.actionsPending[id]++
			if inv.actionsPending[id] >= maxActionAttempts {
				s.ShutoffCause = causeUnknown
				delete(inv.actionsPending, id)
			}
			logger.Warn("reading a SHUTOFF server's instance actions failed", "id", id,
				"attempt", inv.actionsPending[id], "err", client.Redactor().Message(err))
			continue
		}
		delete(inv.actionsPending, id)
		if !found {
			s.ShutoffCause = causeUnknown
			continue
		}
		s.ShutoffCause, s.ShutoffStopped = ShutoffCause(actions)
		if s.ShutoffCause == causeNovaPowerSync {
			logger.Warn("nova stopped a server itself: its guest had stopped (crash, qemu killed, host reboot)",
				"id", id, "name", s.Name, "host", s.Host, "stopped", s.ShutoffStopped)
		}
	}
}

// refreshMigrations lists the migrations of the host (or all) updated
// within migrationWindow. It never fails the refresh: on failure the last
// listing stays.
func (inv *Inventory) refreshMigrations(ctx context.Context, logger *slog.Logger, client *Client, host string, pageSize int, now time.Time) {
	if inv.migrationsDenied {
		return
	}
	inv.countSignal(SignalMigrations, nil)
	all, err := client.ListMigrations(ctx, host, now.Add(-migrationWindow), pageSize, maxMigrationPages)
	if code := statusCode(err); code == http.StatusForbidden || code == http.StatusNotFound {
		inv.countSignal(SignalMigrations, err)
		inv.migrationsDenied = true
		logger.Info("nova does not let this user list migrations (policy os_compute_api:os-migrations:index, admin by default); "+
			"failed and endless migrations are not watched", "status", code)
		return
	}
	if err != nil {
		inv.countSignal(SignalMigrations, err)
		logger.Warn("listing migrations failed; the last listing stays", "err", client.Redactor().Message(err))
		return
	}
	inv.migrations = migrationsToWatch(all, now)
}

// countSignal counts a read of a signal API (err nil) or its failure.
func (inv *Inventory) countSignal(api string, err error) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if err == nil {
		inv.health.SignalReads[api]++
		return
	}
	inv.health.SignalErrors[SignalKey{api, Classify(err)}]++
}
