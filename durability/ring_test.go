package durability

import (
	"math/rand/v2"
	"testing"
)

// TestRingBytesAfter: the bytes after an LSN the ring holds are exact,
// whatever it dropped; after an LSN it no longer holds they are the
// bytes it holds plus the records it dropped at their average size.
func TestRingBytesAfter(t *testing.T) {
	r := NewRing(100, 10)
	if n, exact := r.BytesAfter(10); n != 0 || !exact {
		t.Fatalf("an empty ring: %d bytes after its base, exact %v", n, exact)
	}
	if _, exact := r.BytesAfter(9); exact {
		t.Fatal("an empty ring says it holds what came before its base")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := map[uint64]int64{}
	for lsn := uint64(11); lsn <= 400; lsn++ {
		sizes[lsn] = int64(rng.IntN(30))
		r.Add(lsn, make([]byte, sizes[lsn]))
		oldest := r.Oldest()
		var held int64
		for l := oldest; l <= lsn; l++ {
			held += sizes[l]
		}
		for after := uint64(5); after <= lsn+1; after++ {
			n, exact := r.BytesAfter(after)
			var want int64
			for l := max(after+1, oldest); l <= lsn; l++ {
				want += sizes[l]
			}
			if after+1 < oldest {
				want += int64(oldest-after-1) * held / int64(lsn-oldest+1)
			}
			if n != want || exact != (after+1 >= oldest) {
				t.Fatalf("after adding LSN %d (oldest held %d): %d bytes after %d, exact %v; want %d, exact %v",
					lsn, oldest, n, after, exact, want, after+1 >= oldest)
			}
		}
	}
}
