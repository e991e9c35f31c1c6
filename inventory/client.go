package inventory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/utils"
)

// Microversions: 2.47 is the least that carries the flavor's name; 2.69 and
// later also list servers of an unreachable cell (status UNKNOWN) instead of
// leaving them out, so it is preferred where Nova has it.
const (
	minMicroversion       = "2.47"
	preferredMicroversion = "2.69"
)

// Client talks to Keystone and Nova with one authenticated gophercloud
// provider for its whole life: the token is reused until it expires or is
// revoked, and then renewed once (never a login per refresh).
type Client struct {
	creds    *Credentials
	provider *gophercloud.ProviderClient
	// loggedIn is set once Keystone issued a token; the provider keeps it
	// and renews it by itself on a 401 (AllowReauth).
	loggedIn bool
	compute  *gophercloud.ServiceClient
	// networking is Neutron's client, found in the catalog at the first
	// port listing.
	networking *gophercloud.ServiceClient
	transport  *countingTransport
	redactor   *Redactor
}

// ClientOptions tunes a Client.
type ClientOptions struct {
	// MaxResponseBytes bounds one response body, so a broken or hostile
	// API cannot exhaust memory. Zero: a page of the server listing may
	// take MaxResponseBytesFor(page_size), any other response 16 MiB.
	MaxResponseBytes int64
	// UserAgent is added to gophercloud's.
	UserAgent string
	// Transport replaces http.DefaultTransport (tests).
	Transport http.RoundTripper
}

// NewClient prepares a client; it does no I/O (see Connect).
func NewClient(creds *Credentials, opts ClientOptions) (*Client, error) {
	provider, err := openstack.NewClient(creds.Auth.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("auth URL %q: %w", creds.Auth.IdentityEndpoint, err)
	}
	base := opts.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = creds.TLS
		base = t
	}
	ct := &countingTransport{next: base, maxBody: max(opts.MaxResponseBytes, 0)}
	provider.HTTPClient = http.Client{Transport: ct}
	if opts.UserAgent != "" {
		provider.UserAgent.Prepend(opts.UserAgent)
	}
	c := &Client{creds: creds, provider: provider, transport: ct}
	c.redactor = NewRedactor(provider.Token, creds.Secrets()...)
	return c, nil
}

// Redactor returns the redactor that hides this client's secrets.
func (c *Client) Redactor() *Redactor { return c.redactor }

// Connect logs in and finds Nova and its microversion, once; later calls
// return at once. Safe to call again after a failure: a login that
// succeeded is kept, so a Nova that fails at start costs one request to
// Nova per retry, never a login to Keystone per retry.
func (c *Client) Connect(ctx context.Context) error {
	if c.compute != nil {
		return nil
	}
	if !c.loggedIn {
		if err := openstack.Authenticate(ctx, c.provider, c.creds.Auth); err != nil {
			return &authError{err: tlsHint(err, c.creds.Auth.IdentityEndpoint)}
		}
		c.loggedIn = true
	}
	compute, err := openstack.NewComputeV2(c.provider, c.creds.Endpoint)
	if err != nil {
		// The catalog came with the token: only a new login can bring a
		// compute endpoint added since. (Auth failures back off to one try
		// in five minutes.)
		c.loggedIn = false
		return &authError{err: fmt.Errorf("finding the compute endpoint in the service catalog (region %q, interface %q): %w",
			c.creds.Endpoint.Region, c.creds.Endpoint.Availability, err)}
	}
	supported, err := c.microversions(ctx, compute)
	if err != nil {
		return fmt.Errorf("reading Nova's supported microversions: %w", tlsHint(err, compute.Endpoint))
	}
	for _, v := range []string{preferredMicroversion, minMicroversion} {
		if ok, _ := supported.IsSupported(v); ok {
			compute.Microversion = v
			break
		}
	}
	if compute.Microversion == "" {
		return fmt.Errorf("nova supports microversions up to %d.%d; the exporter needs %s or later",
			supported.MaxMajor, supported.MaxMinor, minMicroversion)
	}
	c.compute = compute
	return nil
}

