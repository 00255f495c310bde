package mem

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHashHints: every hash index entry's hint (but those in overflow
// trees: by_v has 30 rows per key) is where its row's bytes are, after inserts, updates in place (with and without a change of a
// secondary key), updates that move rows to other pages, deletes, and
// an index built on a populated table. A wrong hint would not make a
// read wrong, only slower, so nothing else would catch it. (No page here
// has to pack its records, which moves them and leaves hints wrong.)
// Then every hint is made wrong, and every read is still right.
func TestHashHints(t *testing.T) {
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{
		Name: "h",
		Columns: []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "v", Type: TypeUint64},
			{Name: "s", Type: TypeString, MaxLen: 8000}},
		PrimaryKey: []string{"k"},
		Indexes:    []IndexDef{{Name: "by_v", Columns: []string{"v"}, Kind: Hash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	const rows = 3000
	for k := range uint64(rows) {
		reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, []Value{Uint64(k), Uint64(k % 100), String("x")}) }, db)
	}
	checkHints(t, tb, "after the inserts")
	for k := uint64(0); k < rows; k += 3 {
		reviewCommit(t, func(tx *Tx) error {
			return tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 2, Value: String("yy")}})
		}, db)
	}
	checkHints(t, tb, "after updates in place")
	for k := uint64(1); k < rows; k += 3 {
		reviewCommit(t, func(tx *Tx) error {
			return tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 1, Value: Uint64(k + 7)}})
		}, db)
	}
	checkHints(t, tb, "after updates of a secondary key")
	pages := tb.heap.npages.Load()
	for k := uint64(2); k < rows; k += 30 {
		reviewCommit(t, func(tx *Tx) error {
			return tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 2, Value: String(strings.Repeat("z", 7000))}})
		}, db)
	}
	if tb.heap.npages.Load() == pages {
		t.Fatal("no row moved to a new page")
	}
	checkHints(t, tb, "after rows moved")
	for k := uint64(5); k < rows; k += 7 {
		reviewCommit(t, func(tx *Tx) error { return tx.Delete(tb, []Value{Uint64(k)}) }, db)
	}
	checkHints(t, tb, "after deletes")
	if _, err := db.CreateIndex(context.Background(), "h", IndexDef{Name: "by_vk", Columns: []string{"v", "k"}, Kind: Hash}); err != nil {
		t.Fatal(err)
	}
	checkHints(t, tb, "after an index was built")

	// Wrong hints cost a wasted prefetch, never a wrong read.
	st := tb.state.Load()
	for _, x := range st.idx {
		hx := x.(*hashIndex)
		for i := range hx.shards {
			slots := *hx.shards[i].slots.Load()
			for j := range slots {
				if slots[j].h.Load()&hUsed != 0 {
					w := slots[j].rid.Load()
					slots[j].rid.Store(w&ridMask | uint64(j*7919)%PageSize<<ridBits)
				}
			}
		}
	}
	tx := db.Begin()
	defer tx.Rollback()
	for k := range uint64(rows) {
		r, found, err := tx.Get(tb, []Value{Uint64(k)})
		if err != nil || found != (k%7 != 5) || found && r.Uint64(0) != k {
			t.Fatalf("get %d with wrong hints: found %v, %v", k, found, err)
		}
	}
}

