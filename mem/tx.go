package mem

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"unsafe"
)

// Transactions use optimistic concurrency control in the style of Silo
// (Tu et al., SOSP 2013), which gives serializability without read locks:
//
//   - Execution reads committed rows without locking, remembering each row's
//     TID (read set), each lookup that found nothing (absent set), each
//     scan's result (scan set) and each table name Tx.Table found no table
//     under (absent tables). Writes are buffered in the transaction and
//     read back by its own later reads.
//   - Commit, phase 1: lock the rows to update or delete in a global order
//     (table, RID), checking each is unchanged since it was read; place each
//     inserted row (and each key Relog found absent) in the heap as a
//     locked, absent placeholder; claim the new index keys (a unique index
//     rejects a key another row holds).
//   - Phase 2, validation: every row read still has its TID and is not
//     locked by another transaction; every lookup and scan, run again, gives
//     the same rows; no table was created under a name found absent.
//     Anything else is ErrConflict: the transaction aborts.
//   - Phase 3: the redo record goes to the CommitLog, which returns the LSN.
//     Phases 2 and 3 are one step, one writing commit at a time (DB.order).
//   - Phase 4: install the new versions with TID = LSN, drop stale index
//     entries, unlock.
//
// Re-running lookups and scans at validation is how phantoms are caught:
// precise (only a real change aborts) and cheap for the short lookups of
// the workloads mmdb serves. Re-runs happen with the install locks of the
// tables read held exclusively, so no commit lands between two checks
// (see validate); that instant, with all write locks held, is the
// serialization point.
//
// The LSN order is an order the transactions serialize in, so that every
// prefix of the log is a state of a serial history: a standby shows its
// readers each prefix in turn, and an image is one. Writers of a common
// row get LSNs in order by their row locks, and a reader of a row gets a
// higher LSN than its writer, which installs only once it has its LSN.
// The third dependency, a transaction T1 that read what a later T2
// overwrites, is what phase 2 and 3 being one step is for: T1 validated
// before T2 locked or claimed what T1 read (or T1 would have seen the
// lock), so T2 validates, and takes its LSN, after T1 took its. Were they
// apart, T2 could take its LSN between T1's validation and T1's, and the
// prefix up to T2's would hold T2 without T1, which came first. (Silo
// itself allows that and makes only epoch boundaries serial.)

type wop uint8

const (
	wInsert wop = iota + 1
	wUpdate
	wDelete
	// wAbsent is a key Relog found without a row: logged as a delete,
	// held at commit by a placeholder as an insert's key is, so that no
	// row takes the key between the check and the LSN, and installed as
	// nothing.
	wAbsent
)

type write struct {
	t      *Table
	op     wop
	seq    uint32 // which write of the transaction it was made as: a scan sees those made before it began
	key    []byte // encoded primary key
	row    []byte // new row (insert, update)
	rid    uint64 // the row (update, delete); the placeholder (insert, once placed)
	tid    uint64 // the row's TID when read (update, delete)
	locked bool   // rid is locked (or placed) by this transaction
	relog  bool   // Relog put the key in the record: it stays there whatever the transaction does to it
	upsert bool   // an insert by Upsert: a row that took the key since is a conflict, not a duplicate
	claims []claim
}

// placed reports whether commit places a new slot for the write rather
// than locking an existing row: an insert, or a key held for Relog.
func (w *write) placed() bool { return w.op == wInsert || w.op == wAbsent }

// claim is an index entry added at commit for this write's row.
type claim struct {
	ix  int
	key []byte
}

type hit struct{ rid, tid uint64 }

type readRec struct {
	t *Table
	hit
}

type absentRec struct {
	t   *Table
	st  *tableState // a schema change since that dropped index ix is a conflict (tableState.keeps)
	ix  int
	key []byte
}

type scanRec struct {
	t       *Table
	st      *tableState
	ix      int
	lo, hi  []byte
	reverse bool
	limit   int
	hits    []hit
}

// Tx is a transaction. A Tx is used by one goroutine at a time. After
// Commit or Rollback it is finished: every method returns ErrTxDone, and
// Rollback does nothing, so defer tx.Rollback() is always safe.
type Tx struct {
	db *DB
	*txState
}

// txState is the working state of a transaction. It is recycled through
// a pool when the transaction ends; the Tx handle never is, so a finished
// handle cannot reach a later transaction's state.
type txState struct {
	validating bool
	reads      []readRec
	absents    []absentRec
	scans      []scanRec
	noTables   [][]byte // names Tx.Table found no table under, in arena
	writes     []write
	byKey      map[string]int // write index by table id and key, once writes grow
	owned      map[ownKey]int // write index by row, during commit of many writes
	redo       Redo
	arena      []byte   // keys and rows of this transaction; recycled, so never handed out
	cands      []uint64 // point lookups' candidates
	scanCands  []uint64 // hash scans' candidates
	scratch    []byte
	hitBuf     []hit
	items      []oitem // ordered scan batches
	claimBuf   []claim // backing store of the writes' claims
	cmp        []byte  // keyEqual's buffer: never the buffer a key under comparison is in
	tables     []*Table
	ck         uniqueCtx
	checkFn    func(uint64) error // tx.uniqueCheck, bound once per state
	// deferred, set by a Replayer's worker, takes the keys a replayed
	// record takes in unique secondary indexes, which are then added
	// unchecked (see Replayer).
	deferred *[]uniqueKey
	// owns orders the transaction's rows of a table by the key of one
	// index, for scans and GetBy in a transaction of many writes (see
	// ownIndex); changed lists the writes changed since the first was
	// made, for each to take in; added counts the writes made (see
	// write.seq); wrote lists the tables written, once writes are many.
	owns    map[ixRef]*ownIndex
	changed []wref
	added   uint32
	wrote   []*Table
	wkey    []byte     // findWrite's map key
	merge   *mergeBufs // a merged scan's buffers, taken while it runs
	scanned int        // the hits of scans, for Size
}

// ixRef names an index of a table.
type ixRef struct {
	t  *Table
	ix int
}

// wref names a row whose write the transaction changed: its table and
// primary key, and the row the write had before (nil: none).
type wref struct {
	t        *Table
	key, old []byte
}

type ownKey struct {
	t   *Table
	rid uint64
}

