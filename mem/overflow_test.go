package mem

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// overflowTable makes a table whose hash index by_n (index 1) has many
// rows per key: n takes groups values.
func overflowTable(t *testing.T, rows, groups int) (*DB, *Table) {
	t.Helper()
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{
		Name:       "o",
		Columns:    []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "n", Type: TypeUint64}},
		PrimaryKey: []string{"k"},
		Indexes:    []IndexDef{{Name: "by_n", Columns: []string{"n"}, Kind: Hash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for lo := 0; lo < rows; lo += 500 {
		reviewCommit(t, func(tx *Tx) error {
			for k := lo; k < min(lo+500, rows); k++ {
				if err := tx.Insert(tb, []Value{Uint64(uint64(k)), Uint64(uint64(k % groups))}); err != nil {
					return err
				}
			}
			return nil
		}, db)
	}
	return db, tb
}

// group returns the primary keys of the rows whose n is n, sorted, as a
// lookup in by_n finds them.
func group(t *testing.T, db *DB, tb *Table, n uint64) []uint64 {
	t.Helper()
	tx := db.Begin()
	defer tx.Rollback()
	var ks []uint64
	if err := tx.Scan(tb, ScanSpec{Index: 1, Prefix: []Value{Uint64(n)}}, func(r Record) bool {
		ks = append(ks, r.Uint64(0))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ks)
	return ks
}

// checkOverflow fails unless every hash index of tb keeps its entries as
// the overflow rule says: at most overflowAt entries of one hash in a
// shard's slot array; the entries of a hash all marked or none; and a
// hash with entries in the overflow tree has overflowAt marked ones in
// the array. It returns how many entries the trees hold.
func checkOverflow(t *testing.T, tb *Table) int {
	t.Helper()
	inTrees := 0
	for ix, x := range tb.state.Load().idx {
		hx, ok := x.(*hashIndex)
		if !ok {
			continue
		}
		for i := range hx.shards {
			sh := &hx.shards[i]
			inSlots, marked := map[uint64]int{}, map[uint64]int{}
			slots := *sh.slots.Load()
			for j := range slots {
				if h := slots[j].h.Load(); h&hUsed != 0 {
					inSlots[h]++
					if slots[j].rid.Load()&overMark != 0 {
						marked[h]++
					}
				}
			}
			for h, n := range inSlots {
				if n > overflowAt || marked[h] != 0 && marked[h] != n {
					t.Fatalf("index %d shard %d: %d entries of hash %#x in the slots, %d of them marked", ix, i, n, h, marked[h])
				}
			}
			if o := sh.over.Load(); o != nil {
				o.tree.Scan(func(e oentry) bool {
					if marked[e.h] != overflowAt {
						t.Fatalf("index %d shard %d: hash %#x has entries in the tree and %d marked in the slots", ix, i, e.h, marked[e.h])
					}
					inTrees++
					return true
				})
			}
		}
	}
	return inTrees
}

// TestHashIndexManyRowsPerKey: a hash index whose keys each have many
// rows keeps overflowAt of a key's entries in its slot array and the
// rest in the overflow tree, through inserts, deletes, updates that move
// rows between keys, and a build on a populated table; every lookup
// finds exactly the rows with its key throughout.
func TestHashIndexManyRowsPerKey(t *testing.T) {
	const rows, groups = 4000, 5
	db, tb := overflowTable(t, rows, groups)
	model := map[uint64]uint64{} // k -> n
	for k := range uint64(rows) {
		model[k] = k % groups
	}
	check := func(when string) {
		t.Helper()
		if checkOverflow(t, tb) == 0 {
			t.Fatalf("%s: no entry in an overflow tree", when)
		}
		for n := range uint64(groups + 1) {
			var want []uint64
			for k, m := range model {
				if m == n {
					want = append(want, k)
				}
			}
			slices.Sort(want)
			if got := group(t, db, tb, n); !slices.Equal(got, want) {
				t.Fatalf("%s: key %d finds %d rows, want %d", when, n, len(got), len(want))
			}
		}
	}
	check("after the inserts")

	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 6 {
		reviewCommit(t, func(tx *Tx) error {
			for range 300 {
				k := uint64(rng.IntN(rows + 500))
				n, present := model[k]
				switch {
				case !present:
					n = uint64(rng.IntN(groups + 1))
					if err := tx.Insert(tb, []Value{Uint64(k), Uint64(n)}); err != nil {
						return err
					}
					model[k] = n
				case rng.IntN(2) == 0:
					if err := tx.Delete(tb, []Value{Uint64(k)}); err != nil {
						return err
					}
					delete(model, k)
				default:
					n = uint64(rng.IntN(groups + 1))
					if err := tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 1, Value: Uint64(n)}}); err != nil {
						return err
					}
					model[k] = n
				}
			}
			return nil
		}, db)
		check("after round " + string(rune('1'+round)))
	}

	// Empty a key's group: its entries leave the tree, then the slots.
	reviewCommit(t, func(tx *Tx) error {
		for k, n := range model {
			if n == 0 {
				if err := tx.Delete(tb, []Value{Uint64(k)}); err != nil {
					return err
				}
				delete(model, k)
			}
		}
		return nil
	}, db)
	check("after a key lost all its rows")

	if _, err := db.CreateIndex(context.Background(), "o", IndexDef{Name: "by_n2", Columns: []string{"n"}, Kind: Hash}); err != nil {
		t.Fatal(err)
	}
	before := checkOverflow(t, tb)
	if _, err := db.DropIndex("o", "by_n"); err != nil {
		t.Fatal(err)
	}
	if got := checkOverflow(t, tb); got == 0 || got*2 != before {
		t.Fatalf("the index built on the populated table holds %d entries in its trees; both held %d", got, before)
	}
	check("after a build on the populated table")
}

