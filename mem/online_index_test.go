package mem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// onlineTable returns a table of rows {k, v = k*10, pad} spread over
// many pages (a 150-byte pad).
func onlineTable(t *testing.T, rows int) (*DB, *Table) {
	t.Helper()
	return padTable(t, Options{}, rows, 150)
}

// padTable returns a database with opts and a table w of rows
// {k, v = k*10, pad bytes of padding}; pad may reach 10000.
func padTable(t *testing.T, opts Options, rows, pad int) (*DB, *Table) {
	t.Helper()
	db := Open(opts)
	tb, err := db.CreateTable(TableDef{
		Name: "w",
		Columns: []ColumnDef{
			{Name: "k", Type: TypeUint64}, {Name: "v", Type: TypeUint64},
			{Name: "pad", Type: TypeString, MaxLen: 10000},
		},
		PrimaryKey: []string{"k"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for lo := 0; lo < rows; lo += 50 {
		reviewCommit(t, func(tx *Tx) error {
			for k := lo; k < min(lo+50, rows); k++ {
				if err := tx.Insert(tb, []Value{Uint64(uint64(k)), Uint64(uint64(k) * 10), String(strings.Repeat("p", pad))}); err != nil {
					return err
				}
			}
			return nil
		}, db)
	}
	return db, tb
}

func onlineRow(k, v uint64) []Value {
	return []Value{Uint64(k), Uint64(v), String(strings.Repeat("p", 150))}
}

// withBackfillHook sets testHookBackfill for the test's duration.
func withBackfillHook(t *testing.T, fn func(pg int)) {
	t.Helper()
	testHookBackfill = fn
	t.Cleanup(func() { testHookBackfill = nil })
}

// commitSoon runs fn in a transaction and commits it, failing the test
// if that takes more than a few seconds: a commit that waits for the
// index build that runs it would wait for ever.
func commitSoon(t *testing.T, db *DB, fn func(tx *Tx) error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		tx := db.Begin()
		defer tx.Rollback()
		if err := fn(tx); err != nil {
			done <- err
			return
		}
		_, err := tx.Commit()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("a commit waited for CreateIndex to finish building")
		return nil
	}
}

// checkIndexHolds checks that index name of tb has exactly one entry
// per row, under the row's key: no entry missing, none twice, none left
// behind by a row deleted or changed. Nothing writes the table.
func checkIndexHolds(t *testing.T, tb *Table, name string) {
	t.Helper()
	ix, err := tb.Index(name)
	if err != nil {
		t.Fatal(err)
	}
	st := tb.state.Load()
	x := st.idx[ix]
	rows := 0
	var key []byte
	var cands []uint64
	tb.heap.each(func(rid uint64, row []byte) bool {
		rows++
		key = st.s.appendRowKey(key[:0], ix, row)
		cands = x.lookup(key, cands[:0])
		n := 0
		for _, c := range cands {
			if c&ridMask == rid {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("index %q: the row at %#x has %d entries under its key", name, rid, n)
		}
		return true
	})
	if got := x.entries(); got != int64(rows) {
		t.Fatalf("index %q has %d entries for %d rows", name, got, rows)
	}
}

// TestCreateIndexLetsCommitsRun: CreateIndex builds a new index while
// commits go on (each commit below runs in the middle of the build and
// would wait for ever if the build held commits off); the index is not
// readable until it is built; and once built it holds exactly the rows
// as the commits left them: rows changed, deleted and inserted both in
// pages the build had passed and in pages it had not reached.
func TestCreateIndexLetsCommitsRun(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		for _, unique := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/unique=%v", kind, unique), func(t *testing.T) {
				const rows = 3000
				db, tb := onlineTable(t, rows)
				if tb.heap.npages.Load() < 8 {
					t.Fatalf("only %d pages", tb.heap.npages.Load())
				}
				// Rows in page 0 the build has passed when the hook runs
				// at page 2, and rows in the last page it has not reached.
				early := []uint64{3, 4, 5}
				late := []uint64{rows - 3, rows - 2, rows - 1}
				model := map[uint64]uint64{}
				for k := range uint64(rows) {
					model[k] = k * 10
				}
				ran := false
				withBackfillHook(t, func(pg int) {
					if pg != 2 {
						return
					}
					ran = true
					if _, err := tb.Index("by_v"); !errors.Is(err, ErrNoIndex) {
						t.Errorf("an index being built was found by name: %v", err)
					}
					if d := tb.Def(); len(d.Indexes) != 0 {
						t.Errorf("the table's definition shows an index being built: %+v", d.Indexes)
					}
					if st := tb.Stats(); len(st.Indexes) != 2 || !st.Indexes[1].Building {
						t.Errorf("stats do not show the index being built: %+v", st.Indexes)
					}
					err := commitSoon(t, db, func(tx *Tx) error {
						for _, k := range []uint64{early[0], late[0]} { // a new key
							if err := tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 1, Value: Uint64(k*10 + 1)}}); err != nil {
								return err
							}
							model[k] = k*10 + 1
						}
						for _, k := range []uint64{early[1], late[1]} {
							if err := tx.Delete(tb, []Value{Uint64(k)}); err != nil {
								return err
							}
							delete(model, k)
						}
						for _, k := range []uint64{early[2], late[2]} { // the pad only: the key stays
							if err := tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 2, Value: String("q")}}); err != nil {
								return err
							}
						}
						for k := uint64(rows); k < rows+50; k++ {
							if err := tx.Insert(tb, onlineRow(k, k*10)); err != nil {
								return err
							}
							model[k] = k * 10
						}
						return nil
					})
					if err != nil {
						t.Errorf("a commit during the build: %v", err)
					}
				})
				if _, err := db.CreateIndex(context.Background(), "w", IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: unique, Kind: kind}); err != nil {
					t.Fatal(err)
				}
				if !ran {
					t.Fatal("the hook never ran")
				}
				checkIndexHolds(t, tb, "by_v")
				if st := tb.Stats(); st.Indexes[1].Building {
					t.Fatal("stats still show the index as being built")
				}
				ix, _ := tb.Index("by_v")
				tx := db.Begin()
				defer tx.Rollback()
				for k, v := range model {
					n := 0
					err := tx.Scan(tb, ScanSpec{Index: ix, Prefix: []Value{Uint64(v)}}, func(r Record) bool {
						if got := r.Uint64(0); got != k {
							t.Errorf("v=%d found the row of k=%d, want k=%d", v, got, k)
						}
						n++
						return true
					})
					if err != nil || n != 1 {
						t.Fatalf("v=%d: %d rows, %v", v, n, err)
					}
				}
				for _, k := range append(early[:2:2], late[:2]...) { // the old keys
					err := tx.Scan(tb, ScanSpec{Index: ix, Prefix: []Value{Uint64(k * 10)}}, func(r Record) bool {
						t.Errorf("v=%d, changed or deleted, still finds a row", k*10)
						return true
					})
					if err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}

