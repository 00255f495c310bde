package mem

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// revRID returns the RID of the row with primary key k.
func revRID(t *testing.T, tb *Table, k uint64) uint64 {
	t.Helper()
	st := tb.state.Load()
	key, err := st.s.appendKey(nil, 0, 0, []Value{Uint64(k)})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.idx[0].lookup(key, nil) {
		if _, row := tb.heap.read(c); row != nil && tb.heap.tid(c)&tidAbsent == 0 {
			if eq, _ := st.s.rowKeyEqual(0, row, key, nil); eq {
				return c
			}
		}
	}
	t.Fatalf("no row with k=%d", k)
	return 0
}

// TestCreateIndexUniqueMovedDuplicate: a unique index must not be built
// over two rows that share its key. Row dup, in a page the build has not
// reached, holds the key of row 1, which the build has indexed; a commit
// during the build grows dup so that it moves to another slot. The move
// gives the new slot its entries with add, which checks nothing, and the
// build then finds the entry there (ensure: "already there", no check),
// or never visits the slot (a page past those that were there when it
// began): the duplicate is never seen, the index is published with two
// rows under one key, and a standby or a recovery that applies the
// logged OpCreateIndex fails on it.
func TestCreateIndexUniqueMovedDuplicate(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			const rows, dup = 300, 250
			db, tb := padTable(t, Options{}, rows, 1000)
			reviewCommit(t, func(tx *Tx) error {
				return tx.Update(tb, []Value{Uint64(dup)}, []ColumnValue{{Column: 1, Value: Uint64(10)}}) // row 1's v
			}, db)
			if pg := revRID(t, tb, 1) >> 16; pg != 0 {
				t.Fatalf("setup: row 1 is in page %d", pg)
			}
			before := revRID(t, tb, dup)
			if pg := before >> 16; pg <= 2 {
				t.Fatalf("setup: row %d is in page %d", dup, pg)
			}
			withBackfillHook(t, func(pg int) {
				if pg != 2 {
					return
				}
				err := commitSoon(t, db, func(tx *Tx) error {
					return tx.Update(tb, []Value{Uint64(dup)}, []ColumnValue{{Column: 2, Value: String(strings.Repeat("g", 9000))}})
				})
				if err != nil {
					t.Errorf("a commit during the build: %v", err)
				}
			})
			_, err := db.CreateIndex(context.Background(), "w", IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: kind})
			if after := revRID(t, tb, dup); after == before {
				t.Fatalf("setup: row %d did not move", dup)
			}
			if !errors.Is(err, ErrNotUnique) {
				// What applying the logged OpCreateIndex does (a standby,
				// a recovery): build it with commits held off.
				st := tb.state.Load()
				ix, _ := tb.Index("by_v")
				_, berr := tb.buildIndex(st.s, ix)
				t.Fatalf("a unique index over rows 1 and %d, which share v=10: %v, want ErrNotUnique (the log's OpCreateIndex, applied: %v)", dup, err, berr)
			}
		})
	}
}

// TestCreateIndexUniqueDuplicateThenMoved: as above, with the duplicate
// made during the build: a commit inserts the key of row dup, which the
// build has not reached (the insert's claim finds no entry to refuse
// it), and then dup moves. The build must still fail.
func TestCreateIndexUniqueDuplicateThenMoved(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			const rows, dup = 300, 250
			db, tb := padTable(t, Options{}, rows, 1000)
			withBackfillHook(t, func(pg int) {
				if pg != 2 {
					return
				}
				err := commitSoon(t, db, func(tx *Tx) error {
					return tx.Insert(tb, []Value{Uint64(rows), Uint64(dup * 10), String("x")})
				})
				if err != nil {
					t.Errorf("an insert of the key of a row not yet indexed: %v", err)
				}
				err = commitSoon(t, db, func(tx *Tx) error {
					return tx.Update(tb, []Value{Uint64(dup)}, []ColumnValue{{Column: 2, Value: String(strings.Repeat("g", 9000))}})
				})
				if err != nil {
					t.Errorf("a commit during the build: %v", err)
				}
			})
			_, err := db.CreateIndex(context.Background(), "w", IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: kind})
			if !errors.Is(err, ErrNotUnique) {
				t.Fatalf("a unique index over rows %d and %d, which share v=%d: %v, want ErrNotUnique", dup, rows, dup*10, err)
			}
		})
	}
}

