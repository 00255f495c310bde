package mem

import (
	"errors"
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
)

// Replayer applies a log to a database on several workers, for recovery.
// Records are handed over in LSN order (Add); each row a record writes
// goes to the worker its primary key hashes to, so every row's changes
// are installed in LSN order by one worker, while rows on different
// workers move independently. A schema change waits for every worker and
// is applied alone.
//
// In between, the database mixes LSNs: one row may be past a record that
// another has not reached. So nothing may read, write or apply to the
// database until Close returns; then it holds what Apply of the same
// records, one by one, would have left, and LastLSN is the last record's.
//
// Records are checked as Apply checks them, with one difference: a key
// taken in a unique secondary index is not checked against other rows
// when it is installed (another worker may not yet have installed the
// record that gave the key up, or may already have installed a later one
// that takes it). Each such key is checked when the workers next stand
// still (before a schema change, after a million such keys, and in
// Close), and a key two rows hold fails replay with ErrCorrupt; a clash
// that a later record ended by then goes unnoticed.
type Replayer struct {
	db      *DB
	base    uint64 // LastLSN at the start: records below it are checked and skipped
	seed    maphash.Seed
	workers []*replayWorker
	busy    sync.WaitGroup // one count per worker per batch sent
	done    sync.WaitGroup // the workers' goroutines
	batch   *replayBatch
	free    chan *replayBatch // batches every worker is done with
	copied  Redo              // Add's copy of a record, in the batch
	last    uint64            // the last LSN added
	closed  bool

	unchecked atomic.Int64 // the workers' deferred keys

	failed atomic.Bool
	errMu  sync.Mutex
	err    error // the first worker's error
}

// replayBatchSize is how many records go to the workers at once.
const replayBatchSize = 256

// replayBatch is records sent to every worker; each installs the writes
// assigned to it. A batch is not changed once sent, until the last
// worker done with it hands it back for reuse.
type replayBatch struct {
	lsns   []uint64
	ends   []int   // record i's writes are writes[ends[i-1]:ends[i]]
	writes []write // with a worker's number in ...
	worker []uint8 // ... worker[j] for writes[j]
	keys   []byte  // the puts' primary keys
	data   []byte  // the records' op data
	left   atomic.Int32
}

// reset empties b for reuse, keeping its capacity.
func (b *replayBatch) reset() {
	clear(b.writes)
	b.lsns, b.ends, b.writes, b.worker = b.lsns[:0], b.ends[:0], b.writes[:0], b.worker[:0]
	b.keys, b.data = b.keys[:0], b.data[:0]
}

type replayWorker struct {
	in       chan *replayBatch
	deferred []uniqueKey // keys taken in unique secondary indexes unchecked
	// prefetch's lookups: the rows found for the i-th write end at
	// rids[found[i]], in table tables[i]
	rids   []uint64
	found  []int
	tables []*Table
}

// uniqueKey is a key a row took in a unique secondary index.
type uniqueKey struct {
	t   *Table
	ix  int
	key []byte
}

// NewReplayer starts a replay into db with a worker per core (at most
// 255). db must not take commits or other Apply calls until Close.
func (db *DB) NewReplayer() *Replayer {
	n := min(runtime.GOMAXPROCS(0), 255)
	r := &Replayer{db: db, base: db.LastLSN(), seed: maphash.MakeSeed(), batch: &replayBatch{}, free: make(chan *replayBatch, 4*n+2)}
	for range n {
		w := &replayWorker{in: make(chan *replayBatch, 4)}
		r.workers = append(r.workers, w)
		r.done.Add(1)
		go r.work(w, uint8(len(r.workers)-1))
	}
	return r
}

// Add replays the record at lsn (after the records added before it). The
// record's checks run here; installing it runs on the workers. An error,
// a record's or a worker's, ends the replay: Add and Close return it
// from then on. Add copies what it keeps of redo.
func (r *Replayer) Add(lsn uint64, redo *Redo) error {
	if r.closed {
		return errors.New("mem: replayer: Add after Close")
	}
	if err := r.firstError(); err != nil {
		return err
	}
	if err := r.add(lsn, redo); err != nil {
		r.fail(err)
		return err
	}
	return nil
}

func (r *Replayer) add(lsn uint64, redo *Redo) error {
	if lsn == 0 || lsn > tidLSN {
		return errorf(ErrInvalid, "apply: LSN %d out of range", lsn)
	}
	if redo == nil {
		return errorf(ErrInvalid, "apply LSN %d: no record", lsn)
	}
	if lsn <= r.last {
		return errorf(ErrInvalid, "replay: LSN %d after LSN %d", lsn, r.last)
	}
	if len(redo.Ops) > 0 && redo.Ops[0].Kind >= OpCreateTable {
		if err := r.settle(); err != nil {
			return err
		}
		if err := r.db.apply(lsn, redo, false); err != nil {
			return err
		}
		r.last = lsn
		return nil
	}
	b := r.batch
	writes, data, keys := len(b.writes), len(b.data), len(b.keys)
	r.copied.Ops = r.copied.Ops[:0]
	for _, op := range redo.Ops {
		start := len(b.data)
		b.data = append(b.data, op.Data...)
		op.Data = b.data[start:len(b.data):len(b.data)]
		r.copied.Ops = append(r.copied.Ops, op)
	}
	var err error
	b.writes, err = r.db.resolve(b.writes, &b.keys, lsn, &r.copied)
	if err != nil || lsn < r.base {
		clear(b.writes[writes:])
		b.writes, b.data, b.keys = b.writes[:writes], b.data[:data], b.keys[:keys]
		if err != nil {
			return err
		}
		r.last = lsn
		return nil
	}
	r.last = lsn
	n := uint64(len(r.workers))
	for _, w := range b.writes[writes:] {
		h := maphash.Bytes(r.seed, w.key) ^ uint64(w.t.id)*0x9e3779b97f4a7c15
		b.worker = append(b.worker, uint8(h%n))
	}
	b.lsns = append(b.lsns, lsn)
	b.ends = append(b.ends, len(b.writes))
	if len(b.lsns) == replayBatchSize {
		r.flush()
		if r.unchecked.Load() > maxUnchecked {
			return r.settle()
		}
	}
	return nil
}

