package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

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
	c.redactor = newRedactor(provider.Token, creds.Secrets()...)
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
