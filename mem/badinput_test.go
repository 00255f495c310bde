package mem

// Bad-input tests (SPEC section 11): every malformed request gets a typed
// error (errors.Is with the sentinel) whose message names the table,
// column, index or limit involved, and changes nothing. "Nothing" is
// checked by a full dump of the database taken before and after: every
// table definition, every row (from a snapshot), what every index returns
// for them, Stats, LastLSN and the records the CommitLog received.
//
// Helpers here are prefixed bi so that they do not collide with other test
// files of the package; fuzz_test.go reuses the fixture and the dump.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// biLog is a CommitLog that keeps every record it is given. fail, when
// set, makes it refuse records.
type biLog struct {
	mu   sync.Mutex
	last uint64
	recs []biLogRec
	fail error
}

type biLogRec struct {
	LSN uint64
	Rec string // the encoded record
}

func (l *biLog) Commit(r *Redo) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return 0, l.fail
	}
	l.last++
	l.recs = append(l.recs, biLogRec{LSN: l.last, Rec: string(r.AppendBinary(nil))})
	return l.last, nil
}

func (l *biLog) records() []biLogRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]biLogRec(nil), l.recs...)
}

func (l *biLog) setFail(err error) {
	l.mu.Lock()
	l.fail = err
	l.mu.Unlock()
}

// biFix is a small database with data in it: acct (hash primary key, a
// unique hash index, a non-unique ordered index and a unique ordered one),
// ev (composite ordered primary key, hash secondaries) and gone, a table
// that was dropped and whose handle is kept.
type biFix struct {
	db   *DB
	log  *biLog
	acct *Table
	ev   *Table
	gone *Table
}

// Column ordinals of acct.
const (
	biID = iota
	biName
	biTag
	biBal
	biOK
	biTS
	biCnt
	biRegion
	biNumAcctCols
)

// Index ordinals of acct.
const (
	biByName   = 1 // unique hash (name)
	biByRegion = 2 // non-unique ordered (region)
	biByTS     = 3 // unique ordered (ts)
)

// Index ordinals of ev.
const (
	biEvByVal    = 1 // non-unique hash (val)
	biEvByDevVal = 2 // non-unique hash (dev, val)
)

func biAcctDef() TableDef {
	return TableDef{
		Name: "acct",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "name", Type: TypeString, MaxLen: 8},
			{Name: "tag", Type: TypeBytes, MaxLen: 4, Nullable: true},
			{Name: "bal", Type: TypeFloat64},
			{Name: "ok", Type: TypeBool},
			{Name: "ts", Type: TypeTimestamp},
			{Name: "cnt", Type: TypeUint64, Nullable: true},
			{Name: "region", Type: TypeInt64},
		},
		PrimaryKey: []string{"id"},
		Indexes: []IndexDef{
			{Name: "by_name", Columns: []string{"name"}, Unique: true, Kind: Hash},
			{Name: "by_region", Columns: []string{"region"}, Kind: Ordered},
			{Name: "by_ts", Columns: []string{"ts"}, Unique: true, Kind: Ordered},
		},
	}
}

func biEvDef() TableDef {
	return TableDef{
		Name: "ev",
		Columns: []ColumnDef{
			{Name: "dev", Type: TypeString, MaxLen: 16},
			{Name: "seq", Type: TypeUint64},
			{Name: "val", Type: TypeInt64, Nullable: true},
		},
		PrimaryKey:  []string{"dev", "seq"},
		PrimaryKind: Ordered,
		Indexes: []IndexDef{
			{Name: "by_val", Columns: []string{"val"}, Kind: Hash},
			{Name: "by_dev_val", Columns: []string{"dev", "val"}, Kind: Hash},
		},
	}
}

// biAcctRow is a valid acct row; names and timestamps are unique per id.
func biAcctRow(id int64, name string) []Value {
	tag := Null()
	if id%2 == 0 {
		tag = Bytes([]byte{byte(id), 0})
	}
	cnt := Null()
	if id%3 != 0 {
		cnt = Uint64(uint64(id) * 10)
	}
	return []Value{Int64(id), String(name), tag, Float64(float64(id) + 0.5), Bool(id%2 == 0),
		TimestampNanos(1_000_000 + id), cnt, Int64(id % 2)}
}

func biEvRow(dev string, seq uint64) []Value {
	val := Null()
	if seq != 3 {
		val = Int64(int64(seq) * 10)
	}
	return []Value{String(dev), Uint64(seq), val}
}

func biMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// biSetup builds the fixture. It is deterministic: two fixtures get the
// same tables, ids, rows, LSNs and log records.
func biSetup(t testing.TB) *biFix {
	t.Helper()
	f := &biFix{log: &biLog{}}
	f.db = Open(Options{Log: f.log})
	var err error
	f.acct, err = f.db.CreateTable(biAcctDef())
	biMust(t, err)
	f.ev, err = f.db.CreateTable(biEvDef())
	biMust(t, err)
	f.gone, err = f.db.CreateTable(TableDef{Name: "gone", Columns: []ColumnDef{{Name: "k", Type: TypeInt64}}, PrimaryKey: []string{"k"}})
	biMust(t, err)
	tx := f.db.Begin()
	for id := int64(1); id <= 5; id++ {
		biMust(t, tx.Insert(f.acct, biAcctRow(id, fmt.Sprintf("n%d", id))))
	}
	biMust(t, tx.Insert(f.gone, []Value{Int64(1)}))
	_, err = tx.Commit()
	biMust(t, err)
	tx = f.db.Begin()
	for _, dev := range []string{"a", "b"} {
		for seq := uint64(1); seq <= 3; seq++ {
			biMust(t, tx.Insert(f.ev, biEvRow(dev, seq)))
		}
	}
	_, err = tx.Commit()
	biMust(t, err)
	biMust(t, errOnly(f.db.DropTable("gone")))
	return f
}

// biDump is everything observable about a database.
type biDump struct {
	LastLSN uint64
	Tables  []TableDef
	Stats   []TableStats
	Rows    map[string][]string // table -> encoded rows (hex), sorted; read from a snapshot
	Reads   map[string][]string // table/index -> what reads through the index return
	Counts  map[string]int      // table/index -> rows reachable through the index
	Log     []biLogRec          // records the CommitLog received
}

// biDumpDB dumps db, once an index build Apply started is over. Reads
// through every index are checked against the snapshot: each row must be
// reachable through each of its indexes. An index reads may not use (its
// build found the rows break it: db.fault) is dumped as the error.
func biDumpDB(t testing.TB, db *DB, log *biLog) biDump {
	t.Helper()
	waitBuilt(db)
	d := biDump{LastLSN: db.LastLSN(), Tables: db.Tables(), Stats: db.Stats(),
		Rows: map[string][]string{}, Reads: map[string][]string{}, Counts: map[string]int{}}
	if log != nil {
		d.Log = log.records()
	}
	sn := db.Snapshot()
	defer sn.Close()
	for _, def := range d.Tables {
		var rows [][]Value
		var hexes []string
		err := sn.Scan(def.ID, func(r Record) error {
			rows = append(rows, r.Values(nil))
			hexes = append(hexes, hex.EncodeToString(r.Encoded()))
			return nil
		})
		if err != nil {
			t.Fatalf("dump: snapshot scan of %q: %v", def.Name, err)
		}
		sort.Strings(hexes)
		d.Rows[def.Name] = hexes
		tb, err := db.Table(def.Name)
		if err != nil {
			t.Fatalf("dump: %v", err)
		}
		ixs := append([]IndexDef{{Name: "primary", Columns: def.PrimaryKey, Unique: true, Kind: def.PrimaryKind}}, def.Indexes...)
		tx := db.Begin()
		for _, ix := range ixs {
			ord, err := tb.Index(ix.Name)
			if err != nil {
				t.Fatalf("dump: %v", err)
			}
			if err := tb.state.Load().usable(ord); err != nil {
				d.Reads[def.Name+"/"+ix.Name] = []string{err.Error()}
				continue
			}
			reads, n := biReadIndex(t, tx, tb, ord, ix, rows)
			d.Reads[def.Name+"/"+ix.Name] = reads
			d.Counts[def.Name+"/"+ix.Name] = n
		}
		tx.Rollback()
	}
	return d
}

// biReadIndex reads every row through one index: a full scan of an
// ordered index, a lookup of every row's key in a hash index. Rows with
// equal keys are sorted, as their order is unspecified.
func biReadIndex(t testing.TB, tx *Tx, tb *Table, ord int, ix IndexDef, rows [][]Value) ([]string, int) {
	t.Helper()
	cols := make([]int, len(ix.Columns))
	for i, name := range ix.Columns {
		c, err := tb.Column(name)
		if err != nil {
			t.Fatalf("dump: %v", err)
		}
		cols[i] = c
	}
	keyOf := func(vals []Value) []Value {
		k := make([]Value, len(cols))
		for i, c := range cols {
			k[i] = vals[c]
		}
		return k
	}
	type entry struct{ key, row string }
	var got []entry
	if ix.Kind == Ordered {
		err := tx.Scan(tb, ScanSpec{Index: ord}, func(r Record) bool {
			got = append(got, entry{fmt.Sprint(keyOf(r.Values(nil))), hex.EncodeToString(r.Encoded())})
			return true
		})
		if err != nil {
			t.Fatalf("dump: scan %q index %q: %v", tb.Name(), ix.Name, err)
		}
		// Sort rows within runs of equal keys only: the key order is checked.
		for i := 0; i < len(got); {
			j := i
			for j < len(got) && got[j].key == got[i].key {
				j++
			}
			sort.Slice(got[i:j], func(a, b int) bool { return got[i+a].row < got[i+b].row })
			i = j
		}
	} else {
		seen := map[string]bool{}
		for _, vals := range rows {
			k := keyOf(vals)
			ks := fmt.Sprint(k)
			if seen[ks] {
				continue
			}
			seen[ks] = true
			var run []entry
			err := tx.Scan(tb, ScanSpec{Index: ord, Prefix: k}, func(r Record) bool {
				run = append(run, entry{ks, hex.EncodeToString(r.Encoded())})
				return true
			})
			if err != nil {
				t.Fatalf("dump: lookup %v in %q index %q: %v", k, tb.Name(), ix.Name, err)
			}
			if ord == 0 {
				r, found, err := tx.Get(tb, k)
				if err != nil || !found || len(run) != 1 || hex.EncodeToString(r.Encoded()) != run[0].row {
					t.Fatalf("dump: Get %v in %q: found %v, err %v, scan gave %d rows", k, tb.Name(), found, err, len(run))
				}
			}
			sort.Slice(run, func(a, b int) bool { return run[a].row < run[b].row })
			got = append(got, run...)
		}
		sort.SliceStable(got, func(a, b int) bool { return got[a].key < got[b].key })
	}
	out := make([]string, len(got))
	for i, e := range got {
		out[i] = e.key + " " + e.row
	}
	return out, len(got)
}

