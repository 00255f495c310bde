package mem

import (
	"bytes"
	"slices"

	"github.com/tidwall/btree"
)

// A transaction's own rows, as reads of an index meet them. A scan of a
// table the transaction wrote merges its own rows in the range with the
// committed ones (scanMerged), and GetBy in a transaction of many writes
// looks its own rows up by key (getByMany). With few writes they are
// found by reading every write; past linearWrites, an ownIndex per index
// read keeps them in order, so that a read costs about the rows it
// meets, not the writes.

// ownRow is a row the transaction writes: its key in the index read, its
// primary key and the row (the transaction's, to be copied for a caller).
type ownRow struct {
	key, pk, row []byte
}

// ownCompare orders own rows as a merged scan delivers them: by index
// key, then primary key (two rows can share a unique key until Commit
// refuses one).
func ownCompare(a, b ownRow) int {
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c
	}
	return bytes.Compare(a.pk, b.pk)
}

func ownLess(a, b ownRow) bool { return ownCompare(a, b) < 0 }

// ownIndex keeps the transaction's rows of one table in ownCompare order
// for one index. It is made when a read first needs it and brought up to
// date when one next does, from the writes changed since (tx.changed):
// each change names the row the write had, whose entry goes, and the
// write as it is now gives the entry that replaces it. A scan walks the
// tree while fn runs, and fn may write and then read again: an update
// then changes a copy (the tree is copy-on-write), so that the walk goes
// on over the rows as they were when it began.
type ownIndex struct {
	st   *tableState // the state the keys were made with
	ix   int
	rows *btree.BTreeG[ownRow]
	seen int // the changes taken in
	pins int // scans walking rows
	buf  []byte
	hint btree.PathHint // where the last change was: writes often come in key order
}

// ownIndex returns the transaction's ownIndex for index ix of t, up to
// date.
func (tx *Tx) ownIndex(t *Table, st *tableState, ix int) *ownIndex {
	if tx.owns == nil {
		tx.owns = map[ixRef]*ownIndex{}
		tx.changed = tx.changed[:0]
	}
	m := tx.owns[ixRef{t, ix}]
	if m == nil || m.st != st {
		// New, or made for keys that DDL has changed since.
		m = &ownIndex{st: st, ix: ix, rows: btree.NewBTreeGOptions(ownLess, btree.Options{NoLocks: true}), seen: len(tx.changed)}
		tx.owns[ixRef{t, ix}] = m
		var rows []ownRow
		for i := range tx.writes {
			if w := &tx.writes[i]; w.t == t && w.row != nil {
				rows = append(rows, ownRow{key: m.key(tx, w), pk: w.key, row: w.row})
			}
		}
		slices.SortFunc(rows, ownCompare)
		for _, r := range rows {
			m.rows.Load(r) // in order: appended
		}
		return m
	}
	if m.seen == len(tx.changed) {
		return m
	}
	if m.pins > 0 {
		m.rows, m.pins = m.rows.Copy(), 0 // the pinned tree stays as it is
	}
	for _, c := range tx.changed[m.seen:] {
		if c.t == t {
			m.update(tx, c)
		}
	}
	m.seen = len(tx.changed)
	if len(tx.changed) >= trimChanges {
		tx.trimChanged()
	}
	return m
}

// trimChanges is how many changes tx.changed holds before ownIndex tries
// to drop those taken in (a look at every ownIndex).
const trimChanges = 256

// trimChanged drops the changes every ownIndex has taken in.
func (tx *Tx) trimChanged() {
	for _, m := range tx.owns {
		if m.seen < len(tx.changed) {
			return
		}
	}
	tx.changed = tx.changed[:0]
	for _, m := range tx.owns {
		m.seen = 0
	}
}

// update takes in change c: the entry of the row the write had, c.old,
// goes, and the row it has now, if any, gets one. (Of a write changed
// several times since the last update, the entry of the row the tree
// had goes at the first change, and each change puts in the entry of
// the row now: the others' old rows have none, unless it is that one.)
func (m *ownIndex) update(tx *Tx, c wref) {
	var gone ownRow
	had := false
	if c.old != nil {
		m.buf = m.st.s.appendRowKey(m.buf[:0], m.ix, c.old)
		gone, had = m.rows.Delete(ownRow{key: m.buf, pk: c.key})
	}
	i := tx.findWrite(c.t, c.key)
	if i < 0 || tx.writes[i].row == nil {
		return
	}
	w := &tx.writes[i]
	key := w.key // index 0's
	if m.ix > 0 {
		m.buf = m.st.s.appendRowKey(m.buf[:0], m.ix, w.row)
		if key = gone.key; !had || !bytes.Equal(key, m.buf) {
			key = tx.own(m.buf) // else the row changed, not its key
		}
	}
	m.rows.SetHint(ownRow{key: key, pk: w.key, row: w.row}, &m.hint)
}

