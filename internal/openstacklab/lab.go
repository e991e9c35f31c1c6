// Package openstacklab runs a real Keystone (22, Zed), the real Nova
// compute API (26, Zed; microversions to 2.93) and the real neutron-server
// (21, Zed; ML2 with the OVN mechanism driver, on OVN 23.03's databases and
// ovn-northd) from Debian's python3-keystone, python3-nova and
// python3-neutron on 127.0.0.1, with sqlite and no message bus or
// hypervisor, for tests. Networks, subnets and ports are created through
// Neutron's API; a hypervisor that binds them is internal/ovnlab. Servers are created through Nova's own object layer
// (py/lab.py), so the API answers with real Nova JSON: status derived from
// vm_state and task_state, pagination, the host filter, changes-since with
// deleted servers, host_status from the compute service records, and
// microversion behaviour.
//
// Setup is cached: the databases of a registered lab are kept under the
// user's cache directory, keyed by the packages' versions and lab.py, and
// copied into each new lab (about 5 s warm against 35 s cold).
//
// Imports are shared: each service is a fork of a forkserver of the test
// process (forkserver.go) that imported Keystone, Nova, Neutron or Nova's
// object layer once, so a package's second and later labs do not import
// them again (about 4 CPU-seconds each, most of a lab's start).
package openstacklab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/freeport"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/machinelock"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/tied"
)

//go:embed py/lab.py
var labPy []byte

// Python is Debian's interpreter, whose dist-packages hold Keystone and Nova.
const Python = "/usr/bin/python3"

// Passwords of the lab's users (created by lab.py).
const (
	AdminPassword  = "lab-admin-password"
	ReaderPassword = "lab-reader-password"
)

// Options configures a lab.
type Options struct {
	// Dir is the working directory: databases, configuration, logs.
	Dir string
	// NetNS runs the services inside this network namespace (whose
	// loopback is its own); empty: the current one.
	NetNS string
	// HTTPClient reaches the services (with NetNS: a client that dials
	// from inside the namespace); default http.DefaultClient.
	HTTPClient *http.Client
	// NewPolicyDefaults runs Nova with its new policy defaults and scope
	// checks (enforce_new_defaults, enforce_scope), as recent releases do
	// by default; otherwise the legacy rules still apply beside them.
	NewPolicyDefaults bool
}

// Lab is a running Keystone and Nova.
type Lab struct {
	opts    Options
	script  string
	ports   map[string]int
	mu      sync.Mutex
	procs   []*exec.Cmd
	forked  []*forked // its services, forks of the forkservers
	closers []func() error
	// the ports of its services, reserved for as long as they may run
	reservations []*freeport.Reservation
	logs         map[string]string
	// the admin token of the lab's Neutron calls
	neutronToken   string
	neutronTokenAt time.Time
	helper         novaHelper
	Warm           bool // the databases came from the cache
	Started        time.Duration
}

