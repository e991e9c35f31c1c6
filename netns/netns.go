// Package netns works with named network namespaces: the files that
// `ip netns add` (and the Neutron agents, through pyroute2) bind-mount under
// a directory, /run/netns by default. It lists them, runs a function inside
// one, reads a namespace's interface addresses, and tells namespaces apart by
// identity (device and inode of the namespace file), so that a namespace
// deleted and recreated under the same name is noticed.
//
// Entering a namespace needs CAP_SYS_ADMIN; see CheckPrivileges.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultDir is where iproute2 and the Neutron agents keep named namespaces.
const DefaultDir = "/run/netns"

// ErrPermission is the refusal to enter a namespace (or to open a socket in
// it) for lack of privilege.
var ErrPermission = errors.New("no permission to enter the network namespace")

// ErrNotExist is the absence of a named namespace.
var ErrNotExist = errors.New("network namespace does not exist")

// ValidName checks that name is a plain file name: it can only ever denote a
// file directly inside the namespace directory.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("invalid network namespace name %q", name)
	}
	return nil
}

// Path returns the file of namespace name in dir.
func Path(dir, name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

// List returns the names of the namespaces in dir, sorted. A missing dir
// holds no namespace (no agent has created one yet): nil, no error.
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing network namespaces: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.IsDir() || ValidName(e.Name()) != nil {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// ID identifies a namespace: the device and inode of its nsfs file. Two
// namespaces alive at the same time never share an ID.
type ID struct {
	Dev, Ino uint64
}

// IsZero says whether the ID is unset.
func (id ID) IsZero() bool { return id == ID{} }

func (id ID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

func idOf(st *unix.Stat_t) ID { return ID{Dev: uint64(st.Dev), Ino: st.Ino} }

// Identity returns the ID of namespace name in dir; an error wrapping
// ErrNotExist when it is gone.
func Identity(dir, name string) (ID, error) {
	p, err := Path(dir, name)
	if err != nil {
		return ID{}, err
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return ID{}, wrap(name, "stat", err)
	}
	return idOf(&st), nil
}

// FileIdentity returns the ID of a namespace file already open (such as
// /proc/self/ns/net).
func FileIdentity(fd int) (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return ID{}, err
	}
	return idOf(&st), nil
}

// PathIdentity returns the ID of the namespace a path such as
// /proc/self/task/<tid>/ns/net refers to.
func PathIdentity(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, err
	}
	return idOf(&st), nil
}

// SocketIdentity returns the ID of the network namespace socket fd belongs
// to (ioctl SIOCGSKNS; Linux 4.9 and later): the namespace it was created
// in, whichever thread uses it now.
func SocketIdentity(fd int) (ID, error) {
	nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		return ID{}, fmt.Errorf("ioctl SIOCGSKNS: %w", err)
	}
	defer unix.Close(nsfd)
	return FileIdentity(nsfd)
}

// SocketIdentityOf is SocketIdentity for a socket held by a net.Conn or
// net.PacketConn (anything with SyscallConn).
func SocketIdentityOf(c syscall.Conn) (ID, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return ID{}, err
	}
	var id ID
	var idErr error
	if err := raw.Control(func(fd uintptr) { id, idErr = SocketIdentity(int(fd)) }); err != nil {
		return ID{}, err
	}
	return id, idErr
}

// Do runs fn on an OS thread locked to it that entered namespace name of dir
// (setns), and returns fn's error. Sockets fn opens stay in that namespace
// for their whole life, whichever thread uses them later. The thread goes
// back to its own namespace afterwards; if it cannot, it is never unlocked,
// so it dies with its goroutine instead of serving others in the wrong
// namespace. An error entering wraps ErrNotExist or ErrPermission when that
// is the cause.
func Do(dir, name string, fn func() error) error {
	p, err := Path(dir, name)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := enter(p, name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if berr := back(); berr != nil {
			// Stay locked: the goroutine's exit terminates the thread.
			errc <- errors.Join(ferr, fmt.Errorf("returning from network namespace %s: %w", name, berr))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// enter switches the calling (locked) thread into the namespace at path.
func enter(path, name string) (back func() error, err error) {
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening this thread's network namespace: %w", err)
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(orig)
		return nil, wrap(name, "opening", err)
	}
	err = unix.Setns(target, unix.CLONE_NEWNET)
	unix.Close(target)
	if err != nil {
		unix.Close(orig)
		return nil, wrap(name, "entering", err)
	}
	return func() error {
		defer unix.Close(orig)
		return unix.Setns(orig, unix.CLONE_NEWNET)
	}, nil
}

func wrap(name, op string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s network namespace %s: %w (%v)", op, name, ErrNotExist, err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s network namespace %s: %w: %v (needs CAP_SYS_ADMIN)", op, name, ErrPermission, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%s network namespace %s: not a network namespace: %w", op, name, err)
	}
	return fmt.Errorf("%s network namespace %s: %w", op, name, err)
}

// Addrs returns the addresses, with their prefix lengths, of every interface
// inside namespace name of dir.
func Addrs(dir, name string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := Do(dir, name, func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return fmt.Errorf("interface addresses in network namespace %s: %w", name, err)
		}
		out = prefixes(addrs)
		return nil
	})
	return out, err
}

func prefixes(addrs []net.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, bits := n.Mask.Size()
		ip = ip.Unmap()
		if ip.Is4() && bits == 128 {
			ones -= 96
		}
		if ones < 0 || ones > ip.BitLen() {
			continue
		}
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out
}
