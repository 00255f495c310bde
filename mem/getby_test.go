package mem

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestGetByManyWrites: in a transaction of many writes, GetBy by a unique
// secondary key finds what a scan of the key, merged with the writes,
// finds: the transaction's own rows with the key, rows it changed to
// another key or deleted no more, and committed rows it did not touch.
// Keys are never reused, so at most one row has each.
func TestGetByManyWrites(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			db := Open(Options{})
			tb, err := db.CreateTable(TableDef{Name: "s", Columns: []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "m", Type: TypeUint64}},
				PrimaryKey: []string{"k"}, Indexes: []IndexDef{{Name: "by_m", Columns: []string{"m"}, Unique: true, Kind: kind}}})
			if err != nil {
				t.Fatal(err)
			}
			next := uint64(1000) // the next m never used
			reviewCommit(t, func(tx *Tx) error {
				for k := range uint64(200) {
					if err := tx.Insert(tb, []Value{Uint64(k), Uint64(next)}); err != nil {
						return err
					}
					next++
				}
				return nil
			}, db)
			ix, _ := tb.Index("by_m")
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 1))
			for round := range 20 {
				tx := db.Begin()
				for op := range 300 {
					k := rng.Uint64N(400)
					switch rng.IntN(4) {
					case 0:
						_ = tx.Insert(tb, []Value{Uint64(k), Uint64(next)}) // a duplicate primary key fails, changing nothing
					case 1:
						_ = tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 1, Value: Uint64(next)}})
					case 2:
						_ = tx.Delete(tb, []Value{Uint64(k)})
					default:
						if err := tx.Upsert(tb, []Value{Uint64(k), Uint64(next)}); err != nil {
							t.Fatal(err)
						}
					}
					next++
					for range 3 {
						m := 1000 + rng.Uint64N(next-1000)
						r, found, err := tx.GetBy(tb, ix, []Value{Uint64(m)})
						if err != nil {
							t.Fatal(err)
						}
						var want Record
						if err := tx.Scan(tb, ScanSpec{Index: ix, Prefix: []Value{Uint64(m)}}, func(r Record) bool {
							if want.Valid() {
								t.Fatalf("m=%d: two rows", m)
							}
							want = r
							return true
						}); err != nil {
							t.Fatal(err)
						}
						if found != want.Valid() || found && r.Uint64(0) != want.Uint64(0) {
							t.Fatalf("round %d op %d (%d writes): GetBy m=%d found %v (k=%d), a scan %v (k=%d)", round, op, tx.Writes(), m, found, r.Uint64(0), want.Valid(), want.Uint64(0))
						}
					}
				}
				if rng.IntN(2) == 0 {
					if _, err := tx.Commit(); err != nil {
						t.Fatal(err)
					}
				} else {
					tx.Rollback()
				}
			}
		})
	}
}

// getByTables makes two tables (k, m, n) with unique indexes by_m (hash)
// and by_n (ordered), and a third table for filler writes.
func getByTables(t *testing.T, db *DB) (a, b, f *Table) {
	t.Helper()
	mk := func(name string) *Table {
		tb, err := db.CreateTable(TableDef{Name: name, Columns: []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "m", Type: TypeUint64}, {Name: "n", Type: TypeUint64}},
			PrimaryKey: []string{"k"}, Indexes: []IndexDef{
				{Name: "by_m", Columns: []string{"m"}, Unique: true, Kind: Hash},
				{Name: "by_n", Columns: []string{"n"}, Unique: true, Kind: Ordered},
			}})
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	return mk("a"), mk("b"), mk("f")
}

