package mem

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestNestedScan scans inside a scan's callback, over batches longer than
// one index batch: each scan must deliver exactly its own rows.
func TestNestedScan(t *testing.T) {
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{
		Name:        "t",
		Columns:     []ColumnDef{{Name: "k", Type: TypeInt64}, {Name: "g", Type: TypeInt64}},
		PrimaryKey:  []string{"k"},
		PrimaryKind: Ordered,
		Indexes:     []IndexDef{{Name: "by_g", Columns: []string{"g"}, Kind: Ordered}},
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300 // several batches of 64
	tx := db.Begin()
	for k := 0; k < n; k++ {
		if err := tx.Insert(tb, []Value{Int64(int64(k)), Int64(int64(k % 3))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	byG, _ := tb.Index("by_g")
	tx = db.Begin()
	defer tx.Rollback()
	// A first scan leaves the transaction's batch buffer allocated.
	if err := tx.Scan(tb, ScanSpec{Limit: 100}, func(Record) bool { return true }); err != nil {
		t.Fatal(err)
	}
	var outer []int64
	err = tx.Scan(tb, ScanSpec{}, func(r Record) bool {
		outer = append(outer, r.Int64(0))
		if len(outer) > n {
			t.Fatalf("outer scan delivered more than the %d rows there are", n)
		}
		if r.Int64(0)%50 != 0 {
			return true
		}
		var inner []int64
		err := tx.Scan(tb, ScanSpec{Index: byG, Prefix: []Value{Int64(1)}}, func(r Record) bool {
			inner = append(inner, r.Int64(0))
			return true
		})
		if err != nil || len(inner) != n/3 {
			t.Fatalf("inner scan: %d rows, %v", len(inner), err)
		}
		for i, k := range inner {
			if k%3 != 1 || (i > 0 && k <= inner[i-1]) {
				t.Fatalf("inner scan row %d: key %d", i, k)
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(outer) != n {
		t.Fatalf("outer scan: %d rows, want %d", len(outer), n)
	}
	for i, k := range outer {
		if k != int64(i) {
			t.Fatalf("outer scan row %d: key %d: %s", i, k, fmt.Sprint(outer[max(0, i-3):i+1]))
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestStaleEntryFails plants an index entry that points at no row, as an
// engine bug would leave: a lookup must fail with ErrCorrupt, not spin.
func TestStaleEntryFails(t *testing.T) {
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{
		Name:       "t",
		Columns:    []ColumnDef{{Name: "k", Type: TypeInt64}},
		PrimaryKey: []string{"k"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tx := db.Begin()
	if err := tx.Insert(tb, []Value{Int64(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// A second entry for key 7 pointing at a slot that holds no row.
	st := tb.state.Load()
	key, _ := st.s.appendKey(nil, 0, 0, []Value{Int64(7)})
	st.idx[0].add(key, ridOf(0, 5))
	tx = db.Begin()
	defer tx.Rollback()
	_, _, err = tx.Get(tb, []Value{Int64(7)})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get through a stale entry: %v, want ErrCorrupt", err)
	}
}

// TestScanAfter checks a scan past After against the same scan without
// it: the rows after the key in scan order, both ways; a key outside the
// range, or not a full key, is refused.
func TestScanAfter(t *testing.T) {
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{
		Name:        "r",
		Columns:     []ColumnDef{{Name: "a", Type: TypeInt64}, {Name: "b", Type: TypeString, MaxLen: 4}},
		PrimaryKey:  []string{"a", "b"},
		PrimaryKind: Ordered,
	})
	if err != nil {
		t.Fatal(err)
	}
	tx := db.Begin()
	for a := int64(0); a < 4; a++ {
		for _, b := range []string{"", "x", "xy", "y"} {
			if err := tx.Insert(tb, []Value{Int64(a), String(b)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	specs := []ScanSpec{
		{},
		{Prefix: []Value{Int64(1)}},
		{Prefix: []Value{Int64(1)}, Lower: []Value{String("x")}},
		{Prefix: []Value{Int64(1)}, Upper: []Value{String("x")}},
		{Prefix: []Value{Int64(1)}, Upper: []Value{String("x")}, UpperInclusive: true},
		{Lower: []Value{Int64(1), String("xy")}, Upper: []Value{Int64(3)}},
		{Lower: []Value{Int64(1)}, Upper: []Value{Int64(2)}, UpperInclusive: true},
	}
	rtx := db.Begin()
	defer rtx.Rollback()
	scan := func(spec ScanSpec) ([]string, error) {
		var keys []string
		err := rtx.Scan(tb, spec, func(r Record) bool { keys = append(keys, fmt.Sprint(r.Int64(0), r.Str(1))); return true })
		return keys, err
	}
	for _, spec := range specs {
		for _, reverse := range []bool{false, true} {
			spec.Reverse = reverse
			all, err := scan(spec)
			if err != nil {
				t.Fatal(err)
			}
			for a := int64(0); a < 4; a++ {
				for _, b := range []string{"", "x", "xy", "y"} {
					past := spec
					past.After = []Value{Int64(a), String(b)}
					got, err := scan(past)
					i := slices.Index(all, fmt.Sprint(a, b))
					switch {
					case i < 0 && !errors.Is(err, ErrInvalid):
						t.Errorf("spec %+v after (%d, %q), outside the range: %v, want ErrInvalid", spec, a, b, err)
					case i >= 0 && (err != nil || !slices.Equal(got, all[i+1:])):
						t.Errorf("spec %+v after (%d, %q): %q, %v; want %q", spec, a, b, got, err, all[i+1:])
					}
				}
			}
		}
	}
	if _, err := scan(ScanSpec{After: []Value{Int64(1)}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a short key: %v", err)
	}
}
