package mem

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// Regression tests for bugs found in review.

func reviewKV(t *testing.T, db *DB, name string, ix ...IndexDef) *Table {
	t.Helper()
	tb, err := db.CreateTable(TableDef{
		Name:       name,
		Columns:    []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "v", Type: TypeUint64}},
		PrimaryKey: []string{"k"},
		Indexes:    ix,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func reviewCommit(t *testing.T, fn func(tx *Tx) error, db *DB) {
	t.Helper()
	tx := db.Begin()
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestGetChecksKey: an index entry whose RID now holds a row with another
// key (a freed slot taken by a new row) must not make Get return that row.
// Get used to compare the row's key with itself: the lookup key and the
// comparison shared one buffer.
func TestGetChecksKey(t *testing.T) {
	db := Open(Options{})
	tb := reviewKV(t, db, "t")
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, []Value{Uint64(2), Uint64(200)}) }, db)
	st := tb.state.Load()
	k2, _ := st.s.appendKey(nil, 0, 0, []Value{Uint64(2)})
	rid2 := st.idx[0].lookup(k2, nil)[0]
	k1, _ := st.s.appendKey(nil, 0, 0, []Value{Uint64(1)})
	st.idx[0].add(k1, rid2)
	tx := db.Begin()
	defer tx.Rollback()
	if rec, found, err := tx.Get(tb, []Value{Uint64(1)}); err != nil || found {
		t.Fatalf("Get(k=1) = found %v (row k=%d), %v; want not found", found, rec.Uint64(0), err)
	}
}