// TestGetByManyModel: GetBy in a transaction of many writes, under
// every kind of write (Insert, Upsert, Update, Delete, Relog of present
// and absent keys), over two tables and two indexes each interleaved,
// with keys reused and DDL on the tables between calls, finds a row iff
// a merged scan of the key finds one, and then one of the rows it finds.
func TestGetByManyModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	db := Open(Options{})
	ta, tbb, tf := getByTables(t, db)
	tables := []*Table{ta, tbb}
	const dom = 40
	for _, tb := range tables {
		reviewCommit(t, func(tx *Tx) error {
			for k := range uint64(dom / 2) {
				if err := tx.Insert(tb, []Value{Uint64(k), Uint64(k), Uint64(k)}); err != nil {
					return err
				}
			}
			return nil
		}, db)
	}
	ddl := 0
	for round := range 60 {
		tx := db.Begin()
		for i := range uint64(9) {
			if err := tx.Insert(tf, []Value{Uint64(i), Uint64(i), Uint64(i)}); err != nil {
				t.Fatal(err)
			}
		}
		for op := range 200 {
			tb := tables[rng.IntN(2)]
			k := rng.Uint64N(dom)
			m, n := rng.Uint64N(dom), rng.Uint64N(dom)
			switch rng.IntN(6) {
			case 0:
				_ = tx.Insert(tb, []Value{Uint64(k), Uint64(m), Uint64(n)})
			case 1:
				_ = tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 1 + rng.IntN(2), Value: Uint64(m)}})
			case 2:
				_ = tx.Delete(tb, []Value{Uint64(k)})
			case 3:
				if _, err := tx.Relog(tb, []Value{Uint64(k)}); err != nil {
					t.Fatal(err)
				}
			case 4:
				if rng.IntN(20) == 0 {
					// DDL between calls: a new index and its drop change
					// the table's state.
					ddl++
					if _, err := db.CreateIndex(context.Background(), tb.name, IndexDef{Name: "x", Columns: []string{"n", "m"}, Kind: Ordered}); err != nil {
						t.Fatal(err)
					}
					if _, err := db.DropIndex(tb.name, "x"); err != nil {
						t.Fatal(err)
					}
				}
			default:
				if err := tx.Upsert(tb, []Value{Uint64(k), Uint64(m), Uint64(n)}); err != nil {
					t.Fatal(err)
				}
			}
			for range 4 {
				tb := tables[rng.IntN(2)]
				ix := 1 + rng.IntN(2)
				v := rng.Uint64N(dom)
				r, found, err := tx.GetBy(tb, ix, []Value{Uint64(v)})
				if err != nil {
					t.Fatal(err)
				}
				var ks []uint64
				if err := tx.Scan(tb, ScanSpec{Index: ix, Prefix: []Value{Uint64(v)}}, func(r Record) bool {
					ks = append(ks, r.Uint64(0))
					return true
				}); err != nil {
					t.Fatal(err)
				}
				if found != (len(ks) > 0) {
					t.Fatalf("round %d op %d: GetBy %s ix %d = %d found %v (k=%d); a merged scan finds k in %v", round, op, tb.name, ix, v, found, r.Uint64(0), ks)
				}
				if found {
					in := false
					for _, k := range ks {
						in = in || k == r.Uint64(0)
					}
					if !in {
						t.Fatalf("round %d op %d: GetBy %s ix %d = %d found k=%d; a merged scan finds k in %v", round, op, tb.name, ix, v, r.Uint64(0), ks)
					}
				}
			}
		}
		tx.Rollback()
	}
	t.Logf("%d DDL pairs", ddl)
}

