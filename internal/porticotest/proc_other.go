//go:build !linux

package porticotest

import "os/exec"

// dieWithParent is Linux's; elsewhere the cleanup alone stops the program.
func dieWithParent(*exec.Cmd) {}
