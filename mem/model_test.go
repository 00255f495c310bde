package mem

// Model-based randomized tests: random transactions run against the engine
// and against a plain map-based model of one table; every result, every
// expected error, every redo record, every snapshot and every replay of the
// log is checked against the model (in the style of bbolt's
// simulation_test.go and go-memdb's index tests).
//
// The table has a composite primary key (a int64, b string), a unique hash
// index on u, a non-unique ordered index on (g, n) where n is nullable, and
// a nullable string column v of up to 8000 bytes that sometimes grows to
// thousands of bytes, so that updates move rows between pages. Secondary
// indexes are created and dropped at random along the way (DDL is logged and
// replayed like data). Each seed runs once with a hash and once with an
// ordered primary key.
//
// Reproduce a failure with the seed it prints:
//
//	go test ./mem -run 'TestModel/ordered/seed=17$' -model.seed=17
//
// or MMDBTEST_MODEL_SEED=17. -model.seeds and -model.txs change how many seeds
// and how many transactions per seed run (the defaults are smaller with
// -short and under the race detector).

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	modelSeedFlag  = flag.Int64("model.seed", 0, "TestModel: run only this seed (0: the default set; env MMDBTEST_MODEL_SEED also works)")
	modelSeedsFlag = flag.Int("model.seeds", 0, "TestModel: number of seeds (0: 40; 12 under -race, 8 with -short)")
	modelTxsFlag   = flag.Int("model.txs", 0, "TestModel: transactions per seed (0: 300, or 120 with -short)")
)

// Columns of the model table.
const (
	mcA = iota // int64, primary key part 1
	mcB        // string(8), primary key part 2
	mcU        // uint64, unique hash index by_u
	mcG        // int64, first column of the ordered index by_gn
	mcN        // int64 NULL, second column of by_gn
	mcV        // string(8000) NULL, the payload that grows and shrinks
	mcF        // float64, not indexed
	mcCols
)

var modelColNames = []string{"a", "b", "u", "g", "n", "v", "f"}

// mIndex is the model's view of one index; the position in the model's
// index list is the engine's ordinal (0: primary key).
type mIndex struct {
	name   string
	cols   []int
	unique bool
	kind   IndexKind
}

func (ix mIndex) def() IndexDef {
	d := IndexDef{Name: ix.name, Unique: ix.unique, Kind: ix.kind}
	for _, c := range ix.cols {
		d.Columns = append(d.Columns, modelColNames[c])
	}
	return d
}

// The secondary indexes the table starts with.
var modelInitial = []mIndex{
	{name: "by_u", cols: []int{mcU}, unique: true, kind: Hash},
	{name: "by_gn", cols: []int{mcG, mcN}, kind: Ordered},
}

// Secondary indexes created and dropped at random.
var modelOptional = []mIndex{
	{name: "by_n", cols: []int{mcN, mcA}, kind: Ordered},
	{name: "by_v", cols: []int{mcV}, kind: Ordered},
	{name: "by_gb", cols: []int{mcG, mcB}, unique: true, kind: Hash},
	{name: "by_ug", cols: []int{mcU, mcG}, unique: true, kind: Ordered},
	{name: "by_gh", cols: []int{mcG}, kind: Hash},
}

type pkey struct {
	a int64
	b string
}

func pkOf(row []Value) pkey   { return pkey{row[mcA].AsInt64(), row[mcB].AsString()} }
func (k pkey) vals() []Value  { return []Value{Int64(k.a), String(k.b)} }
func (k pkey) String() string { return fmt.Sprintf("(%d, %q)", k.a, k.b) }

// tkey is an index key as a comparable value (indexes have at most two
// columns; the unused slot stays NULL for every row of a one-column index).
type tkey [2]Value

func keyOf(ix mIndex, row []Value) tkey {
	var k tkey
	for i, c := range ix.cols {
		k[i] = row[c]
	}
	return k
}

// key2row spreads an index key over an otherwise empty row.
func key2row(ix mIndex, key []Value) []Value {
	row := make([]Value, mcCols)
	for i, c := range ix.cols {
		row[c] = key[i]
	}
	return row
}

func keyVals(ix mIndex, row []Value) []Value {
	k := make([]Value, len(ix.cols))
	for i, c := range ix.cols {
		k[i] = row[c]
	}
	return k
}

// cmpValue orders values as the engine's key encoding does: NULL first,
// numbers numerically, strings bytewise.
func cmpValue(x, y Value) int {
	switch {
	case x.IsNull() && y.IsNull():
		return 0
	case x.IsNull():
		return -1
	case y.IsNull():
		return 1
	}
	switch x.Type() {
	case TypeInt64:
		return cmp.Compare(x.AsInt64(), y.AsInt64())
	case TypeUint64:
		return cmp.Compare(x.AsUint64(), y.AsUint64())
	case TypeString:
		return strings.Compare(x.AsString(), y.AsString())
	}
	panic("cmpValue: type " + x.Type().String())
}

func cmpTuple(x, y []Value) int {
	for i := 0; i < len(x) && i < len(y); i++ {
		if c := cmpValue(x[i], y[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(x), len(y))
}

func cmpPK(x, y []Value) int {
	if c := cmp.Compare(x[mcA].AsInt64(), y[mcA].AsInt64()); c != 0 {
		return c
	}
	return strings.Compare(x[mcB].AsString(), y[mcB].AsString())
}

func rowsEqual(x, y []Value) bool { return slices.Equal(x, y) }

func fmtValue(v Value) string {
	if v.Type() == TypeString && len(v.AsString()) > 12 {
		s := v.AsString()
		return fmt.Sprintf("%q…(%d bytes)", s[:6], len(s))
	}
	return v.String()
}

func fmtRow(row []Value) string {
	if row == nil {
		return "<none>"
	}
	parts := make([]string, len(row))
	for i, v := range row {
		parts[i] = fmtValue(v)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func fmtSpec(s ScanSpec) string {
	vs := func(vals []Value) string {
		if vals == nil {
			return "nil"
		}
		return fmtRow(vals)
	}
	return fmt.Sprintf("{ix %d prefix %s lower %s upper %s incl %v rev %v limit %d}",
		s.Index, vs(s.Prefix), vs(s.Lower), vs(s.Upper), s.UpperInclusive, s.Reverse, s.Limit)
}

var errInjected = errors.New("model test: injected log failure")

// modelLog is the CommitLog of the tests: it keeps every record encoded as
// the log would, with its LSN, and fails a commit on request.
type modelLog struct {
	mu       sync.Mutex
	last     uint64
	calls    int
	failNext bool
	recs     []modelRec
}

type modelRec struct {
	lsn  uint64
	data []byte
}

func (l *modelLog) Commit(r *Redo) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.failNext {
		l.failNext = false
		return 0, errInjected
	}
	l.last++
	l.recs = append(l.recs, modelRec{lsn: l.last, data: r.AppendBinary(nil)})
	return l.last, nil
}

func (l *modelLog) state() (calls int, last uint64, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls, l.last, len(l.recs)
}

func (l *modelLog) setFail(f bool) {
	l.mu.Lock()
	l.failNext = f
	l.mu.Unlock()
}

func (l *modelLog) lastRec() modelRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recs[len(l.recs)-1]
}

// mSnap is an open snapshot with the model as of its LSN.
type mSnap struct {
	sn   *Snapshot
	lsn  uint64
	rows map[pkey][]Value
	idx  []mIndex
}

// mImage is what a checkpoint would write from a snapshot.
type mImage struct {
	lsn  uint64
	def  TableDef
	rows [][]byte
}

// mHeld is a Record read earlier, with the values it had: records must stay
// valid after their transaction ends.
type mHeld struct {
	rec  Record
	vals []Value
	from string
}

type mStats struct {
	txs, commits, rollbacks, readOnly, dupCommits, injected int
	ops, opErrs, scans, ddl, ddlFailed, snaps, moves        int
}

type mharness struct {
	t      *testing.T
	seed   int64
	name   string
	rng    *rand.Rand
	pkKind IndexKind
	db     *DB
	log    *modelLog
	tbl    *Table
	start  uint64

	idx  []mIndex // the table's indexes; [0] is the primary key
	rows map[pkey][]Value
	lsn  uint64

	aDom  []int64
	bDom  []string
	gDom  []int64
	nDom  []int64
	nextU uint64

	txNo    int
	opNo    int
	trace   []string
	snaps   []*mSnap
	images  []mImage
	held    []mHeld
	traceMu sync.Mutex // trace is read by the watchdog
	st      mStats
}

func modelSeeds(t *testing.T) []int64 {
	if *modelSeedFlag != 0 {
		return []int64{*modelSeedFlag}
	}
	if s := os.Getenv("MMDBTEST_MODEL_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("MMDBTEST_MODEL_SEED=%q: %v", s, err)
		}
		return []int64{v}
	}
	n := *modelSeedsFlag
	if n == 0 {
		switch {
		case testing.Short():
			n = 8
		case raceEnabled():
			n = 12 // the race detector makes each run several times slower
		default:
			n = 40
		}
	}
	seeds := make([]int64, n)
	for i := range seeds {
		seeds[i] = int64(i + 1)
	}
	return seeds
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

func modelTxs() int {
	if *modelTxsFlag != 0 {
		return *modelTxsFlag
	}
	if testing.Short() {
		return 120
	}
	return 300
}

func TestModel(t *testing.T) {
	seeds := modelSeeds(t)
	ntx := modelTxs()
	for _, kind := range []IndexKind{Hash, Ordered} {
		for _, seed := range seeds {
			name := fmt.Sprintf("%s/seed=%d", kind, seed)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				runModel(t, name, seed, kind, ntx)
			})
		}
	}
}

