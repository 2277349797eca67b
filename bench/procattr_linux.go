package main

import "syscall"

// childAttr makes the kernel kill a server the suite started if bench dies
// without stopping it (SIGKILL, a crash).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
