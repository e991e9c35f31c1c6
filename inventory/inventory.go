// Package inventory keeps a snapshot of the Nova servers in scope, refreshed
// in the background: a full listing now and then, and in between only the
// servers Nova says changed. Readers (the collectors, the prober, the report)
// take the latest snapshot and never wait on the API.
package inventory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
)

// Snapshot is one consistent view of the inventory. It is never modified
// after it is published; share it freely.
type Snapshot struct {
	// Servers in scope, sorted by ID.
	Servers []Server
	// HostStatus maps a Nova host to its compute service state.
	HostStatus map[string]string
	// Taken is when the refresh that produced it started.
	Taken time.Time
}

// Health is the state of the refresh loop, for the exporter's own metrics.
type Health struct {
	Up           bool
	Ready        bool
	LastSuccess  time.Time
	LastDuration time.Duration
	// LastError is the last failure's message, secrets redacted.
	LastError string
	// Errors counts failed refreshes by reason (see Reasons).
	Errors map[string]uint64
	// Refreshes counts attempts by kind: "full", "incremental".
	Refreshes map[string]uint64
	Requests  uint64
	Bytes     uint64
}

// Options configures an Inventory.
type Options struct {
	OpenStack config.OpenStack
	// Host is the resolved Nova host in scope "host".
	Host string
	// KeepMetadata names the server metadata keys kept in the snapshot.
	KeepMetadata []string
	Logger       *slog.Logger
}

// Inventory refreshes the snapshot in the background.
type Inventory struct {
	snap  atomic.Pointer[Snapshot]
	wake  chan struct{}
	ready chan struct{}
	once  sync.Once

	mu     sync.Mutex // guards opts, client and health
	opts   Options
	client *Client
	health Health

	// Owned by the refreshing goroutine.
	servers         map[string]*Server
	serviceStates   map[string]string
	servicesDenied  bool
	changesSince    time.Time
	lastFull        time.Time
	lastRefresh     time.Time
	forceFull       bool
	warnedFilter    bool
	consecutiveFail int
}

// New returns an inventory with an empty snapshot; Run fills it.
func New(opts Options, client *Client) *Inventory {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	inv := &Inventory{
		wake:    make(chan struct{}, 1),
		ready:   make(chan struct{}),
		opts:    opts,
		client:  client,
		servers: map[string]*Server{},
		health: Health{
			Errors:    map[string]uint64{},
			Refreshes: map[string]uint64{"full": 0, "incremental": 0},
		},
	}
	for _, r := range Reasons {
		inv.health.Errors[r] = 0
	}
	inv.snap.Store(&Snapshot{HostStatus: map[string]string{}})
	return inv
}

// Snapshot returns the latest published snapshot.
func (inv *Inventory) Snapshot() *Snapshot { return inv.snap.Load() }

// Ready is closed after the first successful refresh.
func (inv *Inventory) Ready() <-chan struct{} { return inv.ready }

// Health returns a copy of the loop's state.
func (inv *Inventory) Health() Health {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	h := inv.health
	h.Errors = maps(inv.health.Errors)
	h.Refreshes = maps(inv.health.Refreshes)
	if inv.client != nil {
		h.Requests, h.Bytes = inv.client.Traffic()
		// Traffic of clients replaced by a reload is kept in the totals.
		h.Requests += inv.health.Requests
		h.Bytes += inv.health.Bytes
	}
	return h
}

