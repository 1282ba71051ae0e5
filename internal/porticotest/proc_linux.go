package porticotest

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes cmd killed when the test binary dies (a crash or a
// timeout), so that no server outlives its test.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
