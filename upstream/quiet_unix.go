//go:build unix

package upstream

import (
	"net"
	"syscall"
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
		// Only "would block" means quiet: 0 bytes is the peer's close.
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // never wait
	})
	return ok && err == nil
}
