package redistest

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes the system kill the server when the test binary dies, as it
// does when a test times out and panics: Cleanup never runs then, and the
// server would stay behind, holding its port and memory.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
