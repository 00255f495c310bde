package mem

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitBuilt returns once the index build of a CreateIndex that Apply
// applied, if one runs, is over.
func waitBuilt(db *DB) {
	if b := db.applying.Load(); b != nil {
		<-b.ready
	}
}

// applySoon applies r at lsn, failing the test unless Apply returns nil
// within seconds: one that waits for an index build held by the test
// would wait for ever.
func applySoon(t *testing.T, db *DB, lsn uint64, r *Redo) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- db.Apply(lsn, r) }()
	waitApplied(t, done)
}

// holdBuild has the next index build stop at page 2 until the returned
// release is called (or the test ends); reached is closed once it stops.
func holdBuild(t *testing.T) (reached <-chan struct{}, release func()) {
	t.Helper()
	at, gate := make(chan struct{}), make(chan struct{})
	var once, opened sync.Once
	release = func() { opened.Do(func() { close(gate) }) }
	withBackfillHook(t, func(pg int) {
		if pg == 2 {
			once.Do(func() {
				close(at)
				<-gate
			})
		}
	})
	t.Cleanup(release)
	return at, release
}

// wait fails the test unless ch is closed within seconds.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not within 10 s", what)
	}
}

// putOp and deleteOp are a data record's operations on table w.
func putOp(t *testing.T, tb *Table, k, v uint64) Op {
	t.Helper()
	row, err := tb.state.Load().s.encodeRow(nil, onlineRow(k, v))
	if err != nil {
		t.Fatal(err)
	}
	return Op{Kind: OpPut, Table: tb.ID(), Data: row}
}

func deleteOp(t *testing.T, tb *Table, k uint64) Op {
	t.Helper()
	key, err := tb.state.Load().s.appendKey(nil, 0, 0, []Value{Uint64(k)})
	if err != nil {
		t.Fatal(err)
	}
	return Op{Kind: OpDelete, Table: tb.ID(), Data: key}
}

func createIndexOp(tb *Table, def IndexDef) *Redo {
	return &Redo{Ops: []Op{{Kind: OpCreateIndex, Table: tb.ID(), Data: encodeIndexDef(nil, def)}}}
}

