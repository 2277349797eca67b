package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseAuth(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte("auth:\n  requirepass: s3cret\n  users:\n    - name: app\n      password: pw\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Auth{RequirePass: "s3cret", Users: []User{{Name: "app", Password: "pw"}}}
	if !reflect.DeepEqual(c.Auth, want) {
		t.Fatalf("auth = %+v", c.Auth)
	}
	for in, msg := range map[string]string{
		"auth:\n  users:\n    - password: s3cret\n":                                                      "auth.users[0].name: is required",
		"auth:\n  users:\n    - name: default\n      password: s3cret\n":                                 `auth.users[0].name: "default" is the user of auth.requirepass`,
		"auth:\n  users:\n    - name: a b\n      password: s3cret\n":                                     `auth.users[0].name: "a b" contains a space`,
		"auth:\n  users:\n    - name: app\n":                                                             "auth.users[0].password: is required",
		"auth:\n  users:\n    - name: app\n      password: s3cret\n    - name: app\n      password: x\n": `auth.users[1].name: "app" is already the name of auth.users[0]`,
		"auth:\n  requirepas: s3cret\n":                                                                  "requirepas",
	} {
		_, err := Parse([]byte(in), "t.yaml")
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: error %v, want one containing %q", in, err, msg)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: error %q shows the password", in, err)
		}
	}
}
