package mem

import "encoding/binary"

// Key encoding. Index keys are byte strings whose bytewise order is the
// order of the column tuples they encode, so an ordered index compares keys
// with bytes.Compare and a tuple prefix encodes to a byte prefix. Keys of
// deletes travel in redo records, so this is part of the on-disk format.
//
// Per column, in index column order:
//
//	nullable column:  0x00 for NULL, else 0x01 followed by the value
//	int64, timestamp: 8 bytes big-endian with the sign bit flipped
//	uint64:           8 bytes big-endian
//	float64:          IEEE bits big-endian; positive: sign bit set,
//	                  negative: all bits inverted (so -1 < -0 < 0 < 1)
//	bool:             one byte, 0 or 1
//	string, bytes:    the bytes with 0x00 escaped as 0x00 0xFF,
//	                  then the terminator 0x00 0x01
//
// The escape keeps "a" < "a\x00" < "ab" and makes (a, b) tuples compare
// column by column.

const (
	keyNull    = 0x00
	keyPresent = 0x01
)

func appendFixedKey(dst []byte, t Type, bits uint64) []byte {
	switch t {
	case TypeInt64, TypeTimestamp:
		return binary.BigEndian.AppendUint64(dst, bits^(1<<63))
	case TypeFloat64:
		if bits&(1<<63) != 0 {
			bits = ^bits
		} else {
			bits |= 1 << 63
		}
		return binary.BigEndian.AppendUint64(dst, bits)
	case TypeBool:
		return append(dst, byte(bits))
	default:
		return binary.BigEndian.AppendUint64(dst, bits)
	}
}

func appendVarKey(dst []byte, b []byte) []byte {
	for _, c := range b {
		if c == 0 {
			dst = append(dst, 0x00, 0xFF)
		} else {
			dst = append(dst, c)
		}
	}
	return append(dst, 0x00, 0x01)
}

func appendVarKeyString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			dst = append(dst, 0x00, 0xFF)
		} else {
			dst = append(dst, s[i])
		}
	}
	return append(dst, 0x00, 0x01)
}

// appendKey validates vals against key columns from, from+1, ... of index
// ix and appends their encoding. Values for fewer than all key columns
// encode a prefix.
func (s *schema) appendKey(dst []byte, ix int, from int, vals []Value) ([]byte, error) {
	d := &s.indexes[ix]
	if from+len(vals) > len(d.cols) {
		return dst, errorf(ErrInvalid, "table %q index %q has %d key columns, got %d values", s.def.Name, d.name, len(d.cols), from+len(vals))
	}
	for i, v := range vals {
		c := d.cols[from+i]
		if err := s.checkValue(c, v); err != nil {
			return dst, err
		}
		col := &s.cols[c]
		if col.Nullable {
			if v.typ == 0 {
				dst = append(dst, keyNull)
				continue
			}
			dst = append(dst, keyPresent)
		}
		if col.Type.variable() {
			dst = appendVarKeyString(dst, v.str)
		} else {
			dst = appendFixedKey(dst, col.Type, v.bits)
		}
	}
	return dst, nil
}

// appendRowKey appends the key of index ix taken from an encoded row.
func (s *schema) appendRowKey(dst []byte, ix int, row []byte) []byte {
	r := Record{s: s, b: row}
	for _, c := range s.indexes[ix].cols {
		col := &s.cols[c]
		if col.Nullable {
			if r.IsNull(c) {
				dst = append(dst, keyNull)
				continue
			}
			dst = append(dst, keyPresent)
		}
		if col.Type.variable() {
			dst = appendVarKey(dst, r.varBytes(c))
		} else {
			dst = appendFixedKey(dst, col.Type, r.fixed(c))
		}
	}
	return dst
}

// rowKeyEqual reports whether the row's key for index ix equals key,
// without allocating.
func (s *schema) rowKeyEqual(ix int, row []byte, key []byte, scratch []byte) (bool, []byte) {
	scratch = s.appendRowKey(scratch[:0], ix, row)
	return string(scratch) == string(key), scratch
}

// prefixEnd returns the smallest key greater than every key with the given
// prefix, or nil when there is none (the prefix is all 0xFF).
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// decodeKey decodes a full key of index ix back into values. It is
// the inverse of appendKey and is used to describe keys in errors and in
// tests.
func (s *schema) decodeKey(ix int, key []byte) ([]Value, error) {
	d := &s.indexes[ix]
	vals := make([]Value, 0, len(d.cols))
	for _, c := range d.cols {
		col := &s.cols[c]
		if col.Nullable {
			if len(key) == 0 {
				return nil, errorf(ErrCorrupt, "table %q index %q: key ends early", s.def.Name, d.name)
			}
			flag := key[0]
			key = key[1:]
			if flag == keyNull {
				vals = append(vals, Value{})
				continue
			}
			if flag != keyPresent {
				return nil, errorf(ErrCorrupt, "table %q index %q: bad NULL flag %#x", s.def.Name, d.name, flag)
			}
		}
		switch {
		case col.Type.variable():
			var out []byte
			i := 0
			for {
				if i+1 >= len(key) {
					return nil, errorf(ErrCorrupt, "table %q index %q: unterminated string", s.def.Name, d.name)
				}
				if key[i] != 0 {
					out = append(out, key[i])
					i++
					continue
				}
				if key[i+1] == 0xFF {
					out = append(out, 0)
					i += 2
					continue
				}
				if key[i+1] != 0x01 {
					return nil, errorf(ErrCorrupt, "table %q index %q: bad escape", s.def.Name, d.name)
				}
				i += 2
				break
			}
			key = key[i:]
			if len(out) > col.MaxLen {
				return nil, errorf(ErrCorrupt, "table %q index %q column %q: %d bytes, limit %d", s.def.Name, d.name, col.Name, len(out), col.MaxLen)
			}
			vals = append(vals, Value{typ: col.Type, str: string(out)})
		case col.Type == TypeBool:
			if len(key) < 1 || key[0] > 1 {
				return nil, errorf(ErrCorrupt, "table %q index %q: bad bool", s.def.Name, d.name)
			}
			vals = append(vals, Value{typ: TypeBool, bits: uint64(key[0])})
			key = key[1:]
		default:
			if len(key) < 8 {
				return nil, errorf(ErrCorrupt, "table %q index %q: key ends early", s.def.Name, d.name)
			}
			bits := binary.BigEndian.Uint64(key)
			key = key[8:]
			switch col.Type {
			case TypeInt64, TypeTimestamp:
				bits ^= 1 << 63
			case TypeFloat64:
				if bits&(1<<63) != 0 {
					bits &^= 1 << 63
				} else {
					bits = ^bits
				}
			}
			vals = append(vals, Value{typ: col.Type, bits: bits})
		}
	}
	if len(key) != 0 {
		return nil, errorf(ErrCorrupt, "table %q index %q: %d trailing key bytes", s.def.Name, d.name, len(key))
	}
	return vals, nil
}
