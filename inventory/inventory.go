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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/portsecurity"
)

// Snapshot is one consistent view of the inventory. It is never modified
// after it is published; share it freely.
type Snapshot struct {
	// Servers in scope, sorted by ID.
	Servers []Server
	// HostStatus maps a Nova host to its compute service state.
	HostStatus map[string]string
	// HostHeartbeat maps a Nova host to whether its nova-compute service
	// reports a heartbeat (os-services state "up"), whether it is enabled
	// or not. Only from os-services: empty when the user may not list them.
	HostHeartbeat map[string]bool
	// Taken is when the refresh that produced it started.
	Taken time.Time
	// HostDisabled maps a Nova host to the class of its compute service's
	// disabled reason (disabledNone, disabledOperator, disabledAutomatic),
	// where os-services could be read.
	HostDisabled map[string]string
	// Migrations are the servers' newest migrations that failed or are in
	// progress (see migrationsToWatch), sorted by server id.
	Migrations []Migration
	// Ports are the compute ports bound to the host in scope host (every
	// compute port in scope all), from Neutron, sorted by id: the last
	// good listing when Neutron fails.
	Ports []Port
	// PortsRead says whether Ports come from a listing that succeeded
	// (false until the first one does: then no address has a known port).
	PortsRead bool
	// SecurityGroups are the security groups of the Ports and the address
	// groups their rules name, as last read (secgroups.go); nil before the
	// first listing. Never modified: share it.
	SecurityGroups *portsecurity.Known
}

// Health is the state of the refresh loop, for the exporter's own metrics.
type Health struct {
	Up           bool
	Ready        bool
	LastSuccess  time.Time
	LastDuration time.Duration
	// LastError is the last failure's message, secrets redacted, cut to
	// MaxErrorBytes.
	LastError string
	// Errors counts failures by reason (see Reasons): failed refreshes, and
	// failed reads of the compute services, which keep the last known host
	// states and do not fail the refresh.
	Errors map[string]uint64
	// Refreshes counts attempts by kind: "full", "incremental".
	Refreshes map[string]uint64
	Requests  uint64
	Bytes     uint64
	// HostKnown says, in scope host, whether Nova's os-services lists a
	// nova-compute service for the configured host. A name Nova does not
	// know (an FQDN where Nova has the short name, or the reverse) exports
	// no server at all while every refresh succeeds. Nil in scope all,
	// before the services were read, and when this user may not read them.
	HostKnown *bool
	// SignalReads counts the reads of Nova's own signals by API
	// (SignalAPIs), SignalErrors their failures by API and reason.
	SignalReads  map[string]uint64
	SignalErrors map[SignalKey]uint64
	// ShutoffPending is the servers that just became SHUTOFF whose
	// actions are still to be read.
	ShutoffPending int
	// PortsUp says whether the last port listing succeeded;
	// PortsLastSuccess is when one last did, PortsLastError the last
	// failure's message (redacted). Reads and errors are counted under
	// SignalPorts in SignalReads and SignalErrors.
	PortsUp          bool
	PortsLastSuccess time.Time
	PortsLastError   string
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

	// refreshMu is held for the whole of a refresh: Refresh may be called
	// while Run is active (the report, tests) and then waits for Run's
	// refresh to end instead of racing it. It guards every field below,
	// which only the refresh steps read and write.
	refreshMu      sync.Mutex
	servers        map[string]*Server
	serviceStates  map[string]ComputeService
	servicesDenied bool
	// servicesFailing is set while reading the services fails, so that a
	// failure streak is logged once.
	servicesFailing bool
	// elsewhere holds ids that Nova listed under the host filter but which
	// belong to another host (a filter Nova ignored): not worth a read.
	elsewhere    map[string]bool
	changesSince time.Time
	lastFull     time.Time
	lastRefresh  time.Time
	forceFull    bool // guarded by mu: Reconfigure sets it
	warnedFilter bool

	// Nova's own signals (signals.go). actionsPending maps the servers
	// whose actions are to be read to the failed reads so far.
	actionsPending   map[string]int
	actionsDenied    bool
	migrations       []Migration
	migrationsDenied bool
	hostDisabled     map[string]string

	// Neutron's ports (ports.go).
	ports          []Port
	portsRead      bool
	portsFailing   bool
	warnedHostless bool
	// Their security groups (secgroups.go).
	secGroups          *portsecurity.Known
	secGroupsFailing   bool
	warnedGroupsHidden bool
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
			Errors:       map[string]uint64{},
			Refreshes:    map[string]uint64{"full": 0, "incremental": 0},
			SignalReads:  map[string]uint64{},
			SignalErrors: map[SignalKey]uint64{},
		},
	}
	for _, r := range Reasons {
		inv.health.Errors[r] = 0
		for _, api := range SignalAPIs {
			inv.health.SignalErrors[SignalKey{api, r}] = 0
		}
	}
	for _, api := range SignalAPIs {
		inv.health.SignalReads[api] = 0
	}
	inv.snap.Store(&Snapshot{HostStatus: map[string]string{}, HostHeartbeat: map[string]bool{}, HostDisabled: map[string]string{}})
	warnInsecure(opts.Logger, client)
	return inv
}