const linearWrites = 8 // below this many writes, search them linearly

// Begin starts a transaction.
func (db *DB) Begin() *Tx {
	return &Tx{db: db, txState: db.statePool.Get().(*txState)}
}

// maxRecycledArena bounds the arena kept for the next transaction, and
// maxRecycled the bytes of each of its other buffers: a transaction that
// wrote or read a million rows must not leave buffers of that size in
// the pool, where a state in steady use outlives every collection (and
// the collector scans the buffers that hold pointers, used or not).
const (
	maxRecycledArena = 64 << 10
	maxRecycled      = 64 << 10
)

// recycle empties *s for the next transaction, or drops it when its
// capacity is past maxRecycled bytes. A buffer the transaction did not
// use (empty) is left as it is, without a store: a point read touches
// two or three of them, and finish runs for every transaction.
func recycle[T any](s *[]T) {
	if len(*s) > 0 {
		if !bound(s) {
			clear(*s)
			*s = (*s)[:0]
		}
	}
}

// bound drops *s, and reports it, when its capacity is past maxRecycled
// bytes; it is for the scratch buffers that their users empty as they
// take them.
func bound[T any](s *[]T) bool {
	var zero T
	if uintptr(cap(*s))*unsafe.Sizeof(zero) > maxRecycled {
		*s = nil
		return true
	}
	return false
}

// finish ends the transaction and recycles its state. Only what was used
// is reset: a point read touches two or three of these buffers.
func (tx *Tx) finish() {
	db, st := tx.db, tx.txState
	tx.db, tx.txState = nil, nil
	st.validating = false
	recycle(&st.reads)
	recycle(&st.absents)
	recycle(&st.scans)
	recycle(&st.noTables)
	if len(st.writes) > 0 {
		st.ck = uniqueCtx{}
	}
	// Writes are the one buffer its users shrink (removeWrite, a replayed
	// record's deletes of missing rows): one emptied that way is bounded
	// too.
	bound(&st.writes)
	recycle(&st.writes)
	recycle(&st.claimBuf)
	recycle(&st.redo.Ops)
	bound(&st.cands)
	bound(&st.scanCands)
	bound(&st.hitBuf)
	bound(&st.items)
	bound(&st.tables)
	bound(&st.scratch)
	bound(&st.cmp)
	bound(&st.wkey)
	st.byKey, st.owned, st.deferred, st.owns, st.merge = nil, nil, nil, nil, nil
	recycle(&st.changed)
	recycle(&st.wrote)
	st.added, st.scanned = 0, 0
	if cap(st.arena) > maxRecycledArena {
		st.arena = nil
	} else if len(st.arena) > 0 {
		st.arena = st.arena[:0]
	}
	db.statePool.Put(st)
}

// Sizes, in bytes, of what a transaction keeps per write, row read,
// absent key, scan and row a scan delivered, for Size. A write's counts
// the map and ordered-index entries a transaction of many writes adds.
const (
	writeBytes  = int(unsafe.Sizeof(write{})) + 64
	readBytes   = int(unsafe.Sizeof(readRec{}))
	absentBytes = int(unsafe.Sizeof(absentRec{}))
	nameBytes   = int(unsafe.Sizeof([]byte(nil)))
	scanBytes   = int(unsafe.Sizeof(scanRec{}))
	hitBytes    = int(unsafe.Sizeof(hit{}))
)

// Size returns about how many bytes of memory the transaction holds: its
// rows and keys, and the records of what it read, which its commit
// checks. It only grows until the transaction ends (zero then). A server
// bounds it: one client's transaction could otherwise take the node's
// memory before its commit is refused for its size.
func (tx *Tx) Size() int {
	if tx.db == nil {
		return 0
	}
	return len(tx.arena) + len(tx.writes)*writeBytes + len(tx.reads)*readBytes +
		len(tx.absents)*absentBytes + len(tx.scans)*scanBytes + tx.scanned*hitBytes +
		len(tx.noTables)*nameBytes
}

// keepScan records a scan for Commit to check again.
func (tx *Tx) keepScan(rec *scanRec) {
	tx.scans = append(tx.scans, *rec)
	tx.scanned += len(rec.hits)
}

// Writes returns how many rows the transaction writes so far: zero for a
// read-only one, whose commit gets no LSN, and once it is finished.
func (tx *Tx) Writes() int {
	if tx.db == nil {
		return 0
	}
	return len(tx.writes)
}

// Seen returns the largest LSN among the commits whose effects the
// transaction has read so far (zero: none, or it is finished): the
// versions of the rows it read, for each table where it found a key
// absent or scanned a range, the last commit that took entries out of
// that table's indexes, and the last schema change. A read-only
// transaction's result, or the failure of one that read, depends on no
// commit after Seen: a node that acknowledges only durable commits makes
// such a result wait until Seen is durable, so that no answer shows a
// commit a crash could take back. Take it before Commit or Rollback.
func (tx *Tx) Seen() uint64 {
	if tx.db == nil {
		return 0
	}
	seen := tx.db.schema.Load()
	for i := range tx.reads {
		seen = max(seen, tx.reads[i].tid&tidLSN)
	}
	for i := range tx.absents {
		seen = max(seen, tx.absents[i].t.removed.Load())
	}
	for i := range tx.scans {
		sc := &tx.scans[i]
		seen = max(seen, sc.t.removed.Load())
		for _, h := range sc.hits {
			seen = max(seen, h.tid&tidLSN)
		}
	}
	return seen // the rows updates and deletes found are among reads
}

// Rollback ends the transaction, discarding its writes. It leaves no trace:
// nothing was written outside the transaction. Rolling back a finished
// transaction does nothing.
func (tx *Tx) Rollback() {
	if tx.db == nil {
		return
	}
	tx.finish()
}

// RollbackChecked rolls the transaction back, as Rollback does, after it
// checks, as Commit would, that what the transaction read still holds:
// ErrConflict says another transaction changed it since, so a failure
// the transaction ended with (a condition that did not hold, a row not
// found), which rests on reads that no single instant saw together, may
// be one no serial order gives. Run it again. One read is an instant by
// itself and is not checked.
func (tx *Tx) RollbackChecked() error {
	if tx.db == nil {
		return ErrTxDone
	}
	defer tx.finish()
	if tx.oneRead() {
		return nil
	}
	tx.validating = true
	return tx.validate()
}