func maps(m map[string]uint64) map[string]uint64 {
	c := make(map[string]uint64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Reconfigure swaps options and client (after a config reload) and asks for
// a full refresh at once. The served snapshot stays until that succeeds.
func (inv *Inventory) Reconfigure(opts Options, client *Client) {
	if opts.Logger == nil {
		opts.Logger = inv.opts.Logger
	}
	inv.mu.Lock()
	if inv.client != nil && inv.client != client {
		r, b := inv.client.Traffic()
		inv.health.Requests += r
		inv.health.Bytes += b
	}
	inv.opts, inv.client = opts, client
	inv.forceFull = true
	inv.mu.Unlock()
	select {
	case inv.wake <- struct{}{}:
	default:
	}
}

// Run refreshes until ctx ends: every refresh_interval (±10% jitter, so a
// fleet of exporters does not hit Nova in step), sooner with backoff after a
// failure, and at most every five minutes after a login failure, so bad
// credentials never turn into a storm against Keystone.
func (inv *Inventory) Run(ctx context.Context) {
	for {
		err := inv.Refresh(ctx)
		if ctx.Err() != nil {
			return
		}
		inv.mu.Lock()
		interval := inv.opts.OpenStack.RefreshInterval
		inv.mu.Unlock()
		wait := jitter(interval)
		if err != nil {
			inv.consecutiveFail++
			limit := interval
			if Classify(err) == ReasonAuth {
				limit = max(interval, 5*time.Minute)
			}
			wait = min(limit, time.Second<<min(inv.consecutiveFail-1, 16))
			wait = jitter(wait)
		} else {
			inv.consecutiveFail = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-inv.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// Refresh updates the snapshot once, bounded by openstack.timeout.
func (inv *Inventory) Refresh(ctx context.Context) error {
	inv.mu.Lock()
	opts, client := inv.opts, inv.client
	full := inv.forceFull || inv.changesSince.IsZero() || time.Since(inv.lastFull) >= opts.OpenStack.FullRefreshInterval
	inv.forceFull = false
	kind := "incremental"
	if full {
		kind = "full"
	}
	inv.health.Refreshes[kind]++
	inv.mu.Unlock()

	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, opts.OpenStack.Timeout)
	defer cancel()
	err := inv.refresh(ctx, opts, client, full, start)
	took := time.Since(start)

	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.health.LastDuration = took
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (timeout %s)", context.DeadlineExceeded, opts.OpenStack.Timeout)
		}
		reason := Classify(err)
		msg := client.Redactor().String(err.Error())
		inv.health.Up = false
		inv.health.Errors[reason]++
		inv.health.LastError = msg
		if full {
			inv.forceFull = true
		}
		opts.Logger.Error("inventory refresh failed; serving the last good inventory",
			"kind", kind, "reason", reason, "err", msg, "last_success", inv.health.LastSuccess)
		return &RefreshError{Reason: reason, Msg: msg}
	}
	inv.health.Up = true
	inv.health.LastSuccess = time.Now()
	inv.health.LastError = ""
	if !inv.health.Ready {
		inv.health.Ready = true
		inv.once.Do(func() { close(inv.ready) })
	}
	opts.Logger.Debug("inventory refreshed", "kind", kind, "servers", len(inv.Snapshot().Servers), "took", took)
	return nil
}

func (inv *Inventory) refresh(ctx context.Context, opts Options, client *Client, full bool, start time.Time) error {
	if err := client.Connect(ctx); err != nil {
		return err
	}
	hostFilter := ""
	if opts.OpenStack.Scope == "host" {
		hostFilter = opts.Host
	}
	q := Query{Host: hostFilter, PageSize: opts.OpenStack.PageSize}
	if !full {
		q.ChangesSince = inv.changesSince
	}
	var changed []Server
	var seen, foreign, hostless int
	novaDate, err := client.ListServers(ctx, q, opts.KeepMetadata, func(page []Server) error {
		for i := range page {
			s := page[i]
			seen++
			if s.Host == "" {
				hostless++
			}
			if hostFilter != "" && s.Host != "" && s.Host != hostFilter {
				foreign++
			}
			changed = append(changed, s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if hostFilter != "" && seen > 0 && hostless == seen && full {
		return &policyError{fmt.Errorf("nova shows no OS-EXT-SRV-ATTR:host on any of %d servers: scope host needs a user allowed "+
			"os_compute_api:os-extended-server-attributes (admin by default); grant it, or use scope all", seen)}
	}
	if foreign > 0 && !inv.warnedFilter {
		inv.warnedFilter = true
		opts.Logger.Warn("nova ignored the host filter (the user is not admin) and listed servers of other hosts; "+
			"they are dropped here, but every exporter now downloads the whole cloud", "host", hostFilter, "foreign_servers", foreign)
	}

	inScope := func(s *Server) bool {
		return s.Status != "DELETED" && (hostFilter == "" || s.Host == hostFilter)
	}
	next := inv.servers
	if full {
		next = make(map[string]*Server, len(changed))
	} else {
		next = make(map[string]*Server, len(inv.servers))
		for id, s := range inv.servers {
			next[id] = s
		}
	}
	returned := make(map[string]bool, len(changed))
	for i := range changed {
		s := &changed[i]
		returned[s.ID] = true
		if !inScope(s) {
			delete(next, s.ID)
			continue
		}
		next[s.ID] = inv.track(s, start)
	}
	if !full && hostFilter != "" {
		// A server that leaves this host no longer matches the host filter,
		// so changes-since never reports its departure. Servers with a task
		// in progress are the ones that move; read them one by one.
		for id, s := range next {
			if s.TaskState == "" || returned[id] {
				continue
			}
			cur, found, err := client.GetServer(ctx, id, opts.KeepMetadata)
			if err != nil {
				return err
			}
			if !found || !inScope(&cur) {
				delete(next, id)
				continue
			}
			next[id] = inv.track(&cur, start)
		}
	}

	// A per-host exporter reads its host's service state with each full
	// listing only: a thousand of them asking every minute would cost Nova
	// more than the listings, and a host whose service is down is seen by
	// the central exporter, which reads it every refresh.
	if full || hostFilter == "" {
		if err := inv.refreshServiceStates(ctx, opts, client, hostFilter); err != nil {
			return err
		}
	}

	inv.servers = next
	if full {
		inv.lastFull = start
	}
	inv.lastRefresh = start
	// Nova compares changes-since with its own clock: take the next one from
	// the Date of its first answer, less a margin for the second-resolution
	// header and the time the listing took.
	since := novaDate
	if since.IsZero() {
		since = start
	}
	inv.changesSince = since.Add(-2 * time.Second)
	inv.publish(start)
	return nil
}

// track carries over what the exporter knew of the server: when its state
// began, unless the state changed.
func (inv *Inventory) track(s *Server, observed time.Time) *Server {
	prev := inv.servers[s.ID]
	switch {
	case prev == nil:
		s.StatusSince = s.Updated
		if s.StatusSince.IsZero() || s.StatusSince.After(observed) {
			s.StatusSince = observed
		}
	case prev.Status == s.Status && prev.TaskState == s.TaskState:
		s.StatusSince = prev.StatusSince
	case s.Updated.After(inv.lastRefresh) && !s.Updated.After(observed):
		// Seen changing: Nova's update time is when it happened.
		s.StatusSince = s.Updated
	default:
		s.StatusSince = observed
	}
	return s
}

func (inv *Inventory) refreshServiceStates(ctx context.Context, opts Options, client *Client, host string) error {
	if inv.servicesDenied {
		return nil
	}
	states, err := client.ComputeServiceStates(ctx, host)
	if code := statusCode(err); code == http.StatusForbidden || code == http.StatusNotFound {
		inv.servicesDenied = true
		opts.Logger.Info("nova does not let this user list compute services; host status comes from the servers' host_status only", "status", code)
		return nil
	}
	if err != nil {
		return err
	}
	inv.serviceStates = states
	return nil
}

func (inv *Inventory) publish(taken time.Time) {
	snap := &Snapshot{
		Servers:    make([]Server, 0, len(inv.servers)),
		HostStatus: make(map[string]string, len(inv.serviceStates)),
		Taken:      taken,
	}
	for _, s := range inv.servers {
		snap.Servers = append(snap.Servers, *s)
		if s.Host != "" && s.HostStatus != "" {
			snap.HostStatus[s.Host] = s.HostStatus
		}
	}
	// The service list is read on every refresh; the servers' host_status
	// only when a server changed, so the former wins.
	for h, st := range inv.serviceStates {
		snap.HostStatus[h] = st
	}
	slices.SortFunc(snap.Servers, func(a, b Server) int { return cmp.Compare(a.ID, b.ID) })
	inv.snap.Store(snap)
}

// policyError is a refusal by policy that no retry will cure.
type policyError struct{ err error }

func (e *policyError) Error() string { return e.err.Error() }
func (e *policyError) Unwrap() error { return e.err }

// RefreshError is a failed refresh: its cause, and its message with secrets
// redacted.
type RefreshError struct {
	Reason string
	Msg    string
}

func (e *RefreshError) Error() string { return e.Msg }