// microversions reads Nova's version document. gophercloud's own reader
// (utils.GetSupportedMicroversions) turns a failure to read it into
// "microversions not supported by endpoint", which hides a Nova that
// answers 5xx or not at all behind a message that blames the endpoint.
func (c *Client) microversions(ctx context.Context, compute *gophercloud.ServiceClient) (utils.SupportedMicroversions, error) {
	type version struct {
		ID         string `json:"id"`
		Version    string `json:"version"`
		MinVersion string `json:"min_version"`
	}
	var doc struct {
		Version  *version  `json:"version"`
		Versions []version `json:"versions"`
	}
	var sm utils.SupportedMicroversions
	if _, err := compute.Get(ctx, compute.Endpoint, &doc, &gophercloud.RequestOpts{OkCodes: []int{200, 300}}); err != nil {
		return sm, err
	}
	v := doc.Version
	for i := range doc.Versions {
		// An endpoint without a version lists every version.
		if v == nil && doc.Versions[i].ID == "v2.1" {
			v = &doc.Versions[i]
		}
	}
	if v == nil || v.Version == "" || v.MinVersion == "" {
		return sm, &decodeError{fmt.Errorf("the version document at %s names no microversions", redactURL(compute.Endpoint))}
	}
	var err error
	if sm.MinMajor, sm.MinMinor, err = utils.ParseMicroversion(v.MinVersion); err == nil {
		sm.MaxMajor, sm.MaxMinor, err = utils.ParseMicroversion(v.Version)
	}
	if err != nil {
		return sm, &decodeError{err}
	}
	return sm, nil
}

// Microversion is the compute microversion in use ("" before Connect).
func (c *Client) Microversion() string {
	if c.compute == nil {
		return ""
	}
	return c.compute.Microversion
}

// Query selects the servers to list.
type Query struct {
	// Host asks Nova for one host's servers (admin only: Nova ignores it
	// for other users, so callers check the answer too).
	Host string
	// ChangesSince lists only servers changed since then, deleted ones
	// included (status DELETED).
	ChangesSince time.Time
	PageSize     int
}

// listPage is one page of a server listing, detailed or plain.
type listPage[T any] struct {
	Servers []T `json:"servers"`
	Links   []struct {
		Rel string `json:"rel"`
	} `json:"servers_links"`
}

type serverPage = listPage[novaServer]

func (p *listPage[T]) hasNext() bool {
	for _, l := range p.Links {
		if l.Rel == "next" {
			return true
		}
	}
	return false
}

// listPages GETs the listing at u page by page and hands each page's
// servers, and its response's header, to fn. what names the listing in
// errors; id gives a server's id, the next page's marker.
func listPages[T any](ctx context.Context, c *Client, what, u string, values url.Values, id func(*T) string,
	fn func(servers []T, header http.Header) error) error {
	lastMarker := ""
	for page := 1; ; page++ {
		var body listPage[T]
		header, err := c.getJSON(ctx, u+"?"+values.Encode(), &body)
		if err != nil {
			return fmt.Errorf("listing %s (page %d): %w", what, page, err)
		}
		if err := fn(body.Servers, header); err != nil {
			return err
		}
		if !body.hasNext() || len(body.Servers) == 0 {
			return nil
		}
		// The next page is asked for by marker rather than by following
		// Nova's link, whose host and scheme are wrong behind many proxies.
		marker := id(&body.Servers[len(body.Servers)-1])
		if marker == lastMarker {
			return &decodeError{fmt.Errorf("nova returned the same page of %s twice (marker %s)", what, marker)}
		}
		lastMarker = marker
		values.Set("marker", marker)
	}
}

