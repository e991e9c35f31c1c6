package openstacklab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// novaHelper is one lab.py process per lab that runs the commands writing
// through Nova's object layer (seed, update, service, stop, action,
// migrations), one request at a time. A process per command imported Nova
// each time: 3.7 CPU-seconds, and 20 s of wall time on a loaded 2-core
// machine, for each of the ~70 commands of a test run. It is a fork of the
// process's "helper" forkserver, which has imported Nova once for all labs.
type novaHelper struct {
	mu      sync.Mutex // one request at a time
	logPath string
	in      io.WriteCloser
	outFile io.Closer
	out     *bufio.Reader
	proc    *forked // its process, the leader of its own group
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
	case <-h.proc.done:
		// Our ends of its FIFOs are open for both reading and writing, so
		// its end shows here, not as the end of its output.
		err := h.proc.err
		h.stop()
		return "", fmt.Errorf("lab.py %s: the helper failed: %v\n%s", args[0], err, h.logTail())
	case <-ctx.Done():
		// Mid-command: its process goes, and the next command starts another.
		h.stop()
		return "", fmt.Errorf("lab.py %s: %w", args[0], ctx.Err())
	}
}

func (h *novaHelper) start(l *Lab) error {
	logPath := filepath.Join(l.opts.Dir, "nova-helper.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		return err
	}
	// Its stdin and stdout are FIFOs (a fork of the forkserver inherits no
	// pipe of ours). Our ends are opened read-write: opening never waits
	// for the other end, and a helper that dies leaves no end-of-file
	// behind (nova watches proc.done instead).
	var ends []*os.File
	closeEnds := func() {
		for _, f := range ends {
			f.Close()
		}
	}
	for _, name := range []string{"nova-helper.in", "nova-helper.out"} {
		path := filepath.Join(l.opts.Dir, name)
		os.Remove(path)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			closeEnds()
			return err
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			closeEnds()
			return err
		}
		ends = append(ends, f)
	}
	in, out := ends[0], ends[1]
	fs, err := forkserverFor("helper", l.script)
	if err == nil {
		h.proc, err = fs.start(forkRequest{Args: []string{"helper", l.opts.Dir}, Log: logPath, NetNS: l.opts.NetNS,
			Stdin: in.Name(), Stdout: out.Name()})
	}
	if err != nil {
		closeEnds()
		return err
	}
	h.logPath, h.in, h.outFile, h.out = logPath, in, out, bufio.NewReader(out)
	l.mu.Lock()
	l.logs["nova-helper"] = logPath
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
	if err := h.proc.kill(); err == nil {
		<-h.proc.done
	}
	h.in, h.outFile, h.out, h.proc = nil, nil, nil, nil
}

func (h *novaHelper) logTail() string {
	b, _ := os.ReadFile(h.logPath)
	return tail(string(b), 3000)
}
