//go:build unix

package porticotest

import (
	"os/exec"
	"syscall"
	"time"
)

// stopProcess asks cmd to stop gracefully (SIGQUIT, nginx's graceful
// stop), then kills it when it has not exited within timeout.
func stopProcess(cmd *exec.Cmd, exited <-chan struct{}, timeout time.Duration) {
	_ = cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-exited
	}
}
