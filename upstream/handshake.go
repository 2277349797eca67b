package upstream

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/cacheproxy/cacheproxy/resp"
)

// clientName is what CLIENT LIST shows for the proxy's connections.
const clientName = "cacheproxy"

// maxHandshakeReply bounds the bytes buffered for the handshake's replies. The
// largest, HELLO's, lists the loaded modules and stays within a few
// kilobytes; the bound keeps a broken upstream from filling memory within the
// dial timeout.
const maxHandshakeReply = 1 << 20

// ReplyError is an error reply that Redis gave while readying a connection and
// that it gives ordinary commands alike for the time being: -BUSY while a
// script or function runs past busy-reply-threshold, -LOADING while it loads
// its dataset. The connection could not be readied (a database it failed to
// SELECT would take the requests to the wrong one), so it is closed and the
// batch that needed it is not sent; the next batch dials again. Had the batch's
// requests reached Redis, each would have got this very reply, so a caller
// answers each of them with Line, and its client sees what Redis says. (A few
// commands Redis serves while busy, MULTI among them, would have fared better;
// they fail either way.)
type ReplyError struct {
	Line []byte // the error reply, "\r\n" included, ready to write as is
}

func (e *ReplyError) Error() string { return trimCRLF(string(e.Line)) }

// step is one command of the handshake, for its replies to be judged.
type step struct {
	name string
	// cosmetic: nothing depends on the step, so a -BUSY or -LOADING refusal
	// leaves the connection fit for use.
	cosmetic bool
	// hello: the reply must be RESP3's map, or the upstream did not switch.
	hello bool
}

// handshake readies nc to carry client traffic: it switches to RESP3 if the
// pool speaks it, authenticates, selects db and names the connection, all in
// one round trip, so that client commands never see these replies. An error
// that leaves nc unfit for db's traffic is a *ReplyError when Redis would
// answer client commands with it too (see ReplyError).
func (p *Pool) handshake(nc net.Conn, db int) error {
	var req []byte
	var steps []step
	if p.cfg.Protocol == 3 {
		args := []string{"HELLO", "3"}
		if p.cfg.Password != "" {
			user := p.cfg.Username
			if user == "" {
				user = "default"
			}
			args = append(args, "AUTH", user, p.cfg.Password)
		}
		// HELLO names the connection itself, and Redis serves it even while
		// busy, where CLIENT SETNAME would be refused.
		args = append(args, "SETNAME", clientName)
		req = resp.AppendCommand(req, args...)
		steps = append(steps, step{name: "HELLO 3", hello: true})
	} else if p.cfg.Password != "" {
		if p.cfg.Username != "" {
			req = resp.AppendCommand(req, "AUTH", p.cfg.Username, p.cfg.Password)
		} else {
			req = resp.AppendCommand(req, "AUTH", p.cfg.Password)
		}
		steps = append(steps, step{name: "AUTH"})
	}
	if db != 0 {
		sel := strconv.Itoa(db)
		req = resp.AppendCommand(req, "SELECT", sel)
		steps = append(steps, step{name: "SELECT " + sel})
	}
	if p.cfg.Protocol != 3 {
		req = resp.AppendCommand(req, "CLIENT", "SETNAME", clientName)
		steps = append(steps, step{name: "CLIENT SETNAME", cosmetic: true})
	}
	if _, err := nc.Write(req); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}

	// Replies are framed as RESP, not as lines: HELLO's spans many.
	var sc resp.ReplyScanner
	buf := make([]byte, 0, 1024)
	start := 0
	for _, st := range steps {
		var n int
		for {
			var err error
			if n, err = sc.Scan(buf[start:]); err != nil {
				return fmt.Errorf("handshake: %s: %w", st.name, err)
			}
			if n > 0 {
				break
			}
			if len(buf) == cap(buf) {
				if cap(buf) >= maxHandshakeReply {
					return fmt.Errorf("handshake: %s: reply over %d bytes", st.name, maxHandshakeReply)
				}
				buf = slices.Grow(buf, cap(buf))
			}
			m, err := nc.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+m]
			if m == 0 && err != nil {
				return fmt.Errorf("handshake: %s: %w", st.name, err)
			}
		}
		reply := buf[start : start+n]
		start += n
		switch {
		case reply[0] == '-' && refusedForNow(reply):
			if !st.cosmetic {
				return fmt.Errorf("handshake: %s: %w", st.name, &ReplyError{Line: append([]byte(nil), reply...)})
			}
		case reply[0] == '-':
			return fmt.Errorf("handshake: %s: %s", st.name, trimCRLF(string(reply)))
		case st.hello && reply[0] != '%':
			return fmt.Errorf("handshake: %s: answered without a RESP3 map: the upstream does not speak RESP3", st.name)
		}
	}
	if start < len(buf) {
		return errors.New("handshake: unexpected data")
	}
	return nil
}

// refusedForNow reports whether the error reply is one Redis gives ordinary
// commands while a script runs too long (BUSY) or while it loads its dataset
// (LOADING): a state that passes, not a fault of the command. Its first word
// must match exactly: BUSYKEY, for one, is a command's own failure.
func refusedForNow(reply []byte) bool {
	code := reply[1:]
	for i, c := range code {
		if c == ' ' || c == '\r' {
			code = code[:i]
			break
		}
	}
	switch string(code) {
	case "BUSY", "LOADING":
		return true
	}
	return false
}

func trimCRLF(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}