// oneRead reports whether the transaction read at most one row, key or
// table name, and scanned nothing: a read that is an instant by itself,
// which validation need not check.
func (tx *Tx) oneRead() bool {
	return len(tx.reads)+len(tx.absents)+len(tx.noTables) <= 1 && len(tx.scans) == 0
}

// Table returns the table named name, as DB.Table does, as a read of the
// transaction: when there is none (ErrNoTable), Commit fails with
// ErrConflict if a table of that name exists by then, for a transaction
// that found a table absent and then read it is one no serial order
// gives. Seen covers the lookup (it holds the schema's LSN).
func (tx *Tx) Table(name string) (*Table, error) {
	if tx.db == nil {
		return nil, ErrTxDone
	}
	t, err := tx.db.Table(name)
	if err != nil {
		start := len(tx.arena)
		tx.arena = append(tx.arena, name...)
		tx.noTables = append(tx.noTables, tx.arena[start:len(tx.arena):len(tx.arena)])
	}
	return t, err
}

// own copies b into the transaction's arena.
func (tx *Tx) own(b []byte) []byte {
	start := len(tx.arena)
	tx.arena = append(tx.arena, b...)
	return tx.arena[start:len(tx.arena):len(tx.arena)]
}

func (tx *Tx) state(t *Table) (*tableState, error) {
	if tx.db == nil {
		return nil, ErrTxDone
	}
	if t == nil || t.db != tx.db {
		return nil, errorf(ErrInvalid, "table handle from another database")
	}
	if t.dropped.Load() {
		return nil, errorf(ErrNoTable, "%q (dropped)", t.name)
	}
	return t.state.Load(), nil
}

// pk encodes a full primary key into the scratch buffer.
func (tx *Tx) pk(st *tableState, key []Value) ([]byte, error) {
	if n := len(st.s.indexes[0].cols); len(key) != n {
		return nil, errorf(ErrInvalid, "table %q: primary key has %d columns, got %d values", st.s.def.Name, n, len(key))
	}
	var err error
	tx.scratch, err = st.s.appendKey(tx.scratch[:0], 0, 0, key)
	return tx.scratch, err
}

// findWrite returns the index of this transaction's write of the row with
// the given primary key, or -1.
func (tx *Tx) findWrite(t *Table, key []byte) int {
	if tx.byKey != nil {
		tx.wkey = appendWmapKey(tx.wkey[:0], t, key)
		if i, ok := tx.byKey[string(tx.wkey)]; ok {
			return i
		}
		return -1
	}
	for i := range tx.writes {
		if w := &tx.writes[i]; w.t == t && bytes.Equal(w.key, key) {
			return i
		}
	}
	return -1
}

// appendWmapKey appends the key of byKey for the row of t with primary
// key key.
func appendWmapKey(dst []byte, t *Table, key []byte) []byte {
	return append(append(dst, byte(t.id>>24), byte(t.id>>16), byte(t.id>>8), byte(t.id)), key...)
}

func wmapKey(t *Table, key []byte) string {
	return string(appendWmapKey(nil, t, key))
}

func (tx *Tx) addWrite(w write) {
	w.seq = tx.added
	tx.added++
	tx.writes = append(tx.writes, w)
	tx.touched(w.t, w.key, nil)
	switch {
	case tx.byKey != nil:
		tx.byKey[wmapKey(w.t, w.key)] = len(tx.writes) - 1
		tx.noteTable(w.t)
	case len(tx.writes) > linearWrites:
		tx.byKey = make(map[string]int, 2*len(tx.writes))
		for i := range tx.writes {
			tx.byKey[wmapKey(tx.writes[i].t, tx.writes[i].key)] = i
			tx.noteTable(tx.writes[i].t)
		}
	}
}

// noteTable adds t to the tables written, which are few.
func (tx *Tx) noteTable(t *Table) {
	if !slices.Contains(tx.wrote, t) {
		tx.wrote = append(tx.wrote, t)
	}
}

// wroteTo reports whether the transaction has written (or may have
// written: a write taken back still counts) table t.
func (tx *Tx) wroteTo(t *Table) bool {
	if tx.byKey != nil {
		return slices.Contains(tx.wrote, t)
	}
	return tx.writesOn(t) > 0
}

// touched notes that the transaction changed its write of the row with
// primary key key of t, which had row old, for owns. A log that grows
// past the writes (owns not read for long: a job that scanned once and
// then writes on) drops owns instead, to be made again if read: that
// costs about what taking the changes in would have.
func (tx *Tx) touched(t *Table, key, old []byte) {
	if tx.owns != nil {
		tx.changed = append(tx.changed, wref{t, key, old})
		if len(tx.changed) > len(tx.writes)+trimChanges {
			clear(tx.changed)
			tx.owns, tx.changed = nil, tx.changed[:0]
		}
	}
}

// visible reads the committed version of a row. retry means the RID is
// stale (the row is gone and its index entries are being removed): look
// it up again. Executing, it waits for a locked row. Validating, it never
// waits: a row locked by another transaction is a conflict, and a row this
// one locked reads as committed (its own placeholder reads as absent).
func (tx *Tx) visible(t *Table, rid uint64) (tid uint64, row []byte, retry bool, err error) {
	if !tx.validating {
		tid, row = t.heap.read(rid)
		return tid, row, row == nil, nil
	}
	tid, row = t.heap.peek(rid)
	switch {
	case tid&tidLocked != 0:
		if tx.ownedWrite(t, rid) == nil {
			return 0, nil, false, errorf(ErrConflict, "table %q: a row read is being changed", t.name)
		}
		if tid&tidAbsent != 0 {
			return tid, nil, false, nil
		}
		return tid &^ tidLocked, t.heap.readOwned(rid), false, nil
	case tid&tidAbsent != 0:
		return tid, nil, true, nil
	}
	return tid, row, false, nil
}

// maxStaleRounds bounds how often a lookup retries a stale entry. An
// entry outlives its row only while the commit removing it runs, so a
// stale entry that stays is an engine bug: report it, do not spin.
const maxStaleRounds = 10000

