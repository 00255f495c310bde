package durability

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestRingBytesBetween: the bytes of the records between two LSNs are
// exact where the ring holds them, whatever it dropped; records it no
// longer holds count at the average size of those it does, records it
// does not hold yet count as nothing.
func TestRingBytesBetween(t *testing.T) {
	r := NewRing(100, 10)
	if n := r.BytesBetween(5, 20); n != 0 {
		t.Fatalf("an empty ring: %d bytes", n)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := map[uint64]uint64{}
	for lsn := uint64(11); lsn <= 400; lsn++ {
		sizes[lsn] = uint64(rng.IntN(30))
		r.Add(lsn, make([]byte, sizes[lsn]))
		oldest := r.Oldest()
		var held uint64
		for l := oldest; l <= lsn; l++ {
			held += sizes[l]
		}
		for after := uint64(5); after <= lsn+1; after++ {
			for _, upto := range []uint64{lsn + 5, lsn, lsn - 1, after + 1, oldest, oldest - 1, after} {
				got := r.BytesBetween(after, upto)
				var want uint64
				if top := min(upto, lsn); top > after {
					for l := max(after+1, oldest); l <= top; l++ {
						want += sizes[l]
					}
					if after+1 < oldest {
						want += (min(top, oldest-1) - after) * held / (lsn - oldest + 1)
					}
				}
				if got != want {
					t.Fatalf("holding %d..%d: %d bytes in (%d, %d], want %d", oldest, lsn, got, after, upto, want)
				}
			}
		}
	}

	// Far behind: the estimate is as large as it is, or the largest
	// number when it would overflow.
	const base = 1 << 62
	r = NewRing(1<<20, base)
	for lsn := uint64(base + 1); lsn <= base+30; lsn++ {
		r.Add(lsn, make([]byte, 1000))
	}
	if got, want := r.BytesBetween(base-1e15, base+30), uint64(1e15*1000+30*1000); got != want {
		t.Fatalf("1e15 records behind: %d bytes, want %d", got, want)
	}
	if got := r.BytesBetween(0, base+30); got != math.MaxUint64 {
		t.Fatalf("2^62 records behind: %d bytes, want the largest number", got)
	}
	// The dropped records alone just fit; with those held they would not.
	missing := uint64(math.MaxUint64-500) / 1000
	if got := r.BytesBetween(base-missing, base); got != missing*1000 {
		t.Fatalf("%d dropped records: %d bytes, want %d", missing, got, missing*1000)
	}
	if got := r.BytesBetween(base-missing, base+30); got != math.MaxUint64 {
		t.Fatalf("%d dropped records and 30 held: %d bytes, want the largest number", missing, got)
	}
}
