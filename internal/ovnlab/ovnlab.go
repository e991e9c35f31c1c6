// Package ovnlab runs a real OVN hypervisor for tests: Open vSwitch with
// its userspace datapath (this kernel has no openvswitch module),
// ovn-controller as a chassis of internal/openstacklab's OVN databases,
// and the real neutron-ovn-metadata-agent, which creates the
// ovnmeta-<network id> namespaces itself. VMs are network namespaces
// plugged into br-int as os-vif plugs them, bound to ports created through
// the real Neutron.
//
// Everything runs inside a network namespace of the lab's own (one
// userspace OVS per namespace), which has no default route. The metadata
// agent deletes every ovnmeta-* namespace it sees that OVN does not back,
// so each hypervisor's agent runs in a mount namespace of its own whose
// /run/netns is the hypervisor's NetnsDir: its ovnmeta-* namespaces are
// visible there (to the tests and to an exporter given that directory as
// probe.icmp.netns_dir), and no agent sees another hypervisor's. Several
// hypervisors, in one process or many, run side by side.
//
// Use:
//
//	hv, _ := ovnlab.New(ovnlab.Options{Dir: dir, Host: "hv-1"})
//	cloud, _ := openstacklab.Start(ctx, openstacklab.Options{Dir: dir2, NetNS: hv.NetNS(), HTTPClient: hv.HTTPClient()})
//	_ = hv.Start(ctx, cloud)
//	vm, _ := hv.Plug(ctx, port)
package ovnlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/netlab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/openstacklab"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/tied"
)

// stateDir holds a file per running hypervisor naming what it runs, so
// that a later one can clean up after a test process that died without
// closing its hypervisors.
const stateDir = "/run/ovnlab"

// serial numbers the hypervisors of this process (their namespaces' names).
var serial atomic.Int64

// Options configures a hypervisor.
type Options struct {
	// Dir holds the lab's databases, configuration, sockets and logs.
	Dir string
	// Host is the chassis's hostname: the binding:host_id of its ports.
	Host string
}

// Hypervisor is one OVN chassis in its own namespace.
type Hypervisor struct {
	opts  Options
	id    string // <pid>-<serial>: unique on the machine while it runs
	ns    string
	cloud *openstacklab.Lab

	mu       sync.Mutex
	procs    []*exec.Cmd
	agent    *exec.Cmd // the metadata agent, while it runs
	logs     map[string]string
	vms      []*VM
	mtus     map[string]int
	prefixes map[string]netip.Prefix
	closed   bool
	// Started is how long Start took.
	Started time.Duration
}

// Require fails the test when what the lab runs is not installed or it
// does not run as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the OVN lab needs root (network namespaces, Open vSwitch); run the lab tests as root, as CI does")
	}
	for bin, pkg := range map[string]string{
		"ovsdb-server": "openvswitch-switch", "ovs-vswitchd": "openvswitch-switch", "ovs-vsctl": "openvswitch-switch",
		"ovn-controller": "ovn-host", "neutron-ovn-metadata-agent": "neutron-ovn-metadata-agent",
		"haproxy": "haproxy", "iptables-save": "iptables", "sudo": "sudo", "ip": "iproute2", "nft": "nftables",
		"ethtool": "ethtool",
	} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: apt-get install -y --no-install-recommends %s (scripts/setup.sh does)", bin, pkg)
		}
	}
	openstacklab.Require(t)
}

// New creates the hypervisor's namespace, in which the cloud's services
// can then run (openstacklab.Options.NetNS), and its NetnsDir.
func New(opts Options) (*Hypervisor, error) {
	if opts.Host == "" || opts.Dir == "" {
		return nil, errors.New("ovnlab: Options.Dir and Options.Host are required")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	cleanStale()
	h := &Hypervisor{opts: opts, logs: map[string]string{}, mtus: map[string]int{}, prefixes: map[string]netip.Prefix{}}
	h.id = fmt.Sprintf("%d-%d", os.Getpid(), serial.Add(1))
	h.ns = "ovnlab-" + h.id + "-hv"
	if err := h.writeState(); err != nil {
		return nil, err
	}
	// ip makes /run/netns a mount point (shared) with the first namespace
	// it adds: the agent's mount namespace relies on it (startAgent).
	if err := run("ip", "netns", "add", h.ns); err != nil {
		h.Close()
		return nil, err
	}
	if err := run("ip", "-n", h.ns, "link", "set", "lo", "up"); err != nil {
		h.Close()
		return nil, err
	}
	// A shared mount of its own: what the agent mounts in its /run/netns
	// (a peer of it) shows here too.
	dir := h.NetnsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.Close()
		return nil, err
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		h.Close()
		return nil, fmt.Errorf("bind-mounting %s: %w", dir, err)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED, ""); err != nil {
		h.Close()
		return nil, fmt.Errorf("making %s shared: %w", dir, err)
	}
	return h, nil
}

