//go:build !unix

package porticotest

import (
	"os/exec"
	"time"
)

// stopProcess kills cmd: without signals there is no graceful stop.
func stopProcess(cmd *exec.Cmd, exited <-chan struct{}, _ time.Duration) {
	_ = cmd.Process.Kill()
	<-exited
}