// TestApplyBuildsIndexWhileApplying: a standby applies its primary's
// CreateIndex without holding off the records after it (each Apply
// below runs while the build is stopped at page 2, and would wait for
// ever if Apply built the index first, as it did: a standby then lagged,
// and a primary whose commits wait for its acks stalled, for the whole
// build). From its LSN the index is in the table's definition, and in a
// snapshot's, but reads by it fail with ErrBuilding until it is built;
// then it holds exactly the rows as the applied records left them.
func TestApplyBuildsIndexWhileApplying(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		for _, unique := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/unique=%v", kind, unique), func(t *testing.T) {
				const rows = 3000
				db, tb := onlineTable(t, rows)
				reached, release := holdBuild(t)
				def := IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: unique, Kind: kind}
				lsn := db.LastLSN() + 1
				applySoon(t, db, lsn, createIndexOp(tb, def))
				wait(t, reached, "the build")
				if d := tb.Def(); !slices.ContainsFunc(d.Indexes, func(x IndexDef) bool { return x.Name == "by_v" }) {
					t.Fatalf("the definition after the applied CreateIndex: %+v", d.Indexes)
				}
				if db.SchemaLSN() != lsn || db.LastLSN() != lsn {
					t.Fatalf("SchemaLSN %d, LastLSN %d, want %d", db.SchemaLSN(), db.LastLSN(), lsn)
				}
				ix, err := tb.Index("by_v")
				if err != nil {
					t.Fatal(err)
				}
				ready := tb.IndexReady(ix)
				if ready == nil {
					t.Fatal("IndexReady: nil while the index is being built")
				}
				tx := db.Begin()
				if _, _, err := tx.GetBy(tb, ix, []Value{Uint64(10)}); !errors.Is(err, ErrBuilding) {
					t.Fatalf("GetBy during the build: %v, want ErrBuilding", err)
				}
				if err := tx.Scan(tb, ScanSpec{Index: ix, Prefix: []Value{Uint64(10)}}, func(Record) bool { return true }); !errors.Is(err, ErrBuilding) {
					t.Fatalf("Scan during the build: %v, want ErrBuilding", err)
				}
				tx.Rollback()
				sn := db.Snapshot()
				if d := sn.Tables()[0]; len(d.Indexes) != 1 || d.Indexes[0].Name != "by_v" {
					t.Fatalf("a snapshot after the applied CreateIndex: %+v", d.Indexes)
				}
				sn.Close()
				// Records after it: rows changed (their keys moved), deleted
				// and inserted, in pages the build passed (0, 1) and in
				// pages it has not reached.
				var ops [][]Op
				for _, k := range []uint64{1, 5, rows / 2, rows - 3} {
					ops = append(ops, []Op{putOp(t, tb, k, k*10+5)})
				}
				for _, k := range []uint64{2, rows/2 + 1, rows - 2} {
					ops = append(ops, []Op{deleteOp(t, tb, k)})
				}
				ops = append(ops, []Op{putOp(t, tb, rows, rows*10), putOp(t, tb, rows+1, rows*10+10)})
				// One key passed from row to row in one record.
				ops = append(ops, []Op{putOp(t, tb, 7, 1), putOp(t, tb, rows-5, 70)})
				for _, o := range ops {
					lsn++
					applySoon(t, db, lsn, &Redo{Ops: o})
				}
				select {
				case <-ready:
					t.Fatal("the index was ready before its build went on")
				default:
				}
				release()
				wait(t, ready, "the index")
				if tb.IndexReady(ix) != nil {
					t.Fatal("IndexReady after the build: not nil")
				}
				checkIndexHolds(t, tb, "by_v")
				tx = db.Begin()
				defer tx.Rollback()
				for v, want := range map[uint64]uint64{15: 1, 10: 0, 20: 0, 70: rows - 5, 1: 7, rows * 10: rows, 30: 3} {
					var got []uint64
					err := tx.Scan(tb, ScanSpec{Index: ix, Prefix: []Value{Uint64(v)}}, func(r Record) bool {
						got = append(got, r.Uint64(0))
						return true
					})
					switch {
					case err != nil:
						t.Fatalf("scan of v=%d: %v", v, err)
					case want == 0 && len(got) != 0:
						t.Fatalf("v=%d reaches rows %v, which the applied records changed", v, got)
					case want != 0 && !slices.Equal(got, []uint64{want}):
						t.Fatalf("v=%d reaches rows %v, want row %d", v, got, want)
					}
				}
			})
		}
	}
}

