package mem

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of Tx.Relog: a record that logs rows as they are, which a standby
// applies to end with exactly the primary's rows (mmdbd audit -repair).

// hookLog is a recLog that runs hook, once, at the start of the next
// commit: inside that transaction's commit, after its validation and
// before its LSN.
type hookLog struct {
	recLog
	hook atomic.Pointer[func()]
}

func (l *hookLog) Commit(r *Redo) (uint64, error) {
	if h := l.hook.Swap(nil); h != nil {
		(*h)()
	}
	return l.recLog.Commit(r)
}

// relogKV is the tests' table: k and v, with an ordered primary key (so
// that tests scan it) and a unique index on v, holding rows k = 1..n with
// v = 10k.
func relogKV(t *testing.T, db *DB, n uint64) *Table {
	t.Helper()
	tb := ccTable(t, db, TableDef{
		Name:        "t",
		Columns:     []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "v", Type: TypeUint64}},
		PrimaryKey:  []string{"k"},
		PrimaryKind: Ordered,
		Indexes:     []IndexDef{{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: Hash}},
	})
	for k := uint64(1); k <= n; k++ {
		reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, kv(k, 10*k)) }, db)
	}
	return tb
}

func kv(k, v uint64) []Value { return []Value{Uint64(k), Uint64(v)} }

