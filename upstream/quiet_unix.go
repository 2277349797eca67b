//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package upstream

import (
	"net"
	"syscall"
	"unsafe"
)

// quiet reports whether nothing is waiting to be read on an idle connection:
// neither data (no request is outstanding, so any byte is out of turn) nor the
// peer's close. It does not consume anything.
func quiet(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = true
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		// A raw system call: MSG_DONTWAIT never blocks, so the scheduler
		// need not be told, and the client's goroutine does not risk being
		// moved to another thread on the way back, which costs the lone
		// client's miss a wake-up. Only "would block" means quiet: 0 bytes
		// is the peer's close.
		_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		ok = errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK
		return true // never wait
	})
	return ok && err == nil
}
