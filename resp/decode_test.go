package resp

import "testing"

func TestIntegerArrayBodyBulkLen(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int64
		isOK bool
	}{{":12\r\n", 12, true}, {":-3\r\n", -3, true}, {":12\r\n:1\r\n", 0, false}, {":x\r\n", 0, false}, {"+12\r\n", 0, false}, {":12\n", 0, false}} {
		if n, ok := Integer([]byte(c.in)); n != c.n || ok != c.isOK {
			t.Errorf("Integer(%q) = %d, %v", c.in, n, ok)
		}
	}
	if n, body, ok := ArrayBody([]byte("*2\r\n$1\r\na\r\n:1\r\n")); n != 2 || string(body) != "$1\r\na\r\n:1\r\n" || !ok {
		t.Errorf("ArrayBody = %d, %q, %v", n, body, ok)
	}
	for _, in := range []string{"*-1\r\n", "%1\r\n", "*2\n", ""} {
		if _, _, ok := ArrayBody([]byte(in)); ok {
			t.Errorf("ArrayBody(%q) ok", in)
		}
	}
	if n, ok := BulkLen([]byte("$5\r\nhello\r\n")); n != 5 || !ok {
		t.Errorf("BulkLen = %d, %v", n, ok)
	}
	for _, in := range []string{"$-1\r\n", ":5\r\n", "$5"} {
		if _, ok := BulkLen([]byte(in)); ok {
			t.Errorf("BulkLen(%q) ok", in)
		}
	}
}