// NetnsDir holds the named network namespaces the metadata agent creates
// (ovnmeta-<network id>): the agent's /run/netns, and the netns_dir of an
// exporter probing from this hypervisor.
func (h *Hypervisor) NetnsDir() string { return h.path("netns") }

type state struct {
	Dir        string   `json:"dir"`
	Namespaces []string `json:"namespaces"`
	NetnsDir   string   `json:"netns_dir"`
}

func (h *Hypervisor) stateFile() string { return filepath.Join(stateDir, h.id+".json") }

// writeState records what this hypervisor runs.
func (h *Hypervisor) writeState() error {
	h.mu.Lock()
	s := state{Dir: h.opts.Dir, Namespaces: []string{h.ns}, NetnsDir: h.NetnsDir()}
	for _, vm := range h.vms {
		s.Namespaces = append(s.Namespaces, vm.Namespace)
	}
	h.mu.Unlock()
	b, _ := json.Marshal(s)
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(h.stateFile(), b, 0o644)
}

// cleanStale ends what the hypervisors of test processes that died
// without Close left behind (their agents' haproxy and privsep daemons,
// which outlive the agent; their namespaces and mounts).
func cleanStale() {
	files, _ := filepath.Glob(filepath.Join(stateDir, "*.json"))
	for _, f := range files {
		pid, err := strconv.Atoi(strings.SplitN(filepath.Base(f), "-", 2)[0])
		if err != nil || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // its process runs
		}
		b, _ := os.ReadFile(f)
		var s state
		if json.Unmarshal(b, &s) == nil && s.Dir != "" {
			killUnder(s.Dir)
			for _, ns := range s.Namespaces {
				_ = run("ip", "netns", "delete", ns)
			}
			if s.NetnsDir != "" {
				_ = unmountDir(s.NetnsDir)
			}
		}
		os.Remove(f)
	}
}

