package openstacklab

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/syncbuf"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/tied"
)

// A forkserver is a lab.py process of this test process that has imported
// what one kind of service (keystone, nova, neutron, or helper: Nova's
// object layer) imports, and starts each such service of every lab as a
// fork of itself. Importing Keystone,
// Nova or Neutron costs about 4 CPU-seconds; a test process starts up to six
// labs (and a Keystone more for each short-lived-token test). What the
// services do once they run is theirs: the same code, configuration and
// databases as when each is a process of its own.
type forkserver struct {
	pid     int
	mu      sync.Mutex // one request at a time: replies come in order
	in      io.WriteCloser
	replies chan int
	dead    chan struct{} // closed when it ended, after err is set
	err     error         // why it ended; every later request fails with it

	exitMu sync.Mutex
	waits  map[int]*forked
	exits  map[int]error // exits of services start has not registered yet
}

var forkservers = struct {
	sync.Mutex
	m map[string]*forkserver
}{m: map[string]*forkserver{}}

// forkserverFor returns the process's forkserver of kind, started on first
// use from script (a lab's lab.py: Python has read it once started).
func forkserverFor(kind, script string) (*forkserver, error) {
	forkservers.Lock()
	defer forkservers.Unlock()
	if fs := forkservers.m[kind]; fs != nil {
		select {
		case <-fs.dead: // start another
		default:
			return fs, nil
		}
	}
	fs, err := startForkserver(kind, script)
	if err != nil {
		return nil, err
	}
	forkservers.m[kind] = fs
	return fs, nil
}

func startForkserver(kind, script string) (*forkserver, error) {
	// Pipes of our own (tied.Start waits at once, and Wait closes cmd's).
	childIn, in, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer childIn.Close()
	out, childOut, err := os.Pipe()
	if err != nil {
		in.Close()
		return nil, err
	}
	defer childOut.Close()
	stderr := &syncbuf.Buffer{}
	cmd := exec.Command(Python, script, "forkserver", kind)
	cmd.Env = append(os.Environ(), "PYTHONWARNINGS=ignore")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = childIn, childOut, stderr
	exited, err := tied.Start(cmd)
	if err != nil {
		in.Close()
		out.Close()
		return nil, err
	}
	fs := &forkserver{pid: cmd.Process.Pid, in: in, replies: make(chan int), dead: make(chan struct{}), waits: map[int]*forked{}, exits: map[int]error{}}
	go fs.read(out, exited, stderr)
	return fs, nil
}

// read hands each "pid N" to the request waiting for it and each
// "exit N STATUS" to whoever waits for N, until the forkserver ends.
func (fs *forkserver) read(out io.ReadCloser, exited <-chan error, stderr *syncbuf.Buffer) {
	defer out.Close()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		pid, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		switch {
		case f[0] == "pid":
			fs.replies <- pid
		case f[0] == "exit" && len(f) == 3:
			// Python's waitstatus_to_exitcode: -N for signal N.
			err := fmt.Errorf("exit status %s", f[2])
			if n, _ := strconv.Atoi(f[2]); n < 0 {
				err = fmt.Errorf("killed by signal %d", -n)
			}
			fs.exitMu.Lock()
			if f := fs.waits[pid]; f != nil {
				f.end(err)
				delete(fs.waits, pid)
			} else {
				fs.exits[pid] = err
			}
			fs.exitMu.Unlock()
		}
	}
	err := <-exited
	fs.err = fmt.Errorf("the forkserver ended (%v)\n%s", err, tail(stderr.String(), 3000))
	close(fs.dead)
	fs.in.Close()
	// Its services died with it (their parent-death signal).
	fs.exitMu.Lock()
	for pid, f := range fs.waits {
		f.end(fs.err)
		delete(fs.waits, pid)
	}
	fs.exitMu.Unlock()
}

type forkRequest struct {
	Args   []string `json:"args"`
	Log    string   `json:"log"`
	NetNS  string   `json:"netns,omitempty"`
	Stdin  string   `json:"stdin,omitempty"`  // a FIFO; default /dev/null
	Stdout string   `json:"stdout,omitempty"` // a FIFO; default the log
}

// forked is a service a forkserver started, the leader of its own process
// group. done is closed when it ended, err then says how.
type forked struct {
	pid  int
	done chan struct{}
	err  error
}

func (f *forked) kill() error {
	if err := syscall.Kill(-f.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// start forks the lab.py command of req.
func (fs *forkserver) start(req forkRequest) (*forked, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	select {
	case <-fs.dead:
		return nil, fs.err
	default:
	}
	line, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := fs.in.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("the forkserver: %w", err)
	}
	f := &forked{done: make(chan struct{})}
	select {
	case f.pid = <-fs.replies:
	case <-fs.dead:
		return nil, fs.err
	}
	fs.exitMu.Lock()
	defer fs.exitMu.Unlock()
	select {
	case <-fs.dead: // read has told its waiters already
		f.end(fs.err)
		return f, nil
	default:
	}
	if err, ok := fs.exits[f.pid]; ok {
		delete(fs.exits, f.pid)
		f.end(err)
	} else {
		fs.waits[f.pid] = f
	}
	return f, nil
}

func (f *forked) end(err error) {
	f.err = err
	close(f.done)
}