// mustReplay replays log into a new database, as recovery does.
func mustReplay(t *testing.T, log *recLog) *DB {
	t.Helper()
	db, err := replayAll(t, log)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// applyFrom applies log's records from index i on into db.
func applyFrom(t *testing.T, log *recLog, i int, db *DB) {
	t.Helper()
	log.mu.Lock()
	defer log.mu.Unlock()
	for ; i < len(log.recs); i++ {
		r, err := DecodeRedo(log.recs[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Apply(uint64(i+1), r); err != nil {
			t.Fatalf("apply LSN %d: %v", i+1, err)
		}
	}
}

// lastOps returns the operations of log's last record by encoded key (a
// put's key taken from its row).
func lastOps(t *testing.T, log *recLog, tb *Table) map[string]Op {
	t.Helper()
	log.mu.Lock()
	r, err := DecodeRedo(log.recs[len(log.recs)-1])
	log.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	s := tb.state.Load().s
	ops := map[string]Op{}
	for _, op := range r.Ops {
		k := op.Data
		if op.Kind == OpPut {
			k = s.appendRowKey(nil, 0, op.Data)
		}
		ops[string(k)] = op
	}
	return ops
}

// wantOp fails unless ops holds, for key k, a put of row or (row nil) a
// delete.
func wantOp(t *testing.T, ops map[string]Op, tb *Table, k uint64, row []Value) {
	t.Helper()
	s := tb.state.Load().s
	key, err := s.appendKey(nil, 0, 0, []Value{Uint64(k)})
	if err != nil {
		t.Fatal(err)
	}
	op, ok := ops[string(key)]
	switch {
	case !ok:
		t.Errorf("the record has nothing for key %d: %v", k, ops)
	case row == nil && op.Kind != OpDelete:
		t.Errorf("key %d: %s, want a delete", k, op.Kind)
	case row != nil:
		want, err := s.encodeRow(nil, row)
		if err != nil {
			t.Fatal(err)
		}
		if op.Kind != OpPut || !bytes.Equal(op.Data, want) {
			t.Errorf("key %d: %s %v, want a put of %v", k, op.Kind, Record{s: s, b: op.Data}.Values(nil), row)
		}
	}
}

// TestRelogRepairsAStandby: a standby whose rows went wrong behind its
// log's back (a row with other values, one missing, one the primary does
// not have, holding a unique key a primary row has) gets, from one record
// of Relog on the primary, exactly the primary's rows; the primary does
// not change.
func TestRelogRepairsAStandby(t *testing.T) {
	log := &recLog{}
	db := Open(Options{Log: log})
	tb := relogKV(t, db, 4)
	standby := Open(Options{})
	applyFrom(t, log, 0, standby)
	s := tb.state.Load().s
	row := func(k, v uint64) []byte {
		b, err := s.encodeRow(nil, kv(k, v))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	key := func(k uint64) []byte {
		b, err := s.appendKey(nil, 0, 0, []Value{Uint64(k)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Applied at its last LSN, as an image loads: its LSN stays the
	// primary's, its rows do not.
	bad := &Redo{Ops: []Op{{Kind: OpPut, Table: tb.ID(), Data: row(1, 99)}, {Kind: OpDelete, Table: tb.ID(), Data: key(2)},
		{Kind: OpPut, Table: tb.ID(), Data: row(7, 20)}}}
	if err := standby.Apply(standby.LastLSN(), bad); err != nil {
		t.Fatal(err)
	}
	want := ccTableRows(t, db, "t")
	if got := ccTableRows(t, standby, "t"); len(got) != 4 || bytes.Equal(got[string(key(1))], want[string(key(1))]) {
		t.Fatalf("the standby does not differ: %d rows", len(got))
	}
	before, last := db.LastLSN(), len(log.recs)

	tx := db.Begin()
	for _, c := range []struct {
		k     uint64
		found bool
	}{{1, true}, {2, true}, {7, false}, {9, false}} {
		found, err := tx.Relog(tb, []Value{Uint64(c.k)})
		if err != nil || found != c.found {
			t.Fatalf("Relog(%d) = %v, %v; want %v", c.k, found, err, c.found)
		}
	}
	lsn, err := tx.Commit()
	if err != nil || lsn != before+1 {
		t.Fatalf("commit: LSN %d, %v; want %d", lsn, err, before+1)
	}
	ccDiffRows(t, "the primary after Relog", s, ccTableRows(t, db, "t"), want)
	ccCheckEntries(t, tb, 4)
	ops := lastOps(t, log, tb)
	if len(ops) != 4 {
		t.Errorf("the record has %d operations, want 4", len(ops))
	}
	wantOp(t, ops, tb, 1, kv(1, 10))
	wantOp(t, ops, tb, 2, kv(2, 20))
	wantOp(t, ops, tb, 7, nil)
	wantOp(t, ops, tb, 9, nil)

	applyFrom(t, log, last, standby)
	ccDiffRows(t, "the standby after the repair", s, ccTableRows(t, standby, "t"), want)
	st, err := standby.Table("t")
	if err != nil {
		t.Fatal(err)
	}
	ccCheckEntries(t, st, 4)
}

// TestRelogInTransaction: Relog with the transaction's other writes of the
// same keys. The record holds each key once, as the transaction leaves
// it, and a key Relog named stays in it even when the transaction inserts
// and deletes it again. A key found absent reads as absent.
func TestRelogInTransaction(t *testing.T) {
	log := &recLog{}
	db := Open(Options{Log: log})
	tb := relogKV(t, db, 3)
	v, err := tb.Column("v")
	if err != nil {
		t.Fatal(err)
	}
	relog := func(tx *Tx, k uint64, want bool) error {
		found, err := tx.Relog(tb, []Value{Uint64(k)})
		if err == nil && found != want {
			err = fmt.Errorf("Relog(%d) found %v, want %v", k, found, want)
		}
		return err
	}
	reviewCommit(t, func(tx *Tx) error {
		steps := []func() error{
			func() error { return relog(tx, 5, false) },
			func() error {
				if _, found, err := tx.Get(tb, []Value{Uint64(5)}); err != nil || found {
					return fmt.Errorf("Get(5) after Relog: found %v, %v", found, err)
				}
				n := 0
				if err := tx.Scan(tb, ScanSpec{}, func(Record) bool { n++; return true }); err != nil || n != 3 {
					return fmt.Errorf("a scan after Relog(5): %d rows, %v", n, err)
				}
				return nil
			},
			func() error { return tx.Insert(tb, kv(5, 50)) },
			func() error { return tx.Delete(tb, []Value{Uint64(5)}) },
			func() error { return tx.Insert(tb, kv(6, 60)) },
			func() error { return relog(tx, 6, true) },
			func() error { return tx.Delete(tb, []Value{Uint64(6)}) },
			func() error { return relog(tx, 1, true) },
			func() error { return relog(tx, 1, true) },
			func() error {
				return tx.Update(tb, []Value{Uint64(1)}, []ColumnValue{{Column: v, Value: Uint64(11)}})
			},
			func() error { return relog(tx, 2, true) },
			func() error { return tx.Delete(tb, []Value{Uint64(2)}) },
			func() error { return relog(tx, 2, false) },
			func() error { return tx.Upsert(tb, kv(2, 22)) },
		}
		for i, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("step %d: %w", i, err)
			}
		}
		return nil
	}, db)
	ops := lastOps(t, log, tb)
	if len(ops) != 4 {
		t.Errorf("the record has %d operations, want 4", len(ops))
	}
	wantOp(t, ops, tb, 5, nil)
	wantOp(t, ops, tb, 6, nil)
	wantOp(t, ops, tb, 1, kv(1, 11))
	wantOp(t, ops, tb, 2, kv(2, 22))
	ccCheckEntries(t, tb, 3)
	ccDiffRows(t, "a replay", tb.state.Load().s, ccTableRows(t, mustReplay(t, log), "t"), ccTableRows(t, db, "t"))

	// A transaction that only relogs, rolled back, leaves no trace.
	n := len(log.recs)
	tx := db.Begin()
	if err := relog(tx, 1, true); err != nil {
		t.Fatal(err)
	}
	if err := relog(tx, 8, false); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	if len(log.recs) != n {
		t.Errorf("a rolled back Relog logged a record")
	}
	ccCheckEntries(t, tb, 3)
}

// TestRelogSerializes: a change of a relogged key serializes before the
// Relog (which then conflicts) or after it, with a higher LSN; a standby
// replaying the log never gets the relogged image after the change.
func TestRelogSerializes(t *testing.T) {
	log := &hookLog{}
	db := Open(Options{Log: log})
	tb := relogKV(t, db, 1)
	v, err := tb.Column("v")
	if err != nil {
		t.Fatal(err)
	}
	update1 := func(tx *Tx) error {
		return tx.Update(tb, []Value{Uint64(1)}, []ColumnValue{{Column: v, Value: Uint64(12)}})
	}
	insert5 := func(tx *Tx) error { return tx.Insert(tb, kv(5, 50)) }
	delete5 := func(tx *Tx) error { return tx.Delete(tb, []Value{Uint64(5)}) }

	// Committed between the Relog's read and its commit: a conflict.
	for _, c := range []struct {
		name   string
		k      uint64
		change func(*Tx) error
	}{{"update of a relogged row", 1, update1}, {"insert of a key relogged as absent", 5, insert5}} {
		tx := db.Begin()
		if _, err := tx.Relog(tb, []Value{Uint64(c.k)}); err != nil {
			t.Fatal(err)
		}
		reviewCommit(t, c.change, db)
		n := len(log.recs)
		if _, err := tx.Commit(); !errors.Is(err, ErrConflict) {
			t.Fatalf("%s, then the Relog's commit: %v, want ErrConflict", c.name, err)
		}
		if len(log.recs) != n {
			t.Fatalf("%s: the conflicting Relog logged a record", c.name)
		}
	}

	// Attempted while the Relog commits, after its validation: it waits
	// for the Relog and commits after it. Were the key not held (an
	// absent one especially, which has no row to lock), it would commit
	// first with a lower LSN, and the relogged image would undo it on a
	// standby.
	for _, c := range []struct {
		name   string
		k      uint64
		change func(*Tx) error
	}{{"update of a relogged row", 1, update1}, {"delete of a relogged row", 5, delete5}, {"insert of a key relogged as absent", 5, insert5}} {
		var (
			wg        sync.WaitGroup
			changeLSN uint64
			changeErr error
		)
		hook := func() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				changeLSN, changeErr = ccAttempt(db, c.change)
			}()
			time.Sleep(20 * time.Millisecond) // time enough to commit, were it not held off
		}
		log.hook.Store(&hook)
		lsn, _, err := ccRetry(db, func(tx *Tx) error {
			_, err := tx.Relog(tb, []Value{Uint64(c.k)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if changeErr != nil || changeLSN <= lsn {
			t.Fatalf("%s while the Relog commits at LSN %d: LSN %d, %v; want a later LSN", c.name, lsn, changeLSN, changeErr)
		}
		ccDiffRows(t, c.name+": a replay", tb.state.Load().s, ccTableRows(t, mustReplay(t, &log.recLog), "t"), ccTableRows(t, db, "t"))
	}
}

// TestRelogConcurrent: writers insert, update and delete random keys
// while others relog random keys of theirs, some present and some not. Replaying
// the log in LSN order, as a standby does, gives exactly the database:
// no relogged image ever lands after a newer change of its key.
func TestRelogConcurrent(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	log := &recLog{}
	db := Open(Options{Log: log})
	tb := relogKV(t, db, 0)
	const keys, writers, relogers, rounds = 33, 3, 2, 600
	sink := ccNewSink(t)
	var wg sync.WaitGroup
	for g := range writers + relogers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			for i := range rounds {
				_, _, err := ccRetry(db, func(tx *Tx) error {
					if g >= writers {
						for range 1 + r.IntN(4) {
							if _, err := tx.Relog(tb, []Value{Uint64(r.Uint64N(keys))}); err != nil {
								return err
							}
						}
						return nil
					}
					// Each writer has keys of its own: two upserts of one
					// absent key race to ErrDuplicate, which is not what
					// this tests.
					k := uint64(g) + writers*r.Uint64N(keys/writers)
					if r.IntN(3) == 0 {
						err := tx.Delete(tb, []Value{Uint64(k)})
						if errors.Is(err, ErrNotFound) {
							return nil
						}
						return err
					}
					// v is unique to the writer and round: no duplicates.
					return tx.Upsert(tb, kv(k, uint64(g*rounds+i)))
				})
				if err != nil {
					sink.fail("goroutine %d round %d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	sink.done()
	if sink.failed() {
		return
	}
	ccDiffRows(t, "a replay of the log", tb.state.Load().s, ccTableRows(t, mustReplay(t, log), "t"), ccTableRows(t, db, "t"))
	ccCheckEntries(t, tb, int64(len(ccTableRows(t, db, "t"))))
}
