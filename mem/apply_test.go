package mem

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
)

// recLog is a CommitLog that keeps every record, encoded as a log would.
type recLog struct {
	mu   sync.Mutex
	last uint64
	recs [][]byte
}

func (l *recLog) Commit(r *Redo) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last++
	l.recs = append(l.recs, r.AppendBinary(nil))
	return l.last, nil
}

// TestApplyDDLIdempotent replays every schema change twice: the second
// time changes nothing but the LSN, and the result matches the primary.
func TestApplyDDLIdempotent(t *testing.T) {
	log := &recLog{}
	src := Open(Options{Log: log})
	def := TableDef{
		Name:       "t",
		Columns:    []ColumnDef{{Name: "k", Type: TypeInt64}, {Name: "s", Type: TypeString, MaxLen: 8}},
		PrimaryKey: []string{"k"},
	}
	steps := []func() (uint64, error){
		func() (uint64, error) {
			tbl, err := src.CreateTable(def)
			if err != nil {
				return 0, err
			}
			return tbl.CreatedLSN(), nil
		},
		func() (uint64, error) {
			return src.CreateIndex(context.Background(), "t", IndexDef{Name: "by_s", Columns: []string{"s"}, Kind: Ordered})
		},
		func() (uint64, error) { return src.DropIndex("t", "by_s") },
		func() (uint64, error) { return src.DropTable("t") },
	}
	dst := Open(Options{})
	for i, step := range steps {
		lsn, err := step()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if lsn != uint64(i+1) {
			t.Fatalf("step %d returned LSN %d; the log assigned %d", i, lsn, i+1)
		}
		rec, err := DecodeRedo(log.recs[i])
		if err != nil {
			t.Fatal(err)
		}
		for round := 0; round < 2; round++ {
			if err := dst.Apply(uint64(i+1), rec); err != nil {
				t.Fatalf("step %d round %d: %v", i, round, err)
			}
			if got, want := dst.Tables(), src.Tables(); !reflect.DeepEqual(got, want) {
				t.Fatalf("step %d round %d: tables %+v, want %+v", i, round, got, want)
			}
		}
	}
	if got := dst.LastLSN(); got != uint64(len(steps)) {
		t.Errorf("LastLSN = %d, want %d", got, len(steps))
	}
	// A drop of an id that was never handed out is corrupt, not a repeat.
	err := dst.Apply(9, &Redo{Ops: []Op{{Kind: OpDropTable, Table: 77}}})
	if !errors.Is(err, ErrNoTable) {
		t.Errorf("drop of a table id never used: %v, want ErrNoTable", err)
	}
	// A different table under a known id is refused, not skipped.
	if _, err := dst.CreateTable(def); err != nil {
		t.Fatal(err)
	}
	other := def
	other.ID, other.Name = 2, "u"
	err = dst.Apply(10, &Redo{Ops: []Op{{Kind: OpCreateTable, Table: 2, Data: encodeTableDef(nil, other)}}})
	if !errors.Is(err, ErrTableExist) {
		t.Errorf("a different table under a used id: %v, want ErrTableExist", err)
	}
}
