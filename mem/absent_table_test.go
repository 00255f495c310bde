package mem

import (
	"errors"
	"testing"
)

// TestAbsentTable: a transaction that found no table under a name and
// then reads the table created under it since has seen the name absent
// and then present, which no serial order gives: its commit (and a
// checked rollback) is a conflict. One that finds the name still absent
// at commit commits. A commit that writes checks the same.
func TestAbsentTable(t *testing.T) {
	def := TableDef{
		Name:       "late",
		Columns:    []ColumnDef{{Name: "k", Type: TypeUint64}},
		PrimaryKey: []string{"k"},
	}
	other := def
	other.Name = "other"
	for _, end := range []string{"commit", "commit-write", "rollback-checked"} {
		t.Run(end, func(t *testing.T) {
			db := Open(Options{})
			ot, err := db.CreateTable(other)
			if err != nil {
				t.Fatal(err)
			}
			finish := func(tx *Tx, k uint64) error {
				if end == "commit-write" {
					if err := tx.Insert(ot, []Value{Uint64(k)}); err != nil {
						return err
					}
				}
				if end != "rollback-checked" {
					_, err := tx.Commit()
					return err
				}
				return tx.RollbackChecked()
			}

			// Absent, and absent still at commit, with a row read besides.
			tx := db.Begin()
			if _, err := tx.Table("late"); !errors.Is(err, ErrNoTable) {
				t.Fatalf("Table of a missing table: %v, want ErrNoTable", err)
			}
			if _, _, err := tx.Get(ot, []Value{Uint64(1)}); err != nil {
				t.Fatal(err)
			}
			if err := finish(tx, 2); err != nil {
				t.Fatalf("%s of a transaction that found a table absent, absent still: %v", end, err)
			}

			// Absent, then created, then read.
			tx = db.Begin()
			defer tx.Rollback()
			if _, err := tx.Table("late"); !errors.Is(err, ErrNoTable) {
				t.Fatalf("Table of a missing table: %v, want ErrNoTable", err)
			}
			if _, err := db.CreateTable(def); err != nil {
				t.Fatal(err)
			}
			if tx.Seen() != db.SchemaLSN() {
				t.Errorf("Seen %d, want the schema's LSN %d", tx.Seen(), db.SchemaLSN())
			}
			lt, err := tx.Table("late")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := tx.Get(lt, []Value{Uint64(1)}); err != nil {
				t.Fatal(err)
			}
			if err := finish(tx, 3); !errors.Is(err, ErrConflict) {
				t.Fatalf("%s of a transaction that found a table absent and then read it: %v, want ErrConflict", end, err)
			}
		})
	}
}