// ListServers pages through GET /servers/detail?all_tenants=1 and hands each
// page to fn, so at most one page is in memory. It returns the Date of Nova's
// first response: the next ChangesSince is taken from Nova's clock, not ours.
func (c *Client) ListServers(ctx context.Context, q Query, keepMetadata []string, fn func([]Server) error) (time.Time, error) {
	values := url.Values{}
	values.Set("all_tenants", "1")
	if q.Host != "" {
		values.Set("host", q.Host)
	}
	if !q.ChangesSince.IsZero() {
		values.Set("changes-since", q.ChangesSince.UTC().Format(time.RFC3339))
	}
	if q.PageSize > 0 {
		values.Set("limit", strconv.Itoa(q.PageSize))
	}
	if c.transport.maxBody == 0 {
		ctx = context.WithValue(ctx, bodyLimitKey{}, MaxResponseBytesFor(q.PageSize))
	}
	var novaDate time.Time
	first := true
	batch := make([]Server, 0, q.PageSize)
	err := listPages(ctx, c, "servers", c.compute.ServiceURL("servers", "detail"), values,
		func(s *novaServer) string { return s.ID },
		func(servers []novaServer, header http.Header) error {
			if first {
				novaDate, _ = http.ParseTime(header.Get("Date"))
				first = false
			}
			batch = batch[:0]
			for i := range servers {
				batch = append(batch, servers[i].toServer(keepMetadata))
			}
			return fn(batch)
		})
	return novaDate, err
}

// serverRef is a server in Nova's plain listing, id only.
type serverRef struct {
	ID string `json:"id"`
}

// ListServerIDs pages through Nova's plain listing, GET
// /servers?all_tenants=1&host=HOST, which carries only each server's id,
// name and links (about 300 bytes a server against 2 to 5 kB in the detail
// listing), and hands each page's ids to fn.
func (c *Client) ListServerIDs(ctx context.Context, host string, pageSize int, fn func(ids []string) error) error {
	values := url.Values{}
	values.Set("all_tenants", "1")
	if host != "" {
		values.Set("host", host)
	}
	if pageSize > 0 {
		values.Set("limit", strconv.Itoa(pageSize))
	}
	ids := make([]string, 0, pageSize)
	return listPages(ctx, c, "server ids", c.compute.ServiceURL("servers"), values,
		func(s *serverRef) string { return s.ID },
		func(servers []serverRef, _ http.Header) error {
			ids = ids[:0]
			for _, s := range servers {
				ids = append(ids, Clean(s.ID))
			}
			return fn(ids)
		})
}

// GetServer reads one server; found is false when Nova does not list it
// (deleted). It asks the detail listing filtered by uuid rather than
// GET /servers/{id}: Nova answers the latter with 404 for a server of
// another project unless the caller is admin, whatever the policy grants,
// while the listing honours all_tenants for the least-privilege role.
func (c *Client) GetServer(ctx context.Context, id string, keepMetadata []string) (s Server, found bool, err error) {
	var body serverPage
	values := url.Values{"all_tenants": {"1"}, "uuid": {id}}
	if _, err = c.getJSON(ctx, c.compute.ServiceURL("servers", "detail")+"?"+values.Encode(), &body); err != nil {
		return Server{}, false, fmt.Errorf("reading server %s: %w", id, err)
	}
	for _, ns := range body.Servers {
		if ns.ID == id {
			return ns.toServer(keepMetadata), true, nil
		}
	}
	return Server{}, false, nil
}

// ComputeService is what the exporter keeps of a nova-compute service
// record: the host_status Nova derives from it, and whether its heartbeat
// is recent (state "up"), which the host_status hides once the service is
// disabled or forced down.
type ComputeService struct {
	Status    string
	Heartbeat bool
	// Disabled is DisabledNone, DisabledOperator or DisabledAutomatic.
	Disabled string
}

// ComputeServiceStates reads the nova-compute services (of one host, or all
// when host is ""), as host → UP, DOWN, MAINTENANCE or UNKNOWN: the
// host_status Nova derives for the host's servers from the same record.
func (c *Client) ComputeServiceStates(ctx context.Context, host string) (map[string]string, error) {
	services, err := c.ComputeServices(ctx, host)
	states := make(map[string]string, len(services))
	for h, s := range services {
		states[h] = s.Status
	}
	return states, err
}

