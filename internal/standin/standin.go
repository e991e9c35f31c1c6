// Package standin is an HTTP stand-in for Keystone and the Nova API, for what
// the real services cannot do on demand: fail mid-pagination, hang, answer
// garbage, serve 50,000 servers in a benchmark, or run the demo with no cloud
// at hand. Every response is shaped after what the real Nova (26.2.2, Zed)
// and Keystone (22.0.2) returned on this project's test lab; the server
// object is rendered from a template recorded from the real API
// (server_template.json), so the stand-in cannot drift into a format Nova
// never produces.
package standin

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed server_template.json
var serverTemplateJSON []byte

// serverTemplate is parsed once; render copies what it changes.
var serverTemplate = func() map[string]any {
	var obj map[string]any
	if err := json.Unmarshal(serverTemplateJSON, &obj); err != nil {
		panic("standin: server_template.json: " + err.Error())
	}
	return obj
}()

// Server is a server as the stand-in holds it.
type Server struct {
	ID, Name, ProjectID, Host string
	VMState, TaskState        string
	PowerState                int
	AvailabilityZone          string
	Flavor, ImageID           string
	Metadata                  map[string]string
	Addresses                 []Address
	Updated                   time.Time
	// Deleted servers are listed only with changes-since, as DELETED.
	Deleted bool
	// PortStatus and VIFType are its ports' status and binding:vif_type
	// in Neutron (EnableNeutron): ACTIVE and ovs when empty.
	PortStatus, VIFType string
}

// Address is one address of a server.
type Address struct {
	Network, Addr, Type string // Type: fixed or floating
}

// Fault makes a request fail on purpose. Return nil to answer normally.
type Fault func(r *http.Request) *Failure

// Failure describes how to fail one request.
type Failure struct {
	Status int           // an HTTP error with Nova's error body, or with Body
	Hang   bool          // never answer (until the client gives up)
	Body   []byte        // answer 200 (or Status) with this body (malformed JSON, a proxy's HTML page...)
	Delay  time.Duration // answer normally after this delay
}

// Cloud is a running stand-in. Its zero value is not usable; use Start.
type Cloud struct {
	URL      string // base URL; Keystone at URL+"/identity/v3"
	Username string
	Password string
	// TokenTTL is how long an issued token is accepted.
	TokenTTL time.Duration
	// AsNonAdmin answers as real Nova does a user without the admin role:
	// the host filter is ignored and OS-EXT-SRV-ATTR:* and host_status are
	// left out.
	AsNonAdmin atomic.Bool
	// IgnoreHostFilter answers as Nova does a user whose policy shows the
	// host attribute but does not allow the host filter
	// (os_compute_api:servers:allow_all_filters): every server, with its
	// host.
	IgnoreHostFilter atomic.Bool
	// neutron: EnableNeutron was called.
	neutron atomic.Bool

	server   *http.Server
	listener net.Listener

	mu         sync.Mutex
	servers    map[string]*Server
	services   map[string]Service  // by host
	actions    map[string][]Action // by server id, oldest first
	migrations []Migration
	tokens     map[string]time.Time
	fault      Fault

	logins   atomic.Int64
	requests atomic.Int64
	bytesOut atomic.Int64
	tokenSeq atomic.Int64
	wg       sync.WaitGroup
	hangs    chan struct{}
}

// Start serves a stand-in on addr (e.g. "127.0.0.1:0").
func Start(addr string) (*Cloud, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Cloud{
		URL:      "http://" + l.Addr().String(),
		Username: "admin",
		Password: "standin-password",
		TokenTTL: time.Hour,
		listener: l,
		servers:  map[string]*Server{},
		services: map[string]Service{},
		actions:  map[string][]Action{},
		tokens:   map[string]time.Time{},
		hangs:    make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /identity/v3/auth/tokens", c.issueToken)
	mux.HandleFunc("GET /identity/v3/", c.identityVersion)
	mux.HandleFunc("GET /compute/v2.1/", c.computeVersion)
	mux.HandleFunc("GET /compute/v2.1", c.computeVersion)
	mux.HandleFunc("GET /compute/v2.1/servers/detail", c.authorized(c.listServers))
	mux.HandleFunc("GET /compute/v2.1/servers", c.authorized(c.listServers))
	mux.HandleFunc("GET /compute/v2.1/servers/{id}", c.authorized(c.showServer))
	mux.HandleFunc("GET /compute/v2.1/os-services", c.authorized(c.listServices))
	mux.HandleFunc("GET /compute/v2.1/servers/{id}/os-instance-actions", c.authorized(c.listActions))
	mux.HandleFunc("GET /compute/v2.1/os-migrations", c.authorized(c.listMigrations))
	mux.HandleFunc("GET /networking/{$}", c.neutronOnly(c.networkVersions))
	mux.HandleFunc("GET /networking/v2.0/ports", c.neutronOnly(c.authorized(c.listPorts)))
	mux.HandleFunc("GET /networking/v2.0/security-groups", c.neutronOnly(c.authorized(c.listSecurityGroups)))
	mux.HandleFunc("GET /networking/v2.0/address-groups", c.neutronOnly(c.authorized(c.listAddressGroups)))
	c.server = &http.Server{Handler: c.count(mux), ReadHeaderTimeout: 5 * time.Second}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = c.server.Serve(l)
	}()
	return c, nil
}

