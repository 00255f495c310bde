package mem

import (
	"fmt"
	"testing"
	"unsafe"
)

// A transaction whose writes all went again (rows it inserted and then
// deleted) leaves no writes buffer of their size to the transactions
// that reuse its state.
func TestRecycledWritesBoundedAfterOwnDeletes(t *testing.T) {
	db := Open(Options{})
	tb := cliffTable(t, db)
	const n = 20000
	tx := db.Begin()
	for i := range n {
		if err := tx.Insert(tb, cliffRow(uint64(i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if err := tx.Delete(tb, []Value{Uint64(uint64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	st := tx.txState
	tx.Rollback()
	if b := cap(st.writes) * int(unsafe.Sizeof(write{})); b > maxRecycled {
		t.Errorf("the recycled state keeps writes of %d bytes, more than %d", b, maxRecycled)
	}
}

// An applied record whose every operation deletes a missing row leaves
// no writes behind in the recycled state: neither a buffer of the
// record's size nor writes pointing at its rows and keys.
func TestRecycledWritesBoundedAfterApplyOfMissingDeletes(t *testing.T) {
	for _, n := range []int{100, 4000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) { applyMissingDeletes(t, n) })
	}
}

func applyMissingDeletes(t *testing.T, n int) {
	db := Open(Options{})
	tb := cliffTable(t, db)
	s := tb.state.Load().s
	r := &Redo{}
	for i := range n {
		k, err := s.appendKey(nil, 0, 0, []Value{Uint64(uint64(i))})
		if err != nil {
			t.Fatal(err)
		}
		r.Ops = append(r.Ops, Op{Kind: OpDelete, Table: tb.id, Data: k})
	}
	// What Apply does, with the state at hand.
	lsn := db.LastLSN() + 1
	tx := db.Begin()
	var err error
	if tx.writes, err = db.resolve(tx.writes, &tx.arena, lsn, r); err != nil {
		t.Fatal(err)
	}
	if err := tx.installReplayed(lsn); err != nil {
		t.Fatal(err)
	}
	st := tx.txState
	tx.Rollback()
	if b := cap(st.writes) * int(unsafe.Sizeof(write{})); b > maxRecycled {
		t.Errorf("the recycled state keeps writes of %d bytes, more than %d", b, maxRecycled)
	}
	for i, w := range st.writes[:cap(st.writes)] {
		if w.t != nil || w.row != nil || w.key != nil {
			t.Fatalf("recycled write %d of %d still points at a table, row or key", i, cap(st.writes))
		}
	}
}