// TestCreateIndexUniqueDuringBuild: while a unique index is built, a
// commit that takes a key a row the build has indexed holds fails as a
// duplicate; one that takes a key of a row not yet indexed succeeds, and
// the build then fails on it, leaving the table as it was: no index, and
// commits go on. Once the duplicate is gone the index builds.
func TestCreateIndexUniqueDuringBuild(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			const rows = 3000
			db, tb := onlineTable(t, rows)
			withBackfillHook(t, func(pg int) {
				if pg != 2 {
					return
				}
				err := commitSoon(t, db, func(tx *Tx) error { return tx.Insert(tb, onlineRow(rows, 10)) })
				if !errors.Is(err, ErrDuplicate) {
					t.Errorf("an insert of a key an indexed row holds: %v, want ErrDuplicate", err)
				}
				err = commitSoon(t, db, func(tx *Tx) error { return tx.Insert(tb, onlineRow(rows+1, (rows-1)*10)) })
				if err != nil {
					t.Errorf("an insert of a key a row not yet indexed holds: %v", err)
				}
			})
			def := IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: kind}
			_, err := db.CreateIndex(context.Background(), "w", def)
			if !errors.Is(err, ErrNotUnique) || !strings.Contains(err.Error(), fmt.Sprint((rows-1)*10)) {
				t.Fatalf("the build: %v, want ErrNotUnique naming the key", err)
			}
			testHookBackfill = nil
			if _, err := tb.Index("by_v"); !errors.Is(err, ErrNoIndex) {
				t.Fatalf("a failed build left the index: %v", err)
			}
			if st := tb.state.Load(); len(st.idx) != 1 || len(st.s.indexes) != 1 || st.build != nil {
				t.Fatalf("a failed build left %d index structures, %d definitions", len(st.idx), len(st.s.indexes))
			}
			reviewCommit(t, func(tx *Tx) error { return tx.Delete(tb, []Value{Uint64(rows + 1)}) }, db)
			if _, err := db.CreateIndex(context.Background(), "w", def); err != nil {
				t.Fatal(err)
			}
			checkIndexHolds(t, tb, "by_v")
		})
	}
}

