package server

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/mem"
)

// openTx is an interactive transaction. Its lock serializes the requests
// that name it (a mem.Tx is used by one goroutine at a time) and guards
// tx, done, which is set when the transaction ends for any reason, and
// idleSince. The lock is a semaphore of one, so that a request can stop
// waiting for it when its call ends: a request may be waiting behind a
// commit that waits for its standbys or its fsync for as long as the
// commit's own call lasts.
type openTx struct {
	id   uint64
	key  string              // its Begin's pb.HeaderBeginKey; empty for none
	lock *semaphore.Weighted // one request at a time
	tx   *mem.Tx
	wait commitWait // what its commit waits for, unless Commit says otherwise
	done bool
	// idleSince is when the last request on it finished.
	idleSince time.Time
}

// acquire takes ot's lock, or gives up when ctx ends first, with ctx's
// code (CANCELED, DEADLINE_EXCEEDED). A free lock is taken even when ctx
// has ended.
func (ot *openTx) acquire(ctx context.Context) error {
	if ot.lock.TryAcquire(1) {
		return nil
	}
	if err := ot.lock.Acquire(ctx, 1); err != nil {
		return errorf(status.FromContextError(err).Code(), "transaction %d is busy with another request (a commit waiting for its log or its standbys, or a statement), which did not end before this call did: %v", ot.id, err)
	}
	return nil
}

// release gives back ot's lock.
func (ot *openTx) release() { ot.lock.Release(1) }

// txTable holds the open interactive transactions and rolls back the ones
// that stay idle past the timeout.
//
// Invariant: a transaction is in m exactly while it is not done, and in
// keys, under its Begin's key, while it is in m and has one.
type txTable struct {
	db       *mem.DB
	max      int
	maxBytes int // the most a transaction may hold (mem.Tx.Size)
	idle     time.Duration
	log      hclog.Logger
	now      func() time.Time

	mu   sync.Mutex
	m    map[uint64]*openTx
	keys map[string]*openTx
}

func newTxTable(db *mem.DB, max, maxBytes int, idle time.Duration, log hclog.Logger) *txTable {
	return &txTable{db: db, max: max, maxBytes: maxBytes, idle: idle, log: log, now: time.Now, m: map[uint64]*openTx{}, keys: map[string]*openTx{}}
}

// begin starts a transaction whose commit waits for w and returns its
// id. With a key (pb.HeaderBeginKey), a Begin sent again returns the
// transaction the first one opened, if it is still open: the client lost
// the first reply, and would otherwise leave that transaction to hold
// its slot until the idle timeout.
func (tt *txTable) begin(w commitWait, key string) (uint64, error) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if ot := tt.keys[key]; key != "" && ot != nil {
		return ot.id, nil
	}
	if len(tt.m) >= tt.max {
		return 0, errorf(codes.ResourceExhausted, "max_open_transactions (%d) reached: commit or roll back open transactions first", tt.max)
	}
	id := rand.Uint64()
	for id == 0 || tt.m[id] != nil {
		id = rand.Uint64()
	}
	ot := &openTx{id: id, key: key, lock: semaphore.NewWeighted(1), tx: tt.db.Begin(), wait: w, idleSince: tt.now()}
	tt.m[id] = ot
	if key != "" {
		tt.keys[key] = ot
	}
	return id, nil
}

func (tt *txTable) lookup(id uint64) *openTx {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return tt.m[id]
}

func notOpen(id uint64) error {
	return errorf(codes.NotFound, "transaction %d is not open: it was committed, rolled back, rolled back after tx_idle_timeout, or never begun", id)
}

// hold returns the open transaction id, locked; the caller releases it.
// It waits for the requests ahead on the transaction until ctx ends.
func (tt *txTable) hold(ctx context.Context, id uint64) (*openTx, error) {
	ot := tt.lookup(id)
	if ot == nil {
		return nil, notOpen(id)
	}
	if err := ot.acquire(ctx); err != nil {
		return nil, err
	}
	if ot.done {
		ot.release()
		return nil, notOpen(id)
	}
	return ot, nil
}