// TestApplyDDLWaitsForAppliedBuild: the schema change after an applied
// CreateIndex waits for its build (here, the DropIndex of that index),
// and then applies.
func TestApplyDDLWaitsForAppliedBuild(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	reached, release := holdBuild(t)
	lsn := db.LastLSN() + 1
	applySoon(t, db, lsn, createIndexOp(tb, IndexDef{Name: "by_v", Columns: []string{"v"}, Kind: Ordered}))
	wait(t, reached, "the build")
	done := make(chan error, 1)
	go func() {
		done <- db.Apply(lsn+1, &Redo{Ops: []Op{{Kind: OpDropIndex, Table: tb.ID(), Data: []byte("by_v")}}})
	}()
	select {
	case err := <-done:
		t.Fatalf("the DropIndex applied during the build of its index: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	waitApplied(t, done)
	if _, err := tb.Index("by_v"); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("after the DropIndex: %v, want ErrNoIndex", err)
	}
}

// TestPromotedDDLWaitsNoLongerThanItsCaller: a schema change of its own
// on a node promoted while it builds an index its primary's CreateIndex
// added waits for the build (which may take seconds), but only until
// its context ends: then it gives up with the context's error and
// changes nothing, rather than run once its caller has gone. Before,
// every schema change but CreateIndex took no context, and CreateIndex
// waited for the lock regardless of its own.
func TestPromotedDDLWaitsNoLongerThanItsCaller(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	reached, release := holdBuild(t)
	applySoon(t, db, db.LastLSN()+1, createIndexOp(tb, IndexDef{Name: "by_v", Columns: []string{"v"}, Kind: Ordered}))
	wait(t, reached, "the build")
	last := db.LastLSN()
	other := TableDef{Name: "other", Columns: []ColumnDef{{Name: "k", Type: TypeUint64}}, PrimaryKey: []string{"k"}}
	changes := map[string]func(ctx context.Context) error{
		"CreateTable": func(ctx context.Context) error { _, err := db.CreateTableContext(ctx, other); return err },
		"DropTable":   func(ctx context.Context) error { _, err := db.DropTableContext(ctx, "w"); return err },
		"CreateIndex": func(ctx context.Context) error {
			_, err := db.CreateIndex(ctx, "w", IndexDef{Name: "by_v2", Columns: []string{"v"}, Kind: Hash})
			return err
		},
		"DropIndex": func(ctx context.Context) error { _, err := db.DropIndexContext(ctx, "w", "by_v"); return err },
	}
	for name, change := range changes {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- change(ctx) }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s during the build, past its deadline: %v, want DeadlineExceeded", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s waited for the build past its deadline", name)
		}
		cancel()
	}
	if db.LastLSN() != last {
		t.Fatalf("LastLSN %d after the changes gave up, want %d", db.LastLSN(), last)
	}
	if _, err := db.Table("other"); !errors.Is(err, ErrNoTable) {
		t.Fatalf("the table whose creation gave up: %v", err)
	}
	release()
	waitBuilt(db)
	if _, err := db.CreateTableContext(context.Background(), other); err != nil {
		t.Fatalf("CreateTable once the build is over: %v", err)
	}
	if _, err := db.DropIndexContext(context.Background(), "w", "by_v"); err != nil {
		t.Fatalf("DropIndex once the build is over: %v", err)
	}
}

// TestApplyUniqueIndexOverDuplicates: a unique index the log adds, whose
// key two rows here hold, says that this node's rows are not its
// primary's (whose CreateIndex found none did). Apply took the record,
// as its build runs after; once the build finds the two rows, Apply
// refuses every record, the next one unapplied, as it would one that
// does not fit, and reads by the index fail with that error, as writes
// to the table do (a standby promoted since would otherwise tell them to
// wait for ever).
func TestApplyUniqueIndexOverDuplicates(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, onlineRow(3000, 10)) }, db) // row 1's v
	lsn := db.LastLSN() + 1
	if err := db.Apply(lsn, createIndexOp(tb, IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: Hash})); err != nil {
		t.Fatal(err)
	}
	waitBuilt(db)
	err := db.Apply(lsn+1, &Redo{Ops: []Op{putOp(t, tb, 5000, 50000)}})
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrNotUnique) {
		t.Fatalf("Apply after the build found two rows with one key: %v, want ErrCorrupt and ErrNotUnique", err)
	}
	for _, m := range []string{`"by_v"`, `"w"`, fmt.Sprint(lsn), "imaged again"} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("the refusal %q does not mention %s", err, m)
		}
	}
	if db.LastLSN() != lsn {
		t.Fatalf("LastLSN %d after the refusal, want %d", db.LastLSN(), lsn)
	}
	tx := db.Begin()
	defer tx.Rollback()
	if _, ok, err := tx.Get(tb, []Value{Uint64(5000)}); ok || err != nil {
		t.Fatalf("the refused record's row: found %v, %v", ok, err)
	}
	checkFaultedIndex(t, db, tb, "by_v", Uint64(20))
}