// checkHints fails unless every entry of tb's hash indexes points at a
// present row and holds the offset of its bytes.
func checkHints(t *testing.T, tb *Table, when string) {
	t.Helper()
	st := tb.state.Load()
	for ix, x := range st.idx {
		hx, ok := x.(*hashIndex)
		if !ok {
			continue
		}
		n := 0
		for i := range hx.shards {
			slots := *hx.shards[i].slots.Load()
			for j := range slots {
				if slots[j].h.Load()&hUsed == 0 {
					continue
				}
				w := slots[j].rid.Load()
				rid := w & ridMask
				if tid := tb.heap.tid(rid); tid&tidAbsent != 0 {
					t.Fatalf("%s: index %s: an entry points at no row (RID %#x)", when, st.s.indexes[ix].name, rid)
				}
				if got, want := hintOf(w), tb.heap.offset(rid); got != want {
					t.Fatalf("%s: index %s: RID %#x hints offset %d, its bytes are at %d", when, st.s.indexes[ix].name, rid, got, want)
				}
				n++
			}
			// Entries in an overflow tree keep the hint they came with.
			if o := hx.shards[i].over.Load(); o != nil {
				o.tree.Scan(func(e oentry) bool {
					if tid := tb.heap.tid(e.w & ridMask); tid&tidAbsent != 0 {
						t.Fatalf("%s: index %s: an overflow entry points at no row (RID %#x)", when, st.s.indexes[ix].name, e.w&ridMask)
					}
					n++
					return true
				})
			}
		}
		if want := tb.rows.Load(); int64(n) != want {
			t.Fatalf("%s: index %s has %d entries for %d rows", when, st.s.indexes[ix].name, n, want)
		}
	}
	t.Logf("%s: %d rows, hints right", when, tb.rows.Load())
}

