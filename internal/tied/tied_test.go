package tied

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStart runs a helper process (this test binary again) that starts
// a child with Start from a goroutine that then ends its own thread,
// ends many more of its threads the way Go does (goroutines exiting while
// locked to their thread), and is then killed
// with SIGKILL, as a test that panics on its -timeout dies without running
// any cleanup. The child must outlive the threads and die with the helper.
func TestStart(t *testing.T) {
	switch os.Getenv("TIED_HELPER") {
	case "1":
		tiedHelper()
		return
	case "child":
		time.Sleep(time.Minute)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStart$")
	cmd.Env = append(os.Environ(), "TIED_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	child := 0
	for sc.Scan() {
		if pid, ok := strings.CutPrefix(sc.Text(), "child "); ok {
			child, _ = strconv.Atoi(pid)
		}
		if sc.Text() == "threads ended" {
			break
		}
	}
	if child == 0 {
		t.Fatal("the helper reported no child")
	}
	if !alive(child) {
		t.Fatal("the child died when threads of its parent ended: the forking thread was not kept")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("child %d still runs after its parent was killed", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tiedHelper() {
	// The child is this test binary again, sleeping: nothing but Go needed.
	child := exec.Command(os.Args[0], "-test.run=^TestStart$")
	child.Env = append(os.Environ(), "TIED_HELPER=child")
	errc := make(chan error)
	for started := false; !started; {
		go func() {
			runtime.LockOSThread()
			if syscall.Gettid() == os.Getpid() {
				// Go never ends the main thread; keep this one busy
				// and try again on another.
				errc <- nil
				select {}
			}
			// Exiting locked ends this thread: had the child been
			// forked here, the kernel would kill it now.
			_, err := Start(child)
			started = err == nil
			errc <- err
		}()
		if err := <-errc; err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
	}
	fmt.Println("child", child.Process.Pid)
	// Each of these goroutines takes a thread and ends it.
	done := make(chan struct{})
	for i := 0; i < 64; i++ {
		go func() {
			runtime.LockOSThread()
			done <- struct{}{}
		}()
	}
	for i := 0; i < 64; i++ {
		<-done
	}
	time.Sleep(200 * time.Millisecond)
	fmt.Println("threads ended")
	time.Sleep(time.Minute)
	os.Exit(0)
}

// alive is true while pid runs (a zombie counts as dead).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}