// Sanity: GetBy in a transaction of many writes that found a key absent
// in the committed rows, or found a committed row it hides, is checked
// at commit like a merged scan was.
func TestGetByManyValidation(t *testing.T) {
	db := Open(Options{})
	ta, _, tf := getByTables(t, db)
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(ta, []Value{Uint64(1), Uint64(10), Uint64(1)}) }, db)
	begin := func() *Tx {
		tx := db.Begin()
		for i := range uint64(linearWrites + 1) {
			if err := tx.Insert(tf, []Value{Uint64(i), Uint64(i), Uint64(i)}); err != nil {
				t.Fatal(err)
			}
		}
		return tx
	}
	// Absent, then another commits the key.
	tx := begin()
	if _, found, err := tx.GetBy(ta, 1, []Value{Uint64(20)}); err != nil || found {
		t.Fatal(found, err)
	}
	reviewCommit(t, func(o *Tx) error { return o.Insert(ta, []Value{Uint64(2), Uint64(20), Uint64(2)}) }, db)
	if _, err := tx.Commit(); !errors.Is(err, ErrConflict) {
		t.Errorf("absent key taken since: commit gave %v, want a conflict", err)
	}
	// Found a committed row, which another then changes.
	tx = begin()
	if err := tx.Upsert(ta, []Value{Uint64(9), Uint64(90), Uint64(9)}); err != nil {
		t.Fatal(err)
	}
	if _, found, err := tx.GetBy(ta, 1, []Value{Uint64(10)}); err != nil || !found {
		t.Fatal(found, err)
	}
	reviewCommit(t, func(o *Tx) error {
		return o.Update(ta, []Value{Uint64(1)}, []ColumnValue{{Column: 1, Value: Uint64(11)}})
	}, db)
	if _, err := tx.Commit(); !errors.Is(err, ErrConflict) {
		t.Errorf("row found changed since: commit gave %v, want a conflict", err)
	}
}

// TestGetByManyPendingDuplicate: while a transaction's writes
// and the committed rows share a unique key (a duplicate that Commit
// would reject unless the transaction changes it first), GetBy gives the
// same answer whatever the number of writes. With up to linearWrites
// writes it is the merged scan's first row (the smallest primary key);
// past that, getByMany returns the transaction's own row first.
func TestGetByManyPendingDuplicate(t *testing.T) {
	for _, filler := range []int{0, linearWrites} {
		for _, committed := range []bool{true, false} {
			t.Run(fmt.Sprintf("filler=%d/committed=%v", filler, committed), func(t *testing.T) {
				db := Open(Options{})
				ta, _, tf := getByTables(t, db)
				if committed {
					reviewCommit(t, func(tx *Tx) error { return tx.Insert(ta, []Value{Uint64(3), Uint64(7), Uint64(3)}) }, db)
				}
				tx := db.Begin()
				defer tx.Rollback()
				for i := range uint64(filler) {
					if err := tx.Insert(tf, []Value{Uint64(i), Uint64(i), Uint64(i)}); err != nil {
						t.Fatal(err)
					}
				}
				if err := tx.Insert(ta, []Value{Uint64(5), Uint64(7), Uint64(5)}); err != nil {
					t.Fatal(err)
				}
				if !committed {
					if err := tx.Insert(ta, []Value{Uint64(3), Uint64(7), Uint64(3)}); err != nil {
						t.Fatal(err)
					}
				}
				r, found, err := tx.GetBy(ta, 1, []Value{Uint64(7)})
				if err != nil || !found {
					t.Fatal(found, err)
				}
				if got := r.Uint64(0); got != 3 {
					t.Errorf("%d writes: GetBy by_m=7 found k=%d, a merged scan k=3", tx.Writes(), got)
				}
			})
		}
	}
}