// TestPageSpace runs random inserts (some of placeholders with no
// bytes), updates that grow, shrink or keep a row's size, and deletes
// against a heap, checking every row's bytes and each page's space as
// it goes: no two records overlap each other or a hole, the counts of
// dead and hole bytes add up, with the live bytes, to where the records
// end, the hole list holds no hole too small to list and no loop, and
// the records stay below the slot directory. It also holds on
// to versions as a lock-free reader would (the slices reads return) and
// checks that nothing overwrites them while they are held. Pages
// reclaim (keeping offsets) and pack many times over.
func TestPageSpace(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	h := newHeap(8)
	rows := map[uint64][]byte{}
	var rids []uint64
	type held struct{ seen, want []byte }
	var reads []held // versions a reader holds, oldest first
	row := func() []byte {
		n := 8 + rng.IntN(200)
		switch rng.IntN(50) {
		case 0:
			n = 2000 + rng.IntN(6000)
		case 1:
			n = 0 // a placeholder
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for step := 0; step < 30000; step++ {
		var touched uint64 // the RID written
		switch op := rng.IntN(20); {
		case op < 3 || len(rids) < 2000:
			rec := row()
			rid := h.insert(rec, 1)
			rows[rid] = rec
			rids = append(rids, rid)
			touched = rid
		case op < 17:
			i := rng.IntN(len(rids))
			rec := row()
			if rng.IntN(2) == 0 {
				rec = rec[:min(len(rec), len(rows[rids[i]]))]
			}
			if !h.replace(rids[i], rec, nil, false) {
				rec = rows[rids[i]] // no room: the caller would move it
			}
			rows[rids[i]] = rec
			touched = rids[i]
		default:
			i := rng.IntN(len(rids))
			touched = rids[i]
			h.remove(rids[i], tidAbsent|2, nil)
			delete(rows, rids[i])
			rids[i] = rids[len(rids)-1]
			rids = rids[:len(rids)-1]
		}
		if len(rids) > 0 && rng.IntN(4) == 0 {
			b := h.readOwned(rids[rng.IntN(len(rids))])
			reads = append(reads, held{b, bytes.Clone(b)})
			if len(reads) > 200 {
				reads = reads[1:]
			}
		}
		pg, _ := splitRID(touched)
		checkPage(t, h, pg)
		if step%149 == 0 {
			checkRows(t, h, rows)
			for _, r := range reads {
				if !bytes.Equal(r.seen, r.want) {
					t.Fatalf("step %d: a version a reader held was overwritten", step)
				}
			}
		}
	}
}

// checkRows checks every row's bytes.
func checkRows(t *testing.T, h *heap, rows map[uint64][]byte) {
	t.Helper()
	for rid, want := range rows {
		if got := h.readOwned(rid); !bytes.Equal(got, want) {
			t.Fatalf("row %#x: %d bytes, not the %d written", rid, len(got), len(want))
		}
	}
}

// checkPage checks the space of page pg.
func checkPage(t *testing.T, h *heap, pg int) {
	t.Helper()
	{
		p := h.page(pg)
		d := p.data.Load()
		type span struct{ off, n int }
		var all []span
		live, hole := 0, 0
		for s := 0; s < p.nslots; s++ {
			if off, n := loadLoc(d, s); n > 0 {
				all = append(all, span{off, n})
				live += n
			}
		}
		for at, k := p.holes, 0; at != 0; k++ {
			next, n := readHole(d, at-1)
			if n < holeMin || k > PageSize/holeMin {
				t.Fatalf("page %d: hole %d at %d holds %d bytes (or the list loops)", pg, k, at-1, n)
			}
			all = append(all, span{at - 1, n})
			hole += n
			at = next
		}
		if hole != p.hole {
			t.Fatalf("page %d: %d hole bytes listed, %d counted", pg, hole, p.hole)
		}
		if live+p.dead+hole != p.end {
			t.Fatalf("page %d: %d live, %d dead and %d hole bytes, but the records end at %d", pg, live, p.dead, hole, p.end)
		}
		slices.SortFunc(all, func(a, b span) int { return a.off - b.off })
		for i, s := range all {
			if s.off+s.n > p.end {
				t.Fatalf("page %d: bytes %d+%d past the end of records %d", pg, s.off, s.n, p.end)
			}
			if i > 0 && all[i-1].off+all[i-1].n > s.off {
				t.Fatalf("page %d: bytes %d+%d overlap %d+%d", pg, all[i-1].off, all[i-1].n, s.off, s.n)
			}
		}
		if p.end > PageSize-slotSize*p.nslots {
			t.Fatalf("page %d: records end at %d, in the slot directory of %d slots", pg, p.end, p.nslots)
		}
	}
}

// TestReclaimSkipsNewSlot: an insert that takes a new slot, in a page
// whose free space lies in dead versions, reclaims the page before its
// slot word is written. That word's place may still hold old bytes
// (here, all ones: a record past the end of the page); reclaim must not
// read it as a record.
func TestReclaimSkipsNewSlot(t *testing.T) {
	h := newHeap(8)
	rec := func(b byte) []byte { return bytes.Repeat([]byte{b}, 1000) }
	rows := map[uint64][]byte{}
	for i := range 20 {
		rows[h.insert(rec(byte(i)), 1)] = rec(byte(i))
	}
	p := h.page(0)
	if p.nslots != 20 {
		t.Fatalf("%d rows went into the first page, want 20", p.nslots)
	}
	// New versions use up the space above the records, leaving less than
	// a row but room for a slot word.
	for i := 0; PageSize-slotSize*(p.nslots+1)-p.end >= 1000; i++ {
		rid := ridOf(0, i%20)
		if !h.replace(rid, rec(byte(100+i)), nil, false) {
			t.Fatal("no room for an update")
		}
		rows[rid] = rec(byte(100 + i))
	}
	if p.dead == 0 || p.holes != 0 {
		t.Fatalf("%d dead bytes and hole list %d before the insert", p.dead, p.holes)
	}
	*slotWord(p.data.Load(), 20) = ^uint64(0) // old bytes where the new slot's word goes
	rid := h.insert(rec(200), 1)
	if pg, slot := splitRID(rid); pg != 0 || slot != 20 {
		t.Fatalf("the insert took page %d slot %d, want page 0 slot 20", pg, slot)
	}
	rows[rid] = rec(200)
	if p.holes == 0 {
		t.Fatal("the insert did not reclaim the page")
	}
	checkRows(t, h, rows)
	checkPage(t, h, 0)
}
