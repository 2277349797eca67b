// Package ascii holds the byte-level text comparisons Redis makes, for the
// packages that must match it exactly. It depends on nothing.
package ascii

// EqualFold reports whether b and s are equal ignoring the case of ASCII
// letters only, as Redis's strcasecmp does: unlike bytes.EqualFold, for which
// "bcaſt" is "bcast".
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