// biDiff describes how two dumps differ, or returns "".
func biDiff(a, b biDump) string {
	var sb strings.Builder
	if a.LastLSN != b.LastLSN {
		fmt.Fprintf(&sb, "LastLSN %d -> %d\n", a.LastLSN, b.LastLSN)
	}
	if !reflect.DeepEqual(a.Tables, b.Tables) {
		fmt.Fprintf(&sb, "tables\n  %+v\n->%+v\n", a.Tables, b.Tables)
	}
	if !reflect.DeepEqual(a.Stats, b.Stats) {
		for i := 0; i < len(a.Stats) || i < len(b.Stats); i++ {
			var x, y any = "none", "none"
			if i < len(a.Stats) {
				x = a.Stats[i]
			}
			if i < len(b.Stats) {
				y = b.Stats[i]
			}
			if !reflect.DeepEqual(x, y) {
				fmt.Fprintf(&sb, "stats\n  %+v\n->%+v\n", x, y)
			}
		}
	}
	biMapDiff(&sb, "rows of", a.Rows, b.Rows)
	biMapDiff(&sb, "reads through", a.Reads, b.Reads)
	if !reflect.DeepEqual(a.Log, b.Log) {
		fmt.Fprintf(&sb, "log records: %d -> %d\n", len(a.Log), len(b.Log))
		for i := range b.Log {
			if i >= len(a.Log) || a.Log[i] != b.Log[i] {
				fmt.Fprintf(&sb, "  LSN %d: %x\n", b.Log[i].LSN, b.Log[i].Rec)
			}
		}
	}
	return sb.String()
}

// biMapDiff describes the entries that differ between two maps of lists.
func biMapDiff(sb *strings.Builder, what string, a, b map[string][]string) {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		x, xok := a[k]
		y, yok := b[k]
		if xok == yok && reflect.DeepEqual(x, y) {
			continue
		}
		in := map[string]int{}
		for _, v := range x {
			in[v]++
		}
		for _, v := range y {
			in[v]--
		}
		fmt.Fprintf(sb, "%s %s:\n", what, k)
		for _, v := range x {
			if in[v] > 0 {
				fmt.Fprintf(sb, "  - %s\n", v)
			}
		}
		for _, v := range y {
			if in[v] < 0 {
				fmt.Fprintf(sb, "  + %s\n", v)
			}
		}
		if !xok || !yok {
			fmt.Fprintf(sb, "  (present before: %v, after: %v)\n", xok, yok)
		}
	}
}

// biConsistent checks a dump's internal invariants: every index of a
// table reaches every row exactly once and counts it in Stats.
func biConsistent(t testing.TB, d biDump) {
	t.Helper()
	for _, st := range d.Stats {
		n := len(d.Rows[st.Name])
		if st.Rows != int64(n) {
			t.Errorf("table %q: Stats says %d rows, the snapshot has %d", st.Name, st.Rows, n)
		}
		for _, is := range st.Indexes {
			if is.Entries != int64(n) {
				t.Errorf("table %q index %q: %d entries for %d rows", st.Name, is.Name, is.Entries, n)
			}
			if c := d.Counts[st.Name+"/"+is.Name]; c != n {
				t.Errorf("table %q index %q: reads reach %d rows of %d", st.Name, is.Name, c, n)
			}
		}
	}
}

