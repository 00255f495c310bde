package mem

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// replayDef is a table whose rows move a unique key among themselves.
var replayDef = TableDef{
	Name:        "r",
	Columns:     []ColumnDef{{Name: "id", Type: TypeInt64}, {Name: "u", Type: TypeInt64}, {Name: "pad", Type: TypeString, MaxLen: 64}},
	PrimaryKey:  []string{"id"},
	PrimaryKind: Ordered,
	Indexes: []IndexDef{
		{Name: "by_u", Columns: []string{"u"}, Unique: true, Kind: Hash},
		{Name: "by_u_ord", Columns: []string{"u"}, Unique: true, Kind: Ordered},
	},
}

// withWorkers runs the test with n cores' worth of replay workers, so
// that rows spread over several even on a machine with fewer cores.
func withWorkers(t *testing.T, n int) {
	prev := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// replayAll replays the records of log into a new database through a
// Replayer and returns it with Close's error.
func replayAll(t *testing.T, log *recLog) (*DB, error) {
	t.Helper()
	db := Open(Options{})
	rp := db.NewReplayer()
	for i, b := range log.recs {
		r, err := DecodeRedo(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := rp.Add(uint64(i+1), r); err != nil {
			return db, errors.Join(err, rp.Close())
		}
	}
	return db, rp.Close()
}

// TestReplayerMovesUniqueKeys replays a log in which rows, spread over
// four workers, keep taking the unique key another row gave up a record
// earlier, swap keys through a spare value inside one record, and are
// deleted and inserted again with keys others held: the workers install
// them out of order, yet the result is the source's, and the unique
// indexes find every row.
func TestReplayerMovesUniqueKeys(t *testing.T) {
	withWorkers(t, 4)
	for _, limit := range []int64{maxUnchecked, 5} {
		t.Run(fmt.Sprintf("checked every %d keys", limit), func(t *testing.T) {
			prev := maxUnchecked
			maxUnchecked = limit
			defer func() { maxUnchecked = prev }()
			replayMovingKeys(t)
		})
	}
}

func replayMovingKeys(t *testing.T) {
	log := &recLog{}
	src := Open(Options{Log: log})
	tbl, err := src.CreateTable(replayDef)
	if err != nil {
		t.Fatal(err)
	}
	const rows = 64
	commit := func(fn func(tx *Tx) error) {
		t.Helper()
		tx := src.Begin()
		if err := fn(tx); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	u := map[int64]int64{} // row id -> its key
	next := int64(rows)
	for id := range int64(rows) {
		u[id] = id
		commit(func(tx *Tx) error { return tx.Insert(tbl, []Value{Int64(id), Int64(id), String("row")}) })
	}
	set := func(tx *Tx, id, v int64) error {
		u[id] = v
		return tx.Update(tbl, []Value{Int64(id)}, []ColumnValue{{Column: 1, Value: Int64(v)}})
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 3000 {
		a, b := rng.Int64N(rows), rng.Int64N(rows)
		if a == b {
			continue
		}
		switch rng.IntN(3) {
		case 0: // a gives its key up; b takes it in the next record
			old := u[a]
			next++
			commit(func(tx *Tx) error { return set(tx, a, next) })
			commit(func(tx *Tx) error { return set(tx, b, old) })
		case 1: // a and b swap keys in one record
			ua, ub := u[a], u[b]
			next++
			commit(func(tx *Tx) error {
				return errors.Join(set(tx, a, next), set(tx, b, ua), set(tx, a, ub))
			})
		case 2: // a is deleted; b takes its key; a comes back with b's old one
			ua, ub := u[a], u[b]
			commit(func(tx *Tx) error { return tx.Delete(tbl, []Value{Int64(a)}) })
			commit(func(tx *Tx) error { return set(tx, b, ua) })
			commit(func(tx *Tx) error {
				u[a] = ub
				return tx.Insert(tbl, []Value{Int64(a), Int64(ub), String("again")})
			})
		}
	}
	dst, err := replayAll(t, log)
	if err != nil {
		t.Fatal(err)
	}
	if dst.LastLSN() != src.LastLSN() {
		t.Errorf("LastLSN %d after replay, want %d", dst.LastLSN(), src.LastLSN())
	}
	ccDiffRows(t, "replayed vs source", tbl.state.Load().s, ccTableRows(t, dst, "r"), ccTableRows(t, src, "r"))
	dt, err := dst.Table("r")
	if err != nil {
		t.Fatal(err)
	}
	tx := dst.Begin()
	defer tx.Rollback()
	for id, v := range u {
		for ix := 1; ix <= 2; ix++ {
			r, ok, err := tx.GetBy(dt, ix, []Value{Int64(v)})
			if err != nil || !ok || r.Int64(0) != id {
				t.Fatalf("index %d: key %d finds %v %v (row %d), want row %d", ix, v, ok, err, r.Int64(0), id)
			}
		}
	}
}

// TestReplayerUniqueViolation: a log that leaves two rows with one
// unique key, which serial Apply refuses at the record, fails a replay
// with ErrCorrupt naming the index and the key. (A clash that a later
// record ends is not caught: the keys are checked as they stand when
// the workers stop.)
func TestReplayerUniqueViolation(t *testing.T) {
	withWorkers(t, 4)
	db := Open(Options{})
	tbl, err := db.CreateTable(replayDef)
	if err != nil {
		t.Fatal(err)
	}
	s := tbl.state.Load().s
	row := func(id, u int64) Op {
		b, err := s.encodeRow(nil, []Value{Int64(id), Int64(u), String("x")})
		if err != nil {
			t.Fatal(err)
		}
		return Op{Kind: OpPut, Table: tbl.ID(), Data: b}
	}
	for _, tc := range []struct {
		name string
		recs [][]Op
	}{
		{"held at the end", [][]Op{{row(1, 5)}, {row(2, 5)}}},
		{"held at the end, later records between", [][]Op{{row(1, 5)}, {row(2, 6)}, {row(3, 7)}, {row(2, 5)}, {row(3, 8)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := Open(Options{})
			create := &Redo{Ops: []Op{{Kind: OpCreateTable, Table: tbl.ID(), Data: encodeTableDef(nil, tbl.Def())}}}
			rp := dst.NewReplayer()
			err := rp.Add(1, create)
			for i, ops := range tc.recs {
				if err == nil {
					err = rp.Add(uint64(i+2), &Redo{Ops: ops})
				}
			}
			err = errors.Join(err, rp.Close())
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"by_u`) || !strings.Contains(err.Error(), "5") {
				t.Fatalf("replay: %v, want ErrCorrupt naming the index and key 5", err)
			}
		})
	}
}

// TestReplayerUsesEveryCore: a replay runs a worker per core and spreads
// the rows it installs over all of them (SPEC 5: replay uses all cores).
func TestReplayerUsesEveryCore(t *testing.T) {
	withWorkers(t, 4)
	src := Open(Options{})
	tbl, err := src.CreateTable(replayDef)
	if err != nil {
		t.Fatal(err)
	}
	s := tbl.state.Load().s
	db := Open(Options{})
	rp := db.NewReplayer()
	err = rp.Add(1, &Redo{Ops: []Op{{Kind: OpCreateTable, Table: tbl.ID(), Data: encodeTableDef(nil, tbl.Def())}}})
	// Fewer records than a batch: the batch being filled shows which
	// worker each row goes to.
	for id := int64(1); id < replayBatchSize && err == nil; id++ {
		var b []byte
		if b, err = s.encodeRow(nil, []Value{Int64(id), Int64(id), String("x")}); err == nil {
			err = rp.Add(uint64(id+1), &Redo{Ops: []Op{{Kind: OpPut, Table: tbl.ID(), Data: b}}})
		}
	}
	workers, used := len(rp.workers), map[uint8]bool{}
	for _, w := range rp.batch.worker {
		used[w] = true
	}
	if err := errors.Join(err, rp.Close()); err != nil {
		t.Fatal(err)
	}
	if workers != 4 || len(used) != 4 {
		t.Fatalf("a replay on 4 cores ran %d workers and gave rows to %d of them", workers, len(used))
	}
}

// TestReplayerBadInput: records out of order, an unknown table and two
// operations on one row are refused by Add; the error ends the replay
// (later calls return it, nothing more is installed, LastLSN stays), and
// Add after Close fails without a panic.
func TestReplayerBadInput(t *testing.T) {
	db := Open(Options{})
	tbl, err := db.CreateTable(replayDef)
	if err != nil {
		t.Fatal(err)
	}
	base := db.LastLSN()
	s := tbl.state.Load().s
	row := func(id int64) []byte {
		b, err := s.encodeRow(nil, []Value{Int64(id), Int64(id), String("x")})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := Op{Kind: OpPut, Table: tbl.ID(), Data: row(1)}
	for _, tc := range []struct {
		name string
		lsn  uint64
		r    *Redo
		want error
	}{
		{"LSN zero", 0, &Redo{}, ErrInvalid},
		{"no record", base + 1, nil, ErrInvalid},
		{"unknown table", base + 1, &Redo{Ops: []Op{{Kind: OpPut, Table: 99, Data: row(1)}}}, ErrNoTable},
		{"a row twice", base + 1, &Redo{Ops: []Op{put, put}}, ErrCorrupt},
		{"a bad row", base + 1, &Redo{Ops: []Op{{Kind: OpPut, Table: tbl.ID(), Data: row(1)[:3]}}}, ErrCorrupt},
	} {
		rp := db.NewReplayer()
		if err := rp.Add(base+1, &Redo{Ops: []Op{{Kind: OpPut, Table: tbl.ID(), Data: row(7)}}}); err != nil {
			t.Fatalf("%s: a good record: %v", tc.name, err)
		}
		lsn := tc.lsn
		if lsn == base+1 {
			lsn = base + 2 // after the good record
		}
		if err := rp.Add(lsn, tc.r); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if err := rp.Add(lsn+1, &Redo{Ops: []Op{{Kind: OpPut, Table: tbl.ID(), Data: row(8)}}}); !errors.Is(err, tc.want) {
			t.Errorf("%s: the next Add: %v, want the error again", tc.name, err)
		}
		if err := rp.Close(); !errors.Is(err, tc.want) {
			t.Errorf("%s: Close: %v, want the error again", tc.name, err)
		}
		if err := rp.Add(lsn+2, &Redo{}); err == nil {
			t.Errorf("%s: Add after Close succeeded", tc.name)
		}
		if got := db.LastLSN(); got > base+1 {
			t.Errorf("%s: LastLSN %d, past the last good record's %d", tc.name, got, base+1)
		}
		tx := db.Begin()
		if _, ok, err := tx.Get(tbl, []Value{Int64(8)}); ok || err != nil {
			t.Errorf("%s: a record after the bad one was installed (%v)", tc.name, err)
		}
		tx.Rollback()
	}
	rp := db.NewReplayer()
	if err := rp.Add(base+2, &Redo{Ops: []Op{put}}); err != nil {
		t.Fatal(err)
	}
	if err := rp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rp.Close(); err == nil {
		t.Error("a second Close succeeded")
	}
	if got := db.LastLSN(); got != base+2 {
		t.Errorf("LastLSN %d, want %d", got, base+2)
	}
}
