package cluster

import (
	"bytes"
	"strconv"

	"github.com/tidwall/redcon"
)

func appendArrayHeader(b []byte, n int) []byte { return redcon.AppendArray(b, n) }
func appendBulk(b, v []byte) []byte            { return redcon.AppendBulk(b, v) }
func appendInt(b []byte, n int64) []byte       { return redcon.AppendInt(b, n) }

// integer reads an integer reply (":12\r\n").
func integer(reply []byte) (int64, bool) {
	if len(reply) < 4 || reply[0] != ':' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(reply[1:len(reply)-2]), 10, 64)
	return n, err == nil
}

// arrayBody splits an array reply into its count and the bytes of its
// elements.
func arrayBody(reply []byte) (int, []byte, bool) {
	if len(reply) < 4 || reply[0] != '*' {
		return 0, nil, false
	}
	i := bytes.IndexByte(reply, '\n')
	if i < 2 || reply[i-1] != '\r' {
		return 0, nil, false
	}
	n, err := strconv.Atoi(string(reply[1 : i-1]))
	if err != nil || n < 0 {
		return 0, nil, false
	}
	return n, reply[i+1:], true
}

// bulkLen reads the length of the bulk string b starts with.
func bulkLen(b []byte) (int, bool) {
	if len(b) < 4 || b[0] != '$' {
		return 0, false
	}
	i := bytes.IndexByte(b, '\n')
	if i < 2 || b[i-1] != '\r' {
		return 0, false
	}
	n, err := strconv.Atoi(string(b[1 : i-1]))
	return n, err == nil && n >= 0
}