// Server is a server to create.
type Server struct {
	ID               string            `json:"id,omitempty"`
	Name             string            `json:"name"`
	ProjectID        string            `json:"project_id,omitempty"`
	UserID           string            `json:"user_id,omitempty"`
	Host             string            `json:"host,omitempty"`
	Node             string            `json:"node,omitempty"`
	AvailabilityZone string            `json:"availability_zone,omitempty"`
	VMState          string            `json:"vm_state"`
	TaskState        string            `json:"task_state,omitempty"`
	PowerState       int               `json:"power_state"`
	Flavor           string            `json:"flavor,omitempty"`
	ImageRef         string            `json:"image_ref,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	Addresses        []Address         `json:"addresses,omitempty"`
	// UpdatedAt backdates Nova's updated_at (a server stuck for hours).
	UpdatedAt time.Time `json:"-"`
}

// Address is one address of a server. A floating address attaches to the
// fixed one listed before it on the same network, as in Nova's network_info.
//
// Addresses of a Neutron port (PortAddresses) carry its ids: the server's
// network_info then has a VIF with the port's id, network id, MAC and
// subnet, as Nova builds it from the port.
type Address struct {
	Network string `json:"network"`
	Address string `json:"address"`
	Type    string `json:"type"` // fixed or floating
	MAC     string `json:"mac,omitempty"`
	// PortID, NetworkID and CIDR: the Neutron port, its network and the
	// subnet of the address (empty: made-up ids and 198.18.0.0/15).
	PortID    string `json:"port_id,omitempty"`
	NetworkID string `json:"network_id,omitempty"`
	CIDR      string `json:"cidr,omitempty"`
}

// Update changes a server; nil fields stay.
type Update struct {
	VMState    *string
	TaskState  *string
	PowerState *int
	Host       *string
	Name       *string
	UpdatedAt  time.Time
	Delete     bool
}

// Require fails the test when Keystone, Nova, Neutron or OVN's central
// part is not installed.
func Require(t interface {
	Helper()
	Fatalf(string, ...any)
}) {
	t.Helper()
	if err := exec.Command(Python, "-c", "import keystone, nova, neutron").Run(); err != nil {
		t.Fatalf("%s cannot import keystone, nova and neutron: apt-get install -y --no-install-recommends python3-keystone python3-nova python3-neutron (scripts/setup.sh does)", Python)
	}
	RequireOVN(t)
}

// StartForTest starts a lab of opts for a test's lifetime, in the test's
// own directory unless opts.Dir names one; a machine without the lab's
// packages, or a lab that does not start, fails the test.
func StartForTest(t interface {
	Helper()
	Fatal(...any)
	Fatalf(string, ...any)
	TempDir() string
	Cleanup(func())
}, opts Options) *Lab {
	t.Helper()
	Require(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	lab, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	return lab
}

// Start runs Keystone, OVN's databases and ovn-northd, the real
// neutron-server (ML2/OVN) and Nova, and returns when all answer.
func Start(ctx context.Context, opts Options) (*Lab, error) {
	begin := time.Now()
	template, err := templateDir()
	if err != nil {
		return nil, err
	}
	building, err := waitForTemplate(ctx, template)
	if err != nil {
		return nil, err
	}
	if building != nil {
		defer building.Close()
	}
	slot, err := takeStartSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer slot.Close()
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	l := &Lab{opts: opts, script: filepath.Join(opts.Dir, "lab.py"), logs: map[string]string{}}
	if err := os.WriteFile(l.script, labPy, 0o755); err != nil {
		return nil, err
	}
	ports, err := l.freePorts(3)
	if err != nil {
		return nil, err
	}
	l.ports = map[string]int{"keystone": ports[0], "nova": ports[1], "neutron": ports[2]}
	if opts.NewPolicyDefaults {
		l.ports["new_policy_defaults"] = 1
	}
	b, _ := json.Marshal(l.ports)
	if err := os.WriteFile(filepath.Join(opts.Dir, "ports.json"), b, 0o644); err != nil {
		return nil, err
	}
	// OVN's central part starts (in well under a second) while the
	// databases are prepared.
	ovnDone := make(chan error, 1)
	go func() { ovnDone <- l.startOVNCentral(ctx) }()
	out, err := l.python(ctx, nil, "init", opts.Dir, template)
	if ovnErr := <-ovnDone; err == nil {
		err = ovnErr
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	l.Warm = strings.TrimSpace(out) == "warm"
	// Neutron, the slowest to start, needs nothing but its configuration
	// and database to start (Keystone only when it checks a token): it
	// starts now, beside Keystone and Nova.
	neutronDone := make(chan error, 1)
	go func() {
		neutronDone <- l.serve(ctx, "neutron", l.NetworkURL()+"/", "neutron", opts.Dir)
	}()
	err = l.serve(ctx, "keystone", fmt.Sprintf("http://127.0.0.1:%d/v3", l.ports["keystone"]), "keystone", opts.Dir, fmt.Sprint(l.ports["keystone"]))
	if err == nil && !l.Warm {
		_, err = l.python(ctx, nil, "register", opts.Dir, template)
	}
	if err == nil {
		err = l.serve(ctx, "nova", l.ComputeURL()+"/", "nova", opts.Dir, fmt.Sprint(l.ports["nova"]))
	}
	if nerr := <-neutronDone; err == nil {
		err = nerr
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	l.Started = time.Since(begin)
	return l, nil
}

// takeStartSlot waits until fewer labs than the machine has CPUs are
// starting, in every process of the machine (a test run starts a dozen at
// once). Starting, Python imports Keystone, Nova and Neutron (in a test
// process's first lab: its forkservers) and each service reads its
// configuration and database: seconds of CPU each. All at once on two cores, neutron-server took more than 90 s
// to answer; in turns, each lab is up in seconds. The slot is a machine-wide
// lock, gone with its process.
func takeStartSlot(ctx context.Context) (io.Closer, error) {
	for {
		for i := range max(runtime.NumCPU(), 1) {
			if l, err := machinelock.TryLock(fmt.Sprintf("openstack-vm-exporter-lab-start-%d", i)); err == nil {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a turn to start a lab: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitForTemplate returns at once when the template exists; otherwise it
// waits for the machine-wide turn to build it and returns that turn, to
// be released once this lab has started (and saved the template), unless
// another lab built the template meanwhile. Without it, the first labs of
// a test run on a fresh machine each built the template: about 30
// CPU-seconds each, on top of the 20 of a test process's first lab. It
// waits outside the start slots, which the labs that build nothing use.
func waitForTemplate(ctx context.Context, template string) (io.Closer, error) {
	ready := func() bool {
		_, err := os.Stat(filepath.Join(template, "origin.json"))
		return err == nil
	}
	for {
		if ready() {
			return nil, nil
		}
		if l, err := machinelock.TryLock("openstack-vm-exporter-lab-template-" + filepath.Base(template)); err == nil {
			if ready() {
				l.Close()
				return nil, nil
			}
			return l, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for another lab to build the template %s: %w", template, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// templateDir is where a registered lab is cached, keyed by what shapes it.
func templateDir() (string, error) {
	h := sha256.New()
	h.Write(labPy)
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "python3-keystone", "python3-nova", "python3-neutron").Output(); err == nil {
		h.Write(out)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "openstack-vm-exporter", "openstacklab")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return filepath.Join(dir, hex.EncodeToString(h.Sum(nil))[:16]), nil
}

// freePorts reserves n loopback ports until the lab closes (after its
// processes are gone, so that no other test's server gets a port one of
// them still holds).
func (l *Lab) freePorts(n int) ([]int, error) {
	r, err := freeport.Reserve(n)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.reservations = append(l.reservations, r)
	l.mu.Unlock()
	return r.Ports, nil
}

func (l *Lab) command(ctx context.Context, args ...string) *exec.Cmd {
	argv := append([]string{Python, l.script}, args...)
	if l.opts.NetNS != "" {
		argv = append([]string{"ip", "netns", "exec", l.opts.NetNS}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "PYTHONWARNINGS=ignore")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// python runs one lab.py command to its end and returns its output.
func (l *Lab) python(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := l.command(ctx, args...)
	cmd.Stdin = stdin
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	exited, err := tied.Start(cmd)
	if err == nil {
		err = <-exited
	}
	if err != nil {
		return out.String(), fmt.Errorf("lab.py %s: %v\n%s", args[0], err, tail(errOut.String(), 3000))
	}
	return out.String(), nil
}

// serve starts a long-running lab.py service (keystone, nova, neutron:
// args[0]) in the process's forkserver of its kind and waits until url
// answers.
func (l *Lab) serve(ctx context.Context, name, url string, args ...string) error {
	logPath := filepath.Join(l.opts.Dir, name+".log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		return err
	}
	fs, err := forkserverFor(args[0], l.script)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	proc, err := fs.start(forkRequest{Args: args, Log: logPath, NetNS: l.opts.NetNS})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	l.mu.Lock()
	l.forked = append(l.forked, proc)
	l.logs[name] = logPath
	l.mu.Unlock()
	// Not a budget for a slow machine (starts take turns, takeStartSlot):
	// a bound for a service that hangs.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if l.answers(url) {
			return nil
		}
		select {
		case <-proc.done:
			return fmt.Errorf("%s exited at start: %v\n%s", name, proc.err, l.tailLog(name))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer %s within 5 minutes\n%s", name, url, l.tailLog(name))
		}
	}
}

func (l *Lab) answers(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := l.opts.HTTPClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

// ShortLivedAuthURL starts a second Keystone on the lab's database and keys
// whose tokens expire after ttl, and returns its v3 endpoint. Only what logs
// in there gets short-lived tokens (Nova and every other login keep
// Keystone's default hour), so a test of expiry bounds nothing but itself
// by ttl, however slow the machine.
func (l *Lab) ShortLivedAuthURL(ctx context.Context, ttl time.Duration) (string, error) {
	ports, err := l.freePorts(1)
	if err != nil {
		return "", err
	}
	secs := int(ttl.Seconds())
	if secs < 1 {
		secs = 1
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/v3", ports[0])
	name := fmt.Sprintf("keystone-ttl%d-%d", secs, ports[0])
	if err := l.serve(ctx, name, url, "keystone", l.opts.Dir, fmt.Sprint(ports[0]), fmt.Sprint(secs)); err != nil {
		return "", err
	}
	return url, nil
}

// ExpiringLogin is a Keystone endpoint whose first login gets a token that
// expires after a short lifetime, and whose later logins get Keystone's
// usual hour: a client that renews its expired token can then use the new
// one however slow the machine, so only the expiry itself is bounded by the
// short lifetime.
type ExpiringLogin struct {
	// URL is the v3 endpoint to log in at.
	URL    string
	server *http.Server
	mu     sync.Mutex
	logins int
	first  string
}

// ExpiringFirstLogin starts an ExpiringLogin: a reverse proxy on 127.0.0.1
// in front of the lab's Keystone and of a Keystone whose tokens live ttl
// (ShortLivedAuthURL). Not for labs in a network namespace.
func (l *Lab) ExpiringFirstLogin(ctx context.Context, ttl time.Duration) (*ExpiringLogin, error) {
	if l.opts.NetNS != "" {
		return nil, errors.New("ExpiringFirstLogin: the proxy cannot reach a lab in a network namespace")
	}
	shortURL, err := l.ShortLivedAuthURL(ctx, ttl)
	if err != nil {
		return nil, err
	}
	short, _ := url.Parse(shortURL)
	usual, _ := url.Parse(l.AuthURL())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &ExpiringLogin{URL: "http://" + ln.Addr().String() + "/v3"}
	isLogin := func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/auth/tokens")
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			target := usual
			if isLogin(r.In) {
				e.mu.Lock()
				e.logins++
				if e.logins == 1 {
					target = short
				}
				e.mu.Unlock()
			}
			r.Out.URL.Scheme, r.Out.URL.Host = target.Scheme, target.Host
			r.Out.Host = target.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if isLogin(resp.Request) && resp.Request.URL.Host == short.Host && resp.StatusCode == http.StatusCreated {
				e.mu.Lock()
				e.first = resp.Header.Get("X-Subject-Token")
				e.mu.Unlock()
			}
			return nil
		},
	}
	e.server = &http.Server{Handler: proxy, ReadHeaderTimeout: time.Minute}
	go func() { _ = e.server.Serve(ln) }()
	l.mu.Lock()
	l.closers = append(l.closers, e.server.Close)
	l.mu.Unlock()
	return e, nil
}

// FirstToken is the short-lived token of the first login ("" before it).
func (e *ExpiringLogin) FirstToken() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.first
}

// Logins counts the logins made through the endpoint.
func (e *ExpiringLogin) Logins() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logins
}

// errTokenNotFound is Keystone's answer for a token it no longer accepts.
var errTokenNotFound = errors.New("keystone: token not found")

// TokenExpiry asks Keystone when a token expires.
func (l *Lab) TokenExpiry(ctx context.Context, token string) (time.Time, error) {
	admin, err := l.Token(ctx)
	if err != nil {
		return time.Time{}, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.AuthURL()+"/auth/tokens", nil)
	req.Header.Set("X-Auth-Token", admin)
	req.Header.Set("X-Subject-Token", token)
	resp, err := l.opts.HTTPClient.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return time.Time{}, errTokenNotFound
	default:
		return time.Time{}, fmt.Errorf("validating a token: %s", resp.Status)
	}
	var body struct {
		Token struct {
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return time.Time{}, err
	}
	return body.Token.ExpiresAt, nil
}

// WaitTokenExpired returns once Keystone refuses the token: the event an
// expiry test waits for, instead of a sleep that guesses its time.
func (l *Lab) WaitTokenExpired(ctx context.Context, token string) error {
	for {
		expiry, err := l.TokenExpiry(ctx, token)
		if errors.Is(err, errTokenNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		wait := time.Until(expiry)
		if wait < 200*time.Millisecond {
			wait = 200 * time.Millisecond
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// AuthURL is Keystone's v3 endpoint.
func (l *Lab) AuthURL() string { return fmt.Sprintf("http://127.0.0.1:%d/v3", l.ports["keystone"]) }

// ComputeURL is Nova's v2.1 endpoint.
func (l *Lab) ComputeURL() string { return fmt.Sprintf("http://127.0.0.1:%d/v2.1", l.ports["nova"]) }

// AdminEnv returns OS_* variables of the lab's admin.
func (l *Lab) AdminEnv() map[string]string {
	return map[string]string{
		"OS_AUTH_URL": l.AuthURL(), "OS_USERNAME": "admin", "OS_PASSWORD": AdminPassword,
		"OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
		"OS_REGION_NAME": "RegionOne", "OS_INTERFACE": "public", "OS_IDENTITY_API_VERSION": "3",
	}
}

// ReaderEnv returns OS_* variables of a user with only the reader and
// member roles on one project: not allowed the admin view of servers.
func (l *Lab) ReaderEnv() map[string]string {
	env := l.AdminEnv()
	env["OS_USERNAME"], env["OS_PASSWORD"], env["OS_PROJECT_NAME"] = "lab-reader", ReaderPassword, "lab-project"
	return env
}

// WriteCloudsYAML writes a clouds.yaml with the clouds "lab-admin" and
// "lab-reader".
func (l *Lab) WriteCloudsYAML(path string) error {
	var b strings.Builder
	b.WriteString("clouds:\n")
	for name, env := range map[string]map[string]string{"lab-admin": l.AdminEnv(), "lab-reader": l.ReaderEnv()} {
		fmt.Fprintf(&b, "  %s:\n    region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n    auth:\n", name)
		fmt.Fprintf(&b, "      auth_url: %s\n      username: %s\n      password: %s\n      project_name: %s\n",
			env["OS_AUTH_URL"], env["OS_USERNAME"], env["OS_PASSWORD"], env["OS_PROJECT_NAME"])
		b.WriteString("      user_domain_name: Default\n      project_domain_name: Default\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// Seed creates servers through Nova's object layer, in one process.
func (l *Lab) Seed(ctx context.Context, servers []Server) ([]string, error) {
	type wire struct {
		Server
		UpdatedAt string `json:"updated_at,omitempty"`
	}
	ws := make([]wire, len(servers))
	for i, s := range servers {
		ws[i].Server = s
		if !s.UpdatedAt.IsZero() {
			ws[i].UpdatedAt = s.UpdatedAt.UTC().Format(time.RFC3339)
		}
	}
	b, err := json.Marshal(ws)
	if err != nil {
		return nil, err
	}
	out, err := l.nova(ctx, b, "seed", l.opts.Dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			ids = append(ids, line)
		}
	}
	if len(ids) != len(servers) {
		return ids, fmt.Errorf("seeded %d of %d servers", len(ids), len(servers))
	}
	return ids, nil
}

// Update changes servers through Nova's object layer (instance.save, which
// bumps updated_at as Nova itself does, unless UpdatedAt backdates it).
func (l *Lab) Update(ctx context.Context, changes map[string]Update) error {
	var list []map[string]any
	for id, u := range changes {
		m := map[string]any{"id": id}
		if u.VMState != nil {
			m["vm_state"] = *u.VMState
		}
		if u.TaskState != nil {
			m["task_state"] = *u.TaskState
		}
		if u.PowerState != nil {
			m["power_state"] = *u.PowerState
		}
		if u.Host != nil {
			m["host"] = *u.Host
		}
		if u.Name != nil {
			m["display_name"] = *u.Name
		}
		if !u.UpdatedAt.IsZero() {
			m["updated_at"] = u.UpdatedAt.UTC().Format(time.RFC3339)
		}
		if u.Delete {
			m["delete"] = true
		}
		list = append(list, m)
	}
	b, _ := json.Marshal(list)
	_, err := l.nova(ctx, b, "update", l.opts.Dir)
	return err
}

// SetComputeService sets a host's nova-compute service: UP, DOWN (forced
// down) or MAINTENANCE (disabled). Nova shows it as the host_status of the
// host's servers and in os-services.
func (l *Lab) SetComputeService(ctx context.Context, host, state string) error {
	_, err := l.nova(ctx, nil, "service", l.opts.Dir, host, state)
	return err
}

// DisableComputeService disables a host's nova-compute service with a
// reason, as `openstack compute service set --disable --disable-reason`
// does, or as nova-compute does itself when libvirt's connection is lost
// (a reason starting "AUTO: ").
func (l *Lab) DisableComputeService(ctx context.Context, host, reason string) error {
	_, err := l.nova(ctx, nil, "service", l.opts.Dir, host, "MAINTENANCE", reason)
	return err
}

// StopByNova is the user id that makes StopServer record the stop as
// nova-compute's power sync does.
const StopByNova = "nova"

// StopServers stops servers and records the instance action "stop" as Nova
// does: by StopByNova, with the admin context of nova-compute's power sync
// (no user, no project: a guest that stopped by itself); by any other user
// id, as that user's API request.
func (l *Lab) StopServers(ctx context.Context, by string, ids ...string) error {
	_, err := l.nova(ctx, nil, append([]string{"stop", l.opts.Dir, by}, ids...)...)
	return err
}

// RecordAction records an instance action (start, reboot...) by a user (or
// StopByNova), as Nova's API records one, without changing the server.
func (l *Lab) RecordAction(ctx context.Context, id, action, by string) error {
	_, err := l.nova(ctx, nil, "action", l.opts.Dir, id, action, by)
	return err
}

// Migration is a migration record to create.
type Migration struct {
	ServerID string
	// Source defaults to the server's host.
	Source, Dest string
	// Status as Nova writes it: running, error, failed, completed...
	Status string
	// Type: live-migration (default), migration, resize, evacuation.
	Type string
	// CreatedAt and UpdatedAt backdate the record (zero: now; UpdatedAt
	// zero: CreatedAt).
	CreatedAt, UpdatedAt time.Time
}

// SeedMigrations creates migration records through Nova's object layer and
// returns their uuids.
func (l *Lab) SeedMigrations(ctx context.Context, migs []Migration) ([]string, error) {
	var list []map[string]any
	for _, m := range migs {
		e := map[string]any{"instance_uuid": m.ServerID, "status": m.Status, "type": m.Type, "source": m.Source, "dest": m.Dest}
		if !m.CreatedAt.IsZero() {
			e["created_at"] = m.CreatedAt.UTC().Format(time.RFC3339)
		}
		if !m.UpdatedAt.IsZero() {
			e["updated_at"] = m.UpdatedAt.UTC().Format(time.RFC3339)
		}
		list = append(list, e)
	}
	b, _ := json.Marshal(list)
	out, err := l.nova(ctx, b, "migrations", l.opts.Dir)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// Token logs in as the lab's admin and returns the token.
func (l *Lab) Token(ctx context.Context) (string, error) {
	return l.login(ctx, passwordAuth("admin", AdminPassword, "admin"), nil)
}

// RevokeToken revokes a token, as `openstack token revoke` does.
func (l *Lab) RevokeToken(ctx context.Context, token string) error {
	admin, err := l.Token(ctx)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, l.AuthURL()+"/auth/tokens", nil)
	req.Header.Set("X-Auth-Token", admin)
	req.Header.Set("X-Subject-Token", token)
	resp, err := l.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("revoking: %s", resp.Status)
	}
	return nil
}

// CreateAdminUser creates a user with the admin role on the admin project,
// through Keystone's API, for tests that change a user mid-run without
// touching the lab's own admin.
func (l *Lab) CreateAdminUser(ctx context.Context, name, password string) error {
	return l.CreateUser(ctx, name, password, "admin", "admin")
}

// SetUserEnabled enables or disables a user, as `openstack user set
// --disable` does; Keystone then rejects the user's logins and tokens.
func (l *Lab) SetUserEnabled(ctx context.Context, name string, enabled bool) error {
	id, err := l.keystoneFind(ctx, "users", name)
	if err != nil {
		return err
	}
	return l.keystone(ctx, http.MethodPatch, "/users/"+id, map[string]any{"user": map[string]any{"enabled": enabled}}, nil)
}

// CreateUser creates a user with roles on a project, creating the project
// and the roles if they do not exist, through Keystone's API.
func (l *Lab) CreateUser(ctx context.Context, name, password, project string, roles ...string) error {
	projectID, err := l.keystoneEnsure(ctx, "projects", "project", map[string]any{"name": project, "domain_id": "default"})
	if err != nil {
		return err
	}
	var created struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	body := map[string]any{"user": map[string]any{"name": name, "domain_id": "default", "password": password, "default_project_id": projectID}}
	if err := l.keystone(ctx, http.MethodPost, "/users", body, &created); err != nil {
		return err
	}
	for _, role := range roles {
		roleID, err := l.keystoneEnsure(ctx, "roles", "role", map[string]any{"name": role})
		if err != nil {
			return err
		}
		if err := l.keystone(ctx, http.MethodPut, "/projects/"+projectID+"/users/"+created.User.ID+"/roles/"+roleID, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

// CreateApplicationCredential logs in as a user, scoped to a project, and
// creates an application credential of that user, as `openstack
// application credential create NAME` does: it holds the user's roles on
// that project. It returns the credential's id and secret.
func (l *Lab) CreateApplicationCredential(ctx context.Context, user, password, project, name string) (id, secret string, err error) {
	var tok struct {
		Token struct {
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		} `json:"token"`
	}
	token, err := l.login(ctx, passwordAuth(user, password, project), &tok)
	if err != nil {
		return "", "", err
	}
	var created struct {
		Credential struct {
			ID     string `json:"id"`
			Secret string `json:"secret"`
		} `json:"application_credential"`
	}
	err = l.keystoneAs(ctx, token, http.MethodPost, "/users/"+tok.Token.User.ID+"/application_credentials",
		map[string]any{"application_credential": map[string]any{"name": name}}, &created)
	return created.Credential.ID, created.Credential.Secret, err
}

// ApplicationCredentialToken logs in with an application credential.
func (l *Lab) ApplicationCredentialToken(ctx context.Context, id, secret string) (string, error) {
	return l.login(ctx, map[string]any{"auth": map[string]any{"identity": map[string]any{
		"methods":                []string{"application_credential"},
		"application_credential": map[string]string{"id": id, "secret": secret},
	}}}, nil)
}

// SetNovaPolicy replaces the overrides of Nova's policy (policy.yaml, YAML
// or JSON rules). Nova reads the file again at its next policy check.
func (l *Lab) SetNovaPolicy(rules string) error {
	path := filepath.Join(l.opts.Dir, "policy.yaml")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(rules), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// passwordAuth is the body of a password login to a project, both in the
// default domain.
func passwordAuth(user, password, project string) map[string]any {
	return map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{
			"user": map[string]any{"name": user, "domain": map[string]string{"id": "default"}, "password": password}}},
		"scope": map[string]any{"project": map[string]any{"name": project, "domain": map[string]string{"id": "default"}}},
	}}
}

// login posts an authentication request and returns the token; out, if
// not nil, receives the body.
func (l *Lab) login(ctx context.Context, body map[string]any, out any) (string, error) {
	return l.loginAt(ctx, l.AuthURL(), body, out)
}

// loginAt logs in at the Keystone of authURL.
func (l *Lab) loginAt(ctx context.Context, authURL string, body map[string]any, out any) (string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, authURL+"/auth/tokens", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.opts.HTTPClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("login: %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return "", err
		}
	}
	return resp.Header.Get("X-Subject-Token"), nil
}

// keystoneEnsure returns the id of the object of that name, creating it if
// need be.
func (l *Lab) keystoneEnsure(ctx context.Context, kind, singular string, body map[string]any) (string, error) {
	ids, err := l.keystoneIDs(ctx, kind, fmt.Sprint(body["name"]))
	if err != nil {
		return "", err
	}
	if len(ids) > 0 {
		return ids[0], nil
	}
	var created map[string]struct {
		ID string `json:"id"`
	}
	if err := l.keystone(ctx, http.MethodPost, "/"+kind, map[string]any{singular: body}, &created); err != nil {
		return "", err
	}
	return created[singular].ID, nil
}

// AdminEnvFor returns the lab admin's OS_* variables with another user's
// name and password.
func (l *Lab) AdminEnvFor(name, password string) map[string]string {
	env := l.AdminEnv()
	env["OS_USERNAME"], env["OS_PASSWORD"] = name, password
	return env
}

func (l *Lab) keystoneFind(ctx context.Context, kind, name string) (string, error) {
	ids, err := l.keystoneIDs(ctx, kind, name)
	if err != nil {
		return "", err
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("keystone: %d %s named %q", len(ids), kind, name)
	}
	return ids[0], nil
}

// keystoneIDs lists the ids of the objects of a kind with that name.
func (l *Lab) keystoneIDs(ctx context.Context, kind, name string) ([]string, error) {
	var page map[string]json.RawMessage // the list under kind, beside "links"
	if err := l.keystone(ctx, http.MethodGet, "/"+kind+"?name="+name, nil, &page); err != nil {
		return nil, err
	}
	var found []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(page[kind], &found); err != nil {
		return nil, fmt.Errorf("keystone %s: %w", kind, err)
	}
	ids := make([]string, len(found))
	for i, f := range found {
		ids[i] = f.ID
	}
	return ids, nil
}

// keystone makes one call to Keystone's v3 API as the lab's admin.
func (l *Lab) keystone(ctx context.Context, method, path string, body, out any) error {
	token, err := l.Token(ctx)
	if err != nil {
		return err
	}
	return l.keystoneAs(ctx, token, method, path, body, out)
}

// keystoneAs makes one call to Keystone's v3 API with a token.
func (l *Lab) keystoneAs(ctx context.Context, token, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, l.AuthURL()+path, r)
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("keystone %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// Get is a GET on Nova with a token and a microversion, for tests that look
// at the API themselves.
func (l *Lab) Get(ctx context.Context, token, microversion, path string) (int, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.ComputeURL()+path, nil)
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if microversion != "" {
		req.Header.Set("OpenStack-API-Version", "compute "+microversion)
	}
	resp, err := l.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Logs returns the end of every service's log, for failure messages.
func (l *Lab) Logs() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for name := range l.logs {
		fmt.Fprintf(&b, "== %s\n%s\n", name, l.tailLogLocked(name))
	}
	return b.String()
}

func (l *Lab) tailLog(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tailLogLocked(name)
}

func (l *Lab) tailLogLocked(name string) string {
	b, _ := os.ReadFile(l.logs[name])
	return tail(string(b), 4000)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Close stops every process of the lab (whole process groups).
func (l *Lab) Close() error {
	l.helper.mu.Lock()
	l.helper.stop()
	l.helper.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, c := range l.closers {
		errs = append(errs, c())
	}
	l.closers = nil
	for _, p := range l.procs {
		if p.Process != nil {
			if err := syscall.Kill(-p.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, err)
			}
		}
	}
	l.procs = nil
	for _, f := range l.forked {
		if err := f.kill(); err != nil {
			errs = append(errs, err)
		}
	}
	l.forked = nil
	for _, r := range l.reservations {
		r.Release()
	}
	l.reservations = nil
	return errors.Join(errs...)
}
