// Package tied starts the test labs' child processes (Keystone, Nova,
// Prometheus, Alertmanager, the exporter under test) so that they die with
// the test process: a test that panics on its -timeout runs no t.Cleanup.
package tied

import (
	"os/exec"
	"runtime"
	"syscall"
)

// Start starts cmd so that the kernel kills it (SIGKILL) when the process
// that started it dies. It waits for cmd, and sends Wait's result on the
// channel.
//
// The kernel sends the parent-death signal when the thread that forked the
// child exits, not the process, and Go ends a thread when a goroutine exits
// while locked to it (netlab.Do does so when it cannot leave a namespace).
// So the goroutine that forks keeps its thread locked until the child has
// been reaped: no other goroutine can run on it, let alone end it.
func Start(cmd *exec.Cmd) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started, exited := make(chan error, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	return exited, <-started
}
