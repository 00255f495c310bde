package mem

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of Scan in a transaction that wrote the table scanned (the merged
// scan: the committed rows streamed, the transaction's own merged in).

var mergeSeedFlag = flag.Uint64("merge.seed", 0, "TestScanMergedModel: run only this seed")

// Columns of the merged-scan model table.
const (
	smK = iota // int64, primary key
	smA        // int64, by_as part 1 (ordered, not unique)
	smS        // string(4) NULL, by_as part 2
	smU        // uint64, by_u (ordered, unique)
	smH        // int64, by_h (hash, not unique)
	smV        // uint64, by_v (hash, unique)
	smP        // string(16), not indexed
	smCols
)

// smIndex is the model's view of an index of the table.
type smIndex struct {
	name   string
	cols   []int
	unique bool
	kind   IndexKind
}

func smIndexes(pkKind IndexKind) []smIndex {
	return []smIndex{
		{"pk", []int{smK}, true, pkKind},
		{"by_as", []int{smA, smS}, false, Ordered},
		{"by_u", []int{smU}, true, Ordered},
		{"by_h", []int{smH}, false, Hash},
		{"by_v", []int{smV}, true, Hash},
	}
}

func (ix smIndex) key(row []Value) []Value {
	k := make([]Value, len(ix.cols))
	for i, c := range ix.cols {
		k[i] = row[c]
	}
	return k
}

// smRange reports whether key is in the range spec describes, as the
// model sees it (tuples compared value by value).
func smRange(key []Value, spec ScanSpec) bool {
	p := len(spec.Prefix)
	if cmpTuple(key[:p], spec.Prefix) != 0 {
		return false
	}
	if spec.Lower != nil && cmpTuple(key[p:p+len(spec.Lower)], spec.Lower) < 0 {
		return false
	}
	if spec.Upper != nil {
		c := cmpTuple(key[p:p+len(spec.Upper)], spec.Upper)
		if c > 0 || c == 0 && !spec.UpperInclusive {
			return false
		}
	}
	return true
}

// smScan is what a scan of view delivers, Limit aside: the rows in range
// by index key, then primary key (reversed with Reverse).
func smScan(view map[int64][]Value, ix smIndex, spec ScanSpec) [][]Value {
	var out [][]Value
	for _, row := range view {
		if smRange(ix.key(row), spec) {
			out = append(out, row)
		}
	}
	slices.SortFunc(out, func(x, y []Value) int {
		c := cmpTuple(ix.key(x), ix.key(y))
		if c == 0 {
			c = cmpValue(x[smK], y[smK])
		}
		if spec.Reverse {
			c = -c
		}
		return c
	})
	return out
}

// smHarness runs random transactions against the table and a map of its
// rows.
type smHarness struct {
	t         *testing.T
	rng       *rand.Rand
	db        *DB
	tbl       *Table
	other     *Table
	idx       []smIndex
	committed map[int64][]Value
	trace     []string
	scans     int
	merged    int // scans in a transaction that wrote the table
	inner     int // scans inside a scan's callback
	fnWrites  int // writes inside a scan's callback
	commits   int
	dups      int  // commits refused for two rows sharing a unique key
	wrote     bool // the transaction has written the table
}

func (h *smHarness) tracef(format string, args ...any) {
	h.trace = append(h.trace, fmt.Sprintf(format, args...))
	if len(h.trace) > 40 {
		h.trace = h.trace[len(h.trace)-40:]
	}
}

func (h *smHarness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("%s\nrecent operations:\n  %s", fmt.Sprintf(format, args...), strings.Join(h.trace, "\n  "))
}

func (h *smHarness) genRow(k int64) []Value {
	ss := []Value{Null(), String(""), String("a"), String("ab"), String("b")}
	return []Value{
		Int64(k), Int64(h.rng.Int64N(5) - 2), ss[h.rng.IntN(len(ss))], h.genUnique(),
		Int64(h.rng.Int64N(4)), h.genUnique(), String(fmt.Sprint(h.rng.IntN(1000))),
	}
}

// genUnique returns a value for a unique column: now and then one of the
// committed rows' first values, so that rows share keys until Commit.
func (h *smHarness) genUnique() Value {
	if h.rng.IntN(8) == 0 {
		return Uint64(h.rng.Uint64N(120))
	}
	return Uint64(1000 + h.rng.Uint64N(1000))
}

// genCol returns a value for column c: from a row of view or at random.
func (h *smHarness) genCol(c int, src []Value) Value {
	if src != nil && h.rng.IntN(3) > 0 {
		return src[c]
	}
	if c == smK {
		return Int64(h.rng.Int64N(120))
	}
	return h.genRow(0)[c]
}

func (h *smHarness) pickRow(view map[int64][]Value) []Value {
	if len(view) == 0 || h.rng.IntN(4) == 0 {
		return nil
	}
	n := h.rng.IntN(len(view))
	for _, row := range view {
		if n == 0 {
			return row
		}
		n--
	}
	return nil
}

func (h *smHarness) randomSpec(view map[int64][]Value) (ScanSpec, smIndex) {
	ixNo := h.rng.IntN(len(h.idx))
	ix := h.idx[ixNo]
	spec := ScanSpec{Index: ixNo}
	src := h.pickRow(view)
	vals := func(from, n int) []Value {
		out := make([]Value, n)
		for i := range out {
			out[i] = h.genCol(ix.cols[from+i], src)
		}
		return out
	}
	k := len(ix.cols)
	if ix.kind == Hash {
		spec.Prefix = vals(0, k)
	} else {
		if p := h.rng.IntN(k + 1); p > 0 {
			spec.Prefix = vals(0, p)
		}
		if rem := k - len(spec.Prefix); rem > 0 {
			if h.rng.IntN(2) == 0 {
				spec.Lower = vals(len(spec.Prefix), 1+h.rng.IntN(rem))
			}
			if h.rng.IntN(2) == 0 {
				spec.Upper = vals(len(spec.Prefix), 1+h.rng.IntN(rem))
			} else if h.rng.IntN(20) == 0 {
				spec.Upper = []Value{}
			}
		}
		spec.UpperInclusive = h.rng.IntN(2) == 0
		spec.Reverse = h.rng.IntN(2) == 0
	}
	switch h.rng.IntN(3) {
	case 0:
		spec.Limit = 1 + h.rng.IntN(5)
	case 1:
		spec.Limit = 1 + h.rng.IntN(100)
	}
	return spec, ix
}

// check compares a scan's rows with the model's (want, the first n of
// them due): the same index keys in the same order, each a distinct row
// of view as it is there; for a unique index (where only rows of the
// transaction's own can share a key), the same rows in the same order,
// by primary key. Rows with one key of an index that is not unique come
// in no particular order.
func (h *smHarness) check(what string, ix smIndex, spec ScanSpec, got []Record, want [][]Value, n int, view map[int64][]Value) {
	h.t.Helper()
	describe := func() string { return describeScan(what, ix.name, spec, got, want, n) }
	if len(got) != n {
		h.fatalf("wrong number of rows: %s", describe())
	}
	seen := map[int64]bool{}
	for i, r := range got {
		vals := r.Values(nil)
		k := vals[smK].AsInt64()
		switch {
		case seen[k]:
			h.fatalf("row %d delivered twice: %s", k, describe())
		case !slices.Equal(vals, view[k]):
			h.fatalf("row %d is %s, the model's %s: %s", i, fmtRow(vals), fmtRow(view[k]), describe())
		case cmpTuple(ix.key(vals), ix.key(want[i])) != 0:
			h.fatalf("row %d out of order: %s", i, describe())
		case ix.unique && k != want[i][smK].AsInt64():
			h.fatalf("row %d: of rows sharing a unique key, not the next by primary key: %s", i, describe())
		}
		seen[k] = true
	}
}

// write makes a random write in tx and in view.
func (h *smHarness) write(tx *Tx, view map[int64][]Value) {
	k := h.rng.Int64N(120)
	_, exists := view[k]
	h.wrote = true // or tried to: a write that fails changes nothing, so at worst the scan counted merged is not
	switch op := h.rng.IntN(10); {
	case op < 3:
		row := h.genRow(k)
		err := tx.Insert(h.tbl, row)
		h.tracef("insert %s: %v", fmtRow(row), err)
		if exists != errors.Is(err, ErrDuplicate) || !exists && err != nil {
			h.fatalf("Insert %s (exists %v): %v", fmtRow(row), exists, err)
		}
		if !exists {
			view[k] = row
		}
	case op < 5:
		row := h.genRow(k)
		if err := tx.Upsert(h.tbl, row); err != nil {
			h.fatalf("Upsert %s: %v", fmtRow(row), err)
		}
		h.tracef("upsert %s", fmtRow(row))
		view[k] = row
	case op < 8:
		src := h.genRow(k)
		var set []ColumnValue
		for _, c := range []int{smA, smS, smU, smH, smV, smP} {
			if h.rng.IntN(3) == 0 {
				set = append(set, ColumnValue{Column: c, Value: src[c]})
			}
		}
		err := tx.Update(h.tbl, []Value{Int64(k)}, set)
		h.tracef("update %d %v: %v", k, set, err)
		if exists != (err == nil) || !exists && !errors.Is(err, ErrNotFound) {
			h.fatalf("Update %d (exists %v): %v", k, exists, err)
		}
		if exists {
			row := slices.Clone(view[k])
			for _, cv := range set {
				row[cv.Column] = cv.Value
			}
			view[k] = row
		}
	case op < 9:
		err := tx.Delete(h.tbl, []Value{Int64(k)})
		h.tracef("delete %d: %v", k, err)
		if exists != (err == nil) || !exists && !errors.Is(err, ErrNotFound) {
			h.fatalf("Delete %d (exists %v): %v", k, exists, err)
		}
		delete(view, k)
	default:
		found, err := tx.Relog(h.tbl, []Value{Int64(k)})
		h.tracef("relog %d: %v %v", k, found, err)
		if err != nil || found != exists {
			h.fatalf("Relog %d (exists %v): %v, %v", k, exists, found, err)
		}
	}
}

// scan runs a random scan in tx and checks it against view. At depth 0
// its callback now and then writes (the scan must not see those writes)
// or scans again (the inner scan must see them).
func (h *smHarness) scan(tx *Tx, view map[int64][]Value, depth int) {
	h.scans++
	if h.wrote {
		h.merged++
	}
	spec, ix := h.randomSpec(view)
	want := smScan(view, ix, spec)
	before := maps.Clone(view)
	stop := 0
	if h.rng.IntN(5) == 0 {
		stop = 1 + h.rng.IntN(8)
	}
	writes := depth == 0 && h.rng.IntN(6) == 0
	inner := depth == 0 && h.rng.IntN(6) == 0
	var got []Record
	h.tracef("%*sscan %s %s stop %d writes %v inner %v", 2*depth, "", ix.name, fmtSpec(spec), stop, writes, inner)
	err := tx.Scan(h.tbl, spec, func(r Record) bool {
		got = append(got, r)
		if writes && h.rng.IntN(2) == 0 {
			h.fnWrites++
			h.write(tx, view)
		}
		if inner && h.rng.IntN(3) == 0 {
			h.inner++
			h.scan(tx, view, depth+1)
		}
		return stop == 0 || len(got) < stop
	})
	if err != nil {
		h.fatalf("Scan %s %s: %v", ix.name, fmtSpec(spec), err)
	}
	h.check("Scan", ix, spec, got, want, delivered(len(want), spec.Limit, stop), before)
}

// getBy checks GetBy by a unique secondary index: of the rows with the
// key, the one with the smallest primary key.
func (h *smHarness) getBy(tx *Tx, view map[int64][]Value) {
	ixNo := []int{2, 4}[h.rng.IntN(2)]
	ix := h.idx[ixNo]
	key := []Value{h.genCol(ix.cols[0], h.pickRow(view))}
	r, found, err := tx.GetBy(h.tbl, ixNo, key)
	if err != nil {
		h.fatalf("GetBy %s %s: %v", ix.name, fmtRow(key), err)
	}
	want := smScan(view, ix, ScanSpec{Prefix: key})
	switch {
	case found != (len(want) > 0):
		h.fatalf("GetBy %s %s found %v, the model has %d rows", ix.name, fmtRow(key), found, len(want))
	case found && !slices.Equal(r.Values(nil), want[0]):
		h.fatalf("GetBy %s %s = %s, want %s", ix.name, fmtRow(key), fmtRow(r.Values(nil)), fmtRow(want[0]))
	}
}

// dupUnique reports whether two rows of view share a unique key.
func (h *smHarness) dupUnique(view map[int64][]Value) bool {
	for _, ix := range h.idx[1:] {
		if !ix.unique {
			continue
		}
		seen := map[string]bool{}
		for _, row := range view {
			k := fmtRow(ix.key(row))
			if seen[k] {
				return true
			}
			seen[k] = true
		}
	}
	return false
}

func (h *smHarness) randomTx(round int) {
	h.trace, h.wrote = h.trace[:0], false
	tx := h.db.Begin()
	defer tx.Rollback()
	view := maps.Clone(h.committed)
	ops := 1 + h.rng.IntN(12)
	if h.rng.IntN(2) == 0 {
		ops = 50 + h.rng.IntN(300)
	}
	if h.rng.IntN(4) == 0 {
		// Writes to another table: past linearWrites they make the
		// transaction one of many writes, with few or none on this table.
		for i := range int64(h.rng.IntN(2 * linearWrites)) {
			if err := tx.Upsert(h.other, []Value{Int64(i)}); err != nil {
				h.fatalf("filler upsert: %v", err)
			}
		}
	}
	ddl := false
	type heldRec struct {
		r    Record
		vals []Value
	}
	var held []heldRec
	for range ops {
		switch op := h.rng.IntN(20); {
		case op < 9:
			h.write(tx, view)
		case op < 17:
			h.scan(tx, view, 0)
		case op < 19:
			h.getBy(tx, view)
		default:
			if h.rng.IntN(10) == 0 {
				// DDL: the table's state changes, so the keys an ownIndex
				// made are made again.
				ddl = true
				if _, err := h.db.CreateIndex(context.Background(), "m", IndexDef{Name: "x", Columns: []string{"p"}, Kind: Ordered}); err != nil {
					h.fatalf("CreateIndex: %v", err)
				}
				if _, err := h.db.DropIndex("m", "x"); err != nil {
					h.fatalf("DropIndex: %v", err)
				}
				h.tracef("DDL")
			}
			// Records from a scan stay as they were after the
			// transaction ends.
			_ = tx.Scan(h.tbl, ScanSpec{Index: 1, Limit: 3}, func(r Record) bool {
				held = append(held, heldRec{r, r.Values(nil)})
				return true
			})
		}
	}
	if ddl || h.rng.IntN(3) == 0 {
		tx.Rollback()
	} else {
		dup := h.dupUnique(view)
		_, err := tx.Commit()
		h.tracef("commit: %v", err)
		switch {
		case dup && !errors.Is(err, ErrDuplicate):
			h.fatalf("round %d: Commit with two rows sharing a unique key: %v, want ErrDuplicate", round, err)
		case !dup && err != nil:
			// Nothing else commits: a conflict is a scan recorded wrong.
			h.fatalf("round %d: Commit: %v", round, err)
		case !dup:
			h.committed = view
			h.commits++
		default:
			h.dups++
		}
	}
	for _, hr := range held {
		if !slices.Equal(hr.r.Values(nil), hr.vals) {
			h.fatalf("a Record changed after its transaction ended: %s, was %s", fmtRow(hr.r.Values(nil)), fmtRow(hr.vals))
		}
	}
}

// TestScanMergedModel: random mixes of inserts, updates (of index keys
// too), upserts, deletes, relogs, scans of every kind (forward and back,
// prefixes, bounds, limits, callbacks that stop early, write, or scan
// again) and GetBy, in transactions of few and of many writes over a
// table of committed rows with an ordered primary key (and, in a second
// run, a hash one), indexes ordered and hash, unique and not; each scan
// is checked against a map of the rows, and each commit must succeed
// unless two rows share a unique key: the scans were recorded right.
func TestScanMergedModel(t *testing.T) {
	seeds := []uint64{uint64(time.Now().UnixNano())}
	for i := range 5 {
		seeds = append(seeds, uint64(i+1))
	}
	if *mergeSeedFlag != 0 {
		seeds = []uint64{*mergeSeedFlag}
	}
	rounds := 150
	if testing.Short() || raceEnabled() {
		rounds = 50
	}
	for _, pkKind := range []IndexKind{Ordered, Hash} {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", pkKind, seed), func(t *testing.T) {
				t.Logf("seed %d (-merge.seed=%d to run it alone)", seed, seed)
				runScanMergedModel(t, seed, pkKind, rounds)
			})
		}
	}
}

