package mem

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// Row format. An encoded row is what the heap stores, what redo records
// carry as after-images and what images contain, so it is part of the
// on-disk format:
//
//	+-------------+---------------------------+-------------------+-------------+
//	| NULL bitmap | fixed-width values        | variable ends     | variable    |
//	| ceil(n/8) B | in column order, 8 B each | uint16 LE, one    | bytes, in   |
//	| bit i = col | (bool: 1 B), little-endian| per string/bytes  | column order|
//	| i is NULL   | NULL stored as zeros      | column, cumulative|             |
//	+-------------+---------------------------+-------------------+-------------+
//
// A variable column's bytes run from the previous column's end (0 for the
// first) to its own end, relative to the start of the variable bytes. A NULL
// variable column has length zero. Every field sits at an offset computed
// from the schema alone, so reading one column never decodes the others.

// MaxRowSize is the largest encoded row, so that any row fits in one page.
const MaxRowSize = PageSize - slotSize

func (s *schema) checkValue(c int, v Value) error {
	col := &s.cols[c]
	if v.typ == 0 {
		if !col.Nullable {
			return errorf(ErrNull, "table %q column %q", s.def.Name, col.Name)
		}
		return nil
	}
	if v.typ != col.Type {
		return errorf(ErrType, "table %q column %q is %s, got %s", s.def.Name, col.Name, col.Type, v.typ)
	}
	if col.Type.variable() && len(v.str) > col.MaxLen {
		return errorf(ErrTooLong, "table %q column %q: %d bytes, limit %d", s.def.Name, col.Name, len(v.str), col.MaxLen)
	}
	return nil
}

// encodeRow validates vals against the schema and appends the encoded row
// to dst.
func (s *schema) encodeRow(dst []byte, vals []Value) ([]byte, error) {
	if len(vals) != len(s.cols) {
		return dst, errorf(ErrInvalid, "table %q has %d columns, got %d values", s.def.Name, len(s.cols), len(vals))
	}
	size := s.varStart
	for c, v := range vals {
		if err := s.checkValue(c, v); err != nil {
			return dst, err
		}
		if s.cols[c].Type.variable() {
			size += len(v.str)
		}
	}
	start := len(dst)
	dst = growZero(dst, size)
	row := dst[start:]
	varEnd := 0
	for c, v := range vals {
		col := &s.cols[c]
		if v.typ == 0 {
			row[c/8] |= 1 << (c % 8)
		}
		switch {
		case col.Type.variable():
			copy(row[s.varStart+varEnd:], v.str)
			varEnd += len(v.str)
			binary.LittleEndian.PutUint16(row[s.fixedEnd+2*col.off:], uint16(varEnd))
		case col.Type == TypeBool:
			row[col.off] = byte(v.bits)
		default:
			binary.LittleEndian.PutUint64(row[col.off:], v.bits)
		}
	}
	return dst, nil
}

// growZero extends b by n zero bytes.
func growZero(b []byte, n int) []byte {
	b = append(b, make([]byte, n)...)
	return b
}

// validateRow checks that b is a well-formed row for the schema. Rows from
// the log, images and the network pass through it before they are applied.
func (s *schema) validateRow(b []byte) error {
	if len(b) < s.varStart {
		return errorf(ErrCorrupt, "table %q: row of %d bytes, need at least %d", s.def.Name, len(b), s.varStart)
	}
	for i, m := range s.notNull {
		if bad := b[i] & m; bad != 0 {
			c := i*8 + bits.TrailingZeros8(bad)
			if c >= len(s.cols) {
				return errorf(ErrCorrupt, "table %q: NULL bit set past the last column", s.def.Name)
			}
			return errorf(ErrCorrupt, "table %q column %q: NULL in a NOT NULL column", s.def.Name, s.cols[c].Name)
		}
	}
	prev := 0
	for _, c := range s.checked {
		col := &s.cols[c]
		null := b[c/8]&(1<<(c%8)) != 0
		switch {
		case col.Type.variable():
			end := int(binary.LittleEndian.Uint16(b[s.fixedEnd+2*col.off:]))
			if end < prev || s.varStart+end > len(b) || end-prev > col.MaxLen || (null && end != prev) {
				return errorf(ErrCorrupt, "table %q column %q: bad variable length", s.def.Name, col.Name)
			}
			prev = end
		case col.Type == TypeBool:
			if b[col.off] > 1 || (null && b[col.off] != 0) {
				return errorf(ErrCorrupt, "table %q column %q: bad bool", s.def.Name, col.Name)
			}
		default:
			if null && binary.LittleEndian.Uint64(b[col.off:]) != 0 {
				return errorf(ErrCorrupt, "table %q column %q: NULL with a value", s.def.Name, col.Name)
			}
		}
	}
	if s.varStart+prev != len(b) {
		return errorf(ErrCorrupt, "table %q: row has %d trailing bytes", s.def.Name, len(b)-s.varStart-prev)
	}
	return nil
}