// TestCreateIndexUnderLoad: writers insert, update (moving rows between
// keys, and growing them so that some move to other pages) and delete
// at random while indexes of each kind are built; each built index then
// holds exactly the table's rows. Run with -race.
func TestCreateIndexUnderLoad(t *testing.T) {
	const rows, writers = 20000, 3
	db, tb := onlineTable(t, rows)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var commits atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for !stop.Load() {
				tx := db.Begin()
				var err error
				for range 4 {
					k := rng.Uint64N(rows + rows/4)
					switch rng.IntN(4) {
					case 0:
						err = tx.Upsert(tb, onlineRow(k, rng.Uint64N(50)*1000+k))
					case 1:
						err = tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 1, Value: Uint64(rng.Uint64N(50)*1000 + k)}})
					case 2:
						err = tx.Update(tb, []Value{Uint64(k)}, []ColumnValue{{Column: 2, Value: String(strings.Repeat("g", 100+rng.IntN(100)))}})
					default:
						err = tx.Delete(tb, []Value{Uint64(k)})
					}
					if err != nil && !errors.Is(err, ErrNotFound) {
						break
					}
				}
				if err != nil && !errors.Is(err, ErrNotFound) {
					tx.Rollback()
					continue
				}
				if _, err := tx.Commit(); err == nil {
					commits.Add(1)
				}
			}
		}()
	}
	defs := []IndexDef{
		{Name: "h", Columns: []string{"v"}, Kind: Hash},
		{Name: "o", Columns: []string{"v"}, Kind: Ordered},
		{Name: "hu", Columns: []string{"v", "k"}, Kind: Hash, Unique: true},
		{Name: "ou", Columns: []string{"v", "k"}, Kind: Ordered, Unique: true},
	}
	for _, d := range defs {
		before := commits.Load()
		if _, err := db.CreateIndex(context.Background(), "w", d); err != nil {
			t.Fatal(err)
		}
		if commits.Load() == before {
			t.Logf("index %q: no commit ran during its build", d.Name)
		}
	}
	stop.Store(true)
	wg.Wait()
	if commits.Load() == 0 {
		t.Fatal("no writer committed")
	}
	for _, d := range defs {
		checkIndexHolds(t, tb, d.Name)
		// What a standby or a recovery builds from the logged change.
		st := tb.state.Load()
		ix, _ := tb.Index(d.Name)
		if _, err := tb.buildIndex(st.s, ix); err != nil {
			t.Fatalf("index %q, built again: %v", d.Name, err)
		}
	}
}

// TestCreateIndexCanceled: canceling the context of CreateIndex stops
// the build with the context's error and leaves the table as it was.
func TestCreateIndexCanceled(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	visited := 0
	withBackfillHook(t, func(pg int) {
		visited++
		if pg == 2 {
			cancel()
		}
	})
	def := IndexDef{Name: "by_v", Columns: []string{"v"}, Kind: Hash}
	lsn := db.LastLSN()
	if _, err := db.CreateIndex(c, "w", def); !errors.Is(err, context.Canceled) {
		t.Fatalf("a canceled build: %v, want context.Canceled", err)
	}
	if visited != 3 {
		t.Fatalf("the build went on to page %d after it was canceled at page 2", visited-1)
	}
	if st := tb.state.Load(); len(st.idx) != 1 || st.build != nil || len(tb.Def().Indexes) != 0 || db.LastLSN() != lsn {
		t.Fatalf("a canceled build left %d index structures (building %v), a definition of %d indexes, LSN %d (was %d)",
			len(st.idx), st.build != nil, len(tb.Def().Indexes), db.LastLSN(), lsn)
	}
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, onlineRow(5000, 7)) }, db)
	if _, err := db.CreateIndex(context.Background(), "w", def); err != nil {
		t.Fatal(err)
	}
	checkIndexHolds(t, tb, "by_v")
}