// checkFaultedIndex checks what a node whose build of index name (a
// unique index over column v that Apply added) found that its rows break
// it answers, whether a standby or promoted since: reads by the index,
// and writes to the table that would claim its keys, are refused with
// the build's ErrCorrupt (waiting would never end), deletes are taken,
// and Stats says why the index stays unbuilt.
func checkFaultedIndex(t *testing.T, db *DB, tb *Table, name string, key Value) {
	t.Helper()
	ix, err := tb.Index(name)
	if err != nil {
		t.Fatal(err)
	}
	if tb.IndexReady(ix) != nil {
		t.Fatal("IndexReady: not nil once the build failed (a reader would wait for ever)")
	}
	tx := db.Begin()
	defer tx.Rollback()
	if _, _, err := tx.GetBy(tb, ix, []Value{key}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "imaged again") {
		t.Fatalf("GetBy by the index that did not fit: %v, want its build's ErrCorrupt", err)
	}
	if db.Building() != nil {
		t.Fatal("Building: not nil after the build failed")
	}
	if err := commitSoon(t, db, func(tx *Tx) error { return tx.Insert(tb, onlineRow(7000, 70000)) }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("an insert into the table: %v, want the build's ErrCorrupt", err)
	}
	if err := commitSoon(t, db, func(tx *Tx) error { return tx.Delete(tb, []Value{Uint64(5)}) }); err != nil {
		t.Fatalf("a delete from the table: %v", err)
	}
	st := tb.Stats()
	is := st.Indexes[len(st.Indexes)-1]
	if is.Name != name || !is.Building || !errors.Is(is.Fault, ErrCorrupt) {
		t.Fatalf("Stats of the index that did not fit: %+v, want it building with the build's fault", is)
	}
}

// TestReplayBuildsIndexAtOnce: a Replayer (recovery, which serves no
// reads yet) builds an index it replays before it goes on.
func TestReplayBuildsIndexAtOnce(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	r := db.NewReplayer()
	if err := r.Add(db.LastLSN()+1, createIndexOp(tb, IndexDef{Name: "by_v", Columns: []string{"v"}, Kind: Hash})); err != nil {
		t.Fatal(err)
	}
	ix, err := tb.Index("by_v")
	if err != nil {
		t.Fatal(err)
	}
	if tb.IndexReady(ix) != nil {
		t.Fatal("a replayed index is not ready once Add returns")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	checkIndexHolds(t, tb, "by_v")
}

// TestPromotedCommitWaitsForUniqueBuild: a standby promoted while it
// builds a unique index its primary's CreateIndex added commits writes
// of its own. One that claims a key of that index is refused with
// ErrBuilding until the build ends (DB.Building): the index lacks the
// rows the build has not reached, so the claim could not see a row
// that holds the key there, and the build, of a logged index, cannot
// fail when it finds the two (the insert below gave row 2990's key to a
// second row). A non-unique index takes the writes as they come.
func TestPromotedCommitWaitsForUniqueBuild(t *testing.T) {
	for _, unique := range []bool{false, true} {
		t.Run(fmt.Sprintf("unique=%v", unique), func(t *testing.T) {
			db, tb := onlineTable(t, 3000)
			reached, release := holdBuild(t)
			applySoon(t, db, db.LastLSN()+1, createIndexOp(tb, IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: unique, Kind: Hash}))
			wait(t, reached, "the build")
			building := db.Building()
			if building == nil {
				t.Fatal("Building: nil during the build")
			}
			insert := func(tx *Tx) error { return tx.Insert(tb, onlineRow(5000, 29900)) }
			err := commitSoon(t, db, insert)
			if unique && !errors.Is(err, ErrBuilding) {
				t.Fatalf("a commit claiming a key of the unique index being built: %v, want ErrBuilding", err)
			}
			if !unique && err != nil {
				t.Fatal(err)
			}
			if err := commitSoon(t, db, func(tx *Tx) error { return tx.Delete(tb, []Value{Uint64(4)}) }); err != nil {
				t.Fatalf("a delete during the build: %v", err)
			}
			release()
			wait(t, building, "the build")
			if db.Building() != nil {
				t.Fatal("Building: not nil after the build")
			}
			checkIndexHolds(t, tb, "by_v")
			if unique {
				if err := commitSoon(t, db, insert); !errors.Is(err, ErrDuplicate) {
					t.Fatalf("the insert again once the index is built: %v, want ErrDuplicate", err)
				}
			}
		})
	}
}

