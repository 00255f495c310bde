package mem

import (
	"bytes"
	"fmt"
	"slices"
)

// ScanSpec describes an index scan. Prefix fixes the leading key columns;
// Lower and Upper bound the key columns that follow it (each may name
// fewer columns than remain, bounding a tuple prefix). Lower is inclusive,
// Upper exclusive unless UpperInclusive. A hash index serves only a full
// key in Prefix, with no bounds and no Reverse. Rows with equal keys in a
// non-unique index come in no particular order.
type ScanSpec struct {
	Index int // ordinal from Table.Index; 0 is the primary key
	// IndexName, if set, names the index instead of Index. It is looked up
	// in the same schema the scan reads, so a DropIndex running meanwhile,
	// which moves the ordinals of the indexes after the one it drops,
	// cannot turn the scan to another index.
	IndexName      string
	Prefix         []Value
	Lower, Upper   []Value
	UpperInclusive bool
	Reverse        bool
	// After, if set, is the full key of a row of the range, in an index
	// whose keys are unique (the primary key or a unique index), where a
	// previous page of the same scan ended: the scan then yields only the
	// rows past it, in scan order. It is checked against the schema the
	// scan reads, as IndexName is looked up in it, so that an index
	// dropped and created again over other columns meanwhile is not
	// paged by a key of the old one.
	After []Value
	Limit int // 0: no limit
}

// bounds encodes a scan's key range [lo, hi); hi nil is unbounded, and
// an empty non-nil hi is an empty range (an exclusive bound at the prefix
// itself). For a hash index lo is the full key. An index reads may not
// use (being built) is ErrNoIndex. A spec's IndexName is looked up first,
// and spec.Index set to its ordinal; then the range is narrowed to the
// keys past spec.After.
func (st *tableState) bounds(spec *ScanSpec) (lo, hi []byte, err error) {
	if spec.IndexName != "" {
		if spec.Index, err = st.index(spec.IndexName); err != nil {
			return nil, nil, err
		}
	}
	if err := st.usable(spec.Index); err != nil {
		return nil, nil, err
	}
	if lo, hi, err = st.s.keyRange(spec); err != nil || spec.After == nil {
		return lo, hi, err
	}
	return st.s.pastAfter(spec, lo, hi)
}

// keyRange is bounds of spec's prefix and bounds, on index spec.Index.
func (s *schema) keyRange(spec *ScanSpec) (lo, hi []byte, err error) {
	d := &s.indexes[spec.Index]
	p, err := s.appendKey(nil, spec.Index, 0, spec.Prefix)
	if err != nil {
		return nil, nil, err
	}
	if d.kind == Hash {
		if len(spec.Prefix) != len(d.cols) || spec.Lower != nil || spec.Upper != nil || spec.Reverse {
			return nil, nil, errorf(ErrInvalid, "table %q: hash index %q serves lookups on its full key only; use an ordered index to scan", s.def.Name, d.name)
		}
		return p, nil, nil
	}
	lo = p
	if spec.Lower != nil {
		if lo, err = s.appendKey(slices.Clip(p), spec.Index, len(spec.Prefix), spec.Lower); err != nil {
			return nil, nil, err
		}
	}
	if spec.Upper == nil {
		return lo, prefixEnd(p), nil
	}
	u, err := s.appendKey(slices.Clip(p), spec.Index, len(spec.Prefix), spec.Upper)
	if err != nil {
		return nil, nil, err
	}
	if spec.UpperInclusive {
		if hi = prefixEnd(u); hi == nil {
			return lo, prefixEnd(p), nil
		}
		return lo, hi, nil
	}
	if u == nil {
		u = []byte{}
	}
	return lo, u, nil
}

// afterRecreated ends the message of an after that does not fit the
// index's key: the likely cause is a resume key the scan's previous page
// read from a table or index dropped and created again since, which no
// later page can go on from.
const afterRecreated = "; a resume_key fits the table and index of its page as they were then: after one was dropped and created again over other key columns, start the scan anew"