// biCheckErr checks an error's sentinel and that its message names what
// it should.
func biCheckErr(t testing.TB, err, want error, msg []string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("error %v, want %v", err, want)
		return
	}
	for _, m := range msg {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

func biUnchanged(t testing.TB, before biDump, f *biFix) {
	t.Helper()
	after := biDumpDB(t, f.db, f.log)
	if d := biDiff(before, after); d != "" {
		t.Errorf("the database changed:\n%s", d)
	}
}

// ---------------------------------------------------------------- DDL

// biTableDef returns a valid new table definition changed by mut.
func biTableDef(mut func(d *TableDef)) TableDef {
	d := TableDef{
		Name:       "t2",
		Columns:    []ColumnDef{{Name: "k", Type: TypeInt64}, {Name: "s", Type: TypeString, MaxLen: 10}},
		PrimaryKey: []string{"k"},
	}
	if mut != nil {
		mut(&d)
	}
	return d
}

func biCreate(mut func(d *TableDef)) func(f *biFix) error {
	return func(f *biFix) error {
		tb, err := f.db.CreateTable(biTableDef(mut))
		if err == nil && tb == nil {
			return errors.New("CreateTable returned neither a table nor an error")
		}
		return err
	}
}

func TestBadDDL(t *testing.T) {
	long := strings.Repeat("a", MaxNameLen+1)
	manyCols := func(d *TableDef) {
		for i := len(d.Columns); i <= MaxColumns; i++ {
			d.Columns = append(d.Columns, ColumnDef{Name: fmt.Sprintf("c%d", i), Type: TypeBool})
		}
	}
	manyIdx := func(d *TableDef) {
		for i := 0; i <= MaxIndexes; i++ {
			d.Indexes = append(d.Indexes, IndexDef{Name: fmt.Sprintf("ix%d", i), Columns: []string{"s"}, Kind: Hash})
		}
	}
	manyPK := func(d *TableDef) {
		d.PrimaryKey = nil
		for i := 0; i <= MaxKeyColumns; i++ {
			name := fmt.Sprintf("p%d", i)
			d.Columns = append(d.Columns, ColumnDef{Name: name, Type: TypeInt64})
			d.PrimaryKey = append(d.PrimaryKey, name)
		}
	}
	// fixed part of a row of t2 with one more string column x: NULL
	// bitmap (1 B), k (8 B), two variable ends (4 B).
	const t2Fixed = 1 + 8 + 2*2
	cases := []struct {
		name string
		op   func(f *biFix) error
		want error
		msg  []string
	}{
		{"table name empty", biCreate(func(d *TableDef) { d.Name = "" }), ErrInvalid, []string{`""`, "table name"}},
		{"table name digit first", biCreate(func(d *TableDef) { d.Name = "1abc" }), ErrInvalid, []string{`"1abc"`}},
		{"table name dash", biCreate(func(d *TableDef) { d.Name = "a-b" }), ErrInvalid, []string{`"a-b"`}},
		{"table name space", biCreate(func(d *TableDef) { d.Name = "a b" }), ErrInvalid, []string{`"a b"`}},
		{"table name non-ascii", biCreate(func(d *TableDef) { d.Name = "tæble" }), ErrInvalid, []string{"table name"}},
		{"table name too long", biCreate(func(d *TableDef) { d.Name = long }), ErrLimit, []string{fmt.Sprint(MaxNameLen)}},
		{"no columns", biCreate(func(d *TableDef) { d.Columns = nil }), ErrInvalid, []string{"t2", "0 columns"}},
		{"too many columns", biCreate(manyCols), ErrLimit, []string{"t2", fmt.Sprint(MaxColumns + 1), fmt.Sprint(MaxColumns)}},
		{"column name empty", biCreate(func(d *TableDef) { d.Columns[1].Name = "" }), ErrInvalid, []string{"t2", `""`}},
		{"column name bad", biCreate(func(d *TableDef) { d.Columns[1].Name = "bad col" }), ErrInvalid, []string{"t2", `"bad col"`}},
		{"column name too long", biCreate(func(d *TableDef) { d.Columns[1].Name = long }), ErrLimit, []string{"t2", long}},
		{"duplicate column", biCreate(func(d *TableDef) { d.Columns[1] = ColumnDef{Name: "k", Type: TypeInt64} }), ErrInvalid, []string{"t2", `"k"`}},
		{"type 0", biCreate(func(d *TableDef) { d.Columns[1] = ColumnDef{Name: "x", Type: 0} }), ErrInvalid, []string{"t2", `"x"`, "type 0"}},
		{"type 8", biCreate(func(d *TableDef) { d.Columns[1] = ColumnDef{Name: "x", Type: 8} }), ErrInvalid, []string{"t2", `"x"`, "type 8"}},
		{"type 255", biCreate(func(d *TableDef) { d.Columns[1] = ColumnDef{Name: "x", Type: 255} }), ErrInvalid, []string{"t2", `"x"`, "255"}},
		{"string without MaxLen", biCreate(func(d *TableDef) { d.Columns[1].MaxLen = 0 }), ErrInvalid, []string{"t2", `"s"`, "max length"}},
		{"bytes without MaxLen", biCreate(func(d *TableDef) { d.Columns[1] = ColumnDef{Name: "b", Type: TypeBytes} }), ErrInvalid, []string{"t2", `"b"`, "max length"}},
		{"negative MaxLen", biCreate(func(d *TableDef) { d.Columns[1].MaxLen = -1 }), ErrInvalid, []string{"t2", `"s"`, "-1"}},
		{"MaxLen above MaxRowSize", biCreate(func(d *TableDef) { d.Columns[1].MaxLen = MaxRowSize + 1 }), ErrLimit, []string{"t2", `"s"`, fmt.Sprint(MaxRowSize)}},
		{"MaxLen on int64", biCreate(func(d *TableDef) { d.Columns[0].MaxLen = 8 }), ErrInvalid, []string{"t2", `"k"`, "max length"}},
		{"MaxLen on bool", biCreate(func(d *TableDef) { d.Columns[1] = ColumnDef{Name: "b", Type: TypeBool, MaxLen: 1} }), ErrInvalid, []string{"t2", `"b"`}},
		{"row too large", biCreate(func(d *TableDef) {
			d.Columns = append(d.Columns, ColumnDef{Name: "x", Type: TypeBytes, MaxLen: MaxRowSize - t2Fixed - 10 + 1})
		}), ErrLimit, []string{"t2", fmt.Sprint(MaxRowSize + 1), fmt.Sprint(MaxRowSize)}},
		{"row too large, two columns", biCreate(func(d *TableDef) {
			d.Columns[1].MaxLen = 20000
			d.Columns = append(d.Columns, ColumnDef{Name: "x", Type: TypeString, MaxLen: 20000})
		}), ErrLimit, []string{"t2", fmt.Sprint(MaxRowSize)}},
		{"no primary key", biCreate(func(d *TableDef) { d.PrimaryKey = nil }), ErrInvalid, []string{"t2", "primary key"}},
		{"nullable primary key", biCreate(func(d *TableDef) { d.Columns[0].Nullable = true }), ErrInvalid, []string{"t2", `"k"`, "NOT NULL"}},
		{"nullable second primary key column", biCreate(func(d *TableDef) {
			d.Columns[1].Nullable = true
			d.PrimaryKey = []string{"k", "s"}
		}), ErrInvalid, []string{"t2", `"s"`, "NOT NULL"}},
		{"unknown primary key column", biCreate(func(d *TableDef) { d.PrimaryKey = []string{"nope"} }), ErrNoColumn, []string{"t2", "primary", `"nope"`}},
		{"primary key column twice", biCreate(func(d *TableDef) { d.PrimaryKey = []string{"k", "k"} }), ErrInvalid, []string{"t2", "primary", `"k"`}},
		{"primary key too wide", biCreate(manyPK), ErrLimit, []string{"t2", fmt.Sprint(MaxKeyColumns + 1), fmt.Sprint(MaxKeyColumns)}},
		{"primary kind 3", biCreate(func(d *TableDef) { d.PrimaryKind = 3 }), ErrInvalid, []string{"t2", "primary", "kind"}},
		{"duplicate table", func(f *biFix) error { _, err := f.db.CreateTable(biAcctDef()); return err }, ErrTableExist, []string{`"acct"`}},
		{"duplicate table, other columns", biCreate(func(d *TableDef) { d.Name = "ev" }), ErrTableExist, []string{`"ev"`}},
		{"index on unknown column", biCreate(func(d *TableDef) {
			d.Indexes = []IndexDef{{Name: "ix", Columns: []string{"nope"}, Kind: Hash}}
		}), ErrNoColumn, []string{"t2", `"ix"`, `"nope"`}},
		{"duplicate index name", biCreate(func(d *TableDef) {
			d.Indexes = []IndexDef{{Name: "ix", Columns: []string{"s"}, Kind: Hash}, {Name: "ix", Columns: []string{"k", "s"}, Kind: Ordered}}
		}), ErrIndexExist, []string{"t2", `"ix"`}},
		{"index named primary", biCreate(func(d *TableDef) {
			d.Indexes = []IndexDef{{Name: "primary", Columns: []string{"s"}, Kind: Hash}}
		}), ErrInvalid, []string{"t2", `"primary"`}},
		{"index named PRIMARY", biCreate(func(d *TableDef) {
			d.Indexes = []IndexDef{{Name: "PRIMARY", Columns: []string{"s"}, Kind: Hash}}
		}), ErrInvalid, []string{"t2", `"PRIMARY"`}},
		{"index name bad", biCreate(func(d *TableDef) {
			d.Indexes = []IndexDef{{Name: "9ix", Columns: []string{"s"}, Kind: Hash}}
		}), ErrInvalid, []string{"t2", `"9ix"`}},
		{"index kind 0", biCreate(func(d *TableDef) {
			d.Indexes = []IndexDef{{Name: "ix", Columns: []string{"s"}}}
		}), ErrInvalid, []string{"t2", `"ix"`, "kind"}},
		{"index without columns", biCreate(func(d *TableDef) {
			d.Indexes = []IndexDef{{Name: "ix", Kind: Ordered}}
		}), ErrInvalid, []string{"t2", `"ix"`, "0 key columns"}},
		{"index column twice", biCreate(func(d *TableDef) {
			d.Indexes = []IndexDef{{Name: "ix", Columns: []string{"s", "s"}, Kind: Ordered}}
		}), ErrInvalid, []string{"t2", `"ix"`, `"s"`}},
		{"too many indexes", biCreate(manyIdx), ErrLimit, []string{"t2", fmt.Sprint(MaxIndexes)}},
		{"drop unknown table", func(f *biFix) error { return errOnly(f.db.DropTable("nope")) }, ErrNoTable, []string{`"nope"`}},
		{"drop dropped table", func(f *biFix) error { return errOnly(f.db.DropTable("gone")) }, ErrNoTable, []string{`"gone"`}},
		{"drop table empty name", func(f *biFix) error { return errOnly(f.db.DropTable("")) }, ErrNoTable, []string{`""`}},
		{"CreateIndex unknown table", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "nope", IndexDef{Name: "ix", Columns: []string{"name"}, Kind: Hash}))
		}, ErrNoTable, []string{`"nope"`}},
		{"CreateIndex dropped table", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "gone", IndexDef{Name: "ix", Columns: []string{"k"}, Kind: Hash}))
		}, ErrNoTable, []string{`"gone"`}},
		{"CreateIndex unknown column", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "acct", IndexDef{Name: "ix", Columns: []string{"name", "nope"}, Kind: Ordered}))
		}, ErrNoColumn, []string{`"acct"`, `"ix"`, `"nope"`}},
		{"CreateIndex existing name", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "acct", IndexDef{Name: "by_name", Columns: []string{"region"}, Kind: Ordered}))
		}, ErrIndexExist, []string{`"acct"`, `"by_name"`}},
		{"CreateIndex named primary", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "acct", IndexDef{Name: "primary", Columns: []string{"region"}, Kind: Ordered}))
		}, ErrInvalid, []string{`"acct"`, `"primary"`}},
		{"CreateIndex kind 9", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "acct", IndexDef{Name: "ix", Columns: []string{"region"}, Kind: 9}))
		}, ErrInvalid, []string{`"acct"`, `"ix"`, "kind"}},
		{"CreateIndex unique over duplicates, ordered", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "acct", IndexDef{Name: "uq_region", Columns: []string{"region"}, Unique: true, Kind: Ordered}))
		}, ErrNotUnique, []string{`"acct"`, `"uq_region"`}},
		{"CreateIndex unique over duplicates, hash", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "acct", IndexDef{Name: "uq_ok", Columns: []string{"ok"}, Unique: true, Kind: Hash}))
		}, ErrNotUnique, []string{`"acct"`, `"uq_ok"`}},
		{"CreateIndex unique over duplicate NULLs", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "ev", IndexDef{Name: "uq_val", Columns: []string{"val"}, Unique: true, Kind: Ordered}))
		}, ErrNotUnique, []string{`"ev"`, `"uq_val"`}},
		{"DropIndex unknown table", func(f *biFix) error { return errOnly(f.db.DropIndex("nope", "by_name")) }, ErrNoTable, []string{`"nope"`}},
		{"DropIndex unknown index", func(f *biFix) error { return errOnly(f.db.DropIndex("acct", "nope")) }, ErrNoIndex, []string{`"acct"`, `"nope"`}},
		{"DropIndex primary", func(f *biFix) error { return errOnly(f.db.DropIndex("acct", "primary")) }, ErrNoIndex, []string{`"acct"`, `"primary"`}},
		{"DropIndex on dropped table", func(f *biFix) error { return errOnly(f.db.DropIndex("gone", "primary")) }, ErrNoTable, []string{`"gone"`}},
		{"Table unknown", func(f *biFix) error { _, err := f.db.Table("nope"); return err }, ErrNoTable, []string{`"nope"`}},
		{"Table dropped", func(f *biFix) error { _, err := f.db.Table("gone"); return err }, ErrNoTable, []string{`"gone"`}},
		{"Column unknown", func(f *biFix) error { _, err := f.acct.Column("nope"); return err }, ErrNoColumn, []string{`"acct"`, `"nope"`}},
		{"Index unknown", func(f *biFix) error { _, err := f.acct.Index("nope"); return err }, ErrNoIndex, []string{`"acct"`, `"nope"`}},
	}
	f := biSetup(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := biDumpDB(t, f.db, f.log)
			err := c.op(f)
			biCheckErr(t, err, c.want, c.msg)
			biUnchanged(t, before, f)
		})
	}
	// The failures consumed nothing: the next table gets the next id and
	// LSN, and the bounds just inside the limits are accepted.
	lsn := f.db.LastLSN()
	tb, err := f.db.CreateTable(biTableDef(func(d *TableDef) {
		d.Columns = append(d.Columns, ColumnDef{Name: "x", Type: TypeBytes, MaxLen: MaxRowSize - t2Fixed - 10})
		d.Indexes = []IndexDef{{Name: "Primary_", Columns: []string{"s"}, Kind: Hash}}
	}))
	if err != nil {
		t.Fatalf("a table whose largest row is exactly MaxRowSize: %v", err)
	}
	if tb.ID() != f.gone.ID()+1 || f.db.LastLSN() != lsn+1 {
		t.Errorf("new table got id %d at LSN %d, want id %d at LSN %d", tb.ID(), f.db.LastLSN(), f.gone.ID()+1, lsn+1)
	}
	// A row of exactly MaxRowSize fits a page.
	tx := f.db.Begin()
	biMust(t, tx.Insert(tb, []Value{Int64(1), String("0123456789"), Bytes(make([]byte, MaxRowSize-t2Fixed-10))}))
	_, err = tx.Commit()
	biMust(t, err)
	tx = f.db.Begin()
	r, found, err := tx.Get(tb, []Value{Int64(1)})
	tx.Rollback()
	if err != nil || !found || len(r.Encoded()) != MaxRowSize {
		t.Errorf("row of MaxRowSize: found %v, %d bytes, err %v", found, len(r.Encoded()), err)
	}
}

// TestBadDDLLogRefuses: a schema change the log refuses is not made.
func TestBadDDLLogRefuses(t *testing.T) {
	refused := errors.New("disk full")
	ops := []struct {
		name string
		op   func(f *biFix) error
	}{
		{"CreateTable", biCreate(nil)},
		{"DropTable", func(f *biFix) error { return errOnly(f.db.DropTable("acct")) }},
		{"CreateIndex", func(f *biFix) error {
			return errOnly(f.db.CreateIndex(context.Background(), "acct", IndexDef{Name: "ix", Columns: []string{"bal"}, Kind: Ordered}))
		}},
		{"DropIndex", func(f *biFix) error { return errOnly(f.db.DropIndex("acct", "by_region")) }},
	}
	for _, c := range ops {
		t.Run(c.name, func(t *testing.T) {
			f := biSetup(t)
			before := biDumpDB(t, f.db, f.log)
			f.log.setFail(refused)
			err := c.op(f)
			f.log.setFail(nil)
			if !errors.Is(err, refused) {
				t.Errorf("error %v, want the log's error", err)
			}
			biUnchanged(t, before, f)
			// And it works once the log takes records again.
			biMust(t, c.op(f))
		})
	}
}