// TestApplyDDLAfterFaultedBuild: a schema change that Apply held for a
// build which then finds that this node's rows break its unique index is
// refused, as every record after is: it was applied (Apply checked for
// the fault before it waited), and a CreateIndex on the same table then
// left the index that did not fit readable, short of the rows the build
// had not reached.
func TestApplyDDLAfterFaultedBuild(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, onlineRow(3000, 10)) }, db) // row 1's v
	reached, release := holdBuild(t)
	lsn := db.LastLSN() + 1
	applySoon(t, db, lsn, createIndexOp(tb, IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: Hash}))
	wait(t, reached, "the build")
	done := make(chan error, 1)
	go func() {
		done <- db.Apply(lsn+1, createIndexOp(tb, IndexDef{Name: "by_v2", Columns: []string{"v"}, Kind: Ordered}))
	}()
	release()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Apply never returned")
	}
	waitBuilt(db)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrNotUnique) {
		t.Fatalf("the CreateIndex after the build found two rows with one key: %v, want ErrCorrupt and ErrNotUnique", err)
	}
	if db.LastLSN() != lsn {
		t.Fatalf("LastLSN %d after the refusal, want %d", db.LastLSN(), lsn)
	}
	if _, err := tb.Index("by_v2"); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("the refused CreateIndex's index: %v, want ErrNoIndex", err)
	}
	checkFaultedIndex(t, db, tb, "by_v", Uint64(20000))
}

// TestReadsStraddlingIndexDDL: a transaction whose lookups and scans ran
// before an index was added to their table (a CreateIndex of this
// node's, or one Apply added and built) commits: the indexes they used
// are the same, kept up to date by every commit, and are checked again
// as they are. Before, any schema change of the table since a lookup or
// a scan failed the commit with ErrConflict, so a build's start and end
// each aborted the transactions that straddled them, on a standby too.
// Dropping an index a scan used is still a conflict, and dropping
// another one, which moves the used one's ordinal, leaves its check
// whole: a row put since in the range it scanned is found.
func TestReadsStraddlingIndexDDL(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	ctx := context.Background()
	if _, err := db.CreateIndex(ctx, "w", IndexDef{Name: "by_v", Columns: []string{"v"}, Kind: Ordered}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"by_v_spare", "by_v_too"} {
		if _, err := db.CreateIndex(ctx, "w", IndexDef{Name: name, Columns: []string{"v"}, Kind: Ordered}); err != nil {
			t.Fatal(err)
		}
	}
	// read looks up a missing key and scans index name over v in [lo, lo+100).
	read := func(name string, lo uint64) *Tx {
		t.Helper()
		ix, err := tb.Index(name)
		if err != nil {
			t.Fatal(err)
		}
		tx := db.Begin()
		if _, ok, err := tx.Get(tb, []Value{Uint64(1 << 40)}); ok || err != nil {
			t.Fatalf("lookup of a missing key: %v %v", ok, err)
		}
		n := 0
		err = tx.Scan(tb, ScanSpec{Index: ix, Lower: []Value{Uint64(lo)}, Upper: []Value{Uint64(lo + 100)}}, func(Record) bool { n++; return true })
		if err != nil || n != 10 {
			t.Fatalf("scan of %s: %d rows, %v", name, n, err)
		}
		return tx
	}
	commit := func(tx *Tx, what string, want error) {
		t.Helper()
		if err := tx.Update(tb, []Value{Uint64(7)}, []ColumnValue{{Column: 2, Value: String("x")}}); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Commit(); !errors.Is(err, want) {
			t.Fatalf("commit of a transaction that read before %s: %v, want %v", what, err, want)
		}
	}

	tx := read("by_v", 1000)
	if _, err := db.CreateIndex(ctx, "w", IndexDef{Name: "by_k_v", Columns: []string{"k", "v"}, Kind: Hash}); err != nil {
		t.Fatal(err)
	}
	commit(tx, "a CreateIndex of this node's", nil)

	tx = read("by_v", 2000)
	applySoon(t, db, db.LastLSN()+1, createIndexOp(tb, IndexDef{Name: "by_pad", Columns: []string{"pad"}, Kind: Ordered}))
	waitBuilt(db)
	commit(tx, "an index Apply added and built", nil)

	tx = read("by_v_too", 3000)
	if _, err := db.DropIndex("w", "by_v_spare"); err != nil { // by_v_too moves from ordinal 3 to 2
		t.Fatal(err)
	}
	commit(tx, "a DropIndex of another index", nil)

	tx = read("by_v_too", 4000)
	if _, err := db.DropIndex("w", "by_v"); err != nil { // by_v_too moves from ordinal 2 to 1
		t.Fatal(err)
	}
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, onlineRow(9000, 4050)) }, db)
	commit(tx, "a DropIndex of another index and an insert into the range it scanned", ErrConflict)

	tx = read("by_v_too", 5000)
	if _, err := db.DropIndex("w", "by_v_too"); err != nil {
		t.Fatal(err)
	}
	commit(tx, "a DropIndex of the index it scanned", ErrConflict)
}