// TestSnapshotDuringCreateIndex: a snapshot (a checkpoint, an image)
// starts while an index is being built, without waiting for the build,
// and its definitions leave the index out: the log after the snapshot
// holds its creation.
func TestSnapshotDuringCreateIndex(t *testing.T) {
	db, _ := onlineTable(t, 3000)
	var during []TableDef
	withBackfillHook(t, func(pg int) {
		if pg != 2 {
			return
		}
		got := make(chan []TableDef, 1)
		go func() {
			sn := db.Snapshot()
			defer sn.Close()
			got <- sn.Tables()
		}()
		select {
		case during = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("a snapshot waited for CreateIndex to finish building")
		}
	})
	lsn, err := db.CreateIndex(context.Background(), "w", IndexDef{Name: "by_v", Columns: []string{"v"}, Kind: Ordered})
	if err != nil {
		t.Fatal(err)
	}
	if len(during) != 1 || len(during[0].Indexes) != 0 {
		t.Fatalf("a snapshot during the build shows %+v", during)
	}
	sn := db.Snapshot()
	defer sn.Close()
	if d := sn.Tables(); len(d[0].Indexes) != 1 || sn.LSN() < lsn {
		t.Fatalf("a snapshot at LSN %d after the build (at %d) shows %+v", sn.LSN(), lsn, d)
	}
}

// TestCreateIndexLogsProgress: a long build says how far it got.
func TestCreateIndexLogsProgress(t *testing.T) {
	var out bytes.Buffer
	db := Open(Options{Logger: hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})})
	tb, err := db.CreateTable(TableDef{Name: "w", Columns: []ColumnDef{{Name: "k", Type: TypeUint64}, {Name: "pad", Type: TypeString, MaxLen: 200}}, PrimaryKey: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	reviewCommit(t, func(tx *Tx) error {
		for k := range uint64(1000) {
			if err := tx.Insert(tb, []Value{Uint64(k), String(strings.Repeat("p", 150))}); err != nil {
				return err
			}
		}
		return nil
	}, db)
	every := progressEvery
	progressEvery = 0
	t.Cleanup(func() { progressEvery = every })
	if _, err := db.CreateIndex(context.Background(), "w", IndexDef{Name: "by_pad", Columns: []string{"pad"}, Kind: Ordered}); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`index build progress: table=w index=by_pad pages=\d+ of-pages=\d+ entries=\d+`).MatchString(out.String()) {
		t.Fatalf("the build logged:\n%s", out.String())
	}
}

// TestCreateIndexKeepsItsReservation: a hash index being built has its
// arrays sized for the table from the start (reserve); deletes while it
// fills do not shrink them back (a shard still filling is mostly empty,
// which is what makes a shard that lost its entries shrink), only to
// grow them again entry by entry.
func TestCreateIndexKeepsItsReservation(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	ran := false
	withBackfillHook(t, func(pg int) {
		if pg != 3 {
			return
		}
		ran = true
		err := commitSoon(t, db, func(tx *Tx) error {
			for k := range uint64(200) { // rows of pages the build has passed
				if err := tx.Delete(tb, []Value{Uint64(k)}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		st := tb.state.Load()
		x := st.idx[len(st.idx)-1].(*hashIndex)
		for i := range x.shards {
			sh := &x.shards[i]
			sh.mu.Lock()
			n, floor := len(*sh.slots.Load()), sh.floor
			sh.mu.Unlock()
			if floor < 16 || n < floor {
				t.Fatalf("shard %d of the index being built: %d slots, reserved %d", i, n, floor)
			}
		}
	})
	if _, err := db.CreateIndex(context.Background(), "w", IndexDef{Name: "by_v", Columns: []string{"v"}, Kind: Hash}); err != nil {
		t.Fatal(err)
	}
	if !ran {
		t.Fatal("the hook never ran")
	}
	checkIndexHolds(t, tb, "by_v")
}

// TestCreateIndexDuplicateSeen: a unique build refused over two rows
// that share a key tells of both rows' commits (SeenLSN), which a server
// waits for before it answers: the later row may have been unlocked
// before its commit's LSN was the database's.
func TestCreateIndexDuplicateSeen(t *testing.T) {
	db, tb := onlineTable(t, 3000)
	tx := db.Begin()
	if err := tx.Insert(tb, onlineRow(5000, 20)); err != nil { // row 2's v
		t.Fatal(err)
	}
	lsn, err := tx.Commit()
	if err != nil {
		t.Fatal(err)
	}
	reviewCommit(t, func(tx *Tx) error { return tx.Insert(tb, onlineRow(5001, 5001*10)) }, db) // a later commit, no part of it
	_, err = db.CreateIndex(context.Background(), "w", IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: Hash})
	if !errors.Is(err, ErrNotUnique) || SeenLSN(err) != lsn {
		t.Fatalf("a unique build over rows 2 and 5000: %v, seen LSN %d, want ErrNotUnique seeing %d", err, SeenLSN(err), lsn)
	}
}
