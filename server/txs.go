package server

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/mem"
)

// openTx is an interactive transaction. Its mutex serializes the requests
// that name it (a mem.Tx is used by one goroutine at a time) and guards
// done, which is set when the transaction ends for any reason.
type openTx struct {
	id   uint64
	mu   sync.Mutex
	tx   *mem.Tx
	wait commitWait // what its commit waits for, unless Commit says otherwise
	done bool
	// idleSince is when the last request on it finished; guarded by mu.
	idleSince time.Time
}

// txTable holds the open interactive transactions and rolls back the ones
// that stay idle past the timeout.
//
// Invariant: a transaction is in m exactly while it is not done.
type txTable struct {
	db   *mem.DB
	max  int
	idle time.Duration
	log  hclog.Logger
	now  func() time.Time

	mu sync.Mutex
	m  map[uint64]*openTx
}

func newTxTable(db *mem.DB, max int, idle time.Duration, log hclog.Logger) *txTable {
	return &txTable{db: db, max: max, idle: idle, log: log, now: time.Now, m: map[uint64]*openTx{}}
}

// begin starts a transaction whose commit waits for w and returns its
// id.
func (tt *txTable) begin(w commitWait) (uint64, error) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if len(tt.m) >= tt.max {
		return 0, errorf(codes.ResourceExhausted, "max_open_transactions (%d) reached: commit or roll back open transactions first", tt.max)
	}
	id := rand.Uint64()
	for id == 0 || tt.m[id] != nil {
		id = rand.Uint64()
	}
	tt.m[id] = &openTx{id: id, tx: tt.db.Begin(), wait: w, idleSince: tt.now()}
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

// hold returns the open transaction id, locked; the caller unlocks it.
func (tt *txTable) hold(id uint64) (*openTx, error) {
	ot := tt.lookup(id)
	if ot == nil {
		return nil, notOpen(id)
	}
	ot.mu.Lock()
	if ot.done {
		ot.mu.Unlock()
		return nil, notOpen(id)
	}
	return ot, nil
}

// use runs fn on the transaction, holding it; the transaction stays open
// whatever fn returns (a failed operation changes nothing).
func (tt *txTable) use(id uint64, fn func(tx *mem.Tx) error) error {
	ot, err := tt.hold(id)
	if err != nil {
		return err
	}
	defer ot.mu.Unlock()
	err = fn(ot.tx)
	ot.idleSince = tt.now()
	return err
}

// end runs fn (a commit or rollback) on the transaction and removes it,
// whatever fn returns: a failed commit rolls the transaction back. But
// first check, if not nil, looks at the request: when it fails (a
// malformed request), fn does not run and the transaction stays open.
func (tt *txTable) end(id uint64, check, fn func(ot *openTx) error) error {
	ot, err := tt.hold(id)
	if err != nil {
		return err
	}
	defer ot.mu.Unlock()
	if check != nil {
		if err := check(ot); err != nil {
			ot.idleSince = tt.now()
			return err
		}
	}
	err = fn(ot)
	ot.tx.Rollback() // a no-op after a commit
	tt.remove(ot)
	return err
}

// remove marks ot done and drops it; the caller holds ot.mu.
func (tt *txTable) remove(ot *openTx) {
	ot.done = true
	tt.mu.Lock()
	delete(tt.m, ot.id)
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
		if !ot.mu.TryLock() {
			continue
		}
		if !ot.done && ot.idleSince.Before(deadline) {
			ot.tx.Rollback()
			tt.remove(ot)
			tt.log.Info("rolled back an idle transaction", "tx-id", ot.id, "idle-timeout", tt.idle)
		}
		ot.mu.Unlock()
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
		ot.mu.Lock()
		if !ot.done {
			ot.tx.Rollback()
			tt.remove(ot)
		}
		ot.mu.Unlock()
	}
	return len(all)
}

// open returns the number of open transactions.
func (tt *txTable) open() int {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return len(tt.m)
}