// warnInsecure says loudly that the client does not check the API's
// certificate (openstack.insecure or OS_INSECURE).
func warnInsecure(logger *slog.Logger, client *Client) {
	if client != nil && client.creds.TLS != nil && client.creds.TLS.InsecureSkipVerify {
		logger.Warn("TLS certificate verification of the OpenStack API is OFF (insecure): anyone on the path "+
			"can read the credentials and the inventory; use ca_file instead", "auth_url", client.creds.Auth.IdentityEndpoint)
	}
}

// Snapshot returns the latest published snapshot.
func (inv *Inventory) Snapshot() *Snapshot { return inv.snap.Load() }

// SetSnapshot serves snap until the next refresh replaces it: for tests of
// what is exported from a snapshot made by hand. snap must not be modified
// afterwards.
func (inv *Inventory) SetSnapshot(snap *Snapshot) { inv.snap.Store(snap) }

// Ready is closed after the first successful refresh.
func (inv *Inventory) Ready() <-chan struct{} { return inv.ready }

// Health returns a copy of the loop's state.
func (inv *Inventory) Health() Health {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	h := inv.health
	h.Errors = maps(inv.health.Errors)
	h.Refreshes = maps(inv.health.Refreshes)
	h.SignalReads = maps(inv.health.SignalReads)
	h.SignalErrors = make(map[SignalKey]uint64, len(inv.health.SignalErrors))
	for k, v := range inv.health.SignalErrors {
		h.SignalErrors[k] = v
	}
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

// RefreshInterval is the configured interval between refreshes.
func (inv *Inventory) RefreshInterval() time.Duration {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.opts.OpenStack.RefreshInterval
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
	changed := inv.client != client
	if opts.Host != inv.opts.Host || opts.OpenStack.Scope != inv.opts.OpenStack.Scope {
		// Unknown until the services are read for the new host, which
		// then says afresh whether Nova knows it.
		inv.health.HostKnown = nil
	}
	inv.opts, inv.client = opts, client
	inv.forceFull = true
	inv.mu.Unlock()
	if changed {
		warnInsecure(opts.Logger, client)
	}
	select {
	case inv.wake <- struct{}{}:
	default:
	}
}

// Run refreshes until ctx ends: every refresh_interval (±10% jitter, so a
// fleet of exporters does not hit Nova in step), and after a failure as
// retryWait says.
func (inv *Inventory) Run(ctx context.Context) {
	fails := 0 // failures in a row
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
			fails++
			wait = retryWait(interval, fails, Classify(err) == ReasonAuth, rand.Float64())
		} else {
			fails = 0
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

// retryWait is the wait before the retry that follows the fails-th failure
// in a row (1 for the first) of a refresh every interval; r is uniform in
// [0, 1).
//
// A failed login is retried after about 1 s, 2 s, 4 s ... up to five
// minutes (or interval when longer): fixed credentials work again soon, bad
// ones never turn into a storm against Keystone.
//
// Any other failure (Nova down, answering 5xx, timing out) is retried no
// sooner than min(interval, max(10 s, interval/4)), then twice that and so
// on up to interval, each wait spread at random over +50%: thousands of
// exporters that saw Nova fail at once must neither retry faster than they
// refresh nor come back in step.
func retryWait(interval time.Duration, fails int, auth bool, r float64) time.Duration {
	if auth {
		base := growTo(time.Second, max(interval, 5*time.Minute), fails)
		return base + time.Duration((r*0.2-0.1)*float64(base))
	}
	base := growTo(min(interval, max(10*time.Second, interval/4)), interval, fails)
	return base + time.Duration(r*0.5*float64(base))
}

// growTo doubles start fails-1 times, up to limit.
func growTo(start, limit time.Duration, fails int) time.Duration {
	d := start
	for i := 1; i < fails && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// Refresh updates the snapshot once, bounded by openstack.timeout. Calls
// are serialized: one refresh at a time, whoever calls.
func (inv *Inventory) Refresh(ctx context.Context) error {
	inv.refreshMu.Lock()
	defer inv.refreshMu.Unlock()
	r := inv.begin()
	ctx, cancel := context.WithTimeout(ctx, r.opts.OpenStack.Timeout)
	defer cancel()
	err := inv.refresh(ctx, r)
	took := time.Since(r.start)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (timeout %s)", context.DeadlineExceeded, r.opts.OpenStack.Timeout)
		}
		return inv.failed(r, took, err)
	}
	inv.succeeded(r, took)
	return nil
}

// refreshRun is what one refresh works with, fixed at its start.
type refreshRun struct {
	opts   Options
	client *Client
	full   bool
	kind   string // "full" or "incremental"
	start  time.Time
	// host is the Nova host of the listings' filter; "" in scope all.
	host string
}

// inScope tells whether a listed server belongs in the snapshot.
func (r *refreshRun) inScope(s *Server) bool {
	return s.Status != "DELETED" && (r.host == "" || s.Host == r.host)
}

// begin takes the options and client in effect and decides the kind of
// refresh.
func (inv *Inventory) begin() *refreshRun {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	r := &refreshRun{opts: inv.opts, client: inv.client, kind: "incremental", start: time.Now()}
	r.full = inv.forceFull || inv.changesSince.IsZero() || time.Since(inv.lastFull) >= r.opts.OpenStack.FullRefreshInterval
	inv.forceFull = false
	if r.full {
		r.kind = "full"
	}
	if r.opts.OpenStack.Scope == "host" {
		r.host = r.opts.Host
	}
	inv.health.Refreshes[r.kind]++
	return r
}

// failed records a failed refresh and returns its error, secrets redacted.
func (inv *Inventory) failed(r *refreshRun, took time.Duration, err error) error {
	reason := Classify(err)
	msg := r.client.Redactor().Message(err)
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.health.LastDuration = took
	inv.health.Up = false
	inv.health.Errors[reason]++
	inv.health.LastError = msg
	if r.full {
		inv.forceFull = true
	}
	r.opts.Logger.Error("inventory refresh failed; serving the last good inventory",
		"kind", r.kind, "reason", reason, "err", msg, "last_success", inv.health.LastSuccess)
	return &RefreshError{Reason: reason, Msg: msg}
}

// succeeded records a successful refresh.
func (inv *Inventory) succeeded(r *refreshRun, took time.Duration) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.health.LastDuration = took
	inv.health.Up = true
	inv.health.LastSuccess = time.Now()
	inv.health.LastError = ""
	if !inv.health.Ready {
		inv.health.Ready = true
		inv.once.Do(func() { close(inv.ready) })
	}
	r.opts.Logger.Debug("inventory refreshed", "kind", r.kind, "servers", len(inv.Snapshot().Servers), "took", took)
}