// TestHashOverflowConcurrentReads: lookups of keys whose entries overflow,
// while other transactions move rows between those keys two at a time
// (so each key keeps its number of rows), find the right number of rows
// in every transaction that commits, and the race detector finds no
// unsynchronized access to the trees.
func TestHashOverflowConcurrentReads(t *testing.T) {
	const rows, groups = 2000, 4
	db, tb := overflowTable(t, rows, groups)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; i < 300 && !stop.Load(); i++ {
				a, b := uint64(rng.IntN(rows)), uint64(rng.IntN(rows))
				tx := db.Begin()
				ra, _, err1 := tx.Get(tb, []Value{Uint64(a)})
				rb, _, err2 := tx.Get(tb, []Value{Uint64(b)})
				if err := errors.Join(err1, err2); err != nil {
					tx.Rollback()
					errs <- err
					return
				}
				na, nb := ra.Uint64(1), rb.Uint64(1)
				err1 = tx.Update(tb, []Value{Uint64(a)}, []ColumnValue{{Column: 1, Value: Uint64(nb)}})
				err2 = tx.Update(tb, []Value{Uint64(b)}, []ColumnValue{{Column: 1, Value: Uint64(na)}})
				if err := errors.Join(err1, err2); err != nil {
					tx.Rollback()
					errs <- err
					return
				}
				if _, err := tx.Commit(); err != nil && !errors.Is(err, ErrConflict) {
					errs <- err
					return
				}
			}
		}()
	}
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400 && !stop.Load(); i++ {
				n := uint64((i + r) % groups)
				tx := db.Begin()
				count := 0
				if err := tx.Scan(tb, ScanSpec{Index: 1, Prefix: []Value{Uint64(n)}}, func(Record) bool {
					count++
					return true
				}); err != nil {
					tx.Rollback()
					errs <- err
					return
				}
				_, err := tx.Commit()
				if errors.Is(err, ErrConflict) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				if count != rows/groups {
					errs <- errors.New("a committed lookup found the wrong number of rows")
					stop.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkOverflow(t, tb)
}

// TestHashBuildSizesSlotsForWhatTheyHold: an index built on a populated
// table (CREATE INDEX, or an image load) sizes each shard's slot array
// for the entries it keeps there, not for those that went to the
// overflow tree, so that it takes no more memory than the same index
// kept up row by row.
func TestHashBuildSizesSlotsForWhatTheyHold(t *testing.T) {
	const rows, groups = 20000, 4
	db, tb := overflowTable(t, rows, groups)
	if _, err := db.CreateIndex(context.Background(), "o", IndexDef{Name: "by_n2", Columns: []string{"n"}, Kind: Hash}); err != nil {
		t.Fatal(err)
	}
	if checkOverflow(t, tb) == 0 {
		t.Fatal("no entry in an overflow tree")
	}
	st := tb.state.Load()
	kept, built := st.idx[1].(*hashIndex), st.idx[2].(*hashIndex)
	for i := range built.shards {
		sh := &built.shards[i]
		n := 8
		for n < 2*sh.used {
			n *= 2
		}
		if got := len(*sh.slots.Load()); got > n {
			t.Fatalf("shard %d keeps %d entries in its slot array, in %d slots (%d would do)", i, sh.used, got, n)
		}
	}
	if k, b := kept.memBytes(), built.memBytes(); b > 2*k {
		t.Fatalf("the index built on the populated table takes %d bytes, the one kept up row by row %d", b, k)
	}
}

// TestHashOverflowReadDoesNotHoldOffWriters: a lookup reading a key's
// entries in an overflow tree stops once the shard's seq moves (it would
// retry anyway), so a writer of the key, which moves seq and then waits
// for the tree's lock, waits for a few entries of it, not for all of
// them, while every reader and writer of the shard waits behind it.
// With seq as the lookup began, the read takes every entry.
func TestHashOverflowReadDoesNotHoldOffWriters(t *testing.T) {
	const rows = 10000
	_, tb := overflowTable(t, rows, 1)
	st := tb.state.Load()
	hx := st.idx[1].(*hashIndex)
	var key []byte
	tb.heap.each(func(_ uint64, row []byte) bool {
		key = st.s.appendRowKey(nil, 1, row)
		return false
	})
	h, sh := hx.hash(key)
	s1 := sh.seq.Load()
	if n := len(sh.candidates(h, nil, 0, s1)); n != rows {
		t.Fatalf("a read with the shard's seq unmoved finds %d entries, want %d", n, rows)
	}
	if n := len(sh.candidates(h, nil, 0, s1-2)); n > overflowAt+64 {
		t.Fatalf("a read whose seq has moved goes on to %d entries of %d", n, rows)
	}
}