// Close stops the stand-in, releasing hanging requests.
func (c *Cloud) Close() error {
	close(c.hangs)
	err := c.server.Close()
	c.wg.Wait()
	return err
}

// AuthURL is Keystone's v3 URL.
func (c *Cloud) AuthURL() string { return c.URL + "/identity/v3" }

// Env returns OS_* variables that log in to the stand-in.
func (c *Cloud) Env() map[string]string {
	return map[string]string{
		"OS_AUTH_URL":            c.AuthURL(),
		"OS_USERNAME":            c.Username,
		"OS_PASSWORD":            c.Password,
		"OS_PROJECT_NAME":        "admin",
		"OS_USER_DOMAIN_NAME":    "Default",
		"OS_PROJECT_DOMAIN_NAME": "Default",
		"OS_REGION_NAME":         "RegionOne",
		"OS_INTERFACE":           "public",
	}
}

// SetFault installs f (nil removes it).
func (c *Cloud) SetFault(f Fault) {
	c.mu.Lock()
	c.fault = f
	c.mu.Unlock()
}

// Put adds or replaces servers; a zero Updated becomes now.
func (c *Cloud) Put(servers ...Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range servers {
		s := servers[i]
		if s.Updated.IsZero() {
			s.Updated = time.Now().UTC().Truncate(time.Second)
		}
		c.servers[s.ID] = &s
	}
}

// Update changes a server with fn and bumps its update time, as Nova does.
func (c *Cloud) Update(id string, fn func(*Server)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.servers[id]
	if !ok {
		return false
	}
	fn(s)
	s.Updated = time.Now().UTC().Truncate(time.Second)
	return true
}

// Delete marks a server deleted.
func (c *Cloud) Delete(id string) bool {
	return c.Update(id, func(s *Server) { s.Deleted = true })
}

// Service is a host's nova-compute service record, the fields os-services
// shows.
type Service struct {
	Disabled   bool // status "disabled"
	ForcedDown bool // forced_down; also makes state "down", as in Nova
	// Dead: the service stopped reporting (state "down" without
	// forced_down).
	Dead bool
	// DisabledReason of a disabled service ("standin maintenance" if
	// empty); nova-compute's own start "AUTO: ".
	DisabledReason string
}

// HostStatus is what Nova derives from the record for the host's servers
// (nova/compute/api.py, get_instance_host_status).
func (s Service) HostStatus() string {
	switch {
	case s.ForcedDown:
		return "DOWN"
	case s.Disabled:
		return "MAINTENANCE"
	case s.Dead:
		return "UNKNOWN"
	}
	return "UP"
}

// SetService sets a host's compute service as the lab does: UP; DOWN
// (forced down); MAINTENANCE (disabled); UNKNOWN (no heartbeat).
func (c *Cloud) SetService(host, state string) {
	c.PutService(host, Service{ForcedDown: state == "DOWN", Disabled: state == "MAINTENANCE", Dead: state == "UNKNOWN"})
}

// PutService sets a host's compute service record.
func (c *Cloud) PutService(host string, s Service) {
	c.mu.Lock()
	c.services[host] = s
	c.mu.Unlock()
}

// RevokeTokens makes every issued token invalid, like a revocation event.
func (c *Cloud) RevokeTokens() {
	c.mu.Lock()
	c.tokens = map[string]time.Time{}
	c.mu.Unlock()
}