// keyEqual reports whether row's key in index ix is key. It encodes into
// its own buffer, because key itself often lives in tx.scratch.
func (tx *txState) keyEqual(s *schema, ix int, row, key []byte) bool {
	var eq bool
	eq, tx.cmp = s.rowKeyEqual(ix, row, key, tx.cmp)
	return eq
}

// point finds the committed row with key in unique index ix.
//
// A candidate whose row has another key is a hash collision, or a stale
// entry: between the lookup and the read, the row moved (an update that
// outgrew its page) or was deleted, and another row took its slot. The
// two look alike, and only the second may hide the row, so a lookup that
// meets one runs again between two stamps of the index: if the stamps
// match, the entries it used held throughout and a miss is a miss.
func (tx *Tx) point(t *Table, st *tableState, ix int, key []byte) (hit, []byte, bool, error) {
	x := st.idx[ix]
	var stamp uint64
	stamped := false
	for round := 0; ; round++ {
		if round == maxStaleRounds {
			return hit{}, nil, false, errorf(ErrCorrupt, "table %q index %q: an entry for key %s points at no row and is not going away", t.name, st.s.indexes[ix].name, describeKey(st.s, ix, key))
		}
		if round > 0 {
			backoff(round)
		}
		if stamped {
			stamp = x.stamp(key)
		}
		tx.cands = x.lookup(key, tx.cands[:0])
		if testHookLookedUp != nil {
			testHookLookedUp(t)
		}
		again, other := false, false
		for _, c := range tx.cands {
			tid, row, retry, err := tx.visible(t, c)
			if err != nil {
				return hit{}, nil, false, err
			}
			if retry {
				again = true
				break
			}
			if row == nil {
				continue
			}
			if tx.keyEqual(st.s, ix, row, key) {
				return hit{c, tid}, row, true, nil
			}
			if tx.validating && tx.ownedWrite(t, c) != nil {
				// This transaction's own new entry for a row it changes,
				// which takes the key when it installs: neither a
				// collision nor a stale entry, so no reason to look again
				// (while other transactions' claims change the stamp).
				continue
			}
			other = true
		}
		switch {
		case again:
		case !other:
			return hit{}, nil, false, nil
		case stamped && x.stamp(key) == stamp:
			return hit{}, nil, false, nil // a collision, not a stale entry
		default:
			stamped = true
		}
	}
}

// testHookLookedUp, when set by a test, runs in point between the index
// lookup and the reads of the rows it found.
var testHookLookedUp func(t *Table)

// get reads the row with the given primary key as this transaction sees
// it, recording the read for validation.
func (tx *Tx) get(t *Table, st *tableState, key []byte) (Record, hit, bool, error) {
	if i := tx.findWrite(t, key); i >= 0 {
		w := &tx.writes[i]
		if w.op == wDelete || w.op == wAbsent {
			return Record{}, hit{}, false, nil
		}
		return Record{s: st.s, b: bytes.Clone(w.row)}, hit{w.rid, w.tid}, true, nil
	}
	return tx.pointRead(t, st, 0, key)
}

// pointRead reads the committed row with key in unique index ix and
// records the read for validation: the row's TID if found (while the row
// keeps its TID it keeps its key, and a unique key has one row), else the
// lookup, to be re-run.
func (tx *Tx) pointRead(t *Table, st *tableState, ix int, key []byte) (Record, hit, bool, error) {
	h, row, found, err := tx.point(t, st, ix, key)
	if err != nil {
		return Record{}, hit{}, false, err
	}
	if !found {
		tx.absents = append(tx.absents, absentRec{t: t, st: st, ix: ix, key: tx.own(key)})
		return Record{}, hit{}, false, nil
	}
	tx.reads = append(tx.reads, readRec{t: t, hit: h})
	return Record{s: st.s, b: row}, h, true, nil
}

// Get returns the row with the given primary key, and whether it exists.
func (tx *Tx) Get(t *Table, key []Value) (Record, bool, error) {
	st, err := tx.state(t)
	if err != nil {
		return Record{}, false, err
	}
	k, err := tx.pk(st, key)
	if err != nil {
		return Record{}, false, err
	}
	r, _, found, err := tx.get(t, st, k)
	return r, found, err
}

// Insert adds a row (all columns, in table order). A row with the same
// primary key gives ErrDuplicate; a duplicate in a unique secondary index
// is found at Commit.
func (tx *Tx) Insert(t *Table, row []Value) error {
	return tx.put(t, row, false)
}

// Upsert inserts a row or replaces the one with the same primary key.
func (tx *Tx) Upsert(t *Table, row []Value) error {
	return tx.put(t, row, true)
}

func (tx *Tx) put(t *Table, vals []Value, replace bool) error {
	st, err := tx.state(t)
	if err != nil {
		return err
	}
	start := len(tx.arena)
	if tx.arena, err = st.s.encodeRow(tx.arena, vals); err != nil {
		return err
	}
	row := tx.arena[start:len(tx.arena):len(tx.arena)]
	tx.scratch = st.s.appendRowKey(tx.scratch[:0], 0, row)
	key := tx.own(tx.scratch)
	_, h, found, err := tx.get(t, st, key)
	if err != nil {
		return err
	}
	if found && !replace {
		return errorf(ErrDuplicate, "table %q: primary key %s", t.name, describeKey(st.s, 0, key))
	}
	if i := tx.findWrite(t, key); i >= 0 {
		w := &tx.writes[i]
		tx.touched(t, key, w.row)
		w.row = row
		switch w.op {
		case wDelete:
			w.op = wUpdate
		case wAbsent:
			w.op, w.upsert = wInsert, replace
		}
		return nil
	}
	if found {
		tx.addWrite(write{t: t, op: wUpdate, key: key, row: row, rid: h.rid, tid: h.tid})
	} else {
		tx.addWrite(write{t: t, op: wInsert, key: key, row: row, upsert: replace})
	}
	return nil
}

// existing reads the row with the given primary key for a change to it:
// its encoded key (owned by the transaction), the row and its hit, or
// ErrNotFound.
func (tx *Tx) existing(t *Table, st *tableState, key []Value) ([]byte, Record, hit, error) {
	k, err := tx.pk(st, key)
	if err != nil {
		return nil, Record{}, hit{}, err
	}
	k = tx.own(k)
	cur, h, found, err := tx.get(t, st, k)
	if err == nil && !found {
		err = errorf(ErrNotFound, "table %q: primary key %s", t.name, describeKey(st.s, 0, k))
	}
	return k, cur, h, err
}

