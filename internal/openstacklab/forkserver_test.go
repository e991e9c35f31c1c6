//go:build lab

package openstacklab

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestForkserver checks the forkserver with lab.py's commands that need no
// service ("none" imports nothing): a command's exit status and output, a
// long-running one in its own process group, its FIFOs, and that it dies
// with its forkserver, after which the next request gets a new forkserver.
func TestForkserver(t *testing.T) {
	if _, err := os.Stat(Python); err != nil {
		t.Fatalf("%s: %v", Python, err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "lab.py")
	if err := os.WriteFile(script, labPy, 0o755); err != nil {
		t.Fatal(err)
	}
	fs, err := forkserverFor("none", script)
	if err != nil {
		t.Fatal(err)
	}
	wait := func(f *forked, what string) {
		t.Helper()
		select {
		case <-f.done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: still running after a minute", what)
		}
	}

	failing, err := fs.start(forkRequest{Args: []string{"no-such-command"}, Log: filepath.Join(dir, "failing.log")})
	if err != nil {
		t.Fatal(err)
	}
	wait(failing, "a failing command")
	out, _ := os.ReadFile(filepath.Join(dir, "failing.log"))
	if failing.err == nil || failing.err.Error() != "exit status 1" || !strings.Contains(string(out), "unknown command no-such-command") {
		t.Errorf("a failing command: %v, log %q; want exit status 1 and lab.py's message", failing.err, out)
	}

	// lab.py's helper serves requests from a FIFO until it is killed.
	var ends [2]*os.File
	for i, name := range []string{"in", "out"} {
		path := filepath.Join(dir, name)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if ends[i], err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			t.Fatal(err)
		}
		defer ends[i].Close()
	}
	helper, err := fs.start(forkRequest{Args: []string{"helper", dir}, Log: filepath.Join(dir, "helper.log"),
		Stdin: ends[0].Name(), Stdout: ends[1].Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer helper.kill()
	if _, err := ends[0].WriteString(`{"args": ["no-such-command"]}` + "\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(ends[1]).ReadBytes('\n')
	var reply helperReply
	if err != nil || json.Unmarshal(line, &reply) != nil || !strings.Contains(reply.Error, "unknown command no-such-command") {
		t.Errorf("the helper's reply: %q %v, want lab.py's error", line, err)
	}
	if pgid, err := syscall.Getpgid(helper.pid); err != nil || pgid != helper.pid {
		t.Errorf("process group of the forked helper: %d %v, want its own (%d)", pgid, err, helper.pid)
	}

	// Its services die with it; the next request starts another.
	if err := syscall.Kill(fs.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait(helper, "the helper after its forkserver was killed")
	if helper.err == nil || !strings.Contains(helper.err.Error(), "the forkserver ended") {
		t.Errorf("the helper's end: %v, want its forkserver's", helper.err)
	}
	for deadline := time.Now().Add(time.Minute); alive(helper.pid); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the helper (pid %d) outlived its forkserver", helper.pid)
		}
	}
	again, err := forkserverFor("none", script)
	if err != nil || again == fs {
		t.Fatalf("after its death: %v, the same forkserver %v", err, again == fs)
	}
	next, err := again.start(forkRequest{Args: []string{"no-such-command"}, Log: filepath.Join(dir, "next.log")})
	if err != nil {
		t.Fatal(err)
	}
	wait(next, "a command in the new forkserver")
	if next.err == nil || next.err.Error() != "exit status 1" {
		t.Errorf("a command in the new forkserver: %v, want exit status 1", next.err)
	}
}

// alive tells whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