func runModel(t *testing.T, name string, seed int64, kind IndexKind, ntx int) {
	t.Logf("seed %d, primary key %s, %d transactions (reproduce: go test ./mem -run 'TestModel/%s$' -model.seed=%d)", seed, kind, ntx, name, seed)
	h := &mharness{
		t: t, seed: seed, name: name, pkKind: kind,
		rng:  rand.New(rand.NewPCG(uint64(seed), uint64(kind))),
		log:  &modelLog{},
		rows: map[pkey][]Value{},
	}
	// A stuck engine (a transaction spinning on a row or an index entry
	// that never settles) would otherwise show only as the test binary's
	// timeout; say which run it is and what it did last.
	done := make(chan struct{})
	defer close(done)
	go func(limit time.Duration) {
		select {
		case <-done:
		case <-time.After(limit):
			debug.SetTraceback("all")
			panic(fmt.Sprintf("TestModel/%s has run for %v: the engine seems stuck (reproduce: go test ./mem -run 'TestModel/%s$' -model.seed=%d)\nrecent operations (oldest first):\n  %s",
				name, limit, name, seed, h.recentTrace()))
		}
	}(2 * time.Minute * time.Duration((ntx+299)/300))
	h.setup()
	for i := 0; i < ntx; i++ {
		if h.rng.IntN(50) == 0 {
			h.ddl()
		}
		if len(h.snaps) < 2 && h.rng.IntN(25) == 0 {
			h.takeSnap()
		}
		h.randomTx()
		for j := 0; j < len(h.snaps); {
			if h.rng.IntN(12) == 0 {
				h.finishSnap(j)
			} else {
				j++
			}
		}
		if i%15 == 14 {
			h.checkDB("periodic check", h.db, h.tbl, h.rows, h.idx, h.lsn)
		}
	}
	for len(h.snaps) > 0 {
		h.finishSnap(0)
	}
	h.checkDB("final check", h.db, h.tbl, h.rows, h.idx, h.lsn)
	h.checkHeld()
	h.checkReplay()
	s := h.st
	t.Logf("%d txs: %d commits, %d rollbacks, %d read-only, %d unique violations at commit, %d injected log failures; %d ops (%d expected errors), %d scans; %d DDL (%d failed); %d snapshots; %d rows moved; %d rows, %d log records, last LSN %d",
		s.txs, s.commits, s.rollbacks, s.readOnly, s.dupCommits, s.injected, s.ops, s.opErrs, s.scans, s.ddl, s.ddlFailed, s.snaps, s.moves, len(h.rows), len(h.log.recs), h.lsn)
}

func (h *mharness) tracef(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	h.traceMu.Lock()
	defer h.traceMu.Unlock()
	if len(h.trace) >= 400 {
		h.trace = append(h.trace[:0], h.trace[300:]...)
	}
	h.trace = append(h.trace, line)
}

func (h *mharness) recentTrace() string {
	h.traceMu.Lock()
	defer h.traceMu.Unlock()
	return strings.Join(h.trace[max(0, len(h.trace)-60):], "\n  ")
}

func (h *mharness) failf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("seed %d, primary key %s, tx %d op %d: %s\nreproduce: go test ./mem -run 'TestModel/%s$' -model.seed=%d\nrecent operations (oldest first):\n  %s",
		h.seed, h.pkKind, h.txNo, h.opNo, fmt.Sprintf(format, args...), h.name, h.seed, h.recentTrace())
}

func (h *mharness) setup() {
	if h.rng.IntN(2) == 0 {
		h.start = h.rng.Uint64N(1 << 40)
	}
	h.log.last = h.start
	h.db = Open(Options{Log: h.log, StartLSN: h.start})
	h.lsn = h.start
	if got := h.db.LastLSN(); got != h.start {
		h.failf("LastLSN of a new DB is %d, want StartLSN %d", got, h.start)
	}

	n := 3 + h.rng.IntN(30)
	for a := int64(-2); a < int64(n); a++ {
		h.aDom = append(h.aDom, a)
	}
	h.aDom = append(h.aDom, math.MinInt64, math.MaxInt64)
	h.bDom = []string{"", "a", "a\x00", "ab", "b", "zz\x00z"}
	h.gDom = []int64{-2, -1, 0, 1, 2, 3, math.MinInt64, math.MaxInt64}
	h.nDom = []int64{-1, 0, 1, 2, 7, math.MaxInt64, math.MinInt64}
	h.nextU = 1000

	h.idx = append([]mIndex{{name: "primary", cols: []int{mcA, mcB}, unique: true, kind: h.pkKind}}, modelInitial...)
	def := TableDef{
		Name: "t",
		Columns: []ColumnDef{
			{Name: "a", Type: TypeInt64},
			{Name: "b", Type: TypeString, MaxLen: 8},
			{Name: "u", Type: TypeUint64},
			{Name: "g", Type: TypeInt64},
			{Name: "n", Type: TypeInt64, Nullable: true},
			{Name: "v", Type: TypeString, MaxLen: 8000, Nullable: true},
			{Name: "f", Type: TypeFloat64},
		},
		PrimaryKey:  []string{"a", "b"},
		PrimaryKind: h.pkKind,
	}
	for _, ix := range modelInitial {
		def.Indexes = append(def.Indexes, ix.def())
	}
	tbl, err := h.db.CreateTable(def)
	if err != nil {
		h.failf("CreateTable: %v", err)
	}
	h.tbl = tbl
	h.lsn++
	h.tracef("create table at LSN %d", h.lsn)
	if got := h.db.LastLSN(); got != h.lsn {
		h.failf("LastLSN after CreateTable = %d, want %d", got, h.lsn)
	}
	rec := h.log.lastRec()
	r, err := DecodeRedo(rec.data)
	if err != nil || rec.lsn != h.lsn || len(r.Ops) != 1 || r.Ops[0].Kind != OpCreateTable || r.Ops[0].Table != tbl.ID() {
		h.failf("CreateTable logged LSN %d %+v (%v), want one create-table op at LSN %d", rec.lsn, r, err, h.lsn)
	}
	got, err := DecodeTableDef(r.Ops[0].Data)
	if err != nil {
		h.failf("decode logged table definition: %v", err)
	}
	want := tbl.Def()
	if want.ID != tbl.ID() || !reflect.DeepEqual(got, want) {
		h.failf("logged table definition %+v, table has %+v (id %d)", got, want, tbl.ID())
	}
	h.checkDef(tbl, h.idx)
}

// --- value generation ---

func (h *mharness) coin() bool { return h.rng.IntN(2) == 0 }

func (h *mharness) genPK() pkey {
	return pkey{h.aDom[h.rng.IntN(len(h.aDom))], h.bDom[h.rng.IntN(len(h.bDom))]}
}

// pickRow returns some row of view, or nil when a few tries find none.
func (h *mharness) pickRow(view map[pkey][]Value) []Value {
	for range 10 {
		if r := view[h.genPK()]; r != nil {
			return r
		}
	}
	return nil
}

func (h *mharness) genU(view map[pkey][]Value) Value {
	switch r := h.rng.IntN(100); {
	case r < 3:
		if row := h.pickRow(view); row != nil {
			return row[mcU] // a likely unique violation
		}
	case r < 4:
		return Uint64([]uint64{0, math.MaxUint64}[h.rng.IntN(2)])
	}
	h.nextU++
	return Uint64(h.nextU)
}