// Update changes some columns of the row with the given primary key.
// Primary key columns cannot change (delete and insert instead). A missing
// row gives ErrNotFound.
func (tx *Tx) Update(t *Table, key []Value, set []ColumnValue) error {
	st, err := tx.state(t)
	if err != nil {
		return err
	}
	for _, cv := range set {
		if slices.Contains(st.s.indexes[0].cols, cv.Column) {
			return errorf(ErrInvalid, "table %q: primary key column %q cannot be updated; delete and insert instead", t.name, st.s.cols[cv.Column].Name)
		}
	}
	k, cur, h, err := tx.existing(t, st, key)
	if err != nil {
		return err
	}
	start := len(tx.arena)
	if tx.arena, err = cur.patch(tx.arena, set); err != nil {
		return err
	}
	row := tx.arena[start:len(tx.arena):len(tx.arena)]
	if i := tx.findWrite(t, k); i >= 0 {
		tx.touched(t, k, tx.writes[i].row)
		tx.writes[i].row = row
		return nil
	}
	tx.addWrite(write{t: t, op: wUpdate, key: k, row: row, rid: h.rid, tid: h.tid})
	return nil
}

// Delete removes the row with the given primary key. A missing row gives
// ErrNotFound.
func (tx *Tx) Delete(t *Table, key []Value) error {
	st, err := tx.state(t)
	if err != nil {
		return err
	}
	k, _, h, err := tx.existing(t, st, key)
	if err != nil {
		return err
	}
	if i := tx.findWrite(t, k); i >= 0 {
		w := &tx.writes[i]
		tx.touched(t, k, w.row) // the row is gone (with the write, for an insert)
		switch {
		case w.op == wInsert && w.relog:
			w.op, w.row = wAbsent, nil
		case w.op == wInsert:
			tx.removeWrite(i)
		default:
			w.op, w.row = wDelete, nil
		}
		return nil
	}
	tx.addWrite(write{t: t, op: wDelete, key: k, rid: h.rid, tid: h.tid})
	return nil
}

// removeWrite drops write i, putting the last write in its place: a
// transaction's writes are in no particular order until Commit sorts
// them, so one change costs the same however many writes there are.
// (Deleting in place and rebuilding byKey made a transaction that
// inserts rows and deletes them again quadratic in its writes.)
func (tx *Tx) removeWrite(i int) {
	last := len(tx.writes) - 1
	if tx.byKey != nil {
		delete(tx.byKey, wmapKey(tx.writes[i].t, tx.writes[i].key))
	}
	if i != last {
		tx.writes[i] = tx.writes[last]
		if tx.byKey != nil {
			tx.byKey[wmapKey(tx.writes[i].t, tx.writes[i].key)] = i
		}
	}
	tx.writes[last] = write{}
	tx.writes = tx.writes[:last]
}

// Relog puts the row with the given primary key into the transaction's
// redo record as it is, changing nothing: its after-image (OpPut), or a
// delete of the key when there is no row (OpDelete). It reports whether
// the row exists. Applied on a standby the record leaves it exactly the
// row this database has, which is how mmdbd audit repairs a standby
// through the log. The transaction takes part in conflict detection as a
// writer of the key: an existing row is locked at commit and must still
// have the version read, as for Update; an absent key is held at commit
// as an insert holds its key, and must still be absent. So a concurrent
// change of the key serializes before the transaction (which then
// conflicts) or after it, with a higher LSN: a standby never gets a stale
// image after a newer one. A key the transaction writes is in its record
// already; Relog makes it stay there even if the transaction then inserts
// and deletes it again.
func (tx *Tx) Relog(t *Table, key []Value) (bool, error) {
	st, err := tx.state(t)
	if err != nil {
		return false, err
	}
	k, err := tx.pk(st, key)
	if err != nil {
		return false, err
	}
	k = tx.own(k)
	if i := tx.findWrite(t, k); i >= 0 {
		w := &tx.writes[i]
		w.relog = true
		return w.op != wDelete && w.op != wAbsent, nil
	}
	cur, h, found, err := tx.pointRead(t, st, 0, k)
	if err != nil {
		return false, err
	}
	if !found {
		tx.addWrite(write{t: t, op: wAbsent, key: k, relog: true})
		return false, nil
	}
	tx.addWrite(write{t: t, op: wUpdate, key: k, row: tx.own(cur.b), rid: h.rid, tid: h.tid, relog: true})
	return true, nil
}

func describeKey(s *schema, ix int, key []byte) string {
	vals, err := s.decodeKey(ix, key)
	if err != nil {
		return "(undecodable key)"
	}
	var b bytes.Buffer
	b.WriteByte('(')
	for i, v := range vals {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(v.String())
	}
	b.WriteByte(')')
	return b.String()
}

// ownedWrite returns this transaction's write of a row it has locked or
// placed, or nil.
func (tx *txState) ownedWrite(t *Table, rid uint64) *write {
	if tx.owned != nil {
		if i, ok := tx.owned[ownKey{t, rid}]; ok {
			return &tx.writes[i]
		}
		return nil
	}
	for i := range tx.writes {
		if w := &tx.writes[i]; w.locked && w.t == t && w.rid == rid {
			return w
		}
	}
	return nil
}

func (tx *Tx) markOwned(i int) {
	w := &tx.writes[i]
	w.locked = true
	if tx.owned != nil {
		tx.owned[ownKey{w.t, w.rid}] = i
	}
}

// Commit makes the transaction's writes visible atomically and returns its
// LSN (0 for a transaction that wrote nothing). ErrConflict means it
// serialized badly with another transaction and was rolled back; retry it.
// Any error leaves no trace of the transaction.
func (tx *Tx) Commit() (uint64, error) {
	if tx.db == nil {
		return 0, ErrTxDone
	}
	defer tx.finish()
	if len(tx.writes) == 0 {
		tx.validating = true
		if tx.oneRead() {
			return 0, nil // one point read is atomic by itself
		}
		return 0, tx.validate()
	}
	return tx.commitWrites()
}

