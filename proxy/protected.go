package proxy

import (
	"net"
	"net/netip"
)

// errDenied is Redis 7.0's protected-mode refusal, its first two sentences
// word for word so that clients and operators recognise it, and then the
// proxy's own remedies where Redis names its own configuration.
const errDenied = "DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. " +
	"In this mode connections are only accepted from the loopback interface. " +
	"If you want to connect from external computers to the proxy you may adopt one of the following solutions: " +
	"1) Set a password for the default user (auth.requirepass) or name users (auth.users) in the proxy's configuration file, and restart it. " +
	"2) Disable protected mode (auth.protected_mode: false) in the proxy's configuration file, and restart it; MAKE SURE the proxy is not publicly accessible from internet if you do so. " +
	"NOTE: You only need to do one of the above things in order for the proxy to start accepting connections from the outside."

// localPeer applies Redis's protected-mode rule: a client is local when it
// connects from 127.0.0.1 or ::1 exactly (not the rest of 127.0.0.0/8), or
// over a unix socket.
func localPeer(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.UnixAddr:
		return true
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ok && (ip.Unmap() == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || ip == netip.IPv6Loopback())
	}
	return false
}
