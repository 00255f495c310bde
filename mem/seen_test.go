package mem

import (
	"context"
	"errors"
	"testing"
)

// TestSeen: a transaction's Seen is the newest commit whose effect it
// read: a row's version, a removal that left a key or a range without a
// row, a schema change. A read of an old row says nothing of newer
// commits to other rows, which is what lets a node answer it without
// waiting for them.
func TestSeen(t *testing.T) {
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{
		Name:       "s",
		Columns:    []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "v", Type: TypeUint64}},
		PrimaryKey: []string{"k"}, PrimaryKind: Ordered,
		Indexes: []IndexDef{{Name: "by_v", Columns: []string{"v"}, Kind: Hash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	created := tb.CreatedLSN()
	commit := func(fn func(tx *Tx) error) uint64 {
		t.Helper()
		tx := db.Begin()
		defer tx.Rollback()
		if err := fn(tx); err != nil {
			t.Fatal(err)
		}
		lsn, err := tx.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	insert := func(k, v uint64) uint64 {
		return commit(func(tx *Tx) error { return tx.Insert(tb, []Value{Uint64(k), Uint64(v)}) })
	}
	// seen runs read in a transaction of its own and returns its Seen.
	seen := func(read func(tx *Tx) error) uint64 {
		t.Helper()
		tx := db.Begin()
		defer tx.Rollback()
		if err := read(tx); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrDuplicate) {
			t.Fatal(err)
		}
		return tx.Seen()
	}
	get := func(k uint64) func(tx *Tx) error {
		return func(tx *Tx) error { _, _, err := tx.Get(tb, []Value{Uint64(k)}); return err }
	}
	scan := func(spec ScanSpec) func(tx *Tx) error {
		return func(tx *Tx) error { return tx.Scan(tb, spec, func(Record) bool { return true }) }
	}
	check := func(what string, got, want uint64) {
		t.Helper()
		if got != want {
			t.Errorf("%s: Seen %d, want %d", what, got, want)
		}
	}

	check("nothing read", seen(func(*Tx) error { return nil }), created)
	one, two := insert(1, 10), insert(2, 20)
	check("row 1", seen(get(1)), one)
	check("row 2", seen(get(2)), two)
	check("a key never there", seen(get(9)), created)
	up := commit(func(tx *Tx) error {
		return tx.Update(tb, []Value{Uint64(1)}, []ColumnValue{{Column: 1, Value: Uint64(11)}})
	})
	check("row 1 updated", seen(get(1)), up)
	check("row 2 after row 1's update", seen(get(2)), two)
	check("an insert that finds its key taken", seen(func(tx *Tx) error { return tx.Insert(tb, []Value{Uint64(2), Uint64(0)}) }), two)
	check("the secondary key row 1 left", seen(scan(ScanSpec{Index: 1, Prefix: []Value{Uint64(10)}})), up)

	three := insert(3, 30)
	del := commit(func(tx *Tx) error { return tx.Delete(tb, []Value{Uint64(2)}) })
	later := insert(4, 40)
	check("the deleted key", seen(get(2)), del)
	check("an update of the deleted key", seen(func(tx *Tx) error {
		return tx.Update(tb, []Value{Uint64(2)}, []ColumnValue{{Column: 1, Value: Uint64(0)}})
	}), del)
	check("row 3 after the delete", seen(get(3)), three)
	check("a range with the deleted key", seen(scan(ScanSpec{Lower: []Value{Uint64(1)}, Upper: []Value{Uint64(3)}, UpperInclusive: true})), del)
	check("the whole table", seen(scan(ScanSpec{})), later)
	check("a delete of row 3", seen(func(tx *Tx) error { return tx.Delete(tb, []Value{Uint64(3)}) }), three)

	ix, err := db.CreateIndex(context.Background(), "s", IndexDef{Name: "by_v2", Columns: []string{"v"}, Kind: Ordered})
	if err != nil {
		t.Fatal(err)
	}
	check("after a schema change", seen(get(3)), ix)

	// A commit that fails on what it finds tells which commit made it so.
	u, err := db.CreateTable(TableDef{
		Name:       "u",
		Columns:    []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "v", Type: TypeUint64}},
		PrimaryKey: []string{"k"},
		Indexes:    []IndexDef{{Name: "by_v", Columns: []string{"v"}, Kind: Hash, Unique: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	taken := commit(func(tx *Tx) error { return tx.Insert(u, []Value{Uint64(1), Uint64(5)}) })
	insert(7, 70) // later, elsewhere
	dup := db.Begin()
	if err := dup.Insert(u, []Value{Uint64(2), Uint64(5)}); err != nil {
		t.Fatal(err)
	}
	if _, err := dup.Commit(); !errors.Is(err, ErrDuplicate) || SeenLSN(err) != taken {
		t.Errorf("a commit whose unique key another took at LSN %d: %v, SeenLSN %d", taken, err, SeenLSN(err))
	}
	late := db.Begin()
	if err := late.Insert(u, []Value{Uint64(3), Uint64(6)}); err != nil {
		t.Fatal(err)
	}
	dropped, err := db.DropTable("u")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Commit(); !errors.Is(err, ErrNoTable) || SeenLSN(err) != dropped {
		t.Errorf("a commit to a table dropped at LSN %d: %v, SeenLSN %d", dropped, err, SeenLSN(err))
	}

	tx := db.Begin()
	if _, _, err := tx.Get(tb, []Value{Uint64(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	check("a finished transaction", tx.Seen(), 0)
}
