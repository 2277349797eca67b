package loadgen

import (
	"math/rand/v2"
	"sync/atomic"
)

// seqBlock is how many consecutive indices a connection takes at a time from a
// shared sequence, so that connections rarely touch the shared counter.
const seqBlock = 1024

// keyPicker draws key indices in [0, n). It belongs to one connection; only
// the sequence it may share is safe for concurrent use.
type keyPicker struct {
	n         uint64
	rng       *rand.Rand
	zipf      *rand.Zipf     // set for Zipf
	seq       *atomic.Uint64 // set for Seq: the next unclaimed position, across runs
	next, end uint64         // Seq: the claimed block still to hand out
}

// newKeyPicker returns a picker for the spec's distribution. seq is shared by
// every connection of one target and must outlive its runs.
func newKeyPicker(s Spec, rng *rand.Rand, seq *atomic.Uint64) *keyPicker {
	p := &keyPicker{n: uint64(s.Keys), rng: rng}
	switch s.Dist {
	case Zipf:
		p.zipf = rand.NewZipf(rng, s.ZipfS, 1, p.n-1)
	case Seq:
		p.seq = seq
	}
	return p
}

func (p *keyPicker) pick() uint64 {
	switch {
	case p.zipf != nil:
		return p.zipf.Uint64()
	case p.seq != nil:
		if p.next == p.end {
			p.end = p.seq.Add(seqBlock)
			p.next = p.end - seqBlock
		}
		i := p.next % p.n
		p.next++
		return i
	default:
		return p.rng.Uint64N(p.n)
	}
}
