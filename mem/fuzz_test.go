package mem

// Fuzz tests for every decoder of bytes that come from disk or the network
// (rows, keys, redo records, table and index definitions) and for Apply,
// which takes them whole. Seeds are valid encodings made by the encoders.
// Run one with, for example:
//
//	go test ./mem/ -run XXX -fuzz FuzzDecodeRedo -fuzztime 45s
//
// Helpers are prefixed fz; the fixture and the dump come from
// badinput_test.go.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// fzSchemas are the schemas rows are decoded with.
var fzSchemas = sync.OnceValue(func() []*schema {
	defs := []TableDef{
		biAcctDef(),
		biEvDef(),
		{ // ten columns: the NULL bitmap has padding bits; most are nullable
			Name: "wide",
			Columns: []ColumnDef{
				{Name: "c0", Type: TypeBool, Nullable: true},
				{Name: "c1", Type: TypeString, MaxLen: 3, Nullable: true},
				{Name: "c2", Type: TypeInt64, Nullable: true},
				{Name: "c3", Type: TypeBytes, MaxLen: 5, Nullable: true},
				{Name: "c4", Type: TypeFloat64, Nullable: true},
				{Name: "c5", Type: TypeBool},
				{Name: "c6", Type: TypeUint64, Nullable: true},
				{Name: "c7", Type: TypeTimestamp, Nullable: true},
				{Name: "c8", Type: TypeString, MaxLen: 2},
				{Name: "c9", Type: TypeBool, Nullable: true},
			},
			PrimaryKey:  []string{"c8", "c5"},
			PrimaryKind: Ordered,
			Indexes:     []IndexDef{{Name: "ix", Columns: []string{"c9", "c1", "c3", "c4", "c7"}, Kind: Ordered}},
		},
		{
			Name:       "one",
			Columns:    []ColumnDef{{Name: "b", Type: TypeBool}},
			PrimaryKey: []string{"b"},
		},
		{ // variable columns only
			Name: "vars",
			Columns: []ColumnDef{
				{Name: "a", Type: TypeString, MaxLen: 1},
				{Name: "b", Type: TypeBytes, MaxLen: 300, Nullable: true},
				{Name: "c", Type: TypeString, MaxLen: 4, Nullable: true},
			},
			PrimaryKey: []string{"a"},
			Indexes:    []IndexDef{{Name: "ix", Columns: []string{"c", "b"}, Kind: Ordered}},
		},
	}
	out := make([]*schema, len(defs))
	for i, d := range defs {
		s, err := compileSchema(d)
		if err != nil {
			panic(err)
		}
		out[i] = s
	}
	return out
})

// fzRowSeeds returns valid rows of schema i.
func fzRowSeeds(i int) [][]Value {
	switch i {
	case 0:
		return [][]Value{biAcctRow(1, "n1"), biAcctRow(2, ""), biAcctRow(3, "12345678"),
			biWith(biAcctRow(4, "x\x00y"), biTag, Bytes([]byte{0, 0, 0, 0}))}
	case 1:
		return [][]Value{biEvRow("a", 1), biEvRow("", 3), biEvRow(strings.Repeat("z", 16), math.MaxUint64)}
	case 2:
		return [][]Value{
			{Null(), Null(), Null(), Null(), Null(), Bool(false), Null(), Null(), String(""), Null()},
			{Bool(true), String("abc"), Int64(-1), Bytes([]byte{0, 1, 2, 3, 4}), Float64(math.Inf(-1)), Bool(true),
				Uint64(math.MaxUint64), TimestampNanos(math.MinInt64), String("zz"), Bool(false)},
			{Bool(false), String(""), Int64(0), Bytes(nil), Float64(math.Copysign(0, -1)), Bool(false),
				Uint64(0), TimestampNanos(0), String("\x00"), Null()},
		}
	case 3:
		return [][]Value{{Bool(false)}, {Bool(true)}}
	case 4:
		return [][]Value{{String(""), Null(), Null()}, {String("a"), Bytes(make([]byte, 300)), String("abcd")},
			{String("\xff"), Bytes([]byte("b")), String("")}}
	}
	return nil
}