// maxUnchecked bounds the keys taken in unique secondary indexes that
// wait to be checked: past it, the workers stop and the keys are checked.
// (A variable for tests.)
var maxUnchecked int64 = 1 << 20

// flush sends the batch being filled to every worker.
func (r *Replayer) flush() {
	if len(r.batch.lsns) == 0 {
		return
	}
	r.busy.Add(len(r.workers))
	r.batch.left.Store(int32(len(r.workers)))
	for _, w := range r.workers {
		w.in <- r.batch
	}
	select {
	case r.batch = <-r.free:
		r.batch.reset()
	default:
		r.batch = &replayBatch{}
	}
}

// settle sends what is batched and waits until the workers have
// installed everything, then checks the unique keys they took.
func (r *Replayer) settle() error {
	r.flush()
	r.busy.Wait()
	if err := r.firstError(); err != nil {
		return err
	}
	tx := r.db.Begin()
	defer tx.Rollback()
	for _, w := range r.workers {
		for _, k := range w.deferred {
			if err := tx.checkUnique(k); err != nil {
				return err
			}
		}
		clear(w.deferred)
		w.deferred = w.deferred[:0]
	}
	r.unchecked.Store(0)
	return nil
}

// Close waits for every record added to be installed, checks the unique
// keys taken, stops the workers and returns the first error. The
// Replayer cannot be used after.
func (r *Replayer) Close() error {
	if r.closed {
		return errors.New("mem: replayer closed twice")
	}
	r.closed = true
	err := r.settle()
	if err == nil {
		// A record may have had nothing to install.
		r.db.applied(r.last)
	}
	for _, w := range r.workers {
		close(w.in)
	}
	r.done.Wait()
	return err
}

func (r *Replayer) firstError() error {
	if !r.failed.Load() {
		return nil
	}
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

func (r *Replayer) fail(err error) {
	r.errMu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.errMu.Unlock()
	r.failed.Store(true)
}

// work installs this worker's writes of each batch, record by record.
func (r *Replayer) work(w *replayWorker, me uint8) {
	defer r.done.Done()
	for b := range w.in {
		if !r.failed.Load() {
			if err := r.install(w, me, b); err != nil {
				r.fail(err)
			}
		}
		if b.left.Add(-1) == 0 {
			select {
			case r.free <- b:
			default:
			}
		}
		r.busy.Done()
	}
}

func (r *Replayer) install(w *replayWorker, me uint8, b *replayBatch) error {
	r.prefetch(w, me, b)
	start := 0
	for i, lsn := range b.lsns {
		end := b.ends[i]
		tx := r.db.Begin()
		tx.deferred = &w.deferred
		for j := start; j < end; j++ {
			if b.worker[j] == me {
				tx.writes = append(tx.writes, b.writes[j])
			}
		}
		start = end
		var err error
		if len(tx.writes) > 0 {
			n := len(w.deferred)
			err = tx.installReplayed(lsn)
			if len(w.deferred) > n {
				r.unchecked.Add(int64(len(w.deferred) - n))
			}
		}
		tx.Rollback()
		if err != nil {
			return err
		}
	}
	return nil
}

// prefetch asks for what this worker's writes in b will read to be
// brought into cache before it installs them, in three passes over them:
// the primary key index's slots, then the rows' TID and slot words found
// there, then the rows' bytes. Installing writes one by one waits for
// each of those misses in turn, and at millions of rows they are most of
// a replay's time; a pass's prefetches overlap.
func (r *Replayer) prefetch(w *replayWorker, me uint8, b *replayBatch) {
	for j := range b.writes {
		if b.worker[j] == me {
			wr := &b.writes[j]
			wr.t.state.Load().idx[0].prefetch(wr.key)
		}
	}
	w.rids = w.rids[:0]
	for j := range b.writes {
		if b.worker[j] == me {
			wr := &b.writes[j]
			n := len(w.rids)
			w.rids = wr.t.state.Load().idx[0].lookup(wr.key, w.rids)
			for _, c := range w.rids[n:] {
				wr.t.heap.prefetchSlot(c)
			}
			w.tables = append(w.tables, wr.t)
			w.found = append(w.found, len(w.rids))
		}
	}
	start := 0
	for i, t := range w.tables {
		for _, c := range w.rids[start:w.found[i]] {
			t.heap.prefetchRow(c)
		}
		start = w.found[i]
	}
	clear(w.tables)
	w.tables, w.found = w.tables[:0], w.found[:0]
}

// checkUnique fails if two rows hold k.key in unique index k.ix of
// k.t, as it stands.
func (tx *Tx) checkUnique(k uniqueKey) error {
	if k.t.dropped.Load() {
		return nil
	}
	st := k.t.state.Load()
	tx.cands = st.idx[k.ix].lookup(k.key, tx.cands[:0])
	holders := 0
	for _, c := range tx.cands {
		if _, row := k.t.heap.read(c); row != nil && tx.keyEqual(st.s, k.ix, row, k.key) {
			holders++
		}
	}
	if holders > 1 {
		return errorf(ErrCorrupt, "replay: table %q index %q: %d rows hold key %s, which is unique", k.t.name, st.s.indexes[k.ix].name, holders, describeKey(st.s, k.ix, k.key))
	}
	return nil
}