// deleteNamespace deletes a named namespace of dir, as `ip netns delete`
// does in /run/netns.
func deleteNamespace(dir, name string) error {
	path := filepath.Join(dir, name)
	if err := syscall.Unmount(path, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// unmountDir deletes every namespace of a NetnsDir and unmounts it.
func unmountDir(dir string) error {
	entries, _ := os.ReadDir(dir)
	var errs []error
	for _, e := range entries {
		errs = append(errs, deleteNamespace(dir, e.Name()))
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		errs = append(errs, fmt.Errorf("unmounting %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

// killUnder kills every process whose command line names a path under dir:
// the processes of one lab (its dir is its own), found by their ids.
func killUnder(dir string) []int { return killMatching(dir + "/") }

// killMatching kills every process whose command line contains s.
func killMatching(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var killed []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte(s)) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
	}
	return killed
}

// NetNS is the hypervisor's network namespace.
func (h *Hypervisor) NetNS() string { return h.ns }

// ExecPrefix runs a command in the hypervisor's namespace: append it.
func (h *Hypervisor) ExecPrefix() []string { return []string{"ip", "netns", "exec", h.ns} }

// Do runs fn on a thread inside the hypervisor's namespace.
func (h *Hypervisor) Do(fn func() error) error { return netlab.Do(h.ns, fn) }

// HTTPClient's connections are opened inside the hypervisor's namespace:
// it reaches services on that namespace's loopback.
func (h *Hypervisor) HTTPClient() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: netlab.ServiceTimeout}
}

func (h *Hypervisor) path(name string) string { return filepath.Join(h.opts.Dir, name) }

// ovsDB is the hypervisor's Open vSwitch database.
func (h *Hypervisor) ovsDB() string { return "unix:" + h.path("db.sock") }

func (h *Hypervisor) env() []string {
	env := os.Environ()
	for _, k := range []string{"OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR", "OVN_RUNDIR", "OVN_DBDIR", "OVN_LOGDIR", "OVN_SYSCONFDIR"} {
		env = append(env, k+"="+h.opts.Dir)
	}
	return env
}

// Start runs Open vSwitch, ovn-controller as a chassis of the cloud's OVN
// and the metadata agent, and returns when Neutron lists the chassis's
// OVN controller agent alive (ports bound to Host then bind).
func (h *Hypervisor) Start(ctx context.Context, cloud *openstacklab.Lab) error {
	h.cloud = cloud
	begin := time.Now()
	conf := h.path("conf.db")
	if out, err := exec.CommandContext(ctx, "ovsdb-tool", "create", conf, "/usr/share/openvswitch/vswitch.ovsschema").CombinedOutput(); err != nil {
		return fmt.Errorf("ovsdb-tool create: %v: %s", err, out)
	}
	if err := h.daemon("ovsdb-server", "ovsdb-server", conf, "--remote=punix:"+h.path("db.sock"),
		"--unixctl="+h.path("ovsdb-server.ctl"), "--log-file="+h.path("ovsdb-server.log"), "-vconsole:off"); err != nil {
		return err
	}
	if err := waitSocket(ctx, h.path("db.sock")); err != nil {
		return fmt.Errorf("%w\n%s", err, h.Logs())
	}
	if _, err := h.vsctl(ctx, "--no-wait", "init"); err != nil {
		return err
	}
	// --monitor, as ovs-ctl starts it in deployments: Debian 12's OVS 3.1.0
	// userspace datapath once aborted on "conntrack.c:1063: assertion
	// conn->conn_type == CT_CONN_TYPE_DEFAULT failed in conn_update_state()"
	// mid-test, and every VM went silent for good; the monitor restarts it
	// and ovn-controller puts its flows back.
	if err := h.daemon("ovs-vswitchd", "ovs-vswitchd", h.ovsDB(), "--disable-system", "--monitor",
		"--unixctl="+h.path("ovs-vswitchd.ctl"), "--log-file="+h.path("ovs-vswitchd.log"), "-vconsole:off"); err != nil {
		return err
	}
	if _, err := h.vsctl(ctx, "--may-exist", "add-br", "br-int", "--",
		"set", "Bridge", "br-int", "datapath_type=netdev", "fail_mode=secure", "other_config:disable-in-band=true"); err != nil {
		return err
	}
	systemID := "chassis-" + h.opts.Host
	if _, err := h.vsctl(ctx, "set", "Open_vSwitch", ".",
		"external_ids:ovn-remote="+cloud.OVNSouthbound(), "external_ids:ovn-encap-type=geneve",
		"external_ids:ovn-encap-ip=127.0.0.1", "external_ids:ovn-bridge-datapath-type=netdev",
		"external_ids:system-id="+systemID, "external_ids:hostname="+h.opts.Host); err != nil {
		return err
	}
	if err := h.daemon("ovn-controller", "ovn-controller", h.ovsDB(),
		"--log-file="+h.path("ovn-controller.log"), "-vconsole:off"); err != nil {
		return err
	}
	if err := cloud.WaitOVNController(ctx, h.opts.Host, 2*time.Minute); err != nil {
		return fmt.Errorf("%w\n%s", err, h.Logs())
	}
	if err := h.startAgent(ctx); err != nil {
		return err
	}
	h.Started = time.Since(begin)
	return nil
}

// startAgent runs the real neutron-ovn-metadata-agent in the hypervisor's
// namespace (root, no rootwrap: root_helper empty; privsep through sudo).
func (h *Hypervisor) startAgent(ctx context.Context) error {
	state := h.path("metadata")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	ini := fmt.Sprintf(`[DEFAULT]
debug = false
use_stderr = true
state_path = %[1]s
metadata_proxy_socket = %[1]s/metadata_proxy
metadata_proxy_shared_secret = lab-metadata-secret
metadata_workers = 1
nova_metadata_host = 127.0.0.1
[agent]
root_helper =
[ovs]
ovsdb_connection = %[2]s
[ovn]
ovn_sb_connection = %[3]s
[oslo_concurrency]
lock_path = %[1]s/locks
`, state, h.ovsDB(), h.cloud.OVNSouthbound())
	path := h.path("metadata-agent.ini")
	if err := os.WriteFile(path, []byte(ini), 0o644); err != nil {
		return err
	}
	// In the hypervisor's network namespace and in a mount namespace of its
	// own, whose /run/netns is NetnsDir. Its /run/netns mount is made
	// private first, so that mounting NetnsDir on it does not propagate to
	// the machine's /run/netns; NetnsDir's mount is shared, so the
	// namespaces the agent (and its privsep daemon, and haproxy through
	// `ip netns exec`) mounts there show in NetnsDir for everyone else.
	// --rbind: with the namespaces already there (a restarted agent's).
	const script = `set -e
mountpoint -q /run/netns
mount --make-private /run/netns
mount --rbind "$1" /run/netns
shift
exec "$@"`
	cmd, err := h.daemonArgv("metadata-agent", []string{"nsenter", "--net=/run/netns/" + h.ns,
		"unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script, "sh", h.NetnsDir(),
		openstacklab.Python, "/usr/bin/neutron-ovn-metadata-agent", "--config-file", path})
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.agent = cmd
	h.mu.Unlock()
	return nil
}

// StopAgent kills the metadata agent and its privsep daemons, as a crash
// or an operator's stop leaves a node: the ovnmeta-* namespaces and their
// haproxy stay, and nothing recreates one that goes.
func (h *Hypervisor) StopAgent() error {
	h.mu.Lock()
	agent := h.agent
	h.agent = nil
	h.mu.Unlock()
	if agent == nil || agent.Process == nil {
		return errors.New("the metadata agent does not run")
	}
	if err := syscall.Kill(-agent.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	killMatching(h.path("metadata-agent.ini"))
	return nil
}

// StartAgent starts the metadata agent again (after StopAgent): at start
// it recreates the namespaces of the networks with local ports and
// deletes those OVN does not back.
func (h *Hypervisor) StartAgent(ctx context.Context) error {
	return h.startAgent(ctx)
}

// daemon runs a long-lived process inside the hypervisor's namespace, in
// the foreground and in its own process group, tied to the test process.
func (h *Hypervisor) daemon(name, bin string, args ...string) error {
	_, err := h.daemonArgv(name, append(append(h.ExecPrefix(), bin), args...))
	return err
}

func (h *Hypervisor) daemonArgv(name string, argv []string) (*exec.Cmd, error) {
	logPath := h.path(name + ".out")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = h.env()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	_, err = tied.Start(cmd)
	logFile.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	h.mu.Lock()
	h.procs = append(h.procs, cmd)
	h.logs[name] = logPath
	h.mu.Unlock()
	return cmd, nil
}

// vsctl runs ovs-vsctl on the hypervisor's database.
func (h *Hypervisor) vsctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ovs-vsctl", append([]string{"--db=" + h.ovsDB(), "--timeout=60"}, args...)...)
	cmd.Env = h.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ovs-vsctl %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// VM is a namespace plugged into br-int as a Neutron port's instance.
type VM struct {
	// Namespace holds the VM's eth0.
	Namespace string
	// Tap is the hypervisor's end, tap<port id[:11]>.
	Tap  string
	Port openstacklab.Port
	// Addr is the port's first fixed address.
	Addr netip.Addr

	h         *Hypervisor
	responder *netlab.Responder
}

// Plug creates a VM for a port bound to this host: a namespace whose eth0
// has the port's MAC and MTU and its fixed addresses (static, on the
// subnet's prefix), joined by a veth to br-int as os-vif plugs an OVS
// port (external_ids iface-id, attached-mac, iface-status, vm-uuid). OVN
// then claims the port, Neutron marks it ACTIVE, and the metadata agent
// creates the network's ovnmeta-<network id> namespace.
func (h *Hypervisor) Plug(ctx context.Context, port openstacklab.Port) (*VM, error) {
	if len(port.FixedIPs) == 0 {
		return nil, fmt.Errorf("port %s has no fixed address", port.ID)
	}
	mtu, err := h.networkMTU(ctx, port.NetworkID)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	vm := &VM{Namespace: fmt.Sprintf("ovnlab-%s-vm%d", h.id, len(h.vms)), Tap: "tap" + port.ID[:11], Port: port, h: h}
	h.vms = append(h.vms, vm)
	h.mu.Unlock()
	if err := h.writeState(); err != nil {
		return nil, err
	}
	var addrCmds []string
	for i, ip := range port.FixedIPs {
		a, err := netip.ParseAddr(ip.IPAddress)
		if err != nil || !a.Is4() || !netip.MustParsePrefix("198.18.0.0/15").Contains(a) {
			return nil, fmt.Errorf("port %s: address %q is not inside 198.18.0.0/15", port.ID, ip.IPAddress)
		}
		p, err := h.subnetPrefix(ctx, ip.SubnetID)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			vm.Addr = a
		}
		addrCmds = append(addrCmds, fmt.Sprintf("addr add %s/%d dev eth0", a, p.Bits()))
	}
	if err := run("ip", "netns", "add", vm.Namespace); err != nil {
		return nil, err
	}
	// Both ends are created inside namespaces of the lab: nothing is
	// configured in the machine's own namespace.
	if err := run("ip", "-n", h.ns, "link", "add", vm.Tap, "mtu", fmt.Sprint(mtu), "type", "veth",
		"peer", "name", "eth0", "mtu", fmt.Sprint(mtu), "netns", vm.Namespace); err != nil {
		return nil, err
	}
	if err := batch(vm.Namespace, append([]string{
		"link set lo up",
		fmt.Sprintf("link set eth0 address %s", port.MAC),
	}, append(addrCmds, "link set eth0 up")...)...); err != nil {
		return nil, err
	}
	// TCP from a VM is dropped until the veth's TX checksum offload is off.
	if err := run("ip", "netns", "exec", vm.Namespace, "ethtool", "-K", "eth0", "tx", "off"); err != nil {
		return nil, err
	}
	if err := run("ip", "-n", h.ns, "link", "set", vm.Tap, "up"); err != nil {
		return nil, err
	}
	if _, err := h.vsctl(ctx, "--may-exist", "add-port", "br-int", vm.Tap, "--",
		"set", "Interface", vm.Tap,
		"external_ids:iface-id="+port.ID, "external_ids:attached-mac="+port.MAC,
		"external_ids:iface-status=active", "external_ids:vm-uuid="+port.DeviceID); err != nil {
		return nil, err
	}
	return vm, nil
}

// networkMTU is a network's MTU, asked of Neutron once per network.
func (h *Hypervisor) networkMTU(ctx context.Context, id string) (int, error) {
	h.mu.Lock()
	mtu, ok := h.mtus[id]
	h.mu.Unlock()
	if ok {
		return mtu, nil
	}
	var net struct {
		Network openstacklab.Network `json:"network"`
	}
	if err := h.cloud.Neutron(ctx, http.MethodGet, "/v2.0/networks/"+id, nil, &net); err != nil {
		return 0, err
	}
	mtu = net.Network.MTU
	if mtu == 0 {
		mtu = 1442 // Geneve's on a 1500-byte underlay
	}
	h.mu.Lock()
	h.mtus[id] = mtu
	h.mu.Unlock()
	return mtu, nil
}

// subnetPrefix is a subnet's prefix, asked of Neutron once per subnet.
func (h *Hypervisor) subnetPrefix(ctx context.Context, id string) (netip.Prefix, error) {
	h.mu.Lock()
	p, ok := h.prefixes[id]
	h.mu.Unlock()
	if ok {
		return p, nil
	}
	var sub struct {
		Subnet openstacklab.Subnet `json:"subnet"`
	}
	if err := h.cloud.Neutron(ctx, http.MethodGet, "/v2.0/subnets/"+id, nil, &sub); err != nil {
		return netip.Prefix{}, err
	}
	p, err := netip.ParsePrefix(sub.Subnet.CIDR)
	if err != nil {
		return netip.Prefix{}, err
	}
	h.mu.Lock()
	h.prefixes[id] = p
	h.mu.Unlock()
	return p, nil
}

// WaitPortStatus waits until Neutron shows the port with status (ACTIVE
// once OVN has claimed a plugged port).
//
// Neutron here sometimes misses OVN's report that a port is up (its
// handler's write to sqlite, under load): a plugged port still DOWN 10 s
// later is replugged (iface-id cleared and set again, as a
// guest reboot would), so OVN reports it down and up again.
func (h *Hypervisor) WaitPortStatus(ctx context.Context, portID, status string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	nudge := time.Now().Add(10 * time.Second)
	for {
		p, err := h.cloud.GetPort(ctx, portID)
		if err == nil && p.Status == status {
			return nil
		}
		if status == "ACTIVE" && time.Now().After(nudge) {
			nudge = time.Now().Add(10 * time.Second)
			if tap := h.tapOf(portID); tap != "" {
				_, _ = h.vsctl(ctx, "set", "Interface", tap, "external_ids:iface-id=replug-"+portID)
				time.Sleep(time.Second)
				_, _ = h.vsctl(ctx, "set", "Interface", tap, "external_ids:iface-id="+portID)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %s: status %q (%v), want %s after %v\n%s", portID, p.Status, err, status, timeout, h.Logs())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// tapOf is the tap of a plugged port ("" if none).
func (h *Hypervisor) tapOf(portID string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, vm := range h.vms {
		if vm.Port.ID == portID {
			return vm.Tap
		}
	}
	return ""
}

// MetadataNamespace is the namespace the agent keeps for a network, in
// NetnsDir.
func MetadataNamespace(networkID string) string { return "ovnmeta-" + networkID }

// WaitMetadataNamespace waits until the agent's namespace of a network
// exists and has an IPv4 address on a subnet (besides 169.254.169.254),
// and returns that address.
func (h *Hypervisor) WaitMetadataNamespace(ctx context.Context, networkID string, timeout time.Duration) (netip.Prefix, error) {
	ns := MetadataNamespace(networkID)
	deadline := time.Now().Add(timeout)
	for {
		out, err := h.InMetadataNamespace(ctx, networkID, "ip", "-j", "-4", "addr", "show").Output()
		if err == nil {
			var links []struct {
				Addrs []struct {
					Local  string `json:"local"`
					Prefix int    `json:"prefixlen"`
				} `json:"addr_info"`
			}
			if json.Unmarshal(out, &links) == nil {
				for _, l := range links {
					for _, a := range l.Addrs {
						addr, err := netip.ParseAddr(a.Local)
						if err == nil && !addr.IsLoopback() && !addr.IsLinkLocalUnicast() && addr != netip.MustParseAddr("169.254.169.254") {
							return netip.PrefixFrom(addr, a.Prefix), nil
						}
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return netip.Prefix{}, fmt.Errorf("no namespace %s with an address after %v\n%s", ns, timeout, h.Logs())
		}
		select {
		case <-ctx.Done():
			return netip.Prefix{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// InMetadataNamespace is a command that runs in the agent's namespace of a
// network (network namespace only: `ip netns exec` knows /run/netns alone).
func (h *Hypervisor) InMetadataNamespace(ctx context.Context, networkID string, argv ...string) *exec.Cmd {
	args := append([]string{"--net=" + filepath.Join(h.NetnsDir(), MetadataNamespace(networkID))}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// MetadataNamespaceExists tells whether the agent keeps a namespace for a
// network.
func (h *Hypervisor) MetadataNamespaceExists(networkID string) bool {
	_, err := os.Stat(filepath.Join(h.NetnsDir(), MetadataNamespace(networkID)))
	return err == nil
}

// DeleteMetadataNamespace deletes the agent's namespace of a network, as
// an operator's `ip netns delete` or a failed agent leaves a node. The
// namespace's veth pair goes with it; its br-int port is removed too:
// the userspace datapath would keep reading the deleted device (the
// kernel datapath just loses the port), and the agent, when it recreates
// the namespace, adds the port only if it is missing.
func (h *Hypervisor) DeleteMetadataNamespace(ctx context.Context, networkID string) error {
	if err := deleteNamespace(h.NetnsDir(), MetadataNamespace(networkID)); err != nil {
		return err
	}
	// The agent's veth: tap<network id[:10]>0 on br-int, 1 inside.
	_, err := h.vsctl(ctx, "--if-exists", "del-port", "br-int", "tap"+networkID[:10]+"0")
	return err
}

// Silent drops every echo request the VM receives (nftables), as a VM
// whose firewall does.
func (vm *VM) Silent() error {
	return nft(vm.Namespace, "icmp type echo-request drop")
}

// Lossy drops about half the echo requests the VM receives.
func (vm *VM) Lossy() error {
	return nft(vm.Namespace, "icmp type echo-request numgen random mod 100 < 50 drop")
}

// Slow answers echo requests after delay, from a userspace responder
// (the namespace's kernel no longer answers): this kernel has no netem.
func (vm *VM) Slow(delay time.Duration) error {
	if err := run("ip", "netns", "exec", vm.Namespace, "sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1"); err != nil {
		return err
	}
	r, err := netlab.StartResponder(vm.Namespace, delay)
	if err != nil {
		return err
	}
	vm.h.mu.Lock()
	vm.responder = r
	vm.h.mu.Unlock()
	return nil
}

// nft installs one rule in an input chain of the VM's namespace.
func nft(ns, rule string) error {
	script := fmt.Sprintf("table inet ovnlab {\n chain input {\n  type filter hook input priority 0; policy accept;\n  %s\n }\n}\n", rule)
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// Unplug removes a VM's port from br-int and deletes its namespace, as
// os-vif unplugs a deleted server's port.
func (vm *VM) Unplug(ctx context.Context) error {
	if vm.responder != nil {
		vm.responder.Stop()
		vm.responder = nil
	}
	_, err := vm.h.vsctl(ctx, "--if-exists", "del-port", "br-int", vm.Tap)
	if derr := run("ip", "netns", "delete", vm.Namespace); derr != nil && !strings.Contains(derr.Error(), "No such file") {
		err = errors.Join(err, derr)
	}
	return err
}

// Logs returns the end of the hypervisor's logs, for failure messages.
func (h *Hypervisor) Logs() string {
	var b strings.Builder
	for _, name := range []string{"ovs-vswitchd.log", "ovn-controller.log", "metadata-agent.out"} {
		data, _ := os.ReadFile(h.path(name))
		s := string(data)
		if len(s) > 3000 {
			s = "..." + s[len(s)-3000:]
		}
		fmt.Fprintf(&b, "== %s\n%s\n", name, s)
	}
	return b.String()
}

// Close ends every process of the hypervisor (the agent's haproxy and
// privsep daemons too), removes its namespaces, the agent's and its tap
// devices, and unmounts its NetnsDir. Safe to call twice.
func (h *Hypervisor) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	procs, vms, agent := h.procs, h.vms, h.agent
	h.procs, h.agent = nil, nil
	h.mu.Unlock()
	var errs []error
	for _, vm := range vms {
		if vm.responder != nil {
			vm.responder.Stop()
		}
	}
	// The agent first (it would recreate what goes), then everything
	// started with this lab's files (haproxy, privsep helpers: they
	// outlive the agent), then OVN and OVS.
	if agent != nil && agent.Process != nil {
		_ = syscall.Kill(-agent.Process.Pid, syscall.SIGKILL)
	}
	killUnder(h.opts.Dir)
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if p.Process != nil {
			if err := syscall.Kill(-p.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, err)
			}
		}
	}
	killUnder(h.opts.Dir)
	for _, vm := range vms {
		if err := run("ip", "netns", "delete", vm.Namespace); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	if err := unmountDir(h.NetnsDir()); err != nil {
		errs = append(errs, err)
	}
	if h.ns != "" {
		// The userspace datapath's tap devices stay behind its exit.
		for _, dev := range []string{"ovs-netdev", "br-int"} {
			_ = run("ip", "-n", h.ns, "link", "delete", dev)
		}
		if err := run("ip", "netns", "delete", h.ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	if h.id != "" {
		os.Remove(h.stateFile())
	}
	return errors.Join(errs...)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// batch runs ip commands in a namespace with one process.
func batch(ns string, cmds ...string) error {
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s -batch %q: %v: %s", ns, cmds, err, bytes.TrimSpace(out))
	}
	return nil
}

// waitSocket waits until a unix socket accepts connections.
func waitSocket(ctx context.Context, path string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Memory sums the proportional set size (PSS) of every process whose
// command line names a path under one of dirs: what a lab costs, for a
// test's log.
func Memory(dirs ...string) (bytes int64, processes int) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		match := false
		for _, d := range dirs {
			match = match || strings.Contains(string(cmdline), d+"/")
		}
		if !match {
			continue
		}
		rollup, err := os.ReadFile(filepath.Join("/proc", e.Name(), "smaps_rollup"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(rollup), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				bytes += kb << 10
				processes++
			}
		}
	}
	return bytes, processes
}