// ---------------------------------------------------------------- DML

type biDMLCase struct {
	name     string
	prep     func(f *biFix, tx *Tx) error // valid writes before op, in the same transaction
	op       func(f *biFix, tx *Tx) error
	want     error
	msg      []string
	atCommit bool // op succeeds and Commit fails
}

func biInsert(row []Value) func(f *biFix, tx *Tx) error {
	return func(f *biFix, tx *Tx) error { return tx.Insert(f.acct, row) }
}

func biUpdate(id int64, set ...ColumnValue) func(f *biFix, tx *Tx) error {
	return func(f *biFix, tx *Tx) error { return tx.Update(f.acct, []Value{Int64(id)}, set) }
}

func biScan(tb func(f *biFix) *Table, spec ScanSpec) func(f *biFix, tx *Tx) error {
	return func(f *biFix, tx *Tx) error {
		return tx.Scan(tb(f), spec, func(Record) bool { return true })
	}
}

func biAcct(f *biFix) *Table { return f.acct }
func biEv(f *biFix) *Table   { return f.ev }

func biWith(row []Value, c int, v Value) []Value {
	row = append([]Value(nil), row...)
	row[c] = v
	return row
}

// biValueOf returns a sample non-NULL value of each type.
func biValueOf(typ Type) Value {
	switch typ {
	case TypeInt64:
		return Int64(-7)
	case TypeUint64:
		return Uint64(7)
	case TypeFloat64:
		return Float64(0.25)
	case TypeBool:
		return Bool(true)
	case TypeString:
		return String("s")
	case TypeBytes:
		return Bytes([]byte("b"))
	case TypeTimestamp:
		return TimestampNanos(77)
	}
	panic("no such type")
}