// fzCheckRecord reads every column of an accepted row with the accessor
// for its type and checks the readings against each other.
func fzCheckRecord(t *testing.T, s *schema, b []byte) []Value {
	t.Helper()
	r := Record{s: s, b: b}
	if !r.Valid() || r.NumColumns() != len(s.cols) {
		t.Fatalf("Record of %d columns: valid %v, %d columns", len(s.cols), r.Valid(), r.NumColumns())
	}
	vals := r.Values(nil)
	for c, col := range s.cols {
		v := r.Value(c)
		if v != vals[c] || r.IsNull(c) != v.IsNull() {
			t.Fatalf("column %q: Value %v, Values %v, IsNull %v", col.Name, v, vals[c], r.IsNull(c))
		}
		if !v.IsNull() && v.Type() != col.Type {
			t.Fatalf("column %q of type %s reads as %s", col.Name, col.Type, v.Type())
		}
		var got Value
		switch col.Type {
		case TypeInt64:
			got = Int64(r.Int64(c))
		case TypeTimestamp:
			got = TimestampNanos(r.Int64(c))
		case TypeUint64:
			got = Uint64(r.Uint64(c))
		case TypeFloat64:
			got = Float64(r.Float64(c))
		case TypeBool:
			got = Bool(r.Bool(c))
		case TypeString:
			got = String(r.Str(c))
		case TypeBytes:
			got = Bytes([]byte(r.Str(c)))
		}
		if v.IsNull() {
			// NULL reads as the zero value.
			if got != biZero(col.Type) {
				t.Fatalf("NULL column %q reads as %v", col.Name, got)
			}
		} else if got != v {
			t.Fatalf("column %q: accessor %v, Value %v", col.Name, got, v)
		}
	}
	return vals
}

func biZero(t Type) Value {
	switch t {
	case TypeString:
		return String("")
	case TypeBytes:
		return Bytes(nil)
	}
	return Value{typ: t}
}

// FuzzRowDecode: arbitrary bytes as a row of a few schemas. Accepted rows
// read without panics and re-encode to the same bytes, and their index
// keys decode back to their values.
func FuzzRowDecode(f *testing.F) {
	for i, s := range fzSchemas() {
		for _, vals := range fzRowSeeds(i) {
			b, err := s.encodeRow(nil, vals)
			if err != nil {
				f.Fatalf("seed of %q: %v", s.def.Name, err)
			}
			f.Add(uint8(i), b)
			if len(b) > 0 {
				f.Add(uint8(i), b[:len(b)-1])
				f.Add(uint8(i), append(append([]byte(nil), b...), 0))
			}
		}
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), bytes.Repeat([]byte{0xff}, s.varStart+4))
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		schemas := fzSchemas()
		s := schemas[int(which)%len(schemas)]
		if err := s.validateRow(data); err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), s.def.Name) {
				t.Fatalf("rejected with %v, want ErrCorrupt naming the table", err)
			}
			return
		}
		vals := fzCheckRecord(t, s, data)
		again, err := s.encodeRow(nil, vals)
		if err != nil {
			t.Fatalf("an accepted row's values do not encode: %v (values %v)", err, vals)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("an accepted row re-encodes differently:\n in %x\nout %x", data, again)
		}
		for ix := range s.indexes {
			key := s.appendRowKey(nil, ix, data)
			kv, err := s.decodeKey(ix, key)
			if err != nil {
				t.Fatalf("index %q: the key of an accepted row does not decode: %v", s.indexes[ix].name, err)
			}
			for i, c := range s.indexes[ix].cols {
				if kv[i] != vals[c] {
					t.Fatalf("index %q: key column %d decodes to %v, the row has %v", s.indexes[ix].name, i, kv[i], vals[c])
				}
			}
			if k2, err := s.appendKey(nil, ix, 0, kv); err != nil || !bytes.Equal(k2, key) {
				t.Fatalf("index %q: appendKey %x (%v), appendRowKey %x", s.indexes[ix].name, k2, err, key)
			}
		}
	})
}

// fzRTSchema is the schema of FuzzRowRoundTrip: every type, some nullable.
var fzRTSchema = sync.OnceValue(func() *schema {
	s, err := compileSchema(TableDef{
		Name: "rt",
		Columns: []ColumnDef{
			{Name: "i", Type: TypeInt64},
			{Name: "u", Type: TypeUint64, Nullable: true},
			{Name: "f", Type: TypeFloat64},
			{Name: "b", Type: TypeBool, Nullable: true},
			{Name: "s", Type: TypeString, MaxLen: 32},
			{Name: "by", Type: TypeBytes, MaxLen: 16, Nullable: true},
			{Name: "ts", Type: TypeTimestamp},
			{Name: "s2", Type: TypeString, MaxLen: 1, Nullable: true},
		},
		PrimaryKey: []string{"i"},
	})
	if err != nil {
		panic(err)
	}
	return s
})

