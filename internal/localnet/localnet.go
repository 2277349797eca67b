// Package localnet is what starting a server on loopback needs, for the tests
// and the bench suite alike: a free address to give it, and a PING to tell when
// it serves. It never starts or stops anything itself, and it has no business
// in the proxy.
package localnet

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"time"
)

// FreeAddr returns a 127.0.0.1 address nothing listens on at the moment. A
// server started on it may still lose a race for it; callers retry.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Ping sends PING to the RESP server at addr and reports why it did not answer
// +PONG within two seconds, or nil.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
