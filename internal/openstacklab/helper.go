package openstacklab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/tied"
)

// novaHelper is one lab.py process per lab that runs the commands writing
// through Nova's object layer (seed, update, service, stop, action,
// migrations), one request at a time. A process per command imported Nova
// each time: 3.7 CPU-seconds, and 20 s of wall time on a loaded 2-core
// machine, for each of the ~70 commands of a test run.
type novaHelper struct {
	mu      sync.Mutex // one request at a time
	logPath string
	in      io.WriteCloser
	outFile io.Closer
	out     *bufio.Reader
	exited  <-chan error
	pgid    int
}

type helperRequest struct {
	Args  []string `json:"args"`
	Stdin string   `json:"stdin"`
}

type helperReply struct {
	Out   string `json:"out"`
	Error string `json:"error"`
}

// nova runs one lab.py command in the lab's helper, started on first use.
func (l *Lab) nova(ctx context.Context, stdin []byte, args ...string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("lab.py %s: %w", args[0], err)
	}
	h := &l.helper
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.in == nil {
		if err := h.start(l); err != nil {
			return "", fmt.Errorf("lab.py %s: starting the helper: %w", args[0], err)
		}
	}
	req, err := json.Marshal(helperRequest{Args: args, Stdin: string(stdin)})
	if err != nil {
		return "", err
	}
	replies := make(chan helperReply, 1)
	failed := make(chan error, 1)
	in, out := h.in, h.out // stop may clear them while this goroutine reads
	go func() {
		if _, err := in.Write(append(req, '\n')); err != nil {
			failed <- err
			return
		}
		line, err := out.ReadBytes('\n')
		if err != nil {
			failed <- err
			return
		}
		var r helperReply
		if err := json.Unmarshal(line, &r); err != nil {
			failed <- fmt.Errorf("unreadable reply %q: %w", tail(string(line), 300), err)
			return
		}
		replies <- r
	}()
	select {
	case r := <-replies:
		if r.Error != "" {
			return r.Out, fmt.Errorf("lab.py %s: %s", args[0], tail(r.Error, 3000))
		}
		return r.Out, nil
	case err := <-failed:
		h.stop()
		return "", fmt.Errorf("lab.py %s: the helper failed: %v\n%s", args[0], err, h.logTail())
	case <-ctx.Done():
		// Mid-command: its process goes, and the next command starts another.
		h.stop()
		return "", fmt.Errorf("lab.py %s: %w", args[0], ctx.Err())
	}
}

func (h *novaHelper) start(l *Lab) error {
	logFile, err := os.Create(filepath.Join(l.opts.Dir, "nova-helper.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	// Pipes of our own, not cmd's: tied.Start waits for the process at
	// once, and Wait closes the pipes cmd made.
	childIn, in, err := os.Pipe()
	if err != nil {
		return err
	}
	out, childOut, err := os.Pipe()
	if err != nil {
		childIn.Close()
		in.Close()
		return err
	}
	defer childIn.Close()
	defer childOut.Close()
	cmd := l.command(context.Background(), "helper", l.opts.Dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = childIn, childOut, logFile
	exited, err := tied.Start(cmd)
	if err != nil {
		in.Close()
		out.Close()
		return err
	}
	h.logPath, h.in, h.outFile, h.out, h.exited, h.pgid = logFile.Name(), in, out, bufio.NewReader(out), exited, cmd.Process.Pid
	l.mu.Lock()
	l.logs["nova-helper"] = logFile.Name()
	l.mu.Unlock()
	return nil
}

// stop kills the helper's process group; the next command starts a new one.
func (h *novaHelper) stop() {
	if h.in == nil {
		return
	}
	h.in.Close()
	h.outFile.Close()
	if err := syscall.Kill(-h.pgid, syscall.SIGKILL); err == nil || errors.Is(err, syscall.ESRCH) {
		<-h.exited
	}
	h.in, h.outFile, h.out, h.exited = nil, nil, nil, nil
}

func (h *novaHelper) logTail() string {
	b, _ := os.ReadFile(h.logPath)
	return tail(string(b), 3000)
}