// FuzzRowRoundTrip: values -> encodeRow -> validateRow -> the same values.
// Bits of nulls make u, b, by, s2 NULL; bit 4 puts a NULL into NOT NULL i.
func FuzzRowRoundTrip(f *testing.F) {
	f.Add(int64(1), uint64(2), 3.5, true, "s", []byte("by"), int64(7), "x", uint8(0))
	f.Add(int64(math.MinInt64), uint64(math.MaxUint64), math.Inf(1), false, strings.Repeat("s", 32), bytes.Repeat([]byte{0}, 16), int64(math.MaxInt64), "", uint8(0x0f))
	f.Add(int64(-1), uint64(0), math.NaN(), false, "", []byte(nil), int64(0), "\x00", uint8(0x05))
	f.Add(int64(0), uint64(0), math.Copysign(0, -1), true, strings.Repeat("s", 33), []byte{}, int64(-5), "xy", uint8(0))
	f.Add(int64(0), uint64(0), 0.0, true, "", []byte{}, int64(0), "", uint8(0x10))
	f.Fuzz(func(t *testing.T, i int64, u uint64, fl float64, b bool, s string, by []byte, ts int64, s2 string, nulls uint8) {
		sc := fzRTSchema()
		vals := []Value{Int64(i), Uint64(u), Float64(fl), Bool(b), String(s), Bytes(by), TimestampNanos(ts), String(s2)}
		for bit, c := range []int{1, 3, 5, 7, 0} {
			if nulls&(1<<bit) != 0 {
				vals[c] = Null()
			}
		}
		var want error
		switch {
		case vals[0].IsNull():
			want = ErrNull
		case len(s) > 32 || (!vals[5].IsNull() && len(by) > 16) || (!vals[7].IsNull() && len(s2) > 1):
			want = ErrTooLong
		}
		prefix := []byte("pre")
		out, err := sc.encodeRow(prefix, vals)
		if want != nil {
			if !errors.Is(err, want) {
				t.Fatalf("encodeRow: %v, want %v", err, want)
			}
			if !bytes.Equal(out, prefix) {
				t.Fatalf("a failed encodeRow changed dst: %q", out)
			}
			return
		}
		if err != nil {
			t.Fatalf("encodeRow: %v", err)
		}
		if !bytes.Equal(out[:3], prefix) {
			t.Fatalf("encodeRow overwrote dst: %q", out[:3])
		}
		row := out[3:]
		size := sc.varStart + len(s)
		if !vals[5].IsNull() {
			size += len(by)
		}
		if !vals[7].IsNull() {
			size += len(s2)
		}
		if len(row) != size {
			t.Fatalf("row of %d bytes, want %d", len(row), size)
		}
		if err := sc.validateRow(row); err != nil {
			t.Fatalf("validateRow of an encoded row: %v", err)
		}
		got := fzCheckRecord(t, sc, row)
		if !reflect.DeepEqual(got, vals) {
			t.Fatalf("values\n in %v\nout %v", vals, got)
		}
	})
}

// fzKeySchema: an ordered index over (a int64, s string, f float64,
// b bool, u uint64, n nullable int64).
var fzKeySchema = sync.OnceValue(func() *schema {
	s, err := compileSchema(TableDef{
		Name: "k",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "a", Type: TypeInt64},
			{Name: "s", Type: TypeString, MaxLen: 64},
			{Name: "f", Type: TypeFloat64},
			{Name: "b", Type: TypeBool},
			{Name: "u", Type: TypeUint64},
			{Name: "n", Type: TypeInt64, Nullable: true},
		},
		PrimaryKey: []string{"id"},
		Indexes:    []IndexDef{{Name: "tuple", Columns: []string{"a", "s", "f", "b", "u", "n"}, Kind: Ordered}},
	})
	if err != nil {
		panic(err)
	}
	return s
})

type fzTuple struct {
	a     int64
	s     string
	f     float64
	b     bool
	u     uint64
	n     int64
	nnull bool
}

