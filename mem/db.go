package mem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/semaphore"
)

// CommitLog is the commit hook: it receives every committing transaction's
// redo record and returns the LSN it assigned. The engine calls it after
// validation, with the transaction's row locks held and before any of its
// writes is visible, so it must be quick: take the record (copy what it
// keeps; r is only valid during the call), assign the next LSN, and return.
// Waiting for durability belongs after Commit returns, keyed by the LSN.
// Calls come from many goroutines, but one at a time (the engine validates
// and takes the LSN in one step, so that LSN order is serial order: see
// Tx.commitWrites). LSNs must be strictly increasing, with no gaps, from 1
// to 2^62-1 (what a row's TID word holds). An error aborts the transaction: nothing of it
// becomes visible; so does an LSN out of that range or not above the
// database's LastLSN when the call began.
type CommitLog interface {
	Commit(r *Redo) (lsn uint64, err error)
}

// Counter is the CommitLog used when no log is configured: it only counts.
type Counter struct{ last atomic.Uint64 }

// NewCounter returns a Counter whose next LSN is after+1.
func NewCounter(after uint64) *Counter {
	c := &Counter{}
	c.last.Store(after)
	return c
}

// Commit assigns the next LSN.
func (c *Counter) Commit(*Redo) (uint64, error) { return c.last.Add(1), nil }

// Options configure a DB.
type Options struct {
	// Log receives redo records and assigns LSNs. Nil means a Counter
	// starting after StartLSN: no log.
	Log CommitLog
	// StartLSN is the LSN the database starts at (the last LSN recovered).
	StartLSN uint64
	// Logger receives engine events. Nil means no output.
	Logger hclog.Logger
}

// DB is an in-memory database: a catalog of tables and the transactions
// over them. All methods are safe for concurrent use.
type DB struct {
	log    CommitLog
	logger hclog.Logger

	// gate orders commits against whole-database events. Every commit and
	// apply holds it shared from its first lock to its last install; DDL
	// and snapshot starts hold it exclusively, so they see no commit
	// half-done.
	gate sync.RWMutex

	// order is held by a writing commit from its validation until the log
	// has given it an LSN, so that LSN order is an order the transactions
	// serialize in (Tx.commitWrites).
	order sync.Mutex

	ddlMu     *semaphore.Weighted // serializes DDL, a lock whose waits can give up (lockDDL, holdDDL)
	applyMu   sync.Mutex          // serializes Apply
	nextID    uint64              // written holding ddlMu and the gate, read holding either; table ids are uint32, so past MaxUint32 they are used up
	catalog   atomic.Pointer[catalog]
	online    atomic.Pointer[onlineBuild] // the index build CreateIndex runs, if any
	applying  atomic.Pointer[indexBuild]  // the index build of a CreateIndex Apply applied, if one runs
	fault     atomic.Pointer[error]       // why Apply refuses every record: an index it applied did not fit the rows
	lsn       atomic.Uint64               // highest LSN installed; lower ones may still be installing unless the gate is held exclusively
	schema    atomic.Uint64               // the LSN of the last schema change, stored before it is published
	snaps     atomic.Pointer[[]*Snapshot]
	statePool sync.Pool // *txState
}

type catalog struct {
	byName map[string]*Table
	byID   map[uint32]*Table
}

// Open returns an empty database.
func Open(opts Options) *DB {
	db := &DB{log: opts.Log, logger: opts.Logger, nextID: 1, ddlMu: semaphore.NewWeighted(1)}
	if db.log == nil {
		db.log = NewCounter(opts.StartLSN)
	}
	if db.logger == nil {
		db.logger = hclog.NewNullLogger()
	}
	db.lsn.Store(opts.StartLSN)
	db.catalog.Store(&catalog{byName: map[string]*Table{}, byID: map[uint32]*Table{}})
	db.statePool.New = func() any { return new(txState) }
	return db
}

// lockDDL takes ddlMu, or gives up when ctx ends first: a schema change
// waits for the one before it, which may be an index build of many
// seconds, no longer than its caller does.
// Created reports whether a table of id was created in this database,
// though it may have been dropped since: false for one whose creation a
// standby has not applied yet.
func (db *DB) Created(id uint32) bool {
	db.gate.RLock()
	defer db.gate.RUnlock()
	return uint64(id) < db.nextID
}

func (db *DB) lockDDL(ctx context.Context) error {
	if err := db.ddlMu.Acquire(ctx, 1); err != nil {
		return fmt.Errorf("mem: the schema change waited for the one before it (an index build?) until its caller gave up: %w", context.Cause(ctx))
	}
	return nil
}

// holdDDL takes ddlMu, however long the schema change before takes.
func (db *DB) holdDDL() { _ = db.ddlMu.Acquire(context.Background(), 1) } // Background never ends

