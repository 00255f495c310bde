package mem

import (
	"fmt"
	"testing"
	"time"
	"unsafe"
)

// Tests of costs that must not grow with the wrong thing: each checks a
// structural bound (allocations, sizes kept), not a time.

func cliffTable(t testing.TB, db *DB, idx ...IndexDef) *Table {
	t.Helper()
	tb, err := db.CreateTable(TableDef{
		Name: "cliff",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeUint64},
			{Name: "g", Type: TypeUint64},
			{Name: "s", Type: TypeString, MaxLen: 32},
		},
		PrimaryKey: []string{"id"}, Indexes: idx,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func cliffRow(id, g uint64) []Value {
	return []Value{Uint64(id), Uint64(g), String(fmt.Sprintf("s%030d", id))}
}

// A transaction that deletes a row it inserted pays the same however many
// writes it holds: it used to rebuild its write map, an allocation per
// write, each time.
func TestDeleteOwnInsertCostIndependentOfWrites(t *testing.T) {
	db := Open(Options{})
	tb := cliffTable(t, db)
	tx := db.Begin()
	defer tx.Rollback()
	const held = 2000
	for i := range held {
		if err := tx.Insert(tb, cliffRow(uint64(i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	next := uint64(held)
	allocs := testing.AllocsPerRun(50, func() {
		if err := tx.Insert(tb, cliffRow(next, 0)); err != nil {
			t.Fatal(err)
		}
		if err := tx.Delete(tb, []Value{Uint64(next)}); err != nil {
			t.Fatal(err)
		}
		next++
	})
	if allocs > 20 {
		t.Errorf("an insert and a delete of it in a transaction of %d writes allocate %.0f times; want a few, not one per write", held, allocs)
	}
	// The writes left are exactly the ones held, each found by its key.
	if tx.Writes() != held {
		t.Fatalf("writes = %d, want %d", tx.Writes(), held)
	}
	// Deleting the held ones from the middle keeps the rest findable.
	for i := 0; i < held; i += 2 {
		if err := tx.Delete(tb, []Value{Uint64(uint64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range held {
		_, found, err := tx.Get(tb, []Value{Uint64(uint64(i))})
		if err != nil || found != (i%2 == 1) {
			t.Fatalf("row %d: found %v, %v", i, found, err)
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	n := 0
	check := db.Begin()
	defer check.Rollback()
	for i := range held {
		_, found, err := check.Get(tb, []Value{Uint64(uint64(i))})
		if err != nil || found != (i%2 == 1) {
			t.Fatalf("committed row %d: found %v, %v", i, found, err)
		}
		if found {
			n++
		}
	}
	if n != held/2 {
		t.Fatalf("committed %d rows, want %d", n, held/2)
	}
}

// A transaction that writes and reads many rows leaves no buffer of that
// size to the transactions that reuse its state: each is dropped past
// maxRecycled bytes.
func TestRecycledStateIsBounded(t *testing.T) {
	db := Open(Options{})
	tb := cliffTable(t, db, IndexDef{Name: "by_g", Columns: []string{"g"}, Kind: Hash})
	const n = 20000
	tx := db.Begin()
	for i := range n {
		if err := tx.Insert(tb, cliffRow(uint64(i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	st := tx.txState
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		caps := map[string]int{
			"reads": cap(st.reads) * int(unsafe.Sizeof(readRec{})), "absents": cap(st.absents) * int(unsafe.Sizeof(absentRec{})),
			"scans": cap(st.scans) * int(unsafe.Sizeof(scanRec{})), "writes": cap(st.writes) * int(unsafe.Sizeof(write{})),
			"claimBuf": cap(st.claimBuf) * int(unsafe.Sizeof(claim{})), "redo": cap(st.redo.Ops) * int(unsafe.Sizeof(Op{})),
			"cands": cap(st.cands) * 8, "scanCands": cap(st.scanCands) * 8, "hitBuf": cap(st.hitBuf) * int(unsafe.Sizeof(hit{})),
			"items": cap(st.items) * int(unsafe.Sizeof(oitem{})), "tables": cap(st.tables) * 8, "arena": cap(st.arena),
		}
		for name, bytes := range caps {
			if bytes > maxRecycled {
				t.Errorf("after %s: the recycled state keeps %s of %d bytes, more than %d", what, name, bytes, maxRecycled)
			}
		}
	}
	check(fmt.Sprintf("a commit of %d inserts", n))

	// Many reads, absent keys and a scan of many rows, validated.
	tx = db.Begin()
	st = tx.txState
	for i := range n {
		if _, _, err := tx.Get(tb, []Value{Uint64(uint64(2 * i))}); err != nil {
			t.Fatal(err)
		}
	}
	rows := 0
	if err := tx.Scan(tb, ScanSpec{Index: 1, Prefix: []Value{Uint64(0)}}, func(Record) bool { rows++; return true }); err != nil {
		t.Fatal(err)
	}
	if err := tx.Insert(tb, cliffRow(n, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if rows != n {
		t.Fatalf("scanned %d rows, want %d", rows, n)
	}
	check(fmt.Sprintf("a commit that read %d rows and scanned %d", n, n))
}

// shardSlots returns the slots of every shard of a hash index.
func shardSlots(x *hashIndex) int {
	n := 0
	for i := range x.shards {
		n += len(*x.shards[i].slots.Load())
	}
	return n
}

// A hash index whose table shrinks gives its slot arrays back; they used
// to stay at the largest size the table ever had.
func TestHashIndexShrinks(t *testing.T) {
	db := Open(Options{})
	tb := cliffTable(t, db, IndexDef{Name: "by_g", Columns: []string{"g"}, Kind: Hash})
	const n, keep = 60000, 300
	for lo := 0; lo < n; lo += 1000 {
		tx := db.Begin()
		for i := lo; i < lo+1000; i++ {
			if err := tx.Insert(tb, cliffRow(uint64(i), uint64(i%3))); err != nil { // by_g: 20000 rows per key
				t.Fatal(err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	pk := tb.state.Load().idx[0].(*hashIndex)
	full := shardSlots(pk)
	for lo := keep; lo < n; lo += 1000 {
		tx := db.Begin()
		for i := lo; i < min(lo+1000, n); i++ {
			if err := tx.Delete(tb, []Value{Uint64(uint64(i))}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if got, most := shardSlots(pk), hashShards*8+16*keep; got > most {
		t.Errorf("the primary key index has %d slots for %d rows (%d at %d rows); want at most %d", got, keep, full, n, most)
	}
	if got, most := shardSlots(tb.state.Load().idx[1].(*hashIndex)), hashShards*8+16*keep; got > most {
		t.Errorf("the secondary index has %d slots for %d rows; want at most %d", got, keep, most)
	}
	tx := db.Begin()
	defer tx.Rollback()
	for i := range n {
		_, found, err := tx.Get(tb, []Value{Uint64(uint64(i))})
		if err != nil || found != (i < keep) {
			t.Fatalf("row %d: found %v, %v", i, found, err)
		}
	}
	for g := range 3 {
		rows := 0
		if err := tx.Scan(tb, ScanSpec{Index: 1, Prefix: []Value{Uint64(uint64(g))}}, func(r Record) bool { rows++; return true }); err != nil {
			t.Fatal(err)
		}
		if rows != keep/3 {
			t.Errorf("key %d: %d rows, want %d", g, rows, keep/3)
		}
	}
}

// A table whose rows are deleted gives back the arrays of the pages that
// emptied (all but the one taking inserts), and its pages take rows
// again; a snapshot taken before the deletes still reads every row. The
// arrays used to stay for good.
func TestEmptiedPagesGiveBackTheirArrays(t *testing.T) {
	db := Open(Options{})
	tb := cliffTable(t, db)
	const n = 20000
	fill := func(lo, hi int) {
		for i := lo; i < hi; i += 500 {
			tx := db.Begin()
			for j := i; j < min(i+500, hi); j++ {
				if err := tx.Insert(tb, cliffRow(uint64(j), 0)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	fill(0, n)
	full := tb.Stats()
	if full.Pages < 10 {
		t.Fatalf("setup: %d pages", full.Pages)
	}
	sn := db.Snapshot()
	for i := 0; i < n; i += 500 {
		tx := db.Begin()
		for j := i; j < i+500; j++ {
			if err := tx.Delete(tb, []Value{Uint64(uint64(j))}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	empty := 0
	for pg := range int(tb.heap.npages.Load()) {
		if tb.heap.page(pg).data.Load() == &emptyPage {
			empty++
		}
	}
	if empty < int(full.Pages)-1 {
		t.Errorf("%d of %d pages gave back their arrays once empty; want all but the one taking inserts", empty, full.Pages)
	}
	if got, want := tb.Stats().HeapBytes, full.HeapBytes-int64(empty)*PageSize; got != want {
		t.Errorf("heap bytes %d, want %d", got, want)
	}
	rows := 0
	if err := sn.Scan(tb.ID(), func(r Record) error {
		if r.Uint64(0) != uint64(rows) {
			return fmt.Errorf("snapshot row %d: id %d", rows, r.Uint64(0))
		}
		rows++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sn.Close()
	if rows != n {
		t.Fatalf("the snapshot read %d rows, want %d", rows, n)
	}
	// The pages take rows again.
	fill(n, 2*n)
	if got := tb.Stats().Pages; got != full.Pages && got != full.Pages+1 {
		t.Errorf("%d pages after refilling, want about %d", got, full.Pages)
	}
	tx := db.Begin()
	defer tx.Rollback()
	for i := n; i < 2*n; i++ {
		r, found, err := tx.Get(tb, []Value{Uint64(uint64(i))})
		if err != nil || !found || r.Str(2) != fmt.Sprintf("s%030d", i) {
			t.Fatalf("row %d: %v %v", i, found, err)
		}
	}
}

// An ordered index whose slabs are mostly holes re-interns its keys a
// few with each change, not all in the change that finds the holes
// dominate, which held every reader and writer of the index for a time
// in proportion to its entries (140 ms at 500000). The slabs are still
// given back, and every entry keeps its key.
func TestOrderedIndexReinternsInSteps(t *testing.T) {
	x := newOrderedIndex()
	key := func(i int) []byte { return []byte(fmt.Sprintf("key-%09d", i)) }
	const n = 40000
	for i := range n {
		x.add(key(i), uint64(i))
	}
	slabs := x.slabBytes
	// Delete most entries, in an order that leaves holes in every slab,
	// until re-interning starts.
	i := 0
	for ; !x.moving && i < n; i++ {
		if i%4 != 0 {
			x.del(key(i), uint64(i))
		}
	}
	if !x.moving {
		t.Fatal("deleting 3 of 4 entries did not start a re-interning")
	}
	moved := 0
	x.tree.Scan(func(it oitem) bool {
		if oless(it, x.next) {
			moved++
		}
		return true
	})
	if moved > reinternStep {
		t.Fatalf("the change that started re-interning moved %d keys; want at most %d", moved, reinternStep)
	}
	// Changes go on, each moving a few keys, until it is done.
	steps := 0
	for ; x.moving; i++ {
		if i < n && i%4 != 0 {
			x.del(key(i), uint64(i))
		} else {
			x.add(key(n+i), uint64(n+i))
		}
		if steps++; steps > n {
			t.Fatal("re-interning does not end")
		}
	}
	for ; i < n; i++ {
		if i%4 != 0 {
			x.del(key(i), uint64(i))
		}
	}
	if x.slabBytes >= slabs/2 {
		t.Errorf("slabs of %d bytes after deleting 3 of 4 keys; %d before", x.slabBytes, slabs)
	}
	var seen int
	x.tree.Scan(func(it oitem) bool {
		id := int(it.rid)
		if string(key(id)) != it.key || mkItem(it.key, it.rid) != it {
			t.Fatalf("entry %d has key %q", id, it.key)
		}
		if id < n && id%4 != 0 {
			t.Fatalf("deleted entry %d is there", id)
		}
		seen++
		return true
	})
	for i := 0; i < n; i += 4 {
		if got := x.lookup(key(i), nil); len(got) != 1 || got[0] != uint64(i) {
			t.Fatalf("lookup %d: %v", i, got)
		}
	}
	if seen != int(x.entries()) {
		t.Fatalf("%d entries scanned, %d counted", seen, x.entries())
	}
}

// A scan of a hash index key with many rows takes them a batch at a time:
// one with a limit reads about as many entries as it delivers. It used to
// gather and sort all the key's entries first (3 ms for 10 rows of a key
// with 100000).
func TestHashScanReadsWhatItDelivers(t *testing.T) {
	db := Open(Options{})
	tb := cliffTable(t, db, IndexDef{Name: "by_g", Columns: []string{"g"}, Kind: Hash})
	const n = 30000
	for lo := 0; lo < n; lo += 1000 {
		tx := db.Begin()
		for i := lo; i < lo+1000; i++ {
			if err := tx.Insert(tb, cliffRow(uint64(i), uint64(i%2))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// Delete some rows of the key, so that batches meet gaps.
	tx := db.Begin()
	for i := 0; i < n; i += 6 {
		if err := tx.Delete(tb, []Value{Uint64(uint64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	scan := func(tx *Tx, limit int) []uint64 {
		var ids []uint64
		if err := tx.Scan(tb, ScanSpec{Index: 1, Prefix: []Value{Uint64(0)}, Limit: limit}, func(r Record) bool {
			ids = append(ids, r.Uint64(0))
			return true
		}); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	tx = db.Begin()
	all := scan(tx, 0)
	if _, err := tx.Commit(); err != nil { // validation runs the scan again
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for _, id := range all {
		if id%2 != 0 || id%6 == 0 || seen[id] {
			t.Fatalf("the scan delivered row %d", id)
		}
		seen[id] = true
	}
	if want := n/2 - n/6; len(all) != want {
		t.Fatalf("the scan delivered %d rows, want %d", len(all), want)
	}
	for _, limit := range []int{1, 10, 100, 1000} {
		tx := db.Begin()
		got := scan(tx, limit)
		if len(got) != limit || fmt.Sprint(got) != fmt.Sprint(all[:limit]) {
			t.Fatalf("limit %d: %v, want the first of %v", limit, got[:min(len(got), 5)], all[:5])
		}
		if c := cap(tx.scanCands); c > 4*(hashScanBatch+overflowAt) {
			t.Errorf("a scan with limit %d of a key with %d rows took %d candidates at once", limit, len(all), c)
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// KeptBytes reads a count: it neither walks the old versions a snapshot
// holds nor waits for the lock that commits keeping one take (it used to
// do both, for a time in proportion to the versions kept).
func TestKeptBytesIsACount(t *testing.T) {
	db := Open(Options{})
	tb := cliffTable(t, db)
	const n = 3000
	for lo := 0; lo < n; lo += 1000 {
		tx := db.Begin()
		for i := lo; i < lo+1000; i++ {
			if err := tx.Insert(tb, cliffRow(uint64(i), 0)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	sn := db.Snapshot()
	defer sn.Close()
	tx := db.Begin()
	for i := range n {
		if err := tx.Update(tb, []Value{Uint64(uint64(i))}, []ColumnValue{{Column: 1, Value: Uint64(1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	st := sn.tables[0]
	var want int64
	for _, b := range st.kept {
		want += int64(len(b))
	}
	if want == 0 {
		t.Fatal("setup: the snapshot kept nothing")
	}
	st.mu.Lock()
	done := make(chan int64, 1)
	go func() { done <- sn.KeptBytes() }() // with the lock held: it must not wait for it
	var got int64
	select {
	case got = <-done:
		st.mu.Unlock()
	case <-time.After(5 * time.Second):
		st.mu.Unlock()
		t.Fatal("KeptBytes waits for the lock commits take to keep a version")
	}
	if got != want {
		t.Fatalf("KeptBytes = %d, want %d", got, want)
	}
	rows := 0
	if err := sn.Scan(tb.ID(), func(r Record) error {
		if r.Uint64(1) != 0 {
			return fmt.Errorf("the snapshot read row %d as updated", r.Uint64(0))
		}
		rows++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if rows != n || sn.KeptBytes() != 0 {
		t.Fatalf("scanned %d rows, KeptBytes %d after", rows, sn.KeptBytes())
	}
}