// TestGetByManyThenDropIndex: a transaction of many writes updates
// a row to a unique key a committed row has (an update records a read of
// the row, which DDL does not disturb, where an insert records an absent
// key, which it does), and GetBy by that index finds its own row. The
// index is then dropped, and the transaction commits: two rows now share
// the key, and no serial order gives both the GetBy (which needs the
// index) and the commit (which the index would refuse). A merged scan
// recorded the lookup with the table's state, so the drop was a conflict
// (the 1-write case); getByMany records nothing when it finds the
// transaction's own row. (The same outcome is reachable without this
// change when the GetBy runs before the update, through the point read,
// whose read record carries no table state: a narrower, older gap.)
func TestGetByManyThenDropIndex(t *testing.T) {
	for _, filler := range []int{0, linearWrites} {
		t.Run(fmt.Sprint(filler), func(t *testing.T) {
			db := Open(Options{})
			ta, _, tf := getByTables(t, db)
			reviewCommit(t, func(tx *Tx) error {
				if err := tx.Insert(ta, []Value{Uint64(3), Uint64(7), Uint64(3)}); err != nil {
					return err
				}
				return tx.Insert(ta, []Value{Uint64(5), Uint64(8), Uint64(5)})
			}, db)
			tx := db.Begin()
			defer tx.Rollback()
			for i := range uint64(filler) {
				if err := tx.Insert(tf, []Value{Uint64(i), Uint64(i), Uint64(i)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Update(ta, []Value{Uint64(5)}, []ColumnValue{{Column: 1, Value: Uint64(7)}}); err != nil {
				t.Fatal(err)
			}
			if _, found, err := tx.GetBy(ta, 1, []Value{Uint64(7)}); err != nil || !found {
				t.Fatal(found, err)
			}
			if _, err := db.DropIndex("a", "by_m"); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Commit(); err == nil {
				t.Errorf("%d writes: committed after a GetBy by an index dropped since, with the key it looked up on two rows", filler+1)
			}
		})
	}
}

// TestIndexByName: ScanSpec.IndexName and GetByName look the index up in
// the schema they read, so an ordinal that a DropIndex has since moved to
// another index does not steer them there; a dropped name is ErrNoIndex.
func TestIndexByName(t *testing.T) {
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{Name: "s", Columns: []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "m", Type: TypeUint64}},
		PrimaryKey: []string{"k"}, Indexes: []IndexDef{
			{Name: "by_k", Columns: []string{"k"}, Unique: true, Kind: Ordered},
			{Name: "by_m", Columns: []string{"m"}, Unique: true, Kind: Ordered},
			{Name: "by_m_k", Columns: []string{"m", "k"}, Unique: true, Kind: Ordered},
		}})
	if err != nil {
		t.Fatal(err)
	}
	reviewCommit(t, func(tx *Tx) error {
		for k := range uint64(10) {
			if err := tx.Insert(tb, []Value{Uint64(k), Uint64(100 - k)}); err != nil {
				return err
			}
		}
		return nil
	}, db)
	ix, err := tb.Index("by_m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.DropIndex("s", "by_k"); err != nil {
		t.Fatal(err)
	}
	if now, _ := tb.Index("by_m"); now == ix {
		t.Fatalf("by_m kept ordinal %d past the drop of an index before it", ix)
	}
	tx := db.Begin()
	defer tx.Rollback()
	var got []uint64
	spec := ScanSpec{Index: ix, IndexName: "by_m", Prefix: []Value{Uint64(97)}}
	if err := tx.Scan(tb, spec, func(r Record) bool { got = append(got, r.Uint64(0)); return true }); err != nil || len(got) != 1 || got[0] != 3 {
		t.Fatalf("scan by name of by_m = 97: keys %v, %v; want [3]", got, err)
	}
	past := spec
	past.After = []Value{Uint64(97)}
	got = got[:0]
	if err := tx.Scan(tb, past, func(r Record) bool { got = append(got, r.Uint64(0)); return true }); err != nil || len(got) != 0 {
		t.Fatalf("scan by name of by_m = 97 after its one key: keys %v, %v; want none", got, err)
	}
	if r, found, err := tx.GetByName(tb, "by_m", []Value{Uint64(97)}); err != nil || !found || r.Uint64(0) != 3 {
		t.Fatalf("GetByName by_m = 97: %v %v", found, err)
	}
	if r, found, err := tx.GetByName(tb, "", []Value{Uint64(4)}); err != nil || !found || r.Uint64(1) != 96 {
		t.Fatalf("GetByName of the primary key 4: %v %v", found, err)
	}
	if _, _, err := tx.GetByName(tb, "by_k", []Value{Uint64(3)}); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("GetByName of the dropped index: %v, want ErrNoIndex", err)
	}
	if err := tx.Scan(tb, ScanSpec{IndexName: "by_k", Prefix: []Value{Uint64(3)}}, func(Record) bool { return true }); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("scan by the dropped index's name: %v, want ErrNoIndex", err)
	}
}
