package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ByteSize is a number of bytes, written in the file as a plain integer (bytes)
// or an integer with a unit. KB, MB, GB and TB are powers of 1000; KiB, MiB, GiB
// and TiB powers of 1024. Units are case-sensitive, so that "mb" (which Redis
// reads as MiB) is an error rather than a silent 5% difference.
type ByteSize int64

// Byte sizes, for Default and for callers.
const (
	KiB ByteSize = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

// units is ordered for String, which prefers binary units on a tie.
var units = []struct {
	name string
	size ByteSize
}{
	{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
	{"B", 1},
}

const byteSizeExample = "e.g. 256MiB, 1GiB; units B, KB, KiB, MB, MiB, GB, GiB, TB, TiB"

// UnmarshalYAML reads a byte size. Errors are yaml.TypeErrors carrying the node's
// position, so Parse can name the field.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return positioned(n, fmt.Sprintf("expected a byte size (%s), got %s", byteSizeExample, describe(n)))
	}
	v, err := parseByteSize(n.Value)
	if err != nil {
		return positioned(n, err.Error())
	}
	*b = v
	return nil
}

func parseByteSize(s string) (ByteSize, error) {
	digits := strings.TrimLeft(s, "0123456789")
	num, unit := s[:len(s)-len(digits)], strings.TrimSpace(digits)
	if num == "" {
		return 0, fmt.Errorf("%q is not a byte size (%s)", s, byteSizeExample)
	}
	mult := ByteSize(1)
	if unit != "" {
		mult = 0
		for _, u := range units {
			if u.name == unit {
				mult = u.size
			}
		}
		if mult == 0 {
			return 0, fmt.Errorf("%q has an unknown unit %q (%s)", s, unit, byteSizeExample)
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n) * mult, nil
}

// String writes b in the unit that divides it exactly with the smallest number
// (256MiB, 2GB), so that it parses back to the same value.
func (b ByteSize) String() string {
	best := units[len(units)-1]
	for _, u := range units {
		if b%u.size == 0 && abs(b/u.size) < abs(b/best.size) {
			best = u
		}
	}
	return strconv.FormatInt(int64(b/best.size), 10) + best.name
}

func abs(b ByteSize) ByteSize {
	if b < 0 {
		return -b
	}
	return b
}