func biDMLCases() []biDMLCase {
	acct := biAcctDef()
	fresh := biAcctRow(50, "fresh")
	var cases []biDMLCase

	// Wrong type, for every column and every wrong type, through Insert,
	// Update and (primary key) Get.
	for c, col := range acct.Columns {
		for typ := TypeInt64; typ <= TypeTimestamp; typ++ {
			if typ == col.Type {
				continue
			}
			v := biValueOf(typ)
			msg := []string{`"acct"`, fmt.Sprintf("%q", col.Name), col.Type.String(), typ.String()}
			cases = append(cases, biDMLCase{name: fmt.Sprintf("insert %s into %s %s", typ, col.Type, col.Name),
				op: biInsert(biWith(fresh, c, v)), want: ErrType, msg: msg})
			if c == biID {
				cases = append(cases, biDMLCase{name: fmt.Sprintf("get by %s key", typ),
					op:   func(f *biFix, tx *Tx) error { _, _, err := tx.Get(f.acct, []Value{v}); return err },
					want: ErrType, msg: msg})
				continue
			}
			cases = append(cases, biDMLCase{name: fmt.Sprintf("update %s %s to %s", col.Type, col.Name, typ),
				op: biUpdate(1, ColumnValue{Column: c, Value: v}), want: ErrType, msg: msg})
		}
		if !col.Nullable {
			msg := []string{`"acct"`, fmt.Sprintf("%q", col.Name)}
			cases = append(cases, biDMLCase{name: "insert NULL into " + col.Name,
				op: biInsert(biWith(fresh, c, Null())), want: ErrNull, msg: msg})
			if c != biID {
				cases = append(cases, biDMLCase{name: "update NULL into " + col.Name,
					op: biUpdate(1, ColumnValue{Column: c, Value: Null()}), want: ErrNull, msg: msg})
			}
		}
	}

	cases = append(cases, []biDMLCase{
		// Row shape.
		{name: "insert too few values", op: biInsert(fresh[:3]), want: ErrInvalid, msg: []string{`"acct"`, "8 columns", "3 values"}},
		{name: "insert too many values", op: biInsert(append(append([]Value(nil), fresh...), Int64(1))), want: ErrInvalid, msg: []string{`"acct"`, "8 columns", "9 values"}},
		{name: "insert no values", op: biInsert(nil), want: ErrInvalid, msg: []string{`"acct"`, "0 values"}},
		{name: "upsert too few values", op: func(f *biFix, tx *Tx) error { return tx.Upsert(f.acct, fresh[:7]) }, want: ErrInvalid, msg: []string{`"acct"`, "7 values"}},

		// Lengths: MaxLen+1 fails (MaxLen itself is accepted in TestBadMaxLenBoundary).
		{name: "insert string MaxLen+1", op: biInsert(biWith(fresh, biName, String("123456789"))), want: ErrTooLong, msg: []string{`"acct"`, `"name"`, "9 bytes", "limit 8"}},
		{name: "insert bytes MaxLen+1", op: biInsert(biWith(fresh, biTag, Bytes([]byte("12345")))), want: ErrTooLong, msg: []string{`"acct"`, `"tag"`, "5 bytes", "limit 4"}},
		{name: "update string MaxLen+1", op: biUpdate(1, ColumnValue{Column: biName, Value: String("123456789")}), want: ErrTooLong, msg: []string{`"acct"`, `"name"`, "limit 8"}},
		{name: "update bytes MaxLen+1", op: biUpdate(1, ColumnValue{Column: biTag, Value: Bytes(make([]byte, 5))}), want: ErrTooLong, msg: []string{`"acct"`, `"tag"`, "limit 4"}},
		{name: "get key string MaxLen+1", op: func(f *biFix, tx *Tx) error {
			_, _, err := tx.Get(f.ev, []Value{String(strings.Repeat("d", 17)), Uint64(1)})
			return err
		}, want: ErrTooLong, msg: []string{`"ev"`, `"dev"`, "limit 16"}},
		{name: "scan prefix string MaxLen+1", op: biScan(biEv, ScanSpec{Prefix: []Value{String(strings.Repeat("d", 17))}}), want: ErrTooLong, msg: []string{`"ev"`, `"dev"`, "limit 16"}},
		{name: "getby key string MaxLen+1", op: func(f *biFix, tx *Tx) error {
			_, _, err := tx.GetBy(f.acct, biByName, []Value{String("123456789")})
			return err
		}, want: ErrTooLong, msg: []string{`"acct"`, `"name"`, "limit 8"}},

		// Duplicates.
		{name: "insert duplicate primary key", op: biInsert(biAcctRow(1, "other")), want: ErrDuplicate, msg: []string{`"acct"`, "primary key", "(1)"}},
		{name: "insert duplicate composite primary key", op: func(f *biFix, tx *Tx) error { return tx.Insert(f.ev, biEvRow("b", 2)) },
			want: ErrDuplicate, msg: []string{`"ev"`, `("b", 2)`}},
		{name: "insert duplicate of own insert", prep: biInsert(fresh), op: biInsert(biAcctRow(50, "fresh2")), want: ErrDuplicate, msg: []string{`"acct"`, "(50)"}},
		{name: "insert duplicate unique secondary", op: biInsert(biAcctRow(50, "n1")), atCommit: true, want: ErrDuplicate, msg: []string{`"acct"`, `"by_name"`, `"n1"`}},
		{name: "insert duplicate unique ordered secondary", op: biInsert(biWith(fresh, biTS, TimestampNanos(1_000_003))), atCommit: true,
			want: ErrDuplicate, msg: []string{`"acct"`, `"by_ts"`}},
		{name: "update into duplicate unique secondary", op: biUpdate(2, ColumnValue{Column: biName, Value: String("n4")}), atCommit: true,
			want: ErrDuplicate, msg: []string{`"acct"`, `"by_name"`, `"n4"`}},
		{name: "two inserts with one unique key", op: func(f *biFix, tx *Tx) error {
			if err := tx.Insert(f.acct, biAcctRow(50, "same")); err != nil {
				return err
			}
			return tx.Insert(f.acct, biAcctRow(51, "same"))
		}, atCommit: true, want: ErrDuplicate, msg: []string{`"acct"`, `"by_name"`, `"same"`}},
		{name: "many writes, one duplicate unique key", op: func(f *biFix, tx *Tx) error {
			for id := int64(60); id < 80; id++ {
				if err := tx.Insert(f.acct, biAcctRow(id, fmt.Sprintf("m%d", id))); err != nil {
					return err
				}
				if err := tx.Update(f.ev, []Value{String("a"), Uint64(1)}, []ColumnValue{{Column: 2, Value: Int64(id)}}); err != nil {
					return err
				}
			}
			if err := tx.Delete(f.acct, []Value{Int64(5)}); err != nil {
				return err
			}
			return tx.Update(f.acct, []Value{Int64(3)}, []ColumnValue{{Column: biName, Value: String("m70")}})
		}, atCommit: true, want: ErrDuplicate, msg: []string{`"acct"`, `"by_name"`, `"m70"`}},

		// Missing rows.
		{name: "update missing key", op: biUpdate(99, ColumnValue{Column: biBal, Value: Float64(1)}), want: ErrNotFound, msg: []string{`"acct"`, "(99)"}},
		{name: "delete missing key", op: func(f *biFix, tx *Tx) error { return tx.Delete(f.acct, []Value{Int64(99)}) }, want: ErrNotFound, msg: []string{`"acct"`, "(99)"}},
		{name: "delete missing composite key", op: func(f *biFix, tx *Tx) error { return tx.Delete(f.ev, []Value{String("zz"), Uint64(1)}) },
			want: ErrNotFound, msg: []string{`"ev"`, `("zz", 1)`}},
		{name: "update row deleted in this transaction", prep: func(f *biFix, tx *Tx) error { return tx.Delete(f.acct, []Value{Int64(3)}) },
			op: biUpdate(3, ColumnValue{Column: biBal, Value: Float64(1)}), want: ErrNotFound, msg: []string{`"acct"`, "(3)"}},
		{name: "delete row deleted in this transaction", prep: func(f *biFix, tx *Tx) error { return tx.Delete(f.acct, []Value{Int64(3)}) },
			op: func(f *biFix, tx *Tx) error { return tx.Delete(f.acct, []Value{Int64(3)}) }, want: ErrNotFound, msg: []string{`"acct"`, "(3)"}},

		// Bad updates.
		{name: "update primary key column", op: biUpdate(1, ColumnValue{Column: biID, Value: Int64(7)}), want: ErrInvalid, msg: []string{`"acct"`, `"id"`}},
		{name: "update primary key column to itself", op: biUpdate(1, ColumnValue{Column: biID, Value: Int64(1)}), want: ErrInvalid, msg: []string{`"acct"`, `"id"`}},
		{name: "update composite primary key column", op: func(f *biFix, tx *Tx) error {
			return tx.Update(f.ev, []Value{String("a"), Uint64(1)}, []ColumnValue{{Column: 1, Value: Uint64(9)}})
		}, want: ErrInvalid, msg: []string{`"ev"`, `"seq"`}},
		{name: "update column ordinal = number of columns", op: biUpdate(1, ColumnValue{Column: biNumAcctCols, Value: Int64(1)}), want: ErrNoColumn, msg: []string{`"acct"`, "column 8"}},
		{name: "update column ordinal -1", op: biUpdate(1, ColumnValue{Column: -1, Value: Int64(1)}), want: ErrNoColumn, msg: []string{`"acct"`, "column -1"}},
		{name: "update bad ordinal after a good one", op: biUpdate(1, ColumnValue{Column: biBal, Value: Float64(9)}, ColumnValue{Column: 1000, Value: Int64(1)}),
			want: ErrNoColumn, msg: []string{`"acct"`, "1000"}},

		// Key arity.
		{name: "get with two key values", op: func(f *biFix, tx *Tx) error { _, _, err := tx.Get(f.acct, []Value{Int64(1), Int64(2)}); return err },
			want: ErrInvalid, msg: []string{`"acct"`, "1 columns", "2 values"}},
		{name: "get with no key", op: func(f *biFix, tx *Tx) error { _, _, err := tx.Get(f.acct, nil); return err },
			want: ErrInvalid, msg: []string{`"acct"`, "0 values"}},
		{name: "get half a composite key", op: func(f *biFix, tx *Tx) error { _, _, err := tx.Get(f.ev, []Value{String("a")}); return err },
			want: ErrInvalid, msg: []string{`"ev"`, "2 columns", "1 values"}},
		{name: "update with two key values", op: func(f *biFix, tx *Tx) error {
			return tx.Update(f.acct, []Value{Int64(1), Int64(1)}, []ColumnValue{{Column: biBal, Value: Float64(1)}})
		}, want: ErrInvalid, msg: []string{`"acct"`, "2 values"}},
		{name: "delete half a composite key", op: func(f *biFix, tx *Tx) error { return tx.Delete(f.ev, []Value{String("a")}) },
			want: ErrInvalid, msg: []string{`"ev"`, "1 values"}},
		{name: "get NULL key", op: func(f *biFix, tx *Tx) error { _, _, err := tx.Get(f.acct, []Value{Null()}); return err },
			want: ErrNull, msg: []string{`"acct"`, `"id"`}},

		// Scans.
		{name: "scan hash primary key without a key", op: biScan(biAcct, ScanSpec{}), want: ErrInvalid, msg: []string{`"acct"`, `"primary"`}},
		{name: "scan hash index with a partial key", op: biScan(biEv, ScanSpec{Index: biEvByDevVal, Prefix: []Value{String("a")}}),
			want: ErrInvalid, msg: []string{`"ev"`, `"by_dev_val"`}},
		{name: "scan hash index with a lower bound", op: biScan(biAcct, ScanSpec{Index: biByName, Prefix: []Value{String("n1")}, Lower: []Value{}}),
			want: ErrInvalid, msg: []string{`"acct"`, `"by_name"`}},
		{name: "scan hash index with bounds, no prefix", op: biScan(biAcct, ScanSpec{Index: biByName, Lower: []Value{String("a")}, Upper: []Value{String("z")}}),
			want: ErrInvalid, msg: []string{`"acct"`, `"by_name"`}},
		{name: "scan hash index with an upper bound", op: biScan(biAcct, ScanSpec{Prefix: []Value{Int64(1)}, Upper: []Value{}}),
			want: ErrInvalid, msg: []string{`"acct"`, `"primary"`}},
		{name: "scan hash index reverse", op: biScan(biAcct, ScanSpec{Prefix: []Value{Int64(1)}, Reverse: true}),
			want: ErrInvalid, msg: []string{`"acct"`, `"primary"`}},
		{name: "scan negative limit", op: biScan(biAcct, ScanSpec{Index: biByRegion, Limit: -1}), want: ErrInvalid, msg: []string{"-1"}},
		{name: "scan index ordinal past the end", op: biScan(biAcct, ScanSpec{Index: 4}), want: ErrNoIndex, msg: []string{`"acct"`, "index 4"}},
		{name: "scan index ordinal -1", op: biScan(biAcct, ScanSpec{Index: -1}), want: ErrNoIndex, msg: []string{`"acct"`, "index -1"}},
		{name: "scan prefix longer than the key", op: biScan(biEv, ScanSpec{Prefix: []Value{String("a"), Uint64(1), Int64(1)}}),
			want: ErrInvalid, msg: []string{`"ev"`, `"primary"`, "3 values"}},
		{name: "scan prefix and lower bound longer than the key", op: biScan(biEv, ScanSpec{Prefix: []Value{String("a")}, Lower: []Value{Uint64(1), Int64(1)}}),
			want: ErrInvalid, msg: []string{`"ev"`, `"primary"`}},
		{name: "scan upper bound longer than the key", op: biScan(biEv, ScanSpec{Upper: []Value{String("a"), Uint64(1), Int64(1)}}),
			want: ErrInvalid, msg: []string{`"ev"`, `"primary"`}},
		{name: "scan upper bound of the wrong type", op: biScan(biEv, ScanSpec{Prefix: []Value{String("a")}, Upper: []Value{String("x")}}),
			want: ErrType, msg: []string{`"ev"`, `"seq"`}},
		{name: "scan lower bound NULL in NOT NULL", op: biScan(biAcct, ScanSpec{Index: biByRegion, Lower: []Value{Null()}}),
			want: ErrNull, msg: []string{`"acct"`, `"region"`}},

		// GetBy.
		{name: "getby non-unique index", op: func(f *biFix, tx *Tx) error { _, _, err := tx.GetBy(f.acct, biByRegion, []Value{Int64(0)}); return err },
			want: ErrInvalid, msg: []string{`"acct"`, `"by_region"`}},
		{name: "getby index ordinal past the end", op: func(f *biFix, tx *Tx) error { _, _, err := tx.GetBy(f.acct, 4, []Value{Int64(0)}); return err },
			want: ErrNoIndex, msg: []string{`"acct"`, "index 4"}},
		{name: "getby index ordinal -1", op: func(f *biFix, tx *Tx) error { _, _, err := tx.GetBy(f.acct, -1, []Value{Int64(0)}); return err },
			want: ErrNoIndex, msg: []string{`"acct"`, "index -1"}},
		{name: "getby hash unique with no key", op: func(f *biFix, tx *Tx) error { _, _, err := tx.GetBy(f.acct, biByName, nil); return err },
			want: ErrInvalid, msg: []string{`"acct"`, `"by_name"`}},
		{name: "getby ordered unique with no key", op: func(f *biFix, tx *Tx) error { _, _, err := tx.GetBy(f.acct, biByTS, nil); return err },
			want: ErrInvalid, msg: []string{`"acct"`, `"by_ts"`}},
		{name: "getby ordered unique with too many values", op: func(f *biFix, tx *Tx) error {
			_, _, err := tx.GetBy(f.acct, biByTS, []Value{TimestampNanos(1), TimestampNanos(2)})
			return err
		}, want: ErrInvalid, msg: []string{`"acct"`, `"by_ts"`}},
		{name: "getby wrong key type", op: func(f *biFix, tx *Tx) error { _, _, err := tx.GetBy(f.acct, biByName, []Value{Int64(1)}); return err },
			want: ErrType, msg: []string{`"acct"`, `"name"`}},
		{name: "getby primary with wrong arity", op: func(f *biFix, tx *Tx) error { _, _, err := tx.GetBy(f.ev, 0, []Value{String("a")}); return err },
			want: ErrInvalid, msg: []string{`"ev"`}},

		// Dropped table handle.
		{name: "insert into dropped table", op: func(f *biFix, tx *Tx) error { return tx.Insert(f.gone, []Value{Int64(2)}) }, want: ErrNoTable, msg: []string{`"gone"`}},
		{name: "upsert into dropped table", op: func(f *biFix, tx *Tx) error { return tx.Upsert(f.gone, []Value{Int64(1)}) }, want: ErrNoTable, msg: []string{`"gone"`}},
		{name: "get from dropped table", op: func(f *biFix, tx *Tx) error { _, _, err := tx.Get(f.gone, []Value{Int64(1)}); return err }, want: ErrNoTable, msg: []string{`"gone"`}},
		{name: "update dropped table", op: func(f *biFix, tx *Tx) error {
			return tx.Update(f.gone, []Value{Int64(1)}, []ColumnValue{{Column: 0, Value: Int64(1)}})
		}, want: ErrNoTable, msg: []string{`"gone"`}},
		{name: "delete from dropped table", op: func(f *biFix, tx *Tx) error { return tx.Delete(f.gone, []Value{Int64(1)}) }, want: ErrNoTable, msg: []string{`"gone"`}},
		{name: "scan dropped table", op: biScan(func(f *biFix) *Table { return f.gone }, ScanSpec{Prefix: []Value{Int64(1)}}), want: ErrNoTable, msg: []string{`"gone"`}},
		{name: "getby dropped table", op: func(f *biFix, tx *Tx) error { _, _, err := tx.GetBy(f.gone, 0, []Value{Int64(1)}); return err }, want: ErrNoTable, msg: []string{`"gone"`}},

		// Handles that are not this database's.
		{name: "nil table", op: func(f *biFix, tx *Tx) error { return tx.Insert(nil, fresh) }, want: ErrInvalid},
		{name: "table of another database", op: func(f *biFix, tx *Tx) error {
			other := biSetup(nopTB{})
			return tx.Insert(other.acct, fresh)
		}, want: ErrInvalid},
	}...)
	return cases
}

// nopTB lets biSetup run where a failure cannot be reported to a test.
type nopTB struct{ testing.TB }