// key returns the key of w's row, in the transaction's arena.
func (m *ownIndex) key(tx *Tx, w *write) []byte {
	if m.ix == 0 {
		return w.key
	}
	m.buf = m.st.s.appendRowKey(m.buf[:0], m.ix, w.row)
	return tx.own(m.buf)
}

// first returns the row with key whose primary key is the smallest.
func (m *ownIndex) first(key []byte) (ownRow, bool) {
	var r ownRow
	found := false
	m.rows.Ascend(ownRow{key: key}, func(o ownRow) bool {
		r, found = o, bytes.Equal(o.key, key)
		return false
	})
	return r, found
}

// mergeBufs are a merged scan's buffers, kept in the transaction between
// scans and taken out while one runs (fn may scan again).
type mergeBufs struct {
	own     []ownRow
	keys    []byte // the keys of own
	key, pk []byte // a committed row's
	cur     ownCursor
	it      btree.IterG[ownRow]
}

// ownCursor walks the transaction's own rows in a scan's range in the
// scan's order: those of an ownIndex, or, with few writes, those found in
// the writes (sorted in rows).
type ownCursor struct {
	lo, hi        []byte
	hash, reverse bool
	ok            bool   // cur is a row in range
	cur           ownRow // the next row to deliver
	rows          []ownRow
	m             *ownIndex
	tree          *btree.BTreeG[ownRow] // m's tree, pinned
	it            *btree.IterG[ownRow]
}

// ownRows returns a cursor on the rows of t the transaction wrote before
// now in the range of rec. Release it.
func (tx *Tx) ownRows(t *Table, st *tableState, rec *scanRec, b *mergeBufs) *ownCursor {
	c := &b.cur
	*c = ownCursor{lo: rec.lo, hi: rec.hi, hash: st.s.indexes[rec.ix].kind == Hash, reverse: rec.reverse}
	if tx.owns[ixRef{t, rec.ix}] != nil || len(tx.writes) > linearWrites {
		c.m = tx.ownIndex(t, st, rec.ix)
		c.tree = c.m.rows
		c.m.pins++
		c.it = &b.it
		c.it.Init(c.tree, false)
		switch {
		case !c.reverse:
			c.ok = c.it.Seek(ownRow{key: c.lo})
		case c.hi == nil:
			c.ok = c.it.Last()
		case c.it.Seek(ownRow{key: c.hi}):
			c.ok = c.it.Prev()
		default:
			c.ok = c.it.Last()
		}
		c.load()
		return c
	}
	type span struct{ from, to int }
	var spans [linearWrites]span
	b.own, b.keys = b.own[:0], b.keys[:0]
	for i := range tx.writes {
		w := &tx.writes[i]
		if w.t != t || w.row == nil {
			continue
		}
		from := len(b.keys)
		b.keys = st.s.appendRowKey(b.keys, rec.ix, w.row)
		if !c.in(b.keys[from:]) {
			b.keys = b.keys[:from]
			continue
		}
		spans[len(b.own)] = span{from, len(b.keys)}
		b.own = append(b.own, ownRow{pk: w.key, row: w.row})
	}
	for i := range b.own {
		b.own[i].key = b.keys[spans[i].from:spans[i].to:spans[i].to]
	}
	slices.SortFunc(b.own, ownCompare)
	if c.reverse {
		slices.Reverse(b.own)
	}
	c.rows = b.own
	c.next()
	return c
}

// in reports whether key is in the scan's range.
func (c *ownCursor) in(key []byte) bool {
	if c.hash {
		return bytes.Equal(key, c.lo)
	}
	return bytes.Compare(key, c.lo) >= 0 && (c.hi == nil || bytes.Compare(key, c.hi) < 0)
}

// load takes the iterator's row, if it is in range.
func (c *ownCursor) load() {
	if c.ok {
		c.cur = c.it.Item()
		c.ok = c.in(c.cur.key)
	}
}

// next moves to the next row.
func (c *ownCursor) next() {
	switch {
	case c.tree == nil:
		if c.ok = len(c.rows) > 0; c.ok {
			c.cur, c.rows = c.rows[0], c.rows[1:]
		}
	case c.reverse:
		c.ok = c.it.Prev()
		c.load()
	default:
		c.ok = c.it.Next()
		c.load()
	}
}

// before reports whether the cursor's row comes before the committed row
// with index key key and primary key pk.
func (c *ownCursor) before(key, pk []byte) bool {
	r := ownCompare(c.cur, ownRow{key: key, pk: pk})
	if c.reverse {
		return r > 0
	}
	return r < 0
}

// release unpins the tree and lets go of the rows.
func (c *ownCursor) release() {
	if c.tree != nil {
		c.it.Release()
		if c.m.rows == c.tree {
			c.m.pins--
		}
	}
	*c = ownCursor{}
}