// TestValidationIsOneInstant: V reads "a(1) absent" and "b(1) absent" at
// execution, around a commit that moves the one row from b to a and one
// that moves it back. A third move attempted between V's two re-checks
// must not install until V's validation is over: V then either commits,
// serialized before the move, or aborts on the move's locks.
func TestValidationIsOneInstant(t *testing.T) {
	db := Open(Options{})
	a, b, out := reviewKV(t, db, "a"), reviewKV(t, db, "b"), reviewKV(t, db, "out")
	key := []Value{Uint64(1)}
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(b, []Value{Uint64(1), Uint64(1)}) }, db)
	move := func(from, to *Table) {
		reviewCommit(t, func(tx *Tx) error {
			if err := tx.Delete(from, key); err != nil {
				return err
			}
			return tx.Insert(to, []Value{Uint64(1), Uint64(1)})
		}, db)
	}
	v := db.Begin()
	defer v.Rollback()
	if _, found, err := v.Get(a, key); err != nil || found {
		t.Fatalf("a: %v %v", found, err)
	}
	move(b, a)
	if _, found, err := v.Get(b, key); err != nil || found {
		t.Fatalf("b: %v %v", found, err)
	}
	move(a, b)
	if err := v.Insert(out, []Value{Uint64(1), Uint64(1)}); err != nil {
		t.Fatal(err)
	}
	// Between V's two re-checks, start the third move; it must not install
	// until V's validation is over.
	moved := make(chan struct{})
	var once sync.Once
	testHookAbsentChecked = func(int) {
		once.Do(func() {
			go func() {
				move(b, a)
				close(moved)
			}()
			select {
			case <-moved:
				t.Error("a commit installed into tables V was validating")
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
	defer func() { testHookAbsentChecked = nil }()
	lsn, err := v.Commit()
	<-moved
	switch {
	case errors.Is(err, ErrConflict):
		// V saw the move's locks: aborting is serializable too.
	case err != nil:
		t.Fatalf("V: %v", err)
	case db.LastLSN() <= lsn:
		t.Fatalf("the third move got LSN %d, not after V's %d", db.LastLSN(), lsn)
	}
}

// TestApplyUniqueViolation: a record that would give two rows one key of a
// unique index is refused and changes nothing.
func TestApplyUniqueViolation(t *testing.T) {
	db := Open(Options{})
	tb := reviewKV(t, db, "t", IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: Hash})
	s := tb.state.Load().s
	row := func(k, v uint64) []byte {
		b, err := s.encodeRow(nil, []Value{Uint64(k), Uint64(v)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := db.Apply(db.LastLSN()+1, &Redo{Ops: []Op{{Kind: OpPut, Table: tb.ID(), Data: row(1, 7)}}}); err != nil {
		t.Fatal(err)
	}
	lsn := db.LastLSN()
	err := db.Apply(lsn+1, &Redo{Ops: []Op{{Kind: OpPut, Table: tb.ID(), Data: row(2, 7)}}})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Apply of a duplicate unique key: %v, want ErrCorrupt", err)
	}
	if st := tb.Stats(); st.Rows != 1 || st.Indexes[1].Entries != 1 || db.LastLSN() != lsn {
		t.Fatalf("after the refused record: %d rows, %d by_v entries, LSN %d (want 1, 1, %d)", st.Rows, st.Indexes[1].Entries, db.LastLSN(), lsn)
	}
}

// TestApplyOldRecordSkipped: a record below the last applied LSN is
// already applied; replaying it must not roll a row back.
func TestApplyOldRecordSkipped(t *testing.T) {
	db := Open(Options{})
	tb := reviewKV(t, db, "t")
	s := tb.state.Load().s
	put := func(v uint64) *Redo {
		b, _ := s.encodeRow(nil, []Value{Uint64(1), Uint64(v)})
		return &Redo{Ops: []Op{{Kind: OpPut, Table: tb.ID(), Data: b}}}
	}
	base := db.LastLSN()
	for _, step := range []struct {
		lsn uint64
		v   uint64
	}{{base + 1, 5}, {base + 2, 6}, {base + 1, 5}} {
		if err := db.Apply(step.lsn, put(step.v)); err != nil {
			t.Fatal(err)
		}
	}
	tx := db.Begin()
	defer tx.Rollback()
	r, _, err := tx.Get(tb, []Value{Uint64(1)})
	if err != nil || r.Uint64(1) != 6 || db.LastLSN() != base+2 {
		t.Fatalf("after replaying LSN %d again: v=%d LSN %d, %v; want v=6 LSN %d", base+1, r.Uint64(1), db.LastLSN(), err, base+2)
	}
}

// TestConcurrentApply: Apply from two goroutines (records touching the
// same rows in opposite orders) must finish, not deadlock.
func TestConcurrentApply(t *testing.T) {
	db := Open(Options{})
	tb := reviewKV(t, db, "t")
	s := tb.state.Load().s
	row := func(k, v uint64) []byte {
		b, _ := s.encodeRow(nil, []Value{Uint64(k), Uint64(v)})
		return b
	}
	var mu sync.Mutex
	next := db.LastLSN()
	lsn := func() uint64 { mu.Lock(); defer mu.Unlock(); next++; return next }
	done := make(chan error, 2)
	for g := 0; g < 2; g++ {
		go func(g int) {
			for i := 0; i < 2000; i++ {
				ops := []Op{{Kind: OpPut, Table: tb.ID(), Data: row(1, uint64(i))}, {Kind: OpPut, Table: tb.ID(), Data: row(2, uint64(i))}}
				if g == 1 {
					ops[0], ops[1] = ops[1], ops[0]
				}
				if err := db.Apply(lsn(), &Redo{Ops: ops}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}(g)
	}
	for g := 0; g < 2; g++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("concurrent Apply calls did not finish: deadlock")
		}
	}
}

// A transaction that read a row which is deleted before it commits must
// not lock the row's slot: the slot is free, and an insert taking it
// meanwhile would have its TID word overwritten when the transaction
// restored what it locked, leaving the new row's index entries pointing
// at a row that reads as absent. TestRelogConcurrent found this.
func TestLockSkipsFreedSlot(t *testing.T) {
	db := Open(Options{})
	tb := reviewKV(t, db, "t")
	put := func(k, v uint64) {
		t.Helper()
		tx := db.Begin()
		if err := tx.Insert(tb, []Value{Uint64(k), Uint64(v)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	put(1, 10)
	stale := db.Begin()
	if err := stale.Update(tb, []Value{Uint64(1)}, []ColumnValue{{Column: 1, Value: Uint64(11)}}); err != nil {
		t.Fatal(err)
	}
	rid := stale.writes[0].rid
	del := db.Begin()
	if err := del.Delete(tb, []Value{Uint64(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := del.Commit(); err != nil {
		t.Fatal(err)
	}
	freed := tb.heap.tid(rid)
	if _, err := stale.Commit(); !errors.Is(err, ErrConflict) {
		t.Fatalf("commit of an update of a deleted row: %v, want ErrConflict", err)
	}
	if got := tb.heap.tid(rid); got != freed {
		t.Fatalf("the freed slot's TID word is %#x after the stale commit, want %#x", got, freed)
	}
	if _, ok := tb.heap.lock(rid); ok {
		t.Fatal("lock took a freed slot")
	}
	put(2, 20) // takes the freed slot
	tx := db.Begin()
	r, ok, err := tx.Get(tb, []Value{Uint64(2)})
	if err != nil || !ok || r.Uint64(1) != 20 {
		t.Fatalf("get of the row in the reused slot: %v %v %v", r, ok, err)
	}
	tx.Rollback()
}

// TestDuplicateFromStaleReadsIsAConflict: a transaction that swaps two
// rows' unique values from reads that went stale (another swap committed
// between its two reads, so it saw the same value twice) fails its commit
// with ErrConflict, which the caller retries, and not with ErrDuplicate,
// which it would not: the key it could not take was taken only in a
// state its reads never saw together. Before, the unique check, run
// before the reads were validated, answered ErrDuplicate.
func TestDuplicateFromStaleReadsIsAConflict(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			db := Open(Options{})
			tb := reviewKV(t, db, "t", IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: kind})
			a, b := []Value{Uint64(1)}, []Value{Uint64(2)}
			reviewCommit(t, func(tx *Tx) error {
				return errors.Join(tx.Insert(tb, []Value{Uint64(1), Uint64(10)}), tx.Insert(tb, []Value{Uint64(2), Uint64(20)}))
			}, db)
			swap := func(tx *Tx, va, vb uint64) error {
				return errors.Join(
					tx.Update(tb, a, []ColumnValue{{Column: 1, Value: Uint64(vb)}}),
					tx.Update(tb, b, []ColumnValue{{Column: 1, Value: Uint64(va)}}))
			}
			tx := db.Begin()
			defer tx.Rollback()
			ra, _, err := tx.Get(tb, a) // v 10
			if err != nil {
				t.Fatal(err)
			}
			reviewCommit(t, func(tx *Tx) error { return swap(tx, 10, 20) }, db)
			rb, _, err := tx.Get(tb, b) // v 10 too, since the swap
			if err != nil {
				t.Fatal(err)
			}
			if err := swap(tx, ra.Uint64(1), rb.Uint64(1)); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Commit(); !errors.Is(err, ErrConflict) {
				t.Fatalf("the commit of a swap whose reads went stale: %v; want ErrConflict", err)
			}
			// Run again, it swaps them back.
			reviewCommit(t, func(tx *Tx) error {
				ra, _, err := tx.Get(tb, a)
				if err != nil {
					return err
				}
				rb, _, err := tx.Get(tb, b)
				if err != nil {
					return err
				}
				return swap(tx, ra.Uint64(1), rb.Uint64(1))
			}, db)
		})
	}
}

// TestCounterGoesOnAfterApply: without a log, local commits after Apply
// take LSNs past the applied ones. They reused them: a row's TID came
// back to a value a reader had seen, and the reader's stale read passed
// validation (a lost update).
func TestCounterGoesOnAfterApply(t *testing.T) {
	db := Open(Options{})
	tb := reviewKV(t, db, "t") // LSN 1, from the Counter
	s := tb.state.Load().s
	key := []Value{Uint64(1)}
	for _, lsn := range []uint64{2, 3} {
		row, err := s.encodeRow(nil, []Value{Uint64(1), Uint64(lsn * 10)})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Apply(lsn, &Redo{Ops: []Op{{Kind: OpPut, Table: tb.ID(), Data: row}}}); err != nil {
			t.Fatal(err)
		}
	}
	last := db.LastLSN()
	reader := db.Begin()
	defer reader.Rollback()
	r, _, err := reader.Get(tb, key) // v 30 at LSN 3
	if err != nil {
		t.Fatal(err)
	}
	var lsns []uint64
	for _, v := range []uint64{31, 32} {
		tx := db.Begin()
		if err := tx.Update(tb, key, []ColumnValue{{Column: 1, Value: Uint64(v)}}); err != nil {
			t.Fatal(err)
		}
		lsn, err := tx.Commit()
		if err != nil {
			t.Fatal(err)
		}
		lsns = append(lsns, lsn)
	}
	if err := reader.Insert(tb, []Value{Uint64(2), Uint64(r.Uint64(1))}); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Commit(); lsns[0] <= last || !errors.Is(err, ErrConflict) {
		t.Fatalf("after applying up to LSN %d, local commits took LSNs %v; a reader of the row before both committed with %v (want ErrConflict)", last, lsns, err)
	}
}

// TestApplyChecksOldSchemaChanges: a schema change record older than the
// database is skipped only once it is checked, as an old data record is:
// a malformed one is ErrCorrupt. It was skipped unread.
func TestApplyChecksOldSchemaChanges(t *testing.T) {
	db := Open(Options{})
	tb := reviewKV(t, db, "t")
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, []Value{Uint64(1), Uint64(1)}) }, db)
	old := db.LastLSN() - 1
	def, err := db.Table("t")
	if err != nil {
		t.Fatal(err)
	}
	good := Op{Kind: OpCreateTable, Table: tb.ID(), Data: encodeTableDef(nil, def.state.Load().s.def)}
	if err := db.Apply(old, &Redo{Ops: []Op{good}}); err != nil {
		t.Fatalf("an old, well-formed schema change: %v", err)
	}
	for _, op := range []Op{
		{Kind: 99, Table: tb.ID()},
		{Kind: OpCreateTable, Table: 7, Data: []byte("garbage")},
		{Kind: OpCreateIndex, Table: tb.ID(), Data: []byte{0xff}},
	} {
		if err := db.Apply(old, &Redo{Ops: []Op{op}}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Apply below LastLSN of a malformed %s record: %v, want ErrCorrupt", op.Kind, err)
		}
	}
}

// TestOrderedIndexCountsLargeKeys: an ordered index's memory in Stats
// counts the keys too large for its slabs, each stored on its own; it
// left them out.
func TestOrderedIndexCountsLargeKeys(t *testing.T) {
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{
		Name:       "t",
		Columns:    []ColumnDef{{Name: "k", Type: TypeInt64}, {Name: "s", Type: TypeString, MaxLen: 9000}},
		PrimaryKey: []string{"k"},
		Indexes:    []IndexDef{{Name: "by_s", Columns: []string{"s"}, Kind: Ordered}},
	})
	if err != nil {
		t.Fatal(err)
	}
	const n, size = 100, 9000
	for i := range n {
		reviewCommit(t, func(tx *Tx) error {
			b := make([]byte, size)
			for j := range b {
				b[j] = byte('a' + (i+j)%26)
			}
			return tx.Insert(tb, []Value{Int64(int64(i)), String(string(b))})
		}, db)
	}
	if got := tb.Stats().Indexes[1].Bytes; got < n*size {
		t.Fatalf("by_s holds %d keys of %d bytes; Stats says %d bytes", n, size, got)
	}
	for i := range n {
		reviewCommit(t, func(tx *Tx) error { return tx.Delete(tb, []Value{Int64(int64(i))}) }, db)
	}
	if got := tb.Stats().Indexes[1].Bytes; got >= size {
		t.Fatalf("by_s is empty; Stats says %d bytes", got)
	}
}

// TestRollbackCheckedFindsStaleReads: a transaction that read two rows
// with a commit changing both in between has reads no instant saw
// together: RollbackChecked says ErrConflict. With its reads intact, or
// with a single read (an instant by itself), it says nil.
func TestRollbackCheckedFindsStaleReads(t *testing.T) {
	db := Open(Options{})
	tb := reviewKV(t, db, "t")
	reviewCommit(t, func(tx *Tx) error {
		return errors.Join(tx.Insert(tb, []Value{Uint64(1), Uint64(10)}), tx.Insert(tb, []Value{Uint64(2), Uint64(20)}))
	}, db)
	bump := func() {
		reviewCommit(t, func(tx *Tx) error {
			return errors.Join(
				tx.Update(tb, []Value{Uint64(1)}, []ColumnValue{{Column: 1, Value: Uint64(11)}}),
				tx.Update(tb, []Value{Uint64(2)}, []ColumnValue{{Column: 1, Value: Uint64(21)}}))
		}, db)
	}
	read := func(tx *Tx, k uint64) {
		if _, _, err := tx.Get(tb, []Value{Uint64(k)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name      string
		interfere bool
		second    bool
		want      error
	}{{"stale", true, true, ErrConflict}, {"intact", false, true, nil}, {"one read", true, false, nil}} {
		tx := db.Begin()
		read(tx, 1)
		if c.interfere {
			bump()
		}
		if c.second {
			read(tx, 2)
		}
		if err := tx.RollbackChecked(); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if err := tx.RollbackChecked(); !errors.Is(err, ErrTxDone) {
			t.Errorf("%s: checked again: %v", c.name, err)
		}
	}
}