// ComputeServices reads the nova-compute services (of one host, or all when
// host is ""), by host.
func (c *Client) ComputeServices(ctx context.Context, host string) (map[string]ComputeService, error) {
	values := url.Values{"binary": {"nova-compute"}}
	if host != "" {
		values.Set("host", host)
	}
	var body struct {
		Services []struct {
			Host           string  `json:"host"`
			State          string  `json:"state"`
			Status         string  `json:"status"`
			ForcedDown     bool    `json:"forced_down"`
			DisabledReason *string `json:"disabled_reason"`
		} `json:"services"`
	}
	if _, err := c.getJSON(ctx, c.compute.ServiceURL("os-services")+"?"+values.Encode(), &body); err != nil {
		return nil, fmt.Errorf("listing compute services: %w", err)
	}
	services := make(map[string]ComputeService, len(body.Services))
	for _, s := range body.Services {
		reason := ""
		if s.DisabledReason != nil {
			reason = *s.DisabledReason
		}
		services[Clean(s.Host)] = ComputeService{
			Status:    HostStatus(s.State, s.Status, s.ForcedDown),
			Heartbeat: s.State == "up",
			Disabled:  DisabledClass(s.Status, reason),
		}
	}
	return services, nil
}

// HostStatus maps an os-services record (state up/down, status
// enabled/disabled, forced_down) to the host_status Nova shows on the
// host's servers, in Nova's order (nova/compute/api.py,
// get_instance_host_status): forced down is DOWN; else disabled is
// MAINTENANCE; else a service whose heartbeat stopped is UNKNOWN, not DOWN:
// the host may well run its servers, Nova just does not hear from it.
// A service of a cell Nova cannot reach comes with status UNKNOWN and no
// state.
func HostStatus(state, status string, forcedDown bool) string {
	switch {
	case forcedDown:
		return "DOWN"
	case status == "disabled":
		return "MAINTENANCE"
	case state != "up":
		return "UNKNOWN"
	}
	return "UP"
}