// unlockDDL lets the next schema change go.
func (db *DB) unlockDDL() { db.ddlMu.Release(1) }

// LastLSN returns the highest LSN whose changes are installed. Commits
// install concurrently, so a lower LSN may still be installing (Drain).
func (db *DB) LastLSN() uint64 { return db.lsn.Load() }

// Drain waits until no commit or apply is half done, and returns
// LastLSN as of then: every LSN up to it is installed. It holds the gate
// exclusively for a moment, so commits that start meanwhile wait.
func (db *DB) Drain() uint64 {
	db.gate.Lock()
	defer db.gate.Unlock()
	return db.lsn.Load()
}

// applied records that the changes up to lsn, applied from a log or an
// image (Apply, a Replayer, a Loader) rather than committed here, are
// installed: a Counter goes on after them, so that a later local commit
// never takes an LSN a reader may have seen on a row (its validation
// would take an old version for the one it read).
func (db *DB) applied(lsn uint64) {
	if c, ok := db.log.(*Counter); ok {
		for cur := c.last.Load(); cur < lsn && !c.last.CompareAndSwap(cur, lsn); cur = c.last.Load() {
		}
	}
	db.advance(lsn)
}

func (db *DB) advance(lsn uint64) {
	for {
		cur := db.lsn.Load()
		if lsn <= cur || db.lsn.CompareAndSwap(cur, lsn) {
			return
		}
	}
}

// logCommit hands r to the commit hook and returns the LSN it assigned,
// which must fit a TID word (1 to tidLSN) and be above every LSN
// installed before the call: one past tidLSN would be stored corrupted
// in the TIDs (its high bits read as locked or absent), and one not
// above would make the new versions look no newer than the old. Either
// fails the commit as the hook's own error does: nothing of it becomes
// visible.
func (db *DB) logCommit(r *Redo) (uint64, error) {
	prev := db.LastLSN()
	lsn, err := db.log.Commit(r)
	switch {
	case err != nil:
		return 0, err
	case lsn == 0 || lsn > tidLSN:
		return 0, fmt.Errorf("the log assigned LSN %d, outside 1 to %d", lsn, uint64(tidLSN))
	case lsn <= prev:
		return 0, fmt.Errorf("the log assigned LSN %d, not above LSN %d, installed before", lsn, prev)
	}
	return lsn, nil
}

// Table is a handle on a table. It stays usable until the table is
// dropped; operations on a dropped table fail with ErrNoTable.
type Table struct {
	db      *DB
	id      uint32
	name    string
	state   atomic.Pointer[tableState]
	heap    *heap
	rows    atomic.Int64
	dropped atomic.Bool
	created uint64 // the LSN that created it
	// removed is the LSN of the last commit installed that took an entry
	// out of the table's indexes (a delete, or an update that changed a
	// secondary key): what a transaction that found a key absent or a
	// range short of rows may have seen (Tx.Seen). Raised before the
	// entries go.
	removed atomic.Uint64

	// installMu is held shared by every install into the table and
	// exclusively by a validation that re-runs lookups or scans of it, so
	// that all of a validation's checks see one instant: see Tx.validate.
	// Taken in table id order.
	installMu sync.RWMutex
}

// tableState is a table's schema with its index structures, replaced as a
// whole by index DDL.
type tableState struct {
	s   *schema
	idx []index // parallel to s.indexes
	// build, if set, says that the last index is being built
	// (CreateIndex): commits keep it up to date, but it is not part of
	// the table's definition yet, and reads may not use it.
	build *indexBuild
}

// indexBuild is what commits tell an online CreateIndex.
type indexBuild struct {
	// lsn, for a build Apply started (buildApplied), is the LSN of the
	// CreateIndex it applies: the index is in the table's definition
	// then, and reads by it wait for ready, which is closed once they
	// may use it. Zero for a CreateIndex of this node's.
	lsn   uint64
	ready chan struct{}
	// failed, set before ready is closed, says why a build Apply
	// started cannot end: this node's rows break the unique index
	// (DB.fault). The index stays unreadable, and writes to the table
	// are refused with that error rather than told to wait.
	failed atomic.Pointer[error]
	mu     sync.Mutex
	// moved lists the rows of a unique index that commits moved to new
	// slots: the entries of the new slots went in unchecked (an entry
	// moves with its row), but the build may not have checked the old
	// one yet.
	moved []uint64
}

// note adds a row to moved.
func (b *indexBuild) note(rid uint64) {
	b.mu.Lock()
	b.moved = append(b.moved, rid)
	b.mu.Unlock()
}

// take returns moved and empties it.
func (b *indexBuild) take() []uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.moved
	b.moved = nil
	return m
}

// fault returns why the build cannot end (failed), or nil.
func (b *indexBuild) fault() error {
	if f := b.failed.Load(); f != nil {
		return *f
	}
	return nil
}