// pastAfter narrows [lo, hi), the range of spec's prefix and bounds, to
// the keys past spec.After in scan order: above it, or with Reverse below.
func (s *schema) pastAfter(spec *ScanSpec, lo, hi []byte) ([]byte, []byte, error) {
	d := &s.indexes[spec.Index]
	if !d.unique {
		return nil, nil, errorf(ErrInvalid, "table %q: after needs the primary key or a unique index; index %q is not unique, so narrow the range instead", s.def.Name, d.name)
	}
	if len(spec.After) != len(d.cols) {
		return nil, nil, errorf(ErrInvalid, "table %q: after has %d values; the key of index %q has %d%s", s.def.Name, len(spec.After), d.name, len(d.cols), afterRecreated)
	}
	k, err := s.appendKey(nil, spec.Index, 0, spec.After)
	if err != nil {
		return nil, nil, fmt.Errorf("after, a key of index %q: %w%s", d.name, err, afterRecreated)
	}
	in := bytes.Compare(k, lo) >= 0 && (hi == nil || bytes.Compare(k, hi) < 0)
	if d.kind == Hash {
		in = bytes.Equal(k, lo) // the one key a hash scan reads
	}
	switch {
	case !in:
		return nil, nil, errorf(ErrInvalid, "table %q: after is outside the scan's prefix and bounds; pass the resume_key of the same scan", s.def.Name)
	case d.kind == Hash:
		return lo, []byte{}, nil // nothing is past the one key
	case spec.Reverse:
		return lo, k, nil
	}
	// The least key above k: k followed by a zero byte.
	return append(k, 0), hi, nil
}

// hashScanBatch is how many entries of its key a hash index scan takes
// at a time.
const hashScanBatch = 64

// collect feeds fn the committed rows of index ix in [lo, hi), in index
// order, at most limit (0: all). It is the one definition of a scan's
// committed result, run at execution and again at validation.
func (tx *Tx) collect(t *Table, st *tableState, ix int, lo, hi []byte, reverse bool, limit int, fn func(h hit, row []byte) bool) error {
	s := st.s
	n := 0
	var err error
	visit := func(key []byte, rid uint64) bool {
		tid, row, _, e := tx.visible(t, rid)
		if e != nil {
			err = e
			return false
		}
		if row == nil {
			return true // a stale entry or this transaction's own placeholder
		}
		if !tx.keyEqual(s, ix, row, key) {
			return true // the entry is being replaced
		}
		n++
		return fn(hit{rid, tid}, row) && (limit == 0 || n < limit)
	}
	// The scan's buffers are taken out while it runs, so that fn may scan
	// again (a nested scan gets buffers of its own).
	if s.indexes[ix].kind == Hash {
		// The key's rows in RID order, a batch at a time, as far as fn
		// goes: a key may have millions.
		x := st.idx[ix].(*hashIndex)
		cands := tx.scanCands[:0]
		tx.scanCands = nil
		batch := hashScanBatch
		if limit > 0 && limit < batch {
			batch = limit
		}
		for from := uint64(0); ; batch = hashScanBatch {
			cands = x.scanKey(lo, from, batch, cands[:0])
			done := len(cands) < batch
			for _, c := range cands {
				if !visit(lo, c) {
					done = true
					break
				}
			}
			if done {
				break
			}
			from = cands[len(cands)-1] + 1
		}
		tx.scanCands = cands
		return err
	}
	buf := tx.items
	tx.items = nil
	buf = st.idx[ix].(*orderedIndex).scan(lo, hi, reverse, limit, buf, func(key string, rid uint64) bool {
		return visit(unsafeBytes(key), rid)
	})
	clear(buf) // the keys point into index slabs
	tx.items = buf
	return err
}

// Scan calls fn with the rows of an index range in index order (reversed
// with Reverse) until fn returns false or Limit rows were delivered. The
// transaction's own writes are included: those made before Scan began,
// not those fn makes. Records stay valid after Scan.
func (tx *Tx) Scan(t *Table, spec ScanSpec, fn func(Record) bool) error {
	st, err := tx.state(t)
	if err != nil {
		return err
	}
	return tx.scan(t, st, spec, fn)
}

