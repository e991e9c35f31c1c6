package inventory

import (
	"context"
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
	creds     *Credentials
	provider  *gophercloud.ProviderClient
	compute   *gophercloud.ServiceClient
	transport *countingTransport
	redactor  *Redactor
}

// ClientOptions tunes a Client.
type ClientOptions struct {
	// MaxResponseBytes bounds one response body, so a broken or hostile
	// API cannot exhaust memory.
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
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = 256 << 20
	}
	ct := &countingTransport{next: base, maxBody: opts.MaxResponseBytes}
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
// return at once. Safe to call again after a failure.
func (c *Client) Connect(ctx context.Context) error {
	if c.compute != nil {
		return nil
	}
	if err := openstack.Authenticate(ctx, c.provider, c.creds.Auth); err != nil {
		return &authError{err: err}
	}
	compute, err := openstack.NewComputeV2(c.provider, c.creds.Endpoint)
	if err != nil {
		return &authError{err: fmt.Errorf("finding the compute endpoint in the service catalog (region %q, interface %q): %w",
			c.creds.Endpoint.Region, c.creds.Endpoint.Availability, err)}
	}
	supported, err := utils.GetSupportedMicroversions(ctx, compute)
	if err != nil {
		return fmt.Errorf("reading Nova's supported microversions: %w", err)
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

type serverPage struct {
	Servers []novaServer `json:"servers"`
	Links   []struct {
		Rel string `json:"rel"`
	} `json:"servers_links"`
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
	var novaDate time.Time
	lastMarker := ""
	batch := make([]Server, 0, q.PageSize)
	for page := 0; ; page++ {
		var body serverPage
		header, err := c.getJSON(ctx, c.compute.ServiceURL("servers", "detail")+"?"+values.Encode(), &body)
		if err != nil {
			return novaDate, fmt.Errorf("listing servers (page %d): %w", page+1, err)
		}
		if page == 0 {
			novaDate, _ = http.ParseTime(header.Get("Date"))
		}
		batch = batch[:0]
		for i := range body.Servers {
			batch = append(batch, body.Servers[i].toServer(keepMetadata))
		}
		if err := fn(batch); err != nil {
			return novaDate, err
		}
		if !hasNext(body) || len(body.Servers) == 0 {
			return novaDate, nil
		}
		// The next page is asked for by marker rather than by following
		// Nova's link, whose host and scheme are wrong behind many proxies.
		marker := body.Servers[len(body.Servers)-1].ID
		if marker == lastMarker {
			return novaDate, &decodeError{fmt.Errorf("nova returned the same page twice (marker %s)", marker)}
		}
		lastMarker = marker
		values.Set("marker", marker)
	}
}

func hasNext(p serverPage) bool {
	for _, l := range p.Links {
		if l.Rel == "next" {
			return true
		}
	}
	return false
}

// GetServer reads one server; found is false when Nova says 404.
func (c *Client) GetServer(ctx context.Context, id string, keepMetadata []string) (s Server, found bool, err error) {
	var body struct {
		Server novaServer `json:"server"`
	}
	_, err = c.getJSON(ctx, c.compute.ServiceURL("servers", url.PathEscape(id)), &body)
	if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return Server{}, false, nil
	}
	if err != nil {
		return Server{}, false, fmt.Errorf("reading server %s: %w", id, err)
	}
	return body.Server.toServer(keepMetadata), true, nil
}

// ComputeServiceStates reads the nova-compute services (of one host, or all
// when host is ""), as host → UP, DOWN or MAINTENANCE, the way Nova derives
// a server's host_status from the same records.
func (c *Client) ComputeServiceStates(ctx context.Context, host string) (map[string]string, error) {
	values := url.Values{"binary": {"nova-compute"}}
	if host != "" {
		values.Set("host", host)
	}
	var body struct {
		Services []struct {
			Host       string `json:"host"`
			State      string `json:"state"`
			Status     string `json:"status"`
			ForcedDown bool   `json:"forced_down"`
		} `json:"services"`
	}
	if _, err := c.getJSON(ctx, c.compute.ServiceURL("os-services")+"?"+values.Encode(), &body); err != nil {
		return nil, fmt.Errorf("listing compute services: %w", err)
	}
	states := make(map[string]string, len(body.Services))
	for _, s := range body.Services {
		state := "UP"
		switch {
		case s.ForcedDown || s.State != "up":
			state = "DOWN"
		case s.Status == "disabled":
			state = "MAINTENANCE"
		}
		states[Clean(s.Host)] = state
	}
	return states, nil
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

// countingTransport counts requests and response bytes, and cuts off
// bodies larger than maxBody.
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
	resp.Body = &countingBody{ReadCloser: resp.Body, t: t, left: t.maxBody}
	return resp, nil
}

var errBodyTooLarge = errors.New("response body too large")

type countingBody struct {
	io.ReadCloser
	t    *countingTransport
	left int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: more than %d bytes", errBodyTooLarge, b.t.maxBody)
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
