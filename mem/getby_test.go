package mem

import (
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