func (x fzTuple) values() []Value {
	n := Int64(x.n)
	if x.nnull {
		n = Null()
	}
	return []Value{Int64(x.a), String(x.s), Float64(x.f), Bool(x.b), Uint64(x.u), n}
}

// fzCmpFloat orders floats as the key encoding does: numerically, with
// -0 before +0. NaNs are not compared.
func fzCmpFloat(a, b float64) int {
	if c := cmp.Compare(a, b); c != 0 {
		return c
	}
	sa, sb := math.Signbit(a), math.Signbit(b)
	switch {
	case sa && !sb:
		return -1
	case !sa && sb:
		return 1
	}
	return 0
}

func fzCmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// fzCmpFields compares the first k fields of two tuples: NULL first.
func fzCmpFields(x, y fzTuple, k int) int {
	cs := []func() int{
		func() int { return cmp.Compare(x.a, y.a) },
		func() int { return strings.Compare(x.s, y.s) },
		func() int { return fzCmpFloat(x.f, y.f) },
		func() int { return fzCmpBool(x.b, y.b) },
		func() int { return cmp.Compare(x.u, y.u) },
		func() int {
			switch {
			case x.nnull && y.nnull:
				return 0
			case x.nnull:
				return -1
			case y.nnull:
				return 1
			}
			return cmp.Compare(x.n, y.n)
		},
	}
	for _, c := range cs[:k] {
		if r := c(); r != 0 {
			return r
		}
	}
	return 0
}

func fzSign(c int) int { return cmp.Compare(c, 0) }

// FuzzKeyOrder: the bytewise order of encoded keys is the order of the
// tuples, tuple prefixes encode to byte prefixes whose prefixEnd bounds
// exactly the tuples that extend them, decodeKey inverts appendKey and a
// row's key is the key of its values. Bits of same copy fields of the
// first tuple into the second, so that later columns get compared.
func FuzzKeyOrder(f *testing.F) {
	f.Add(int64(1), "a", 1.0, false, uint64(1), int64(1), false, int64(1), "a\x00", 1.0, false, uint64(1), int64(1), false, uint8(0))
	f.Add(int64(-1), "", math.Copysign(0, -1), true, uint64(0), int64(0), true, int64(5), "x", 0.0, true, uint64(0), int64(-3), false, uint8(0x3d))
	f.Add(int64(math.MaxInt64), "\xff\xff", math.Inf(1), true, uint64(math.MaxUint64), int64(math.MaxInt64), false,
		int64(math.MinInt64), "\x00\x00", math.Inf(-1), false, uint64(0), int64(math.MinInt64), false, uint8(0x01))
	f.Add(int64(0), "ab", -1.5, false, uint64(9), int64(0), false, int64(0), "a", -2.5, false, uint64(9), int64(0), true, uint8(0x1f))
	f.Add(int64(0), "a\x00b", 2.0, true, uint64(9), int64(7), false, int64(0), "a\x01", 2.0, true, uint64(8), int64(7), false, uint8(0x3e))
	f.Fuzz(func(t *testing.T, a1 int64, s1 string, f1 float64, b1 bool, u1 uint64, n1 int64, z1 bool,
		a2 int64, s2 string, f2 float64, b2 bool, u2 uint64, n2 int64, z2 bool, same uint8) {
		if math.IsNaN(f1) || math.IsNaN(f2) {
			return
		}
		if len(s1) > 64 {
			s1 = s1[:64]
		}
		if len(s2) > 64 {
			s2 = s2[:64]
		}
		x := fzTuple{a1, s1, f1, b1, u1, n1, z1}
		y := fzTuple{a2, s2, f2, b2, u2, n2, z2}
		if same&1 != 0 {
			y.a = x.a
		}
		if same&2 != 0 {
			y.s = x.s
		}
		if same&4 != 0 {
			y.f = x.f
		}
		if same&8 != 0 {
			y.b = x.b
		}
		if same&16 != 0 {
			y.u = x.u
		}
		if same&32 != 0 {
			y.n, y.nnull = x.n, x.nnull
		}
		s := fzKeySchema()
		const ix = 1
		kx, err := s.appendKey(nil, ix, 0, x.values())
		if err != nil {
			t.Fatal(err)
		}
		ky, err := s.appendKey(nil, ix, 0, y.values())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := bytes.Compare(kx, ky), fzCmpFields(x, y, 6); got != fzSign(want) {
			t.Fatalf("keys compare %d, tuples %d:\n%+v -> %x\n%+v -> %x", got, want, x, kx, y, ky)
		}
		for _, p := range []struct {
			tup fzTuple
			key []byte
		}{{x, kx}, {y, ky}} {
			vals := p.tup.values()
			dec, err := s.decodeKey(ix, p.key)
			if err != nil || !reflect.DeepEqual(dec, vals) {
				t.Fatalf("decodeKey(%x) = %v, %v; want %v", p.key, dec, err, vals)
			}
			row, err := s.encodeRow(nil, append([]Value{Int64(42)}, vals...))
			if err != nil {
				t.Fatal(err)
			}
			if rk := s.appendRowKey(nil, ix, row); !bytes.Equal(rk, p.key) {
				t.Fatalf("appendRowKey %x, appendKey %x", rk, p.key)
			}
		}
		// Prefixes: x[:k] encodes to a prefix of kx, and [p, prefixEnd(p))
		// holds exactly the keys of the tuples that start with x[:k].
		for k := 0; k <= 6; k++ {
			p, err := s.appendKey(nil, ix, 0, x.values()[:k])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(kx, p) {
				t.Fatalf("prefix of %d columns %x is not a prefix of the key %x", k, p, kx)
			}
			end := prefixEnd(p)
			c := fzCmpFields(y, x, k)
			in := bytes.Compare(ky, p) >= 0 && (end == nil || bytes.Compare(ky, end) < 0)
			if (c == 0) != in {
				t.Fatalf("%d-column prefix %x..%x: key %x inside %v, tuples compare %d", k, p, end, ky, in, c)
			}
			if c < 0 && bytes.Compare(ky, p) >= 0 {
				t.Fatalf("%d-column prefix %x: smaller tuple's key %x is not below it", k, p, ky)
			}
		}
	})
}