// Logins counts token requests; Requests counts all requests; BytesOut
// counts response body bytes.
func (c *Cloud) Logins() int64   { return c.logins.Load() }
func (c *Cloud) Requests() int64 { return c.requests.Load() }
func (c *Cloud) BytesOut() int64 { return c.bytesOut.Load() }

type countingWriter struct {
	http.ResponseWriter
	c *Cloud
}

func (w countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.c.bytesOut.Add(int64(n))
	return n, err
}

func (c *Cloud) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		c.mu.Lock()
		fault := c.fault
		c.mu.Unlock()
		if fault != nil {
			if f := fault(r); f != nil && c.fail(w, r, f) {
				return
			}
		}
		next.ServeHTTP(countingWriter{w, c}, r)
	})
}

// fail answers with the failure; false means "then answer normally".
func (c *Cloud) fail(w http.ResponseWriter, r *http.Request, f *Failure) bool {
	switch {
	case f.Hang:
		select {
		case <-r.Context().Done():
		case <-c.hangs:
		}
		return true
	case f.Status != 0 && f.Body != nil:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.Status)
		_, _ = w.Write(f.Body)
		return true
	case f.Status != 0:
		novaError(w, f.Status, "Injected failure")
		return true
	case f.Body != nil:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(f.Body)
		return true
	case f.Delay > 0:
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return true
		}
	}
	return false
}

// novaError writes an error the way Nova's faultwrap middleware does.
func novaError(w http.ResponseWriter, status int, msg string) {
	kind := map[int]string{400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
		409: "conflictingRequest", 500: "computeFault", 503: "serviceUnavailable"}[status]
	if kind == "" {
		kind = "computeFault"
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{kind: map[string]any{"code": status, "message": msg}})
}