func (nopTB) Helper()                           {}
func (nopTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (nopTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// TestBadDML runs every case three ways: the failing operation alone, then
// Rollback; alone, then Commit; and after a valid write in the same
// transaction, then Commit. The first two must leave the database as it
// was. The third must give the same database as the valid write alone
// (or, for a failure at Commit, the database as it was).
func TestBadDML(t *testing.T) {
	good := biAcctRow(100, "good")
	for _, c := range biDMLCases() {
		t.Run(c.name, func(t *testing.T) {
			run := func(f *biFix, tx *Tx) {
				t.Helper()
				if c.prep != nil {
					biMust(t, c.prep(f, tx))
				}
				err := c.op(f, tx)
				if c.atCommit {
					if err != nil {
						t.Fatalf("op: %v (want it to succeed and Commit to fail)", err)
					}
					_, err = tx.Commit()
				}
				biCheckErr(t, err, c.want, c.msg)
			}
			t.Run("rollback", func(t *testing.T) {
				f := biSetup(t)
				before := biDumpDB(t, f.db, f.log)
				tx := f.db.Begin()
				run(f, tx)
				tx.Rollback()
				biUnchanged(t, before, f)
			})
			t.Run("commit", func(t *testing.T) {
				f := biSetup(t)
				before := biDumpDB(t, f.db, f.log)
				tx := f.db.Begin()
				run(f, tx)
				if !c.atCommit {
					if c.prep != nil {
						tx.Rollback()
					} else if lsn, err := tx.Commit(); err != nil || lsn != 0 {
						t.Errorf("Commit after a failed operation and no writes: LSN %d, %v", lsn, err)
					}
				}
				biUnchanged(t, before, f)
			})
			t.Run("with a good write", func(t *testing.T) {
				f := biSetup(t)
				before := biDumpDB(t, f.db, f.log)
				tx := f.db.Begin()
				biMust(t, tx.Insert(f.acct, good))
				run(f, tx)
				if c.atCommit {
					biUnchanged(t, before, f) // nothing of the transaction applied
					return
				}
				if _, err := tx.Commit(); err != nil {
					t.Fatalf("Commit of the other writes: %v", err)
				}
				// The reference: the same transaction without the failing op.
				ref := biSetup(t)
				rtx := ref.db.Begin()
				biMust(t, rtx.Insert(ref.acct, good))
				if c.prep != nil {
					biMust(t, c.prep(ref, rtx))
				}
				_, err := rtx.Commit()
				biMust(t, err)
				if d := biDiff(biDumpDB(t, ref.db, ref.log), biDumpDB(t, f.db, f.log)); d != "" {
					t.Errorf("the failed operation changed what the transaction committed:\n%s", d)
				}
			})
		})
	}
}

// TestBadMaxLenBoundary: values of exactly MaxLen are accepted everywhere.
func TestBadMaxLenBoundary(t *testing.T) {
	f := biSetup(t)
	tx := f.db.Begin()
	row := biWith(biWith(biAcctRow(50, ""), biName, String("12345678")), biTag, Bytes([]byte{0, 1, 2, 3}))
	biMust(t, tx.Insert(f.acct, row))
	biMust(t, tx.Insert(f.ev, biEvRow(strings.Repeat("d", 16), 1)))
	biMust(t, tx.Update(f.acct, []Value{Int64(1)}, []ColumnValue{{Column: biName, Value: String("abcdefgh")}, {Column: biTag, Value: Bytes([]byte("wxyz"))}}))
	_, err := tx.Commit()
	biMust(t, err)
	tx = f.db.Begin()
	defer tx.Rollback()
	r, found, err := tx.GetBy(f.acct, biByName, []Value{String("12345678")})
	if err != nil || !found || !reflect.DeepEqual(r.Values(nil), row) {
		t.Errorf("GetBy name of MaxLen: found %v, %v, err %v", found, r.Values(nil), err)
	}
	r, found, err = tx.Get(f.ev, []Value{String(strings.Repeat("d", 16)), Uint64(1)})
	if err != nil || !found {
		t.Errorf("Get dev of MaxLen: found %v, err %v", found, err)
	}
	r, found, err = tx.Get(f.acct, []Value{Int64(1)})
	if err != nil || !found || r.Str(biName) != "abcdefgh" || r.Str(biTag) != "wxyz" {
		t.Errorf("updated to MaxLen: found %v, %v, err %v", found, r.Values(nil), err)
	}
}

// TestBadTxDone: a finished transaction refuses everything.
func TestBadTxDone(t *testing.T) {
	for _, end := range []string{"commit", "rollback", "failed commit"} {
		t.Run(end, func(t *testing.T) {
			f := biSetup(t)
			tx := f.db.Begin()
			switch end {
			case "commit":
				biMust(t, tx.Insert(f.acct, biAcctRow(50, "x")))
				_, err := tx.Commit()
				biMust(t, err)
			case "rollback":
				biMust(t, tx.Insert(f.acct, biAcctRow(50, "x")))
				tx.Rollback()
			case "failed commit":
				biMust(t, tx.Insert(f.acct, biAcctRow(50, "n1")))
				if _, err := tx.Commit(); !errors.Is(err, ErrDuplicate) {
					t.Fatalf("commit: %v", err)
				}
			}
			before := biDumpDB(t, f.db, f.log)
			biTxDoneOps(t, f, tx)
			biUnchanged(t, before, f)
		})
	}
}

func biTxDoneOps(t *testing.T, f *biFix, tx *Tx) {
	t.Helper()
	key := []Value{Int64(1)}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrTxDone) {
			t.Errorf("%s on a finished transaction: %v, want ErrTxDone", what, err)
		}
	}
	_, _, err := tx.Get(f.acct, key)
	check("Get", err)
	_, _, err = tx.GetBy(f.acct, biByName, []Value{String("n1")})
	check("GetBy", err)
	check("Insert", tx.Insert(f.acct, biAcctRow(51, "y")))
	check("Upsert", tx.Upsert(f.acct, biAcctRow(1, "y")))
	check("Update", tx.Update(f.acct, key, []ColumnValue{{Column: biBal, Value: Float64(3)}}))
	check("Delete", tx.Delete(f.acct, key))
	check("Scan", tx.Scan(f.acct, ScanSpec{Index: biByRegion}, func(Record) bool { return true }))
	_, err = tx.Commit()
	check("Commit", err)
	tx.Rollback() // a no-op
}

// TestBadTxDoneAfterReuse: a finished transaction must stay finished even
// after the engine starts new transactions. Tx values are pooled; a stale
// handle must not reach the transaction that now uses its memory (an
// interactive session timed out by the server and then used late by its
// client would write into another client's transaction).
func TestBadTxDoneAfterReuse(t *testing.T) {
	for _, end := range []string{"commit", "rollback"} {
		t.Run(end, func(t *testing.T) {
			f := biSetup(t)
			for i := 0; i < 20 && !t.Failed(); i++ {
				before := biDumpDB(t, f.db, f.log)
				stale := f.db.Begin()
				if end == "commit" {
					_, err := stale.Commit()
					biMust(t, err)
				} else {
					stale.Rollback()
				}
				fresh := f.db.Begin()
				err := stale.Insert(f.acct, biAcctRow(int64(200+i), fmt.Sprintf("s%d", i)))
				if !errors.Is(err, ErrTxDone) {
					t.Errorf("attempt %d: Insert on a finished transaction (same Tx as the new one: %v): %v, want ErrTxDone", i, stale == fresh, err)
				}
				if _, err := fresh.Commit(); err != nil {
					t.Fatalf("commit of the new transaction: %v", err)
				}
				biUnchanged(t, before, f)
			}
		})
	}
}

// TestBadCommitDroppedTable: a transaction whose table is dropped before it
// commits fails with ErrNoTable and writes nothing, not even its writes to
// other tables.
func TestBadCommitDroppedTable(t *testing.T) {
	f := biSetup(t)
	tb, err := f.db.CreateTable(biTableDef(nil))
	biMust(t, err)
	tx := f.db.Begin()
	biMust(t, tx.Insert(f.acct, biAcctRow(50, "x")))
	biMust(t, tx.Insert(tb, []Value{Int64(1), String("x")}))
	biMust(t, errOnly(f.db.DropTable("t2")))
	before := biDumpDB(t, f.db, f.log)
	_, err = tx.Commit()
	biCheckErr(t, err, ErrNoTable, []string{`"t2"`})
	biUnchanged(t, before, f)
}

// TestBadCommitLogRefuses: a commit the log refuses leaves no trace and
// releases its locks: the same rows can be written afterwards.
func TestBadCommitLogRefuses(t *testing.T) {
	refused := errors.New("disk full")
	f := biSetup(t)
	before := biDumpDB(t, f.db, f.log)
	write := func(tx *Tx) {
		biMust(t, tx.Insert(f.acct, biAcctRow(50, "x")))
		biMust(t, tx.Update(f.acct, []Value{Int64(1)}, []ColumnValue{{Column: biName, Value: String("renamed")}}))
		biMust(t, tx.Delete(f.acct, []Value{Int64(2)}))
		biMust(t, tx.Upsert(f.ev, biEvRow("a", 9)))
	}
	tx := f.db.Begin()
	write(tx)
	f.log.setFail(refused)
	_, err := tx.Commit()
	f.log.setFail(nil)
	if !errors.Is(err, refused) {
		t.Errorf("Commit: %v, want the log's error", err)
	}
	biUnchanged(t, before, f)
	done := make(chan error, 1)
	go func() {
		tx := f.db.Begin()
		write(tx)
		_, err := tx.Commit()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the same writes after the refusal: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the same writes after the refusal hang: the failed commit kept its locks")
	}
	biConsistent(t, biDumpDB(t, f.db, f.log))
}

