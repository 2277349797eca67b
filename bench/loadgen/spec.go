// Package loadgen drives Redis-protocol servers with recognisable workloads and
// measures what each one does: throughput and an HDR histogram of per-command
// latency. It speaks RESP2 over plain TCP to any address and knows nothing about
// the proxy it is usually pointed at.
//
// Each connection is one goroutine that writes a batch of Pipeline commands,
// then reads as many replies, recording for each reply the time since its batch
// was written. Command encoding and reply parsing reuse per-connection buffers
// so that the generator costs as little CPU as possible: on a small machine it
// shares the cores with the servers it measures. Every run is bounded by its
// duration and stops by itself.
package loadgen

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Workloads.
const (
	Get     = "get"     // GET
	Set     = "set"     // SET key value
	Incr    = "incr"    // INCR on counters
	MGet    = "mget"    // MGET of MGetKeys keys
	HGetAll = "hgetall" // HGETALL of hashes of HashFields fields
	HGet    = "hget"    // HGET of one of HashFields fields of such hashes
	Mixed   = "mixed"   // GET or SET, ReadRatio of them GETs
	Session = "session" // GET or SET EX TTL, ReadRatio of them GETs
)

// Key distributions.
const (
	Zipf    = "zipf"    // a few keys are hot: rank k drawn with weight (1+k)^-ZipfS
	Uniform = "uniform" // every key equally likely
	Seq     = "seq"     // each key once in turn, continuing across runs: every read a first read
)

// Workloads lists the workload names Spec accepts.
var Workloads = []string{Get, Set, Incr, MGet, HGetAll, HGet, Mixed, Session}

// Spec describes a workload. Keys are named Prefix + a type tag + an index in
// [0, Keys), so that strings, hashes and counters never share a key.
type Spec struct {
	Workload   string  `json:"workload"`
	Keys       int     `json:"keys"`
	Prefix     string  `json:"key_prefix"`
	Dist       string  `json:"distribution"`
	ZipfS      float64 `json:"zipf_s,omitempty"`
	ValueMin   int     `json:"value_min"` // bytes, of strings and hash field values
	ValueMax   int     `json:"value_max"` // bytes; sizes are uniform in [ValueMin, ValueMax]
	ReadRatio  float64 `json:"read_ratio,omitempty"`
	MGetKeys   int     `json:"mget_keys,omitempty"`
	HashFields int     `json:"hash_fields,omitempty"`
	TTL        int     `json:"ttl_seconds,omitempty"` // of session SET EX
	Pipeline   int     `json:"pipeline"`
	Conns      int     `json:"-"` // reported per measurement point
}

// Limits that keep a mistyped flag from exhausting the machine.
const (
	MaxKeys     = 100_000_000
	MaxValue    = 16 << 20
	MaxPipeline = 1024
	MaxConns    = 2000
)

// Validate reports the first field that is out of range, naming it.
func (s Spec) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	known := false
	for _, w := range Workloads {
		known = known || w == s.Workload
	}
	if !known {
		bad("workload %q is not one of %s", s.Workload, strings.Join(Workloads, ", "))
	}
	if s.Keys < 1 || s.Keys > MaxKeys {
		bad("keys %d is not in [1, %d]", s.Keys, MaxKeys)
	}
	switch s.Dist {
	case Zipf:
		if !(s.ZipfS > 1) || s.ZipfS > 10 {
			bad("zipf exponent %v is not in (1, 10]", s.ZipfS)
		}
	case Uniform, Seq:
	default:
		bad("distribution %q is not one of zipf, uniform, seq", s.Dist)
	}
	if s.ValueMin < 0 || s.ValueMax < s.ValueMin || s.ValueMax > MaxValue {
		bad("value size %d-%d is not within [0, %d] with min <= max", s.ValueMin, s.ValueMax, MaxValue)
	}
	if (s.Workload == Mixed || s.Workload == Session) && !(s.ReadRatio >= 0 && s.ReadRatio <= 1) {
		bad("read ratio %v is not in [0, 1]", s.ReadRatio)
	}
	if s.Workload == MGet && (s.MGetKeys < 1 || s.MGetKeys > 1000) {
		bad("mget keys %d is not in [1, 1000]", s.MGetKeys)
	}
	if (s.Workload == HGetAll || s.Workload == HGet) && (s.HashFields < 1 || s.HashFields > 1000) {
		bad("hash fields %d is not in [1, 1000]", s.HashFields)
	}
	if s.Workload == Session && s.TTL < 1 {
		bad("session ttl %d is not a positive number of seconds", s.TTL)
	}
	if s.Pipeline < 1 || s.Pipeline > MaxPipeline {
		bad("pipeline %d is not in [1, %d]", s.Pipeline, MaxPipeline)
	}
	if s.Conns < 1 || s.Conns > MaxConns {
		bad("conns %d is not in [1, %d]", s.Conns, MaxConns)
	}
	if len(errs) > 0 {
		return errors.New("invalid workload: " + strings.Join(errs, "; "))
	}
	return nil
}

// String is a one-line summary for report headings.
func (s Spec) String() string {
	var b strings.Builder
	b.WriteString(s.Workload)
	switch s.Workload {
	case Mixed, Session:
		fmt.Fprintf(&b, " %.0f/%.0f read/write", 100*s.ReadRatio, 100*(1-s.ReadRatio))
	case MGet:
		fmt.Fprintf(&b, " of %d keys", s.MGetKeys)
	case HGetAll, HGet:
		fmt.Fprintf(&b, " of %d fields", s.HashFields)
	}
	fmt.Fprintf(&b, ", %d keys %q %s", s.Keys, s.Prefix+s.tag()+"N", s.Dist)
	if s.Dist == Zipf {
		fmt.Fprintf(&b, " s=%s", strconv.FormatFloat(s.ZipfS, 'g', -1, 64))
	}
	if s.Workload != Incr {
		if s.ValueMin == s.ValueMax {
			fmt.Fprintf(&b, ", values %d B", s.ValueMin)
		} else {
			fmt.Fprintf(&b, ", values %d-%d B", s.ValueMin, s.ValueMax)
		}
	}
	fmt.Fprintf(&b, ", pipeline %d", s.Pipeline)
	return b.String()
}

// tag separates the key spaces of the value types.
func (s Spec) tag() string {
	switch s.Workload {
	case HGetAll, HGet:
		return "h:"
	case Incr:
		return "n:"
	default:
		return "s:"
	}
}

func (s Spec) appendKey(b []byte, i uint64) []byte {
	b = append(b, s.Prefix...)
	b = append(b, s.tag()...)
	return strconv.AppendUint(b, i, 10)
}