// Record is a read-only view of one stored row. Its bytes are immutable:
// the heap never overwrites a published row in place (only a Replayer
// does, while nothing may read), so a Record stays valid after its
// transaction ends. Column arguments are ordinals in table
// order (see Table.Column); accessors panic on an out-of-range ordinal, like
// a slice index, and return the zero value for NULL.
type Record struct {
	s *schema
	b []byte
}

// Valid reports whether the Record holds a row.
func (r Record) Valid() bool { return r.s != nil }

// Encoded returns the row's encoded bytes (the row format above). The
// caller must not modify them.
func (r Record) Encoded() []byte { return r.b }

// NumColumns returns the number of columns.
func (r Record) NumColumns() int { return len(r.s.cols) }

// IsNull reports whether column c is NULL.
func (r Record) IsNull(c int) bool { return r.b[c/8]&(1<<(c%8)) != 0 }

func (r Record) fixed(c int) uint64 {
	col := &r.s.cols[c]
	if col.Type == TypeBool {
		return uint64(r.b[col.off])
	}
	return binary.LittleEndian.Uint64(r.b[col.off:])
}

func (r Record) varBytes(c int) []byte {
	s := r.s
	ord := s.cols[c].off
	end := int(binary.LittleEndian.Uint16(r.b[s.fixedEnd+2*ord:]))
	start := 0
	if ord > 0 {
		start = int(binary.LittleEndian.Uint16(r.b[s.fixedEnd+2*(ord-1):]))
	}
	return r.b[s.varStart+start : s.varStart+end]
}

// Int64 returns an int64 or timestamp column.
func (r Record) Int64(c int) int64 { return int64(r.fixed(c)) }

// Uint64 returns a uint64 column.
func (r Record) Uint64(c int) uint64 { return r.fixed(c) }

// Float64 returns a float64 column.
func (r Record) Float64(c int) float64 { return math.Float64frombits(r.fixed(c)) }

// Bool returns a bool column.
func (r Record) Bool(c int) bool { return r.fixed(c) != 0 }

// Str returns a string or bytes column as a string.
func (r Record) Str(c int) string { return string(r.varBytes(c)) }

// Value returns column c as a Value.
func (r Record) Value(c int) Value {
	if r.IsNull(c) {
		return Value{}
	}
	t := r.s.cols[c].Type
	if t.variable() {
		return Value{typ: t, str: string(r.varBytes(c))}
	}
	return Value{typ: t, bits: r.fixed(c)}
}

// Key returns the record's key in the named index ("" or "primary": the
// primary key) as the schema the record was read in defines it, and
// whether that index's keys are unique: a page of a scan ends on a key
// of the index it scanned, even one dropped and created again since.
func (r Record) Key(index string) ([]Value, bool, error) {
	ix, err := r.s.indexByName(index)
	if err != nil {
		return nil, false, err
	}
	d := &r.s.indexes[ix]
	key := make([]Value, len(d.cols))
	for i, c := range d.cols {
		key[i] = r.Value(c)
	}
	return key, d.unique, nil
}

// Values appends all columns to dst and returns it.
func (r Record) Values(dst []Value) []Value {
	for c := range r.s.cols {
		dst = append(dst, r.Value(c))
	}
	return dst
}

// patch appends to dst a copy of the row with the given columns replaced.
func (r Record) patch(dst []byte, set []ColumnValue) ([]byte, error) {
	s := r.s
	varChanged := false
	for _, cv := range set {
		if cv.Column < 0 || cv.Column >= len(s.cols) {
			return dst, errorf(ErrNoColumn, "table %q has no column %d", s.def.Name, cv.Column)
		}
		if err := s.checkValue(cv.Column, cv.Value); err != nil {
			return dst, err
		}
		if s.cols[cv.Column].Type.variable() {
			varChanged = true
		}
	}
	if varChanged {
		vals := r.Values(make([]Value, 0, len(s.cols)))
		for _, cv := range set {
			vals[cv.Column] = cv.Value
		}
		return s.encodeRow(dst, vals)
	}
	// Only fixed-width columns change: copy and overwrite in place.
	start := len(dst)
	dst = append(dst, r.b...)
	row := dst[start:]
	for _, cv := range set {
		c := cv.Column
		col := &s.cols[c]
		if cv.Value.typ == 0 {
			row[c/8] |= 1 << (c % 8)
		} else {
			row[c/8] &^= 1 << (c % 8)
		}
		if col.Type == TypeBool {
			row[col.off] = byte(cv.Value.bits)
		} else {
			binary.LittleEndian.PutUint64(row[col.off:], cv.Value.bits)
		}
	}
	return dst, nil
}

// ColumnValue sets one column in an update.
type ColumnValue struct {
	Column int
	Value  Value
}
