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
	want := Auth{RequirePass: "s3cret", Users: []User{{Name: "app", Password: "pw"}}, Default: Permissions{Admin: true}, ProtectedMode: true}
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
		"auth:\n  users:\n    - name: app\n      password: s3cret\n      writeonly: true\n":              "writeonly",
		"auth:\n  users:\n    - name: app\n      password: s3cret\n      keys: [\"a*\", \"b[\"]\n":       `auth.users[0].keys[1]: key pattern "b[": the "[" at offset 1 has no "]"`,
		"auth:\n  users:\n    - name: app\n      password: s3cret\n      keys: []\n":                     "auth.users[0].keys: lists no pattern",
		"auth:\n  users:\n    - name: app\n      password: s3cret\n      keys: [\"\"]\n":                 `auth.users[0].keys[0]: empty key pattern`,
		"auth:\n  default:\n    keys: [\"[\"]\n":                                                         `auth.default.keys[0]: key pattern "["`,
		"auth:\n  default:\n    readonly: maybe\n":                                                       "readonly",
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

func TestParsePermissions(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`auth:
  requirepass: s3cret
  protected_mode: false
  default:
    readonly: true
  users:
    - name: app
      password: pw
      keys: ["user:*", "session:*"]
    - name: ops
      password: pw2
      admin: true
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Auth{
		RequirePass: "s3cret",
		Default:     Permissions{ReadOnly: true, Admin: true}, // admin stays the default's default
		Users: []User{
			{Name: "app", Password: "pw", Keys: []string{"user:*", "session:*"}},
			{Name: "ops", Password: "pw2", Admin: true},
		},
	}
	if !reflect.DeepEqual(c.Auth, want) {
		t.Fatalf("auth = %+v", c.Auth)
	}
	if p := c.Auth.Users[0].Permissions(); !reflect.DeepEqual(p, Permissions{Keys: []string{"user:*", "session:*"}}) {
		t.Fatalf("permissions = %+v", p)
	}
}
