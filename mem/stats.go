package mem

import "sort"

// TableStats is a table's size in memory.
type TableStats struct {
	Name       string
	ID         uint32
	Rows       int64
	Pages      int64
	HeapBytes  int64 // pages and their TID words; a page emptied by deletes keeps only its TID words
	IndexBytes int64
	Indexes    []IndexStats
}

// IndexStats is one index's size.
type IndexStats struct {
	Name    string
	Kind    IndexKind
	Entries int64
	Bytes   int64
	// Building says that CreateIndex is building the index: Entries
	// grows toward the table's rows, and reads cannot use it yet.
	Building bool
	// Fault, for an index a CreateIndex from the primary's log added
	// (Apply), says why its build cannot end: this node's rows break
	// it, so they are not the primary's. Building stays set.
	Fault error
}

// Stats returns the memory accounting of every table, by name.
func (db *DB) Stats() []TableStats {
	cat := db.catalog.Load()
	out := make([]TableStats, 0, len(cat.byName))
	for _, t := range cat.byName {
		out = append(out, t.Stats())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stats returns the table's memory accounting.
func (t *Table) Stats() TableStats {
	st := t.state.Load()
	pages := t.heap.npages.Load()
	ts := TableStats{
		Name: t.name, ID: t.id, Rows: t.rows.Load(), Pages: pages,
		HeapBytes: (pages-t.heap.released.Load())*PageSize + pages*int64(8*t.heap.maxSlots),
	}
	for i, x := range st.idx {
		d := st.s.indexes[i]
		is := IndexStats{Name: d.name, Kind: d.kind, Entries: x.entries(), Bytes: x.memBytes(), Building: i >= st.readable()}
		if is.Building {
			is.Fault = st.build.fault()
		}
		ts.IndexBytes += is.Bytes
		ts.Indexes = append(ts.Indexes, is)
	}
	return ts
}