// refresh runs the steps of one refresh; the snapshot is published only
// when every step that can fail the refresh succeeded.
func (inv *Inventory) refresh(ctx context.Context, r *refreshRun) error {
	if err := r.client.Connect(ctx); err != nil {
		return err
	}
	changed, novaDate, err := inv.listChanged(ctx, r)
	if err != nil {
		return err
	}
	next := inv.merge(r, changed)
	if !r.full && r.host != "" {
		if err := inv.checkMembership(ctx, r, next); err != nil {
			return err
		}
	}
	// Nova's clock, for the signals' windows and ages.
	novaNow := novaDate
	if novaNow.IsZero() {
		novaNow = r.start
	}
	inv.noteShutoffs(next, novaNow)
	inv.readSignals(ctx, r, next, novaNow)
	inv.commit(r, next, novaDate)
	return nil
}

// listChanged lists the servers changed since the last refresh (all of
// them in a full refresh), and checks that the answer can serve scope host.
// It returns the Date of Nova's first answer.
func (inv *Inventory) listChanged(ctx context.Context, r *refreshRun) ([]Server, time.Time, error) {
	q := Query{Host: r.host, PageSize: r.opts.OpenStack.PageSize}
	if !r.full {
		q.ChangesSince = inv.changesSince
	}
	if r.full || inv.elsewhere == nil {
		inv.elsewhere = map[string]bool{}
	}
	var changed []Server
	var seen, foreign, hostless int
	novaDate, err := r.client.ListServers(ctx, q, r.opts.KeepMetadata, func(page []Server) error {
		for i := range page {
			s := page[i]
			seen++
			if s.Host == "" {
				hostless++
			}
			if r.host != "" && s.Host != "" && s.Host != r.host {
				foreign++
			}
			changed = append(changed, s)
		}
		return nil
	})
	if err != nil {
		return nil, novaDate, err
	}
	if r.host != "" && seen > 0 && hostless == seen && r.full {
		return nil, novaDate, &policyError{fmt.Errorf("nova shows no OS-EXT-SRV-ATTR:host on any of %d servers: scope host needs a user allowed "+
			"os_compute_api:os-extended-server-attributes (admin by default); grant it, or use scope all", seen)}
	}
	if foreign > 0 && !inv.warnedFilter {
		inv.warnedFilter = true
		r.opts.Logger.Warn("nova ignored the host filter (the user is not admin) and listed servers of other hosts; "+
			"they are dropped here, but every exporter now downloads the whole cloud", "host", r.host, "foreign_servers", foreign)
	}
	return changed, novaDate, nil
}

