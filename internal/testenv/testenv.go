// Package testenv holds what the tests of several packages need from the
// machine: the built exporter, Debian's tools, root. Tests that need more
// than Go (root, network namespaces, promtool, Alertmanager, the real
// OpenStack services) live in files with the build tag "lab", which the
// README's test command sets; plain `go test ./...` runs the rest anywhere.
// A lab test whose requirement is missing fails with the command that
// installs it: it never skips silently.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/freeport"
)

// BinaryEnv names a prebuilt exporter for the tests to run; scripts/test.sh
// builds it once, with -race, for every package. Without it, each test
// process builds its own, once, with -race when the tests run with it.
const BinaryEnv = "OVMX_TEST_BINARY"

var (
	buildOnce sync.Once
	buildDir  string
	binary    string
	buildErr  error
)

// Binary returns the path of the built exporter.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			binary = p
			if _, err := os.Stat(p); err != nil {
				buildErr = fmt.Errorf("%s=%s: %v", BinaryEnv, p, err)
			}
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		if buildDir, err = os.MkdirTemp("", "ovmx-bin-"); err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(buildDir, "openstack-vm-exporter")
		args := append([]string{"build", "-o", binary}, BuildFlags()...)
		cmd := exec.Command("go", append(args, ".")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the exporter: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// BuildFlags are the flags of the go command that this test binary was
// built with and that change what the compiler makes (-race): a go command
// a test runs with them finds every package compiled already, where
// without them it compiles the standard library and the modules again.
// (GOFLAGS, which scripts/test.sh sets, reaches it through the
// environment.)
func BuildFlags() []string {
	if raceEnabled {
		return []string{"-race"}
	}
	return nil
}

// Main runs a package's tests and removes the binary it built, if any.
func Main(m *testing.M) int {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	return code
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module")
	}
	return filepath.Dir(gomod), nil
}

// Tool returns the path of a command, or fails the test with the Debian
// package that installs it.
func Tool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: apt-get install -y --no-install-recommends %s (scripts/setup.sh does)", name, debianPackage)
	}
	return path
}

// RequireRoot fails the test unless it runs as root (raw sockets, network
// namespaces).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (raw ICMP sockets, network namespaces): run the suite as scripts/test.sh does, with sudo")
	}
}

// FreeAddr is a 127.0.0.1 address for a server the test starts: its port is
// free and no other test, nor any outgoing connection, gets it until the
// test ends (internal/freeport).
func FreeAddr(t testing.TB) string {
	t.Helper()
	r, err := freeport.Reserve(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Release)
	return r.Addr(0)
}
