package mem

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// Snapshot is a consistent view of the whole database as of one LSN: it
// reads exactly the commits with LSN <= LSN(), while commits go on. It is
// what checkpoints and image streaming iterate.
//
// How: starting a snapshot holds commits off for an instant (the gate) to
// fix its LSN C and the set of tables. Rows are then read page by page. A
// commit that replaces or deletes a row version with LSN <= C in a page the
// snapshot has not visited yet first copies that version aside; the
// snapshot reads the copy instead of the page. Versions newer than C are
// skipped. Extra memory is bounded by the rows changed ahead of the scan
// while it runs, and each copy is freed as soon as its page is visited.
type Snapshot struct {
	db     *DB
	lsn    uint64
	nextID uint64
	tables []*snapTable
	closed atomic.Bool
}

type snapTable struct {
	t       *Table
	def     TableDef
	s       *schema
	next    atomic.Int64 // pages below next have been visited; read and set under the page latch
	scanned atomic.Bool  // a table is scanned once: visited pages keep no old versions

	mu        sync.Mutex
	kept      map[uint64][]byte // RID -> the version as of the snapshot
	keptBytes atomic.Int64      // of the versions in kept, changed under mu
}

// Snapshot starts a snapshot. Close it when done: until then commits that
// change unvisited rows pay for a copy.
func (db *DB) Snapshot() *Snapshot {
	// The gate alone: no schema change is half done under it, and an
	// index being built (CreateIndex) is left out of the definitions.
	db.gate.Lock()
	defer db.gate.Unlock()
	cat := db.catalog.Load()
	sn := &Snapshot{db: db, lsn: db.lsn.Load(), nextID: db.nextID}
	for _, t := range cat.byName {
		st := t.state.Load()
		sn.tables = append(sn.tables, &snapTable{t: t, def: st.def(), s: st.s, kept: map[uint64][]byte{}})
	}
	// In the order the tables were created, not the map's: an image of the
	// same database is the same bytes.
	slices.SortFunc(sn.tables, func(a, b *snapTable) int { return cmp.Compare(a.def.ID, b.def.ID) })
	old := db.snaps.Load()
	var list []*Snapshot
	if old != nil {
		list = append(list, *old...)
	}
	list = append(list, sn)
	db.snaps.Store(&list)
	return sn
}

// LSN returns the LSN the snapshot is as of.
func (sn *Snapshot) LSN() uint64 { return sn.lsn }

// NextTableID returns the id the next new table would get: an image
// keeps it (Loader), so that ids of dropped tables are never reused.
func (sn *Snapshot) NextTableID() uint64 { return sn.nextID }

// Tables returns the definitions of the snapshot's tables, by id (in the
// order they were created).
func (sn *Snapshot) Tables() []TableDef {
	out := make([]TableDef, len(sn.tables))
	for i, st := range sn.tables {
		out[i] = st.def.Clone()
	}
	return out
}

// Close releases the snapshot.
func (sn *Snapshot) Close() {
	if sn.closed.Swap(true) {
		return
	}
	db := sn.db
	db.gate.Lock()
	defer db.gate.Unlock()
	var list []*Snapshot
	for _, s := range *db.snaps.Load() {
		if s != sn {
			list = append(list, s)
		}
	}
	if len(list) == 0 {
		db.snaps.Store(nil)
	} else {
		db.snaps.Store(&list)
	}
}

// Scan calls fn with every row of the table as of the snapshot, in heap
// order, until fn returns an error. Each table can be scanned once per
// snapshot (a page once visited keeps no old versions); a second Scan of
// it fails with ErrInvalid.
func (sn *Snapshot) Scan(table uint32, fn func(Record) error) error {
	var st *snapTable
	for _, x := range sn.tables {
		if x.t.id == table {
			st = x
		}
	}
	if st == nil {
		return errorf(ErrNoTable, "id %d is not in the snapshot", table)
	}
	if st.scanned.Swap(true) {
		return errorf(ErrInvalid, "table %q was already scanned in this snapshot", st.def.Name)
	}
	h := st.t.heap
	var rows [][]byte
	for pg := 0; pg < int(h.npages.Load()); pg++ {
		rows = st.visit(h.page(pg), pg, sn.lsn, rows[:0])
		for _, b := range rows {
			if err := fn(Record{s: st.s, b: b}); err != nil {
				return err
			}
		}
	}
	return nil
}

// visit collects a page's rows as of lsn and marks the page visited.
func (st *snapTable) visit(p *page, pg int, lsn uint64, rows [][]byte) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	st.next.Store(int64(pg) + 1)
	st.mu.Lock()
	defer st.mu.Unlock()
	d := p.data.Load()
	for slot := 0; slot < p.nslots; slot++ {
		rid := ridOf(pg, slot)
		if b, ok := st.kept[rid]; ok {
			rows = append(rows, b)
			delete(st.kept, rid)
			st.keptBytes.Add(-int64(len(b)))
			continue
		}
		tid := p.tids[slot].Load()
		if tid&tidAbsent != 0 || tid&tidLSN > lsn {
			continue
		}
		off, n := loadLoc(d, slot)
		rows = append(rows, d[off:off+n:off+n])
	}
	return rows
}

// keeper returns the function a commit calls, under the page latch, with
// a row version it is about to replace or delete; oldLSN is that
// version's LSN.
func keeper(snaps []*Snapshot, t *Table, oldLSN uint64) func(pg, slot int, old []byte) {
	return func(pg, slot int, old []byte) {
		for _, sn := range snaps {
			if oldLSN > sn.lsn {
				continue // the snapshot's version was kept when it was replaced
			}
			for _, st := range sn.tables {
				if st.t != t || int64(pg) < st.next.Load() {
					continue
				}
				rid := ridOf(pg, slot)
				st.mu.Lock()
				if _, ok := st.kept[rid]; !ok {
					st.kept[rid] = append([]byte(nil), old...)
					st.keptBytes.Add(int64(len(old)))
				}
				st.mu.Unlock()
			}
		}
	}
}

// KeptBytes returns the bytes of old row versions the snapshot holds
// right now: the extra memory it costs, which checkpoints report. It
// reads a count per table: it takes no lock that a commit keeping a
// version waits for, whatever the snapshot holds.
func (sn *Snapshot) KeptBytes() int64 {
	var n int64
	for _, st := range sn.tables {
		n += st.keptBytes.Load()
	}
	return n
}