// TestBadCommitLogLSN: an LSN from the log that a TID word cannot hold
// (0, or past 2^62-1) or that is not above the last one installed fails
// the commit or the schema change as the log's own error does: nothing of
// it becomes visible and its locks go, so the same writes commit once the
// log assigns a good LSN. The top of the range is taken.
func TestBadCommitLogLSN(t *testing.T) {
	f := biSetup(t)
	setNext := func(lsn uint64) {
		f.log.mu.Lock()
		f.log.last = lsn - 1
		f.log.mu.Unlock()
	}
	write := func(tx *Tx) {
		biMust(t, tx.Insert(f.acct, biAcctRow(50, "x")))
		biMust(t, tx.Update(f.acct, []Value{Int64(1)}, []ColumnValue{{Column: biName, Value: String("renamed")}}))
		biMust(t, tx.Delete(f.acct, []Value{Int64(2)}))
	}
	last := f.db.LastLSN()
	for _, lsn := range []uint64{0, tidLSN + 1, math.MaxUint64, last, last - 1} {
		before := biDumpDB(t, f.db, nil) // the log holds what it was given
		setNext(lsn)
		tx := f.db.Begin()
		write(tx)
		if _, err := tx.Commit(); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("LSN %d,", lsn)) {
			t.Errorf("a commit the log gave LSN %d: %v, want an error naming it", lsn, err)
		}
		setNext(lsn)
		if _, err := f.db.CreateTable(biTableDef(nil)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("LSN %d,", lsn)) {
			t.Errorf("a table the log gave LSN %d: %v, want an error naming it", lsn, err)
		}
		if d := biDiff(before, biDumpDB(t, f.db, nil)); d != "" {
			t.Errorf("LSN %d: the database changed:\n%s", lsn, d)
		}
	}
	setNext(tidLSN)
	tx := f.db.Begin()
	write(tx)
	if lsn, err := tx.Commit(); err != nil || lsn != tidLSN || f.db.LastLSN() != tidLSN {
		t.Fatalf("the same writes at LSN %d, the last a TID holds: LSN %d, %v; LastLSN %d", uint64(tidLSN), lsn, err, f.db.LastLSN())
	}
	biConsistent(t, biDumpDB(t, f.db, nil))
}

// ---------------------------------------------------------------- Apply

type biApplyCase struct {
	name string
	rec  func(f *biFix) (lsn uint64, r *Redo)
	want error
	msg  []string
}

func biSchema(tb *Table) *schema { return tb.state.Load().s }

func biRowBytes(t testing.TB, tb *Table, vals []Value) []byte {
	t.Helper()
	b, err := biSchema(tb).encodeRow(nil, vals)
	biMust(t, err)
	return b
}

func biKeyBytes(t testing.TB, tb *Table, vals ...Value) []byte {
	t.Helper()
	b, err := biSchema(tb).appendKey(nil, 0, 0, vals)
	biMust(t, err)
	return b
}

