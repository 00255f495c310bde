package mem

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Each group's writer grows it and shrinks it again (deleting its oldest
// rows), keeping its row count in a meta row in the same transaction;
// pages empty out and give their arrays back, take rows again, and the
// hash index's overflow trees and shards grow and shrink under the
// scans. Every committed scan of a group, and every snapshot, must agree
// with the meta row read in the same transaction or snapshot.
func TestEmptiedPagesAndOverflowUnderScans(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds")
	}
	db := Open(Options{})
	tb := cliffTable(t, db, IndexDef{Name: "by_g", Columns: []string{"g"}, Kind: Hash})
	meta, err := db.CreateTable(TableDef{
		Name:       "meta",
		Columns:    []ColumnDef{{Name: "g", Type: TypeUint64}, {Name: "n", Type: TypeUint64}},
		PrimaryKey: []string{"g"},
	})
	if err != nil {
		t.Fatal(err)
	}
	const groups = 2
	tx := db.Begin()
	for g := range uint64(groups) {
		if err := tx.Insert(meta, []Value{Uint64(g), Uint64(0)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var fail atomic.Value
	bad := func(format string, args ...any) {
		fail.CompareAndSwap(nil, fmt.Sprintf(format, args...))
		stop.Store(true)
	}
	var commits, scans, snaps, released atomic.Int64
	for w := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := uint64(w)
			next := uint64(1_000_000 * (w + 1))
			var q []uint64
			grow := true
			for !stop.Load() {
				if grow && len(q) >= 1500 {
					grow = false
				} else if !grow && len(q) <= 20 {
					grow = true
				}
				tx := db.Begin()
				var added []uint64
				k := 1 + rand.IntN(60)
				dropped := 0
				for range k {
					if grow {
						if err := tx.Insert(tb, cliffRow(next, g)); err != nil {
							bad("insert: %v", err)
							return
						}
						added = append(added, next)
						next++
					} else if dropped < len(q) {
						if err := tx.Delete(tb, []Value{Uint64(q[dropped])}); err != nil {
							bad("delete %d: %v", q[dropped], err)
							return
						}
						dropped++
					}
				}
				if len(q) > dropped+1 && rand.IntN(3) == 0 {
					id := q[dropped+rand.IntN(len(q)-dropped)]
					if err := tx.Update(tb, []Value{Uint64(id)}, []ColumnValue{{Column: 2, Value: String(fmt.Sprintf("u%031d", next))}}); err != nil {
						bad("update: %v", err)
						return
					}
				}
				n := len(q) - dropped + len(added)
				if err := tx.Update(meta, []Value{Uint64(g)}, []ColumnValue{{Column: 1, Value: Uint64(uint64(n))}}); err != nil {
					bad("meta: %v", err)
					return
				}
				if _, err := tx.Commit(); err != nil {
					if errors.Is(err, ErrConflict) {
						next -= uint64(len(added))
						continue
					}
					bad("commit: %v", err)
					return
				}
				commits.Add(1)
				q = append(q[dropped:], added...)
				released.Store(max(released.Load(), tb.heap.released.Load()))
			}
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				g := uint64(rand.IntN(groups))
				limit := []int{0, 0, 0, 1, 10, 64, 65, 200}[rand.IntN(8)]
				tx := db.Begin()
				var ids []uint64
				var wrong int
				err := tx.Scan(tb, ScanSpec{Index: 1, Prefix: []Value{Uint64(g)}, Limit: limit}, func(r Record) bool {
					ids = append(ids, r.Uint64(0))
					if r.Uint64(1) != g {
						wrong++
					}
					return true
				})
				if err != nil {
					tx.Rollback()
					bad("scan: %v", err)
					return
				}
				m, found, err := tx.Get(meta, []Value{Uint64(g)})
				if err != nil || !found {
					tx.Rollback()
					bad("meta get: %v %v", found, err)
					return
				}
				n := int(m.Uint64(1))
				if _, err := tx.Commit(); err != nil {
					if errors.Is(err, ErrConflict) {
						continue
					}
					bad("read commit: %v", err)
					return
				}
				scans.Add(1)
				seen := map[uint64]bool{}
				for _, id := range ids {
					if seen[id] {
						bad("a committed scan of group %d (limit %d) delivered row %d twice", g, limit, id)
						return
					}
					seen[id] = true
				}
				want := n
				if limit > 0 {
					want = min(limit, n)
				}
				if len(ids) != want || wrong > 0 {
					bad("a committed scan of group %d (limit %d) delivered %d rows (want %d), %d of another group", g, limit, len(ids), want, wrong)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			sn := db.Snapshot()
			seen := map[uint64]bool{}
			counts := map[uint64]int{}
			want := map[uint64]int{}
			err := sn.Scan(tb.ID(), func(r Record) error {
				id := r.Uint64(0)
				if seen[id] {
					return fmt.Errorf("row %d twice", id)
				}
				seen[id] = true
				counts[r.Uint64(1)]++
				return nil
			})
			if err == nil {
				err = sn.Scan(meta.ID(), func(r Record) error {
					want[r.Uint64(0)] = int(r.Uint64(1))
					return nil
				})
			}
			sn.Close()
			if err != nil {
				bad("snapshot: %v", err)
				return
			}
			for g := range uint64(groups) {
				if counts[g] != want[g] {
					bad("a snapshot holds %d rows of group %d, its meta row says %d", counts[g], g, want[g])
					return
				}
			}
			snaps.Add(1)
		}
	}()
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	if f := fail.Load(); f != nil {
		t.Fatal(f)
	}
	t.Logf("%d commits, %d scans, %d snapshots, %d pages, at most %d released", commits.Load(), scans.Load(), snaps.Load(), tb.heap.npages.Load(), released.Load())
}