func (c *Cloud) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("X-Auth-Token")
		c.mu.Lock()
		exp, ok := c.tokens[tok]
		c.mu.Unlock()
		if !ok || time.Now().After(exp) {
			w.Header().Set("WWW-Authenticate", "Keystone uri=\""+c.AuthURL()+"\"")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}`))
			return
		}
		h(w, r)
	}
}

func (c *Cloud) issueToken(w http.ResponseWriter, r *http.Request) {
	c.logins.Add(1)
	var req struct {
		Auth struct {
			Identity struct {
				Password struct {
					User struct {
						Name     string `json:"name"`
						Password string `json:"password"`
					} `json:"user"`
				} `json:"password"`
			} `json:"identity"`
		} `json:"auth"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error": {"code": 400, "title": "Bad Request", "message": "malformed"}}`, http.StatusBadRequest)
		return
	}
	u := req.Auth.Identity.Password.User
	if u.Name != c.Username || u.Password != c.Password {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}`))
		return
	}
	token := fmt.Sprintf("gAAAAAstandin%08d", c.tokenSeq.Add(1))
	expires := time.Now().Add(c.TokenTTL)
	c.mu.Lock()
	c.tokens[token] = expires
	c.mu.Unlock()
	endpoint := func(service, path string) map[string]any {
		var eps []map[string]any
		for _, iface := range []string{"public", "internal", "admin"} {
			eps = append(eps, map[string]any{"id": service + iface, "interface": iface, "region": "RegionOne",
				"region_id": "RegionOne", "url": c.URL + path})
		}
		return map[string]any{"id": service, "type": service, "name": map[string]string{"identity": "keystone", "compute": "nova", "network": "neutron"}[service], "endpoints": eps}
	}
	catalog := []any{endpoint("identity", "/identity/v3/"), endpoint("compute", "/compute/v2.1")}
	if c.neutron.Load() {
		catalog = append(catalog, endpoint("network", "/networking/"))
	}
	w.Header().Set("X-Subject-Token", token)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
		"methods":    []string{"password"},
		"user":       map[string]any{"domain": map[string]string{"id": "default", "name": "Default"}, "id": "u-admin", "name": c.Username},
		"audit_ids":  []string{"standin"},
		"expires_at": expires.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"issued_at":  time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
		"project":    map[string]any{"domain": map[string]string{"id": "default", "name": "Default"}, "id": "p-admin", "name": "admin"},
		"is_domain":  false,
		"roles":      []map[string]string{{"id": "r-admin", "name": "admin"}, {"id": "r-reader", "name": "reader"}},
		"catalog":    catalog,
	}})
}

func (c *Cloud) identityVersion(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"version": map[string]any{
		"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
		"links": []map[string]string{{"rel": "self", "href": c.AuthURL() + "/"}},
	}})
}

func (c *Cloud) computeVersion(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"version": map[string]any{
		"id": "v2.1", "status": "CURRENT", "version": "2.93", "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
		"links": []map[string]string{{"rel": "self", "href": c.URL + "/compute/v2.1/"}},
	}})
}

// listServers implements GET /servers/detail as Nova does for an admin:
// all_tenants, host, uuid, changes-since (deleted servers included), sorted by
// created_at desc then id (here: id), limit and marker, servers_links. On
// GET /servers (no /detail) it answers Nova's plain listing, each server
// as its id, name and links only.
func (c *Cloud) listServers(w http.ResponseWriter, r *http.Request) {
	detail := strings.HasSuffix(r.URL.Path, "/detail")
	q := r.URL.Query()
	var since time.Time
	if s := q.Get("changes-since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			novaError(w, 400, "Invalid filter field: changes-since.")
			return
		}
		since = t
	}
	limit := 1000
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			novaError(w, 400, "limit must be a positive integer")
			return
		}
		limit = min(n, 1000)
	}
	host := q.Get("host")
	if c.AsNonAdmin.Load() || c.IgnoreHostFilter.Load() {
		host = ""
	}
	marker := q.Get("marker")
	uuid := q.Get("uuid")

	c.mu.Lock()
	ids := make([]string, 0, len(c.servers))
	for id, s := range c.servers {
		if host != "" && s.Host != host {
			continue
		}
		if uuid != "" && id != uuid {
			continue
		}
		if since.IsZero() && s.Deleted {
			continue
		}
		if !since.IsZero() && s.Updated.Before(since) {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	start := 0
	if marker != "" {
		i, found := slices.BinarySearch(ids, marker)
		if !found {
			c.mu.Unlock()
			novaError(w, 400, "marker ["+marker+"] not found")
			return
		}
		start = i + 1
	}
	end := min(len(ids), start+limit)
	page := make([]Server, 0, end-start)
	for _, id := range ids[start:end] {
		page = append(page, *c.servers[id])
	}
	services := maps.Clone(c.services)
	c.mu.Unlock()

	var buf bytes.Buffer
	buf.WriteString(`{"servers": [`)
	for i := range page {
		if i > 0 {
			buf.WriteString(", ")
		}
		if detail {
			c.render(&buf, &page[i], services)
		} else {
			// Nova's own spacing, so that byte counts are Nova's.
			fmt.Fprintf(&buf, `{"id": %s, "name": %s, "links": %s}`, jsonString(page[i].ID), jsonString(page[i].Name), c.links(page[i].ID))
		}
	}
	buf.WriteString("]")
	if end < len(ids) && len(page) > 0 {
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("marker", page[len(page)-1].ID)
		path := "/compute/v2.1/servers?"
		if detail {
			path = "/compute/v2.1/servers/detail?"
		}
		fmt.Fprintf(&buf, `, "servers_links": [{"rel": "next", "href": %s}]`, jsonString(c.URL+path+next.Encode()))
	}
	buf.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

func (c *Cloud) showServer(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	s, ok := c.servers[r.PathValue("id")]
	var cp Server
	if ok {
		cp = *s
	}
	services := maps.Clone(c.services)
	c.mu.Unlock()
	if !ok || cp.Deleted {
		novaError(w, 404, "Instance "+r.PathValue("id")+" could not be found.")
		return
	}
	var buf bytes.Buffer
	buf.WriteString(`{"server": `)
	c.render(&buf, &cp, services)
	buf.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// links renders a server's links as Nova does, with its spacing.
func (c *Cloud) links(id string) string {
	return fmt.Sprintf(`[{"rel": "self", "href": %s}, {"rel": "bookmark", "href": %s}]`,
		jsonString(c.URL+"/compute/v2.1/servers/"+id), jsonString(c.URL+"/compute/servers/"+id))
}

// listServices answers os-services as Nova does from the records: state
// "down" when forced down or dead, status "disabled" when disabled.
func (c *Cloud) listServices(w http.ResponseWriter, r *http.Request) {
	if c.AsNonAdmin.Load() {
		novaError(w, 403, "Policy doesn't allow os_compute_api:os-services:list to be performed.")
		return
	}
	host := r.URL.Query().Get("host")
	c.mu.Lock()
	var out []map[string]any
	hosts := make([]string, 0, len(c.services))
	for h := range c.services {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	for i, h := range hosts {
		if host != "" && h != host {
			continue
		}
		svc := c.services[h]
		state, status := "up", "enabled"
		if svc.ForcedDown || svc.Dead {
			state = "down"
		}
		var reason any
		if svc.Disabled {
			status, reason = "disabled", "standin maintenance"
			if svc.DisabledReason != "" {
				reason = svc.DisabledReason
			}
		}
		out = append(out, map[string]any{"id": i + 1, "binary": "nova-compute", "host": h, "zone": "nova",
			"status": status, "state": state, "forced_down": svc.ForcedDown, "disabled_reason": reason,
			"updated_at": time.Now().UTC().Format("2006-01-02T15:04:05.000000")})
	}
	c.mu.Unlock()
	if out == nil {
		out = []map[string]any{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"services": out})
}

// statusOf derives the API status from vm_state and task_state with Nova's
// own table (nova/api/openstack/common.py).
func statusOf(s *Server) string {
	if s.Deleted {
		return "DELETED"
	}
	byTask := map[string]map[string]string{
		"active": {"": "ACTIVE", "rebooting": "REBOOT", "reboot_pending": "REBOOT", "reboot_started": "REBOOT",
			"rebooting_hard": "HARD_REBOOT", "reboot_pending_hard": "HARD_REBOOT", "reboot_started_hard": "HARD_REBOOT",
			"updating_password": "PASSWORD", "rebuilding": "REBUILD", "rebuild_block_device_mapping": "REBUILD",
			"rebuild_spawning": "REBUILD", "migrating": "MIGRATING", "resize_prep": "RESIZE",
			"resize_migrating": "RESIZE", "resize_migrated": "RESIZE", "resize_finish": "RESIZE"},
		"building":          {"": "BUILD"},
		"stopped":           {"": "SHUTOFF", "resize_prep": "RESIZE", "resize_migrating": "RESIZE", "resize_migrated": "RESIZE", "resize_finish": "RESIZE", "rebuilding": "REBUILD"},
		"resized":           {"": "VERIFY_RESIZE", "resize_reverting": "REVERT_RESIZE"},
		"paused":            {"": "PAUSED", "migrating": "MIGRATING"},
		"suspended":         {"": "SUSPENDED"},
		"rescued":           {"": "RESCUE"},
		"error":             {"": "ERROR", "rebuilding": "REBUILD"},
		"deleted":           {"": "DELETED"},
		"soft-delete":       {"": "SOFT_DELETED"},
		"shelved":           {"": "SHELVED"},
		"shelved_offloaded": {"": "SHELVED_OFFLOADED"},
	}
	m, ok := byTask[s.VMState]
	if !ok {
		return "UNKNOWN"
	}
	if st, ok := m[s.TaskState]; ok {
		return st
	}
	if st, ok := m[""]; ok {
		return st
	}
	return "UNKNOWN"
}

// render writes one server in Nova's 2.69 detail format: the recorded
// template with this server's values put in.
func (c *Cloud) render(buf *bytes.Buffer, s *Server, services map[string]Service) {
	obj := make(map[string]any, len(serverTemplate))
	for k, v := range serverTemplate {
		obj[k] = v
	}
	obj["id"] = s.ID
	obj["name"] = s.Name
	obj["tenant_id"] = s.ProjectID
	obj["status"] = statusOf(s)
	obj["updated"] = s.Updated.UTC().Format(time.RFC3339)
	obj["OS-EXT-SRV-ATTR:host"] = nullable(s.Host)
	obj["OS-EXT-SRV-ATTR:hypervisor_hostname"] = nullable(s.Host)
	obj["OS-EXT-STS:vm_state"] = s.VMState
	obj["OS-EXT-STS:task_state"] = nullable(s.TaskState)
	obj["OS-EXT-STS:power_state"] = s.PowerState
	obj["OS-EXT-AZ:availability_zone"] = s.AvailabilityZone
	if fl, ok := obj["flavor"].(map[string]any); ok {
		flavor := make(map[string]any, len(fl))
		for k, v := range fl {
			flavor[k] = v
		}
		flavor["original_name"] = s.Flavor
		obj["flavor"] = flavor
	}
	if s.ImageID == "" {
		obj["image"] = ""
	} else {
		obj["image"] = map[string]any{"id": s.ImageID, "links": []map[string]string{{"rel": "bookmark", "href": c.URL + "/compute/images/" + s.ImageID}}}
	}
	meta := map[string]string{}
	for k, v := range s.Metadata {
		meta[k] = v
	}
	obj["metadata"] = meta
	addrs := map[string][]map[string]any{}
	for i, a := range s.Addresses {
		version := 4
		if strings.Contains(a.Addr, ":") {
			version = 6
		}
		addrs[a.Network] = append(addrs[a.Network], map[string]any{
			"version": version, "addr": a.Addr, "OS-EXT-IPS:type": a.Type,
			"OS-EXT-IPS-MAC:mac_addr": fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", len(s.ID)%256, i/256%256, i%256),
		})
	}
	obj["addresses"] = addrs
	// Nova says "" for a host without a compute service record.
	obj["host_status"] = ""
	if svc, ok := services[s.Host]; ok && s.Host != "" {
		obj["host_status"] = svc.HostStatus()
	}
	obj["links"] = []map[string]string{
		{"rel": "self", "href": c.URL + "/compute/v2.1/servers/" + s.ID},
		{"rel": "bookmark", "href": c.URL + "/compute/servers/" + s.ID},
	}
	if c.AsNonAdmin.Load() {
		for k := range obj {
			if strings.HasPrefix(k, "OS-EXT-SRV-ATTR:") || k == "host_status" {
				delete(obj, k)
			}
		}
	}
	b, _ := json.Marshal(obj)
	buf.Write(b)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Action is an instance action: UserID "" as Nova's own (power sync).
type Action struct {
	Action, UserID string
	Start          time.Time
}

// Migration is a migration record of os-migrations.
type Migration struct {
	UUID, ServerID, Source, Dest, Status, Type string
	Created, Updated                           time.Time
}

// AddAction records an instance action of a server.
func (c *Cloud) AddAction(id string, a Action) {
	c.mu.Lock()
	c.actions[id] = append(c.actions[id], a)
	c.mu.Unlock()
}

// PutMigrations replaces the migration records.
func (c *Cloud) PutMigrations(ms ...Migration) {
	c.mu.Lock()
	c.migrations = slices.Clone(ms)
	c.mu.Unlock()
}

func novaTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000") }

// listActions answers os-instance-actions, newest first.
func (c *Cloud) listActions(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c.mu.Lock()
	_, known := c.servers[id]
	acts := slices.Clone(c.actions[id])
	c.mu.Unlock()
	if !known {
		novaError(w, 404, "Instance "+id+" could not be found.")
		return
	}
	out := []map[string]any{}
	for i := len(acts) - 1; i >= 0; i-- {
		a := acts[i]
		var user any
		if a.UserID != "" {
			user = a.UserID
		}
		out = append(out, map[string]any{"action": a.Action, "instance_uuid": id, "user_id": user,
			"start_time": novaTime(a.Start), "updated_at": novaTime(a.Start), "message": nil, "request_id": "req-standin"})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"instanceActions": out})
}

// listMigrations answers os-migrations (host and changes-since filters,
// newest first, no paging).
func (c *Cloud) listMigrations(w http.ResponseWriter, r *http.Request) {
	if c.AsNonAdmin.Load() {
		novaError(w, 403, "Policy doesn't allow os_compute_api:os-migrations:index to be performed.")
		return
	}
	host := r.URL.Query().Get("host")
	since, _ := time.Parse(time.RFC3339, r.URL.Query().Get("changes-since"))
	c.mu.Lock()
	ms := slices.Clone(c.migrations)
	c.mu.Unlock()
	slices.SortFunc(ms, func(a, b Migration) int { return b.Created.Compare(a.Created) })
	out := []map[string]any{}
	for i, m := range ms {
		if (host != "" && m.Source != host && m.Dest != host) || m.Updated.Before(since) {
			continue
		}
		out = append(out, map[string]any{"id": i + 1, "uuid": m.UUID, "instance_uuid": m.ServerID,
			"source_compute": m.Source, "dest_compute": m.Dest, "source_node": m.Source, "dest_node": m.Dest,
			"status": m.Status, "migration_type": m.Type, "created_at": novaTime(m.Created), "updated_at": novaTime(m.Updated)})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"migrations": out})
}
