package mem

import (
	"testing"
)

// Tests of lookups that meet an index entry whose slot another row has
// taken, or whose hash another key shares.

func staleTable(t *testing.T, db *DB, kind IndexKind) *Table {
	t.Helper()
	tb, err := db.CreateTable(TableDef{
		Name:        "stale",
		Columns:     []ColumnDef{{Name: "id", Type: TypeInt64}, {Name: "body", Type: TypeBytes, MaxLen: 24000}},
		PrimaryKey:  []string{"id"},
		PrimaryKind: kind,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func staleRow(id int64, n int) []Value {
	return []Value{Int64(id), Bytes(make([]byte, n))}
}

// staleRows opens a database with the stale table, its primary key of
// kind, holding rows 1, 2, ... with bodies of the given sizes.
func staleRows(t *testing.T, kind IndexKind, sizes ...int) (*DB, *Table) {
	t.Helper()
	db := Open(Options{})
	tb := staleTable(t, db, kind)
	reviewCommit(t, func(tx *Tx) error {
		for i, n := range sizes {
			if err := tx.Insert(tb, staleRow(int64(i+1), n)); err != nil {
				return err
			}
		}
		return nil
	}, db)
	return db, tb
}

// loneGet runs a transaction of one Get of row id of tb, which commits.
func loneGet(t *testing.T, db *DB, tb *Table, id int64) (Record, bool) {
	t.Helper()
	tx := db.Begin()
	rec, found, err := tx.Get(tb, ccKey(id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return rec, found
}

// TestPointStaleSlot freezes a lone Get between its index lookup and its
// read of the row, and meanwhile moves the row (an update that outgrows
// its page) and inserts another row into the slot it left. The Get must
// still find the row: it existed throughout. Before lookups re-ran on a
// candidate with another key, it answered "not found".
func TestPointStaleSlot(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			db, tb := staleRows(t, kind, 5000, 10000)
			old := ccRID(tb, 1)
			fired := false
			testHookLookedUp = func(seen *Table) {
				if seen != tb || fired {
					return
				}
				fired = true
				// Row 1 no longer fits beside row 2: it moves to a new
				// page, and its old page, now less than half full, takes
				// the next insert that the new page has no room for.
				reviewCommit(t, func(tx *Tx) error {
					return tx.Update(tb, ccKey(1), []ColumnValue{{Column: 1, Value: Bytes(make([]byte, 23000))}})
				}, db)
				reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, staleRow(3, 12000)) }, db)
				if got := ccRID(tb, 3); got != old {
					t.Fatalf("row 3 went to RID %x, not to %x, which row 1 left: the test no longer sets up a reused slot", got, old)
				}
			}
			defer func() { testHookLookedUp = nil }()
			rec, found := loneGet(t, db, tb, 1)
			if !fired {
				t.Fatal("the hook never ran")
			}
			switch {
			case !found:
				t.Fatal("a lone Get missed a row that existed throughout")
			case rec.Int64(0) != 1 || len(rec.Str(1)) != 23000:
				t.Fatalf("a lone Get of row 1 returned row %d with a %d-byte body", rec.Int64(0), len(rec.Str(1)))
			}
		})
	}
}

// TestPointCollision plants a hash index entry that shares a key's hash
// but leads to a row with another key, as a true 63-bit collision would:
// a Get of the key answers at once, found or not, and never takes the
// entry's row for the key's.
func TestPointCollision(t *testing.T) {
	db := Open(Options{})
	tb := staleTable(t, db, Hash)
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, staleRow(2, 10)) }, db) // row 1 comes later
	st := tb.state.Load()
	key, err := st.s.appendKey(nil, 0, 0, ccKey(1))
	if err != nil {
		t.Fatal(err)
	}
	st.idx[0].add(key, ccRID(tb, 2))
	lookups := 0
	testHookLookedUp = func(*Table) { lookups++ }
	defer func() { testHookLookedUp = nil }()

	get := func() (Record, bool) {
		t.Helper()
		lookups = 0
		rec, found := loneGet(t, db, tb, 1)
		if lookups > 2 {
			t.Errorf("%d lookups: one, and one more between stamps, should do", lookups)
		}
		return rec, found
	}
	if rec, found := get(); found {
		t.Fatalf("key 1, never inserted, found: row %d", rec.Int64(0))
	}
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, staleRow(1, 10)) }, db)
	switch rec, found := get(); {
	case !found:
		t.Fatal("key 1 beside a colliding entry: not found")
	case rec.Int64(0) != 1:
		t.Fatalf("key 1 beside a colliding entry: got row %d", rec.Int64(0))
	}
}

// TestIndexStamp: a stamp moves when an entry of the key comes or goes,
// and holds while nothing changes, for both kinds of index.
func TestIndexStamp(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			_, tb := staleRows(t, kind, 10, 10)
			st := tb.state.Load()
			x := st.idx[0]
			key, err := st.s.appendKey(nil, 0, 0, ccKey(1))
			if err != nil {
				t.Fatal(err)
			}
			other := ccRID(tb, 2) // an entry of key 1 for row 2, as a move adds
			s0 := x.stamp(key)
			if x.lookup(key, nil); x.stamp(key) != s0 {
				t.Fatal("a lookup moved the stamp")
			}
			x.add(key, other)
			s1 := x.stamp(key)
			if s1 == s0 {
				t.Fatal("adding an entry left the stamp")
			}
			x.del(key, other)
			if x.stamp(key) == s1 {
				t.Fatal("removing an entry left the stamp")
			}
		})
	}
}

// TestValidationSkipsItsOwnEntry: a transaction that found a unique key
// absent, then gave a row that key, re-runs the lookup when it validates
// and meets its own new entry, whose row has the old key until it
// installs. That entry is no reason to look again. It was taken for a
// collision or a stale entry: the lookup ran again until two stamps of
// the index matched, and while other transactions' claims kept changing
// an ordered index's stamp (here a hook changes it on every lookup), the
// commit spun, holding the table's install lock, up to ErrCorrupt.
func TestValidationSkipsItsOwnEntry(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			db := Open(Options{})
			tb := reviewKV(t, db, "t", IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: kind})
			reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, []Value{Uint64(1), Uint64(10)}) }, db)
			ix, err := tb.Index("by_v")
			if err != nil {
				t.Fatal(err)
			}
			tx := db.Begin()
			defer tx.Rollback()
			if _, found, err := tx.GetBy(tb, ix, []Value{Uint64(20)}); err != nil || found {
				t.Fatalf("v 20: found %v, %v", found, err)
			}
			if err := tx.Update(tb, []Value{Uint64(1)}, []ColumnValue{{Column: 1, Value: Uint64(20)}}); err != nil {
				t.Fatal(err)
			}
			lookups := 0
			testHookLookedUp = func(seen *Table) {
				if seen != tb {
					return
				}
				lookups++
				switch x := tb.state.Load().idx[ix].(type) {
				case *orderedIndex:
					x.changes.Add(1) // as another transaction's claim would
				case *hashIndex:
					for i := range x.shards {
						x.shards[i].seq.Add(2)
					}
				}
			}
			defer func() { testHookLookedUp = nil }()
			if _, err := tx.Commit(); err != nil {
				t.Fatalf("commit: %v (after %d lookups)", err, lookups)
			}
			if lookups > 1 {
				t.Fatalf("validation looked v 20 up %d times", lookups)
			}
		})
	}
}