// keeps reports whether index ix of then, a state of the same table, is
// still one of st's: commits still keep it up to date, so a lookup or a
// scan that used it can be checked again by it. Adding an index (its
// build starting, ending or failing) keeps the others; dropping one
// keeps the rest, at ordinals that may have moved.
func (st *tableState) keeps(then *tableState, ix int) bool {
	if st == then {
		return true
	}
	return slices.Contains(st.idx, then.idx[ix])
}

// readable returns how many of the table's indexes reads may use: all
// but one being built.
func (st *tableState) readable() int {
	if st.build != nil {
		return len(st.s.indexes) - 1
	}
	return len(st.s.indexes)
}

// defined returns how many of the table's indexes its definition has:
// all but one this node is building for a CreateIndex not logged yet.
func (st *tableState) defined() int {
	if st.build != nil && st.build.lsn == 0 {
		return len(st.s.indexes) - 1
	}
	return len(st.s.indexes)
}

// usable returns an error unless reads may use index ix.
func (st *tableState) usable(ix int) error {
	switch {
	case ix < 0 || ix >= st.defined():
		return errorf(ErrNoIndex, "table %q has no index %d", st.s.def.Name, ix)
	case ix >= st.readable():
		if err := st.build.fault(); err != nil {
			return err
		}
		return errorf(ErrBuilding, "table %q index %q, whose CreateIndex this node applied from its primary at LSN %d: read by it again once it is built, or from the primary", st.s.def.Name, st.s.indexes[ix].name, st.build.lsn)
	}
	return nil
}

// def returns the table's definition: without an index being built for a
// CreateIndex not logged yet.
func (st *tableState) def() TableDef {
	d := st.s.def.Clone()
	d.Indexes = d.Indexes[:st.defined()-1]
	return d
}

func newIndex(d indexDef, h *heap) index {
	if d.kind == Hash {
		return newHashIndex(h)
	}
	return newOrderedIndex()
}

// CreatedLSN returns the LSN of the change that created the table.
func (t *Table) CreatedLSN() uint64 { return t.created }

// ID returns the table's stable id.
func (t *Table) ID() uint32 { return t.id }

// Name returns the table's name.
func (t *Table) Name() string { return t.name }

// Def returns the table's definition.
func (t *Table) Def() TableDef { return t.state.Load().def() }

// Column returns the ordinal of the named column.
func (t *Table) Column(name string) (int, error) { return t.state.Load().s.column(name) }

// CheckValue returns the error a write of v into column c would get (a
// wrong type, NULL into NOT NULL, a value too long), or nil.
func (t *Table) CheckValue(c int, v Value) error { return t.state.Load().s.checkValue(c, v) }

// Index returns the ordinal of the named index; "primary" is 0. An index
// this node's CreateIndex is still building is not found. One built for a
// CreateIndex that Apply applied is found, and IndexReady tells when
// reads may use it.
func (t *Table) Index(name string) (int, error) { return t.state.Load().index(name) }

// index is Table.Index in state st.
func (st *tableState) index(name string) (int, error) {
	ix, err := st.s.indexByName(name)
	if err == nil && ix >= st.defined() {
		return 0, errorf(ErrNoIndex, "table %q index %q (it is being built)", st.s.def.Name, name)
	}
	return ix, err
}

// Building returns nil, or, while an index Apply added is being built, a
// channel closed when it is built: a commit that fails with ErrBuilding
// may be tried again then.
func (db *DB) Building() <-chan struct{} {
	if b := db.applying.Load(); b != nil {
		return b.ready
	}
	return nil
}

// IndexReady returns nil if reads may use index ix, or else a channel
// that is closed when they may: until then, an index that Apply's
// CreateIndex added is being built, and reads by it fail with
// ErrBuilding. It returns nil too once that build has failed, which no
// wait mends: reads by the index then fail with its ErrCorrupt.
func (t *Table) IndexReady(ix int) <-chan struct{} {
	if st := t.state.Load(); ix >= st.readable() && ix < st.defined() && st.build.fault() == nil {
		return st.build.ready
	}
	return nil
}

// Table returns the named table.
func (db *DB) Table(name string) (*Table, error) {
	t, ok := db.catalog.Load().byName[name]
	if !ok {
		return nil, errorf(ErrNoTable, "%q", name)
	}
	return t, nil
}

// SchemaLSN returns the LSN of the last schema change. A look at the
// catalog (a table's definition, the list of tables, a table not found)
// depends on no commit after the SchemaLSN read after it.
func (db *DB) SchemaLSN() uint64 { return db.schema.Load() }

// tableByID returns a table by id.
func (db *DB) tableByID(id uint32) (*Table, error) {
	t, ok := db.catalog.Load().byID[id]
	if !ok {
		return nil, errorf(ErrNoTable, "id %d", id)
	}
	return t, nil
}