// fzDecodeKeyTargets lists the indexes FuzzDecodeKey decodes keys of. The
// corpus in testdata picks one by position: append new schemas at the end.
func fzDecodeKeyTargets() []struct {
	s  *schema
	ix int
} {
	var out []struct {
		s  *schema
		ix int
	}
	for _, s := range append(fzSchemas(), fzKeySchema()) {
		for ix := range s.indexes {
			out = append(out, struct {
				s  *schema
				ix int
			}{s, ix})
		}
	}
	return out
}

// FuzzDecodeKey: keys come in redo records (deletes). Accepted keys are
// keys some row could have: they encode back to the same bytes.
func FuzzDecodeKey(f *testing.F) {
	targets := fzDecodeKeyTargets()
	for i, tg := range targets {
		seeds := fzRowSeeds(-1)
		for si, s := range fzSchemas() {
			if s == tg.s {
				seeds = fzRowSeeds(si)
			}
		}
		for _, vals := range seeds {
			row, err := tg.s.encodeRow(nil, vals)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), tg.s.appendRowKey(nil, tg.ix, row))
		}
		f.Add(uint8(i), []byte{0, 0xff, 0, 1})
	}
	f.Fuzz(func(t *testing.T, which uint8, key []byte) {
		targets := fzDecodeKeyTargets()
		tg := targets[int(which)%len(targets)]
		vals, err := tg.s.decodeKey(tg.ix, key)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("rejected with %v, want ErrCorrupt", err)
			}
			return
		}
		again, err := tg.s.appendKey(nil, tg.ix, 0, vals)
		if err != nil {
			t.Fatalf("decodeKey accepted %x as %v, which is not a valid key: %v", key, vals, err)
		}
		if !bytes.Equal(again, key) {
			t.Fatalf("decodeKey accepted %x as %v, which encodes to %x", key, vals, again)
		}
	})
}

