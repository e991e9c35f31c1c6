package openstacklab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/tied"
)

// OVN's central part, which neutron-server's OVN mechanism driver writes
// to: the northbound and southbound databases (one ovsdb-server each, on
// unix sockets in the lab's directory) and ovn-northd between them.
// Hypervisors (internal/ovnlab) join through the southbound socket.

// OVNNorthbound is the northbound database's connection string.
func (l *Lab) OVNNorthbound() string { return "unix:" + l.ovnSock("nb") }

// OVNSouthbound is the southbound database's connection string: what a
// chassis's ovn-remote and the OVN metadata agent's ovn_sb_connection
// name.
func (l *Lab) OVNSouthbound() string { return "unix:" + l.ovnSock("sb") }

func (l *Lab) ovnDir() string { return filepath.Join(l.opts.Dir, "ovn") }

func (l *Lab) ovnSock(db string) string { return filepath.Join(l.ovnDir(), db+".sock") }

// ovnEnv points OVS's and OVN's run, database and log directories at the
// lab's, so that nothing touches /run/openvswitch or /var/lib/ovn.
func ovnEnv(dir string) []string {
	env := os.Environ()
	for _, k := range []string{"OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR", "OVN_RUNDIR", "OVN_DBDIR", "OVN_LOGDIR", "OVN_SYSCONFDIR"} {
		env = append(env, k+"="+dir)
	}
	return env
}

// RequireOVN fails the test when OVN's central part is not installed.
func RequireOVN(t interface {
	Helper()
	Fatalf(string, ...any)
}) {
	t.Helper()
	for _, bin := range []string{"ovsdb-tool", "ovsdb-server", "ovn-northd", "ovn-nbctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: apt-get install -y --no-install-recommends ovn-central openvswitch-switch (scripts/setup.sh does)", bin)
		}
	}
}

// startOVNCentral creates the two databases and starts their servers and
// ovn-northd; it returns when both sockets accept connections.
func (l *Lab) startOVNCentral(ctx context.Context) error {
	dir := l.ovnDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, db := range []string{"nb", "sb"} {
		file := filepath.Join(dir, db+".db")
		schema := fmt.Sprintf("/usr/share/ovn/ovn-%s.ovsschema", db)
		if out, err := exec.CommandContext(ctx, "ovsdb-tool", "create", file, schema).CombinedOutput(); err != nil {
			return fmt.Errorf("ovsdb-tool create %s: %v: %s", db, err, out)
		}
		if err := l.daemon("ovn-"+db+"-db", dir, "ovsdb-server", file,
			"--remote=punix:"+l.ovnSock(db),
			"--unixctl="+filepath.Join(dir, db+".ctl"),
			"--log-file="+filepath.Join(dir, db+".log"),
			"-vconsole:off"); err != nil {
			return err
		}
	}
	for _, db := range []string{"nb", "sb"} {
		if err := waitSocket(ctx, l.ovnSock(db)); err != nil {
			return fmt.Errorf("ovn %s database: %w\n%s", db, err, l.tailLog("ovn-"+db+"-db"))
		}
	}
	// northd also needs the northbound database initialised (NB_Global).
	if out, err := l.ovnCtl(ctx, "ovn-nbctl", "--no-wait", "init"); err != nil {
		return fmt.Errorf("ovn-nbctl init: %v: %s", err, out)
	}
	return l.daemon("ovn-northd", dir, "ovn-northd",
		"--ovnnb-db="+l.OVNNorthbound(), "--ovnsb-db="+l.OVNSouthbound(),
		"--log-file="+filepath.Join(dir, "northd.log"), "-vconsole:off")
}

// ovnCtl runs ovn-nbctl or ovn-sbctl on the lab's databases.
func (l *Lab) ovnCtl(ctx context.Context, tool string, args ...string) ([]byte, error) {
	db := l.OVNNorthbound()
	if tool == "ovn-sbctl" {
		db = l.OVNSouthbound()
	}
	cmd := exec.CommandContext(ctx, tool, append([]string{"--db=" + db, "--timeout=60"}, args...)...)
	cmd.Env = ovnEnv(l.ovnDir())
	return cmd.CombinedOutput()
}

// OVNCtl runs ovn-nbctl or ovn-sbctl on the lab's databases and returns
// its output, for tests that look at what Neutron wrote there.
func (l *Lab) OVNCtl(ctx context.Context, tool string, args ...string) (string, error) {
	out, err := l.ovnCtl(ctx, tool, args...)
	if err != nil {
		return string(out), fmt.Errorf("%s %v: %w: %s", tool, args, err, out)
	}
	return string(out), nil
}

// daemon starts a long-running OVS/OVN process in the foreground (it dies
// with the test process) with its output in the lab's directory.
func (l *Lab) daemon(name, rundir, bin string, args ...string) error {
	logPath := filepath.Join(l.opts.Dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = ovnEnv(rundir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	_, err = tied.Start(cmd)
	logFile.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.logs[name] = logPath
	l.mu.Unlock()
	return nil
}

// waitSocket waits until a unix socket accepts connections.
func waitSocket(ctx context.Context, path string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
		syscall.Close(fd)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
