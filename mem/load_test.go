package mem

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

// loadFrom loads a fresh database from a snapshot of db, the way a
// checkpoint image round trip does, adding rows from several goroutines.
func loadFrom(t *testing.T, db *DB) (*DB, error) {
	t.Helper()
	sn := db.Snapshot()
	defer sn.Close()
	out := Open(Options{})
	l, err := out.Load(sn.LSN(), sn.NextTableID())
	if err != nil {
		return nil, err
	}
	for _, def := range sn.Tables() {
		tb, err := l.CreateTable(def)
		if err != nil {
			return nil, err
		}
		var rows [][]byte
		if err := sn.Scan(def.ID, func(r Record) error {
			rows = append(rows, r.Encoded())
			return nil
		}); err != nil {
			return nil, err
		}
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for g := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < len(rows); i += len(errs) {
					if err := l.AddRow(tb, rows[i]); err != nil {
						errs[g] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	return out, l.Finish()
}

// TestLoadRoundTrip: a database loaded from a snapshot of another reads
// the same through every index, is at the snapshot's LSN, takes commits,
// and never gives out the id of a table dropped before the snapshot.
func TestLoadRoundTrip(t *testing.T) {
	f := biSetup(t)
	got, err := loadFrom(t, f.db)
	if err != nil {
		t.Fatal(err)
	}
	want := biWithoutCapacity(biDumpDB(t, f.db, nil))
	have := biWithoutCapacity(biDumpDB(t, got, nil))
	biConsistent(t, have)
	if d := biDiff(want, have); d != "" {
		t.Fatalf("loaded database differs:\n%s", d)
	}
	tb, err := got.CreateTable(TableDef{Name: "new", Columns: []ColumnDef{{Name: "k", Type: TypeInt64}}, PrimaryKey: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	if tb.ID() <= f.gone.ID() {
		t.Fatalf("a new table got id %d; the dropped table had %d", tb.ID(), f.gone.ID())
	}
	acct, err := got.Table(f.acct.Name())
	biMust(t, err)
	tx := got.Begin()
	biMust(t, tx.Insert(tb, []Value{Int64(1)}))
	biMust(t, tx.Update(acct, []Value{Int64(1)}, nil))
	lsn, err := tx.Commit()
	if err != nil || lsn <= f.db.LastLSN() {
		t.Fatalf("commit after load: LSN %d, %v", lsn, err)
	}
}

// TestSnapshotTablesInOrder: a snapshot lists its tables in the order
// they were created, whatever their names, so images of the same
// database list them alike.
func TestSnapshotTablesInOrder(t *testing.T) {
	db := Open(Options{})
	names := []string{"m", "z", "a", "q", "b", "y", "c"}
	for _, n := range names {
		if _, err := db.CreateTable(TableDef{Name: n, Columns: []ColumnDef{{Name: "k", Type: TypeInt64}}, PrimaryKey: []string{"k"}}); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		sn := db.Snapshot()
		var got []string
		for _, def := range sn.Tables() {
			got = append(got, def.Name)
		}
		sn.Close()
		if !slices.Equal(got, names) {
			t.Fatalf("a snapshot lists %q, created as %q", got, names)
		}
	}
}

// TestLoadBadInput: a loader refuses a database that is not empty, a
// table without an id, a malformed row and a duplicate unique key, with
// typed errors.
func TestLoadBadInput(t *testing.T) {
	f := biSetup(t)
	if _, err := f.db.Load(9, 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("load into a database with tables: %v", err)
	}
	if _, err := Open(Options{}).Load(0, 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("load at LSN 0: %v", err)
	}
	db := Open(Options{})
	l, err := db.Load(7, 3)
	if err != nil {
		t.Fatal(err)
	}
	def := biAcctDef()
	if _, err := l.CreateTable(def); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a table without an id: %v", err)
	}
	def.ID = 2
	tb, err := l.CreateTable(def)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AddRow(tb, []byte{1, 2, 3}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a malformed row: %v", err)
	}
	row := biRowBytes(t, f.acct, biAcctRow(1, "a"))
	biMust(t, l.AddRow(tb, row))
	biMust(t, l.AddRow(tb, row))
	if err := l.Finish(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a duplicate primary key: %v", err)
	}
}