// fzRecords returns encoded redo records of every kind: those that built
// the fixture, and those of a later history (data, then each kind of
// schema change), with the LSNs they were committed at.
func fzRecords(t testing.TB) (setup, later []biLogRec) {
	f := biSetup(t)
	setup = f.log.records()
	tx := f.db.Begin()
	biMust(t, tx.Insert(f.acct, biAcctRow(9, "n9")))
	biMust(t, tx.Update(f.acct, []Value{Int64(1)}, []ColumnValue{{Column: biName, Value: String("renamed")}, {Column: biCnt, Value: Null()}}))
	biMust(t, tx.Delete(f.acct, []Value{Int64(2)}))
	biMust(t, tx.Upsert(f.ev, biEvRow("a", 1)))
	biMust(t, tx.Delete(f.ev, []Value{String("b"), Uint64(3)}))
	_, err := tx.Commit()
	biMust(t, err)
	biMust(t, errOnly(f.db.CreateIndex(context.Background(), "acct", IndexDef{Name: "by_bal", Columns: []string{"bal", "tag"}, Kind: Ordered})))
	biMust(t, errOnly(f.db.DropIndex("acct", "by_region")))
	_, err = f.db.CreateTable(biTableDef(func(d *TableDef) {
		d.Indexes = []IndexDef{{Name: "uq_s", Columns: []string{"s"}, Unique: true, Kind: Hash}}
	}))
	biMust(t, err)
	biMust(t, errOnly(f.db.DropTable("ev")))
	later = f.log.records()[len(setup):]
	return setup, later
}

// FuzzDecodeRedo: DecodeRedo never panics; what it accepts re-encodes to
// the same bytes.
func FuzzDecodeRedo(f *testing.F) {
	setup, later := fzRecords(f)
	for _, r := range append(setup, later...) {
		f.Add([]byte(r.Rec))
	}
	f.Add([]byte{0})
	f.Add([]byte{1, byte(OpDropTable), 1, 0})
	f.Add([]byte{2, byte(OpDelete), 1, 1, 0, byte(OpDelete), 0xff, 0xff, 0xff, 0xff, 0x0f, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRedo(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("rejected with %v, want ErrCorrupt", err)
			}
			return
		}
		if again := r.AppendBinary(nil); !bytes.Equal(again, data) {
			t.Fatalf("accepted record re-encodes differently:\n in %x\nout %x", data, again)
		}
	})
}

// fzTableDefs are valid table definitions, for seeds.
func fzTableDefs() []TableDef {
	var out []TableDef
	for i, s := range append(fzSchemas(), fzKeySchema(), fzRTSchema()) {
		d := s.def.Clone()
		d.ID = uint32(i + 1)
		out = append(out, d)
	}
	big := biTableDef(nil)
	big.ID = math.MaxUint32
	return append(out, big)
}

// FuzzDecodeTableDef: no panic; accepted definitions re-encode to the same
// bytes, and compiling one never panics.
func FuzzDecodeTableDef(f *testing.F) {
	for _, d := range fzTableDefs() {
		f.Add(encodeTableDef(nil, d))
	}
	f.Add([]byte{tableDefVersion})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, data []byte) {
		def, err := DecodeTableDef(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("rejected with %v, want ErrCorrupt", err)
			}
			return
		}
		if again := encodeTableDef(nil, def); !bytes.Equal(again, data) {
			t.Fatalf("accepted definition re-encodes differently:\n in %x\nout %x\n%+v", data, again, def)
		}
		s, err := compileSchema(def)
		if err != nil {
			return
		}
		// A compiled definition survives the log.
		enc := encodeTableDef(nil, s.def)
		def2, err := DecodeTableDef(enc)
		if err != nil {
			t.Fatalf("a compiled definition does not decode: %v\n%+v", err, s.def)
		}
		if again := encodeTableDef(nil, def2); !bytes.Equal(again, enc) {
			t.Fatalf("compiled definition: in %x, out %x", enc, again)
		}
	})
}

// FuzzDecodeIndexDef: no panic; accepted definitions re-encode to the same
// bytes.
func FuzzDecodeIndexDef(f *testing.F) {
	for _, d := range fzTableDefs() {
		for _, ix := range d.Indexes {
			f.Add(encodeIndexDef(nil, ix))
		}
	}
	f.Add(encodeIndexDef(nil, IndexDef{Name: "x", Columns: []string{"a", "b", "c"}, Unique: true, Kind: Hash}))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := DecodeIndexDef(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("rejected with %v, want ErrCorrupt", err)
			}
			return
		}
		if again := encodeIndexDef(nil, ix); !bytes.Equal(again, data) {
			t.Fatalf("accepted definition re-encodes differently:\n in %x\nout %x\n%+v", data, again, ix)
		}
	})
}