func (h *mharness) genG() Value {
	if h.rng.IntN(10) == 0 {
		return Int64(h.gDom[h.rng.IntN(len(h.gDom))])
	}
	return Int64(h.gDom[h.rng.IntN(6)])
}

func (h *mharness) genN() Value {
	if h.rng.IntN(10) < 3 {
		return Null()
	}
	return Int64(h.nDom[h.rng.IntN(len(h.nDom))])
}

func (h *mharness) genV() Value {
	letter := string(rune('p' + h.rng.IntN(3)))
	switch r := h.rng.IntN(100); {
	case r < 5:
		return Null()
	case r < 40:
		return String([]string{"", "x", "y", "x\x00", "xy"}[h.rng.IntN(5)])
	case r < 65:
		return String(strings.Repeat(letter, 1+h.rng.IntN(100)))
	case r < 99:
		return String(strings.Repeat(letter, 2000+h.rng.IntN(2001)))
	default:
		return String(strings.Repeat(letter, 8000)) // the declared maximum
	}
}

func (h *mharness) genF() Value {
	return Float64([]float64{0, math.Copysign(0, -1), 1.5, -2.25, 1e300, math.Inf(-1)}[h.rng.IntN(6)])
}

// genCol returns a value for column c, for keys of lookups and scans.
func (h *mharness) genCol(c int, view map[pkey][]Value) Value {
	switch c {
	case mcA:
		return Int64(h.aDom[h.rng.IntN(len(h.aDom))])
	case mcB:
		return String(h.bDom[h.rng.IntN(len(h.bDom))])
	case mcU:
		if h.coin() {
			if row := h.pickRow(view); row != nil {
				return row[mcU]
			}
		}
		return Uint64(h.nextU - h.rng.Uint64N(40))
	case mcG:
		return h.genG()
	case mcN:
		return h.genN()
	case mcV:
		return h.genV()
	}
	panic("genCol")
}

func (h *mharness) genRow(pk pkey, view map[pkey][]Value) []Value {
	return []Value{Int64(pk.a), String(pk.b), h.genU(view), h.genG(), h.genN(), h.genV(), h.genF()}
}

// genSet returns a random partial update of the non-key columns.
func (h *mharness) genSet(view map[pkey][]Value) []ColumnValue {
	var set []ColumnValue
	if h.rng.IntN(20) == 0 {
		return nil // an update that changes nothing
	}
	for len(set) == 0 {
		for _, c := range []int{mcU, mcG, mcN, mcV, mcF} {
			if h.rng.IntN(10) >= 4 {
				continue
			}
			var v Value
			switch c {
			case mcU:
				v = h.genU(view)
			case mcG:
				v = h.genG()
			case mcN:
				v = h.genN()
			case mcV:
				v = h.genV()
			case mcF:
				v = h.genF()
			}
			set = append(set, ColumnValue{Column: c, Value: v})
		}
	}
	if h.rng.IntN(20) == 0 { // the same column twice: the last one wins
		c := set[h.rng.IntN(len(set))].Column
		set = append(set, ColumnValue{Column: c, Value: map[int]Value{mcU: h.genU(view), mcG: h.genG(), mcN: h.genN(), mcV: h.genV(), mcF: h.genF()}[c]})
	}
	h.rng.Shuffle(len(set), func(i, j int) {
		if set[i].Column != set[j].Column { // keep the order of repeated columns
			set[i], set[j] = set[j], set[i]
		}
	})
	return set
}