// Tables returns the definitions of all tables, by name.
func (db *DB) Tables() []TableDef {
	cat := db.catalog.Load()
	out := make([]TableDef, 0, len(cat.byName))
	for _, t := range cat.byName {
		out = append(out, t.Def())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ddl runs one schema change with commits held off: prepare (which may
// fail, changing nothing), log op unless applying one logged at applyLSN,
// then publish.
func (db *DB) ddl(op Op, applyLSN uint64, prepare func() error, publish func(lsn uint64)) (uint64, error) {
	db.gate.Lock()
	defer db.gate.Unlock()
	if prepare != nil {
		if err := prepare(); err != nil {
			return 0, err
		}
	}
	lsn := applyLSN
	if lsn == 0 {
		var err error
		if lsn, err = db.logCommit(&Redo{Ops: []Op{op}}); err != nil {
			return 0, fmt.Errorf("mem: log %s: %w", op.Kind, err)
		}
	}
	db.schema.Store(lsn)
	publish(lsn)
	db.applied(lsn) // a local change's LSN came from the log: a no-op there
	return lsn, nil
}

// CreateTable creates a table and returns its handle.
func (db *DB) CreateTable(def TableDef) (*Table, error) {
	return db.CreateTableContext(context.Background(), def)
}

// CreateTableContext is CreateTable that waits for the schema change
// before it (an index build may take seconds) only until ctx ends.
func (db *DB) CreateTableContext(ctx context.Context, def TableDef) (*Table, error) {
	def.ID = 0
	t, _, err := db.createTable(ctx, def, 0)
	return t, err
}

func (db *DB) createTable(ctx context.Context, def TableDef, applyLSN uint64) (*Table, uint64, error) {
	if err := db.lockDDL(ctx); err != nil {
		return nil, 0, err
	}
	defer db.unlockDDL()
	if def.ID == 0 {
		if db.nextID > math.MaxUint32 {
			return nil, 0, errorf(ErrLimit, "table %q: all table ids are used", def.Name)
		}
		def.ID = uint32(db.nextID)
	}
	s, err := compileSchema(def)
	if err != nil {
		return nil, 0, err
	}
	cat := db.catalog.Load()
	if _, ok := cat.byName[def.Name]; ok {
		return nil, 0, errorf(ErrTableExist, "%q", def.Name)
	}
	if _, ok := cat.byID[def.ID]; ok {
		return nil, 0, errorf(ErrTableExist, "id %d", def.ID)
	}
	t := &Table{db: db, id: def.ID, name: def.Name, heap: newHeap(s.minRow)}
	st := &tableState{s: s}
	for _, d := range s.indexes {
		st.idx = append(st.idx, newIndex(d, t.heap))
	}
	t.state.Store(st)
	lsn, err := db.ddl(Op{Kind: OpCreateTable, Table: def.ID, Data: encodeTableDef(nil, s.def)}, applyLSN, nil, func(lsn uint64) {
		t.created = lsn
		next := cat.clone()
		next.byName[t.name] = t
		next.byID[t.id] = t
		db.catalog.Store(next)
		if uint64(def.ID) >= db.nextID {
			db.nextID = uint64(def.ID) + 1
		}
	})
	if err != nil {
		return nil, 0, err
	}
	db.logger.Info("table created", "table", t.name, "table-id", t.id, "lsn", lsn)
	return t, lsn, nil
}

func (c *catalog) clone() *catalog {
	n := &catalog{byName: make(map[string]*Table, len(c.byName)+1), byID: make(map[uint32]*Table, len(c.byID)+1)}
	for k, v := range c.byName {
		n.byName[k] = v
	}
	for k, v := range c.byID {
		n.byID[k] = v
	}
	return n
}

// DropTable drops a table and all its rows, and returns the LSN of the
// change.
func (db *DB) DropTable(name string) (uint64, error) {
	return db.DropTableContext(context.Background(), name)
}

// DropTableContext is DropTable that waits for the schema change before
// it only until ctx ends.
func (db *DB) DropTableContext(ctx context.Context, name string) (uint64, error) {
	t, err := db.Table(name)
	if err != nil {
		return 0, err
	}
	return db.dropTable(ctx, t, 0)
}

func (db *DB) dropTable(ctx context.Context, t *Table, applyLSN uint64) (uint64, error) {
	if err := db.lockDDL(ctx); err != nil {
		return 0, err
	}
	defer db.unlockDDL()
	if t.dropped.Load() {
		return 0, errorf(ErrNoTable, "%q", t.name)
	}
	lsn, err := db.ddl(Op{Kind: OpDropTable, Table: t.id}, applyLSN, nil, func(lsn uint64) {
		next := db.catalog.Load().clone()
		delete(next.byName, t.name)
		delete(next.byID, t.id)
		t.dropped.Store(true)
		db.catalog.Store(next)
	})
	if err == nil {
		db.logger.Info("table dropped", "table", t.name, "table-id", t.id, "lsn", lsn)
	}
	return lsn, err
}

// CreateIndex adds a secondary index to a table and builds it from the
// table's rows, and returns the LSN of the change. Commits go on while it
// builds (see createIndex); other schema changes and the start of a
// snapshot wait. Canceling ctx stops the build and leaves the table as
// it was, with ctx's error, unless the index is being logged already;
// it also ends the wait for the schema change before, if one runs.
func (db *DB) CreateIndex(ctx context.Context, table string, def IndexDef) (uint64, error) {
	t, err := db.Table(table)
	if err != nil {
		return 0, err
	}
	return db.createIndex(ctx, t, def, 0)
}

// createIndex adds an index. Applying one logged at applyLSN (recovery,
// a standby) builds it with commits held off: the records after it may
// need it. A new one is built online, in three steps:
//
//  1. With commits held off for an instant, the index is published as
//     being built: every commit from then on adds and removes its rows'
//     entries, as for any index (and claims keys of a unique one), but it
//     is not in the table's definition and reads cannot use it.
//  2. Meanwhile a filler gives it the rows that were there before.
//  3. With commits held off again, the change is logged and the index
//     becomes part of the table at its LSN; the log holds it at the
//     point where the index holds exactly the rows of the commits before.
//
// A failure (a unique key two rows hold, the end of ctx, Apply: see
// stopBuild) takes the index out again.
func (db *DB) createIndex(ctx context.Context, t *Table, def IndexDef, applyLSN uint64) (uint64, error) {
	if err := db.lockDDL(ctx); err != nil {
		return 0, err
	}
	defer db.unlockDDL()
	if t.dropped.Load() {
		return 0, errorf(ErrNoTable, "%q", t.name)
	}
	old := t.state.Load()
	if old.build != nil {
		// With ddlMu free, only a build that failed is left (a node
		// promoted since): its index stays the last, unreadable, until
		// it is dropped.
		if err := old.build.fault(); err != nil {
			return 0, err
		}
		return 0, errorf(ErrBuilding, "table %q: its index %q is being built", t.name, old.s.indexes[len(old.s.indexes)-1].name)
	}
	s, err := old.s.withIndex(def)
	if err != nil {
		return 0, err
	}
	ix := len(s.indexes) - 1
	op := Op{Kind: OpCreateIndex, Table: t.id, Data: encodeIndexDef(nil, def)}
	if applyLSN != 0 {
		idx := old.idx[:len(old.idx):len(old.idx)]
		var built index
		lsn, err := db.ddl(op, applyLSN,
			func() (err error) {
				built, err = t.buildIndex(s, ix)
				return err
			},
			func(uint64) { t.state.Store(&tableState{s: s, idx: append(idx, built)}) })
		if err == nil {
			db.logger.Info("index created", "table", t.name, "index", def.Name, "kind", def.Kind.String(), "entries", built.entries(), "lsn", lsn)
		}
		return lsn, err
	}
	return db.buildOnline(ctx, t, old, s, op)
}

// onlineBuild is the online CreateIndex in progress, for Apply to stop.
type onlineBuild struct {
	cancel context.CancelCauseFunc
	done   chan struct{} // closed once the build is over, its index in or out
}

// buildOnline is createIndex's online build of the last index of s; the
// caller holds ddlMu.
func (db *DB) buildOnline(ctx context.Context, t *Table, old *tableState, s *schema, op Op) (uint64, error) {
	ix := len(s.indexes) - 1
	d := &s.indexes[ix]
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	ob := &onlineBuild{cancel: cancel, done: make(chan struct{})}
	db.online.Store(ob)
	defer func() {
		db.online.Store(nil)
		cancel(nil)
		close(ob.done)
	}()
	x := newIndex(*d, t.heap)
	if h, ok := x.(*hashIndex); ok {
		h.reserve(t.rows.Load())
	}
	b := &indexBuild{}
	building := &tableState{s: s, idx: append(old.idx[:len(old.idx):len(old.idx)], x), build: b}
	db.gate.Lock()
	t.state.Store(building)
	db.gate.Unlock()
	db.logger.Info("index build started", "table", t.name, "index", d.name, "kind", d.kind.String(), "rows", t.rows.Load())
	f := newFiller(t, s, ix, x)
	lsn, err := func() (uint64, error) {
		if err := f.backfill(ctx, b); err != nil {
			return 0, err
		}
		if h, ok := x.(*hashIndex); ok {
			h.fit()
		}
		return db.ddl(op, 0, func() error { return f.recheck(b) }, func(uint64) { t.state.Store(&tableState{s: s, idx: building.idx}) })
	}()
	if err != nil {
		db.gate.Lock()
		t.state.Store(old)
		db.gate.Unlock()
		db.logger.Info("index build failed", "table", t.name, "index", d.name, "error", err)
		return 0, err
	}
	db.logger.Info("index created", "table", t.name, "index", d.name, "kind", d.kind.String(), "entries", x.entries(), "lsn", lsn, "took", time.Since(start))
	return lsn, nil
}

// buildApplied is Apply's CreateIndex (at lsn) on a database that serves
// reads while it applies (a standby): the index is published with the
// change, as being built, and is built as buildOnline builds one, while
// the records after it apply and keep it up to date; reads by it wait
// (IndexReady). Building it with the applies held off would hold them
// off for the whole build, and with them the acks of a primary whose
// commits wait for this node to apply them. The build holds ddlMu until
// it is over: the next schema change waits for it.
//
// A unique index whose rows here break it (two hold a key, which the
// primary found none did) tells that this node's rows are not its
// primary's: Apply refuses every record from then on (fault), as it
// refuses one that does not fit, and reads by the index fail.
func (db *DB) buildApplied(t *Table, def IndexDef, lsn uint64) error {
	db.holdDDL()
	old := t.state.Load()
	s, err := old.s.withIndex(def)
	if err != nil {
		db.unlockDDL()
		return fmt.Errorf("apply LSN %d: %w", lsn, err)
	}
	ix := len(s.indexes) - 1
	d := &s.indexes[ix]
	x := newIndex(*d, t.heap)
	if h, ok := x.(*hashIndex); ok {
		h.reserve(t.rows.Load())
	}
	b := &indexBuild{lsn: lsn, ready: make(chan struct{})}
	building := &tableState{s: s, idx: append(old.idx[:len(old.idx):len(old.idx)], x), build: b}
	op := Op{Kind: OpCreateIndex, Table: t.id, Data: encodeIndexDef(nil, def)}
	// Logged already (applyLSN set), so it cannot fail.
	_, _ = db.ddl(op, lsn, nil, func(uint64) { t.state.Store(building) })
	db.applying.Store(b)
	db.logger.Info("index build started", "table", t.name, "index", d.name, "kind", d.kind.String(), "rows", t.rows.Load(), "lsn", lsn)
	start := time.Now()
	go func() {
		defer db.unlockDDL()
		defer close(b.ready)
		defer db.applying.Store(nil)
		f := newFiller(t, s, ix, x)
		err := f.backfill(context.Background(), b)
		if h, ok := x.(*hashIndex); ok && err == nil {
			h.fit()
		}
		db.gate.Lock()
		if err == nil {
			if err = f.recheck(b); err == nil {
				t.state.Store(&tableState{s: s, idx: building.idx})
			}
		}
		db.gate.Unlock()
		if err != nil {
			fault := fmt.Errorf("%w: LSN %d added index %q to table %q, whose rows here do not fit it (%w): they are not the primary's, and this node must be imaged again", ErrCorrupt, lsn, d.name, t.name, err)
			b.failed.Store(&fault)
			db.fault.Store(&fault)
			db.logger.Error("an index applied from the log does not fit the rows", "table", t.name, "index", d.name, "lsn", lsn, "error", err)
			return
		}
		db.logger.Info("index created", "table", t.name, "index", d.name, "kind", d.kind.String(), "entries", x.entries(), "lsn", lsn, "took", time.Since(start))
	}()
	return nil
}

// stopBuild stops the online index build, if one runs, and returns once
// it is over: a node that applies its primary's log (a standby, once
// demoted) makes no schema change of its own, and the index a build
// keeps would check what the primary committed. The caller holds
// neither the gate nor ddlMu.
func (db *DB) stopBuild() {
	if ob := db.online.Load(); ob != nil {
		ob.cancel(errorf(ErrConflict, "the node applies its primary's log now, as a standby: the index build stopped"))
		<-ob.done
	}
}

// DropIndex removes a secondary index and returns the LSN of the change.
func (db *DB) DropIndex(table, name string) (uint64, error) {
	return db.DropIndexContext(context.Background(), table, name)
}

// DropIndexContext is DropIndex that waits for the schema change before
// it only until ctx ends.
func (db *DB) DropIndexContext(ctx context.Context, table, name string) (uint64, error) {
	t, err := db.Table(table)
	if err != nil {
		return 0, err
	}
	return db.dropIndex(ctx, t, name, 0)
}

func (db *DB) dropIndex(ctx context.Context, t *Table, name string, applyLSN uint64) (uint64, error) {
	if err := db.lockDDL(ctx); err != nil {
		return 0, err
	}
	defer db.unlockDDL()
	if t.dropped.Load() {
		return 0, errorf(ErrNoTable, "%q", t.name)
	}
	old := t.state.Load()
	s, ix, err := old.s.withoutIndex(name)
	if err != nil {
		return 0, err
	}
	lsn, err := db.ddl(Op{Kind: OpDropIndex, Table: t.id, Data: []byte(name)}, applyLSN, nil, func(lsn uint64) {
		idx := append(append([]index(nil), old.idx[:ix]...), old.idx[ix+1:]...)
		next := &tableState{s: s, idx: idx}
		if ix < len(old.idx)-1 {
			// A build that failed (the only kind left with ddlMu free)
			// keeps its index, still the last, unreadable: without it
			// the index, short of the rows the build did not reach,
			// would serve reads and unique checks.
			next.build = old.build
		}
		t.state.Store(next)
	})
	if err == nil {
		db.logger.Info("index dropped", "table", t.name, "index", name, "lsn", lsn)
	}
	return lsn, err
}

// buildIndex builds index ix of schema s from the table's rows. A unique
// index fails on a key two rows share (ErrNotUnique). The caller holds
// commits off.
func (t *Table) buildIndex(s *schema, ix int) (index, error) {
	if s.indexes[ix].kind == Hash {
		return t.buildHashIndex(s, ix)
	}
	x := newIndex(s.indexes[ix], t.heap)
	var key []byte
	var cands []uint64
	var err error
	t.heap.each(func(rid uint64, row []byte) bool {
		key = s.appendRowKey(key[:0], ix, row)
		if s.indexes[ix].unique {
			cands = x.lookup(key, cands[:0])
			for _, c := range cands {
				if eq, _ := s.rowKeyEqual(ix, t.heap.readOwned(c), key, nil); eq {
					err = notUnique(s, ix, key)
					return false
				}
			}
		}
		x.add(key, rid)
		return true
	})
	return x, err
}

// notUnique is the error of a build of unique index ix of s that found
// two rows with key. Not ErrDuplicate, which is a write's: the index
// cannot be built over the rows there are, and a client that reads
// ALREADY_EXISTS as "the index is there" would be misled.
func notUnique(s *schema, ix int, key []byte) error {
	return errorf(ErrNotUnique, "table %q index %q: key %s appears in more than one row", s.def.Name, s.indexes[ix].name, describeKey(s, ix, key))
}

// warmRows is how many rows ahead backfill prefetches hash entries.
const warmRows = 16

// progressEvery is how often a long index build logs how far it got.
var progressEvery = 2 * time.Second

// testHookBackfill, when set by a test, runs before backfill visits
// each page.
var testHookBackfill func(pg int)

// errBusy, from a unique check of a filler, says that a row holding the
// key is locked by a commit: the row is tried again once that is over.
var errBusy = errors.New("mem: a row with the key is being committed")

// filler gives an index being built (buildOnline) the entries of rows
// already in the table. It locks each row while its entry goes in, as a
// commit locks every row whose entries it changes: a commit that changes
// the row meanwhile waits for it, and then finds the entry to take out.
// A row a commit placed since the index was published has its entry
// already, and ensure adds no second one. For a unique index every row
// is checked against the other rows with its key, its entry there or
// not: a commit that moved a row to a new slot gave the slot its entry
// unchecked.
type filler struct {
	t            *Table
	s            *schema
	ix           int
	x            index
	key, scratch []byte
	cur, curTID  uint64             // the row whose entry goes in, and its TID
	check        func(uint64) error // f.unique, for a unique index
}

func newFiller(t *Table, s *schema, ix int, x index) *filler {
	f := &filler{t: t, s: s, ix: ix, x: x}
	if s.indexes[ix].unique {
		f.check = f.unique
	}
	return f
}

// unique decides whether row c, a candidate of the key of row f.cur,
// holds the same key.
func (f *filler) unique(c uint64) error {
	if c == f.cur {
		return nil
	}
	tid, row := f.t.heap.peek(c)
	switch {
	case tid&tidLocked != 0:
		return errBusy
	case tid&tidAbsent != 0:
		return nil
	}
	var eq bool
	if eq, f.scratch = f.s.rowKeyEqual(f.ix, row, f.key, f.scratch); !eq {
		return nil
	}
	// The error tells of both rows' commits (SeenLSN): the other row may
	// have been unlocked before its commit's LSN was the database's.
	return &seenError{notUnique(f.s, f.ix, f.key), max(tid, f.curTID) & tidLSN}
}

// row gives the row at rid its entry; false: a row with its key is being
// committed, so try it again later.
func (f *filler) row(rid uint64) (bool, error) {
	h := f.t.heap
	prev, ok := h.lock(rid)
	if !ok {
		return true, nil // gone: a commit took its entry out, or never put one in
	}
	f.cur, f.curTID = rid, prev
	f.key = f.s.appendRowKey(f.key[:0], f.ix, h.readOwned(rid))
	err := f.x.ensure(f.key, rid, f.check)
	h.setTID(rid, prev)
	if errors.Is(err, errBusy) {
		return false, nil
	}
	return true, err
}

// settle runs row for each of rids until each is done.
func (f *filler) settle(ctx context.Context, rids []uint64) error {
	for spin := 0; ; spin++ {
		left := rids[:0]
		for _, rid := range rids {
			done, err := f.row(rid)
			if err != nil {
				return err
			}
			if !done {
				left = append(left, rid)
			}
		}
		if rids = left; len(rids) == 0 {
			return nil
		}
		if err := f.stopped(ctx); err != nil {
			return err
		}
		backoff(spin)
	}
}

// stopped returns why the build must stop, if it must.
func (f *filler) stopped(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	return fmt.Errorf("mem: table %q: index %q: build stopped: %w", f.t.name, f.s.indexes[f.ix].name, context.Cause(ctx))
}

// backfill gives the index an entry for every row in the table when it
// was published, then checks the rows commits moved meanwhile (b).
func (f *filler) backfill(ctx context.Context, b *indexBuild) error {
	h := f.t.heap
	_, warm := f.x.(*hashIndex)
	var later []uint64
	// Rows in pages added since the index was published came with
	// commits that gave them their entries.
	n, told := int(h.npages.Load()), time.Now()
	for pg := 0; pg < n; pg++ {
		if testHookBackfill != nil {
			testHookBackfill(pg)
		}
		if err := f.stopped(ctx); err != nil {
			return err
		}
		if time.Since(told) >= progressEvery {
			told = time.Now()
			f.t.db.logger.Info("index build progress", "table", f.t.name, "index", f.s.indexes[f.ix].name, "pages", pg, "of-pages", n, "entries", f.x.entries())
		}
		p := h.page(pg)
		p.mu.Lock()
		slots := p.nslots
		p.mu.Unlock()
		for slot := 0; slot < slots; slot++ {
			rid := ridOf(pg, slot)
			if warm && slot%warmRows == 0 {
				// Have the slots of the next rows' entries brought into
				// cache, so that their misses overlap; each row is read
				// again under its lock below.
				for r := rid; r < ridOf(pg, min(slot+warmRows, slots)); r++ {
					if _, b := h.peek(r); b != nil {
						f.key = f.s.appendRowKey(f.key[:0], f.ix, b)
						f.x.prefetch(f.key)
					}
				}
			}
			if h.tid(rid)&(tidLocked|tidAbsent) == tidAbsent {
				continue
			}
			done, err := f.row(rid)
			if err != nil {
				return err
			}
			if !done {
				later = append(later, rid)
			}
		}
	}
	if err := f.settle(ctx, later); err != nil {
		return err
	}
	for moved := b.take(); len(moved) > 0; moved = b.take() {
		if err := f.settle(ctx, moved); err != nil {
			return err
		}
	}
	return nil
}

// recheck checks the rows commits moved since backfill last looked, with
// commits held off, so that none moves another before the index is
// logged.
func (f *filler) recheck(b *indexBuild) error {
	for _, rid := range b.take() {
		done, err := f.row(rid)
		if err != nil {
			return err
		}
		if !done {
			return fmt.Errorf("mem: table %q: index %q: a row is locked with commits held off", f.t.name, f.s.indexes[f.ix].name)
		}
	}
	return nil
}

// buildHashIndex builds a hash index in two passes: it hashes every row's
// key into a list per shard, then fills each shard's slot array, sized
// once for its entries, while the array sits in cache. Adding the
// entries one by one instead would grow 256 arrays again and again and
// miss the cache on almost every entry.
func (t *Table) buildHashIndex(s *schema, ix int) (*hashIndex, error) {
	x := newHashIndex(t.heap)
	var parts [hashShards][]uint64 // each entry's hash and RID, in turn
	// Sized for perShard entries (two words each), so that few grow (and
	// copy) while they fill.
	if per := perShard(t.rows.Load()); per > 0 {
		c := 2 * per
		for i := range parts {
			parts[i] = make([]uint64, 0, c)
		}
	}
	var key []byte
	t.heap.each(func(rid uint64, row []byte) bool {
		key = s.appendRowKey(key[:0], ix, row)
		h, _ := x.hash(key)
		p := &parts[h&(hashShards-1)]
		*p = append(*p, h, x.word(rid))
		return true
	})
	var dup func(a, b uint64) error
	if s.indexes[ix].unique {
		var ka, kb []byte
		dup = func(a, b uint64) error {
			ka = s.appendRowKey(ka[:0], ix, t.heap.readOwned(a))
			kb = s.appendRowKey(kb[:0], ix, t.heap.readOwned(b))
			if !bytes.Equal(ka, kb) {
				return nil
			}
			return notUnique(s, ix, ka)
		}
	}
	for i := range x.shards {
		if err := x.shards[i].fill(parts[i], dup); err != nil {
			return nil, err
		}
		x.count.Add(int64(len(parts[i]) / 2))
		parts[i] = nil
	}
	return x, nil
}
