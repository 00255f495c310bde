package durability

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
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

// TestRingAcrossChunks: a ring holding thousands of records, so that they
// span chunks and the front chunk is dropped and reused, holds exactly
// the newest records whose bodies fit its bound (always the newest one),
// in order, as a plain list of every record would.
func TestRingAcrossChunks(t *testing.T) {
	const maxBytes = 40_000
	r := NewRing(maxBytes, 100)
	if at, ok := r.AddedAt(100); !ok || time.Since(at) > time.Minute {
		t.Fatalf("an empty ring: LSN 100, before it, is at least as old as %v (%v), want when the ring was made", at, ok)
	}
	if _, ok := r.AddedAt(101); ok {
		t.Fatal("an empty ring has a time for LSN 101, not added yet")
	}
	var all []Record // every record added, oldest first
	rng := rand.New(rand.NewPCG(3, 4))
	for lsn := uint64(101); lsn <= 12_000; lsn++ {
		size := rng.IntN(30)
		if lsn%4000 == 0 {
			size = maxBytes + 1 // alone past the bound: the ring holds it only
		}
		body := make([]byte, size)
		body = append(body[:0], byte(lsn), byte(lsn>>8))[:max(size, 2)]
		r.Add(lsn, body)
		all = append(all, Record{LSN: lsn, Body: body})
		// The model: the newest records whose bodies fit, at least one.
		held, bytes := 0, 0
		for i := len(all) - 1; i >= 0 && (held == 0 || bytes+len(all[i].Body) <= maxBytes); i-- {
			held++
			bytes += len(all[i].Body)
		}
		want := all[len(all)-held:]
		if r.Oldest() != want[0].LSN || r.Last() != lsn {
			t.Fatalf("after LSN %d: the ring holds %d..%d, want %d..%d", lsn, r.Oldest(), r.Last(), want[0].LSN, lsn)
		}
		if lsn%97 != 0 && lsn%4000 != 0 {
			continue
		}
		got, ok := r.Read(nil, want[0].LSN-1, math.MaxInt)
		if !ok || len(got) != len(want) {
			t.Fatalf("after LSN %d: read %d records (%v), want %d", lsn, len(got), ok, len(want))
		}
		for i := range want {
			if got[i].LSN != want[i].LSN || string(got[i].Body) != string(want[i].Body) {
				t.Fatalf("after LSN %d: record %d is LSN %d, want %d", lsn, i, got[i].LSN, want[i].LSN)
			}
		}
		if _, ok := r.Read(nil, want[0].LSN-2, 1); ok && want[0].LSN > 101 {
			t.Fatalf("after LSN %d: the ring reads from LSN %d, which it dropped", lsn, want[0].LSN-1)
		}
		mid, ok := r.AddedAt(want[len(want)/2].LSN)
		if !ok {
			t.Fatalf("after LSN %d: no time for LSN %d, which the ring holds", lsn, want[len(want)/2].LSN)
		}
		if old, ok := r.AddedAt(101); !ok || old.After(mid) {
			t.Fatalf("after LSN %d: LSN 101, which the ring dropped, is at least as old as %v (%v), after LSN %d's %v", lsn, old, ok, want[len(want)/2].LSN, mid)
		}
		if _, ok := r.AddedAt(lsn + 1); ok {
			t.Fatalf("after LSN %d: a time for LSN %d", lsn, lsn+1)
		}
	}
}