// use runs fn on the transaction, holding it (hold); the transaction stays
// open whatever fn returns (a failed operation changes nothing), unless
// it then holds more than maxBytes: it is rolled back.
func (tt *txTable) use(ctx context.Context, id uint64, fn func(tx *mem.Tx) error) error {
	ot, err := tt.hold(ctx, id)
	if err != nil {
		return err
	}
	defer ot.release()
	err = fn(ot.tx)
	ot.idleSince = tt.now()
	if size := ot.tx.Size(); size > tt.maxBytes {
		tt.remove(ot)
		tt.log.Warn("an interactive transaction grew past max_tx_bytes and was rolled back", "tx", id, "bytes", size, "max_tx_bytes", tt.maxBytes)
		return errorf(codes.ResourceExhausted, "transaction %d holds %d bytes of writes and reads, over max_tx_bytes (%d): it was rolled back; split the work into smaller transactions", id, size, tt.maxBytes)
	}
	return err
}

// end runs fn (a commit or rollback) on the transaction, holding it
// (hold), and removes it, whatever fn returns: a failed commit rolls the
// transaction back. But first check, if not nil, looks at the request:
// when it fails (a malformed request), fn does not run and the
// transaction stays open.
func (tt *txTable) end(ctx context.Context, id uint64, check, fn func(ot *openTx) error) error {
	ot, err := tt.hold(ctx, id)
	if err != nil {
		return err
	}
	defer ot.release()
	if check != nil {
		if err := check(ot); err != nil {
			ot.idleSince = tt.now()
			return err
		}
	}
	err = fn(ot)
	tt.remove(ot)
	return err
}

// remove rolls ot back (a no-op after its commit), marks it done and
// drops it; the caller holds ot's lock.
func (tt *txTable) remove(ot *openTx) {
	ot.tx.Rollback()
	ot.done = true
	tt.mu.Lock()
	delete(tt.m, ot.id)
	if ot.key != "" {
		delete(tt.keys, ot.key)
	}
	tt.mu.Unlock()
}

// reap rolls back the transactions idle since before the timeout. A
// transaction busy with a request is not idle and is skipped.
func (tt *txTable) reap() {
	tt.mu.Lock()
	all := make([]*openTx, 0, len(tt.m))
	for _, ot := range tt.m {
		all = append(all, ot)
	}
	tt.mu.Unlock()
	deadline := tt.now().Add(-tt.idle)
	for _, ot := range all {
		if !ot.lock.TryAcquire(1) {
			continue
		}
		if !ot.done && ot.idleSince.Before(deadline) {
			tt.remove(ot)
			tt.log.Info("rolled back an idle transaction", "tx-id", ot.id, "idle-timeout", tt.idle)
		}
		ot.release()
	}
}

// reapLoop reaps until stop is closed, checking often enough that a
// transaction outlives its timeout by at most a quarter of it.
func (tt *txTable) reapLoop(stop <-chan struct{}) {
	t := time.NewTicker(max(tt.idle/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			tt.reap()
		}
	}
}

// rollbackAll ends every open transaction, at shutdown.
func (tt *txTable) rollbackAll() int {
	tt.mu.Lock()
	all := make([]*openTx, 0, len(tt.m))
	for _, ot := range tt.m {
		all = append(all, ot)
	}
	tt.mu.Unlock()
	for _, ot := range all {
		_ = ot.lock.Acquire(context.Background(), 1) // at shutdown: a holder left is a call that was canceled, finishing; Background never ends
		if !ot.done {
			tt.remove(ot)
		}
		ot.release()
	}
	return len(all)
}

// open returns the number of open transactions.
func (tt *txTable) open() int {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return len(tt.m)
}