// commitWrites is Commit for a transaction that writes. (Apart, so that
// both functions' defers are open-coded: Go gives up on that past 15
// returns times defers in one function, and every commit then paid for
// a deferred call's record.)
func (tx *Tx) commitWrites() (uint64, error) {
	db := tx.db
	db.gate.RLock()
	defer db.gate.RUnlock()
	for i := range tx.writes {
		if t := tx.writes[i].t; t.dropped.Load() {
			return 0, &seenError{errorf(ErrNoTable, "%q was dropped", t.name), db.schema.Load()}
		}
	}
	if err := tx.lockAndClaim(); err != nil {
		if errors.Is(err, ErrDuplicate) {
			// A taken key is final only if the reads that led to it still
			// hold; a key taken from reads gone stale is a conflict, and
			// the transaction run again may succeed.
			tx.validating = true
			if verr := tx.validate(); verr != nil {
				err = verr
			}
		}
		tx.abort()
		return 0, err
	}
	for i := range tx.writes {
		w := &tx.writes[i]
		op := Op{Kind: OpPut, Table: w.t.id, Data: w.row}
		if w.op == wDelete || w.op == wAbsent {
			op = Op{Kind: OpDelete, Table: w.t.id, Data: w.key}
		}
		tx.redo.Ops = append(tx.redo.Ops, op)
	}
	// Validation and the LSN are one step (db.order): the LSN order is
	// then an order the transactions serialize in, which readers of a
	// log prefix (a standby, an image) rely on. With its rows locked and
	// its keys claimed, a transaction validated is serialized; but
	// another one that a transaction validated before read rows or ranges
	// of, and that locks or claims them just after, would otherwise be
	// able to take its LSN first: a prefix holding it and not the first
	// is a state no serial history passes through.
	tx.validating = true
	db.order.Lock()
	err := tx.validate()
	var lsn uint64
	if err == nil {
		lsn, err = db.logCommit(&tx.redo)
		if err != nil {
			err = fmt.Errorf("mem: commit log: %w", err)
		}
	}
	db.order.Unlock()
	if err != nil {
		tx.abort()
		return 0, err
	}
	tx.install(lsn)
	db.advance(lsn)
	return lsn, nil
}

// lockAndClaim is commit phase 1. Rows to change are locked in (table,
// RID) order, so two committers never wait on each other in a cycle;
// inserts (and keys held for Relog) are placed after. A row changed or
// deleted since it was read is a conflict, and so is a unique key taken.
func (tx *Tx) lockAndClaim() error {
	if len(tx.writes) > 1 {
		slices.SortStableFunc(tx.writes, func(a, b write) int {
			if a.placed() != b.placed() {
				if a.placed() {
					return 1
				}
				return -1
			}
			if c := cmp.Compare(a.t.id, b.t.id); c != 0 {
				return c
			}
			return cmp.Compare(a.rid, b.rid)
		})
	}
	if tx.byKey != nil {
		tx.byKey = nil // indices changed; not needed any more
		tx.owned = make(map[ownKey]int, len(tx.writes))
	}
	for i := range tx.writes {
		w := &tx.writes[i]
		if w.placed() {
			break
		}
		prev, ok := w.t.heap.lock(w.rid)
		if !ok {
			return errorf(ErrConflict, "table %q: a row was deleted since it was read", w.t.name)
		}
		tx.markOwned(i)
		if prev != w.tid {
			w.tid = prev // abort must restore what it found, not what was read
			return errorf(ErrConflict, "table %q: a row changed since it was read", w.t.name)
		}
	}
	for i := range tx.writes {
		w := &tx.writes[i]
		if w.placed() {
			// A held key's placeholder has no bytes: it stays locked and
			// absent until it goes, so nothing reads it.
			w.rid = w.t.heap.insert(w.row, tidLocked|tidAbsent)
			tx.markOwned(i)
		}
	}
	for i := range tx.writes {
		w := &tx.writes[i]
		if err := w.t.state.Load().unbuilt(w); err != nil {
			return err
		}
		if err := tx.claimKeys(w); err != nil {
			return err
		}
	}
	return nil
}

// unbuilt refuses a commit's write w (ErrBuilding) that would claim a key
// of a unique index Apply added and is still building (on a standby
// promoted since): its build has not given it every row yet, so the
// claim could not find every other row with the key, and the index is
// logged, so the build cannot fail when it finds two, as a CreateIndex
// of this node's does. Once that build has found this node's rows break
// the index (indexBuild.failed), the write is refused with that error:
// waiting would not end.
func (st *tableState) unbuilt(w *write) error {
	if b := st.build; b != nil && b.lsn != 0 && w.op != wDelete && st.s.indexes[len(st.s.indexes)-1].unique {
		if err := b.fault(); err != nil {
			return err
		}
		return errorf(ErrBuilding, "table %q: its unique index %q, which LSN %d added, is being built: writes to the table wait for it", w.t.name, st.s.indexes[len(st.s.indexes)-1].name, b.lsn)
	}
	return nil
}

// claimKeys adds the index entries a write needs before it installs: all
// keys of an inserted row, the changed secondary keys of an updated one,
// and the primary key of a key held for Relog.
func (tx *Tx) claimKeys(w *write) error {
	if w.op == wDelete {
		return nil
	}
	st := w.t.state.Load()
	s := st.s
	for ix := range s.indexes {
		if w.op == wUpdate && ix == 0 {
			continue // the primary key never changes
		}
		if w.op == wAbsent && ix > 0 {
			break // a held key has no row, so no secondary keys
		}
		key := w.key
		if ix > 0 {
			start := len(tx.arena)
			tx.arena = s.appendRowKey(tx.arena, ix, w.row)
			key = tx.arena[start:len(tx.arena):len(tx.arena)]
		}
		if w.op == wUpdate {
			if tx.keyEqual(s, ix, w.t.heap.readOwned(w.rid), key) {
				continue
			}
		}
		switch {
		case s.indexes[ix].unique && ix > 0 && tx.deferred != nil:
			st.idx[ix].add(key, w.rid)
			*tx.deferred = append(*tx.deferred, uniqueKey{t: w.t, ix: ix, key: bytes.Clone(key)})
		case s.indexes[ix].unique:
			tx.ck = uniqueCtx{w: w, s: s, ix: ix, key: key}
			if tx.checkFn == nil {
				tx.checkFn = tx.txState.uniqueCheck
			}
			if err := st.idx[ix].claim(key, w.rid, tx.checkFn); err != nil {
				return err
			}
		default:
			st.idx[ix].add(key, w.rid)
		}
		// A write's claims are appended together, so they can share one
		// buffer for the whole transaction.
		tx.claimBuf = append(tx.claimBuf, claim{ix: ix, key: key})
		w.claims = tx.claimBuf[len(tx.claimBuf)-len(w.claims)-1 : len(tx.claimBuf) : len(tx.claimBuf)]
	}
	return nil
}