func fmtSet(set []ColumnValue) string {
	parts := make([]string, len(set))
	for i, cv := range set {
		name := strconv.Itoa(cv.Column)
		if cv.Column >= 0 && cv.Column < mcCols {
			name = modelColNames[cv.Column]
		}
		parts[i] = name + "=" + fmtValue(cv.Value)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// --- the model's queries ---

// dupIndex returns the name of a unique secondary index that two rows of
// rows share a key in, or "".
func dupIndex(rows map[pkey][]Value, idx []mIndex) string {
	for _, ix := range idx[1:] {
		if ix.unique && hasDup(rows, ix) {
			return ix.name
		}
	}
	return ""
}

func hasDup(rows map[pkey][]Value, ix mIndex) bool {
	seen := make(map[tkey]bool, len(rows))
	for _, row := range rows {
		k := keyOf(ix, row)
		if seen[k] {
			return true
		}
		seen[k] = true
	}
	return false
}

// modelScan returns the rows of view in the scan's range, in index order
// (reversed with Reverse), ignoring Limit.
func modelScan(view map[pkey][]Value, ix mIndex, spec ScanSpec) [][]Value {
	type entry struct{ key, row []Value }
	var in []entry
	p := len(spec.Prefix)
	for _, row := range view {
		k := keyVals(ix, row)
		if cmpTuple(k[:p], spec.Prefix) != 0 {
			continue
		}
		if spec.Lower != nil && cmpTuple(k[p:p+len(spec.Lower)], spec.Lower) < 0 {
			continue
		}
		if spec.Upper != nil {
			c := cmpTuple(k[p:p+len(spec.Upper)], spec.Upper)
			if c > 0 || c == 0 && !spec.UpperInclusive {
				continue
			}
		}
		in = append(in, entry{k, row})
	}
	sort.Slice(in, func(i, j int) bool {
		c := cmpTuple(in[i].key, in[j].key)
		if c == 0 {
			c = cmpPK(in[i].row, in[j].row)
		}
		if spec.Reverse {
			c = -c
		}
		return c < 0
	})
	out := make([][]Value, len(in))
	for i, e := range in {
		out[i] = e.row
	}
	return out
}

// describeScan tells a scan's rows (got, on index name) and the model's
// (want, the first n of them due), for a failure message.
func describeScan(what, name string, spec ScanSpec, got []Record, want [][]Value, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %s %s:\n  got %d rows:", what, name, fmtSpec(spec), len(got))
	for _, r := range got {
		b.WriteString("\n    " + fmtRow(r.Values(nil)))
	}
	fmt.Fprintf(&b, "\n  want the first %d of %d rows:", n, len(want))
	for _, r := range want {
		b.WriteString("\n    " + fmtRow(r))
	}
	return b.String()
}

// compareScan checks a scan's rows against the model's: the same number,
// the same index keys in the same order, and each row a distinct row of
// view with the right content. Rows with equal keys may come in any order,
// and when Limit cuts a run of equal keys any of them may be delivered.
func (h *mharness) compareScan(what string, ix mIndex, spec ScanSpec, got []Record, want [][]Value, n int, view map[pkey][]Value) {
	h.t.Helper()
	describe := func() string { return describeScan(what, ix.name, spec, got, want, n) }
	if len(got) != n {
		h.failf("wrong number of rows: %s", describe())
	}
	seen := make(map[pkey]bool, len(got))
	for i, r := range got {
		vals := r.Values(nil)
		pk := pkOf(vals)
		if seen[pk] {
			h.failf("row %s delivered twice: %s", fmtRow(vals), describe())
		}
		seen[pk] = true
		exp := view[pk]
		if exp == nil {
			h.failf("row %s does not exist: %s", fmtRow(vals), describe())
		}
		if !rowsEqual(vals, exp) {
			h.failf("row %d is %s, but the row with that key is %s: %s", i, fmtRow(vals), fmtRow(exp), describe())
		}
		if keyOf(ix, vals) != keyOf(ix, want[i]) {
			h.failf("row %d out of order: %s", i, describe())
		}
	}
}

// --- transactions ---

func (h *mharness) randomTx() {
	h.txNo++
	h.opNo = 0
	h.st.txs++
	tx := h.db.Begin()
	base := h.rows
	view := maps.Clone(base)
	written := map[pkey]bool{}
	nops := 1 + h.rng.IntN(8)
	if h.rng.IntN(7) == 0 {
		nops = 10 + h.rng.IntN(30) // past linearWrites: the write map
	}
	grow := h.rng.IntN(15) == 0 // many rows grow at once: some must move
	if grow {
		nops = 10 + h.rng.IntN(20)
	}
	h.tracef("tx %d: begin (%d ops, grow %v)", h.txNo, nops, grow)
	var held []mHeld
	for i := 0; i < nops; i++ {
		h.opNo = i + 1
		if grow {
			h.st.ops++
			h.opUpdate(tx, view, written, true)
			continue
		}
		h.randomOp(tx, view, written, &held)
	}
	h.opNo = 0
	callsBefore, _, _ := h.log.state()
	if h.rng.IntN(5) == 0 {
		tx.Rollback()
		h.st.rollbacks++
		h.tracef("tx %d: rollback", h.txNo)
		if calls, _, _ := h.log.state(); calls != callsBefore {
			h.failf("Rollback called the log")
		}
	} else {
		h.commit(tx, base, view, written)
	}
	h.held = append(h.held, held...)
	if len(h.held) > 48 {
		h.held = h.held[len(h.held)-48:]
	}
	if got := h.db.LastLSN(); got != h.lsn {
		h.failf("LastLSN = %d, want %d", got, h.lsn)
	}
	if got := h.tbl.rows.Load(); got != int64(len(h.rows)) {
		h.failf("the table counts %d rows, the model has %d", got, len(h.rows))
	}
}

func (h *mharness) commit(tx *Tx, base, view map[pkey][]Value, written map[pkey]bool) {
	changed := map[pkey]bool{}
	for pk := range written {
		if base[pk] != nil || view[pk] != nil {
			changed[pk] = true
		}
	}
	dup := ""
	if len(changed) > 0 {
		dup = dupIndex(view, h.idx)
	}
	fail := len(changed) > 0 && h.rng.IntN(40) == 0
	h.log.setFail(fail)
	callsBefore, _, _ := h.log.state()
	var moved []pkey // updated rows, with their RIDs before: a new RID is a move
	var ridsBefore []uint64
	for pk := range changed {
		if base[pk] != nil && view[pk] != nil {
			moved = append(moved, pk)
			ridsBefore = append(ridsBefore, h.ridOf(pk))
		}
	}
	lsn, err := tx.Commit()
	h.log.setFail(false)
	calls, _, _ := h.log.state()
	switch {
	case len(changed) == 0:
		h.st.readOnly++
		h.tracef("tx %d: commit, nothing written -> %d, %v", h.txNo, lsn, err)
		if lsn != 0 || err != nil || calls != callsBefore {
			h.failf("Commit of a transaction that changed nothing = (%d, %v) with %d log calls, want (0, nil) and none", lsn, err, calls-callsBefore)
		}
	case dup != "":
		h.st.dupCommits++
		h.tracef("tx %d: commit with a duplicate in %s -> %d, %v", h.txNo, dup, lsn, err)
		if !errors.Is(err, ErrDuplicate) || lsn != 0 {
			h.failf("Commit with a duplicate key in unique index %s = (%d, %v), want ErrDuplicate", dup, lsn, err)
		}
		if calls != callsBefore {
			h.failf("a Commit that failed with ErrDuplicate called the log")
		}
	case fail:
		h.st.injected++
		h.tracef("tx %d: commit, the log fails -> %d, %v", h.txNo, lsn, err)
		if !errors.Is(err, errInjected) || lsn != 0 {
			h.failf("Commit whose log call fails = (%d, %v), want the log's error", lsn, err)
		}
		if calls != callsBefore+1 {
			h.failf("Commit called the log %d times, want 1", calls-callsBefore)
		}
	default:
		h.st.commits++
		h.tracef("tx %d: commit (%d rows changed) -> %d, %v", h.txNo, len(changed), lsn, err)
		if err != nil {
			h.failf("Commit: %v (the model expects success)", err)
		}
		if lsn != h.lsn+1 {
			h.failf("Commit returned LSN %d, want %d", lsn, h.lsn+1)
		}
		if calls != callsBefore+1 {
			h.failf("Commit called the log %d times, want 1", calls-callsBefore)
		}
		h.checkRedo(lsn, base, view, changed)
		h.rows = view
		h.lsn = lsn
		for i, pk := range moved {
			if h.ridOf(pk) != ridsBefore[i] {
				h.st.moves++
			}
		}
	}
}

// ridOf returns the RID of the committed row with the given key (0 if none).
func (h *mharness) ridOf(pk pkey) uint64 {
	st := h.tbl.state.Load()
	key, err := st.s.appendKey(nil, 0, 0, pk.vals())
	if err != nil {
		h.failf("encode %v: %v", pk, err)
	}
	for _, c := range st.idx[0].lookup(key, nil) {
		if tid, row := h.tbl.heap.peek(c); tid&(tidLocked|tidAbsent) == 0 {
			if eq, _ := st.s.rowKeyEqual(0, row, key, nil); eq {
				return c
			}
		}
	}
	return 0
}

// checkRedo checks the record the commit at lsn logged: one op per changed
// row, a put of its after-image or a delete of its key.
func (h *mharness) checkRedo(lsn uint64, base, view map[pkey][]Value, changed map[pkey]bool) {
	rec := h.log.lastRec()
	if rec.lsn != lsn {
		h.failf("the last log record has LSN %d, Commit returned %d", rec.lsn, lsn)
	}
	r, err := DecodeRedo(rec.data)
	if err != nil {
		h.failf("DecodeRedo of LSN %d: %v", lsn, err)
	}
	s := h.tbl.state.Load().s
	seen := map[pkey]bool{}
	for i, op := range r.Ops {
		if op.Table != h.tbl.ID() {
			h.failf("LSN %d op %d: table %d, want %d", lsn, i, op.Table, h.tbl.ID())
		}
		var pk pkey
		switch op.Kind {
		case OpPut:
			if err := s.validateRow(op.Data); err != nil {
				h.failf("LSN %d op %d: logged row: %v", lsn, i, err)
			}
			vals := Record{s: s, b: op.Data}.Values(nil)
			pk = pkOf(vals)
			if want := view[pk]; !rowsEqual(vals, want) {
				h.failf("LSN %d op %d: put %s, but the row is %s", lsn, i, fmtRow(vals), fmtRow(want))
			}
		case OpDelete:
			vals, err := s.decodeKey(0, op.Data)
			if err != nil {
				h.failf("LSN %d op %d: logged key: %v", lsn, i, err)
			}
			pk = pkOf(append(vals, make([]Value, mcCols)...))
			if view[pk] != nil || base[pk] == nil {
				h.failf("LSN %d op %d: delete %v, but before %s and after %s", lsn, i, pk, fmtRow(base[pk]), fmtRow(view[pk]))
			}
		default:
			h.failf("LSN %d op %d: kind %s in a data record", lsn, i, op.Kind)
		}
		if !changed[pk] {
			h.failf("LSN %d op %d: %s of %v, which the transaction did not change", lsn, i, op.Kind, pk)
		}
		if seen[pk] {
			h.failf("LSN %d op %d: a second op on %v", lsn, i, pk)
		}
		seen[pk] = true
	}
	if len(seen) != len(changed) {
		h.failf("LSN %d holds %d ops, the transaction changed %d rows", lsn, len(seen), len(changed))
	}
}

func (h *mharness) randomOp(tx *Tx, view map[pkey][]Value, written map[pkey]bool, held *[]mHeld) {
	h.st.ops++
	switch r := h.rng.IntN(100); {
	case r < 12:
		h.opGet(tx, view, held)
	case r < 20:
		h.opGetBy(tx, view, held)
	case r < 33:
		h.opScan(tx, view)
	case r < 47:
		h.opPut(tx, view, written, false)
	case r < 58:
		h.opPut(tx, view, written, true)
	case r < 78:
		h.opUpdate(tx, view, written, false)
	case r < 92:
		h.opDelete(tx, view, written)
	default:
		h.opInvalid(tx, view)
	}
}

// expectErr checks an operation's error against the model's prediction
// (nil: success).
func (h *mharness) expectErr(what string, err, want error) {
	h.t.Helper()
	if want == nil {
		if err != nil {
			h.failf("%s: %v, the model expects success", what, err)
		}
		return
	}
	h.st.opErrs++
	if !errors.Is(err, want) {
		h.failf("%s: error %v, want %v", what, err, want)
	}
}

func (h *mharness) opGet(tx *Tx, view map[pkey][]Value, held *[]mHeld) {
	pk := h.genPK()
	if h.coin() {
		if row := h.pickRow(view); row != nil {
			pk = pkOf(row)
		}
	}
	rec, found, err := tx.Get(h.tbl, pk.vals())
	want := view[pk]
	h.tracef("  get %v -> %v %v", pk, found, err)
	h.expectErr("Get", err, nil)
	if found != (want != nil) {
		h.failf("Get %v: found = %v, the model has %s", pk, found, fmtRow(want))
	}
	if found {
		vals := rec.Values(nil)
		if !rowsEqual(vals, want) {
			h.failf("Get %v = %s, want %s", pk, fmtRow(vals), fmtRow(want))
		}
		*held = append(*held, mHeld{rec: rec, vals: vals, from: fmt.Sprintf("tx %d get %v", h.txNo, pk)})
	}
}

func (h *mharness) opGetBy(tx *Tx, view map[pkey][]Value, held *[]mHeld) {
	var uniq []int
	for i, ix := range h.idx {
		if ix.unique {
			uniq = append(uniq, i)
		}
	}
	ixNo := uniq[h.rng.IntN(len(uniq))]
	ix := h.idx[ixNo]
	src := h.pickRow(view)
	key := make([]Value, len(ix.cols))
	for i, c := range ix.cols {
		if src != nil && h.rng.IntN(4) > 0 {
			key[i] = src[c]
		} else {
			key[i] = h.genCol(c, view)
		}
	}
	rec, found, err := tx.GetBy(h.tbl, ixNo, key)
	h.tracef("  getby %s %s -> %v %v", ix.name, fmtRow(key), found, err)
	h.expectErr("GetBy "+ix.name, err, nil)
	match := modelScan(view, ix, ScanSpec{Prefix: key})
	if found != (len(match) > 0) {
		h.failf("GetBy %s %s: found = %v, the model has %d rows with that key", ix.name, fmtRow(key), found, len(match))
	}
	if !found {
		return
	}
	vals := rec.Values(nil)
	// Within a transaction a unique key may be held twice (the violation
	// is reported at Commit); any of its rows will do then.
	ok := false
	for _, m := range match {
		ok = ok || rowsEqual(vals, m)
	}
	if !ok {
		h.failf("GetBy %s %s = %s, want one of %d rows, first %s", ix.name, fmtRow(key), fmtRow(vals), len(match), fmtRow(match[0]))
	}
	*held = append(*held, mHeld{rec: rec, vals: vals, from: fmt.Sprintf("tx %d getby %s", h.txNo, ix.name)})
}

func (h *mharness) randomSpec(view map[pkey][]Value) (ScanSpec, mIndex) {
	ixNo := h.rng.IntN(len(h.idx))
	ix := h.idx[ixNo]
	spec := ScanSpec{Index: ixNo}
	var src []Value
	if h.rng.IntN(10) < 7 {
		src = h.pickRow(view)
	}
	val := func(pos int) Value {
		if src != nil && h.rng.IntN(3) > 0 {
			return src[ix.cols[pos]]
		}
		return h.genCol(ix.cols[pos], view)
	}
	vals := func(from, n int) []Value {
		out := make([]Value, n)
		for i := range out {
			out[i] = val(from + i)
		}
		return out
	}
	k := len(ix.cols)
	if ix.kind == Hash {
		spec.Prefix = vals(0, k)
	} else {
		p := h.rng.IntN(k + 1)
		if p > 0 {
			spec.Prefix = vals(0, p)
		}
		if rem := k - p; rem > 0 {
			if h.coin() {
				spec.Lower = vals(p, 1+h.rng.IntN(rem))
			} else if h.rng.IntN(10) == 0 {
				spec.Lower = []Value{}
			}
			if h.coin() {
				spec.Upper = vals(p, 1+h.rng.IntN(rem))
			} else if h.rng.IntN(10) == 0 {
				spec.Upper = []Value{} // bounds the empty tuple after the prefix
			}
		}
		spec.UpperInclusive = h.coin()
		spec.Reverse = h.coin()
	}
	if h.coin() {
		spec.Limit = 1 + h.rng.IntN(6)
	}
	return spec, ix
}

func (h *mharness) opScan(tx *Tx, view map[pkey][]Value) {
	h.st.scans++
	spec, ix := h.randomSpec(view)
	stop := 0 // fn stops the scan after this many rows (0: never)
	if h.rng.IntN(6) == 0 {
		stop = 1 + h.rng.IntN(4)
	}
	var got []Record
	err := tx.Scan(h.tbl, spec, func(r Record) bool {
		got = append(got, r)
		return stop == 0 || len(got) < stop
	})
	h.tracef("  scan %s %s stop %d -> %d rows, %v", ix.name, fmtSpec(spec), stop, len(got), err)
	h.expectErr("Scan", err, nil)
	want := modelScan(view, ix, spec)
	h.compareScan("Scan in a transaction", ix, spec, got, want, delivered(len(want), spec.Limit, stop), view)
	if len(got) > 0 {
		r := got[h.rng.IntN(len(got))]
		h.held = append(h.held, mHeld{rec: r, vals: r.Values(nil), from: fmt.Sprintf("tx %d scan of %s", h.txNo, ix.name)})
	}
}

func (h *mharness) opPut(tx *Tx, view map[pkey][]Value, written map[pkey]bool, upsert bool) {
	pk := h.genPK()
	row := h.genRow(pk, view)
	var err, want error
	if upsert {
		err = tx.Upsert(h.tbl, row)
	} else {
		err = tx.Insert(h.tbl, row)
		if view[pk] != nil {
			want = ErrDuplicate
		}
	}
	h.tracef("  %s %s -> %v", map[bool]string{false: "insert", true: "upsert"}[upsert], fmtRow(row), err)
	h.expectErr(map[bool]string{false: "Insert", true: "Upsert"}[upsert]+" "+fmtRow(row), err, want)
	if want == nil {
		view[pk] = row
		written[pk] = true
	}
}

func applySet(row []Value, set []ColumnValue) []Value {
	out := slices.Clone(row)
	for _, cv := range set {
		out[cv.Column] = cv.Value
	}
	return out
}

func (h *mharness) opUpdate(tx *Tx, view map[pkey][]Value, written map[pkey]bool, grow bool) {
	pk := h.genPK()
	if h.rng.IntN(4) > 0 {
		if row := h.pickRow(view); row != nil {
			pk = pkOf(row)
		}
	}
	set := h.genSet(view)
	if grow || h.rng.IntN(4) == 0 { // grow the row a lot: it may have to move
		set = append(set, ColumnValue{Column: mcV, Value: String(strings.Repeat("g", 3000+h.rng.IntN(1001)))})
	}
	err := tx.Update(h.tbl, pk.vals(), set)
	h.tracef("  update %v %s -> %v", pk, fmtSet(set), err)
	cur := view[pk]
	if cur == nil {
		h.expectErr("Update of a missing row", err, ErrNotFound)
		return
	}
	h.expectErr(fmt.Sprintf("Update %v %s", pk, fmtSet(set)), err, nil)
	view[pk] = applySet(cur, set)
	written[pk] = true
}

func (h *mharness) opDelete(tx *Tx, view map[pkey][]Value, written map[pkey]bool) {
	pk := h.genPK()
	if h.coin() {
		if row := h.pickRow(view); row != nil {
			pk = pkOf(row)
		}
	}
	err := tx.Delete(h.tbl, pk.vals())
	h.tracef("  delete %v -> %v", pk, err)
	if view[pk] == nil {
		h.expectErr("Delete of a missing row", err, ErrNotFound)
		return
	}
	h.expectErr(fmt.Sprintf("Delete %v", pk), err, nil)
	delete(view, pk)
	written[pk] = true
}

// opInvalid runs an operation that must fail and change nothing; later
// reads of the transaction check that it did not.
func (h *mharness) opInvalid(tx *Tx, view map[pkey][]Value) {
	pk := h.genPK()
	if h.coin() {
		if row := h.pickRow(view); row != nil {
			pk = pkOf(row)
		}
	}
	exists := view[pk] != nil
	orMissing := func(e error) error {
		if !exists {
			return ErrNotFound
		}
		return e
	}
	row := h.genRow(pk, view)
	var what string
	var err, want error
	switch h.rng.IntN(14) {
	case 0:
		row[mcU] = Int64(5)
		what, err, want = "Insert with a wrong type", tx.Insert(h.tbl, row), ErrType
	case 1:
		row[mcG] = Null()
		what, err, want = "Upsert with NULL in a NOT NULL column", tx.Upsert(h.tbl, row), ErrNull
	case 2:
		row[mcV] = String(strings.Repeat("w", 8001))
		what, err, want = "Insert of a value too long", tx.Insert(h.tbl, row), ErrTooLong
	case 3:
		what, err, want = "Insert of too few values", tx.Insert(h.tbl, row[:mcCols-1]), ErrInvalid
	case 4:
		c := []int{mcA, mcB}[h.rng.IntN(2)]
		what, err, want = "Update of a primary key column", tx.Update(h.tbl, pk.vals(), []ColumnValue{{Column: c, Value: row[c]}}), ErrInvalid
	case 5:
		c := []int{-1, mcCols, 1000}[h.rng.IntN(3)]
		what, err, want = "Update of a column that does not exist", tx.Update(h.tbl, pk.vals(), []ColumnValue{{Column: mcF, Value: h.genF()}, {Column: c, Value: Int64(1)}}), orMissing(ErrNoColumn)
	case 6:
		what, err, want = "Update to NULL in a NOT NULL column", tx.Update(h.tbl, pk.vals(), []ColumnValue{{Column: mcV, Value: h.genV()}, {Column: mcG, Value: Null()}}), orMissing(ErrNull)
	case 7:
		what, err, want = "Update with a value too long", tx.Update(h.tbl, pk.vals(), []ColumnValue{{Column: mcG, Value: h.genG()}, {Column: mcV, Value: String(strings.Repeat("w", 8001))}}), orMissing(ErrTooLong)
	case 8:
		what, err, want = "Update with a wrong type", tx.Update(h.tbl, pk.vals(), []ColumnValue{{Column: mcF, Value: Int64(3)}}), orMissing(ErrType)
	case 9:
		_, _, e := tx.Get(h.tbl, pk.vals()[:1])
		what, err, want = "Get with part of the key", e, ErrInvalid
	case 10:
		what, err, want = "Delete with a wrong key type", tx.Delete(h.tbl, []Value{String("1"), String(pk.b)}), ErrType
	case 11:
		var hashIx int
		for i, ix := range h.idx {
			if ix.kind == Hash {
				hashIx = i
			}
		}
		spec := ScanSpec{Index: hashIx, Prefix: keyVals(h.idx[hashIx], row), Reverse: true}
		if h.coin() {
			spec = ScanSpec{Index: hashIx, Prefix: keyVals(h.idx[hashIx], row)[:len(h.idx[hashIx].cols)-1]}
		}
		what, err, want = "Scan of a hash index by range", tx.Scan(h.tbl, spec, func(Record) bool { return true }), ErrInvalid
	case 12:
		what, err, want = "Scan with a negative limit", tx.Scan(h.tbl, ScanSpec{Limit: -1, Prefix: pk.vals()}, func(Record) bool { return true }), ErrInvalid
		if h.coin() {
			what, err, want = "Scan of an index that does not exist", tx.Scan(h.tbl, ScanSpec{Index: len(h.idx)}, func(Record) bool { return true }), ErrNoIndex
		}
	case 13:
		var nonUnique int
		for i, ix := range h.idx {
			if !ix.unique {
				nonUnique = i
			}
		}
		_, _, e := tx.GetBy(h.tbl, nonUnique, keyVals(h.idx[nonUnique], row))
		what, err, want = "GetBy on a non-unique index", e, ErrInvalid
		if h.coin() {
			var uniq []int
			for i, ix := range h.idx {
				if ix.unique {
					uniq = append(uniq, i)
				}
			}
			i := uniq[h.rng.IntN(len(uniq))]
			key := keyVals(h.idx[i], row)
			_, _, e := tx.GetBy(h.tbl, i, key[:len(key)-1])
			what, err, want = "GetBy with part of the key of "+h.idx[i].name, e, ErrInvalid
		}
	}
	h.tracef("  invalid: %s on %v -> %v", what, pk, err)
	h.expectErr(what, err, want)
}

// --- DDL ---

func (h *mharness) ddl() {
	h.st.ddl++
	opt := modelOptional[h.rng.IntN(len(modelOptional))]
	pos := slices.IndexFunc(h.idx, func(ix mIndex) bool { return ix.name == opt.name })
	fail := h.rng.IntN(8) == 0
	h.log.setFail(fail)
	callsBefore, _, _ := h.log.state()
	var err error
	var kind OpKind
	dup := false
	if pos < 0 {
		dup = opt.unique && hasDup(h.rows, opt)
		_, err = h.db.CreateIndex(context.Background(), "t", opt.def())
		kind = OpCreateIndex
	} else {
		_, err = h.db.DropIndex("t", opt.name)
		kind = OpDropIndex
	}
	h.log.setFail(false)
	calls, _, _ := h.log.state()
	h.tracef("ddl: %s %s (duplicates %v, log fails %v) -> %v", kind, opt.name, dup, fail, err)
	switch {
	case dup:
		h.st.ddlFailed++
		if !errors.Is(err, ErrNotUnique) || calls != callsBefore {
			h.failf("CreateIndex %s over duplicate keys: %v with %d log calls, want ErrNotUnique and none", opt.name, err, calls-callsBefore)
		}
	case fail:
		h.st.ddlFailed++
		if !errors.Is(err, errInjected) || calls != callsBefore+1 {
			h.failf("%s %s whose log call fails: %v with %d log calls, want the log's error and one", kind, opt.name, err, calls-callsBefore)
		}
	default:
		if err != nil {
			h.failf("%s %s: %v", kind, opt.name, err)
		}
		h.lsn++
		rec := h.log.lastRec()
		r, err := DecodeRedo(rec.data)
		if err != nil || rec.lsn != h.lsn || len(r.Ops) != 1 || r.Ops[0].Kind != kind || r.Ops[0].Table != h.tbl.ID() {
			h.failf("%s logged LSN %d %+v (%v), want one %s op at LSN %d", kind, rec.lsn, r, err, kind, h.lsn)
		}
		if kind == OpCreateIndex {
			def, err := DecodeIndexDef(r.Ops[0].Data)
			if err != nil || !reflect.DeepEqual(def, opt.def()) {
				h.failf("logged index definition %+v (%v), want %+v", def, err, opt.def())
			}
			h.idx = append(slices.Clip(h.idx), opt)
		} else {
			if string(r.Ops[0].Data) != opt.name {
				h.failf("logged drop of index %q, want %q", r.Ops[0].Data, opt.name)
			}
			h.idx = slices.Delete(slices.Clone(h.idx), pos, pos+1)
		}
	}
	if got := h.db.LastLSN(); got != h.lsn {
		h.failf("LastLSN = %d after DDL, want %d", got, h.lsn)
	}
	h.checkDef(h.tbl, h.idx)
}

// checkDef checks the table's definition and index ordinals against idx.
func (h *mharness) checkDef(tbl *Table, idx []mIndex) {
	def := tbl.Def()
	var want []IndexDef
	for _, ix := range idx[1:] {
		want = append(want, ix.def())
	}
	if !reflect.DeepEqual(def.Indexes, want) && !(len(def.Indexes) == 0 && len(want) == 0) {
		h.failf("table indexes %+v, want %+v", def.Indexes, want)
	}
	if def.PrimaryKind != h.pkKind || !slices.Equal(def.PrimaryKey, []string{"a", "b"}) {
		h.failf("table primary key %v %s, want (a, b) %s", def.PrimaryKey, def.PrimaryKind, h.pkKind)
	}
	for i, ix := range idx {
		if got, err := tbl.Index(ix.name); err != nil || got != i {
			h.failf("Index(%q) = %d, %v; want %d", ix.name, got, err, i)
		}
	}
}

// --- snapshots ---

func (h *mharness) takeSnap() {
	sn := h.db.Snapshot()
	h.st.snaps++
	h.tracef("snapshot at LSN %d", sn.LSN())
	if sn.LSN() != h.lsn {
		h.failf("Snapshot LSN %d, want %d (the last commit)", sn.LSN(), h.lsn)
	}
	h.snaps = append(h.snaps, &mSnap{sn: sn, lsn: sn.LSN(), rows: h.rows, idx: h.idx})
}

// finishSnap scans snapshot i, running transactions (and now and then DDL)
// between the rows it delivers, checks it against the model as of its LSN,
// keeps it as an image, and closes it.
func (h *mharness) finishSnap(i int) {
	s := h.snaps[i]
	h.snaps = slices.Delete(h.snaps, i, i+1)
	h.tracef("scan snapshot at LSN %d", s.lsn)
	type got struct {
		rec  Record
		vals []Value
	}
	var rows []got
	if err := s.sn.Scan(h.tbl.ID()+1000, func(Record) error { return nil }); !errors.Is(err, ErrNoTable) {
		h.failf("snapshot Scan of a table that does not exist: %v, want ErrNoTable", err)
	}
	stopErr := errors.New("stop")
	err := s.sn.Scan(h.tbl.ID(), func(r Record) error {
		rows = append(rows, got{r, r.Values(nil)})
		if h.rng.IntN(6) == 0 {
			h.randomTx()
		}
		if h.rng.IntN(150) == 0 {
			h.ddl()
		}
		return nil
	})
	h.tracef("snapshot at LSN %d: %d rows, %v", s.lsn, len(rows), err)
	if err != nil {
		h.failf("snapshot Scan: %v", err)
	}
	seen := make(map[pkey]bool, len(rows))
	for _, r := range rows {
		pk := pkOf(r.vals)
		if seen[pk] {
			h.failf("snapshot at LSN %d delivered %v twice", s.lsn, pk)
		}
		seen[pk] = true
		want := s.rows[pk]
		if want == nil {
			h.failf("snapshot at LSN %d has row %s, which did not exist then (now: %s)", s.lsn, fmtRow(r.vals), fmtRow(h.rows[pk]))
		}
		if !rowsEqual(r.vals, want) {
			h.failf("snapshot at LSN %d has row %s, want %s (now: %s)", s.lsn, fmtRow(r.vals), fmtRow(want), fmtRow(h.rows[pk]))
		}
		if now := r.rec.Values(nil); !rowsEqual(now, want) {
			h.failf("a record from the snapshot at LSN %d changed after it was delivered: %s, was %s", s.lsn, fmtRow(now), fmtRow(want))
		}
	}
	if len(rows) != len(s.rows) {
		var missing []string
		for pk, row := range s.rows {
			if !seen[pk] {
				missing = append(missing, fmtRow(row))
			}
		}
		sort.Strings(missing)
		h.failf("snapshot at LSN %d has %d rows, want %d; missing:\n  %s", s.lsn, len(rows), len(s.rows), strings.Join(missing, "\n  "))
	}
	defs := s.sn.Tables()
	var wantIx []IndexDef
	for _, ix := range s.idx[1:] {
		wantIx = append(wantIx, ix.def())
	}
	if len(defs) != 1 || defs[0].ID != h.tbl.ID() || defs[0].Name != "t" || !reflect.DeepEqual(defs[0].Indexes, wantIx) {
		h.failf("snapshot tables %+v, want table t (id %d) with indexes %+v", defs, h.tbl.ID(), wantIx)
	}
	// The callback's error stops the scan and comes back.
	if len(rows) > 0 {
		// (A snapshot is scanned once; this checks only the error path, on
		// a second snapshot taken now.)
		sn2 := h.db.Snapshot()
		if err := sn2.Scan(h.tbl.ID(), func(Record) error { return stopErr }); !errors.Is(err, stopErr) {
			h.failf("snapshot Scan whose callback fails: %v, want the callback's error", err)
		}
		sn2.Close()
	}
	img := mImage{lsn: s.lsn, def: defs[0]}
	for _, r := range rows {
		img.rows = append(img.rows, append([]byte(nil), r.rec.Encoded()...))
	}
	h.images = append(h.images, img)
	s.sn.Close()
	s.sn.Close() // closing twice does nothing
}

// --- whole-database checks ---

func (h *mharness) checkHeld() {
	for _, hd := range h.held {
		if now := hd.rec.Values(nil); !rowsEqual(now, hd.vals) {
			h.failf("a Record read in %s changed after its transaction ended: %s, was %s", hd.from, fmtRow(now), fmtRow(hd.vals))
		}
	}
}

// checkDB checks a database's table against the model: every key of the
// domain by Get, every ordered index by full scans both ways, every hash
// index by lookups of every key, every unique index by GetBy, the counts.
func (h *mharness) checkDB(what string, db *DB, tbl *Table, rows map[pkey][]Value, idx []mIndex, lsn uint64) {
	h.tracef("%s: %d rows at LSN %d", what, len(rows), lsn)
	waitBuilt(db) // an index Apply added is built after it returns
	h.checkDef(tbl, idx)
	h.checkHeld()
	if got := db.LastLSN(); got != lsn {
		h.failf("%s: LastLSN = %d, want %d", what, got, lsn)
	}
	st := tbl.Stats()
	if st.Rows != int64(len(rows)) {
		h.failf("%s: Stats().Rows = %d, the model has %d rows", what, st.Rows, len(rows))
	}
	if len(st.Indexes) != len(idx) {
		h.failf("%s: Stats() lists %d indexes, want %d", what, len(st.Indexes), len(idx))
	}
	for i, is := range st.Indexes {
		if is.Name != idx[i].name || is.Kind != idx[i].kind || is.Entries != int64(len(rows)) {
			h.failf("%s: index stats %+v, want %s (%s) with %d entries, one per row", what, is, idx[i].name, idx[i].kind, len(rows))
		}
	}
	if dbs := db.Stats(); len(dbs) != 1 || dbs[0].Rows != int64(len(rows)) {
		h.failf("%s: DB.Stats() = %+v, want one table with %d rows", what, dbs, len(rows))
	}

	tx := db.Begin()
	for _, a := range h.aDom {
		for _, b := range h.bDom {
			pk := pkey{a, b}
			rec, found, err := tx.Get(tbl, pk.vals())
			if err != nil {
				h.failf("%s: Get %v: %v", what, pk, err)
			}
			want := rows[pk]
			if found != (want != nil) {
				h.failf("%s: Get %v: found = %v, the model has %s", what, pk, found, fmtRow(want))
			}
			if found && !rowsEqual(rec.Values(nil), want) {
				h.failf("%s: Get %v = %s, want %s", what, pk, fmtRow(rec.Values(nil)), fmtRow(want))
			}
		}
	}
	all := modelScan(rows, idx[0], ScanSpec{}) // by primary key: a fixed order
	for i, ix := range idx {
		if ix.kind == Ordered {
			for _, rev := range []bool{false, true} {
				spec := ScanSpec{Index: i, Reverse: rev}
				var got []Record
				if err := tx.Scan(tbl, spec, func(r Record) bool { got = append(got, r); return true }); err != nil {
					h.failf("%s: full scan of %s: %v", what, ix.name, err)
				}
				want := modelScan(rows, ix, spec)
				h.compareScan(what+": full scan", ix, spec, got, want, len(want), rows)
			}
		} else {
			groups := map[tkey][][]Value{}
			var keys [][]Value // in a fixed order
			for _, row := range all {
				k := keyOf(ix, row)
				if groups[k] == nil {
					keys = append(keys, keyVals(ix, row))
				}
				groups[k] = append(groups[k], row)
			}
			for _, key := range keys {
				spec := ScanSpec{Index: i, Prefix: key}
				var got []Record
				if err := tx.Scan(tbl, spec, func(r Record) bool { got = append(got, r); return true }); err != nil {
					h.failf("%s: lookup in %s: %v", what, ix.name, err)
				}
				want := groups[keyOf(ix, key2row(ix, key))]
				h.compareScan(what+": hash lookup", ix, spec, got, want, len(want), rows)
			}
		}
		if ix.unique && i > 0 {
			for _, row := range all {
				key := keyVals(ix, row)
				rec, found, err := tx.GetBy(tbl, i, key)
				if err != nil || !found || !rowsEqual(rec.Values(nil), row) {
					h.failf("%s: GetBy %s %s = %v %s %v, want %s", what, ix.name, fmtRow(key), found, fmtRow(rec.Values(nil)), err, fmtRow(row))
				}
			}
		}
	}
	if lsn, err := tx.Commit(); lsn != 0 || err != nil {
		h.failf("%s: Commit of the read-only check = (%d, %v), want (0, nil)", what, lsn, err)
	}
}

// --- redo replay ---

func (h *mharness) decode(rec modelRec) *Redo {
	r, err := DecodeRedo(rec.data)
	if err != nil {
		h.failf("DecodeRedo of LSN %d: %v", rec.lsn, err)
	}
	// Round trip: the encoding is canonical.
	if again := r.AppendBinary(nil); string(again) != string(rec.data) {
		h.failf("LSN %d: DecodeRedo then AppendBinary changed the record", rec.lsn)
	}
	return r
}

func isDDL(r *Redo) bool { return len(r.Ops) == 1 && r.Ops[0].Kind >= OpCreateTable }

func (h *mharness) replayTable(what string, db *DB) *Table {
	tbl, err := db.Table("t")
	if err != nil {
		h.failf("%s: %v", what, err)
	}
	if tbl.ID() != h.tbl.ID() || !reflect.DeepEqual(tbl.Def(), h.tbl.Def()) {
		h.failf("%s: table %+v, want %+v", what, tbl.Def(), h.tbl.Def())
	}
	return tbl
}

// checkReplay rebuilds the database from the log (and from the snapshots'
// images plus the log after them) and checks each copy against the model.
func (h *mharness) checkReplay() {
	h.log.mu.Lock()
	recs := slices.Clone(h.log.recs)
	h.log.mu.Unlock()
	for i, rec := range recs {
		if want := h.start + uint64(i) + 1; rec.lsn != want {
			h.failf("log record %d has LSN %d, want %d: LSNs have gaps", i, rec.lsn, want)
		}
	}
	h.txNo, h.opNo = 0, 0

	// The whole log, in LSN order, into an empty database, taking a
	// snapshot wherever the original run took one: Apply must keep the
	// versions those snapshots need, as commits do.
	db := Open(Options{StartLSN: h.start})
	type replaySnap struct {
		sn  *Snapshot
		img mImage
	}
	var snaps []replaySnap
	for _, rec := range recs {
		if err := db.Apply(rec.lsn, h.decode(rec)); err != nil {
			h.failf("replay: Apply LSN %d: %v", rec.lsn, err)
		}
		for _, img := range h.images {
			if img.lsn == rec.lsn {
				snaps = append(snaps, replaySnap{db.Snapshot(), img})
			}
		}
	}
	h.checkDB("replay of the log", db, h.replayTable("replay", db), h.rows, h.idx, h.lsn)
	for _, rs := range snaps {
		if rs.sn.LSN() != rs.img.lsn {
			h.failf("replay: snapshot taken after Apply of LSN %d has LSN %d", rs.img.lsn, rs.sn.LSN())
		}
		want := map[pkey]string{}
		s := h.tbl.state.Load().s
		for _, row := range rs.img.rows {
			want[pkOf(Record{s: s, b: row}.Values(nil))] = string(row)
		}
		n := 0
		err := rs.sn.Scan(h.tbl.ID(), func(r Record) error {
			n++
			pk := pkOf(r.Values(nil))
			w, ok := want[pk]
			if !ok {
				h.failf("replay: snapshot at LSN %d has row %s, which the original's did not have", rs.img.lsn, fmtRow(r.Values(nil)))
			}
			if w != string(r.Encoded()) {
				h.failf("replay: snapshot at LSN %d has row %s, the original's had %s", rs.img.lsn, fmtRow(r.Values(nil)), fmtRow(Record{s: s, b: []byte(w)}.Values(nil)))
			}
			delete(want, pk)
			return nil
		})
		if err != nil || len(want) != 0 {
			h.failf("replay: snapshot at LSN %d: %v; %d rows (%d of the original's missing)", rs.img.lsn, err, n, len(want))
		}
		rs.sn.Close()
	}

	// Again over the result: data records are idempotent. (DDL records are
	// not replayed twice: creating a table that exists fails by design, and
	// index DDL amid a second data pass would act on states that never
	// existed.)
	for _, rec := range recs {
		if r := h.decode(rec); !isDDL(r) {
			if err := db.Apply(rec.lsn, r); err != nil {
				h.failf("second replay: Apply LSN %d: %v", rec.lsn, err)
			}
		}
	}
	h.checkDB("second replay of the log", db, h.replayTable("second replay", db), h.rows, h.idx, h.lsn)

	// The whole log through a Replayer: rows spread over its workers, the
	// unique keys checked when they stand still, the same state.
	db = Open(Options{StartLSN: h.start})
	rp := db.NewReplayer()
	for _, rec := range recs {
		if err := rp.Add(rec.lsn, h.decode(rec)); err != nil {
			h.failf("parallel replay: Add LSN %d: %v", rec.lsn, err)
		}
	}
	if err := rp.Close(); err != nil {
		h.failf("parallel replay: %v", err)
	}
	h.checkDB("parallel replay of the log", db, h.replayTable("parallel replay", db), h.rows, h.idx, h.lsn)

	// Each record twice in a row, as a standby might receive it. Replaying
	// a schema change twice may report that it is already done.
	db = Open(Options{StartLSN: h.start})
	for _, rec := range recs {
		r := h.decode(rec)
		if err := db.Apply(rec.lsn, r); err != nil {
			h.failf("replay with repeats: Apply LSN %d: %v", rec.lsn, err)
		}
		err := db.Apply(rec.lsn, h.decode(rec))
		if isDDL(r) {
			if err != nil && !errors.Is(err, ErrTableExist) && !errors.Is(err, ErrIndexExist) && !errors.Is(err, ErrNoIndex) {
				h.failf("replay with repeats: second Apply of %s at LSN %d: %v", r.Ops[0].Kind, rec.lsn, err)
			}
		} else if err != nil {
			h.failf("replay with repeats: second Apply of LSN %d: %v", rec.lsn, err)
		}
	}
	h.checkDB("replay with every record twice", db, h.replayTable("replay with repeats", db), h.rows, h.idx, h.lsn)

	// A snapshot as an image, then the log after it (one of them, to bound
	// the time; every snapshot was checked against the model already).
	if len(h.images) > 0 {
		img := h.images[h.rng.IntN(len(h.images))]
		what := fmt.Sprintf("image at LSN %d plus the log after it", img.lsn)
		db := Open(Options{StartLSN: img.lsn})
		create := &Redo{Ops: []Op{{Kind: OpCreateTable, Table: img.def.ID, Data: encodeTableDef(nil, img.def)}}}
		if err := db.Apply(img.lsn, create); err != nil {
			h.failf("%s: create table: %v", what, err)
		}
		for len(img.rows) > 0 {
			n := min(len(img.rows), 1+h.rng.IntN(50))
			r := &Redo{}
			for _, row := range img.rows[:n] {
				r.Ops = append(r.Ops, Op{Kind: OpPut, Table: img.def.ID, Data: row})
			}
			img.rows = img.rows[n:]
			if err := db.Apply(img.lsn, r); err != nil {
				h.failf("%s: load image rows: %v", what, err)
			}
		}
		for _, rec := range recs {
			if rec.lsn > img.lsn {
				if err := db.Apply(rec.lsn, h.decode(rec)); err != nil {
					h.failf("%s: Apply LSN %d: %v", what, rec.lsn, err)
				}
			}
		}
		h.checkDB(what, db, h.replayTable(what, db), h.rows, h.idx, h.lsn)
	}
}

// delivered is how many of n rows in range a scan with limit delivers
// when fn stops it after stop rows (zero: no limit, no stop).
func delivered(n, limit, stop int) int {
	if limit > 0 {
		n = min(n, limit)
	}
	if stop > 0 {
		n = min(n, stop)
	}
	return n
}

// TestModelEmptyUpperBound pins down an empty, non-nil ScanSpec.Upper. It
// bounds the empty tuple of key columns after the prefix: exclusive, it
// admits no row; inclusive, every row with the prefix, with or without a
// prefix. (Without a prefix the engine used to take the empty exclusive
// bound for no bound at all and return every row.)
func TestModelEmptyUpperBound(t *testing.T) {
	db := Open(Options{})
	tbl, err := db.CreateTable(TableDef{
		Name: "t",
		Columns: []ColumnDef{
			{Name: "a", Type: TypeInt64},
			{Name: "g", Type: TypeInt64},
		},
		PrimaryKey:  []string{"a"},
		PrimaryKind: Ordered,
		Indexes:     []IndexDef{{Name: "by_ga", Columns: []string{"g", "a"}, Kind: Ordered}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tx := db.Begin()
	for a := int64(0); a < 6; a++ {
		if err := tx.Insert(tbl, []Value{Int64(a), Int64(a % 2)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	count := func(spec ScanSpec) int {
		n := 0
		tx := db.Begin()
		defer tx.Rollback()
		if err := tx.Scan(tbl, spec, func(Record) bool { n++; return true }); err != nil {
			t.Fatalf("Scan %s: %v", fmtSpec(spec), err)
		}
		return n
	}
	for _, c := range []struct {
		spec ScanSpec
		want int
	}{
		{ScanSpec{Index: 1, Prefix: []Value{Int64(1)}, Upper: []Value{}}, 0},
		{ScanSpec{Index: 1, Prefix: []Value{Int64(1)}, Upper: []Value{}, UpperInclusive: true}, 3},
		{ScanSpec{Index: 1, Upper: []Value{}, UpperInclusive: true}, 6},
		{ScanSpec{Index: 0, Upper: []Value{}, UpperInclusive: true}, 6},
		{ScanSpec{Index: 1, Upper: []Value{}}, 0},
		{ScanSpec{Index: 0, Upper: []Value{}}, 0},
		{ScanSpec{Index: 0, Upper: []Value{}, Reverse: true}, 0},
	} {
		if got := count(c.spec); got != c.want {
			t.Errorf("Scan %s delivered %d rows, want %d", fmtSpec(c.spec), got, c.want)
		}
	}
}