// getJSON GETs url and decodes the JSON body into v as it streams in.
func (c *Client) getJSON(ctx context.Context, u string, v any) (http.Header, error) {
	resp, err := c.compute.Get(ctx, u, nil, &gophercloud.RequestOpts{KeepResponseBody: true, OkCodes: []int{200}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		if errors.Is(err, errBodyTooLarge) || isTimeout(err) || ctx.Err() != nil {
			return nil, err
		}
		return nil, &decodeError{fmt.Errorf("decoding %s: %w", redactURL(u), err)}
	}
	return resp.Header, nil
}

func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

// Traffic returns the requests sent and response bytes read so far.
func (c *Client) Traffic() (requests, bytes uint64) {
	return c.transport.requests.Load(), c.transport.bytes.Load()
}

// Response size bounds. Nova's server detail is 1.7 kB with one address
// and no metadata; the largest Nova accepts (128 metadata items of 255-byte
// keys and values, the quota's default, and 40 addresses) measured 107 kB
// with the values all escaped, 66 kB without. 64 KiB a server leaves a page
// room for many such servers among ordinary ones while bounding memory.
const (
	bytesPerServer  = 64 << 10
	minResponseMax  = 16 << 20
	maxResponseMax  = 256 << 20
	maxErrorBodyLen = 64 << 10
)

// MaxResponseBytesFor is the default bound of one page of the server
// listing of pageSize servers: 64 KiB a server, at least 16 MiB (also the
// bound of every other response), at most 256 MiB.
func MaxResponseBytesFor(pageSize int) int64 {
	return min(max(int64(pageSize)*bytesPerServer, minResponseMax), maxResponseMax)
}

type bodyLimitKey struct{}

// countingTransport counts requests and response bytes, and cuts off
// bodies larger than maxBody (0: the request context's bodyLimitKey, else
// 16 MiB). An error answer is cut at 64 KiB whatever the bound: Nova's are
// a few hundred bytes of JSON, and gophercloud reads the whole body into
// its error, so a proxy's 20 MB HTML page would otherwise sit in memory.
type countingTransport struct {
	next     http.RoundTripper
	maxBody  int64
	requests atomic.Uint64
	bytes    atomic.Uint64
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.requests.Add(1)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	limit := t.maxBody
	if limit <= 0 {
		limit = minResponseMax
		if l, ok := req.Context().Value(bodyLimitKey{}).(int64); ok && l > 0 {
			limit = l
		}
	}
	if resp.StatusCode >= 400 {
		limit = min(limit, maxErrorBodyLen)
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, t: t, left: limit, limit: limit}
	return resp, nil
}

var errBodyTooLarge = errors.New("response body too large")

type countingBody struct {
	io.ReadCloser
	t     *countingTransport
	left  int64
	limit int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: more than %d bytes", errBodyTooLarge, b.limit)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	b.t.bytes.Add(uint64(n))
	return n, err
}

// Error reasons, as in openstack_vm_api_errors_total{reason}.
const (
	ReasonAuth    = "auth"
	ReasonTimeout = "timeout"
	Reason4xx     = "http_4xx"
	Reason5xx     = "http_5xx"
	ReasonDecode  = "decode"
	ReasonNetwork = "network"
)

// Reasons lists every reason, so counters can start at zero.
var Reasons = []string{ReasonAuth, ReasonTimeout, Reason4xx, Reason5xx, ReasonDecode, ReasonNetwork}

type authError struct{ err error }

func (e *authError) Error() string { return "authenticating: " + e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// Classify names the cause of a failed refresh.
func Classify(err error) string {
	if err == nil {
		return ""
	}
	var re *RefreshError
	if errors.As(err, &re) {
		return re.Reason
	}
	var pe *policyError
	if errors.As(err, &pe) {
		return ReasonAuth
	}
	if isTimeout(err) {
		return ReasonTimeout
	}
	if reauth := reauthCause(err); reauth != nil {
		// The token was refused and a new login failed: the login's own
		// failure says whether Keystone is down or the credentials are bad.
		if r := Classify(reauth); r == ReasonTimeout || r == Reason5xx || (r == ReasonNetwork && isNetwork(reauth)) {
			return r
		}
		return ReasonAuth
	}
	if code := statusCode(err); code != 0 {
		switch {
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return ReasonAuth
		case code >= 500:
			return Reason5xx
		default:
			return Reason4xx
		}
	}
	var endpoint gophercloud.ErrEndpointNotFound
	var endpointPtr *gophercloud.ErrEndpointNotFound
	if errors.As(err, &endpoint) || errors.As(err, &endpointPtr) {
		return ReasonAuth
	}
	var de *decodeError
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &de) || errors.Is(err, errBodyTooLarge) || errors.As(err, &syntax) || errors.As(err, &typeErr) {
		return ReasonDecode
	}
	var ae *authError
	if errors.As(err, &ae) && !isNetwork(ae.err) {
		return ReasonAuth
	}
	return ReasonNetwork
}

func reauthCause(err error) error {
	var v gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &v) {
		return v.ErrReauth
	}
	var p *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &p) {
		return p.ErrReauth
	}
	return nil
}

// tlsHint adds the way out to a failed certificate check; Go's own message
// ("x509: certificate signed by unknown authority") names the problem.
func tlsHint(err error, endpoint string) error {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w (the TLS certificate of %s is signed by a CA this host does not trust: "+
			"add that CA with openstack.ca_file, OS_CACERT or cacert in clouds.yaml)", err, redactURL(endpoint))
	case errors.As(err, &verify):
		return fmt.Errorf("%w (the TLS certificate of %s was rejected)", err, redactURL(endpoint))
	}
	return err
}

func isNetwork(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr)
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// statusCode digs the HTTP status out of gophercloud's errors, which come
// as values or pointers and wrapped in re-authentication errors.
func statusCode(err error) int {
	var v gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &v) {
		return v.Actual
	}
	var p *gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &p) {
		return p.Actual
	}
	var after gophercloud.ErrErrorAfterReauthentication
	if errors.As(err, &after) && after.ErrOriginal != nil {
		return statusCode(after.ErrOriginal)
	}
	var afterPtr *gophercloud.ErrErrorAfterReauthentication
	if errors.As(err, &afterPtr) && afterPtr.ErrOriginal != nil {
		return statusCode(afterPtr.ErrOriginal)
	}
	return 0
}
