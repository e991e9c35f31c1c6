package inventory

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

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
	// Disabled is disabledNone, disabledOperator or disabledAutomatic.
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
			Disabled:  disabledClass(s.Status, reason),
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
