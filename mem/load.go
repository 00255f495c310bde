package mem

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
)

// Loader fills an empty database from an image: the tables and rows of a
// Snapshot as of one LSN, written out and read back (package checkpoint).
// It is faster than applying the rows as records: a row goes straight
// into its table's pages, and the indexes are built once at the end, on
// all cores.
//
// Use: Load, then CreateTable for each table, AddRow for each row (from
// any number of goroutines, for any tables), then Finish. Until Finish
// returns the database must not be used otherwise. Every row is checked
// as Apply checks it; a malformed row, or a duplicate key in a unique
// index, fails with ErrCorrupt.
type Loader struct {
	db     *DB
	lsn    uint64
	nextID uint64
	mu     sync.Mutex
	tables []*Table
}

// Load starts loading an image as of lsn into db, which must hold no
// table and no commit. nextTableID is the image's Snapshot.NextTableID,
// so that ids of tables dropped before the image are never given out
// again.
func (db *DB) Load(lsn uint64, nextTableID uint64) (*Loader, error) {
	if lsn == 0 || lsn > tidLSN {
		return nil, errorf(ErrInvalid, "load: LSN %d out of range", lsn)
	}
	if db.LastLSN() != 0 || len(db.catalog.Load().byID) != 0 {
		return nil, errorf(ErrInvalid, "load: the database is not empty (LSN %d)", db.LastLSN())
	}
	return &Loader{db: db, lsn: lsn, nextID: nextTableID}, nil
}

// CreateTable creates a table of the image, with the id def.ID.
func (l *Loader) CreateTable(def TableDef) (*Table, error) {
	if def.ID == 0 {
		return nil, errorf(ErrCorrupt, "load: table %q has no id", def.Name)
	}
	t, _, err := l.db.createTable(context.Background(), def, l.lsn)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	l.mu.Lock()
	l.tables = append(l.tables, t)
	l.mu.Unlock()
	return t, nil
}

// AddRow stores an encoded row (Record.Encoded) in t, a table the loader
// created. It copies row.
func (l *Loader) AddRow(t *Table, row []byte) error {
	if t.db != l.db {
		return errorf(ErrInvalid, "load: table %q is not the loader's", t.name)
	}
	if err := t.state.Load().s.validateRow(row); err != nil {
		return fmt.Errorf("load: table %q: %w", t.name, err)
	}
	t.heap.insert(row, l.lsn)
	t.rows.Add(1)
	return nil
}

// Finish builds every table's indexes, all at once on as many goroutines
// as there are cores, and makes the database ready at the image's LSN
// (without a log, its Counter goes on from there).
func (l *Loader) Finish() error {
	type job struct {
		t  *Table
		st *tableState
		ix int
	}
	var jobs []job
	built := map[*Table][]index{}
	for _, t := range l.tables {
		st := t.state.Load()
		built[t] = make([]index, len(st.idx))
		for ix := range st.idx {
			jobs = append(jobs, job{t, st, ix})
		}
	}
	// The largest first: a big table's index taken last would leave the
	// other cores idle while it is built.
	slices.SortStableFunc(jobs, func(a, b job) int { return cmp.Compare(b.t.rows.Load(), a.t.rows.Load()) })
	work := make(chan job)
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				x, err := j.t.buildIndex(j.st.s, j.ix)
				mu.Lock()
				built[j.t][j.ix] = x
				if err != nil {
					errs = append(errs, errorf(ErrCorrupt, "load: %v", err))
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for t, idx := range built {
		st := t.state.Load()
		t.state.Store(&tableState{s: st.s, idx: idx})
	}
	l.db.holdDDL()
	l.db.gate.Lock()
	l.db.nextID = max(l.db.nextID, l.nextID)
	l.db.gate.Unlock()
	l.db.unlockDDL()
	l.db.applied(l.lsn)
	return nil
}