// FuzzApply: arbitrary bytes decoded as a redo record and applied at an
// arbitrary LSN to the fixture. Apply never panics; when it fails the
// database is unchanged; when it succeeds the database is consistent, the
// LSN has advanced, and a data record applies again idempotently.
func FuzzApply(f *testing.F) {
	setup, later := fzRecords(f)
	next := uint64(len(setup)) + 1
	for _, r := range setup {
		f.Add([]byte(r.Rec), r.LSN)
		f.Add([]byte(r.Rec), next)
	}
	for _, r := range later {
		f.Add([]byte(r.Rec), r.LSN)
	}
	f.Add([]byte{0}, uint64(0))
	f.Add([]byte{0}, next+100)
	// A unique index over a column two rows of biSetup's acct (table 1)
	// share.
	uq := &Redo{Ops: []Op{{Kind: OpCreateIndex, Table: 1, Data: encodeIndexDef(nil, IndexDef{Name: "uq", Columns: []string{"region"}, Unique: true, Kind: Hash})}}}
	f.Add(uq.AppendBinary(nil), next)
	f.Fuzz(func(t *testing.T, data []byte, lsn uint64) {
		r, err := DecodeRedo(data)
		if err != nil {
			return
		}
		fx := biSetup(t)
		before := biDumpDB(t, fx.db, fx.log)
		if err := fx.db.Apply(lsn, r); err != nil {
			if after := biDumpDB(t, fx.db, fx.log); biDiff(before, after) != "" {
				t.Fatalf("Apply(%d, %x) failed with %v and changed the database:\n%s", lsn, data, err, biDiff(before, after))
			}
			return
		}
		after := biDumpDB(t, fx.db, fx.log)
		if f := fx.db.fault.Load(); f != nil {
			// A unique index over rows that break it: taken, as its build
			// runs after, and then no record more.
			if r.Ops[0].Kind != OpCreateIndex || !errors.Is(*f, ErrNotUnique) {
				t.Fatalf("Apply(%d, %x) left the database refusing records: %v", lsn, data, *f)
			}
			if err := fx.db.Apply(after.LastLSN+1, &Redo{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Apply after an index that does not fit: %v, want ErrCorrupt", err)
			}
			if again := biDumpDB(t, fx.db, fx.log); biDiff(after, again) != "" {
				t.Fatalf("a refused Apply changed the database:\n%s", biDiff(after, again))
			}
			return
		}
		biConsistent(t, after)
		if want := max(before.LastLSN, lsn); after.LastLSN != want {
			t.Fatalf("LastLSN %d after Apply at %d over %d", after.LastLSN, lsn, before.LastLSN)
		}
		if !reflect.DeepEqual(after.Log, before.Log) {
			t.Fatalf("Apply called the CommitLog")
		}
		if len(r.Ops) > 0 && r.Ops[0].Kind < OpCreateTable {
			if err := fx.db.Apply(lsn, r); err != nil {
				t.Fatalf("applying a data record again: %v", err)
			}
			if again := biDumpDB(t, fx.db, fx.log); biDiff(after, again) != "" {
				t.Fatalf("applying a data record again changed the database:\n%s", biDiff(after, again))
			}
		}
		fzStillUsable(t, fx)
	})
}

// fzStillUsable checks that a database takes a new table after an Apply
// (as a promoted standby would, its log going on after the LSNs it
// applied): the table gets a fresh non-zero id and its record replays.
func fzStillUsable(t *testing.T, fx *biFix) {
	t.Helper()
	db := fx.db
	fx.log.mu.Lock()
	fx.log.last = max(fx.log.last, db.LastLSN())
	fx.log.mu.Unlock()
	ids := map[uint32]bool{}
	for _, d := range db.Tables() {
		ids[d.ID] = true
	}
	name := "fz_after"
	if _, err := db.Table(name); err == nil {
		return
	}
	tb, err := db.CreateTable(biTableDef(func(d *TableDef) { d.Name = name }))
	if errors.Is(err, ErrLimit) {
		return
	}
	if err != nil {
		t.Fatalf("CreateTable after Apply: %v", err)
	}
	if tb.ID() == 0 || ids[tb.ID()] {
		t.Fatalf("CreateTable after Apply gave id %d (ids in use: %v)", tb.ID(), ids)
	}
	d := tb.Def()
	replica := Open(Options{})
	if err := replica.Apply(1, &Redo{Ops: []Op{{Kind: OpCreateTable, Table: d.ID, Data: encodeTableDef(nil, d)}}}); err != nil {
		t.Fatalf("the new table's definition does not replay: %v", err)
	}
}