// merge applies the listed changes to the servers known (to none in a
// full refresh) and returns the next set, the known one left unchanged.
func (inv *Inventory) merge(r *refreshRun, changed []Server) map[string]*Server {
	var next map[string]*Server
	if r.full {
		next = make(map[string]*Server, len(changed))
	} else {
		next = make(map[string]*Server, len(inv.servers))
		for id, s := range inv.servers {
			next[id] = s
		}
	}
	for i := range changed {
		s := &changed[i]
		inv.noteElsewhere(s, r.host)
		if !r.inScope(s) {
			delete(next, s.ID)
			continue
		}
		next[s.ID] = inv.track(s, r.start)
	}
	return next
}

// readSignals reads what never fails the refresh: the compute services'
// states, the migrations, and the causes of new shutoffs.
func (inv *Inventory) readSignals(ctx context.Context, r *refreshRun, next map[string]*Server, novaNow time.Time) {
	// A per-host exporter reads its host's service state with each full
	// listing only: a thousand of them asking every minute would cost Nova
	// more than the listings, and a host whose service is down is seen by
	// the central exporter, which reads it every refresh. A failure there
	// keeps the last known states and does not fail the refresh.
	if r.full || r.host == "" {
		inv.refreshServiceStates(ctx, r.opts, r.client, r.host)
		inv.refreshMigrations(ctx, r.opts.Logger, r.client, r.host, r.opts.OpenStack.PageSize, novaNow)
	}
	// Every refresh: one filtered listing, which the probes' vantage
	// depends on. A failure keeps the last good ports.
	inv.refreshPorts(ctx, r.opts.Logger, r.client, r.host, r.opts.OpenStack.PageSize)
	// Then the security groups those ports use, and the address groups
	// their rules name: one listing each. A failure keeps the last good.
	inv.refreshSecurityGroups(ctx, r.opts.Logger, r.client)
	// Last: bounded, and what the time left does not cover waits for the
	// next refresh.
	inv.readShutoffCauses(ctx, r.opts.Logger, r.client, next)
	if r.host == "" {
		inv.setHostKnown(nil)
	}
}