// uniqueCtx is what uniqueCheck needs besides the candidate; it is kept
// in the transaction so that the check passed to an index is one bound
// method value, not a closure allocated per key.
type uniqueCtx struct {
	w   *write
	s   *schema
	ix  int
	key []byte
}

// uniqueCheck decides whether row c, found under tx.ck.key in unique
// index tx.ck.ix, stops tx.ck.w from taking the key.
func (tx *txState) uniqueCheck(c uint64) error {
	w, s, ix, key := tx.ck.w, tx.ck.s, tx.ck.ix, tx.ck.key
	if c == w.rid {
		return nil
	}
	dup := errorf(ErrDuplicate, "table %q index %q: key %s", s.def.Name, s.indexes[ix].name, describeKey(s, ix, key))
	tid, row := w.t.heap.peek(c)
	if tid&tidLocked != 0 {
		o := tx.ownedWrite(w.t, c)
		if o == nil {
			return errorf(ErrConflict, "table %q index %q: another transaction is taking the same key", s.def.Name, s.indexes[ix].name)
		}
		if o.op == wDelete || o.op == wAbsent {
			return nil
		}
		row = o.row // the row's version once this transaction commits
	} else if tid&tidAbsent != 0 {
		return nil
	}
	if tx.keyEqual(s, ix, row, key) {
		switch {
		case w.op == wAbsent:
			return errorf(ErrConflict, "table %q: a row looked up and not found now exists", s.def.Name)
		case w.upsert && ix == 0:
			// Run after the other, the upsert would have replaced it.
			return errorf(ErrConflict, "table %q: another transaction inserted the primary key this upsert found absent", s.def.Name)
		}
		return &seenError{dup, tid & tidLSN}
	}
	return nil
}

// testHookAbsentChecked, when set by a test, runs in validation before
// each absent lookup after the first: a fault point for trying to put a
// commit between two checks.
var testHookAbsentChecked func(i int)

// validate is commit phase 2. TID checks need no more than a pass over
// the read set: TIDs only grow, so a row unchanged when checked was
// unchanged at the first check too, and that is the instant the reads
// held. Re-run lookups and scans are different: one that finds nothing
// now and found nothing at execution may have missed a row that came and
// went in between. So when there are any, every check runs with the
// install locks of all tables read held exclusively: no commit changes
// them meanwhile, all checks see one instant, and with the write locks
// held that instant is the transaction's serialization point.
func (tx *Tx) validate() error {
	if len(tx.absents) == 0 && len(tx.scans) == 0 {
		return tx.validateReads()
	}
	tables := tx.tables[:0]
	for _, r := range tx.reads {
		tables = append(tables, r.t)
	}
	for _, a := range tx.absents {
		tables = append(tables, a.t)
	}
	for _, sc := range tx.scans {
		tables = append(tables, sc.t)
	}
	tables = sortTables(tables)
	for _, t := range tables {
		t.installMu.Lock()
	}
	err := tx.validateOnce()
	for _, t := range tables {
		t.installMu.Unlock()
	}
	clear(tables)
	tx.tables = tables
	return err
}

// validateTables checks that no table was created under a name the
// transaction found no table under.
func (tx *Tx) validateTables() error {
	if len(tx.noTables) == 0 {
		return nil
	}
	cat := tx.db.catalog.Load()
	for _, name := range tx.noTables {
		if _, ok := cat.byName[string(name)]; ok {
			return errorf(ErrConflict, "table %q: it was not found and now exists", name)
		}
	}
	return nil
}

// validateReads checks the table names found absent, then the rows read.
// In that order: a row unchanged now was unchanged when the names were
// checked, so both held at that instant (which the install locks, when
// validate holds them, make the instant of every check). A commit that
// writes holds the gate, which schema changes wait for.
func (tx *Tx) validateReads() error {
	if err := tx.validateTables(); err != nil {
		return err
	}
	for _, r := range tx.reads {
		// A dropped table's rows keep their TIDs: what was read of one
		// holds at no instant after the drop, which may have been
		// followed by another table under its name.
		if r.t.dropped.Load() {
			return errorf(ErrConflict, "table %q: a row read is in a table dropped since", r.t.name)
		}
		tid := r.t.heap.tid(r.rid)
		if tid&tidLocked != 0 {
			if tx.ownedWrite(r.t, r.rid) == nil {
				return errorf(ErrConflict, "table %q: a row read is being changed", r.t.name)
			}
			tid &^= tidLocked
		}
		if tid != r.tid {
			return errorf(ErrConflict, "table %q: a row read has changed", r.t.name)
		}
	}
	return nil
}

// validateOnce runs every check once.
func (tx *Tx) validateOnce() error {
	if err := tx.validateReads(); err != nil {
		return err
	}
	for i, a := range tx.absents {
		if testHookAbsentChecked != nil && i > 0 {
			testHookAbsentChecked(i)
		}
		if a.t.dropped.Load() || !a.t.state.Load().keeps(a.st, a.ix) {
			return errorf(ErrConflict, "table %q: the index a lookup used was dropped", a.t.name)
		}
		_, _, found, err := tx.point(a.t, a.st, a.ix, a.key)
		if err != nil {
			return err
		}
		if found {
			return errorf(ErrConflict, "table %q: a row looked up and not found now exists", a.t.name)
		}
	}
	for i := range tx.scans {
		sc := &tx.scans[i]
		if sc.t.dropped.Load() || !sc.t.state.Load().keeps(sc.st, sc.ix) {
			return errorf(ErrConflict, "table %q: the index a scan used was dropped", sc.t.name)
		}
		tx.hitBuf = tx.hitBuf[:0]
		err := tx.collect(sc.t, sc.st, sc.ix, sc.lo, sc.hi, sc.reverse, sc.limit, func(h hit, _ []byte) bool {
			tx.hitBuf = append(tx.hitBuf, h)
			return true
		})
		if err != nil {
			return err
		}
		if !slices.Equal(tx.hitBuf, sc.hits) {
			return errorf(ErrConflict, "table %q: a scan's result has changed", sc.t.name)
		}
	}
	return nil
}