// scan is Scan of the table's state st.
func (tx *Tx) scan(t *Table, st *tableState, spec ScanSpec, fn func(Record) bool) error {
	if spec.Limit < 0 {
		return errorf(ErrInvalid, "negative scan limit %d", spec.Limit)
	}
	lo, hi, err := st.bounds(&spec)
	if err != nil {
		return err
	}
	if hi != nil && len(hi) == 0 {
		return nil // nothing is below the empty key
	}
	lo, hi = tx.ownRange(lo, hi)
	rec := scanRec{t: t, st: st, ix: spec.Index, lo: lo, hi: hi, reverse: spec.Reverse, limit: spec.Limit}
	if !tx.wroteTo(t) {
		// Stream: what fn did not see was not read, so validation re-runs
		// only as far as fn went.
		err = tx.collect(t, st, spec.Index, lo, hi, spec.Reverse, spec.Limit, func(h hit, row []byte) bool {
			rec.hits = append(rec.hits, h)
			if !fn(Record{s: st.s, b: row}) {
				rec.limit = len(rec.hits)
				return false
			}
			return true
		})
		tx.keepScan(&rec)
		return err
	}
	return tx.scanMerged(t, st, &rec, spec.Limit, fn)
}

// ownRange copies a non-empty range's bounds into the transaction; hi
// nil stays unbounded (own keeps no distinction between nil and empty).
func (tx *Tx) ownRange(lo, hi []byte) ([]byte, []byte) {
	if lo, hi = tx.own(lo), tx.own(hi); len(hi) == 0 {
		hi = nil
	}
	return lo, hi
}

// writesOn counts this transaction's writes to table t.
func (tx *Tx) writesOn(t *Table) int {
	n := 0
	for i := range tx.writes {
		if tx.writes[i].t == t {
			n++
		}
	}
	return n
}

// scanMerged is Scan for a table this transaction wrote. It streams the
// committed rows in index order, hiding those the transaction writes,
// and merges in its own rows in the range (ownRows), in the order of
// index key, then primary key, until fn stops it or limit rows were
// delivered. It sees the writes made before it began, not those fn
// makes. As a streaming scan, it is recorded as far as it read the
// committed rows: the whole range, or, if it stopped before the end, the
// rows up to the last it read (delivered, hidden, or the one it stopped
// before, having delivered own rows that come before it: a row put in
// before that one would have been among what fn saw).
func (tx *Tx) scanMerged(t *Table, st *tableState, rec *scanRec, limit int, fn func(Record) bool) error {
	s := st.s
	b := tx.merge
	tx.merge = nil
	if b == nil {
		b = new(mergeBufs)
	}
	own := tx.ownRows(t, st, rec, b)
	since := tx.added
	n, stopped := 0, false
	deliver := func(row []byte) bool {
		n++
		stopped = !fn(Record{s: s, b: row}) || n == limit
		return !stopped
	}
	err := tx.collect(t, st, rec.ix, rec.lo, rec.hi, rec.reverse, 0, func(h hit, row []byte) bool {
		rec.hits = append(rec.hits, h)
		b.pk = s.appendRowKey(b.pk[:0], 0, row)
		if i := tx.findWrite(t, b.pk); i >= 0 && tx.writes[i].seq < since {
			return true // the transaction's own version, if any, is among its rows
		}
		if own.ok {
			b.key = s.appendRowKey(b.key[:0], rec.ix, row)
			for own.ok && own.before(b.key, b.pk) {
				if !deliver(bytes.Clone(own.cur.row)) {
					return false
				}
				own.next()
			}
		}
		return deliver(row)
	})
	if stopped {
		rec.limit = len(rec.hits)
	} else {
		rec.limit = 0 // read to the end of the range
		for err == nil && own.ok && deliver(bytes.Clone(own.cur.row)) {
			own.next()
		}
	}
	tx.keepScan(rec)
	own.release()
	clear(b.own)
	b.own = b.own[:0]
	tx.merge = b
	return err
}