// commit makes next the servers known and publishes the snapshot.
func (inv *Inventory) commit(r *refreshRun, next map[string]*Server, novaDate time.Time) {
	inv.servers = next
	if r.full {
		inv.lastFull = r.start
	}
	inv.lastRefresh = r.start
	// Nova compares changes-since with its own clock: take the next one from
	// the Date of its first answer, less a margin for the second-resolution
	// header and the time the listing took.
	since := novaDate
	if since.IsZero() {
		since = r.start
	}
	inv.changesSince = since.Add(-2 * time.Second)
	inv.publish(r.start)
}

// maxUnknownReads bounds the servers read one by one in one refresh because
// the id listing shows them on this host and the exporter does not know
// them; the next refresh reads the rest.
const maxUnknownReads = 10

// checkMembership compares the servers kept for this host with Nova's id
// listing of the host. A server that leaves the host (live or cold
// migration, evacuation, shelve offload) no longer matches the host filter,
// so changes-since never reports its departure; the id listing does, for
// about 300 bytes a server, whatever state the server went through.
//
// An id the listing shows that the exporter does not know arrived between
// the two listings of this refresh (the next changes-since would bring it
// too) or changed host without a change of its update time (a database
// edit during a recovery, which changes-since never shows): it is read at
// once, so that its probes start now rather than at the next full listing.
func (inv *Inventory) checkMembership(ctx context.Context, r *refreshRun, next map[string]*Server) error {
	listed := make(map[string]bool, len(next))
	err := r.client.ListServerIDs(ctx, r.host, r.opts.OpenStack.PageSize, func(ids []string) error {
		for _, id := range ids {
			listed[id] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id := range next {
		if !listed[id] {
			delete(next, id)
		}
	}
	var unknown []string
	for id := range listed {
		if next[id] == nil && !inv.elsewhere[id] {
			unknown = append(unknown, id)
		}
	}
	slices.Sort(unknown)
	for _, id := range unknown[:min(len(unknown), maxUnknownReads)] {
		cur, found, err := r.client.GetServer(ctx, id, r.opts.KeepMetadata)
		if err != nil {
			return err
		}
		if !found {
			continue
		}
		inv.noteElsewhere(&cur, r.host)
		if r.inScope(&cur) {
			next[id] = inv.track(&cur, r.start)
		}
	}
	return nil
}

// noteElsewhere remembers whether Nova, asked for one host's servers,
// answered with a server of another host.
func (inv *Inventory) noteElsewhere(s *Server, host string) {
	if host == "" {
		return
	}
	if s.Host != "" && s.Host != host && s.Status != "DELETED" {
		inv.elsewhere[s.ID] = true
	} else {
		delete(inv.elsewhere, s.ID)
	}
}

// track carries over what the exporter knew of the server: when its state
// began, unless the state changed. The state is (status, task_state,
// power_state): "ACTIVE but shut down" is timed from when the power state
// changed.
func (inv *Inventory) track(s *Server, observed time.Time) *Server {
	prev := inv.servers[s.ID]
	switch {
	case prev == nil:
		s.StatusSince = s.Updated
		if s.StatusSince.IsZero() || s.StatusSince.After(observed) {
			s.StatusSince = observed
		}
	case prev.Status == s.Status && prev.TaskState == s.TaskState && prev.PowerState == s.PowerState:
		s.StatusSince = prev.StatusSince
	case s.Updated.After(inv.lastRefresh) && !s.Updated.After(observed):
		// Seen changing: Nova's update time is when it happened.
		s.StatusSince = s.Updated
	default:
		s.StatusSince = observed
	}
	return s
}

// refreshServiceStates reads the compute services' states. It never fails
// the refresh: a failure is counted and logged once a streak, and the last
// known states stay.
func (inv *Inventory) refreshServiceStates(ctx context.Context, opts Options, client *Client, host string) {
	if inv.servicesDenied {
		return
	}
	services, err := client.ComputeServices(ctx, host)
	if code := statusCode(err); code == http.StatusForbidden || code == http.StatusNotFound {
		inv.servicesDenied = true
		inv.setHostKnown(nil)
		opts.Logger.Info("nova does not let this user list compute services; host status comes from the servers' host_status only", "status", code)
		return
	}
	if err != nil {
		reason := Classify(err)
		inv.mu.Lock()
		inv.health.Errors[reason]++
		inv.mu.Unlock()
		if !inv.servicesFailing {
			inv.servicesFailing = true
			opts.Logger.Warn("reading the compute services failed; the servers are refreshed, the host states are the last known",
				"reason", reason, "err", client.Redactor().Message(err))
		}
		return
	}
	if inv.servicesFailing {
		inv.servicesFailing = false
		opts.Logger.Info("the compute services are readable again")
	}
	inv.serviceStates = services
	inv.hostDisabled = make(map[string]string, len(services))
	for h, svc := range services {
		inv.hostDisabled[h] = svc.Disabled
	}
	if host != "" {
		inv.checkHostKnown(ctx, opts, client, host, services)
	}
}

// checkHostKnown tells whether Nova knows the configured host, and when it
// does not, says so with the names Nova knows that look like it.
func (inv *Inventory) checkHostKnown(ctx context.Context, opts Options, client *Client, host string, services map[string]ComputeService) {
	_, known := services[host]
	inv.mu.Lock()
	was := inv.health.HostKnown
	inv.health.HostKnown = &known
	inv.mu.Unlock()
	if known || (was != nil && !*was) {
		return
	}
	// Once a streak: the whole list is read only to name the candidates.
	all, err := client.ComputeServiceStates(ctx, "")
	hosts := make([]string, 0, len(all))
	for h := range all {
		hosts = append(hosts, h)
	}
	attrs := []any{"host", host, "similar", similarHosts(host, hosts, 5), "compute_services", len(hosts)}
	if err != nil {
		attrs = append(attrs, "err", client.Redactor().Message(err))
	}
	opts.Logger.Error("nova has no nova-compute service on openstack.host, so no server will ever match it: "+
		"set openstack.host to the name Nova uses (openstack compute service list --service nova-compute)", attrs...)
}

func (inv *Inventory) setHostKnown(v *bool) {
	inv.mu.Lock()
	inv.health.HostKnown = v
	inv.mu.Unlock()
}

// similarHosts returns at most n of hosts that look like host: the same
// name but for case, the same short name (FQDN against short name), then
// the longest common prefixes (of at least 3 characters).
func similarHosts(host string, hosts []string, n int) []string {
	short := func(h string) string { s, _, _ := strings.Cut(strings.ToLower(h), "."); return s }
	score := func(h string) int {
		switch {
		case strings.EqualFold(h, host):
			return 1 << 20
		case short(h) == short(host):
			return 1 << 19
		}
		a, b := strings.ToLower(h), strings.ToLower(host)
		i := 0
		for i < len(a) && i < len(b) && a[i] == b[i] {
			i++
		}
		if i < 3 {
			return 0
		}
		return i
	}
	var out []string
	for _, h := range hosts {
		if score(h) > 0 {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return cmp.Or(cmp.Compare(score(b), score(a)), cmp.Compare(a, b)) })
	return out[:min(len(out), n)]
}

func (inv *Inventory) publish(taken time.Time) {
	snap := &Snapshot{
		Servers:       make([]Server, 0, len(inv.servers)),
		HostStatus:    make(map[string]string, len(inv.serviceStates)),
		HostHeartbeat: make(map[string]bool, len(inv.serviceStates)),
		Taken:         taken,
		// Both replaced, never modified, by the refresh: shared.
		HostDisabled: inv.hostDisabled,
		Migrations:   inv.migrations,
		Ports:        inv.ports,
		PortsRead:    inv.portsRead,
		// Replaced, never modified: shared.
		SecurityGroups: inv.secGroups,
	}
	if snap.HostDisabled == nil {
		snap.HostDisabled = map[string]string{}
	}
	inv.mu.Lock()
	inv.health.ShutoffPending = len(inv.actionsPending)
	inv.mu.Unlock()
	for _, s := range inv.servers {
		snap.Servers = append(snap.Servers, *s)
		if s.Host != "" && s.HostStatus != "" {
			snap.HostStatus[s.Host] = s.HostStatus
		}
	}
	// The service list is read on every refresh; the servers' host_status
	// only when a server changed, so the former wins.
	for h, st := range inv.serviceStates {
		snap.HostStatus[h] = st.Status
		snap.HostHeartbeat[h] = st.Heartbeat
	}
	slices.SortFunc(snap.Servers, func(a, b Server) int { return cmp.Compare(a.ID, b.ID) })
	inv.snap.Store(snap)
}