// abort undoes phase 1: claims, placeholders and locks.
func (tx *Tx) abort() {
	for i := len(tx.writes) - 1; i >= 0; i-- {
		w := &tx.writes[i]
		st := w.t.state.Load()
		for j := len(w.claims) - 1; j >= 0; j-- {
			st.idx[w.claims[j].ix].del(w.claims[j].key, w.rid)
		}
		if !w.locked {
			continue
		}
		if w.placed() {
			w.t.heap.remove(w.rid, tidAbsent, nil)
		} else {
			w.t.heap.setTID(w.rid, w.tid)
		}
	}
}

// install is commit phase 4: every write becomes visible with TID lsn,
// with the install locks of the tables written held shared.
func (tx *Tx) install(lsn uint64) {
	tables := tx.tables[:0]
	for i := range tx.writes {
		tables = append(tables, tx.writes[i].t)
	}
	tables = sortTables(tables)
	for _, t := range tables {
		t.installMu.RLock()
	}
	tx.installWrites(lsn)
	for _, t := range tables {
		t.installMu.RUnlock()
	}
	clear(tables)
	tx.tables = tables
}

// sortTables sorts tables by id and drops repeats: the order in which
// install locks are taken.
func sortTables(tables []*Table) []*Table {
	slices.SortFunc(tables, func(a, b *Table) int { return cmp.Compare(a.id, b.id) })
	return slices.Compact(tables)
}

func (tx *Tx) installWrites(lsn uint64) {
	snaps := tx.db.snaps.Load()
	for i := range tx.writes {
		w := &tx.writes[i]
		var keep func(pg, slot int, old []byte)
		if snaps != nil && !w.placed() {
			keep = keeper(*snaps, w.t, w.tid&tidLSN)
		}
		switch w.op {
		case wInsert:
			w.t.heap.setTID(w.rid, lsn)
			w.t.rows.Add(1)
		case wUpdate:
			tx.installUpdate(w, lsn, keep)
		case wDelete:
			w.t.removing(lsn)
			st := w.t.state.Load()
			old := w.t.heap.readOwned(w.rid)
			for ix := range st.idx {
				tx.scratch = st.s.appendRowKey(tx.scratch[:0], ix, old)
				st.idx[ix].del(tx.scratch, w.rid)
			}
			w.t.heap.remove(w.rid, tidAbsent|lsn, keep)
			w.t.rows.Add(-1)
		case wAbsent:
			// The placeholder goes as an aborted insert's does: it never
			// was a row.
			w.t.state.Load().idx[0].del(w.key, w.rid)
			w.t.heap.remove(w.rid, tidAbsent, nil)
		}
	}
}

// removing raises the table's removed LSN to lsn, before a commit at lsn
// takes entries out of its indexes.
func (t *Table) removing(lsn uint64) {
	for {
		at := t.removed.Load()
		if at >= lsn || t.removed.CompareAndSwap(at, lsn) {
			return
		}
	}
}

// rehint points the hash index entries of a row updated in place at its
// new version, while the row is still locked. A Replayer (recovery)
// leaves them as they are, to replay faster: a read of such a row after
// a restart, until the row is next updated, just misses the hint. A
// standby's Apply keeps them.
func (tx *Tx) rehint(st *tableState, w *write) {
	s := st.s
	for ix, x := range st.idx {
		if s.indexes[ix].kind != Hash {
			continue
		}
		key := w.key
		if ix > 0 {
			tx.scratch = s.appendRowKey(tx.scratch[:0], ix, w.row)
			key = tx.scratch
		}
		x.rehint(key, w.rid)
	}
}

func (tx *Tx) installUpdate(w *write, lsn uint64, keep func(pg, slot int, old []byte)) {
	st := w.t.state.Load()
	s := st.s
	old := w.t.heap.readOwned(w.rid)
	// A replay (deferred set) overwrites a row in place unless the old
	// version's keys are still needed. Only another worker's lookup that
	// meets the row under a colliding 63-bit hash reads it meanwhile, and
	// with a fixed-width primary key the bytes it compares keep their
	// values (the race detector would still see the copy).
	overwrite := tx.deferred != nil && len(w.claims) == 0 && s.fixedPK
	if len(w.claims) > 0 { // a secondary key changes: its old entry goes
		w.t.removing(lsn)
	}
	if w.t.heap.replace(w.rid, w.row, keep, overwrite) {
		for _, c := range w.claims {
			tx.scratch = s.appendRowKey(tx.scratch[:0], c.ix, old)
			st.idx[c.ix].del(tx.scratch, w.rid)
		}
		if tx.deferred == nil {
			tx.rehint(st, w)
		}
		w.t.heap.setTID(w.rid, lsn)
		return
	}
	// No room in the page: move the row and repoint every index entry. The
	// new entries go in before the old ones go, so that a lookup always
	// finds the row under one of them, locked until the move is done.
	moved := w.t.heap.insert(w.row, tidLocked|tidAbsent)
	for ix := range st.idx {
		tx.scratch = s.appendRowKey(tx.scratch[:0], ix, w.row)
		st.idx[ix].add(tx.scratch, moved)
	}
	if st.build != nil && s.indexes[len(s.indexes)-1].unique {
		st.build.note(moved) // its entry there went in unchecked
	}
	for ix := range st.idx {
		tx.scratch = s.appendRowKey(tx.scratch[:0], ix, old)
		st.idx[ix].del(tx.scratch, w.rid)
	}
	for _, c := range w.claims {
		st.idx[c.ix].del(c.key, w.rid)
	}
	w.t.heap.remove(w.rid, tidAbsent|lsn, keep)
	w.t.heap.setTID(moved, lsn)
}