func TestBadApply(t *testing.T) {
	next := func(f *biFix) uint64 { return f.db.LastLSN() + 1 }
	put := func(f *biFix, id int64, name string) Op {
		return Op{Kind: OpPut, Table: f.acct.ID(), Data: biRowBytes(nopTB{}, f.acct, biAcctRow(id, name))}
	}
	del := func(f *biFix, id int64) Op {
		return Op{Kind: OpDelete, Table: f.acct.ID(), Data: biKeyBytes(nopTB{}, f.acct, Int64(id))}
	}
	recOf := func(lsn func(f *biFix) uint64, ops func(f *biFix) []Op) func(f *biFix) (uint64, *Redo) {
		return func(f *biFix) (uint64, *Redo) { return lsn(f), &Redo{Ops: ops(f)} }
	}
	rowOp := func(mut func(b []byte) []byte) func(f *biFix) []Op {
		return func(f *biFix) []Op {
			op := put(f, 60, "ap")
			op.Data = mut(append([]byte(nil), op.Data...))
			return []Op{put(f, 61, "ok"), op}
		}
	}
	keyOp := func(tb func(f *biFix) *Table, key func(f *biFix) []byte) func(f *biFix) []Op {
		return func(f *biFix) []Op {
			return []Op{put(f, 61, "ok"), {Kind: OpDelete, Table: tb(f).ID(), Data: key(f)}}
		}
	}
	tdef := func(id uint32, name string) []byte {
		d := biTableDef(func(d *TableDef) { d.Name = name })
		d.ID = id
		return encodeTableDef(nil, d)
	}
	acctS := biSchema(biSetup(t).acct)
	varEnd := acctS.fixedEnd // the end of name, the first variable column
	cases := []biApplyCase{
		{"LSN 0", recOf(func(*biFix) uint64 { return 0 }, func(f *biFix) []Op { return []Op{put(f, 60, "ap")} }), ErrInvalid, []string{"LSN 0"}},
		{"LSN 0, empty record", recOf(func(*biFix) uint64 { return 0 }, func(f *biFix) []Op { return nil }), ErrInvalid, []string{"LSN 0"}},
		{"LSN past the TID range", recOf(func(*biFix) uint64 { return tidLSN + 1 }, func(f *biFix) []Op { return []Op{put(f, 60, "ap")} }),
			ErrInvalid, []string{fmt.Sprint(tidLSN + 1)}},
		{"LSN max", recOf(func(*biFix) uint64 { return math.MaxUint64 }, func(f *biFix) []Op { return nil }), ErrInvalid, []string{fmt.Sprint(uint64(math.MaxUint64))}},
		{"unknown table id", recOf(next, func(f *biFix) []Op {
			return []Op{put(f, 61, "ok"), {Kind: OpPut, Table: 999, Data: biRowBytes(nopTB{}, f.acct, biAcctRow(60, "ap"))}}
		}), ErrNoTable, []string{"id 999"}},
		{"dropped table id", recOf(next, func(f *biFix) []Op {
			return []Op{put(f, 61, "ok"), {Kind: OpDelete, Table: f.gone.ID(), Data: biKeyBytes(nopTB{}, f.acct, Int64(1))}}
		}), ErrNoTable, []string{fmt.Sprintf("id %d", f3ID)}},
		{"row truncated", recOf(next, rowOp(func(b []byte) []byte { return b[:len(b)-1] })), ErrCorrupt, []string{`"acct"`}},
		{"row empty", recOf(next, rowOp(func(b []byte) []byte { return nil })), ErrCorrupt, []string{`"acct"`}},
		{"row with a trailing byte", recOf(next, rowOp(func(b []byte) []byte { return append(b, 'x') })), ErrCorrupt, []string{`"acct"`, "trailing"}},
		{"row with NULL in NOT NULL", recOf(next, rowOp(func(b []byte) []byte { b[0] |= 1 << biBal; return b })), ErrCorrupt, []string{`"acct"`, `"bal"`}},
		{"row with NULL bit past the columns", recOf(next, func(f *biFix) []Op {
			b := biRowBytes(nopTB{}, f.ev, biEvRow("a", 9))
			b[0] |= 0x80 // ev has 3 columns: bits 3-7 of the bitmap are padding
			return []Op{put(f, 61, "ok"), {Kind: OpPut, Table: f.ev.ID(), Data: b}}
		}), ErrCorrupt, []string{`"ev"`, "NULL bit"}},
		{"row with bool 2", recOf(next, rowOp(func(b []byte) []byte { b[acctS.cols[biOK].off] = 2; return b })), ErrCorrupt, []string{`"acct"`, `"ok"`}},
		{"row with NULL cnt holding a value", recOf(next, rowOp(func(b []byte) []byte {
			b[0] |= 1 << biCnt
			b[acctS.cols[biCnt].off] = 1
			return b
		})), ErrCorrupt, []string{`"acct"`, `"cnt"`}},
		{"row with a string past MaxLen", recOf(next, func(f *biFix) []Op {
			// name takes 9 bytes, tag none: lengths are consistent, name too long.
			b := biRowBytes(nopTB{}, f.acct, biWith(biAcctRow(61, "12345678"), biTag, Null()))
			b = append(b[:acctS.varStart], "123456789"...)
			b[varEnd], b[varEnd+1], b[varEnd+2], b[varEnd+3] = 9, 0, 9, 0
			return []Op{put(f, 62, "ok"), {Kind: OpPut, Table: f.acct.ID(), Data: b}}
		}), ErrCorrupt, []string{`"acct"`, `"name"`}},
		{"row with variable ends going back", recOf(next, rowOp(func(b []byte) []byte { b[varEnd+2] = 0; b[varEnd+3] = 0; return b })), ErrCorrupt, []string{`"acct"`}},
		{"row of another table", recOf(next, func(f *biFix) []Op {
			return []Op{put(f, 61, "ok"), {Kind: OpPut, Table: f.acct.ID(), Data: biRowBytes(nopTB{}, f.ev, biEvRow("a", 9))}}
		}), ErrCorrupt, []string{`"acct"`}},
		{"delete key empty", recOf(next, keyOp(biAcct, func(*biFix) []byte { return nil })), ErrCorrupt, []string{`"acct"`, `"primary"`}},
		{"delete key short", recOf(next, keyOp(biAcct, func(f *biFix) []byte { return biKeyBytes(nopTB{}, f.acct, Int64(1))[:7] })), ErrCorrupt, []string{`"acct"`, `"primary"`}},
		{"delete key with a trailing byte", recOf(next, keyOp(biAcct, func(f *biFix) []byte { return append(biKeyBytes(nopTB{}, f.acct, Int64(1)), 0) })),
			ErrCorrupt, []string{`"acct"`, `"primary"`, "trailing"}},
		{"delete key unterminated string", recOf(next, keyOp(biEv, func(*biFix) []byte { return []byte("abc") })), ErrCorrupt, []string{`"ev"`, `"primary"`}},
		{"delete key bad escape", recOf(next, keyOp(biEv, func(*biFix) []byte { return []byte("a\x00\x07") })), ErrCorrupt, []string{`"ev"`, `"primary"`}},
		{"delete key string past MaxLen", recOf(next, keyOp(biEv, func(*biFix) []byte {
			return append(append([]byte(strings.Repeat("d", 17)), 0, 1), 0x80, 0, 0, 0, 0, 0, 0, 1)
		})), ErrCorrupt, []string{`"ev"`, `"dev"`}},
		{"delete key of a row (not a key)", recOf(next, func(f *biFix) []Op {
			return []Op{put(f, 61, "ok"), {Kind: OpDelete, Table: f.acct.ID(), Data: biRowBytes(nopTB{}, f.acct, biAcctRow(1, "n1"))}}
		}), ErrCorrupt, []string{`"acct"`}},
		{"two puts of one row", recOf(next, func(f *biFix) []Op {
			return []Op{put(f, 60, "a"), put(f, 61, "ok"), put(f, 60, "b")}
		}),
			ErrCorrupt, []string{`"acct"`, "op 2"}},
		{"put and delete of one row", recOf(next, func(f *biFix) []Op { return []Op{put(f, 1, "a"), del(f, 1)} }), ErrCorrupt, []string{`"acct"`, "op 1"}},
		{"two deletes of one row", recOf(next, func(f *biFix) []Op { return []Op{del(f, 2), del(f, 2)} }), ErrCorrupt, []string{`"acct"`, "op 1"}},
		{"schema change first, then data", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateTable, Table: 9, Data: tdef(9, "t9")}, put(f, 60, "ap")}
		}), ErrCorrupt, []string{"schema change"}},
		{"data, then a schema change", recOf(next, func(f *biFix) []Op {
			return []Op{put(f, 60, "ap"), {Kind: OpCreateTable, Table: 9, Data: tdef(9, "t9")}}
		}), ErrCorrupt, []string{"create-table"}},
		{"data, then drop table", recOf(next, func(f *biFix) []Op {
			return []Op{put(f, 60, "ap"), {Kind: OpDropTable, Table: f.ev.ID()}}
		}), ErrCorrupt, []string{"drop-table"}},
		{"drop index, then data", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpDropIndex, Table: f.acct.ID(), Data: []byte("by_name")}, del(f, 1)}
		}), ErrCorrupt, []string{"schema change"}},
		{"op kind 0 in data", recOf(next, func(f *biFix) []Op { return []Op{put(f, 60, "ap"), {Kind: 0, Table: f.acct.ID()}} }), ErrCorrupt, []string{"op(0)"}},
		{"op kind 0 alone", recOf(next, func(f *biFix) []Op { return []Op{{Kind: 0, Table: f.acct.ID()}} }), ErrCorrupt, []string{"op(0)"}},
		{"op kind 7 alone", recOf(next, func(f *biFix) []Op { return []Op{{Kind: 7, Table: f.acct.ID()}} }), ErrCorrupt, []string{"op(7)"}},
		{"create table, corrupt definition", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateTable, Table: 9, Data: tdef(9, "t9")[:5]}}
		}), ErrCorrupt, []string{"table definition"}},
		{"create table, id differs from the op's", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateTable, Table: 9, Data: tdef(10, "t9")}}
		}), ErrCorrupt, []string{"10", "9"}},
		{"create table, id 0", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateTable, Table: 0, Data: tdef(0, "t9")}}
		}), ErrCorrupt, []string{"id 0"}},
		{"create table, name taken", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateTable, Table: 9, Data: tdef(9, "acct")}}
		}), ErrTableExist, []string{`"acct"`}},
		{"create table, id taken", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateTable, Table: f.ev.ID(), Data: tdef(f.ev.ID(), "t9")}}
		}), ErrTableExist, []string{fmt.Sprintf("id %d", f2ID)}},
		{"create table, invalid definition", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateTable, Table: 9, Data: tdef(9, "9t")}}
		}), ErrInvalid, []string{`"9t"`}},
		{"drop table, unknown id", recOf(next, func(f *biFix) []Op { return []Op{{Kind: OpDropTable, Table: 77}} }), ErrNoTable, []string{"id 77"}},
		{"create index, unknown table", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateIndex, Table: 77, Data: encodeIndexDef(nil, IndexDef{Name: "ix", Columns: []string{"name"}, Kind: Hash})}}
		}), ErrNoTable, []string{"id 77"}},
		{"create index, corrupt definition", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateIndex, Table: f.acct.ID(), Data: []byte{2, 'i'}}}
		}), ErrCorrupt, []string{"index definition"}},
		{"create index, unknown column", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateIndex, Table: f.acct.ID(), Data: encodeIndexDef(nil, IndexDef{Name: "ix", Columns: []string{"nope"}, Kind: Hash})}}
		}), ErrNoColumn, []string{`"acct"`, `"nope"`}},
		{"create index, existing name", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpCreateIndex, Table: f.acct.ID(), Data: encodeIndexDef(nil, IndexDef{Name: "by_ts", Columns: []string{"bal"}, Kind: Hash})}}
		}), ErrIndexExist, []string{`"acct"`, `"by_ts"`}},
		{"drop index, primary", recOf(next, func(f *biFix) []Op {
			return []Op{{Kind: OpDropIndex, Table: f.acct.ID(), Data: []byte("primary")}}
		}), ErrNoIndex, []string{`"acct"`, `"primary"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := biSetup(t)
			before := biDumpDB(t, f.db, f.log)
			lsn, r := c.rec(f)
			err := f.db.Apply(lsn, r)
			biCheckErr(t, err, c.want, c.msg)
			biUnchanged(t, before, f)
			// The record survives the wire: decoding its encoding gives the
			// same verdict.
			if dr, derr := DecodeRedo(r.AppendBinary(nil)); derr != nil {
				// Only records with an unknown op kind may be refused earlier.
				if !errors.Is(derr, ErrCorrupt) || !errors.Is(c.want, ErrCorrupt) {
					t.Errorf("the record does not decode: %v", derr)
				}
			} else {
				err := f.db.Apply(lsn, dr)
				biCheckErr(t, err, c.want, c.msg)
				biUnchanged(t, before, f)
			}
		})
	}
	// The control: the valid parts of the records above apply.
	f := biSetup(t)
	ops := []Op{put(f, 61, "ok"), put(f, 60, "ap"), del(f, 2)}
	biMust(t, f.db.Apply(f.db.LastLSN()+1, &Redo{Ops: ops}))
	tx := f.db.Begin()
	defer tx.Rollback()
	for _, id := range []int64{60, 61} {
		if _, found, err := tx.Get(f.acct, []Value{Int64(id)}); !found || err != nil {
			t.Errorf("row %d after a valid apply: found %v, %v", id, found, err)
		}
	}
	biConsistent(t, biDumpDB(t, f.db, f.log))
}

// Table ids of the fixture.
const (
	f2ID = 2 // ev
	f3ID = 3 // gone
)

// TestBadApplyMaxTableID: a table created by Apply with the largest id must
// not make the next CreateTable hand out id 0, which Apply rejects: the
// record logged for it could never be replayed.
func TestBadApplyMaxTableID(t *testing.T) {
	f := biSetup(t)
	d := biTableDef(func(d *TableDef) { d.Name = "last" })
	d.ID = math.MaxUint32
	create := &Redo{Ops: []Op{{Kind: OpCreateTable, Table: d.ID, Data: encodeTableDef(nil, d)}}}
	applied := f.db.LastLSN() + 1
	biMust(t, f.db.Apply(applied, create))
	f.log.mu.Lock()
	f.log.last = f.db.LastLSN() // the log follows the applied record
	f.log.mu.Unlock()
	nlog := len(f.log.records())
	tb, err := f.db.CreateTable(biTableDef(nil))
	if err != nil {
		biCheckErr(t, err, ErrLimit, []string{"t2"})
		return
	}
	if tb.ID() == 0 {
		t.Errorf("CreateTable after a table with id %d got id 0", uint32(math.MaxUint32))
	}
	// Whatever it logged must replay on a replica that saw the same history.
	recs := f.log.records()[nlog:]
	replica := biSetup(t)
	biMust(t, replica.db.Apply(applied, create))
	for _, rec := range recs {
		r, err := DecodeRedo([]byte(rec.Rec))
		biMust(t, err)
		if err := replica.db.Apply(rec.LSN, r); err != nil {
			t.Errorf("replaying the CreateTable record (LSN %d): %v", rec.LSN, err)
		}
	}
}

// TestBadApplyEmptyRecord: an empty record only advances the LSN.
func TestBadApplyEmptyRecord(t *testing.T) {
	f := biSetup(t)
	before := biDumpDB(t, f.db, f.log)
	lsn := f.db.LastLSN() + 5
	biMust(t, f.db.Apply(lsn, &Redo{}))
	before.LastLSN = lsn
	biUnchanged(t, before, f)
}

// TestBadCommitEmptyTable: a commit that fails on an empty table leaves it
// as it was, page count included (SPEC section 2: aborts leave no trace,
// not in memory either).
func TestBadCommitEmptyTable(t *testing.T) {
	f := biSetup(t)
	_, err := f.db.CreateTable(biTableDef(func(d *TableDef) {
		d.Indexes = []IndexDef{{Name: "uq_s", Columns: []string{"s"}, Unique: true, Kind: Ordered}}
	}))
	biMust(t, err)
	tb, err := f.db.Table("t2")
	biMust(t, err)
	before := biDumpDB(t, f.db, f.log)
	tx := f.db.Begin()
	biMust(t, tx.Insert(tb, []Value{Int64(1), String("same")}))
	biMust(t, tx.Insert(tb, []Value{Int64(2), String("same")}))
	_, err = tx.Commit()
	biCheckErr(t, err, ErrDuplicate, []string{`"t2"`, `"uq_s"`, `"same"`})
	// The failed commit leaves no row, entry, LSN or log record. It may
	// leave capacity: the page its placeholders took and the ordered
	// index's key slab stay allocated for the next insert, as freed memory
	// stays with an allocator. So capacity is left out of the comparison,
	// and the next insert must reuse it rather than grow again.
	after := biDumpDB(t, f.db, f.log)
	if d := biDiff(biWithoutCapacity(before), biWithoutCapacity(after)); d != "" {
		t.Errorf("the database changed:\n%s", d)
	}
	tx = f.db.Begin()
	biMust(t, tx.Insert(tb, []Value{Int64(1), String("same")}))
	_, err = tx.Commit()
	biMust(t, err)
	if grown := biDumpDB(t, f.db, f.log); !reflect.DeepEqual(biCapacity(grown), biCapacity(after)) {
		t.Errorf("the insert after the failed commit grew capacity again: %v -> %v", biCapacity(after), biCapacity(grown))
	}
}

// biCapacity returns the heap pages of each table (index bytes grow with
// every entry, so they say nothing about reuse).
func biCapacity(d biDump) []int64 {
	var out []int64
	for _, s := range d.Stats {
		out = append(out, s.Pages, s.HeapBytes)
	}
	return out
}

// biWithoutCapacity zeroes the capacity figures of a dump's stats.
func biWithoutCapacity(d biDump) biDump {
	d.Stats = append([]TableStats(nil), d.Stats...)
	for i := range d.Stats {
		s := &d.Stats[i]
		s.Pages, s.HeapBytes, s.IndexBytes = 0, 0, 0
		s.Indexes = append([]IndexStats(nil), s.Indexes...)
		for j := range s.Indexes {
			s.Indexes[j].Bytes = 0
		}
	}
	return d
}

// errOnly drops the LSN a schema change returns, for tests that check only
// its error.
func errOnly(_ uint64, err error) error { return err }
