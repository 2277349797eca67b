package invalidation

import "testing"

func TestEventFlags(t *testing.T) {
	for _, tc := range []struct {
		flags, want string
		missing     bool
	}{
		{"AKE", "AKE", false},
		{"KA", "KA", false},
		{"g$lshzxetK", "g$lshzxetK", false},
		{"AKEm", "AKEm", false},
		{"", "KA", true},
		{"E", "EKA", true},
		{"AE", "AEK", true},               // classes on, keyspace channel off
		{"Kg$lshzxe", "Kg$lshzxeA", true}, // t (stream) missing
		{"K$", "K$A", true},
		{"Em", "EmKA", true}, // classes already chosen are kept
	} {
		want, missing := eventFlags(tc.flags)
		if want != tc.want || missing != tc.missing {
			t.Errorf("eventFlags(%q) = %q, %v; want %q, %v", tc.flags, want, missing, tc.want, tc.missing)
		}
	}
}
