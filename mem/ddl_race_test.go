package mem

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// ddlTable creates table name (k uint64 primary key, v uint64) with rows
// k = 1..n, v = k.
func ddlTable(t *testing.T, db *DB, name string, n int) *Table {
	t.Helper()
	tb, err := db.CreateTable(TableDef{
		Name:       name,
		Columns:    []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "v", Type: TypeUint64}},
		PrimaryKey: []string{"k"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tx := db.Begin()
	for k := 1; k <= n; k++ {
		if err := tx.Insert(tb, []Value{Uint64(uint64(k)), Uint64(uint64(k))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestReadOfDroppedTableConflicts: a transaction that read a row of a
// table dropped before it commits read a state no instant of its
// commit holds (the table is gone, or another under its name): its
// commit is a conflict, whether it writes elsewhere or only reads.
func TestReadOfDroppedTableConflicts(t *testing.T) {
	for _, writes := range []bool{false, true} {
		db := Open(Options{})
		old := ddlTable(t, db, "t", 3)
		u := ddlTable(t, db, "u", 3)
		tx := db.Begin()
		if _, found, err := tx.Get(old, []Value{Uint64(1)}); err != nil || !found {
			t.Fatalf("Get: %v %v", found, err)
		}
		if _, found, err := tx.Get(u, []Value{Uint64(2)}); err != nil || !found {
			t.Fatalf("Get: %v %v", found, err)
		}
		if writes {
			if err := tx.Insert(u, []Value{Uint64(10), Uint64(1)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.DropTable("t"); err != nil {
			t.Fatal(err)
		}
		ddlTable(t, db, "t", 0) // another table under the name
		lsn, err := tx.Commit()
		if !errors.Is(err, ErrConflict) {
			t.Errorf("writes %v: commit of a transaction that read a row of a table dropped since: LSN %d, %v, want ErrConflict", writes, lsn, err)
		}
	}
}

// TestBadNameSaysTheRule: a column or index name that is refused says
// what a name may be, with its length limit, as a table name's does: a
// name one byte too long breaks no other rule.
func TestBadNameSaysTheRule(t *testing.T) {
	long := strings.Repeat("a", MaxNameLen+1)
	want := fmt.Sprintf("1-%d letters, digits or '_'", MaxNameLen)
	db := Open(Options{})
	def := func(col, ix string) TableDef {
		return TableDef{
			Name:       "t",
			Columns:    []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: col, Type: TypeUint64}},
			PrimaryKey: []string{"k"},
			Indexes:    []IndexDef{{Name: ix, Columns: []string{"k"}, Kind: Hash}},
		}
	}
	// A name too long is over a limit (ErrLimit), one with a character
	// names may not have is invalid.
	for what, c := range map[string]struct {
		d    TableDef
		want error
	}{"column": {def(long, "ix"), ErrLimit}, "index": {def("v", long), ErrLimit}, "column starting with a digit": {def("1v", "ix"), ErrInvalid}} {
		_, err := db.CreateTable(c.d)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s name refused: %v, want %v saying %q", what, err, c.want, want)
		}
	}
	if _, err := db.CreateTable(def("v", "ix")); err != nil {
		t.Fatal(err)
	}
	_, err := db.CreateIndex(context.Background(), "t", IndexDef{Name: long, Columns: []string{"v"}, Kind: Ordered})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), want) {
		t.Errorf("CreateIndex with a long name: %v, want ErrLimit saying %q", err, want)
	}
}

// TestDropPrimarySaysWhy: DropIndex of "primary", a name reads take for
// the primary key, is refused as no secondary index (ErrNoIndex) with a
// message that says so, rather than that the table has no such index.
func TestDropPrimarySaysWhy(t *testing.T) {
	db := Open(Options{})
	ddlTable(t, db, "t", 1)
	_, err := db.DropIndex("t", "primary")
	if !errors.Is(err, ErrNoIndex) || !strings.Contains(err.Error(), "primary key") {
		t.Errorf("DropIndex primary: %v, want ErrNoIndex saying it is the primary key", err)
	}
}