// TestPromotedDDLKeepsFaultedIndex: on a node promoted after the build
// of a unique index its primary's CreateIndex added found that this
// node's rows break it, a schema change of its own on the table leaves
// that index faulted. A DropIndex of another index keeps it unreadable,
// and writes that would claim its keys refused; a CreateIndex is refused
// with its fault. Before, either published a state without the build,
// so the index, short of the rows the build had not reached, served
// reads (a key it lacked read as absent) and unique checks. Dropping the
// faulted index itself mends the table.
func TestPromotedDDLKeepsFaultedIndex(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	ctx := context.Background()
	if _, err := db.CreateIndex(ctx, "w", IndexDef{Name: "by_pad", Columns: []string{"pad"}, Kind: Ordered}); err != nil {
		t.Fatal(err)
	}
	// Row 2 takes row 1's v: the build stops on the first page.
	reviewCommit(t, func(tx *Tx) error {
		return tx.Update(tb, []Value{Uint64(2)}, []ColumnValue{{Column: 1, Value: Uint64(10)}})
	}, db)
	applySoon(t, db, db.LastLSN()+1, createIndexOp(tb, IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: Hash}))
	waitBuilt(db)
	checkFaultedIndex(t, db, tb, "by_v", Uint64(20))
	// faulted checks what checkFaultedIndex does but the delete, which
	// it made already.
	faulted := func(after string) {
		t.Helper()
		ix, err := tb.Index("by_v")
		if err != nil {
			t.Fatalf("after %s: %v", after, err)
		}
		tx := db.Begin()
		defer tx.Rollback()
		// Row 2990 is on a page the build never reached: the index lacks it.
		if _, _, err := tx.GetBy(tb, ix, []Value{Uint64(29900)}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("after %s, GetBy by the index that did not fit: %v, want its build's ErrCorrupt", after, err)
		}
		if err := commitSoon(t, db, func(tx *Tx) error { return tx.Insert(tb, onlineRow(7000, 29900)) }); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("after %s, an insert of a key the index lacks: %v, want the build's ErrCorrupt", after, err)
		}
	}
	if _, err := db.DropIndex("w", "by_pad"); err != nil {
		t.Fatalf("DropIndex of another index: %v", err)
	}
	if _, err := tb.Index("by_pad"); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("the dropped index: %v, want ErrNoIndex", err)
	}
	faulted("a DropIndex of another index")
	last := db.LastLSN()
	if _, err := db.CreateIndex(ctx, "w", IndexDef{Name: "by_v2", Columns: []string{"v"}, Kind: Ordered}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "imaged again") {
		t.Fatalf("CreateIndex on the table of the faulted index: %v, want its fault", err)
	}
	if db.LastLSN() != last {
		t.Fatalf("LastLSN %d after the refused CreateIndex, want %d", db.LastLSN(), last)
	}
	faulted("a refused CreateIndex")
	if _, err := db.DropIndex("w", "by_v"); err != nil {
		t.Fatalf("DropIndex of the faulted index: %v", err)
	}
	if err := commitSoon(t, db, func(tx *Tx) error { return tx.Insert(tb, onlineRow(7000, 70000)) }); err != nil {
		t.Fatalf("an insert once the faulted index is dropped: %v", err)
	}
}