// getByMany is GetBy in a transaction of many writes, which a merged
// scan would read all of. It reads the committed rows with the key as a
// scan does (and records the scan for validation), hiding those the
// transaction changed or deleted, and finds the transaction's own row
// with the key through its ownIndex; of these (a key that two rows hold
// until Commit refuses it), the one with the smallest primary key, as a
// merged scan would.
func (tx *Tx) getByMany(t *Table, st *tableState, ix int, key []Value) (Record, bool, error) {
	lo, hi, err := st.bounds(&ScanSpec{Index: ix, Prefix: key})
	if err != nil {
		return Record{}, false, err
	}
	lo, hi = tx.ownRange(lo, hi) // a full key's range is never empty
	rec := scanRec{t: t, st: st, ix: ix, lo: lo, hi: hi}
	var best []byte // the committed row shown, if any
	err = tx.collect(t, st, ix, lo, hi, false, 0, func(h hit, row []byte) bool {
		rec.hits = append(rec.hits, h)
		tx.scratch = st.s.appendRowKey(tx.scratch[:0], 0, row)
		if best == nil && tx.findWrite(t, tx.scratch) < 0 {
			best = row
		}
		return true
	})
	tx.keepScan(&rec)
	if err != nil {
		return Record{}, false, err
	}
	own, found := tx.ownIndex(t, st, ix).first(lo)
	if found && (best == nil || bytes.Compare(own.pk, st.s.appendRowKey(tx.scratch[:0], 0, best)) < 0) {
		return Record{s: st.s, b: bytes.Clone(own.row)}, true, nil
	}
	if best == nil {
		return Record{}, false, nil
	}
	return Record{s: st.s, b: best}, true, nil
}

// GetBy returns the row with the given full key in a unique secondary
// index (or the primary key, index 0).
func (tx *Tx) GetBy(t *Table, ix int, key []Value) (Record, bool, error) {
	st, err := tx.state(t)
	if err != nil {
		return Record{}, false, err
	}
	return tx.getBy(t, st, ix, key)
}

// GetByName is GetBy of the index named index ("" or "primary": the
// primary key), looked up in the same schema the lookup reads, as
// ScanSpec.IndexName is.
func (tx *Tx) GetByName(t *Table, index string, key []Value) (Record, bool, error) {
	st, err := tx.state(t)
	if err != nil {
		return Record{}, false, err
	}
	ix, err := st.index(index)
	if err != nil {
		return Record{}, false, err
	}
	return tx.getBy(t, st, ix, key)
}

// getBy is GetBy of the table's state st.
func (tx *Tx) getBy(t *Table, st *tableState, ix int, key []Value) (Record, bool, error) {
	if err := st.usable(ix); err != nil {
		return Record{}, false, err
	}
	d := &st.s.indexes[ix]
	if !d.unique {
		return Record{}, false, errorf(ErrInvalid, "table %q: index %q is not unique; scan it", t.name, d.name)
	}
	if len(key) != len(d.cols) {
		return Record{}, false, errorf(ErrInvalid, "table %q index %q has %d key columns, got %d values", t.name, d.name, len(d.cols), len(key))
	}
	if ix == 0 {
		k, err := tx.pk(st, key)
		if err != nil {
			return Record{}, false, err
		}
		r, _, found, err := tx.get(t, st, k)
		return r, found, err
	}
	if len(tx.writes) > linearWrites {
		return tx.getByMany(t, st, ix, key)
	}
	if tx.writesOn(t) == 0 {
		var err error
		if tx.scratch, err = st.s.appendKey(tx.scratch[:0], ix, 0, key); err != nil {
			return Record{}, false, err
		}
		r, _, found, err := tx.pointRead(t, st, ix, tx.scratch)
		return r, found, err
	}
	var found Record
	err := tx.scan(t, st, ScanSpec{Index: ix, Prefix: key, Limit: 1}, func(r Record) bool {
		found = r
		return false
	})
	return found, found.Valid(), err
}