func runScanMergedModel(t *testing.T, seed uint64, pkKind IndexKind, rounds int) {
	h := &smHarness{t: t, rng: rand.New(rand.NewPCG(seed, 7)), db: Open(Options{}), idx: smIndexes(pkKind), committed: map[int64][]Value{}}
	def := TableDef{Name: "m", PrimaryKey: []string{"k"}, PrimaryKind: pkKind}
	for i, name := range []string{"k", "a", "s", "u", "h", "v", "p"} {
		c := ColumnDef{Name: name, Type: []Type{TypeInt64, TypeInt64, TypeString, TypeUint64, TypeInt64, TypeUint64, TypeString}[i]}
		switch i {
		case smS:
			c.MaxLen, c.Nullable = 4, true
		case smP:
			c.MaxLen = 16
		}
		def.Columns = append(def.Columns, c)
	}
	for _, ix := range h.idx[1:] {
		d := IndexDef{Name: ix.name, Unique: ix.unique, Kind: ix.kind}
		for _, c := range ix.cols {
			d.Columns = append(d.Columns, def.Columns[c].Name)
		}
		def.Indexes = append(def.Indexes, d)
	}
	var err error
	if h.tbl, err = h.db.CreateTable(def); err != nil {
		t.Fatal(err)
	}
	if h.other, err = h.db.CreateTable(TableDef{Name: "o", Columns: []ColumnDef{{Name: "k", Type: TypeInt64}}, PrimaryKey: []string{"k"}}); err != nil {
		t.Fatal(err)
	}
	// Committed rows: half the primary keys, unique keys distinct.
	tx := h.db.Begin()
	for k := int64(0); k < 120; k += 2 {
		row := h.genRow(k)
		row[smU], row[smV] = Uint64(uint64(k)), Uint64(uint64(k))
		if err := tx.Insert(h.tbl, row); err != nil {
			t.Fatal(err)
		}
		h.committed[k] = row
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for round := range rounds {
		h.randomTx(round)
	}
	t.Logf("%d scans, %d merged, %d inside a callback, %d writes inside a callback; %d commits, %d refused for a duplicate; %d rows committed",
		h.scans, h.merged, h.inner, h.fnWrites, h.commits, h.dups, len(h.committed))
}

// TestScanMergedValidation: a merged scan is checked at commit as far as
// it read the committed rows, in transactions of few and of many writes.
// The table holds k = 0, 10, ..., 200 (g = k/10 % 3, under a hash
// index); the transaction inserts 52, 54, 56 and 71 and deletes 70 and
// 80. A commit by another transaction into what the scan delivered, or
// between its rows, or to a row it read, makes Commit fail with
// ErrConflict; one outside the range, or past the committed row the scan
// stopped at, does not.
func TestScanMergedValidation(t *testing.T) {
	type scenario struct {
		name     string
		spec     ScanSpec
		stop     int   // fn stops after this many rows (0: never)
		want     []int // the k the scan delivers
		other    func(o *Tx, tb *Table) error
		conflict bool
	}
	ins := func(k int64) func(o *Tx, tb *Table) error {
		return func(o *Tx, tb *Table) error { return o.Insert(tb, []Value{Int64(k), Int64(k / 10 % 3)}) }
	}
	upd := func(k int64) func(o *Tx, tb *Table) error {
		return func(o *Tx, tb *Table) error {
			return o.Update(tb, []Value{Int64(k)}, []ColumnValue{{Column: 1, Value: Int64(k / 10 % 3)}})
		}
	}
	fwd4 := ScanSpec{Lower: []Value{Int64(50)}, Limit: 4}
	fwd6 := ScanSpec{Lower: []Value{Int64(50)}, Limit: 6}
	rev2 := ScanSpec{Upper: []Value{Int64(57)}, Reverse: true, Limit: 2}
	whole := ScanSpec{Lower: []Value{Int64(100)}, Upper: []Value{Int64(130)}}
	byG := ScanSpec{Index: 1, Prefix: []Value{Int64(1)}}
	byG3 := ScanSpec{Index: 1, Prefix: []Value{Int64(1)}, Limit: 3}
	scenarios := []scenario{
		{"fwd4/insert-in", fwd4, 0, []int{50, 52, 54, 56}, ins(53), true},
		{"fwd4/update-delivered", fwd4, 0, []int{50, 52, 54, 56}, upd(50), true},
		{"fwd4/insert-past", fwd4, 0, []int{50, 52, 54, 56}, ins(65), false},
		{"fwd4/insert-below", fwd4, 0, []int{50, 52, 54, 56}, ins(45), false},
		{"fwd4/update-past", fwd4, 0, []int{50, 52, 54, 56}, upd(90), false},
		{"fwd6/insert-in", fwd6, 0, []int{50, 52, 54, 56, 60, 71}, ins(65), true},
		{"fwd6/insert-past", fwd6, 0, []int{50, 52, 54, 56, 60, 71}, ins(95), false},
		{"fwd6-stop3/insert-in", fwd6, 3, []int{50, 52, 54}, ins(51), true},
		{"fwd6-stop3/insert-past", fwd6, 3, []int{50, 52, 54}, ins(65), false},
		{"rev2/insert-in", rev2, 0, []int{56, 54}, ins(55), true},
		{"rev2/insert-past", rev2, 0, []int{56, 54}, ins(45), false},
		{"rev2/insert-above", rev2, 0, []int{56, 54}, ins(58), false},
		{"whole/insert-in", whole, 0, []int{100, 110, 120}, ins(125), true},
		{"whole/insert-out", whole, 0, []int{100, 110, 120}, ins(135), false},
		{"hash/insert-key", byG, 0, []int{10, 40, 71, 100, 130, 160, 190}, ins(41), true},
		{"hash/insert-other-key", byG, 0, []int{10, 40, 71, 100, 130, 160, 190}, ins(61), false},
		// The committed rows of a key come in RID order: this scan reads
		// 10, 40, 70 (deleted) and 100, and delivers 71 before 100.
		{"hash3/update-read", byG3, 0, []int{10, 40, 71}, upd(100), true},
		{"hash3/update-past", byG3, 0, []int{10, 40, 71}, upd(130), false},
	}
	for _, many := range []bool{false, true} {
		for _, sc := range scenarios {
			t.Run(fmt.Sprintf("many=%v/%s", many, sc.name), func(t *testing.T) {
				db := Open(Options{})
				tb, err := db.CreateTable(TableDef{Name: "v", Columns: []ColumnDef{{Name: "k", Type: TypeInt64}, {Name: "g", Type: TypeInt64}},
					PrimaryKey: []string{"k"}, PrimaryKind: Ordered, Indexes: []IndexDef{{Name: "by_g", Columns: []string{"g"}, Kind: Hash}}})
				if err != nil {
					t.Fatal(err)
				}
				reviewCommit(t, func(tx *Tx) error {
					for k := int64(0); k <= 200; k += 10 {
						if err := tx.Insert(tb, []Value{Int64(k), Int64(k / 10 % 3)}); err != nil {
							return err
						}
					}
					return nil
				}, db)
				tx := db.Begin()
				defer tx.Rollback()
				for _, k := range []int64{52, 54, 56, 71} {
					if err := tx.Insert(tb, []Value{Int64(k), Int64(k / 10 % 3)}); err != nil {
						t.Fatal(err)
					}
				}
				for _, k := range []int64{70, 80} {
					if err := tx.Delete(tb, []Value{Int64(k)}); err != nil {
						t.Fatal(err)
					}
				}
				if many {
					for k := int64(1000); k < 1000+4*linearWrites; k++ {
						if err := tx.Insert(tb, []Value{Int64(k), Int64(-1)}); err != nil {
							t.Fatal(err)
						}
					}
				}
				var got []int
				if err := tx.Scan(tb, sc.spec, func(r Record) bool {
					got = append(got, int(r.Int64(0)))
					return sc.stop == 0 || len(got) < sc.stop
				}); err != nil {
					t.Fatal(err)
				}
				if sc.spec.Index == 1 {
					slices.Sort(got) // rows with one key of a non-unique index come in any order
				}
				if !slices.Equal(got, sc.want) {
					t.Fatalf("scan %s delivered %v, want %v", fmtSpec(sc.spec), got, sc.want)
				}
				reviewCommit(t, func(o *Tx) error { return sc.other(o, tb) }, db)
				_, err = tx.Commit()
				if sc.conflict && !errors.Is(err, ErrConflict) {
					t.Errorf("Commit = %v, want ErrConflict", err)
				}
				if !sc.conflict && err != nil {
					t.Errorf("Commit = %v, want success", err)
				}
			})
		}
	}
}

// TestScanMergedLongLog: a transaction of many writes scans, then
// changes its rows over and over without reading: the log of changes
// does not grow past the writes (the ownIndex made for the scan is
// dropped instead), and the scans after see every change.
func TestScanMergedLongLog(t *testing.T) {
	db := Open(Options{})
	tb, err := db.CreateTable(TableDef{Name: "l", Columns: []ColumnDef{{Name: "k", Type: TypeInt64}, {Name: "n", Type: TypeInt64}},
		PrimaryKey: []string{"k"}, Indexes: []IndexDef{{Name: "by_n", Columns: []string{"n"}, Kind: Ordered}}})
	if err != nil {
		t.Fatal(err)
	}
	reviewCommit(t, func(tx *Tx) error {
		for k := int64(0); k < 100; k++ {
			if err := tx.Insert(tb, []Value{Int64(k), Int64(k)}); err != nil {
				return err
			}
		}
		return nil
	}, db)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	n := map[int64]int64{}
	for k := range int64(100) {
		n[k] = k
	}
	tx := db.Begin()
	defer tx.Rollback()
	check := func() {
		t.Helper()
		var got, want []int64
		if err := tx.Scan(tb, ScanSpec{Index: 1, Lower: []Value{Int64(40)}, Upper: []Value{Int64(60)}}, func(r Record) bool {
			got = append(got, r.Int64(1))
			return true
		}); err != nil {
			t.Fatal(err)
		}
		for _, v := range n {
			if v >= 40 && v < 60 {
				want = append(want, v)
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("scan of n in [40, 60): %v, want %v", got, want)
		}
	}
	dropped := 0 // updates after which no ownIndex was kept
	for i := range 5000 {
		k := rng.Int64N(2 * linearWrites)
		n[k] = rng.Int64N(100)
		if err := tx.Update(tb, []Value{Int64(k)}, []ColumnValue{{Column: 1, Value: Int64(n[k])}}); err != nil {
			t.Fatal(err)
		}
		if len(tx.changed) > len(tx.writes)+trimChanges {
			t.Fatalf("after %d updates of %d rows, %d changes logged", i+1, len(tx.writes), len(tx.changed))
		}
		if tx.owns == nil {
			dropped++
		}
		if i%700 == 0 || i%700 < 20 && rng.IntN(4) == 0 {
			check() // the changes in between are many more than the rows
		}
	}
	check()
	if dropped == 0 {
		t.Error("the ownIndex was never dropped")
	}
}