// revStandbyLog is a CommitLog that refuses commits once the node is a
// standby (a demoted primary's durability.Store does).
type revStandbyLog struct {
	c       Counter
	standby atomic.Bool
}

func (l *revStandbyLog) Commit(r *Redo) (uint64, error) {
	if l.standby.Load() {
		return 0, errors.New("this node is a standby")
	}
	return l.c.Commit(r)
}

// TestApplyDuringOnlineUniqueBuild: a primary demoted while CreateIndex
// builds a unique index applies its new primary's log. The new primary
// has no such index, so its commits may give two rows one key of it, and
// Apply must take them (a standby applies what its primary committed).
// Apply stops the build first, which fails with ErrConflict and takes
// its index out; the index used to check the applied rows, and Apply
// failed with ErrCorrupt (the node was then imaged again).
func TestApplyDuringOnlineUniqueBuild(t *testing.T) {
	for _, kind := range []IndexKind{Hash, Ordered} {
		t.Run(kind.String(), func(t *testing.T) {
			log := &revStandbyLog{}
			db, tb := padTable(t, Options{Log: log}, 3000, 150)
			row, err := tb.state.Load().s.encodeRow(nil, onlineRow(3000, 10)) // row 1's v
			if err != nil {
				t.Fatal(err)
			}
			applied := applyDuringBuild(t, db, log, &Redo{Ops: []Op{{Kind: OpPut, Table: tb.ID(), Data: row}}})
			def := IndexDef{Name: "by_v", Columns: []string{"v"}, Unique: true, Kind: kind}
			if _, err := db.CreateIndex(context.Background(), "w", def); !errors.Is(err, ErrConflict) {
				t.Fatalf("a build stopped by Apply: %v, want ErrConflict", err)
			}
			waitApplied(t, applied)
			if _, err := tb.Index("by_v"); !errors.Is(err, ErrNoIndex) {
				t.Fatalf("the stopped build left its index: %v", err)
			}
			tx := db.Begin()
			defer tx.Rollback()
			if _, ok, err := tx.Get(tb, []Value{Uint64(3000)}); !ok || err != nil {
				t.Fatalf("the applied row: %v %v", ok, err)
			}
		})
	}
}

// TestApplyCreateIndexDuringOnlineBuild: as above, and the new primary
// logs the same CreateIndex (the client ran it again there). Apply used
// to take it as in effect already (ddlInEffect read the schema, which
// held the index being built) and skip it; the local build then failed
// to log (the node is a standby) and took the index out, and the node
// went on without an index its primary has. Now Apply stops the build
// first and then builds the index as logged.
func TestApplyCreateIndexDuringOnlineBuild(t *testing.T) {
	log := &revStandbyLog{}
	db, tb := padTable(t, Options{Log: log}, 3000, 150)
	def := IndexDef{Name: "by_v", Columns: []string{"v"}, Kind: Hash}
	applied := applyDuringBuild(t, db, log, &Redo{Ops: []Op{{Kind: OpCreateIndex, Table: tb.ID(), Data: encodeIndexDef(nil, def)}}})
	if _, err := db.CreateIndex(context.Background(), "w", def); err == nil {
		t.Fatal("a standby's CreateIndex logged")
	}
	waitApplied(t, applied)
	waitBuilt(db)
	if _, err := tb.Index("by_v"); err != nil {
		t.Fatalf("after its primary's CreateIndex was applied, the node has no such index: %v", err)
	}
	checkIndexHolds(t, tb, "by_v")
}

// applyDuringBuild has the next index build, once at page 2, find its
// node demoted (log refuses commits) and Apply r as the next LSN, from
// another goroutine, as a standby's receiver would; the channel gets
// Apply's result.
func applyDuringBuild(t *testing.T, db *DB, log *revStandbyLog, r *Redo) <-chan error {
	t.Helper()
	applied := make(chan error, 1)
	var once sync.Once // not again in the build r may start
	withBackfillHook(t, func(pg int) {
		if pg != 2 {
			return
		}
		once.Do(func() {
			log.standby.Store(true)
			lsn := db.LastLSN() + 1
			go func() { applied <- db.Apply(lsn, r) }()
			time.Sleep(50 * time.Millisecond) // for Apply to stop the build before it goes on
		})
	})
	return applied
}

// waitApplied fails the test unless Apply returns nil within seconds.
func waitApplied(t *testing.T, applied <-chan error) {
	t.Helper()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatalf("Apply during the build: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Apply never returned")
	}
}
