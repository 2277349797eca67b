package sentinel

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	good := []struct {
		in   string
		want URL
	}{
		{"redis-sentinel://127.0.0.1:26379/mymaster", URL{Sentinels: []string{"127.0.0.1:26379"}, Master: "mymaster"}},
		{"redis-sentinel://u:p%40ss@a:1,b:2,[::1]:3/m/4?sentinel_password=sp",
			URL{Sentinels: []string{"a:1", "b:2", "[::1]:3"}, Master: "m", DB: 4, Username: "u", Password: "p@ss", SentinelPassword: "sp"}},
		{"redis-sentinel://:secret@h:26379/m/", URL{Sentinels: []string{"h:26379"}, Master: "m", Password: "secret"}},
	}
	for _, c := range good {
		got, err := ParseURL(c.in)
		if err != nil || !reflect.DeepEqual(*got, c.want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := map[string]string{
		"redis-sentinel://h:26379":             "names no master",
		"redis-sentinel://h:26379/":            "names no master",
		"redis-sentinel:///m":                  "names no sentinel",
		"redis-sentinel://h/m":                 "not host:port",
		"redis-sentinel://h:0/m":               "bad port",
		"redis-sentinel://h:x/m":               "bad port",
		"redis-sentinel://h:1,:2/m":            "has no host",
		"redis-sentinel://h:1/m/x":             "not a number",
		"redis-sentinel://h:1/m/-1":            "not a number",
		"redis-sentinel://u:hunter2@h:1/m/1/2": "not a number",
		"redis-sentinel://h:1/m?master_name=x": "unknown parameter",
		"redis://h:1/m":                        "scheme",
	}
	for in, want := range bad {
		_, err := ParseURL(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURL(%q) = %v; want an error with %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseURL(%q) error repeats the password: %v", in, err)
		}
	}
}
